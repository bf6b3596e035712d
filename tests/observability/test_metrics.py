"""Metrics from a real GpuScheduler on a SQLite store with the fake backend, and from plain callbacks."""

from __future__ import annotations

import asyncio
import logging
import math
import shutil
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest

from bot.domain.batching import BatchingConfig
from bot.domain.clock import SystemClock
from bot.domain.events import JobUpdate
from bot.domain.jobs import Job, JobKind, JobSpec, JobState
from bot.domain.params import GenerationLimits, build_params
from bot.observability import DiscordLogHandler, Metrics, scheduler_worker_up
from bot.scheduler.scheduler import GpuScheduler
from bot.store import JobStore, Stores
from tests.fakes import FakeBackend

LIMITS = GenerationLimits(base_resolution=64)


def spec(user: int = 1, *, kind: JobKind = JobKind.GENERATE) -> JobSpec:
    params = build_params("a cat", limits=LIMITS, seed=user, steps=3)
    return JobSpec(kind, user_id=user, params=params)


def value(metrics: Metrics, name: str, **labels: str) -> float:
    found = metrics.registry.get_sample_value(name, labels)
    return 0.0 if found is None else found


@dataclass
class World:
    metrics: Metrics
    store: JobStore
    scheduler: GpuScheduler
    backend: FakeBackend

    async def submit(self, job_spec: JobSpec) -> Job:
        job = await self.store.create_job(job_spec)
        self.scheduler.submit(job)
        return job

    async def done(self, job: Job) -> Job:
        return await asyncio.wait_for(self.scheduler.wait_finished(job.id), 10)


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    metrics = Metrics()
    stores = await Stores.open(f"sqlite+aiosqlite:///{tmp_path}/jobs.db", tmp_path / "images", SystemClock())
    store = stores.jobs
    backend = FakeBackend()
    scheduler = GpuScheduler(
        store, metrics.instrument(backend), BatchingConfig(max_images=8, max_wait=0.05), SystemClock()
    )
    metrics.watch(scheduler, worker_up=lambda: scheduler_worker_up(scheduler))
    assert value(metrics, "imagine_worker_up") == 0  # not started yet
    await scheduler.start()
    await scheduler.wait_ready()
    try:
        yield World(metrics, store, scheduler, backend)
    finally:
        await scheduler.stop()
        await stores.close()


async def test_jobs_images_batches_and_stage_times_are_counted(world: World) -> None:
    """N jobs through the real scheduler: final states, images, batch sizes and stage histograms add up."""
    m = world.metrics
    assert value(m, "imagine_worker_up") == 1
    jobs = [await world.submit(spec(user)) for user in (1, 2, 3)]
    for job in jobs:
        assert (await world.done(job)).state is JobState.SUCCEEDED
    await asyncio.sleep(0)  # the final updates are emitted right after the futures resolve

    assert value(m, "imagine_jobs_total", state="succeeded") == 3
    assert value(m, "imagine_images_total") == 12  # 3 jobs × 4 images
    rendered = sum(len(batch.tasks) for batch in world.backend.batches)
    assert rendered == 12
    assert value(m, "imagine_batch_images_count") == len(world.backend.batches)
    assert value(m, "imagine_batch_images_sum") == 12
    assert value(m, "imagine_job_queued_seconds_count") == 3
    assert value(m, "imagine_job_running_seconds_count") == 3
    assert value(m, "imagine_job_running_seconds_sum") > 0
    assert value(m, "imagine_queue_depth") == 0

    for job in jobs[:2]:
        m.delivered(job.id)
    m.delivered(jobs[0].id)  # a second call for the same job is not counted again
    m.delivered(999)  # nor a job this process never saw finish
    assert value(m, "imagine_job_delivering_seconds_count") == 2


async def test_failed_and_cancelled_jobs_and_queue_depth(world: World) -> None:
    """A failing render counts as failed (no images); a cancelled queued job as cancelled; depth is live."""
    m = world.metrics
    world.backend.fail_with = RuntimeError("boom")
    failed = await world.done(await world.submit(spec(1)))
    assert failed.state is JobState.FAILED
    await asyncio.sleep(0)
    assert value(m, "imagine_jobs_total", state="failed") == 1
    assert value(m, "imagine_images_total") == 0

    world.backend.fail_with = None
    gate = world.backend.gate = threading.Event()
    world.backend.rendering.clear()
    running = await world.submit(spec(2))
    await world.backend.until_rendering()
    waiting = [await world.submit(spec(user)) for user in (3, 4)]
    assert value(m, "imagine_queue_depth") == 2
    await world.scheduler.cancel(waiting[0].id)
    assert value(m, "imagine_queue_depth") == 1
    assert value(m, "imagine_jobs_total", state="cancelled") == 1
    gate.set()
    assert (await world.done(running)).state is JobState.SUCCEEDED
    assert (await world.done(waiting[1])).state is JobState.SUCCEEDED
    await asyncio.sleep(0)
    assert value(m, "imagine_jobs_total", state="succeeded") == 2
    assert value(m, "imagine_images_total") == 8
    assert value(m, "imagine_queue_depth") == 0


