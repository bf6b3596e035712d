"""Admission facts: what the checks on a new job read about its member and guild.

Quota used today, jobs in flight, ban and own quota come from one statement; the guild's settings and
blocked words from a short-lived cache that the moderation store clears when it changes them.
"""

from __future__ import annotations

import functools
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Select,
    and_,
    bindparam,
    case,
    exists,
    false,
    func,
    not_,
    null,
    select,
)
from sqlalchemy.ext.asyncio import AsyncSession

from bot.domain.jobs import JobState
from bot.domain.records import AdmissionFacts, GuildSettings
from bot.store.models import BanRow, BlockedWordRow, GuildSettingsRow, JobRow, QuotaOverrideRow, UTCDateTime
from bot.store.rows import settings_from_row
from bot.store.unit_of_work import Database

# A guild's settings and blocked words are cached this long; the store's own writes clear them at once.
GUILD_CACHE_SECONDS = 30.0

GuildRules = tuple[GuildSettings, list[str]]  # a guild's settings and its blocked words


class AdmissionStore:
    def __init__(self, database: Database) -> None:
        self._database = database
        self._guild_cache: dict[int, tuple[float, GuildRules]] = {}  # guild id -> (when read, rules)

    async def admission_facts(self, guild_id: int | None, user_id: int, since: datetime) -> AdmissionFacts:
        """Everything the checks on a new job need (JobStore.create_job's `admit` checks and creates at
        once); also the member's usage for `/usage`."""
        rules = await self.guild_rules(guild_id) if guild_id is not None else None
        async with self._database.reading() as session:
            return await self.member_facts(session, guild_id, user_id, since, rules)

    async def guild_rules(self, guild_id: int) -> GuildRules:
        """The guild's settings and blocked words, from a short-lived cache (see GUILD_CACHE_SECONDS)."""
        cached = self._guild_cache.get(guild_id)
        now = self._database.clock.monotonic()
        if cached is not None and now - cached[0] < GUILD_CACHE_SECONDS:
            return cached[1]
        async with self._database.reading() as session:
            rules = (
                await read_guild_settings(session, guild_id),
                await read_blocked_words(session, guild_id),
            )
        self._guild_cache[guild_id] = (now, rules)
        return rules

    def forget_guild(self, guild_id: int) -> None:
        """Drop the cached rules; called after the commit that changed them, so no reader caches the old."""
        self._guild_cache.pop(guild_id, None)

    @staticmethod
    async def member_facts(
        session: AsyncSession,
        guild_id: int | None,
        user_id: int,
        since: datetime,
        rules: GuildRules | None,
    ) -> AdmissionFacts:
        """The member's facts in one statement, joined with the guild's (cached) rules."""
        if since.tzinfo is None or since.utcoffset() is None:
            raise ValueError(f"naive datetime {since!r}: pass a timezone-aware datetime")
        statement = _member_facts_statement(in_guild=guild_id is not None)
        params = {"guild_id": guild_id, "user_id": user_id, "since": since}
        used, active, is_banned, daily_quota = (await session.execute(statement, params)).one()
        return AdmissionFacts(
            guild=rules[0] if rules else None,
            daily_quota_override=daily_quota,
            banned=bool(is_banned),
            blocked_words=rules[1] if rules else [],
            used_since=int(used or 0),
            active_jobs=int(active or 0),
        )


async def read_guild_settings(session: AsyncSession, guild_id: int) -> GuildSettings:
    """The guild's settings; a guild never configured gets all defaults (None)."""
    row = await session.get(GuildSettingsRow, guild_id)
    return GuildSettings(guild_id=guild_id) if row is None else settings_from_row(row)


async def read_blocked_words(session: AsyncSession, guild_id: int) -> list[str]:
    """The guild's blocked words, case-folded, in alphabetical order."""
    words = await session.scalars(
        select(BlockedWordRow.word).where(BlockedWordRow.guild_id == guild_id).order_by(BlockedWordRow.word)
    )
    return list(words.all())


# Built once, with these parameters bound at each execution: building and keying a statement this size
# costs more than running it on SQLite.
_GUILD = bindparam("guild_id", type_=BigInteger())
_USER = bindparam("user_id", type_=BigInteger())
_SINCE = bindparam("since", type_=UTCDateTime())


@functools.cache
def _member_facts_statement(*, in_guild: bool) -> Select[Any]:
    """Quota used, jobs in flight, ban and own quota of the member (`guild_id`, `user_id`, `since`)."""
    banned: ColumnElement[bool] = false()
    own_quota: Any = null()
    if in_guild:
        banned = exists().where(BanRow.guild_id == _GUILD, BanRow.user_id == _USER)
        own_quota = (
            select(QuotaOverrideRow.daily_quota)
            .where(QuotaOverrideRow.guild_id == _GUILD, QuotaOverrideRow.user_id == _USER)
            .scalar_subquery()
        )
    return select(
        _quota_count(_GUILD if in_guild else None).scalar_subquery(),
        _active_count().scalar_subquery(),
        banned,
        own_quota,
    )


def _quota_count(guild: Any | None) -> Select[int]:
    """Jobs counting against the quota since `since`, or since the member's usage reset if later; in the
    guild `guild` (a bound parameter), or outside any guild when None. Failed jobs do not count, nor jobs
    cancelled before they started."""
    start: Any = _SINCE
    if guild is not None:
        reset_at = (
            select(QuotaOverrideRow.usage_reset_at)
            .where(QuotaOverrideRow.guild_id == guild, QuotaOverrideRow.user_id == _USER)
            .scalar_subquery()
        )
        start = case((reset_at > start, reset_at), else_=start)
    guild_matches: ColumnElement[bool] = (
        JobRow.guild_id.is_(None) if guild is None else JobRow.guild_id == guild
    )
    return (
        select(func.count())
        .select_from(JobRow)
        .where(
            guild_matches,
            JobRow.user_id == _USER,
            JobRow.created_at >= start,
            JobRow.state != JobState.FAILED.value,
            not_(and_(JobRow.state == JobState.CANCELLED.value, JobRow.started_at.is_(None))),
        )
    )


def _active_count() -> Select[int]:
    """The member's jobs queued or running, in every guild."""
    return (
        select(func.count())
        .select_from(JobRow)
        .where(JobRow.user_id == _USER, JobRow.state.in_([JobState.QUEUED.value, JobState.RUNNING.value]))
    )
