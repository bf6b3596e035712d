"""ModerationService: moderator actions with their checks, on a real SQLite store and a fake backend."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from bot.domain.errors import InvalidRequest, LimitExceeded, NotAllowed
from bot.domain.jobs import Job, JobState
from bot.domain.limits import UserLimits
from bot.domain.members import Requester
from bot.services.moderation import ModerationService
from tests.fakes import ServiceWorld, service_world
from tests.store.factories import action_log

GUILD = 500
OTHER_GUILD = 600
ALICE = Requester(user_id=1, guild_id=GUILD, channel_id=9)
BOB = Requester(user_id=2, guild_id=GUILD, channel_id=9)
MOD = Requester(user_id=3, guild_id=GUILD, channel_id=9, is_moderator=True)
MOD_IN_DMS = Requester(user_id=3, guild_id=None, channel_id=9, is_moderator=True)
BOB_ELSEWHERE = Requester(user_id=2, guild_id=OTHER_GUILD, channel_id=10)


class World(ServiceWorld):
    async def log(self, guild_id: int = GUILD) -> list[tuple[int, str, int | None, dict[str, Any]]]:
        """The guild's moderation log, oldest first, as (moderator, action, target, details)."""
        actions = await action_log(self.stores.database, guild_id)
        return [(a.moderator_id, a.action, a.target_user_id, a.details) for a in reversed(actions)]

    async def states(self, *jobs: Job) -> list[JobState]:
        return [job.state for job in await self.store.get_jobs([job.id for job in jobs])]

    async def is_banned(self, user_id: int, guild_id: int = GUILD) -> bool:
        facts = await self.stores.admission.admission_facts(guild_id, user_id, self.clock.now())
        return facts.banned


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    limits = UserLimits(rate_per_minute=600, burst=50, max_concurrent=5, daily_quota=5)
    async with service_world(tmp_path, limits) as base:
        yield World(**vars(base))


# Every moderator action, called as `who`; each must check its caller before touching anything.
ACTIONS: dict[str, Callable[[ModerationService, Requester], Awaitable[Any]]] = {
    "show_quota": lambda m, who: m.show_quota(who, ALICE.user_id),
    "set_quota": lambda m, who: m.set_quota(who, ALICE.user_id, 99),
    "reset_quota": lambda m, who: m.reset_quota(who, ALICE.user_id),
    "set_default_quota": lambda m, who: m.set_default_quota(who, 99),
    "update_limits": lambda m, who: m.update_limits(who, {"max_steps": 2}),
    "limits": lambda m, who: m.limits(who),
    "ban": lambda m, who: m.ban(who, BOB.user_id, "spam"),
    "unban": lambda m, who: m.unban(who, BOB.user_id),
    "clear_queue": lambda m, who: m.clear_queue(who, None),
    "add_blocked_word": lambda m, who: m.add_blocked_word(who, "gore"),
    "remove_blocked_word": lambda m, who: m.remove_blocked_word(who, "gore"),
    "blocked_words": lambda m, who: m.blocked_words(who),
}


async def assert_nothing_changed(world: World) -> None:
    store = world.stores.moderation
    assert await store.get_quota_override(GUILD, ALICE.user_id) is None
    settings = await store.get_guild_settings(GUILD)
    assert (settings.daily_quota, settings.max_steps, settings.updated_at) == (None, None, None)
    assert not await world.is_banned(BOB.user_id)
    assert await store.blocked_words(GUILD) == []
    assert await world.log() == []


@pytest.mark.parametrize("action", ACTIONS)
async def test_non_moderator_is_not_allowed(world: World, action: str) -> None:
    """A member without Manage Server is refused every moderator action, and nothing changes."""
    await world.stores.moderation.add_blocked_word(GUILD, "kept", added_by=MOD.user_id)
    queued = await world.service.imagine(BOB, "cat")
    await world.done(queued)
    with pytest.raises(NotAllowed, match="Only moderators"):
        await ACTIONS[action](world.moderation, ALICE)
    assert await world.stores.moderation.blocked_words(GUILD) == ["kept"]
    await world.stores.moderation.remove_blocked_word(GUILD, "kept")
    await assert_nothing_changed(world)


