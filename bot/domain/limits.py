"""Per-member limits: a token-bucket rate limit, a cap on jobs in flight, and a daily quota.

Each check raises LimitExceeded with a message that tells the member when they can try again.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from bot.domain.clock import Clock
from bot.domain.errors import LimitExceeded


@dataclass(frozen=True)
class UserLimits:
    rate_per_minute: float = 6.0
    burst: int = 3
    max_concurrent: int = 4
    daily_quota: int | None = 50  # jobs per UTC day; None means unlimited


class TokenBucket:
    """`capacity` tokens, refilled at `rate` per second; a request takes one."""

    def __init__(self, rate: float, capacity: int, now: float) -> None:
        if rate <= 0 or capacity < 1:
            raise ValueError("a token bucket needs a positive rate and a capacity of at least 1")
        self.rate = rate
        self.capacity = capacity
        self._tokens = float(capacity)
        self._updated = now

    def _refill(self, now: float) -> None:
        self._tokens = min(self.capacity, self._tokens + (now - self._updated) * self.rate)
        self._updated = now

    def try_take(self, now: float) -> float:
        """Take a token and return 0, or return how many seconds until one is available."""
        self._refill(now)
        if self._tokens >= 1:
            self._tokens -= 1
            return 0.0
        return (1 - self._tokens) / self.rate

    def give_back(self, now: float) -> None:
        """Return a token taken for a request that was then refused for another reason."""
        self._refill(now)
        self._tokens = min(self.capacity, self._tokens + 1)


class RateLimiter:
    """One bucket per (scope, member); a changed rate setting replaces the member's bucket."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._buckets: dict[tuple[int | None, int], TokenBucket] = {}

    def acquire(self, scope: int | None, user_id: int, limits: UserLimits) -> None:
        now = self._clock.monotonic()
        rate = limits.rate_per_minute / 60
        key = (scope, user_id)
        bucket = self._buckets.get(key)
        if bucket is None or bucket.rate != rate or bucket.capacity != limits.burst:
            bucket = self._buckets[key] = TokenBucket(rate, limits.burst, now)
        wait = bucket.try_take(now)
        if wait > 0:
            raise LimitExceeded(
                f"You're going a little fast: try again in {_seconds(wait)}.", kind="rate", retry_after=wait
            )

    def refund(self, scope: int | None, user_id: int) -> None:
        bucket = self._buckets.get((scope, user_id))
        if bucket is not None:
            bucket.give_back(self._clock.monotonic())


def check_concurrency(active_jobs: int, limits: UserLimits) -> None:
    if active_jobs >= limits.max_concurrent:
        raise LimitExceeded(
            f"You already have {active_jobs} jobs queued or running (the most is {limits.max_concurrent}). "
            "Wait for one to finish, or cancel one with /cancel.",
            kind="concurrency",
        )


def quota_day_start(now: datetime) -> datetime:
    """Quotas reset at midnight UTC."""
    return now.replace(hour=0, minute=0, second=0, microsecond=0)


def quota_resets_at(now: datetime) -> datetime:
    return quota_day_start(now) + timedelta(days=1)


def check_quota(used_today: int, limits: UserLimits, now: datetime) -> None:
    if limits.daily_quota is not None and used_today >= limits.daily_quota:
        wait = (quota_resets_at(now) - now).total_seconds()
        raise LimitExceeded(
            f"You've used all {limits.daily_quota} of today's jobs. Your quota resets in {_seconds(wait)} "
            "(midnight UTC); a moderator can raise it.",
            kind="quota",
            retry_after=wait,
        )


def _seconds(seconds: float) -> str:
    if seconds < 60:
        whole = max(1, round(seconds))
        return f"{whole} second{'s' if whole != 1 else ''}"
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"{minutes} minute{'s' if minutes != 1 else ''}"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"
