"""Backups: a consistent copy of a SQLite database, the image folder file by file, and a manifest.

A backup folder holds `backup.json` (what is in it), `imagine.db` (SQLite) and `images/` (IMAGE_DIR's
files, same layout). Copying a WAL-mode SQLite file by hand is unsafe (the last commits may sit in the
-wal file, and a write may land halfway through the copy); SQLite's online backup API copies every page
under one read transaction instead, so the copy is the database as of one moment, also while the bot
runs and writes. On PostgreSQL the database is `pg_dump`'s to copy (`pg_dump_command`); the images are
copied the same way.

Every file written here follows the process's umask, as the image files do (bot/store/images.py).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sqlite3
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO
from urllib.parse import quote

from sqlalchemy import make_url

from bot.store.errors import StoreUnavailable
from bot.store.revision import connect_sqlite_read_only, sqlite_file

MANIFEST = "backup.json"
DATABASE_FILE = "imagine.db"
PG_DUMP_FILE = "imagine.pgdump"
IMAGES = "images"
FORMAT = 1


class BackupError(Exception):
    """A backup or restore that cannot go on; `str(error)` is one line that says what to do."""


@dataclass(frozen=True)
class Manifest:
    """What a backup folder holds (`backup.json`)."""

    format: int
    created_at: str  # ISO 8601, UTC
    version: str  # imagine-bot's version that wrote it
    database: str  # "sqlite" or "postgresql"
    revision: str | None  # the database's migration revision (SQLite; None for PostgreSQL)
    jobs: int | None  # jobs in the copied database (SQLite)
    image_files: int
    image_bytes: int

    def write(self, folder: Path) -> None:
        with _new_file(folder / MANIFEST) as file:
            file.write(json.dumps(asdict(self), indent=2).encode() + b"\n")

    @classmethod
    def read(cls, folder: Path) -> Manifest:
        path = folder / MANIFEST
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            manifest = cls(**data)
        except FileNotFoundError:
            raise BackupError(
                f"{folder} is not a backup from `imagine-bot backup`: it has no {MANIFEST}."
            ) from None
        except (OSError, ValueError, TypeError) as error:
            raise BackupError(f"{path} cannot be read as a backup manifest ({error}).") from None
        if manifest.format != FORMAT:
            raise BackupError(f"{path} is of backup format {manifest.format}; this version reads {FORMAT}.")
        return manifest


@dataclass(frozen=True)
class Copied:
    files: int
    bytes: int


def database_kind(url: str) -> str:
    """ "sqlite" or "postgresql"."""
    return "postgresql" if sqlite_file(url) is None else "sqlite"


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


# --- SQLite ---------------------------------------------------------------------------------------


def backup_sqlite(source: Path, target: Path) -> None:
    """Copy the database at `source` into the new file `target`, consistent as of one moment.

    One backup step copies every page under a single read transaction: in WAL mode writers go on
    meanwhile and nothing they commit after it began is in the copy. The copy is then switched to a
    rollback journal, so it is one self-contained file that a read-only reader leaves as it found it.
    """
    if not source.is_file():
        raise BackupError(f"The database file {source} does not exist: nothing to back up.")
    with _new_file(target):
        pass  # created here, so that its mode follows the umask (SQLite's own would be 0644)
    try:
        with (
            contextlib.closing(_connect_existing(source)) as origin,
            contextlib.closing(sqlite3.connect(target)) as copy,
        ):
            origin.backup(copy)  # pages=-1: all of it in one step
            copy.execute("PRAGMA journal_mode = DELETE")
            problems = copy.execute("PRAGMA quick_check").fetchall()
        if problems != [("ok",)]:
            raise BackupError(f"The copy of {source} does not check out: {problems[:3]}")
    except BaseException:
        target.unlink(missing_ok=True)
        raise


def restore_sqlite(source: Path, target: Path) -> None:
    """Write the backup `source` into the database file `target` (created if missing, else overwritten).

    Through the backup API into a connection on `target`, so a -wal file left beside an old database is
    dealt with by SQLite, not left to contradict the new contents. Run it with the bot stopped.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    if not target.exists():
        with _new_file(target):
            pass  # created here, so that its mode follows the umask
    with (
        contextlib.closing(connect_sqlite_read_only(source)) as origin,
        contextlib.closing(sqlite3.connect(target, timeout=0.5)) as database,
    ):
        try:
            # Out of WAL mode first: that needs the database to itself, so a running bot stops this
            # here, before anything is written.
            database.execute("PRAGMA journal_mode = DELETE")
        except sqlite3.OperationalError as error:
            raise BackupError(
                f"The database {target} is in use ({error}): stop the bot and its workers, then restore."
            ) from None
        origin.backup(database)


