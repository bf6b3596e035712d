"""The GPU scheduler with a real SQLite store and an instant fake backend."""

from __future__ import annotations

import asyncio
import errno
import logging
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bot.domain.batching import BatchingConfig
from bot.domain.clock import SystemClock
from bot.domain.events import JobUpdate
from bot.domain.jobs import Job, JobKind, JobSpec, JobState
from bot.domain.params import GenerationLimits, build_params
from bot.scheduler.scheduler import DISK_FULL, GpuScheduler, _StepRelay
from bot.store import JobStore, Stores
from bot.store.errors import DatabaseUnreachable
from tests.fakes import FakeBackend, seed_colour
from tests.store.factories import mark_running

LIMITS = GenerationLimits(base_resolution=64)


def spec(user: int = 1, *, seed: int = 1, steps: int = 4, aspect: str = "1:1") -> JobSpec:
    params = build_params("a cat", limits=LIMITS, seed=seed, steps=steps, aspect=aspect)
    return JobSpec(JobKind.GENERATE, user_id=user, params=params)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[JobStore]:
    stores = await Stores.open(f"sqlite+aiosqlite:///{tmp_path}/jobs.db", tmp_path / "images", SystemClock())
    yield stores.jobs
    await stores.close()


@pytest.fixture
def backend() -> FakeBackend:
    return FakeBackend()


async def started(store: JobStore, backend: FakeBackend, **config: float) -> GpuScheduler:
    scheduler = GpuScheduler(store, backend, BatchingConfig(**config), SystemClock())  # type: ignore[arg-type]
    await scheduler.start()
    await scheduler.wait_ready()
    return scheduler


async def submit(store: JobStore, scheduler: GpuScheduler, job_spec: JobSpec) -> Job:
    job = await store.create_job(job_spec)
    scheduler.submit(job)
    return job


async def finished(scheduler: GpuScheduler, job: Job) -> Job:
    return await asyncio.wait_for(scheduler.wait_finished(job.id), timeout=10)


class FailsAtFirst:
    """Makes the store's `method` raise `error` on its first `failures` calls, then work as before."""

    def __init__(
        self, monkeypatch: pytest.MonkeyPatch, store: JobStore, method: str, failures: int, error: Exception
    ) -> None:
        self.failures_left = failures
        original = getattr(store, method)

        async def failing(*args: Any, **kwargs: Any) -> Any:
            if self.failures_left:
                self.failures_left -= 1
                raise error
            return await original(*args, **kwargs)

        monkeypatch.setattr(store, method, failing)


async def test_job_runs_and_stores_four_images(store: JobStore, backend: FakeBackend) -> None:
    """A generate job ends SUCCEEDED with four stored images made from consecutive seeds."""
    scheduler = await started(store, backend)
    try:
        job = await finished(scheduler, await submit(store, scheduler, spec(seed=10)))
        assert job.state is JobState.SUCCEEDED
        assert job.attempts == 1
        images = await store.job_images(job.id)
        assert [image.seed for image in images] == [10, 11, 12, 13]
        pixel = (await store.load_image(images[2].id)).getpixel((0, 0))
        assert pixel == seed_colour(12)
    finally:
        await scheduler.stop()


async def test_jobs_queued_together_share_one_batch(store: JobStore, backend: FakeBackend) -> None:
    """Two compatible jobs waiting behind a running batch go through in one backend call."""
    backend.gate = threading.Event()
    scheduler = await started(store, backend, max_images=8, max_wait=0.0)
    try:
        first = await submit(store, scheduler, spec(user=1))
        await backend.until_rendering()
        second = await submit(store, scheduler, spec(user=2))
        third = await submit(store, scheduler, spec(user=3))
        backend.gate.set()
        for job in (first, second, third):
            assert (await finished(scheduler, job)).state is JobState.SUCCEEDED
        assert [len(batch.tasks) for batch in backend.batches] == [4, 8]
        assert {task.job_id for task in backend.batches[1].tasks} == {second.id, third.id}
    finally:
        await scheduler.stop()


async def test_another_member_is_not_held_back(store: JobStore, backend: FakeBackend) -> None:
    """Member 1 queues five jobs, member 2 one: member 2's job runs second."""
    backend.gate = threading.Event()
    scheduler = await started(store, backend, max_images=4, max_wait=0.0)
    try:
        flood = [await submit(store, scheduler, spec(user=1, seed=i)) for i in range(5)]
        await backend.until_rendering()
        lone = await submit(store, scheduler, spec(user=2, seed=99))
        info = scheduler.queue_info(lone.id)
        assert info is not None
        assert info.position == 1
        backend.gate.set()
        for job in [*flood, lone]:
            await finished(scheduler, job)
        order = [batch.tasks[0].job_id for batch in backend.batches]
        assert order[:3] == [flood[0].id, lone.id, flood[1].id]
    finally:
        await scheduler.stop()


