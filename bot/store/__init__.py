"""The durable store: jobs, images and moderation data in SQLite or PostgreSQL, images as PNG files.

SQL stays inside this package (and `migrations/`); callers get domain objects and records. One store per
concern, all on one `Database`:

- `unit_of_work.py`  the engine and units of work that read or write
- `jobs.py`          jobs, their state changes and their images (`job_statements.py`: the hot statements)
- `admission.py`     what the checks on a new job read: quota used, jobs in flight, the guild's rules
- `moderation.py`    guild settings, members' own quotas, bans, blocked words, the action log
- `deliveries.py`    Discord's bookkeeping: status messages and delivered results
- `retention.py`     removing finished jobs' image files (🗑, IMAGE_RETENTION_DAYS); the rows stay
- `safety.py`        output safety: each image's score, how each result was shown, a moderator's release
- `notify.py`        new-job notification between processes (PostgreSQL NOTIFY)
- `rows.py`          rows to records; `models.py` the tables; `database.py` engines and migrations
"""

from __future__ import annotations

import asyncio
import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from bot.domain.clock import Clock
from bot.store.admission import AdmissionStore
from bot.store.database import create_engine, downgrade, migrate, schema_is_current
from bot.store.deliveries import DeliveryStore
from bot.store.errors import DatabaseUnreachable, ImageNotFound, StoreUnavailable
from bot.store.images import ImageFiles
from bot.store.jobs import JobStore
from bot.store.moderation import ModerationStore
from bot.store.notify import Announcements
from bot.store.retention import RemovalStore
from bot.store.safety import SafetyStore
from bot.store.unit_of_work import Database, make_image_folder


async def check_image_folder(image_dir: Path) -> None:
    """Create the image folder if it is missing and make sure this user can write a file there.

    Raises StoreUnavailable naming IMAGE_DIR."""
    try:
        await make_image_folder(image_dir)
        await asyncio.to_thread(_write_and_remove, image_dir)
    except (StoreUnavailable, OSError) as error:
        cause = error.__cause__ if isinstance(error, StoreUnavailable) else error
        reason = cause.strerror if isinstance(cause, OSError) and cause.strerror else str(cause or error)
        raise StoreUnavailable(
            f"Can't write images to IMAGE_DIR={image_dir} ({reason}): point IMAGE_DIR at a folder this user "
            "can write."
        ) from error


def _write_and_remove(folder: Path) -> None:
    with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-check-"):
        pass


@dataclass(frozen=True)
class Stores:
    """Every store of one database and image folder, opened together."""

    database: Database
    jobs: JobStore
    admission: AdmissionStore
    moderation: ModerationStore
    deliveries: DeliveryStore
    removals: RemovalStore
    safety: SafetyStore

    @classmethod
    async def open(cls, database_url: str, image_dir: Path, clock: Clock) -> Stores:
        """Check that the image folder can be written, migrate the database to the newest schema, and open
        both: the folder first, so that one that cannot be written is said at once, not after waiting for
        the database.

        Raises StoreUnavailable with one line an operator can act on."""
        await check_image_folder(image_dir)
        database = await Database.open(database_url, clock)
        admission = AdmissionStore(database)
        images = ImageFiles(image_dir)
        jobs = JobStore(database, images, admission, Announcements(database))
        return cls(
            database,
            jobs,
            admission,
            ModerationStore(database, admission),
            DeliveryStore(database),
            RemovalStore(database, images),
            SafetyStore(database),
        )

    async def close(self) -> None:
        await self.database.close()

    async def __aenter__(self) -> Stores:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()


__all__ = [
    "AdmissionStore",
    "Database",
    "DatabaseUnreachable",
    "DeliveryStore",
    "ImageFiles",
    "ImageNotFound",
    "JobStore",
    "ModerationStore",
    "RemovalStore",
    "SafetyStore",
    "StoreUnavailable",
    "Stores",
    "create_engine",
    "downgrade",
    "migrate",
    "schema_is_current",
]
