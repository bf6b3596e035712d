"""SIGTERM and SIGINT on `imagine-bot run` and `imagine-bot worker`, sent to real processes while a batch
renders (the tiny model at 64 px with many steps: a few seconds on a CPU).

A stop takes no new batch; the running one finishes, is stored (and, on `run`, delivered before the gateway
closes) within STOP_TIMEOUT, or goes back to the queue; the process exits 0. No job is lost, and none is
left RUNNING for a process that is gone.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import sqlalchemy as sa

from bot.domain.clock import SystemClock
from bot.domain.jobs import Job, JobKind, JobSpec, JobState
from bot.domain.params import GenerationLimits, build_params
from bot.store import Stores
from fake_discord import FakeDiscord, InteractionHandle
from fake_discord.fixtures import fake_discord  # noqa: F401  (the fixture)
from tests.processes import child_env

STEPS = 100  # 4 images of 64 px: long enough to be caught rendering, 2-3 s on one CPU thread
STOP_TIMEOUT = 60  # plenty for such a batch: it finishes
MARGIN = 20.0  # seconds for closing the gateway and the database and leaving Python, on a busy machine
START_TIMEOUT = 120.0  # importing torch and loading the model, on a busy 2-core machine
MEMBER_PERMISSIONS = 0x400 | 0x800 | 0x8000 | 0x40 | 0x10000  # view, send, attach, react, history


class Child:
    """A bot process whose output goes to a file (read when an assertion fails)."""

    def __init__(self, process: asyncio.subprocess.Process, log: Path) -> None:
        self.process = process
        self.log = log

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    async def exit_code(self, within: float) -> int:
        try:
            return await asyncio.wait_for(self.process.wait(), within)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()
            pytest.fail(f"the process did not exit within {within:g} s:\n{self.output()}")


@asynccontextmanager
async def child(args: list[str], settings: Mapping[str, str], folder: Path) -> AsyncIterator[Child]:
    log = folder / f"child-{time.monotonic_ns()}.log"
    with log.open("w") as out:
        process = await asyncio.create_subprocess_exec(
            sys.executable, *args, cwd=folder, env=child_env(settings), stdout=out, stderr=out
        )
    try:
        yield Child(process, log)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


@asynccontextmanager
async def opened(url: str, folder: Path) -> AsyncIterator[Stores]:
    """The test's own view of the child's database."""
    stores = await Stores.open(url, folder / "images", SystemClock())
    async with stores:
        yield stores


async def until(condition: Callable[[], object], what: str, spawned: Child, timeout: float) -> None:  # noqa: ASYNC109
    """Poll `condition` (a coroutine function) until it is true; fail with the child's output if it
    exits or the time runs out first."""
    deadline = time.monotonic() + timeout
    while not await condition():  # type: ignore[misc]
        if spawned.process.returncode is not None:
            pytest.fail(
                f"the process exited ({spawned.process.returncode}) before {what}:\n{spawned.output()}"
            )
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} within {timeout:g} s:\n{spawned.output()}")
        await asyncio.sleep(0.05)


async def running(stores: Stores) -> bool:
    return bool(await stores.jobs.list_jobs(states=[JobState.RUNNING]))


async def lease_owners(stores: Stores) -> dict[int, tuple[str, str | None]]:
    """Each job's state and lease owner, as stored."""
    async with stores.database.reading() as session:
        rows = await session.execute(sa.text("SELECT id, state, lease_owner FROM jobs"))
        return {row.id: (row.state, row.lease_owner) for row in rows}


# -- imagine-bot run, against the fake Discord --------------------------------------------------------------


def bot_settings(fake: FakeDiscord, guild: int, folder: Path, model: Path, **extra: str) -> dict[str, str]:
    return {
        "DISCORD_TOKEN": fake.token,
        "DISCORD_GUILD_ID": str(guild),
        "DATABASE_URL": f"sqlite+aiosqlite:///{folder / 'bot.db'}",
        "IMAGE_DIR": str(folder / "images"),
        "MODEL": str(model),
        "DEVICE": "cpu",
        "DTYPE": "float32",
        "MAX_STEPS": str(STEPS),
        "STOP_TIMEOUT": str(STOP_TIMEOUT),
        **extra,
    }


