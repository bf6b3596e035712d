"""DeliveryStore: where a job's messages are."""

from __future__ import annotations

from datetime import timedelta

from bot.domain.clock import FakeClock
from bot.domain.records import DeliveryTarget
from bot.store import Stores

from .factories import make_spec


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
