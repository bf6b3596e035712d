"""JobStore: the durable record of jobs, images and moderation settings.

Every public method is one unit of work: one session, one transaction. State changes follow
`bot.domain.jobs.check_transition`; races with a member (a job cancelled while it rendered) are answered
as described on each method, while a transition no race can explain is a bug and raises InvalidTransition.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
from collections.abc import AsyncIterator, Callable, Collection, Iterator, Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, TypedDict, Unpack

from PIL import Image
from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Select,
    and_,
    bindparam,
    case,
    delete,
    exists,
    false,
    func,
    insert,
    not_,
    null,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.sql.dml import ReturningUpdate
from sqlalchemy.sql.elements import BindParameter

from bot.domain.clock import Clock
from bot.domain.errors import InvalidTransition, JobNotFound
from bot.domain.jobs import Job, JobKind, JobSpec, JobState, check_transition
from bot.domain.moderation import normalize_word
from bot.domain.params import GenerationParams
from bot.store.database import READ_ONLY, create_engine, lost_connection, migrate
from bot.store.errors import DatabaseUnreachable, ImageNotFound, StoreUnavailable
from bot.store.images import ImageFiles
from bot.store.models import (
    BanRow,
    Base,
    BlockedWordRow,
    GuildSettingsRow,
    ImageRow,
    JobRow,
    ModeratorActionRow,
    QuotaOverrideRow,
    UTCDateTime,
)
from bot.store.records import (
    Admission,
    AdmissionFacts,
    Ban,
    Completion,
    GuildSettings,
    JobResult,
    Lease,
    ModeratorAction,
    QuotaOverride,
    RecoveryReport,
    StoredImage,
)

log = logging.getLogger(__name__)

MAX_WORD_CHARS = 100


JOBS_CHANNEL = "imagine_jobs"  # PostgreSQL NOTIFY channel: a job is waiting
LISTEN_RETRY_SECONDS = 0.5  # pause before opening the listening connection again after losing it
# Ids are INTEGER columns: 32-bit on PostgreSQL. A larger id names no row (and would overflow the driver).
MAX_ID = 2**31 - 1
# A guild's settings and blocked words are cached this long; the store's own writes clear them at once.
GUILD_CACHE_SECONDS = 30.0


class GuildSettingsChanges(TypedDict, total=False):
    """The settings `update_guild_settings` can change; None resets one to the global default."""

    daily_quota: int | None
    rate_per_minute: int | None
    rate_burst: int | None
    max_concurrent: int | None
    max_steps: int | None
    buttons_for_everyone: bool
    fast_by_default: bool


_SETTING_NAMES = frozenset(GuildSettingsChanges.__annotations__)
_SWITCH_NAMES = frozenset({"buttons_for_everyone", "fast_by_default"})


class JobStore:
    def __init__(self, engine: AsyncEngine, images: ImageFiles, clock: Clock) -> None:
        self.engine = engine
        self.images = images
        self._clock = clock
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)
        self._write_turn: contextlib.AbstractAsyncContextManager[object] = (
            asyncio.Lock() if engine.dialect.name == "sqlite" else contextlib.nullcontext()
        )
        # guild id -> (when read, settings, blocked words); see admission_facts
        self._guild_cache: dict[int, tuple[float, GuildSettings, list[str]]] = {}
        self._read_sessions = async_sessionmaker(
            engine, expire_on_commit=False, execution_options={READ_ONLY: True}
        )

    @classmethod
    async def open(cls, database_url: str, image_dir: Path, clock: Clock) -> JobStore:
        """Migrate the database to the newest schema, then open it. Raises StoreUnavailable."""
        await migrate(database_url)
        try:
            await asyncio.to_thread(image_dir.mkdir, parents=True, exist_ok=True)
        except OSError as error:
            raise StoreUnavailable(
                f"Can't create the image folder {image_dir}: {error.strerror or error}."
            ) from error
        return cls(create_engine(database_url), ImageFiles(image_dir), clock)

    async def close(self) -> None:
        await self.engine.dispose()

    # Shared with the other stores of this package (deliveries) that use the same engine.
    @property
    def clock(self) -> Clock:
        return self._clock

    @contextlib.asynccontextmanager
    async def writing(self) -> AsyncIterator[AsyncSession]:
        """A unit of work that may write.

        SQLite has one writer at a time. Left to itself, a second writer sleeps in SQLite's busy handler
        (1, 2, 5, 10… ms); queueing writers of this process here instead costs nothing. Other processes
        still wait through busy_timeout. PostgreSQL writers run concurrently.
        """
        with _unreachable_when_connection_lost():
            async with self._write_turn, self._sessions.begin() as session:
                yield session

    @contextlib.asynccontextmanager
    async def reading(self) -> AsyncIterator[AsyncSession]:
        """A unit of work that only reads (on SQLite it never waits for a writer)."""
        with _unreachable_when_connection_lost():
            async with self._read_sessions.begin() as session:
                yield session

    async def __aenter__(self) -> JobStore:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # ---------------------------------------------------------------- jobs

    async def create_job(self, spec: JobSpec, *, admit: Admission | None = None) -> Job:
        """Store a new job, QUEUED, created now.

        With `admit`, the member's admission facts (quota used since `admit.since`, jobs in flight, ban,
        own quota) are read in the same transaction and handed to `admit.check`, which raises to refuse.
        Check and insert are atomic: two requests at once cannot both take a member's last slot.
        """
        now = self._clock.now()
        rules = None
        if admit is not None and spec.guild_id is not None:
            rules = await self.guild_rules(spec.guild_id)  # cached: read outside the write transaction
        values = dict(
            kind=spec.kind.value,
            state=JobState.QUEUED.value,
            user_id=spec.user_id,
            guild_id=spec.guild_id,
            channel_id=spec.channel_id,
            parent_job_id=spec.parent_job_id,
            source_image_id=spec.source_image_id,
            prompt=spec.params.prompt,
            negative_prompt=spec.params.negative_prompt,
            width=spec.params.width,
            height=spec.params.height,
            steps=spec.params.steps,
            guidance=spec.params.guidance,
            seed=spec.params.seed,
            aspect=spec.params.aspect,
            strength=spec.strength,
            model=spec.model,
            attempts=0,
            created_at=now,
        )
        async with self.writing() as session:
            # Friendly errors instead of a foreign-key violation.
            if spec.parent_job_id is not None and await session.get(JobRow, spec.parent_job_id) is None:
                raise JobNotFound(spec.parent_job_id)
            if spec.source_image_id is not None and await session.get(ImageRow, spec.source_image_id) is None:
                raise ImageNotFound(spec.source_image_id)
            if admit is not None:
                admit.check(
                    await self._member_facts(session, spec.guild_id, spec.user_id, admit.since, rules)
                )
            job_id = (await session.execute(_INSERT_JOB, values)).scalar_one()
            await self._announce(session)
            return Job(id=job_id, spec=spec, state=JobState.QUEUED, created_at=now)

    async def get_job(self, job_id: int) -> Job:
        if not 0 < job_id <= MAX_ID:
            raise JobNotFound(job_id)  # e.g. from a forged button: no row can have it, and drivers overflow
        async with self.reading() as session:
            row = await session.get(JobRow, job_id)
            if row is None:
                raise JobNotFound(job_id)
            return _job(row)

    async def get_jobs(self, ids: Sequence[int]) -> list[Job]:
        """The jobs with these ids, in the order asked; ids that do not exist are left out."""
        wanted = list(dict.fromkeys(ids))
        if not wanted:
            return []
        async with self.reading() as session:
            rows = (await session.scalars(select(JobRow).where(JobRow.id.in_(wanted)))).all()
        by_id = {row.id: _job(row) for row in rows}
        return [by_id[job_id] for job_id in wanted if job_id in by_id]

    async def list_jobs(
        self,
        *,
        states: Collection[JobState] | None = None,
        user_id: int | None = None,
        guild_id: int | None = None,
        limit: int | None = None,
        newest_first: bool = False,
    ) -> list[Job]:
        """Jobs matching every filter given, ordered by id (oldest first unless `newest_first`)."""
        query = select(JobRow)
        if states is not None:
            query = query.where(JobRow.state.in_([JobState(state).value for state in states]))
        if user_id is not None:
            query = query.where(JobRow.user_id == user_id)
        if guild_id is not None:
            query = query.where(JobRow.guild_id == guild_id)
        query = query.order_by(JobRow.id.desc() if newest_first else JobRow.id)
        if limit is not None:
            query = query.limit(limit)
        async with self.reading() as session:
            return [_job(row) for row in (await session.scalars(query)).all()]

    async def mark_running(self, job_ids: Sequence[int]) -> list[int]:
        """QUEUED -> RUNNING for these jobs; the ids that moved, in the order given (see start_jobs)."""
        return [job.id for job in await self.start_jobs(job_ids)]

    async def start_jobs(
        self, job_ids: Sequence[int], *, lease: Lease | None = None, limit: int | None = None
    ) -> list[Job]:
        """QUEUED -> RUNNING for these jobs, atomically; returns the jobs that moved, in the order given.

        A job that ended meanwhile (cancelled, or failed) is skipped. Without a lease (one process owns the
        queue) a job already RUNNING was handed out twice: InvalidTransition; an unknown id: JobNotFound.
        With a lease (workers share the queue) the jobs are claimed for `lease.owner` until the lease
        expires; jobs another worker holds or is claiming right now are skipped (FOR UPDATE SKIP LOCKED on
        PostgreSQL; SQLite has a single writer anyway), and at most `limit` of those still free are taken,
        in the order given: workers that chose the same jobs share them out in one round trip.
        """
        wanted = list(dict.fromkeys(job_ids))
        if not wanted:
            return []
        now = self._clock.now()
        async with self.writing() as session:
            claimable = wanted
            params: dict[str, Any] = {"now": now}
            if lease is not None:
                params.update(owner=lease.owner, until=now + timedelta(seconds=lease.seconds))
                locked = await session.scalars(_free_jobs_statement(), {"ids": wanted})
                free = set(locked.all())
                claimable = [job_id for job_id in wanted if job_id in free][:limit]
            rows = await session.execute(
                _start_statement(leased=lease is not None), {**params, "ids": claimable}
            )
            moved = {row.id: _job(row) for row in rows}
            if lease is None:
                await self._check_skipped(session, [i for i in wanted if i not in moved], JobState.RUNNING)
        return [moved[job_id] for job_id in wanted if job_id in moved]

    async def renew_leases(self, job_ids: Sequence[int], lease: Lease) -> list[int]:
        """Extend `lease.owner`'s lease on these jobs; returns the ids it still holds as RUNNING (a job
        missing from the answer was cancelled, failed, or given to another worker after a lapse)."""
        if not job_ids:
            return []
        until = self._clock.now() + timedelta(seconds=lease.seconds)
        async with self.writing() as session:
            held = await session.scalars(
                update(JobRow)
                .where(
                    JobRow.id.in_(list(job_ids)),
                    JobRow.state == JobState.RUNNING.value,
                    JobRow.lease_owner == lease.owner,
                )
                .values(lease_expires_at=until)
                .returning(JobRow.id)
                .execution_options(synchronize_session=False)
            )
            return sorted(held.all())

    async def complete_job(
        self, job_id: int, images: Sequence[Image.Image], seeds: Sequence[int]
    ) -> Completion:
        """Save a RUNNING job's images and mark it SUCCEEDED; the job as it ends (see complete_jobs)."""
        [completion] = await self.complete_jobs([JobResult(job_id, images, seeds)])
        return completion

    async def complete_jobs(
        self, results: Sequence[JobResult], *, owner: str | None = None
    ) -> list[Completion]:
        """Save RUNNING jobs' images and mark them SUCCEEDED, all in one transaction; return each job as it
        ends, in the order given.

        A job cancelled (or failed) while it rendered stays that way and stores nothing (its `images` is
        empty). The files are written first (in one thread), and removed again for a job that turns out
        to have ended, or all of them if the transaction fails. OSError from the disk is raised as is.
        A job that is neither RUNNING nor ended (QUEUED, or completed twice): InvalidTransition.
        With `owner` (a worker of a shared queue), a job whose lease that worker has lost is left to the
        worker that holds it now: it stores nothing, like a cancelled one.
        """
        for result in results:
            if len(result.images) != len(result.seeds):
                raise ValueError(
                    f"job {result.job_id}: {len(result.images)} images but {len(result.seeds)} seeds"
                )
        paths = await asyncio.to_thread(self._save_files, results)
        try:
            completions = await self._record_images(results, paths, owner)
        except InvalidTransition:
            raise  # completed twice: the files may belong to the completion that won, so leave them
        except Exception:
            await asyncio.to_thread(self._remove_files, [path for job_paths in paths for path in job_paths])
            raise
        unused = [
            path
            for c, job_paths in zip(completions, paths, strict=True)
            if not c.images
            for path in job_paths
        ]
        if unused:
            await asyncio.to_thread(
                self._remove_files, unused
            )  # ended meanwhile: the files belong to nothing
        return completions

    async def _record_images(
        self, results: Sequence[JobResult], paths: Sequence[Sequence[str]], owner: str | None
    ) -> list[Completion]:
        """Two statements for the whole batch, whatever its size: one UPDATE of the jobs still held, one
        INSERT of all their images."""
        now = self._clock.now()
        wanted = [result.job_id for result in results]
        async with self.writing() as session:
            updated = await session.execute(
                _succeed_statement(owned=owner is not None), {"ids": wanted, "now": now, "owner": owner}
            )
            done = {row.id: _job(row) for row in updated}
            image_values: list[dict[str, Any]] = []
            for result, job_paths in zip(results, paths, strict=True):
                job = done.get(result.job_id)
                if job is None:
                    continue
                if len(result.images) != job.spec.image_count:
                    # Raising rolls the transaction back: the jobs stay RUNNING.
                    raise ValueError(
                        f"job {job.id} makes {job.spec.image_count} images, got {len(result.images)}"
                    )
                image_values.extend(
                    {
                        "job_id": job.id,
                        "index": index,
                        "seed": seed,
                        "width": image.width,
                        "height": image.height,
                        "path": path,
                        "created_at": now,
                    }
                    for index, (image, seed, path) in enumerate(
                        zip(result.images, result.seeds, job_paths, strict=True)
                    )
                )
            stored: dict[int, list[StoredImage]] = {}
            if image_values:
                written = {(values["job_id"], values["index"]): values for values in image_values}
                # One multi-row INSERT; RETURNING may answer in any order, so each id is matched by its key.
                for image_id, job_id, index in await session.execute(_INSERT_IMAGES, image_values):
                    values = written[job_id, index]
                    stored.setdefault(job_id, []).append(
                        StoredImage(
                            id=image_id,
                            job_id=job_id,
                            index=index,
                            seed=values["seed"],
                            width=values["width"],
                            height=values["height"],
                            path=values["path"],
                        )
                    )
            skipped = [job_id for job_id in wanted if job_id not in done]
            others: dict[int, JobRow] = {}
            if skipped:
                current = await session.scalars(
                    select(JobRow).where(JobRow.id.in_(skipped)).execution_options(populate_existing=True)
                )
                others = {row.id: row for row in current.all()}
                # A lost lease is another worker's business; anything else must have ended meanwhile.
                lost = {i for i, row in others.items() if owner is not None and row.lease_owner != owner}
                await self._check_skipped(session, [i for i in skipped if i not in lost], JobState.SUCCEEDED)
        completions = []
        for job_id in wanted:
            if job_id in done:
                images = sorted(stored.get(job_id, []), key=lambda image: image.index)
                completions.append(Completion(done[job_id], images))
            else:
                completions.append(Completion(_job(others[job_id]), []))
        return completions

    async def fail_job(self, job_id: int, reason: str) -> Job:
        """QUEUED or RUNNING -> FAILED with `reason`; a job that already ended is returned unchanged."""
        return await self._finish(job_id, JobState.FAILED, error=reason)

    async def cancel_job(self, job_id: int) -> Job:
        """QUEUED or RUNNING -> CANCELLED; a job that already ended is returned unchanged."""
        return await self._finish(job_id, JobState.CANCELLED)

    async def requeue_jobs(self, job_ids: Sequence[int], reason: str) -> list[int]:
        """RUNNING -> QUEUED (a batch that could not go on); attempts are kept, any lease is dropped.

        `reason` is kept in the job's error field for the record. Jobs that ended meanwhile are skipped;
        returns the ids that went back, in the order given.
        """
        wanted = list(dict.fromkeys(job_ids))
        if not wanted:
            return []
        async with self.writing() as session:
            result = await session.execute(
                update(JobRow)
                .where(JobRow.id.in_(wanted), JobRow.state == JobState.RUNNING.value)
                .values(state=JobState.QUEUED.value, error=reason, lease_owner=None, lease_expires_at=None)
                .returning(JobRow.id)
                .execution_options(synchronize_session=False)
            )
            moved = set(result.scalars().all())
            await self._check_skipped(session, [i for i in wanted if i not in moved], JobState.QUEUED)
            await self._announce(session)
        return [job_id for job_id in wanted if job_id in moved]

    async def recover_interrupted(self, max_attempts: int, *, leases_only: bool = False) -> RecoveryReport:
        """Jobs left RUNNING by a process that died: queue them again, or give up on them.

        One process owning the queue calls this at start: every RUNNING job was interrupted. Workers
        sharing the queue call it with `leases_only`: only jobs whose lease has lapsed (their worker died or
        hung) are taken back. A job started `max_attempts` times or more fails instead of being requeued.
        """
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1; got {max_attempts}")
        report = RecoveryReport()
        now = self._clock.now()
        query = select(JobRow).where(JobRow.state == JobState.RUNNING.value).order_by(JobRow.id)
        if leases_only:
            query = query.where(JobRow.lease_expires_at < now)
        async with self.writing() as session:
            rows = (await session.scalars(query.with_for_update(skip_locked=True))).all()
            for row in rows:
                row.lease_owner = row.lease_expires_at = None
                if row.attempts < max_attempts:
                    check_transition(row.id, JobState.RUNNING, JobState.QUEUED)
                    row.state = JobState.QUEUED.value
                    row.error = "The bot restarted while making this image; trying again."
                    report.requeued.append(row.id)
                else:
                    check_transition(row.id, JobState.RUNNING, JobState.FAILED)
                    row.state = JobState.FAILED.value
                    row.error = f"The bot restarted {row.attempts} times while making this image; giving up."
                    row.finished_at = now
                    report.failed.append(row.id)
            if report.requeued:
                await self._announce(session)
        return report

    async def _finish(self, job_id: int, target: JobState, *, error: str | None = None) -> Job:
        now = self._clock.now()
        async with self.writing() as session:
            row = await session.get(JobRow, job_id, with_for_update=True)
            if row is None:
                raise JobNotFound(job_id)
            current = JobState(row.state)
            if current.is_final:
                return _job(row)
            check_transition(job_id, current, target)
            row.state = target.value
            row.finished_at = now
            if error is not None:
                row.error = error
            await session.flush()
            return _job(row)

    @staticmethod
    async def _check_skipped(session: AsyncSession, job_ids: list[int], target: JobState) -> None:
        """For jobs a conditional UPDATE left alone: fine if they ended meanwhile, else raise."""
        if not job_ids:
            return
        found = await session.execute(select(JobRow.id, JobRow.state).where(JobRow.id.in_(job_ids)))
        states: dict[int, str] = {job_id: state for job_id, state in found.all()}
        for job_id in job_ids:
            if job_id not in states:
                raise JobNotFound(job_id)
            current = JobState(states[job_id])
            if current in (JobState.CANCELLED, JobState.FAILED):
                continue  # a race with the member or a moderator, not a bug
            check_transition(job_id, current, target)
            # Allowed in principle, yet the conditional UPDATE did not match: the state the caller
            # expected is not the one the job is in.
            raise AssertionError(f"job {job_id}: unexpected state {current.value} for {target.value}")

    def _save_files(self, results: Sequence[JobResult]) -> list[list[str]]:
        """Each job's image files, in job order; on any error none of them is left behind."""
        paths: list[list[str]] = []
        try:
            for result in results:
                paths.append([])
                for index, image in enumerate(result.images):
                    paths[-1].append(self.images.save(result.job_id, index, image))
        except BaseException:
            self._remove_files([path for job_paths in paths for path in job_paths])
            raise
        return paths

    def _remove_files(self, paths: Sequence[str]) -> None:
        for path in paths:
            with contextlib.suppress(OSError):
                self.images.remove(path)

    # -------------------------------------------------------------- images

    async def get_image(self, image_id: int) -> StoredImage:
        if not 0 < image_id <= MAX_ID:
            raise ImageNotFound(image_id)
        async with self.reading() as session:
            row = await session.get(ImageRow, image_id)
            if row is None:
                raise ImageNotFound(image_id)
            return _image(row)

    async def job_images(self, job_id: int) -> list[StoredImage]:
        """A job's images ordered by their position; [] for a job without images."""
        async with self.reading() as session:
            rows = await session.scalars(
                select(ImageRow).where(ImageRow.job_id == job_id).order_by(ImageRow.index)
            )
            return [_image(row) for row in rows.all()]

    async def load_image(self, image_id: int) -> Image.Image:
        """The image, decoded, in RGB. A file gone from disk is ImageNotFound too."""
        image = await self.get_image(image_id)
        try:
            return await asyncio.to_thread(self.images.load, image.path)
        except FileNotFoundError as error:
            raise ImageNotFound(image_id) from error

    async def image_bytes(self, image_id: int) -> bytes:
        """The image's PNG file, e.g. to attach to a message."""
        image = await self.get_image(image_id)
        try:
            return await asyncio.to_thread(self.images.open_bytes, image.path)
        except FileNotFoundError as error:
            raise ImageNotFound(image_id) from error

    # ------------------------------------------------------- usage, quotas

    async def count_jobs_since(self, guild_id: int | None, user_id: int, since: datetime) -> int:
        """Jobs that count against the member's quota, created at or after `since`.

        If a moderator reset the member's usage later than `since`, counting starts there instead.
        Failed jobs do not count, nor jobs cancelled before they started. `guild_id=None` counts the
        member's jobs outside any guild (direct messages).
        """
        _require_aware(since)
        async with self.reading() as session:
            statement = _quota_count_statement(in_guild=guild_id is not None)
            params = {"guild_id": guild_id, "user_id": user_id, "since": since}
            return int(await session.scalar(statement, params) or 0)

    async def active_jobs(self, user_id: int) -> int:
        """How many of the member's jobs are queued or running, in every guild."""
        async with self.reading() as session:
            return int(await session.scalar(_active_count(_USER), {"user_id": user_id}) or 0)

    async def admission_facts(self, guild_id: int | None, user_id: int, since: datetime) -> AdmissionFacts:
        """Everything the checks on a new job need (see create_job's `admit` to check and create at once)."""
        rules = await self.guild_rules(guild_id) if guild_id is not None else None
        async with self.reading() as session:
            return await self._member_facts(session, guild_id, user_id, since, rules)

    async def guild_rules(self, guild_id: int) -> tuple[GuildSettings, list[str]]:
        """The guild's settings and blocked words, from a short-lived cache (see GUILD_CACHE_SECONDS)."""
        cached = self._guild_cache.get(guild_id)
        now = self._clock.monotonic()
        if cached is not None and now - cached[0] < GUILD_CACHE_SECONDS:
            return cached[1], cached[2]
        async with self.reading() as session:
            row = await session.get(GuildSettingsRow, guild_id)
            settings = GuildSettings(guild_id=guild_id) if row is None else _settings(row)
            words = await self._blocked_words(session, guild_id)
        self._guild_cache[guild_id] = (now, settings, words)
        return settings, words

    @staticmethod
    async def _member_facts(
        session: AsyncSession,
        guild_id: int | None,
        user_id: int,
        since: datetime,
        rules: tuple[GuildSettings, list[str]] | None,
    ) -> AdmissionFacts:
        """The member's facts in one statement, joined with the guild's (cached) rules."""
        _require_aware(since)
        statement = _member_facts_statement(in_guild=guild_id is not None)
        params = {"guild_id": guild_id, "user_id": user_id, "since": since}
        used, active, is_banned, daily_quota = (await session.execute(statement, params)).one()
        return AdmissionFacts(
            guild=rules[0] if rules else None,
            daily_quota_override=daily_quota,
            banned=bool(is_banned),
            blocked_words=rules[1] if rules else [],
            used_since=int(used or 0),
            active_jobs=int(active or 0),
        )

    async def _announce(self, session: AsyncSession) -> None:
        """Tell the workers sharing the queue that a job is waiting (sent when the transaction commits)."""
        if self.engine.dialect.name == "postgresql":
            await session.execute(select(func.pg_notify(JOBS_CHANNEL, "")))

    @contextlib.asynccontextmanager
    async def listening(self, on_announce: Callable[[], None]) -> AsyncIterator[bool]:
        """Call `on_announce` whenever a job becomes waiting, while inside; yields False (and calls nothing)
        where the database cannot announce it (SQLite), so callers poll.

        The listening connection is opened again whenever it is lost (a database restart), and
        `on_announce` is called each time it opens, for the jobs that arrived while nobody listened.
        """
        if self.engine.dialect.name != "postgresql":
            yield False
            return
        listener = asyncio.create_task(self._listen(on_announce), name="job-announcements")
        try:
            yield True
        finally:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener

    async def _listen(self, on_announce: Callable[[], None]) -> None:
        while True:
            try:
                await self._listen_once(on_announce)
                log.warning("lost the job announcements connection; listening again")
            except Exception:
                log.warning("can't listen for job announcements; trying again", exc_info=True)
            await asyncio.sleep(LISTEN_RETRY_SECONDS)

    async def _listen_once(self, on_announce: Callable[[], None]) -> None:
        """LISTEN on one connection until it is lost."""
        lost = asyncio.Event()

        def heard(*_: object) -> None:
            on_announce()

        async with self.engine.connect() as connection:
            raw = await connection.get_raw_connection()
            driver: Any = raw.driver_connection  # asyncpg's connection: LISTEN needs it directly
            driver.add_termination_listener(lambda *_: lost.set())
            await driver.add_listener(JOBS_CHANNEL, heard)
            on_announce()
            await lost.wait()
            await connection.invalidate()

    def _forget_guild_rules(self, guild_id: int) -> None:
        self._guild_cache.pop(guild_id, None)

    async def get_guild_settings(self, guild_id: int) -> GuildSettings:
        """The guild's settings; a guild never configured gets all defaults (None)."""
        async with self.reading() as session:
            row = await session.get(GuildSettingsRow, guild_id)
            return GuildSettings(guild_id=guild_id) if row is None else _settings(row)

    async def update_guild_settings(
        self, guild_id: int, **changes: Unpack[GuildSettingsChanges]
    ) -> GuildSettings:
        """Change some settings (None resets one to the default); the others keep their values."""
        unknown = set(changes) - _SETTING_NAMES
        if unknown:
            raise TypeError(f"unknown guild settings: {', '.join(sorted(unknown))}")
        values: dict[str, Any] = dict(changes)
        for name, value in values.items():
            if name in _SWITCH_NAMES:
                values[name] = bool(value)
            elif value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
                raise ValueError(f"{name} must be a whole number of at least 0, or None; got {value!r}")
        if not values:
            return await self.get_guild_settings(guild_id)
        values["updated_at"] = self._clock.now()
        async with self.writing() as session:
            await session.execute(self.upsert(GuildSettingsRow, {"guild_id": guild_id}, values))
            row = await session.get(GuildSettingsRow, guild_id, populate_existing=True)
            assert row is not None
        self._forget_guild_rules(guild_id)  # after the commit, so no reader can cache the old rules again
        return _settings(row)

    async def get_quota_override(self, guild_id: int, user_id: int) -> QuotaOverride | None:
        async with self.reading() as session:
            row = await session.get(QuotaOverrideRow, (guild_id, user_id))
            return None if row is None else _override(row)

    async def set_quota_override(
        self, guild_id: int, user_id: int, daily_quota: int | None, set_by: int
    ) -> QuotaOverride:
        """Give the member their own daily quota (None: back to the guild's). Keeps any usage reset."""
        if daily_quota is not None and daily_quota < 0:
            raise ValueError(f"daily_quota must be at least 0, or None; got {daily_quota}")
        values = {"daily_quota": daily_quota, "set_by": set_by, "updated_at": self._clock.now()}
        return await self._write_override(guild_id, user_id, values)

    async def reset_usage(self, guild_id: int, user_id: int, set_by: int) -> QuotaOverride:
        """`/quota reset`: from now on, only jobs created from this moment count against the quota."""
        now = self._clock.now()
        values = {"usage_reset_at": now, "set_by": set_by, "updated_at": now}
        return await self._write_override(guild_id, user_id, values)

    async def _write_override(self, guild_id: int, user_id: int, values: dict[str, Any]) -> QuotaOverride:
        async with self.writing() as session:
            keys = {"guild_id": guild_id, "user_id": user_id}
            await session.execute(self.upsert(QuotaOverrideRow, keys, values))
            row = await session.get(QuotaOverrideRow, (guild_id, user_id), populate_existing=True)
            assert row is not None
            return _override(row)

    # ------------------------------------------------------ bans and words

    async def ban(self, guild_id: int, user_id: int, reason: str, by: int) -> Ban:
        """Ban the member from /imagine in this guild (banning again replaces the reason)."""
        values = {"reason": reason, "banned_by": by, "created_at": self._clock.now()}
        async with self.writing() as session:
            await session.execute(self.upsert(BanRow, {"guild_id": guild_id, "user_id": user_id}, values))
            row = await session.get(BanRow, (guild_id, user_id), populate_existing=True)
            assert row is not None
            return _ban(row)

    async def unban(self, guild_id: int, user_id: int) -> bool:
        """Lift a ban; False if the member was not banned."""
        async with self.writing() as session:
            result = await session.execute(
                delete(BanRow)
                .where(BanRow.guild_id == guild_id, BanRow.user_id == user_id)
                .returning(BanRow.user_id)
            )
            return result.first() is not None

    async def is_banned(self, guild_id: int, user_id: int) -> bool:
        return await self.get_ban(guild_id, user_id) is not None

    async def get_ban(self, guild_id: int, user_id: int) -> Ban | None:
        async with self.reading() as session:
            row = await session.get(BanRow, (guild_id, user_id))
            return None if row is None else _ban(row)

    async def bans(self, guild_id: int) -> list[Ban]:
        """The guild's bans, oldest first."""
        async with self.reading() as session:
            rows = await session.scalars(
                select(BanRow).where(BanRow.guild_id == guild_id).order_by(BanRow.created_at, BanRow.user_id)
            )
            return [_ban(row) for row in rows.all()]

    async def add_blocked_word(self, guild_id: int, word: str, added_by: int) -> bool:
        """Block a word or phrase (stored case-folded, spaces collapsed); False if it was already blocked."""
        normalized = _stored_word(word)
        values = {
            "guild_id": guild_id,
            "word": normalized,
            "added_by": added_by,
            "created_at": self._clock.now(),
        }
        async with self.writing() as session:
            statement = self._insert(BlockedWordRow).values(values).on_conflict_do_nothing()
            result = await session.execute(statement.returning(BlockedWordRow.word))
            added = result.first() is not None
        self._forget_guild_rules(guild_id)
        return added

    async def remove_blocked_word(self, guild_id: int, word: str) -> bool:
        """Unblock a word; False if it was not blocked."""
        async with self.writing() as session:
            result = await session.execute(
                delete(BlockedWordRow)
                .where(BlockedWordRow.guild_id == guild_id, BlockedWordRow.word == _stored_word(word))
                .returning(BlockedWordRow.word)
            )
            removed = result.first() is not None
        self._forget_guild_rules(guild_id)
        return removed

    async def blocked_words(self, guild_id: int) -> list[str]:
        """The guild's blocked words, case-folded, in alphabetical order."""
        async with self.reading() as session:
            return await self._blocked_words(session, guild_id)

    @staticmethod
    async def _blocked_words(session: AsyncSession, guild_id: int) -> list[str]:
        words = await session.scalars(
            select(BlockedWordRow.word)
            .where(BlockedWordRow.guild_id == guild_id)
            .order_by(BlockedWordRow.word)
        )
        return list(words.all())

    # ---------------------------------------------------- moderator actions

    async def record_action(
        self,
        guild_id: int,
        moderator_id: int,
        action: str,
        target_user_id: int | None,
        details: Mapping[str, Any],
    ) -> None:
        """Append to the guild's moderation log. `details` must serialise to JSON (datetimes become text)."""
        row = ModeratorActionRow(
            guild_id=guild_id,
            moderator_id=moderator_id,
            action=action,
            target_user_id=target_user_id,
            details=json.dumps(dict(details), sort_keys=True, default=str),
            created_at=self._clock.now(),
        )
        async with self.writing() as session:
            session.add(row)

    async def actions(self, guild_id: int, limit: int = 25) -> list[ModeratorAction]:
        """The guild's most recent moderator actions, newest first."""
        async with self.reading() as session:
            rows = await session.scalars(
                select(ModeratorActionRow)
                .where(ModeratorActionRow.guild_id == guild_id)
                .order_by(ModeratorActionRow.created_at.desc(), ModeratorActionRow.id.desc())
                .limit(limit)
            )
            return [_action(row) for row in rows.all()]

    # -------------------------------------------------------------- helpers

    def _insert(self, model: type[Base]) -> postgresql.Insert | sqlite.Insert:
        """INSERT with ON CONFLICT: both backends spell it the same way, from their own dialect module."""
        if self.engine.dialect.name == "postgresql":
            return postgresql.insert(model)
        return sqlite.insert(model)

    def upsert(
        self, model: type[Base], keys: dict[str, Any], values: dict[str, Any]
    ) -> postgresql.Insert | sqlite.Insert:
        statement = self._insert(model).values({**keys, **values})
        return statement.on_conflict_do_update(index_elements=list(keys), set_=values)


