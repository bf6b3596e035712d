"""The GPU scheduler: one asyncio task owns the queue; one worker thread owns the GPU.

Every queue mutation happens on the event loop (submit, cancel, the loop itself), so the policy needs no
locks. The backend runs in a single dedicated thread so the event loop never blocks on the GPU and the
GPU never runs two batches at once. The store is the source of truth: a job is written as QUEUED before
it reaches the scheduler, and on start the scheduler rebuilds its queue from the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from PIL import Image

from bot.domain.batching import Batch, BatchingConfig, FairBatchPolicy, QueueEntry, Wait
from bot.domain.clock import Clock
from bot.domain.errors import BackendOutOfMemory, GenerationInterrupted
from bot.domain.estimates import DurationEstimator
from bot.domain.events import JobUpdate, QueueInfo, job_fields, seconds_between
from bot.domain.jobs import NEEDS_SOURCE_IMAGE, Job, JobState
from bot.domain.records import Completion, JobResult, Lease
from bot.domain.render import GenerationBackend, ImageClassifier, ImageTask, RenderBatch
from bot.store.errors import DatabaseUnreachable
from bot.store.jobs import JobStore

log = logging.getLogger(__name__)

Listener = Callable[[JobUpdate], None]

MAX_STORING_BATCHES = 2  # rendered batches that may be storing while the next one renders
STOP_GRACE = 10.0  # seconds stop() waits for rendered results to be stored
HALT_GRACE = 10.0  # seconds drain() waits for a render told to stop to reach its next step
STORE_RETRY_SECONDS = 1.0  # pause after the store failed, before the loop tries again
DISK_FULL = "The bot's disk is full, so this image could not be saved. Please tell the server's admins."
DISK_FULL_ERRORS = frozenset({errno.ENOSPC, errno.EDQUOT})  # no space left; over the disk quota


@dataclass(frozen=True)
class SharedQueue:
    """Run as one of several processes sharing the store's queue (PostgreSQL), instead of owning it.

    Each process keeps its own copy of the queue in its policy, refreshed from the store every
    `poll_seconds` (and at once when the store announces a new job), and claims a batch with a lease it
    renews every third of `lease_seconds`; a lapsed lease sends the jobs back to the queue. With
    `render=False` the process only watches the queue (queue positions, results made elsewhere).
    """

    worker: str
    lease_seconds: float = 30.0
    poll_seconds: float = 1.0
    render: bool = True

    @property
    def lease(self) -> Lease:
        return Lease(self.worker, self.lease_seconds)


@dataclass
class _Running:
    batch: Batch
    started: float
    estimate: float
    step: int = 0
    total_steps: int = 0


class _StepRelay:
    """Hands the newest step from the GPU thread to the event loop with at most one wake-up in flight: steps
    the loop has not taken yet (it was busy, or the steps came fast) are folded into the newest."""

    def __init__(self, loop: asyncio.AbstractEventLoop, deliver: Callable[[int, int], None]) -> None:
        self._loop = loop
        self._deliver = deliver
        self._newest = (0, 0)
        self._delivered = 0
        self._pending = False

    def __call__(self, step: int, total: int) -> None:
        """In the GPU thread."""
        self._newest = (step, total)
        if not self._pending:
            self._pending = True
            self._loop.call_soon_threadsafe(self._relay)

    def _relay(self) -> None:
        self._pending = False  # before reading: a step written after this schedules its own relay
        step, total = self._newest
        if step > self._delivered:
            self._delivered = step
            self._deliver(step, total)


async def _within(deadline: float, tasks: set[asyncio.Task[None]], hurry: asyncio.Event | None) -> bool:
    """Wait until every task is done (True), or until the loop's clock reaches `deadline` or `hurry` is set
    (False)."""
    loop = asyncio.get_running_loop()
    hurried = asyncio.ensure_future(hurry.wait()) if hurry is not None else None
    pending: set[asyncio.Future[Any]] = set(tasks)
    try:
        while pending:
            remaining = deadline - loop.time()
            if remaining <= 0 or (hurried is not None and hurried.done()):
                return False
            watched = pending | {hurried} if hurried is not None else pending
            done, _ = await asyncio.wait(watched, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
            pending -= done
        return True
    finally:
        if hurried is not None:
            hurried.cancel()


class GpuScheduler:
    def __init__(
        self,
        store: JobStore,
        backend: GenerationBackend,
        config: BatchingConfig,
        clock: Clock,
        *,
        max_attempts: int = 3,
        estimator: DurationEstimator | None = None,
        store_beside_render: bool = True,
        shared: SharedQueue | None = None,
        warm_up: Callable[[], object] | None = None,
        classifier: ImageClassifier | None = None,
    ) -> None:
        """`warm_up` runs in the GPU thread once the model has loaded and before the scheduler reports
        ready or takes a batch (the app warms up the shapes it will serve: bot/domain/warm_up.py).
        `classifier` scores every rendered image for output safety before it is stored, in a thread of
        its own beside the next render (None: images are stored unscored)."""
        self._store = store
        self._backend = backend
        self._clock = clock
        self._policy = FairBatchPolicy(config)
        self._estimator = estimator or DurationEstimator()
        self._max_attempts = max_attempts
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gpu")
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self._running: _Running | None = None
        self._cancel_requested: set[int] = set()
        self._listeners: list[Listener] = []
        self._finished: dict[int, asyncio.Future[Job]] = {}
        self._saving: set[asyncio.Task[None]] = set()
        # False stores each batch before the next starts: only to measure what overlapping gains.
        self._store_beside_render = store_beside_render
        self._shared = shared
        self._warm_up = warm_up
        self._classifier = classifier
        self._helpers: list[asyncio.Task[None]] = []  # shared queue: refresh and heartbeat
        self._elsewhere: set[int] = set()  # jobs known here that another process is running
        self._mine: set[int] = set()  # jobs this process claimed and has not finished
        self._places_cache: tuple[int, dict[int, tuple[int, float]]] | None = None
        self._in_hand: Batch | None = None  # the batch claimed for the current render
        # Claimed jobs a store failure left RUNNING: queued again as soon as the store answers.
        self._orphans: dict[int, QueueEntry] = {}
        self._announced = asyncio.Event()  # the store announced a new job (PostgreSQL NOTIFY)
        self._disk_full = False  # the last batch could not be saved for want of space (logged once)
        self.load_error: BaseException | None = None
        self._draining = False  # drain(): the loop takes no new batch
        self._halting = False  # drain() ran out of time: the render stops at its next step

    # -- lifecycle -----------------------------------------------------------------------------------

    async def start(self) -> None:
        """Recover jobs a dead process left running, queue every waiting job, and start the loop."""
        await self._recover()
        for job in await self._store.list_jobs(states=[JobState.QUEUED]):
            self._enqueue(job)
        if self._shared is not None:
            self._helpers = [
                asyncio.create_task(self._refresh_loop(self._shared), name="queue-refresh"),
                asyncio.create_task(self._heartbeat_loop(self._shared), name="lease-heartbeat"),
            ]
            if not self._shared.render:
                self._ready.set()  # nothing to load: this process only watches the queue
                return
        self._task = asyncio.create_task(self._loop(), name="gpu-scheduler")

    async def _recover(self) -> None:
        """Take back jobs whose process died: all RUNNING ones when this process owns the queue, only
        those whose lease lapsed when several share it."""
        report = await self._store.recover_interrupted(
            self._max_attempts, leases_only=self._shared is not None
        )
        for job_id in report.failed:
            job = await self._store.get_job(job_id)
            _log_job("job failed", job, error=job.error, attempts=job.attempts)
            self._emit(JobUpdate(job_id, job.state, error=job.error, job=job))
            self._resolve(job)
        if report.requeued:
            log.info("requeued %d interrupted jobs", len(report.requeued))
            self._wake.set()

    async def stop(self) -> None:
        """Stop taking batches; results already rendered are stored first (for STOP_GRACE seconds at most).

        A batch still rendering goes back to the queue at once, for this process's next start or for
        another worker (should that fail too, the next start or a lapsed lease takes it back).
        """
        for helper in self._helpers:
            helper.cancel()
        await asyncio.gather(*self._helpers, return_exceptions=True)
        self._helpers = []
        if self._task is not None:
            abandoned = self._in_hand
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
            if abandoned is not None:
                ids = [job_id for job_id in abandoned.job_ids if job_id in self._mine]
                reason = "The bot stopped while making this image; trying again."
                try:
                    await self._store.requeue_jobs(ids, reason)
                except Exception:
                    log.warning("could not queue the interrupted batch again", exc_info=True)
        if self._saving:
            _, late = await asyncio.wait(self._saving, timeout=STOP_GRACE)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def drain(self, timeout: float, *, hurry: asyncio.Event | None = None) -> None:  # noqa: ASYNC109
        """Stop cleanly (SIGTERM): take no new batch; let the batch rendering now finish and its results be
        stored, for `timeout` seconds at most (or until `hurry` is set); then hand the jobs this process
        claimed and did not finish back to the queue, and stop as `stop` does.

        What finishes meanwhile is reported to the listeners as usual, so the bot can still deliver it.
        Queued jobs stay queued in the store, for the next start or another worker. A render that runs out
        of time stops at its next step.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        self._draining = True
        self._wake.set()  # the loop leaves at once if it waits for work or for batch-mates
        task = self._task
        if task is not None:
            if not self._ready.is_set() or not await _within(deadline, {task}, hurry):
                self._halting = True
                if not await _within(loop.time() + HALT_GRACE, {task}, None):
                    task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            self._task = None
        saving = set(self._saving)
        if saving and not await _within(deadline, saving, hurry):
            for late in saving:
                late.cancel()
            await asyncio.gather(*saving, return_exceptions=True)
        await self._hand_back("The bot stopped while making this image; trying again.")
        await self.stop()

    async def _hand_back(self, reason: str) -> None:
        """Queue again the jobs this process claimed and did not finish, of those it still holds (on a shared
        queue, a job whose lease lapsed may be another worker's by now)."""
        ids = sorted(self._mine)
        if not ids:
            return
        try:
            if self._shared is not None:
                ids = await self._store.renew_leases(ids, self._shared.lease)
            else:
                ids = [job.id for job in await self._store.get_jobs(ids) if job.state is JobState.RUNNING]
            requeued = await self._store.requeue_jobs(ids, reason)
        except Exception:
            log.warning(
                "could not hand the unfinished jobs back to the queue; the next start (or, on a shared "
                "queue, their lapsed lease) takes them back",
                exc_info=True,
            )
            return
        self._mine.difference_update(requeued)
        for job_id in requeued:
            self._orphans.pop(job_id, None)
        if requeued:
            log.info(
                "handed %d unfinished job(s) back to the queue", len(requeued), extra={"job_ids": requeued}
            )

    async def wait_ready(self) -> None:
        """Wait until the model is loaded and warmed up (raises what loading or warming up raised)."""
        await self._ready.wait()
        if self.load_error is not None:
            raise self.load_error

    @property
    def native_resolution(self) -> int:
        return self._backend.native_resolution

    @property
    def renders(self) -> bool:
        """False for a process that only watches a shared queue (`imagine-bot run --no-worker`)."""
        return self._shared is None or self._shared.render

    @property
    def is_running(self) -> bool:
        """The model is loaded and the loop takes batches (for liveness probes); a process that only
        watches a shared queue is running while it keeps watching."""
        if self._shared is not None and not self._shared.render:
            return bool(self._helpers) and not any(task.done() for task in self._helpers)
        return (
            self.load_error is None
            and self._ready.is_set()
            and self._task is not None
            and not self._task.done()
        )

    # -- commands --------------------------------------------------------------------------------------

    def submit(self, job: Job) -> None:
        """Queue a job that is already stored as QUEUED."""
        self._enqueue(job)
        _log_job("job queued", job, queue_length=len(self._policy))
        self._emit(JobUpdate(job.id, JobState.QUEUED, job=job))
        self._wake.set()

    async def cancel(self, job_id: int) -> Job:
        """Cancel a queued or running job; a finished job is returned as it is."""
        job = await self._store.cancel_job(job_id)
        if job.state is not JobState.CANCELLED:
            return job
        self._policy.remove(job_id)
        if self._running is not None and job_id in self._running.batch.job_ids:
            # The worker thread sees this at its next step and stops once the whole batch is cancelled.
            self._cancel_requested.add(job_id)
        _log_job("job cancelled", job)
        self._emit(JobUpdate(job_id, JobState.CANCELLED, job=job))
        self._resolve(job)
        self._wake.set()
        return job

    def add_listener(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def remove_listener(self, listener: Listener) -> None:
        self._listeners.remove(listener)

    async def wait_finished(self, job_id: int) -> Job:
        """Wait until a job is final and return it."""
        future = self._finished.get(job_id)
        if future is None:
            future = self._finished[job_id] = asyncio.get_running_loop().create_future()
        job = await self._store.get_job(job_id)
        if job.state.is_final:
            self._finished.pop(job_id, None)
            return job
        return await asyncio.shield(future)

    def queue_info(self, job_id: int) -> QueueInfo | None:
        """Position (0 = running now) and seconds until done, or None when the job is not waiting here."""
        now = self._clock.monotonic()
        remaining = 0.0
        running = self._running
        if running is not None:
            remaining = max(0.0, running.estimate - (now - running.started))
            if job_id in running.batch.job_ids:
                return QueueInfo(job_id, JobState.RUNNING, 0, remaining)
        place = self._places().get(job_id)
        if place is None:
            return None
        position, seconds_after_running = place
        return QueueInfo(job_id, JobState.QUEUED, position, remaining + seconds_after_running)

    def _places(self) -> dict[int, tuple[int, float]]:
        """Each queued job's position and its seconds from the end of the running batch, per queue version."""
        if self._places_cache is None or self._places_cache[0] != self._policy.version:
            places: dict[int, tuple[int, float]] = {}
            eta = 0.0
            for batch in self._policy.plan():
                eta += self._estimator.estimate(batch.key, batch.images)
                for job_id in batch.job_ids:
                    places[job_id] = (len(places) + 1, eta)
            self._places_cache = (self._policy.version, places)
        return self._places_cache[1]

    @property
    def queued_count(self) -> int:
        return len(self._policy)

    # -- the loop --------------------------------------------------------------------------------------

    def _enqueue(self, job: Job) -> None:
        # Keep the job's real age, so jobs reloaded after a restart keep their order.
        age = max(0.0, (self._clock.now() - job.created_at).total_seconds())
        entry = QueueEntry(
            job_id=job.id,
            user_id=job.user_id,
            key=job.spec.batch_key(),
            images=job.spec.image_count,
            enqueued_at=self._clock.monotonic() - age,
        )
        if job.id not in self._policy:
            self._policy.add(entry)

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._executor, self._backend.load)
            if self._classifier is not None:
                await loop.run_in_executor(self._executor, self._classifier.load)
            if self._warm_up is not None:
                await loop.run_in_executor(self._executor, self._warm_up)
        except Exception as error:
            # Raised to whoever waits (wait_ready), which says it in one line; the traceback at DEBUG.
            log.debug("the model failed to load or to warm up", exc_info=True)
            self.load_error = error
            self._ready.set()
            return
        self._ready.set()
        while not self._draining:
            self._wake.clear()
            if self._orphans and not await self._requeue_orphans():
                await asyncio.sleep(STORE_RETRY_SECONDS)
                continue
            decision = self._policy.schedule(self._clock.monotonic())
            if decision is None:
                await self._wake.wait()
            elif isinstance(decision, Wait):
                delay = max(0.0, decision.until - self._clock.monotonic())
                # Hold the batch for batch-mates; a new job wakes us early and the policy decides again.
                # asyncio.timeout, not wait_for: on Python 3.11 wait_for drops a cancellation (stop()) that
                # arrives just as the event is set, and the task would never end.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._wake.wait()
            else:
                try:
                    await self._run_batch(decision)
                except Exception:
                    # The store failed (a database restart, say): nothing is lost, the loop goes on.
                    log.exception("the store failed around a batch; its jobs will be queued again")
                    self._set_aside(self._in_hand or decision)
                    await asyncio.sleep(STORE_RETRY_SECONDS)
                finally:
                    self._in_hand = None

    def _set_aside(self, batch: Batch) -> None:
        """After a store failure: unclaimed jobs go back to the queue now, claimed ones once the store
        answers again."""
        for entry in batch.entries:
            if entry.job_id in self._mine:
                self._orphans[entry.job_id] = entry
            elif entry.job_id not in self._policy:
                self._policy.put_back([entry])
        self._wake.set()

    async def _requeue_orphans(self) -> bool:
        try:
            moved = set(
                await self._store.requeue_jobs(list(self._orphans), "The store failed; trying again.")
            )
        except Exception:
            log.warning("the store still fails; will try again", exc_info=True)
            return False
        self._policy.put_back(entry for job_id, entry in self._orphans.items() if job_id in moved)
        self._mine.difference_update(self._orphans)
        self._orphans.clear()
        return True

    async def _run_batch(self, batch: Batch) -> None:
        if self._shared is None:
            jobs = await self._store.start_jobs(batch.job_ids)  # jobs cancelled meanwhile are left out
        else:
            batch, jobs = await self._claim(batch, self._shared)
        self._in_hand = batch
        self._mine.update(job.id for job in jobs)
        if not jobs:
            return
        tasks: list[ImageTask] = []
        for job in jobs:
            try:
                tasks.extend(await self._tasks_for(job))
            except Exception as error:
                await self._fail([job.id], f"I couldn't read the image to start from: {error}")
        jobs = [job for job in jobs if any(task.job_id == job.id for task in tasks)]
        if not jobs:
            return
        started = self._clock.monotonic()
        self._running = _Running(batch, started, self._estimator.estimate(batch.key, len(tasks)))
        for job in jobs:
            _log_job(
                "job started",
                job,
                batch=len(tasks),
                queue_wait=seconds_between(job.created_at, job.started_at),
                attempt=job.attempts,
                worker=self._shared.worker if self._shared is not None else None,
            )
            self._emit(JobUpdate(job.id, JobState.RUNNING, job=job))
        try:
            images = await self._render_in_budget(RenderBatch(batch.key, tasks), [job.id for job in jobs])
        except GenerationInterrupted:
            if self._halting:
                log.info("batch interrupted: the process is stopping; its jobs go back to the queue")
            else:
                log.info("batch interrupted: every job in it was cancelled")
            return
        except BackendOutOfMemory:
            await self._fail(
                [job.id for job in jobs], "The GPU ran out of memory even for a single image of this size."
            )
            return
        except Exception as error:
            log.exception("batch failed", extra={"job_ids": [job.id for job in jobs]})
            await self._fail([job.id for job in jobs], f"The image generator failed: {error}")
            return
        finally:
            self._running = None
            self._cancel_requested.difference_update(batch.job_ids)
        self._estimator.observe(batch.key, len(tasks), self._clock.monotonic() - started)
        if not self._store_beside_render:
            await self._complete(jobs, tasks, images)
            return
        # Storing (PNG files, the database) runs beside the next batch's render, so the GPU does not wait
        # for the disk; a bounded number of batches may be storing at once.
        while len(self._saving) >= MAX_STORING_BATCHES:
            await asyncio.wait(self._saving, return_when=asyncio.FIRST_COMPLETED)
        saving = asyncio.create_task(self._complete(jobs, tasks, images), name="store-batch")
        self._saving.add(saving)
        saving.add_done_callback(self._saving.discard)

    async def _claim(self, batch: Batch, shared: SharedQueue) -> tuple[Batch, list[Job]]:
        """Claim the batch, or as much of it as other workers left, topped up with the next compatible jobs.

        Workers whose copies of the queue agree choose the same batch; offering the store the compatible
        jobs that follow lets each take a share in the same round trip instead of coming back empty.
        """
        entries = {entry.job_id: entry for entry in batch.entries}
        spares = [entry for entry in self._policy.compatible(batch.key) if entry.job_id not in entries]
        entries.update((entry.job_id, entry) for entry in spares)
        jobs = await self._store.start_jobs(list(entries), lease=shared.lease, limit=len(batch.entries))
        claimed = {job.id for job in jobs}
        for entry in spares:
            if entry.job_id in claimed:
                self._policy.remove(entry.job_id, served=True)
        self._elsewhere.update(set(batch.job_ids) - claimed)  # taken by another worker, or cancelled
        return Batch(batch.key, tuple(entries[job.id] for job in jobs)), jobs

    async def _tasks_for(self, job: Job) -> list[ImageTask]:
        spec = job.spec
        source: Image.Image | None = None
        if spec.kind in NEEDS_SOURCE_IMAGE:
            if spec.source_image_id is None:
                raise ValueError("this job has no source image")
            source = await self._store.load_image(spec.source_image_id)
        return [
            ImageTask(
                job_id=job.id,
                index=index,
                prompt=spec.params.prompt,
                negative_prompt=spec.params.negative_prompt,
                seed=seed,
                source=source,
            )
            for index, seed in enumerate(spec.params.image_seeds(spec.image_count))
        ]

    async def _render_in_budget(self, batch: RenderBatch, job_ids: Sequence[int]) -> list[Image.Image]:
        """Render in calls no larger than the budget learned for this shape (a single job may exceed it)."""
        size = self._policy.budget(batch.key)
        images: list[Image.Image] = []
        for start in range(0, len(batch.tasks), size):
            chunk = RenderBatch(batch.key, batch.tasks[start : start + size])
            images.extend(await self._render(chunk, job_ids))
        return images

    async def _render(self, batch: RenderBatch, job_ids: Sequence[int]) -> list[Image.Image]:
        """Render a batch; when the GPU runs out of memory, split it in halves and learn the smaller size."""
        loop = asyncio.get_running_loop()
        watched = frozenset(job_ids)

        relay = _StepRelay(loop, self._progress)

        def on_step(step: int, total: int) -> bool:
            relay(step, total)
            return not (self._halting or watched <= self._cancel_requested)

        try:
            return await loop.run_in_executor(self._executor, self._backend.render, batch, on_step)
        except BackendOutOfMemory:
            if len(batch.tasks) == 1:
                raise
            half = len(batch.tasks) // 2
            self._policy.limit_key(batch.key, half)
            log.warning("out of GPU memory with %d images; retrying as %d", len(batch.tasks), half)
            first = await self._render(RenderBatch(batch.key, batch.tasks[:half]), job_ids)
            second = await self._render(RenderBatch(batch.key, batch.tasks[half:]), job_ids)
            return first + second

    @property
    def classifier(self) -> ImageClassifier | None:
        """The safety classifier this scheduler loads and scores with (None: none)."""
        return self._classifier

    async def _safety_scores(self, images: Sequence[Image.Image]) -> list[float | None]:
        """Each image's P(unsafe), in one batched call off the event loop; None for every image when there
        is no classifier or it failed (the server's safety mode then decides what an unscored image gets)."""
        if self._classifier is None or not images:
            return [None] * len(images)
        try:
            scores = await asyncio.to_thread(self._classifier.scores, images)
        except Exception:
            log.exception("the safety classifier failed; these images are stored unscored")
            return [None] * len(images)
        return list(scores)

    def _progress(self, step: int, total: int) -> None:
        running = self._running
        if running is None:
            return
        running.step, running.total_steps = step, total
        for job_id in running.batch.job_ids:
            if job_id not in self._cancel_requested:
                self._emit(JobUpdate(job_id, JobState.RUNNING, step=step, total_steps=total))

    async def _complete(
        self, jobs: Sequence[Job], tasks: Sequence[ImageTask], images: Sequence[Image.Image]
    ) -> None:
        scores = await self._safety_scores(images)
        results = [
            JobResult(
                job.id,
                [image for task, image in zip(tasks, images, strict=True) if task.job_id == job.id],
                [task.seed for task in tasks if task.job_id == job.id],
                [score for task, score in zip(tasks, scores, strict=True) if task.job_id == job.id],
            )
            for job in jobs
        ]
        try:
            completions = await self._store_results(results)
        except OSError as error:
            job_ids = [job.id for job in jobs]
            if error.errno in DISK_FULL_ERRORS:
                # Every batch fails the same way until someone frees space: say so once, not per batch.
                if not self._disk_full:
                    log.error("the image folder's disk is full; jobs fail until space is freed: %s", error)
                self._disk_full = True
                reason = DISK_FULL
            else:
                log.exception("could not save images", extra={"job_ids": job_ids})
                reason = f"I made the images but couldn't save them ({error.strerror or error})."
            await self._fail(job_ids, reason)
            return
        except Exception as error:
            # The jobs must not stay RUNNING in silence.
            log.exception("could not store the results", extra={"job_ids": [job.id for job in jobs]})
            await self._fail([job.id for job in jobs], f"I made the images but couldn't store them: {error}")
            return
        if self._disk_full:
            self._disk_full = False
            log.info("images are saved again: the disk has space")
        for completion in completions:
            final = completion.job
            if final.state is JobState.CANCELLED:
                continue  # cancelled while it ran: cancel() already told everyone
            if not final.state.is_final:
                self._mine.discard(final.id)
                self._elsewhere.add(final.id)  # our lease lapsed: another worker makes it now
                continue
            _log_job(
                "job done" if final.state is JobState.SUCCEEDED else "job failed",
                final,
                batch=len(tasks),
                queue_wait=seconds_between(final.created_at, final.started_at),
                render_time=seconds_between(final.started_at, final.finished_at),
                error=final.error,
            )
            self._emit(JobUpdate(final.id, final.state, error=final.error, job=final))
            self._resolve(final)

    async def _store_results(self, results: Sequence[JobResult]) -> list[Completion]:
        """Store rendered results; while the database is unreachable (a restart) they are kept in hand and
        stored once it answers again, rather than failing jobs whose images are made."""
        owner = self._shared.worker if self._shared is not None else None
        while True:
            try:
                return await self._store.complete_jobs(results, owner=owner)
            except DatabaseUnreachable:
                log.warning(
                    "the database is unreachable; storing the rendered batch again in a moment",
                    extra={"job_ids": [result.job_id for result in results]},
                )
                await asyncio.sleep(STORE_RETRY_SECONDS)

    async def _fail(self, job_ids: Sequence[int], reason: str) -> None:
        for job_id in job_ids:
            job = await self._store.fail_job(job_id, reason)
            if job.state is JobState.FAILED:
                _log_job(
                    "job failed",
                    job,
                    render_time=seconds_between(job.started_at, job.finished_at),
                    error=job.error,
                )
            self._emit(JobUpdate(job_id, job.state, error=job.error, job=job))
            self._resolve(job)

    # -- sharing the queue with other processes ------------------------------------------------------------

    async def _refresh_loop(self, shared: SharedQueue) -> None:
        """Keep the policy's queue equal to the store's, and report jobs other processes finished.

        Polls every `poll_seconds`; on PostgreSQL a new job's NOTIFY wakes it at once.
        """
        async with self._store.listening(self._announced.set):
            while True:
                self._announced.clear()
                try:
                    await self._refresh()
                except Exception:
                    log.exception("could not refresh the shared queue; trying again")
                with contextlib.suppress(TimeoutError):  # asyncio.timeout: see _loop
                    async with asyncio.timeout(shared.poll_seconds):
                        await self._announced.wait()

    async def _refresh(self) -> None:
        queued = {job.id: job for job in await self._store.list_jobs(states=[JobState.QUEUED])}
        for job in queued.values():
            if job.id not in self._policy and job.id not in self._mine:
                self._enqueue(job)
                self._elsewhere.discard(job.id)
        for job_id in self._policy.job_ids() - queued.keys():
            self._policy.remove(job_id, served=True)  # claimed by another worker (or cancelled)
            self._elsewhere.add(job_id)
        for job in await self._store.get_jobs(sorted(self._elsewhere)):
            if job.state.is_final:
                self._elsewhere.discard(job.id)
                # Not logged here: the process that finished it logged it.
                self._emit(JobUpdate(job.id, job.state, error=job.error, job=job, elsewhere=True))
                self._resolve(job)
        self._wake.set()

    async def _heartbeat_loop(self, shared: SharedQueue) -> None:
        """Renew the lease of the batch in hand, stop jobs that are no longer ours, take back lapsed ones."""
        while True:
            await asyncio.sleep(shared.lease_seconds / 3)
            try:
                running = self._running
                if running is not None:
                    ids = list(running.batch.job_ids)
                    held = set(await self._store.renew_leases(ids, shared.lease))
                    # Cancelled, or lost after a lapse: the render stops once none of its jobs is ours.
                    self._cancel_requested.update(job_id for job_id in ids if job_id not in held)
                await self._recover()
            except Exception:
                log.exception("lease heartbeat failed; trying again")

    def _emit(self, update: JobUpdate) -> None:
        for listener in list(self._listeners):
            try:
                listener(update)
            except Exception:
                log.exception("a job listener failed")

    def _resolve(self, job: Job) -> None:
        self._mine.discard(job.id)
        future = self._finished.pop(job.id, None)
        if future is not None and not future.done():
            future.set_result(job)


def _log_job(message: str, job: Job, **fields: object) -> None:
    """One INFO line for a job's transition, with the job's fields (bot.domain.events.job_fields) and these
    (those that are None left out)."""
    extra = job_fields(job)
    extra.update((key, value) for key, value in fields.items() if value is not None)
    log.info(message, extra=extra)
