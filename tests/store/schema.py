"""Comparing a migrated database with the models (SQLite and PostgreSQL tests share these)."""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect
from sqlalchemy.engine import Connection

from bot.store.models import Base


def schema_diff(connection: Connection) -> list[Any]:
    """What Alembic's autogenerate finds between the database and the models (empty: they match)."""
    context = MigrationContext.configure(
        connection, opts={"compare_type": True, "compare_server_default": True}
    )
    return list(compare_metadata(context, Base.metadata))


def table_names(connection: Connection) -> set[str]:
    return set(inspect(connection).get_table_names())
