"""Every REST route the bot uses answering 429, 500 and 503, and the gateway dropping: results arrive once.

The bot's routes (what the fake records across the e2e tests, and what `bot/discord_app` calls):

| route | what for | discord.py's adapter |
|---|---|---|
| `GET /users/@me`, `GET /oauth2/applications/@me` | logging in | HTTP client |
| `PUT /applications/{app}/commands` (or `/guilds/{guild}/commands`) | command sync | HTTP client |
| `POST /interactions/{id}/{token}/callback` | every first answer, defer included | webhook |
| `PATCH /webhooks/{app}/{token}/messages/{id or @original}` | status, result, U image | webhook |
| `POST /webhooks/{app}/{token}` | an error told after a defer (followup) | webhook |
| `POST /channels/{id}/messages` | reaction status and refusal, result fallback, DMs | HTTP client |
| `PATCH /channels/{id}/messages/{id}` | status and result of a reaction's job | HTTP client |
| `DELETE /channels/{id}/messages/{id}` | removing a reaction's refusal note | HTTP client |
| `GET /channels/{id}/messages` | looking for a result already posted | HTTP client |
| `GET /users/{id}`, `POST /users/@me/channels` | opening a DM | HTTP client |

Each route gets a 429, then a 500, then a 503, in that order. discord.py waits out the 429 and retries
the 500; the webhook adapter retries the 503 too, while the HTTP client raises `DiscordServerError` at
once, so there the bot itself must try again (or fall back) without posting twice. The waits are cut
to milliseconds: discord.py's retry sleeps, the bot's delivery retries and its restart pauses.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import sys
from collections.abc import Awaitable, Callable
from types import ModuleType
from typing import Any

import discord.http as http_module
import discord.webhook.async_ as webhook_module
import pytest
from rich.console import Console

import bot.discord_app.delivery as delivery_module
import bot.discord_app.runner as runner_module
from bot.store.deliveries import DeliveryStore
from fake_discord import FakeDiscord, FakeMessage, InteractionHandle
from fake_discord.routing import RoutePattern
from tests.discord.conftest import FaultsAfterRender, GatedBackend, Harness, custom_ids, gated

LOGIN = "GET /users/@me"
APP_INFO = "GET /oauth2/applications/@me"
GLOBAL_SYNC = "PUT /applications/{application_id}/commands"
GUILD_SYNC = "PUT /applications/{application_id}/guilds/{guild_id}/commands"
CALLBACK = "POST /interactions/{interaction_id}/{token}/callback"
WEBHOOK_EDIT = "PATCH /webhooks/{application_id}/{token}/messages/{message_id}"
FOLLOWUP = "POST /webhooks/{application_id}/{token}"
CHANNEL_EDIT = "PATCH /channels/{channel_id}/messages/{message_id}"
CHANNEL_DELETE = "DELETE /channels/{channel_id}/messages/{message_id}"
OPEN_DM = "POST /users/@me/channels"

FAULTS = [429, 500, 503]


def channel_post(channel_id: int) -> str:
    return f"POST /channels/{channel_id}/messages"


def history(channel_id: int) -> str:
    return f"GET /channels/{channel_id}/messages"


def fetch_user(user_id: int) -> str:
    return f"GET /users/{user_id}"  # a concrete id: `/users/{user_id}` would match `/users/@me` too


def inject_faults(fake: FakeDiscord, route: str) -> None:
    """The next three requests on `route` are answered 429, 500 and 503."""
    fake.inject_429(route, times=1, retry_after=0.05)
    fake.inject_error(route, status=500, times=1)
    fake.inject_error(route, status=503, times=1)


def faults_seen(fake: FakeDiscord, route: str) -> list[int]:
    """The injected error statuses that requests on `route` were answered with, in order."""
    pattern = RoutePattern.parse(route)
    return [e.status for e in fake.errors if e.injected and pattern.match(e.method, e.path) is not None]


def results(harness: Harness) -> list[FakeMessage]:
    """Every live message with an image, in the channel and in every member's DMs."""
    fake = harness.fake
    dms = [m for user in (harness.alice, harness.bob, harness.mod) for m in fake.dm_messages(user)]
    return [m for m in [*fake.messages(harness.channel), *dms] if m.attachments]


