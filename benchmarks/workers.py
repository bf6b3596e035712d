"""Throughput with 1, 2 and 4 worker processes sharing one PostgreSQL queue.

Each worker is a real process (`benchmarks.worker_child`) running the shared-queue scheduler with a
backend that takes a fixed time per batch (`--batch-ms`, like a GPU at full use; it sleeps, so workers on
this 2-core machine do not compete for the CPU the way the rendering itself would not). Jobs come from
`--members` members, all queued before the workers start. Printed per worker count: jobs/s, the speed-up
over one worker, fairness (when half the jobs are done, the most jobs any member has had over the fewest:
1.00 is perfectly even), and lost / duplicated results (every job must end SUCCEEDED, once, with its 4
images).

    .venv/bin/python -m benchmarks.workers                                   # 200 jobs, 100 members
    .venv/bin/python -m benchmarks.workers --url postgresql+asyncpg://postgres@127.0.0.1:5432/test
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from pathlib import Path

from rich.console import Console
from rich.table import Table
from sqlalchemy.ext.asyncio import create_async_engine

from benchmarks._common import machine_line
from bot.domain.clock import SystemClock
from bot.domain.jobs import JobKind, JobSpec, JobState
from bot.domain.params import GenerationLimits, build_params
from bot.store import Stores

ROOT = Path(__file__).resolve().parents[1]
LIMITS = GenerationLimits(base_resolution=64)


async def fresh_database(server: str) -> str:
    name = f"imagine_bench_{uuid.uuid4().hex[:10]}"
    admin = create_async_engine(server, isolation_level="AUTOCOMMIT")
    async with admin.connect() as connection:
        await connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    await admin.dispose()
    return server.rsplit("/", 1)[0] + "/" + name


async def drop_database(server: str, url: str) -> None:
    admin = create_async_engine(server, isolation_level="AUTOCOMMIT")
    async with admin.connect() as connection:
        await connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')
    await admin.dispose()


async def run(workers: int, args: argparse.Namespace, folder: Path) -> dict[str, float]:
    url = await fresh_database(args.url)
    stores = await Stores.open(url, folder / "images", SystemClock())
    store = stores.jobs
    processes: list[asyncio.subprocess.Process] = []
    try:
        jobs = [
            await store.create_job(
                JobSpec(
                    JobKind.GENERATE,
                    user_id=1 + n % args.members,
                    params=build_params("a fox", limits=LIMITS, seed=n, steps=4),
                )
            )
            for n in range(args.jobs)
        ]
        started = time.perf_counter()
        for index in range(workers):
            processes.append(
                await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "benchmarks.worker_child",
                    url,
                    str(folder / "images"),
                    f"worker-{index}",
                    str(args.batch_ms),
                    cwd=ROOT,
                    stdout=asyncio.subprocess.DEVNULL,
                    env={**os.environ, "PYTHONPATH": str(ROOT)},
                )
            )
        done_at: dict[int, float] = {}
        ids = [job.id for job in jobs]
        while len(done_at) < len(ids):
            for job in await store.get_jobs([i for i in ids if i not in done_at]):
                if job.state.is_final:
                    done_at[job.id] = time.perf_counter() - started
            await asyncio.sleep(0.05)
        wall = max(done_at.values())
        finished = await store.get_jobs(ids)
        lost = sum(job.state is not JobState.SUCCEEDED for job in finished)
        duplicated = 0
        for job in finished:
            images = await store.job_images(job.id)
            duplicated += len(images) != 4 or job.attempts != 1
        # Fairness: when half the jobs are done, how many each member has had (round-robin: all the same).
        half = sorted(done_at.values())[len(done_at) // 2 - 1]
        served: dict[int, int] = defaultdict(int)
        for job in finished:
            served[job.user_id] += done_at[job.id] <= half
        counts = [served[member] for member in range(1, args.members + 1)]
        return {
            "jobs/s": len(ids) / wall,
            "fairness": max(counts) / min(counts) if min(counts) else float("inf"),
            "lost": lost,
            "duplicated": duplicated,
        }
    finally:
        for process in processes:
            process.kill()
            await process.wait()
        await stores.close()
        await drop_database(args.url, url)


async def main(args: argparse.Namespace) -> None:
    console = Console()
    console.print(f"workers · {machine_line()}")
    table = Table(
        title=f"{args.jobs} jobs from {args.members} members, {args.batch_ms:g} ms per batch of 8 images"
    )
    for column in ("workers", "jobs/s", "speed-up", "fairness", "lost", "duplicated"):
        table.add_column(column, justify="right")
    base = None
    with tempfile.TemporaryDirectory() as tmp:
        for workers in args.workers:
            result = await run(workers, args, Path(tmp) / str(workers))
            base = base or result["jobs/s"]
            table.add_row(
                str(workers),
                f"{result['jobs/s']:.1f}",
                f"{result['jobs/s'] / base:.2f}×",
                f"{result['fairness']:.2f}",
                str(int(result["lost"])),
                str(int(result["duplicated"])),
            )
    console.print(table)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", default="postgresql+asyncpg://postgres@127.0.0.1:5432/test", help="server")
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--members", type=int, default=100)
    parser.add_argument("--batch-ms", type=float, default=200.0, help="time per batch (default 200)")
    parser.add_argument("--workers", type=lambda t: [int(n) for n in t.split(",")], default=[1, 2, 4])
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
