"""Start the bot: settings checked, model loaded, then Discord; any setup problem is one clear line."""

from __future__ import annotations

import discord
from rich.console import Console

from bot.app import ImagineApp
from bot.discord_app.client import ImagineBot
from bot.settings import Settings


async def run_bot(settings: Settings, console: Console) -> int:
    token = settings.discord_token.get_secret_value() if settings.discord_token else ""
    if not token:
        console.print("[red]DISCORD_TOKEN is not set: put the bot token in .env (see .env.example).[/red]")
        return 2
    with console.status("Loading the model…"):
        app = await ImagineApp.start(settings)
    bot = ImagineBot(app, guild_id=settings.discord_guild_id)
    try:
        async with bot:
            await bot.start(token)
    except discord.LoginFailure:
        console.print("[red]Discord rejected DISCORD_TOKEN: copy the token again from the Bot tab.[/red]")
        return 2
    except discord.PrivilegedIntentsRequired:
        console.print(
            "[red]Discord refused the gateway intents: enable them for the bot in the Developer Portal.[/red]"
        )
        return 2
    finally:
        await app.close()
    return 0
