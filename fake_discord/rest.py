"""REST transport: parse bodies, authenticate, inject faults, rate-limit, record, and answer like Discord.

Route handlers live in `routes_*.py`; they raise `DiscordAPIError` and this layer turns it into the
JSON error reply (content type exactly `application/json`, which discord.py compares verbatim).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import BodyPartReader, web

from .errors import REQUEST_TOO_LARGE, DiscordAPIError
from .ratelimit import too_many_requests_headers
from .records import ErrorRecord, RecordedRequest, UploadedFile
from .routing import RoutePattern

if TYPE_CHECKING:
    from .server import FakeDiscord

API_PREFIX = "/api/v10"
# Route parameters that pick a rate-limit bucket, as Discord's "major parameters" do.
MAJOR_PARAMS = ("channel_id", "guild_id", "webhook_id", "interaction_id", "token")


@dataclass
class RestRequest:
    method: str
    path: str
    params: dict[str, str]
    query: dict[str, str]
    json: Any
    files: list[UploadedFile]
    record: RecordedRequest

    @property
    def body(self) -> dict[str, Any]:
        if not isinstance(self.json, dict):
            raise DiscordAPIError(400, 50109, "The request body contains invalid JSON.")
        return self.json

    def flag(self, name: str) -> bool:
        return self.query.get(name, "").lower() in ("1", "true")


@dataclass
class Reply:
    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


Handler = Callable[[RestRequest], Awaitable[Reply]]


@dataclass(frozen=True)
class RouteSpec:
    pattern: RoutePattern
    handler: Handler
    auth: bool


def json_response(status: int, body: Any, headers: dict[str, str] | None = None) -> web.Response:
    if status == 204 or body is None:
        return web.Response(status=204 if 200 <= status < 300 else status, headers=headers)
    all_headers = {"Content-Type": "application/json", **(headers or {})}
    return web.Response(status=status, body=json.dumps(body).encode(), headers=all_headers)


class RestApi:
    def __init__(self, fake: FakeDiscord) -> None:
        self.fake = fake
        self.routes: list[RouteSpec] = []

    def add(self, spec: str, handler: Handler, *, auth: bool = True) -> None:
        self.routes.append(RouteSpec(RoutePattern.parse(spec), handler, auth))

    def _match(self, method: str, path: str) -> tuple[RouteSpec, dict[str, str]] | None:
        for spec in self.routes:
            params = spec.pattern.match(method, path)
            if params is not None:
                return spec, params
        return None

    async def handle(self, request: web.Request) -> web.Response:
        fake = self.fake
        path = request.path.removeprefix(API_PREFIX) or "/"
        record = RecordedRequest(request.method, path, dict(request.query), None, [])
        fake.requests.append(record)
        try:
            response = await self._serve(request, record)
        finally:
            fake.world.changes.notify()
        return response

    async def _serve(self, request: web.Request, record: RecordedRequest) -> web.Response:
        fake = self.fake
        method, path = record.method, record.path
        try:
            body, files, multipart = await _parse_body(request)
        except DiscordAPIError as exc:
            return self._error(record, exc)
        record.json, record.files, record.multipart = body, files, multipart

        found = self._match(method, path)
        if found is None:
            if any(
                RoutePattern("*", spec.pattern.segments).match(method, path) is not None
                for spec in self.routes
            ):
                return self._error(record, DiscordAPIError(405, 0, "405: Method Not Allowed"))
            return self._error(record, DiscordAPIError(404, 0, "404: Not Found"))
        spec, params = found
        record.route = str(spec.pattern)

        if spec.auth and request.headers.get("Authorization") != f"Bot {fake.token}":
            return self._error(record, DiscordAPIError(401, 0, "401: Unauthorized"))

        route = str(spec.pattern)
        major = "/".join(params[k] for k in MAJOR_PARAMS if k in params)
        fault = fake.faults.take(method, path)
        if fault is not None:
            return self._fault(record, route, fault.status, fault.retry_after, fault.is_global)
        allowed, limit_headers, reset_after = fake.rate_limits.hit(method, path, route, major)
        if not allowed:
            return self._fault(record, route, 429, reset_after, False, injected=False)

        req = RestRequest(method, path, params, dict(request.query), body, files, record)
        try:
            reply = await spec.handler(req)
        except DiscordAPIError as exc:
            return self._error(record, exc, limit_headers)
        record.status = reply.status if reply.body is not None else 204
        record.response = reply.body
        return json_response(reply.status, reply.body, {**limit_headers, **reply.headers})

    def _error(
        self,
        record: RecordedRequest,
        exc: DiscordAPIError,
        headers: dict[str, str] | None = None,
    ) -> web.Response:
        record.status, record.response = exc.status, exc.body()
        self.fake.record_error(
            ErrorRecord(record.method, record.path, exc.status, exc.code, exc.message, exc.errors)
        )
        return json_response(exc.status, exc.body(), headers)

    def _fault(
        self,
        record: RecordedRequest,
        route: str,
        status: int,
        retry_after: float,
        is_global: bool,
        *,
        injected: bool = True,
    ) -> web.Response:
        if status == 429:
            body: dict[str, Any] = {
                "message": "You are being rate limited.",
                "retry_after": retry_after,
                "global": is_global,
                "code": 0,
            }
            headers = too_many_requests_headers(
                route, self.fake.rate_limits.default_limit, retry_after, is_global
            )
            exc = DiscordAPIError(429, 0, body["message"])
        else:
            body = {"message": f"{status}: Server Error", "code": 0}
            headers = {}
            exc = DiscordAPIError(status, 0, body["message"])
        record.status, record.response = status, body
        self.fake.record_error(
            ErrorRecord(record.method, record.path, status, 0, exc.message, None, injected)
        )
        return json_response(status, body, headers)


async def _parse_body(request: web.Request) -> tuple[Any, list[UploadedFile], bool]:
    """JSON, or multipart with `payload_json` and `files[n]` parts, as discord.py sends them."""
    try:
        if request.content_type == "multipart/form-data":
            payload, files = await _parse_multipart(request)
            return payload, files, True
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge as exc:
        raise DiscordAPIError(413, REQUEST_TOO_LARGE, "Request entity too large") from exc
    if not raw:
        return None, [], False
    try:
        return json.loads(raw), [], False
    except ValueError as exc:
        raise DiscordAPIError(400, 50109, "The request body contains invalid JSON.") from exc


async def _parse_multipart(request: web.Request) -> tuple[Any, list[UploadedFile]]:
    reader = await request.multipart()
    payload: Any = None
    fields: dict[str, Any] = {}
    files: list[UploadedFile] = []
    while (part := await reader.next()) is not None:
        if not isinstance(part, BodyPartReader):
            continue
        name = part.name or ""
        data = bytes(await part.read(decode=False))
        if name == "payload_json":
            try:
                payload = json.loads(data)
            except ValueError as exc:
                raise DiscordAPIError(400, 50109, "The request body contains invalid JSON.") from exc
        elif (name.startswith("files[") and name.endswith("]")) or name == "file":
            index = int(name[6:-1]) if name != "file" else len(files)
            content_type = part.headers.get("Content-Type")
            files.append(UploadedFile(index, part.filename or f"file{index}", content_type, data))
        else:
            fields[name] = data.decode(errors="replace")
    if payload is None:
        payload = fields or None
    return payload, files
