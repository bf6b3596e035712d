"""Jobs: what a member asked for, and the states a job moves through."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime

from bot.domain.errors import InvalidTransition
from bot.domain.params import GenerationParams


class JobKind(enum.StrEnum):
    GENERATE = "generate"  # four images from a prompt
    REROLL = "reroll"  # the same prompt again with new seeds
    VARIATION = "variation"  # four images close to one chosen image
    UPSCALE = "upscale"  # one chosen image at twice the size


class RenderMode(enum.StrEnum):
    """How the backend renders a job: the part of the kind that decides what can share a batch."""

    TXT2IMG = "txt2img"
    IMG2IMG = "img2img"
    UPSCALE = "upscale"


IMAGES_PER_JOB: dict[JobKind, int] = {
    JobKind.GENERATE: 4,
    JobKind.REROLL: 4,
    JobKind.VARIATION: 4,
    JobKind.UPSCALE: 1,
}

RENDER_MODE: dict[JobKind, RenderMode] = {
    JobKind.GENERATE: RenderMode.TXT2IMG,
    JobKind.REROLL: RenderMode.TXT2IMG,
    JobKind.VARIATION: RenderMode.IMG2IMG,
    JobKind.UPSCALE: RenderMode.UPSCALE,
}

# Kinds that start from an existing image.
NEEDS_SOURCE_IMAGE = frozenset({JobKind.VARIATION, JobKind.UPSCALE})


class ModelKind(enum.StrEnum):
    """Which model renders a job. Jobs of different models never share a batch (the model is in the key)."""

    DEFAULT = "default"  # the full model (MODEL): tens of steps with classifier-free guidance
    FAST = "fast"  # the few-step model (FAST_MODEL): a handful of steps, little or no guidance


class JobState(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_final(self) -> bool:
        return self in FINAL_STATES

    @property
    def is_active(self) -> bool:
        return self in (JobState.QUEUED, JobState.RUNNING)


class RemovalReason(enum.StrEnum):
    """Why a finished job's image files are gone (its row stays, for the record)."""

    DELETED = "deleted"  # its member or a moderator pressed 🗑
    EXPIRED = "expired"  # older than IMAGE_RETENTION_DAYS


FINAL_STATES = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED})

ALLOWED_TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    JobState.QUEUED: frozenset({JobState.RUNNING, JobState.CANCELLED, JobState.FAILED}),
    # RUNNING -> QUEUED: the process died mid-batch, or the batch was split after running out of memory.
    JobState.RUNNING: frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED, JobState.QUEUED}),
    JobState.SUCCEEDED: frozenset(),
    JobState.FAILED: frozenset(),
    JobState.CANCELLED: frozenset(),
}


def check_transition(job_id: int | None, current: JobState, target: JobState) -> None:
    if target not in ALLOWED_TRANSITIONS[current]:
        raise InvalidTransition(job_id, current.value, target.value)


@dataclass(frozen=True)
class BatchKey:
    """Jobs with equal keys can run in one pipeline call: these are the pipeline's scalar arguments."""

    mode: RenderMode
    width: int
    height: int
    steps: int
    guidance: float
    strength: float | None
    model: str = ModelKind.DEFAULT


@dataclass(frozen=True)
class JobSpec:
    """A job as the member asked for it, before it has an id."""

    kind: JobKind
    user_id: int
    params: GenerationParams
    guild_id: int | None = None
    channel_id: int | None = None
    parent_job_id: int | None = None
    source_image_id: int | None = None
    strength: float | None = None
    model: str = ModelKind.DEFAULT

    @property
    def is_fast(self) -> bool:
        return self.model == ModelKind.FAST

    @property
    def image_count(self) -> int:
        return IMAGES_PER_JOB[self.kind]

    @property
    def output_size(self) -> tuple[int, int]:
        """The size of the images this job makes (an upscale doubles its source)."""
        if self.kind is JobKind.UPSCALE:
            return self.params.width * 2, self.params.height * 2
        return self.params.width, self.params.height

    def batch_key(self) -> BatchKey:
        width, height = self.output_size
        return BatchKey(
            mode=RENDER_MODE[self.kind],
            width=width,
            height=height,
            steps=self.params.steps,
            guidance=self.params.guidance,
            strength=self.strength,
            model=self.model,
        )


@dataclass(frozen=True)
class Job:
    """A stored job: its spec plus what has happened to it."""

    id: int
    spec: JobSpec
    state: JobState
    created_at: datetime
    attempts: int = 0
    started_at: datetime | None = None
    finished_at: datetime | None = None
    error: str | None = None
    # Once its images are removed (deleted with 🗑, or expired): when, why, and who deleted them.
    removed_at: datetime | None = None
    removed_reason: RemovalReason | None = None
    removed_by: int | None = None
    # Output safety at delivery: how the result was shown (bot.domain.safety.Shown's value), and when a
    # moderator released it if it was held.
    shown: str | None = None
    released_at: datetime | None = None

    @property
    def is_removed(self) -> bool:
        return self.removed_at is not None

    @property
    def user_id(self) -> int:
        return self.spec.user_id

    @property
    def kind(self) -> JobKind:
        return self.spec.kind
