"""Discord misbehaving while results are delivered (5xx, 429, dropped gateway) and forged button presses.

The real bot against the fake Discord with the tiny pipeline. Each result must arrive exactly once.
"""

from __future__ import annotations

import asyncio
from typing import Any

import discord.webhook.async_ as webhook_module
import pytest

from fake_discord import FakeMessage, InteractionHandle
from tests.discord.conftest import FaultsAfterRender, Harness, custom_ids, gated

WEBHOOK_EDIT = "PATCH /webhooks/{application_id}/{token}/messages/{message_id}"
CHANNEL_POST = "POST /channels/{channel_id}/messages"


def job_of(message: FakeMessage) -> int:
    return int(message.embeds[0]["footer"]["text"].rsplit("#", 1)[1])


def results(harness: Harness) -> list[FakeMessage]:
    """Every message with an image, in the channel and in every member's DMs."""
    dms = [m for user in (harness.alice, harness.bob, harness.mod) for m in harness.fake.dm_messages(user)]
    return [m for m in [*harness.fake.messages(harness.channel), *dms] if m.attachments]


class _QuickSleep:
    """discord.py's webhook adapter waits 1, 3, 5, 7 s between 5xx retries; the test waits 10 ms instead."""

    def __getattr__(self, name: str) -> Any:
        return getattr(asyncio, name)

    @staticmethod
    async def sleep(delay: float, result: Any = None) -> Any:
        return await asyncio.sleep(min(delay, 0.01), result)


