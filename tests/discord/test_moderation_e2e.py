"""Moderator commands end to end: real discord.py client, fake Discord, tiny SDXL pipeline."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from bot.domain.jobs import JobState
from bot.domain.members import Requester
from fake_discord import FakeMessage, InteractionHandle
from tests.discord.conftest import Harness, gated, refusal
from tests.store.factories import action_log

MODERATOR_GROUP = "imagine-mod"  # every moderator command is under it, apart from the server's own /ban
MODERATOR_COMMANDS = ("quota", "limits", "ban", "unban", "queue", "blocked-words", "safety", "log")
MEMBER_COMMANDS = ("imagine", "queue", "cancel", "usage")
MANAGE_SERVER = str(0x20)
REFUSED = "Only moderators (Manage Server) can do that."
CANCELLED = "🚫 Cancelled."
QUICK = 10.0  # seconds: the tiny pipeline renders a grid in about 0.2 s


class Scene:
    """Short ways for members and the moderator to act, and to read what the bot stored."""

    def __init__(self, harness: Harness) -> None:
        self.h = harness

    async def command(
        self,
        user: int,
        name: str,
        options: dict[str, Any] | None = None,
        *,
        sub: str | None = None,
        force: bool = False,
    ) -> str:
        """Run a command that answers at once, ephemerally, with one message; return its text."""
        path = (name if sub is None else f"{name} {sub}").replace("queue-clear", "queue clear")
        handle = await self.h.slash(
            user, MODERATOR_GROUP, options, subcommand=path, check_permissions=not force
        )
        response = await handle.wait_response()
        assert response.accepted, response
        assert (response.type, response.ephemeral) == (4, True), response
        original = handle.original
        assert original is not None
        assert original.ephemeral
        await asyncio.sleep(0.05)  # a second answer (e.g. an error reported twice) would be here by now
        assert handle.followups == [], [m.content for m in handle.followups]
        return original.content

    async def mod(self, name: str, options: dict[str, Any] | None = None, *, sub: str | None = None) -> str:
        return await self.command(self.h.mod, name, options, sub=sub)

    async def imagine(self, user: int, prompt: str, **options: Any) -> InteractionHandle:
        return await self.h.slash(user, "imagine", {"prompt": prompt, **options})

    async def made(self, user: int, prompt: str) -> FakeMessage:
        """/imagine that succeeds: the finished grid."""
        return await self.h.result_of(await self.imagine(user, prompt), QUICK)

    async def refused(self, user: int, prompt: str, **options: Any) -> str:
        """/imagine that is refused: the reason, shown to the member alone."""
        return await self.refusal(await self.imagine(user, prompt, **options))

    async def refusal(self, handle: InteractionHandle) -> str:
        """Why a request was refused: answered at once and to the member alone; nothing public is left."""
        return await refusal(handle)

    async def queued(self, handle: InteractionHandle) -> int:
        """The id of the job a deferred request made, once its status message names it."""
        await handle.wait_response()
        message = await handle.wait_original(lambda m: bool(m.embeds) and "footer" in m.embeds[0])
        return job_id_of(message)

    async def cancelled(self, handle: InteractionHandle) -> None:
        """The request's status message ends showing the job cancelled, with no images."""
        status = await self.h.finished_message(handle, QUICK)
        assert status.embeds[0]["description"] == CANCELLED
        assert not status.attachments

    async def states(self, *job_ids: int) -> list[JobState]:
        return [job.state for job in await self.app.stores.jobs.get_jobs(list(job_ids))]

    async def is_banned(self, user_id: int) -> bool:
        since = self.app.stores.database.clock.now()
        return bool((await self.app.stores.admission.admission_facts(self.h.guild, user_id, since)).banned)

    async def log(self) -> list[tuple[int, str, int | None, dict[str, Any]]]:
        """The guild's moderation log, oldest first: (moderator, action, target member, details)."""
        actions = await action_log(self.app.stores.database, self.h.guild)
        return [(a.moderator_id, a.action, a.target_user_id, a.details) for a in reversed(actions)]

    @property
    def app(self) -> Any:
        assert self.h.app is not None
        return self.h.app


