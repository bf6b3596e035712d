"""What moderators can do: quotas, limits, bans, blocked words and the queue. Every action is recorded.

Discord hides these commands from members, but the check is made again here: permissions in Discord can
be changed by server admins, and the service must not trust the adapter alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bot.domain.errors import InvalidRequest, NotAllowed
from bot.domain.jobs import JobState
from bot.domain.members import Requester
from bot.domain.moderation import normalize_word
from bot.domain.records import GuildSettings, GuildSettingsChanges, ModeratorAction
from bot.domain.requests import refuse_unusable_characters
from bot.scheduler.scheduler import GpuScheduler
from bot.services.imagine import ImagineService, Usage
from bot.store.jobs import JobStore
from bot.store.moderation import ModerationStore


@dataclass(frozen=True)
class MemberQuota:
    usage: Usage
    override: int | None  # the member's own quota, if a moderator set one


class ModerationService:
    def __init__(
        self, store: ModerationStore, jobs: JobStore, scheduler: GpuScheduler, service: ImagineService
    ) -> None:
        self._store = store
        self._jobs = jobs
        self._scheduler = scheduler
        self._service = service

    async def show_quota(self, moderator: Requester, user_id: int) -> MemberQuota:
        guild_id = check_moderator(moderator)
        member = Requester(user_id=user_id, guild_id=guild_id)
        override = await self._store.get_quota_override(guild_id, user_id)
        return MemberQuota(await self._service.usage(member), override.daily_quota if override else None)

    async def set_quota(self, moderator: Requester, user_id: int, daily_quota: int) -> None:
        guild_id = check_moderator(moderator)
        _non_negative("quota", daily_quota)
        await self._store.set_quota_override(guild_id, user_id, daily_quota, set_by=moderator.user_id)
        await self._record(moderator, "quota.set", user_id, daily_quota=daily_quota)

    async def reset_quota(self, moderator: Requester, user_id: int) -> None:
        """Start the member's count for today again from zero."""
        guild_id = check_moderator(moderator)
        await self._store.reset_usage(guild_id, user_id, set_by=moderator.user_id)
        await self._record(moderator, "quota.reset", user_id)

    async def set_default_quota(self, moderator: Requester, daily_quota: int) -> None:
        guild_id = check_moderator(moderator)
        _non_negative("quota", daily_quota)
        await self._store.update_guild_settings(guild_id, daily_quota=daily_quota)
        await self._record(moderator, "quota.default", None, daily_quota=daily_quota)

    async def update_limits(self, moderator: Requester, changes: GuildSettingsChanges) -> GuildSettings:
        """Change some of the guild's limits (None: back to the default). Only the quota may be 0."""
        guild_id = check_moderator(moderator)
        if changes.get("fast_by_default") and not self._service.fast_available:
            raise InvalidRequest(
                "Fast mode isn't set up on this bot (its operator sets FAST_MODEL), "
                "so it can't be the default."
            )
        for name, value in changes.items():
            if isinstance(value, int) and not isinstance(value, bool):
                _non_negative(name.replace("_", " "), value)
                # 0 would not mean "none": a 0 rate, burst or cap silently falls back to the default,
                # and 0 steps would refuse every request.
                if value == 0 and name != "daily_quota":
                    raise InvalidRequest(f"The {name.replace('_', ' ')} must be at least 1.")
        settings = await self._store.update_guild_settings(guild_id, **changes)
        if changes:
            await self._record(moderator, "limits.update", None, **dict(changes))
        return settings

    async def limits(self, moderator: Requester) -> GuildSettings:
        return await self._store.get_guild_settings(check_moderator(moderator))

    async def ban(self, moderator: Requester, user_id: int, reason: str) -> None:
        guild_id = check_moderator(moderator)
        if user_id == moderator.user_id:
            raise InvalidRequest("You can't ban yourself from the bot.")
        refuse_unusable_characters(reason, field="reason")
        await self._store.ban(guild_id, user_id, reason, by=moderator.user_id)
        cleared = await self._cancel_jobs(guild_id, user_id)
        await self._record(moderator, "ban", user_id, reason=reason, cancelled_jobs=cleared)

    async def unban(self, moderator: Requester, user_id: int) -> bool:
        guild_id = check_moderator(moderator)
        removed = await self._store.unban(guild_id, user_id)
        if removed:
            await self._record(moderator, "unban", user_id)
        return removed

    async def clear_queue(self, moderator: Requester, user_id: int | None) -> int:
        """Cancel the guild's queued jobs (one member's, or everyone's); running jobs finish."""
        guild_id = check_moderator(moderator)
        cleared = await self._cancel_jobs(guild_id, user_id, states=[JobState.QUEUED])
        await self._record(moderator, "queue.clear", user_id, cancelled_jobs=cleared)
        return len(cleared)

    async def add_blocked_word(self, moderator: Requester, word: str) -> bool:
        guild_id = check_moderator(moderator)
        refuse_unusable_characters(word, field="word")
        if not normalize_word(word):
            raise InvalidRequest("Give a word or phrase to block.")
        added = await self._store.add_blocked_word(guild_id, word, added_by=moderator.user_id)
        if added:
            await self._record(moderator, "blocked_words.add", None, word=normalize_word(word))
        return added

    async def remove_blocked_word(self, moderator: Requester, word: str) -> bool:
        guild_id = check_moderator(moderator)
        removed = await self._store.remove_blocked_word(guild_id, word)
        if removed:
            await self._record(moderator, "blocked_words.remove", None, word=normalize_word(word))
        return removed

    async def blocked_words(self, moderator: Requester) -> list[str]:
        return await self._store.blocked_words(check_moderator(moderator))

    async def action_log(
        self,
        moderator: Requester,
        *,
        user_id: int | None = None,
        action: str | None = None,
        offset: int = 0,
        limit: int = 10,
    ) -> tuple[list[ModeratorAction], int]:
        """A page of this server's moderation log (newest first) and the number of matching entries."""
        guild_id = check_moderator(moderator)
        return await self._store.actions(
            guild_id, target_user_id=user_id, action=action, offset=offset, limit=limit
        )

    async def _cancel_jobs(
        self, guild_id: int, user_id: int | None, states: list[JobState] | None = None
    ) -> list[int]:
        jobs = await self._jobs.list_jobs(
            states=states or [JobState.QUEUED, JobState.RUNNING], guild_id=guild_id, user_id=user_id
        )
        cancelled = []
        for job in jobs:
            # A job that finished between the listing and now is returned as it is: not cancelled.
            if (await self._scheduler.cancel(job.id)).state is JobState.CANCELLED:
                cancelled.append(job.id)
        return cancelled

    async def _record(self, moderator: Requester, action: str, target: int | None, **details: Any) -> None:
        assert moderator.guild_id is not None
        await self._store.record_action(moderator.guild_id, moderator.user_id, action, target, details)


def check_moderator(moderator: Requester) -> int:
    """The moderator's server; NotAllowed outside a server or for a member without Manage Server."""
    if moderator.guild_id is None:
        raise NotAllowed("Moderator commands only work in a server.")
    if not moderator.is_moderator:
        raise NotAllowed("Only moderators (Manage Server) can do that.")
    return moderator.guild_id


def _non_negative(name: str, value: int) -> None:
    if value < 0:
        raise InvalidRequest(f"The {name} can't be negative.")
