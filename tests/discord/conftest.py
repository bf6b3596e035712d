"""End-to-end harness: the real bot (discord.py, store, scheduler, tiny SDXL) against the fake Discord."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from bot.discord_app.client import ImagineBot
from bot.domain.render import RenderBatch, StepCallback
from bot.runtime.app import ImagineApp
from bot.runtime.settings import Settings
from fake_discord import FakeDiscord, FakeMessage, InteractionHandle
from fake_discord.fixtures import fake_discord  # noqa: F401  (the fixture)

MANAGE_GUILD = 0x20
MEMBER_PERMISSIONS = 0x400 | 0x800 | 0x8000 | 0x40 | 0x10000  # view, send, attach, react, history


@dataclass
class Harness:
    fake: FakeDiscord
    settings: Settings
    backend: Any
    guild: int
    channel: int
    alice: int
    bob: int
    mod: int
    app: ImagineApp | None = None
    bot: ImagineBot | None = None
    # The output-safety classifier: "settings" builds SAFETY_MODEL's (the bundled open_nsfw); tests that
    # need flagged images give a fake one.
    classifier: Any = "settings"
    _runs: list[Any] = field(default_factory=list)

    @asynccontextmanager
    async def running(self, *, everywhere: bool = False) -> AsyncIterator[ImagineBot]:
        """The bot connected to the fake, with commands synced to the test guild (`everywhere`: synced
        globally, as a bot in several servers runs)."""
        app = await ImagineApp.start(self.settings, backend=self.backend, classifier=self.classifier)
        bot = ImagineBot(app, guild_id=None if everywhere else self.guild, edit_interval=0.2)
        self.app, self.bot = app, bot
        try:
            async with self.fake.running(bot):
                await self.fake.wait_for_commands(None if everywhere else self.guild)
                yield bot
        finally:
            await app.close()

    async def slash(
        self, user: int, name: str, options: dict[str, Any] | None = None, **kw: Any
    ) -> InteractionHandle:
        return await self.fake.invoke_slash(self.guild, self.channel, user, name, options or {}, **kw)

    async def result_of(self, handle: InteractionHandle, timeout: float = 30.0) -> FakeMessage:  # noqa: ASYNC109
        """The interaction's original response once it shows a finished result (an image attached)."""
        await handle.wait_response()
        message = await self.fake.wait_for_message(
            lambda m: m.id == handle.original_message_id and bool(m.attachments) and bool(m.components),
            timeout,
        )
        footer = message.embeds[0]["footer"]["text"]
        if footer.startswith(("Imagine", "Reroll", "Variations")):
            await self.delivered(int(footer.rsplit("#", 1)[1]))
        return message

    async def delivered(self, job_id: int, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        """Wait until the bot has recorded the job's delivery (it edits the message first, then records)."""
        assert self.bot is not None
        async with asyncio.timeout(timeout):
            while not await self._is_delivered(job_id):  # noqa: ASYNC110  (the store has no change feed)
                await asyncio.sleep(0.01)

    async def _is_delivered(self, job_id: int) -> bool:
        assert self.bot is not None
        delivery = await self.bot.app.results.delivery(job_id)
        return delivery is not None and delivery.delivered_at is not None

    async def finished_message(self, handle: InteractionHandle, timeout: float = 30.0) -> FakeMessage:  # noqa: ASYNC109
        """The original response once its status is final (result, failure, cancellation or held)."""
        await handle.wait_response()

        def final(m: FakeMessage) -> bool:
            if m.id != handle.original_message_id or not m.embeds:
                return False
            description = m.embeds[0].get("description") or ""
            return bool(m.attachments) or description.startswith(("❌", "🚫", "🛑"))

        return await self.fake.wait_for_message(final, timeout)


async def refusal(handle: InteractionHandle) -> str:
    """Why a request was refused: answered at once and to the member alone; nothing public is left."""
    response = await handle.wait_response()
    assert response.accepted, response
    assert (response.type, response.ephemeral) == (4, True), response
    await asyncio.sleep(0.05)  # a public "thinking…" message or a second answer would be here by now
    assert [m.ephemeral for m in handle.messages] == [True]
    return str(response.data["content"])


def custom_ids(message: FakeMessage) -> list[str]:
    return [c["custom_id"] for row in message.components for c in row["components"] if "custom_id" in c]


@pytest.fixture
def harness(fake_discord: FakeDiscord, tiny_backend: Any, tmp_path: Path) -> Harness:  # noqa: F811
    guild = fake_discord.add_guild("art club")
    channel = fake_discord.add_channel(guild, "imagine")
    alice = fake_discord.add_member(guild, name="alice", permissions=MEMBER_PERMISSIONS)
    bob = fake_discord.add_member(guild, name="bob", permissions=MEMBER_PERMISSIONS)
    mod = fake_discord.add_member(guild, name="mod", permissions=MEMBER_PERMISSIONS | MANAGE_GUILD)
    settings = Settings(
        _env_file=None,
        discord_token=fake_discord.token,
        database_url=f"sqlite+aiosqlite:///{tmp_path}/bot.db",
        image_dir=tmp_path / "images",
        model="tiny",
        device="cpu",
        dtype="float32",
        default_steps=2,
        max_steps=8,
        rate_per_minute=600,
        rate_burst=50,
        daily_quota=20,
    )
    return Harness(fake_discord, settings, tiny_backend, guild, channel, alice, bob, mod)


class WrappedBackend:
    """Another backend (the tiny pipeline) with the same model; subclasses change how `render` runs."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    @property
    def native_resolution(self) -> int:
        return int(self.inner.native_resolution)

    def load(self) -> None:
        self.inner.load()

    def render(self, batch: RenderBatch, on_step: StepCallback) -> Any:
        return self.inner.render(batch, on_step)


class FaultsAfterRender(WrappedBackend):
    """The tiny pipeline; `arm(inject)` makes the next finished batch run `inject` on the event loop
    before its result reaches the scheduler, so the faults it sets up hit that result's delivery."""

    def __init__(self, inner: Any, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(inner)
        self.loop = loop
        self._inject: Callable[[], None] | None = None

    def arm(self, inject: Callable[[], None]) -> None:
        self._inject = inject

    def render(self, batch: RenderBatch, on_step: StepCallback) -> Any:
        rendered = super().render(batch, on_step)
        if self._inject is not None:
            inject, self._inject = self._inject, None
            self.loop.call_soon_threadsafe(inject)
        return rendered


class GatedBackend(WrappedBackend):
    """The tiny pipeline, holding every batch at the door until the test opens the gate."""

    def __init__(self, inner: Any) -> None:
        super().__init__(inner)
        self.gate = threading.Event()
        self.entered = threading.Event()

    def render(self, batch: RenderBatch, on_step: StepCallback) -> Any:
        self.entered.set()
        self.gate.wait(timeout=30)
        return super().render(batch, on_step)

    async def until_held(self) -> None:
        """Wait (off the event loop) until a batch is waiting at the gate."""
        assert await asyncio.to_thread(self.entered.wait, 10), "no batch reached the backend"


@contextmanager
def gated(harness: Harness) -> Iterator[GatedBackend]:
    """Run the harness on a backend that holds the GPU until the gate opens (opened at the end anyway)."""
    backend = GatedBackend(harness.backend)
    harness.backend = backend
    try:
        yield backend
    finally:
        backend.gate.set()