async def test_cancel_queued_job(store: JobStore, backend: FakeBackend) -> None:
    """A cancelled queued job never reaches the backend."""
    backend.gate = threading.Event()
    scheduler = await started(store, backend, max_images=4, max_wait=0.0)
    try:
        running = await submit(store, scheduler, spec(user=1))
        waiting = await submit(store, scheduler, spec(user=2))
        cancelled = await scheduler.cancel(waiting.id)
        assert cancelled.state is JobState.CANCELLED
        assert scheduler.queue_info(waiting.id) is None
        backend.gate.set()
        assert (await finished(scheduler, running)).state is JobState.SUCCEEDED
        rendered = {task.job_id for batch in backend.batches for task in batch.tasks}
        assert waiting.id not in rendered
    finally:
        await scheduler.stop()


async def test_cancel_running_job_interrupts_the_batch(store: JobStore, backend: FakeBackend) -> None:
    """Cancelling the only job of a running batch stops the backend and stores no images."""
    backend.gate = threading.Event()
    updates: list[JobUpdate] = []
    scheduler = await started(store, backend)
    scheduler.add_listener(updates.append)
    try:
        job = await submit(store, scheduler, spec(steps=20))
        await backend.until_rendering()
        assert (await scheduler.cancel(job.id)).state is JobState.CANCELLED
        backend.gate.set()
        assert (await finished(scheduler, job)).state is JobState.CANCELLED
        await asyncio.sleep(0.05)
        assert await store.job_images(job.id) == []
        steps = [u.step for u in updates if u.job_id == job.id and u.state is JobState.RUNNING and u.step]
        assert max(steps, default=0) < 20
        # The scheduler goes on: the next job still runs.
        assert (await finished(scheduler, await submit(store, scheduler, spec()))).state is JobState.SUCCEEDED
    finally:
        await scheduler.stop()


async def test_out_of_memory_splits_the_batch(store: JobStore, backend: FakeBackend) -> None:
    """A batch too big for the GPU is split in halves; every job still succeeds."""
    backend.gate = threading.Event()
    scheduler = await started(store, backend, max_images=8, max_wait=0.0)
    try:
        first = await submit(store, scheduler, spec(user=1))
        await backend.until_rendering()
        backend.max_images = 2
        jobs = [await submit(store, scheduler, spec(user=user)) for user in (2, 3)]
        backend.gate.set()
        for job in [first, *jobs]:
            assert (await finished(scheduler, job)).state is JobState.SUCCEEDED
        sizes = [len(batch.tasks) for batch in backend.batches]
        # 8 fails, its halves of 4 fail, their halves of 2 succeed.
        assert sizes == [4, 8, 4, 2, 2, 4, 2, 2]
        # The smaller size is remembered: the next batch of this shape starts at 2 images.
        more = [await submit(store, scheduler, spec(user=user)) for user in (4, 5)]
        for job in more:
            await finished(scheduler, job)
        assert all(len(batch.tasks) <= 2 for batch in backend.batches[8:])
    finally:
        await scheduler.stop()


async def test_single_image_out_of_memory_fails_clearly(store: JobStore, backend: FakeBackend) -> None:
    """When even one image does not fit, the job fails with a reason."""
    backend.max_images = 0
    scheduler = await started(store, backend)
    try:
        job = await finished(scheduler, await submit(store, scheduler, spec()))
        assert job.state is JobState.FAILED
        assert job.error is not None
        assert "out of memory" in job.error
    finally:
        await scheduler.stop()


async def test_pipeline_error_fails_only_that_batch(store: JobStore, backend: FakeBackend) -> None:
    """A backend exception fails the jobs of its batch with the reason; the next batch runs."""
    backend.fail_with = RuntimeError("CUDA error: device-side assert")
    scheduler = await started(store, backend)
    try:
        failed = await finished(scheduler, await submit(store, scheduler, spec()))
        assert failed.state is JobState.FAILED
        assert failed.error is not None
        assert "device-side assert" in failed.error
        backend.fail_with = None
        assert (await finished(scheduler, await submit(store, scheduler, spec()))).state is JobState.SUCCEEDED
    finally:
        await scheduler.stop()


