"""Metrics from a real GpuScheduler on a SQLite store with the fake backend, from plain callbacks, and from
a Discord side and two workers sharing a queue on PostgreSQL (each process's numbers add up)."""

from __future__ import annotations

import asyncio
import logging
import math
import platform
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from types import SimpleNamespace

import pytest

from bot.domain.batching import BatchingConfig
from bot.domain.clock import SystemClock
from bot.domain.events import JobUpdate
from bot.domain.jobs import Job, JobKind, JobSpec, JobState, ModelKind
from bot.domain.members import Requester
from bot.domain.params import GenerationLimits, build_params
from bot.domain.render import ImageTask, RenderBatch
from bot.observability import DiscordLogHandler, Metrics, scheduler_worker_up
from bot.runtime.app import ImagineApp
from bot.scheduler.scheduler import GpuScheduler
from bot.store import JobStore, Stores
from tests.fakes import FakeBackend
from tests.postgres import shared_queue_settings

LIMITS = GenerationLimits(base_resolution=64)


def spec(
    user: int = 1,
    *,
    kind: JobKind = JobKind.GENERATE,
    model: str = ModelKind.DEFAULT,
    source_image_id: int | None = None,
) -> JobSpec:
    params = build_params("a cat", limits=LIMITS, seed=user, steps=3)
    strength = 0.5 if source_image_id is not None else None
    return JobSpec(
        kind, user_id=user, params=params, model=model, source_image_id=source_image_id, strength=strength
    )


def value(metrics: Metrics, name: str, **labels: str) -> float:
    """The sum of the samples of `name` whose labels include these (the other labels summed over)."""
    return sum(
        sample.value
        for family in metrics.registry.collect()
        for sample in family.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    )


def families(metrics: Metrics) -> set[str]:
    return {family.name for family in metrics.registry.collect()}


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


async def test_every_kind_and_model_is_labelled(world: World) -> None:
    """Each job kind (generate, reroll, variation, upscale) and model (full, fast) has its own series; every
    job series exists from the start at 0, so rates and alerts see it before the first job."""
    m = world.metrics
    for kind in JobKind:
        for model in ("full", "fast"):
            for state in ("succeeded", "failed", "cancelled"):
                labels = {"state": state, "kind": kind.value, "model": model}
                assert m.registry.get_sample_value("imagine_jobs_total", labels) == 0
    first = await world.done(await world.submit(spec(1)))
    source = (await world.store.job_images(first.id))[0].id
    made = [
        await world.submit(spec(2, kind=JobKind.REROLL)),
        await world.submit(spec(3, kind=JobKind.VARIATION, source_image_id=source)),
        await world.submit(spec(4, kind=JobKind.UPSCALE, source_image_id=source)),
        await world.submit(spec(5, model=ModelKind.FAST)),
    ]
    for job in made:
        assert (await world.done(job)).state is JobState.SUCCEEDED
    await asyncio.sleep(0)
    for kind, model, images in [
        ("generate", "full", 4),
        ("reroll", "full", 4),
        ("variation", "full", 4),
        ("upscale", "full", 1),
        ("generate", "fast", 4),
    ]:
        assert value(m, "imagine_jobs_total", state="succeeded", kind=kind, model=model) == 1
        assert value(m, "imagine_images_total", kind=kind, model=model) == images
        assert value(m, "imagine_job_queued_seconds_count", kind=kind, model=model) == 1
        assert value(m, "imagine_job_running_seconds_count", kind=kind, model=model) == 1
    assert value(m, "imagine_jobs_total", state="succeeded") == 5
    assert value(m, "imagine_batch_images_sum", model="fast") == 4
    assert value(m, "imagine_batch_images_sum", model="full") == 13
    m.delivered(made[2].id)  # the upscale
    assert value(m, "imagine_job_delivering_seconds_count", kind="upscale", model="full") == 1
    assert value(m, "imagine_deliveries_total") == 1


