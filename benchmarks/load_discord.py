"""load_discord: the whole bot under load, driven through the local fake Discord.

The real bot as `imagine-bot run` builds it, connected to `fake_discord.FakeDiscord`; only the model is
replaced (`SleepBackend`, `--batch-ms` per batch). `--members` guild members type `/imagine` in a seeded
shuffled order; printed: jobs/s, p50 / p99 from command to delivery, fairness at half time, lost and
duplicated results, 429s and the bot's warnings. `--workers N` adds N worker processes on PostgreSQL.
What each column means, and the results: docs/benchmarks.md.

    .venv/bin/python -m benchmarks.load_discord
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import random
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image
from rich.console import Console
from rich.table import Table

from benchmarks._common import machine_line, percentile
from benchmarks.workers import ROOT, drop_database, fresh_database
from bot.discord_app.client import ImagineBot
from bot.domain.errors import GenerationInterrupted
from bot.domain.render import RenderBatch, StepCallback
from bot.runtime.app import ImagineApp
from bot.runtime.settings import Settings
from fake_discord import FakeDiscord, FakeMessage, InteractionHandle
from fake_discord.records import UploadedFile

MEMBER_PERMISSIONS = 0x400 | 0x800 | 0x8000 | 0x40 | 0x10000  # view, send, attach, react, history
PROMPTS = ("a lighthouse at dusk", "a red fox in snow", "an astronaut riding a horse", "a bowl of ramen")


class SleepBackend:
    """A GPU stand-in: `batch_ms` per batch, `on_step` once per step, solid images of the batch's size."""

    def __init__(self, batch_ms: float, native_resolution: int = 64) -> None:
        self.batch_s = batch_ms / 1000
        self._native = native_resolution
        self.batches = 0
        self.images = 0

    @property
    def native_resolution(self) -> int:
        return self._native

    def load(self) -> None:
        pass

    def render(self, batch: RenderBatch, on_step: StepCallback) -> list[Image.Image]:
        self.batches += 1
        self.images += len(batch.tasks)
        started = time.perf_counter()
        total = batch.key.steps
        for step in range(1, total + 1):
            remaining = started + self.batch_s * step / total - time.perf_counter()
            if remaining > 0:
                time.sleep(remaining)
            if not on_step(step, total):
                raise GenerationInterrupted()
        size = (batch.key.width, batch.key.height)
        return [Image.new("RGB", size, (task.seed % 256, 80, 160)) for task in batch.tasks]


class LogCounter(logging.Handler):
    """Counts WARNING+ records of the bot and keeps a few for the report."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.counts: Counter[str] = Counter()
        self.samples: list[str] = []
        self._lock = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        if record.name == "discord.client" and "voice will NOT be supported" in record.getMessage():
            return  # discord.py's note about optional voice packages
        with self._lock:
            key = f"{record.levelname} {record.name}: {record.getMessage()}"
            self.counts[key] += 1
            if len(self.samples) < 5 and self.counts[key] == 1:
                self.samples.append(key + (f" [{record.exc_info[1]!r}]" if record.exc_info else ""))


@dataclass
class Watcher:
    """Hooks the fake's message store: when each message first carries an image, and every result write."""

    fake: FakeDiscord
    expected: int
    delivered_at: dict[int, float] = field(default_factory=dict)  # message id -> perf_counter
    result_writes: Counter[int] = field(default_factory=Counter)  # message id -> writes with files
    all_done: asyncio.Event = field(default_factory=asyncio.Event)

    def install(self) -> None:
        world = self.fake.world
        create, edit = world.create_message, world.edit_message

        def create_message(**kwargs: Any) -> FakeMessage:
            message = create(**kwargs)
            self._seen(message, kwargs.get("uploads", ()))
            return message

        def edit_message(
            message: FakeMessage, payload: dict[str, Any], uploads: Sequence[UploadedFile], **kw: Any
        ) -> None:
            edit(message, payload, uploads, **kw)
            self._seen(message, uploads)

        world.create_message = create_message  # type: ignore[method-assign]
        world.edit_message = edit_message  # type: ignore[method-assign]

    def _seen(self, message: FakeMessage, uploads: Sequence[UploadedFile]) -> None:
        if not message.attachments:
            return
        if uploads:
            self.result_writes[message.id] += 1
        if message.id not in self.delivered_at:
            self.delivered_at[message.id] = time.perf_counter()
            if len(self.delivered_at) >= self.expected:
                self.all_done.set()


@dataclass(frozen=True)
class Result:
    jobs: int
    members: int
    seconds: float
    latencies: list[float]
    fairness: tuple[int, int, float]  # max, min, mean delivered per member at half
    member_latency: tuple[float, float]  # max, min of per-member mean latency
    lost: int
    duplicates: int
    refused: int
    rate_limited: int
    other_errors: Counter[str]
    batches: int
    images: int
    requests: Counter[str]
    logs: LogCounter


