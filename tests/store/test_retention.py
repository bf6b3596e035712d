"""RemovalStore: a finished job's image files removed (🗑 or expired); the rows stay, marked."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.domain.clock import FakeClock
from bot.domain.errors import JobNotFound
from bot.domain.jobs import JobKind, JobState, RemovalReason
from bot.store import ImageNotFound, JobStore, Stores

from .factories import complete_job, make_images, make_spec, mark_running

DAY = 24 * 3600


async def _finished(store: JobStore, kind: JobKind = JobKind.GENERATE, user_id: int = 7) -> int:
    job = await store.create_job(make_spec(kind, user_id=user_id))
    await mark_running(store, [job.id])
    await complete_job(store, job.id, make_images(kind), [1, 2, 3, 4][: len(make_images(kind))])
    return job.id


def _files(root: Path) -> list[Path]:
    return sorted(root.rglob("*.png"))


async def test_remove_job_deletes_files_and_marks_the_row(stores: Stores, clock: FakeClock) -> None:
    """The files go (with the job's folder); the job and its image rows stay, marked deleted, who and when."""
    store = stores.jobs
    job_id = await _finished(store)
    kept = await _finished(store)
    images = await store.job_images(job_id)
    sizes = sum((store.images.root / image.path).stat().st_size for image in images)
    clock.advance(60)

    removal = await stores.removals.remove_job(job_id, RemovalReason.DELETED, by=99)

    assert (removal.files, removal.bytes) == (4, sizes)
    job = await store.get_job(job_id)
    assert job == removal.job
    assert (job.removed_at, job.removed_reason, job.removed_by) == (clock.now(), RemovalReason.DELETED, 99)
    assert job.is_removed
    assert job.state is JobState.SUCCEEDED
    assert [image.id for image in await store.job_images(job_id)] == [image.id for image in images]
    assert not (store.images.root / images[0].path).parent.exists()
    with pytest.raises(ImageNotFound):
        await store.load_image(images[0].id)
    assert len(_files(store.images.root)) == 4  # the other job's
    assert not (await store.get_job(kept)).is_removed


async def test_removing_twice_frees_nothing_and_keeps_the_first_record(
    stores: Stores, clock: FakeClock
) -> None:
    """A second 🗑 on a deleted job changes nothing; an expired job deleted later says who deleted it."""
    store = stores.jobs
    deleted = await _finished(store)
    first = await stores.removals.remove_job(deleted, RemovalReason.DELETED, by=1)
    clock.advance(10)
    again = await stores.removals.remove_job(deleted, RemovalReason.DELETED, by=2)
    assert (again.files, again.bytes) == (0, 0)
    assert again.job == first.job

    expired = await _finished(store)
    await stores.removals.remove_job(expired, RemovalReason.EXPIRED)
    clock.advance(10)
    later = await stores.removals.remove_job(expired, RemovalReason.DELETED, by=3)
    assert (later.job.removed_reason, later.job.removed_by, later.job.removed_at) == (
        RemovalReason.DELETED,
        3,
        clock.now(),
    )


async def test_remove_job_refuses_unknown_and_unfinished_jobs(stores: Stores) -> None:
    """An unknown id is JobNotFound; a queued job is not removed (a caller's bug: it should cancel)."""
    with pytest.raises(JobNotFound):
        await stores.removals.remove_job(12345, RemovalReason.DELETED)
    queued = await stores.jobs.create_job(make_spec())
    with pytest.raises(ValueError, match="only a finished job"):
        await stores.removals.remove_job(queued.id, RemovalReason.DELETED)
    assert not (await stores.jobs.get_job(queued.id)).is_removed


async def test_pruning_takes_jobs_finished_before_the_cutoff(stores: Stores, clock: FakeClock) -> None:
    """Succeeded jobs that finished before the cutoff lose their files and are marked expired; newer ones,
    failed ones and ones deleted already are left alone; the rows all stay."""
    store, removals = stores.jobs, stores.removals
    old = [await _finished(store), await _finished(store, JobKind.UPSCALE)]
    failed = await store.create_job(make_spec())
    await store.fail_job(failed.id, "broken")
    deleted = await _finished(store)
    await removals.remove_job(deleted, RemovalReason.DELETED, by=5)
    clock.advance(2 * DAY)
    cutoff = clock.now()
    clock.advance(1)
    new = await _finished(store)
    old_files = [store.images.root / image.path for job_id in old for image in await store.job_images(job_id)]
    size = sum(path.stat().st_size for path in old_files)

    assert await removals.finished_before(cutoff) == {
        job_id: [image.path for image in await store.job_images(job_id)] for job_id in old
    }
    report = await removals.expire_before(cutoff)

    assert (report.jobs, report.files, report.bytes, report.cutoff, report.dry_run) == (
        2,
        5,
        size,
        cutoff,
        False,
    )
    for job_id in old:
        job = await store.get_job(job_id)
        assert (job.removed_reason, job.removed_at, job.removed_by) == (
            RemovalReason.EXPIRED,
            clock.now(),
            None,
        )
        assert len(await store.job_images(job_id)) == len(make_images(job.kind))
    assert not any(path.exists() for path in old_files)
    assert (await store.get_job(deleted)).removed_reason is RemovalReason.DELETED
    assert not (await store.get_job(failed.id)).is_removed
    assert not (await store.get_job(new)).is_removed
    assert len(_files(store.images.root)) == 4  # the new job's
    assert await removals.finished_before(cutoff) == {}
    assert (await removals.expire_before(cutoff)).jobs == 0


async def test_a_dry_run_counts_and_deletes_nothing(stores: Stores, clock: FakeClock) -> None:
    """A dry run reports what pruning would free, in chunks as small as asked, and changes nothing."""
    store = stores.jobs
    jobs = [await _finished(store) for _ in range(3)]
    clock.advance(1)
    before = _files(store.images.root)
    size = sum(path.stat().st_size for path in before)

    report = await stores.removals.expire_before(clock.now(), dry_run=True, chunk=2)

    assert (report.jobs, report.files, report.bytes, report.dry_run) == (3, 12, size, True)
    assert _files(store.images.root) == before
    assert not any(job.is_removed for job in await store.get_jobs(jobs))
    real = await stores.removals.expire_before(clock.now(), chunk=2)
    assert (real.jobs, real.files, real.bytes) == (3, 12, size)
    assert _files(store.images.root) == []


async def test_files_already_gone_are_still_marked(stores: Stores, clock: FakeClock) -> None:
    """A job whose files vanished (a crash after deleting them, say) is marked expired, freeing 0 bytes."""
    store = stores.jobs
    job_id = await _finished(store)
    for path in _files(store.images.root):
        path.unlink()
    clock.advance(1)
    report = await stores.removals.expire_before(clock.now())
    assert (report.jobs, report.files, report.bytes) == (1, 0, 0)
    assert (await store.get_job(job_id)).removed_reason is RemovalReason.EXPIRED
