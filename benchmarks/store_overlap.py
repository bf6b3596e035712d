"""How busy the GPU stays while results are stored: storing beside the next render vs after each batch.

A backend that sleeps a fixed time per batch (`--render-ms`) returns SDXL-sized images that compress like
photographs; the service, store, scheduler and PNG files are real. "GPU busy" is the share of the wall
time spent inside `render()`. Results: docs/benchmarks.md.

    .venv/bin/python -m benchmarks.store_overlap                     # 16 jobs, 1024², 800 ms a batch
    .venv/bin/python -m benchmarks.store_overlap --render-ms 400 --jobs 24
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image
from rich.console import Console
from rich.table import Table

from benchmarks._common import benchmark_service, machine_line
from bot.domain.batching import BatchingConfig
from bot.domain.clock import SystemClock
from bot.domain.members import Requester
from bot.domain.render import RenderBatch, StepCallback
from bot.scheduler.scheduler import GpuScheduler
from bot.store import Stores


class TimedBackend:
    """Sleeps `seconds` per batch (the GIL is free meanwhile, as during a GPU call) and counts it."""

    def __init__(self, seconds: float, size: int) -> None:
        self._seconds = seconds
        self._native = size
        self.busy = 0.0
        self._lock = threading.Lock()
        rng = np.random.default_rng(0)
        smooth = rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)
        base = np.asarray(
            Image.fromarray(smooth).resize((size, size), Image.Resampling.BICUBIC), dtype=np.int16
        )
        self._images = [
            Image.fromarray(np.clip(base + rng.integers(-2, 3, base.shape), 0, 255).astype(np.uint8))
            for _ in range(4)
        ]

    @property
    def native_resolution(self) -> int:
        return self._native

    def load(self) -> None:
        pass

    def render(self, batch: RenderBatch, on_step: StepCallback) -> list[Image.Image]:
        started = time.perf_counter()
        for step in range(1, batch.key.steps + 1):
            on_step(step, batch.key.steps)
        time.sleep(self._seconds)
        with self._lock:
            self.busy += time.perf_counter() - started
        return [self._images[task.index] for task in batch.tasks]


async def run(overlap: bool, args: argparse.Namespace, folder: Path) -> tuple[float, float]:
    clock = SystemClock()
    stores = await Stores.open(f"sqlite+aiosqlite:///{folder}/jobs.db", folder / "images", clock)
    backend = TimedBackend(args.render_ms / 1000, args.size)
    scheduler = GpuScheduler(stores.jobs, backend, BatchingConfig(), clock, store_beside_render=overlap)
    await scheduler.start()
    await scheduler.wait_ready()
    service = benchmark_service(stores, scheduler, args.size, clock)
    try:
        started = time.perf_counter()
        jobs = [
            await service.imagine(Requester.local(), f"a photograph {n}", steps=30) for n in range(args.jobs)
        ]
        for job in jobs:
            await scheduler.wait_finished(job.id)
        return time.perf_counter() - started, backend.busy
    finally:
        await scheduler.stop()
        await stores.close()


async def main(args: argparse.Namespace) -> None:
    console = Console()
    console.print(f"store_overlap · {machine_line()}")
    table = Table(
        title=f"{args.jobs} jobs × 4 images of {args.size}², {args.render_ms:g} ms per batch of 2 jobs"
    )
    for column in ("storing", "wall s", "in render() s", "GPU busy", "images/s", "gain"):
        table.add_column(column, justify="left" if column == "storing" else "right")
    results: dict[bool, float] = {}
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        for overlap in (False, True):
            wall, busy = await run(overlap, args, Path(tmp) / str(overlap))
            results[overlap] = wall
            table.add_row(
                "beside the next render" if overlap else "after each batch",
                f"{wall:.2f}",
                f"{busy:.2f}",
                f"{busy / wall:.0%}",
                f"{args.jobs * 4 / wall:.2f}",
                f"{results[False] / wall:.2f}×",
            )
    console.print(table)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=16, help="generate jobs of 4 images (default 16)")
    parser.add_argument("--size", type=int, default=1024, help="image side in pixels (default 1024)")
    parser.add_argument("--render-ms", type=float, default=800.0, help="time per batch call (default 800)")
    parser.add_argument("--dir", default=None, help="parent of the temporary folder (default: temp dir)")
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
