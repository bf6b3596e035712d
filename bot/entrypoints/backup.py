"""`imagine-bot backup DIR` and `imagine-bot restore DIR`: the database and the image files.

SQLite is copied with its online backup API (consistent while the bot runs); PostgreSQL is `pg_dump`'s
to copy, so the command to run is printed. The images are copied file by file, keeping their layout.
`backup.json` is written last: a folder without it is an unfinished backup, which restore refuses.
Restore refuses to overwrite a database or image folder that holds anything, unless `--force`.
"""

from __future__ import annotations

import asyncio
import shlex
from pathlib import Path

from rich.console import Console

from bot.runtime.settings import Settings
from bot.store.backup import (
    DATABASE_FILE,
    IMAGES,
    PG_DUMP_FILE,
    BackupError,
    Manifest,
    backup_sqlite,
    copy_images,
    database_kind,
    folder_holds_files,
    now_iso,
    pg_dump_command,
    pg_restore_command,
    restore_sqlite,
    sqlite_holds_data,
    sqlite_jobs,
    sqlite_revision,
)
from bot.store.database import describe_url
from bot.store.errors import StoreUnavailable
from bot.store.revision import read_revision, sqlite_file


async def backup(settings: Settings, folder: Path, console: Console, *, version: str) -> int:
    """Write a backup of the database and IMAGE_DIR into `folder` (new or empty). Exit code: 0 done, 1 it
    failed on the way (the folder then has no backup.json), 2 nothing was done."""
    url = settings.database_url
    try:
        kind = database_kind(url)
        await asyncio.to_thread(_make_empty_folder, folder)
    except (BackupError, StoreUnavailable) as error:
        _fail(console, error)
        return 2
    except OSError as error:
        _fail(console, f"Can't create the backup folder {folder}: {error.strerror or error}.")
        return 2
    try:
        revision = jobs = None
        if kind == "sqlite":
            source = sqlite_file(url)
            assert source is not None
            copy = folder / DATABASE_FILE
            with console.status(f"Copying the database {source}…"):
                await asyncio.to_thread(backup_sqlite, source, copy)
            revision = await asyncio.to_thread(sqlite_revision, copy)
            jobs = await asyncio.to_thread(sqlite_jobs, copy)
            console.print(
                f"Database {describe_url(url)}: {_count(jobs, 'job')}, revision {revision or 'none'}, "
                f"copied to {copy}.",
                soft_wrap=True,
            )
        with console.status(f"Copying the images in {settings.image_dir}…"):
            images = await asyncio.to_thread(copy_images, settings.image_dir, folder / IMAGES)
        console.print(
            f"Images: {_count(images.files, 'file')} ({size_words(images.bytes)}) from {settings.image_dir} "
            f"copied to {folder / IMAGES}.",
            soft_wrap=True,
        )
        Manifest(
            format=1,
            created_at=now_iso(),
            version=version,
            database=kind,
            revision=revision,
            jobs=jobs,
            image_files=images.files,
            image_bytes=images.bytes,
        ).write(folder)
    except (BackupError, StoreUnavailable) as error:
        _fail(console, f"{error} The backup in {folder} is incomplete.")
        return 1
    except OSError as error:
        _fail(console, f"The backup stopped: {error}. The backup in {folder} is incomplete.")
        return 1
    if kind == "postgresql":
        command = shlex.join(pg_dump_command(url, folder / PG_DUMP_FILE))
        console.print(
            "The database is PostgreSQL: back it up with pg_dump, which asks for the password (or reads "
            "PGPASSWORD or ~/.pgpass):",
            soft_wrap=True,
        )
        console.print(f"  {command}", markup=False, highlight=False, soft_wrap=True)
    console.print(
        f"Backup written to {folder}. Restore it with: imagine-bot restore {folder}", soft_wrap=True
    )
    return 0


async def restore(settings: Settings, folder: Path, console: Console, *, force: bool) -> int:
    """Put a backup's database and images back. Exit code: 0 done, 1 it failed on the way, 2 refused
    (nothing written)."""
    url = settings.database_url
    try:
        manifest = Manifest.read(folder)
        kind = database_kind(url)
        if manifest.database != kind:
            raise BackupError(
                f"{folder} holds a {manifest.database} backup, but DATABASE_URL is {kind}: "
                f"set DATABASE_URL to a {manifest.database} database to restore it."
            )
        target = sqlite_file(url)
        refusals = []
        if not force:
            if target is not None and await asyncio.to_thread(sqlite_holds_data, target):
                refusals.append(f"the database {target} holds data")
            if await asyncio.to_thread(folder_holds_files, settings.image_dir):
                refusals.append(f"the image folder {settings.image_dir} holds files")
        if refusals:
            raise BackupError(
                f"Nothing restored: {' and '.join(refusals)}. Stop the bot (and workers), then add --force "
                "to overwrite."
            )
        if target is not None and not (folder / DATABASE_FILE).is_file():
            raise BackupError(f"{folder / DATABASE_FILE} is missing: this backup is incomplete.")
    except (BackupError, StoreUnavailable) as error:
        _fail(console, error)
        return 2
    try:
        if target is not None:
            with console.status(f"Restoring the database {target}…"):
                await asyncio.to_thread(restore_sqlite, folder / DATABASE_FILE, target)
            jobs = await asyncio.to_thread(sqlite_jobs, target)
            schema = await read_revision(url)
            console.print(
                f"Restored the database {describe_url(url)} from {folder / DATABASE_FILE}: "
                f"{_count(jobs, 'job')}, "
                f"revision {', '.join(schema.current) or 'none'} (backup of {manifest.created_at}).",
                soft_wrap=True,
            )
            if schema.pending:
                console.print(
                    f"{len(schema.pending)} migration(s) pending: `imagine-bot migrate` (or the bot's next "
                    "start) runs them.",
                    soft_wrap=True,
                )
        with console.status(f"Restoring the images into {settings.image_dir}…"):
            images = await asyncio.to_thread(
                copy_images, folder / IMAGES, settings.image_dir, overwrite=force
            )
        console.print(
            f"Restored {_count(images.files, 'image file')} ({size_words(images.bytes)}) into "
            f"{settings.image_dir}.",
            soft_wrap=True,
        )
    except (BackupError, StoreUnavailable) as error:
        _fail(console, f"The restore stopped: {error}")
        return 1
    except OSError as error:
        _fail(console, f"The restore stopped: {error}.")
        return 1
    if target is None:
        dump = folder / PG_DUMP_FILE
        found = "" if dump.is_file() else f" (there is no {dump}: use the file your pg_dump wrote)"
        console.print(
            f"The database is PostgreSQL: restore it with pg_restore{found}; the bot migrates it at start:",
            soft_wrap=True,
        )
        console.print(
            f"  {shlex.join(pg_restore_command(url, dump))}", markup=False, highlight=False, soft_wrap=True
        )
    return 0


def size_words(size: int) -> str:
    """1234567 → "1.2 MB" (powers of 1000, as disks are sold)."""
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1000:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} TB"


def _count(number: int, noun: str) -> str:
    return f"{number:,} {noun}{'' if number == 1 else 's'}"


def _make_empty_folder(folder: Path) -> None:
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise BackupError(f"{folder} is not an empty folder: give a new or empty folder for the backup.")
    folder.mkdir(parents=True, exist_ok=True)


def _fail(console: Console, message: object) -> None:
    console.print(str(message), style="red", markup=False, highlight=False, soft_wrap=True)
