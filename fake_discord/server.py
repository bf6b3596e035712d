"""`FakeDiscord`: the server (REST + gateway on 127.0.0.1) and the API end-to-end tests drive it with."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

import discord
from aiohttp import web

from . import interactions as ix
from . import permissions as perms
from . import routes_app, routes_channels, routes_interactions
from .clock import Clock, RealClock
from .gateway import Gateway
from .interactions import InteractionHandle, Upload
from .limits import DiscordLimits
from .messaging import announce, message_payload
from .models import FakeMessage, User
from .patch import patch_discord
from .payloads import emoji_object
from .payloads import member as member_payload
from .ratelimit import Fault, FaultInjector, RateLimiter
from .records import ErrorRecord, LimitViolation, RecordedRequest, RenderWarning
from .rest import API_PREFIX, RestApi
from .routing import RoutePattern
from .snowflake import SnowflakeGenerator
from .state import World

# What forbid_channel() takes from the bot by default: it still sees the channel but cannot post there.
FORBIDDEN_DEFAULT = perms.SEND_MESSAGES | perms.ATTACH_FILES | perms.EMBED_LINKS | perms.ADD_REACTIONS


class FakeDiscord:
    """A strict local Discord for the real discord.py client. See the package docstring for usage."""

    def __init__(
        self,
        *,
        token: str = "test-token",
        application_id: int | None = None,
        bot_user_id: int | None = None,
        bot_name: str = "imagine-bot",
        interaction_timeout: float = 3.0,
        token_lifetime: float = 900.0,
        clock: Clock | None = None,
        privileged_intents: int = 0,
        bot_permissions: int = perms.DEFAULT_BOT,
        limits: DiscordLimits | None = None,
        heartbeat_interval_ms: int = 41_250,
    ) -> None:
        ids = SnowflakeGenerator()
        self.token = token
        self.clock: Clock = clock or RealClock()
        self.interaction_timeout = interaction_timeout
        self.token_lifetime = token_lifetime
        self.privileged_intents = privileged_intents  # what the developer portal would allow
        self.bot_permissions = bot_permissions
        self.limits = limits or DiscordLimits()
        bot = User(id=bot_user_id or ids.next(), username=bot_name, bot=True, global_name=bot_name)
        self.world = World(application_id=application_id or ids.next(), bot=bot, limits=self.limits)
        self.owner = self.world.add_user(None, "app-owner")
        self.gateway = Gateway(
            self.world,
            token=lambda: self.token,
            privileged_intents=lambda: self.privileged_intents,
            heartbeat_interval_ms=heartbeat_interval_ms,
        )
        self.faults = FaultInjector()
        self.rate_limits = RateLimiter()
        self.rest = RestApi(self)
        for routes in (routes_app, routes_channels, routes_interactions):
            routes.register(self.rest)
        self.requests: list[RecordedRequest] = []
        self.errors: list[ErrorRecord] = []
        self.limit_violations: list[LimitViolation] = []
        self.interactions: dict[int, InteractionHandle] = {}
        self.interactions_by_token: dict[str, InteractionHandle] = {}
        self._runner: web.AppRunner | None = None
        self.port = 0

    # --- lifecycle --------------------------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)  # room to read, then refuse, big uploads
        app.router.add_route("*", API_PREFIX + "/{tail:.*}", self.rest.handle)
        app.router.add_get("/gateway", self.gateway.handle)
        app.router.add_get("/resume", self.gateway.handle)
        app.router.add_get("/attachments/{channel_id}/{attachment_id}/{filename}", self._serve_attachment)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site.port
        self.world.base_url = self.base_url
        self.gateway.ws_base = f"ws://127.0.0.1:{self.port}"

    async def stop(self) -> None:
        await self.gateway.close_all()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeDiscord:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_url(self) -> str:
        return self.base_url + API_PREFIX

    @property
    def gateway_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/gateway"

    @property
    def application_id(self) -> int:
        return self.world.application_id

    @property
    def bot_user_id(self) -> int:
        return self.world.bot.id

    def patch_discord(self) -> contextlib.AbstractContextManager[None]:
        """Point discord.py (Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY) here; restores on exit."""
        if not self.port:
            raise RuntimeError("start() the fake before patching discord.py")
        return patch_discord(self.api_url, self.gateway_url)

    @asynccontextmanager
    async def running(
        self,
        client: discord.Client,
        *,
        token: str | None = None,
        timeout: float = 10.0,  # noqa: ASYNC109
    ) -> AsyncIterator[discord.Client]:
        """Run `client.start()` as a task until the fake saw it ready; close it, then raise its errors."""
        with self.patch_discord():
            task = asyncio.create_task(client.start(token or self.token))
            ready = asyncio.create_task(self.wait_until_ready(timeout))
            try:
                done, _ = await asyncio.wait({task, ready}, return_when=asyncio.FIRST_COMPLETED)
                if task in done:
                    task.result()  # raises what stopped the client (e.g. LoginFailure)
                    raise RuntimeError("the client stopped before it was ready")
                ready.result()
                yield client
            finally:
                ready.cancel()
                await client.close()
                finished, _ = await asyncio.wait({task}, timeout=5.0)
                if not finished:
                    task.cancel()
        error = task.exception() if task.done() and not task.cancelled() else None
        if error is not None:
            raise error

    async def _serve_attachment(self, request: web.Request) -> web.Response:
        aid = request.match_info["attachment_id"]
        attachment = self.world.attachments.get(int(aid)) if aid.isdigit() else None
        if attachment is None or attachment.filename != request.match_info["filename"]:
            return web.Response(status=404, text="Not Found")
        return web.Response(
            body=attachment.data, content_type=attachment.content_type or "application/octet-stream"
        )

    def record_error(self, error: ErrorRecord) -> None:
        self.errors.append(error)

    # --- building the world -----------------------------------------------------------------------

    def add_guild(
        self,
        name: str = "Test Guild",
        *,
        owner_id: int | None = None,
        bot_permissions: int | None = None,
        attachment_size_limit: int | None = None,
        locale: str = "en-US",
    ) -> int:
        world = self.world
        guild = world.add_guild(
            name,
            owner_id if owner_id is not None else world.ids.next(),
            self.bot_permissions if bot_permissions is None else bot_permissions,
            attachment_size_limit or self.limits.attachment_size,
        )
        guild.locale = locale
        if self.gateway.session is not None:
            self.gateway.dispatch(
                "GUILD_CREATE",
                self.gateway.guild_create(guild.id, self.gateway.session),
                intent=perms.INTENT_GUILDS,
            )
        return guild.id

    def add_channel(self, guild_id: int, name: str = "general", *, nsfw: bool = False) -> int:
        channel = self.world.add_channel(self.world.guilds[guild_id], name, nsfw)
        self._channel_event("CHANNEL_CREATE", channel.id)
        return channel.id

    def add_member(
        self,
        guild_id: int,
        user_id: int | None = None,
        name: str | None = None,
        *,
        permissions: int = 0,
        bot: bool = False,
    ) -> int:
        """Add a user to a guild; `permissions` are granted through a role of their own."""
        world = self.world
        guild = world.guilds[guild_id]
        user = world.add_user(user_id, name or f"user-{len(world.users)}", bot=bot)
        member = world.add_member(guild, user, permissions)
        if self.gateway.session is not None:
            self.gateway.dispatch(
                "GUILD_MEMBER_ADD",
                {**member_payload(member), "guild_id": str(guild_id)},
                intent=perms.INTENT_GUILD_MEMBERS,
            )
        return user.id

    def forbid_channel(self, channel_id: int, permissions: int = FORBIDDEN_DEFAULT) -> None:
        """Deny the bot `permissions` there (default: posting, files, embeds, reactions) -> 403 50013."""
        channel = self.world.channels[channel_id]
        channel.bot_denied |= permissions
        channel.overwrites = [
            {"id": str(self.bot_user_id), "type": 1, "allow": "0", "deny": str(channel.bot_denied)}
        ]
        self._channel_event("CHANNEL_UPDATE", channel_id)

    def allow_channel(self, channel_id: int) -> None:
        channel = self.world.channels[channel_id]
        channel.bot_denied, channel.overwrites = 0, []
        self._channel_event("CHANNEL_UPDATE", channel_id)

    def update_channel(self, channel_id: int, *, name: str | None = None, nsfw: bool | None = None) -> None:
        channel = self.world.channels[channel_id]
        if name is not None:
            channel.name = name
        if nsfw is not None:
            channel.nsfw = nsfw
        self._channel_event("CHANNEL_UPDATE", channel_id)

    def _channel_event(self, event: str, channel_id: int) -> None:
        from .payloads import channel as channel_payload

        self.gateway.dispatch(
            event, channel_payload(self.world.channels[channel_id]), intent=perms.INTENT_GUILDS
        )

    def block_dms(self, user_id: int) -> None:
        """The user closed their DMs: the bot's DMs to them fail with 403 50007."""
        self.world.blocked_dms.add(user_id)

    def set_attachment_limit(self, guild_id: int, size: int) -> None:
        self.world.guilds[guild_id].attachment_size_limit = size

    # --- users acting -----------------------------------------------------------------------------

    async def invoke_slash(
        self,
        guild_id: int | None,
        channel_id: int,
        user_id: int,
        name: str,
        options: Mapping[str, Any] | None = None,
        *,
        subcommand: str | None = None,
        locale: str = "en-US",
        check_permissions: bool = True,
    ) -> InteractionHandle:
        """Type `/name [subcommand] options` as `user_id`; options are typed from the synced schema.

        `subcommand` may hold a group too ("group sub"). With `check_permissions`, a member lacking
        the command's `default_member_permissions` cannot invoke it, nor can anyone in a DM (`guild_id`
        None) a command whose `contexts` leave out DMs: the client would hide it.
        """
        world = self.world
        path = name.split() + (subcommand.split() if subcommand else [])
        command = world.find_command(guild_id, path[0])
        if command is None:
            raise LookupError(
                f"/{path[0]} is not synced for guild {guild_id} or globally; sync the tree first"
            )
        channel, user = self._where(guild_id, channel_id, user_id)
        contexts = command.get("contexts") or [0, 1, 2]  # none given: every context
        if check_permissions and guild_id is None and 1 not in contexts:
            raise PermissionError(f"/{path[0]} is not offered in direct messages (contexts)")
        required = command.get("default_member_permissions")
        if check_permissions and guild_id is not None and required is not None:
            granted = world.channel_permissions(channel, user_id)
            if granted & int(required) != int(required):
                raise PermissionError(f"user {user_id} lacks {required} needed to see /{path[0]}")
        handle = InteractionHandle(
            world,
            kind=ix.APPLICATION_COMMAND,
            guild_id=guild_id,
            channel_id=channel.id,  # in a DM: the user's DM channel, whatever `channel_id` said
            user_id=user_id,
            created_at=self.clock.now(),
            name=" ".join(path),
        )
        payload = ix.base_payload(world, handle, channel, user, locale)
        guild = world.guilds[guild_id] if guild_id is not None else None
        payload["data"] = ix.command_data(world, guild, command, path[1:], options or {})
        return self._send_interaction(handle, payload)

    async def click(
        self, message_id: int, custom_id: str, user_id: int, *, locale: str = "en-US"
    ) -> InteractionHandle:
        """Press a button; raises if the message shows no such enabled button to this user."""
        message, component = self._component(message_id, custom_id, user_id)
        if component.get("type") != 2 or component.get("style") == 5:
            raise LookupError(f"{custom_id!r} is not a clickable button (type {component.get('type')})")
        return self._component_interaction(message, component, user_id, locale, {})

    async def select(
        self, message_id: int, custom_id: str, values: Sequence[str], user_id: int, *, locale: str = "en-US"
    ) -> InteractionHandle:
        """Pick `values` in a string select menu."""
        message, component = self._component(message_id, custom_id, user_id)
        if component.get("type") != 3:
            raise LookupError(f"{custom_id!r} is not a string select (type {component.get('type')})")
        offered = {o["value"] for o in component.get("options") or []}
        if not set(values) <= offered:
            raise ValueError(f"{sorted(set(values) - offered)} are not options of {custom_id!r}")
        low, high = component.get("min_values", 1), component.get("max_values", 1)
        if not low <= len(values) <= high:
            raise ValueError(f"{custom_id!r} takes between {low} and {high} values")
        return self._component_interaction(message, component, user_id, locale, {"values": list(values)})

    def _component(self, message_id: int, custom_id: str, user_id: int) -> tuple[FakeMessage, dict[str, Any]]:
        message = self.world.messages.get(message_id)
        if message is None or message.deleted:
            raise LookupError(f"message {message_id} does not exist (or was deleted)")
        if message.ephemeral:
            owner = self.interactions.get(message.interaction_id or 0)
            if owner is None or owner.user_id != user_id:
                raise PermissionError(f"message {message_id} is ephemeral; user {user_id} cannot see it")
        component = message.component(custom_id)
        if component is None:
            raise LookupError(
                f"message {message_id} has no component {custom_id!r}; it has {message.custom_ids}"
            )
        if component.get("disabled"):
            raise PermissionError(f"component {custom_id!r} is disabled")
        return message, component

    def _component_interaction(
        self,
        message: FakeMessage,
        component: dict[str, Any],
        user_id: int,
        locale: str,
        extra: dict[str, Any],
    ) -> InteractionHandle:
        world = self.world
        channel, user = self._where(message.guild_id, message.channel_id, user_id)
        handle = InteractionHandle(
            world,
            kind=ix.MESSAGE_COMPONENT,
            guild_id=message.guild_id,
            channel_id=channel.id,
            user_id=user_id,
            created_at=self.clock.now(),
            source_message_id=message.id,
        )
        payload = ix.base_payload(world, handle, channel, user, locale)
        payload["data"] = {
            "custom_id": component["custom_id"],
            "component_type": component["type"],
            **({"id": component["id"]} if "id" in component else {}),
            **extra,
        }
        payload["message"] = message_payload(self, message)
        return self._send_interaction(handle, payload)

    async def submit_modal(
        self, opened_by: InteractionHandle, values: Mapping[str, Any], *, locale: str = "en-US"
    ) -> InteractionHandle:
        """Submit the modal the bot answered `opened_by` with (callback type 9)."""
        modal = opened_by.modal
        if modal is None:
            raise LookupError(f"{opened_by!r} was not answered with a modal")
        world = self.world
        channel, user = self._where(opened_by.guild_id, opened_by.channel_id, opened_by.user_id)
        handle = InteractionHandle(
            world,
            kind=ix.MODAL_SUBMIT,
            guild_id=opened_by.guild_id,
            channel_id=channel.id,
            user_id=user.id,
            created_at=self.clock.now(),
            source_message_id=opened_by.source_message_id,
        )
        payload = ix.base_payload(world, handle, channel, user, locale)
        payload["data"] = {
            "custom_id": modal["custom_id"],
            "components": ix.modal_submit_components(modal, values),
        }
        if opened_by.source_message_id is not None:
            payload["message"] = message_payload(self, world.messages[opened_by.source_message_id])
        return self._send_interaction(handle, payload)

    def _where(self, guild_id: int | None, channel_id: int, user_id: int) -> tuple[Any, User]:
        world = self.world
        channel = world.channels.get(channel_id)
        user = world.users.get(user_id)
        if user is None:
            raise LookupError(f"user {user_id} does not exist; add_member() it first")
        if guild_id is None:
            if channel is None:
                channel = world.dm_channel(user)
            return channel, user
        if channel is None or channel.guild_id != guild_id:
            raise LookupError(f"channel {channel_id} is not a channel of guild {guild_id}")
        if user_id not in world.guilds[guild_id].members:
            raise LookupError(f"user {user_id} is not a member of guild {guild_id}")
        return channel, user

    def _send_interaction(self, handle: InteractionHandle, payload: dict[str, Any]) -> InteractionHandle:
        handle.payload = payload
        handle.created_at = self.clock.now()
        self.interactions[handle.id] = handle
        self.interactions_by_token[handle.token] = handle
        if not self.gateway.dispatch("INTERACTION_CREATE", payload):
            raise RuntimeError("no bot session on the gateway: start the client and wait_until_ready() first")
        self.world.changes.notify()
        return handle

    async def react(self, message_id: int, emoji: str, user_id: int) -> bool:
        """A user adds a reaction (unicode, or `name:id`). False if the bot's intents hide it from the bot."""
        message = self.world.messages.get(message_id)
        if message is None or message.deleted or message.ephemeral:
            raise LookupError(f"message {message_id} cannot be reacted to")
        if message.guild_id is not None and user_id not in self.world.guilds[message.guild_id].members:
            raise LookupError(f"user {user_id} is not a member of guild {message.guild_id}")
        users = message.reactions.setdefault(emoji, [])
        if user_id not in users:
            users.append(user_id)
        self.world.changes.notify()
        return self.dispatch_reaction("MESSAGE_REACTION_ADD", message, emoji, user_id)

    async def unreact(self, message_id: int, emoji: str, user_id: int) -> bool:
        message = self.world.messages[message_id]
        if user_id in message.reactions.get(emoji, []):
            message.reactions[emoji].remove(user_id)
        self.world.changes.notify()
        return self.dispatch_reaction("MESSAGE_REACTION_REMOVE", message, emoji, user_id)

    def dispatch_reaction(self, event: str, message: FakeMessage, emoji: str, user_id: int) -> bool:
        data: dict[str, Any] = {
            "user_id": str(user_id),
            "channel_id": str(message.channel_id),
            "message_id": str(message.id),
            "emoji": emoji_object(emoji),
            "burst": False,
            "type": 0,
        }
        intent = perms.INTENT_DIRECT_MESSAGE_REACTIONS
        if message.guild_id is not None:
            intent = perms.INTENT_GUILD_MESSAGE_REACTIONS
            data["guild_id"] = str(message.guild_id)
            if event == "MESSAGE_REACTION_ADD":
                data.update(
                    {
                        "message_author_id": str(message.author.id),
                        "burst_colors": [],
                        "member": member_payload(self.world.guilds[message.guild_id].members[user_id]),
                    }
                )
        return self.gateway.dispatch(event, data, intent=intent)

    async def post_message(self, channel_id: int, user_id: int, content: str) -> FakeMessage:
        """A user writes in a channel (MESSAGE_CREATE; content hidden without the MESSAGE_CONTENT intent)."""
        world = self.world
        channel = world.channels[channel_id]
        message = world.create_message(
            channel=channel,
            author=world.users[user_id],
            payload={"content": content},
            uploads=[],
            route="user",
        )
        announce(self, "MESSAGE_CREATE", message)
        return message

    # --- queries ----------------------------------------------------------------------------------

    @property
    def intents(self) -> discord.Intents | None:
        """The intents the client identified with (None before it did)."""
        value = self.gateway.intents
        return None if value is None else discord.Intents._from_value(value)

    @property
    def warnings(self) -> list[RenderWarning]:
        return self.world.warnings

    @property
    def invalid_requests(self) -> int:
        """401/403/429 answers so far: Discord bans an IP that piles up 10,000 of them in 10 minutes."""
        return sum(1 for e in self.errors if e.status in (401, 403, 429) and not e.injected)

    def messages(self, channel_id: int) -> list[FakeMessage]:
        """Messages in a channel, oldest first, including interaction responses, followups and ephemerals."""
        return sorted(self.world.visible_messages(channel_id), key=lambda m: m.id)

    def dm_messages(self, user_id: int) -> list[FakeMessage]:
        cid = self.world.dm_channels.get(user_id)
        return [] if cid is None else self.messages(cid)

    def message(self, message_id: int) -> FakeMessage:
        return self.world.messages[message_id]

    def commands(self, guild_id: int | None = None) -> list[dict[str, Any]]:
        """The synced commands, globally or for one guild."""
        if guild_id is None:
            return list(self.world.global_commands)
        return list(self.world.guild_commands.get(guild_id, []))

    def requests_to(self, pattern: str) -> list[RecordedRequest]:
        """Recorded requests matching e.g. "POST /webhooks/{app}/{token}"."""
        route = RoutePattern.parse(pattern)
        return [r for r in self.requests if route.match(r.method, r.path) is not None]

    async def wait_until_ready(self, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        """Until the client identified (or resumed) and received READY and every GUILD_CREATE."""
        await self.world.changes.wait_for(
            lambda: True if self.gateway.is_ready() else None, timeout, "the bot to connect to the gateway"
        )

    async def wait_for_message(
        self,
        predicate: Callable[[FakeMessage], bool] | None = None,
        timeout: float = 5.0,  # noqa: ASYNC109
        *,
        channel_id: int | None = None,
    ) -> FakeMessage:
        """The oldest live message matching `predicate` (checked again on every create and edit)."""

        def check() -> FakeMessage | None:
            for message in sorted(self.world.messages.values(), key=lambda m: m.id):
                if message.deleted or (channel_id is not None and message.channel_id != channel_id):
                    continue
                if predicate is None or predicate(message):
                    return message
            return None

        return await self.world.changes.wait_for(check, timeout, "a matching message")

    async def wait_for_request(
        self,
        pattern: str,
        timeout: float = 5.0,  # noqa: ASYNC109
        *,
        count: int = 1,
    ) -> RecordedRequest:
        """The `count`-th answered request matching `pattern`."""

        def check() -> RecordedRequest | None:
            done = [r for r in self.requests_to(pattern) if r.status is not None]
            return done[count - 1] if len(done) >= count else None

        return await self.world.changes.wait_for(check, timeout, f"request {pattern}")

    async def wait_for_commands(
        self,
        guild_id: int | None = None,
        timeout: float = 5.0,  # noqa: ASYNC109
    ) -> list[dict[str, Any]]:
        return await self.world.changes.wait_for(
            lambda: self.commands(guild_id) or None, timeout, "a command sync"
        )

    # --- faults -----------------------------------------------------------------------------------

    def inject_429(
        self, pattern: str, times: int = 1, retry_after: float = 0.05, *, is_global: bool = False
    ) -> None:
        """The next `times` requests matching `pattern` get a 429 (with `Via`, `retry_after`, headers)."""
        self.faults.add(Fault(RoutePattern.parse(pattern), 429, times, retry_after, is_global))

    def inject_error(self, pattern: str, status: int = 500, times: int = 1) -> None:
        """The next `times` requests matching `pattern` get a 5xx (discord.py retries some after 1 s+)."""
        if not 500 <= status < 600:
            raise ValueError("inject_error is for 5xx; use inject_429 for rate limits")
        self.faults.add(Fault(RoutePattern.parse(pattern), status, times))

    def set_route_limit(self, pattern: str, limit: int, window: float) -> None:
        """Give routes matching `pattern` their own bucket size; exceeding it is a real 429."""
        self.rate_limits.configure(pattern, limit, window)

    async def drop_gateway(self, code: int = 4000, *, wait: bool = True, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        """Close the bot's websocket; with `wait`, return once it reconnected (resume or re-identify)."""
        seen = len(self.gateway.connections)
        await self.gateway.drop(code)
        if wait:
            await self.world.changes.wait_for(
                lambda: True if len(self.gateway.connections) > seen and self.gateway.is_ready() else None,
                timeout,
                "the bot to reconnect",
            )

    def request_reconnect(self) -> None:
        self.gateway.request_reconnect()

    def invalidate_session(self) -> None:
        self.gateway.invalidate_session()

    def expire_tokens(self) -> None:
        """Every interaction token issued so far now fails with 401 50027, as after 15 minutes."""
        for handle in self.interactions.values():
            handle.expire_token()


__all__ = ["FakeDiscord", "Upload"]
