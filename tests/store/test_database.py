"""Engines and the Database (units of work): SQLite pragmas, transactions, and one clear error when the
database cannot be used."""

from __future__ import annotations

import asyncio
import re
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import text

from bot.store import Database, JobStore, StoreUnavailable, create_engine, migrate
from bot.store import database as store_database
from bot.store.database import SQLITE_BUSY_TIMEOUT_MS, describe_url

from .factories import make_spec


async def test_sqlite_pragmas(db_url: str) -> None:
    """WAL, synchronous=NORMAL, a busy timeout and foreign keys on every connection."""
    await migrate(db_url)
    engine = create_engine(db_url)
    try:
        async with engine.connect() as connection:
            pragmas = {
                name: (await connection.exec_driver_sql(f"PRAGMA {name}")).scalar_one()
                for name in ("journal_mode", "synchronous", "busy_timeout", "foreign_keys")
            }
    finally:
        await engine.dispose()
    assert pragmas == {
        "journal_mode": "wal",
        "synchronous": 1,
        "busy_timeout": SQLITE_BUSY_TIMEOUT_MS,
        "foreign_keys": 1,
    }


async def test_creates_the_database_folder(tmp_path: Path) -> None:
    """The SQLite file's parent folders are made on first use."""
    path = tmp_path / "a" / "b" / "imagine.db"
    await migrate(f"sqlite+aiosqlite:///{path}")
    assert path.is_file()


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("not a url", "not valid"),
        ("mysql+aiomysql://u:p@localhost/db", "not supported"),
        ("sqlite:///imagine.db", "sqlite+aiosqlite"),
        ("postgresql://u@localhost/db", "postgresql+asyncpg"),
    ],
)
async def test_bad_urls(url: str, words: str) -> None:
    """A URL the store cannot use is one StoreUnavailable line that says what to write instead."""
    with pytest.raises(StoreUnavailable, match=re.escape(words)) as raised:
        await migrate(url)
    assert "\n" not in str(raised.value)


async def test_unreachable_postgres_is_one_line_without_the_password(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing listening: after waiting (RECONNECT_PATIENCE_SECONDS, shortened here), StoreUnavailable
    naming DATABASE_URL and what to do, password hidden."""
    monkeypatch.setattr(store_database, "RECONNECT_PATIENCE_SECONDS", 1.0)
    started = time.monotonic()
    with pytest.raises(StoreUnavailable, match="Can't open the database at DATABASE_URL=") as raised:
        await asyncio.wait_for(migrate("postgresql+asyncpg://bot:secret@127.0.0.1:1/imagine"), 30)
    assert time.monotonic() - started >= 0.5  # it tried again for a while first
    message = str(raised.value)
    assert "\n" not in message
    assert "secret" not in message
    assert "127.0.0.1:1/imagine" in message
    assert "waited 1 s): start PostgreSQL, or correct the host and port in DATABASE_URL." in message


async def test_unopenable_sqlite_file(tmp_path: Path) -> None:
    """A database path that is a folder: StoreUnavailable."""
    (tmp_path / "folder.db").mkdir()
    with pytest.raises(StoreUnavailable, match="Can't open the database"):
        await migrate(f"sqlite+aiosqlite:///{tmp_path / 'folder.db'}")
    await _aiosqlite_threads_stopped()


async def _aiosqlite_threads_stopped() -> None:
    """After a failed connect aiosqlite stops its worker thread without waiting for it; if the loop closes
    first, the thread reports "Event loop is closed". Give it a moment."""
    for _ in range(100):
        if not any("_connection_worker_thread" in thread.name for thread in threading.enumerate()):
            return
        await asyncio.sleep(0.01)


async def test_database_folder_that_cannot_be_made(tmp_path: Path) -> None:
    """The database's folder would have to be inside a file: StoreUnavailable."""
    (tmp_path / "file").write_text("")
    with pytest.raises(StoreUnavailable, match="Can't create the folder"):
        await migrate(f"sqlite+aiosqlite:///{tmp_path / 'file' / 'imagine.db'}")


def test_describe_url_hides_the_password() -> None:
    assert (
        describe_url("postgresql+asyncpg://bot:secret@db/imagine")
        == "postgresql+asyncpg://bot:***@db/imagine"
    )


async def test_reads_do_not_wait_for_a_writer(store: JobStore, database: Database) -> None:
    """While another unit of work holds SQLite's write lock, reads still answer at once (WAL snapshot)."""
    job = await store.create_job(make_spec())
    async with database.engine.begin() as writer:  # BEGIN IMMEDIATE: holds the write lock
        await writer.execute(text("UPDATE jobs SET error = 'x' WHERE id = :id"), {"id": job.id})
        seen = await asyncio.wait_for(store.get_job(job.id), timeout=2)
        assert seen.error is None  # the snapshot before the uncommitted write
    assert (await store.get_job(job.id)).error == "x"


async def test_concurrent_writes_wait_their_turn(store: JobStore) -> None:
    """Many units of work at once on one SQLite file: all succeed (busy_timeout), none lost."""
    jobs = await asyncio.gather(*(store.create_job(make_spec(user_id=i)) for i in range(20)))
    assert len({job.id for job in jobs}) == 20
    assert len(await store.list_jobs()) == 20


async def test_in_memory_sqlite_is_refused() -> None:
    """Each connection would get its own empty database: say so instead of failing later."""
    with pytest.raises(StoreUnavailable, match="in-memory"):
        await migrate("sqlite+aiosqlite://")
