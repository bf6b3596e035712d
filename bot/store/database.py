"""Engines and migrations.

SQLite (aiosqlite) and PostgreSQL (asyncpg) share one set of Alembic migrations. The bot migrates at start
with `migrate(url)`: it runs inside the bot's event loop by handing Alembic a connection through
`Config.attributes["connection"]` and calling the (synchronous) Alembic command under
`AsyncConnection.run_sync`, so no second event loop or thread is needed.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import event, make_url, pool
from sqlalchemy.engine import URL, Connection
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

import bot
from bot.store.errors import StoreUnavailable

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./data/imagine.db"

# Where the Alembic migrations may be, found from the package so that any working directory works: inside
# the installed package (the wheel ships the repository's `migrations/` as `bot/migrations`: setup.py),
# else beside the package in a source checkout. The installed place comes first, so a `migrations` folder
# of another project's beside site-packages' `bot` is never taken for ours.
MIGRATIONS_CANDIDATES = (
    Path(bot.__file__).resolve().parent / "migrations",
    Path(bot.__file__).resolve().parent.parent / "migrations",
)
MIGRATIONS_DIR = next(
    (folder for folder in MIGRATIONS_CANDIDATES if (folder / "env.py").is_file()), MIGRATIONS_CANDIDATES[-1]
)
SQLITE_BUSY_TIMEOUT_MS = 5000
# Execution option for units of work that only read: on SQLite they start with a plain (deferred) BEGIN.
READ_ONLY = "imagine_read_only"
# How long a PostgreSQL connection attempt waits for a server that is down or restarting before it fails.
RECONNECT_PATIENCE_SECONDS = 30.0
# The PostgreSQL advisory lock that migrations take, so that processes starting together migrate once
# ("imagine" in ASCII, as a number).
MIGRATION_LOCK = 0x696D6167696E65

log = logging.getLogger(__name__)


def create_engine(url: str) -> AsyncEngine:
    """The engine the store uses: SQLite in WAL mode with foreign keys on, or PostgreSQL with pre-ping.

    On PostgreSQL a restart of the server must not fail the bot's operations: pre-ping replaces the pool's
    dead connections, and a new connection waits up to RECONNECT_PATIENCE_SECONDS for the server to accept
    it (`_patient_connect`). Work that was inside a transaction when the server went away still fails, as
    DatabaseUnreachable from the store; its callers retry (the scheduler) or tell the member to try again.
    """
    if _parse_url(url).get_backend_name() == "postgresql":
        return _create_engine(
            url,
            sqlite_foreign_keys=True,
            connect_args={"async_creator_fn": _patient_connect(RECONNECT_PATIENCE_SECONDS)},
        )
    return _create_engine(url, sqlite_foreign_keys=True)


def _patient_connect(patience: float) -> Callable[..., Awaitable[Any]]:
    """asyncpg.connect that retries, with backoff, while the server refuses connections or is starting
    up or shutting down. Nothing was sent on a connection that never opened, so trying again is safe for
    every operation. Other refusals (a wrong password, a missing database) fail at once."""
    import asyncpg

    transient = (OSError, asyncpg.CannotConnectNowError, asyncpg.TooManyConnectionsError)

    async def connect(*args: Any, **kwargs: Any) -> Any:
        deadline = time.monotonic() + patience
        delay = 0.1
        while True:
            try:
                return await asyncpg.connect(*args, **kwargs)
            except transient as error:
                if time.monotonic() + delay > deadline:
                    raise
                # One warning per connection that has to wait; the retries themselves at debug level.
                level = logging.WARNING if delay == 0.1 else logging.DEBUG
                log.log(
                    level,
                    "PostgreSQL is not accepting connections (%s); trying again for up to %g s",
                    _reason(error),
                    patience,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)

    return connect


def create_migration_engine(url: str) -> AsyncEngine:
    """An engine for running migrations: one connection at a time, SQLite foreign keys off.

    SQLite batch mode rebuilds a table by copy, drop and rename, which must not cascade or trip over the
    rows that point at it; `migrate` checks the foreign keys once the migration is done.

    Like the store's engine, it waits for a database that is not up yet (processes started together with
    PostgreSQL): a PostgreSQL connection up to RECONNECT_PATIENCE_SECONDS, SQLite's write lock (held by
    another process's migration) as long.
    """
    if _parse_url(url).get_backend_name() == "postgresql":
        return _create_engine(
            url,
            sqlite_foreign_keys=False,
            poolclass=pool.NullPool,
            connect_args={"async_creator_fn": _patient_connect(RECONNECT_PATIENCE_SECONDS)},
        )
    return _create_engine(
        url, sqlite_foreign_keys=False, sqlite_timeout=RECONNECT_PATIENCE_SECONDS, poolclass=pool.NullPool
    )


async def migrate(url: str, revision: str = "head") -> None:
    """Upgrade the database at `url` to `revision` (default: the newest). Safe to call on every start."""
    await _run_alembic(url, lambda config: command.upgrade(config, revision))


async def downgrade(url: str, revision: str = "base") -> None:
    """Downgrade the database at `url` to `revision` (default: an empty database). For tests and operators."""
    await _run_alembic(url, lambda config: command.downgrade(config, revision))


async def schema_is_current(engine: AsyncEngine) -> bool:
    """Whether the database behind `engine` is at the newest migration."""
    heads = set(ScriptDirectory.from_config(alembic_config()).get_heads())

    def current(connection: Connection) -> set[str]:
        return set(MigrationContext.configure(connection).get_current_heads())

    async with engine.connect() as connection:
        return await connection.run_sync(current) == heads


def alembic_config(url: str | None = None) -> Config:
    """An Alembic config for this project's migrations, independent of the working directory."""
    if not (MIGRATIONS_DIR / "env.py").is_file():
        raise StoreUnavailable(
            "The database migrations are missing: expected them in "
            f"{' or '.join(str(folder) for folder in MIGRATIONS_CANDIDATES)}; reinstall imagine-bot."
        )
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url is not None:
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))  # configparser interpolation
    return config


