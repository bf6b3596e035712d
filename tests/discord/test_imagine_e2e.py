"""/imagine and its buttons end to end: real discord.py client, fake Discord, tiny SDXL pipeline."""

from __future__ import annotations

import asyncio
import io
import re
import threading
from typing import Any

import pytest
from PIL import Image

from bot.domain.render import RenderBatch, StepCallback
from bot.store import database
from fake_discord import FakeMessage
from tests.discord.conftest import GatedBackend, Harness, WrappedBackend, custom_ids
from tests.store.test_busy import db_path, write_locked


async def test_imagine_posts_a_grid_with_buttons(harness: Harness) -> None:
    """/imagine answers at once with its queue status, which then becomes the grid with U/V/🔄 buttons."""
    async with harness.running() as bot:
        delivered: list[int] = []
        bot.delivery.on_delivered = delivered.append
        handle = await harness.slash(harness.alice, "imagine", {"prompt": "a lighthouse --ar 16:9 --seed 42"})
        response = await handle.wait_response()
        assert response.type == 4
        assert response.accepted
        message = await harness.result_of(handle)
        job_id = int(message.embeds[0]["footer"]["text"].rsplit("#", 1)[1])
        assert custom_ids(message) == [
            *(f"ib:u:{job_id}:{i}" for i in range(4)),
            f"ib:r:{job_id}",
            *(f"ib:v:{job_id}:{i}" for i in range(4)),
            f"ib:d:{job_id}",
        ]
        fields = {f["name"]: f["value"] for f in message.embeds[0]["fields"]}
        assert fields["Seed"] == "42"
        assert fields["Size"].startswith("80×48")
        [attachment] = message.attachments
        assert attachment.data.startswith(b"\x89PNG")
        assert message.embeds[0]["image"]["url"].endswith(f"/{attachment.filename}")
        assert len(message.history) >= 2  # queued status first, then the result
        assert delivered == [job_id]  # the delivery hook (metrics) hears of it once
    assert not harness.fake.limit_violations


class HeldAtFirstStep(WrappedBackend):
    """The tiny pipeline, holding each batch after its first step until the gate opens."""

    def __init__(self, inner: Any) -> None:
        super().__init__(inner)
        self.gate = threading.Event()

    def render(self, batch: RenderBatch, on_step: StepCallback) -> Any:
        def held(step: int, total: int) -> bool:
            going_on = on_step(step, total)
            if step == 1:
                self.gate.wait(timeout=30)
            return going_on

        return super().render(batch, held)


def status_of(message: FakeMessage) -> str:
    return str(message.embeds[0].get("description") or "") if message.embeds else ""


async def test_the_status_shows_queue_position_then_live_progress(harness: Harness) -> None:
    """While Alice's job renders, her message shows its progress and Bob's (another size, so the next
    batch) his place in line; each message then becomes its grid."""
    backend = HeldAtFirstStep(harness.backend)
    harness.backend = backend
    try:
        async with harness.running():
            alice = await harness.slash(harness.alice, "imagine", {"prompt": "a lighthouse --steps 4"})
            await alice.wait_response()
            rendering = await harness.fake.wait_for_message(
                lambda m: m.id == alice.original_message_id and "🎨 Generating" in status_of(m), 30
            )
            assert "25% (step 1/4)" in status_of(rendering)
            bob = await harness.slash(harness.bob, "imagine", {"prompt": "a fox --ar 16:9"})
            await bob.wait_response()
            waiting = await harness.fake.wait_for_message(
                lambda m: m.id == bob.original_message_id and "Queued: position" in status_of(m), 30
            )
            assert status_of(waiting).startswith("⏳ Queued: position 1 (next up), ready in ")
            backend.gate.set()
            alice_grid = await harness.result_of(alice)
            bob_grid = await harness.result_of(bob)
            assert any("🎨 Generating" in str(v.embeds) for v in alice_grid.history)
            # The grids replaced those statuses in the same messages.
            assert any("Queued: position" in str(v.embeds) for v in bob_grid.history)
    finally:
        backend.gate.set()
    assert not harness.fake.limit_violations