async def test_worker_down_after_stop(world: World) -> None:
    await world.scheduler.stop()
    assert value(world.metrics, "imagine_worker_up") == 0


def test_stage_times_from_updates_with_a_fake_clock() -> None:
    """QUEUED → RUNNING → SUCCEEDED → delivered gives exact queued, running and delivering times."""
    now = [100.0]
    m = Metrics(clock=lambda: now[0])
    m.on_update(JobUpdate(7, JobState.QUEUED))
    now[0] = 103.0
    m.on_update(JobUpdate(7, JobState.RUNNING))
    now[0] = 104.0
    m.on_update(JobUpdate(7, JobState.RUNNING, step=1, total_steps=2))  # progress: not a new start
    now[0] = 110.0
    m.on_update(JobUpdate(7, JobState.SUCCEEDED))
    now[0] = 111.5
    m.delivered(7)
    assert value(m, "imagine_job_queued_seconds_sum") == 3.0
    assert value(m, "imagine_job_running_seconds_sum") == 7.0
    assert value(m, "imagine_job_delivering_seconds_sum") == 1.5
    assert value(m, "imagine_job_queued_seconds_bucket", le="5.0") == 1
    assert value(m, "imagine_job_queued_seconds_bucket", le="2.5") == 0


def test_errors_and_discord_log_records_are_counted() -> None:
    """error(kind) counts by kind; discord.py's 429 warnings and HTTPException statuses are counted."""
    m = Metrics()
    m.error("delivery")
    m.error("delivery")
    m.error("store")
    assert value(m, "imagine_errors_total", kind="delivery") == 2
    assert value(m, "imagine_errors_total", kind="store") == 1

    class FakeHTTPException(Exception):
        status = 403

    logger = logging.getLogger("discord.http.test_metrics")
    logger.propagate = False
    handler = DiscordLogHandler(m)
    logger.addHandler(handler)
    try:
        # The exact messages of discord/http.py.
        fmt = "We are being rate limited. %s %s responded with 429. Retrying in %.2f seconds."
        logger.warning(fmt, "PATCH", "https://discord.com/api/v10/webhooks/1/tok/messages/@original", 1.5)
        logger.warning("Global rate limit has been hit. Retrying in %.2f seconds.", 2.0)
        try:
            raise FakeHTTPException("Forbidden")
        except FakeHTTPException:
            logger.exception("Ignoring exception in view")
        logger.warning("something else entirely")
    finally:
        logger.removeHandler(handler)
    assert value(m, "imagine_discord_rate_limits_total", scope="route") == 1
    assert value(m, "imagine_discord_rate_limits_total", scope="global") == 1
    assert value(m, "imagine_discord_api_errors_total", status="429") == 1
    assert value(m, "imagine_discord_api_errors_total", status="403") == 1
    m.discord_error(404)
    assert value(m, "imagine_discord_api_errors_total", status="404") == 1


def test_registries_are_isolated() -> None:
    first, second = Metrics(), Metrics()
    first.error("x")
    assert value(second, "imagine_errors_total", kind="x") == 0
    assert b"imagine_queue_depth" in second.render()


def test_free_disk_of_the_image_folder_is_read_at_scrape_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """imagine_image_dir_free_bytes follows the file system at each scrape; NaN until watched and when
    the folder can't be read (no number rather than a wrong one)."""
    metrics = Metrics()
    assert math.isnan(value(metrics, "imagine_image_dir_free_bytes"))
    metrics.watch_disk(tmp_path)
    assert value(metrics, "imagine_image_dir_free_bytes") > 0  # the real disk's
    free = iter([5_000_000_000, 1_000])

    def usage(path: Path) -> SimpleNamespace:
        assert Path(path) == tmp_path
        return SimpleNamespace(free=next(free))

    monkeypatch.setattr(shutil, "disk_usage", usage)
    assert value(metrics, "imagine_image_dir_free_bytes") == 5_000_000_000
    assert "imagine_image_dir_free_bytes 1000.0" in metrics.render().decode()
    monkeypatch.undo()
    metrics.watch_disk(tmp_path / "gone")
    assert math.isnan(value(metrics, "imagine_image_dir_free_bytes"))
