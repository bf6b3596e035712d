"""The composition root: settings in, a running store + scheduler + service out."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from bot.domain.clock import Clock, SystemClock
from bot.moderation import ModerationService
from bot.scheduler.backend import GenerationBackend
from bot.scheduler.scheduler import GpuScheduler
from bot.service import ImagineService
from bot.settings import Settings
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
        optimizations=Optimizations.from_settings(settings.optimize, settings.compile, device),
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
    ) -> ImagineApp:
        """Migrate and open the store, start the scheduler (model loading in its thread), build the service.

        With `wait_for_model`, return only once the model is loaded, raising what loading raised.
        """
        clock = clock or SystemClock()
        store = await JobStore.open(settings.database_url, settings.image_dir, clock)
        backend = backend or make_backend(settings)
        scheduler = GpuScheduler(
            store, backend, settings.batching(), clock, max_attempts=settings.max_attempts
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
        )
        return cls(settings, store, scheduler, service, ModerationService(store, scheduler, service))

    async def close(self) -> None:
        await self.scheduler.stop()
        await self.store.close()