def job_of(message: FakeMessage) -> int:
    return int(message.embeds[0]["footer"]["text"].rsplit("#", 1)[1])


async def test_u2_then_upscale(harness: Harness) -> None:
    """U2 shows image 2 alone with its own buttons; Upscale 2× then delivers a twice-as-large image."""
    async with harness.running():
        grid = await harness.result_of(await harness.slash(harness.alice, "imagine", {"prompt": "a fox"}))
        job_id = job_of(grid)
        single = await harness.result_of(await harness.fake.click(grid.id, f"ib:u:{job_id}:1", harness.alice))
        assert custom_ids(single) == [
            f"ib:x:{job_id}:1",
            f"ib:v:{job_id}:1",
            f"ib:r:{job_id}",
            f"ib:d:{job_id}",
        ]
        assert single.embeds[0]["footer"]["text"] == f"Image 2 of job #{job_id}"
        with Image.open(io.BytesIO(single.attachments[0].data)) as picture:
            assert picture.size == (64, 64)
        upscale = await harness.fake.click(single.id, f"ib:x:{job_id}:1", harness.alice)
        done = await harness.finished_message(upscale)
        with Image.open(io.BytesIO(done.attachments[0].data)) as picture:
            assert picture.size == (128, 128)
        assert "Upscale" in done.embeds[0]["footer"]["text"]
        assert custom_ids(done) == [f"ib:d:{job_of(done)}"]  # nothing to make from it; 🗑 removes it
    assert not harness.fake.limit_violations


async def test_v3_and_reroll(harness: Harness) -> None:
    """V3 makes four variations of image 3; 🔄 makes a new grid of the same prompt with a new seed."""
    async with harness.running():
        grid = await harness.result_of(
            await harness.slash(harness.alice, "imagine", {"prompt": "a fox --seed 7"})
        )
        job_id = job_of(grid)
        variation = await harness.result_of(
            await harness.fake.click(grid.id, f"ib:v:{job_id}:2", harness.alice)
        )
        assert variation.embeds[0]["footer"]["text"].startswith("Variations")
        assert harness.app is not None
        varied = await harness.app.stores.jobs.get_job(job_of(variation))
        source = await harness.app.stores.jobs.job_images(job_id)
        assert varied.spec.source_image_id == source[2].id
        reroll = await harness.result_of(await harness.fake.click(grid.id, f"ib:r:{job_id}", harness.alice))
        rerolled = await harness.app.stores.jobs.get_job(job_of(reroll))
        assert rerolled.spec.params.prompt == "a fox"
        assert rerolled.spec.params.seed != 7
        assert grid.attachments[0].data != reroll.attachments[0].data
    assert not harness.fake.limit_violations


async def test_someone_else_pressing_gets_an_ephemeral_explanation(harness: Harness) -> None:
    """Bob pressing V1 on Alice's grid is told why, privately; no job is made; a moderator may press."""
    async with harness.running():
        grid = await harness.result_of(await harness.slash(harness.alice, "imagine", {"prompt": "a fox"}))
        job_id = job_of(grid)
        press = await harness.fake.click(grid.id, f"ib:v:{job_id}:0", harness.bob)
        response = await press.wait_response()
        assert response.type == 4
        [reply] = press.ephemeral_messages
        assert "Only the member who made this image" in reply.content
        assert harness.app is not None
        assert len(await harness.app.stores.jobs.list_jobs()) == 1
        await harness.result_of(await harness.fake.click(grid.id, f"ib:v:{job_id}:0", harness.mod))
    assert not harness.fake.limit_violations


async def test_reaction_requests_variations(harness: Harness) -> None:
    """Reacting 3️⃣ on a grid posts a status reply that becomes four variations of image 3."""
    async with harness.running():
        grid = await harness.result_of(await harness.slash(harness.alice, "imagine", {"prompt": "a fox"}))
        job_id = job_of(grid)
        await harness.fake.react(grid.id, "3️⃣", harness.alice)
        result = await harness.fake.wait_for_message(
            lambda m: m.route == "channel" and bool(m.attachments) and m.id != grid.id, 30
        )
        assert f"<@{harness.alice}>" in result.content
        assert result.message_reference is not None
        assert int(result.message_reference["message_id"]) == grid.id
        assert harness.app is not None
        job = await harness.app.stores.jobs.get_job(job_of(result))
        assert job.spec.parent_job_id == job_id
        assert job.user_id == harness.alice
    assert not harness.fake.limit_violations


