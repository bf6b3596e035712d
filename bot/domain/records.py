"""What the store hands back and takes: plain frozen dataclasses, so callers never see rows or sessions."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypedDict

from bot.domain.jobs import Job

if TYPE_CHECKING:
    from PIL import Image


@dataclass(frozen=True)
class StoredImage:
    id: int
    job_id: int
    index: int  # position in its job, 0-3
    seed: int
    width: int
    height: int
    path: str  # relative to the image folder
    safety_score: float | None = None  # P(unsafe) from the classifier; None: never scored


@dataclass(frozen=True)
class JobResult:
    """What a job rendered: its images, in order, the seed of each, and each one's safety score (P(unsafe)
    from the classifier; None where no classifier ran)."""

    job_id: int
    images: Sequence[Image.Image]
    seeds: Sequence[int]
    safety_scores: Sequence[float | None] | None = None


@dataclass(frozen=True)
class Lease:
    """A worker's claim on the jobs it runs, renewed by heartbeats; a lapsed one sends them back."""

    owner: str  # the worker's name, unique among the workers sharing the queue
    seconds: float


@dataclass(frozen=True)
class Completion:
    """A job as `complete_job` left it: SUCCEEDED with its images, or ended meanwhile with none."""

    job: Job
    images: list[StoredImage]


@dataclass(frozen=True)
class RecoveryReport:
    """What `recover_interrupted` did with the jobs that were running when the process stopped."""

    requeued: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class Removal:
    """A job whose images were removed just now, and what that freed (nothing if they were gone already)."""

    job: Job
    files: int
    bytes: int


@dataclass(frozen=True)
class PruneReport:
    """What pruning the images of jobs finished before `cutoff` freed (or would free, in a dry run)."""

    cutoff: datetime
    jobs: int = 0
    files: int = 0
    bytes: int = 0
    dry_run: bool = False


@dataclass(frozen=True)
class GuildSettings:
    """A guild's overrides; None means "the global default"."""

    guild_id: int
    daily_quota: int | None = None
    rate_per_minute: int | None = None
    rate_burst: int | None = None
    max_concurrent: int | None = None
    max_steps: int | None = None
    buttons_for_everyone: bool = False
    fast_by_default: bool = False  # jobs use the fast model unless a member asks for the full one
    safety_mode: str | None = None  # bot.domain.safety.SafetyMode's value
    safety_threshold: float | None = None
    updated_at: datetime | None = None  # None: never set, all defaults


class GuildSettingsChanges(TypedDict, total=False):
    """The settings a moderator can change; None resets one to the global default."""

    daily_quota: int | None
    rate_per_minute: int | None
    rate_burst: int | None
    max_concurrent: int | None
    max_steps: int | None
    buttons_for_everyone: bool
    fast_by_default: bool
    safety_mode: str | None
    safety_threshold: float | None


@dataclass(frozen=True)
class QuotaOverride:
    guild_id: int
    user_id: int
    daily_quota: int | None  # None: the guild's quota
    usage_reset_at: datetime | None  # usage counts only jobs created at or after this
    set_by: int
    updated_at: datetime


@dataclass(frozen=True)
class Ban:
    guild_id: int
    user_id: int
    reason: str
    banned_by: int
    created_at: datetime


@dataclass(frozen=True)
class ModeratorAction:
    id: int
    guild_id: int
    moderator_id: int
    action: str
    target_user_id: int | None
    details: dict[str, Any]
    created_at: datetime


@dataclass(frozen=True)
class AdmissionFacts:
    """What the checks on a new job need to know about the member, read together."""

    guild: GuildSettings | None  # None outside a guild
    daily_quota_override: int | None  # the member's own quota, if a moderator set one
    banned: bool
    blocked_words: list[str]
    used_since: int  # jobs counting against the quota since the time asked for (and any usage reset)
    active_jobs: int  # queued or running, in every guild


@dataclass(frozen=True)
class Admission:
    """A check to run on the member's facts in the same transaction that stores their new job."""

    since: datetime  # count the quota from here (the start of the quota day)
    check: Callable[[AdmissionFacts], None]  # raises to refuse the job


@dataclass(frozen=True)
class DeliveryTarget:
    """Where a new job's status message is, and how its result may reach it."""

    channel_id: int
    message_id: int | None  # None: no status message, the result is posted as a new message
    interaction_token: str | None = field(repr=False)  # a secret: never in a log line
    token_expires_at: datetime | None
    upload_limit: int  # bytes per file the result may upload


@dataclass(frozen=True)
class Delivery:
    """Where a job's status message is, and whether its result went out (Discord's bookkeeping)."""

    job_id: int
    channel_id: int
    message_id: int | None
    interaction_token: str | None = field(repr=False)  # a secret: never in a log line
    token_expires_at: datetime | None
    upload_limit: int
    attempted_at: datetime | None
    delivered_at: datetime | None
    result_channel_id: int | None
    result_message_id: int | None
