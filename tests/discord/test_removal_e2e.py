"""Removing results end to end: 🗑 on a result, pruning by IMAGE_RETENTION_DAYS (daily in `imagine-bot run`,
or `imagine-bot prune`), and a full disk. The real bot against the fake Discord with the tiny pipeline."""

from __future__ import annotations

import asyncio
import errno
import io
import os
import re
import socket
import sys
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import aiohttp
import pytest
from rich.console import Console
from sqlalchemy import update

from bot.discord_app.runner import run_bot
from bot.domain.clock import SystemClock
from bot.domain.jobs import Job, JobState, RemovalReason
from bot.store import ImageFiles, Stores
from bot.store.models import JobRow
from fake_discord import FakeMessage
from tests.discord.conftest import Harness, custom_ids
from tests.discord.test_faults_e2e import answer_of, forge, job_of
from tests.store.factories import action_log

REMOVED = "This image was removed."
EXPIRED = "This image has expired: images are kept 30 days."


async def eventually(check: Callable[[], bool], timeout: float = 10.0) -> None:  # noqa: ASYNC109
    async with asyncio.timeout(timeout):
        while not check():  # noqa: ASYNC110  (the fake's messages and the disk have no change feed here)
            await asyncio.sleep(0.02)


def pngs(harness: Harness, job_id: int | None = None) -> list[Path]:
    """The image files of a job, or of every job."""
    pattern = "*.png" if job_id is None else f"{job_id:07d}/*.png"
    return sorted(Path(harness.settings.image_dir).rglob(pattern))


def gone(harness: Harness, message: FakeMessage) -> bool:
    return harness.fake.world.messages[message.id].deleted


async def job(harness: Harness, job_id: int) -> Job:
    assert harness.app is not None
    return await harness.app.stores.jobs.get_job(job_id)


async def test_the_owner_removes_her_grid(harness: Harness) -> None:
    """Alice's 🗑 on her grid: the grid and the U1 image posted from it go, so do the files; the job stays,
    marked deleted by her. A forged V1 or 🔄 for it then answers that the image was removed."""
    async with harness.running():
        grid = await harness.result_of(await harness.slash(harness.alice, "imagine", {"prompt": "a fox"}))
        other = await harness.result_of(await harness.slash(harness.alice, "imagine", {"prompt": "a hen"}))
        job_id = job_of(grid)
        assert f"ib:d:{job_id}" in custom_ids(grid)
        single = await harness.result_of(await harness.fake.click(grid.id, f"ib:u:{job_id}:0", harness.alice))
        assert len(pngs(harness, job_id)) == 4

        answer = await answer_of(await harness.fake.click(grid.id, f"ib:d:{job_id}", harness.alice))

        assert answer == f"🗑 Removed the images of job #{job_id}."
        await eventually(lambda: gone(harness, grid) and gone(harness, single))
        assert pngs(harness, job_id) == []
        removed = await job(harness, job_id)
        assert (removed.state, removed.removed_reason, removed.removed_by) == (
            JobState.SUCCEEDED,
            RemovalReason.DELETED,
            harness.alice,
        )
        assert not gone(harness, other)
        assert len(pngs(harness, job_of(other))) == 4
        for custom_id in (f"ib:v:{job_id}:0", f"ib:r:{job_id}", f"ib:u:{job_id}:1", f"ib:x:{job_id}:2"):
            assert await answer_of(await forge(harness, other, custom_id, harness.alice)) == REMOVED
        assert harness.app is not None
        assert len(await harness.app.stores.jobs.list_jobs()) == 2  # nothing new was queued
    assert not harness.fake.limit_violations