# The admission statements are built once, with these parameters bound at each execution: building and
# keying a statement this size costs more than running it on SQLite.
_GUILD = bindparam("guild_id", type_=BigInteger())
_USER = bindparam("user_id", type_=BigInteger())
_SINCE = bindparam("since", type_=UTCDateTime())


@functools.cache
def _member_facts_statement(*, in_guild: bool) -> Select[Any]:
    """Quota used, jobs in flight, ban and own quota of the member (`guild_id`, `user_id`, `since`)."""
    banned: ColumnElement[bool] = false()
    own_quota: Any = null()
    if in_guild:
        banned = exists().where(BanRow.guild_id == _GUILD, BanRow.user_id == _USER)
        own_quota = (
            select(QuotaOverrideRow.daily_quota)
            .where(QuotaOverrideRow.guild_id == _GUILD, QuotaOverrideRow.user_id == _USER)
            .scalar_subquery()
        )
    return select(
        _quota_count(_GUILD if in_guild else None).scalar_subquery(),
        _active_count(_USER).scalar_subquery(),
        banned,
        own_quota,
    )


# The statements every job goes through, built once too (bound at each execution: `ids`, `now`, ...).
_IDS: BindParameter[Any] = bindparam("ids", expanding=True)
_NOW = bindparam("now", type_=UTCDateTime())
# Core statements on the tables, answered with plain rows: the ORM's bookkeeping (identity map, instance
# state, bulk-statement planning) cost more than the statements themselves.
_JOBS = Base.metadata.tables[JobRow.__tablename__]
_IMAGES = Base.metadata.tables[ImageRow.__tablename__]
_INSERT_JOB = insert(_JOBS).returning(_JOBS.c.id)
_INSERT_IMAGES = insert(_IMAGES).returning(_IMAGES.c.id, _IMAGES.c.job_id, _IMAGES.c.index)


