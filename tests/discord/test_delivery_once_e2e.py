"""A result already delivered is never delivered again, whatever asks for it a second time.

The scheduler's final update, the periodic sweep and a restart can each ask the delivery manager to deliver
a job; two of them may do so at once, or one after the other. The store's `delivered_at` is what stops the
second: these tests ask again, after the result went out, and check that Discord saw no request at all.
"""

from __future__ import annotations

import asyncio

from fake_discord import FakeMessage
from fake_discord.records import RecordedRequest
from tests.discord.conftest import Harness, gated


def job_of(message: FakeMessage) -> int:
    return int(message.embeds[0]["footer"]["text"].rsplit("#", 1)[1])


def results(harness: Harness) -> list[FakeMessage]:
    """Every message with an image, in the channel and in Alice's DMs."""
    return [
        m
        for m in [*harness.fake.messages(harness.channel), *harness.fake.dm_messages(harness.alice)]
        if m.attachments
    ]


def sent_since(harness: Harness, count: int) -> list[str]:
    """The REST requests the bot made after the first `count`, as "METHOD /path" (for the message)."""
    later: list[RecordedRequest] = harness.fake.requests[count:]
    return [r.key for r in later]


async def deliver_again(harness: Harness, job_id: int) -> None:
    """Ask for the delivery three times: twice at once (the final update and a sweep racing), then again."""
    assert harness.bot is not None
    await asyncio.gather(harness.bot.delivery.deliver(job_id), harness.bot.delivery.deliver(job_id))
    await harness.bot.delivery.deliver(job_id)


async def test_a_delivered_grid_is_not_delivered_again(harness: Harness) -> None:
    """The grid went out in the original response. Asking again, in the same process and in a new one on
    the same database, edits nothing and posts nothing: the message keeps its edits and is the only
    result, and the delivery record (the message it went to) is unchanged."""
    async with harness.running() as bot:
        handle = await harness.slash(harness.alice, "imagine", {"prompt": "a fox delivered once"})
        grid = await harness.result_of(handle)
        job_id = job_of(grid)
        await asyncio.sleep(0.3)  # let the last status edits settle
        first = await bot.app.results.delivery(job_id)
        assert first is not None
        assert first.delivered_at is not None
        assert first.result_message_id == grid.id
        edits, count = grid.edits, len(harness.fake.requests)

        await deliver_again(harness, job_id)

        assert sent_since(harness, count) == []
        assert grid.edits == edits
        assert [m.id for m in results(harness)] == [grid.id]
        assert await bot.app.results.delivery(job_id) == first

    async with harness.running() as bot:  # a restart: no lock, no memory, only the database
        await asyncio.sleep(0.3)
        count = len(harness.fake.requests)
        await deliver_again(harness, job_id)
        assert sent_since(harness, count) == []
        assert grid.edits == edits
        assert [m.id for m in results(harness)] == [grid.id]
        assert await bot.app.results.delivery(job_id) == first
    assert not harness.fake.limit_violations


async def test_a_result_posted_in_the_channel_is_not_looked_for_or_posted_again(harness: Harness) -> None:
    """The token expired, so the grid was posted as a new channel message. Asking again neither reads the
    channel's history for it nor posts it a second time."""
    with gated(harness) as backend:
        async with harness.running() as bot:
            handle = await harness.slash(harness.alice, "imagine", {"prompt": "a fox posted once"})
            await handle.wait_response()
            await backend.until_held()
            harness.fake.expire_tokens()
            backend.gate.set()
            posted = await harness.fake.wait_for_message(
                lambda m: m.route == "channel" and bool(m.attachments), 30
            )
            job_id = job_of(posted)
            await harness.delivered(job_id)
            await asyncio.sleep(0.3)
            first = await bot.app.results.delivery(job_id)
            assert first is not None
            assert first.result_message_id == posted.id
            count = len(harness.fake.requests)

            await deliver_again(harness, job_id)

            assert sent_since(harness, count) == []
            assert [m.id for m in results(harness)] == [posted.id]
            assert await bot.app.results.delivery(job_id) == first
    assert not harness.fake.limit_violations
