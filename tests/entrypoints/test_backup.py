"""`imagine-bot backup` and `restore`: a consistent SQLite copy and the images, refusals, file modes, and
PostgreSQL's pg_dump and pg_restore commands run as printed."""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import shutil
import sqlite3
import stat
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from bot.domain.clock import SystemClock
from bot.entrypoints.cli import main
from bot.store import Stores
from bot.store.backup import backup_sqlite
from tests.postgres import _under_ci
from tests.store.factories import complete_job, make_images, make_spec, mark_running


@pytest.fixture
def setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)  # no .env here
    monkeypatch.setenv("DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path}/data/imagine.db")
    monkeypatch.setenv("IMAGE_DIR", str(tmp_path / "data" / "images"))
    monkeypatch.setenv("COLUMNS", "500")
    return tmp_path


async def _jobs(url: str, image_dir: Path, count: int) -> list[int]:
    """Finished jobs with four images each."""
    ids = []
    async with await Stores.open(url, image_dir, SystemClock()) as stores:
        for _ in range(count):
            job = await stores.jobs.create_job(make_spec())
            await mark_running(stores.jobs, [job.id])
            await complete_job(stores.jobs, job.id, make_images(), [1, 2, 3, 4])
            ids.append(job.id)
    return ids


async def _prompts(url: str, image_dir: Path, ids: list[int]) -> list[str]:
    async with await Stores.open(url, image_dir, SystemClock()) as stores:
        return [job.spec.params.prompt for job in await stores.jobs.get_jobs(ids)]


def files_of(folder: Path) -> dict[str, bytes]:
    return {str(path.relative_to(folder)): path.read_bytes() for path in folder.rglob("*") if path.is_file()}