@functools.cache
def _start_statement(*, leased: bool) -> ReturningUpdate[Any]:
    """QUEUED -> RUNNING for `ids` at `now`; with a lease, held by `owner` until `until`."""
    values: dict[str, Any] = {
        "state": JobState.RUNNING.value,
        "started_at": _NOW,
        "attempts": _JOBS.c.attempts + 1,
    }
    if leased:
        values.update(
            lease_owner=bindparam("owner"), lease_expires_at=bindparam("until", type_=UTCDateTime())
        )
    return (
        update(_JOBS)
        .where(_JOBS.c.id.in_(_IDS), _JOBS.c.state == JobState.QUEUED.value)
        .values(values)
        .returning(*_JOBS.c)
    )


@functools.cache
def _free_jobs_statement() -> Select[int]:
    """Which of `ids` are QUEUED and not being claimed by another worker right now (PostgreSQL locks)."""
    return (
        select(JobRow.id)
        .where(JobRow.id.in_(_IDS), JobRow.state == JobState.QUEUED.value)
        .with_for_update(skip_locked=True)
    )


@functools.cache
def _succeed_statement(*, owned: bool) -> ReturningUpdate[Any]:
    """RUNNING -> SUCCEEDED at `now` for `ids`; with `owned`, only those whose lease `owner` holds."""
    held = _JOBS.c.state == JobState.RUNNING.value
    if owned:
        held = and_(held, _JOBS.c.lease_owner == bindparam("owner"))
    return (
        update(_JOBS)
        .where(_JOBS.c.id.in_(_IDS), held)
        .values(state=JobState.SUCCEEDED.value, finished_at=_NOW, lease_expires_at=None)
        .returning(*_JOBS.c)
    )


