"""Alembic environment for imagine-bot (async; SQLite and PostgreSQL).

Two ways in:
- From the bot (`bot.store.database.migrate`): the caller passes an open synchronous `Connection` in
  `config.attributes["connection"]` (obtained through `AsyncConnection.run_sync`), so this runs inside
  the bot's event loop and inside the caller's transaction.
- From the command line (`alembic upgrade head` in the repository root): the URL comes from
  `sqlalchemy.url` if the caller set it, else `$DATABASE_URL`, else the default SQLite file, and this
  module opens its own engine with `asyncio.run`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from pathlib import Path
from typing import Any, Literal

from alembic import context
from alembic.autogenerate.api import AutogenContext
from sqlalchemy.engine import Connection

# The `alembic` command in a source checkout does not put the repository on sys.path. The bot (already
# importing `bot`) does not need this, nor does an installed wheel, where this file is bot/migrations/env.py
# and the folder two levels up is the `bot` package itself, which must never go on sys.path.
_REPO_ROOT = Path(__file__).resolve().parent.parent
if (_REPO_ROOT / "bot" / "__init__.py").is_file() and str(_REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(_REPO_ROOT))

from bot.store.database import DEFAULT_DATABASE_URL, create_migration_engine  # noqa: E402
from bot.store.models import Base, UTCDateTime  # noqa: E402

config = context.config
target_metadata = Base.metadata


def _database_url() -> str:
    # get_alembic_option, unlike get_main_option, does not insist on an alembic.ini section.
    url = config.get_alembic_option("sqlalchemy.url")
    if isinstance(url, str) and url:
        return url
    return os.environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL


def _render_item(type_: str, obj: Any, autogen_context: AutogenContext) -> str | Literal[False]:
    """Autogenerate writes our aware-datetime type as the plain column type it stands for."""
    if type_ == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    return False


def _configure(**kwargs: Any) -> None:
    context.configure(
        target_metadata=target_metadata,
        render_as_batch=True,  # SQLite cannot ALTER most things; batch mode rebuilds the table
        compare_type=True,
        render_item=_render_item,
        **kwargs,
    )


def run_migrations_offline() -> None:
    """`alembic upgrade head --sql`: print the SQL instead of running it."""
    _configure(url=_database_url(), literal_binds=True, dialect_opts={"paramstyle": "named"})
    with context.begin_transaction():
        context.run_migrations()


def do_run_migrations(connection: Connection) -> None:
    _configure(connection=connection)
    with context.begin_transaction():
        context.run_migrations()


async def run_async_migrations() -> None:
    engine = create_migration_engine(_database_url())
    try:
        async with engine.begin() as connection:
            await connection.run_sync(do_run_migrations)
    finally:
        await engine.dispose()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        do_run_migrations(connection)
        return
    if config.cmd_opts is not None and not logging.getLogger().handlers:
        # The command line, with no logging config (pyproject.toml has none): say what is being done.
        logging.basicConfig(level=logging.WARNING, format="%(levelname)-5.5s [%(name)s] %(message)s")
        logging.getLogger("alembic").setLevel(logging.INFO)
    asyncio.run(run_async_migrations())


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
