"""Which migration a database is at, read without changing anything (for `imagine-bot doctor`).

`migrate` would create a missing SQLite file, its folder and Alembic's version table; this only reads:
a missing SQLite file is reported (DatabaseMissing), never created, and no migration runs. On SQLite the
file is opened read-only, and `immutable` while no other process has it open (no -wal/-shm beside it),
since a read-only connection to a WAL database would otherwise leave those two files behind.
"""

from __future__ import annotations

import asyncio
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.script.revision import ResolutionError
from alembic.util import CommandError
from sqlalchemy import create_engine, make_url, pool
from sqlalchemy.engine import Connection
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError
from sqlalchemy.ext.asyncio import create_async_engine

from bot.store.database import alembic_config, describe_url
from bot.store.errors import StoreUnavailable


class DatabaseMissing(StoreUnavailable):
    """The SQLite file is not there (yet): `migrate` or the bot's first start creates it."""

    def __init__(self, path: Path) -> None:
        super().__init__(f"The database file {path} does not exist.")
        self.path = path


@dataclass(frozen=True)
class SchemaRevision:
    """Where a database's schema stands against this code's migrations."""

    current: tuple[str, ...]  # the database's revision(s); () when no migration ever ran
    heads: tuple[str, ...]  # this code's newest revision(s)
    pending: tuple[str, ...]  # migrations `migrate` would run, oldest first
    unknown: tuple[str, ...]  # the database's revisions this code does not know (a newer version's)

    @property
    def at_head(self) -> bool:
        return set(self.current) == set(self.heads)


def sqlite_file(url: str) -> Path | None:
    """The SQLite file a URL names; None for PostgreSQL. Raises StoreUnavailable for an unusable URL."""
    try:
        parsed = make_url(url)
    except ArgumentError as error:
        raise StoreUnavailable(f"The database URL {url!r} is not valid.") from error
    if parsed.get_backend_name() == "postgresql":
        return None
    if parsed.get_backend_name() != "sqlite":
        raise StoreUnavailable(
            f"The database URL {describe_url(url)} is not supported: use SQLite or PostgreSQL."
        )
    database = parsed.database
    if not database or database == ":memory:" or database.startswith("file:"):
        raise StoreUnavailable(
            f"{describe_url(url)} is not a SQLite file: give one, e.g. sqlite+aiosqlite:///./data/imagine.db."
        )
    return Path(database)


def connect_sqlite_read_only(path: Path) -> sqlite3.Connection:
    """A connection that reads `path` and writes nothing, beside it included.

    With the database open elsewhere (its -wal and -shm files there) a read-only connection shares them
    and sees every committed write. Otherwise it opens the file as immutable: a read-only connection to a
    WAL database would create -wal and -shm and, unable to remove them, leave them behind.
    """
    if not path.exists():
        raise DatabaseMissing(path)
    if not path.is_file():
        raise StoreUnavailable(f"The database file {path} is not a file.")
    shared = all(Path(f"{path}{suffix}").exists() for suffix in ("-wal", "-shm"))
    mode = "mode=ro" if shared else "immutable=1"
    return sqlite3.connect(f"file:{quote(str(path.resolve()))}?{mode}", uri=True)


async def read_revision(url: str, *, timeout: float = 10.0) -> SchemaRevision:  # noqa: ASYNC109
    """The database's migration revision against this code's, without migrating or creating anything.

    Raises DatabaseMissing for a SQLite file that is not there, StoreUnavailable (one line) when the
    database cannot be read."""
    script = ScriptDirectory.from_config(alembic_config())
    path = sqlite_file(url)
    try:
        if path is not None:
            current = await asyncio.to_thread(_sqlite_revision, path)
        else:
            async with asyncio.timeout(timeout):
                current = await _postgresql_revision(url)
    except TimeoutError as error:
        raise StoreUnavailable(
            f"Can't open the database {describe_url(url)}: no answer within {timeout:g} s."
        ) from error
    except (OSError, DBAPIError, sqlite3.Error, NoSuchModuleError, ArgumentError) as error:
        raise StoreUnavailable(f"Can't read the database {describe_url(url)}: {_reason(error)}") from error
    heads = tuple(script.get_heads())
    unknown = []
    for revision in current:
        try:
            script.get_revision(revision)
        except (ResolutionError, CommandError):
            unknown.append(revision)
    pending: tuple[str, ...] = ()
    if not unknown:
        upgrades = script.iterate_revisions(heads, current or "base")
        pending = tuple(reversed([upgrade.revision for upgrade in upgrades]))
    return SchemaRevision(tuple(current), heads, pending, tuple(unknown))


def _current(connection: Connection) -> tuple[str, ...]:
    # MigrationContext only reads the version table here; it creates it only to stamp or upgrade.
    return tuple(sorted(MigrationContext.configure(connection).get_current_heads()))


def _sqlite_revision(path: Path) -> tuple[str, ...]:
    connect_sqlite_read_only(path).close()  # DatabaseMissing, before SQLAlchemy wraps it
    engine = create_engine(
        "sqlite://", creator=lambda: connect_sqlite_read_only(path), poolclass=pool.NullPool
    )
    try:
        with engine.connect() as connection:
            return _current(connection)
    finally:
        engine.dispose()


async def _postgresql_revision(url: str) -> tuple[str, ...]:
    # One connection, and no waiting for a server that is down (the store's engines wait): doctor reports.
    engine = create_async_engine(url, poolclass=pool.NullPool)
    try:
        async with engine.connect() as connection:
            return await connection.run_sync(_current)
    finally:
        await engine.dispose()


def _reason(error: BaseException) -> str:
    if isinstance(error, DBAPIError) and error.orig is not None:
        error = error.orig
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__
