"""A moderator's free text (a ban's reason, a blocked word) is checked like a prompt: characters no
database stores everywhere (NUL on PostgreSQL) are refused with a clear message and nothing is written."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.domain.errors import InvalidRequest
from bot.domain.limits import UserLimits
from bot.domain.members import Requester
from tests.fakes import service_world
from tests.store.factories import action_log

GUILD = 500
MOD = Requester(user_id=3, guild_id=GUILD, channel_id=9, is_moderator=True)
LIMITS = UserLimits(rate_per_minute=600, burst=50, max_concurrent=10, daily_quota=None)


async def test_control_characters_in_moderator_text_are_refused(tmp_path: Path) -> None:
    async with service_world(tmp_path, LIMITS) as world:
        with pytest.raises(InvalidRequest, match=r"The reason contains .*U\+0000"):
            await world.moderation.ban(MOD, 7, "spam\x00")
        with pytest.raises(InvalidRequest, match=r"The word contains .*U\+DCFF"):
            await world.moderation.add_blocked_word(MOD, "gore\udcff")
        facts = await world.stores.admission.admission_facts(GUILD, 7, world.clock.now())
        assert not facts.banned
        assert await world.moderation.blocked_words(MOD) == []
        assert await action_log(world.stores.database, GUILD) == []
