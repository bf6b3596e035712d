"""SafetyStore: each image's score stored with it, how a result was shown, and a moderator's release."""

from __future__ import annotations

from datetime import timedelta

import pytest

from bot.domain.clock import FakeClock
from bot.domain.errors import JobNotFound
from bot.domain.records import JobResult
from bot.store import JobStore, Stores

from .factories import make_images, make_spec, mark_running


async def finished(store: JobStore, scores: list[float | None] | None) -> int:
    job = await store.create_job(make_spec())
    await mark_running(store, [job.id])
    await store.complete_jobs([JobResult(job.id, make_images(), [1, 2, 3, 4], scores)])
    return job.id


async def test_scores_are_stored_with_each_image(store: JobStore) -> None:
    scored = await finished(store, [0.1, 0.95, None, 0.5])
    unscored = await finished(store, None)
    assert [image.safety_score for image in await store.job_images(scored)] == [0.1, 0.95, None, 0.5]
    assert [image.safety_score for image in await store.job_images(unscored)] == [None] * 4


async def test_shown_release_and_rescore(stores: Stores, clock: FakeClock) -> None:
    job_id = await finished(stores.jobs, [0.9] * 4)
    await stores.safety.record_shown(job_id, "held")
    assert (await stores.jobs.get_job(job_id)).shown == "held"
    assert await stores.safety.release(job_id, by=7)
    clock.advance(5)
    assert not await stores.safety.release(job_id, by=8)  # once: the first release is kept
    job = await stores.jobs.get_job(job_id)
    assert job.released_at == clock.now() - timedelta(seconds=5)
    await stores.safety.set_scores(job_id, [0.2, 0.3, 0.4, 0.5])
    assert [image.safety_score for image in await stores.jobs.job_images(job_id)] == [0.2, 0.3, 0.4, 0.5]
    with pytest.raises(JobNotFound):
        await stores.safety.set_scores(job_id + 100, [0.1])
