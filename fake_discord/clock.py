"""Clocks: the fake measures interaction deadlines and token lifetimes against one of these."""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Seconds on a monotonic scale; only differences matter."""
        ...


class RealClock:
    """Wall time (monotonic), the default: a slow bot really misses the 3 s deadline."""

    def now(self) -> float:
        return time.monotonic()


class ManualClock:
    """A clock the test moves by hand, so deadline tests need no sleeping."""

    def __init__(self, start: float = 0.0) -> None:
        self._now = start

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("time does not run backwards")
        self._now += seconds
