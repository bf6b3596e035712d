from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.domain.clock import FakeClock
from bot.store import JobStore


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'db' / 'imagine.db'}"


@pytest.fixture
async def store(db_url: str, tmp_path: Path, clock: FakeClock) -> AsyncIterator[JobStore]:
    job_store = await JobStore.open(db_url, tmp_path / "images", clock)
    yield job_store
    await job_store.close()