def run_args(fake: FakeDiscord) -> list[str]:
    return ["-m", "tests.entrypoints.run_child", fake.api_url, fake.gateway_url, "run"]


def closed_cleanly(fake: FakeDiscord, spawned: Child) -> bool:
    """The bot's gateway connection is gone, closed by the bot itself (it says so once `close()` returned)
    rather than by the process ending."""
    session = fake.gateway.session
    return session is not None and session.conn is None and "disconnected from Discord" in spawned.output()


def art_club(fake: FakeDiscord) -> tuple[int, int, int]:
    """A server with a channel and a member, alice, for the child bot to serve: (guild, channel, alice)."""
    fake.interaction_timeout = 10.0  # the child answers over the network of a busy machine
    guild = fake.add_guild("art club")
    channel = fake.add_channel(guild, "imagine")
    return guild, channel, fake.add_member(guild, name="alice", permissions=MEMBER_PERMISSIONS)


async def imagine_when_ready(fake: FakeDiscord, guild: int, channel: int, alice: int) -> InteractionHandle:
    """Once the child bot has synced its commands and connected, alice asks for a slow grid."""
    await fake.wait_for_commands(guild, timeout=START_TIMEOUT)
    await fake.wait_until_ready(timeout=30)
    handle = await fake.invoke_slash(guild, channel, alice, "imagine", {"prompt": f"a cat --steps {STEPS}"})
    await handle.wait_response()
    return handle


async def test_sigterm_on_run_finishes_stores_and_delivers_the_running_batch(
    fake_discord: FakeDiscord,  # noqa: F811
    tiny_model_path: Path,
    tmp_path: Path,
) -> None:
    """SIGTERM while a batch renders: `run` finishes it, stores its images, edits the member's message into
    the grid, then closes the gateway and exits 0 within STOP_TIMEOUT."""
    fake = fake_discord
    guild, channel, alice = art_club(fake)
    settings = bot_settings(fake, guild, tmp_path, tiny_model_path)
    async with child(run_args(fake), settings, tmp_path) as bot:
        await imagine_when_ready(fake, guild, channel, alice)
        async with opened(settings["DATABASE_URL"], tmp_path) as stores:
            await until(lambda: running(stores), "a running batch", bot, 60)
            bot.signal(signal.SIGTERM)
            signalled = time.monotonic()
            assert await bot.exit_code(STOP_TIMEOUT + MARGIN) == 0, bot.output()
            stopped_in = time.monotonic() - signalled
            [job] = await stores.jobs.list_jobs()
            assert job.state is JobState.SUCCEEDED, bot.output()
            assert [image.index for image in await stores.jobs.job_images(job.id)] == [0, 1, 2, 3]
            delivery = await stores.deliveries.get(job.id)
            assert delivery is not None
            assert delivery.delivered_at is not None, bot.output()
    message = fake.world.messages[delivery.result_message_id or 0]
    assert message.attachments  # the grid…
    assert message.components  # …with its buttons
    assert closed_cleanly(fake, bot)
    assert stopped_in < STOP_TIMEOUT
    assert "Traceback" not in bot.output()


async def test_sigterm_on_run_past_stop_timeout_hands_the_batch_back_and_the_next_start_delivers_it(
    fake_discord: FakeDiscord,  # noqa: F811
    tiny_model_path: Path,
    tmp_path: Path,
) -> None:
    """With STOP_TIMEOUT=0 the rendering batch goes back to the queue at once (exit 0, job QUEUED, not
    RUNNING); the next start renders and delivers it."""
    fake = fake_discord
    guild, channel, alice = art_club(fake)
    settings = bot_settings(fake, guild, tmp_path, tiny_model_path, STOP_TIMEOUT="0")
    async with child(run_args(fake), settings, tmp_path) as bot:
        handle = await imagine_when_ready(fake, guild, channel, alice)
        async with opened(settings["DATABASE_URL"], tmp_path) as stores:
            await until(lambda: running(stores), "a running batch", bot, 60)
            bot.signal(signal.SIGTERM)
            assert await bot.exit_code(MARGIN) == 0, bot.output()
            [job] = await stores.jobs.list_jobs()
            assert job.state is JobState.QUEUED, bot.output()
            assert await stores.jobs.job_images(job.id) == []
    assert closed_cleanly(fake, bot)

    async with child(run_args(fake), settings, tmp_path) as again:
        result = await fake.wait_for_message(
            lambda m: m.id == handle.original_message_id and bool(m.attachments), timeout=START_TIMEOUT
        )
        assert result.components
        again.signal(signal.SIGTERM)
        assert await again.exit_code(STOP_TIMEOUT + MARGIN) == 0, again.output()
    async with opened(settings["DATABASE_URL"], tmp_path) as stores:
        done = await stores.jobs.get_job(job.id)
        assert done.state is JobState.SUCCEEDED
        assert done.attempts == 2


