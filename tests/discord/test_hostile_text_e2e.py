"""Hostile text end to end: disguised blocked words and unstorable characters are refused privately and
queue nothing, through the real bot against the fake Discord and through the `imagine-bot` command line.
docs/hostile-inputs.md lists each input with the test that shows it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from fake_discord import InteractionHandle
from tests.discord.conftest import Harness, refusal

BLOCKED = "Your prompt contains “{}”, which isn't allowed on this server."
NUL_IN_PROMPT = (
    "Your prompt contains an invisible control character (U+0000) I can't use; please type it again "
    "without it."
)
QUICK = 10.0  # seconds: the tiny pipeline renders a grid in about 0.2 s
REPO = Path(__file__).resolve().parents[2]


async def block_word(harness: Harness, word: str) -> str:
    """`/imagine-mod blocked-words add word` as the moderator; the bot's private answer. The one place that
    names the command's path, should it move again."""
    name, sub = "imagine-mod", "blocked-words add"
    handle = await harness.slash(harness.mod, name, {"word": word}, subcommand=sub)
    response = await handle.wait_response()
    assert response.accepted, response
    assert (response.type, response.ephemeral) == (4, True), response
    return str(response.data["content"])


async def imagine(harness: Harness, user: int, prompt: str, **options: Any) -> InteractionHandle:
    return await harness.slash(user, "imagine", {"prompt": prompt, **options})


async def test_disguised_blocked_words_and_nul_are_refused_and_queue_nothing(harness: Harness) -> None:
    """`gore` blocked: the probe's zero-width space, Cyrillic о and trailing underscore, a full-width
    spelling, and a NUL byte are each refused privately, and alice has no job stored."""
    alice = harness.alice
    async with harness.running():
        app = harness.app
        assert app is not None
        await block_word(harness, "gore")
        for prompt in ("g\u200bore", "a gоre scene", "gore_", "ｇｏｒｅ", "a knight --no g\u00adore"):
            assert await refusal(await imagine(harness, alice, prompt)) == BLOCKED.format("gore"), prompt
        assert await refusal(await imagine(harness, alice, "a cat", negative="gоre")) == BLOCKED.format(
            "gore"
        )
        assert await refusal(await imagine(harness, alice, "a\x00cat")) == NUL_IN_PROMPT
        assert await refusal(await imagine(harness, alice, "a cat", negative="dogs\x00")) == (
            NUL_IN_PROMPT.replace("Your prompt", "Your negative prompt")
        )
        assert await app.stores.jobs.list_jobs(user_id=alice) == []
    assert not harness.fake.limit_violations


async def test_a_word_blocked_in_disguise_is_stored_plain(harness: Harness) -> None:
    """A moderator who pastes `gоre` with a Cyrillic о blocks the plain `gore` (one entry for both)."""
    alice = harness.alice
    async with harness.running():
        app = harness.app
        assert app is not None
        await block_word(harness, "gоre")
        await block_word(harness, "GORE")
        assert await app.stores.moderation.blocked_words(harness.guild) == ["gore"]
        assert await refusal(await imagine(harness, alice, "gore")) == BLOCKED.format("gore")
        assert await app.stores.jobs.list_jobs(user_id=alice) == []


async def test_a_blocked_word_inside_another_word_does_not_refuse(harness: Harness) -> None:
    """`ass` blocked: "class act" is not refused (no Scunthorpe problem) and makes a grid."""
    alice = harness.alice
    async with harness.running():
        app = harness.app
        assert app is not None
        await block_word(harness, "ass")
        handle = await imagine(harness, alice, "class act")
        grid = await harness.result_of(handle, QUICK)
        assert grid.attachments
        jobs = await app.stores.jobs.list_jobs(user_id=alice)
        assert [job.spec.params.prompt for job in jobs] == ["class act"]
    assert not harness.fake.limit_violations


def test_the_command_line_refuses_an_argument_that_is_not_utf8(tmp_path: Path) -> None:
    """`imagine-bot generate` with the byte 0xFF in its prompt answers one friendly line and exit code 2,
    before loading any model (MODEL points nowhere) or touching the database."""
    env = {
        **os.environ,
        "MODEL": str(tmp_path / "no-model-here"),
        "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/bot.db",
        "IMAGE_DIR": str(tmp_path / "images"),
        "PYTHONPATH": str(REPO),
    }
    done = subprocess.run(
        [sys.executable, "-m", "bot", "generate", b"a \xff cat", "--out", str(tmp_path / "out")],
        cwd=tmp_path,  # no .env here
        env=env,
        capture_output=True,
        timeout=120,
        check=False,
    )
    output = (done.stdout + done.stderr).decode("utf-8", "replace")
    assert "Traceback" not in output
    assert output.strip().splitlines() == [
        "Your prompt contains a broken character (U+DCFF) that isn't valid text; please type it again "
        "without it."
    ]
    assert done.returncode == 2
    assert not (tmp_path / "bot.db").exists()


def test_the_command_line_refuses_a_control_character_in_the_negative(tmp_path: Path) -> None:
    """An escape sequence in `--negative` is refused the same way, naming the field. (A NUL byte cannot be
    a program's argument at all; tests/domain/test_requests.py covers it.)"""
    env = {
        **os.environ,
        "MODEL": str(tmp_path / "no-model-here"),
        "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/bot.db",
        "PYTHONPATH": str(REPO),
    }
    command = [sys.executable, "-m", "bot", "generate", "a cat", "--negative", "dogs\x1b[31m"]
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, timeout=120, check=False)
    output = (done.stdout + done.stderr).decode("utf-8", "replace")
    assert "Traceback" not in output
    assert output.strip().splitlines() == [
        "Your negative prompt contains an invisible control character (U+001B) I can't use; please type it "
        "again without it."
    ]
    assert done.returncode == 2
