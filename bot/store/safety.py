"""Output safety's records: each image's score, how each result was shown, a moderator's release."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import update

from bot.domain.errors import JobNotFound
from bot.store.models import ImageRow, JobRow
from bot.store.unit_of_work import Database


class SafetyStore:
    def __init__(self, database: Database) -> None:
        self._database = database

    async def record_shown(self, job_id: int, shown: str) -> None:
        """How the job's result was shown (plain, spoiler, held) when it was delivered."""
        async with self._database.writing() as session:
            await session.execute(update(JobRow).where(JobRow.id == job_id).values(shown=shown))

    async def release(self, job_id: int, by: int) -> bool:
        """A moderator lets a held result be shown; False if it was released already."""
        async with self._database.writing() as session:
            result = await session.execute(
                update(JobRow)
                .where(JobRow.id == job_id, JobRow.released_at.is_(None))
                .values(released_at=self._database.clock.now(), released_by=by)
                .returning(JobRow.id)
            )
            return result.first() is not None

    async def set_scores(self, job_id: int, scores: Sequence[float]) -> None:
        """Store a re-check's scores, one per image in the job's order."""
        async with self._database.writing() as session:
            for index, score in enumerate(scores):
                updated = await session.execute(
                    update(ImageRow)
                    .where(ImageRow.job_id == job_id, ImageRow.index == index)
                    .values(safety_score=score)
                    .returning(ImageRow.id)
                )
                if updated.first() is None:
                    raise JobNotFound(job_id)
