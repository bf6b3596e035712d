"""`imagine-bot prune`: by IMAGE_RETENTION_DAYS unless told --days, with what it freed in a table."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import update

from bot.domain.clock import SystemClock
from bot.domain.jobs import RemovalReason
from bot.entrypoints.cli import main
from bot.store import Stores
from bot.store.models import JobRow
from tests.store.factories import complete_job, make_images, make_spec, mark_running


@pytest.fixture
def database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    url = f"sqlite+aiosqlite:///{tmp_path}/imagine.db"
    monkeypatch.chdir(tmp_path)  # no .env here
    monkeypatch.setenv("DATABASE_URL", url)
    monkeypatch.setenv("IMAGE_DIR", str(tmp_path / "images"))
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.delenv("IMAGE_RETENTION_DAYS", raising=False)
    return url


async def _jobs(url: str, image_dir: Path, days_ago: list[int]) -> list[int]:
    """Finished jobs with four images each, finished that many days ago."""
    ids = []
    async with await Stores.open(url, image_dir, SystemClock()) as stores:
        for days in days_ago:
            job = await stores.jobs.create_job(make_spec())
            await mark_running(stores.jobs, [job.id])
            await complete_job(stores.jobs, job.id, make_images(), [1, 2, 3, 4])
            finished = SystemClock().now() - timedelta(days=days)
            async with stores.database.writing() as session:
                await session.execute(update(JobRow).where(JobRow.id == job.id).values(finished_at=finished))
            ids.append(job.id)
    return ids


async def _reasons(url: str, image_dir: Path, ids: list[int]) -> list[RemovalReason | None]:
    async with await Stores.open(url, image_dir, SystemClock()) as stores:
        return [job.removed_reason for job in await stores.jobs.get_jobs(ids)]


def test_prune_keeps_the_retention_period(
    database: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without --days: jobs finished more than IMAGE_RETENTION_DAYS (30) ago; newer ones stay."""
    images = tmp_path / "images"
    old, recent = asyncio.run(_jobs(database, images, [40, 10]))
    assert main(["prune"]) == 0
    output = capsys.readouterr()
    assert "Images of jobs that finished more than 30 days ago" in output.err
    assert "│ freed │ 1 " in output.out
    assert asyncio.run(_reasons(database, images, [old, recent])) == [RemovalReason.EXPIRED, None]
    assert len(list(images.rglob("*.png"))) == 4


def test_zero_days_keeps_everything_unless_told(
    database: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """IMAGE_RETENTION_DAYS=0: `prune` says images are kept forever and deletes nothing; --days 5 prunes."""
    images = tmp_path / "images"
    [job] = asyncio.run(_jobs(database, images, [400]))
    monkeypatch.setenv("IMAGE_RETENTION_DAYS", "0")
    assert main(["prune"]) == 0
    assert "images are kept forever" in capsys.readouterr().err
    assert len(list(images.rglob("*.png"))) == 4
    assert main(["prune", "--days", "5"]) == 0
    assert asyncio.run(_reasons(database, images, [job])) == [RemovalReason.EXPIRED]


@pytest.mark.parametrize("days", ["-1", "soon"])
def test_bad_days_are_refused_naming_them(
    database: str, days: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as stopped:
        main(["prune", "--days", days])
    assert stopped.value.code == 2
    assert "argument --days" in capsys.readouterr().err