def job_of(message: FakeMessage) -> int:
    return int(message.embeds[0]["footer"]["text"].rsplit("#", 1)[1])


async def settle(seconds: float = 0.5) -> None:
    """Long enough for a second post to show up if the bot were going to make one."""
    await asyncio.sleep(seconds)


class _QuickSleep:
    """`asyncio` for a module whose retry sleeps (1, 3, 5, 7 s after a 5xx) should last 10 ms at most."""

    def __init__(self, on_sleep: Callable[[float], None] | None = None) -> None:
        self.on_sleep = on_sleep

    def __getattr__(self, name: str) -> Any:
        return getattr(asyncio, name)

    async def sleep(self, delay: float, result: Any = None) -> Any:
        if self.on_sleep is not None:
            self.on_sleep(delay)
        return await asyncio.sleep(min(delay, 0.01), result)


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """discord.py's retry waits, the bot's delivery retries and restart pauses, all in milliseconds."""
    monkeypatch.setattr(http_module, "asyncio", _QuickSleep())
    monkeypatch.setattr(webhook_module, "asyncio", _QuickSleep())
    monkeypatch.setattr(delivery_module, "RETRY_DELAYS", (0.05, 0.05, 0.1, 0.2))
    monkeypatch.setattr(runner_module, "RESTART_DELAYS", (0.05,))


def loaded_cog(harness: Harness) -> ModuleType:
    """The imagine cog's module as the running bot loaded it: discord.py execs an extension afresh, so
    patching the module as imported here would not reach the bot."""
    assert harness.bot is not None
    cog = harness.bot.get_cog("ImagineCog")
    assert cog is not None
    return sys.modules[type(cog).__module__]


async def grid_of(fake: FakeDiscord, handle: InteractionHandle, timeout: float = 30.0) -> FakeMessage:  # noqa: ASYNC109
    """The interaction's original response once it shows a finished result."""
    await handle.wait_response()
    return await fake.wait_for_message(
        lambda m: m.id == handle.original_message_id and bool(m.attachments) and bool(m.components), timeout
    )


async def held_with_expired_token(harness: Harness, backend: GatedBackend, prompt: str) -> None:
    """Alice's /imagine shows its status and its batch is held at the GPU; then the interaction token
    expires, so the result has to find another way to her."""
    handle = await harness.slash(harness.alice, "imagine", {"prompt": prompt})
    await harness.fake.wait_for_message(lambda m: m.id == handle.original_message_id and bool(m.embeds))
    await backend.until_held()
    harness.fake.expire_tokens()


async def posted_result(harness: Harness, channel_id: int, timeout: float = 30.0) -> FakeMessage:  # noqa: ASYNC109
    """The first message with an image the bot posted (not edited into an answer) in `channel_id`."""
    return await harness.fake.wait_for_message(
        lambda m: m.route == "channel" and bool(m.attachments), timeout, channel_id=channel_id
    )


async def unless_ended(run: asyncio.Task[int], waiting: Awaitable[Any]) -> Any:
    """What `waiting` gives, unless `run_bot` ends first: then how it ended is the failure."""
    wait = asyncio.ensure_future(waiting)
    await asyncio.wait({run, wait}, return_when=asyncio.FIRST_COMPLETED)
    if not wait.done():
        wait.cancel()
        raise AssertionError(f"run_bot ended early with {run.result()}")  # or raises what ended it
    return wait.result()


# -- starting: logging in and syncing the commands ----------------------------------------------------------


