"""JobStore: jobs through their states, images, and the races with members and restarts."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from PIL import Image

from bot.domain.clock import FakeClock
from bot.domain.errors import InvalidTransition, JobNotFound
from bot.domain.jobs import Job, JobKind, JobState
from bot.domain.records import JobResult
from bot.store import Database, ImageFiles, ImageNotFound, JobStore, Stores, create_engine

from .factories import complete_job, job_store, make_images, make_params, make_spec, mark_running


async def _running(store: JobStore, kind: JobKind = JobKind.GENERATE) -> int:
    job = await store.create_job(make_spec(kind))
    assert await mark_running(store, [job.id]) == [job.id]
    return job.id


async def test_create_and_get_round_trip(store: JobStore, clock: FakeClock) -> None:
    """Everything in the spec comes back, 64-bit ids and the largest seed included."""
    spec = make_spec(params=make_params(seed=2**32 - 1, guidance=7.5, aspect="16:9", width=1344, height=768))
    job = await store.create_job(spec)
    assert job.state is JobState.QUEUED
    assert job.created_at == clock.now()
    stored = await store.get_job(job.id)
    assert stored == job
    assert stored.spec == spec
    assert stored.attempts == 0
    assert (stored.started_at, stored.finished_at, stored.error) == (None, None, None)


async def test_get_missing_job(store: JobStore) -> None:
    with pytest.raises(JobNotFound, match="#404"):
        await store.get_job(404)


async def test_get_jobs_in_the_order_asked(store: JobStore) -> None:
    """Missing ids are left out; duplicates once."""
    a, b, c = [await store.create_job(make_spec()) for _ in range(3)]
    assert [job.id for job in await store.get_jobs([c.id, 999, a.id, c.id])] == [c.id, a.id]
    assert await store.get_jobs([]) == []
    assert b.id not in {job.id for job in await store.get_jobs([a.id])}


async def test_list_jobs_filters(store: JobStore) -> None:
    """Filters combine; ordered by id; limit and newest_first."""
    a = await store.create_job(make_spec(user_id=1, guild_id=10))
    b = await store.create_job(make_spec(user_id=2, guild_id=10))
    c = await store.create_job(make_spec(user_id=1, guild_id=20))
    d = await store.create_job(make_spec(user_id=1, guild_id=None))
    await mark_running(store, [b.id])
    await store.cancel_job(c.id)

    def ids(jobs: list[Job]) -> list[int]:
        return [job.id for job in jobs]

    assert ids(await store.list_jobs()) == [a.id, b.id, c.id, d.id]
    assert ids(await store.list_jobs(states=[JobState.QUEUED])) == [a.id, d.id]
    assert ids(await store.list_jobs(states={JobState.QUEUED, JobState.RUNNING})) == [a.id, b.id, d.id]
    assert ids(await store.list_jobs(states=[])) == []
    assert ids(await store.list_jobs(user_id=1)) == [a.id, c.id, d.id]
    assert ids(await store.list_jobs(user_id=1, guild_id=10)) == [a.id]
    assert ids(await store.list_jobs(limit=2)) == [a.id, b.id]
    assert ids(await store.list_jobs(user_id=1, limit=2, newest_first=True)) == [d.id, c.id]


async def test_mark_running(store: JobStore, clock: FakeClock) -> None:
    """QUEUED -> RUNNING with started_at and one more attempt; cancelled jobs are skipped."""
    a, b, c = [await store.create_job(make_spec()) for _ in range(3)]
    await store.cancel_job(b.id)
    clock.advance(5)
    assert await mark_running(store, [c.id, b.id, a.id]) == [c.id, a.id]
    job = await store.get_job(a.id)
    assert job.state is JobState.RUNNING
    assert job.started_at == clock.now()
    assert job.attempts == 1
    assert (await store.get_job(b.id)).state is JobState.CANCELLED
    assert await mark_running(store, []) == []


async def test_mark_running_twice_is_a_bug(store: JobStore) -> None:
    """A job handed out while it runs: InvalidTransition, and nothing else in the call moves."""
    running = await _running(store)
    queued = await store.create_job(make_spec())
    with pytest.raises(InvalidTransition):
        await mark_running(store, [queued.id, running])
    assert (await store.get_job(queued.id)).state is JobState.QUEUED


async def test_mark_running_unknown_job(store: JobStore) -> None:
    with pytest.raises(JobNotFound):
        await mark_running(store, [12345])


async def test_complete_job(store: JobStore, clock: FakeClock, tmp_path: Path) -> None:
    """Images saved and recorded in order; the job SUCCEEDED; files loadable by id."""
    job_id = await _running(store)
    clock.advance(30)
    images = make_images(size=(20, 10))
    stored = (await complete_job(store, job_id, images, [7, 8, 9, 2**32 - 1])).images
    assert [(i.index, i.seed, i.width, i.height) for i in stored] == [
        (0, 7, 20, 10),
        (1, 8, 20, 10),
        (2, 9, 20, 10),
        (3, 2**32 - 1, 20, 10),
    ]
    assert stored[0].path == f"jobs/00/{job_id:07d}/0.png"
    assert (tmp_path / "images" / stored[3].path).is_file()
    job = await store.get_job(job_id)
    assert job.state is JobState.SUCCEEDED
    assert job.finished_at == clock.now()
    assert await store.job_images(job_id) == stored
    assert await store.get_image(stored[2].id) == stored[2]
    loaded = await store.load_image(stored[1].id)
    assert loaded.mode == "RGB"
    assert loaded.getpixel((0, 0)) == (0, 255, 0)
    assert store.images.open_bytes((await store.get_image(stored[0].id)).path).startswith(b"\x89PNG")


async def test_complete_after_cancel_keeps_it_cancelled(store: JobStore, tmp_path: Path) -> None:
    """Cancelled while rendering: stays cancelled, no image rows, no files left behind."""
    job_id = await _running(store)
    cancelled = await store.cancel_job(job_id)
    assert cancelled.state is JobState.CANCELLED
    assert (await complete_job(store, job_id, make_images(), [1, 2, 3, 4])).images == []
    assert (await store.get_job(job_id)).state is JobState.CANCELLED
    assert await store.job_images(job_id) == []
    assert not list((tmp_path / "images").rglob("*.png"))


async def test_cancel_between_the_files_and_the_transaction(
    store: JobStore, database: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cancel lands while the files are being written: the conditional update loses, files removed."""
    job_id = await _running(store)
    save = store.images.save_results
    url = database.engine.url.render_as_string(hide_password=False)

    def save_then_cancel(results: list[JobResult]) -> list[list[str]]:
        paths = save(results)
        # In the saving thread, on its own connection.
        asyncio.run(_cancel_elsewhere(url, store.images, job_id))
        return paths

    monkeypatch.setattr(store.images, "save_results", save_then_cancel)
    assert (await complete_job(store, job_id, make_images(), [1, 2, 3, 4])).images == []
    assert (await store.get_job(job_id)).state is JobState.CANCELLED
    assert await store.job_images(job_id) == []
    assert not list((tmp_path / "images").rglob("*.png"))