# -- imagine-bot worker, on PostgreSQL --------------------------------------------------------------------


def worker_settings(url: str, folder: Path, model: Path, **extra: str) -> dict[str, str]:
    return {
        "DATABASE_URL": url,
        "IMAGE_DIR": str(folder / "images"),
        "MODEL": str(model),
        "DEVICE": "cpu",
        "DTYPE": "float32",
        "STOP_TIMEOUT": str(STOP_TIMEOUT),
        "WORKER_NAME": "worker-under-test",
        **extra,
    }


async def queue_job(stores: Stores) -> Job:
    limits = GenerationLimits(base_resolution=64, max_steps=STEPS)
    spec = JobSpec(
        JobKind.GENERATE, user_id=7, params=build_params("a cat", limits=limits, seed=1, steps=STEPS)
    )
    return await stores.jobs.create_job(spec)


async def test_sigterm_on_worker_finishes_and_stores_the_running_batch(
    pg_url: str, tiny_model_path: Path, tmp_path: Path
) -> None:
    """SIGTERM while a worker renders: the batch finishes and is stored (SUCCEEDED, four images), and the
    worker exits 0 within STOP_TIMEOUT."""
    settings = worker_settings(pg_url, tmp_path, tiny_model_path)
    async with opened(pg_url, tmp_path) as stores:
        job = await queue_job(stores)
        async with child(["-m", "bot", "worker"], settings, tmp_path) as worker:
            await until(lambda: running(stores), "a running batch", worker, START_TIMEOUT)
            worker.signal(signal.SIGTERM)
            signalled = time.monotonic()
            assert await worker.exit_code(STOP_TIMEOUT + MARGIN) == 0, worker.output()
            assert time.monotonic() - signalled < STOP_TIMEOUT
        done = await stores.jobs.get_job(job.id)
        assert done.state is JobState.SUCCEEDED, worker.output()
        assert [image.index for image in await stores.jobs.job_images(job.id)] == [0, 1, 2, 3]
        assert await lease_owners(stores) == {job.id: ("succeeded", "worker-under-test")}  # who made it
    assert "Traceback" not in worker.output()


async def test_second_sigint_on_worker_hands_the_running_batch_back_at_once(
    pg_url: str, tiny_model_path: Path, tmp_path: Path
) -> None:
    """Ctrl-C twice: the worker does not wait for STOP_TIMEOUT; the batch goes back to the queue (QUEUED,
    no lease, no images) and the worker exits 0."""
    settings = worker_settings(pg_url, tmp_path, tiny_model_path, STOP_TIMEOUT="3600")
    async with opened(pg_url, tmp_path) as stores:
        job = await queue_job(stores)
        async with child(["-m", "bot", "worker"], settings, tmp_path) as worker:
            await until(lambda: running(stores), "a running batch", worker, START_TIMEOUT)
            worker.signal(signal.SIGINT)
            await asyncio.sleep(0.2)
            worker.signal(signal.SIGINT)
            assert await worker.exit_code(MARGIN) == 0, worker.output()
        back = await stores.jobs.get_job(job.id)
        assert back.state is JobState.QUEUED, worker.output()
        assert await stores.jobs.job_images(job.id) == []
        assert await lease_owners(stores) == {job.id: ("queued", None)}
