"""Domain errors. Each carries a message written for the member who caused it."""

from __future__ import annotations


class ImagineError(Exception):
    """Base of every error a member may see; `str(error)` is the friendly message."""


class InvalidRequest(ImagineError):
    """The request itself is wrong: a bad flag, size, number or prompt."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class LimitExceeded(ImagineError):
    """A rate limit, concurrency cap or daily quota refuses the request for now."""

    def __init__(self, message: str, *, kind: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.retry_after = retry_after


class NotAllowed(ImagineError):
    """The member may not do this (banned, not the owner, not a moderator, blocked word)."""


class JobNotFound(ImagineError):
    def __init__(self, job_id: int) -> None:
        super().__init__(f"I can't find job #{job_id}.")
        self.job_id = job_id


class ImageRemoved(ImagineError):
    """The job's images are gone: deleted by its member or a moderator, or expired after the retention
    period (`retention_days`, 0 or None when unknown). Its buttons and reactions answer with this."""

    def __init__(self, job_id: int, reason: str, retention_days: int | None = None) -> None:
        if reason == "expired":
            kept = f": images are kept {_days(retention_days)}" if retention_days else ""
            message = f"This image has expired{kept}."
        else:
            message = "This image was removed."
        super().__init__(message)
        self.job_id = job_id
        self.reason = reason


def _days(days: int | None) -> str:
    return "1 day" if days == 1 else f"{days} days"


class InvalidTransition(Exception):
    """A job was asked to move between states in a way the state machine forbids (a bug, not input)."""

    def __init__(self, job_id: int | None, current: str, target: str) -> None:
        super().__init__(f"job {job_id}: cannot go from {current} to {target}")
        self.job_id = job_id
        self.current = current
        self.target = target


class BackendOutOfMemory(Exception):
    """The generation backend ran out of accelerator memory for this batch; a smaller one may fit."""


class GenerationInterrupted(Exception):
    """The backend stopped early because every job in the batch was cancelled."""
