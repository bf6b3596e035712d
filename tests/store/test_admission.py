"""AdmissionStore: what the checks on a new job read (quota used, jobs in flight, the guild's rules), in one
read, and the guild-rules cache."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from bot.domain.clock import FakeClock
from bot.domain.jobs import JobState
from bot.domain.records import GuildSettings
from bot.store import AdmissionStore, Database, JobStore, ModerationStore
from bot.store.admission import GUILD_CACHE_SECONDS

from .factories import ban_list, complete_job, make_images, make_spec, mark_running

GUILD = 2**62 + 1
USER = 2**63 - 1
MOD = 2**60
ANY_TIME = datetime(2000, 1, 1, tzinfo=UTC)  # jobs in flight and bans do not depend on `since`


async def _job_in(
    store: JobStore, state: JobState, *, guild_id: int | None = GUILD, user_id: int = USER
) -> int:
    job = await store.create_job(make_spec(user_id=user_id, guild_id=guild_id))
    if state is JobState.QUEUED:
        return job.id
    if state is JobState.CANCELLED:  # cancelled before it started
        await store.cancel_job(job.id)
        return job.id
    await mark_running(store, [job.id])
    if state is JobState.SUCCEEDED:
        await complete_job(store, job.id, make_images(), [1, 2, 3, 4])
    elif state is JobState.FAILED:
        await store.fail_job(job.id, "broken")
    return job.id


async def _count_jobs_since(
    admission: AdmissionStore, guild_id: int | None, user_id: int, since: datetime
) -> int:
    return (await admission.admission_facts(guild_id, user_id, since)).used_since


async def _active_jobs(admission: AdmissionStore, user_id: int) -> int:
    return (await admission.admission_facts(None, user_id, ANY_TIME)).active_jobs


async def test_count_jobs_since(store: JobStore, admission: AdmissionStore, clock: FakeClock) -> None:
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
    assert await _count_jobs_since(admission, GUILD, USER, since) == 4
    assert await _count_jobs_since(admission, GUILD, USER, yesterday) == 5
    assert await _count_jobs_since(admission, GUILD, USER, clock.now() + timedelta(seconds=1)) == 0
    assert await _count_jobs_since(admission, None, USER, yesterday) == 1
    assert await _count_jobs_since(admission, GUILD + 1, USER, yesterday) == 1


async def test_usage_reset(
    store: JobStore, admission: AdmissionStore, moderation: ModerationStore, clock: FakeClock
) -> None:
    """`/quota reset` makes earlier jobs stop counting; an earlier reset than `since` changes nothing."""
    start = clock.now()
    await _job_in(store, JobState.SUCCEEDED)
    await _job_in(store, JobState.SUCCEEDED)
    clock.advance(10)
    override = await moderation.reset_usage(GUILD, USER, MOD)
    assert (override.usage_reset_at, override.daily_quota, override.set_by) == (clock.now(), None, MOD)
    assert await _count_jobs_since(admission, GUILD, USER, start) == 0
    await _job_in(store, JobState.SUCCEEDED)  # created at the reset instant: counts
    clock.advance(10)
    await _job_in(store, JobState.QUEUED)
    assert await _count_jobs_since(admission, GUILD, USER, start) == 2
    assert await _count_jobs_since(admission, GUILD, USER, clock.now()) == 1
    assert await _count_jobs_since(admission, GUILD, USER - 1, start) == 0


async def test_active_jobs(store: JobStore, admission: AdmissionStore) -> None:
    """Queued and running, across guilds and DMs."""
    for state in JobState:
        await _job_in(store, state)
    await _job_in(store, JobState.QUEUED, guild_id=None)
    await _job_in(store, JobState.QUEUED, user_id=5)
    assert await _active_jobs(admission, USER) == 3
    assert await _active_jobs(admission, 12345) == 0


async def _quota_jobs_by_hand(
    store: JobStore, moderation: ModerationStore, guild_id: int | None, user_id: int, since: datetime
) -> int:
    """The quota rule applied to the member's jobs as listed: created since `since` (or the usage reset, if
    later), in this guild (or none), not failed, not cancelled before they started."""
    if guild_id is not None:
        override = await moderation.get_quota_override(guild_id, user_id)
        if override is not None and override.usage_reset_at is not None:
            since = max(since, override.usage_reset_at)
    return sum(
        1
        for job in await store.list_jobs(user_id=user_id)
        if job.spec.guild_id == guild_id
        and job.created_at >= since
        and job.state is not JobState.FAILED
        and not (job.state is JobState.CANCELLED and job.started_at is None)
    )


async def test_admission_facts_agree_with_the_single_reads(
    store: JobStore,
    admission: AdmissionStore,
    moderation: ModerationStore,
    database: Database,
    clock: FakeClock,
) -> None:
    """The one-read admission facts equal what the separate store methods say, member by member."""
    since = clock.now()
    for state in JobState:
        await _job_in(store, state)
        await _job_in(store, state, user_id=USER - 1)
    await _job_in(store, JobState.QUEUED, guild_id=None)
    await moderation.update_guild_settings(GUILD, daily_quota=7, max_steps=20, buttons_for_everyone=True)
    await moderation.set_quota_override(GUILD, USER, 3, set_by=MOD)
    clock.advance(5)
    await moderation.reset_usage(GUILD, USER - 1, set_by=MOD)
    await _job_in(store, JobState.SUCCEEDED, user_id=USER - 1)
    await moderation.ban(GUILD, USER - 1, "spam", by=MOD)
    await moderation.add_blocked_word(GUILD, "gore", added_by=MOD)
    await moderation.add_blocked_word(GUILD, "blood bath", added_by=MOD)

    for guild_id, user_id in [(GUILD, USER), (GUILD, USER - 1), (GUILD + 1, USER), (None, USER), (GUILD, 5)]:
        facts = await admission.admission_facts(guild_id, user_id, since)
        assert facts.used_since == await _quota_jobs_by_hand(store, moderation, guild_id, user_id, since)
        in_flight = await store.list_jobs(states=[JobState.QUEUED, JobState.RUNNING], user_id=user_id)
        assert facts.active_jobs == len(in_flight)
        if guild_id is None:
            assert (facts.guild, facts.daily_quota_override) == (None, None)
            assert (facts.banned, facts.blocked_words) == (False, [])
            continue
        assert facts.guild == await moderation.get_guild_settings(guild_id)
        override = await moderation.get_quota_override(guild_id, user_id)
        assert facts.daily_quota_override == (override.daily_quota if override else None)
        assert facts.banned == any(ban.user_id == user_id for ban in await ban_list(database, guild_id))
        assert facts.blocked_words == await moderation.blocked_words(guild_id)
    facts = await admission.admission_facts(GUILD, USER - 1, since)
    assert (facts.banned, facts.used_since, facts.blocked_words) == (True, 1, ["blood bath", "gore"])


async def test_guild_rules_cache_is_cleared_by_writes_and_expires(
    admission: AdmissionStore, moderation: ModerationStore, database: Database, clock: FakeClock
) -> None:
    """This store's own writes show at once; another process's writes within GUILD_CACHE_SECONDS."""
    other_process = ModerationStore(database, AdmissionStore(database))
    since = clock.now()
    assert (await admission.admission_facts(GUILD, USER, since)).blocked_words == []
    await moderation.add_blocked_word(GUILD, "gore", added_by=MOD)
    assert (await admission.admission_facts(GUILD, USER, since)).blocked_words == ["gore"]
    await other_process.update_guild_settings(GUILD, max_steps=9)
    assert (await admission.admission_facts(GUILD, USER, since)).guild == GuildSettings(GUILD)
    clock.advance(GUILD_CACHE_SECONDS)
    facts = await admission.admission_facts(GUILD, USER, since)
    assert facts.guild is not None
    assert facts.guild.max_steps == 9