def job_id_of(message: FakeMessage) -> int:
    return int(message.embeds[0]["footer"]["text"].rsplit("#", 1)[1])


async def test_moderator_commands_are_hidden_and_checked_again(harness: Harness) -> None:
    """Moderator commands need Manage Server to be seen; a member who calls one anyway is refused."""
    s, alice, bob = Scene(harness), harness.alice, harness.bob
    async with harness.running():
        synced = {c["name"]: c for c in harness.fake.commands(harness.guild)}
        assert set(synced) == {MODERATOR_GROUP, *MEMBER_COMMANDS}  # no top-level /ban beside the server's
        group = synced[MODERATOR_GROUP]
        assert group.get("default_member_permissions") == MANAGE_SERVER
        assert group.get("contexts") == [0]  # servers only
        assert {option["name"] for option in group["options"]} == set(MODERATOR_COMMANDS)
        for name in MEMBER_COMMANDS:
            assert synced[name].get("default_member_permissions") is None, name
        with pytest.raises(PermissionError):  # the Discord client does not even show it to alice
            await harness.slash(alice, MODERATOR_GROUP, {"member": bob}, subcommand="ban")

        assert await s.command(alice, "ban", {"member": bob, "reason": "spam"}, force=True) == REFUSED
        set_quota = {"member": alice, "jobs": 500}
        assert await s.command(alice, "quota", set_quota, sub="set", force=True) == REFUSED
        assert await s.command(alice, "quota", {"jobs": 500}, sub="default", force=True) == REFUSED
        assert await s.command(bob, "blocked-words", {"word": "cat"}, sub="add", force=True) == REFUSED
        assert await s.command(bob, "blocked-words", sub="list", force=True) == REFUSED
        assert await s.command(bob, "queue-clear", {"member": alice}, force=True) == REFUSED
        assert await s.command(bob, "limits", {"max_steps": 1}, force=True) == REFUSED
        assert await s.command(bob, "unban", {"member": bob}, force=True) == REFUSED

        store = s.app.stores.moderation
        assert not await s.is_banned(bob)
        assert await store.get_quota_override(harness.guild, alice) is None
        assert await store.blocked_words(harness.guild) == []
        assert (await store.get_guild_settings(harness.guild)).updated_at is None
        assert await s.log() == []
    assert not harness.fake.limit_violations


async def test_member_over_quota_until_the_moderator_raises_it(harness: Harness) -> None:
    """With a default quota of 1 alice's second /imagine is refused; her own quota of 3 lets her go on."""
    s, alice = Scene(harness), harness.alice
    her = f"<@{alice}>"
    async with harness.running():
        text = await s.mod("quota", {"jobs": 1}, sub="default")
        assert text == "Members can now make 1 jobs a day (unless set otherwise)."

        await s.made(alice, "a fox")
        reason = await s.refused(alice, "another fox")
        assert reason.startswith("You've used all 1 of today's jobs. Your quota resets in ")
        assert len(await s.app.stores.jobs.list_jobs(user_id=alice)) == 1

        show = {"member": alice}
        text = await s.mod("quota", show, sub="show")
        assert text == f"{her} has used 1 jobs today; quota: 1 a day (server default)."
        assert (
            await s.mod("quota", {"member": alice, "jobs": 3}, sub="set")
            == f"{her} can now make 3 jobs a day."
        )

        await s.made(alice, "a third fox")
        text = await s.mod("quota", show, sub="show")
        assert text == f"{her} has used 2 jobs today; quota: 3 a day (set for them)."

        assert await s.mod("quota", show, sub="reset") == f"{her}'s usage for today is back to zero."
        text = await s.mod("quota", show, sub="show")
        assert text == f"{her} has used 0 jobs today; quota: 3 a day (set for them)."
        usage = await s.app.service.usage(Requester(user_id=alice, guild_id=harness.guild))
        assert (usage.used_today, usage.remaining) == (0, 3)

        assert await s.log() == [
            (harness.mod, "quota.default", None, {"daily_quota": 1}),
            (harness.mod, "quota.set", alice, {"daily_quota": 3}),
            (harness.mod, "quota.reset", alice, {}),
        ]
    assert not harness.fake.limit_violations


