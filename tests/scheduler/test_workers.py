"""Several workers sharing one queue on PostgreSQL, as real processes; one is killed mid-batch."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections import Counter
from pathlib import Path

from bot.domain.clock import SystemClock
from bot.domain.jobs import JobKind, JobSpec, JobState
from bot.domain.params import GenerationLimits, build_params
from bot.store import Stores

ROOT = Path(__file__).resolve().parents[2]
LIMITS = GenerationLimits(base_resolution=64)


async def _worker(url: str, images: Path, name: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.scheduler.crash_child", url, str(images), name,
        cwd=ROOT, stdout=asyncio.subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip


async def _lines(worker: asyncio.subprocess.Process, seen: list[str]) -> None:
    assert worker.stdout is not None
    while line := (await worker.stdout.readline()).decode().strip():
        seen.append(line)


async def test_a_killed_workers_jobs_finish_on_the_other_once(pg_url: str, tmp_path: Path) -> None:
    """SIGKILL one of two workers mid-batch: its lease lapses, the other finishes every job, none twice."""
    stores = await Stores.open(pg_url, tmp_path / "images", SystemClock())
    store = stores.jobs
    jobs = [
        await store.create_job(
            JobSpec(
                JobKind.GENERATE, user_id=user, params=build_params("cat", limits=LIMITS, seed=user, steps=6)
            )
        )
        for user in range(1, 13)
    ]
    victim = await _worker(pg_url, tmp_path / "images", "victim")
    survivor = await _worker(pg_url, tmp_path / "images", "survivor")
    seen: dict[str, list[str]] = {"victim": [], "survivor": []}
    readers = [
        asyncio.create_task(_lines(victim, seen["victim"])),
        asyncio.create_task(_lines(survivor, seen["survivor"])),
    ]
    try:
        async with asyncio.timeout(30):
            while not any(line.startswith("running") for line in seen["victim"]):  # noqa: ASYNC110
                await asyncio.sleep(0.02)
        victim.send_signal(signal.SIGKILL)
        await victim.wait()
        killed_mid_batch = {int(line.split()[1]) for line in seen["victim"] if line.startswith("running")} - {
            int(line.split()[1]) for line in seen["victim"] if line.startswith("succeeded")
        }
        assert killed_mid_batch
        async with asyncio.timeout(60):
            while True:
                states = [job.state for job in await store.get_jobs([job.id for job in jobs])]
                if all(state.is_final for state in states):
                    break
                await asyncio.sleep(0.1)
        finished = await store.get_jobs([job.id for job in jobs])
        assert all(job.state is JobState.SUCCEEDED for job in finished)
        for job in finished:
            assert [image.index for image in await store.job_images(job.id)] == [0, 1, 2, 3]
        attempts = {job.id: job.attempts for job in finished}
        assert all(attempts[job_id] == 2 for job_id in killed_mid_batch)  # started by both workers
        done_by = Counter(line.split()[0] for line in seen["survivor"])
        assert done_by["succeeded"] >= len(killed_mid_batch)
    finally:
        for worker in (victim, survivor):
            if worker.returncode is None:
                worker.kill()
                await worker.wait()
        for reader in readers:
            reader.cancel()
        await stores.close()
