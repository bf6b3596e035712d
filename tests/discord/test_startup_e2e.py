"""Starting the bot: a wrong token stops it with one line that says what to fix."""

from __future__ import annotations

import io
from pathlib import Path

from pydantic import SecretStr
from rich.console import Console

from bot.discord_app.runner import run_bot
from tests.discord.conftest import Harness


async def test_wrong_token_stops_with_one_clear_line(harness: Harness, tiny_model_path: Path) -> None:
    """Discord refusing the token ends `run` with exit code 2 and a single line naming DISCORD_TOKEN."""
    settings = harness.settings.model_copy(
        update={"model": str(tiny_model_path), "discord_token": SecretStr("not-the-token")}
    )
    output = io.StringIO()
    code = await run_bot(settings, Console(file=output, width=200))
    lines = [line for line in output.getvalue().splitlines() if line.strip()]
    assert code == 2
    assert lines == ["Discord rejected DISCORD_TOKEN: copy the token again from the Bot tab."]
    assert any(error.status == 401 for error in harness.fake.errors)


async def test_missing_token_stops_before_loading_anything(harness: Harness) -> None:
    """Without DISCORD_TOKEN, `run` says so and exits 2 without touching Discord or the model."""
    settings = harness.settings.model_copy(update={"discord_token": None, "model": "no/such-model"})
    output = io.StringIO()
    assert await run_bot(settings, Console(file=output, width=200)) == 2
    assert "DISCORD_TOKEN is not set" in output.getvalue()
    assert harness.fake.requests == []
