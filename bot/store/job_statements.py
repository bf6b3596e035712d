"""The statements every job goes through, built once and bound at each execution (`ids`, `now`, ...),
and the steps of the job store's transactions built on them.

They are Core statements on the tables, answered with plain rows: the ORM's bookkeeping (identity map,
instance state, bulk-statement planning) costs more than these statements themselves.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Select, and_, bindparam, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.dml import ReturningUpdate
from sqlalchemy.sql.elements import BindParameter

from bot.domain.errors import JobNotFound
from bot.domain.jobs import Job, JobState, check_transition
from bot.domain.records import JobResult, StoredImage
from bot.store.models import Base, ImageRow, JobRow, UTCDateTime

IDS: BindParameter[Any] = bindparam("ids", expanding=True)
NOW = bindparam("now", type_=UTCDateTime())
JOBS = Base.metadata.tables[JobRow.__tablename__]
IMAGES = Base.metadata.tables[ImageRow.__tablename__]
INSERT_JOB = insert(JOBS).returning(JOBS.c.id)
INSERT_IMAGES = insert(IMAGES).returning(IMAGES.c.id, IMAGES.c.job_id, IMAGES.c.index)


@functools.cache
def start_statement(*, leased: bool) -> ReturningUpdate[Any]:
    """QUEUED -> RUNNING for `ids` at `now`; with a lease, held by `owner` until `until`."""
    values: dict[str, Any] = {
        "state": JobState.RUNNING.value,
        "started_at": NOW,
        "attempts": JOBS.c.attempts + 1,
    }
    if leased:
        values.update(
            lease_owner=bindparam("owner"), lease_expires_at=bindparam("until", type_=UTCDateTime())
        )
    return (
        update(JOBS)
        .where(JOBS.c.id.in_(IDS), JOBS.c.state == JobState.QUEUED.value)
        .values(values)
        .returning(*JOBS.c)
    )


@functools.cache
def free_jobs_statement() -> Select[int]:
    """Which of `ids` are QUEUED and not being claimed by another worker right now (PostgreSQL locks)."""
    return (
        select(JobRow.id)
        .where(JobRow.id.in_(IDS), JobRow.state == JobState.QUEUED.value)
        .with_for_update(skip_locked=True)
    )


@functools.cache
def succeed_statement(*, owned: bool) -> ReturningUpdate[Any]:
    """RUNNING -> SUCCEEDED at `now` for `ids`; with `owned`, only those whose lease `owner` holds."""
    held = JOBS.c.state == JobState.RUNNING.value
    if owned:
        held = and_(held, JOBS.c.lease_owner == bindparam("owner"))
    return (
        update(JOBS)
        .where(JOBS.c.id.in_(IDS), held)
        .values(state=JobState.SUCCEEDED.value, finished_at=NOW, lease_expires_at=None)
        .returning(*JOBS.c)
    )


async def insert_images(
    session: AsyncSession,
    done: Mapping[int, Job],
    results: Sequence[JobResult],
    paths: Sequence[Sequence[str]],
    now: datetime,
) -> dict[int, list[StoredImage]]:
    """The images of the jobs in `done`, in one multi-row INSERT whatever the batch's size; each job's
    images by job id. A result with the wrong number of images raises (its transaction rolls back)."""
    image_values: list[dict[str, Any]] = []
    for result, job_paths in zip(results, paths, strict=True):
        job = done.get(result.job_id)
        if job is None:
            continue
        if len(result.images) != job.spec.image_count:
            # Raising rolls the transaction back: the jobs stay RUNNING.
            raise ValueError(f"job {job.id} makes {job.spec.image_count} images, got {len(result.images)}")
        scores = result.safety_scores or [None] * len(result.images)
        image_values.extend(
            {
                "job_id": job.id,
                "index": index,
                "seed": seed,
                "width": image.width,
                "height": image.height,
                "path": path,
                "safety_score": score,
                "created_at": now,
            }
            for index, (image, seed, path, score) in enumerate(
                zip(result.images, result.seeds, job_paths, scores, strict=True)
            )
        )
    stored: dict[int, list[StoredImage]] = {}
    if image_values:
        written = {(values["job_id"], values["index"]): values for values in image_values}
        # One multi-row INSERT; RETURNING may answer in any order, so each id is matched by its key.
        for image_id, job_id, index in await session.execute(INSERT_IMAGES, image_values):
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
                    safety_score=values["safety_score"],
                )
            )
    return stored


async def check_skipped(session: AsyncSession, job_ids: list[int], target: JobState) -> None:
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
