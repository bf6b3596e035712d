"""A Discord-side process without a GPU and a worker process sharing the queue on PostgreSQL."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bot.domain.jobs import JobState
from bot.domain.members import Requester
from bot.runtime.app import ImagineApp
from bot.runtime.settings import SettingsError
from tests.fakes import FakeBackend
from tests.postgres import shared_queue_settings

MEMBER = Requester(user_id=7, guild_id=1, channel_id=2)


async def test_front_end_queues_and_a_worker_renders(pg_url: str, tmp_path: Path) -> None:
    """The front end (render=False) queues a job; the worker makes it; the front end hears it finished."""
    front = await ImagineApp.start(
        shared_queue_settings(pg_url, tmp_path, "front"), backend=FakeBackend(), render=False
    )
    worker_backend = FakeBackend()
    worker = await ImagineApp.start(shared_queue_settings(pg_url, tmp_path, "gpu-1"), backend=worker_backend)
    try:
        jobs = [await front.service.imagine(MEMBER, f"a fox {n}") for n in range(3)]
        info = front.scheduler.queue_info(jobs[-1].id)
        assert info is not None or (await front.stores.jobs.get_job(jobs[-1].id)).state is not JobState.QUEUED
        done = [await asyncio.wait_for(front.scheduler.wait_finished(job.id), 15) for job in jobs]
        assert [job.state for job in done] == [JobState.SUCCEEDED] * 3
        rendered = {task.job_id for batch in worker_backend.batches for task in batch.tasks}
        assert rendered == {job.id for job in jobs}
        assert all(job.attempts == 1 for job in done)
    finally:
        await worker.close()
        await front.close()


async def test_front_end_alone_needs_postgresql(tmp_path: Path) -> None:
    """Without a shared database there is nobody to render: refused with a line that names the setting."""
    settings = shared_queue_settings(f"sqlite+aiosqlite:///{tmp_path}/jobs.db", tmp_path, "front")
    with pytest.raises(SettingsError, match="DATABASE_URL=postgresql"):
        await ImagineApp.start(settings, backend=FakeBackend(), render=False)
