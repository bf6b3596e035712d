"""The store's SQLite engine (aiosqlite through SQLAlchemy's dialect): the same answers as sqlite3, errors
that roll back, and another process's write lock awaited without blocking the loop (the wait happens in
aiosqlite's thread)."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import pytest
import sqlalchemy.exc
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.store.database import create_engine


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncEngine:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'driver.db'}")
    async with engine.begin() as connection:
        await connection.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT UNIQUE)"))
    yield engine  # type: ignore[misc]
    await engine.dispose()


async def test_rows_counts_and_ids_are_what_sqlite_reports(engine: AsyncEngine) -> None:
    async with engine.begin() as connection:
        inserted = await connection.execute(text("INSERT INTO t (name) VALUES ('a')"))
        assert inserted.lastrowid == 1
        assert inserted.rowcount == 1
        many = await connection.execute(
            text("INSERT INTO t (name) VALUES (:name)"), [{"name": n} for n in "bcd"]
        )
        assert many.rowcount == 3
        returned = await connection.execute(text("INSERT INTO t (name) VALUES ('e') RETURNING id, name"))
        assert returned.all() == [(5, "e")]
        updated = await connection.execute(text("UPDATE t SET name = name || '!' WHERE id > 3"))
        assert updated.rowcount == 2
    async with engine.connect() as connection:
        result = await connection.execute(text("SELECT id, name FROM t ORDER BY id"))
        assert list(result.keys()) == ["id", "name"]
        assert result.fetchone() == (1, "a")
        assert result.fetchmany(2) == [(2, "b"), (3, "c")]
        assert result.fetchall() == [(4, "d!"), (5, "e!")]
        assert (await connection.execute(text("SELECT name FROM t WHERE id = 99"))).first() is None


async def test_errors_come_through_as_sqlalchemy_errors_and_roll_back(engine: AsyncEngine) -> None:
    async def insert_twice() -> None:
        async with engine.begin() as connection:
            await connection.execute(text("INSERT INTO t (name) VALUES ('x')"))
            await connection.execute(text("INSERT INTO t (name) VALUES ('x')"))

    async def read_missing() -> None:
        async with engine.connect() as connection:
            await connection.execute(text("SELECT * FROM missing"))

    with pytest.raises(sqlalchemy.exc.IntegrityError, match="UNIQUE"):
        await insert_twice()
    with pytest.raises(sqlalchemy.exc.OperationalError, match="no such table"):
        await read_missing()
    async with engine.connect() as connection:
        assert (await connection.execute(text("SELECT count(*) FROM t"))).scalar() == 0


async def test_another_process_lock_is_awaited_while_the_loop_runs_on(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    """A writer that meets another connection's write lock waits for it in aiosqlite's thread: the event
    loop keeps running meanwhile, and the write goes through once the lock is free."""
    holder = sqlite3.connect(tmp_path / "driver.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    loop = asyncio.get_running_loop()
    loop.call_later(0.4, holder.execute, "COMMIT")
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    ticker = asyncio.create_task(tick())
    started = time.monotonic()
    try:
        async with engine.begin() as connection:
            await connection.execute(text("INSERT INTO t (name) VALUES ('after the lock')"))
    finally:
        ticker.cancel()
        holder.close()
    waited = time.monotonic() - started
    assert 0.35 <= waited < 2.0
    assert ticks >= 15, f"the loop ran only {ticks} times in {waited:.2f} s"
    async with engine.connect() as connection:
        assert (await connection.execute(text("SELECT name FROM t"))).scalars().all() == ["after the lock"]