async def test_a_moderator_removes_a_members_upscale_and_it_is_logged(harness: Harness) -> None:
    """The moderator's 🗑 on Alice's upscale removes it; /imagine-mod log shows result.delete for her."""
    async with harness.running():
        grid = await harness.result_of(await harness.slash(harness.alice, "imagine", {"prompt": "a fox"}))
        single = await harness.result_of(
            await harness.fake.click(grid.id, f"ib:u:{job_of(grid)}:1", harness.alice)
        )
        upscale = await harness.finished_message(
            await harness.fake.click(single.id, f"ib:x:{job_of(grid)}:1", harness.alice)
        )
        upscale_id = job_of(upscale)
        assert custom_ids(upscale) == [f"ib:d:{upscale_id}"]

        answer = await answer_of(await harness.fake.click(upscale.id, f"ib:d:{upscale_id}", harness.mod))

        assert answer == f"🗑 Removed the images of job #{upscale_id}."
        await eventually(lambda: gone(harness, upscale))
        assert not gone(harness, grid)
        assert pngs(harness, upscale_id) == []
        assert harness.app is not None
        [entry] = await action_log(harness.app.stores.database, harness.guild)
        assert (entry.action, entry.moderator_id, entry.target_user_id, entry.details) == (
            "result.delete",
            harness.mod,
            harness.alice,
            {"job": upscale_id, "files": 1},
        )
        log = await answer_of(await harness.slash(harness.mod, "imagine-mod", {}, subcommand="log"))
        assert f"<@{harness.mod}> `result.delete` <@{harness.alice}> (files: 1, job: {upscale_id})" in log
    assert not harness.fake.limit_violations


async def test_another_member_is_refused_privately(harness: Harness) -> None:
    """Bob's 🗑 on Alice's grid is refused to him alone; the grid, its files and its job stay."""
    async with harness.running():
        grid = await harness.result_of(await harness.slash(harness.alice, "imagine", {"prompt": "a fox"}))
        job_id = job_of(grid)
        press = await harness.fake.click(grid.id, f"ib:d:{job_id}", harness.bob)
        assert await answer_of(press) == "Only the member who made this image (or a moderator) can remove it."
        await asyncio.sleep(0.3)
        assert not gone(harness, grid)
        assert len(pngs(harness, job_id)) == 4
        assert not (await job(harness, job_id)).is_removed
        assert [m.id for m in press.messages if not m.ephemeral] == []
    assert not harness.fake.limit_violations


async def test_expired_results_say_so_on_buttons_and_reactions(harness: Harness) -> None:
    """After pruning, U1 and a 1️⃣ reaction on the grid answer that it expired (kept 30 days); 🗑 still
    clears the message away."""
    async with harness.running():
        grid = await harness.result_of(await harness.slash(harness.alice, "imagine", {"prompt": "a fox"}))
        job_id = job_of(grid)
        assert harness.app is not None
        report = await harness.app.retention.prune(0)  # every finished job's: as if 30 days had passed
        assert (report.jobs, report.files) == (1, 4)
        assert pngs(harness, job_id) == []

        assert (
            await answer_of(await harness.fake.click(grid.id, f"ib:u:{job_id}:0", harness.alice)) == EXPIRED
        )
        await harness.fake.react(grid.id, "1️⃣", harness.alice)
        note = f"<@{harness.alice}> {EXPIRED}"
        posted = await harness.fake.wait_for_message(lambda m: m.content == note, 10)
        assert (posted.channel_id, posted.ephemeral) == (harness.channel, False)
        assert len(await harness.app.stores.jobs.list_jobs()) == 1

        await answer_of(await harness.fake.click(grid.id, f"ib:d:{job_id}", harness.alice))
        await eventually(lambda: gone(harness, grid))
        assert (await job(harness, job_id)).removed_reason is RemovalReason.DELETED
    assert not harness.fake.limit_violations


async def test_imagine_bot_prune_from_the_command_line(harness: Harness) -> None:
    """`imagine-bot prune --dry-run --days 0` beside the running bot prints what it would free and deletes
    nothing; without --dry-run it frees the files, and U1 on the grid then answers that it expired."""
    async with harness.running():
        grid = await harness.result_of(await harness.slash(harness.alice, "imagine", {"prompt": "a fox"}))
        job_id = job_of(grid)
        size = sum(path.stat().st_size for path in pngs(harness, job_id))

        code, output = await prune_command(harness, "--dry-run", "--days", "0")
        assert code == 0, output
        assert re.search(rf"│ would free │ 1 +│ 4 +│ [0-9.]+ KB \({size:,} bytes\) +│", output), output
        assert "Images of jobs that finished up to now" in output
        assert "Dry run: nothing was deleted." in output
        assert len(pngs(harness, job_id)) == 4

        code, output = await prune_command(harness, "--days", "0")
        assert code == 0, output
        assert re.search(rf"│ freed +│ 1 +│ 4 +│ [0-9.]+ KB \({size:,} bytes\) +│", output), output
        assert "Dry run" not in output
        assert pngs(harness, job_id) == []
        assert (
            await answer_of(await harness.fake.click(grid.id, f"ib:u:{job_id}:0", harness.alice)) == EXPIRED
        )
    assert not harness.fake.limit_violations


