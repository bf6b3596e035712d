"""The bot's log through the fake Discord: a job's lines from queued to delivered, and a quiet start."""

from __future__ import annotations

import discord
import pytest

from tests.discord.conftest import Harness
from tests.runtime.test_logs import Captured, captured  # noqa: F401  (the fixture)


@pytest.mark.parametrize("json_mode", [False, True], ids=["console", "json"])
async def test_a_job_from_slash_command_to_delivery_in_the_log(
    harness: Harness,
    captured: Captured,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    json_mode: bool,
) -> None:
    """/imagine through discord.py: queued, started, done and delivered lines with the job's fields (the
    delivered one with where it went), and none of discord.py's voice warnings at the client's start."""
    captured.configure(json_mode=json_mode)
    # discord.py warns once per process, when the first client is made: make this client the first.
    monkeypatch.setattr(discord.VoiceClient, "warn_nacl", True)
    monkeypatch.setattr(discord.VoiceClient, "warn_dave", True, raising=False)
    async with harness.running():
        handle = await harness.slash(harness.alice, "imagine", {"prompt": "a lighthouse --ar 16:9 --seed 4"})
        message = await harness.result_of(handle)
        job_id = int(message.embeds[0]["footer"]["text"].rsplit("#", 1)[1])
        await harness.delivered(job_id)
    assert discord.VoiceClient.warn_nacl is False  # the client reached the warning, and it was dropped
    output = captured.stream.getvalue()
    assert "PyNaCl" not in output
    assert "davey" not in output
    assert "voice will NOT be supported" not in output

    lines = [record for record in captured.transitions() if record["job"] == job_id]
    assert [record["event"] for record in lines] == ["job queued", "job started", "job done", "job delivered"]
    who = {
        "job": job_id,
        "guild": harness.guild,
        "member": harness.alice,
        "kind": "generate",
        "model": "full",
        "size": "80x48",
        "steps": 2,
        "images": 4,
    }
    for record in lines:
        assert record.items() >= who.items(), record
        assert record["level"] == "info"
    _, started, done, delivered = lines
    assert started["batch"] == 4
    assert done["render_time"] >= 0
    assert done["queue_wait"] >= 0
    assert delivered["logger"] == "bot.discord_app.delivery"
    where = {"state": "succeeded", "channel": harness.channel, "message_id": message.id}
    assert delivered.items() >= where.items()
    assert isinstance(delivered["since_done"], float)
