"""The Discord client: loads the cogs, registers persistent buttons, syncs commands, starts delivery."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, cast

import discord
from discord import app_commands
from discord.ext import commands

from bot.discord_app.components import DYNAMIC_ITEMS
from bot.discord_app.delivery import DeliveryManager
from bot.discord_app.errors import reply_error
from bot.domain.clock import Clock, SystemClock
from bot.runtime.app import ImagineApp

if TYPE_CHECKING:
    from bot.discord_app.cogs.imagine import ImagineCog
    from bot.discord_app.cogs.moderation import ModerationCog

log = logging.getLogger(__name__)

COGS = ("bot.discord_app.cogs.imagine", "bot.discord_app.cogs.moderation")


def intents() -> discord.Intents:
    """Only what the bot uses: guilds and reactions. No privileged intents (no message content)."""
    wanted = discord.Intents.none()
    wanted.guilds = True
    wanted.guild_reactions = True
    return wanted


class ImagineTree(app_commands.CommandTree["ImagineBot"]):
    async def on_error(
        self, interaction: discord.Interaction[ImagineBot], error: app_commands.AppCommandError
    ) -> None:
        await reply_error(interaction, error)


class ImagineBot(commands.Bot):
    def __init__(
        self,
        app: ImagineApp,
        *,
        guild_id: int | None = None,
        clock: Clock | None = None,
        edit_interval: float | None = None,
    ) -> None:
        super().__init__(
            command_prefix=commands.when_mentioned,  # slash commands only; no message content needed
            intents=intents(),
            tree_cls=ImagineTree,
            help_command=None,
            allowed_mentions=discord.AllowedMentions(everyone=False, roles=False, users=True),
        )
        self.app = app
        self.sync_guild_id = guild_id
        clock = clock or SystemClock()
        self.clock = clock
        options = {} if edit_interval is None else {"edit_interval": edit_interval}
        self.delivery = DeliveryManager(self, app.results, app.safety, clock, **options)

    async def setup_hook(self) -> None:
        for cog in COGS:
            await self.load_extension(cog)
        self.add_dynamic_items(*DYNAMIC_ITEMS)
        if self.sync_guild_id is not None:
            guild = discord.Object(self.sync_guild_id)
            self.tree.copy_global_to(guild=guild)
            synced = await self.tree.sync(guild=guild)
        else:
            synced = await self.tree.sync()
        log.info("synced %d slash commands", len(synced), extra={"guild_id": self.sync_guild_id})
        await self.delivery.start()

    # Cogs reach each other through these typed properties (None until loaded), as in RoboDanny. No
    # isinstance check: load_extension runs each cog's module afresh, so its class is not the one a
    # module-level import here would see.
    @property
    def imagine(self) -> ImagineCog | None:
        return cast("ImagineCog | None", self.get_cog("ImagineCog"))

    @property
    def moderation(self) -> ModerationCog | None:
        return cast("ModerationCog | None", self.get_cog("ModerationCog"))

    async def on_ready(self) -> None:
        log.info("connected to Discord", extra={"user": str(self.user), "guilds": len(self.guilds)})

    async def on_error(self, event_method: str, /, *args: Any, **kwargs: Any) -> None:
        log.exception("error in event handler %s", event_method)

    async def close(self) -> None:
        await self.delivery.stop()
        await super().close()
