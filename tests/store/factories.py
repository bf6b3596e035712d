"""Builders for test data."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from PIL import Image
from sqlalchemy import select

from bot.domain.jobs import IMAGES_PER_JOB, JobKind, JobSpec
from bot.domain.params import GenerationParams
from bot.domain.records import Ban, Completion, JobResult, ModeratorAction
from bot.store import AdmissionStore, Database, ImageFiles, JobStore
from bot.store.models import BanRow, ModeratorActionRow
from bot.store.notify import Announcements
from bot.store.rows import action_from_row, ban_from_row


def make_params(**overrides: Any) -> GenerationParams:
    values: dict[str, Any] = {
        "prompt": "a lighthouse at dusk, oil painting",
        "negative_prompt": "blurry",
        "width": 1024,
        "height": 1024,
        "steps": 30,
        "guidance": 6.0,
        "seed": 2**32 - 1,
        "aspect": "1:1",
    }
    values.update(overrides)
    return GenerationParams(**values)


def make_spec(
    kind: JobKind = JobKind.GENERATE, user_id: int = 2**63 - 1, guild_id: int | None = 2**62, **overrides: Any
) -> JobSpec:
    values: dict[str, Any] = {"channel_id": 2**61 + 5, "params": make_params()}
    values.update(overrides)
    return JobSpec(kind=kind, user_id=user_id, guild_id=guild_id, **values)


def make_images(kind: JobKind = JobKind.GENERATE, size: tuple[int, int] = (16, 12)) -> list[Image.Image]:
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)]
    return [Image.new("RGB", size, colours[i]) for i in range(IMAGES_PER_JOB[kind])]


def job_store(database: Database, images: ImageFiles) -> JobStore:
    """A job store on this database and image folder, wired as `Stores.open` wires it (without migrating)."""
    return JobStore(database, images, AdmissionStore(database), Announcements(database))


# The job store's own API has no single-job shortcuts (the bot always moves batches); tests that move one
# job through its states use these.


async def mark_running(store: JobStore, job_ids: Sequence[int]) -> list[int]:
    """QUEUED -> RUNNING; the ids that moved, in the order given."""
    return [job.id for job in await store.start_jobs(job_ids)]


async def complete_job(
    store: JobStore, job_id: int, images: Sequence[Image.Image], seeds: Sequence[int]
) -> Completion:
    """Store one RUNNING job's images and mark it SUCCEEDED; the job as it ends."""
    [completion] = await store.complete_jobs([JobResult(job_id, images, seeds)])
    return completion


async def action_log(database: Database, guild_id: int) -> list[ModeratorAction]:
    """The guild's moderator actions, newest first (the store only appends to the log)."""
    async with database.reading() as session:
        rows = await session.scalars(
            select(ModeratorActionRow)
            .where(ModeratorActionRow.guild_id == guild_id)
            .order_by(ModeratorActionRow.created_at.desc(), ModeratorActionRow.id.desc())
        )
        return [action_from_row(row) for row in rows.all()]


async def ban_list(database: Database, guild_id: int) -> list[Ban]:
    """The guild's bans, oldest first (the store itself only answers whether one member is banned)."""
    async with database.reading() as session:
        rows = await session.scalars(
            select(BanRow).where(BanRow.guild_id == guild_id).order_by(BanRow.created_at, BanRow.user_id)
        )
        return [ban_from_row(row) for row in rows.all()]
