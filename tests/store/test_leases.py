"""Leases: workers sharing the queue claim jobs, keep them with heartbeats, and lose them when they lapse."""

from __future__ import annotations

from pathlib import Path

from bot.domain.clock import FakeClock
from bot.domain.jobs import JobState
from bot.domain.records import JobResult, Lease
from bot.store import JobStore

from .factories import make_images, make_spec

A = Lease("worker-a", 30)
B = Lease("worker-b", 30)


async def test_a_claimed_job_is_skipped_by_the_other_worker(store: JobStore) -> None:
    """Claims never overlap: what A holds, B's claim skips without error."""
    jobs = [await store.create_job(make_spec()) for _ in range(3)]
    ids = [job.id for job in jobs]
    claimed_a = await store.start_jobs(ids[:2], lease=A)
    claimed_b = await store.start_jobs(ids, lease=B)
    assert [job.id for job in claimed_a] == ids[:2]
    assert [job.id for job in claimed_b] == ids[2:]
    assert (await store.get_job(ids[0])).state is JobState.RUNNING


async def test_heartbeats_keep_a_lease_and_a_lapsed_one_is_taken_back(
    store: JobStore, clock: FakeClock
) -> None:
    """Renewing keeps the jobs; a worker that stops renewing loses them to recovery, which requeues them."""
    kept, lost = [await store.create_job(make_spec()) for _ in range(2)]
    await store.start_jobs([kept.id], lease=A)
    await store.start_jobs([lost.id], lease=B)
    clock.advance(20)
    assert await store.renew_leases([kept.id], A) == [kept.id]
    assert await store.renew_leases([kept.id], B) == []  # not B's
    clock.advance(20)  # B's lease (30 s) has lapsed; A renewed at 20 s, so it holds until 50 s
    report = await store.recover_interrupted(max_attempts=3, leases_only=True)
    assert (report.requeued, report.failed) == ([lost.id], [])
    assert (await store.get_job(lost.id)).state is JobState.QUEUED
    assert (await store.get_job(kept.id)).state is JobState.RUNNING
    assert await store.renew_leases([lost.id], B) == []  # B learns the job is no longer its own


async def test_a_worker_that_lost_its_lease_stores_nothing(
    store: JobStore, clock: FakeClock, tmp_path: Path
) -> None:
    """B hung, A took the job over: B's late result is dropped, A's is the one stored."""
    job = await store.create_job(make_spec())
    await store.start_jobs([job.id], lease=B)
    clock.advance(31)
    await store.recover_interrupted(max_attempts=3, leases_only=True)
    await store.start_jobs([job.id], lease=A)
    [late] = await store.complete_jobs([_result(job.id, 1)], owner=B.owner)
    assert (late.job.state, late.images) == (JobState.RUNNING, [])
    [done] = await store.complete_jobs([_result(job.id, 5)], owner=A.owner)
    assert done.job.state is JobState.SUCCEEDED
    assert [image.seed for image in await store.job_images(job.id)] == [5, 6, 7, 8]
    assert len(list((tmp_path / "images").rglob("*.png"))) == 4
    assert (await store.get_job(job.id)).attempts == 2


def _result(job_id: int, first_seed: int) -> JobResult:
    return JobResult(job_id, make_images(), [first_seed + n for n in range(4)])
