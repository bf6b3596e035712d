"""Prometheus metrics for the bot, in a registry of their own (tests and several apps stay isolated).

How each one is fed:

* job states and stage times come from the scheduler's `JobUpdate` events (`Metrics.watch(scheduler)`);
  a job's QUEUED → first RUNNING → final timestamps give the time queued and the time running;
* images per render call and images per job come from `InstrumentedBackend`, a wrapper around the
  `GenerationBackend` the scheduler is given (`metrics.instrument(backend)`);
* the time from a job's final state to its result reaching Discord comes from `Metrics.delivered(job_id)`,
  which the delivery code calls once a result is delivered;
* errors by kind come from `Metrics.error(kind)`; Discord API errors and 429s from `DiscordLogHandler`
  (discord.py's own log records) and `Metrics.discord_error(status)`;
* queue depth and worker liveness are read from callables when Prometheus scrapes, and the image
  folder's free disk from the file system (`Metrics.watch_disk(image_dir)`).
"""

from __future__ import annotations

import logging
import math
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

from PIL import Image
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from bot.domain.events import JobUpdate
from bot.domain.jobs import JobState
from bot.domain.render import GenerationBackend, RenderBatch, StepCallback, WarmUpShape, warm_up

# Seconds: a job may wait from a moment to many minutes in a busy queue; renders take seconds to minutes.
STAGE_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600, 1800, 3600)
BATCH_BUCKETS = (1, 2, 4, 8, 12, 16, 24, 32, 48, 64)


class WatchedScheduler(Protocol):
    """What `Metrics.watch` needs of a scheduler (GpuScheduler has it)."""

    def add_listener(self, listener: Callable[[JobUpdate], None]) -> None: ...

    @property
    def queued_count(self) -> int: ...


class Metrics:
    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._clock = clock
        self._lock = threading.Lock()
        self._queued_at: dict[int, float] = {}
        self._running_at: dict[int, float] = {}
        self._finished_at: dict[int, float] = {}
        self._job_images: dict[int, int] = {}
        self._queue_depth: Callable[[], int] = lambda: 0
        self._worker_up: Callable[[], bool] = lambda: False
        self._image_dir: Path | None = None
        r = self.registry
        self.queue_depth = Gauge("imagine_queue_depth", "Jobs waiting in the scheduler's queue.", registry=r)
        self.queue_depth.set_function(lambda: float(self._queue_depth()))
        self.worker_up = Gauge(
            "imagine_worker_up",
            "1 while the model is loaded and the scheduler loop runs, else 0.",
            registry=r,
        )
        self.worker_up.set_function(lambda: 1.0 if self._worker_up() else 0.0)
        self.image_dir_free = Gauge(
            "imagine_image_dir_free_bytes",
            "Free disk space where IMAGE_DIR is, in bytes (NaN until watched or when it can't be read).",
            registry=r,
        )
        self.image_dir_free.set_function(self._free_bytes)
        self.jobs = Counter(
            "imagine_jobs", "Jobs that reached a final state, by state.", ["state"], registry=r
        )
        self.images = Counter("imagine_images", "Images made by jobs that succeeded.", registry=r)
        self.batch_images = Histogram(
            "imagine_batch_images", "Images per render call (batch size).", buckets=BATCH_BUCKETS, registry=r
        )
        self.queued_seconds = Histogram(
            "imagine_job_queued_seconds", "Time from queued to running.", buckets=STAGE_BUCKETS, registry=r
        )
        self.running_seconds = Histogram(
            "imagine_job_running_seconds",
            "Time from running to a final state.",
            buckets=STAGE_BUCKETS,
            registry=r,
        )
        self.delivering_seconds = Histogram(
            "imagine_job_delivering_seconds",
            "Time from a final state to the result delivered on Discord.",
            buckets=STAGE_BUCKETS,
            registry=r,
        )
        self.errors = Counter("imagine_errors", "Errors, by kind.", ["kind"], registry=r)
        self.discord_errors = Counter(
            "imagine_discord_api_errors",
            "Discord API error responses, by HTTP status.",
            ["status"],
            registry=r,
        )
        self.discord_rate_limits = Counter(
            "imagine_discord_rate_limits",
            "Discord 429 responses, by scope (route or global).",
            ["scope"],
            registry=r,
        )

    # -- wiring ----------------------------------------------------------------------------------------

    def watch(self, scheduler: WatchedScheduler, *, worker_up: Callable[[], bool] | None = None) -> None:
        """Follow a scheduler's job updates; read its queue depth (and liveness, if given) at scrape time."""
        self._queue_depth = lambda: scheduler.queued_count
        if worker_up is not None:
            self._worker_up = worker_up
        scheduler.add_listener(self.on_update)

    def watch_disk(self, image_dir: Path) -> None:
        """Report the free disk space of the image folder's file system at scrape time."""
        self._image_dir = Path(image_dir)

    def _free_bytes(self) -> float:
        if self._image_dir is None:
            return math.nan
        try:
            return float(shutil.disk_usage(self._image_dir).free)
        except OSError:
            return math.nan  # the folder is gone or unreadable: no number rather than a wrong one

    def instrument(self, backend: GenerationBackend) -> InstrumentedBackend:
        """Wrap the render backend so batch sizes and each job's image count are measured."""
        return InstrumentedBackend(backend, self)

    def render(self) -> bytes:
        """The registry in Prometheus' text format."""
        return generate_latest(self.registry)

    # -- what the scheduler tells us -----------------------------------------------------------------

    def on_update(self, update: JobUpdate) -> None:
        now = self._clock()
        job_id = update.job_id
        if update.state is JobState.QUEUED:
            self._queued_at.setdefault(job_id, now)
        elif update.state is JobState.RUNNING:
            if job_id in self._running_at:
                return  # a progress update
            self._running_at[job_id] = now
            queued = self._queued_at.pop(job_id, None)
            if queued is not None:  # jobs reloaded at start were never announced as QUEUED
                self.queued_seconds.observe(now - queued)
        elif update.state.is_final:
            self.jobs.labels(state=update.state.value).inc()
            self._queued_at.pop(job_id, None)
            running = self._running_at.pop(job_id, None)
            if running is not None:
                self.running_seconds.observe(now - running)
            with self._lock:
                images = self._job_images.pop(job_id, 0)
            if update.state is JobState.SUCCEEDED:
                self.images.inc(images)
                self._finished_at[job_id] = now

    def rendered(self, batch: RenderBatch) -> None:
        """A render call returned its images (called by InstrumentedBackend, in the worker thread)."""
        self.batch_images.observe(len(batch.tasks))
        with self._lock:
            for task in batch.tasks:
                self._job_images[task.job_id] = self._job_images.get(task.job_id, 0) + 1

    # -- what the rest of the bot tells us ------------------------------------------------------------

    def delivered(self, job_id: int) -> None:
        """The delivery code calls this once a succeeded job's result is on Discord (or given up on).

        Observes the time since the job succeeded; a job this process did not see finish is ignored.
        """
        finished = self._finished_at.pop(job_id, None)
        if finished is not None:
            self.delivering_seconds.observe(self._clock() - finished)

    def error(self, kind: str) -> None:
        """Count one error of a kind (e.g. "delivery", "store", "command")."""
        self.errors.labels(kind=kind).inc()

    def discord_error(self, status: int) -> None:
        """Count one Discord API error response (an HTTPException's `status`)."""
        self.discord_errors.labels(status=str(status)).inc()


