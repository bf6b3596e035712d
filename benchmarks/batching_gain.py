"""How much batching gains: images/s with batching on and off, on the tiny SDXL pipeline on the CPU.

Backend only (one `render()` of 16 images against four of 4) and through the bot (jobs from different
members through the real service, store and scheduler, with `max_images` 4 against 16), at 64 and 128 px,
each case repeated with the modes alternating. What each column means, and the results:
docs/benchmarks.md.

    cd /work/main && .venv/bin/python -m benchmarks.batching_gain
    .venv/bin/python -m benchmarks.batching_gain --jobs 16 --steps 8 --sizes 64 --repeats 7
"""

from __future__ import annotations

import os

# Quiet the libraries before they are imported: no download/save progress bars, no torchvision notices.
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from diffusers.utils import logging as diffusers_logging
from PIL import Image
from rich.console import Console
from rich.table import Table

from benchmarks._common import benchmark_service, guild_member, machine_line
from bot.domain.batching import BatchingConfig
from bot.domain.clock import SystemClock
from bot.domain.events import JobUpdate
from bot.domain.jobs import BatchKey, JobState, RenderMode
from bot.domain.render import ImageTask, RenderBatch, StepCallback
from bot.scheduler.scheduler import GpuScheduler
from bot.services.imagine import ImagineService
from bot.store import Stores
from inference.pipeline import DiffusersBackend
from inference.tiny import make_tiny_model

IMAGES_PER_JOB = 4
GUIDANCE = 6.0  # the bot's default: classifier-free guidance doubles the UNet batch
PROMPTS = (
    "a lighthouse at dusk, oil painting",
    "a red fox in fresh snow",
    "isometric city block at night, neon",
    "portrait of an astronaut cat, studio lighting",
)


def no_stop(step: int, total: int) -> bool:
    return True