async def test_blocked_words(harness: Harness) -> None:
    """A blocked word refuses the prompt (whole words, any case) and stores no job; unblocking allows it."""
    s, alice = Scene(harness), harness.alice
    async with harness.running():
        store = s.app.stores.jobs
        assert await s.mod("blocked-words", {"word": "Gore"}, sub="add") == "Blocked “Gore”."
        assert await s.mod("blocked-words", {"word": "gore"}, sub="add") == "“gore” was already blocked."
        assert await s.mod("blocked-words", sub="list") == "“gore”"

        reason = await s.refused(alice, "a GORE scene")
        assert reason == "Your prompt contains “gore”, which isn't allowed on this server."
        assert await s.refused(alice, "a cat", negative="gore") == reason
        assert await store.list_jobs() == []

        await s.made(alice, "a gorey scene")
        assert [job.spec.params.prompt for job in await store.list_jobs()] == ["a gorey scene"]

        assert await s.mod("blocked-words", {"word": "GORE"}, sub="remove") == "Unblocked “GORE”."
        assert await s.mod("blocked-words", {"word": "gore"}, sub="remove") == "“gore” was not blocked."
        assert await s.mod("blocked-words", sub="list") == "No words are blocked."
        await s.made(alice, "a gore scene")

        assert await s.log() == [
            (harness.mod, "blocked_words.add", None, {"word": "gore"}),
            (harness.mod, "blocked_words.remove", None, {"word": "gore"}),
        ]
    assert not harness.fake.limit_violations


async def test_ban_cancels_jobs_and_unban_restores(harness: Harness) -> None:
    """/ban cancels the member's running and queued jobs and refuses new ones; /unban lets them back."""
    s, alice, bob = Scene(harness), harness.alice, harness.bob
    with gated(harness) as backend:
        async with harness.running():
            running_handle = await s.imagine(bob, "a bob")
            running = await s.queued(running_handle)
            await backend.until_held()
            waiting_handle = await s.imagine(bob, "another bob")
            waiting = await s.queued(waiting_handle)
            alice_handle = await s.imagine(alice, "an alice")
            alices = await s.queued(alice_handle)
            assert await s.states(running, waiting, alices) == [JobState.RUNNING, *[JobState.QUEUED] * 2]

            text = await s.mod("ban", {"member": bob, "reason": "spam"})
            assert text == f"<@{bob}> can no longer use the image bot here; their jobs were cancelled."
            assert await s.states(running, waiting, alices) == [*[JobState.CANCELLED] * 2, JobState.QUEUED]
            await s.cancelled(running_handle)
            await s.cancelled(waiting_handle)

            reason = await s.refused(bob, "a sneaky bob")
            assert reason == "You can't use the image bot on this server. Ask a moderator if unsure."
            assert await s.mod("ban", {"member": harness.mod}) == "You can't ban yourself from the bot."

            backend.gate.set()
            await harness.result_of(alice_handle, QUICK)

            assert await s.mod("unban", {"member": bob}) == f"<@{bob}> can use the image bot again."
            assert await s.mod("unban", {"member": bob}) == f"<@{bob}> was not banned from the image bot."
            await s.made(bob, "a good bob")

            assert await s.log() == [
                (harness.mod, "ban", bob, {"reason": "spam", "cancelled_jobs": [running, waiting]}),
                (harness.mod, "unban", bob, {}),
            ]
    assert not harness.fake.limit_violations