@pytest.mark.parametrize("scope", ["global", "guild"])
async def test_login_and_command_sync_ride_out_429_and_5xx(
    harness: Harness, monkeypatch: pytest.MonkeyPatch, scope: str
) -> None:
    """`imagine-bot run` meets 429, 500 and 503 on logging in, on the application lookup and on the
    command sync (global, or to DISCORD_GUILD_ID): discord.py waits out the 429 and retries the 500, and a
    503 starts the client again after a pause, with a line that says so. Once up, /imagine gets one grid."""
    fake = harness.fake
    monkeypatch.setattr(runner_module, "make_backend", lambda settings: harness.backend)
    guild_id = harness.guild if scope == "guild" else None
    settings = harness.settings.model_copy(update={"metrics_port": 0, "discord_guild_id": guild_id})
    routes = (LOGIN, APP_INFO, GUILD_SYNC if guild_id else GLOBAL_SYNC)
    for route in routes:
        inject_faults(fake, route)
    output = io.StringIO()
    run = asyncio.create_task(runner_module.run_bot(settings, Console(file=output, width=200)))
    try:
        await unless_ended(run, fake.wait_for_commands(guild_id, timeout=30))
        await unless_ended(run, fake.wait_until_ready(timeout=10))
        handle = await fake.invoke_slash(
            harness.guild, harness.channel, harness.alice, "imagine", {"prompt": "a fox"}
        )
        grid = await grid_of(fake, handle)
        await settle()
        assert [m.id for m in results(harness)] == [grid.id]
        assert [r.accepted for r in handle.responses] == [True]
    finally:
        run.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await run
    for route in routes:
        assert faults_seen(fake, route) == FAULTS, route
    assert fake.faults.pending() == 0
    restarts = [line for line in output.getvalue().splitlines() if "trying again" in line]
    assert len(restarts) == 3, output.getvalue()
    assert all("503" in line for line in restarts)
    assert not fake.limit_violations


# -- answering: the interaction callback, webhook edits and followups ---------------------------------------


async def test_imagine_answer_and_result_edit_ride_out_429_and_5xx(harness: Harness) -> None:
    """429, 500, 503 on the first answer to /imagine and again on the edit that carries the grid: both are
    retried, the member's one answer becomes the grid, and nothing is posted besides."""
    fake = harness.fake
    backend = FaultsAfterRender(harness.backend, asyncio.get_running_loop())
    harness.backend = backend
    async with harness.running():
        inject_faults(fake, CALLBACK)
        backend.arm(lambda: inject_faults(fake, WEBHOOK_EDIT))
        handle = await harness.slash(harness.alice, "imagine", {"prompt": "a fox in the rain"})
        grid = await harness.result_of(handle)
        await settle()
        assert [m.id for m in results(harness)] == [grid.id]
        assert grid.id == handle.original_message_id
        assert [r.accepted for r in handle.responses] == [True]
        assert custom_ids(grid)[0] == f"ib:u:{job_of(grid)}:0"
        assert handle.ephemeral_messages == []
    assert faults_seen(fake, CALLBACK) == FAULTS
    assert faults_seen(fake, WEBHOOK_EDIT) == FAULTS
    assert fake.faults.pending() == 0
    assert not fake.limit_violations


async def test_button_defer_and_original_edit_ride_out_429_and_5xx(harness: Harness) -> None:
    """U2 defers and then edits the image into its answer: 429, 500, 503 on both; the image arrives once,
    with its own buttons, which still work."""
    fake = harness.fake
    async with harness.running():
        grid = await harness.result_of(await harness.slash(harness.alice, "imagine", {"prompt": "a fox"}))
        job_id = job_of(grid)
        inject_faults(fake, CALLBACK)
        inject_faults(fake, WEBHOOK_EDIT)
        press = await fake.click(grid.id, f"ib:u:{job_id}:1", harness.alice)
        single = await harness.result_of(press)
        await settle()
        assert custom_ids(single) == [
            f"ib:x:{job_id}:1",
            f"ib:v:{job_id}:1",
            f"ib:r:{job_id}",
            f"ib:d:{job_id}",
        ]
        assert [m.id for m in results(harness)] == [grid.id, single.id]
        assert [r.accepted for r in press.responses] == [True]
        assert faults_seen(fake, CALLBACK) == FAULTS
        assert faults_seen(fake, WEBHOOK_EDIT) == FAULTS
        variation = await harness.result_of(await fake.click(single.id, f"ib:v:{job_id}:1", harness.alice))
        assert variation.embeds[0]["footer"]["text"].startswith("Variations")
    assert not fake.limit_violations