def test_backup_wipe_restore(setup: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Back up, delete the database and the image folder, restore: the same jobs and the same image files
    at the same paths, and a manifest that says what the backup holds."""
    url, images = os.environ["DATABASE_URL"], setup / "data" / "images"
    ids = asyncio.run(_jobs(url, images, 3))
    originals = files_of(images)
    assert len(originals) == 12

    assert main(["backup", "backup"]) == 0
    out = capsys.readouterr().err
    assert "3 jobs, revision" in out
    assert "Images: 12 files" in out
    assert files_of(setup / "backup" / "images") == originals
    manifest = json.loads((setup / "backup" / "backup.json").read_text())
    assert (manifest["database"], manifest["jobs"], manifest["image_files"]) == ("sqlite", 3, 12)

    shutil.rmtree(setup / "data")
    assert main(["restore", "backup"]) == 0
    out = capsys.readouterr().err
    assert "Restored the database" in out
    assert "3 jobs" in out
    assert "Restored 12 image files" in out
    assert files_of(images) == originals
    assert asyncio.run(_prompts(url, images, ids)) == [make_spec().params.prompt] * 3


def test_backup_refuses_a_folder_that_holds_files(setup: Path, capsys: pytest.CaptureFixture[str]) -> None:
    asyncio.run(_jobs(os.environ["DATABASE_URL"], setup / "data" / "images", 1))
    (setup / "backup").mkdir()
    (setup / "backup" / "notes.txt").write_text("keep me")
    assert main(["backup", "backup"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "backup is not an empty folder: give a new or empty folder for the backup."
    ]
    assert [path.name for path in (setup / "backup").iterdir()] == ["notes.txt"]


def test_restore_refuses_to_overwrite_unless_forced(setup: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A database with data and an image folder with files are left alone (exit 2, one line); with
    --force the backup replaces the database: a job made after the backup is gone."""
    url, images = os.environ["DATABASE_URL"], setup / "data" / "images"
    [first] = asyncio.run(_jobs(url, images, 1))
    assert main(["backup", "backup"]) == 0
    [later] = asyncio.run(_jobs(url, images, 1))
    database = (setup / "data" / "imagine.db").read_bytes()
    capsys.readouterr()

    assert main(["restore", "backup"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"Nothing restored: the database {setup}/data/imagine.db holds data and the image folder "
        f"{images} holds files. Stop the bot (and workers), then add --force to overwrite."
    ]
    assert (setup / "data" / "imagine.db").read_bytes() == database

    assert main(["restore", "backup", "--force"]) == 0
    assert "1 job," in capsys.readouterr().err
    with sqlite3.connect(setup / "data" / "imagine.db") as connection:
        assert connection.execute("SELECT id FROM jobs").fetchall() == [(first,)]
    connection.close()
    assert later != first


def test_restore_refuses_what_is_no_finished_backup(
    setup: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A folder without backup.json (not a backup, or one that stopped halfway) is refused, as is a
    SQLite backup when DATABASE_URL is PostgreSQL."""
    (setup / "half").mkdir()
    (setup / "half" / "imagine.db").write_bytes(b"")
    assert main(["restore", "half"]) == 2
    assert capsys.readouterr().err.strip() == (
        "half is not a backup from `imagine-bot backup`: it has no backup.json."
    )
    asyncio.run(_jobs(os.environ["DATABASE_URL"], setup / "data" / "images", 1))
    assert main(["backup", "backup"]) == 0
    monkeypatch.setenv("DATABASE_URL", "postgresql+asyncpg://imagine@127.0.0.1:9/imagine")
    capsys.readouterr()
    assert main(["restore", "backup"]) == 2
    assert "holds a sqlite backup, but DATABASE_URL is postgresql" in capsys.readouterr().err


@pytest.fixture
def umask_027() -> Iterator[None]:
    old = os.umask(0o027)
    try:
        yield
    finally:
        os.umask(old)


def test_backup_and_restore_follow_the_umask(setup: Path, umask_027: None) -> None:
    """Under umask 027 every file written is 0640 and every folder 0750: the copy of the database, the
    manifest, each image, and what restore puts back."""
    asyncio.run(_jobs(os.environ["DATABASE_URL"], setup / "data" / "images", 1))
    assert main(["backup", "backup"]) == 0
    shutil.rmtree(setup / "data")
    assert main(["restore", "backup"]) == 0
    for root in (setup / "backup", setup / "data"):
        for path in [root, *root.rglob("*")]:
            mode = stat.S_IMODE(path.stat().st_mode)
            assert mode == (0o750 if path.is_dir() else 0o640), f"{path}: {oct(mode)}"


def _wal_database(path: Path) -> None:
    with sqlite3.connect(path) as connection:
        connection.execute("PRAGMA journal_mode = WAL")
        connection.execute("CREATE TABLE t (n INTEGER PRIMARY KEY, payload BLOB)")
        connection.execute("INSERT INTO t VALUES (0, x'00')")
    connection.close()


def _numbers(copy: Path) -> list[int]:
    """The copy's rows, after checking it is whole and one file (no -wal of its own)."""
    with sqlite3.connect(copy) as connection:
        assert connection.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert connection.execute("PRAGMA journal_mode").fetchone() == ("delete",)
        numbers = [n for (n,) in connection.execute("SELECT n FROM t ORDER BY n")]
    connection.close()
    assert not Path(f"{copy}-wal").exists()
    return numbers


def test_the_copy_leaves_out_an_uncommitted_write_without_waiting(tmp_path: Path) -> None:
    """Another connection holds the write lock with an insert not yet committed (a bot mid-transaction):
    the backup does not wait for it and holds only what was committed."""
    source = tmp_path / "live.db"
    _wal_database(source)
    writer = sqlite3.connect(source, isolation_level=None)
    try:
        writer.execute("BEGIN IMMEDIATE")
        writer.execute("INSERT INTO t VALUES (1, x'01')")
        backup_sqlite(source, tmp_path / "copy.db")
        writer.execute("COMMIT")
    finally:
        writer.close()
    assert _numbers(tmp_path / "copy.db") == [0]


def test_the_copy_is_consistent_while_the_database_is_written(tmp_path: Path) -> None:
    """A thread commits row after row (4 KB each) while three backups are taken: each copy passes an
    integrity check and holds an unbroken run of the commits, as of one moment."""
    source = tmp_path / "live.db"
    _wal_database(source)
    stop = threading.Event()
    written = [0]

    def write() -> None:
        connection = sqlite3.connect(source, timeout=30)
        while not stop.is_set() and written[0] < 50_000:
            with connection:
                connection.execute("INSERT INTO t VALUES (?, randomblob(4000))", (written[0] + 1,))
            written[0] += 1
        connection.close()

    thread = threading.Thread(target=write)
    thread.start()
    copies = []
    try:
        while written[0] < 50:
            time.sleep(0.01)
        for index in range(3):
            copies.append(tmp_path / f"copy-{index}.db")
            backup_sqlite(source, copies[-1])
    finally:
        stop.set()
        thread.join()
    counts = []
    for copy in copies:
        numbers = _numbers(copy)
        assert numbers == list(range(len(numbers)))
        counts.append(len(numbers))
    assert counts[0] > 50
    assert counts == sorted(counts)
    assert counts[-1] <= written[0] + 1


def _require_pg_tools() -> None:
    if shutil.which("pg_dump") is None or shutil.which("pg_restore") is None:
        message = "pg_dump and pg_restore (PostgreSQL's client) are not installed"
        if _under_ci():
            pytest.fail(f"{message}; CI needs them.")
        pytest.skip(message)


async def test_postgresql_backup_prints_pg_dump_and_copies_the_images(
    pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """On PostgreSQL backup copies the images and prints pg_dump's command, with the URL's host, user and
    database but never its password; the command runs as printed, and restore's pg_restore command
    brings back a job deleted since."""
    _require_pg_tools()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATABASE_URL", pg_url.replace("@", ":not-printed@", 1))  # trust auth ignores it
    monkeypatch.setenv("IMAGE_DIR", str(tmp_path / "images"))
    [job] = await _jobs(pg_url, tmp_path / "images", 1)

    assert await asyncio.to_thread(main, ["backup", "backup"]) == 0
    out = capsys.readouterr().err
    assert "not-printed" not in out
    dump = _command(out, "pg_dump")
    assert f"--dbname={pg_url.rsplit('/', 1)[1]}" in dump
    assert "--host=127.0.0.1" in dump
    assert f"--file={Path('backup') / 'imagine.pgdump'}" in dump
    assert len(files_of(tmp_path / "backup" / "images")) == 4
    await asyncio.to_thread(subprocess.run, shlex.split(dump), check=True, timeout=120)
    assert (tmp_path / "backup" / "imagine.pgdump").stat().st_size > 0

    async with await Stores.open(pg_url, tmp_path / "images", SystemClock()) as stores:
        async with stores.database.writing() as session:
            await session.execute(text("TRUNCATE jobs CASCADE"))
        assert await stores.jobs.get_jobs([job]) == []
    shutil.rmtree(tmp_path / "images")
    assert await asyncio.to_thread(main, ["restore", "backup"]) == 0
    out = capsys.readouterr().err
    assert "Restored 4 image files" in out
    restore = _command(out, "pg_restore")
    assert "not-printed" not in out
    await asyncio.to_thread(subprocess.run, shlex.split(restore), check=True, timeout=120)
    assert await _prompts(pg_url, tmp_path / "images", [job]) == [make_spec().params.prompt]
    assert len(files_of(tmp_path / "images")) == 4


def _command(output: str, program: str) -> str:
    """The command line the output shows for `program` (printed on a line of its own)."""
    [line] = [line.strip() for line in output.splitlines() if line.strip().startswith(f"{program} ")]
    return line