async def test_disk_full_fails_the_job_and_keeps_going(
    store: JobStore, backend: FakeBackend, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A full disk while saving fails each job with a message a member understands, logged once however
    many batches fail; once there is space again, jobs succeed (and that is logged too)."""
    original = store.images.save

    def full(*args: object, **kwargs: object) -> str:
        raise OSError(errno.ENOSPC, "No space left on device")

    caplog.set_level(logging.INFO, logger="bot.scheduler.scheduler")
    monkeypatch.setattr(store.images, "save", full)
    scheduler = await started(store, backend)
    try:
        for _ in range(2):
            job = await finished(scheduler, await submit(store, scheduler, spec()))
            assert job.state is JobState.FAILED
            assert job.error == DISK_FULL
        assert list(store.images.root.rglob("*.png")) == []  # nothing half-written is left
        disk_full = [r for r in caplog.records if "disk is full" in r.getMessage()]
        assert len(disk_full) == 1
        assert disk_full[0].levelno == logging.ERROR
        monkeypatch.setattr(store.images, "save", original)
        assert (await finished(scheduler, await submit(store, scheduler, spec()))).state is JobState.SUCCEEDED
        assert any("the disk has space" in r.getMessage() for r in caplog.records)
    finally:
        await scheduler.stop()


async def test_other_disk_errors_fail_the_job_with_their_reason(
    store: JobStore, backend: FakeBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An OSError other than a full disk (permissions, say) fails the job naming it; the scheduler goes on."""
    original = store.images.save

    def refused(*args: object, **kwargs: object) -> str:
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(store.images, "save", refused)
    scheduler = await started(store, backend)
    try:
        job = await finished(scheduler, await submit(store, scheduler, spec()))
        assert job.error == "I made the images but couldn't save them (Permission denied)."
        monkeypatch.setattr(store.images, "save", original)
        assert (await finished(scheduler, await submit(store, scheduler, spec()))).state is JobState.SUCCEEDED
    finally:
        await scheduler.stop()


async def test_restart_requeues_running_jobs_and_fails_after_max_attempts(
    store: JobStore, backend: FakeBackend
) -> None:
    """Jobs left RUNNING by a dead process run again, or fail once they used up their attempts."""
    fresh = await store.create_job(spec(user=1))
    worn = await store.create_job(spec(user=2))
    await mark_running(store, [fresh.id, worn.id])
    for _ in range(2):  # worn has now been started three times in all
        await store.requeue_jobs([worn.id], "test")
        await mark_running(store, [worn.id])
    queued = await store.create_job(spec(user=3))
    scheduler = GpuScheduler(store, backend, BatchingConfig(), SystemClock(), max_attempts=3)
    await scheduler.start()
    try:
        assert (await finished(scheduler, fresh)).state is JobState.SUCCEEDED
        assert (await finished(scheduler, queued)).state is JobState.SUCCEEDED
        failed = await store.get_job(worn.id)
        assert failed.state is JobState.FAILED
        assert failed.error is not None
        assert "restarted" in failed.error
    finally:
        await scheduler.stop()


async def test_progress_and_positions(store: JobStore, backend: FakeBackend) -> None:
    """Progress goes up to the total; queued jobs have positions and growing ETAs."""
    backend.gate = threading.Event()
    updates: list[JobUpdate] = []
    scheduler = await started(store, backend, max_images=4, max_wait=0.0)
    scheduler.add_listener(updates.append)
    try:
        jobs = [await submit(store, scheduler, spec(user=user, steps=5)) for user in (1, 2, 3)]
        await backend.until_rendering()
        infos = [scheduler.queue_info(job.id) for job in jobs]
        assert [info.position if info else None for info in infos] == [0, 1, 2]
        etas = [info.eta_seconds for info in infos if info]
        assert etas == sorted(etas)
        assert etas[0] < etas[2]
        backend.gate.set()
        for job in jobs:
            await finished(scheduler, job)
        steps = [u.step for u in updates if u.job_id == jobs[0].id and u.total_steps]
        # Steps that come faster than the loop takes them are folded into the newest (see below).
        assert steps[0] == 1
        assert steps[-1] == 5
        assert steps == sorted(set(steps))
        assert updates[-1].state is JobState.SUCCEEDED
    finally:
        await scheduler.stop()


async def test_every_step_is_reported_when_steps_take_time(store: JobStore) -> None:
    """Steps that take a while (as on a GPU) each reach the listeners, in order."""
    backend = FakeBackend(steps_delay=0.03)
    updates: list[JobUpdate] = []
    scheduler = await started(store, backend)
    scheduler.add_listener(updates.append)
    try:
        job = await finished(scheduler, await submit(store, scheduler, spec(steps=5)))
        assert [u.step for u in updates if u.job_id == job.id and u.total_steps] == [1, 2, 3, 4, 5]
    finally:
        await scheduler.stop()


async def test_steps_the_loop_has_not_taken_yet_are_folded_into_the_newest() -> None:
    """The GPU thread never queues more than one wake-up of the event loop for progress."""
    delivered: list[tuple[int, int]] = []
    relay = _StepRelay(asyncio.get_running_loop(), lambda step, total: delivered.append((step, total)))
    for step in range(1, 31):  # while the loop is busy (here: running this test)
        relay(step, 30)
    await asyncio.sleep(0)
    assert delivered == [(30, 30)]
    relay(30, 30)  # the same step again is not news
    await asyncio.sleep(0)
    assert delivered == [(30, 30)]


async def test_stop_lets_rendered_results_be_stored(
    store: JobStore, backend: FakeBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Storing runs beside the next render; stopping meanwhile still stores what was rendered."""
    storing = asyncio.Event()
    complete_jobs = store.complete_jobs

    async def slow_complete(results: Any, **options: Any) -> Any:
        storing.set()
        await asyncio.sleep(0.2)
        return await complete_jobs(results, **options)

    monkeypatch.setattr(store, "complete_jobs", slow_complete)
    scheduler = await started(store, backend)
    job = await submit(store, scheduler, spec())
    await asyncio.wait_for(storing.wait(), 10)
    await scheduler.stop()
    assert (await store.get_job(job.id)).state is JobState.SUCCEEDED
    assert len(await store.job_images(job.id)) == 4


async def test_the_loop_survives_a_store_outage(
    store: JobStore, backend: FakeBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store fails twice when a batch starts (a database restart): the job waits, then runs."""
    monkeypatch.setattr("bot.scheduler.scheduler.STORE_RETRY_SECONDS", 0.01)
    flaky = FailsAtFirst(monkeypatch, store, "start_jobs", 2, ConnectionError("the database is restarting"))
    scheduler = await started(store, backend)
    try:
        job = await finished(scheduler, await submit(store, scheduler, spec()))
        assert job.state is JobState.SUCCEEDED
        assert flaky.failures_left == 0
        assert scheduler.is_running
    finally:
        await scheduler.stop()


async def test_rendered_results_are_kept_until_the_database_answers_again(
    store: JobStore, backend: FakeBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The database is unreachable when a rendered batch is stored (a restart): the job is not failed;
    its images are stored once the database answers, and nothing is rendered twice."""
    monkeypatch.setattr("bot.scheduler.scheduler.STORE_RETRY_SECONDS", 0.01)
    flaky = FailsAtFirst(monkeypatch, store, "complete_jobs", 3, DatabaseUnreachable())
    scheduler = await started(store, backend)
    try:
        job = await finished(scheduler, await submit(store, scheduler, spec()))
        assert (job.state, job.error, flaky.failures_left) == (JobState.SUCCEEDED, None, 0)
        assert len(await store.job_images(job.id)) == 4
        assert len(backend.batches) == 1
    finally:
        await scheduler.stop()


async def test_claimed_jobs_go_back_to_the_queue_after_a_store_outage(
    store: JobStore, backend: FakeBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store failure after the batch was claimed: the job is queued again once the store answers."""
    monkeypatch.setattr("bot.scheduler.scheduler.STORE_RETRY_SECONDS", 0.01)
    backend.fail_with = RuntimeError("the GPU hiccuped")
    fail_job = store.fail_job

    async def unreachable(*args: Any, **kwargs: Any) -> Any:
        backend.fail_with = None  # the next try renders fine
        raise ConnectionError("the database is restarting")

    monkeypatch.setattr(store, "fail_job", unreachable)
    scheduler = await started(store, backend)
    try:
        job = await finished(scheduler, await submit(store, scheduler, spec()))
        assert job.state is JobState.SUCCEEDED
        assert job.attempts == 2
        assert len(backend.batches) == 2
    finally:
        monkeypatch.setattr(store, "fail_job", fail_job)
        await scheduler.stop()


async def test_stop_puts_a_batch_that_is_still_rendering_back_in_the_queue(
    store: JobStore, backend: FakeBackend
) -> None:
    """Stopping mid-render leaves the job QUEUED (not RUNNING), so the next start or worker takes it."""
    backend.gate = threading.Event()
    scheduler = await started(store, backend)
    job = await submit(store, scheduler, spec())
    await backend.until_rendering()
    await scheduler.stop()
    backend.gate.set()
    stopped = await store.get_job(job.id)
    assert (stopped.state, stopped.attempts) == (JobState.QUEUED, 1)
    again = GpuScheduler(store, FakeBackend(), BatchingConfig(), SystemClock())
    await again.start()
    try:
        assert (await finished(again, job)).state is JobState.SUCCEEDED
    finally:
        await again.stop()