@pytest.mark.parametrize("action", ACTIONS)
async def test_outside_a_guild_is_not_allowed(world: World, action: str) -> None:
    """Even a moderator is refused outside a server (there is no guild to act on)."""
    with pytest.raises(NotAllowed, match="only work in a server"):
        await ACTIONS[action](world.moderation, MOD_IN_DMS)
    await assert_nothing_changed(world)


async def test_negative_or_zero_values_are_refused(world: World) -> None:
    """Negative quotas and limits are refused, as is a 0 rate, cap or step limit; a 0 quota is allowed."""
    with pytest.raises(InvalidRequest, match="quota can't be negative"):
        await world.moderation.set_quota(MOD, ALICE.user_id, -1)
    with pytest.raises(InvalidRequest, match="quota can't be negative"):
        await world.moderation.set_default_quota(MOD, -5)
    with pytest.raises(InvalidRequest, match="max steps can't be negative"):
        await world.moderation.update_limits(MOD, {"max_steps": -1})
    for name in ("rate_per_minute", "rate_burst", "max_concurrent", "max_steps"):
        with pytest.raises(InvalidRequest, match="must be at least 1"):
            await world.moderation.update_limits(MOD, {name: 0})  # type: ignore[misc]
    await assert_nothing_changed(world)

    await world.moderation.set_quota(MOD, ALICE.user_id, 0)
    with pytest.raises(LimitExceeded, match="all 0 of today's jobs"):
        await world.service.imagine(ALICE, "cat")
    settings = await world.moderation.update_limits(MOD, {"daily_quota": 0, "buttons_for_everyone": False})
    assert settings.daily_quota == 0


async def test_quota_show_set_reset_and_default(world: World) -> None:
    """Usage counts the member's jobs; own quota beats the server default; reset starts the count again."""
    await world.moderation.set_default_quota(MOD, 2)
    for _ in range(2):
        await world.done(await world.service.imagine(ALICE, "cat"))
    with pytest.raises(LimitExceeded, match="all 2"):
        await world.service.imagine(ALICE, "cat")
    shown = await world.moderation.show_quota(MOD, ALICE.user_id)
    assert (shown.usage.used_today, shown.usage.daily_quota, shown.override) == (2, 2, None)

    await world.moderation.set_quota(MOD, ALICE.user_id, 3)
    shown = await world.moderation.show_quota(MOD, ALICE.user_id)
    assert (shown.usage.used_today, shown.usage.daily_quota, shown.override) == (2, 3, 3)
    await world.done(await world.service.imagine(ALICE, "cat"))

    world.clock.advance(1)
    await world.moderation.reset_quota(MOD, ALICE.user_id)
    shown = await world.moderation.show_quota(MOD, ALICE.user_id)
    assert (shown.usage.used_today, shown.usage.remaining, shown.override) == (0, 3, 3)
    assert (await world.moderation.show_quota(MOD, BOB.user_id)).usage.daily_quota == 2
    assert await world.log() == [
        (MOD.user_id, "quota.default", None, {"daily_quota": 2}),
        (MOD.user_id, "quota.set", ALICE.user_id, {"daily_quota": 3}),
        (MOD.user_id, "quota.reset", ALICE.user_id, {}),
    ]


async def test_ban_yourself_is_refused(world: World) -> None:
    """A moderator can't ban themselves; nothing is stored or recorded."""
    with pytest.raises(InvalidRequest, match="can't ban yourself"):
        await world.moderation.ban(MOD, MOD.user_id, "oops")
    assert not await world.is_banned(MOD.user_id)
    assert await world.log() == []


