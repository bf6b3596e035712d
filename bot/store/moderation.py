"""Moderation data: each guild's settings, members' own quotas, bans, blocked words, and the action log.

Changes to what admission reads (settings, blocked words) clear the admission cache after they commit.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Unpack

from sqlalchemy import delete, func, select

from bot.domain.moderation import normalize_word
from bot.domain.records import Ban, GuildSettings, GuildSettingsChanges, ModeratorAction, QuotaOverride
from bot.domain.safety import SafetyMode
from bot.store.admission import AdmissionStore, read_blocked_words, read_guild_settings
from bot.store.models import BanRow, BlockedWordRow, GuildSettingsRow, ModeratorActionRow, QuotaOverrideRow
from bot.store.rows import action_from_row, ban_from_row, override_from_row, settings_from_row
from bot.store.unit_of_work import Database

MAX_WORD_CHARS = 100

_SETTING_NAMES = frozenset(GuildSettingsChanges.__annotations__)
_SWITCH_NAMES = frozenset({"buttons_for_everyone", "fast_by_default"})
_SAFETY_MODES = frozenset(mode.value for mode in SafetyMode)


class ModerationStore:
    def __init__(self, database: Database, admission: AdmissionStore) -> None:
        self._database = database
        self._admission = admission

    # -- guild settings -----------------------------------------------------------------------------------

    async def get_guild_settings(self, guild_id: int) -> GuildSettings:
        """The guild's settings; a guild never configured gets all defaults (None)."""
        async with self._database.reading() as session:
            return await read_guild_settings(session, guild_id)

    async def update_guild_settings(
        self, guild_id: int, **changes: Unpack[GuildSettingsChanges]
    ) -> GuildSettings:
        """Change some settings (None resets one to the default); the others keep their values."""
        unknown = set(changes) - _SETTING_NAMES
        if unknown:
            raise TypeError(f"unknown guild settings: {', '.join(sorted(unknown))}")
        values: dict[str, Any] = dict(changes)
        for name, value in values.items():
            if name in _SWITCH_NAMES:
                values[name] = bool(value)
            elif name == "safety_mode":
                if value is not None and value not in _SAFETY_MODES:
                    raise ValueError(f"safety_mode must be one of {sorted(_SAFETY_MODES)}; got {value!r}")
            elif name == "safety_threshold":
                if value is not None and not (isinstance(value, float | int) and 0 < value <= 1):
                    raise ValueError(f"safety_threshold must be over 0 and at most 1, or None; got {value!r}")
            elif value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
                raise ValueError(f"{name} must be a whole number of at least 0, or None; got {value!r}")
        if not values:
            return await self.get_guild_settings(guild_id)
        values["updated_at"] = self._database.clock.now()
        async with self._database.writing() as session:
            await session.execute(self._database.upsert(GuildSettingsRow, {"guild_id": guild_id}, values))
            row = await session.get(GuildSettingsRow, guild_id, populate_existing=True)
            assert row is not None
        self._admission.forget_guild(guild_id)
        return settings_from_row(row)

    # -- members' own quotas ------------------------------------------------------------------------------

    async def get_quota_override(self, guild_id: int, user_id: int) -> QuotaOverride | None:
        async with self._database.reading() as session:
            row = await session.get(QuotaOverrideRow, (guild_id, user_id))
            return None if row is None else override_from_row(row)

    async def set_quota_override(
        self, guild_id: int, user_id: int, daily_quota: int | None, set_by: int
    ) -> QuotaOverride:
        """Give the member their own daily quota (None: back to the guild's). Keeps any usage reset."""
        if daily_quota is not None and daily_quota < 0:
            raise ValueError(f"daily_quota must be at least 0, or None; got {daily_quota}")
        values = {"daily_quota": daily_quota, "set_by": set_by, "updated_at": self._database.clock.now()}
        return await self._write_override(guild_id, user_id, values)

    async def reset_usage(self, guild_id: int, user_id: int, set_by: int) -> QuotaOverride:
        """`/quota reset`: from now on, only jobs created from this moment count against the quota."""
        now = self._database.clock.now()
        values = {"usage_reset_at": now, "set_by": set_by, "updated_at": now}
        return await self._write_override(guild_id, user_id, values)

    async def _write_override(self, guild_id: int, user_id: int, values: dict[str, Any]) -> QuotaOverride:
        async with self._database.writing() as session:
            keys = {"guild_id": guild_id, "user_id": user_id}
            await session.execute(self._database.upsert(QuotaOverrideRow, keys, values))
            row = await session.get(QuotaOverrideRow, (guild_id, user_id), populate_existing=True)
            assert row is not None
            return override_from_row(row)

    # -- bans ---------------------------------------------------------------------------------------------

    async def ban(self, guild_id: int, user_id: int, reason: str, by: int) -> Ban:
        """Ban the member from /imagine in this guild (banning again replaces the reason)."""
        values = {"reason": reason, "banned_by": by, "created_at": self._database.clock.now()}
        keys = {"guild_id": guild_id, "user_id": user_id}
        async with self._database.writing() as session:
            await session.execute(self._database.upsert(BanRow, keys, values))
            row = await session.get(BanRow, (guild_id, user_id), populate_existing=True)
            assert row is not None
            return ban_from_row(row)

    async def unban(self, guild_id: int, user_id: int) -> bool:
        """Lift a ban; False if the member was not banned."""
        async with self._database.writing() as session:
            result = await session.execute(
                delete(BanRow)
                .where(BanRow.guild_id == guild_id, BanRow.user_id == user_id)
                .returning(BanRow.user_id)
            )
            return result.first() is not None

    # -- blocked words ------------------------------------------------------------------------------------

    async def add_blocked_word(self, guild_id: int, word: str, added_by: int) -> bool:
        """Block a word or phrase (stored case-folded, spaces collapsed); False if it was already blocked."""
        values = {
            "guild_id": guild_id,
            "word": _stored_word(word),
            "added_by": added_by,
            "created_at": self._database.clock.now(),
        }
        async with self._database.writing() as session:
            statement = self._database.insert(BlockedWordRow).values(values).on_conflict_do_nothing()
            result = await session.execute(statement.returning(BlockedWordRow.word))
            added = result.first() is not None
        self._admission.forget_guild(guild_id)
        return added

    async def remove_blocked_word(self, guild_id: int, word: str) -> bool:
        """Unblock a word; False if it was not blocked."""
        async with self._database.writing() as session:
            result = await session.execute(
                delete(BlockedWordRow)
                .where(BlockedWordRow.guild_id == guild_id, BlockedWordRow.word == _stored_word(word))
                .returning(BlockedWordRow.word)
            )
            removed = result.first() is not None
        self._admission.forget_guild(guild_id)
        return removed

    async def blocked_words(self, guild_id: int) -> list[str]:
        """The guild's blocked words, case-folded, in alphabetical order."""
        async with self._database.reading() as session:
            return await read_blocked_words(session, guild_id)

    # -- the action log -----------------------------------------------------------------------------------

    async def record_action(
        self,
        guild_id: int,
        moderator_id: int,
        action: str,
        target_user_id: int | None,
        details: Mapping[str, Any],
    ) -> None:
        """Append to the guild's moderation log. `details` must serialise to JSON (datetimes become text)."""
        row = ModeratorActionRow(
            guild_id=guild_id,
            moderator_id=moderator_id,
            action=action,
            target_user_id=target_user_id,
            details=json.dumps(dict(details), sort_keys=True, default=str),
            created_at=self._database.clock.now(),
        )
        async with self._database.writing() as session:
            session.add(row)

    async def actions(
        self,
        guild_id: int,
        *,
        target_user_id: int | None = None,
        action: str | None = None,
        offset: int = 0,
        limit: int = 10,
    ) -> tuple[list[ModeratorAction], int]:
        """A page of the guild's action log, newest first, and how many entries match in all."""
        matching = [ModeratorActionRow.guild_id == guild_id]
        if target_user_id is not None:
            matching.append(ModeratorActionRow.target_user_id == target_user_id)
        if action is not None:
            matching.append(ModeratorActionRow.action == action)
        async with self._database.reading() as session:
            total = await session.scalar(
                select(func.count()).select_from(ModeratorActionRow).where(*matching)
            )
            rows = await session.scalars(
                select(ModeratorActionRow)
                .where(*matching)
                .order_by(ModeratorActionRow.created_at.desc(), ModeratorActionRow.id.desc())
                .offset(offset)
                .limit(limit)
            )
            return [action_from_row(row) for row in rows.all()], int(total or 0)


def _stored_word(word: str) -> str:
    """The domain's normal form of a blocked word, checked to fit its column."""
    normalized = normalize_word(word)
    if not normalized:
        raise ValueError("a blocked word cannot be empty")
    if len(normalized) > MAX_WORD_CHARS:
        raise ValueError(f"a blocked word is at most {MAX_WORD_CHARS} characters; got {len(normalized)}")
    return normalized
