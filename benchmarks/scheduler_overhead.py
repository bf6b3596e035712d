"""What the store and the scheduler cost per job, with a backend that renders instantly.

Everything but the model is real: the service with every admission check, the `JobStore` on a temporary
SQLite file, the `GpuScheduler` with its worker thread, the PNG files. Printed for command-line jobs and
guild members at 16 and 64 px: throughput with the CPU time per job and the event loop's stalls, idle
latency from enqueue to pipeline start, and where an idle job's time goes. What each column means, the
goals and the results: docs/benchmarks.md.

    cd /work/main && .venv/bin/python -m benchmarks.scheduler_overhead
    .venv/bin/python -m benchmarks.scheduler_overhead --jobs 300 --latency-jobs 50 --profile
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import itertools
import os
import pstats
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image
from rich.console import Console
from rich.table import Table

from benchmarks._common import (
    GUILD_ID,
    benchmark_service,
    guild_member,
    loop_stalls,
    machine_line,
    percentile,
)
from bot.domain.batching import BatchingConfig
from bot.domain.clock import SystemClock
from bot.domain.errors import GenerationInterrupted
from bot.domain.events import JobUpdate
from bot.domain.jobs import JobState
from bot.domain.members import Requester
from bot.domain.render import RenderBatch, StepCallback
from bot.scheduler.scheduler import GpuScheduler
from bot.services.imagine import ImagineService
from bot.store import JobStore, Stores
from bot.store.images import ImageFiles

GOAL_JOBS_PER_S = 100.0
GOAL_IDLE_START_P50_MS = 10.0
GOAL_STALL_P99_MS = 20.0
# The store calls a job makes (admission, creation, scheduling, completion), timed in the breakdown.
STORE_CALLS = (
    "create_job",
    "start_jobs",
    "complete_jobs",
    "_record_images",
    "get_job",
)
PROMPTS = (
    "a lighthouse at dusk, oil painting",
    "a red fox in fresh snow --ar 3:2",
    "isometric city block at night, neon --no people",
    "portrait of an astronaut cat, studio lighting",
)


class InstantBackend:
    """Returns noise images of the batch's size at once, after calling `on_step` once per step.

    Records when `render()` was entered for each job (time.perf_counter()), from the worker thread.
    """

    def __init__(self, native_resolution: int) -> None:
        self._native = native_resolution
        self.entered: dict[int, float] = {}
        self.batches = 0
        self.images = 0
        self._noise: dict[tuple[int, int], list[Image.Image]] = {}

    @property
    def native_resolution(self) -> int:
        return self._native

    def load(self) -> None:
        pass

    def render(self, batch: RenderBatch, on_step: StepCallback) -> list[Image.Image]:
        entered = time.perf_counter()
        for task in batch.tasks:
            self.entered.setdefault(task.job_id, entered)
        self.batches += 1
        self.images += len(batch.tasks)
        total = batch.key.steps
        for step in range(1, total + 1):
            if not on_step(step, total):
                raise GenerationInterrupted()
        pool = self._pool(batch.key.width, batch.key.height)
        return [pool[task.seed % len(pool)] for task in batch.tasks]

    def _pool(self, width: int, height: int) -> list[Image.Image]:
        # Noise, not a flat colour: PNG compresses a flat image to nothing, a real image not at all.
        if (width, height) not in self._noise:
            self._noise[width, height] = [
                Image.frombytes("RGB", (width, height), os.urandom(width * height * 3)) for _ in range(8)
            ]
        return self._noise[width, height]


_INSIDE: ContextVar[str | None] = ContextVar("inside_store_call", default=None)


@dataclass
class CallTimes:
    """Wall time and count per store method, for calls made while `enabled`.

    A call made inside another timed call (complete_job's get_job) is recorded as "outer/inner".
    """

    enabled: bool = False
    seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    calls: Counter[str] = field(default_factory=Counter)

    def wrap(self, store: JobStore) -> None:
        for name in STORE_CALLS:
            setattr(store, name, self._timed(name, getattr(store, name)))

    def _timed(self, name: str, method: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def timed(*args: Any, **kwargs: Any) -> Any:
            if not self.enabled:
                return await method(*args, **kwargs)
            outer = _INSIDE.get()
            label = name if outer is None else f"{outer}/{name}"
            token = _INSIDE.set(label)
            started = time.perf_counter()
            try:
                return await method(*args, **kwargs)
            finally:
                self.seconds[label] += time.perf_counter() - started
                self.calls[label] += 1
                _INSIDE.reset(token)

        return timed


@dataclass
class System:
    """A store, scheduler and service on a temporary SQLite file, and the updates they emitted."""

    stores: Stores
    scheduler: GpuScheduler
    service: ImagineService
    backend: InstantBackend
    times: CallTimes
    final_at: dict[int, float] = field(default_factory=dict)
    failed: list[int] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def on_update(self, update: JobUpdate) -> None:
        if update.state.is_final:
            self.final_at[update.job_id] = time.perf_counter()
            if update.state is not JobState.SUCCEEDED:
                self.failed.append(update.job_id)
            self.changed.set()

    async def wait_final(self, count: int) -> None:
        while len(self.final_at) < count:
            self.changed.clear()
            if len(self.final_at) >= count:
                return
            await self.changed.wait()

    async def close(self) -> None:
        await self.scheduler.stop()
        await self.stores.close()


async def open_system(folder: Path, size: int, config: BatchingConfig, blocked_words: int) -> System:
    clock = SystemClock()
    stores = await Stores.open(f"sqlite+aiosqlite:///{folder}/jobs.db", folder / "images", clock)
    times = CallTimes()
    times.wrap(stores.jobs)
    backend = InstantBackend(native_resolution=size)
    scheduler = GpuScheduler(stores.jobs, backend, config, clock)
    await scheduler.start()
    await scheduler.wait_ready()
    service = benchmark_service(stores, scheduler, size, clock)
    system = System(stores, scheduler, service, backend, times)
    scheduler.add_listener(system.on_update)
    for index in range(blocked_words):
        await stores.moderation.add_blocked_word(GUILD_ID, f"forbidden{index}", added_by=1)
    return system


def image_files_ms(parent: Path, jobs: int = 50) -> float:
    """What `ImageFiles.save` costs per job (4 noise PNGs of 16 px, in a new job folder) under `parent`."""
    image = Image.frombytes("RGB", (16, 16), os.urandom(16 * 16 * 3))
    with tempfile.TemporaryDirectory(prefix="bench-fs-", dir=parent) as tmp:
        files = ImageFiles(Path(tmp))
        started = time.perf_counter()
        for job_id in range(1, jobs + 1):
            for index in range(4):
                files.save(job_id, index, image)
        return (time.perf_counter() - started) * 1000 / jobs


def requester_for(kind: str, index: int, users: int) -> Requester:
    if kind == "local":
        return Requester.local()
    return guild_member(1 + index % users)


@dataclass(frozen=True)
class Throughput:
    requester: str
    size: int
    jobs: int
    submit_s: float
    total_s: float
    batches: int
    images: int
    user_s: float  # CPU time of the whole process (every thread) over the timed run
    system_s: float  # of which in the kernel: creating and writing the PNG files, mostly
    stalls_ms: list[float]  # how late the event loop ran a 1 ms timer, over the timed run

    @property
    def jobs_per_s(self) -> float:
        return self.jobs / self.total_s

    @property
    def images_per_s(self) -> float:
        return self.images / self.total_s

    @property
    def submits_per_s(self) -> float:
        return self.jobs / self.submit_s

    @property
    def cpu_ms_per_job(self) -> float:
        return (self.user_s + self.system_s) * 1000 / self.jobs

    @property
    def kernel_ms_per_job(self) -> float:
        return self.system_s * 1000 / self.jobs


async def submit_all(system: System, kind: str, jobs: int, args: argparse.Namespace) -> None:
    counter = itertools.count()

    async def submitter() -> None:
        while (index := next(counter)) < jobs:
            await system.service.imagine(
                requester_for(kind, index, args.users), PROMPTS[index % len(PROMPTS)], steps=args.steps
            )

    await asyncio.gather(*(submitter() for _ in range(args.concurrency)))


async def measure_throughput(kind: str, size: int, args: argparse.Namespace) -> Throughput:
    config = BatchingConfig(max_images=args.max_images, max_wait=args.max_wait_ms / 1000)
    with tempfile.TemporaryDirectory(prefix="bench-sched-", dir=args.dir) as tmp:
        system = await open_system(Path(tmp), size, config, args.blocked_words)
        try:
            await submit_all(system, kind, args.warmup, args)  # warm the pool and statement caches
            await system.wait_final(args.warmup)
            system.final_at.clear()
            batches, images = system.backend.batches, system.backend.images
            async with loop_stalls() as stalls:
                cpu_before = os.times()
                started = time.perf_counter()
                await submit_all(system, kind, args.jobs, args)
                submitted = time.perf_counter()
                await system.wait_final(args.jobs)
                finished = time.perf_counter()
                cpu_after = os.times()
            if system.failed:
                raise RuntimeError(f"{len(system.failed)} jobs did not succeed, e.g. {system.failed[:5]}")
            return Throughput(
                kind,
                size,
                args.jobs,
                submitted - started,
                finished - started,
                system.backend.batches - batches,
                system.backend.images - images,
                cpu_after.user - cpu_before.user,
                cpu_after.system - cpu_before.system,
                list(stalls),
            )
        finally:
            await system.close()


@dataclass(frozen=True)
class Latency:
    requester: str
    size: int
    admit_ms: list[float]  # imagine() returned: admission + the job row
    start_ms: list[float]  # render() entered
    final_ms: list[float]  # the final update emitted
    store_seconds: dict[str, float]
    store_calls: Counter[str]


async def measure_latency(kind: str, size: int, args: argparse.Namespace) -> Latency:
    config = BatchingConfig(max_images=args.max_images, max_wait=args.max_wait_ms / 1000)
    admit: list[float] = []
    start: list[float] = []
    final: list[float] = []
    with tempfile.TemporaryDirectory(prefix="bench-sched-", dir=args.dir) as tmp:
        system = await open_system(Path(tmp), size, config, args.blocked_words)
        try:
            for index in range(args.warmup + args.latency_jobs):
                timed = index >= args.warmup
                system.times.enabled = timed
                requester = requester_for(kind, index, args.users)
                before = time.perf_counter()
                job = await system.service.imagine(requester, PROMPTS[index % 4], steps=args.steps)
                returned = time.perf_counter()
                while job.id not in system.final_at:
                    system.changed.clear()
                    if job.id not in system.final_at:
                        await system.changed.wait()
                system.times.enabled = False
                if timed:
                    admit.append((returned - before) * 1000)
                    start.append((system.backend.entered[job.id] - before) * 1000)
                    final.append((system.final_at[job.id] - before) * 1000)
                await asyncio.sleep(args.gap_ms / 1000)  # let the scheduler go idle again
            if system.failed:
                raise RuntimeError(f"{len(system.failed)} jobs did not succeed")
            return Latency(
                kind, size, admit, start, final, dict(system.times.seconds), Counter(system.times.calls)
            )
        finally:
            await system.close()


def mark(ok: bool) -> str:
    return "[green]pass[/]" if ok else "[red]FAIL[/]"


def throughput_table(results: list[Throughput], args: argparse.Namespace) -> Table:
    table = Table(
        title=f"Throughput: {args.jobs} jobs × 4 images, {args.steps} steps, {args.concurrency} submitters, "
        f"max_images={args.max_images}, max_wait={args.max_wait_ms:g} ms"
    )
    columns = (
        "requester",
        "image",
        "submit jobs/s",
        "jobs/s",
        "images/s",
        "batches",
        "CPU ms/job",
        "of which kernel",
        "loop stall p99 ms",
        "max",
        "goals",
    )
    for column in columns:
        table.add_column(column, justify="left" if column in ("requester", "image") else "right")
    for result in results:
        stall_p99 = percentile(result.stalls_ms, 0.99)
        table.add_row(
            result.requester,
            f"{result.size}×{result.size}",
            f"{result.submits_per_s:.0f}",
            f"{result.jobs_per_s:.0f}",
            f"{result.images_per_s:.0f}",
            str(result.batches),
            f"{result.cpu_ms_per_job:.2f}",
            f"{result.kernel_ms_per_job:.2f}",
            f"{stall_p99:.1f}",
            f"{max(result.stalls_ms, default=0.0):.1f}",
            f"≥ {GOAL_JOBS_PER_S:.0f} jobs/s: {mark(result.jobs_per_s >= GOAL_JOBS_PER_S)}, "
            f"stall p99 ≤ {GOAL_STALL_P99_MS:.0f} ms: {mark(stall_p99 <= GOAL_STALL_P99_MS)}",
        )
    return table


def latency_table(results: list[Latency], args: argparse.Namespace) -> Table:
    table = Table(
        title=f"Idle latency: {args.latency_jobs} jobs one at a time (ms from just before imagine())"
    )
    columns = (
        "requester",
        "image",
        "imagine() p50",
        "start p50",
        "start p90",
        "start p99",
        "final p50",
        "final p90",
        "final p99",
        "goal",
    )
    for column in columns:
        table.add_column(column, justify="left" if column in ("requester", "image") else "right")
    for result in results:
        p50 = percentile(result.start_ms, 0.5)
        table.add_row(
            result.requester,
            f"{result.size}×{result.size}",
            f"{percentile(result.admit_ms, 0.5):.1f}",
            f"{p50:.1f}",
            f"{percentile(result.start_ms, 0.9):.1f}",
            f"{percentile(result.start_ms, 0.99):.1f}",
            f"{percentile(result.final_ms, 0.5):.1f}",
            f"{percentile(result.final_ms, 0.9):.1f}",
            f"{percentile(result.final_ms, 0.99):.1f}",
            f"start p50 ≤ {GOAL_IDLE_START_P50_MS:.0f} ms: {mark(p50 <= GOAL_IDLE_START_P50_MS)}",
        )
    return table


def breakdown_table(result: Latency) -> Table:
    """Mean wall time per job of each store call, in the order a job makes them, and what is left."""
    jobs = len(result.final_ms)
    total_ms = sum(result.final_ms) / jobs
    table = Table(
        title=f"Where an idle job's time goes: {result.requester} {result.size}×{result.size}, mean of "
        f"{jobs} jobs, {total_ms:.1f} ms from before imagine() to the final update"
    )
    for column in ("step", "calls/job", "ms/call", "ms/job", "share"):
        table.add_column(column, justify="left" if column == "step" else "right")

    def row(label: str, calls: float, seconds: float) -> None:
        per_job = seconds * 1000 / jobs
        per_call = f"{seconds * 1000 / calls:.2f}" if calls else ""
        calls_text = f"{calls / jobs:.1f}" if calls else ""
        table.add_row(label, calls_text, per_call, f"{per_job:.2f}", f"{per_job / total_ms:.0%}")

    top_level = 0.0
    for label in sorted(result.store_seconds, key=_call_order):
        seconds = result.store_seconds[label]
        calls = result.store_calls[label]
        if "/" in label:
            row("  └ " + label.split("/", 1)[1], calls, seconds)
            continue
        top_level += seconds
        row(f"store.{label}", calls, seconds)
        if label == "complete_jobs":
            nested = sum(s for key, s in result.store_seconds.items() if key.startswith("complete_jobs/"))
            row("  └ PNG files (to_thread), the rest", 0, seconds - nested)
    row("everything else: parsing, scheduler, thread hops, render()", 0, total_ms * jobs / 1000 - top_level)
    return table


def _call_order(label: str) -> tuple[int, int]:
    outer, _, inner = label.partition("/")
    return STORE_CALLS.index(outer), STORE_CALLS.index(inner) + 1 if inner else 0


def profile_throughput(kind: str, size: int, args: argparse.Namespace, console: Console) -> None:
    """cProfile of one throughput run: the event loop thread only (the worker and SQLite threads not)."""
    profiler = cProfile.Profile()
    profiler.enable()
    result = asyncio.run(measure_throughput(kind, size, args))
    profiler.disable()
    stream = io.StringIO()
    stats = pstats.Stats(profiler, stream=stream)
    stats.sort_stats("tottime").print_stats(args.profile_rows)
    stats.sort_stats("cumulative").print_stats(args.profile_rows)
    console.print(
        f"[bold]cProfile, {kind} {size}×{size}[/]: {result.jobs_per_s:.0f} jobs/s under the profiler "
        "(event-loop thread only)"
    )
    console.print(stream.getvalue(), markup=False, highlight=False)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--jobs", type=int, default=1000, help="jobs per throughput run (default 1000)")
    parser.add_argument(
        "--latency-jobs", type=int, default=200, help="jobs per idle-latency run (default 200)"
    )
    parser.add_argument("--warmup", type=int, default=20, help="untimed jobs first (default 20)")
    parser.add_argument("--concurrency", type=int, default=8, help="concurrent submitters (default 8)")
    parser.add_argument("--users", type=int, default=100, help="distinct guild members (default 100)")
    parser.add_argument("--steps", type=int, default=30, help="steps per job, 1 callback each (default 30)")
    parser.add_argument("--max-images", type=int, default=8, help="MAX_BATCH_IMAGES (default 8)")
    parser.add_argument("--max-wait-ms", type=float, default=20.0, help="BATCH_WAIT_MS (default 20)")
    parser.add_argument("--blocked-words", type=int, default=20, help="blocked words in the guild (20)")
    parser.add_argument("--gap-ms", type=float, default=5.0, help="idle pause between latency jobs (5)")
    parser.add_argument(
        "--requesters", default="local,guild", help="comma list of local, guild (default both)"
    )
    parser.add_argument("--sizes", default="16,64", help="comma list of image sides in px (default 16,64)")
    parser.add_argument(
        "--dir", default=None, help="where the temporary database and images go (default: the temp dir)"
    )
    parser.add_argument("--skip-throughput", action="store_true", help="only the idle-latency runs")
    parser.add_argument("--skip-latency", action="store_true", help="only the throughput runs")
    parser.add_argument(
        "--profile", action="store_true", help="also cProfile one throughput run (guild, first size)"
    )
    parser.add_argument("--profile-rows", type=int, default=30, help="rows per cProfile listing (30)")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    console = Console()
    if not console.is_terminal:
        console = Console(width=160)  # piped into a file: keep the tables on one line each
    kinds = [kind.strip() for kind in args.requesters.split(",") if kind.strip()]
    if not set(kinds) <= {"local", "guild"}:
        raise SystemExit(f"--requesters takes local and/or guild, not {args.requesters!r}")
    sizes = [int(size) for size in args.sizes.split(",")]
    scenarios = [(kind, size) for kind in kinds for size in sizes]
    console.print(f"[bold]scheduler_overhead[/] · {machine_line()}")
    folder = Path(args.dir or tempfile.gettempdir())
    folder.mkdir(parents=True, exist_ok=True)  # e.g. `--dir data`, the bot's own folder, before its first run
    console.print(
        f"database and images under {folder}: ImageFiles.save costs {image_files_ms(folder):.2f} ms "
        "per job (4 small PNGs) there"
    )
    if not args.skip_throughput:
        throughput = [asyncio.run(measure_throughput(kind, size, args)) for kind, size in scenarios]
        console.print(throughput_table(throughput, args))
    if not args.skip_latency:
        latency = [asyncio.run(measure_latency(kind, size, args)) for kind, size in scenarios]
        console.print(latency_table(latency, args))
        detailed = next((r for r in latency if r.requester == "guild"), latency[0])
        console.print(breakdown_table(detailed))
    if args.profile:
        profile_throughput("guild" if "guild" in kinds else kinds[0], sizes[0], args, console)


if __name__ == "__main__":
    main()
