"""RetentionService: pruning by IMAGE_RETENTION_DAYS, by hand and daily, on a real store and a fake clock."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from bot.domain.clock import FakeClock
from bot.domain.errors import InvalidRequest
from bot.domain.jobs import Job, RemovalReason
from bot.domain.records import PruneReport
from bot.services.retention import RetentionService
from bot.store import Stores
from tests.store.factories import complete_job, make_images, make_spec, mark_running

DAY = 24 * 3600


@pytest.fixture
async def stores(tmp_path: Path, clock: FakeClock) -> AsyncIterator[Stores]:
    async with await Stores.open(f"sqlite+aiosqlite:///{tmp_path}/jobs.db", tmp_path / "images", clock) as s:
        yield s


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


async def _finished(stores: Stores) -> Job:
    job = await stores.jobs.create_job(make_spec())
    await mark_running(stores.jobs, [job.id])
    return (await complete_job(stores.jobs, job.id, make_images(), [1, 2, 3, 4])).job


async def test_prune_by_the_retention_period(stores: Stores, clock: FakeClock) -> None:
    """Jobs finished more than the retention period ago lose their images; a dry run only counts."""
    retention = RetentionService(stores.removals, clock, retention_days=30)
    old = await _finished(stores)
    clock.advance(20 * DAY)
    recent = await _finished(stores)
    clock.advance(11 * DAY)  # old: 31 days, recent: 11 days

    dry = await retention.prune(30, dry_run=True)
    assert (dry.jobs, dry.files, dry.dry_run) == (1, 4, True)
    assert not (await stores.jobs.get_job(old.id)).is_removed
    report = await retention.prune_expired()
    assert report is not None
    assert (report.jobs, report.files, report.bytes) == (1, 4, dry.bytes)
    assert report.cutoff == clock.now() - timedelta(days=30)
    assert (await stores.jobs.get_job(old.id)).removed_reason is RemovalReason.EXPIRED
    assert not (await stores.jobs.get_job(recent.id)).is_removed
    everything = await retention.prune(0)  # by hand: every finished job's
    assert everything.jobs == 1
    assert (await stores.jobs.get_job(recent.id)).removed_reason is RemovalReason.EXPIRED


async def test_zero_days_keeps_images_forever(stores: Stores, clock: FakeClock) -> None:
    """IMAGE_RETENTION_DAYS=0: nothing is pruned, and the daily task ends at once."""
    retention = RetentionService(stores.removals, clock, retention_days=0)
    job = await _finished(stores)
    clock.advance(3650 * DAY)
    assert retention.keeps_forever
    assert await retention.prune_expired() is None
    await asyncio.wait_for(retention.run_daily(first_delay=0, interval=0.01), 5)
    assert not (await stores.jobs.get_job(job.id)).is_removed


async def test_bad_days_are_refused(stores: Stores, clock: FakeClock) -> None:
    """Days before now do not exist: a negative number is refused, by hand or in the setting."""
    with pytest.raises(InvalidRequest, match="0 or more"):
        await RetentionService(stores.removals, clock, retention_days=1).prune(-1)
    with pytest.raises(ValueError, match="0 or more"):
        RetentionService(stores.removals, clock, retention_days=-1)


async def test_the_daily_task_prunes_and_survives_failures(
    stores: Stores, clock: FakeClock, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Shortly after start, then at each interval; a failed round is logged and the next one runs."""
    retention = RetentionService(stores.removals, clock, retention_days=1)
    old = await _finished(stores)
    clock.advance(2 * DAY)
    rounds: list[PruneReport | None] = []
    three = asyncio.Event()
    real = retention.prune_expired

    async def flaky() -> PruneReport | None:
        if not rounds:
            rounds.append(None)
            raise OSError("the database went away")
        rounds.append(await real())
        if len(rounds) == 3:
            three.set()
        return rounds[-1]

    monkeypatch.setattr(retention, "prune_expired", flaky)
    monkeypatch.setattr("bot.services.retention.RETRY_DELAY", 0.01)
    caplog.set_level(logging.INFO, logger="bot.services.retention")
    task = asyncio.create_task(retention.run_daily(first_delay=0.01, interval=0.02))
    try:
        await asyncio.wait_for(three.wait(), 5)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert [report.jobs if report else None for report in rounds[:3]] == [None, 1, 0]
    assert (await stores.jobs.get_job(old.id)).removed_reason is RemovalReason.EXPIRED
    messages = [record.getMessage() for record in caplog.records]
    assert any("pruning old images failed" in message for message in messages)
    assert any("IMAGE_RETENTION_DAYS=1): 1 jobs, 4 files" in message for message in messages)
