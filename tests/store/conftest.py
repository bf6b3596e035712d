from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.domain.clock import FakeClock
from bot.store import AdmissionStore, Database, JobStore, ModerationStore, Stores


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'db' / 'imagine.db'}"


@pytest.fixture
async def stores(db_url: str, tmp_path: Path, clock: FakeClock) -> AsyncIterator[Stores]:
    opened = await Stores.open(db_url, tmp_path / "images", clock)
    yield opened
    await opened.close()


@pytest.fixture
def store(stores: Stores) -> JobStore:
    return stores.jobs


@pytest.fixture
def moderation(stores: Stores) -> ModerationStore:
    return stores.moderation


@pytest.fixture
def admission(stores: Stores) -> AdmissionStore:
    return stores.admission


@pytest.fixture
def database(stores: Stores) -> Database:
    return stores.database
