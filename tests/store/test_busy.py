"""The SQLite database busy: another process holds the write lock for a while.

The store's writers take the lock up front (BEGIN IMMEDIATE) and wait through busy_timeout, so a lock held
for a second or two only delays them; nothing is lost. Held past busy_timeout, the writer fails with
SQLite's own "database is locked", and nothing of it is written.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Awaitable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import pytest

import bot.store.database as database
from bot.domain.clock import FakeClock
from bot.domain.jobs import JobState
from bot.domain.records import JobResult
from bot.store import JobStore, Stores
from bot.store.errors import DatabaseUnreachable
from tests.store.factories import make_images, make_spec

HOLD = 1.5
T = TypeVar("T")


def db_path(url: str) -> Path:
    return Path(url.removeprefix("sqlite+aiosqlite:///"))


@contextmanager
def write_locked(path: Path, seconds: float) -> Iterator[threading.Event]:
    """Another connection (as another process would) takes the write lock and keeps it `seconds`."""
    locked, failed = threading.Event(), []

    def hold() -> None:
        connection = sqlite3.connect(path, isolation_level=None, timeout=5)
        try:
            connection.execute("BEGIN IMMEDIATE")
            connection.execute("UPDATE jobs SET attempts = attempts WHERE 0")
            locked.set()
            time.sleep(seconds)
            connection.execute("COMMIT")
        except Exception as error:  # pragma: no cover - shown by the assertion below
            failed.append(error)
            locked.set()
        finally:
            connection.close()

    thread = threading.Thread(target=hold, name="sqlite-lock-holder")
    thread.start()
    try:
        assert locked.wait(5)
        assert not failed
        yield locked
    finally:
        thread.join(seconds + 5)
    assert not failed


async def timed(work: Awaitable[T]) -> tuple[T, float]:
    started = time.monotonic()
    result = await work
    return result, time.monotonic() - started


async def test_writers_wait_for_a_held_lock_and_lose_nothing(store: JobStore, db_url: str) -> None:
    to_start = [await store.create_job(make_spec()) for _ in range(2)]
    to_complete = await store.create_job(make_spec())
    await store.start_jobs([to_complete.id])
    with write_locked(db_path(db_url), HOLD):
        began = time.monotonic()
        # Reads never wait for a writer in WAL mode.
        read, read_took = await timed(store.get_job(to_complete.id))
        assert read.state is JobState.RUNNING
        assert read_took < 0.5
        outcomes = await asyncio.gather(
            timed(store.create_job(make_spec(user_id=1))),
            timed(store.create_job(make_spec(user_id=2))),
            timed(store.start_jobs([job.id for job in to_start])),
            timed(store.complete_jobs([JobResult(to_complete.id, make_images(), [1, 2, 3, 4])])),
        )
        waited = time.monotonic() - began
    assert waited >= HOLD - 0.2
    for _result, took in outcomes:
        assert HOLD - 0.3 <= took < database.SQLITE_BUSY_TIMEOUT_MS / 1000
    (created_1, _), (created_2, _), (started, _), (completed, _) = outcomes
    assert [job.id for job in started] == [job.id for job in to_start]
    [completion] = completed
    assert completion.job.state is JobState.SUCCEEDED
    assert len(completion.images) == 4
    jobs = {job.id: job for job in await store.list_jobs()}
    assert len(jobs) == 5
    assert jobs[created_1.id].state is JobState.QUEUED
    assert jobs[created_2.id].state is JobState.QUEUED
    assert all(jobs[job.id].state is JobState.RUNNING for job in to_start)
    assert jobs[to_complete.id].state is JobState.SUCCEEDED
    assert len(await store.job_images(to_complete.id)) == 4


async def test_a_lock_held_past_busy_timeout_fails_clearly_and_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(database, "SQLITE_BUSY_TIMEOUT_MS", 200)
    url = f"sqlite+aiosqlite:///{tmp_path / 'short.db'}"
    async with await Stores.open(url, tmp_path / "images", FakeClock()) as stores:
        store = stores.jobs
        queued = await store.create_job(make_spec())
        with write_locked(db_path(url), HOLD):
            started = time.monotonic()
            # The member is told to try again; the cause (SQLite's "database is locked") is chained.
            with pytest.raises(DatabaseUnreachable, match="try again in a moment") as refused:
                await store.create_job(make_spec(user_id=7))
            assert "database is locked" in str(refused.value.__cause__)
            with pytest.raises(DatabaseUnreachable):
                await store.start_jobs([queued.id])
            assert time.monotonic() - started < HOLD
        assert [job.id for job in await store.list_jobs()] == [queued.id]
        assert (await store.get_job(queued.id)).state is JobState.QUEUED
        # Once the lock is free again the store works as before.
        assert [job.id for job in await store.start_jobs([queued.id])] == [queued.id]
        assert len(await store.list_jobs()) == 1
