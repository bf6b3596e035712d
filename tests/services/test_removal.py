"""Removing results (🗑) and what a removed job's buttons answer, on a real store and the fake backend."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.domain.errors import ImageRemoved, InvalidRequest, JobNotFound, NotAllowed
from bot.domain.jobs import Job, JobState, RemovalReason
from bot.domain.limits import UserLimits
from bot.domain.members import Requester
from tests.fakes import ServiceWorld as World
from tests.fakes import service_world
from tests.store.factories import action_log

GUILD = 500
ALICE = Requester(user_id=1, guild_id=GUILD, channel_id=9)
BOB = Requester(user_id=2, guild_id=GUILD, channel_id=9)
MOD = Requester(user_id=3, guild_id=GUILD, channel_id=9, is_moderator=True)
MOD_ELSEWHERE = Requester(user_id=4, guild_id=GUILD + 1, channel_id=8, is_moderator=True)


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    limits = UserLimits(rate_per_minute=600, burst=50, max_concurrent=5, daily_quota=None)
    async with service_world(tmp_path, limits) as world:
        yield world


def _pngs(world: World) -> list[Path]:
    return sorted(world.store.images.root.rglob("*.png"))


async def _grid(world: World, requester: Requester = ALICE) -> Job:
    return await world.done(await world.service.imagine(requester, "a lighthouse"))


async def test_the_owner_removes_a_result(world: World) -> None:
    """Files gone, job kept and marked deleted by her; nothing logged (no moderator acted)."""
    grid = await _grid(world)
    other = await _grid(world, BOB)
    removed = await world.service.delete_result(ALICE, grid.id)
    assert (removed.state, removed.removed_reason, removed.removed_by) == (
        JobState.SUCCEEDED,
        RemovalReason.DELETED,
        ALICE.user_id,
    )
    assert await world.store.get_job(grid.id) == removed
    assert len(await world.store.job_images(grid.id)) == 4  # the rows stay; the files do not
    assert len(_pngs(world)) == 4  # Bob's
    assert not (await world.store.get_job(other.id)).is_removed
    assert await action_log(world.stores.database, GUILD) == []
    again = await world.service.delete_result(ALICE, grid.id)  # a second message of it: no error
    assert again.removed_at == removed.removed_at


async def test_buttons_on_a_removed_result_say_so(world: World) -> None:
    """U, V, 🔄 and upscale on a removed job answer "This image was removed." and queue nothing."""
    grid = await _grid(world)
    await world.service.delete_result(ALICE, grid.id)
    asks = {
        "check": world.service.check_may_use(ALICE, grid.id),
        "single": world.service.image_for(ALICE, grid.id, 0),
        "vary": world.service.vary(ALICE, grid.id, 1),
        "upscale": world.service.upscale(MOD, grid.id, 2),
        "reroll": world.service.reroll(ALICE, grid.id),
    }
    for name, ask in asks.items():
        with pytest.raises(ImageRemoved, match=r"^This image was removed\.$"):
            await ask
        assert len(await world.store.list_jobs()) == 1, name


async def test_expired_results_say_how_long_images_are_kept(world: World) -> None:
    """A pruned job's buttons answer that it expired, with the retention period."""
    grid = await _grid(world)
    await world.stores.removals.remove_job(grid.id, RemovalReason.EXPIRED)
    world.service.retention_days = 30
    with pytest.raises(ImageRemoved, match=r"^This image has expired: images are kept 30 days\.$"):
        await world.service.vary(ALICE, grid.id, 0)
    world.service.retention_days = 1
    with pytest.raises(ImageRemoved, match=r"kept 1 day\.$"):
        await world.service.reroll(ALICE, grid.id)
    # 🗑 still clears it away; the job then counts as deleted by her.
    removed = await world.service.delete_result(ALICE, grid.id)
    assert (removed.removed_reason, removed.removed_by) == (RemovalReason.DELETED, ALICE.user_id)


async def test_a_moderator_removes_a_members_result_and_it_is_logged(world: World) -> None:
    """A moderator may remove anyone's result on their server; the action log records who, whose, which."""
    grid = await _grid(world)
    removed = await world.service.delete_result(MOD, grid.id)
    assert (removed.removed_reason, removed.removed_by) == (RemovalReason.DELETED, MOD.user_id)
    [entry] = await action_log(world.stores.database, GUILD)
    assert (entry.action, entry.moderator_id, entry.target_user_id, entry.details) == (
        "result.delete",
        MOD.user_id,
        ALICE.user_id,
        {"job": grid.id, "files": 4},
    )
    assert _pngs(world) == []


async def test_others_may_not_remove_a_result(world: World) -> None:
    """Another member is refused even where everyone may press buttons; a moderator of another server
    does not see the job; nothing is removed either way."""
    grid = await _grid(world)
    await world.stores.moderation.update_guild_settings(GUILD, buttons_for_everyone=True)
    with pytest.raises(NotAllowed, match="Only the member who made this image"):
        await world.service.delete_result(BOB, grid.id)
    with pytest.raises(JobNotFound):
        await world.service.delete_result(MOD_ELSEWHERE, grid.id)
    assert not (await world.store.get_job(grid.id)).is_removed
    assert len(_pngs(world)) == 4


async def test_an_unfinished_job_is_cancelled_not_removed(world: World) -> None:
    """🗑 on a job still waiting (a forged press) says to cancel it instead."""
    world.backend.gate = threading.Event()
    running = await world.service.imagine(ALICE, "a slow one")
    await world.backend.until_rendering()
    with pytest.raises(InvalidRequest, match="isn't finished yet; cancel it instead"):
        await world.service.delete_result(ALICE, running.id)
    world.backend.gate.set()
    assert (await world.done(running)).state is JobState.SUCCEEDED
