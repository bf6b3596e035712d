"""Per-route rate-limit buckets (headers on every reply, real 429s when exceeded) and injected faults."""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass

from .routing import RoutePattern


@dataclass
class Fault:
    """A reply the test asked for on the next `times` requests matching `pattern`."""

    pattern: RoutePattern
    status: int
    times: int
    retry_after: float = 0.0
    is_global: bool = False


class FaultInjector:
    def __init__(self) -> None:
        self._faults: list[Fault] = []

    def add(self, fault: Fault) -> None:
        self._faults.append(fault)

    def take(self, method: str, path: str) -> Fault | None:
        """The first pending fault for this request, consuming one of its `times`."""
        for fault in self._faults:
            if fault.times > 0 and fault.pattern.match(method, path) is not None:
                fault.times -= 1
                return fault
        return None

    def pending(self) -> int:
        return sum(f.times for f in self._faults)

    def clear(self) -> None:
        self._faults.clear()


@dataclass
class _Window:
    started: float
    count: int = 0


@dataclass
class BucketRule:
    pattern: RoutePattern
    limit: int
    window: float


class RateLimiter:
    """Fixed windows per (route, major parameter), like Discord's buckets.

    The default is generous (50 per second) so a well-behaved bot never waits, yet the headers are
    real: discord.py reads them and pre-emptively sleeps when `Remaining` reaches 0.
    """

    def __init__(self, default_limit: int = 50, default_window: float = 1.0) -> None:
        self.default_limit = default_limit
        self.default_window = default_window
        self._rules: list[BucketRule] = []
        self._windows: dict[tuple[str, str], _Window] = {}

    def configure(self, pattern: str, limit: int, window: float) -> None:
        self._rules.insert(0, BucketRule(RoutePattern.parse(pattern), limit, window))

    def _rule(self, method: str, path: str) -> tuple[int, float]:
        for rule in self._rules:
            if rule.pattern.match(method, path) is not None:
                return rule.limit, rule.window
        return self.default_limit, self.default_window

    def hit(self, method: str, path: str, route: str, major: str) -> tuple[bool, dict[str, str], float]:
        """Count one request; returns (allowed, headers, retry_after)."""
        limit, window = self._rule(method, path)
        now = time.monotonic()
        state = self._windows.get((route, major))
        if state is None or now - state.started >= window:
            state = self._windows[(route, major)] = _Window(started=now)
        state.count += 1
        reset_after = max(0.0, state.started + window - now)
        headers = bucket_headers(route, limit, max(0, limit - state.count), reset_after)
        return state.count <= limit, headers, reset_after


def bucket_hash(route: str) -> str:
    return hashlib.sha1(route.encode()).hexdigest()[:32]


def bucket_headers(route: str, limit: int, remaining: int, reset_after: float) -> dict[str, str]:
    return {
        "X-RateLimit-Limit": str(limit),
        "X-RateLimit-Remaining": str(remaining),
        "X-RateLimit-Reset": f"{time.time() + reset_after:.3f}",
        "X-RateLimit-Reset-After": f"{reset_after:.3f}",
        "X-RateLimit-Bucket": bucket_hash(route),
    }


def too_many_requests_headers(route: str, limit: int, retry_after: float, is_global: bool) -> dict[str, str]:
    """A 429's headers; `Via` matters: without it discord.py assumes a Cloudflare ban."""
    headers = bucket_headers(route, limit, 0, retry_after)
    headers.update(
        {
            "Retry-After": str(max(1, math.ceil(retry_after))),
            "X-RateLimit-Scope": "global" if is_global else "user",
            "Via": "1.1 google",
        }
    )
    if is_global:
        headers["X-RateLimit-Global"] = "true"
    return headers
