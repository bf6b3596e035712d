"""The fake Discord against the real discord.py client: every strict behaviour the bot's tests rely on."""

from __future__ import annotations

import asyncio
import io
import re
from typing import Any

import aiohttp
import discord
import pytest
from discord import app_commands

from fake_discord import FakeDiscord, InteractionHandle, ManualClock
from fake_discord.fixtures import fake_discord  # noqa: F401  (the fixture under test)

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
pytestmark = pytest.mark.timeout(30)


class Again(discord.ui.DynamicItem[discord.ui.Button[Any]], template=r"ping:again:(?P<user>\d+)"):
    """A persistent button: it survives restarts because its state lives in the custom_id."""

    def __init__(self, user_id: int) -> None:
        super().__init__(discord.ui.Button(label="Again", custom_id=f"ping:again:{user_id}"))
        self.user_id = user_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str]
    ) -> Again:
        return cls(int(match["user"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        bot = interaction.client
        assert isinstance(bot, PingBot)
        bot.clicks.append((interaction.user.id, self.user_id))
        await interaction.response.edit_message(content=f"again for {self.user_id}", view=None)


class SixRows(discord.ui.View):
    """Emits six action rows: discord.py's own View refuses that, Discord would too."""

    def to_components(self) -> list[dict[str, Any]]:
        return [
            {"type": 1, "components": [{"type": 2, "style": 1, "label": f"b{i}", "custom_id": f"b{i}"}]}
            for i in range(6)
        ]


class Feedback(discord.ui.Modal, title="Feedback"):
    text: discord.ui.TextInput[Feedback] = discord.ui.TextInput(label="What went wrong?", custom_id="text")

    async def on_submit(self, interaction: discord.Interaction) -> None:
        await interaction.response.send_message(f"thanks: {self.text.value}", ephemeral=True)


class PingBot(discord.Client):
    def __init__(self, guild_id: int) -> None:
        super().__init__(intents=discord.Intents.default())
        self.guild = discord.Object(guild_id)
        self.tree = app_commands.CommandTree(self)
        self.clicks: list[tuple[int, int]] = []
        self.failures: list[discord.HTTPException] = []
        self.reactions: asyncio.Queue[discord.RawReactionActionEvent] = asyncio.Queue()
        self.release = asyncio.Event()  # commands that must wait for the test
        self._commands()

    def _commands(self) -> None:
        tree, guild = self.tree, self.guild

        @tree.command(name="ping", description="Answers with an image and a button", guild=guild)
        async def ping(interaction: discord.Interaction) -> None:
            await interaction.response.defer(thinking=True)
            view = discord.ui.View(timeout=None)
            view.add_item(Again(interaction.user.id))
            embed = discord.Embed(title="pong").set_image(url="attachment://pong.png")
            await interaction.followup.send(
                embed=embed, file=discord.File(io.BytesIO(PNG), "pong.png"), view=view
            )

        @tree.command(name="slow", description="Answers only once the test releases it", guild=guild)
        async def slow(interaction: discord.Interaction) -> None:
            await self.release.wait()
            await self._attempt(interaction.response.send_message("finally"))

        @tree.command(name="later", description="Defers, then follows up once released", guild=guild)
        async def later(interaction: discord.Interaction) -> None:
            await interaction.response.defer()
            await self.release.wait()
            await self._attempt(interaction.followup.send("done"))

        @tree.command(name="rows", description="Sends too many action rows", guild=guild)
        async def rows(interaction: discord.Interaction) -> None:
            await self._attempt(interaction.response.send_message("six rows", view=SixRows()))

        @tree.command(
            name="progress", description="Edits its deferred reply, then attaches the result", guild=guild
        )
        async def progress(interaction: discord.Interaction) -> None:
            await interaction.response.defer()
            await interaction.edit_original_response(content="50%")
            file = discord.File(io.BytesIO(PNG), "result.png")
            await interaction.edit_original_response(content="done", attachments=[file])

        @tree.command(name="style", description="Offers styles in a select menu", guild=guild)
        async def style(interaction: discord.Interaction) -> None:
            select: discord.ui.Select[discord.ui.View] = discord.ui.Select(
                custom_id="style", options=[discord.SelectOption(label=s) for s in ("photo", "anime", "ink")]
            )

            async def chosen(choice: discord.Interaction) -> None:
                await choice.response.edit_message(content=f"style: {select.values[0]}", view=None)

            select.callback = chosen  # type: ignore[method-assign,assignment]
            view = discord.ui.View(timeout=60)
            view.add_item(select)
            await interaction.response.send_message("pick a style", view=view)

        @tree.command(name="feedback", description="Asks for text in a modal", guild=guild)
        async def feedback(interaction: discord.Interaction) -> None:
            await interaction.response.send_modal(Feedback())

    async def _attempt(self, call: Any) -> None:
        try:
            await call
        except discord.HTTPException as exc:
            self.failures.append(exc)

    async def setup_hook(self) -> None:
        self.add_dynamic_items(Again)
        await self.tree.sync(guild=self.guild)

    async def on_raw_reaction_add(self, payload: discord.RawReactionActionEvent) -> None:
        self.reactions.put_nowait(payload)


class World:
    def __init__(self, fake: FakeDiscord) -> None:
        self.fake = fake
        self.guild = fake.add_guild("Art Club")
        self.channel = fake.add_channel(self.guild, "art")
        self.alice = fake.add_member(self.guild, name="alice")


@pytest.fixture
def world(fake_discord: FakeDiscord) -> World:  # noqa: F811
    return World(fake_discord)


async def test_ping_defers_then_follows_up_with_file_and_a_working_button(world: World) -> None:
    fake = world.fake
    bot = PingBot(world.guild)
    async with fake.running(bot):
        assert [c["name"] for c in fake.commands(world.guild)][:4] == ["ping", "slow", "later", "rows"]
        assert fake.intents is not None
        assert not fake.intents.message_content
        # zlib-stream, or zstd-stream when a zstd module is importable: whatever discord.py asked for.
        asked = discord.utils._ActiveDecompressionContext.COMPRESSION_TYPE
        assert fake.gateway.connections[0].compression == asked

        it = await fake.invoke_slash(world.guild, world.channel, world.alice, "ping")
        deferral = await it.wait_response()
        assert deferral.accepted
        assert deferral.type == 5
        [message] = await it.wait_followups()
        # The first followup after a deferral replaces the "thinking" placeholder.
        assert message.id == it.original_message_id
        assert not message.loading
        assert message.files == {"pong.png": PNG}
        assert message.embeds[0]["title"] == "pong"
        assert message.embeds[0]["image"]["url"] == message.attachments[0].url
        assert message.custom_ids == [f"ping:again:{world.alice}"]
        assert fake.messages(world.channel) == [message]

        # discord.py can download what it uploaded: attachment URLs point back at the fake.
        async with aiohttp.ClientSession() as session, session.get(message.attachments[0].url) as resp:
            assert await resp.read() == PNG

        click = await fake.click(message.id, f"ping:again:{world.alice}", world.alice)
        update = await click.wait_response()
        assert update.accepted
        assert update.type == 7
        assert bot.clicks == [(world.alice, world.alice)]
        assert message.content == f"again for {world.alice}"
        assert message.components == []
        assert message.edits == 2  # placeholder -> followup -> button update
        with pytest.raises(LookupError):
            await fake.click(message.id, "no-such-button", world.alice)
    assert not fake.errors
    assert not fake.limit_violations
    assert not fake.warnings


async def test_a_late_first_response_gets_unknown_interaction(world: World) -> None:
    fake = world.fake
    fake.clock = clock = ManualClock()
    bot = PingBot(world.guild)
    async with fake.running(bot):
        it = await fake.invoke_slash(world.guild, world.channel, world.alice, "slow")
        clock.advance(3.5)
        bot.release.set()
        attempt = await it.wait_response()
    assert (attempt.status, attempt.error_code) == (404, 10062)
    assert [(e.status, e.code) for e in bot.failures] == [(404, 10062)]
    assert not it.acknowledged
    assert it.original is None
    assert [(e.status, e.code) for e in fake.errors] == [(404, 10062)]


async def test_a_second_acknowledgement_is_refused(world: World) -> None:
    fake = world.fake
    bot = PingBot(world.guild)
    async with fake.running(bot):
        it = await fake.invoke_slash(world.guild, world.channel, world.alice, "slow")
        # Someone else (a second instance of the bot, say) acknowledges first.
        url = f"{fake.api_url}/interactions/{it.id}/{it.token}/callback"
        async with aiohttp.ClientSession() as session, session.post(url, json={"type": 5}) as resp:
            assert resp.status == 204
        bot.release.set()
        await fake.wait_for_request("POST /interactions/{id}/{token}/callback", count=2)
    assert [(r.status, r.error_code) for r in it.responses] == [(204, None), (400, 40060)]
    assert [(e.status, e.code) for e in bot.failures] == [(400, 40060)]


async def test_followups_after_the_token_expired_get_invalid_webhook_token(world: World) -> None:
    fake = world.fake
    fake.clock = clock = ManualClock()
    bot = PingBot(world.guild)
    async with fake.running(bot):
        it = await fake.invoke_slash(world.guild, world.channel, world.alice, "later")
        assert (await it.wait_response()).type == 5
        clock.advance(fake.token_lifetime + 1)
        bot.release.set()
        await fake.wait_for_request("POST /webhooks/{app}/{token}")
    assert [(e.status, e.code) for e in bot.failures] == [(401, 50027)]
    assert [(e.status, e.code) for e in it.errors] == [(401, 50027)]
    assert it.original is not None
    assert it.original.loading


async def test_expire_tokens_also_kills_edits(world: World) -> None:
    fake = world.fake
    bot = PingBot(world.guild)
    async with fake.running(bot):
        it = await fake.invoke_slash(world.guild, world.channel, world.alice, "ping")
        [message] = await it.wait_followups()
        fake.expire_tokens()
        url = f"{fake.api_url}/webhooks/{fake.application_id}/{it.token}/messages/@original"
        async with aiohttp.ClientSession() as session, session.patch(url, json={"content": "x"}) as resp:
            assert resp.status == 401
            assert (await resp.json())["code"] == 50027
    assert message.content == ""


async def test_a_429_on_the_followup_is_retried_and_posts_once(world: World) -> None:
    fake = world.fake
    fake.inject_429("POST /webhooks/{app}/{token}", times=1, retry_after=0.05)
    bot = PingBot(world.guild)
    async with fake.running(bot):
        it = await fake.invoke_slash(world.guild, world.channel, world.alice, "ping")
        [message] = await it.wait_followups()
    posts = fake.requests_to("POST /webhooks/{app}/{token}")
    assert [p.status for p in posts] == [429, 200]
    assert posts[0].response["retry_after"] == 0.05
    assert [m.id for m in fake.messages(world.channel)] == [message.id]
    assert message.files == {"pong.png": PNG}
    assert [(e.status, e.injected) for e in fake.errors] == [(429, True)]


async def test_six_action_rows_are_rejected_and_recorded(world: World) -> None:
    fake = world.fake
    bot = PingBot(world.guild)
    async with fake.running(bot):
        it = await fake.invoke_slash(world.guild, world.channel, world.alice, "rows")
        attempt = await it.wait_response()
    assert (attempt.status, attempt.error_code) == (400, 50035)
    assert [(e.status, e.code) for e in bot.failures] == [(400, 50035)]
    [violation] = fake.limit_violations
    assert (violation.field, violation.code) == ("data.components", "BASE_TYPE_MAX_LENGTH")
    assert fake.messages(world.channel) == []


async def test_a_bad_token_fails_login(world: World) -> None:
    fake = world.fake
    with pytest.raises(discord.LoginFailure):
        async with fake.running(PingBot(world.guild), token="not-the-token"):
            pass
    assert [(e.method, e.path, e.status) for e in fake.errors] == [("GET", "/users/@me", 401)]
    assert fake.gateway.connections == []


async def test_user_reactions_reach_on_raw_reaction_add(world: World) -> None:
    fake = world.fake
    bot = PingBot(world.guild)
    async with fake.running(bot):
        posted = await fake.post_message(world.channel, world.alice, "look at this")
        assert await fake.react(posted.id, "👍", world.alice)
        event = await asyncio.wait_for(bot.reactions.get(), 5)
    assert (event.message_id, event.user_id, event.channel_id) == (posted.id, world.alice, world.channel)
    assert event.guild_id == world.guild
    assert str(event.emoji) == "👍"
    assert event.member is not None
    assert event.member.id == world.alice


async def test_a_dropped_gateway_resumes_and_replays_what_was_missed(world: World) -> None:
    fake = world.fake
    bot = PingBot(world.guild)
    async with fake.running(bot):
        await fake.drop_gateway(wait=False)
        # Dispatched while the bot is away: it must arrive through RESUME's replay.
        it = await fake.invoke_slash(world.guild, world.channel, world.alice, "ping")
        [message] = await it.wait_followups()
        assert message.files == {"pong.png": PNG}
        await fake.wait_until_ready()
        actions = [(c.path, c.action) for c in fake.gateway.connections]
        assert actions == [("/gateway", "identify"), ("/resume", "resume")]

        later = await fake.invoke_slash(world.guild, world.channel, world.alice, "ping")
        assert len(await later.wait_followups()) == 1
    assert not fake.errors


async def test_channel_routes_enforce_permissions_sizes_and_commands(world: World) -> None:
    """REST-only checks: login (no gateway) and call discord.py's HTTP client directly."""
    fake = world.fake
    closed = fake.add_channel(world.guild, "announcements")
    fake.forbid_channel(closed)
    fake.set_attachment_limit(world.guild, 1024)
    client = discord.Client(intents=discord.Intents.default())
    await client.login(fake.token)
    try:
        channel = await client.fetch_channel(world.channel)
        assert isinstance(channel, discord.TextChannel)
        sent = await channel.send("hello", file=discord.File(io.BytesIO(b"x" * 1000), "small.bin"))
        assert fake.message(sent.id).files == {"small.bin": b"x" * 1000}
        with pytest.raises(discord.HTTPException) as too_big:
            await channel.send(file=discord.File(io.BytesIO(b"x" * 2000), "big.bin"))
        assert (too_big.value.status, too_big.value.code) == (413, 40005)
        with pytest.raises(discord.HTTPException) as too_long:
            await channel.send("x" * 2001)
        assert too_long.value.code == 50035
        with pytest.raises(discord.Forbidden) as forbidden:
            await client.get_partial_messageable(closed).send("hi")
        assert forbidden.value.code == 50013
        await sent.add_reaction("🔄")
        assert fake.message(sent.id).reactions == {"🔄": [fake.bot_user_id]}
        with pytest.raises(discord.HTTPException) as bad_command:
            await client.http.bulk_upsert_guild_commands(
                fake.application_id, world.guild, [{"name": "Imagine", "description": "x"}]
            )
        assert bad_command.value.code == 50035
    finally:
        await client.close()
    assert [(v.field, v.code) for v in fake.limit_violations] == [
        ("files.0", "FILE_TOO_LARGE"),
        ("content", "BASE_TYPE_MAX_LENGTH"),
        ("0.name", "APPLICATION_COMMAND_INVALID_NAME"),
    ]
    assert [m.content for m in fake.messages(world.channel)] == ["hello"]


async def test_invoke_slash_types_options_from_the_synced_schema(world: World) -> None:
    fake = world.fake
    client = discord.Client(intents=discord.Intents.default())
    tree = app_commands.CommandTree(client)
    seen: list[tuple[str, int, discord.Member | discord.User]] = []
    quota = app_commands.Group(
        name="quota",
        description="Quotas",
        guild_ids=[world.guild],
        default_permissions=discord.Permissions(manage_guild=True),
    )

    @quota.command(name="set", description="Set a member's quota")
    async def quota_set(interaction: discord.Interaction, member: discord.Member, images: int) -> None:
        seen.append(("set", images, member))
        await interaction.response.send_message("ok", ephemeral=True)

    tree.add_command(quota)
    admin = fake.add_member(world.guild, name="admin", permissions=0x20)
    async with fake.running(client):
        await tree.sync(guild=discord.Object(world.guild))
        with pytest.raises(PermissionError):
            await fake.invoke_slash(
                world.guild,
                world.channel,
                world.alice,
                "quota",
                subcommand="set",
                options={"member": world.alice, "images": 3},
            )
        with pytest.raises(ValueError, match="integer"):
            await fake.invoke_slash(
                world.guild,
                world.channel,
                admin,
                "quota",
                subcommand="set",
                options={"member": world.alice, "images": "3"},
            )
        with pytest.raises(LookupError):
            await fake.invoke_slash(world.guild, world.channel, admin, "imagine")
        it: InteractionHandle = await fake.invoke_slash(
            world.guild,
            world.channel,
            admin,
            "quota",
            subcommand="set",
            options={"member": world.alice, "images": 3},
        )
        reply = await it.wait_response()
    assert reply.accepted
    assert reply.ephemeral
    assert [(name, n, m.id) for name, n, m in seen] == [("set", 3, world.alice)]
    assert [m.content for m in it.ephemeral_messages] == ["ok"]


async def test_progress_edits_keep_a_history_and_the_final_attachment(world: World) -> None:
    fake = world.fake
    async with fake.running(PingBot(world.guild)):
        it = await fake.invoke_slash(world.guild, world.channel, world.alice, "progress")
        message = await it.wait_original(lambda m: m.content == "done")
    assert [v.content for v in message.history] == ["", "50%", "done"]
    assert message.edits == 2
    assert not message.loading
    assert message.files == {"result.png": PNG}
    assert it.messages == [message]
    assert it.followups == []


async def test_a_modal_round_trip(world: World) -> None:
    fake = world.fake
    async with fake.running(PingBot(world.guild)):
        opened = await fake.invoke_slash(world.guild, world.channel, world.alice, "feedback")
        assert (await opened.wait_response()).type == 9
        with pytest.raises(ValueError, match="required"):
            await fake.submit_modal(opened, {"text": ""})
        submitted = await fake.submit_modal(opened, {"text": "too blurry"})
        reply = await submitted.wait_response()
    assert reply.accepted
    assert reply.ephemeral
    assert [m.content for m in submitted.ephemeral_messages] == ["thanks: too blurry"]


async def test_persistent_buttons_work_after_a_restart(world: World) -> None:
    fake = world.fake
    async with fake.running(PingBot(world.guild)):
        it = await fake.invoke_slash(world.guild, world.channel, world.alice, "ping")
        [message] = await it.wait_followups()
    restarted = PingBot(world.guild)
    async with fake.running(restarted):
        click = await fake.click(message.id, f"ping:again:{world.alice}", world.alice)
        assert (await click.wait_response()).accepted
    assert restarted.clicks == [(world.alice, world.alice)]
    assert [c.action for c in fake.gateway.connections] == ["identify", "identify"]


async def test_privileged_intents_are_refused_unless_enabled(world: World) -> None:
    fake = world.fake
    wants_content = discord.Intents.default()
    wants_content.message_content = True
    with pytest.raises(discord.PrivilegedIntentsRequired):
        async with fake.running(discord.Client(intents=wants_content)):
            pass

    seen: asyncio.Queue[str] = asyncio.Queue()
    client = discord.Client(intents=discord.Intents.default())

    @client.event
    async def on_message(message: discord.Message) -> None:
        seen.put_nowait(message.content)

    async with fake.running(client):
        await fake.post_message(world.channel, world.alice, "secret prompt")
        await fake.post_message(world.channel, world.alice, f"<@{fake.bot_user_id}> hello")
        contents = [await asyncio.wait_for(seen.get(), 5) for _ in range(2)]
    # Without MESSAGE_CONTENT only messages that mention the bot keep their text.
    assert contents == ["", f"<@{fake.bot_user_id}> hello"]


async def test_an_injected_500_is_retried_by_discord_py(world: World) -> None:
    fake = world.fake
    fake.inject_error("POST /channels/{id}/messages", status=500)
    client = discord.Client(intents=discord.Intents.default())
    await client.login(fake.token)
    try:
        await client.get_partial_messageable(world.channel).send("after an outage")
    finally:
        await client.close()
    assert [r.status for r in fake.requests_to("POST /channels/{id}/messages")] == [500, 200]
    assert [m.content for m in fake.messages(world.channel)] == ["after an outage"]


async def test_direct_messages_and_closed_dms(world: World) -> None:
    fake = world.fake
    bob = fake.add_member(world.guild, name="bob")
    fake.block_dms(bob)
    client = discord.Client(intents=discord.Intents.default())
    await client.login(fake.token)
    try:
        await (await client.fetch_user(world.alice)).send("your image is ready")
        with pytest.raises(discord.Forbidden) as closed:
            await (await client.fetch_user(bob)).send("your image is ready")
    finally:
        await client.close()
    assert closed.value.code == 50007
    assert [m.content for m in fake.dm_messages(world.alice)] == ["your image is ready"]
    assert fake.dm_messages(bob) == []


async def test_a_select_menu_round_trip(world: World) -> None:
    fake = world.fake
    async with fake.running(PingBot(world.guild)):
        it = await fake.invoke_slash(world.guild, world.channel, world.alice, "style")
        menu = await fake.wait_for_message(lambda m: m.content == "pick a style", channel_id=world.channel)
        with pytest.raises(ValueError, match="not options"):
            await fake.select(menu.id, "style", ["watercolour"], world.alice)
        await fake.select(menu.id, "style", ["anime"], world.alice)
        await fake.wait_for_message(lambda m: m.content == "style: anime")
    assert it.original is menu
    assert [v.content for v in menu.history] == ["pick a style", "style: anime"]