def sqlite_revision(path: Path) -> str | None:
    """The migration revision of the SQLite file at `path` (None before any migration)."""
    with contextlib.closing(connect_sqlite_read_only(path)) as connection:
        if not _has_table(connection, "alembic_version"):
            return None
        row = connection.execute("SELECT version_num FROM alembic_version").fetchone()
        return str(row[0]) if row else None


def sqlite_jobs(path: Path) -> int:
    """How many jobs the SQLite file at `path` holds (0 before the first migration)."""
    with contextlib.closing(connect_sqlite_read_only(path)) as connection:
        if not _has_table(connection, "jobs"):
            return 0
        return int(connection.execute("SELECT count(*) FROM jobs").fetchone()[0])


def sqlite_holds_data(path: Path) -> bool:
    """Whether the file at `path` holds any row besides the migration revision (or is no database:
    either way restoring over it would lose something)."""
    if not path.exists():
        return False
    try:
        with contextlib.closing(connect_sqlite_read_only(path)) as connection:
            tables = [
                name
                for (name,) in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
                if not name.startswith("sqlite_") and name != "alembic_version"
            ]
            return any(
                connection.execute(f'SELECT EXISTS (SELECT 1 FROM "{name}")').fetchone()[0] for name in tables
            )
    except (sqlite3.Error, StoreUnavailable):
        return True


def _has_table(connection: sqlite3.Connection, name: str) -> bool:
    query = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?"
    return connection.execute(query, (name,)).fetchone() is not None


def _connect_existing(path: Path) -> sqlite3.Connection:
    """Read and write, never create: the source of a backup. (Closing the last connection checkpoints
    and removes the -wal file, as the bot's own would.)"""
    return sqlite3.connect(f"file:{quote(str(path.resolve()))}?mode=rw", uri=True)


# --- PostgreSQL -----------------------------------------------------------------------------------


def pg_dump_command(url: str, target: Path) -> list[str]:
    """`pg_dump` of the URL's database into `target`, in pg_restore's format; never with the password
    (pg_dump asks for it, or reads PGPASSWORD or ~/.pgpass)."""
    return ["pg_dump", "--format=custom", *_pg_connection(url), f"--file={target}"]


def pg_restore_command(url: str, source: Path) -> list[str]:
    """`pg_restore` of a `pg_dump_command` file into the URL's database, replacing what is there."""
    return ["pg_restore", "--clean", "--if-exists", "--no-owner", *_pg_connection(url), str(source)]


def _pg_connection(url: str) -> list[str]:
    parsed = make_url(url)
    options = []
    if parsed.host:
        options.append(f"--host={parsed.host}")
    if parsed.port:
        options.append(f"--port={parsed.port}")
    if parsed.username:
        options.append(f"--username={parsed.username}")
    options.append(f"--dbname={parsed.database or parsed.username or 'postgres'}")
    return options


# --- image files ----------------------------------------------------------------------------------


def copy_images(source: Path, target: Path, *, overwrite: bool = False) -> Copied:
    """Copy every file under `source` into `target`, keeping the relative layout, one file at a time.

    A file that disappears meanwhile (pruned, or removed by 🗑 while the bot runs) is skipped, and so
    are the temporary files of PNGs being written. Each copy is a new file, so it and its folders follow
    the umask. Without `overwrite`, a file already in `target` stops the copy (BackupError).
    """
    files = size = 0
    for path in _walk(source):
        destination = target.joinpath(path.relative_to(source))
        destination.parent.mkdir(parents=True, exist_ok=True)
        if destination.exists():
            if not overwrite:
                raise BackupError(f"{destination} is already there; nothing was overwritten.")
            destination.unlink()
        try:
            shutil.copyfile(path, destination)
        except FileNotFoundError:
            if not path.exists():
                continue
            raise
        files += 1
        size += destination.stat().st_size
    return Copied(files, size)


def folder_holds_files(folder: Path) -> bool:
    return any(True for _ in _walk(folder))


def _walk(folder: Path) -> Iterator[Path]:
    if not folder.is_dir():
        return
    for root, folders, names in os.walk(folder):
        folders.sort()
        for name in sorted(names):
            if name.startswith(".") and name.endswith(".tmp"):
                continue  # an image being written (ImageFiles.save)
            path = Path(root) / name
            if path.is_file() and not path.is_symlink():
                yield path


# --- files that follow the umask ------------------------------------------------------------------


@contextlib.contextmanager
def _new_file(path: Path) -> Iterator[BinaryIO]:
    """Create `path` (it must not exist), open for writing, with mode 0666 less the umask: the kernel
    applies the umask, so there is no need to read it."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
    with os.fdopen(descriptor, "wb") as file:
        yield file
