"""Fast mode through the services: per job, per guild, kept by follow-ups, set by moderators."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.domain.errors import InvalidRequest
from bot.domain.jobs import JobKind, ModelKind
from bot.domain.limits import UserLimits
from bot.domain.members import Requester
from bot.domain.params import GenerationLimits
from tests.fakes import ServiceWorld, service_world
from tests.store.factories import action_log

GUILD = 500
ALICE = Requester(user_id=1, guild_id=GUILD, channel_id=9)
MOD = Requester(user_id=3, guild_id=GUILD, channel_id=9, is_moderator=True)
FAST = GenerationLimits(
    base_resolution=64, default_steps=4, max_steps=8, default_guidance=0.0, max_guidance=2
)


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[ServiceWorld]:
    limits = UserLimits(rate_per_minute=600, burst=50, max_concurrent=10, daily_quota=None)
    async with service_world(tmp_path, limits) as world:
        world.service.fast_generation = FAST  # as if FAST_MODEL were set
        yield world


async def test_fast_job_is_stored_fast_with_few_steps(world: ServiceWorld) -> None:
    """`--fast` (or fast=True) stores a fast job with the fast defaults; it survives a reload."""
    job = await world.service.imagine(ALICE, "a fox --fast --seed 5")
    assert job.spec.model == ModelKind.FAST
    assert (job.spec.params.steps, job.spec.params.guidance) == (4, 0.0)
    stored = await world.store.get_job(job.id)
    assert stored.spec.is_fast
    assert stored.spec.batch_key().model == "fast"
    by_option = await world.service.imagine(ALICE, "a fox", fast=True)
    assert by_option.spec.is_fast
    assert not (await world.service.imagine(ALICE, "a fox")).spec.is_fast
    await world.done(job)


async def test_rerolls_variations_and_upscales_of_a_fast_job_stay_fast(world: ServiceWorld) -> None:
    """Every follow-up of a fast grid is fast, with the grid's steps and guidance."""
    grid = await world.done(await world.service.imagine(ALICE, "a fox --fast --steps 6"))
    follow_ups = [
        await world.service.reroll(ALICE, grid.id),
        await world.service.vary(ALICE, grid.id, 1),
        await world.service.upscale(ALICE, grid.id, 2),
    ]
    assert [job.kind for job in follow_ups] == [JobKind.REROLL, JobKind.VARIATION, JobKind.UPSCALE]
    assert all(job.spec.is_fast for job in follow_ups)
    assert {job.spec.params.steps for job in follow_ups} == {6}
    variation = await world.done(follow_ups[1])
    assert (await world.done(await world.service.reroll(ALICE, variation.id))).spec.is_fast

    world.service.fast_generation = None  # the operator turned fast mode off
    with pytest.raises(InvalidRequest, match="made in fast mode"):
        await world.service.vary(ALICE, grid.id, 0)


async def test_guild_default_and_its_step_cap(world: ServiceWorld) -> None:
    """A guild that defaults to fast gets fast jobs unless --quality; its step cap applies to both."""
    await world.stores.moderation.update_guild_settings(GUILD, fast_by_default=True, max_steps=5)
    assert (await world.service.imagine(ALICE, "a fox")).spec.is_fast
    quality = await world.service.imagine(ALICE, "a fox --quality")
    assert not quality.spec.is_fast
    assert quality.spec.params.steps == 3  # the full model's default, under the cap
    with pytest.raises(InvalidRequest, match="between 1 and 5"):
        await world.service.imagine(ALICE, "a fox --steps 6")

    world.service.fast_generation = None  # no fast model: the guild's default is ignored, not an error
    assert not (await world.service.imagine(ALICE, "a fox")).spec.is_fast
    with pytest.raises(InvalidRequest, match="Fast mode isn't set up"):
        await world.service.imagine(ALICE, "a fox --fast")


async def test_moderators_make_fast_the_default_and_it_is_recorded(world: ServiceWorld) -> None:
    """/limits fast_by_default is a moderator's change, recorded; refused while no fast model exists."""
    settings = await world.moderation.update_limits(MOD, {"fast_by_default": True})
    assert settings.fast_by_default is True
    assert (await world.service.imagine(ALICE, "a fox")).spec.is_fast
    [action] = await action_log(world.stores.database, GUILD)
    assert (action.moderator_id, action.action, action.details) == (
        MOD.user_id,
        "limits.update",
        {"fast_by_default": True},
    )

    world.service.fast_generation = None
    with pytest.raises(InvalidRequest, match="can't be the default"):
        await world.moderation.update_limits(MOD, {"fast_by_default": True})
    assert (await world.moderation.update_limits(MOD, {"fast_by_default": False})).fast_by_default is False


def test_settings_turn_fast_mode_on_with_its_bounds() -> None:
    """FAST_MODEL unset: no fast limits. Set: the fast defaults and bounds, the default never above the
    most allowed, sizes as the full model's."""
    from bot.runtime.settings import Settings

    assert Settings(_env_file=None).fast_generation_limits(1024) is None
    settings = Settings(_env_file=None, fast_model="a/b:c.safetensors", fast_steps=12, fast_max_steps=6)
    limits = settings.fast_generation_limits(1024)
    assert limits is not None
    assert (limits.default_steps, limits.max_steps, limits.default_guidance, limits.max_guidance) == (
        6,
        6,
        0,
        2,
    )
    assert limits.base_resolution == 1024