async def prune_command(harness: Harness, *args: str) -> tuple[int, str]:
    """`imagine-bot prune ARGS` in a child process on the harness's database and image folder."""
    env = {
        **os.environ,
        "DATABASE_URL": harness.settings.database_url,
        "IMAGE_DIR": str(harness.settings.image_dir),
        "BATCH_PROFILE": "none",
        "COLUMNS": "200",
    }
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        "prune",
        *args,
        env=env,
        cwd=Path(harness.settings.image_dir).parent,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(child.communicate(), 120)
    assert child.returncode is not None
    return child.returncode, output.decode()


async def test_a_full_disk_fails_the_job_clearly_and_the_next_one_works(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While the disk is full, /imagine ends in a message that says so (and no files); once there is space
    again the next /imagine delivers its grid."""
    real_save = ImageFiles.save

    def full(self: ImageFiles, *args: object) -> str:
        raise OSError(errno.ENOSPC, "No space left on device")

    async with harness.running():
        monkeypatch.setattr(ImageFiles, "save", full)
        failed = await harness.finished_message(
            await harness.slash(harness.alice, "imagine", {"prompt": "a fox"})
        )
        assert failed.embeds[0]["description"].startswith(
            "❌ Sorry, this didn't work: The bot's disk is full, so this image could not be saved. "
            "Please tell the server's admins."
        )
        assert pngs(harness) == []
        monkeypatch.setattr(ImageFiles, "save", real_save)
        grid = await harness.result_of(await harness.slash(harness.alice, "imagine", {"prompt": "a hen"}))
        assert len(pngs(harness, job_of(grid))) == 4
    assert not harness.fake.limit_violations


async def test_run_prunes_shortly_after_start_and_serves_the_free_disk_gauge(
    harness: Harness, tiny_model_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`imagine-bot run` prunes results older than IMAGE_RETENTION_DAYS soon after it starts, and its
    /metrics shows the image folder's free disk."""
    async with harness.running():
        old = job_of(await harness.result_of(await harness.slash(harness.alice, "imagine", {"prompt": "a"})))
        new = job_of(await harness.result_of(await harness.slash(harness.alice, "imagine", {"prompt": "b"})))
        assert harness.app is not None
        long_ago = SystemClock().now() - timedelta(days=31)
        async with harness.app.stores.database.writing() as session:
            await session.execute(update(JobRow).where(JobRow.id == old).values(finished_at=long_ago))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings = harness.settings.model_copy(update={"model": str(tiny_model_path), "metrics_port": port})
    monkeypatch.setattr("bot.services.retention.START_DELAY", 0.1)
    running = asyncio.create_task(run_bot(settings, Console(file=io.StringIO(), width=200)))
    try:
        async with await Stores.open(settings.database_url, settings.image_dir, SystemClock()) as stores:
            async with asyncio.timeout(60):
                while not (await stores.jobs.get_job(old)).is_removed:
                    assert not running.done(), running
                    await asyncio.sleep(0.05)
            assert (await stores.jobs.get_job(old)).removed_reason is RemovalReason.EXPIRED
            assert not (await stores.jobs.get_job(new)).is_removed
        assert pngs(harness, old) == []
        assert len(pngs(harness, new)) == 4
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{port}/metrics") as response,
        ):
            text = await response.text()
        [line] = [line for line in text.splitlines() if line.startswith("imagine_image_dir_free_bytes ")]
        assert float(line.split()[1]) > 0
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