def job_of(message: FakeMessage) -> int | None:
    if not message.embeds:
        return None
    footer = (message.embeds[0].get("footer") or {}).get("text") or ""
    if "#" not in footer:
        return None
    tail = footer.rsplit("#", 1)[1]
    return int(tail) if tail.isdigit() else None


async def run_load(args: argparse.Namespace, logs: LogCounter) -> Result:
    fake = FakeDiscord()
    await fake.start()
    guild = fake.add_guild("load test")
    channel = fake.add_channel(guild, "imagine")
    members = [
        fake.add_member(guild, name=f"member{i}", permissions=MEMBER_PERMISSIONS) for i in range(args.members)
    ]
    order = [members[i % len(members)] for i in range(args.jobs)]
    random.Random(args.seed).shuffle(order)
    watcher = Watcher(fake, args.jobs)
    watcher.install()
    backend = SleepBackend(args.batch_ms)
    shared_url = await fresh_database(args.url) if args.workers else None
    workers: list[asyncio.subprocess.Process] = []
    with tempfile.TemporaryDirectory(prefix="bench-load-", dir=args.dir) as tmp:
        settings = Settings(
            _env_file=None,
            discord_token=fake.token,
            database_url=shared_url or f"sqlite+aiosqlite:///{tmp}/bot.db",
            queue_poll_seconds=0.2,
            image_dir=Path(tmp) / "images",
            model="sleep-backend",
            device="cpu",
            dtype="float32",
            rate_per_minute=1e9,
            rate_burst=10**9,
            max_concurrent_jobs=10**9,
            daily_quota=None,
            metrics_port=0,
        )
        # With workers the bot only queues and delivers (`run --no-worker`); they render on the shared queue.
        app = await ImagineApp.start(settings, backend=backend, render=not args.workers)
        images = str(Path(tmp) / "images")
        for index in range(args.workers):
            command = ["-m", "benchmarks.worker_child", str(shared_url), images, f"worker-{index}"]
            workers.append(
                await asyncio.create_subprocess_exec(
                    sys.executable,
                    *command,
                    str(args.batch_ms),
                    cwd=ROOT,
                    stdout=asyncio.subprocess.DEVNULL,
                    env={**os.environ, "PYTHONPATH": str(ROOT)},
                )
            )
        bot = ImagineBot(app, guild_id=guild)  # edit_interval: the production default (2 s)
        handles: list[tuple[InteractionHandle, float]] = []
        try:
            async with fake.running(bot):
                await fake.wait_for_commands(guild)
                started = time.perf_counter()
                await submit(fake, guild, channel, order, args, handles)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(watcher.all_done.wait(), args.timeout)
                await asyncio.sleep(args.settle)  # late duplicates would show up here
        finally:
            for worker in workers:
                worker.kill()
                await worker.wait()
            await app.close()
            await fake.stop()
            if shared_url is not None:
                await drop_database(args.url, shared_url)
    return summarise(fake, watcher, backend, handles, started, channel, members, args, logs)


async def submit(
    fake: FakeDiscord,
    guild: int,
    channel: int,
    order: list[int],
    args: argparse.Namespace,
    handles: list[tuple[InteractionHandle, float]],
) -> None:
    slots = asyncio.Semaphore(args.concurrency)
    pending: set[asyncio.Task[None]] = set()

    async def one(user: int, index: int) -> None:
        try:
            sent = time.perf_counter()
            handle = await fake.invoke_slash(guild, channel, user, "imagine", {"prompt": PROMPTS[index % 4]})
            handles.append((handle, sent))
            await handle.wait_response(timeout=30)
        finally:
            slots.release()

    interval = 1 / args.rate if args.rate else 0.0
    begin = time.perf_counter()
    for index, user in enumerate(order):
        await slots.acquire()
        if interval:
            delay = begin + index * interval - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
        task = asyncio.create_task(one(user, index))
        pending.add(task)
        task.add_done_callback(pending.discard)
    await asyncio.gather(*pending)