def test_process_python_and_build_info() -> None:
    """The process and Python collectors are on the registry the server exposes, with the build's
    versions (read from the installed packages) and the process's role."""
    metrics = Metrics(role="worker")
    names = families(metrics)
    for expected in (
        "process_resident_memory_bytes",
        "process_cpu_seconds",
        "process_open_fds",
        "process_start_time_seconds",
        "python_info",
        "python_gc_collections",
        "python_gc_objects_collected",
        "imagine_build",
    ):
        assert expected in names
    assert value(metrics, "process_resident_memory_bytes") > 0
    info = {
        "version": metadata.version("imagine-bot"),
        "python": platform.python_version(),
        "torch": metadata.version("torch"),
        "role": "worker",
    }
    assert metrics.registry.get_sample_value("imagine_build_info", info) == 1
    text = metrics.render().decode()
    assert 'imagine_build_info{python="' in text
    assert "python_gc_collections_total" in text


def test_build_info_does_not_import_torch() -> None:
    """bot/ never imports torch: the version comes from the package's metadata."""
    code = "import sys; from bot.observability import Metrics; Metrics(); print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_only_the_discord_side_reports_the_queue() -> None:
    """The queue is one for all processes: the bot reports its depth, a worker does not (sum() is right)."""
    assert "imagine_queue_depth" in families(Metrics(role="bot"))
    assert "imagine_queue_depth" not in families(Metrics(role="worker"))
    assert "imagine_worker_up" in families(Metrics(role="worker"))


def test_what_another_process_did_is_not_counted_again() -> None:
    """A job finished elsewhere (the update says so) is not counted here, though its delivery is timed."""
    now = [10.0]
    m = Metrics(clock=lambda: now[0])
    m.on_update(JobUpdate(3, JobState.QUEUED))
    now[0] = 12.0
    m.on_update(JobUpdate(3, JobState.SUCCEEDED, elsewhere=True))
    m.on_update(JobUpdate(4, JobState.CANCELLED, elsewhere=True))
    assert value(m, "imagine_jobs_total") == 0
    assert value(m, "imagine_images_total") == 0
    now[0] = 12.5
    m.delivered(3)
    assert value(m, "imagine_job_delivering_seconds_sum") == 0.5
    m.on_update(JobUpdate(5, JobState.CANCELLED))  # cancelled here
    assert value(m, "imagine_jobs_total", state="cancelled", kind="unknown", model="unknown") == 1


async def test_processes_sharing_a_queue_add_up(pg_url: str, tmp_path: Path) -> None:
    """A Discord side (no GPU) and two workers on PostgreSQL: summed over the three, each job is counted
    once (by the worker that made it, or the side that cancelled it), the queue once (by the Discord side),
    and the workers up are the two that render."""
    front_metrics = Metrics(role="bot")
    front = await ImagineApp.start(
        shared_queue_settings(pg_url, tmp_path, "front"),
        backend=front_metrics.instrument(FakeBackend()),
        render=False,
        classifier=None,
    )
    front_metrics.watch(front.scheduler, worker_up=lambda: scheduler_worker_up(front.scheduler))
    processes: list[Metrics] = [front_metrics]
    workers: list[ImagineApp] = []
    try:
        members = [Requester(user_id=7 + n, guild_id=1, channel_id=2) for n in range(4)]
        jobs = [await front.service.imagine(member, "a fox") for member in members]
        await front.scheduler.cancel(jobs[0].id)
        assert value(front_metrics, "imagine_queue_depth") == 3
        for name in ("gpu-1", "gpu-2"):
            metrics = Metrics(role="worker")
            app = await ImagineApp.start(
                shared_queue_settings(pg_url, tmp_path, name),
                backend=metrics.instrument(FakeBackend()),
                classifier=None,
            )
            metrics.watch(app.scheduler, worker_up=lambda app=app: scheduler_worker_up(app.scheduler))
            await app.scheduler.wait_ready()
            processes.append(metrics)
            workers.append(app)
        done = [await asyncio.wait_for(front.scheduler.wait_finished(job.id), 20) for job in jobs[1:]]
        assert [job.state for job in done] == [JobState.SUCCEEDED] * 3
        for job in jobs:  # the workers hear of each other's jobs too
            for app in workers:
                await asyncio.wait_for(app.scheduler.wait_finished(job.id), 20)
        await asyncio.sleep(0.2)  # the last refresh's updates

        def summed(name: str, **labels: str) -> float:
            return sum(value(metrics, name, **labels) for metrics in processes)

        assert summed("imagine_jobs_total", state="succeeded", kind="generate", model="full") == 3
        assert summed("imagine_jobs_total", state="cancelled") == 1
        assert summed("imagine_jobs_total") == 4
        assert value(front_metrics, "imagine_jobs_total", state="succeeded") == 0  # it rendered nothing
        assert value(front_metrics, "imagine_jobs_total", state="cancelled") == 1
        assert summed("imagine_images_total") == 12
        assert summed("imagine_job_queued_seconds_count") == 3  # where each job started
        assert summed("imagine_queue_depth") == 0
        assert ["imagine_queue_depth" in families(metrics) for metrics in processes] == [True, False, False]
        assert [value(metrics, "imagine_worker_up") for metrics in processes] == [0, 1, 1]
        front_metrics.delivered(jobs[1].id)  # the Discord side times the delivery of a job made elsewhere
        assert value(front_metrics, "imagine_job_delivering_seconds_count", kind="generate") == 1
    finally:
        for app in workers:
            await app.close()
        await front.close()


