"""Prometheus metrics for the bot, in a registry of their own (tests and several apps stay isolated).

Each process reports what it did itself, so that with several processes (the Discord side and workers on
PostgreSQL) `sum()` over them gives the whole bot's numbers: a worker counts the jobs it rendered, the
Discord side the jobs it cancelled and the results it delivered, and a job another process finished is not
counted again by those that only learned of it (`JobUpdate.elsewhere`). The queue is one for all, so only
the Discord side (`role="bot"`) reports its depth; every process reports whether it renders
(`imagine_worker_up`). The README's "Metrics" table lists every metric.

How each one is fed:

* job states, kinds, models and stage times come from the scheduler's `JobUpdate` events
  (`Metrics.watch(scheduler)`): the time queued from the stored job (created → started, so it holds across
  processes), the time running from this process's clock;
* images per render call and images per job come from `InstrumentedBackend`, a wrapper around the
  `GenerationBackend` the scheduler is given (`metrics.instrument(backend)`);
* the time from a job's final state to its result reaching Discord comes from `Metrics.delivered(job_id)`,
  which the delivery code calls once a result is delivered;
* errors by kind from the bot's own ERROR and CRITICAL log records, by the module that logged them
  (`ErrorLogCounter`, attached by `watch`), and from `Metrics.error(kind)`; Discord API errors and 429s
  from `DiscordLogHandler`
  (discord.py's own log records) and `Metrics.discord_error(status)`;
* queue depth and worker liveness are read from callables when Prometheus scrapes, and the image
  folder's free disk from the file system (`Metrics.watch_disk(image_dir)`);
* the process (memory, CPU, open files), Python (version, garbage collector) and build (versions of the
  bot, Python and torch, read from the installed packages: torch is never imported here) at scrape time.
"""

from __future__ import annotations

import logging
import math
import platform
import shutil
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Literal, Protocol

from PIL import Image
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from bot.domain.events import JobUpdate, model_label, seconds_between
from bot.domain.jobs import FINAL_STATES, Job, JobKind, JobState, ModelKind
from bot.domain.render import GenerationBackend, RenderBatch, StepCallback, WarmUpShape, warm_up

# Seconds: a job may wait from a moment to many minutes in a busy queue; renders take seconds to minutes.
STAGE_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600, 1800, 3600)
BATCH_BUCKETS = (1, 2, 4, 8, 12, 16, 24, 32, 48, 64)
KINDS = tuple(kind.value for kind in JobKind)
MODELS = tuple(model_label(model) for model in ModelKind)  # full, fast
UNKNOWN = "unknown"  # a job whose update came without the job (never from the scheduler)
# Finished jobs remembered until their result is delivered (to time the delivery); a worker never delivers,
# so the oldest are forgotten past this many.
REMEMBERED_FINISHED = 10_000

Role = Literal["bot", "worker"]
_Labels = tuple[str, str]  # kind, model


class WatchedScheduler(Protocol):
    """What `Metrics.watch` needs of a scheduler (GpuScheduler has it)."""

    def add_listener(self, listener: Callable[[JobUpdate], None]) -> None: ...

    @property
    def queued_count(self) -> int: ...

    @property
    def renders(self) -> bool: ...


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return ""


def _labels(job: Job | None) -> _Labels:
    if job is None:
        return UNKNOWN, UNKNOWN
    return job.kind.value, model_label(job.spec.model)