async def test_buttons_work_after_a_restart(harness: Harness) -> None:
    """A grid made before the bot restarted still answers its buttons afterwards."""
    async with harness.running():
        grid = await harness.result_of(await harness.slash(harness.alice, "imagine", {"prompt": "a fox"}))
    async with harness.running():
        variation = await harness.fake.click(grid.id, f"ib:v:{job_of(grid)}:0", harness.alice)
        done = await harness.result_of(variation)
        assert done.embeds[0]["footer"]["text"].startswith("Variations")
    assert not harness.fake.limit_violations


async def test_result_after_token_expiry_arrives_as_channel_message(harness: Harness) -> None:
    """When the interaction token has expired, the result is posted once in the channel, mentioning Alice."""
    backend = GatedBackend(harness.backend)
    harness.backend = backend
    gate = backend.gate
    async with harness.running():
        handle = await harness.slash(harness.alice, "imagine", {"prompt": "a slow fox"})
        await handle.wait_response()
        await harness.fake.wait_for_message(lambda m: m.id == handle.original_message_id and bool(m.embeds))
        harness.fake.expire_tokens()
        gate.set()
        posted = await harness.fake.wait_for_message(
            lambda m: m.route == "channel" and bool(m.attachments), 30
        )
        assert posted.content.startswith(f"<@{harness.alice}>")
        assert custom_ids(posted)[0].startswith("ib:u:")
        await asyncio.sleep(0.5)
        channel_results = [m for m in harness.fake.messages(harness.channel) if m.attachments]
        assert [m.id for m in channel_results] == [posted.id]
        assert any(e.code == 50027 for e in harness.fake.errors)
    assert not harness.fake.limit_violations


async def test_rate_limited_webhook_still_delivers_exactly_once(harness: Harness) -> None:
    """A 429 on the webhook edit route is waited out; the grid arrives once."""
    async with harness.running():
        harness.fake.inject_429("PATCH /webhooks/{application_id}/{token}/messages/{message_id}", times=2)
        handle = await harness.slash(harness.alice, "imagine", {"prompt": "a fox"})
        message = await harness.result_of(handle)
        await asyncio.sleep(0.5)
        results = [m for m in harness.fake.messages(harness.channel) if m.attachments]
        assert [m.id for m in results] == [message.id]
        assert any(e.status == 429 for e in harness.fake.errors)
    assert not harness.fake.limit_violations


async def test_queue_cancel_and_usage(harness: Harness) -> None:
    """/queue lists Alice's waiting job, /cancel cancels it (its message says so), /usage counts."""
    backend = GatedBackend(harness.backend)
    harness.backend = backend
    gate = backend.gate
    async with harness.running():
        first = await harness.slash(harness.alice, "imagine", {"prompt": "one"})
        second = await harness.slash(harness.alice, "imagine", {"prompt": "two"})
        await harness.fake.wait_for_message(lambda m: m.id == second.original_message_id and bool(m.embeds))
        queue = await harness.slash(harness.alice, "queue")
        await queue.wait_response()
        [listing] = queue.ephemeral_messages
        assert "running now" in listing.content
        assert "in line" in listing.content
        cancel = await harness.slash(harness.alice, "cancel")
        await cancel.wait_response()
        assert "Cancelled job" in cancel.ephemeral_messages[0].content
        cancelled = await harness.finished_message(second)
        assert cancelled.embeds[0]["description"].startswith("🚫")
        gate.set()
        await harness.result_of(first)
        usage = await harness.slash(harness.alice, "usage")
        await usage.wait_response()
        assert "used 1 of your 20 jobs" in usage.ephemeral_messages[0].content
    assert not harness.fake.limit_violations


