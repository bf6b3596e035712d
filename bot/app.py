"""The composition root: settings in, a running store + scheduler + service out."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from bot.domain.batching import BatchingConfig
from bot.domain.clock import Clock, SystemClock
from bot.moderation import ModerationService
from bot.scheduler.backend import GenerationBackend
from bot.scheduler.scheduler import GpuScheduler, SharedQueue
from bot.service import ImagineService
from bot.settings import Settings, SettingsError
from bot.store.repository import JobStore

log = logging.getLogger(__name__)


def make_backend(settings: Settings) -> GenerationBackend:
    """The diffusers backend; imported here so that nothing else in `bot` imports torch."""
    from inference.device import choose_device
    from inference.optimize import Optimizations
    from inference.pipeline import DiffusersBackend

    device = choose_device(settings.device)
    return DiffusersBackend(
        settings.model,
        device=device,
        dtype=settings.dtype,
        vae=settings.vae,
        fast_model=settings.fast_model,
        fast_scheduler=settings.fast_scheduler,
        optimizations=Optimizations.from_settings(settings.optimize, settings.compile, device),
    )


def log_batching(settings: Settings, batching: BatchingConfig) -> None:
    """Say at start how many images each size batches, and where the numbers come from."""
    if not batching.size_budgets:
        log.info(
            "batch budget: up to %d images per call at every size (no batch profile)", batching.max_images
        )
        return
    profile = settings.load_batch_profile()
    budgets = ", ".join(
        f"{width}×{height}: {min(images, batching.max_images)}"
        for (width, height), images in batching.size_budgets.items()
    )
    log.info(
        "batch budgets from %s (%s): %s; other sizes up to %d (MAX_BATCH_IMAGES)",
        settings.batch_profile_path(),
        profile.describe() if profile is not None else "?",
        budgets,
        batching.max_images,
    )


@dataclass
class ImagineApp:
    settings: Settings
    store: JobStore
    scheduler: GpuScheduler
    service: ImagineService
    moderation: ModerationService

    @classmethod
    async def start(
        cls,
        settings: Settings,
        *,
        backend: GenerationBackend | None = None,
        clock: Clock | None = None,
        wait_for_model: bool = True,
        render: bool = True,
    ) -> ImagineApp:
        """Migrate and open the store, start the scheduler (model loading in its thread), build the service.

        With `wait_for_model`, return only once the model is loaded, raising what loading raised. On
        PostgreSQL the scheduler shares the queue with any other workers; `render=False` (only there)
        makes this process a pure front end that queues jobs and reports what the workers made.
        """
        if not render and not settings.shares_queue:
            raise SettingsError(
                "Running without a worker needs DATABASE_URL=postgresql+asyncpg://…, where workers can reach "
                "the same queue."
            )
        batching = settings.batching()  # a bad BATCH_PROFILE stops start-up here
        log_batching(settings, batching)
        backend = backend or make_backend(settings)  # not loaded when render=False: sizes only
        clock = clock or SystemClock()
        store = await JobStore.open(settings.database_url, settings.image_dir, clock)
        shared = None
        if settings.shares_queue:
            shared = SharedQueue(
                settings.worker_name,
                lease_seconds=settings.lease_seconds,
                poll_seconds=settings.queue_poll_seconds,
                render=render,
            )
        scheduler = GpuScheduler(
            store,
            backend,
            batching,
            clock,
            max_attempts=settings.max_attempts,
            shared=shared,
        )
        try:
            await scheduler.start()
            if wait_for_model:
                await scheduler.wait_ready()
        except BaseException:
            await scheduler.stop()
            await store.close()
            raise
        service = ImagineService(
            store,
            scheduler,
            generation=settings.generation_limits(backend.native_resolution),
            user_limits=settings.user_limits(),
            clock=clock,
            fast_generation=settings.fast_generation_limits(backend.native_resolution),
        )
        return cls(settings, store, scheduler, service, ModerationService(store, scheduler, service))

    async def close(self) -> None:
        await self.scheduler.stop()
        await self.store.close()
