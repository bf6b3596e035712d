"""Small helpers shared by the benchmark scripts: percentiles, machine facts, a quiet system under test."""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import platform
import random
import time
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime

from bot.domain.clock import Clock
from bot.domain.limits import UserLimits
from bot.domain.members import Requester
from bot.domain.params import GenerationLimits
from bot.scheduler.scheduler import GpuScheduler
from bot.services.imagine import ImagineService
from bot.store import Stores
from inference.machine import cpu_model

GUILD_ID = 1_000_000_000_000
CHANNEL_ID = 2_000_000_000_000
# Limits so high that every admission check runs and none refuses.
HIGH_LIMITS = UserLimits(rate_per_minute=1e9, burst=10**9, max_concurrent=10**9, daily_quota=10**9)


def guild_member(user_id: int) -> Requester:
    """A member of the benchmark guild (not a moderator, so the quota is counted too)."""
    return Requester(user_id=user_id, guild_id=GUILD_ID, channel_id=CHANNEL_ID)


def percentile(values: Sequence[float], fraction: float) -> float:
    """The `fraction` quantile (0..1) with linear interpolation between the closest ranks."""
    if not values:
        return math.nan
    ordered = sorted(values)
    position = (len(ordered) - 1) * fraction
    low = math.floor(position)
    high = math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def machine_line() -> str:
    """One line for the report: date, cores, CPU model, Python, and the load when the run started."""
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else math.nan
    return (
        f"{datetime.now(UTC):%Y-%m-%d} · {os.cpu_count()} cores · {cpu_model()} · "
        f"Python {platform.python_version()} · load {load:.2f} at start"
    )


def benchmark_service(stores: Stores, scheduler: GpuScheduler, size: int, clock: Clock) -> ImagineService:
    """The service as the bot builds it, at the benchmark's image size and with limits that never refuse."""
    return ImagineService(
        stores.jobs,
        stores.admission,
        scheduler,
        removals=stores.removals,
        actions=stores.moderation,
        generation=GenerationLimits(base_resolution=size),
        user_limits=HIGH_LIMITS,
        clock=clock,
        rng=random.Random(0),
    )


@contextlib.asynccontextmanager
async def loop_stalls(interval: float = 0.001) -> AsyncIterator[list[float]]:
    """While inside, how late (ms) the event loop ran a task that asked to wake every `interval` seconds:
    what a Discord heartbeat or an interaction's answer would have waited while the loop was busy."""
    stalls: list[float] = []

    async def watch() -> None:
        while True:
            before = time.perf_counter()
            await asyncio.sleep(interval)
            stalls.append(max(0.0, time.perf_counter() - before - interval) * 1000)

    watcher = asyncio.create_task(watch(), name="loop-stalls")
    try:
        yield stalls
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