async def _cancel_elsewhere(url: str, images: ImageFiles, job_id: int) -> None:
    """Another process, as far as the database can tell, cancels the job."""
    database = Database(create_engine(url), FakeClock())
    try:
        await job_store(database, images).cancel_job(job_id)
    finally:
        await database.close()


async def test_complete_checks(store: JobStore) -> None:
    """Wrong counts are ValueErrors; completing a queued or finished job is a bug."""
    job_id = await _running(store)
    with pytest.raises(ValueError, match="seeds"):
        await complete_job(store, job_id, make_images(), [1, 2])
    with pytest.raises(ValueError, match="makes 4 images"):
        await complete_job(store, job_id, make_images()[:2], [1, 2])
    queued = await store.create_job(make_spec())
    with pytest.raises(InvalidTransition):
        await complete_job(store, queued.id, make_images(), [1, 2, 3, 4])
    await complete_job(store, job_id, make_images(), [1, 2, 3, 4])
    with pytest.raises(InvalidTransition):
        await complete_job(store, job_id, make_images(), [1, 2, 3, 4])
    assert len(await store.job_images(job_id)) == 4


async def test_complete_upscale_one_image(store: JobStore) -> None:
    parent = await _running(store)
    [source, *_] = (await complete_job(store, parent, make_images(), [1, 2, 3, 4])).images
    upscale = await store.create_job(
        make_spec(JobKind.UPSCALE, parent_job_id=parent, source_image_id=source.id)
    )
    assert (await store.get_job(upscale.id)).spec.source_image_id == source.id
    await mark_running(store, [upscale.id])
    [image] = (await complete_job(store, upscale.id, make_images(JobKind.UPSCALE, (40, 40)), [5])).images
    assert (image.index, image.width) == (0, 40)