async def test_bad_flag_is_refused_privately(harness: Harness) -> None:
    """A malformed flag gets an ephemeral message naming it; the public placeholder is removed."""
    async with harness.running():
        handle = await harness.slash(harness.alice, "imagine", {"prompt": "a fox --ar wide"})
        await handle.wait_response()
        [reply] = handle.ephemeral_messages
        assert "`wide` is not an aspect ratio" in reply.content
        assert harness.app is not None
        assert await harness.app.stores.jobs.list_jobs() == []
    assert not harness.fake.limit_violations


async def test_cancel_with_nothing_to_cancel_answers_once(harness: Harness) -> None:
    """/cancel without jobs is answered with one ephemeral message, not two."""
    async with harness.running():
        handle = await harness.slash(harness.alice, "cancel")
        await handle.wait_response()
        await asyncio.sleep(0.2)  # a second answer would have arrived by now
        assert [m.content for m in handle.ephemeral_messages] == ["You have no jobs waiting or running."]
    assert not harness.fake.limit_violations


async def test_result_goes_by_dm_when_the_channel_is_closed(harness: Harness) -> None:
    """Token expired and the channel closed to the bot: the result arrives once, by DM."""
    backend = GatedBackend(harness.backend)
    harness.backend = backend
    gate = backend.gate
    async with harness.running():
        handle = await harness.slash(harness.alice, "imagine", {"prompt": "a private fox"})
        await handle.wait_response()
        await harness.fake.wait_for_message(lambda m: m.id == handle.original_message_id and bool(m.embeds))
        harness.fake.expire_tokens()
        harness.fake.forbid_channel(harness.channel)
        gate.set()
        dm = await harness.fake.wait_for_message(
            lambda m: m.attachments != [] and m in harness.fake.dm_messages(harness.alice), 30
        )
        assert "job #" in dm.content
        assert custom_ids(dm)[0].startswith("ib:u:")
        await asyncio.sleep(0.5)
        assert [m.id for m in harness.fake.dm_messages(harness.alice) if m.attachments] == [dm.id]
        assert not [m for m in harness.fake.messages(harness.channel) if m.attachments]
    assert not harness.fake.limit_violations


async def test_unexpected_error_gives_a_reference_that_is_in_the_log(
    harness: Harness, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug answers the member privately with a short reference id, and the log has the same id."""
    async with harness.running():
        assert harness.app is not None

        async def broken(*args: object, **kwargs: object) -> None:
            raise RuntimeError("the quota table is on fire")

        monkeypatch.setattr(harness.app.stores.admission, "admission_facts", broken)
        handle = await harness.slash(harness.alice, "usage")
        await handle.wait_response()
        [reply] = handle.ephemeral_messages
        match = re.search(r"ref `([0-9a-f]{8})`", reply.content)
        assert match is not None, reply.content
        logged = [r for r in caplog.records if getattr(r, "ref", None) == match.group(1)]
        assert len(logged) == 1
        assert logged[0].exc_info is not None
        assert "the quota table is on fire" not in reply.content
    assert not harness.fake.limit_violations


async def test_a_database_that_does_not_answer_gets_a_try_again(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The database locked past its busy timeout (or a PostgreSQL restart, tests/test_postgres_restart.py):
    the member is told privately to try again, nothing is queued, and the next try goes through."""
    monkeypatch.setattr(database, "SQLITE_BUSY_TIMEOUT_MS", 200)
    async with harness.running():
        assert harness.app is not None
        with write_locked(db_path(harness.settings.database_url), 2.0):
            handle = await harness.slash(harness.alice, "imagine", {"prompt": "a fox in the fog"})
            await handle.wait_response()  # answered once the store gives up (0.2 s here)
            [reply] = handle.ephemeral_messages
            assert "try again in a moment" in reply.content
        assert await harness.app.stores.jobs.list_jobs() == []
        again = await harness.slash(harness.alice, "imagine", {"prompt": "a fox in the fog"})
        await again.wait_response()
        grid = await harness.fake.wait_for_message(
            lambda m: m.id == again.original_message_id and bool(m.attachments), 30
        )
        assert custom_ids(grid)[0].startswith("ib:u:")
    assert not harness.fake.limit_violations
