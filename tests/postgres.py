"""A real PostgreSQL for the tests that need one: a fresh database per test, dropped afterwards.

The server is $TEST_POSTGRES_URL, else postgresql+asyncpg://postgres@127.0.0.1:5432/test (then the same as
root). Without a server the tests are skipped, except under CI (CI set), where a missing server fails them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import create_async_engine

from bot.runtime.settings import Settings

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


class PrivatePostgres:
    """A PostgreSQL server of the test's own (initdb in a temporary folder, on a free port), so a test can
    stop and restart it without disturbing the shared server other tests use."""

    def __init__(self, folder: Path, port: int, bin_dir: Path) -> None:
        self.folder, self.port, self._bin = folder, port, bin_dir
        self.data = folder / "data"
        self.url = f"postgresql+asyncpg://postgres@127.0.0.1:{port}/postgres"

    def _run(self, tool: str, *args: str) -> None:
        command = [str(self._bin / tool), *args]
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root: run it as the postgres account
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, capture_output=True, timeout=60)

    def init(self) -> None:
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8")

    def start(self) -> None:
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(
            "pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.folder / "log"), "-w", "start"
        )

    def stop(self) -> None:
        """A fast shutdown: open transactions are aborted and every connection is closed."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")


def _postgres_bin_dir() -> Path | None:
    found = shutil.which("pg_ctl")
    if found is not None:
        return Path(found).resolve().parent
    installed = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    return installed[-1].parent if installed else None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    """A fresh server to restart at will; skipped without PostgreSQL's programs, failed so under CI."""
    bin_dir = _postgres_bin_dir()
    if bin_dir is None or not (bin_dir / "initdb").exists():
        message = "PostgreSQL's server programs (initdb, pg_ctl) are not installed"
        if _under_ci():
            pytest.fail(f"{message}. CI is set, so this is an error, not a skip.")
        pytest.skip(f"{message}; install PostgreSQL to run the restart tests.")
    folder = Path(tempfile.mkdtemp(prefix="imagine-pg-"))
    if os.geteuid() == 0:
        shutil.chown(folder, user="postgres")
    server = PrivatePostgres(folder, _free_port(), bin_dir)
    try:
        server.init()
        server.start()
        yield server
    finally:
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            server.stop()
        shutil.rmtree(folder, ignore_errors=True)


def shared_queue_settings(url: str, tmp_path: Path, name: str) -> Settings:
    """A process of a deployment that shares one queue (a Discord side or a worker named `name`): short
    leases and quick polling, so tests see workers take turns in seconds."""
    return Settings(
        _env_file=None,
        database_url=url,
        image_dir=tmp_path / "images",
        worker_name=name,
        lease_seconds=3,
        queue_poll_seconds=0.05,
        default_steps=2,
    )
