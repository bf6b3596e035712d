"""Delivery state for Discord: where each job's status message is, and whether its result went out.

It shares the database with the job store; the Discord side (through the delivery service) is its only user.
"""

from __future__ import annotations

from sqlalchemy import select, update

from bot.domain.jobs import FINAL_STATES, JobState
from bot.domain.records import Delivery, DeliveryTarget
from bot.store.models import DeliveryRow, JobRow, PostedMessageRow
from bot.store.rows import delivery_from_row
from bot.store.unit_of_work import Database


class DeliveryStore:
    def __init__(self, database: Database) -> None:
        self._database = database

    async def create(self, job_id: int, target: DeliveryTarget) -> Delivery:
        row = DeliveryRow(
            job_id=job_id,
            channel_id=target.channel_id,
            message_id=target.message_id,
            interaction_token=target.interaction_token,
            token_expires_at=target.token_expires_at,
            upload_limit=target.upload_limit,
            created_at=self._database.clock.now(),
        )
        async with self._database.writing() as session:
            session.add(row)
            await session.flush()
            return delivery_from_row(row)

    async def get(self, job_id: int) -> Delivery | None:
        async with self._database.reading() as session:
            row = await session.get(DeliveryRow, job_id)
            return None if row is None else delivery_from_row(row)

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
        async with self._database.reading() as session:
            return [delivery_from_row(row) for row in (await session.scalars(query)).all()]

    async def mark_attempted(self, job_id: int) -> None:
        async with self._database.writing() as session:
            await session.execute(
                update(DeliveryRow)
                .where(DeliveryRow.job_id == job_id)
                .values(attempted_at=self._database.clock.now())
            )

    async def mark_delivered(self, job_id: int, *, channel_id: int | None, message_id: int | None) -> bool:
        """Record the delivery once; False if it was already recorded. The token is dropped: done with it."""
        async with self._database.writing() as session:
            result = await session.execute(
                update(DeliveryRow)
                .where(DeliveryRow.job_id == job_id, DeliveryRow.delivered_at.is_(None))
                .values(
                    delivered_at=self._database.clock.now(),
                    result_channel_id=channel_id,
                    result_message_id=message_id,
                    interaction_token=None,
                )
                .returning(DeliveryRow.job_id)
            )
            return result.scalar_one_or_none() is not None

    async def forget_expired_tokens(self) -> int:
        """Clear interaction tokens past their expiry (a delivered result's is cleared when it is marked):
        a secret is kept no longer than it is of use. Returns how many were cleared."""
        async with self._database.writing() as session:
            result = await session.execute(
                update(DeliveryRow)
                .where(
                    DeliveryRow.interaction_token.is_not(None),
                    DeliveryRow.token_expires_at < self._database.clock.now(),
                )
                .values(interaction_token=None)
                .returning(DeliveryRow.job_id)
            )
            return len(result.all())

    async def record_message(
        self, message_id: int, channel_id: int, job_id: int, image_index: int | None
    ) -> None:
        """Remember that a message shows a job's grid (index None) or one of its images."""
        values = {"channel_id": channel_id, "job_id": job_id, "image_index": image_index}
        statement = self._database.upsert(
            PostedMessageRow, {"message_id": message_id}, {**values, "created_at": self._database.clock.now()}
        )
        async with self._database.writing() as session:
            await session.execute(statement)

    async def message_target(self, message_id: int) -> tuple[int, int | None] | None:
        """The (job id, image index or None for a grid) a message of the bot's shows."""
        async with self._database.reading() as session:
            row = await session.get(PostedMessageRow, message_id)
            return None if row is None else (row.job_id, row.image_index)

    async def messages_of(self, job_id: int) -> list[tuple[int, int]]:
        """Every message of the bot's about a job, as (channel id, message id): its status message, its
        result, and the messages that show one of its images alone. Once each, in that order."""
        found: list[tuple[int, int]] = []
        async with self._database.reading() as session:
            delivery = await session.get(DeliveryRow, job_id)
            if delivery is not None:
                if delivery.message_id is not None:
                    found.append((delivery.channel_id, delivery.message_id))
                if delivery.result_message_id is not None and delivery.result_channel_id is not None:
                    found.append((delivery.result_channel_id, delivery.result_message_id))
            posted = await session.execute(
                select(PostedMessageRow.channel_id, PostedMessageRow.message_id)
                .where(PostedMessageRow.job_id == job_id)
                .order_by(PostedMessageRow.created_at, PostedMessageRow.message_id)
            )
            found.extend((channel_id, message_id) for channel_id, message_id in posted.all())
        return list(dict.fromkeys(found))
