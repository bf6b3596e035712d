"""The job store: jobs, their state changes and their images; nothing else (moderation data lives in
`moderation.py`, Discord's delivery bookkeeping in `deliveries.py`).

Every public method is one unit of work. State changes follow `bot.domain.jobs.check_transition`; races
with a member (a job cancelled while it rendered) are answered as described on each method, while a
transition no race can explain is a bug and raises InvalidTransition.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Collection, Sequence
from datetime import timedelta
from typing import Any

from PIL import Image
from sqlalchemy import select, update

from bot.domain.errors import InvalidTransition, JobNotFound
from bot.domain.jobs import Job, JobSpec, JobState, check_transition
from bot.domain.records import Admission, Completion, JobResult, Lease, RecoveryReport, StoredImage
from bot.store.admission import AdmissionStore
from bot.store.errors import ImageNotFound
from bot.store.images import ImageFiles
from bot.store.job_statements import (
    INSERT_JOB,
    check_skipped,
    free_jobs_statement,
    insert_images,
    start_statement,
    succeed_statement,
)
from bot.store.models import ImageRow, JobRow
from bot.store.notify import Announcements
from bot.store.rows import image_from_row, job_from_row
from bot.store.unit_of_work import Database

# Ids are INTEGER columns: 32-bit on PostgreSQL. A larger id names no row (and would overflow the driver).
MAX_ID = 2**31 - 1


class JobStore:
    def __init__(
        self,
        database: Database,
        images: ImageFiles,
        admission: AdmissionStore,
        announcements: Announcements,
    ) -> None:
        self._database = database
        self.images = images
        self._admission = admission
        self._announcements = announcements

    # -- jobs ---------------------------------------------------------------------------------------------

    async def create_job(self, spec: JobSpec, *, admit: Admission | None = None) -> Job:
        """Store a new job, QUEUED, created now.

        With `admit`, the member's admission facts (quota used since `admit.since`, jobs in flight, ban,
        own quota) are read in the same transaction and handed to `admit.check`, which raises to refuse.
        Check and insert are atomic: two requests at once cannot both take a member's last slot.
        """
        now = self._database.clock.now()
        rules = None
        if admit is not None and spec.guild_id is not None:
            rules = await self._admission.guild_rules(spec.guild_id)  # cached: read outside the transaction
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
        async with self._database.writing() as session:
            # Friendly errors instead of a foreign-key violation.
            if spec.parent_job_id is not None and await session.get(JobRow, spec.parent_job_id) is None:
                raise JobNotFound(spec.parent_job_id)
            if spec.source_image_id is not None and await session.get(ImageRow, spec.source_image_id) is None:
                raise ImageNotFound(spec.source_image_id)
            if admit is not None:
                admit.check(
                    await self._admission.member_facts(
                        session, spec.guild_id, spec.user_id, admit.since, rules
                    )
                )
            job_id = (await session.execute(INSERT_JOB, values)).scalar_one()
            await self._announcements.announce(session)
            return Job(id=job_id, spec=spec, state=JobState.QUEUED, created_at=now)

    async def get_job(self, job_id: int) -> Job:
        if not 0 < job_id <= MAX_ID:
            raise JobNotFound(job_id)  # e.g. from a forged button: no row can have it, and drivers overflow
        async with self._database.reading() as session:
            row = await session.get(JobRow, job_id)
            if row is None:
                raise JobNotFound(job_id)
            return job_from_row(row)

    async def get_jobs(self, ids: Sequence[int]) -> list[Job]:
        """The jobs with these ids, in the order asked; ids that do not exist are left out."""
        wanted = list(dict.fromkeys(ids))
        if not wanted:
            return []
        async with self._database.reading() as session:
            rows = (await session.scalars(select(JobRow).where(JobRow.id.in_(wanted)))).all()
        by_id = {row.id: job_from_row(row) for row in rows}
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
        async with self._database.reading() as session:
            return [job_from_row(row) for row in (await session.scalars(query)).all()]

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
        now = self._database.clock.now()
        async with self._database.writing() as session:
            claimable = wanted
            params: dict[str, Any] = {"now": now}
            if lease is not None:
                params.update(owner=lease.owner, until=now + timedelta(seconds=lease.seconds))
                locked = await session.scalars(free_jobs_statement(), {"ids": wanted})
                free = set(locked.all())
                claimable = [job_id for job_id in wanted if job_id in free][:limit]
            rows = await session.execute(
                start_statement(leased=lease is not None), {**params, "ids": claimable}
            )
            moved = {row.id: job_from_row(row) for row in rows}
            if lease is None:
                await check_skipped(session, [i for i in wanted if i not in moved], JobState.RUNNING)
        return [moved[job_id] for job_id in wanted if job_id in moved]

    async def renew_leases(self, job_ids: Sequence[int], lease: Lease) -> list[int]:
        """Extend `lease.owner`'s lease on these jobs; returns the ids it still holds as RUNNING (a job
        missing from the answer was cancelled, failed, or given to another worker after a lapse)."""
        if not job_ids:
            return []
        until = self._database.clock.now() + timedelta(seconds=lease.seconds)
        async with self._database.writing() as session:
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
        paths = await asyncio.to_thread(self.images.save_results, results)
        try:
            completions = await self._record_images(results, paths, owner)
        except InvalidTransition:
            raise  # completed twice: the files may belong to the completion that won, so leave them
        except Exception:
            await asyncio.to_thread(
                self.images.remove_all, [path for job_paths in paths for path in job_paths]
            )
            raise
        unused = [
            path
            for c, job_paths in zip(completions, paths, strict=True)
            if not c.images
            for path in job_paths
        ]
        if unused:
            await asyncio.to_thread(self.images.remove_all, unused)  # ended meanwhile: they belong to nothing
        return completions

    async def _record_images(
        self, results: Sequence[JobResult], paths: Sequence[Sequence[str]], owner: str | None
    ) -> list[Completion]:
        """Two statements for the whole batch, whatever its size: one UPDATE of the jobs still held, one
        INSERT of all their images."""
        now = self._database.clock.now()
        wanted = [result.job_id for result in results]
        async with self._database.writing() as session:
            updated = await session.execute(
                succeed_statement(owned=owner is not None), {"ids": wanted, "now": now, "owner": owner}
            )
            done = {row.id: job_from_row(row) for row in updated}
            stored = await insert_images(session, done, results, paths, now)
            skipped = [job_id for job_id in wanted if job_id not in done]
            others: dict[int, JobRow] = {}
            if skipped:
                current = await session.scalars(
                    select(JobRow).where(JobRow.id.in_(skipped)).execution_options(populate_existing=True)
                )
                others = {row.id: row for row in current.all()}
                # A lost lease is another worker's business; anything else must have ended meanwhile.
                lost = {i for i, row in others.items() if owner is not None and row.lease_owner != owner}
                await check_skipped(session, [i for i in skipped if i not in lost], JobState.SUCCEEDED)
        completions = []
        for job_id in wanted:
            if job_id in done:
                images = sorted(stored.get(job_id, []), key=lambda image: image.index)
                completions.append(Completion(done[job_id], images))
            else:
                completions.append(Completion(job_from_row(others[job_id]), []))
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
        async with self._database.writing() as session:
            result = await session.execute(
                update(JobRow)
                .where(JobRow.id.in_(wanted), JobRow.state == JobState.RUNNING.value)
                .values(state=JobState.QUEUED.value, error=reason, lease_owner=None, lease_expires_at=None)
                .returning(JobRow.id)
                .execution_options(synchronize_session=False)
            )
            moved = set(result.scalars().all())
            await check_skipped(session, [i for i in wanted if i not in moved], JobState.QUEUED)
            await self._announcements.announce(session)
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
        now = self._database.clock.now()
        query = select(JobRow).where(JobRow.state == JobState.RUNNING.value).order_by(JobRow.id)
        if leases_only:
            query = query.where(JobRow.lease_expires_at < now)
        async with self._database.writing() as session:
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
                await self._announcements.announce(session)
        return report

    async def _finish(self, job_id: int, target: JobState, *, error: str | None = None) -> Job:
        now = self._database.clock.now()
        async with self._database.writing() as session:
            row = await session.get(JobRow, job_id, with_for_update=True)
            if row is None:
                raise JobNotFound(job_id)
            current = JobState(row.state)
            if current.is_final:
                return job_from_row(row)
            check_transition(job_id, current, target)
            row.state = target.value
            row.finished_at = now
            if error is not None:
                row.error = error
            await session.flush()
            return job_from_row(row)

    # -- images -------------------------------------------------------------------------------------------

    async def get_image(self, image_id: int) -> StoredImage:
        if not 0 < image_id <= MAX_ID:
            raise ImageNotFound(image_id)
        async with self._database.reading() as session:
            row = await session.get(ImageRow, image_id)
            if row is None:
                raise ImageNotFound(image_id)
            return image_from_row(row)

    async def job_images(self, job_id: int) -> list[StoredImage]:
        """A job's images ordered by their position; [] for a job without images."""
        async with self._database.reading() as session:
            rows = await session.scalars(
                select(ImageRow).where(ImageRow.job_id == job_id).order_by(ImageRow.index)
            )
            return [image_from_row(row) for row in rows.all()]

    async def load_image(self, image_id: int) -> Image.Image:
        """The image, decoded, in RGB. A file gone from disk is ImageNotFound too."""
        image = await self.get_image(image_id)
        try:
            return await asyncio.to_thread(self.images.load, image.path)
        except FileNotFoundError as error:
            raise ImageNotFound(image_id) from error

    # -- new-job notification -----------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def listening(self, on_announce: Callable[[], None]) -> AsyncIterator[bool]:
        """While inside, `on_announce` is called whenever a job becomes waiting (see Announcements)."""
        async with self._announcements.listening(on_announce) as announced:
            yield announced
