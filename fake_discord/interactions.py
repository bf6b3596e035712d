"""Interactions as a user would create them, and the handle a test keeps to inspect the bot's replies.

The builders are strict the way the Discord client is: a test cannot invoke an unsynced command,
pass an option of the wrong type, omit a required option, or click a button that is not there.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from . import payloads
from .models import Channel, FakeMessage, Guild, User
from .records import CallbackRecord, ErrorRecord, UploadedFile
from .state import World

APPLICATION_COMMAND, MESSAGE_COMPONENT, AUTOCOMPLETE, MODAL_SUBMIT = 2, 3, 4, 5
SUB_COMMAND, SUB_COMMAND_GROUP = 1, 2
STRING, INTEGER, BOOLEAN, USER, CHANNEL, ROLE, MENTIONABLE, NUMBER, ATTACHMENT = 3, 4, 5, 6, 7, 8, 9, 10, 11


@dataclass(frozen=True)
class Upload:
    """An ATTACHMENT option's value: a file the user picked."""

    filename: str
    data: bytes
    content_type: str | None = None


class InteractionHandle:
    """One interaction the test created; the fake fills in what the bot did with it."""

    def __init__(
        self,
        world: World,
        *,
        kind: int,
        guild_id: int | None,
        channel_id: int,
        user_id: int,
        created_at: float,
        name: str | None = None,
        source_message_id: int | None = None,
    ) -> None:
        self._world = world
        self.id = world.ids.next()
        self.token = "fake-itk-" + secrets.token_urlsafe(48)
        self.type = kind
        self.guild_id = guild_id
        self.channel_id = channel_id
        self.user_id = user_id
        self.name = name
        self.created_at = created_at
        self.source_message_id = source_message_id
        self.payload: dict[str, Any] = {}
        self.responses: list[CallbackRecord] = []  # every callback attempt, accepted or refused
        self.errors: list[ErrorRecord] = []  # every error the bot got for this interaction
        self.original_message_id: int | None = None
        self.followup_ids: list[int] = []
        self.token_revoked = False
        self.modal: dict[str, Any] | None = None  # the modal the bot answered with (type 9)

    def __repr__(self) -> str:
        return f"<InteractionHandle id={self.id} type={self.type} name={self.name!r}>"

    @property
    def response(self) -> CallbackRecord | None:
        """The accepted initial response, if any."""
        return next((r for r in self.responses if r.accepted), None)

    @property
    def acknowledged(self) -> bool:
        return self.response is not None

    @property
    def original(self) -> FakeMessage | None:
        if self.original_message_id is None:
            return None
        return self._world.messages.get(self.original_message_id)

    @property
    def followups(self) -> list[FakeMessage]:
        """Messages created by followup requests (not the original response they may have filled)."""
        return [self._world.messages[m] for m in self.followup_ids]

    @property
    def messages(self) -> list[FakeMessage]:
        """The original response (if it is a message of its own) and the followups, oldest first."""
        ids = list(self.followup_ids)
        original = self.original
        if original is not None and original.interaction_id == self.id and original.id not in ids:
            ids.insert(0, original.id)
        return [self._world.messages[m] for m in ids]

    @property
    def ephemeral_messages(self) -> list[FakeMessage]:
        return [m for m in self.messages if m.ephemeral]

    def expire_token(self) -> None:
        """Make followups/edits fail with 50027 as if 15 minutes had passed."""
        self.token_revoked = True

    async def wait_response(self, timeout: float = 5.0) -> CallbackRecord:  # noqa: ASYNC109
        """The first callback attempt (check `.accepted` / `.error_code`)."""
        return await self._world.changes.wait_for(
            lambda: self.responses[0] if self.responses else None, timeout, f"a response to {self!r}"
        )

    async def wait_followups(self, count: int = 1, timeout: float = 5.0) -> list[FakeMessage]:  # noqa: ASYNC109
        return await self._world.changes.wait_for(
            lambda: self.followups if len(self.followup_ids) >= count else None,
            timeout,
            f"{count} followup(s) to {self!r}",
        )

    async def wait_original(
        self,
        predicate: Callable[[FakeMessage], bool] | None = None,
        timeout: float = 5.0,  # noqa: ASYNC109
    ) -> FakeMessage:
        """The original response message once it exists and is no longer loading (or matches `predicate`)."""

        def check() -> FakeMessage | None:
            message = self.original
            if message is None:
                return None
            ok = predicate(message) if predicate is not None else not message.loading
            return message if ok else None

        return await self._world.changes.wait_for(check, timeout, f"the original response of {self!r}")