def summarise(
    fake: FakeDiscord,
    watcher: Watcher,
    backend: SleepBackend,
    handles: list[tuple[InteractionHandle, float]],
    started: float,
    channel: int,
    members: list[int],
    args: argparse.Namespace,
    logs: LogCounter,
) -> Result:
    latencies: list[float] = []
    per_member: dict[int, list[float]] = defaultdict(list)
    delivered: list[tuple[float, int]] = []  # (time, member)
    lost = refused = 0
    for handle, sent in handles:
        if not handle.responses or not handle.responses[0].accepted:
            refused += 1
        at = watcher.delivered_at.get(handle.original_message_id or -1)
        if at is None:
            lost += 1
            continue
        latencies.append(at - sent)
        per_member[handle.user_id].append(at - sent)
        delivered.append((at, handle.user_id))
    lost += args.jobs - len(handles)
    delivered.sort()
    half = Counter(member for _, member in delivered[: args.jobs // 2])
    counts = [half.get(member, 0) for member in members]
    means = [sum(v) / len(v) for v in per_member.values()] or [float("nan")]

    # Every message showing a result, in the channel and in members' DMs, counted per job.
    messages_per_job: Counter[int] = Counter()
    writes_per_job: Counter[int] = Counter()
    result_messages = fake.messages(channel)
    for member in members:
        result_messages += fake.dm_messages(member)
    for message in result_messages:
        job = job_of(message)
        if message.attachments and job is not None:
            messages_per_job[job] += 1
            writes_per_job[job] += watcher.result_writes[message.id]
    duplicates = sum(n - 1 for n in messages_per_job.values() if n > 1)
    duplicates += sum(n - 1 for n in writes_per_job.values() if n > 1)
    last = max((at for at, _ in delivered), default=time.perf_counter())
    errors = Counter(f"{e.status} {e.code} {e.method} {e.path.split('/')[1]}" for e in fake.errors)
    rate_limited = sum(1 for e in fake.errors if e.status == 429)
    other = Counter({k: v for k, v in errors.items() if not k.startswith("429")})
    return Result(
        jobs=args.jobs,
        members=len(members),
        seconds=last - started,
        latencies=latencies,
        fairness=(max(counts), min(counts), sum(counts) / len(counts)),
        member_latency=(max(means), min(means)),
        lost=lost,
        duplicates=duplicates,
        refused=refused,
        rate_limited=rate_limited,
        other_errors=other,
        batches=backend.batches,
        images=backend.images,
        requests=Counter(r.route or r.key for r in fake.requests),
        logs=logs,
    )


def result_table(result: Result, args: argparse.Namespace) -> Table:
    pacing = f"{args.rate:g} commands/s" if args.rate else f"≤ {args.concurrency} commands in flight"
    deployment = f"PostgreSQL, bot + {args.workers} workers" if args.workers else "SQLite, 1 process"
    table = Table(title=f"/imagine via the fake Discord: {deployment}, {args.batch_ms:g} ms/batch, {pacing}")
    columns = ("jobs", "members", "jobs/s", "p50 s", "p99 s", "fairness (max / min at half)", "lost")
    for column in (*columns, "duplicates", "429s"):
        table.add_column(column, justify="right")
    fair_max, fair_min, fair_mean = result.fairness
    table.add_row(
        str(result.jobs),
        str(result.members),
        f"{len(result.latencies) / result.seconds:.1f}",
        f"{percentile(result.latencies, 0.5):.2f}",
        f"{percentile(result.latencies, 0.99):.2f}",
        f"{fair_max} / {fair_min} (mean {fair_mean:.1f})",
        str(result.lost),
        str(result.duplicates),
        str(result.rate_limited),
    )
    return table


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--jobs", type=int, default=1000, help="/imagine commands in all (default 1000)")
    parser.add_argument("--members", type=int, default=100, help="distinct guild members (default 100)")
    parser.add_argument("--batch-ms", type=float, default=20.0, help="backend time per batch (default 20)")
    parser.add_argument(
        "--rate", type=float, default=0.0, help="commands per second (default 0: as fast as possible)"
    )
    parser.add_argument(
        "--concurrency", type=int, default=16, help="commands awaiting their first response at most (16)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the command order (default 0)")
    parser.add_argument("--timeout", type=float, default=300.0, help="give up on results after (300 s)")
    parser.add_argument("--settle", type=float, default=3.0, help="wait after the last result (3 s)")
    parser.add_argument("--dir", default=None, help="where the database and images go (the temp dir)")
    parser.add_argument(
        "--workers", type=int, default=0, help="worker processes on PostgreSQL (default 0: SQLite, 1 process)"
    )
    parser.add_argument(
        "--url", default="postgresql+asyncpg://postgres@127.0.0.1:5432/test", help="PostgreSQL server"
    )
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    console = Console()
    if not console.is_terminal:
        console = Console(width=160)
    logs = LogCounter()
    logging.basicConfig(level=logging.WARNING, handlers=[logs])
    console.print(f"[bold]load_discord[/] · {machine_line()}")
    result = asyncio.run(run_load(args, logs))
    console.print(result_table(result, args))
    backend = (
        "backend: in the worker processes"
        if args.workers
        else f"backend: {result.batches} batches, {result.images} images "
        f"({result.images / max(result.batches, 1):.1f} per batch)"
    )
    console.print(
        f"{backend}; per-member mean latency max / min: {result.member_latency[0]:.2f} / "
        f"{result.member_latency[1]:.2f} s; commands not accepted: {result.refused}"
    )
    total = sum(result.requests.values())
    top = ", ".join(f"{route} {count}" for route, count in result.requests.most_common(3))
    console.print(f"REST requests to the fake: {total} ({total / result.jobs:.1f} per job); most: {top}")
    if result.other_errors:
        console.print(f"other errors from the fake: {dict(result.other_errors)}")
    if result.logs.counts:
        console.print(f"bot log WARNING+: {sum(result.logs.counts.values())} records")
        for sample in result.logs.samples:
            console.print(f"  {sample}", markup=False, highlight=False)


if __name__ == "__main__":
    main()
