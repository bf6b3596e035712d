"""New-job notification: PostgreSQL's NOTIFY tells the workers sharing the queue that a job is waiting.

SQLite cannot announce anything; there one process owns the queue, or workers poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.store.unit_of_work import Database

log = logging.getLogger(__name__)

JOBS_CHANNEL = "imagine_jobs"  # the NOTIFY channel: a job is waiting
LISTEN_RETRY_SECONDS = 0.5  # pause before opening the listening connection again after losing it


class Announcements:
    def __init__(self, database: Database) -> None:
        self._database = database

    async def announce(self, session: AsyncSession) -> None:
        """Tell the workers that a job is waiting (sent when the session's transaction commits)."""
        if self._database.is_postgresql:
            await session.execute(select(func.pg_notify(JOBS_CHANNEL, "")))

    @contextlib.asynccontextmanager
    async def listening(self, on_announce: Callable[[], None]) -> AsyncIterator[bool]:
        """Call `on_announce` whenever a job becomes waiting, while inside; yields False (and calls nothing)
        where the database cannot announce it (SQLite), so callers poll.

        The listening connection is opened again whenever it is lost (a database restart), and
        `on_announce` is called each time it opens, for the jobs that arrived while nobody listened.
        """
        if not self._database.is_postgresql:
            yield False
            return
        listener = asyncio.create_task(self._listen(on_announce), name="job-announcements")
        try:
            yield True
        finally:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener

    async def _listen(self, on_announce: Callable[[], None]) -> None:
        while True:
            try:
                await self._listen_once(on_announce)
                log.warning("lost the job announcements connection; listening again")
            except Exception:
                log.warning("can't listen for job announcements; trying again", exc_info=True)
            await asyncio.sleep(LISTEN_RETRY_SECONDS)

    async def _listen_once(self, on_announce: Callable[[], None]) -> None:
        """LISTEN on one connection until it is lost."""
        lost = asyncio.Event()

        def heard(*_: object) -> None:
            on_announce()

        async with self._database.engine.connect() as connection:
            raw = await connection.get_raw_connection()
            driver: Any = raw.driver_connection  # asyncpg's connection: LISTEN needs it directly
            driver.add_termination_listener(lambda *_: lost.set())
            await driver.add_listener(JOBS_CHANNEL, heard)
            on_announce()
            await lost.wait()
            await connection.invalidate()