class Metrics:
    def __init__(self, *, role: Role = "bot", clock: Callable[[], float] = time.monotonic) -> None:
        """`role`: "bot" for `imagine-bot run` (the Discord side, with or without rendering), "worker"
        for `imagine-bot worker`. Only the bot reports the queue's depth."""
        # The *_created series would double every counter and histogram; nothing here reads them.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = CollectorRegistry(auto_describe=True)
        self.role = role
        self._clock = clock
        self._lock = threading.Lock()
        self._queued_at: dict[int, tuple[float, _Labels]] = {}
        self._running_at: dict[int, tuple[float, _Labels]] = {}
        self._finished_at: OrderedDict[int, tuple[float, _Labels]] = OrderedDict()
        self._job_images: dict[int, int] = {}
        self._queue_depth: Callable[[], int] = lambda: 0
        self._worker_up: Callable[[], bool] = lambda: False
        self._image_dir: Path | None = None
        r = self.registry
        # The process's memory, CPU and open files; Python's version and garbage collector (the collectors
        # prometheus_client registers on its default registry, here on this one).
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)
        Info(
            "imagine_build",
            "Versions this process runs (the bot, Python, torch) and its role: bot (the Discord side) or "
            "worker.",
            registry=r,
        ).info(
            {
                "version": _version("imagine-bot"),
                "python": platform.python_version(),
                "torch": _version("torch"),
                "role": role,
            }
        )
        self.queue_depth: Gauge | None = None
        if role == "bot":
            self.queue_depth = Gauge(
                "imagine_queue_depth",
                "Jobs waiting in the queue (the whole queue; reported by the Discord side only).",
                registry=r,
            )
            self.queue_depth.set_function(lambda: float(self._queue_depth()))
        self.worker_up = Gauge(
            "imagine_worker_up",
            "1 while this process renders: its model is loaded and its scheduler loop runs; else 0.",
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
            "imagine_jobs",
            "Jobs this process brought to a final state (rendered, failed or cancelled), by state, kind "
            "and model.",
            ["state", "kind", "model"],
            registry=r,
        )
        self.images = Counter(
            "imagine_images",
            "Images of succeeded jobs rendered here, by kind and model.",
            ["kind", "model"],
            registry=r,
        )
        # Every series an alert or a rate() reads exists from the start, at 0.
        for kind in KINDS:
            for model in MODELS:
                self.images.labels(kind=kind, model=model)
                for state in sorted(FINAL_STATES):
                    self.jobs.labels(state=state.value, kind=kind, model=model)
        self.batch_images = Histogram(
            "imagine_batch_images",
            "Images per render call (batch size), by model.",
            ["model"],
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.queued_seconds = Histogram(
            "imagine_job_queued_seconds",
            "Time from queued to running (observed where the job starts), by kind and model.",
            ["kind", "model"],
            buckets=STAGE_BUCKETS,
            registry=r,
        )
        self.running_seconds = Histogram(
            "imagine_job_running_seconds",
            "Time from running to a final state, here, by kind and model.",
            ["kind", "model"],
            buckets=STAGE_BUCKETS,
            registry=r,
        )
        self.delivering_seconds = Histogram(
            "imagine_job_delivering_seconds",
            "Time from succeeded to the result delivered on Discord, by kind and model.",
            ["kind", "model"],
            buckets=STAGE_BUCKETS,
            registry=r,
        )
        self.deliveries = Counter(
            "imagine_deliveries", "Results this process delivered on Discord (any final state).", registry=r
        )
        self.errors = Counter(
            "imagine_errors",
            "Errors the bot logged, by kind: the module that logged them (scheduler, delivery, …).",
            ["kind"],
            registry=r,
        )
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
        """Follow a scheduler's job updates; read its queue depth (and liveness, if given) at scrape time.

        A scheduler that does not render (it only watches a shared queue) is never reported up."""
        self._queue_depth = lambda: scheduler.queued_count
        if worker_up is not None:
            up = worker_up
            self._worker_up = lambda: scheduler.renders and up()
        scheduler.add_listener(self.on_update)
        _ERROR_COUNTER.count_for(self)

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
            self._queued_at.setdefault(job_id, (now, _labels(update.job)))
        elif update.state is JobState.RUNNING:
            if job_id in self._running_at or update.elsewhere:
                return  # a progress update
            labels = _labels(update.job)
            self._running_at[job_id] = (now, labels)
            queued = self._queued_at.pop(job_id, None)
            # The stored times hold when another process queued the job; this clock when they are unknown.
            wait = seconds_between(update.job.created_at, update.job.started_at) if update.job else None
            if wait is None and queued is not None:  # jobs reloaded at start were never announced as QUEUED
                wait = now - queued[0]
            if wait is not None:
                self.queued_seconds.labels(*labels).observe(wait)
        elif update.state.is_final:
            queued = self._queued_at.pop(job_id, None)
            running = self._running_at.pop(job_id, None)
            with self._lock:
                images = self._job_images.pop(job_id, 0)
            known = running or queued
            labels = _labels(update.job) if update.job is not None or known is None else known[1]
            if update.state is JobState.SUCCEEDED:
                self._finished_at[job_id] = (now, labels)
                while len(self._finished_at) > REMEMBERED_FINISHED:
                    self._finished_at.popitem(last=False)
            if update.elsewhere:
                return  # the process that finished it counts it
            self.jobs.labels(update.state.value, *labels).inc()
            if running is not None:
                self.running_seconds.labels(*labels).observe(now - running[0])
            if update.state is JobState.SUCCEEDED:
                self.images.labels(*labels).inc(images)

    def rendered(self, batch: RenderBatch) -> None:
        """A render call returned its images (called by InstrumentedBackend, in the worker thread)."""
        self.batch_images.labels(model_label(batch.key.model)).observe(len(batch.tasks))
        with self._lock:
            for task in batch.tasks:
                self._job_images[task.job_id] = self._job_images.get(task.job_id, 0) + 1

    # -- what the rest of the bot tells us ------------------------------------------------------------

    def delivered(self, job_id: int) -> None:
        """The delivery code calls this once a job's result is on Discord.

        Counts the delivery; for a succeeded job this process saw finish, observes the time since.
        """
        self.deliveries.inc()
        finished = self._finished_at.pop(job_id, None)
        if finished is not None:
            self.delivering_seconds.labels(*finished[1]).observe(self._clock() - finished[0])

    def error(self, kind: str) -> None:
        """Count one error of a kind (e.g. "delivery", "store", "command")."""
        self.errors.labels(kind=kind).inc()

    def discord_error(self, status: int) -> None:
        """Count one Discord API error response (an HTTPException's `status`)."""
        self.discord_errors.labels(status=str(status)).inc()


class ErrorLogCounter(logging.Handler):
    """Counts the ERROR and CRITICAL records of the bot's own loggers (bot.*, inference.*) in
    `imagine_errors_total`, by the last part of the logger's name (bot.scheduler.scheduler: "scheduler",
    bot.discord_app.delivery: "delivery"). One handler for the process, feeding every watching Metrics."""

    def __init__(self) -> None:
        super().__init__(level=logging.ERROR)
        self._targets: weakref.WeakSet[Metrics] = weakref.WeakSet()

    def count_for(self, metrics: Metrics) -> None:
        for name in ("bot", "inference"):
            logger = logging.getLogger(name)
            if self not in logger.handlers:
                logger.addHandler(self)
        self._targets.add(metrics)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            kind = record.name.rsplit(".", 1)[-1]
            for metrics in list(self._targets):
                metrics.error(kind)
        except Exception:
            self.handleError(record)


_ERROR_COUNTER = ErrorLogCounter()


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
