"""Model -> JSON, in the shapes discord.py parses (discord-api-docs resources/*)."""

from __future__ import annotations

import copy
from typing import Any

from .models import CHANNEL_DM, Attachment, Channel, FakeMessage, Guild, Member, Role, User


def user(u: User) -> dict[str, Any]:
    return {
        "id": str(u.id),
        "username": u.username,
        "discriminator": "0",
        "global_name": u.global_name,
        "avatar": None,
        "bot": u.bot,
        "public_flags": 0,
        "flags": 0,
        "banner": None,
        "accent_color": None,
        "avatar_decoration_data": None,
    }


def role(r: Role) -> dict[str, Any]:
    return {
        "id": str(r.id),
        "name": r.name,
        "color": 0,
        "colors": {"primary_color": 0, "secondary_color": None, "tertiary_color": None},
        "hoist": False,
        "icon": None,
        "unicode_emoji": None,
        "position": r.position,
        "permissions": str(r.permissions),
        "managed": r.managed,
        "mentionable": False,
        "flags": 0,
    }


def member(m: Member, *, with_user: bool = True, permissions: int | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {
        "roles": [str(r) for r in m.role_ids],
        "nick": m.nick,
        "avatar": None,
        "banner": None,
        "joined_at": m.joined_at,
        "premium_since": None,
        "deaf": False,
        "mute": False,
        "flags": 0,
        "pending": False,
        "communication_disabled_until": None,
    }
    if with_user:
        data["user"] = user(m.user)
    if permissions is not None:
        data["permissions"] = str(permissions)
    return data


def channel(c: Channel, *, recipient: User | None = None, permissions: int | None = None) -> dict[str, Any]:
    if c.type == CHANNEL_DM:
        data: dict[str, Any] = {
            "id": str(c.id),
            "type": CHANNEL_DM,
            "last_message_id": None,
            "flags": 0,
            "recipients": [user(recipient)] if recipient is not None else [],
        }
    else:
        data = {
            "id": str(c.id),
            "type": c.type,
            "guild_id": str(c.guild_id),
            "name": c.name,
            "position": c.position,
            "permission_overwrites": copy.deepcopy(c.overwrites),
            "nsfw": c.nsfw,
            "topic": None,
            "last_message_id": None,
            "rate_limit_per_user": 0,
            "parent_id": None,
            "flags": 0,
        }
    if permissions is not None:
        data["permissions"] = str(permissions)
    return data


def guild(g: Guild) -> dict[str, Any]:
    """The guild object without the GUILD_CREATE-only extras."""
    return {
        "id": str(g.id),
        "name": g.name,
        "icon": None,
        "splash": None,
        "discovery_splash": None,
        "banner": None,
        "description": None,
        "owner_id": str(g.owner_id),
        "afk_channel_id": None,
        "afk_timeout": 300,
        "verification_level": 0,
        "default_message_notifications": 0,
        "explicit_content_filter": 0,
        "roles": [role(r) for r in g.roles.values()],
        "emojis": [],
        "stickers": [],
        "features": [],
        "mfa_level": 0,
        "application_id": None,
        "system_channel_id": None,
        "system_channel_flags": 0,
        "rules_channel_id": None,
        "public_updates_channel_id": None,
        "safety_alerts_channel_id": None,
        "vanity_url_code": None,
        "premium_tier": 0,
        "premium_subscription_count": 0,
        "preferred_locale": g.locale,
        "nsfw_level": 0,
        "premium_progress_bar_enabled": False,
        "max_members": 500000,
    }


def guild_create(g: Guild, channels: list[Channel], members: list[Member]) -> dict[str, Any]:
    data = guild(g)
    data.update(
        {
            "joined_at": g.joined_at,
            "large": False,
            "unavailable": False,
            "member_count": len(g.members),
            "voice_states": [],
            "members": [member(m) for m in members],
            "channels": [channel(c) for c in channels],
            "threads": [],
            "presences": [],
            "stage_instances": [],
            "guild_scheduled_events": [],
            "soundboard_sounds": [],
        }
    )
    return data


def attachment(a: Attachment) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": str(a.id),
        "filename": a.filename,
        "size": a.size,
        "url": a.url,
        "proxy_url": a.url,
        "content_type": a.content_type,
    }
    if a.description is not None:
        data["description"] = a.description
    return data


def message(m: FakeMessage, *, author_member: Member | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": str(m.id),
        "channel_id": str(m.channel_id),
        "type": m.type,
        "author": user(m.author),
        "content": m.content,
        "timestamp": m.timestamp,
        "edited_timestamp": m.edited_timestamp,
        "tts": m.tts,
        "mention_everyone": False,
        "mentions": [],
        "mention_roles": [],
        "mention_channels": [],
        "attachments": [attachment(a) for a in m.attachments],
        "embeds": copy.deepcopy(m.embeds),
        "components": copy.deepcopy(m.components),
        "reactions": [
            {
                "emoji": emoji_object(key),
                "count": len(users),
                "count_details": {"burst": 0, "normal": len(users)},
                "me": False,
                "me_burst": False,
                "burst_colors": [],
            }
            for key, users in m.reactions.items()
            if users
        ],
        "pinned": False,
        "flags": m.flags,
    }
    if m.guild_id is not None:
        data["guild_id"] = str(m.guild_id)
        if author_member is not None:
            data["member"] = member(author_member, with_user=False)
    if m.webhook_id is not None:
        data["webhook_id"] = str(m.webhook_id)
    if m.application_id is not None:
        data["application_id"] = str(m.application_id)
    if m.interaction_metadata is not None:
        data["interaction_metadata"] = copy.deepcopy(m.interaction_metadata)
    if m.message_reference is not None:
        data["message_reference"] = copy.deepcopy(m.message_reference)
    return data


def emoji_object(key: str) -> dict[str, Any]:
    """`name:id` (custom) or a unicode emoji, as in a reaction route, to Discord's emoji object."""
    name, _, emoji_id = key.partition(":")
    if emoji_id:
        return {"id": emoji_id, "name": name, "animated": False}
    return {"id": None, "name": key}
