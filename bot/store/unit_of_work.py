"""The database behind every store: its engine, units of work that read or write, and portable upserts.

Each store method is one unit of work: one session, one transaction. A connection lost on the way (a
PostgreSQL restart, SQLite locked past its busy timeout) becomes DatabaseUnreachable, a message for the
member; any other error is left as it is.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from bot.domain.clock import Clock
from bot.store.database import READ_ONLY, create_engine, lost_connection, migrate
from bot.store.errors import DatabaseUnreachable, StoreUnavailable
from bot.store.models import Base


class Database:
    def __init__(self, engine: AsyncEngine, clock: Clock) -> None:
        self.engine = engine
        self.clock = clock
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)
        self._read_sessions = async_sessionmaker(
            engine, expire_on_commit=False, execution_options={READ_ONLY: True}
        )
        # SQLite has one writer at a time. Left to itself, a second writer of this process would sleep in
        # SQLite's busy handler (1, 2, 5, 10… ms); taking turns here costs nothing. Other processes still
        # wait through busy_timeout. PostgreSQL writers run concurrently.
        self._write_turn: contextlib.AbstractAsyncContextManager[object] = (
            asyncio.Lock() if self.is_sqlite else contextlib.nullcontext()
        )

    @classmethod
    async def open(cls, database_url: str, clock: Clock) -> Database:
        """Migrate the database to the newest schema, then open it. Raises StoreUnavailable."""
        await migrate(database_url)
        return cls(create_engine(database_url), clock)

    async def close(self) -> None:
        await self.engine.dispose()

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    @property
    def is_postgresql(self) -> bool:
        return self.engine.dialect.name == "postgresql"

    @contextlib.asynccontextmanager
    async def writing(self) -> AsyncIterator[AsyncSession]:
        """A unit of work that may write (on SQLite it takes the write lock up front: BEGIN IMMEDIATE)."""
        with _unreachable_when_connection_lost():
            async with self._write_turn, self._sessions.begin() as session:
                yield session

    @contextlib.asynccontextmanager
    async def reading(self) -> AsyncIterator[AsyncSession]:
        """A unit of work that only reads (on SQLite it never waits for a writer)."""
        with _unreachable_when_connection_lost():
            async with self._read_sessions.begin() as session:
                yield session

    async def ping(self) -> None:
        """One round trip to the database; raises DatabaseUnreachable if it does not answer."""
        async with self.reading() as session:
            await session.execute(select(1))

    def insert(self, model: type[Base]) -> postgresql.Insert | sqlite.Insert:
        """INSERT with ON CONFLICT: both backends spell it the same way, from their own dialect module."""
        if self.is_postgresql:
            return postgresql.insert(model)
        return sqlite.insert(model)

    def upsert(
        self, model: type[Base], keys: dict[str, Any], values: dict[str, Any]
    ) -> postgresql.Insert | sqlite.Insert:
        """Insert the row with these keys, or update its `values` if it is there."""
        statement = self.insert(model).values({**keys, **values})
        return statement.on_conflict_do_update(index_elements=list(keys), set_=values)


async def make_image_folder(image_dir: Path) -> None:
    """Create the image folder if it is missing. Raises StoreUnavailable."""
    try:
        await asyncio.to_thread(image_dir.mkdir, parents=True, exist_ok=True)
    except OSError as error:
        raise StoreUnavailable(
            f"Can't create the image folder {image_dir}: {error.strerror or error}."
        ) from error


@contextlib.contextmanager
def _unreachable_when_connection_lost() -> Iterator[None]:
    try:
        yield
    except Exception as error:
        if lost_connection(error):
            raise DatabaseUnreachable() from error
        raise