async def test_ban_cancels_the_members_jobs_here_and_unban_restores(world: World) -> None:
    """A ban cancels the member's running and queued jobs in this guild only and refuses new ones."""
    world.backend.gate = threading.Event()
    running = await world.service.imagine(BOB, "running")
    await world.backend.until_rendering()
    queued = await world.service.imagine(BOB, "queued")
    elsewhere = await world.service.imagine(BOB_ELSEWHERE, "in another server")
    alices = await world.service.imagine(ALICE, "alice")

    await world.moderation.ban(MOD, BOB.user_id, "spam")
    assert await world.states(running, queued, elsewhere, alices) == [
        JobState.CANCELLED,
        JobState.CANCELLED,
        JobState.QUEUED,
        JobState.QUEUED,
    ]
    with pytest.raises(NotAllowed, match="can't use the image bot"):
        await world.service.imagine(BOB, "again")
    world.backend.gate.set()
    assert (await world.done(alices)).state is JobState.SUCCEEDED
    assert (await world.done(elsewhere)).state is JobState.SUCCEEDED

    assert await world.moderation.unban(MOD, BOB.user_id) is True
    assert await world.moderation.unban(MOD, BOB.user_id) is False  # not banned: nothing recorded
    assert (await world.done(await world.service.imagine(BOB, "back"))).state is JobState.SUCCEEDED
    assert await world.log() == [
        (MOD.user_id, "ban", BOB.user_id, {"reason": "spam", "cancelled_jobs": [running.id, queued.id]}),
        (MOD.user_id, "unban", BOB.user_id, {}),
    ]
    assert await world.log(OTHER_GUILD) == []


async def test_clear_queue_leaves_running_jobs_and_other_members(world: World) -> None:
    """Clearing one member's queue cancels only their queued jobs; clearing the server's, everyone's."""
    world.backend.gate = threading.Event()
    running = await world.service.imagine(BOB, "running")
    await world.backend.until_rendering()
    bobs = [await world.service.imagine(BOB, f"bob {n}") for n in range(2)]
    alices = await world.service.imagine(ALICE, "alice")
    elsewhere = await world.service.imagine(BOB_ELSEWHERE, "in another server")

    assert await world.moderation.clear_queue(MOD, BOB.user_id) == 2
    assert await world.states(running, *bobs, alices, elsewhere) == [
        JobState.RUNNING,
        JobState.CANCELLED,
        JobState.CANCELLED,
        JobState.QUEUED,
        JobState.QUEUED,
    ]
    assert await world.moderation.clear_queue(MOD, None) == 1
    assert await world.states(running, alices, elsewhere) == [
        JobState.RUNNING,
        JobState.CANCELLED,
        JobState.QUEUED,
    ]
    world.backend.gate.set()
    assert (await world.done(running)).state is JobState.SUCCEEDED
    assert (await world.done(elsewhere)).state is JobState.SUCCEEDED
    assert await world.log() == [
        (MOD.user_id, "queue.clear", BOB.user_id, {"cancelled_jobs": [bobs[0].id, bobs[1].id]}),
        (MOD.user_id, "queue.clear", None, {"cancelled_jobs": [alices.id]}),
    ]


async def test_a_job_that_finishes_meanwhile_is_not_counted_as_cancelled(world: World) -> None:
    """A job listed as running but finished before its cancel arrives is not reported as cancelled."""
    gate = world.backend.gate = threading.Event()
    running = await world.service.imagine(BOB, "running")
    await world.backend.until_rendering()
    queued = await world.service.imagine(BOB, "queued")
    real_cancel = world.scheduler.cancel

    async def late_cancel(job_id: int) -> Job:
        if job_id == running.id:  # the render ends just before the moderator's cancel reaches it
            world.backend.gate = threading.Event()  # but the next job stays in the pipeline until the end
            gate.set()
            await world.done(running)
        return await real_cancel(job_id)

    world.scheduler.cancel = late_cancel  # type: ignore[method-assign]
    await world.moderation.ban(MOD, BOB.user_id, "spam")
    assert await world.states(running, queued) == [JobState.SUCCEEDED, JobState.CANCELLED]
    [(_, action, _, details)] = await world.log()
    assert (action, details["cancelled_jobs"]) == ("ban", [queued.id])