async def test_logged_errors_are_counted_by_the_module_that_logged_them(world: World) -> None:
    """Once a scheduler is watched, the bot's ERROR and CRITICAL records count in imagine_errors_total."""
    m = world.metrics
    logging.getLogger("bot.discord_app.delivery").error("delivery gave up for now")
    logging.getLogger("bot.discord_app.delivery").error("delivery gave up for now")
    logging.getLogger("inference.pipeline").critical("the GPU is gone")
    logging.getLogger("bot.scheduler.scheduler").warning("out of GPU memory; retrying")  # not an error
    logging.getLogger("somebody.else").error("not the bot's")
    assert value(m, "imagine_errors_total", kind="delivery") == 2
    assert value(m, "imagine_errors_total", kind="pipeline") == 1
    assert value(m, "imagine_errors_total") == 3
    world.backend.fail_with = RuntimeError("boom")
    assert (await world.done(await world.submit(spec(1)))).state is JobState.FAILED
    assert value(m, "imagine_errors_total", kind="scheduler") == 1  # "batch failed", with its traceback


README = Path(__file__).resolve().parents[2] / "README.md"


def _exercised() -> Metrics:
    """A bot's metrics with every family fed once, so each shows its labels."""
    m = Metrics(role="bot")
    stored = datetime(2026, 1, 1, tzinfo=UTC)
    job = Job(1, spec(), JobState.RUNNING, created_at=stored, started_at=stored)
    m.on_update(JobUpdate(1, JobState.QUEUED, job=job))
    m.on_update(JobUpdate(1, JobState.RUNNING, job=job))
    tasks = [ImageTask(job_id=1, index=0, prompt="a cat", negative_prompt="", seed=1)]
    m.rendered(RenderBatch(spec().batch_key(), tasks))
    m.on_update(JobUpdate(1, JobState.SUCCEEDED, job=job))
    m.delivered(1)
    m.error("delivery")
    m.discord_error(500)
    m.discord_rate_limits.labels(scope="route").inc()
    return m


def test_the_readme_lists_every_metric_with_its_type_and_labels() -> None:
    """The README's Metrics table and /metrics agree: the same names, types and labels, both ways."""
    section = README.read_text().split("### Metrics", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `(\w+)` \| (\w+) \|([^|]*)\|", section, re.MULTILINE)
    listed = {
        name: (kind, {label.strip() for label in labels.split(",") if label.strip()})
        for name, kind, labels in rows
    }
    assert len(listed) == len(rows)  # no row twice
    metrics = _exercised()
    exposed: dict[str, tuple[str, set[str]]] = {}
    for line in metrics.render().decode().splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            exposed[name] = (kind, set())
    for family in metrics.registry.collect():
        for sample in family.samples:
            name = next(n for n in exposed if sample.name == n or sample.name.startswith(f"{n}_"))
            exposed[name][1].update(set(sample.labels) - {"le"})
    assert listed == exposed
