"""Channel messages, reactions, typing and DMs, with the bot's channel permissions enforced."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from . import payloads
from . import permissions as perms
from .errors import (
    CANNOT_DM_USER,
    CANNOT_EDIT_OTHERS_MESSAGE,
    MISSING_ACCESS,
    MISSING_PERMISSIONS,
    UNKNOWN_CHANNEL,
    UNKNOWN_EMOJI,
    UNKNOWN_MESSAGE,
    UNKNOWN_USER,
    DiscordAPIError,
    not_found,
)
from .messaging import announce, message_payload, validate_message
from .models import CHANNEL_DM, Channel, FakeMessage
from .records import RenderWarning
from .rest import Reply, RestApi, RestRequest

if TYPE_CHECKING:
    from .server import FakeDiscord

_CUSTOM_EMOJI = re.compile(r"^[\w~]{2,32}:\d+$")


def register(api: RestApi) -> None:
    r = ChannelRoutes(api.fake)
    api.add("GET /channels/{channel_id}", r.get_channel)
    api.add("POST /channels/{channel_id}/typing", r.typing)
    api.add("GET /channels/{channel_id}/messages", r.history)
    api.add("POST /channels/{channel_id}/messages", r.create)
    api.add("GET /channels/{channel_id}/messages/{message_id}", r.get)
    api.add("PATCH /channels/{channel_id}/messages/{message_id}", r.edit)
    api.add("DELETE /channels/{channel_id}/messages/{message_id}", r.delete)
    api.add("PUT /channels/{channel_id}/messages/{message_id}/reactions/{emoji}/@me", r.add_reaction)
    api.add("DELETE /channels/{channel_id}/messages/{message_id}/reactions/{emoji}/{user}", r.remove_reaction)
    api.add("GET /channels/{channel_id}/messages/{message_id}/reactions/{emoji}", r.reaction_users)
    api.add("POST /users/@me/channels", r.open_dm)


class ChannelRoutes:
    def __init__(self, fake: FakeDiscord) -> None:
        self.fake = fake

    def _channel(self, req: RestRequest, *needed: int) -> Channel:
        """The channel, after the checks Discord makes: it exists, the bot sees it, has `needed`."""
        world = self.fake.world
        cid = req.params["channel_id"]
        channel = world.channels.get(int(cid)) if cid.isdigit() else None
        if channel is None:
            raise not_found(UNKNOWN_CHANNEL, "Unknown Channel")
        granted = world.channel_permissions(channel, world.bot.id)
        if not granted & perms.VIEW_CHANNEL:
            raise DiscordAPIError(403, MISSING_ACCESS, "Missing Access")
        for bit in needed:
            if not granted & bit:
                raise DiscordAPIError(403, MISSING_PERMISSIONS, "Missing Permissions")
        return channel

    def _message(self, req: RestRequest, channel: Channel) -> FakeMessage:
        mid = req.params["message_id"]
        message = self.fake.world.messages.get(int(mid)) if mid.isdigit() else None
        # Ephemeral messages exist only for their user; the channel routes cannot see them.
        if message is None or message.channel_id != channel.id or message.deleted or message.ephemeral:
            raise not_found(UNKNOWN_MESSAGE, "Unknown Message")
        return message

    async def get_channel(self, req: RestRequest) -> Reply:
        world = self.fake.world
        channel = self._channel(req)
        recipient = world.users.get(channel.recipient_id or 0)
        return Reply(200, payloads.channel(channel, recipient=recipient))

    async def typing(self, req: RestRequest) -> Reply:
        self._channel(req, perms.SEND_MESSAGES)
        return Reply(204)

    async def history(self, req: RestRequest) -> Reply:
        channel = self._channel(req, perms.READ_MESSAGE_HISTORY)
        messages = sorted(self.fake.world.visible_messages(channel.id), key=lambda m: m.id, reverse=True)
        messages = [m for m in messages if not m.ephemeral]
        if "before" in req.query:
            messages = [m for m in messages if m.id < int(req.query["before"])]
        if "after" in req.query:
            messages = [m for m in messages if m.id > int(req.query["after"])]
        limit = min(100, int(req.query.get("limit", 50)))
        return Reply(200, [message_payload(self.fake, m) for m in messages[:limit]])

    async def create(self, req: RestRequest) -> Reply:
        fake, world = self.fake, self.fake.world
        needed = [perms.SEND_MESSAGES] + ([perms.ATTACH_FILES] if req.files else [])
        channel = self._channel(req, *needed)
        if channel.type == CHANNEL_DM:
            self._check_dm(channel)
        body = dict(req.body)
        validate_message(fake, req, body, req.files, channel, creating=True)
        if body.get("embeds") and not world.channel_permissions(channel, world.bot.id) & perms.EMBED_LINKS:
            # Discord drops embeds silently without Embed Links; keep a trace for the test.
            world.warnings.append(RenderWarning(req.method, req.path, "embeds dropped: missing EMBED_LINKS"))
            body["embeds"] = []
        message = world.create_message(
            channel=channel, author=world.bot, payload=body, uploads=req.files, route="channel"
        )
        announce(fake, "MESSAGE_CREATE", message)
        return Reply(200, message_payload(fake, message))

    def _check_dm(self, channel: Channel) -> None:
        world = self.fake.world
        uid = channel.recipient_id or 0
        shares_guild = any(uid in g.members for g in world.guilds.values())
        if uid in world.blocked_dms or not shares_guild:
            raise DiscordAPIError(403, CANNOT_DM_USER, "Cannot send messages to this user")

    async def get(self, req: RestRequest) -> Reply:
        channel = self._channel(req, perms.READ_MESSAGE_HISTORY)
        return Reply(200, message_payload(self.fake, self._message(req, channel)))

    async def edit(self, req: RestRequest) -> Reply:
        fake, world = self.fake, self.fake.world
        channel = self._channel(req)
        message = self._message(req, channel)
        if message.author.id != world.bot.id:
            raise DiscordAPIError(
                403, CANNOT_EDIT_OTHERS_MESSAGE, "Cannot edit a message authored by another user"
            )
        if req.files and not world.channel_permissions(channel, world.bot.id) & perms.ATTACH_FILES:
            raise DiscordAPIError(403, MISSING_PERMISSIONS, "Missing Permissions")
        validate_message(fake, req, req.body, req.files, channel, creating=False)
        world.edit_message(message, req.body, req.files)
        announce(fake, "MESSAGE_UPDATE", message)
        return Reply(200, message_payload(fake, message))

    async def delete(self, req: RestRequest) -> Reply:
        world = self.fake.world
        channel = self._channel(req)
        message = self._message(req, channel)
        own = message.author.id == world.bot.id
        if not own and not world.channel_permissions(channel, world.bot.id) & perms.MANAGE_MESSAGES:
            raise DiscordAPIError(403, MISSING_PERMISSIONS, "Missing Permissions")
        message.deleted = True
        world.changes.notify()
        announce(self.fake, "MESSAGE_DELETE", message)
        return Reply(204)

    # --- reactions --------------------------------------------------------------------------------

    def _emoji(self, req: RestRequest) -> str:
        emoji = req.params["emoji"]
        # Unicode emoji, or `name:id` for custom ones; a bare word like "thumbsup" is not an emoji.
        if _CUSTOM_EMOJI.match(emoji) or (emoji and not emoji.isascii()):
            return emoji
        raise DiscordAPIError(400, UNKNOWN_EMOJI, "Unknown Emoji")

    async def add_reaction(self, req: RestRequest) -> Reply:
        fake, world = self.fake, self.fake.world
        channel = self._channel(req, perms.READ_MESSAGE_HISTORY, perms.ADD_REACTIONS)
        message = self._message(req, channel)
        emoji = self._emoji(req)
        users = message.reactions.setdefault(emoji, [])
        if world.bot.id not in users:
            users.append(world.bot.id)
            world.changes.notify()
            fake.dispatch_reaction("MESSAGE_REACTION_ADD", message, emoji, world.bot.id)
        return Reply(204)

    async def remove_reaction(self, req: RestRequest) -> Reply:
        fake, world = self.fake, self.fake.world
        channel = self._channel(req, perms.READ_MESSAGE_HISTORY)
        message = self._message(req, channel)
        emoji = self._emoji(req)
        who = req.params["user"]
        uid = world.bot.id if who == "@me" else int(who) if who.isdigit() else -1
        if (
            uid != world.bot.id
            and not world.channel_permissions(channel, world.bot.id) & perms.MANAGE_MESSAGES
        ):
            raise DiscordAPIError(403, MISSING_PERMISSIONS, "Missing Permissions")
        users = message.reactions.get(emoji, [])
        if uid in users:
            users.remove(uid)
            world.changes.notify()
            fake.dispatch_reaction("MESSAGE_REACTION_REMOVE", message, emoji, uid)
        return Reply(204)

    async def reaction_users(self, req: RestRequest) -> Reply:
        world = self.fake.world
        channel = self._channel(req, perms.READ_MESSAGE_HISTORY)
        message = self._message(req, channel)
        users = message.reactions.get(self._emoji(req), [])
        return Reply(200, [payloads.user(world.users[u]) for u in users])

    async def open_dm(self, req: RestRequest) -> Reply:
        world = self.fake.world
        recipient = str(req.body.get("recipient_id", ""))
        user = world.users.get(int(recipient)) if recipient.isdigit() else None
        if user is None:
            raise not_found(UNKNOWN_USER, "Unknown User")
        channel = world.dm_channel(user)
        return Reply(200, payloads.channel(channel, recipient=user))
