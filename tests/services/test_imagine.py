"""The application service: every member request with its checks, on a real store and a fake backend."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.domain.errors import InvalidRequest, LimitExceeded, NotAllowed
from bot.domain.jobs import Job, JobKind, JobSpec, JobState
from bot.domain.limits import UserLimits
from bot.domain.members import Requester
from bot.domain.records import Admission, AdmissionFacts
from bot.store.errors import DatabaseUnreachable
from tests.fakes import ServiceWorld as World
from tests.fakes import service_world

GUILD = 500
ALICE = Requester(user_id=1, guild_id=GUILD, channel_id=9)
BOB = Requester(user_id=2, guild_id=GUILD, channel_id=9)
MOD = Requester(user_id=3, guild_id=GUILD, channel_id=9, is_moderator=True)


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    limits = UserLimits(rate_per_minute=60, burst=10, max_concurrent=3, daily_quota=5)
    async with service_world(tmp_path, limits) as world:
        yield world


async def test_imagine_parses_flags_and_finishes(world: World) -> None:
    """/imagine with flags becomes a stored job that succeeds with the asked size and seed."""
    job = await world.service.imagine(ALICE, "a lighthouse --ar 16:9 --seed 42 --no fog")
    params = job.spec.params
    assert (params.prompt, params.width, params.height, params.seed) == ("a lighthouse", 80, 48, 42)
    assert params.negative_prompt == "fog"
    assert (job.spec.guild_id, job.spec.channel_id) == (GUILD, 9)
    assert (await world.done(job)).state is JobState.SUCCEEDED


async def test_bad_input_is_refused_before_anything_is_stored(world: World) -> None:
    """A malformed flag or too many steps raises and stores no job."""
    with pytest.raises(InvalidRequest, match="--bogus"):
        await world.service.imagine(ALICE, "cat --bogus 1")
    with pytest.raises(InvalidRequest, match="between 1 and 10"):
        await world.service.imagine(ALICE, "cat", steps=11)
    assert await world.store.list_jobs() == []


async def test_variation_upscale_and_reroll(world: World) -> None:
    """V, U and 🔄 make jobs of the right kinds and sizes from a finished grid."""
    grid = await world.done(await world.service.imagine(ALICE, "a fox --seed 100"))
    images = await world.store.job_images(grid.id)

    variation = await world.done(await world.service.vary(ALICE, grid.id, 2))
    assert variation.kind is JobKind.VARIATION
    assert variation.spec.source_image_id == images[2].id
    assert variation.spec.parent_job_id == grid.id

    upscale = await world.done(await world.service.upscale(ALICE, grid.id, 1))
    assert upscale.kind is JobKind.UPSCALE
    assert upscale.spec.params.seed == images[1].seed
    [big] = await world.store.job_images(upscale.id)
    assert (big.width, big.height) == (128, 128)
    with pytest.raises(InvalidRequest, match="already upscaled"):
        await world.service.upscale(ALICE, upscale.id, 0)

    reroll = await world.done(await world.service.reroll(ALICE, grid.id))
    assert reroll.kind is JobKind.REROLL
    assert reroll.spec.params.prompt == "a fox"
    assert reroll.spec.params.seed != 100
    with pytest.raises(InvalidRequest, match="no image 5"):
        await world.service.vary(ALICE, grid.id, 4)


async def test_only_owner_or_moderator_may_use_buttons(world: World) -> None:
    """Another member is refused unless the guild lets everyone press buttons."""
    grid = await world.done(await world.service.imagine(ALICE, "a fox"))
    with pytest.raises(NotAllowed, match="Only the member"):
        await world.service.vary(BOB, grid.id, 0)
    assert (await world.service.vary(MOD, grid.id, 0)).user_id == MOD.user_id
    await world.stores.moderation.update_guild_settings(GUILD, buttons_for_everyone=True)
    job = await world.service.reroll(BOB, grid.id)
    assert job.user_id == BOB.user_id  # counts against the presser


async def test_daily_quota_counts_and_moderator_override(world: World) -> None:
    """The sixth job of the day is refused with the reset time; a moderator's override lets it through."""
    for _ in range(5):
        await world.done(await world.service.imagine(ALICE, "cat"))
    with pytest.raises(LimitExceeded, match="all 5 of today's jobs") as caught:
        await world.service.imagine(ALICE, "cat")
    assert caught.value.kind == "quota"
    usage = await world.service.usage(ALICE)
    assert (usage.used_today, usage.remaining) == (5, 0)
    await world.stores.moderation.set_quota_override(GUILD, ALICE.user_id, 8, set_by=MOD.user_id)
    assert (await world.service.usage(ALICE)).remaining == 3
    await world.done(await world.service.imagine(ALICE, "cat"))
    world.clock.advance(24 * 3600)
    assert (await world.service.usage(ALICE)).used_today == 0


