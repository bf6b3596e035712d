"""Rows to records: the store's tables turned into the domain's frozen dataclasses."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy.engine import Row

from bot.domain.jobs import Job, JobKind, JobSpec, JobState, RemovalReason
from bot.domain.params import GenerationParams
from bot.domain.records import Ban, Delivery, GuildSettings, ModeratorAction, QuotaOverride, StoredImage
from bot.store.models import (
    BanRow,
    DeliveryRow,
    GuildSettingsRow,
    ImageRow,
    JobRow,
    ModeratorActionRow,
    QuotaOverrideRow,
)


def job_from_row(row: JobRow | Row[Any]) -> Job:
    """From an ORM row or a Core row of the jobs table (the same names)."""
    spec = JobSpec(
        kind=JobKind(row.kind),
        user_id=row.user_id,
        params=GenerationParams(
            prompt=row.prompt,
            negative_prompt=row.negative_prompt,
            width=row.width,
            height=row.height,
            steps=row.steps,
            guidance=row.guidance,
            seed=row.seed,
            aspect=row.aspect,
        ),
        guild_id=row.guild_id,
        channel_id=row.channel_id,
        parent_job_id=row.parent_job_id,
        source_image_id=row.source_image_id,
        strength=row.strength,
        model=row.model,
    )
    return Job(
        id=row.id,
        spec=spec,
        state=JobState(row.state),
        created_at=row.created_at,
        attempts=row.attempts,
        started_at=row.started_at,
        finished_at=row.finished_at,
        error=row.error,
        removed_at=row.removed_at,
        removed_reason=RemovalReason(row.removed_reason) if row.removed_reason else None,
        removed_by=row.removed_by,
        shown=row.shown,
        released_at=row.released_at,
    )


def image_from_row(row: ImageRow) -> StoredImage:
    return StoredImage(
        id=row.id,
        job_id=row.job_id,
        index=row.index,
        seed=row.seed,
        width=row.width,
        height=row.height,
        path=row.path,
        safety_score=row.safety_score,
    )


def settings_from_row(row: GuildSettingsRow) -> GuildSettings:
    return GuildSettings(
        guild_id=row.guild_id,
        daily_quota=row.daily_quota,
        rate_per_minute=row.rate_per_minute,
        rate_burst=row.rate_burst,
        max_concurrent=row.max_concurrent,
        max_steps=row.max_steps,
        buttons_for_everyone=row.buttons_for_everyone,
        fast_by_default=row.fast_by_default,
        safety_mode=row.safety_mode,
        safety_threshold=row.safety_threshold,
        updated_at=row.updated_at,
    )


def override_from_row(row: QuotaOverrideRow) -> QuotaOverride:
    return QuotaOverride(
        guild_id=row.guild_id,
        user_id=row.user_id,
        daily_quota=row.daily_quota,
        usage_reset_at=row.usage_reset_at,
        set_by=row.set_by,
        updated_at=row.updated_at,
    )


def ban_from_row(row: BanRow) -> Ban:
    return Ban(
        guild_id=row.guild_id,
        user_id=row.user_id,
        reason=row.reason,
        banned_by=row.banned_by,
        created_at=row.created_at,
    )


def action_from_row(row: ModeratorActionRow) -> ModeratorAction:
    return ModeratorAction(
        id=row.id,
        guild_id=row.guild_id,
        moderator_id=row.moderator_id,
        action=row.action,
        target_user_id=row.target_user_id,
        details=json.loads(row.details),
        created_at=row.created_at,
    )


def delivery_from_row(row: DeliveryRow) -> Delivery:
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
