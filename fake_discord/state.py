"""The fake's world and the rules that tie it together: permissions, messages, attachments, commands."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

from . import permissions as perms
from .limits import DiscordLimits
from .models import (
    CHANNEL_DM,
    CHANNEL_TEXT,
    EPHEMERAL,
    Attachment,
    Channel,
    FakeMessage,
    Guild,
    Member,
    Role,
    User,
)
from .records import RenderWarning, UploadedFile
from .snowflake import SnowflakeGenerator, iso_now
from .waiting import ChangeFeed

# Flags a bot may set on a message (SUPPRESS_EMBEDS, EPHEMERAL, SUPPRESS_NOTIFICATIONS, IS_COMPONENTS_V2).
SETTABLE_FLAGS = (1 << 2) | EPHEMERAL | (1 << 12) | (1 << 15)


class World:
    def __init__(self, *, application_id: int, bot: User, limits: DiscordLimits) -> None:
        self.ids = SnowflakeGenerator()
        self.application_id = application_id
        self.bot = bot
        self.limits = limits
        self.base_url = ""  # set once the server is listening; attachment URLs point back at it
        self.changes = ChangeFeed()
        self.users: dict[int, User] = {bot.id: bot}
        self.guilds: dict[int, Guild] = {}
        self.channels: dict[int, Channel] = {}
        self.messages: dict[int, FakeMessage] = {}
        self.attachments: dict[int, Attachment] = {}
        self.dm_channels: dict[int, int] = {}  # user id -> DM channel id
        self.blocked_dms: set[int] = set()
        self.global_commands: list[dict[str, Any]] = []
        self.guild_commands: dict[int, list[dict[str, Any]]] = {}
        self._command_ids: dict[tuple[int | None, int, str], int] = {}
        self.warnings: list[RenderWarning] = []

    # --- world building ---------------------------------------------------------------------------

    def add_user(self, user_id: int | None, name: str, *, bot: bool = False) -> User:
        uid = user_id if user_id is not None else self.ids.next()
        user = self.users.get(uid)
        if user is None:
            user = self.users[uid] = User(id=uid, username=name, bot=bot, global_name=name)
        return user

    def add_guild(self, name: str, owner_id: int, bot_permissions: int, attachment_limit: int) -> Guild:
        gid = self.ids.next()
        guild = Guild(
            id=gid, name=name, owner_id=owner_id, attachment_size_limit=attachment_limit, joined_at=iso_now()
        )
        # @everyone shares the guild's id, as on Discord.
        guild.roles[gid] = Role(id=gid, name="@everyone", permissions=perms.DEFAULT_EVERYONE)
        bot_role = Role(
            id=self.ids.next(), name=self.bot.username, permissions=bot_permissions, position=1, managed=True
        )
        guild.roles[bot_role.id] = bot_role
        guild.members[self.bot.id] = Member(
            user=self.bot, guild_id=gid, role_ids=[bot_role.id], joined_at=guild.joined_at
        )
        self.guilds[gid] = guild
        owner = self.add_user(owner_id, f"owner-{owner_id}")
        self.add_member(guild, owner, 0)
        return guild

    def add_member(self, guild: Guild, user: User, permissions: int) -> Member:
        role_ids: list[int] = []
        if permissions:
            # Members get their permissions through a role, so discord.py's own computation agrees.
            role = Role(id=self.ids.next(), name=f"role-{user.username}", permissions=permissions, position=1)
            guild.roles[role.id] = role
            role_ids.append(role.id)
        member = guild.members.get(user.id)
        if member is None:
            member = guild.members[user.id] = Member(
                user=user, guild_id=guild.id, role_ids=role_ids, joined_at=iso_now()
            )
        else:
            member.role_ids += role_ids
        return member

    def add_channel(self, guild: Guild, name: str, nsfw: bool) -> Channel:
        channel = Channel(
            id=self.ids.next(),
            type=CHANNEL_TEXT,
            guild_id=guild.id,
            name=name,
            nsfw=nsfw,
            position=len(guild.channel_ids),
        )
        self.channels[channel.id] = channel
        guild.channel_ids.append(channel.id)
        return channel

    def dm_channel(self, user: User) -> Channel:
        cid = self.dm_channels.get(user.id)
        if cid is None:
            channel = Channel(
                id=self.ids.next(), type=CHANNEL_DM, guild_id=None, name=None, recipient_id=user.id
            )
            self.channels[channel.id] = channel
            self.dm_channels[user.id] = cid = channel.id
        return self.channels[cid]

    # --- permissions ------------------------------------------------------------------------------

    def member_permissions(self, guild: Guild, user_id: int) -> int:
        if user_id == guild.owner_id:
            return perms.ALL
        member = guild.members.get(user_id)
        if member is None:
            return 0
        total = guild.roles[guild.id].permissions
        for role_id in member.role_ids:
            total |= guild.roles[role_id].permissions
        return perms.ALL if total & perms.ADMINISTRATOR else total

    def channel_permissions(self, channel: Channel, user_id: int) -> int:
        if channel.guild_id is None:
            return perms.DEFAULT_EVERYONE
        total = self.member_permissions(self.guilds[channel.guild_id], user_id)
        if user_id == self.bot.id:
            total &= ~channel.bot_denied
        return total

    def attachment_limit(self, channel: Channel | None) -> int:
        if channel is not None and channel.guild_id is not None:
            return self.guilds[channel.guild_id].attachment_size_limit
        return self.limits.attachment_size

    # --- messages ---------------------------------------------------------------------------------

    def create_message(
        self,
        *,
        channel: Channel,
        author: User,
        payload: dict[str, Any],
        uploads: Sequence[UploadedFile],
        route: str,
        extra_flags: int = 0,
        allow_ephemeral: bool = False,
    ) -> FakeMessage:
        flags = int(payload.get("flags") or 0) & SETTABLE_FLAGS
        if not allow_ephemeral:
            flags &= ~EPHEMERAL
        message = FakeMessage(
            id=self.ids.next(),
            channel_id=channel.id,
            guild_id=channel.guild_id,
            author=author,
            timestamp=iso_now(),
            route=route,
            flags=flags | extra_flags,
            tts=bool(payload.get("tts", False)),
            message_reference=payload.get("message_reference"),
        )
        self._apply(message, payload, uploads, creating=True)
        message.snapshot()
        self.messages[message.id] = message
        self.changes.notify()
        return message

    def edit_message(
        self,
        message: FakeMessage,
        payload: dict[str, Any],
        uploads: Sequence[UploadedFile],
        *,
        clear_flags: int = 0,
    ) -> None:
        self._apply(message, payload, uploads, creating=False)
        if "flags" in payload:
            # Only SUPPRESS_EMBEDS may change on edit; ephemeral-ness and v2 are fixed at creation.
            keep = message.flags & ~(1 << 2)
            message.flags = keep | (int(payload.get("flags") or 0) & (1 << 2))
        message.flags &= ~clear_flags
        message.edited_timestamp = iso_now()
        message.snapshot()
        self.changes.notify()

    def _apply(
        self,
        message: FakeMessage,
        payload: dict[str, Any],
        uploads: Sequence[UploadedFile],
        *,
        creating: bool,
    ) -> None:
        if "content" in payload:
            message.content = payload.get("content") or ""
        if "components" in payload:
            message.components = copy.deepcopy(payload.get("components") or [])
        message.attachments = self._attachments(message, payload, uploads, creating=creating)
        if "embeds" in payload:
            message.embeds = [self._normalise_embed(message, e) for e in payload.get("embeds") or []]
        elif uploads:
            message.embeds = [self._normalise_embed(message, e) for e in message.embeds]

    def _attachments(
        self,
        message: FakeMessage,
        payload: dict[str, Any],
        uploads: Sequence[UploadedFile],
        *,
        creating: bool,
    ) -> list[Attachment]:
        described = {
            int(a["id"]): a for a in payload.get("attachments") or [] if isinstance(a, dict) and "id" in a
        }
        if "attachments" in payload and not creating:
            # The list names what stays: existing attachments by id, new files by upload index.
            kept = [a for a in message.attachments if a.id in described]
        else:
            kept = [] if creating else list(message.attachments)
        new = []
        for upload in uploads:
            meta = described.get(upload.index, {})
            new.append(
                self.store_attachment(
                    message.channel_id, upload, meta.get("filename"), meta.get("description")
                )
            )
        return kept + new

    def store_attachment(
        self, channel_id: int, upload: UploadedFile, filename: str | None, description: str | None
    ) -> Attachment:
        aid = self.ids.next()
        name = filename or upload.filename
        attachment = Attachment(
            id=aid,
            filename=name,
            content_type=upload.content_type,
            data=upload.data,
            url=f"{self.base_url}/attachments/{channel_id}/{aid}/{name}",
            description=description,
        )
        self.attachments[aid] = attachment
        return attachment

    def _normalise_embed(self, message: FakeMessage, embed: dict[str, Any]) -> dict[str, Any]:
        """Resolve `attachment://name` like Discord does; a missing file leaves a broken image."""
        embed = copy.deepcopy(embed)
        embed.setdefault("type", "rich")
        by_name = {a.filename: a for a in message.attachments}
        for key in ("image", "thumbnail"):
            media = embed.get(key)
            if not isinstance(media, dict):
                continue
            url = str(media.get("url", ""))
            if url.startswith("attachment://"):
                found = by_name.get(url.removeprefix("attachment://"))
                if found is None:
                    self.warnings.append(
                        RenderWarning(
                            "",
                            "",
                            f"embed {key} names a file that is not attached: {url}",
                            {"message_id": message.id},
                        )
                    )
                    continue
                media.update({"url": found.url, "proxy_url": found.url})
        return embed

    def visible_messages(self, channel_id: int) -> list[FakeMessage]:
        return [m for m in self.messages.values() if m.channel_id == channel_id and not m.deleted]

    # --- application commands ---------------------------------------------------------------------

    def store_commands(self, guild_id: int | None, commands: list[dict[str, Any]]) -> list[dict[str, Any]]:
        stored = [self._normalise_command(guild_id, c) for c in commands]
        if guild_id is None:
            self.global_commands = stored
        else:
            self.guild_commands[guild_id] = stored
        self.changes.notify()
        return copy.deepcopy(stored)

    def _normalise_command(self, guild_id: int | None, command: dict[str, Any]) -> dict[str, Any]:
        kind = int(command.get("type", 1))
        key = (guild_id, kind, str(command["name"]))
        # Discord keeps a command's id across overwrites as long as its name and type stay.
        cid = self._command_ids.setdefault(key, self.ids.next())
        data = copy.deepcopy(command)
        permissions = data.get("default_member_permissions")
        data.update(
            {
                "id": str(cid),
                "application_id": str(self.application_id),
                "type": kind,
                "version": str(self.ids.next()),
                "description": data.get("description", ""),
                "default_member_permissions": None if permissions is None else str(permissions),
                "nsfw": bool(data.get("nsfw", False)),
                "name_localizations": data.get("name_localizations"),
                "description_localizations": data.get("description_localizations"),
            }
        )
        if guild_id is not None:
            data["guild_id"] = str(guild_id)
        return data

    def find_command(self, guild_id: int | None, name: str, kind: int = 1) -> dict[str, Any] | None:
        scopes = [self.guild_commands.get(guild_id, [])] if guild_id is not None else []
        scopes.append(self.global_commands)
        for commands in scopes:
            for command in commands:
                if command["name"] == name and command["type"] == kind:
                    return command
        return None