async def test_blocked_words_add_remove_list(world: World) -> None:
    """Words are stored case-folded; adding twice or removing a missing word changes and records nothing."""
    assert await world.moderation.add_blocked_word(MOD, "  Gore  ") is True
    assert await world.moderation.add_blocked_word(MOD, "GORE") is False
    assert await world.moderation.add_blocked_word(MOD, "Blood   Bath") is True
    assert await world.moderation.blocked_words(MOD) == ["blood bath", "gore"]
    with pytest.raises(NotAllowed, match="“blood bath”"):
        await world.service.imagine(ALICE, "a BLOOD bath")
    with pytest.raises(InvalidRequest, match="Give a word"):
        await world.moderation.add_blocked_word(MOD, "   ")

    assert await world.moderation.remove_blocked_word(MOD, "gOrE") is True
    assert await world.moderation.remove_blocked_word(MOD, "gore") is False
    assert await world.moderation.blocked_words(MOD) == ["blood bath"]
    assert await world.log() == [
        (MOD.user_id, "blocked_words.add", None, {"word": "gore"}),
        (MOD.user_id, "blocked_words.add", None, {"word": "blood bath"}),
        (MOD.user_id, "blocked_words.remove", None, {"word": "gore"}),
    ]


async def test_limits_update_and_read(world: World) -> None:
    """Limits change only what is given, None resets to the default, and an empty change records nothing."""
    settings = await world.moderation.update_limits(MOD, {"max_steps": 4, "buttons_for_everyone": True})
    assert (settings.max_steps, settings.buttons_for_everyone, settings.rate_burst) == (4, True, None)
    with pytest.raises(InvalidRequest, match="between 1 and 4"):
        await world.service.imagine(ALICE, "cat --steps 6")
    assert (await world.moderation.update_limits(MOD, {})).max_steps == 4
    assert (await world.moderation.update_limits(MOD, {"max_steps": None})).max_steps is None
    assert (await world.moderation.limits(MOD)).buttons_for_everyone is True
    assert await world.log() == [
        (MOD.user_id, "limits.update", None, {"max_steps": 4, "buttons_for_everyone": True}),
        (MOD.user_id, "limits.update", None, {"max_steps": None}),
    ]


async def test_every_action_is_recorded_with_who_and_when(world: World) -> None:
    """Each changing action leaves one log entry naming the moderator, the action and its target."""
    other_mod = Requester(user_id=4, guild_id=GUILD, is_moderator=True)
    await world.moderation.set_default_quota(MOD, 10)
    await world.moderation.set_quota(other_mod, ALICE.user_id, 7)
    await world.moderation.reset_quota(MOD, ALICE.user_id)
    await world.moderation.update_limits(other_mod, {"rate_burst": 2})
    await world.moderation.ban(MOD, BOB.user_id, "spam")
    await world.moderation.unban(other_mod, BOB.user_id)
    await world.moderation.clear_queue(MOD, ALICE.user_id)
    await world.moderation.add_blocked_word(other_mod, "gore")
    await world.moderation.remove_blocked_word(MOD, "gore")
    # Reading changes nothing and is not recorded.
    await world.moderation.show_quota(MOD, ALICE.user_id)
    await world.moderation.limits(MOD)
    await world.moderation.blocked_words(MOD)

    assert [(who, action, target) for who, action, target, _ in await world.log()] == [
        (3, "quota.default", None),
        (4, "quota.set", ALICE.user_id),
        (3, "quota.reset", ALICE.user_id),
        (4, "limits.update", None),
        (3, "ban", BOB.user_id),
        (4, "unban", BOB.user_id),
        (3, "queue.clear", ALICE.user_id),
        (4, "blocked_words.add", None),
        (3, "blocked_words.remove", None),
    ]
    actions = await action_log(world.stores.database, GUILD)
    assert all(a.guild_id == GUILD and a.created_at is not None for a in actions)
