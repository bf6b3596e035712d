"""What the fake writes down for assertions: requests, errors, limit violations, callbacks."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class UploadedFile:
    """One `files[n]` part of a multipart request."""

    index: int
    filename: str
    content_type: str | None
    data: bytes

    @property
    def size(self) -> int:
        return len(self.data)


@dataclass
class RecordedRequest:
    """One REST request as the bot sent it, and what the fake answered."""

    method: str
    path: str  # below /api/v10, e.g. "/channels/1/messages"
    query: dict[str, str]
    json: Any  # the JSON body, or the parsed payload_json of a multipart body
    files: list[UploadedFile]
    route: str | None = None  # the matched template, e.g. "POST /channels/{channel_id}/messages"
    status: int | None = None
    response: Any = None
    multipart: bool = False

    @property
    def key(self) -> str:
        return f"{self.method} {self.path}"


@dataclass(frozen=True)
class ErrorRecord:
    """A 4xx (or 5xx) the fake answered with; `injected` marks faults a test asked for."""

    method: str
    path: str
    status: int
    code: int | None
    message: str
    errors: dict[str, Any] | None = None
    injected: bool = False


@dataclass(frozen=True)
class LimitViolation:
    """A request Discord would reject for breaking a documented limit."""

    method: str
    path: str
    field: str  # dotted location, e.g. "components" or "data.embeds.0.title"
    code: str
    message: str
    status: int


@dataclass
class CallbackRecord:
    """One `POST /interactions/{id}/{token}/callback` attempt, accepted or not."""

    type: int
    data: dict[str, Any]
    files: list[UploadedFile]
    status: int
    at: float  # clock time of the attempt
    error_code: int | None = None
    message_id: int | None = None  # message the callback created or updated

    @property
    def accepted(self) -> bool:
        return 200 <= self.status < 300

    @property
    def ephemeral(self) -> bool:
        return bool(int(self.data.get("flags", 0) or 0) & 64)


@dataclass
class RenderWarning:
    """Something Discord accepts but renders wrongly (e.g. an embed image naming a missing file)."""

    method: str
    path: str
    message: str
    details: dict[str, Any] = field(default_factory=dict)
