"""Kill a real scheduler process with SIGKILL mid-work; after a restart no job is lost or done twice."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

from bot.domain.batching import BatchingConfig
from bot.domain.clock import SystemClock
from bot.domain.jobs import JobKind, JobSpec, JobState
from bot.domain.params import GenerationLimits, build_params
from bot.scheduler.scheduler import GpuScheduler
from bot.store import Stores
from tests.fakes import FakeBackend

ROOT = Path(__file__).resolve().parents[2]


async def test_sigkill_mid_batch_loses_nothing(tmp_path: Path) -> None:
    """Jobs queued and running when the process dies all finish exactly once after a restart."""
    url = f"sqlite+aiosqlite:///{tmp_path}/jobs.db"
    stores = await Stores.open(url, tmp_path / "images", SystemClock())
    store = stores.jobs
    limits = GenerationLimits(base_resolution=64)
    jobs = [
        await store.create_job(
            JobSpec(
                JobKind.GENERATE, user_id=user, params=build_params("cat", limits=limits, seed=user, steps=8)
            )
        )
        for user in range(1, 7)
    ]
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.scheduler.crash_child",
        url,
        str(tmp_path / "images"),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert child.stdout is not None
    seen: list[str] = []
    try:
        # Kill once one job has succeeded and another has started running.
        async with asyncio.timeout(60):
            while not (any(s.startswith("succeeded") for s in seen) and seen[-1].startswith("running")):
                line = (await child.stdout.readline()).decode().strip()
                assert line, f"the child exited early after {seen}"
                seen.append(line)
    finally:
        child.send_signal(signal.SIGKILL)
        await child.wait()
    assert child.returncode == -signal.SIGKILL

    before = {job.id: job for job in await store.get_jobs([job.id for job in jobs])}
    done_before = {job_id for job_id, job in before.items() if job.state is JobState.SUCCEEDED}
    running_before = {job_id for job_id, job in before.items() if job.state is JobState.RUNNING}
    assert done_before
    assert running_before
    assert any(job.state is JobState.QUEUED for job in before.values())

    backend = FakeBackend()
    scheduler = GpuScheduler(store, backend, BatchingConfig(max_images=4, max_wait=0), SystemClock())
    await scheduler.start()
    try:
        after = [await asyncio.wait_for(scheduler.wait_finished(job.id), 20) for job in jobs]
    finally:
        await scheduler.stop()
        await stores.close()

    assert all(job.state is JobState.SUCCEEDED for job in after)
    rerun = {task.job_id for batch in backend.batches for task in batch.tasks}
    assert rerun.isdisjoint(done_before)  # nothing done twice
    assert running_before <= rerun  # the interrupted ones ran again
    stores = await Stores.open(url, tmp_path / "images", SystemClock())
    try:
        for job in after:
            images = await stores.jobs.job_images(job.id)
            assert [image.index for image in images] == [0, 1, 2, 3]
        assert {job.id: job.attempts for job in after if job.id in running_before} == dict.fromkeys(
            running_before, 2
        )
    finally:
        await stores.close()
