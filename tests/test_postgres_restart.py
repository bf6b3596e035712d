"""PostgreSQL restarted under a running bot: operations wait it out and go on; no job is lost or made twice.

Each test runs its own server (tests/postgres.py `private_postgres`) and really stops and starts it.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from bot.domain.clock import SystemClock
from bot.domain.jobs import JobState
from bot.domain.members import Requester
from bot.runtime.app import ImagineApp
from bot.runtime.settings import Settings
from bot.store import Stores, database
from bot.store.errors import DatabaseUnreachable
from tests.fakes import FakeBackend
from tests.postgres import PrivatePostgres
from tests.store.factories import make_spec

DOWN_SECONDS = 1.5  # how long the server stays down in each test


def _settings(url: str, tmp_path: Path, name: str, *, poll: float) -> Settings:
    return Settings(
        _env_file=None,
        database_url=url,
        image_dir=tmp_path / "images",
        worker_name=name,
        lease_seconds=6,
        queue_poll_seconds=poll,
        default_steps=2,
        rate_per_minute=10_000,
        rate_burst=10_000,
        max_concurrent_jobs=100,
        daily_quota=None,
        max_batch_images=8,
    )


async def _down_for_a_while(server: PrivatePostgres, seconds: float = DOWN_SECONDS) -> None:
    await asyncio.to_thread(server.stop)
    await asyncio.sleep(seconds)
    await asyncio.to_thread(server.start)


async def test_store_operations_wait_for_the_server_to_come_back(
    private_postgres: PrivatePostgres, tmp_path: Path
) -> None:
    """Writes and reads issued while the server is down wait for it and then succeed; the pool's
    connections, all dead after the restart, are replaced without anyone seeing an error."""
    stores = await Stores.open(private_postgres.url, tmp_path / "images", SystemClock())
    store = stores.jobs
    try:
        before = await store.create_job(make_spec(user_id=1))
        await asyncio.to_thread(private_postgres.stop)
        started = time.monotonic()
        writing = asyncio.create_task(store.create_job(make_spec(user_id=2)))
        reading = asyncio.create_task(store.get_job(before.id))
        await asyncio.sleep(DOWN_SECONDS)
        assert not writing.done(), "it should wait, not fail"
        assert not reading.done(), "it should wait, not fail"
        await asyncio.to_thread(private_postgres.start)
        during = await asyncio.wait_for(writing, 20)
        assert (await asyncio.wait_for(reading, 20)).id == before.id
        assert time.monotonic() - started >= DOWN_SECONDS
        jobs = await store.list_jobs(states=[JobState.QUEUED])
        assert sorted(job.id for job in jobs) == sorted([before.id, during.id])
    finally:
        await stores.close()


async def test_every_job_finishes_once_across_a_restart(
    private_postgres: PrivatePostgres, tmp_path: Path
) -> None:
    """A worker renders batches while the server restarts twice: every job succeeds, with its four
    images recorded once, and the worker goes on without a restart of its own."""
    backend = FakeBackend(steps_delay=0.05)  # 2 steps: 0.1 s per batch
    app = await ImagineApp.start(
        _settings(private_postgres.url, tmp_path, "gpu-1", poll=0.2), backend=backend
    )
    try:
        members = [Requester(user_id=100 + n, guild_id=1, channel_id=2) for n in range(6)]
        jobs = [await app.service.imagine(members[n % 6], f"a lighthouse {n}") for n in range(24)]
        await backend.until_rendering()
        await _down_for_a_while(private_postgres)
        await asyncio.sleep(0.3)
        await _down_for_a_while(private_postgres)
        done = [await asyncio.wait_for(app.scheduler.wait_finished(job.id), 60) for job in jobs]
        assert [job.state for job in done] == [JobState.SUCCEEDED] * len(jobs), [job.error for job in done]
        for job in jobs:
            images = await app.stores.jobs.job_images(job.id)
            assert [image.index for image in images] == [0, 1, 2, 3]
        # Still serving after the restarts.
        late = await app.service.imagine(members[0], "after the restart")
        assert (await asyncio.wait_for(app.scheduler.wait_finished(late.id), 20)).state is JobState.SUCCEEDED
    finally:
        await app.close()


async def test_new_jobs_wake_a_worker_after_a_restart(
    private_postgres: PrivatePostgres, tmp_path: Path
) -> None:
    """The worker listens again once the server is back: a job queued by the front end afterwards starts
    at once, not at the next poll (set to a minute here)."""
    worker = await ImagineApp.start(
        _settings(private_postgres.url, tmp_path, "gpu-1", poll=60), backend=FakeBackend()
    )
    front = await ImagineApp.start(
        _settings(private_postgres.url, tmp_path, "front", poll=60), backend=FakeBackend(), render=False
    )
    try:
        member = Requester(user_id=7, guild_id=1, channel_id=2)
        first = await front.service.imagine(member, "before")
        assert (
            await asyncio.wait_for(worker.scheduler.wait_finished(first.id), 20)
        ).state is JobState.SUCCEEDED
        await _down_for_a_while(private_postgres)
        await asyncio.sleep(1.0)  # the worker's listening connection is back (it retries every 0.5 s)
        queued_at = time.monotonic()
        second = await front.service.imagine(member, "after")
        finished = await asyncio.wait_for(worker.scheduler.wait_finished(second.id), 20)
        assert finished.state is JobState.SUCCEEDED
        assert time.monotonic() - queued_at < 10, "woken by NOTIFY, not by the one-minute poll"
    finally:
        await front.close()
        await worker.close()


async def test_a_server_that_stays_down_gets_a_friendly_refusal(
    private_postgres: PrivatePostgres, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past the store's patience the member is told to try again (no job, rate-limit token given back);
    once the server is back the same member's request goes through."""
    monkeypatch.setattr(database, "RECONNECT_PATIENCE_SECONDS", 0.5)
    settings = _settings(private_postgres.url, tmp_path, "gpu-1", poll=0.2)
    settings.rate_burst, settings.rate_per_minute = 1, 0.1  # one token: the failed request must not use it
    app = await ImagineApp.start(settings, backend=FakeBackend())
    try:
        member = Requester(user_id=7, guild_id=1, channel_id=2)
        await asyncio.to_thread(private_postgres.stop)
        with pytest.raises(DatabaseUnreachable, match="try again in a moment"):
            await app.service.imagine(member, "while the database is down")
        await asyncio.to_thread(private_postgres.start)
        job = await app.service.imagine(member, "once it is back")
        assert (await asyncio.wait_for(app.scheduler.wait_finished(job.id), 20)).state is JobState.SUCCEEDED
        assert [j.id for j in await app.stores.jobs.list_jobs()] == [job.id]
    finally:
        await app.close()