def base_payload(
    world: World, handle: InteractionHandle, channel: Channel, user: User, locale: str
) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": str(handle.id),
        "application_id": str(world.application_id),
        "type": handle.type,
        "token": handle.token,
        "version": 1,
        "channel_id": str(channel.id),
        "channel": payloads.channel(channel, permissions=world.channel_permissions(channel, user.id)),
        "app_permissions": str(world.channel_permissions(channel, world.bot.id)),
        "locale": locale,
        "entitlements": [],
        "entitlement_sku_ids": [],
        "attachment_size_limit": world.attachment_limit(channel),
    }
    if channel.guild_id is not None:
        guild = world.guilds[channel.guild_id]
        data.update(
            {
                "guild_id": str(guild.id),
                "guild": {"id": str(guild.id), "locale": guild.locale, "features": []},
                "guild_locale": guild.locale,
                "member": payloads.member(
                    guild.members[user.id], permissions=world.channel_permissions(channel, user.id)
                ),
                "authorizing_integration_owners": {"0": str(guild.id)},
                "context": 0,
            }
        )
    else:
        data["channel"] = payloads.channel(channel, recipient=user)
        data.update({"user": payloads.user(user), "authorizing_integration_owners": {"0": "0"}, "context": 1})
    return data


def command_data(
    world: World,
    guild: Guild | None,
    command: dict[str, Any],
    path: list[str],
    options: Mapping[str, Any],
) -> dict[str, Any]:
    """The `data` of an APPLICATION_COMMAND interaction, options typed by the synced schema."""
    resolved: dict[str, dict[str, Any]] = {}
    schema = command.get("options") or []
    typed: list[dict[str, Any]]
    nested: list[dict[str, Any]] = []
    for part in path:
        option = next((o for o in schema if o["name"] == part and o["type"] in (1, 2)), None)
        if option is None:
            raise LookupError(f"/{command['name']} has no subcommand {part!r} (synced: {_names(schema)})")
        nested.append({"name": part, "type": option["type"], "options": []})
        schema = option.get("options") or []
    if any(o["type"] in (SUB_COMMAND, SUB_COMMAND_GROUP) for o in schema):
        raise LookupError(f"/{command['name']} {' '.join(path)} needs a subcommand: {_names(schema)}")
    typed = _typed_options(world, guild, schema, options, resolved)
    # Wrap the leaf options in their subcommand (and group) as Discord nests them.
    for level in reversed(nested):
        level["options"] = typed
        typed = [level]
    data: dict[str, Any] = {
        "id": command["id"],
        "name": command["name"],
        "type": command["type"],
        "options": typed,
    }
    if "guild_id" in command:
        data["guild_id"] = command["guild_id"]
    if resolved:
        data["resolved"] = resolved
    return data


def _names(schema: list[dict[str, Any]]) -> list[str]:
    return [o["name"] for o in schema]


def _typed_options(
    world: World,
    guild: Guild | None,
    schema: list[dict[str, Any]],
    values: Mapping[str, Any],
    resolved: dict[str, dict[str, Any]],
) -> list[dict[str, Any]]:
    by_name = {o["name"]: o for o in schema}
    unknown = set(values) - set(by_name)
    if unknown:
        raise LookupError(f"unknown option(s) {sorted(unknown)}; the synced command has {sorted(by_name)}")
    missing = [o["name"] for o in schema if o.get("required") and o["name"] not in values]
    if missing:
        raise ValueError(f"required option(s) missing: {missing}")
    typed = []
    for option in schema:  # Discord sends options in schema order
        if option["name"] in values and values[option["name"]] is not None:
            value = _typed_value(world, guild, option, values[option["name"]], resolved)
            typed.append({"name": option["name"], "type": option["type"], "value": value})
    return typed


