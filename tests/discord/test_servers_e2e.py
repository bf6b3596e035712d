"""Every action stays inside its server, and the bot works in DMs only where the operator allows it.

A second server (with its own moderator and a member) and direct messages, end to end through the fake
Discord: nothing there can see, cancel, vary or reroll a job of the first server, nothing of theirs is
queued, and a member banned on a server gets nothing by DM.
"""

from __future__ import annotations

import pytest

from bot.services.imagine import DM_REFUSAL
from fake_discord import FakeMessage, InteractionHandle
from tests.discord.conftest import MANAGE_GUILD, MEMBER_PERMISSIONS, Harness, gated
from tests.discord.test_faults_e2e import answer_of, forge

QUICK = 10.0


class Elsewhere:
    """A second server: its moderator, a member, a channel."""

    def __init__(self, harness: Harness) -> None:
        fake = harness.fake
        self.h = harness
        self.guild = fake.add_guild("another club")
        self.channel = fake.add_channel(self.guild, "art")
        self.mod = fake.add_member(self.guild, name="mod-b", permissions=MEMBER_PERMISSIONS | MANAGE_GUILD)
        self.carol = fake.add_member(self.guild, name="carol", permissions=MEMBER_PERMISSIONS)

    async def slash(
        self, user: int, name: str, options: dict[str, object] | None = None, **kw: object
    ) -> str:
        handle = await self.h.fake.invoke_slash(self.guild, self.channel, user, name, options or {}, **kw)
        return await answer_of(handle)

    async def press(self, custom_id: str, user: int) -> str:
        """A press of any custom_id on a message in this server (a modified client can send one)."""
        here = await self.h.fake.post_message(self.channel, user, "look")
        return await answer_of(await forge(self.h, here, custom_id, user))


def job_of(message: FakeMessage) -> int:
    return int(message.embeds[0]["footer"]["text"].rsplit("#", 1)[1])


async def dm(harness: Harness, user: int, name: str, options: dict[str, object] | None = None) -> str:
    """A command typed in a DM with the bot; `check_permissions=False` sends it even where Discord's client
    would not offer it (an old client, a forged request)."""
    handle: InteractionHandle = await harness.fake.invoke_slash(
        None, 0, user, name, options or {}, check_permissions=False
    )
    return await answer_of(handle)


async def test_another_servers_moderator_cannot_touch_a_job(harness: Harness) -> None:
    """Job numbers are sequential and shown, so a moderator of server B tries A's jobs by number: cancel,
    vary, reroll and upscale are all answered as for a job that does not exist, and B's queue clear leaves
    A's queue alone."""
    b = Elsewhere(harness)
    with gated(harness) as backend:
        async with harness.running(everywhere=True):
            running = await harness.slash(harness.alice, "imagine", {"prompt": "a fox"})
            await backend.until_held()
            waiting = await harness.slash(harness.alice, "imagine", {"prompt": "a second fox"})
            await waiting.wait_response()
            assert harness.app is not None
            jobs = [job.id for job in await harness.app.stores.jobs.list_jobs(user_id=harness.alice)]
            assert len(jobs) == 2
            for job in jobs:
                missing = f"I can't find job #{job}."
                assert await b.slash(b.mod, "cancel", {"job": job}) == missing
                for custom_id in (
                    f"ib:v:{job}:0",
                    f"ib:r:{job}",
                    f"ib:x:{job}:1",
                    f"ib:u:{job}:2",
                    f"ib:c:{job}",
                ):
                    assert missing in await b.press(custom_id, b.mod), custom_id
            text = await b.slash(b.mod, "imagine-mod", {}, subcommand="queue clear")
            assert text == "Cancelled 0 of the server's queued jobs."
            backend.gate.set()
            await harness.result_of(running)
            await harness.result_of(waiting)  # not cancelled: it arrives
            assert await harness.app.stores.jobs.list_jobs(user_id=b.mod) == []
    assert not harness.fake.limit_violations


