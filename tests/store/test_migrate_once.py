"""Processes that start together on an empty database migrate it once: four `imagine-bot migrate` at once
all succeed and leave the schema at the newest revision (PostgreSQL: an advisory lock; SQLite: the write
lock)."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from bot.store import create_engine, schema_is_current
from tests.processes import start

PROCESSES = 4
ROUNDS = 3  # fresh databases: a race that a round can miss is caught by one of three


async def migrate_together(url: str, folder: Path) -> list[tuple[int, str]]:
    """Start PROCESSES `python -m bot migrate` at once; each one's exit code and error output."""
    children = [start(["-m", "bot", "migrate"], {"DATABASE_URL": url}, folder) for _ in range(PROCESSES)]
    outcomes = []
    for child in children:
        _, stderr = await asyncio.to_thread(child.communicate, timeout=120)
        outcomes.append((child.returncode, stderr))
    return outcomes


async def assert_at_head_once(url: str) -> None:
    engine = create_engine(url)
    try:
        assert await schema_is_current(engine)
        async with engine.connect() as connection:
            versions = (await connection.execute(sa.text("SELECT version_num FROM alembic_version"))).all()
        assert len(versions) == 1
    finally:
        await engine.dispose()


async def test_four_processes_migrate_an_empty_postgresql_database(pg_url: str, tmp_path: Path) -> None:
    """Four processes migrating a new PostgreSQL database at once all exit 0; the schema is at head.

    Without the lock, one round in five passed by luck (the others failed on a duplicate pg_type row or
    "relation alembic_version already exists"), so the test tries ROUNDS fresh databases."""
    admin = create_async_engine(pg_url, isolation_level="AUTOCOMMIT")
    try:
        for _ in range(ROUNDS):
            name = f"test_mig_{uuid.uuid4().hex[:12]}"
            async with admin.connect() as connection:
                await connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
            url = make_url(pg_url).set(database=name).render_as_string(hide_password=False)
            try:
                outcomes = await migrate_together(url, tmp_path)
                assert [code for code, _ in outcomes] == [0] * PROCESSES, outcomes
                await assert_at_head_once(url)
            finally:
                async with admin.connect() as connection:
                    await connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.dispose()


async def test_four_processes_migrate_a_new_sqlite_file(tmp_path: Path) -> None:
    """Four processes migrating a SQLite file that does not exist yet all exit 0; the schema is at head."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'data' / 'imagine.db'}"
    outcomes = await migrate_together(url, tmp_path)
    assert [code for code, _ in outcomes] == [0] * PROCESSES, outcomes
    await assert_at_head_once(url)