async def test_queue_clear_cancels_one_members_queued_jobs(harness: Harness) -> None:
    """/queue-clear member:bob cancels bob's queued jobs, shows them cancelled, and leaves alice's alone."""
    s, alice, bob = Scene(harness), harness.alice, harness.bob
    with gated(harness) as backend:
        async with harness.running():
            first_handle = await s.imagine(alice, "alice first")
            first = await s.queued(first_handle)
            await backend.until_held()
            bob_handles = [await s.imagine(bob, f"bob {n}") for n in range(3)]
            bobs = sorted([await s.queued(handle) for handle in bob_handles])
            second_handle = await s.imagine(alice, "alice second")
            second = await s.queued(second_handle)
            assert await s.states(*bobs) == [JobState.QUEUED] * 3

            assert await s.mod("queue-clear", {"member": bob}) == f"Cancelled 3 of <@{bob}>'s queued jobs."
            assert await s.states(*bobs) == [JobState.CANCELLED] * 3
            assert await s.states(first, second) == [JobState.RUNNING, JobState.QUEUED]
            for handle in bob_handles:
                await s.cancelled(handle)

            backend.gate.set()
            await harness.result_of(first_handle, QUICK)
            await harness.result_of(second_handle, QUICK)
            assert await s.states(*bobs) == [JobState.CANCELLED] * 3

            assert await s.mod("queue-clear") == "Cancelled 0 of the server's queued jobs."
            assert await s.log() == [
                (harness.mod, "queue.clear", bob, {"cancelled_jobs": bobs}),
                (harness.mod, "queue.clear", None, {"cancelled_jobs": []}),
            ]
    assert not harness.fake.limit_violations


async def test_limits_show_change_and_buttons_for_everyone(harness: Harness) -> None:
    """/limits shows the defaults, max_steps caps --steps, and everyone_buttons lets bob vary alice's grid."""
    s, alice, bob = Scene(harness), harness.alice, harness.bob
    async with harness.running():
        assert (await s.mod("limits")).splitlines() == [
            "**Limits on this server**",
            "Rate: 600 (default) per minute, burst 50 (default)",
            "Jobs in flight per member: 4 (default)",
            "Daily quota: 20 (default)",
            "Max steps: 8 (default)",
            "Everyone may press buttons: no",
        ]
        lines = (await s.mod("limits", {"max_steps": 4})).splitlines()
        assert lines[0] == "**Limits on this server** (updated)"
        assert "Max steps: 4" in lines

        assert await s.refused(alice, "x --steps 6") == "Steps must be between 1 and 4; got 6."
        grid = await s.made(alice, "x --steps 4")
        grid_job = job_id_of(grid)

        pressed = await harness.fake.click(grid.id, f"ib:v:{grid_job}:0", bob)
        reason = await s.refusal(pressed)
        assert reason == "Only the member who made this image (or a moderator) can use its buttons."

        lines = (await s.mod("limits", {"everyone_buttons": True})).splitlines()
        assert "Everyone may press buttons: yes" in lines
        pressed = await harness.fake.click(grid.id, f"ib:v:{grid_job}:0", bob)
        variation = await s.app.stores.jobs.get_job(job_id_of(await harness.result_of(pressed, QUICK)))
        assert (variation.user_id, variation.spec.parent_job_id) == (bob, grid_job)
        assert variation.spec.params.steps == 4
        usage = await s.app.service.usage(Requester(user_id=bob, guild_id=harness.guild))
        assert usage.used_today == 1  # the variation counts against bob, who pressed

        assert await s.log() == [
            (harness.mod, "limits.update", None, {"max_steps": 4}),
            (harness.mod, "limits.update", None, {"buttons_for_everyone": True}),
        ]
    assert not harness.fake.limit_violations