async def test_open_buttons_elsewhere_do_not_open_this_servers_jobs(harness: Harness) -> None:
    """Server B lets everyone press anyone's buttons; a member of B still cannot reroll A's job, and
    /queue in B does not list A's jobs, even for a member of both."""
    b = Elsewhere(harness)
    harness.fake.add_member(b.guild, harness.alice, name="alice", permissions=MEMBER_PERMISSIONS)
    with gated(harness) as backend:
        async with harness.running(everywhere=True):
            text = await b.slash(b.mod, "imagine-mod", {"everyone_buttons": True}, subcommand="limits")
            assert "Everyone may press buttons: yes" in text
            held = await harness.slash(harness.alice, "imagine", {"prompt": "a cat"})
            await backend.until_held()
            assert await b.slash(harness.alice, "queue") == "You have no jobs waiting or running."
            backend.gate.set()
            job = job_of(await harness.result_of(held))
            assert f"I can't find job #{job}." in await b.press(f"ib:r:{job}", b.carol)
            assert harness.app is not None
            assert await harness.app.stores.jobs.list_jobs(user_id=b.carol) == []


async def test_commands_are_offered_in_servers_only(harness: Harness) -> None:
    """Member commands are registered for servers only; Discord's client does not offer them in a DM."""
    async with harness.running(everywhere=True):
        synced = {command["name"]: command for command in harness.fake.commands(None)}
        for name in ("imagine", "queue", "cancel", "usage", "imagine-mod"):
            assert synced[name]["contexts"] == [0], name
        with pytest.raises(PermissionError):
            await harness.fake.invoke_slash(None, 0, harness.alice, "imagine", {"prompt": "a cat"})


async def test_a_member_banned_on_the_server_gets_nothing_by_dm(harness: Harness) -> None:
    """Banned on the server, alice tries a DM (with a client that sends the command anyway): every
    command is refused with one short line and nothing is queued."""
    async with harness.running(everywhere=True):
        grid = await harness.result_of(await harness.slash(harness.alice, "imagine", {"prompt": "a fox"}))
        ban = await harness.fake.invoke_slash(
            harness.guild,
            harness.channel,
            harness.mod,
            "imagine-mod",
            {"member": harness.alice},
            subcommand="ban",
        )
        await answer_of(ban)
        assert await dm(harness, harness.alice, "imagine", {"prompt": "anything at all"}) == DM_REFUSAL
        assert await dm(harness, harness.alice, "queue") == DM_REFUSAL
        assert await dm(harness, harness.alice, "usage") == DM_REFUSAL
        assert await dm(harness, harness.alice, "cancel", {"job": job_of(grid)}) == DM_REFUSAL
        assert harness.app is not None
        assert [job.id for job in await harness.app.stores.jobs.list_jobs(user_id=harness.alice)] == [
            job_of(grid)
        ]


async def test_dms_when_the_operator_allows_them(harness: Harness) -> None:
    """ALLOW_DMS: /imagine is offered in DMs too and works there, under the DM limits and the operator's
    blocked words; a server's job is still not reachable from a DM."""
    harness.settings = harness.settings.model_copy(
        update={"allow_dms": True, "dm_daily_quota": 1, "blocked_words": "gore, forbidden thing"}
    )
    async with harness.running(everywhere=True):
        synced = {command["name"]: command for command in harness.fake.commands(None)}
        assert synced["imagine"]["contexts"] == [0, 1]
        assert synced["imagine-mod"]["contexts"] == [0]
        server_grid = await harness.result_of(
            await harness.slash(harness.bob, "imagine", {"prompt": "a cat"})
        )
        handle = await harness.fake.invoke_slash(
            None, 0, harness.alice, "imagine", {"prompt": "a quiet lake"}
        )
        grid = await harness.result_of(handle, QUICK)
        assert grid.guild_id is None
        refused = await dm(harness, harness.alice, "imagine", {"prompt": "another lake"})
        assert "quota" in refused.lower(), refused
        blocked = await dm(harness, harness.bob, "imagine", {"prompt": "a GORE scene"})
        assert blocked == "Your prompt contains “gore”, which this bot doesn't allow."
        assert await dm(harness, harness.bob, "cancel", {"job": job_of(server_grid)}) == (
            f"I can't find job #{job_of(server_grid)}."
        )
    assert not harness.fake.limit_violations
