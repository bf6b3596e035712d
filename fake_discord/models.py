"""The fake's world: users, guilds, channels, members and stored messages (with full edit history)."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

EPHEMERAL = 1 << 6
LOADING = 1 << 7
IS_COMPONENTS_V2 = 1 << 15

CHANNEL_TEXT = 0
CHANNEL_DM = 1


@dataclass
class User:
    id: int
    username: str
    bot: bool = False
    global_name: str | None = None


@dataclass
class Role:
    id: int
    name: str
    permissions: int
    position: int = 0
    managed: bool = False


@dataclass
class Member:
    user: User
    guild_id: int
    role_ids: list[int]
    joined_at: str
    nick: str | None = None


@dataclass
class Channel:
    id: int
    type: int
    guild_id: int | None
    name: str | None
    nsfw: bool = False
    position: int = 0
    recipient_id: int | None = None  # the other user of a DM channel
    bot_denied: int = 0  # permissions taken from the bot here (forbid_channel)
    # The same denial as Discord shows it, so discord.py's own permission maths agrees with the fake.
    overwrites: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Guild:
    id: int
    name: str
    owner_id: int
    attachment_size_limit: int
    roles: dict[int, Role] = field(default_factory=dict)
    members: dict[int, Member] = field(default_factory=dict)
    channel_ids: list[int] = field(default_factory=list)
    locale: str = "en-US"
    joined_at: str = ""


@dataclass
class Attachment:
    id: int
    filename: str
    content_type: str | None
    data: bytes
    url: str
    description: str | None = None

    @property
    def size(self) -> int:
        return len(self.data)


@dataclass(frozen=True)
class MessageVersion:
    """A message as it looked after its creation or one edit."""

    content: str
    embeds: list[dict[str, Any]]
    components: list[dict[str, Any]]
    attachment_ids: list[int]
    flags: int
    edited_timestamp: str | None


@dataclass
class FakeMessage:
    """A message the bot (or a test user) created; `history[0]` is its first version."""

    id: int
    channel_id: int
    guild_id: int | None
    author: User
    timestamp: str
    route: str  # how it was made: "channel", "callback", "followup", "user"
    content: str = ""
    embeds: list[dict[str, Any]] = field(default_factory=list)
    components: list[dict[str, Any]] = field(default_factory=list)
    attachments: list[Attachment] = field(default_factory=list)
    flags: int = 0
    type: int = 0
    tts: bool = False
    edited_timestamp: str | None = None
    webhook_id: int | None = None
    application_id: int | None = None
    interaction_id: int | None = None
    interaction_metadata: dict[str, Any] | None = None
    message_reference: dict[str, Any] | None = None
    reactions: dict[str, list[int]] = field(default_factory=dict)  # emoji -> user ids, in order
    history: list[MessageVersion] = field(default_factory=list)
    deleted: bool = False

    def snapshot(self) -> None:
        self.history.append(
            MessageVersion(
                content=self.content,
                embeds=copy.deepcopy(self.embeds),
                components=copy.deepcopy(self.components),
                attachment_ids=[a.id for a in self.attachments],
                flags=self.flags,
                edited_timestamp=self.edited_timestamp,
            )
        )

    @property
    def ephemeral(self) -> bool:
        return bool(self.flags & EPHEMERAL)

    @property
    def loading(self) -> bool:
        """True while this is a deferred "Bot is thinking..." placeholder."""
        return bool(self.flags & LOADING)

    @property
    def edits(self) -> int:
        return len(self.history) - 1

    @property
    def files(self) -> dict[str, bytes]:
        return {a.filename: a.data for a in self.attachments}

    def iter_components(self) -> list[dict[str, Any]]:
        """Every component, rows and containers flattened (depth first)."""
        return list(walk_components(self.components))

    @property
    def buttons(self) -> list[dict[str, Any]]:
        return [c for c in self.iter_components() if c.get("type") == 2]

    @property
    def custom_ids(self) -> list[str]:
        return [c["custom_id"] for c in self.iter_components() if "custom_id" in c]

    def component(self, custom_id: str) -> dict[str, Any] | None:
        return next((c for c in self.iter_components() if c.get("custom_id") == custom_id), None)


def walk_components(components: list[dict[str, Any]]) -> Any:
    for component in components:
        yield component
        children = list(component.get("components") or [])
        for key in ("accessory", "component"):
            if isinstance(component.get(key), dict):
                children.append(component[key])
        yield from walk_components(children)
