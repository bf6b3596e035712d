"""Keeping images for IMAGE_RETENTION_DAYS: the image files of jobs that finished longer ago are deleted
and the jobs marked expired (their rows stay). The Discord side runs `run_daily` (`imagine-bot run`; not
the workers, so that several processes never prune at once); `imagine-bot prune` runs `prune` by hand.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from bot.domain.clock import Clock
from bot.domain.errors import InvalidRequest
from bot.domain.records import PruneReport
from bot.store.retention import RemovalStore

log = logging.getLogger(__name__)

START_DELAY = 60.0  # seconds after start before the first prune: the bot has settled in by then
DAY = 24 * 3600.0
RETRY_DELAY = 600.0  # seconds before trying again after a prune failed (a database restart, say)


class RetentionService:
    def __init__(self, removals: RemovalStore, clock: Clock, *, retention_days: int) -> None:
        """`retention_days`: IMAGE_RETENTION_DAYS; 0 keeps images forever."""
        if retention_days < 0:
            raise ValueError(f"retention_days must be 0 or more; got {retention_days}")
        self._removals = removals
        self._clock = clock
        self.retention_days = retention_days

    @property
    def keeps_forever(self) -> bool:
        return self.retention_days == 0

    async def prune(self, days: int, *, dry_run: bool = False) -> PruneReport:
        """Remove the images of jobs that finished more than `days` days ago (0: every finished job's);
        with `dry_run`, only say what that would free."""
        if days < 0:
            raise InvalidRequest(f"The number of days must be 0 or more; got {days}.", field="days")
        cutoff = self._clock.now() - timedelta(days=days)
        return await self._removals.expire_before(cutoff, dry_run=dry_run)

    async def prune_expired(self) -> PruneReport | None:
        """Prune by IMAGE_RETENTION_DAYS; None when images are kept forever."""
        if self.keeps_forever:
            return None
        return await self.prune(self.retention_days)

    async def run_daily(self, *, first_delay: float | None = None, interval: float = DAY) -> None:
        """Prune `first_delay` seconds after start (default START_DELAY), then every `interval` seconds,
        until cancelled. A failed prune is logged and tried again later; it never ends the loop. Does
        nothing when images are kept forever."""
        if self.keeps_forever:
            log.info("IMAGE_RETENTION_DAYS=0: images are kept forever")
            return
        delay = START_DELAY if first_delay is None else first_delay
        while True:
            await asyncio.sleep(delay)
            try:
                report = await self.prune_expired()
            except Exception:
                log.exception("pruning old images failed; trying again later")
                delay = min(RETRY_DELAY, interval)
                continue
            delay = interval
            if report is not None and report.jobs:
                log.info(
                    "pruned old images (IMAGE_RETENTION_DAYS=%d): %d jobs, %d files, %d bytes freed",
                    self.retention_days,
                    report.jobs,
                    report.files,
                    report.bytes,
                )
