"""Stopping cleanly on SIGTERM (systemd, `docker stop`) and SIGINT (Ctrl-C).

`imagine-bot run` and `imagine-bot worker` catch both: the first asks the process to stop (no new batch is
taken; the running one gets STOP_TIMEOUT seconds to finish and be stored and delivered, else it goes back
to the queue); a second one asks it to hurry (the running batch goes back to the queue at once).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator, Coroutine
from typing import Any, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopSignals:
    """What the stop signals asked for so far: `requested` after the first, `hurry` after a second."""

    def __init__(self) -> None:
        self.requested = asyncio.Event()
        self.hurry = asyncio.Event()

    def receive(self, signum: int) -> None:
        name = signal.Signals(signum).name
        if not self.requested.is_set():
            log.info(
                "%s: stopping; no new batch is taken, the running one finishes within STOP_TIMEOUT "
                "(send %s again to hand it back to the queue now)",
                name,
                name,
            )
            self.requested.set()
        elif not self.hurry.is_set():
            log.warning("%s again: handing the running batch back to the queue now", name)
            self.hurry.set()

    async def unless_stopped(self, work: Coroutine[Any, Any, T]) -> T | None:
        """Run `work` (starting up: loading the model can take minutes) unless a stop is asked for first:
        then it is cancelled (cleaning up after itself) and the answer is None."""
        task = asyncio.ensure_future(work)
        stop = asyncio.ensure_future(self.requested.wait())
        try:
            await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            if not task.done():
                task.cancel()
                await asyncio.wait({task})
        if task.cancelled():
            return None
        return task.result()


@contextlib.asynccontextmanager
async def stop_signals() -> AsyncIterator[StopSignals]:
    """SIGTERM and SIGINT caught for the duration (where the loop can: the main thread, not Windows)."""
    loop = asyncio.get_running_loop()
    stops = StopSignals()
    installed = []
    for signum in SIGNALS:
        try:
            loop.add_signal_handler(signum, stops.receive, signum)
        except (NotImplementedError, RuntimeError, ValueError):
            continue  # not the main thread, or no signals here: Ctrl-C then interrupts as it always did
        installed.append(signum)
    try:
        yield stops
    finally:
        for signum in installed:
            loop.remove_signal_handler(signum)
