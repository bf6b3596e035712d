"""Removing finished jobs' image files: one job's (🗑 on its result), or those of every job that finished
before a cutoff (IMAGE_RETENTION_DAYS). The job's row and its image rows stay, marked removed (when, why,
by whom): the record of who made what is kept, and a button on a removed job can say what happened.

The files go first (in a thread), then the row is marked. A crash in between leaves a job that looks whole
but whose files are gone (its buttons answer "can't find image"); the next prune or 🗑 marks it. The other
order could leave files nobody asked to keep on the disk for good.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select, update

from bot.domain.errors import JobNotFound
from bot.domain.jobs import JobState, RemovalReason
from bot.domain.records import PruneReport, Removal
from bot.store.images import ImageFiles
from bot.store.models import ImageRow, JobRow
from bot.store.rows import job_from_row
from bot.store.unit_of_work import Database

PRUNE_CHUNK = 500  # jobs per round of pruning: one query, one thread hop for the files, one UPDATE


class RemovalStore:
    def __init__(self, database: Database, images: ImageFiles) -> None:
        self._database = database
        self._images = images

    async def remove_job(self, job_id: int, reason: RemovalReason, *, by: int | None = None) -> Removal:
        """Delete a finished job's image files, then mark it removed now, for `reason`, by `by`.

        A job deleted already is returned as it is, freeing nothing; an expired one may still be deleted
        (its row then says who deleted it, and when). JobNotFound for an unknown id; a job still queued or
        running is a caller's bug (ValueError): cancel it instead.
        """
        async with self._database.reading() as session:
            row = await session.get(JobRow, job_id)
            if row is None:
                raise JobNotFound(job_id)
            if row.removed_reason == RemovalReason.DELETED:
                return Removal(job_from_row(row), 0, 0)
            if not JobState(row.state).is_final:
                raise ValueError(f"job {job_id} is {row.state}: only a finished job's images can be removed")
        paths = (await self._image_paths([job_id])).get(job_id, [])
        files, size = await asyncio.to_thread(self._images.remove_measured, paths)
        async with self._database.writing() as session:
            row = await session.get(JobRow, job_id, with_for_update=True, populate_existing=True)
            if row is None:
                raise JobNotFound(job_id)
            if row.removed_reason != RemovalReason.DELETED:
                row.removed_at = self._database.clock.now()
                row.removed_reason = reason.value
                row.removed_by = by
            await session.flush()
            return Removal(job_from_row(row), files, size)

    async def expire_before(
        self, cutoff: datetime, *, dry_run: bool = False, chunk: int = PRUNE_CHUNK
    ) -> PruneReport:
        """Remove the image files of every job that succeeded before `cutoff` and still has them, and mark
        those jobs expired; with `dry_run`, only count what that would free. Works in chunks of `chunk`
        jobs, so memory stays flat however many there are."""
        jobs = files = size = 0
        after = 0
        while True:
            found = await self.finished_before(cutoff, after_id=after, limit=chunk)
            if not found:
                break
            after = max(found)
            paths = [path for job_paths in found.values() for path in job_paths]
            if dry_run:
                freed = await asyncio.to_thread(self._images.usage, paths)
                jobs += len(found)
            else:
                freed = await asyncio.to_thread(self._images.remove_measured, paths)
                jobs += len(await self._mark_expired(list(found)))
            files += freed[0]
            size += freed[1]
        return PruneReport(cutoff=cutoff, jobs=jobs, files=files, bytes=size, dry_run=dry_run)

    async def finished_before(
        self, cutoff: datetime, *, after_id: int = 0, limit: int = PRUNE_CHUNK
    ) -> dict[int, list[str]]:
        """Jobs that succeeded before `cutoff` and whose files are not removed yet, with their image paths:
        at most `limit`, in id order from after `after_id`."""
        query = (
            select(JobRow.id)
            .where(
                JobRow.removed_at.is_(None),
                JobRow.finished_at < cutoff,
                JobRow.state == JobState.SUCCEEDED.value,
                JobRow.id > after_id,
            )
            .order_by(JobRow.id)
            .limit(limit)
        )
        async with self._database.reading() as session:
            ids = list((await session.scalars(query)).all())
        paths = await self._image_paths(ids)
        return {job_id: paths.get(job_id, []) for job_id in ids}

    async def _mark_expired(self, job_ids: Sequence[int]) -> list[int]:
        """Mark these jobs expired now; the ids marked (a job removed meanwhile is left as it is)."""
        async with self._database.writing() as session:
            marked = await session.scalars(
                update(JobRow)
                .where(JobRow.id.in_(list(job_ids)), JobRow.removed_at.is_(None))
                .values(removed_at=self._database.clock.now(), removed_reason=RemovalReason.EXPIRED.value)
                .returning(JobRow.id)
                .execution_options(synchronize_session=False)
            )
            return sorted(marked.all())

    async def _image_paths(self, job_ids: Sequence[int]) -> dict[int, list[str]]:
        if not job_ids:
            return {}
        query = (
            select(ImageRow.job_id, ImageRow.path)
            .where(ImageRow.job_id.in_(list(job_ids)))
            .order_by(ImageRow.job_id, ImageRow.index)
        )
        paths: dict[int, list[str]] = {}
        async with self._database.reading() as session:
            for job_id, path in (await session.execute(query)).all():
                paths.setdefault(job_id, []).append(path)
        return paths
