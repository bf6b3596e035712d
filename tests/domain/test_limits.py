"""Rate limits, concurrency caps and quotas, on a fake clock."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from bot.domain.clock import FakeClock
from bot.domain.errors import LimitExceeded
from bot.domain.limits import (
    RateLimiter,
    TokenBucket,
    UserLimits,
    check_concurrency,
    check_quota,
    quota_resets_at,
)


def test_token_bucket_allows_burst_then_refills() -> None:
    """A bucket of 2 at 1 token/s: two at once, then a wait of 1 s for the third."""
    bucket = TokenBucket(rate=1.0, capacity=2, now=0.0)
    assert bucket.try_take(0.0) == 0
    assert bucket.try_take(0.0) == 0
    assert bucket.try_take(0.0) == pytest.approx(1.0)
    assert bucket.try_take(0.5) == pytest.approx(0.5)
    assert bucket.try_take(1.0) == 0


def test_rate_limiter_per_member_and_scope() -> None:
    """Members and guilds have separate buckets; the error tells when to retry."""
    clock = FakeClock()
    limiter = RateLimiter(clock)
    limits = UserLimits(rate_per_minute=6, burst=1)
    limiter.acquire(1, 10, limits)
    limiter.acquire(1, 11, limits)  # another member
    limiter.acquire(2, 10, limits)  # same member, another guild
    with pytest.raises(LimitExceeded) as caught:
        limiter.acquire(1, 10, limits)
    assert caught.value.kind == "rate"
    assert caught.value.retry_after == pytest.approx(10.0)
    assert "10 seconds" in str(caught.value)
    clock.advance(10)
    limiter.acquire(1, 10, limits)


def test_refund_returns_a_token() -> None:
    """A refused request's token comes back: exactly one more request gets through, no more (the next
    waits for a whole refill), and refunds never lift a bucket above its burst."""
    clock = FakeClock()
    limiter = RateLimiter(clock)
    limits = UserLimits(rate_per_minute=1, burst=1)
    limiter.acquire(None, 1, limits)
    limiter.refund(None, 1)
    limiter.acquire(None, 1, limits)
    with pytest.raises(LimitExceeded) as caught:
        limiter.acquire(None, 1, limits)
    assert caught.value.retry_after == pytest.approx(60.0)

    burst = UserLimits(rate_per_minute=1, burst=2)  # room for more than one: a refund is one token
    limiter.acquire(None, 2, burst)
    limiter.acquire(None, 2, burst)
    with pytest.raises(LimitExceeded):
        limiter.acquire(None, 2, burst)  # empty: without a refund, refused
    limiter.refund(None, 2)
    limiter.acquire(None, 2, burst)
    with pytest.raises(LimitExceeded):
        limiter.acquire(None, 2, burst)
    for _ in range(3):
        limiter.refund(None, 2)  # three refunds into a bucket of two: one is lost
    limiter.acquire(None, 2, burst)
    limiter.acquire(None, 2, burst)
    with pytest.raises(LimitExceeded):
        limiter.acquire(None, 2, burst)


def test_concurrency_cap() -> None:
    """At the cap the member is told to wait or cancel."""
    check_concurrency(3, UserLimits(max_concurrent=4))
    with pytest.raises(LimitExceeded, match="/cancel") as caught:
        check_concurrency(4, UserLimits(max_concurrent=4))
    assert caught.value.kind == "concurrency"


def test_quota_and_reset_time() -> None:
    """Out of quota says when it resets (midnight UTC); None means unlimited."""
    now = datetime(2026, 3, 1, 22, 30, tzinfo=UTC)
    assert quota_resets_at(now) == datetime(2026, 3, 2, tzinfo=UTC)
    check_quota(4, UserLimits(daily_quota=5), now)
    check_quota(10_000, UserLimits(daily_quota=None), now)
    with pytest.raises(LimitExceeded) as caught:
        check_quota(5, UserLimits(daily_quota=5), now)
    assert caught.value.kind == "quota"
    assert caught.value.retry_after == pytest.approx(5400)
    assert "1 h 30 min" in str(caught.value)