def _typed_value(
    world: World, guild: Guild | None, option: dict[str, Any], value: Any, resolved: dict[str, dict[str, Any]]
) -> Any:
    kind, name = option["type"], option["name"]

    def fail(expected: str) -> ValueError:
        return ValueError(f"option {name!r} is {expected} in the synced schema; got {value!r}")

    if kind == STRING:
        if not isinstance(value, str):
            raise fail("a string")
        if not option.get("min_length", 0) <= len(value) <= option.get("max_length", 6000):
            raise ValueError(f"option {name!r}: length {len(value)} is outside the synced min/max_length")
    elif kind == INTEGER:
        if not isinstance(value, int) or isinstance(value, bool):
            raise fail("an integer")
    elif kind == NUMBER:
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise fail("a number")
    elif kind == BOOLEAN:
        if not isinstance(value, bool):
            raise fail("a boolean")
    elif kind in (USER, MENTIONABLE):
        return _resolve_user(world, guild, int(value.id if isinstance(value, User) else value), resolved)
    elif kind == CHANNEL:
        channel = world.channels.get(int(value))
        if channel is None:
            raise fail("a channel")
        resolved.setdefault("channels", {})[str(channel.id)] = {
            "id": str(channel.id),
            "name": channel.name,
            "type": channel.type,
            "permissions": str(world.channel_permissions(channel, world.bot.id)),
        }
        return str(channel.id)
    elif kind == ROLE:
        if guild is None or int(value) not in guild.roles:
            raise fail("a role of this guild")
        resolved.setdefault("roles", {})[str(value)] = payloads.role(guild.roles[int(value)])
        return str(value)
    elif kind == ATTACHMENT:
        if not isinstance(value, Upload):
            raise fail("an attachment (pass fake_discord.Upload)")
        stored = world.store_attachment(
            0, UploadedFile(0, value.filename, value.content_type, value.data), None, None
        )
        resolved.setdefault("attachments", {})[str(stored.id)] = payloads.attachment(stored)
        return str(stored.id)
    if kind in (STRING, INTEGER, NUMBER):
        choices = option.get("choices")
        if choices and value not in [c["value"] for c in choices]:
            raise ValueError(f"option {name!r}: {value!r} is not one of the synced choices")
        low, high = option.get("min_value"), option.get("max_value")
        if kind != STRING and ((low is not None and value < low) or (high is not None and value > high)):
            raise ValueError(f"option {name!r}: {value!r} is outside the synced min/max_value")
    return value


def _resolve_user(
    world: World, guild: Guild | None, user_id: int, resolved: dict[str, dict[str, Any]]
) -> str:
    user = world.users.get(user_id)
    if user is None:
        raise ValueError(f"user {user_id} does not exist in the fake; add_member() it first")
    resolved.setdefault("users", {})[str(user_id)] = payloads.user(user)
    if guild is not None and user_id in guild.members:
        resolved.setdefault("members", {})[str(user_id)] = payloads.member(
            guild.members[user_id], with_user=False, permissions=world.member_permissions(guild, user_id)
        )
    return str(user_id)


def modal_submit_components(modal: dict[str, Any], values: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Echo a modal's layout back with the user's values, as the Discord client submits it."""
    known: set[str] = set()

    def item(component: dict[str, Any]) -> dict[str, Any]:
        kind = component.get("type")
        out: dict[str, Any] = {"type": kind, "id": component.get("id", 0)}
        custom_id = component.get("custom_id")
        if kind == 1:
            out["components"] = [item(c) for c in component.get("components") or []]
        elif kind == 18 and isinstance(component.get("component"), dict):
            out["component"] = item(component["component"])
        elif custom_id is not None:
            known.add(custom_id)
            out["custom_id"] = custom_id
            value = values.get(custom_id, component.get("value", ""))
            if kind == 4:
                if not isinstance(value, str):
                    raise ValueError(f"text input {custom_id!r} takes a string")
                if component.get("required", True) and not value:
                    raise ValueError(f"text input {custom_id!r} is required")
                if value and not component.get("min_length", 0) <= len(value) <= component.get(
                    "max_length", 4000
                ):
                    raise ValueError(
                        f"text input {custom_id!r}: length {len(value)} is outside min/max_length"
                    )
                out["value"] = value
            else:
                out["values"] = list(value) if isinstance(value, list | tuple) else [value]
        return out

    components = [item(c) for c in modal.get("components") or []]
    unknown = set(values) - known
    if unknown:
        raise LookupError(f"the modal has no inputs {sorted(unknown)}; it has {sorted(known)}")
    return components
