"""The same migrations and stores (jobs, admission, moderation) on PostgreSQL (asyncpg).

Each test gets a database of its own, created and dropped here, so reruns start clean. The server is
$TEST_POSTGRES_URL, else postgresql+asyncpg://postgres@127.0.0.1:5432/test (then the same as root).
Without a server the tests are skipped, except under CI (CI set), where a missing server fails them.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from bot.domain.clock import FakeClock
from bot.domain.errors import InvalidTransition
from bot.domain.jobs import JobKind, JobState, RemovalReason
from bot.domain.records import GuildSettings, Lease
from bot.store import (
    Database,
    ImageFiles,
    JobStore,
    Stores,
    create_engine,
    downgrade,
    migrate,
    schema_is_current,
)
from tests.postgres import _reachable_server

from .factories import action_log, complete_job, job_store, make_images, make_spec, mark_running
from .schema import schema_diff, table_names


@pytest.fixture
async def pg_stores(pg_url: str, tmp_path: Path, clock: FakeClock) -> AsyncIterator[Stores]:
    stores = await Stores.open(pg_url, tmp_path / "images", clock)
    yield stores
    await stores.close()


@pytest.fixture
def pg_store(pg_stores: Stores) -> JobStore:
    return pg_stores.jobs


async def test_unreachable_server_skips_locally_but_fails_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    nowhere = ["postgresql+asyncpg://postgres@127.0.0.1:1/test"]
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="not reachable"):
        await _reachable_server(nowhere)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI is set"):
        await _reachable_server(nowhere)


async def test_migrations(pg_url: str, tmp_path: Path) -> None:
    """Upgrade matches the models, is idempotent, and downgrades to nothing with data in place."""
    await migrate(pg_url)
    await migrate(pg_url)
    engine = create_engine(pg_url)
    try:
        async with engine.connect() as connection:
            assert await connection.run_sync(schema_diff) == []
        assert await schema_is_current(engine)

        store = job_store(Database(engine, FakeClock()), ImageFiles(tmp_path))
        parent = await store.create_job(make_spec())
        await mark_running(store, [parent.id])
        [image, *_] = (await complete_job(store, parent.id, make_images(), [1, 2, 3, 4])).images
        await store.create_job(
            make_spec(JobKind.VARIATION, parent_job_id=parent.id, source_image_id=image.id)
        )

        await downgrade(pg_url, "base")
        async with engine.connect() as connection:
            assert await connection.run_sync(table_names) == {"alembic_version"}
        await migrate(pg_url)
        assert await schema_is_current(engine)
    finally:
        await engine.dispose()


async def test_jobs_and_races(pg_store: JobStore, clock: FakeClock) -> None:
    """Lifecycle, cancel-while-running, concurrent mark_running, recovery."""
    store = pg_store
    jobs = await asyncio.gather(*(store.create_job(make_spec(user_id=2**63 - 1)) for _ in range(6)))
    ids = [job.id for job in jobs]
    # Two dispatchers racing for the same jobs (a bug): one moves them all, the other moves none.
    results = await asyncio.gather(mark_running(store, ids), mark_running(store, ids), return_exceptions=True)
    assert sorted(map(type, results), key=str) == sorted([list, InvalidTransition], key=str)
    assert ids in results
    assert {job.attempts for job in await store.get_jobs(ids)} == {1}

    done, cancelled, requeued, tired, *_ = ids
    clock.advance(10)
    stored = (await complete_job(store, done, make_images(), [0, 1, 2, 2**32 - 1])).images
    assert [image.seed for image in await store.job_images(done)] == [0, 1, 2, 2**32 - 1]
    assert (await store.load_image(stored[3].id)).mode == "RGB"

    await store.cancel_job(cancelled)
    assert (await complete_job(store, cancelled, make_images(), [1, 2, 3, 4])).images == []
    assert (await store.get_job(cancelled)).state is JobState.CANCELLED

    await store.requeue_jobs([requeued], "Out of GPU memory.")
    assert (await store.get_job(requeued)).state is JobState.QUEUED
    await store.requeue_jobs([tired], "again")
    await mark_running(store, [tired])
    report = await store.recover_interrupted(max_attempts=2)
    assert report.failed == [tired]
    assert set(report.requeued) == set(ids[4:])
    failed = await store.get_job(tired)
    assert failed.error == "The bot restarted 2 times while making this image; giving up."
    assert failed.finished_at == clock.now()
    assert failed.finished_at.tzinfo is UTC


async def test_usage_and_moderation(pg_stores: Stores, clock: FakeClock) -> None:
    store, admission, moderation = pg_stores.jobs, pg_stores.admission, pg_stores.moderation

    async def count_jobs_since(guild_id: int, user_id: int, since: datetime) -> int:
        return (await admission.admission_facts(guild_id, user_id, since)).used_since

    guild, user, mod = 2**62, 2**63 - 1, 2**61
    start = clock.now()
    job = await store.create_job(make_spec(user_id=user, guild_id=guild))
    await store.cancel_job(job.id)  # cancelled before it started: does not count
    await store.create_job(make_spec(user_id=user, guild_id=guild))
    assert await count_jobs_since(guild, user, start) == 1
    clock.advance(5)
    await moderation.reset_usage(guild, user, mod)
    assert await count_jobs_since(guild, user, start) == 0
    override = await moderation.set_quota_override(guild, user, 50, mod)
    assert (override.daily_quota, override.usage_reset_at) == (50, clock.now())
    assert (await admission.admission_facts(None, user, start)).active_jobs == 1

    assert await moderation.get_guild_settings(guild) == GuildSettings(guild_id=guild)
    await moderation.update_guild_settings(guild, daily_quota=10)
    settings = await moderation.update_guild_settings(guild, buttons_for_everyone=True)
    assert (settings.daily_quota, settings.buttons_for_everyone) == (10, True)

    await moderation.ban(guild, user, "spam", mod)
    assert (await admission.admission_facts(guild, user, start)).banned
    assert await moderation.unban(guild, user)
    assert not await moderation.unban(guild, user)
    assert await moderation.add_blocked_word(guild, "Gore", mod)
    assert not await moderation.add_blocked_word(guild, "gore", mod)
    assert await moderation.blocked_words(guild) == ["gore"]
    await moderation.record_action(guild, mod, "ban", user, {"reason": "spam"})
    [action] = await action_log(pg_stores.database, guild)
    assert (action.action, action.details, action.created_at) == ("ban", {"reason": "spam"}, clock.now())


async def test_removal_and_pruning(pg_stores: Stores, clock: FakeClock) -> None:
    """🗑 and pruning on PostgreSQL: files gone, rows kept and marked, each job once."""
    store, removals = pg_stores.jobs, pg_stores.removals
    ids = []
    for _ in range(3):
        job = await store.create_job(make_spec())
        await mark_running(store, [job.id])
        await complete_job(store, job.id, make_images(), [1, 2, 3, 4])
        ids.append(job.id)
    deleted = ids[0]
    removal = await removals.remove_job(deleted, RemovalReason.DELETED, by=2**63 - 1)
    assert (removal.files, removal.job.removed_by, removal.job.removed_at) == (4, 2**63 - 1, clock.now())
    clock.advance(1)
    dry = await removals.expire_before(clock.now(), dry_run=True, chunk=1)
    assert (dry.jobs, dry.files) == (2, 8)
    report = await removals.expire_before(clock.now(), chunk=1)
    assert (report.jobs, report.files, report.bytes) == (dry.jobs, dry.files, dry.bytes)
    assert [job.removed_reason for job in await store.get_jobs(ids)] == [
        RemovalReason.DELETED,
        RemovalReason.EXPIRED,
        RemovalReason.EXPIRED,
    ]
    assert list(store.images.root.rglob("*.png")) == []


async def test_timezones(pg_url: str, tmp_path: Path) -> None:
    """timestamptz keeps the instant; it comes back in UTC."""
    clock = FakeClock(datetime(2026, 3, 1, 23, 30, tzinfo=timezone(timedelta(hours=5, minutes=30))))
    async with await Stores.open(pg_url, tmp_path, clock) as stores:
        job = await stores.jobs.create_job(make_spec())
        stored = await stores.jobs.get_job(job.id)
    assert stored.created_at == clock.now()
    assert stored.created_at.isoformat() == "2026-03-01T18:00:00+00:00"


async def test_workers_claim_disjoint_jobs_at_once(pg_url: str, tmp_path: Path, clock: FakeClock) -> None:
    """Two workers (two connections) claiming the same 20 jobs at once never both get one, and lose none."""
    first_stores = await Stores.open(pg_url, tmp_path / "images", clock)
    second_stores = await Stores.open(pg_url, tmp_path / "images", clock)
    first, second = first_stores.jobs, second_stores.jobs
    try:
        ids = [(await first.create_job(make_spec())).id for _ in range(20)]
        for _ in range(5):  # several rounds, so the claims really interleave
            claims = await asyncio.gather(
                first.start_jobs(ids, lease=Lease("a", 30)),
                second.start_jobs(ids[::-1], lease=Lease("b", 30)),
            )
            a, b = ({job.id for job in claim} for claim in claims)
            assert not a & b
            assert a | b == set(ids)
            await first.recover_interrupted(max_attempts=100)  # back to the queue for the next round
    finally:
        await first_stores.close()
        await second_stores.close()
