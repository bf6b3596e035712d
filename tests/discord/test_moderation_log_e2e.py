"""The moderation you can read, and the noise and secrets a bot should not keep, end to end: refused
reactions answered once per member and message (in public at most once a minute, then by DM), the
moderation log paged and filtered with /imagine-mod log, interaction tokens cleared once useless."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from bot.discord_app import delivery as delivery_module
from bot.store.models import DeliveryRow
from fake_discord import FakeMessage
from tests.discord.conftest import Harness, gated
from tests.discord.test_faults_e2e import answer_of

NOT_YOURS = "Only the member who made this image (or a moderator) can use its buttons."


def refusal_notes(harness: Harness, channel: int, user: int) -> list[FakeMessage]:
    """The bot's public notes in `channel` that mention `user` and say why a reaction did nothing."""
    return [
        m
        for m in harness.fake.messages(channel)
        if m.author.id == harness.fake.bot_user_id and f"<@{user}>" in m.content and NOT_YOURS in m.content
    ]


async def test_a_flood_of_refused_reactions_gets_one_public_note(harness: Harness) -> None:
    """Bob reacts twelve times on Alice's two grids (not his, so every reaction is refused): one public note
    for the first grid, one DM for the second within the minute, nothing more; nothing is queued."""
    async with harness.running():
        grids = [
            await harness.result_of(await harness.slash(harness.alice, "imagine", {"prompt": f"a fox {n}"}))
            for n in range(2)
        ]
        for grid in grids:
            for emoji in ("1️⃣", "2️⃣", "3️⃣", "4️⃣", "1️⃣", "2️⃣"):
                await harness.fake.unreact(grid.id, emoji, harness.bob)
                await harness.fake.react(grid.id, emoji, harness.bob)
                await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)
        public = refusal_notes(harness, harness.channel, harness.bob)
        assert len(public) == 1
        assert public[0].message_reference is not None
        assert int(public[0].message_reference["message_id"]) == grids[0].id
        dms = [m for m in harness.fake.dm_messages(harness.bob) if NOT_YOURS in m.content]
        assert len(dms) == 1
        assert harness.app is not None
        assert await harness.app.stores.jobs.list_jobs(user_id=harness.bob) == []
    assert not harness.fake.limit_violations


async def mod_command(harness: Harness, path: str, options: dict[str, object] | None = None) -> str:
    handle = await harness.fake.invoke_slash(
        harness.guild, harness.channel, harness.mod, "imagine-mod", options or {}, subcommand=path
    )
    return await answer_of(handle)


async def test_the_moderation_log_pages_and_filters(harness: Harness) -> None:
    """/imagine-mod log lists what moderators did, newest first, ten to a page; by member; by action."""
    async with harness.running():
        assert await mod_command(harness, "log") == "Nothing in the log."
        await mod_command(harness, "ban", {"member": harness.bob, "reason": "spam"})
        await mod_command(harness, "quota set", {"member": harness.alice, "jobs": 3})
        for n in range(10):
            await mod_command(harness, "blocked-words add", {"word": f"word{n}"})
        first = (await mod_command(harness, "log")).splitlines()
        assert first[0] == "**Moderation log**, page 1 of 2 (12 entries, newest first)"
        assert len(first) == 11
        assert "`blocked_words.add`" in first[1]
        assert "word: word9" in first[1]
        second = (await mod_command(harness, "log", {"page": 2})).splitlines()
        assert second[0] == "**Moderation log**, page 2 of 2 (12 entries, newest first)"
        assert ["`quota.set`" in second[1], "`ban`" in second[2]] == [True, True]
        assert f"<@{harness.alice}>" in second[1]
        assert "daily_quota: 3" in second[1]
        bobs = (await mod_command(harness, "log", {"member": harness.bob})).splitlines()
        assert len(bobs) == 2
        assert "`ban`" in bobs[1]
        assert "reason: spam" in bobs[1]
        quotas = (await mod_command(harness, "log", {"action": "quota.set"})).splitlines()
        assert len(quotas) == 2
        assert "`quota.set`" in quotas[1]
        assert await mod_command(harness, "log", {"page": 3}) == "There is no page 3; the log has 12 entries."
    assert not harness.fake.limit_violations


async def test_tokens_are_forgotten_once_useless(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    """A delivered result's interaction token is cleared at once; a waiting job's token is cleared by the
    bot's sweep once it has expired, and its result still arrives (as a channel message)."""
    monkeypatch.setattr(delivery_module, "SWEEP_SECONDS", 0.2)

    async def token_of(job_id: int) -> str | None:
        assert harness.app is not None
        async with harness.app.stores.database.reading() as session:
            row = await session.get(DeliveryRow, job_id)
            assert row is not None
            return row.interaction_token

    with gated(harness) as backend:
        async with harness.running():
            handle = await harness.slash(harness.alice, "imagine", {"prompt": "a slow fox"})
            await backend.until_held()
            assert harness.app is not None
            [job] = await harness.app.stores.jobs.list_jobs(user_id=harness.alice)
            assert await token_of(job.id) is not None
            past = harness.app.stores.database.clock.now() - timedelta(minutes=1)
            async with harness.app.stores.database.writing() as session:
                await session.execute(
                    update(DeliveryRow).where(DeliveryRow.job_id == job.id).values(token_expires_at=past)
                )
            for _ in range(50):
                if await token_of(job.id) is None:
                    break
                await asyncio.sleep(0.1)
            assert await token_of(job.id) is None
            backend.gate.set()
            posted = await harness.fake.wait_for_message(
                lambda m: m.route == "channel" and bool(m.attachments) and f"<@{harness.alice}>" in m.content,
                30,
            )
            assert posted.id != handle.original_message_id
            second = await harness.result_of(await harness.slash(harness.bob, "imagine", {"prompt": "a cat"}))
            await asyncio.sleep(0.2)
            async with harness.app.stores.database.reading() as session:
                tokens = (await session.scalars(select(DeliveryRow.interaction_token))).all()
            assert tokens == [None, None], second.id
