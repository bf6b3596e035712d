"""A scheduler process for the crash test: runs queued jobs slowly and reports, until it is killed.

Usage: python -m tests.scheduler.crash_child DATABASE_URL IMAGE_DIR [WORKER_NAME]

With a worker name it runs as one of several workers sharing the queue (short lease, fast polling).
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from bot.domain.batching import BatchingConfig
from bot.domain.clock import SystemClock
from bot.domain.events import JobUpdate
from bot.scheduler.scheduler import GpuScheduler, SharedQueue
from bot.store import Stores
from tests.fakes import FakeBackend


async def main(url: str, image_dir: Path, worker: str | None) -> None:
    stores = await Stores.open(url, image_dir, SystemClock())
    shared = SharedQueue(worker, lease_seconds=1.0, poll_seconds=0.1) if worker else None
    scheduler = GpuScheduler(
        stores.jobs,
        FakeBackend(steps_delay=0.05),
        BatchingConfig(max_images=4, max_wait=0),
        SystemClock(),
        shared=shared,
    )

    def report(update: JobUpdate) -> None:
        if update.step == 0:
            print(f"{update.state.value} {update.job_id}", flush=True)

    scheduler.add_listener(report)
    await scheduler.start()
    print("ready", flush=True)
    await asyncio.Event().wait()  # run until killed


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], Path(sys.argv[2]), sys.argv[3] if len(sys.argv) > 3 else None))