@functools.cache
def _quota_count_statement(*, in_guild: bool) -> Select[int]:
    return _quota_count(_GUILD if in_guild else None)


def _quota_count(guild: Any | None) -> Select[int]:
    """Jobs counting against the quota since `since`, or since the member's usage reset if later; in the
    guild `guild` (a bound parameter), or outside any guild when None."""
    start: Any = _SINCE
    if guild is not None:
        reset_at = (
            select(QuotaOverrideRow.usage_reset_at)
            .where(QuotaOverrideRow.guild_id == guild, QuotaOverrideRow.user_id == _USER)
            .scalar_subquery()
        )
        start = case((reset_at > start, reset_at), else_=start)
    guild_matches: ColumnElement[bool] = (
        JobRow.guild_id.is_(None) if guild is None else JobRow.guild_id == guild
    )
    return (
        select(func.count())
        .select_from(JobRow)
        .where(
            guild_matches,
            JobRow.user_id == _USER,
            JobRow.created_at >= start,
            JobRow.state != JobState.FAILED.value,
            not_(and_(JobRow.state == JobState.CANCELLED.value, JobRow.started_at.is_(None))),
        )
    )


def _active_count(user: Any) -> Select[int]:
    return (
        select(func.count())
        .select_from(JobRow)
        .where(JobRow.user_id == user, JobRow.state.in_([JobState.QUEUED.value, JobState.RUNNING.value]))
    )


