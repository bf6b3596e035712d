"""`imagine-bot doctor`: each check's findings (ok, warning, failure), and that it reads without writing."""

from __future__ import annotations

import asyncio
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.entrypoints import doctor
from bot.entrypoints.cli import main
from bot.entrypoints.doctor import (
    Level,
    check_database,
    check_free_disk,
    check_image_dir,
    check_model,
    check_token,
)
from bot.runtime.settings import load_settings
from bot.store.database import migrate
from bot.store.revision import read_revision
from fake_discord import FakeDiscord

REPO = Path(__file__).resolve().parents[2]
NOTHING_LISTENS = "http://127.0.0.1:9/api/v10"  # the discard port: connection refused


@pytest.fixture
def setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh operator's folder: no .env, the default-style relative paths, nothing created yet."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLUMNS", "500")  # no wrapped lines in the tables
    monkeypatch.setenv("DATABASE_URL", "sqlite+aiosqlite:///./data/imagine.db")
    monkeypatch.setenv("IMAGE_DIR", "./data/images")
    monkeypatch.setenv("MODEL", str(tmp_path / "no-model-here"))
    monkeypatch.setenv("DEVICE", "cpu")
    monkeypatch.setenv("DTYPE", "float32")
    monkeypatch.delenv("DISCORD_TOKEN", raising=False)
    monkeypatch.setattr(doctor, "DISCORD_API", NOTHING_LISTENS)
    return tmp_path


def listing(folder: Path) -> dict[str, int]:
    """Every path under `folder` with its size (folders 0), to compare before and after."""
    return {
        str(path.relative_to(folder)): path.stat().st_size if path.is_file() else 0
        for path in sorted(folder.rglob("*"))
    }