def describe_url(url: str | URL) -> str:
    """The URL without its password, for messages and logs."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<an unparseable URL>"


def _parse_url(url: str | URL) -> URL:
    try:
        parsed = make_url(url)
    except ArgumentError as error:
        raise StoreUnavailable(
            f"The database URL {str(url)!r} is not valid; use e.g. {DEFAULT_DATABASE_URL} "
            "or postgresql+asyncpg://user:password@host/dbname."
        ) from error
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise StoreUnavailable(
            f"The database URL {describe_url(parsed)} is not supported: use SQLite or PostgreSQL."
        )
    if parsed.get_backend_name() == "sqlite" and parsed.get_driver_name() != "aiosqlite":
        raise StoreUnavailable(
            f"Use the async SQLite driver: sqlite+aiosqlite://, not {parsed.drivername}://."
        )
    if parsed.get_backend_name() == "postgresql" and parsed.get_driver_name() != "asyncpg":
        raise StoreUnavailable(
            f"Use the async PostgreSQL driver: postgresql+asyncpg://, not {parsed.drivername}://."
        )
    return parsed


def _sqlite_file(url: URL) -> Path | None:
    database = url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database)


def _create_engine(
    url: str | URL,
    *,
    sqlite_foreign_keys: bool,
    sqlite_timeout: float | None = None,
    **kwargs: Any,
) -> AsyncEngine:
    parsed = _parse_url(url)
    if parsed.get_backend_name() == "postgresql":
        try:
            return create_async_engine(parsed, pool_pre_ping=True, **kwargs)
        except (ArgumentError, NoSuchModuleError) as error:
            raise StoreUnavailable(f"Can't use the database {describe_url(parsed)}: {error}") from error

    path = _sqlite_file(parsed)
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise StoreUnavailable(
                f"Can't create the folder for the SQLite database {path} ({error.strerror or error}): "
                "point DATABASE_URL at a file in a folder this user can write."
            ) from error
    try:
        # aiosqlite runs each connection's statements in a thread of its own, so a wait for another
        # process's write lock (up to busy_timeout) never blocks the event loop.
        timeout = SQLITE_BUSY_TIMEOUT_MS / 1000 if sqlite_timeout is None else sqlite_timeout
        engine = create_async_engine(parsed, connect_args={"timeout": timeout}, **kwargs)
    except (ArgumentError, NoSuchModuleError) as error:
        raise StoreUnavailable(f"Can't use the database {describe_url(parsed)}: {error}") from error
    _configure_sqlite(engine, foreign_keys=sqlite_foreign_keys)
    return engine


def _configure_sqlite(engine: AsyncEngine, *, foreign_keys: bool) -> None:
    """Pragmas on every new connection, and real transactions.

    The sqlite3 module only opens a transaction before DML, so a SELECT that decides an UPDATE would run
    outside it and DDL would commit piecemeal. Instead each connection is put in autocommit mode and we
    emit BEGIN ourselves (the recipe of SQLAlchemy's aiosqlite documentation): BEGIN IMMEDIATE for units
    of work that may write, so they take the write lock up front (waiting up to SQLITE_BUSY_TIMEOUT_MS for
    another process's) and can never fail upgrading a read lock to a write lock; a plain BEGIN for those
    marked READ_ONLY, which in WAL mode read a snapshot without blocking anyone.
    """

    @event.listens_for(engine.sync_engine, "connect")
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # no implicit BEGIN from the driver: see on_begin
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute("PRAGMA synchronous = NORMAL")
            cursor.execute(f"PRAGMA foreign_keys = {'ON' if foreign_keys else 'OFF'}")
        finally:
            cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def on_begin(connection: Connection) -> None:
        read_only = connection.get_execution_options().get(READ_ONLY, False)
        connection.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


async def _run_alembic(url: str, action: Callable[[Config], None]) -> None:
    parsed = _parse_url(url)
    if parsed.get_backend_name() == "sqlite" and _sqlite_file(parsed) is None:
        raise StoreUnavailable(
            f"An in-memory SQLite database is gone once migrated; give a file, e.g. {DEFAULT_DATABASE_URL}."
        )
    config = alembic_config(url)
    engine = create_migration_engine(url)

    def run(connection: Connection) -> None:
        # Processes that start together migrate one at a time, inside this transaction: on PostgreSQL the
        # others wait for the advisory lock, on SQLite for the write lock (BEGIN IMMEDIATE: see
        # _configure_sqlite); then they find the schema at the newest revision, with nothing left to do.
        if connection.dialect.name == "postgresql":
            connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK})")
        config.attributes["connection"] = connection
        action(config)
        if connection.dialect.name == "sqlite":
            problems = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
            if problems:
                raise RuntimeError(f"the migration left rows with broken foreign keys: {problems[:5]}")

    try:
        async with engine.begin() as connection:
            await connection.run_sync(run)
    except (OSError, DBAPIError) as error:
        raise StoreUnavailable(_cannot_open(parsed, error)) from error
    except CommandError as error:  # e.g. the database is at a revision this code does not know
        hint = (
            ": a newer imagine-bot migrated it; run that version, or restore a backup"
            if "Can't locate revision" in str(error)
            else ""
        )
        raise StoreUnavailable(
            f"Can't migrate the database at DATABASE_URL={describe_url(url)}: {error}{hint}."
        ) from error
    finally:
        await engine.dispose()


def _cannot_open(url: URL, error: BaseException) -> str:
    """One line for a database that could not be opened: what went wrong, naming DATABASE_URL, and what to
    do about it."""
    import asyncpg

    where = f"DATABASE_URL={describe_url(url)}"
    reason = _reason(error)
    cause = _cause(error, asyncpg.InvalidCatalogNameError, asyncpg.InvalidAuthorizationSpecificationError)
    if isinstance(cause, asyncpg.InvalidCatalogNameError):
        return (
            f"The database in {where} does not exist ({reason}): create it "
            f"(createdb {url.database}) or correct the database name in DATABASE_URL."
        )
    if isinstance(cause, asyncpg.InvalidAuthorizationSpecificationError):  # also a wrong password
        return (
            f"PostgreSQL refused the login in {where} ({reason}): correct the user name and password in "
            "DATABASE_URL, or create that role."
        )
    if url.get_backend_name() == "postgresql" and _cause(error, OSError, asyncpg.CannotConnectNowError):
        return (
            f"Can't open the database at {where} ({reason}; waited {RECONNECT_PATIENCE_SECONDS:g} s): "
            "start PostgreSQL, or correct the host and port in DATABASE_URL."
        )
    if url.get_backend_name() == "sqlite":
        return (
            f"Can't open the database at {where} ({reason}): point DATABASE_URL at a SQLite file this user "
            "can write."
        )
    return f"Can't open the database at {where} ({reason}): check DATABASE_URL and that the database runs."


def _cause(error: BaseException, *kinds: type[BaseException]) -> BaseException | None:
    """The first exception of one of these kinds among `error` and its causes, or None."""
    seen: set[int] = set()
    cause: BaseException | None = error
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, kinds):
            return cause
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    return None


def lost_connection(error: BaseException) -> bool:
    """Whether `error` means the database connection was lost or could not be opened (a restart, a network
    failure, SQLite locked past its busy timeout), rather than a problem with the statement or the data."""
    import asyncpg

    if isinstance(error, DBAPIError) and error.connection_invalidated:
        return True
    seen: set[int] = set()
    cause: BaseException | None = error
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(
            cause, ConnectionError | asyncpg.PostgresConnectionError | asyncpg.OperatorInterventionError
        ):
            return True
        if isinstance(cause, sqlite3.OperationalError) and "locked" in str(cause):
            return True
        cause = cause.__cause__ or cause.__context__
    return False


def _reason(error: BaseException) -> str:
    """The first line of the driver's own message, without SQLAlchemy's statement dump."""
    if isinstance(error, DBAPIError) and error.orig is not None:
        error = error.orig
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__
