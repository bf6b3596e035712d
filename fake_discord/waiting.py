"""Event-driven waiting: every state change wakes the waiters, which re-check their condition."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class ChangeFeed:
    def __init__(self) -> None:
        self._event = asyncio.Event()

    def notify(self) -> None:
        # Swap in a fresh event so that waiters woken now wait again on the next change.
        event, self._event = self._event, asyncio.Event()
        event.set()

    async def wait_for(self, check: Callable[[], T | None], timeout: float, what: str) -> T:  # noqa: ASYNC109
        """Return `check()`'s first non-None result, re-checked on each change, or raise TimeoutError."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            result = check()
            if result is not None:
                return result
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
            event = self._event
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), remaining)
