"""The one-hop aiosqlite cursor under SQLAlchemy: the same answers as sqlite3, one thread call a statement."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy.exc
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.store import sqlite_driver
from bot.store.database import create_engine


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncEngine:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'driver.db'}")
    async with engine.begin() as connection:
        await connection.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT UNIQUE)"))
    yield engine  # type: ignore[misc]
    await engine.dispose()


async def test_the_store_engine_uses_the_one_hop_connection(engine: AsyncEngine) -> None:
    async with engine.connect() as connection:
        raw = await connection.get_raw_connection()
        assert isinstance(raw.driver_connection, sqlite_driver.OneHopConnection)


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


async def test_a_statement_is_one_call_into_the_connection_thread(
    engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    run = sqlite_driver.OneHopConnection.run

    async def counted(self: sqlite_driver.OneHopConnection, function: object, *args: object) -> object:
        calls.append(str(args[0]))
        return await run(self, function, *args)

    monkeypatch.setattr(sqlite_driver.OneHopConnection, "run", counted)
    async with engine.begin() as connection:
        calls.clear()
        await connection.execute(text("INSERT INTO t (name) VALUES ('y') RETURNING id"))
        await connection.execute(text("SELECT * FROM t"))
    assert calls == ["INSERT INTO t (name) VALUES ('y') RETURNING id", "SELECT * FROM t"]