def url_of(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


def version_table(path: Path) -> list[tuple[str]]:
    with sqlite3.connect(path) as connection:
        tables = connection.execute(
            "SELECT name FROM sqlite_master WHERE name = 'alembic_version'"
        ).fetchall()
    connection.close()
    return tables


# --- reads, never writes -----------------------------------------------------------------------------


def test_doctor_leaves_no_file_behind_on_a_fresh_setup(
    setup: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Nothing exists yet: doctor reports it (database and IMAGE_DIR warnings, the missing model a
    failure, exit 1) and creates nothing: no database file, no data folder, no image folder."""
    before = listing(setup)
    assert main(["doctor"]) == 1
    assert listing(setup) == before
    assert not (setup / "data").exists()
    out = capsys.readouterr().out
    assert "data/imagine.db does not exist yet" in out
    assert "│ IMAGE_DIR " in out
    assert "does not exist yet" in out
    assert f"the folder {setup / 'no-model-here'} does not exist" in out
    assert "failure" in out


def test_doctor_runs_no_migration(setup: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """On an empty SQLite database doctor reports the migrations pending and runs none: the file is
    byte for byte the same, without Alembic's version table, and nothing (no -wal, -shm) appears."""
    (setup / "data" / "images").mkdir(parents=True)
    sqlite3.connect(setup / "data" / "imagine.db").close()
    before = listing(setup)
    content = (setup / "data" / "imagine.db").read_bytes()
    main(["doctor"])
    assert listing(setup) == before
    assert (setup / "data" / "imagine.db").read_bytes() == content
    assert version_table(setup / "data" / "imagine.db") == []
    out = capsys.readouterr().out
    assert "migrations pending" in out
    assert "run `imagine-bot migrate`" in out


async def test_doctor_leaves_a_migrated_database_as_it_was(tmp_path: Path) -> None:
    """A database two migrations behind stays there, and its folder keeps exactly its files."""
    path = tmp_path / "old.db"
    schema = await _migrated(path, behind=2)
    before = listing(tmp_path)
    finding = await check_database(url_of(path))
    assert listing(tmp_path) == before
    assert (await read_revision(url_of(path))).current == schema
    assert finding.level is Level.WARNING


# --- the database ------------------------------------------------------------------------------------


async def _migrated(path: Path, *, behind: int = 0) -> tuple[str, ...]:
    """Migrate a SQLite file to head, or `behind` migrations short of it; its revision."""
    sqlite3.connect(path).close()
    every = (await read_revision(url_of(path))).pending
    target = every[len(every) - 1 - behind]
    await migrate(url_of(path), target)
    return (target,)


async def test_database_at_head_is_ok(tmp_path: Path) -> None:
    path = tmp_path / "imagine.db"
    [head] = await _migrated(path)
    finding = await check_database(url_of(path))
    assert finding.level is Level.OK
    assert f"at revision {head} (the newest)" in finding.result


async def test_database_missing_is_a_warning_and_is_not_created(tmp_path: Path) -> None:
    finding = await check_database(url_of(tmp_path / "later" / "imagine.db"))
    assert finding.level is Level.WARNING
    assert "does not exist yet" in finding.result
    assert "imagine-bot migrate" in finding.action
    assert listing(tmp_path) == {}


async def test_pending_migrations_are_a_warning(tmp_path: Path) -> None:
    """Two migrations behind: a warning naming both, telling to run `imagine-bot migrate`."""
    path = tmp_path / "imagine.db"
    await _migrated(path, behind=2)
    revision = await read_revision(url_of(path))
    finding = await check_database(url_of(path))
    assert finding.level is Level.WARNING
    assert f"2 migrations pending ({', '.join(revision.pending)})" in finding.result
    assert finding.action == "run `imagine-bot migrate` (the bot also migrates at start)"


async def test_a_revision_from_a_newer_version_is_a_failure(tmp_path: Path) -> None:
    path = tmp_path / "imagine.db"
    await _migrated(path)
    with sqlite3.connect(path) as connection:
        connection.execute("UPDATE alembic_version SET version_num = '9999'")
    connection.close()
    finding = await check_database(url_of(path))
    assert finding.level is Level.FAILURE
    assert "at revision 9999, which this version does not know" in finding.result


async def test_a_file_that_is_no_database_and_an_unreachable_server_are_failures(tmp_path: Path) -> None:
    (tmp_path / "notes.db").write_text("not a database " * 100)
    junk = await check_database(url_of(tmp_path / "notes.db"))
    assert junk.level is Level.FAILURE
    assert "file is not a database" in junk.result
    down = await check_database("postgresql+asyncpg://imagine:secret@127.0.0.1:9/imagine")
    assert down.level is Level.FAILURE
    assert "Can't read the database postgresql+asyncpg://imagine:***@127.0.0.1:9/imagine" in down.result
    assert "secret" not in down.result


async def test_a_database_in_use_is_read_without_leaving_files(tmp_path: Path) -> None:
    """While another process has the WAL database open (its -wal and -shm there), doctor reads through
    them, sees its committed revision and adds nothing."""
    path = tmp_path / "imagine.db"
    [head] = await _migrated(path)
    bot = sqlite3.connect(path)
    try:
        bot.execute("PRAGMA journal_mode = WAL")
        bot.execute("SELECT count(*) FROM jobs").fetchall()
        assert (tmp_path / "imagine.db-wal").exists()
        before = listing(tmp_path)
        finding = await check_database(url_of(path))
        assert listing(tmp_path) == before
        assert finding.level is Level.OK
        assert head in finding.result
    finally:
        bot.close()


async def test_postgresql_revisions(pg_url: str) -> None:
    """On PostgreSQL: an empty database has every migration pending, and no version table is made."""
    empty = await check_database(pg_url)
    assert empty.level is Level.WARNING
    assert "no migration yet" in empty.result
    assert (await read_revision(pg_url)).current == ()
    await migrate(pg_url)
    assert (await check_database(pg_url)).level is Level.OK


# --- IMAGE_DIR and the disk --------------------------------------------------------------------------


def test_a_writable_image_dir_is_ok_and_keeps_no_trace(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    folder, disk = check_image_dir(tmp_path / "images", warn_below=0, fail_below=0)
    assert (folder.level, disk.level) == (Level.OK, Level.OK)
    assert list((tmp_path / "images").iterdir()) == []


def test_a_missing_image_dir_is_a_warning_and_a_file_a_failure(tmp_path: Path) -> None:
    [missing, _] = check_image_dir(tmp_path / "a" / "b")
    assert missing.level is Level.WARNING
    assert "the bot creates it at start" in missing.result
    assert not (tmp_path / "a").exists()
    (tmp_path / "file").write_text("x")
    [file, _] = check_image_dir(tmp_path / "file")
    assert file.level is Level.FAILURE
    assert "is a file, not a folder" in file.result


@pytest.fixture
def read_only_folder(tmp_path: Path) -> Iterator[Path]:
    """A folder with mode 0555, owned by the test's user."""
    folder = tmp_path / "images"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        yield folder
    finally:
        folder.chmod(0o755)


def _image_dir_finding_without_privileges(folder: Path) -> list[str]:
    """check_image_dir's first finding, from a process that may not write a 0555 folder of its own
    user's: this user's, or root's with every capability dropped (root otherwise writes anywhere)."""
    code = (
        "import sys; from pathlib import Path; from bot.entrypoints.doctor import check_image_dir; "
        "found = check_image_dir(Path(sys.argv[1]))[0]; print(found.level.value); print(found.result)"
    )
    command = [sys.executable, "-c", code, str(folder)]
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        assert setpriv is not None, "setpriv (util-linux) drops root's capabilities for this test"
        command = [setpriv, "--bounding-set=-all", "--inh-caps=-all", "--", *command]
    done = subprocess.run(
        command,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO), "PYTHONDONTWRITEBYTECODE": "1"},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return done.stdout.splitlines()


def test_an_unwritable_image_dir_is_a_failure(read_only_folder: Path) -> None:
    level, result = _image_dir_finding_without_privileges(read_only_folder)
    assert level == "failure"
    assert f"{read_only_folder} is not writable by this user" in result
    assert list(read_only_folder.iterdir()) == []


def test_free_disk_thresholds(tmp_path: Path) -> None:
    """Under the warning threshold a warning, under the failure one a failure, both saying what to do."""
    free = shutil.disk_usage(tmp_path).free
    assert check_free_disk(tmp_path, warn_below=0, fail_below=0).level is Level.OK
    warning = check_free_disk(tmp_path, warn_below=free * 2, fail_below=0)
    assert warning.level is Level.WARNING
    assert "imagine-bot prune" in warning.action
    assert check_free_disk(tmp_path, warn_below=free * 2, fail_below=free * 2).level is Level.FAILURE


# --- the token ---------------------------------------------------------------------------------------


async def test_the_token_is_asked_of_discord() -> None:
    """The fake Discord knows the token: ok, naming the bot; another token is refused with the line the
    issue asks for; no answer at all is a warning; no token a warning too (workers need none)."""
    async with FakeDiscord(token="the-right-token", bot_name="painter") as fake:
        accepted = await check_token("the-right-token", api=fake.api_url)
        refused = await check_token("an-old-token", api=fake.api_url)
        assert [request.path for request in fake.requests] == ["/users/@me"] * 2
    assert accepted.level is Level.OK
    assert "the bot is painter" in accepted.result
    assert refused.level is Level.FAILURE
    assert refused.result == "DISCORD_TOKEN is refused: copy it again from the Developer Portal"
    offline = await check_token("any", api=NOTHING_LISTENS)
    assert offline.level is Level.WARNING
    assert "Discord could not be reached" in offline.result
    assert (await check_token(None)).level is Level.WARNING


async def test_a_token_with_a_line_break_is_a_failure() -> None:
    async with FakeDiscord() as fake:
        finding = await check_token(fake.token + "\n", api=fake.api_url)
    assert finding.level is Level.FAILURE


# --- the model and device ----------------------------------------------------------------------------


def test_model_folder_found_or_not(
    tmp_path: Path, tiny_model_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A diffusers folder is ok; a missing folder, or one without model_index.json, is a failure; a
    hub-shaped name whose first part is a folder here is taken for a misspelt folder."""
    assert check_model(str(tiny_model_path)).level is Level.OK
    missing = check_model(str(tmp_path / "tiyn"))
    assert missing.level is Level.FAILURE
    assert f"the folder {tmp_path / 'tiyn'} does not exist" in missing.result
    (tmp_path / "empty").mkdir()
    assert check_model(str(tmp_path / "empty")).level is Level.FAILURE
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    assert check_model("models/sdxl").level is Level.FAILURE
    assert check_model("not a model").level is Level.FAILURE


def _cache_with(cache: Path, repo: str) -> None:
    """The layout huggingface_hub leaves after downloading `repo`'s model_index.json."""
    root = cache / f"models--{repo.replace('/', '--')}"
    commit = "0" * 40
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(commit)
    (root / "snapshots" / commit).mkdir(parents=True)
    (root / "snapshots" / commit / "model_index.json").write_text("{}")


def test_hub_model_in_the_cache_or_not(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A hub id in the local cache is ok; not there, a warning (the first start downloads it), or a
    failure when HF_HUB_OFFLINE forbids the download. Nothing is downloaded or written."""
    monkeypatch.chdir(tmp_path)
    cache = tmp_path / "hub"
    cache.mkdir()
    _cache_with(cache, "stabilityai/stable-diffusion-xl-base-1.0")
    before = listing(tmp_path)
    cached = check_model("stabilityai/stable-diffusion-xl-base-1.0", hub_cache=cache)
    assert cached.level is Level.OK
    assert "in the local cache" in cached.result
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    later = check_model("stabilityai/sdxl-turbo", hub_cache=cache)
    assert later.level is Level.WARNING
    assert "not downloaded yet" in later.result
    assert "the first start downloads it" in later.action
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert check_model("stabilityai/sdxl-turbo", hub_cache=cache).level is Level.FAILURE
    assert listing(tmp_path) == before


def test_load_model_loads_the_tiny_model(
    setup: Path, tiny_model_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--load-model` loads the model as the bot does; with no failure anywhere (the rest warnings:
    nothing created yet, no token) the exit code is 0. Still nothing is written."""
    monkeypatch.setenv("MODEL", str(tiny_model_path))
    before = listing(setup)
    assert main(["doctor", "--load-model"]) == 0
    out = capsys.readouterr().out
    assert "│ model loads " in out
    assert "loaded in" in out
    assert "native size 64 px" in out
    assert "│ device        │ ok " in out
    assert "cpu, float32" in out
    assert listing(setup) == before


def test_a_model_that_does_not_load_is_a_failure(
    setup: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model_index.json").write_text('{"_class_name": "StableDiffusionXLPipeline"}')
    monkeypatch.setenv("MODEL", str(broken))
    assert main(["doctor", "--load-model"]) == 1
    out = capsys.readouterr().out
    assert "does not load" in out


def test_without_load_model_nothing_is_loaded(
    setup: Path, tiny_model_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Plain `doctor` finds the model and never builds a backend."""

    def refuse(*args: object) -> None:
        raise AssertionError("doctor loaded the model without --load-model")

    monkeypatch.setenv("MODEL", str(tiny_model_path))
    monkeypatch.setattr("bot.runtime.app.make_backend", refuse)
    findings = asyncio.run(doctor.examine(load_settings()))
    assert [finding.check for finding in findings] == [
        "database",
        "IMAGE_DIR",
        "free disk",
        "DISCORD_TOKEN",
        "model",
        "device",
    ]
    assert "not loaded: --load-model loads it" in findings[4].result


def test_settings_are_shown_with_secrets_hidden(
    setup: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The settings table names each variable, marks defaults, and shows neither the token nor the
    database password."""
    monkeypatch.setenv("DISCORD_TOKEN", "MTIzNDU2.secret-token-value")
    monkeypatch.setenv("DATABASE_URL", "postgresql+asyncpg://imagine:hunter2@127.0.0.1:9/imagine")
    main(["doctor"])
    out = capsys.readouterr().out
    assert "secret-token-value" not in out
    assert "hunter2" not in out
    assert "│ DISCORD_TOKEN        │ set (27 characters, hidden)" in out
    assert "postgresql+asyncpg://imagine:***@127.0.0.1:9/imagine" in out
    assert "│ MAX_BATCH_IMAGES     │ 8 (default)" in out


def test_a_device_that_is_not_here_is_a_failure() -> None:
    found = doctor.check_device("mps", "auto")
    assert found.level is Level.FAILURE
    assert "mps" in found.result
    assert doctor.check_device("cpu", "float32").level is Level.OK
