"""What the scheduler tells the rest of the bot about a job: state changes and progress."""

from __future__ import annotations

from dataclasses import dataclass

from bot.domain.jobs import JobState


@dataclass(frozen=True)
class JobUpdate:
    job_id: int
    state: JobState
    step: int = 0  # denoising steps done in the running batch
    total_steps: int = 0
    error: str | None = None

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
