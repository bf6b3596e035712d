"""Liveness and readiness of the worker and the store, as plain callables the server and metrics use."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Protocol

# Returns None when ready, else a one-line reason.
ReadyCheck = Callable[[], Awaitable[str | None]]

STORE_TIMEOUT = 2.0  # seconds the store may take to answer the readiness query


class ProbedScheduler(Protocol):
    load_error: BaseException | None

    @property
    def is_running(self) -> bool: ...


class ProbedDatabase(Protocol):
    async def ping(self) -> None: ...


def scheduler_worker_up(scheduler: ProbedScheduler) -> bool:
    """True while the scheduler's model is loaded and its loop task runs."""
    return scheduler.is_running


def scheduler_ready_check(scheduler: ProbedScheduler, database: ProbedDatabase) -> ReadyCheck:
    """Ready when the worker is up and the store answers a trivial query within STORE_TIMEOUT."""

    async def check() -> str | None:
        if scheduler.load_error is not None:
            return f"the model failed to load: {type(scheduler.load_error).__name__}"
        if not scheduler_worker_up(scheduler):
            return "the model is not loaded or the scheduler is not running"
        try:
            await asyncio.wait_for(database.ping(), STORE_TIMEOUT)
        except TimeoutError:
            return "the store did not answer in time"
        except Exception as error:
            return f"the store failed: {type(error).__name__}"
        return None

    return check
