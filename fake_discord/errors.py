"""Discord's error replies: `{"code", "message", "errors"}` raised from handlers, turned into responses."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

# JSON error codes the fake answers with (discord-api-docs, topics/opcodes-and-status-codes).
UNKNOWN_CHANNEL = 10003
UNKNOWN_GUILD = 10004
UNKNOWN_MEMBER = 10007
UNKNOWN_MESSAGE = 10008
UNKNOWN_USER = 10013
UNKNOWN_EMOJI = 10014
UNKNOWN_WEBHOOK = 10015
UNKNOWN_APPLICATION_COMMAND = 10063
UNKNOWN_INTERACTION = 10062
REQUEST_TOO_LARGE = 40005
ALREADY_ACKNOWLEDGED = 40060
MISSING_ACCESS = 50001
CANNOT_EDIT_OTHERS_MESSAGE = 50005
EMPTY_MESSAGE = 50006
CANNOT_DM_USER = 50007
MISSING_PERMISSIONS = 50013
INVALID_WEBHOOK_TOKEN = 50027
INVALID_FORM_BODY = 50035


@dataclass(frozen=True)
class Problem:
    """One failed check on a request body; `path` locates the field as Discord's `errors` tree does."""

    path: tuple[str | int, ...]
    code: str
    message: str


class DiscordAPIError(Exception):
    """Raised inside a route handler; the REST layer answers with it and records it."""

    def __init__(self, status: int, code: int, message: str, errors: dict[str, Any] | None = None) -> None:
        super().__init__(f"{status} {code} {message}")
        self.status = status
        self.code = code
        self.message = message
        self.errors = errors

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"message": self.message, "code": self.code}
        if self.errors is not None:
            body["errors"] = self.errors
        return body


def errors_tree(problems: Sequence[Problem]) -> dict[str, Any]:
    """Nest problems as `{"embeds": {"0": {"title": {"_errors": [...]}}}}`, Discord's layout."""
    tree: dict[str, Any] = {}
    for problem in problems:
        node = tree
        for part in problem.path:
            node = node.setdefault(str(part), {})
        node.setdefault("_errors", []).append({"code": problem.code, "message": problem.message})
    return tree


def invalid_form_body(problems: Sequence[Problem]) -> DiscordAPIError:
    return DiscordAPIError(400, INVALID_FORM_BODY, "Invalid Form Body", errors_tree(problems))


def not_found(code: int, message: str) -> DiscordAPIError:
    return DiscordAPIError(404, code, message)