@contextlib.contextmanager
def _unreachable_when_connection_lost() -> Iterator[None]:
    """A lost or unopenable database connection becomes DatabaseUnreachable (a message for the member);
    any other error is left as it is."""
    try:
        yield
    except Exception as error:
        if lost_connection(error):
            raise DatabaseUnreachable() from error
        raise


def _stored_word(word: str) -> str:
    """The domain's normal form of a blocked word, checked to fit its column."""
    normalized = normalize_word(word)
    if not normalized:
        raise ValueError("a blocked word cannot be empty")
    if len(normalized) > MAX_WORD_CHARS:
        raise ValueError(f"a blocked word is at most {MAX_WORD_CHARS} characters; got {len(normalized)}")
    return normalized


def _require_aware(moment: datetime) -> None:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"naive datetime {moment!r}: pass a timezone-aware datetime")


def _job(row: JobRow | Row[Any]) -> Job:
    """From an ORM row or a Core row of the jobs table (the same names)."""
    spec = JobSpec(
        kind=JobKind(row.kind),
        user_id=row.user_id,
        params=GenerationParams(
            prompt=row.prompt,
            negative_prompt=row.negative_prompt,
            width=row.width,
            height=row.height,
            steps=row.steps,
            guidance=row.guidance,
            seed=row.seed,
            aspect=row.aspect,
        ),
        guild_id=row.guild_id,
        channel_id=row.channel_id,
        parent_job_id=row.parent_job_id,
        source_image_id=row.source_image_id,
        strength=row.strength,
        model=row.model,
    )
    return Job(
        id=row.id,
        spec=spec,
        state=JobState(row.state),
        created_at=row.created_at,
        attempts=row.attempts,
        started_at=row.started_at,
        finished_at=row.finished_at,
        error=row.error,
    )


