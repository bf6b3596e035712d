"""DeliveryStore: where a job's messages are, and a delivery recorded once (the first record kept)."""

from __future__ import annotations

from datetime import timedelta

from bot.domain.clock import FakeClock
from bot.domain.records import DeliveryTarget
from bot.store import Stores

from .factories import complete_job, make_images, make_spec, mark_running

CHANNEL = 2**61 + 5


async def test_messages_of_a_job(stores: Stores, clock: FakeClock) -> None:
    """A job's status message, its result and the messages showing one of its images, each once; another
    job's are not among them."""
    job = await stores.jobs.create_job(make_spec())
    other = await stores.jobs.create_job(make_spec())
    deliveries = stores.deliveries
    assert await deliveries.messages_of(job.id) == []
    target = DeliveryTarget(10, 100, "token", clock.now() + timedelta(minutes=15), 1024)
    await deliveries.create(job.id, target)
    await deliveries.mark_delivered(job.id, channel_id=10, message_id=100)  # the status message became it
    await deliveries.record_message(100, 10, job.id, None)
    clock.advance(1)
    await deliveries.record_message(101, 10, job.id, 2)
    await deliveries.record_message(200, 10, other.id, None)
    assert await deliveries.messages_of(job.id) == [(10, 100), (10, 101)]

    await deliveries.create(other.id, DeliveryTarget(10, 199, None, None, 1024))
    await deliveries.mark_delivered(other.id, channel_id=11, message_id=300)  # posted anew elsewhere
    assert await deliveries.messages_of(other.id) == [(10, 199), (11, 300), (10, 200)]


async def _finished_job_with_a_status_message(stores: Stores, clock: FakeClock) -> int:
    job = await stores.jobs.create_job(make_spec())
    target = DeliveryTarget(CHANNEL, 2**60 + 1, "a-token", clock.now() + timedelta(minutes=15), 8 << 20)
    await stores.deliveries.create(job.id, target)
    await mark_running(stores.jobs, [job.id])
    await complete_job(stores.jobs, job.id, make_images(), [1, 2, 3, 4])
    return job.id


async def test_mark_delivered_records_once(stores: Stores, clock: FakeClock) -> None:
    """The first mark returns True and drops the token; a second (a racing sweep, a later retry) returns
    False and changes nothing: not the time, not the message the result went to."""
    job_id = await _finished_job_with_a_status_message(stores, clock)
    assert [d.job_id for d in await stores.deliveries.undelivered_finished()] == [job_id]

    assert await stores.deliveries.mark_delivered(job_id, channel_id=CHANNEL, message_id=111) is True
    first = await stores.deliveries.get(job_id)
    assert first is not None
    assert first.delivered_at == clock.now()
    assert (first.result_channel_id, first.result_message_id) == (CHANNEL, 111)
    assert first.interaction_token is None

    clock.advance(60)
    assert await stores.deliveries.mark_delivered(job_id, channel_id=CHANNEL + 1, message_id=222) is False
    assert await stores.deliveries.get(job_id) == first
    assert await stores.deliveries.undelivered_finished() == []


async def test_mark_delivered_without_a_delivery_row(stores: Stores) -> None:
    """A job made at the command line has no delivery row: marking it records nothing and says so."""
    job = await stores.jobs.create_job(make_spec())
    assert await stores.deliveries.mark_delivered(job.id, channel_id=None, message_id=None) is False
    assert await stores.deliveries.get(job.id) is None
