"""The migrations build exactly the schema the models describe, on an empty database, and go back."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import sqlalchemy as sa

from bot.domain.clock import FakeClock
from bot.domain.jobs import JobKind, JobState, RemovalReason
from bot.store import Stores, create_engine, downgrade, migrate, schema_is_current
from bot.store.database import MIGRATIONS_DIR
from bot.store.models import Base

from .factories import complete_job, make_images, make_spec, mark_running
from .schema import schema_diff, table_names

REPO_ROOT = MIGRATIONS_DIR.parent


async def test_upgrade_builds_the_models_schema(db_url: str) -> None:
    """`upgrade head` on an empty file gives a schema autogenerate finds nothing to change in."""
    await migrate(db_url)
    engine = create_engine(db_url)
    try:
        async with engine.connect() as connection:
            assert await connection.run_sync(schema_diff) == []
            tables = await connection.run_sync(table_names)
        assert await schema_is_current(engine)
    finally:
        await engine.dispose()
    assert tables == set(Base.metadata.tables) | {"alembic_version"}


async def test_migrate_twice_is_a_no_op(db_url: str) -> None:
    """Migrating at every start is safe."""
    await migrate(db_url)
    await migrate(db_url)
    engine = create_engine(db_url)
    try:
        assert await schema_is_current(engine)
    finally:
        await engine.dispose()


async def test_empty_database_is_not_current(db_url: str) -> None:
    """schema_is_current says no before the first migration."""
    engine = create_engine(db_url)
    try:
        assert not await schema_is_current(engine)
    finally:
        await engine.dispose()


async def test_downgrade_to_base_with_data(db_url: str, tmp_path: Path) -> None:
    """Downgrade drops every table, even with jobs and images pointing at each other; upgrade works again."""
    stores = await Stores.open(db_url, tmp_path / "images", FakeClock())
    try:
        store = stores.jobs
        parent = await store.create_job(make_spec())
        await mark_running(store, [parent.id])
        [first, *_] = (await complete_job(store, parent.id, make_images(), [1, 2, 3, 4])).images
        await store.create_job(make_spec(JobKind.UPSCALE, parent_job_id=parent.id, source_image_id=first.id))
        await stores.moderation.update_guild_settings(1, daily_quota=5)
        await stores.moderation.ban(1, 2, "spam", 3)
    finally:
        await stores.close()

    await downgrade(db_url, "base")
    engine = create_engine(db_url)
    try:
        async with engine.connect() as connection:
            assert await connection.run_sync(table_names) == {"alembic_version"}
        assert not await schema_is_current(engine)
        await migrate(db_url)
        assert await schema_is_current(engine)
    finally:
        await engine.dispose()


async def test_alembic_command_line_from_the_repository_root(tmp_path: Path) -> None:
    """`alembic upgrade head` finds its config in pyproject.toml and the URL in DATABASE_URL."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'cli' / 'imagine.db'}"
    env = {**os.environ, "DATABASE_URL": url}
    for args in (["upgrade", "head"], ["check"]):
        result = subprocess.run(  # noqa: ASYNC221 - a short child process in a test
            [sys.executable, "-m", "alembic", *args],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, result.stderr
    engine = create_engine(url)
    try:
        assert await schema_is_current(engine)
    finally:
        await engine.dispose()


async def test_removal_columns_go_back_and_come_again(db_url: str, tmp_path: Path) -> None:
    """0005 down to 0004 keeps the jobs, without their removal marks; up again, they read as never removed."""
    stores = await Stores.open(db_url, tmp_path / "images", FakeClock())
    try:
        job = await stores.jobs.create_job(make_spec())
        await mark_running(stores.jobs, [job.id])
        await complete_job(stores.jobs, job.id, make_images(), [1, 2, 3, 4])
        await stores.removals.remove_job(job.id, RemovalReason.DELETED, by=9)
    finally:
        await stores.close()

    await downgrade(db_url, "0004")
    engine = create_engine(db_url)
    try:
        async with engine.connect() as connection:
            columns = await connection.run_sync(lambda sync: sa.inspect(sync).get_columns("jobs"))
        assert "removed_at" not in {column["name"] for column in columns}
    finally:
        await engine.dispose()
    stores = await Stores.open(db_url, tmp_path / "images", FakeClock())
    try:
        again = await stores.jobs.get_job(job.id)
        assert (again.state, again.removed_at, again.removed_reason, again.removed_by) == (
            JobState.SUCCEEDED,
            None,
            None,
            None,
        )
    finally:
        await stores.close()
