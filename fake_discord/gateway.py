"""The gateway websocket: HELLO, IDENTIFY -> READY + GUILD_CREATE, heartbeats, RESUME with replay.

One `Session` per IDENTIFY; it outlives its connection so that a dropped client can RESUME and get
the events it missed, as on Discord. Outgoing frames go through one queue per connection so that
sequence numbers, compression state and send order always agree.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import zlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

from . import payloads
from . import permissions as perms
from .state import World

HELLO, HEARTBEAT, IDENTIFY, PRESENCE, RESUME, RECONNECT = 10, 1, 2, 3, 6, 7
REQUEST_MEMBERS, INVALID_SESSION, HEARTBEAT_ACK, DISPATCH = 8, 9, 11, 0

# Close codes (discord-api-docs topics/opcodes-and-status-codes#gateway-close-event-codes).
UNKNOWN_OPCODE, DECODE_ERROR, NOT_AUTHENTICATED, AUTH_FAILED, ALREADY_AUTHENTICATED = (
    4001,
    4002,
    4003,
    4004,
    4005,
)
INVALID_API_VERSION, INVALID_INTENTS, DISALLOWED_INTENTS = 4012, 4013, 4014

Compressor = Callable[[bytes], bytes]


def make_compressor(kind: str | None) -> Compressor | None:
    """One compression context per connection, flushed per message, as the client expects."""
    if kind is None:
        return None
    if kind == "zlib-stream":
        zctx = zlib.compressobj()
        return lambda raw: zctx.compress(raw) + zctx.flush(zlib.Z_SYNC_FLUSH)
    if kind == "zstd-stream":
        # Only asked for when discord.py found a zstd module; use the same one it found.
        try:
            import zstandard  # type: ignore[import-not-found,unused-ignore]
        except ImportError:  # Python 3.14's stdlib module
            from compression.zstd import ZstdCompressor  # type: ignore[import-not-found,unused-ignore]

            std = ZstdCompressor()
            return lambda raw: bytes(std.compress(raw, mode=ZstdCompressor.FLUSH_BLOCK))
        sctx = zstandard.ZstdCompressor().compressobj()
        return lambda raw: bytes(sctx.compress(raw) + sctx.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK))
    raise ValueError(f"unsupported compression {kind!r}")


@dataclass(eq=False)  # identity semantics: connections live in a set
class Connection:
    ws: web.WebSocketResponse
    path: str
    compression: str | None
    compressor: Compressor | None
    outbox: asyncio.Queue[dict[str, Any] | None] = field(default_factory=asyncio.Queue)
    session: Session | None = None
    heartbeats: int = 0
    closed_by_server: int | None = None
    recorded: bool = False


@dataclass(eq=False)
class Session:
    id: str
    intents: int
    shard: list[int] | None
    seq: int = 0
    events: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=10_000))
    conn: Connection | None = None
    ready: bool = False
    invalid: bool = False
    resumes: int = 0


@dataclass(frozen=True)
class ConnectionRecord:
    """One websocket the client opened: which URL, compression, and whether it identified or resumed."""

    path: str
    compression: str | None
    action: str  # "identify", "identify-rejected", "resume", "resume-rejected", "closed-early"


class Gateway:
    def __init__(
        self,
        world: World,
        *,
        token: Callable[[], str],
        privileged_intents: Callable[[], int],
        heartbeat_interval_ms: int,
    ) -> None:
        self.world = world
        self._token = token
        self._privileged_intents = privileged_intents
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.ws_base = ""  # "ws://127.0.0.1:PORT", set once listening
        self.sessions: dict[str, Session] = {}
        self.session: Session | None = None  # the newest identified session: "the bot"
        self.connections: list[ConnectionRecord] = []
        self.identify_payloads: list[dict[str, Any]] = []
        self.presence_updates: list[dict[str, Any]] = []
        self._live: set[Connection] = set()

    # --- websocket endpoint -----------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=0)
        await ws.prepare(request)
        compression = request.query.get("compress")
        try:
            compressor = make_compressor(compression)
        except ValueError:
            await ws.close(code=DECODE_ERROR, message=b"Unsupported compression")
            return ws
        conn = Connection(ws=ws, path=request.path, compression=compression, compressor=compressor)
        if request.query.get("v") != "10" or request.query.get("encoding", "json") != "json":
            await ws.close(code=INVALID_API_VERSION, message=b"Invalid API version")
            return ws
        self._live.add(conn)
        writer = asyncio.create_task(self._write(conn))
        conn.outbox.put_nowait(
            {"op": HELLO, "d": {"heartbeat_interval": self.heartbeat_interval_ms}, "s": None, "t": None}
        )
        try:
            async for msg in ws:
                if msg.type is not WSMsgType.TEXT:
                    await self._close(conn, DECODE_ERROR, "Decode error")
                    break
                try:
                    frame = json.loads(msg.data)
                except ValueError:
                    await self._close(conn, DECODE_ERROR, "Decode error")
                    break
                await self._on_frame(conn, frame)
        finally:
            self._live.discard(conn)
            session = conn.session
            if session is not None and session.conn is conn:
                session.conn = None
                # A client that closes cleanly (1000/1001) ends its session; anything else may resume.
                if conn.closed_by_server is None and ws.close_code in (1000, 1001):
                    session.invalid = True
            if not conn.recorded:
                self._record(conn, "closed-early")
            conn.outbox.put_nowait(None)
            with contextlib.suppress(Exception):
                await writer
            self.world.changes.notify()
        return ws

    def _record(self, conn: Connection, action: str) -> None:
        conn.recorded = True
        self.connections.append(ConnectionRecord(conn.path, conn.compression, action))

    async def _write(self, conn: Connection) -> None:
        while (frame := await conn.outbox.get()) is not None:
            raw = json.dumps(frame, separators=(",", ":"))
            try:
                if conn.compressor is not None:
                    await conn.ws.send_bytes(conn.compressor(raw.encode()))
                else:
                    await conn.ws.send_str(raw)
            except (ConnectionError, RuntimeError):
                return

    async def _close(self, conn: Connection, code: int, reason: str) -> None:
        conn.closed_by_server = code
        await conn.ws.close(code=code, message=reason.encode())

    async def _on_frame(self, conn: Connection, frame: dict[str, Any]) -> None:
        op, data = frame.get("op"), frame.get("d")
        if op == HEARTBEAT:
            conn.heartbeats += 1
            conn.outbox.put_nowait({"op": HEARTBEAT_ACK, "d": None, "s": None, "t": None})
        elif op == IDENTIFY:
            await self._identify(conn, data or {})
        elif op == RESUME:
            await self._resume(conn, data or {})
        elif conn.session is None:
            await self._close(conn, NOT_AUTHENTICATED, "Not authenticated.")
        elif op == REQUEST_MEMBERS:
            self._members_chunk(conn.session, data or {})
        elif op == PRESENCE:
            self.presence_updates.append(data or {})
        elif op in (4,):  # voice state updates are accepted and ignored
            pass
        else:
            await self._close(conn, UNKNOWN_OPCODE, "Unknown opcode.")

    async def _identify(self, conn: Connection, data: dict[str, Any]) -> None:
        if conn.session is not None:
            await self._close(conn, ALREADY_AUTHENTICATED, "Already authenticated.")
            return
        recorded = {k: v for k, v in data.items() if k != "token"}
        self.identify_payloads.append(recorded)
        if data.get("token") != self._token():
            self._record(conn, "identify-rejected")
            await self._close(conn, AUTH_FAILED, "Authentication failed.")
            return
        intents = data.get("intents")
        if not isinstance(intents, int) or intents < 0 or intents & ~perms.ALL_INTENTS:
            await self._close(conn, INVALID_INTENTS, "Invalid intent(s).")
            return
        if intents & perms.PRIVILEGED_INTENTS & ~self._privileged_intents():
            await self._close(conn, DISALLOWED_INTENTS, "Disallowed intent(s).")
            return
        session = Session(id=secrets.token_hex(16), intents=intents, shard=data.get("shard"))
        self.sessions[session.id] = session
        self.session = session
        session.conn = conn
        conn.session = session
        self._record(conn, "identify")
        world = self.world
        self._dispatch(
            session,
            "READY",
            {
                "v": 10,
                "user": {**payloads.user(world.bot), "verified": True, "mfa_enabled": False},
                "guilds": [{"id": str(gid), "unavailable": True} for gid in world.guilds],
                "session_id": session.id,
                "session_type": "normal",
                "resume_gateway_url": f"{self.ws_base}/resume",
                "application": {"id": str(world.application_id), "flags": self.application_flags()},
                "private_channels": [],
                "relationships": [],
                "presences": [],
                "guild_join_requests": [],
                "geo_ordered_rtc_regions": [],
                "user_settings": {},
                "auth": {},
                "_trace": ["fake-discord"],
                **({"shard": session.shard} if session.shard else {}),
            },
        )
        for guild_id in world.guilds:
            self._dispatch(session, "GUILD_CREATE", self.guild_create(guild_id, session))
        session.ready = True
        world.changes.notify()

    def guild_create(self, guild_id: int, session: Session) -> dict[str, Any]:
        world = self.world
        guild = world.guilds[guild_id]
        channels = [world.channels[c] for c in guild.channel_ids]
        # Without GUILD_MEMBERS Discord sends only the bot itself (and voice members) here.
        if session.intents & perms.INTENT_GUILD_MEMBERS:
            members = list(guild.members.values())
        else:
            members = [guild.members[world.bot.id]]
        return payloads.guild_create(guild, channels, members)

    def application_flags(self) -> int:
        allowed = self._privileged_intents()
        flags = 0
        if allowed & perms.INTENT_GUILD_PRESENCES:
            flags |= 1 << 13
        if allowed & perms.INTENT_GUILD_MEMBERS:
            flags |= 1 << 15
        if allowed & perms.INTENT_MESSAGE_CONTENT:
            flags |= 1 << 19
        return flags

    async def _resume(self, conn: Connection, data: dict[str, Any]) -> None:
        session = self.sessions.get(str(data.get("session_id")))
        if data.get("token") != self._token():
            await self._close(conn, AUTH_FAILED, "Authentication failed.")
            return
        if session is None or session.invalid:
            self._record(conn, "resume-rejected")
            # d=false: the session cannot be resumed; the client must IDENTIFY afresh.
            conn.outbox.put_nowait({"op": INVALID_SESSION, "d": False, "s": None, "t": None})
            return
        old = session.conn
        session.conn = conn
        conn.session = session
        session.resumes += 1
        self._record(conn, "resume")
        if old is not None and old is not conn:
            old.session = None
            await self._close(old, 4000, "Resumed elsewhere")
        last = int(data.get("seq") or 0)
        for frame in session.events:
            if frame["s"] > last:
                conn.outbox.put_nowait(frame)
        self._dispatch(session, "RESUMED", {"_trace": ["fake-discord"]})
        self.world.changes.notify()

    def _members_chunk(self, session: Session, data: dict[str, Any]) -> None:
        guild = self.world.guilds.get(int(data.get("guild_id") or 0))
        if guild is None:
            return
        wanted = {int(u) for u in data.get("user_ids") or []}
        query = str(data.get("query") or "").lower()
        members = [
            m
            for m in guild.members.values()
            if (not wanted or m.user.id in wanted) and m.user.username.lower().startswith(query)
        ]
        limit = int(data.get("limit") or 0)
        if limit:
            members = members[:limit]
        chunk: dict[str, Any] = {
            "guild_id": str(guild.id),
            "members": [payloads.member(m) for m in members],
            "chunk_index": 0,
            "chunk_count": 1,
        }
        if data.get("nonce") is not None:
            chunk["nonce"] = data["nonce"]
        self._dispatch(session, "GUILD_MEMBERS_CHUNK", chunk)

    # --- dispatching ------------------------------------------------------------------------------

    def _dispatch(self, session: Session, event: str, data: dict[str, Any]) -> None:
        session.seq += 1
        frame = {"op": DISPATCH, "t": event, "s": session.seq, "d": data}
        session.events.append(frame)
        if session.conn is not None:
            session.conn.outbox.put_nowait(frame)

    def dispatch(self, event: str, data: dict[str, Any], *, intent: int = 0) -> bool:
        """Send an event to the bot's session (buffered for RESUME while it is disconnected).

        Returns False when nothing was sent: no session yet, or the client did not ask for `intent`.
        """
        session = self.session
        if session is None or session.invalid:
            return False
        if intent and not session.intents & intent:
            return False
        self._dispatch(session, event, data)
        return True

    @property
    def intents(self) -> int | None:
        return None if self.session is None else self.session.intents

    def is_ready(self) -> bool:
        s = self.session
        return s is not None and s.ready and not s.invalid and s.conn is not None

    # --- faults -----------------------------------------------------------------------------------

    async def drop(self, code: int = 4000) -> None:
        """Close the bot's connection with `code` (4000: reconnect and RESUME)."""
        session = self.session
        if session is None or session.conn is None:
            raise RuntimeError("the bot is not connected to the gateway")
        await self._close(session.conn, code, "Dropped by the test")

    def request_reconnect(self) -> None:
        """Send op 7 RECONNECT: the client closes and RESUMEs."""
        session = self.session
        if session is None or session.conn is None:
            raise RuntimeError("the bot is not connected to the gateway")
        session.conn.outbox.put_nowait({"op": RECONNECT, "d": None, "s": None, "t": None})

    def invalidate_session(self) -> None:
        """Send op 9 with d=false: the client must IDENTIFY again (and gets a fresh READY)."""
        session = self.session
        if session is None or session.conn is None:
            raise RuntimeError("the bot is not connected to the gateway")
        session.invalid = True
        session.conn.outbox.put_nowait({"op": INVALID_SESSION, "d": False, "s": None, "t": None})

    async def close_all(self) -> None:
        for conn in list(self._live):
            with contextlib.suppress(Exception):
                await self._close(conn, 1001, "Server going away")
