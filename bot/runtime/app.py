"""The composition root: settings in, a running store + scheduler + service out."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from bot.domain.batching import BatchingConfig
from bot.domain.clock import Clock, SystemClock
from bot.domain.jobs import ModelKind
from bot.domain.render import WARM_UP_GUIDANCE, GenerationBackend, ImageClassifier, WarmUpShape, warm_up
from bot.domain.safety import SafetyMode, SafetyPolicy
from bot.domain.warm_up import warm_up_shapes
from bot.runtime.failures import check_model_folder, model_failure
from bot.runtime.settings import Settings, SettingsError
from bot.scheduler.scheduler import GpuScheduler, SharedQueue
from bot.services.imagine import ImagineService
from bot.services.moderation import ModerationService
from bot.services.results import ResultService
from bot.services.retention import RetentionService
from bot.services.safety import SafetyService
from bot.store import Stores

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


def make_classifier(settings: Settings) -> ImageClassifier | None:
    """The output-safety classifier SAFETY_MODEL names (None when "off"); loaded in the scheduler's thread."""
    if settings.safety_model.strip().lower() == "off":
        return None
    from inference.device import choose_device
    from inference.safety import make_classifier as make

    return make(settings.safety_model, choose_device(settings.device), threads=settings.safety_threads)


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


def warm_up_step(
    settings: Settings, backend: GenerationBackend, batching: BatchingConfig
) -> Callable[[], object] | None:
    """What the scheduler runs after loading the model when WARM_UP is on (or COMPILE=on): one short
    render of every shape it can form at every size served, so that no member's job pays for a compile.
    A WARM_UP_BUCKETS size the bot never renders raises SettingsError now, before the model loads."""
    if not settings.warms_up:
        return None
    only = settings.warm_up_sizes()

    def plan(model: str = ModelKind.DEFAULT) -> tuple[WarmUpShape, ...]:
        base = settings.base_resolution or backend.native_resolution
        try:
            return warm_up_shapes(batching, base, only, model=model)
        except ValueError as error:
            raise SettingsError(f"Setting WARM_UP_BUCKETS is invalid: {error}.") from None

    plan()

    def warm() -> float:
        # Again: loading the model may have told its native resolution. The fast model (FAST_MODEL) has
        # its own compiled graphs and, at its default guidance (0), the path without classifier-free
        # guidance, so its shapes are warmed too.
        models = [(ModelKind.DEFAULT, WARM_UP_GUIDANCE)]
        if settings.fast_model:
            models.append((ModelKind.FAST, min(settings.fast_guidance, settings.fast_max_guidance)))
        seconds = 0.0
        for model, guidance in models:
            shapes = plan(model)
            by_size: dict[tuple[int, int], list[int]] = {}
            for images, width, height in shapes:
                by_size.setdefault((width, height), []).append(images)
            listed = "; ".join(f"{w}×{h}: {', '.join(map(str, n))}" for (w, h), n in by_size.items())
            log.info(
                "warming up %d shape(s) of the %s model (size: images per call): %s",
                len(shapes),
                model,
                listed,
            )
            seconds += warm_up(backend, shapes, guidance=guidance, model=model)
        return seconds

    return warm


@dataclass
class ImagineApp:
    settings: Settings
    stores: Stores
    scheduler: GpuScheduler
    service: ImagineService
    moderation: ModerationService
    results: ResultService
    retention: RetentionService
    safety: SafetyService

    @classmethod
    async def start(
        cls,
        settings: Settings,
        *,
        backend: GenerationBackend | None = None,
        classifier: ImageClassifier | Literal["settings"] | None = "settings",
        clock: Clock | None = None,
        wait_for_model: bool = True,
        render: bool = True,
    ) -> ImagineApp:
        """Migrate and open the store, start the scheduler (model loading in its thread), build the service.

        With `wait_for_model`, return only once the model is loaded (and, with WARM_UP, every served
        shape warmed up), raising what loading raised. On
        PostgreSQL the scheduler shares the queue with any other workers; `render=False` (only there)
        makes this process a pure front end that queues jobs and reports what the workers made.
        """
        if not render and not settings.shares_queue:
            raise SettingsError(
                "Running without a worker needs DATABASE_URL=postgresql+asyncpg://…, where workers can reach "
                "the same queue."
            )
        batching = settings.batching()  # a bad BATCH_PROFILE stops start-up here
        if render:
            check_model_folder(settings)  # MODEL=/no/such/folder too, before anything waits or loads
        log_batching(settings, batching)
        backend = backend or make_backend(settings)  # not loaded when render=False: sizes only
        warming = warm_up_step(settings, backend, batching) if render else None
        clock = clock or SystemClock()
        stores = await Stores.open(settings.database_url, settings.image_dir, clock)
        shared = None
        if settings.shares_queue:
            shared = SharedQueue(
                settings.worker_name,
                lease_seconds=settings.lease_seconds,
                poll_seconds=settings.queue_poll_seconds,
                render=render,
            )
        scheduler = GpuScheduler(
            stores.jobs,
            backend,
            batching,
            clock,
            max_attempts=settings.max_attempts,
            shared=shared,
            warm_up=warming,
            classifier=(make_classifier(settings) if classifier == "settings" else classifier)
            if render
            else None,
        )
        try:
            await scheduler.start()
            if wait_for_model:
                await scheduler.wait_ready()
        except BaseException as error:
            await scheduler.stop()
            await stores.close()
            if error is scheduler.load_error:
                raise model_failure(settings, error) from error
            raise
        service = ImagineService(
            stores.jobs,
            stores.admission,
            scheduler,
            removals=stores.removals,
            actions=stores.moderation,
            generation=settings.generation_limits(backend.native_resolution),
            user_limits=settings.user_limits(),
            dm_limits=settings.dm_limits(),
            blocked_words=settings.operator_blocked_words(),
            retention_days=settings.image_retention_days,
            clock=clock,
            fast_generation=settings.fast_generation_limits(backend.native_resolution),
        )
        moderation = ModerationService(stores.moderation, stores.jobs, scheduler, service)
        results = ResultService(stores.jobs, stores.deliveries, scheduler)
        safety = SafetyService(
            stores.jobs,
            stores.safety,
            stores.admission,
            stores.moderation,
            default=SafetyPolicy(SafetyMode(settings.safety_mode), settings.safety_threshold),
            classifier=scheduler.classifier,
        )
        retention = RetentionService(stores.removals, clock, retention_days=settings.image_retention_days)
        return cls(settings, stores, scheduler, service, moderation, results, retention, safety)

    async def close(self) -> None:
        await self.scheduler.stop()
        await self.stores.close()