def _image(row: ImageRow) -> StoredImage:
    return StoredImage(
        id=row.id,
        job_id=row.job_id,
        index=row.index,
        seed=row.seed,
        width=row.width,
        height=row.height,
        path=row.path,
    )


def _settings(row: GuildSettingsRow) -> GuildSettings:
    return GuildSettings(
        guild_id=row.guild_id,
        daily_quota=row.daily_quota,
        rate_per_minute=row.rate_per_minute,
        rate_burst=row.rate_burst,
        max_concurrent=row.max_concurrent,
        max_steps=row.max_steps,
        buttons_for_everyone=row.buttons_for_everyone,
        fast_by_default=row.fast_by_default,
        updated_at=row.updated_at,
    )


def _override(row: QuotaOverrideRow) -> QuotaOverride:
    return QuotaOverride(
        guild_id=row.guild_id,
        user_id=row.user_id,
        daily_quota=row.daily_quota,
        usage_reset_at=row.usage_reset_at,
        set_by=row.set_by,
        updated_at=row.updated_at,
    )


def _ban(row: BanRow) -> Ban:
    return Ban(
        guild_id=row.guild_id,
        user_id=row.user_id,
        reason=row.reason,
        banned_by=row.banned_by,
        created_at=row.created_at,
    )


def _action(row: ModeratorActionRow) -> ModeratorAction:
    return ModeratorAction(
        id=row.id,
        guild_id=row.guild_id,
        moderator_id=row.moderator_id,
        action=row.action,
        target_user_id=row.target_user_id,
        details=json.loads(row.details),
        created_at=row.created_at,
    )
