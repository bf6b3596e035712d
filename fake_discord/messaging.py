"""What every message-creating or -editing route shares: limit checks and gateway announcements."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from . import payloads
from . import permissions as perms
from .errors import EMPTY_MESSAGE, REQUEST_TOO_LARGE, DiscordAPIError, Problem, invalid_form_body
from .limits import check_files, check_message, is_empty_message
from .models import Channel, FakeMessage
from .records import LimitViolation, UploadedFile
from .rest import RestRequest

if TYPE_CHECKING:
    from .server import FakeDiscord

_MENTION = re.compile(r"<@!?(\d+)>")


def validate_message(
    fake: FakeDiscord,
    req: RestRequest,
    payload: dict[str, Any],
    files: Sequence[UploadedFile],
    channel: Channel | None,
    *,
    creating: bool,
    prefix: tuple[str | int, ...] = (),
) -> None:
    """Raise Discord's error for a body that breaks a limit, after recording the violation."""
    problems = [Problem((*prefix, *p.path), p.code, p.message) for p in check_message(payload, fake.limits)]
    if problems:
        _record(fake, req, problems, 400)
        raise invalid_form_body(problems)
    file_problems = check_files(files, fake.world.attachment_limit(channel), fake.limits)
    if file_problems:
        _record(fake, req, file_problems, 413)
        raise DiscordAPIError(413, REQUEST_TOO_LARGE, "Request entity too large")
    if creating and is_empty_message(payload, files):
        _record(fake, req, [Problem((*prefix,), "EMPTY_MESSAGE", "Cannot send an empty message")], 400)
        raise DiscordAPIError(400, EMPTY_MESSAGE, "Cannot send an empty message")


def _record(fake: FakeDiscord, req: RestRequest, problems: Sequence[Problem], status: int) -> None:
    for p in problems:
        where = ".".join(str(part) for part in p.path)
        fake.limit_violations.append(LimitViolation(req.method, req.path, where, p.code, p.message, status))


def record_problems(
    fake: FakeDiscord, req: RestRequest, problems: Sequence[Problem], status: int = 400
) -> None:
    _record(fake, req, problems, status)


def message_payload(fake: FakeDiscord, message: FakeMessage) -> dict[str, Any]:
    world = fake.world
    member = None
    if message.guild_id is not None:
        member = world.guilds[message.guild_id].members.get(message.author.id)
    data = payloads.message(message, author_member=member)
    mentioned = [
        world.users[int(uid)] for uid in _MENTION.findall(message.content) if int(uid) in world.users
    ]
    data["mentions"] = [payloads.user(u) for u in mentioned]
    return data


def announce(fake: FakeDiscord, event: str, message: FakeMessage) -> bool:
    """MESSAGE_CREATE/UPDATE/DELETE to the bot, gated by intents like Discord. Ephemeral ones never go out."""
    if message.ephemeral:
        return False
    world, gateway = fake.world, fake.gateway
    guild = message.guild_id is not None
    intent = perms.INTENT_GUILD_MESSAGES if guild else perms.INTENT_DIRECT_MESSAGES
    if event == "MESSAGE_DELETE":
        data: dict[str, Any] = {"id": str(message.id), "channel_id": str(message.channel_id)}
        if guild:
            data["guild_id"] = str(message.guild_id)
        return gateway.dispatch(event, data, intent=intent)
    data = message_payload(fake, message)
    intents = gateway.intents or 0
    mentions_bot = any(int(u["id"]) == world.bot.id for u in data["mentions"])
    # Without MESSAGE_CONTENT a bot sees other users' guild messages with the content stripped.
    if (
        guild
        and not intents & perms.INTENT_MESSAGE_CONTENT
        and message.author.id != world.bot.id
        and not mentions_bot
    ):
        data.update({"content": "", "embeds": [], "attachments": [], "components": []})
    return gateway.dispatch(event, data, intent=intent)
