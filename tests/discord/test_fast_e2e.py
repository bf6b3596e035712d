"""Fast mode end to end: `--fast`, the `fast` option and the server default, through the fake Discord."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from bot.domain.requests import FAST_UNAVAILABLE
from fake_discord import FakeMessage, InteractionHandle
from inference.pipeline import DiffusersBackend
from inference.tiny import FAST_UNET_FILE
from tests.discord.conftest import Harness
from tests.store.factories import action_log

# diffusers' Euler scheduler calls np.array on a tensor in a way NumPy 2 deprecates; not our code.
pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy:DeprecationWarning"
)

QUICK = 10.0  # seconds: the tiny pipeline renders a grid in well under one
FAST_STEPS = 3


@pytest.fixture(scope="module")
def fast_backend(tiny_model_path: Path) -> DiffusersBackend:
    backend = DiffusersBackend(
        str(tiny_model_path), device="cpu", dtype="float32", fast_model=str(tiny_model_path / FAST_UNET_FILE)
    )
    backend.load()
    return backend


@pytest.fixture
def fast_harness(harness: Harness, fast_backend: DiffusersBackend) -> Harness:
    """The harness with FAST_MODEL set (the tiny fast UNet) and 3 fast steps by default."""
    harness.settings = harness.settings.model_copy(
        update={"fast_model": fast_backend.fast_model, "fast_steps": FAST_STEPS, "fast_max_steps": 4}
    )
    harness.backend = fast_backend
    return harness


def job_id_of(message: FakeMessage) -> int:
    return int(message.embeds[0]["footer"]["text"].rsplit("#", 1)[1])


async def private_answer(handle: InteractionHandle) -> str:
    """The one answer to a command, shown to the member alone."""
    response = await handle.wait_response()
    assert response.accepted, response
    assert (response.type, response.ephemeral) == (4, True), response
    await asyncio.sleep(0.05)  # a second answer or a public placeholder would be here by now
    assert [m.ephemeral for m in handle.messages] == [True]
    return str(response.data["content"])


async def test_imagine_fast_delivers_a_fast_grid(fast_harness: Harness) -> None:
    """`/imagine prompt:"a cat --fast"` delivers a grid rendered by the fast model in its few steps; the
    `fast` option does the same, and its variations stay fast."""
    h = fast_harness
    async with h.running():
        grid = await h.result_of(
            await h.slash(h.alice, "imagine", {"prompt": "a cat --fast --seed 3"}), QUICK
        )
        fields = {f["name"]: f["value"] for f in grid.embeds[0]["fields"]}
        assert fields["Steps · guidance"] == f"{FAST_STEPS} · 0 (⚡ fast)"
        with Image.open(io.BytesIO(grid.attachments[0].data)) as picture:
            assert picture.size == (128, 128)  # the 2×2 grid of 64 px images
        assert h.app is not None
        job = await h.app.stores.jobs.get_job(job_id_of(grid))
        assert job.spec.is_fast
        assert job.spec.params.steps == FAST_STEPS

        by_option = await h.result_of(
            await h.slash(h.alice, "imagine", {"prompt": "a cat", "fast": True}), QUICK
        )
        assert (await h.app.stores.jobs.get_job(job_id_of(by_option))).spec.is_fast
        variation = await h.result_of(await h.fake.click(grid.id, f"ib:v:{job.id}:0", h.alice), QUICK)
        assert (await h.app.stores.jobs.get_job(job_id_of(variation))).spec.is_fast

        refusal = await private_answer(
            await h.slash(h.alice, "imagine", {"prompt": "a cat --fast --steps 30"})
        )
        assert refusal.startswith("Steps must be between 1 and 4; got 30.")
        assert "--quality" in refusal
    assert not h.fake.limit_violations


async def test_fast_without_a_fast_model_is_refused_privately(harness: Harness) -> None:
    """With FAST_MODEL unset, `--fast` gets a kind private explanation and nothing is queued."""
    async with harness.running():
        handle = await harness.slash(harness.alice, "imagine", {"prompt": "a cat --fast"})
        assert await private_answer(handle) == FAST_UNAVAILABLE
        option = await harness.slash(harness.alice, "imagine", {"prompt": "a cat", "fast": True})
        assert await private_answer(option) == FAST_UNAVAILABLE
        assert harness.app is not None
        assert await harness.app.stores.jobs.list_jobs() == []
        # nor can a moderator make it the server's default
        refused = await private_answer(
            await harness.slash(harness.mod, "imagine-mod", {"fast_by_default": True}, subcommand="limits")
        )
        assert "Fast mode isn't set up on this bot" in refused
        assert "Fast mode" not in await private_answer(
            await harness.slash(harness.mod, "imagine-mod", {}, subcommand="limits")
        )
    assert not harness.fake.limit_violations


async def test_moderator_makes_fast_the_server_default(fast_harness: Harness) -> None:
    """/limits fast_by_default:True makes members' jobs fast unless they add --quality; it is recorded,
    and members cannot change it."""
    h = fast_harness
    async with h.running():
        assert h.app is not None
        app: Any = h.app
        member = await private_answer(
            await h.slash(
                h.alice,
                "imagine-mod",
                {"fast_by_default": True},
                subcommand="limits",
                check_permissions=False,
            )
        )
        assert member == "Only moderators (Manage Server) can do that."
        assert (
            "Fast mode by default: no"
            in (
                await private_answer(await h.slash(h.mod, "imagine-mod", {}, subcommand="limits"))
            ).splitlines()
        )

        lines = (
            await private_answer(
                await h.slash(h.mod, "imagine-mod", {"fast_by_default": True}, subcommand="limits")
            )
        ).splitlines()
        assert lines[0] == "**Limits on this server** (updated)"
        assert "Fast mode by default: yes" in lines

        fast = await h.result_of(await h.slash(h.alice, "imagine", {"prompt": "a cat"}), QUICK)
        quality = await h.result_of(await h.slash(h.alice, "imagine", {"prompt": "a cat --quality"}), QUICK)
        option = await h.result_of(await h.slash(h.bob, "imagine", {"prompt": "a cat", "fast": False}), QUICK)
        models = [(await app.stores.jobs.get_job(job_id_of(m))).spec.model for m in (fast, quality, option)]
        assert models == ["fast", "default", "default"]

        [action] = await action_log(app.stores.database, h.guild)
        assert (action.moderator_id, action.action, action.details) == (
            h.mod,
            "limits.update",
            {"fast_by_default": True},
        )
    assert not h.fake.limit_violations
