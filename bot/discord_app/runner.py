"""Start the bot: settings checked, model loaded, then Discord; any setup problem is one clear line."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import discord
from rich.console import Console

from bot.discord_app.client import ImagineBot
from bot.observability import (
    DiscordLogHandler,
    Metrics,
    scheduler_ready_check,
    scheduler_worker_up,
    serve_observability,
)
from bot.runtime.app import ImagineApp, make_backend
from bot.runtime.settings import Settings, SettingsError

RESTART_DELAYS = (1.0, 5.0, 15.0, 60.0)  # pauses before starting again after a 5xx at start, then every 60 s


async def run_bot(settings: Settings, console: Console, *, render: bool = True) -> int:
    token = settings.discord_token.get_secret_value() if settings.discord_token else ""
    if not token:
        console.print("[red]DISCORD_TOKEN is not set: put the bot token in .env (see .env.example).[/red]")
        return 2
    metrics = Metrics()
    apps: list[ImagineApp] = []

    async def ready() -> str | None:  # /readyz answers 503 while the model loads
        return (
            await scheduler_ready_check(apps[0].scheduler, apps[0].stores.database)() if apps else "starting"
        )

    discord_log = DiscordLogHandler(metrics)
    logging.getLogger("discord").addHandler(discord_log)
    try:
        async with serve_observability(settings, metrics, ready):
            return await _run(settings, console, token, metrics, apps, render)
    finally:
        logging.getLogger("discord").removeHandler(discord_log)


async def _run(
    settings: Settings, console: Console, token: str, metrics: Metrics, apps: list[ImagineApp], render: bool
) -> int:
    with console.status("Loading the model…" if render else "Opening the shared queue…"):
        try:
            app = await ImagineApp.start(
                settings, backend=metrics.instrument(make_backend(settings)), render=render
            )
        except SettingsError as error:
            console.print(f"[red]{error}[/red]")
            return 2
    apps.append(app)
    metrics.watch(app.scheduler, worker_up=lambda: scheduler_worker_up(app.scheduler))
    metrics.watch_disk(settings.image_dir)
    # The Discord side prunes old images (IMAGE_RETENTION_DAYS), shortly after start and then daily;
    # workers never do, so several processes never prune at once.
    pruning = asyncio.create_task(app.retention.run_daily(), name="image-retention")
    restarts = 0
    try:
        while True:
            bot = ImagineBot(app, guild_id=settings.discord_guild_id)
            bot.delivery.on_delivered = metrics.delivered
            try:
                async with bot:
                    await bot.start(token)
                return 0
            except discord.LoginFailure:
                console.print(
                    "[red]Discord rejected DISCORD_TOKEN: copy the token again from the Bot tab.[/red]"
                )
                return 2
            except discord.PrivilegedIntentsRequired:
                console.print(
                    "[red]Discord refused the gateway intents: "
                    "enable them for the bot in the Developer Portal.[/red]"
                )
                return 2
            except discord.DiscordServerError as error:
                # Logging in and syncing the commands go through discord.py's HTTP client, which retries a
                # 500, 502 or 504 a few times but raises at once on a 503: an outage at start would end the
                # process. Results wait in the store meanwhile, so start a fresh client after a pause.
                delay = RESTART_DELAYS[min(restarts, len(RESTART_DELAYS) - 1)]
                restarts += 1
                console.print(
                    f"[yellow]Discord answered {error.status} while the bot was starting; "
                    f"trying again in {delay:g} s.[/yellow]"
                )
                await asyncio.sleep(delay)
    finally:
        pruning.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pruning
        await app.close()
