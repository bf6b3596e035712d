"""pytest fixtures: `fake_discord` (started, discord.py patched at it, stopped afterwards).

Use from a conftest: `from fake_discord.fixtures import fake_discord  # noqa: F401`.
Tweak strictness on the instance, e.g. `fake_discord.interaction_timeout = 0.2`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from .server import FakeDiscord


@pytest.fixture
async def fake_discord() -> AsyncIterator[FakeDiscord]:
    fake = FakeDiscord()
    await fake.start()
    try:
        with fake.patch_discord():
            yield fake
    finally:
        await fake.stop()