class InstrumentedBackend:
    """A GenerationBackend that reports each successful render call to Metrics; otherwise the same."""

    def __init__(self, backend: GenerationBackend, metrics: Metrics) -> None:
        self._backend = backend
        self._metrics = metrics

    @property
    def native_resolution(self) -> int:
        return self._backend.native_resolution

    def load(self) -> None:
        self._backend.load()

    def render(self, batch: RenderBatch, on_step: StepCallback) -> list[Image.Image]:
        images = self._backend.render(batch, on_step)
        self._metrics.rendered(batch)
        return images

    def warm_up(self, shapes: Sequence[WarmUpShape], *, guidance: float, model: str) -> float:
        """Straight to the backend: warm-up renders are not members' images and are not counted."""
        return warm_up(self._backend, shapes, guidance=guidance, model=model)


class DiscordLogHandler(logging.Handler):
    """Counts Discord API trouble from discord.py's own log records.

    Attach it to the "discord" logger (`logging.getLogger("discord").addHandler(metrics_handler)`): it
    counts the 429 warnings of discord/http.py ("We are being rate limited. … responded with 429 …",
    "Global rate limit has been hit …") and, for any record that carries an exception with an integer
    `status` (discord.HTTPException and its subclasses, logged e.g. as "Ignoring exception in …"), that
    status. It never emits anything itself.
    """

    def __init__(self, metrics: Metrics) -> None:
        super().__init__(level=logging.DEBUG)
        self._metrics = metrics

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
            if message.startswith("We are being rate limited"):
                self._metrics.discord_rate_limits.labels(scope="route").inc()
                self._metrics.discord_error(429)
            elif message.startswith("Global rate limit has been hit"):
                self._metrics.discord_rate_limits.labels(scope="global").inc()
            if record.exc_info and record.exc_info[1] is not None:
                status = getattr(record.exc_info[1], "status", None)
                if isinstance(status, int):
                    self._metrics.discord_error(status)
        except Exception:
            self.handleError(record)
