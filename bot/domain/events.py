"""What the scheduler tells the rest of the bot about a job: state changes and progress, and the fields
that describe a job in a log line."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from bot.domain.jobs import Job, JobState, ModelKind


@dataclass(frozen=True)
class JobUpdate:
    job_id: int
    state: JobState
    step: int = 0  # denoising steps done in the running batch
    total_steps: int = 0
    error: str | None = None
    # The job as stored, on a change of state (not on progress): its kind and model label the metrics.
    job: Job | None = None
    # True when another process (a worker sharing the queue) moved the job and this one only learned of it:
    # each process counts only what it did itself, so that the numbers of several processes add up.
    elsewhere: bool = False

    @property
    def fraction(self) -> float:
        return self.step / self.total_steps if self.total_steps else 0.0


@dataclass(frozen=True)
class QueueInfo:
    """Where a job stands: position 0 means running now; eta_seconds is until it is done."""

    job_id: int
    state: JobState
    position: int
    eta_seconds: float


def model_label(model: str) -> str:
    """The model a job runs on, as logs and metrics name it: "full" (MODEL) or "fast" (FAST_MODEL)."""
    return "fast" if model == ModelKind.FAST else "full"


def seconds_between(start: datetime | None, end: datetime | None) -> float | None:
    """Seconds from one stored time to another (None when either is unknown), never below zero."""
    if start is None or end is None:
        return None
    return round(max(0.0, (end - start).total_seconds()), 3)


def job_fields(job: Job) -> dict[str, object]:
    """A job as structured log fields: which job, whose and where, and what it makes. Every line about a
    job's transition (queued, started, done, failed, cancelled, delivered) carries them."""
    spec = job.spec
    width, height = spec.output_size
    return {
        "job": job.id,
        "guild": spec.guild_id,
        "member": spec.user_id,
        "kind": spec.kind.value,
        "model": model_label(spec.model),
        "size": f"{width}x{height}",
        "steps": spec.params.steps,
        "images": spec.image_count,
    }
