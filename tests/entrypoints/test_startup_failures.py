"""Each broken setup stops the command with exit code 2 and one line that names the setting and says what to
do; the traceback only at LOG_LEVEL=DEBUG. Run as real processes, as an operator starts them.

The children log in JSON (LOG_JSON=true), so the one line the operator reads is told apart from the log
records around it (INFO: the batch budget, WARNING: waiting for PostgreSQL) without knowing their format.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from bot.store import create_engine, schema_is_current
from bot.store import database as store_database
from fake_discord import FakeDiscord
from fake_discord.fixtures import fake_discord  # noqa: F401  (the fixture)
from tests.postgres import PrivatePostgres
from tests.processes import child_env, run_bot_command

SETUP_FAILED = 2


def output_lines(completed: subprocess.CompletedProcess[str]) -> tuple[list[str], list[dict[str, object]]]:
    """What the process printed for the operator, and its log records (JSON lines)."""
    printed, records = [], []
    for line in (completed.stdout + completed.stderr).splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            printed.append(line)
            continue
        records.append(record)
    return printed, records


def one_line(completed: subprocess.CompletedProcess[str], *words: str) -> str:
    """The process exited 2 and printed exactly one line, holding `words`; the log has no traceback and
    nothing above WARNING."""
    printed, records = output_lines(completed)
    everything = completed.stdout + completed.stderr
    assert completed.returncode == SETUP_FAILED, everything
    assert len(printed) == 1, everything
    [line] = printed
    for word in words:
        assert word in line, line
    assert "Traceback" not in everything
    assert all(record.get("level") in ("info", "warning") for record in records), records
    return line


def settings(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        "LOG_JSON": "true",
        "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'bot.db'}",
        "IMAGE_DIR": str(tmp_path / "images"),
        "DISCORD_TOKEN": "a-token-that-is-never-used",
        **extra,
    }


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# -- the database -------------------------------------------------------------------------------------------


@pytest.fixture
def logging_restored() -> Iterator[None]:
    """`main()` in this process configures the root logger; put it back for the tests that follow."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


