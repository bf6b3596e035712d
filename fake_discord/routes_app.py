"""Identity, gateway discovery, guild/user lookups and application-command sync."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import payloads
from .errors import (
    MISSING_ACCESS,
    UNKNOWN_APPLICATION_COMMAND,
    UNKNOWN_GUILD,
    UNKNOWN_MEMBER,
    UNKNOWN_USER,
    DiscordAPIError,
    invalid_form_body,
    not_found,
)
from .limits import check_command, check_commands
from .messaging import record_problems
from .models import Guild
from .rest import Reply, RestApi, RestRequest

if TYPE_CHECKING:
    from .server import FakeDiscord


def register(api: RestApi) -> None:
    r = AppRoutes(api.fake)
    api.add("GET /users/@me", r.me)
    api.add("GET /users/{user_id}", r.user)
    api.add("GET /oauth2/applications/@me", r.application)
    api.add("GET /applications/@me", r.application)
    api.add("GET /gateway", r.gateway, auth=False)
    api.add("GET /gateway/bot", r.gateway_bot)
    api.add("GET /guilds/{guild_id}", r.guild)
    api.add("GET /guilds/{guild_id}/channels", r.guild_channels)
    api.add("GET /guilds/{guild_id}/roles", r.guild_roles)
    api.add("GET /guilds/{guild_id}/members/{user_id}", r.member)
    for scope in ("/applications/{application_id}", "/applications/{application_id}/guilds/{guild_id}"):
        api.add(f"GET {scope}/commands", r.list_commands)
        api.add(f"PUT {scope}/commands", r.overwrite_commands)
        api.add(f"POST {scope}/commands", r.upsert_command)
        api.add(f"GET {scope}/commands/{{command_id}}", r.get_command)
        api.add(f"PATCH {scope}/commands/{{command_id}}", r.edit_command)
        api.add(f"DELETE {scope}/commands/{{command_id}}", r.delete_command)


class AppRoutes:
    def __init__(self, fake: FakeDiscord) -> None:
        self.fake = fake

    async def me(self, req: RestRequest) -> Reply:
        bot = self.fake.world.bot
        return Reply(
            200,
            {**payloads.user(bot), "verified": True, "mfa_enabled": False, "locale": "en-US", "email": None},
        )

    async def user(self, req: RestRequest) -> Reply:
        uid = req.params["user_id"]
        user = self.fake.world.users.get(int(uid)) if uid.isdigit() else None
        if user is None:
            raise not_found(UNKNOWN_USER, "Unknown User")
        return Reply(200, payloads.user(user))

    async def application(self, req: RestRequest) -> Reply:
        fake = self.fake
        world = fake.world
        return Reply(
            200,
            {
                "id": str(world.application_id),
                "name": world.bot.username,
                "icon": None,
                "description": "",
                "summary": "",
                "type": None,
                "bot_public": True,
                "bot_require_code_grant": False,
                "verify_key": "0" * 64,
                "flags": fake.gateway.application_flags(),
                "owner": payloads.user(fake.owner),
                "team": None,
                "bot": payloads.user(world.bot),
                "redirect_uris": [],
                "interactions_endpoint_url": None,  # non-null would divert interactions away from the gateway
                "approximate_guild_count": len(world.guilds),
                "integration_types_config": {"0": {}},
            },
        )

    async def gateway(self, req: RestRequest) -> Reply:
        return Reply(200, {"url": self.fake.gateway.ws_base})

    async def gateway_bot(self, req: RestRequest) -> Reply:
        return Reply(
            200,
            {
                "url": self.fake.gateway.ws_base,
                "shards": 1,
                "session_start_limit": {
                    "total": 1000,
                    "remaining": 999,
                    "reset_after": 86_400_000,
                    "max_concurrency": 1,
                },
            },
        )

    def _guild(self, req: RestRequest) -> Guild:
        gid = req.params["guild_id"]
        guild = self.fake.world.guilds.get(int(gid)) if gid.isdigit() else None
        if guild is None:
            raise not_found(UNKNOWN_GUILD, "Unknown Guild")
        return guild

    async def guild(self, req: RestRequest) -> Reply:
        guild = self._guild(req)
        data = payloads.guild(guild)
        if req.flag("with_counts"):
            data.update({"approximate_member_count": len(guild.members), "approximate_presence_count": 0})
        return Reply(200, data)

    async def guild_channels(self, req: RestRequest) -> Reply:
        guild = self._guild(req)
        world = self.fake.world
        return Reply(200, [payloads.channel(world.channels[c]) for c in guild.channel_ids])

    async def guild_roles(self, req: RestRequest) -> Reply:
        return Reply(200, [payloads.role(r) for r in self._guild(req).roles.values()])

    async def member(self, req: RestRequest) -> Reply:
        guild = self._guild(req)
        uid = req.params["user_id"]
        member = guild.members.get(int(uid)) if uid.isdigit() else None
        if member is None:
            raise not_found(UNKNOWN_MEMBER, "Unknown Member")
        return Reply(200, payloads.member(member))

    # --- application commands ---------------------------------------------------------------------

    def _scope(self, req: RestRequest) -> int | None:
        world = self.fake.world
        if req.params["application_id"] != str(world.application_id):
            raise DiscordAPIError(403, MISSING_ACCESS, "Missing Access")
        if "guild_id" not in req.params:
            return None
        gid = req.params["guild_id"]
        if not gid.isdigit() or int(gid) not in world.guilds:
            # Discord's answer for a guild the app is not in (or lacks applications.commands in).
            raise DiscordAPIError(403, MISSING_ACCESS, "Missing Access")
        return int(gid)

    def _commands(self, scope: int | None) -> list[dict[str, Any]]:
        world = self.fake.world
        return world.global_commands if scope is None else world.guild_commands.setdefault(scope, [])

    async def list_commands(self, req: RestRequest) -> Reply:
        return Reply(200, self._commands(self._scope(req)))

    async def overwrite_commands(self, req: RestRequest) -> Reply:
        fake = self.fake
        scope = self._scope(req)
        problems = check_commands(req.json, fake.limits)
        if problems:
            record_problems(fake, req, problems)
            raise invalid_form_body(problems)
        return Reply(200, fake.world.store_commands(scope, list(req.json)))

    async def upsert_command(self, req: RestRequest) -> Reply:
        fake = self.fake
        scope = self._scope(req)
        body = req.body
        problems = check_command(body, (), fake.limits)
        if problems:
            record_problems(fake, req, problems)
            raise invalid_form_body(problems)
        existing = [
            c
            for c in self._commands(scope)
            if not (c["name"] == body["name"] and c["type"] == int(body.get("type", 1)))
        ]
        stored = fake.world.store_commands(scope, [*existing, body])
        return Reply(201, next(c for c in stored if c["name"] == body["name"]))

    def _command(self, req: RestRequest, scope: int | None) -> dict[str, Any]:
        found = next((c for c in self._commands(scope) if c["id"] == req.params["command_id"]), None)
        if found is None:
            raise not_found(UNKNOWN_APPLICATION_COMMAND, "Unknown application command")
        return found

    async def get_command(self, req: RestRequest) -> Reply:
        return Reply(200, self._command(req, self._scope(req)))

    async def edit_command(self, req: RestRequest) -> Reply:
        fake = self.fake
        scope = self._scope(req)
        current = self._command(req, scope)
        merged = {**current, **req.body}
        problems = check_command(merged, (), fake.limits)
        if problems:
            record_problems(fake, req, problems)
            raise invalid_form_body(problems)
        others = [c for c in self._commands(scope) if c["id"] != current["id"]]
        stored = fake.world.store_commands(scope, [*others, merged])
        return Reply(200, next(c for c in stored if c["name"] == merged["name"]))

    async def delete_command(self, req: RestRequest) -> Reply:
        scope = self._scope(req)
        current = self._command(req, scope)
        others = [c for c in self._commands(scope) if c["id"] != current["id"]]
        self.fake.world.store_commands(scope, others)
        return Reply(204)