def tasks_for(images: int, first_job: int = 1) -> list[ImageTask]:
    return [
        ImageTask(
            job_id=first_job + index // IMAGES_PER_JOB,
            index=index % IMAGES_PER_JOB,
            prompt=PROMPTS[(index // IMAGES_PER_JOB) % len(PROMPTS)],
            negative_prompt="",
            seed=1000 + index,
        )
        for index in range(images)
    ]


class RecordingBackend:
    """Delegates to the diffusers backend and records each render() call: images and seconds."""

    def __init__(self, inner: DiffusersBackend) -> None:
        self.inner = inner
        self.calls: list[tuple[int, float]] = []

    @property
    def native_resolution(self) -> int:
        return self.inner.native_resolution

    def load(self) -> None:
        self.inner.load()

    def render(self, batch: RenderBatch, on_step: StepCallback) -> list[Image.Image]:
        started = time.perf_counter()
        images = self.inner.render(batch, on_step)
        self.calls.append((len(batch.tasks), time.perf_counter() - started))
        return images


# ------------------------------------------------------------------------------------------ backend only


@dataclass(frozen=True)
class DirectResult:
    size: int
    small: int  # images per call, batching off
    calls: int  # calls of `small` images
    separate_s: list[float]  # seconds for `calls` calls of `small` images, per repeat
    batched_s: list[float]  # seconds for one call of calls × small images, per repeat

    @property
    def images(self) -> int:
        return self.small * self.calls


def measure_direct(backend: DiffusersBackend, size: int, args: argparse.Namespace) -> DirectResult:
    key = BatchKey(RenderMode.TXT2IMG, size, size, args.steps, GUIDANCE, None)
    calls = args.batch_images // IMAGES_PER_JOB
    everything = tasks_for(args.batch_images)
    chunks = [everything[i : i + IMAGES_PER_JOB] for i in range(0, len(everything), IMAGES_PER_JOB)]
    backend.render(RenderBatch(key, chunks[0]), no_stop)  # warm-up, both shapes
    backend.render(RenderBatch(key, everything), no_stop)
    separate: list[float] = []
    batched: list[float] = []
    for repeat in range(args.repeats):
        order = ("separate", "batched") if repeat % 2 == 0 else ("batched", "separate")
        for mode in order:
            started = time.perf_counter()
            if mode == "separate":
                for chunk in chunks:
                    backend.render(RenderBatch(key, chunk), no_stop)
                separate.append(time.perf_counter() - started)
            else:
                backend.render(RenderBatch(key, everything), no_stop)
                batched.append(time.perf_counter() - started)
    return DirectResult(size, IMAGES_PER_JOB, calls, separate, batched)


# ------------------------------------------------------------------------------------ through the bot


@dataclass
class BotSystem:
    stores: Stores
    scheduler: GpuScheduler
    service: ImagineService
    backend: RecordingBackend
    final: dict[int, JobState] = field(default_factory=dict)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def on_update(self, update: JobUpdate) -> None:
        if update.state.is_final:
            self.final[update.job_id] = update.state
            self.changed.set()

    async def wait_final(self, job_ids: Sequence[int]) -> None:
        while not all(job_id in self.final for job_id in job_ids):
            self.changed.clear()
            if all(job_id in self.final for job_id in job_ids):
                return
            await self.changed.wait()


@dataclass(frozen=True)
class BotRun:
    seconds: float
    calls: list[tuple[int, float]]  # (images, seconds) per render() call


async def run_jobs(system: BotSystem, args: argparse.Namespace, first_user: int) -> BotRun:
    system.backend.calls.clear()
    started = time.perf_counter()
    jobs = await asyncio.gather(
        *(
            system.service.imagine(
                guild_member(first_user + index),
                PROMPTS[index % len(PROMPTS)],
                seed=1000 + index * IMAGES_PER_JOB,
                steps=args.steps,
                guidance=GUIDANCE,
            )
            for index in range(args.jobs)
        )
    )
    await system.wait_final([job.id for job in jobs])
    seconds = time.perf_counter() - started
    failed = [job.id for job in jobs if system.final[job.id] is not JobState.SUCCEEDED]
    if failed:
        raise RuntimeError(f"jobs {failed} did not succeed")
    return BotRun(seconds, list(system.backend.calls))


@dataclass(frozen=True)
class BotResult:
    size: int
    mode: str
    max_images: int
    runs: list[BotRun]

    @property
    def seconds(self) -> list[float]:
        return [run.seconds for run in self.runs]

    @property
    def render_share(self) -> float:
        return statistics.median(sum(s for _, s in run.calls) / run.seconds for run in self.runs)

    @property
    def call_shapes(self) -> str:
        """The images per pipeline call, e.g. "4+16+12", for each distinct pattern seen."""
        patterns = dict.fromkeys("+".join(str(images) for images, _ in run.calls) for run in self.runs)
        return " | ".join(patterns)


async def measure_bot(
    backend: DiffusersBackend, size: int, modes: dict[str, int], args: argparse.Namespace
) -> list[BotResult]:
    clock = SystemClock()
    runs: dict[str, list[BotRun]] = {mode: [] for mode in modes}
    with tempfile.TemporaryDirectory(prefix="bench-batch-", dir=args.dir) as tmp:
        systems: dict[str, BotSystem] = {}
        for mode, max_images in modes.items():
            folder = Path(tmp) / mode
            stores = await Stores.open(f"sqlite+aiosqlite:///{folder}/jobs.db", folder / "images", clock)
            recording = RecordingBackend(backend)
            config = BatchingConfig(max_images=max_images, max_wait=args.max_wait_ms / 1000)
            scheduler = GpuScheduler(stores.jobs, recording, config, clock)
            await scheduler.start()
            await scheduler.wait_ready()
            service = benchmark_service(stores, scheduler, size, clock)
            system = systems[mode] = BotSystem(stores, scheduler, service, recording)
            scheduler.add_listener(system.on_update)
        try:
            for repeat in range(args.repeats + 1):  # the first round is the warm-up
                order = list(modes) if repeat % 2 == 0 else list(reversed(modes))
                for mode in order:
                    run = await run_jobs(systems[mode], args, first_user=1 + repeat * args.jobs)
                    if repeat > 0:
                        runs[mode].append(run)
        finally:
            for system in systems.values():
                await system.scheduler.stop()
                await system.stores.close()
    return [BotResult(size, mode, modes[mode], runs[mode]) for mode in modes]


# ---------------------------------------------------------------------------------------------- report


def best_median(seconds: Sequence[float]) -> tuple[float, float]:
    return min(seconds), statistics.median(seconds)


def direct_table(results: list[DirectResult], args: argparse.Namespace) -> Table:
    table = Table(
        title=f"Backend only: {args.batch_images} images, {args.steps} steps, guidance {GUIDANCE:g}, "
        f"{args.repeats} repeats"
    )
    columns = ("size", "calls × images", "best ms", "median ms", "images/s best", "gain best", "gain median")
    for column in columns:
        table.add_column(column, justify="left" if column in columns[:2] else "right")
    for result in results:
        size = f"{result.size}×{result.size}"
        base_best, base_median = best_median(result.separate_s)
        for label, seconds in (
            (f"{result.calls} × {result.small}", result.separate_s),
            (f"1 × {result.images}", result.batched_s),
        ):
            best, median = best_median(seconds)
            table.add_row(
                size,
                label,
                f"{best * 1000:.0f}",
                f"{median * 1000:.0f}",
                f"{result.images / best:.1f}",
                f"[bold]{base_best / best:.2f}×[/]",
                f"{base_median / median:.2f}×",
            )
    return table


def bot_table(results: list[BotResult], args: argparse.Namespace) -> Table:
    table = Table(
        title=f"Through service + store + scheduler: {args.jobs} jobs × {IMAGES_PER_JOB} images from "
        f"{args.jobs} members at once, {args.steps} steps, max_wait {args.max_wait_ms:g} ms, "
        f"{args.repeats} repeats"
    )
    columns = (
        "size",
        "batching",
        "max_images",
        "images per call",
        "best s",
        "median s",
        "images/s (best)",
        "in render()",
        "gain best",
        "gain median",
    )
    for column in columns:
        table.add_column(column, justify="left" if column in columns[:4] else "right")
    by_size: dict[int, list[BotResult]] = {}
    for result in results:
        by_size.setdefault(result.size, []).append(result)
    for size, group in by_size.items():
        base_best, base_median = best_median(next(r for r in group if r.mode == "off").seconds)
        for result in group:
            best, median = best_median(result.seconds)
            table.add_row(
                f"{size}×{size}",
                result.mode,
                str(result.max_images),
                result.call_shapes,
                f"{best:.2f}",
                f"{median:.2f}",
                f"{args.jobs * IMAGES_PER_JOB / best:.1f}",
                f"{result.render_share:.0%}",
                f"[bold]{base_best / best:.2f}×[/]",
                f"{base_median / median:.2f}×",
            )
    return table


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--jobs", type=int, default=8, help="jobs (and members) per run (default 8)")
    parser.add_argument("--steps", type=int, default=4, help="denoising steps (default 4)")
    parser.add_argument(
        "--batch-images", type=int, default=16, help="max_images with batching on (default 16)"
    )
    parser.add_argument("--max-wait-ms", type=float, default=20.0, help="BATCH_WAIT_MS (default 20)")
    parser.add_argument("--sizes", default="64,128", help="comma list of image sides (default 64,128)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per mode (default 5)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--dir", default=None, help="parent of the temporary folders (default: temp dir)")
    parser.add_argument("--skip-direct", action="store_true", help="skip the backend-only comparison")
    parser.add_argument("--skip-bot", action="store_true", help="skip the run through the bot")
    args = parser.parse_args()
    if args.batch_images % IMAGES_PER_JOB or args.batch_images < IMAGES_PER_JOB:
        parser.error(f"--batch-images must be a multiple of {IMAGES_PER_JOB}")
    return args


def main() -> None:
    args = parse_args()
    console = Console()
    if not console.is_terminal:
        console = Console(width=160)  # piped into a file: keep the tables on one line each
    diffusers_logging.disable_progress_bar()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    sizes = [int(size) for size in args.sizes.split(",")]
    console.print(f"[bold]batching_gain[/] · {machine_line()}")
    console.print(
        f"torch {torch.__version__} on the CPU, float32, {torch.get_num_threads()} threads "
        f"(interop {torch.get_num_interop_threads()}) · tiny SDXL pipeline (inference.tiny)"
    )
    with tempfile.TemporaryDirectory(prefix="bench-tiny-", dir=args.dir) as tmp:
        model = make_tiny_model(Path(tmp) / "tiny")
        backend = DiffusersBackend(str(model), device="cpu", dtype="float32")
        backend.load()
        if not args.skip_direct:
            console.print(direct_table([measure_direct(backend, size, args) for size in sizes], args))
        if not args.skip_bot:
            modes = {"off": IMAGES_PER_JOB, "on": args.batch_images}
            results = [r for size in sizes for r in asyncio.run(measure_bot(backend, size, modes, args))]
            console.print(bot_table(results, args))


if __name__ == "__main__":
    main()
