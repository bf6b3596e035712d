"""Test doubles shared by the tests: a backend that renders instantly and can be told to fail."""

from __future__ import annotations

import asyncio
import random
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from bot.domain.batching import BatchingConfig
from bot.domain.clock import FakeClock
from bot.domain.errors import BackendOutOfMemory, GenerationInterrupted
from bot.domain.jobs import Job
from bot.domain.limits import UserLimits
from bot.domain.params import GenerationLimits
from bot.domain.render import RenderBatch, StepCallback
from bot.scheduler.scheduler import GpuScheduler
from bot.services.imagine import ImagineService
from bot.services.moderation import ModerationService
from bot.store import JobStore, Stores


def seed_colour(seed: int) -> tuple[int, int, int]:
    return (seed % 251, (seed // 251) % 251, (seed * 7) % 251)


class FakeBackend:
    """Renders a solid colour per seed; records every batch; can block, fail or run out of memory."""

    def __init__(self, *, native_resolution: int = 64, steps_delay: float = 0.0) -> None:
        self._native = native_resolution
        self.batches: list[RenderBatch] = []
        self.loaded = False
        self.max_images: int | None = None  # more images than this raises BackendOutOfMemory
        self.fail_with: Exception | None = None
        self.gate: threading.Event | None = None  # when set, render waits for it after the first step
        self.on_render: Callable[[RenderBatch], None] | None = None
        self.steps_delay = steps_delay
        self.rendering = threading.Event()  # set once the first batch reaches render()

    @property
    def native_resolution(self) -> int:
        return self._native

    async def until_rendering(self) -> None:
        """Wait (without blocking the event loop) until the first batch has reached the backend."""
        if not await asyncio.to_thread(self.rendering.wait, 10):
            raise TimeoutError("no batch reached the backend")

    def load(self) -> None:
        self.loaded = True

    def render(self, batch: RenderBatch, on_step: StepCallback) -> list[Image.Image]:
        self.batches.append(batch)
        self.rendering.set()
        if self.on_render is not None:
            self.on_render(batch)
        if self.max_images is not None and len(batch.tasks) > self.max_images:
            raise BackendOutOfMemory(f"{len(batch.tasks)} images do not fit")
        if self.fail_with is not None:
            raise self.fail_with
        total = batch.key.steps
        for step in range(1, total + 1):
            if not on_step(step, total):
                raise GenerationInterrupted()
            if step == 1 and self.gate is not None:
                self.gate.wait(timeout=10)
            if self.steps_delay:
                threading.Event().wait(self.steps_delay)
        return [
            Image.new("RGB", (batch.key.width, batch.key.height), seed_colour(t.seed)) for t in batch.tasks
        ]


@dataclass
class ServiceWorld:
    """The services over a real SQLite store, a running scheduler and the fake backend, on a fake clock."""

    service: ImagineService
    moderation: ModerationService
    store: JobStore
    stores: Stores
    scheduler: GpuScheduler
    backend: FakeBackend
    clock: FakeClock

    async def done(self, job: Job) -> Job:
        return await asyncio.wait_for(self.scheduler.wait_finished(job.id), 10)


@asynccontextmanager
async def service_world(tmp_path: Path, user_limits: UserLimits) -> AsyncIterator[ServiceWorld]:
    clock = FakeClock()
    stores = await Stores.open(f"sqlite+aiosqlite:///{tmp_path}/jobs.db", tmp_path / "images", clock)
    store = stores.jobs
    backend = FakeBackend()
    scheduler = GpuScheduler(store, backend, BatchingConfig(max_wait=0), clock)
    await scheduler.start()
    service = ImagineService(
        store,
        stores.admission,
        scheduler,
        removals=stores.removals,
        actions=stores.moderation,
        generation=GenerationLimits(base_resolution=64, default_steps=3, max_steps=10),
        user_limits=user_limits,
        clock=clock,
        rng=random.Random(7),
    )
    try:
        yield ServiceWorld(
            service,
            ModerationService(stores.moderation, store, scheduler, service),
            store,
            stores,
            scheduler,
            backend,
            clock,
        )
    finally:
        if backend.gate is not None:
            backend.gate.set()
        await scheduler.stop()
        await stores.close()
