"""A restore, end to end: back up, wipe, restore, and an old result's buttons still work."""

from __future__ import annotations

import asyncio
import io
import shutil
from pathlib import Path

import pytest
from PIL import Image

from bot.entrypoints.cli import main
from fake_discord import FakeMessage
from tests.discord.conftest import Harness, custom_ids


def _pixels(png: bytes) -> tuple[tuple[int, int], bytes]:
    with Image.open(io.BytesIO(png)) as image:
        return image.size, image.convert("RGB").tobytes()


def job_of(message: FakeMessage) -> int:
    return int(message.embeds[0]["footer"]["text"].rsplit("#", 1)[1])


async def test_buttons_work_after_backup_wipe_and_restore(
    harness: Harness, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Alice makes a grid; with the bot stopped, `imagine-bot backup` copies the database and images, both
    are deleted, `imagine-bot restore` puts them back, and after a new start U1 posts the very image file
    that was backed up and V1 makes variations of it."""
    database = Path(harness.settings.database_url.removeprefix("sqlite+aiosqlite:///"))
    images = harness.settings.image_dir
    async with harness.running():
        grid = await harness.result_of(await harness.slash(harness.alice, "imagine", {"prompt": "a fox"}))
    job = job_of(grid)
    first_image = _pixels(next(images.rglob("0.png")).read_bytes())

    monkeypatch.chdir(tmp_path)  # no .env here
    monkeypatch.setenv("DATABASE_URL", harness.settings.database_url)
    monkeypatch.setenv("IMAGE_DIR", str(images))
    assert await asyncio.to_thread(main, ["backup", str(tmp_path / "backup")]) == 0
    for leftover in (database, Path(f"{database}-wal"), Path(f"{database}-shm")):
        leftover.unlink(missing_ok=True)
    shutil.rmtree(images)
    assert not await asyncio.to_thread(database.exists)
    assert await asyncio.to_thread(main, ["restore", str(tmp_path / "backup")]) == 0
    assert await asyncio.to_thread(database.exists)

    async with harness.running():
        single = await harness.result_of(await harness.fake.click(grid.id, f"ib:u:{job}:0", harness.alice))
        assert single.embeds[0]["footer"]["text"] == f"Image 1 of job #{job}"
        assert _pixels(single.attachments[0].data) == first_image
        assert custom_ids(single)[0] == f"ib:x:{job}:0"
        variations = await harness.result_of(
            await harness.fake.click(grid.id, f"ib:v:{job}:0", harness.alice)
        )
        assert variations.embeds[0]["footer"]["text"].startswith("Variations")
        assert variations.attachments[0].data.startswith(b"\x89PNG")
    assert not harness.fake.limit_violations