async def test_create_with_missing_references(store: JobStore) -> None:
    """A parent job or source image that does not exist: the domain's friendly errors."""
    with pytest.raises(JobNotFound):
        await store.create_job(make_spec(JobKind.REROLL, parent_job_id=77))
    with pytest.raises(ImageNotFound, match="#88"):
        await store.create_job(make_spec(JobKind.VARIATION, source_image_id=88))


async def test_disk_full_surfaces_and_leaves_the_job_running(
    store: JobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """OSError from saving reaches the caller; the job is untouched, so it can be failed or retried."""
    job_id = await _running(store)

    def full(job: int, index: int, image: Image.Image) -> str:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(store.images, "save", full)
    with pytest.raises(OSError, match="No space left"):
        await complete_job(store, job_id, make_images(), [1, 2, 3, 4])
    assert (await store.get_job(job_id)).state is JobState.RUNNING


async def test_fail_job(store: JobStore, clock: FakeClock) -> None:
    """From QUEUED or RUNNING; a job that already ended is returned unchanged."""
    queued = await store.create_job(make_spec())
    running = await _running(store)
    clock.advance(1)
    failed = await store.fail_job(queued.id, "The model is not loaded.")
    assert (failed.state, failed.error, failed.finished_at) == (
        JobState.FAILED,
        "The model is not loaded.",
        clock.now(),
    )
    assert (await store.fail_job(running, "out of memory")).state is JobState.FAILED
    cancelled = await store.create_job(make_spec())
    await store.cancel_job(cancelled.id)
    again = await store.fail_job(cancelled.id, "late")
    assert (again.state, again.error) == (JobState.CANCELLED, None)
    assert (await store.fail_job(queued.id, "twice")).error == "The model is not loaded."
    with pytest.raises(JobNotFound):
        await store.fail_job(999, "x")


async def test_cancel_job(store: JobStore, clock: FakeClock) -> None:
    queued = await store.create_job(make_spec())
    clock.advance(2)
    cancelled = await store.cancel_job(queued.id)
    assert (cancelled.state, cancelled.finished_at, cancelled.started_at) == (
        JobState.CANCELLED,
        clock.now(),
        None,
    )
    done = await _running(store)
    await complete_job(store, done, make_images(), [1, 2, 3, 4])
    assert (await store.cancel_job(done)).state is JobState.SUCCEEDED
    with pytest.raises(JobNotFound):
        await store.cancel_job(999)


async def test_requeue_jobs(store: JobStore) -> None:
    """RUNNING -> QUEUED keeping attempts and the reason; cancelled ones are skipped; queued is a bug."""
    a = await _running(store)
    b = await _running(store)
    await store.cancel_job(b)
    await store.requeue_jobs([a, b], "Out of GPU memory; trying a smaller batch.")
    job = await store.get_job(a)
    assert (job.state, job.attempts, job.error) == (
        JobState.QUEUED,
        1,
        "Out of GPU memory; trying a smaller batch.",
    )
    assert (await store.get_job(b)).state is JobState.CANCELLED
    assert await mark_running(store, [a]) == [a]
    assert (await store.get_job(a)).attempts == 2
    queued = await store.create_job(make_spec())
    with pytest.raises(InvalidTransition):
        await store.requeue_jobs([queued.id], "x")
    with pytest.raises(JobNotFound):
        await store.requeue_jobs([999], "x")
    await store.requeue_jobs([], "nothing")


async def test_recover_interrupted(store: JobStore, clock: FakeClock) -> None:
    """Running jobs go back to the queue until they have been started max_attempts times."""
    fresh = await _running(store)
    tired = await _running(store)
    for _ in range(2):
        await store.requeue_jobs([tired], "restart")
        await mark_running(store, [tired])
    queued = await store.create_job(make_spec())
    done = await _running(store)
    await complete_job(store, done, make_images(), [1, 2, 3, 4])
    clock.advance(60)

    report = await store.recover_interrupted(max_attempts=3)
    assert (report.requeued, report.failed) == ([fresh], [tired])
    requeued = await store.get_job(fresh)
    assert (requeued.state, requeued.attempts) == (JobState.QUEUED, 1)
    failed = await store.get_job(tired)
    assert failed.state is JobState.FAILED
    assert failed.error == "The bot restarted 3 times while making this image; giving up."
    assert failed.finished_at == clock.now()
    assert (await store.get_job(queued.id)).state is JobState.QUEUED
    assert (await store.get_job(done)).state is JobState.SUCCEEDED
    assert await store.recover_interrupted(max_attempts=3) == type(report)()
    with pytest.raises(ValueError, match="max_attempts"):
        await store.recover_interrupted(0)


async def test_missing_images(store: JobStore, tmp_path: Path) -> None:
    """Unknown image ids, and files gone from disk, are ImageNotFound."""
    with pytest.raises(ImageNotFound):
        await store.get_image(1)
    job_id = await _running(store)
    [first, *_] = (await complete_job(store, job_id, make_images(), [1, 2, 3, 4])).images
    (tmp_path / "images" / first.path).unlink()
    with pytest.raises(ImageNotFound):
        await store.load_image(first.id)
    with pytest.raises(FileNotFoundError):
        store.images.open_bytes((await store.get_image(first.id)).path)


async def test_datetimes_come_back_aware_utc(tmp_path: Path) -> None:
    """A clock in another zone: the same instants come back, in UTC."""
    zone = timezone(timedelta(hours=5, minutes=30))
    clock = FakeClock(datetime(2026, 3, 1, 23, 30, tzinfo=zone))
    stores = await Stores.open(f"sqlite+aiosqlite:///{tmp_path / 'tz.db'}", tmp_path / "images", clock)
    store = stores.jobs
    try:
        job = await store.create_job(make_spec())
        await mark_running(store, [job.id])
        stored = await store.get_job(job.id)
        assert stored.created_at == clock.now()
        assert stored.created_at.tzinfo is UTC
        assert stored.started_at is not None
        assert stored.started_at.tzinfo is UTC
        assert stored.created_at.isoformat() == "2026-03-01T18:00:00+00:00"
        with pytest.raises(ValueError, match="naive"):
            await stores.admission.admission_facts(1, 1, datetime(2026, 1, 1))
    finally:
        await stores.close()


async def test_racing_dispatchers_move_each_job_once(store: JobStore) -> None:
    """Two mark_running calls for the same jobs at once: one moves them all, the other raises, moving none."""
    ids = [(await store.create_job(make_spec())).id for _ in range(5)]
    results = await asyncio.gather(mark_running(store, ids), mark_running(store, ids), return_exceptions=True)
    assert sorted(map(type, results), key=str) == sorted([list, InvalidTransition], key=str)
    assert ids in results
    assert {job.attempts for job in await store.get_jobs(ids)} == {1}


async def test_start_and_complete_return_the_jobs(store: JobStore, clock: FakeClock) -> None:
    """start_jobs hands back the started jobs; complete_job the job as it ended, with its images."""
    first, second, cancelled = [await store.create_job(make_spec()) for _ in range(3)]
    await store.cancel_job(cancelled.id)
    started = await store.start_jobs([second.id, cancelled.id, first.id])
    assert [job.id for job in started] == [second.id, first.id]
    assert all(job.state is JobState.RUNNING and job.attempts == 1 for job in started)
    assert started[0] == await store.get_job(second.id)
    clock.advance(2)
    completion = await complete_job(store, first.id, make_images(), [1, 2, 3, 4])
    assert completion.job == await store.get_job(first.id)
    assert completion.job.state is JobState.SUCCEEDED
    assert completion.job.finished_at == clock.now()
    assert [image.seed for image in completion.images] == [1, 2, 3, 4]
    await store.cancel_job(second.id)
    ended = await complete_job(store, second.id, make_images(), [1, 2, 3, 4])
    assert (ended.job.state, ended.images) == (JobState.CANCELLED, [])


async def test_complete_a_batch_in_one_call(store: JobStore, tmp_path: Path) -> None:
    """complete_jobs stores each job's images; a job cancelled meanwhile stores none and leaves no file."""
    kept, cancelled = [await _running(store) for _ in range(2)]
    await store.cancel_job(cancelled)
    completions = await store.complete_jobs(
        [JobResult(kept, make_images(), [1, 2, 3, 4]), JobResult(cancelled, make_images(), [5, 6, 7, 8])]
    )
    assert [(c.job.id, c.job.state) for c in completions] == [
        (kept, JobState.SUCCEEDED),
        (cancelled, JobState.CANCELLED),
    ]
    assert [image.seed for image in completions[0].images] == [1, 2, 3, 4]
    assert completions[1].images == []
    assert len(list((tmp_path / "images").rglob("*.png"))) == 4
