"""A strict local Discord (REST + gateway on 127.0.0.1) for testing the bot with the real discord.py.

How discord.py is pointed at it (done by `fake.patch_discord()`, the `fake_discord` fixture and
`fake.running(client)`), before the client starts:

    discord.http.Route.BASE = f"http://127.0.0.1:{port}/api/v10"
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(f"ws://127.0.0.1:{port}/gateway")

A plain `Client` connects straight to `DEFAULT_GATEWAY`; READY's `resume_gateway_url` points at
`ws://127.0.0.1:{port}/resume`, so reconnects stay here too. An `AutoShardedClient` asks
`GET /gateway/bot`, which also answers with this fake.

Typical end-to-end test (the `fake_discord` fixture lives in `fake_discord/fixtures.py`):

    async def test_imagine(fake_discord: FakeDiscord) -> None:
        guild = fake_discord.add_guild("g")
        channel = fake_discord.add_channel(guild, "art")
        alice = fake_discord.add_member(guild, name="alice")
        async with fake_discord.running(make_bot()):          # client.start() as a task
            await fake_discord.wait_for_commands(guild)       # the bot synced its tree
            it = await fake_discord.invoke_slash(guild, channel, alice, "imagine", {"prompt": "a cat"})
            assert (await it.wait_response()).type == 5        # deferred at once
            [msg] = await it.wait_followups()
            assert msg.attachments[0].data.startswith(b"\\x89PNG")
        assert not fake_discord.limit_violations

What is strict (answers as Discord does, and records it in `fake.errors` / `fake.limit_violations`):
wrong bot token (401; gateway close 4004), disallowed privileged intents (close 4014), the 3 s
interaction deadline (404 10062), double acknowledgement (400 40060), token lifetime (401 50027),
followups before acknowledgement (404 10015), message/embed/component/file/command limits
(400 50035, 413 40005, 400 50006), channel permissions (403 50013 / 50001), DMs (403 50007).
"""

from __future__ import annotations

from .clock import ManualClock, RealClock
from .interactions import InteractionHandle, Upload
from .limits import DiscordLimits
from .models import Attachment, FakeMessage
from .records import CallbackRecord, ErrorRecord, LimitViolation, RecordedRequest, UploadedFile
from .server import FakeDiscord

__all__ = [
    "Attachment",
    "CallbackRecord",
    "DiscordLimits",
    "ErrorRecord",
    "FakeDiscord",
    "FakeMessage",
    "InteractionHandle",
    "LimitViolation",
    "ManualClock",
    "RealClock",
    "RecordedRequest",
    "Upload",
    "UploadedFile",
]
