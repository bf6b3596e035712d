"""One worker process for `benchmarks.workers`: a shared-queue scheduler with a fixed-time backend.

Usage: python -m benchmarks.worker_child DATABASE_URL IMAGE_DIR WORKER_NAME BATCH_MS
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

from PIL import Image

from bot.domain.batching import BatchingConfig
from bot.domain.clock import SystemClock
from bot.domain.render import RenderBatch, StepCallback
from bot.scheduler.scheduler import GpuScheduler, SharedQueue
from bot.store import Stores


class FixedTimeBackend:
    """Takes `seconds` per batch whatever its size, like a GPU at full use; small solid images."""

    def __init__(self, seconds: float) -> None:
        self._seconds = seconds

    @property
    def native_resolution(self) -> int:
        return 64

    def load(self) -> None:
        pass

    def render(self, batch: RenderBatch, on_step: StepCallback) -> list[Image.Image]:
        on_step(batch.key.steps, batch.key.steps)
        time.sleep(self._seconds)
        return [
            Image.new("RGB", (batch.key.width, batch.key.height), (task.seed % 256, 0, 0))
            for task in batch.tasks
        ]


async def main(url: str, images: Path, name: str, batch_ms: float) -> None:
    stores = await Stores.open(url, images, SystemClock())
    scheduler = GpuScheduler(
        stores.jobs,
        FixedTimeBackend(batch_ms / 1000),
        BatchingConfig(),
        SystemClock(),
        shared=SharedQueue(name, lease_seconds=10, poll_seconds=0.5),
    )
    await scheduler.start()
    print("ready", flush=True)
    await asyncio.Event().wait()  # until the benchmark stops it


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], Path(sys.argv[2]), sys.argv[3], float(sys.argv[4])))
