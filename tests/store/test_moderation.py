"""ModerationStore: guild settings, members' own quotas, bans, blocked words and the moderation log."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from bot.domain.clock import FakeClock
from bot.domain.records import GuildSettings
from bot.store import AdmissionStore, Database, ModerationStore

from .factories import action_log, ban_list

GUILD = 2**62 + 1
USER = 2**63 - 1
MOD = 2**60
ANY_TIME = datetime(2000, 1, 1, tzinfo=UTC)


async def _is_banned(admission: AdmissionStore, guild_id: int, user_id: int) -> bool:
    return (await admission.admission_facts(guild_id, user_id, ANY_TIME)).banned


async def test_guild_settings(moderation: ModerationStore, clock: FakeClock) -> None:
    """Defaults without a row; partial updates keep the rest; None resets; unknown names refused."""
    assert await moderation.get_guild_settings(GUILD) == GuildSettings(guild_id=GUILD)
    first = await moderation.update_guild_settings(GUILD, daily_quota=20, max_steps=40)
    assert (first.daily_quota, first.max_steps, first.rate_per_minute, first.buttons_for_everyone) == (
        20,
        40,
        None,
        False,
    )
    assert first.updated_at == clock.now()
    clock.advance(5)
    second = await moderation.update_guild_settings(
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
    assert await moderation.get_guild_settings(GUILD) == second
    assert await moderation.update_guild_settings(GUILD) == second
    assert await moderation.get_guild_settings(GUILD + 1) == GuildSettings(guild_id=GUILD + 1)
    with pytest.raises(TypeError, match="colour"):
        await moderation.update_guild_settings(GUILD, colour=3)  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="max_concurrent"):
        await moderation.update_guild_settings(GUILD, max_concurrent=-1)


async def test_quota_override(moderation: ModerationStore, clock: FakeClock) -> None:
    """Setting a quota keeps a usage reset, and a reset keeps the quota."""
    assert await moderation.get_quota_override(GUILD, USER) is None
    await moderation.reset_usage(GUILD, USER, MOD)
    reset_at = clock.now()
    clock.advance(60)
    override = await moderation.set_quota_override(GUILD, USER, 100, MOD + 1)
    assert (override.daily_quota, override.usage_reset_at, override.set_by, override.updated_at) == (
        100,
        reset_at,
        MOD + 1,
        clock.now(),
    )
    clock.advance(60)
    again = await moderation.reset_usage(GUILD, USER, MOD)
    assert (again.daily_quota, again.usage_reset_at) == (100, clock.now())
    assert await moderation.get_quota_override(GUILD, USER) == again
    cleared = await moderation.set_quota_override(GUILD, USER, None, MOD)
    assert cleared.daily_quota is None
    assert await moderation.get_quota_override(GUILD + 1, USER) is None


async def test_bans(
    moderation: ModerationStore, admission: AdmissionStore, database: Database, clock: FakeClock
) -> None:
    assert not await _is_banned(admission, GUILD, USER)
    ban = await moderation.ban(GUILD, USER, "spam", MOD)
    assert (ban.reason, ban.banned_by, ban.created_at) == ("spam", MOD, clock.now())
    assert await _is_banned(admission, GUILD, USER)
    assert not await _is_banned(admission, GUILD + 1, USER)
    assert (await moderation.ban(GUILD, USER, "more spam", MOD + 1)).reason == "more spam"
    await moderation.ban(GUILD, 7, "x", MOD)
    assert [b.user_id for b in await ban_list(database, GUILD)] == [7, USER]
    assert USER in {b.user_id for b in await ban_list(database, GUILD)}
    assert await moderation.unban(GUILD, USER)
    assert not await moderation.unban(GUILD, USER)
    assert not await _is_banned(admission, GUILD, USER)
    assert USER not in {b.user_id for b in await ban_list(database, GUILD)}


async def test_blocked_words(moderation: ModerationStore) -> None:
    """Case-folded and space-collapsed, so `Gore` and `gore` are one entry; per guild."""
    assert await moderation.add_blocked_word(GUILD, "Gore", MOD)
    assert not await moderation.add_blocked_word(GUILD, "  gore ", MOD)
    assert await moderation.add_blocked_word(GUILD, "blood   bath", MOD)
    assert await moderation.add_blocked_word(GUILD + 1, "other", MOD)
    assert await moderation.blocked_words(GUILD) == ["blood bath", "gore"]
    assert await moderation.remove_blocked_word(GUILD, "GORE")
    assert not await moderation.remove_blocked_word(GUILD, "gore")
    assert await moderation.blocked_words(GUILD) == ["blood bath"]
    with pytest.raises(ValueError, match="empty"):
        await moderation.add_blocked_word(GUILD, "   ", MOD)
    with pytest.raises(ValueError, match="at most"):
        await moderation.add_blocked_word(GUILD, "x" * 101, MOD)


async def test_moderator_actions(moderation: ModerationStore, database: Database, clock: FakeClock) -> None:
    """Newest first, limited, per guild; details come back as a dict."""
    await moderation.record_action(GUILD, MOD, "ban", USER, {"reason": "spam"})
    clock.advance(1)
    await moderation.record_action(
        GUILD, MOD, "quota.set", USER, {"daily_quota": 5, "until": datetime(2026, 2, 1, tzinfo=UTC)}
    )
    clock.advance(1)
    await moderation.record_action(GUILD, MOD + 1, "words.add", None, {})
    await moderation.record_action(GUILD + 1, MOD, "ban", USER, {})
    actions = (await action_log(database, GUILD))[:2]
    assert [a.action for a in actions] == ["words.add", "quota.set"]
    assert actions[0].target_user_id is None
    assert actions[0].created_at == clock.now()
    assert actions[1].details == {"daily_quota": 5, "until": "2026-02-01 00:00:00+00:00"}
    assert len(await action_log(database, GUILD)) == 3
