"""SQLite under SQLAlchemy's async aiosqlite dialect, run on the event loop's own thread.

aiosqlite gives each connection a thread and sends every sqlite3 call there and back. On the store's
small statements that round trip cost more than SQLite itself: here a unit of work (BEGIN, a statement,
COMMIT) costs SQLite about 30 µs of CPU, a round trip to a thread and back about 100 µs, and a unit of
work through aiosqlite about 800 µs against 400 µs inline (docs/benchmarks.md, `scheduler_overhead`). So
this connection runs each statement at once, where it is awaited.

Running on the loop is safe only if SQLite never waits there. What could make it wait is a lock:
- writers of this process take turns before they begin (`JobStore.writing`), so they never meet;
- in WAL mode readers never wait for a writer, nor a writer for readers;
- another process (a second bot on the same file, `imagine-bot migrate`, a backup) may hold the write
  lock. SQLite's busy timeout on these connections is a few milliseconds; a transaction that still finds
  the lock taken when it begins is tried again after an `asyncio.sleep`, with backoff, until
  `lock_patience` is spent, and then fails with SQLite's own "database is locked".
SQLite's automatic WAL checkpoint also runs inline, after the commit that grows the log past 1000 pages:
on the development machine's disk a checkpoint of 3000 distinct pages took 22–24 ms, so about 8 ms for
1000 (docs/benchmarks.md); a checkpoint copies a page once however often the commits rewrote it.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

Row = tuple[Any, ...]

BUSY_WAIT_MS = 5  # SQLite's own busy wait, inline: short enough not to hold up the event loop
FIRST_RETRY_SECONDS = 0.005
LONGEST_RETRY_SECONDS = 0.05


class InlineCursor:
    """The part of `aiosqlite.Cursor` SQLAlchemy uses; `execute` returns with every row already fetched."""

    arraysize = 1

    def __init__(self, connection: InlineConnection) -> None:
        self._connection = connection
        self.description: Any = None
        self.rowcount = -1
        self.lastrowid: int | None = None
        self._rows: list[Row] = []

    async def __aenter__(self) -> InlineCursor:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def execute(self, sql: str, parameters: Any = ()) -> InlineCursor:
        await self._connection.run(self, sql, parameters, many=False)
        return self

    async def executemany(self, sql: str, parameters: Iterable[Any]) -> InlineCursor:
        await self._connection.run(self, sql, parameters, many=True)
        return self

    def _run(self, connection: sqlite3.Connection, sql: str, parameters: Any, many: bool) -> None:
        cursor = connection.cursor()
        try:
            if many:
                cursor.executemany(sql, parameters)
            else:
                cursor.execute(sql, parameters)
            self._rows = cursor.fetchall() if cursor.description else []
            self.description, self.rowcount, self.lastrowid = (
                cursor.description,
                cursor.rowcount,
                cursor.lastrowid,
            )
        finally:
            cursor.close()

    async def fetchall(self) -> list[Row]:
        rows, self._rows = self._rows, []
        return rows

    async def fetchone(self) -> Row | None:
        return self._rows.pop(0) if self._rows else None

    async def fetchmany(self, size: int | None = None) -> Sequence[Row]:
        count = size or self.arraysize
        rows, self._rows = self._rows[:count], self._rows[count:]
        return rows

    async def close(self) -> None:
        self._rows = []


class InlineConnection:
    """The part of `aiosqlite.Connection` SQLAlchemy's aiosqlite dialect uses, on a plain sqlite3
    connection in autocommit mode (the store emits BEGIN itself: bot/store/database.py)."""

    def __init__(self, connection: sqlite3.Connection, lock_patience: float) -> None:
        self._conn: sqlite3.Connection | None = connection
        self._lock_patience = lock_patience

    @property
    def _connection(self) -> sqlite3.Connection | None:
        # SQLAlchemy's adapter skips commit and rollback once this is None (closed).
        return self._conn

    @property
    def isolation_level(self) -> str | None:
        return self._open().isolation_level

    def cursor(self) -> InlineCursor:
        return InlineCursor(self)

    async def run(self, cursor: InlineCursor, sql: str, parameters: Any, *, many: bool) -> None:
        """Run one statement for `cursor`; a transaction that finds another process's write lock as it
        begins is tried again, without blocking the event loop, for up to `lock_patience` seconds."""
        connection = self._open()
        deadline: float | None = None
        delay = FIRST_RETRY_SECONDS
        while True:
            beginning = not connection.in_transaction
            try:
                cursor._run(connection, sql, parameters, many)
                return
            except sqlite3.OperationalError as error:
                if not (beginning and _is_busy(error)):
                    raise
                now = time.monotonic()
                if deadline is None:
                    deadline = now + self._lock_patience
                if now >= deadline:
                    raise
                await asyncio.sleep(min(delay, deadline - now))
                delay = min(delay * 2, LONGEST_RETRY_SECONDS)

    async def commit(self) -> None:
        self._open().commit()

    async def rollback(self) -> None:
        self._open().rollback()

    async def create_function(self, *args: Any, **kwargs: Any) -> None:
        self._open().create_function(*args, **kwargs)

    async def close(self) -> None:
        self.stop()

    def stop(self) -> None:
        """Close at once (SQLAlchemy's terminate); closing twice is fine."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _open(self) -> sqlite3.Connection:
        if self._conn is None:
            # aiosqlite's message, which SQLAlchemy's adapter turns into an OperationalError.
            raise ValueError("no active connection")
        return self._conn


def _is_busy(error: sqlite3.OperationalError) -> bool:
    return getattr(error, "sqlite_errorcode", None) == sqlite3.SQLITE_BUSY or "locked" in str(error)


def connector(lock_patience: float) -> Any:
    """SQLAlchemy's `async_creator_fn` connect argument: opens an `InlineConnection`."""

    async def connect(database: str | Path, *, iter_chunk_size: int = 64, **kwargs: Any) -> InlineConnection:
        del iter_chunk_size  # aiosqlite's, for fetching from its thread in chunks
        kwargs.pop("isolation_level", None)
        # Pooled connections may be closed by the garbage collector on another thread.
        kwargs["check_same_thread"] = False
        kwargs["timeout"] = BUSY_WAIT_MS / 1000
        connection = sqlite3.connect(str(database), isolation_level=None, **kwargs)
        return InlineConnection(connection, lock_patience)

    return connect
