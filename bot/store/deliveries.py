"""Delivery state for Discord: where each job's status message is, and whether its result went out.

It shares the job store's engine and units of work; the Discord adapter is its only user.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import select, update

from bot.domain.jobs import FINAL_STATES, JobState
from bot.store.models import DeliveryRow, JobRow, PostedMessageRow
from bot.store.repository import JobStore


@dataclass(frozen=True)
class Delivery:
    job_id: int
    channel_id: int
    message_id: int | None
    interaction_token: str | None = field(repr=False)  # a secret: never in a log line
    token_expires_at: datetime | None
    upload_limit: int
    attempted_at: datetime | None
    delivered_at: datetime | None
    result_channel_id: int | None
    result_message_id: int | None


class DeliveryStore:
    def __init__(self, store: JobStore) -> None:
        self._store = store

    async def create(
        self,
        job_id: int,
        *,
        channel_id: int,
        message_id: int | None,
        interaction_token: str | None,
        token_expires_at: datetime | None,
        upload_limit: int,
    ) -> Delivery:
        row = DeliveryRow(
            job_id=job_id,
            channel_id=channel_id,
            message_id=message_id,
            interaction_token=interaction_token,
            token_expires_at=token_expires_at,
            upload_limit=upload_limit,
            created_at=self._store.clock.now(),
        )
        async with self._store.writing() as session:
            session.add(row)
            await session.flush()
            return _delivery(row)

    async def get(self, job_id: int) -> Delivery | None:
        async with self._store.reading() as session:
            row = await session.get(DeliveryRow, job_id)
            return None if row is None else _delivery(row)

    async def undelivered_finished(self) -> list[Delivery]:
        """Results that are ready but not yet delivered (the bot stopped before it could)."""
        return await self._undelivered(FINAL_STATES)

    async def active(self) -> list[Delivery]:
        """Status messages of jobs still queued or running."""
        return await self._undelivered({JobState.QUEUED, JobState.RUNNING})

    async def _undelivered(self, states: frozenset[JobState] | set[JobState]) -> list[Delivery]:
        query = (
            select(DeliveryRow)
            .join(JobRow, JobRow.id == DeliveryRow.job_id)
            .where(DeliveryRow.delivered_at.is_(None), JobRow.state.in_([state.value for state in states]))
            .order_by(DeliveryRow.job_id)
        )
        async with self._store.reading() as session:
            return [_delivery(row) for row in (await session.scalars(query)).all()]

    async def mark_attempted(self, job_id: int) -> None:
        async with self._store.writing() as session:
            await session.execute(
                update(DeliveryRow)
                .where(DeliveryRow.job_id == job_id)
                .values(attempted_at=self._store.clock.now())
            )

    async def mark_delivered(self, job_id: int, *, channel_id: int | None, message_id: int | None) -> bool:
        """Record the delivery once; False if it was already recorded. The token is dropped: done with it."""
        async with self._store.writing() as session:
            result = await session.execute(
                update(DeliveryRow)
                .where(DeliveryRow.job_id == job_id, DeliveryRow.delivered_at.is_(None))
                .values(
                    delivered_at=self._store.clock.now(),
                    result_channel_id=channel_id,
                    result_message_id=message_id,
                    interaction_token=None,
                )
                .returning(DeliveryRow.job_id)
            )
            return result.scalar_one_or_none() is not None

    async def record_message(
        self, message_id: int, channel_id: int, job_id: int, image_index: int | None
    ) -> None:
        """Remember that a message shows a job's grid (index None) or one of its images."""
        values = {"channel_id": channel_id, "job_id": job_id, "image_index": image_index}
        statement = self._store.upsert(
            PostedMessageRow, {"message_id": message_id}, {**values, "created_at": self._store.clock.now()}
        )
        async with self._store.writing() as session:
            await session.execute(statement)

    async def message_target(self, message_id: int) -> tuple[int, int | None] | None:
        """The (job id, image index or None for a grid) a message of the bot's shows."""
        async with self._store.reading() as session:
            row = await session.get(PostedMessageRow, message_id)
            return None if row is None else (row.job_id, row.image_index)


def _delivery(row: DeliveryRow) -> Delivery:
    return Delivery(
        job_id=row.job_id,
        channel_id=row.channel_id,
        message_id=row.message_id,
        interaction_token=row.interaction_token,
        token_expires_at=row.token_expires_at,
        upload_limit=row.upload_limit,
        attempted_at=row.attempted_at,
        delivered_at=row.delivered_at,
        result_channel_id=row.result_channel_id,
        result_message_id=row.result_message_id,
    )
