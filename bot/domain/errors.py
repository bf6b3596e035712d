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
