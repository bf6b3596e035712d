"""aiosqlite with one thread hop per statement instead of four.

aiosqlite runs each sqlite3 call in the connection's own thread, and SQLAlchemy's aiosqlite adapter makes
four such calls per statement (open a cursor, execute, fetch all rows, close the cursor); each is a round
trip through a queue to that thread and back to the event loop. On a 2-core machine those round trips,
not SQLite, were most of what a unit of work cost (docs/benchmarks.md, `scheduler_overhead`). The cursor
here does the four in one call and keeps the results, so a statement costs one round trip. Everything
else (the thread, transactions, errors, closing) is aiosqlite's own.

It relies on `aiosqlite.Connection._execute` (run a function in the connection's thread), which the
package has had since its first releases; `tests/store/test_sqlite_driver.py` checks the behaviour the
store needs.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import aiosqlite

Row = tuple[Any, ...]
_Outcome = tuple[Any, int, int | None, list[Row]]  # description, rowcount, lastrowid, rows


class OneHopCursor:
    """The part of `aiosqlite.Cursor` SQLAlchemy uses; `execute` returns with every row already fetched."""

    arraysize = 1

    def __init__(self, connection: OneHopConnection) -> None:
        self._connection = connection
        self.description: Any = None
        self.rowcount = -1
        self.lastrowid: int | None = None
        self._rows: list[Row] = []

    async def __aenter__(self) -> OneHopCursor:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def execute(self, sql: str, parameters: Any = ()) -> OneHopCursor:
        outcome = await self._connection.run(_execute, sql, parameters, False)
        self._keep(outcome)
        return self

    async def executemany(self, sql: str, parameters: Iterable[Any]) -> OneHopCursor:
        outcome = await self._connection.run(_execute, sql, parameters, True)
        self._keep(outcome)
        return self

    def _keep(self, outcome: _Outcome) -> None:
        self.description, self.rowcount, self.lastrowid, self._rows = outcome

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


def _execute(connection: sqlite3.Connection, sql: str, parameters: Any, many: bool) -> _Outcome:
    """In the connection's thread: run the statement, fetch what it returns, close the cursor."""
    cursor = connection.cursor()
    try:
        if many:
            cursor.executemany(sql, parameters)
        else:
            cursor.execute(sql, parameters)
        rows = cursor.fetchall() if cursor.description else []
        return cursor.description, cursor.rowcount, cursor.lastrowid, rows
    finally:
        cursor.close()


class OneHopConnection(aiosqlite.Connection):
    def cursor(self) -> OneHopCursor:  # type: ignore[override]
        return OneHopCursor(self)

    async def run(self, function: Any, *args: Any) -> Any:
        """Call `function(sqlite3_connection, *args)` in the connection's thread."""
        return await self._execute(function, self._conn, *args)  # type: ignore[no-untyped-call]


def connect(database: str | Path, *, iter_chunk_size: int = 64, **kwargs: Any) -> OneHopConnection:
    """`aiosqlite.connect` with the one-hop cursor (SQLAlchemy's `async_creator_fn` connect argument)."""

    def connector() -> sqlite3.Connection:
        connection: sqlite3.Connection = sqlite3.connect(str(database), **kwargs)
        return connection

    connection = OneHopConnection(connector, iter_chunk_size)
    connection._thread.daemon = True  # as SQLAlchemy does for aiosqlite: never hold up the exit
    return connection
