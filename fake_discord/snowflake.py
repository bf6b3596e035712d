"""Snowflake ids and ISO timestamps shaped like Discord's."""

from __future__ import annotations

import datetime as dt
import time

DISCORD_EPOCH_MS = 1_420_070_400_000


class SnowflakeGenerator:
    """Time-based, strictly increasing ids, so creation order can be read from ids as on Discord."""

    def __init__(self) -> None:
        self._last = 0

    def next(self) -> int:
        candidate = (int(time.time() * 1000) - DISCORD_EPOCH_MS) << 22
        self._last = max(candidate, self._last + 1)
        return self._last


def iso_now() -> str:
    return dt.datetime.now(dt.UTC).isoformat()