async def test_moderators_skip_the_quota(world: World) -> None:
    """Moderators are not held to the daily quota: with 5 used each, a member's sixth is refused and a
    moderator's sixth and seventh are served; the moderator's jobs still count as used."""
    for _ in range(5):
        await world.done(await world.service.imagine(ALICE, "cat"))
        await world.done(await world.service.imagine(MOD, "cat"))
    with pytest.raises(LimitExceeded, match="all 5 of today's jobs") as caught:
        await world.service.imagine(ALICE, "cat")
    assert caught.value.kind == "quota"
    for _ in range(2):
        await world.done(await world.service.imagine(MOD, "cat"))
    usage = await world.service.usage(MOD)
    assert (usage.used_today, usage.daily_quota, usage.remaining) == (7, 5, 0)
    assert len(await world.store.list_jobs(user_id=MOD.user_id)) == 7
    assert len(await world.store.list_jobs(user_id=ALICE.user_id)) == 5


async def test_concurrency_cap_and_rate_limit(world: World) -> None:
    """A fourth job in flight is refused; so is a burst beyond the rate limit."""
    world.backend.gate = threading.Event()
    try:
        for _ in range(3):
            await world.service.imagine(BOB, "cat")
        with pytest.raises(LimitExceeded, match="already have 3 jobs"):
            await world.service.imagine(BOB, "cat")
    finally:
        world.backend.gate.set()
    await world.stores.moderation.update_guild_settings(GUILD, rate_per_minute=1, rate_burst=1)
    await world.service.imagine(MOD, "cat")
    with pytest.raises(LimitExceeded, match="a little fast") as caught:
        await world.service.imagine(MOD, "cat")
    assert caught.value.kind == "rate"


async def test_a_failed_store_gives_the_rate_limit_token_back(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every check passed (a rate-limit token taken), then the database failed before the job was stored:
    the token comes back, so the member's retry is served. At 1 a minute with a burst of 1, the request
    after that is refused as too fast, as it would have been the retry without the refund."""
    await world.stores.moderation.update_guild_settings(GUILD, rate_per_minute=1, rate_burst=1)
    create_job = world.store.create_job

    async def admitted_then_lost(spec: JobSpec, *, admit: Admission | None = None) -> Job:
        assert admit is not None

        def check_then_fail(facts: AdmissionFacts) -> None:
            admit.check(facts)
            raise DatabaseUnreachable()  # the connection dies after the checks, before the INSERT

        return await create_job(spec, admit=Admission(admit.since, check_then_fail))

    with monkeypatch.context() as patch:
        patch.setattr(world.store, "create_job", admitted_then_lost)
        with pytest.raises(DatabaseUnreachable):
            await world.service.imagine(ALICE, "cat")
    assert await world.store.list_jobs() == []
    await world.done(await world.service.imagine(ALICE, "cat"))
    with pytest.raises(LimitExceeded, match="a little fast") as caught:
        await world.service.imagine(ALICE, "cat")
    assert caught.value.kind == "rate"
    assert len(await world.store.list_jobs()) == 1


async def test_ban_and_blocked_words(world: World) -> None:
    """Banned members and prompts with a blocked word are refused; nothing is stored."""
    await world.stores.moderation.ban(GUILD, BOB.user_id, "spam", by=MOD.user_id)
    with pytest.raises(NotAllowed, match="can't use"):
        await world.service.imagine(BOB, "cat")
    await world.stores.moderation.add_blocked_word(GUILD, "gore", added_by=MOD.user_id)
    with pytest.raises(NotAllowed, match="gore"):
        await world.service.imagine(ALICE, "a GORE scene")
    with pytest.raises(NotAllowed, match="gore"):
        await world.service.imagine(ALICE, "a scene --no gore")
    assert await world.store.list_jobs() == []
    await world.done(await world.service.imagine(ALICE, "gorey details are fine"))


async def test_cancel_rules(world: World) -> None:
    """Members cancel their own queued jobs; not others', and not finished ones."""
    world.backend.gate = threading.Event()
    first = await world.service.imagine(ALICE, "cat")
    second = await world.service.imagine(ALICE, "dog")
    with pytest.raises(NotAllowed):
        await world.service.cancel(BOB, second.id)
    assert (await world.service.cancel(ALICE, second.id)).state is JobState.CANCELLED
    world.backend.gate.set()
    await world.done(first)
    with pytest.raises(InvalidRequest, match="already finished"):
        await world.service.cancel(ALICE, first.id)
    mine = await world.service.my_jobs(ALICE)
    assert mine == []


async def test_simultaneous_requests_cannot_overrun_the_cap(world: World) -> None:
    """Checks and creation are one transaction: five requests at once, three slots, three jobs."""
    world.backend.gate = threading.Event()
    results = await asyncio.gather(
        *(world.service.imagine(BOB, f"cat {n}") for n in range(5)), return_exceptions=True
    )
    made = [result for result in results if isinstance(result, Job)]
    refused = [result for result in results if isinstance(result, LimitExceeded)]
    assert (len(made), len(refused)) == (3, 2)
    assert all(error.kind == "concurrency" for error in refused)
    assert len(await world.store.list_jobs(user_id=BOB.user_id)) == 3
