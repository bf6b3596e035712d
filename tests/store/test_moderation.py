"""JobStore: usage and quotas, guild settings, bans, blocked words and the moderation log."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bot.domain.clock import FakeClock
from bot.domain.jobs import JobState
from bot.store import GuildSettings, JobStore
from bot.store.repository import GUILD_CACHE_SECONDS

from .factories import make_images, make_spec

GUILD = 2**62 + 1
USER = 2**63 - 1
MOD = 2**60


async def _job_in(
    store: JobStore, state: JobState, *, guild_id: int | None = GUILD, user_id: int = USER
) -> int:
    job = await store.create_job(make_spec(user_id=user_id, guild_id=guild_id))
    if state is JobState.QUEUED:
        return job.id
    if state is JobState.CANCELLED:  # cancelled before it started
        await store.cancel_job(job.id)
        return job.id
    await store.mark_running([job.id])
    if state is JobState.SUCCEEDED:
        await store.complete_job(job.id, make_images(), [1, 2, 3, 4])
    elif state is JobState.FAILED:
        await store.fail_job(job.id, "broken")
    return job.id


async def test_count_jobs_since(store: JobStore, clock: FakeClock) -> None:
    """Counts queued, running, succeeded and cancelled-while-running; not failed or cancelled-before-start."""
    yesterday = clock.now()
    clock.advance(3600)
    await _job_in(store, JobState.SUCCEEDED)  # before `since`
    clock.advance(1)
    since = clock.now()
    for state in JobState:
        await _job_in(store, state)
    running_then_cancelled = await _job_in(store, JobState.RUNNING)
    await store.cancel_job(running_then_cancelled)
    await _job_in(store, JobState.SUCCEEDED, user_id=USER - 1)  # someone else
    await _job_in(store, JobState.SUCCEEDED, guild_id=GUILD + 1)  # another guild
    await _job_in(store, JobState.QUEUED, guild_id=None)  # a direct message

    # queued, running, succeeded, and the one cancelled while running
    assert await store.count_jobs_since(GUILD, USER, since) == 4
    assert await store.count_jobs_since(GUILD, USER, yesterday) == 5
    assert await store.count_jobs_since(GUILD, USER, clock.now() + timedelta(seconds=1)) == 0
    assert await store.count_jobs_since(None, USER, yesterday) == 1
    assert await store.count_jobs_since(GUILD + 1, USER, yesterday) == 1


async def test_usage_reset(store: JobStore, clock: FakeClock) -> None:
    """`/quota reset` makes earlier jobs stop counting; an earlier reset than `since` changes nothing."""
    start = clock.now()
    await _job_in(store, JobState.SUCCEEDED)
    await _job_in(store, JobState.SUCCEEDED)
    clock.advance(10)
    override = await store.reset_usage(GUILD, USER, MOD)
    assert (override.usage_reset_at, override.daily_quota, override.set_by) == (clock.now(), None, MOD)
    assert await store.count_jobs_since(GUILD, USER, start) == 0
    await _job_in(store, JobState.SUCCEEDED)  # created at the reset instant: counts
    clock.advance(10)
    await _job_in(store, JobState.QUEUED)
    assert await store.count_jobs_since(GUILD, USER, start) == 2
    assert await store.count_jobs_since(GUILD, USER, clock.now()) == 1
    assert await store.count_jobs_since(GUILD, USER - 1, start) == 0


async def test_active_jobs(store: JobStore) -> None:
    """Queued and running, across guilds and DMs."""
    for state in JobState:
        await _job_in(store, state)
    await _job_in(store, JobState.QUEUED, guild_id=None)
    await _job_in(store, JobState.QUEUED, user_id=5)
    assert await store.active_jobs(USER) == 3
    assert await store.active_jobs(12345) == 0


async def test_guild_settings(store: JobStore, clock: FakeClock) -> None:
    """Defaults without a row; partial updates keep the rest; None resets; unknown names refused."""
    assert await store.get_guild_settings(GUILD) == GuildSettings(guild_id=GUILD)
    first = await store.update_guild_settings(GUILD, daily_quota=20, max_steps=40)
    assert (first.daily_quota, first.max_steps, first.rate_per_minute, first.buttons_for_everyone) == (
        20,
        40,
        None,
        False,
    )
    assert first.updated_at == clock.now()
    clock.advance(5)
    second = await store.update_guild_settings(
        GUILD, buttons_for_everyone=True, daily_quota=None, rate_burst=3
    )
    assert second == GuildSettings(
        guild_id=GUILD,
        daily_quota=None,
        max_steps=40,
        rate_burst=3,
        buttons_for_everyone=True,
        updated_at=clock.now(),
    )
    assert await store.get_guild_settings(GUILD) == second
    assert await store.update_guild_settings(GUILD) == second
    assert await store.get_guild_settings(GUILD + 1) == GuildSettings(guild_id=GUILD + 1)
    with pytest.raises(TypeError, match="colour"):
        await store.update_guild_settings(GUILD, colour=3)  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="max_concurrent"):
        await store.update_guild_settings(GUILD, max_concurrent=-1)


async def test_quota_override(store: JobStore, clock: FakeClock) -> None:
    """Setting a quota keeps a usage reset, and a reset keeps the quota."""
    assert await store.get_quota_override(GUILD, USER) is None
    await store.reset_usage(GUILD, USER, MOD)
    reset_at = clock.now()
    clock.advance(60)
    override = await store.set_quota_override(GUILD, USER, 100, MOD + 1)
    assert (override.daily_quota, override.usage_reset_at, override.set_by, override.updated_at) == (
        100,
        reset_at,
        MOD + 1,
        clock.now(),
    )
    clock.advance(60)
    again = await store.reset_usage(GUILD, USER, MOD)
    assert (again.daily_quota, again.usage_reset_at) == (100, clock.now())
    assert await store.get_quota_override(GUILD, USER) == again
    cleared = await store.set_quota_override(GUILD, USER, None, MOD)
    assert cleared.daily_quota is None
    assert await store.get_quota_override(GUILD + 1, USER) is None


async def test_bans(store: JobStore, clock: FakeClock) -> None:
    assert not await store.is_banned(GUILD, USER)
    ban = await store.ban(GUILD, USER, "spam", MOD)
    assert (ban.reason, ban.banned_by, ban.created_at) == ("spam", MOD, clock.now())
    assert await store.is_banned(GUILD, USER)
    assert not await store.is_banned(GUILD + 1, USER)
    assert (await store.ban(GUILD, USER, "more spam", MOD + 1)).reason == "more spam"
    await store.ban(GUILD, 7, "x", MOD)
    assert [b.user_id for b in await store.bans(GUILD)] == [7, USER]
    assert await store.get_ban(GUILD, USER) is not None
    assert await store.unban(GUILD, USER)
    assert not await store.unban(GUILD, USER)
    assert not await store.is_banned(GUILD, USER)
    assert await store.get_ban(GUILD, USER) is None


async def test_blocked_words(store: JobStore) -> None:
    """Case-folded and space-collapsed, so `Gore` and `gore` are one entry; per guild."""
    assert await store.add_blocked_word(GUILD, "Gore", MOD)
    assert not await store.add_blocked_word(GUILD, "  gore ", MOD)
    assert await store.add_blocked_word(GUILD, "blood   bath", MOD)
    assert await store.add_blocked_word(GUILD + 1, "other", MOD)
    assert await store.blocked_words(GUILD) == ["blood bath", "gore"]
    assert await store.remove_blocked_word(GUILD, "GORE")
    assert not await store.remove_blocked_word(GUILD, "gore")
    assert await store.blocked_words(GUILD) == ["blood bath"]
    with pytest.raises(ValueError, match="empty"):
        await store.add_blocked_word(GUILD, "   ", MOD)
    with pytest.raises(ValueError, match="at most"):
        await store.add_blocked_word(GUILD, "x" * 101, MOD)


async def test_moderator_actions(store: JobStore, clock: FakeClock) -> None:
    """Newest first, limited, per guild; details come back as a dict."""
    await store.record_action(GUILD, MOD, "ban", USER, {"reason": "spam"})
    clock.advance(1)
    await store.record_action(
        GUILD, MOD, "quota.set", USER, {"daily_quota": 5, "until": datetime(2026, 2, 1, tzinfo=UTC)}
    )
    clock.advance(1)
    await store.record_action(GUILD, MOD + 1, "words.add", None, {})
    await store.record_action(GUILD + 1, MOD, "ban", USER, {})
    actions = await store.actions(GUILD, limit=2)
    assert [a.action for a in actions] == ["words.add", "quota.set"]
    assert actions[0].target_user_id is None
    assert actions[0].created_at == clock.now()
    assert actions[1].details == {"daily_quota": 5, "until": "2026-02-01 00:00:00+00:00"}
    assert len(await store.actions(GUILD)) == 3


async def test_admission_facts_agree_with_the_single_reads(store: JobStore, clock: FakeClock) -> None:
    """The one-read admission facts equal what the separate store methods say, member by member."""
    since = clock.now()
    for state in JobState:
        await _job_in(store, state)
        await _job_in(store, state, user_id=USER - 1)
    await _job_in(store, JobState.QUEUED, guild_id=None)
    await store.update_guild_settings(GUILD, daily_quota=7, max_steps=20, buttons_for_everyone=True)
    await store.set_quota_override(GUILD, USER, 3, set_by=MOD)
    clock.advance(5)
    await store.reset_usage(GUILD, USER - 1, set_by=MOD)
    await _job_in(store, JobState.SUCCEEDED, user_id=USER - 1)
    await store.ban(GUILD, USER - 1, "spam", by=MOD)
    await store.add_blocked_word(GUILD, "gore", added_by=MOD)
    await store.add_blocked_word(GUILD, "blood bath", added_by=MOD)

    for guild_id, user_id in [(GUILD, USER), (GUILD, USER - 1), (GUILD + 1, USER), (None, USER), (GUILD, 5)]:
        facts = await store.admission_facts(guild_id, user_id, since)
        assert facts.used_since == await store.count_jobs_since(guild_id, user_id, since)
        assert facts.active_jobs == await store.active_jobs(user_id)
        if guild_id is None:
            assert (facts.guild, facts.daily_quota_override) == (None, None)
            assert (facts.banned, facts.blocked_words) == (False, [])
            continue
        assert facts.guild == await store.get_guild_settings(guild_id)
        override = await store.get_quota_override(guild_id, user_id)
        assert facts.daily_quota_override == (override.daily_quota if override else None)
        assert facts.banned == await store.is_banned(guild_id, user_id)
        assert facts.blocked_words == await store.blocked_words(guild_id)
    facts = await store.admission_facts(GUILD, USER - 1, since)
    assert (facts.banned, facts.used_since, facts.blocked_words) == (True, 1, ["blood bath", "gore"])


async def test_guild_rules_cache_is_cleared_by_writes_and_expires(store: JobStore, clock: FakeClock) -> None:
    """This store's own writes show at once; another process's writes within GUILD_CACHE_SECONDS."""
    other_process = JobStore(store.engine, store.images, clock)
    since = clock.now()
    assert (await store.admission_facts(GUILD, USER, since)).blocked_words == []
    await store.add_blocked_word(GUILD, "gore", added_by=MOD)
    assert (await store.admission_facts(GUILD, USER, since)).blocked_words == ["gore"]
    await other_process.update_guild_settings(GUILD, max_steps=9)
    assert (await store.admission_facts(GUILD, USER, since)).guild == GuildSettings(GUILD)
    clock.advance(GUILD_CACHE_SECONDS)
    facts = await store.admission_facts(GUILD, USER, since)
    assert facts.guild is not None
    assert facts.guild.max_steps == 9
