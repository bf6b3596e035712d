"""A real PostgreSQL for the tests that need one: a fresh database per test, dropped afterwards.

The server is $TEST_POSTGRES_URL, else postgresql+asyncpg://postgres@127.0.0.1:5432/test (then the same as
root). Without a server the tests are skipped, except under CI (CI set), where a missing server fails them.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Sequence

import pytest
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import create_async_engine

DEFAULT_URLS = (
    "postgresql+asyncpg://postgres@127.0.0.1:5432/test",
    "postgresql+asyncpg://root@127.0.0.1:5432/test",
)


def _under_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def _server_urls() -> Sequence[str]:
    configured = os.environ.get("TEST_POSTGRES_URL")
    return (configured,) if configured else DEFAULT_URLS


async def _reachable_server(urls: Sequence[str]) -> str:
    """The first URL that answers; otherwise skip (locally) or fail (CI)."""
    problems = []
    for url in urls:
        engine = create_async_engine(url, isolation_level="AUTOCOMMIT")
        try:
            async with asyncio.timeout(10), engine.connect() as connection:
                await connection.exec_driver_sql("SELECT 1")
            return url
        except (OSError, DBAPIError, TimeoutError) as error:
            problems.append(f"{make_url(url).render_as_string()}: {str(error).splitlines()[0]}")
        finally:
            await engine.dispose()
    message = "PostgreSQL is not reachable (" + "; ".join(problems) + ")"
    if _under_ci():
        pytest.fail(f"{message}. CI is set, so this is an error, not a skip.")
    pytest.skip(f"{message}. Start PostgreSQL or set TEST_POSTGRES_URL to run these tests.")


@pytest.fixture
async def pg_url() -> AsyncIterator[str]:
    """A new, empty database on the server, dropped afterwards."""
    server = await _reachable_server(_server_urls())
    name = f"imagine_test_{uuid.uuid4().hex[:12]}"
    admin = create_async_engine(server, isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as connection:
            await connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
        yield make_url(server).set(database=name).render_as_string(hide_password=False)
    finally:
        async with admin.connect() as connection:
            await connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.dispose()
