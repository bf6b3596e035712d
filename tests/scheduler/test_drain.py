"""GpuScheduler.drain, the clean stop behind SIGTERM: no new batch is taken; the running batch finishes and
is stored within the timeout, or goes back to the queue; no job is left RUNNING."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from bot.domain.batching import BatchingConfig
from bot.domain.clock import SystemClock
from bot.domain.events import JobUpdate
from bot.domain.jobs import Job, JobKind, JobSpec, JobState
from bot.domain.params import GenerationLimits, build_params
from bot.scheduler.scheduler import GpuScheduler, SharedQueue
from bot.store import Stores
from tests.fakes import FakeBackend

LIMITS = GenerationLimits(base_resolution=64, max_steps=1000)
ONE_JOB_A_BATCH = BatchingConfig(max_images=4, max_wait=0)  # each job is four images


@pytest.fixture
async def stores(tmp_path: Path) -> AsyncIterator[Stores]:
    opened = await Stores.open(f"sqlite+aiosqlite:///{tmp_path}/jobs.db", tmp_path / "images", SystemClock())
    yield opened
    await opened.close()


async def queued(stores: Stores, user: int, steps: int) -> Job:
    params = build_params("a cat", limits=LIMITS, seed=user, steps=steps)
    return await stores.jobs.create_job(JobSpec(JobKind.GENERATE, user_id=user, params=params))


async def running_scheduler(
    stores: Stores, backend: FakeBackend, shared: SharedQueue | None = None
) -> GpuScheduler:
    scheduler = GpuScheduler(stores.jobs, backend, ONE_JOB_A_BATCH, SystemClock(), shared=shared)
    await scheduler.start()
    await scheduler.wait_ready()
    return scheduler


async def states(stores: Stores) -> dict[int, tuple[str, str | None]]:
    async with stores.database.reading() as session:
        rows = await session.execute(sa.text("SELECT id, state, lease_owner FROM jobs ORDER BY id"))
        return {row.id: (row.state, row.lease_owner) for row in rows}


async def test_drain_waits_for_the_running_batch_and_takes_no_new_one(stores: Stores) -> None:
    """The batch rendering when the drain starts is finished, stored and reported to the listeners; the
    job queued behind it stays queued."""
    backend = FakeBackend()
    backend.gate = threading.Event()  # the first batch waits after its first step until the gate opens
    first, second = await queued(stores, 1, 4), await queued(stores, 2, 4)
    scheduler = await running_scheduler(stores, backend)
    updates: list[JobUpdate] = []
    scheduler.add_listener(updates.append)
    await backend.until_rendering()
    draining = asyncio.create_task(scheduler.drain(10))
    await asyncio.sleep(0.2)
    assert not draining.done()  # it waits for the batch in hand
    backend.gate.set()
    await asyncio.wait_for(draining, 10)
    assert await states(stores) == {first.id: ("succeeded", None), second.id: ("queued", None)}
    assert len(await stores.jobs.job_images(first.id)) == 4
    assert [u.job_id for u in updates if u.state is JobState.SUCCEEDED] == [first.id]
    assert [{task.job_id for task in batch.tasks} for batch in backend.batches] == [{first.id}]


async def test_drain_past_its_timeout_hands_the_batch_back(stores: Stores) -> None:
    """A batch that would take far longer than the timeout stops at its next step and goes back to the
    queue (QUEUED, no images); the drain returns soon after the timeout."""
    backend = FakeBackend(steps_delay=0.05)
    job = await queued(stores, 1, 400)  # 20 s
    scheduler = await running_scheduler(stores, backend)
    await backend.until_rendering()
    started = time.monotonic()
    await scheduler.drain(0.3)
    assert time.monotonic() - started < 3
    assert await states(stores) == {job.id: ("queued", None)}
    assert await stores.jobs.job_images(job.id) == []


async def test_hurry_ends_the_wait_at_once(stores: Stores) -> None:
    """A second signal (`hurry`) hands the running batch back without waiting for the timeout."""
    backend = FakeBackend(steps_delay=0.05)
    job = await queued(stores, 1, 400)
    scheduler = await running_scheduler(stores, backend)
    await backend.until_rendering()
    hurry = asyncio.Event()
    draining = asyncio.create_task(scheduler.drain(3600, hurry=hurry))
    await asyncio.sleep(0.2)
    assert not draining.done()
    started = time.monotonic()
    hurry.set()
    await asyncio.wait_for(draining, 5)
    assert time.monotonic() - started < 3
    assert await states(stores) == {job.id: ("queued", None)}


async def test_storing_is_waited_for_and_a_store_past_the_timeout_is_handed_back(
    stores: Stores, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rendered results are stored before the drain returns; storing that outlasts the timeout is
    cancelled and its job goes back to the queue, never left RUNNING."""
    store = stores.jobs
    original = store.complete_jobs
    delays = iter([0.3, 30.0])

    async def slow_complete(*args: Any, **kwargs: Any) -> Any:
        await asyncio.sleep(next(delays))
        return await original(*args, **kwargs)

    monkeypatch.setattr(store, "complete_jobs", slow_complete)
    backend = FakeBackend()
    stored = await queued(stores, 1, 2)
    scheduler = await running_scheduler(stores, backend)
    await backend.until_rendering()
    await scheduler.drain(10)
    assert await states(stores) == {stored.id: ("succeeded", None)}

    late = await queued(stores, 2, 2)
    backend = FakeBackend()
    scheduler = await running_scheduler(stores, backend)
    await backend.until_rendering()
    started = time.monotonic()
    await scheduler.drain(0.5)
    assert time.monotonic() - started < 5
    assert (await states(stores))[late.id] == ("queued", None)


async def test_on_a_shared_queue_only_the_jobs_still_leased_here_go_back(stores: Stores) -> None:
    """A worker hands back the jobs it holds; one whose lease went to another worker meanwhile is that
    worker's and stays RUNNING."""
    backend = FakeBackend(steps_delay=0.05)
    ours, theirs = await queued(stores, 1, 400), await queued(stores, 2, 400)
    config = BatchingConfig(max_images=8, max_wait=0)  # both jobs in one batch
    scheduler = GpuScheduler(
        stores.jobs, backend, config, SystemClock(), shared=SharedQueue("here", lease_seconds=30)
    )
    await scheduler.start()
    await scheduler.wait_ready()
    await backend.until_rendering()
    async with stores.database.writing() as session:  # as if our lease on it lapsed and another took it
        await session.execute(
            sa.text("UPDATE jobs SET lease_owner = 'there' WHERE id = :id"), {"id": theirs.id}
        )
    await scheduler.drain(0.2)
    assert await states(stores) == {ours.id: ("queued", None), theirs.id: ("running", "there")}
