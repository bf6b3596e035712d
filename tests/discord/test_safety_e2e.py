"""Output safety end to end: every image is scored in the worker before it is posted, and each server's
mode decides what members see (spoiler by default, block with a moderator's release, or shown plainly
in age-restricted channels only). Scores come from a fake classifier here, so the test says what is
flagged; the bundled classifier's own scores are checked to be stored too."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from PIL import Image

from bot.domain.jobs import Job
from fake_discord import FakeMessage
from tests.discord.conftest import Harness
from tests.discord.test_faults_e2e import answer_of, forge

QUICK = 30.0


class FixedScores:
    """A safety classifier whose every image scores `score` (changed by the test as it goes)."""

    def __init__(self, score: float) -> None:
        self.score = score
        self.calls = 0

    def load(self) -> None:
        pass

    def scores(self, images: Sequence[Image.Image]) -> list[float]:
        self.calls += 1
        return [self.score] * len(images)


def job_of(message: FakeMessage) -> int:
    return int(message.embeds[0]["footer"]["text"].rsplit("#", 1)[1])


async def mod(harness: Harness, path: str, options: dict[str, Any] | None = None, *, user: int = 0) -> str:
    """An /imagine-mod command; `user` (not a moderator) sends it as a client that shows it anyway."""
    handle = await harness.fake.invoke_slash(
        harness.guild,
        harness.channel,
        user or harness.mod,
        "imagine-mod",
        options or {},
        subcommand=path,
        check_permissions=not user,
    )
    return await answer_of(handle)


async def finished(harness: Harness, prompt: str, channel: int | None = None) -> FakeMessage:
    """The /imagine's status message once it is final (a result, or the held notice)."""
    handle = await harness.fake.invoke_slash(
        harness.guild, channel or harness.channel, harness.alice, "imagine", {"prompt": prompt}
    )
    return await harness.finished_message(handle, QUICK)


async def stored(harness: Harness, job_id: int) -> tuple[Job, list[float | None]]:
    assert harness.app is not None
    job = await harness.app.stores.jobs.get_job(job_id)
    return job, [image.safety_score for image in await harness.app.stores.jobs.job_images(job_id)]


async def test_a_flagged_grid_is_posted_behind_a_spoiler_by_default(harness: Harness) -> None:
    harness.classifier = FixedScores(0.9)
    async with harness.running():
        grid = await finished(harness, "a fox")
        [attachment] = grid.attachments
        assert attachment.filename.startswith("SPOILER_")
        assert "image" not in grid.embeds[0]  # an embed's image cannot be blurred
        assert grid.embeds[0]["description"].startswith("⚠️ The image check flagged this result")
        job, scores = await stored(harness, job_of(grid))
        assert (job.shown, scores) == ("spoiler", [0.9] * 4)
        # a single image (U1) of it is spoilered too
        single = await harness.result_of(await harness.fake.click(grid.id, f"ib:u:{job.id}:0", harness.alice))
        assert single.attachments[0].filename.startswith("SPOILER_")
    assert not harness.fake.limit_violations


async def test_a_safe_grid_is_shown_plainly(harness: Harness) -> None:
    harness.classifier = FixedScores(0.1)
    async with harness.running():
        grid = await finished(harness, "a fox")
        assert not grid.attachments[0].filename.startswith("SPOILER_")
        assert grid.embeds[0]["image"]["url"].endswith(f"/{grid.attachments[0].filename}")
        job, scores = await stored(harness, job_of(grid))
        assert (job.shown, scores) == ("plain", [0.1] * 4)


async def test_block_holds_a_result_until_a_moderator_releases_it(harness: Harness) -> None:
    classifier = FixedScores(0.95)
    harness.classifier = classifier
    async with harness.running():
        text = await mod(harness, "safety set", {"mode": "block", "threshold": 0.8})
        assert text.splitlines()[1:] == ["Flagged images: block", "Threshold: 0.8"]
        held = await finished(harness, "a fox")
        job_id = job_of(held)
        assert not held.attachments
        assert held.embeds[0]["description"].startswith("🛑 The image check flagged this result")
        assert (await stored(harness, job_id))[0].shown == "held"
        # the member cannot get at it through a forged U1 either
        reply = await answer_of(await forge(harness, held, f"ib:u:{job_id}:0", harness.alice))
        assert "held" in reply
        # a member cannot release it; the moderator can, and it is posted behind a spoiler
        assert await mod(harness, "safety release", {"job": job_id}, user=harness.alice) == (
            "Only moderators (Manage Server) can do that."
        )
        assert (
            await mod(harness, "safety release", {"job": job_id})
            == f"Released job #{job_id}; posting it now."
        )
        posted = await harness.fake.wait_for_message(
            lambda m: m.route == "channel" and bool(m.attachments) and "released" in m.content, QUICK
        )
        assert posted.attachments[0].filename.startswith("SPOILER_")
        job, _ = await stored(harness, job_id)
        assert job.released_at is not None
        assert job.shown == "spoiler"
        log = await mod(harness, "log", {"action": "result.release"})
        assert "`result.release`" in log
        # a re-check with a lower score clears a held result and posts it
        again = await finished(harness, "another fox")
        assert (await stored(harness, job_of(again)))[0].shown == "held"
        classifier.score = 0.2
        text = await mod(harness, "safety recheck", {"job": job_of(again)})
        assert (
            text
            == f"Job #{job_of(again)}: scores 0.20, 0.20, 0.20, 0.20; it would be shown plain here. "
            + ("It was held; posting it now.")
        )
        reposted = await harness.fake.wait_for_message(
            lambda m: m.route == "channel" and bool(m.attachments) and job_of(m) == job_of(again), QUICK
        )
        assert not reposted.attachments[0].filename.startswith("SPOILER_")
    assert not harness.fake.limit_violations


async def test_age_restricted_channels_show_flagged_images_plainly(harness: Harness) -> None:
    harness.classifier = FixedScores(0.9)
    nsfw = harness.fake.add_channel(harness.guild, "after-dark", nsfw=True)
    async with harness.running():
        await mod(harness, "safety set", {"mode": "age-restricted"})
        there = await finished(harness, "a fox", channel=nsfw)
        assert not there.attachments[0].filename.startswith("SPOILER_")
        here = await finished(harness, "a fox")
        assert here.attachments[0].filename.startswith("SPOILER_")


async def test_another_servers_moderator_cannot_release(harness: Harness) -> None:
    harness.classifier = FixedScores(0.95)
    other = harness.fake.add_guild("elsewhere")
    other_channel = harness.fake.add_channel(other, "art")
    other_mod = harness.fake.add_member(other, name="mod-b", permissions=0x20 | 0x400 | 0x800)
    async with harness.running(everywhere=True):
        await mod(harness, "safety set", {"mode": "block"})
        held = await finished(harness, "a fox")
        handle = await harness.fake.invoke_slash(
            other, other_channel, other_mod, "imagine-mod", {"job": job_of(held)}, subcommand="safety release"
        )
        assert await answer_of(handle) == f"I can't find job #{job_of(held)}."
        assert (await stored(harness, job_of(held)))[0].released_at is None


async def test_the_bundled_classifier_scores_every_image(harness: Harness) -> None:
    """With SAFETY_MODEL's default (the bundled open_nsfw), each image's score is stored."""
    async with harness.running():
        grid = await finished(harness, "a lighthouse")
        job, scores = await stored(harness, job_of(grid))
        assert len(scores) == 4
        assert all(score is not None and 0.0 <= score <= 1.0 for score in scores)
        assert job.shown in ("plain", "spoiler")