async def test_error_followup_rides_out_429_and_5xx(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An error after U2 has deferred is told in a followup: 429, 500, 503 on it, one message arrives."""
    fake = harness.fake
    async with harness.running():
        grid = await harness.result_of(await harness.slash(harness.alice, "imagine", {"prompt": "a fox"}))
        assert harness.app is not None

        async def broken(image_id: int) -> Any:
            raise RuntimeError("the image folder is gone")

        monkeypatch.setattr(harness.app.stores.jobs, "load_image", broken)
        inject_faults(fake, FOLLOWUP)
        press = await fake.click(grid.id, f"ib:u:{job_of(grid)}:0", harness.alice)
        [reply] = await press.wait_followups(1)
        await settle(0.3)
        assert press.followups == [reply]  # it fills the public "thinking…" answer, as on Discord
        assert "Something went wrong on my side" in reply.content
    assert faults_seen(fake, FOLLOWUP) == FAULTS
    assert not fake.limit_violations


async def test_discord_failing_an_edit_five_times_is_told_kindly(harness: Harness) -> None:
    """503 five times on U2's edit: discord.py gives up; the member is told Discord had trouble and may
    press again (no reference to a bug of ours), and pressing again works."""
    fake = harness.fake
    async with harness.running():
        grid = await harness.result_of(await harness.slash(harness.alice, "imagine", {"prompt": "a fox"}))
        fake.inject_error(WEBHOOK_EDIT, status=503, times=5)
        press = await fake.click(grid.id, f"ib:u:{job_of(grid)}:2", harness.alice)
        [reply] = await press.wait_followups(1)
        assert "Discord is having trouble" in reply.content
        assert "ref `" not in reply.content
        assert faults_seen(fake, WEBHOOK_EDIT) == [503] * 5
        again = await harness.result_of(await fake.click(grid.id, f"ib:u:{job_of(grid)}:2", harness.alice))
        assert again.attachments
    assert not fake.limit_violations


@pytest.mark.parametrize("how", ["retries-exhausted", "window-closed"])
@pytest.mark.parametrize("answer", ["queued-status", "deferred"])
async def test_imagine_whose_first_answer_never_lands_is_posted_once(
    harness: Harness, monkeypatch: pytest.MonkeyPatch, how: str, answer: str
) -> None:
    """The first answer to /imagine fails for good: 503 five times (discord.py gives up), or a 500 whose
    retry comes after Discord's 3 s (404 Unknown interaction). The job is queued by then, so its grid is
    posted in the channel with a mention, once, and nothing else is said (Discord already shows "The
    application did not respond"). Also when the bot was slow to decide and deferred instead."""
    fake = harness.fake
    if how == "retries-exhausted":
        fake.inject_error(CALLBACK, status=503, times=5)
    else:
        fake.inject_error(CALLBACK, status=500, times=1)

        def window_closes(delay: float) -> None:
            fake.interaction_timeout = 0.0  # the 1 s retry wait outlasts what was left of the 3 s

        monkeypatch.setattr(webhook_module, "asyncio", _QuickSleep(window_closes))
    async with harness.running():
        if answer == "deferred":
            monkeypatch.setattr(loaded_cog(harness), "ANSWER_WITHIN", 0.0)
        handle = await harness.slash(harness.alice, "imagine", {"prompt": "a fox nobody answered"})
        posted = await posted_result(harness, harness.channel)
        await harness.delivered(job_of(posted))
        await settle()
        assert not handle.acknowledged
        assert posted.content.startswith(f"<@{harness.alice}>")
        assert [m.id for m in results(harness)] == [posted.id]
        assert handle.messages == []
    expected = [503] * 5 if how == "retries-exhausted" else [500]
    assert faults_seen(fake, CALLBACK) == expected
    if how == "window-closed":
        assert [r.error_code for r in handle.responses] == [10062]
    assert not fake.limit_violations


# -- reactions: channel posts, edits and deletes ------------------------------------------------------------


async def test_reaction_status_post_failing_still_delivers_once(harness: Harness) -> None:
    """429, 500, 503 on the channel post that would show a reaction's "coming up" note: the 503 loses the
    note, but the variations are queued and arrive once, as a new message mentioning the member."""
    fake = harness.fake
    async with harness.running():
        grid = await harness.result_of(await harness.slash(harness.alice, "imagine", {"prompt": "a fox"}))
        inject_faults(fake, channel_post(harness.channel))
        await fake.react(grid.id, "2️⃣", harness.alice)
        posted = await posted_result(harness, harness.channel)
        assert harness.app is not None
        job = await harness.app.stores.jobs.get_job(job_of(posted))
        assert job.spec.parent_job_id == job_of(grid)
        await harness.delivered(job.id)
        await settle()
        assert posted.content.startswith(f"<@{harness.alice}>")
        assert [m.id for m in results(harness)] == [grid.id, posted.id]
        assert [m.id for m in fake.messages(harness.channel) if m.route == "channel"] == [posted.id]
        assert len(await harness.app.stores.jobs.list_jobs()) == 2
    assert faults_seen(fake, channel_post(harness.channel)) == FAULTS
    assert not fake.limit_violations


async def test_reaction_result_edit_rides_out_429_and_5xx(harness: Harness) -> None:
    """429, 500, 503 on the edit that turns a reaction's note into its variations: the 503 is retried by
    the bot, and the note becomes the result once."""
    fake = harness.fake
    backend = FaultsAfterRender(harness.backend, asyncio.get_running_loop())
    harness.backend = backend
    async with harness.running():
        grid = await harness.result_of(await harness.slash(harness.alice, "imagine", {"prompt": "a fox"}))
        backend.arm(lambda: inject_faults(fake, CHANNEL_EDIT))
        await fake.react(grid.id, "3️⃣", harness.alice)
        result = await posted_result(harness, harness.channel)
        await harness.delivered(job_of(result))
        await settle()
        assert result.content.startswith(f"<@{harness.alice}>")
        assert [m.id for m in results(harness)] == [grid.id, result.id]
        edits = [r.status for r in fake.requests_to(CHANNEL_EDIT) if r.files]
        assert edits[-1] == 200
    assert faults_seen(fake, CHANNEL_EDIT) == FAULTS
    assert not fake.limit_violations


async def test_reaction_refusal_post_and_delete_ride_out_429_and_5xx(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bob reacting on Alice's grid is told why in a note that is removed a little later: 429, 500, 503
    on posting the note and on deleting it; the note appears once and is gone afterwards."""
    fake = harness.fake
    async with harness.running():
        grid = await harness.result_of(await harness.slash(harness.alice, "imagine", {"prompt": "a fox"}))
        monkeypatch.setattr(loaded_cog(harness), "OUTAGE_DELAYS", (0.05, 0.05))
        monkeypatch.setattr(loaded_cog(harness), "REFUSAL_SECONDS", 0.2)
        inject_faults(fake, channel_post(harness.channel))
        inject_faults(fake, CHANNEL_DELETE)
        await fake.react(grid.id, "1️⃣", harness.bob)
        note = await fake.wait_for_message(
            lambda m: m.route == "channel" and f"<@{harness.bob}>" in m.content,
            10,
            channel_id=harness.channel,
        )
        assert "Only the member who made this image" in note.content
        await fake.world.changes.wait_for(
            lambda: True if fake.message(note.id).deleted else None, 10, "deletion"
        )
        notes = [m for m in fake.world.messages.values() if m.route == "channel"]
        assert [m.id for m in notes] == [note.id]
        assert harness.app is not None
        assert len(await harness.app.stores.jobs.list_jobs()) == 1
    assert faults_seen(fake, channel_post(harness.channel)) == FAULTS
    assert faults_seen(fake, CHANNEL_DELETE) == FAULTS
    assert not fake.limit_violations


# -- falling back: channel posts, history, DMs --------------------------------------------------------------


@pytest.mark.parametrize("history_faults", [True, False])
async def test_channel_fallback_and_history_ride_out_429_and_5xx(
    harness: Harness, history_faults: bool
) -> None:
    """The token expired, so the grid is posted in the channel: 429, 500, 503 on that post, and (or not)
    on the history the bot reads before posting again, to be sure the failed post did not land. The
    job's own status message, also in that history, is not taken for the result. The grid lands once."""
    fake = harness.fake
    with gated(harness) as backend:
        async with harness.running():
            await held_with_expired_token(harness, backend, "a slow fox")
            inject_faults(fake, channel_post(harness.channel))
            if history_faults:
                inject_faults(fake, history(harness.channel))
            backend.gate.set()
            posted = await posted_result(harness, harness.channel)
            await harness.delivered(job_of(posted))
            await settle()
            assert posted.content.startswith(f"<@{harness.alice}>")
            assert [m.id for m in results(harness)] == [posted.id]
            assert fake.requests_to(history(harness.channel))  # the bot did look before posting again
    assert faults_seen(fake, channel_post(harness.channel)) == FAULTS
    assert faults_seen(fake, history(harness.channel)) == (FAULTS if history_faults else [])
    assert not fake.limit_violations


async def test_history_failing_after_a_restart_does_not_post_twice(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bot posted a result in the channel and stopped before writing that down. After the restart it
    reads the channel to find that post; 429, 500, 503 there must not make it post a second one."""
    fake = harness.fake
    with gated(harness) as backend:
        with monkeypatch.context() as patch:

            async def lost(self: DeliveryStore, job_id: int, **kwargs: Any) -> None:
                return None  # the process "died" right after posting

            patch.setattr(DeliveryStore, "mark_delivered", lost)
            async with harness.running():
                await held_with_expired_token(harness, backend, "a fox, twice?")
                backend.gate.set()
                first = await posted_result(harness, harness.channel)
        inject_faults(fake, history(harness.channel))
        async with harness.running():
            await harness.delivered(job_of(first))
            await settle()
            assert [m.id for m in results(harness)] == [first.id]
    assert faults_seen(fake, history(harness.channel)) == FAULTS
    assert not fake.limit_violations


async def test_dm_fallback_rides_out_429_and_5xx(harness: Harness) -> None:
    """Token expired and the channel closed to the bot: the grid goes by DM through 429, 500, 503 on
    looking the member up, on opening the DM and on posting in it. It arrives once."""
    fake = harness.fake
    dm = fake.world.dm_channel(fake.world.users[harness.alice]).id
    with gated(harness) as backend:
        async with harness.running():
            await held_with_expired_token(harness, backend, "a private fox")
            fake.forbid_channel(harness.channel)
            for route in (fetch_user(harness.alice), OPEN_DM, channel_post(dm)):
                inject_faults(fake, route)
            backend.gate.set()
            sent = await posted_result(harness, dm)
            await harness.delivered(job_of(sent))
            await settle()
            assert "job #" in sent.content
            assert [m.id for m in results(harness)] == [sent.id]
            assert custom_ids(sent)[0].startswith("ib:u:")
    for route in (fetch_user(harness.alice), OPEN_DM, channel_post(dm)):
        assert faults_seen(fake, route) == FAULTS, route
    assert not fake.limit_violations


# -- the gateway --------------------------------------------------------------------------------------------


async def test_gateway_drop_while_deliveries_retry(harness: Harness) -> None:
    """The websocket drops while Alice reacts for variations and the edits of Bob's job's message meet six
    503s (more than discord.py's five tries): the reaction is replayed on RESUME and handled once, and
    Bob's grid and Alice's variations each arrive once."""
    fake = harness.fake
    with gated(harness) as backend:
        backend.gate.set()
        async with harness.running():
            grid = await harness.result_of(await harness.slash(harness.alice, "imagine", {"prompt": "a fox"}))
            backend.gate.clear()
            backend.entered.clear()
            handle = await harness.slash(harness.bob, "imagine", {"prompt": "a dog"})
            await handle.wait_response()
            await backend.until_held()
            fake.inject_error(WEBHOOK_EDIT, status=503, times=6)
            await fake.drop_gateway(wait=False)
            assert await fake.react(grid.id, "4️⃣", harness.alice)  # buffered for the RESUME
            backend.gate.set()
            dog = await grid_of(fake, handle)
            variation = await posted_result(harness, harness.channel)
            await harness.delivered(job_of(variation))
            await harness.delivered(job_of(dog))
            await settle()
            assert sorted(m.id for m in results(harness)) == sorted([grid.id, dog.id, variation.id])
            assert harness.app is not None
            assert len(await harness.app.stores.jobs.list_jobs()) == 3
            assert fake.gateway.session is not None
            assert fake.gateway.session.resumes >= 1
    assert faults_seen(fake, WEBHOOK_EDIT) == [503] * 6
    assert not fake.limit_violations