@pytest.mark.usefixtures("logging_restored")
def test_unreachable_database_after_waiting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Nothing listens at DATABASE_URL's port: `migrate` tries again for RECONNECT_PATIENCE_SECONDS (cut
    to 2 s here, in this process), then stops with one line that says to start PostgreSQL or fix the host
    and port."""
    from bot.entrypoints.cli import main

    monkeypatch.chdir(tmp_path)  # no .env here
    monkeypatch.setattr(store_database, "RECONNECT_PATIENCE_SECONDS", 2.0)
    monkeypatch.setenv("COLUMNS", "80")  # a narrow terminal must not wrap the line
    url = f"postgresql+asyncpg://imagine:secret@127.0.0.1:{free_port()}/imagine"
    monkeypatch.setenv("DATABASE_URL", url)
    monkeypatch.setenv("LOG_JSON", "true")
    started = time.monotonic()
    code = main(["migrate"])
    waited = time.monotonic() - started
    captured = capsys.readouterr()
    completed = subprocess.CompletedProcess(["migrate"], code, captured.out, captured.err)
    line = one_line(completed, "DATABASE_URL=postgresql+asyncpg://imagine:***@127.0.0.1", "start PostgreSQL")
    assert "secret" not in captured.out + captured.err
    assert line.endswith("start PostgreSQL, or correct the host and port in DATABASE_URL.")
    assert waited >= 1.0  # it tried again before giving up
    _, records = output_lines(completed)
    assert any("not accepting connections" in str(record.get("event")) for record in records)


async def test_a_database_that_starts_late_is_waited_for(
    private_postgres: PrivatePostgres, tmp_path: Path
) -> None:
    """PostgreSQL down when `migrate` starts and up three seconds later: the command waits for it and
    migrates (exit 0), as the store waits for a restart at run time."""
    private_postgres.stop()
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        "migrate",
        cwd=tmp_path,
        env=child_env({"DATABASE_URL": private_postgres.url}),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    await asyncio.sleep(3)
    assert child.returncode is None  # still waiting
    await asyncio.to_thread(private_postgres.start)
    out, _ = await asyncio.wait_for(child.communicate(), 60)
    assert child.returncode == 0, out.decode()
    engine = create_engine(private_postgres.url)
    try:
        assert await schema_is_current(engine)
    finally:
        await engine.dispose()


def test_wrong_credentials(pg_url: str, tmp_path: Path) -> None:
    """A role PostgreSQL does not know: one line naming DATABASE_URL, saying to fix the user and password."""
    url = make_url(pg_url).set(username=f"nobody_{uuid.uuid4().hex[:8]}", password="pw")
    completed = run_bot_command(
        ["migrate"], settings(tmp_path, DATABASE_URL=url.render_as_string(hide_password=False)), tmp_path
    )
    line = one_line(completed, "PostgreSQL refused the login in DATABASE_URL=", "user name and password")
    assert ":pw@" not in line


def test_missing_database(pg_url: str, tmp_path: Path) -> None:
    """A database that does not exist on the server: one line naming DATABASE_URL, saying to create it."""
    name = f"missing_{uuid.uuid4().hex[:8]}"
    url = make_url(pg_url).set(database=name).render_as_string(hide_password=False)
    completed = run_bot_command(["migrate"], settings(tmp_path, DATABASE_URL=url), tmp_path)
    one_line(completed, "The database in DATABASE_URL=", "does not exist", f"createdb {name}")


def test_traceback_only_at_debug(pg_url: str, tmp_path: Path) -> None:
    """At LOG_LEVEL=DEBUG the same failure also logs where it happened."""
    url = make_url(pg_url).set(database=f"missing_{uuid.uuid4().hex[:8]}")
    debug = settings(tmp_path, DATABASE_URL=url.render_as_string(hide_password=False), LOG_LEVEL="DEBUG")
    completed = run_bot_command(["migrate"], debug, tmp_path)
    assert completed.returncode == SETUP_FAILED
    assert "Traceback (most recent call last)" in completed.stderr
    printed, _ = output_lines(completed)
    assert len(printed) == 1, completed.stderr


# -- the files and the model --------------------------------------------------------------------------------


def test_unwritable_image_dir(tmp_path: Path) -> None:
    """IMAGE_DIR where no folder can be made (under a file): one line naming IMAGE_DIR, before the model
    loads or the database is touched."""
    (tmp_path / "a-file").write_text("")
    folder = tmp_path / "a-file" / "images"
    completed = run_bot_command(["run"], settings(tmp_path, IMAGE_DIR=str(folder)), tmp_path)
    line = one_line(completed, f"IMAGE_DIR={folder}", "point IMAGE_DIR at a folder this user can write")
    assert "Not a directory" in line
    assert not (tmp_path / "bot.db").exists()


def test_image_dir_in_proc(tmp_path: Path) -> None:
    """IMAGE_DIR=/proc/x (a folder nobody, not even root, can create): the same one line."""
    completed = run_bot_command(["run"], settings(tmp_path, IMAGE_DIR="/proc/x"), tmp_path)
    one_line(completed, "IMAGE_DIR=/proc/x")


def test_missing_model_folder(tmp_path: Path) -> None:
    """MODEL=/no/such/folder: one line naming MODEL, without a hub error about repository ids."""
    completed = run_bot_command(["run"], settings(tmp_path, MODEL="/no/such/folder"), tmp_path)
    line = one_line(completed, "Setting MODEL is invalid: the folder /no/such/folder does not exist")
    assert "Repo id" not in line


def test_a_model_that_does_not_load(tmp_path: Path) -> None:
    """A folder that claims to be a pipeline but is not: loading fails, and the one line names MODEL."""
    model = tmp_path / "broken-model"
    model.mkdir()
    (model / "model_index.json").write_text('{"_class_name": "StableDiffusionXLPipeline"}')
    completed = run_bot_command(["run"], settings(tmp_path, MODEL=str(model)), tmp_path, timeout=180)
    one_line(completed, "The model did not load", f"MODEL={model}")


# -- Discord ------------------------------------------------------------------------------------------------


async def test_refused_discord_login(
    fake_discord: FakeDiscord,  # noqa: F811
    tiny_model_path: Path,
    tmp_path: Path,
) -> None:
    """Discord refuses DISCORD_TOKEN (401): one line naming DISCORD_TOKEN, exit 2."""
    env = settings(tmp_path, DISCORD_TOKEN="not-the-token", MODEL=str(tiny_model_path), DEVICE="cpu")
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.entrypoints.run_child",
        fake_discord.api_url,
        fake_discord.gateway_url,
        "run",
        cwd=tmp_path,
        env=child_env(env),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(child.communicate(), 180)
    assert child.returncode is not None
    completed = subprocess.CompletedProcess(["run"], child.returncode, out.decode(), err.decode())
    one_line(completed, "Discord rejected DISCORD_TOKEN: copy the token again from the Bot tab.")
    assert any(error.status == 401 for error in fake_discord.errors)