async def test_server_errors_on_the_result_edit_still_deliver_once(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """500 ×3 then 502 ×3 on the webhook edit that delivers the grid: discord.py gives up after 5 tries,
    the bot retries the delivery itself, and the grid arrives once, in the original response."""
    monkeypatch.setattr(webhook_module, "asyncio", _QuickSleep())

    def inject() -> None:
        harness.fake.inject_error(WEBHOOK_EDIT, status=500, times=3)
        harness.fake.inject_error(WEBHOOK_EDIT, status=502, times=3)

    harness.backend = FaultsAfterRender(harness.backend, asyncio.get_running_loop())
    harness.backend.arm(inject)
    async with harness.running():
        handle = await harness.slash(harness.alice, "imagine", {"prompt": "a fox in a storm"})
        message = await harness.result_of(handle, timeout=30)
        await asyncio.sleep(0.5)
        assert [m.id for m in results(harness)] == [message.id]
        assert message.id == handle.original_message_id
        statuses = [e.status for e in harness.fake.errors]
        assert statuses.count(500) == 3
        assert statuses.count(502) == 3
        assert harness.fake.faults.pending() == 0
        # The faults hit the edit that carries the grid (status edits carry no file): failed, then once 200.
        grid_edits = [r.status for r in harness.fake.requests_to(WEBHOOK_EDIT) if r.files]
        assert len(grid_edits) >= 2
        assert all(status in (500, 502) for status in grid_edits[:-1])
        assert grid_edits[-1] == 200
        assert custom_ids(message)[0] == f"ib:u:{job_of(message)}:0"
    assert not harness.fake.limit_violations


async def test_rate_limited_channel_posts_during_a_reaction_variation_deliver_once(harness: Harness) -> None:
    """429s on channel posts while a 2️⃣ reaction makes variations: waited out; delivered once."""
    async with harness.running():
        grid = await harness.result_of(await harness.slash(harness.alice, "imagine", {"prompt": "a fox"}))
        harness.fake.inject_429(CHANNEL_POST, times=3)
        await harness.fake.react(grid.id, "2️⃣", harness.alice)
        variation = await harness.fake.wait_for_message(
            lambda m: m.route == "channel" and bool(m.attachments) and m.id != grid.id, 30
        )
        assert harness.app is not None
        job = await harness.app.stores.jobs.get_job(job_of(variation))
        assert job.spec.parent_job_id == job_of(grid)
        await harness.delivered(job.id)
        await asyncio.sleep(0.5)
        assert sorted(m.id for m in results(harness)) == sorted([grid.id, variation.id])
        assert sum(e.status == 429 for e in harness.fake.errors) == 3
        assert harness.fake.faults.pending() == 0
        assert len(await harness.app.stores.jobs.list_jobs()) == 2
    assert not harness.fake.limit_violations


async def test_gateway_drop_between_imagine_and_result(harness: Harness) -> None:
    """The websocket drops while the job waits for the GPU: the bot reconnects, the grid arrives once,
    and a button pressed after the reconnect works."""
    with gated(harness) as backend:
        async with harness.running():
            handle = await harness.slash(harness.alice, "imagine", {"prompt": "a fox at night"})
            await handle.wait_response()
            await backend.until_held()
            await harness.fake.drop_gateway()
            backend.gate.set()
            grid = await harness.result_of(handle)
            await asyncio.sleep(0.3)
            assert [m.id for m in results(harness)] == [grid.id]
            variation = await harness.result_of(
                await harness.fake.click(grid.id, f"ib:v:{job_of(grid)}:1", harness.alice)
            )
            assert variation.embeds[0]["footer"]["text"].startswith("Variations")
            await asyncio.sleep(0.3)
            assert sorted(m.id for m in results(harness)) == sorted([grid.id, variation.id])
    assert not harness.fake.limit_violations


async def forge(harness: Harness, message: FakeMessage, custom_id: str, user: int) -> InteractionHandle:
    """A press of a button carrying any custom_id, as a modified client could send. discord.py only
    dispatches ids the message shows, so the fake's copy of Alice's message is made to show it."""
    live = harness.fake.world.messages[message.id]
    shown = live.components
    live.components = [
        {"type": 1, "components": [{"type": 2, "style": 2, "label": "X", "custom_id": custom_id}]}
    ]
    try:
        return await harness.fake.click(message.id, custom_id, user)
    finally:
        live.components = shown


async def answer_of(handle: InteractionHandle) -> str:
    await handle.wait_response()
    for _ in range(100):
        if handle.ephemeral_messages:
            break
        await asyncio.sleep(0.02)
    [reply] = handle.ephemeral_messages
    return reply.content


async def test_forged_presses_on_another_members_job_are_refused(harness: Harness) -> None:
    """Alice forges U/V/Upscale/🔄/Cancel ids pointing at Bob's job (and at jobs that do not exist) on her
    own grid: each is refused privately with a clear message, and no job is made or cancelled."""
    async with harness.running():
        mine = await harness.result_of(await harness.slash(harness.alice, "imagine", {"prompt": "a cat"}))
        bobs = await harness.result_of(await harness.slash(harness.bob, "imagine", {"prompt": "a dog"}))
        bob_job = job_of(bobs)
        assert harness.app is not None
        before = await harness.app.stores.jobs.list_jobs()
        for custom_id in (
            f"ib:u:{bob_job}:0",
            f"ib:v:{bob_job}:0",
            f"ib:x:{bob_job}:3",
            f"ib:r:{bob_job}",
            f"ib:c:{bob_job}",
        ):
            reply = await answer_of(await forge(harness, mine, custom_id, harness.alice))
            expected = (
                "You can only cancel your own jobs."
                if custom_id.startswith("ib:c:")
                else ("Only the member who made this image (or a moderator) can use its buttons.")
            )
            assert reply == expected, (custom_id, reply)
        for missing in (bob_job + 1000, 0, 2**63 - 1):
            for custom_id in (f"ib:v:{missing}:0", f"ib:r:{missing}", f"ib:c:{missing}", f"ib:u:{missing}:2"):
                reply = await answer_of(await forge(harness, mine, custom_id, harness.alice))
                assert f"I can't find job #{missing}" in reply, (custom_id, reply)
        after = await harness.app.stores.jobs.list_jobs()
        assert [(j.id, j.state) for j in after] == [(j.id, j.state) for j in before]
        assert len(results(harness)) == 2
    assert not harness.fake.limit_violations


async def test_forged_press_with_a_job_id_beyond_the_database_integer(harness: Harness) -> None:
    """The templates accept 19-digit job ids, up to 9999999999999999999 > 2**63-1: such a press must be
    answered as an unknown job, not as an internal error."""
    async with harness.running():
        mine = await harness.result_of(await harness.slash(harness.alice, "imagine", {"prompt": "a cat"}))
        huge = 10**19 - 1
        for custom_id in (f"ib:v:{huge}:0", f"ib:r:{huge}", f"ib:c:{huge}", f"ib:u:{huge}:1"):
            reply = await answer_of(await forge(harness, mine, custom_id, harness.alice))
            assert f"I can't find job #{huge}" in reply, (custom_id, reply)
    assert not harness.fake.limit_violations


async def test_results_waiting_when_the_bot_stopped_are_posted_once_after_restart(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bot stops after a job is stored but before its result is posted: the next start posts it, once."""
    from bot.discord_app.delivery import DeliveryManager

    async def lost(self: DeliveryManager, job_id: int) -> None:
        return None  # the process "died" before delivering

    with monkeypatch.context() as patch:
        patch.setattr(DeliveryManager, "deliver", lost)
        async with harness.running():
            handle = await harness.slash(harness.alice, "imagine", {"prompt": "a patient fox"})
            await handle.wait_response()
            assert harness.app is not None
            [job] = await harness.app.stores.jobs.list_jobs()
            await asyncio.wait_for(harness.app.scheduler.wait_finished(job.id), 30)
            assert handle.original is not None
            assert handle.original.attachments == []
    async with harness.running():
        message = await harness.result_of(handle)
        await asyncio.sleep(0.5)
        posted = [m for m in harness.fake.messages(harness.channel) if m.attachments]
        posted += [m for m in harness.fake.dm_messages(harness.alice) if m.attachments]
        assert [m.id for m in posted] == [message.id]
    assert not harness.fake.limit_violations


async def test_rate_limits_on_the_other_routes_the_bot_uses(harness: Harness) -> None:
    """429s on command sync, on the first answer to /imagine and on opening a DM are waited out: the grid
    arrives in the DM once, and every route was retried rather than given up."""
    harness.fake.inject_429("PUT /applications/{application_id}/guilds/{guild_id}/commands", times=1)
    harness.fake.inject_429("POST /interactions/{interaction_id}/{token}/callback", times=1)
    harness.fake.inject_429("POST /users/@me/channels", times=1)
    with gated(harness) as backend:
        await _rate_limited_imagine(harness, backend)
    assert sum(e.status == 429 for e in harness.fake.errors) == 3
    assert not harness.fake.limit_violations


async def _rate_limited_imagine(harness: Harness, backend: Any) -> None:
    async with harness.running():
        handle = await harness.slash(harness.alice, "imagine", {"prompt": "a fox behind rate limits"})
        await harness.fake.wait_for_message(
            lambda m: m.id == handle.original_message_id and bool(m.embeds), 10
        )
        assert handle.acknowledged
        await backend.until_held()
        harness.fake.expire_tokens()
        harness.fake.forbid_channel(harness.channel)
        backend.gate.set()
        dm = await harness.fake.wait_for_message(
            lambda m: bool(m.attachments) and m in harness.fake.dm_messages(harness.alice), 30
        )
        await asyncio.sleep(0.5)
        assert [m.id for m in results(harness)] == [dm.id]
