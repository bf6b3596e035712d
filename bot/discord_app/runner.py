"""Start the bot: settings checked, model loaded, then Discord; any setup problem is one clear line.

SIGTERM or SIGINT stops it cleanly: no new batch is taken, the running one gets STOP_TIMEOUT seconds to
finish, be stored and be delivered (else it goes back to the queue), then the gateway is closed and the
process exits 0.
"""

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
from bot.runtime.failures import say
from bot.runtime.settings import Settings, SettingsError
from bot.runtime.stopping import StopSignals, stop_signals

log = logging.getLogger(__name__)

RESTART_DELAYS = (1.0, 5.0, 15.0, 60.0)  # pauses before starting again after a 5xx at start, then every 60 s
# When stopping: results stored at the very end of STOP_TIMEOUT still get this long to be delivered (what is
# left is delivered at the next start).
DELIVERY_GRACE = 5.0
DELIVERY_POLL = 0.1  # seconds between looks at what is still undelivered while stopping


async def run_bot(settings: Settings, console: Console, *, render: bool = True) -> int:
    token = settings.discord_token.get_secret_value() if settings.discord_token else ""
    if not token:
        say(console, "DISCORD_TOKEN is not set: put the bot token in .env (see .env.example).")
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
        async with stop_signals() as stops, serve_observability(settings, metrics, ready):
            return await _run(settings, console, token, metrics, apps, render, stops)
    finally:
        logging.getLogger("discord").removeHandler(discord_log)


async def _run(
    settings: Settings,
    console: Console,
    token: str,
    metrics: Metrics,
    apps: list[ImagineApp],
    render: bool,
    stops: StopSignals,
) -> int:
    with console.status("Loading the model…" if render else "Opening the shared queue…"):
        try:
            app = await stops.unless_stopped(
                ImagineApp.start(settings, backend=metrics.instrument(make_backend(settings)), render=render)
            )
        except SettingsError as error:
            say(console, str(error))
            return 2
    if app is None:
        log.info("stopped while starting")
        return 0
    apps.append(app)
    metrics.watch(app.scheduler, worker_up=lambda: scheduler_worker_up(app.scheduler))
    metrics.watch_disk(settings.image_dir)
    # The Discord side prunes old images (IMAGE_RETENTION_DAYS), shortly after start and then daily;
    # workers never do, so several processes never prune at once.
    pruning = asyncio.create_task(app.retention.run_daily(), name="image-retention")
    restarts = 0
    try:
        while not stops.requested.is_set():
            bot = ImagineBot(app, guild_id=settings.discord_guild_id)
            bot.delivery.on_delivered = metrics.delivered
            try:
                async with bot:
                    await _serve(bot, token, app, settings, stops)
                return 0
            except discord.LoginFailure:
                say(console, "Discord rejected DISCORD_TOKEN: copy the token again from the Bot tab.")
                return 2
            except discord.PrivilegedIntentsRequired:
                say(
                    console,
                    "Discord refused the gateway intents: enable them for the bot in the Developer Portal.",
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
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await stops.requested.wait()
        await app.scheduler.drain(0)  # stopped between two tries: nothing can be delivered now
        return 0
    finally:
        pruning.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pruning
        await app.close()


async def _serve(
    bot: ImagineBot, token: str, app: ImagineApp, settings: Settings, stops: StopSignals
) -> None:
    """Run the client until it ends by itself (raising what ended it) or a stop is asked for: then drain the
    scheduler, deliver what it finished, and close the gateway."""
    client = asyncio.create_task(bot.start(token), name="discord-client")
    stop = asyncio.create_task(stops.requested.wait(), name="stop-signal")
    try:
        await asyncio.wait({client, stop}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stop.cancel()
    if client.done():
        client.result()  # a refused login, an outage at start…; the client closed itself
        return
    loop = asyncio.get_running_loop()
    deadline = loop.time() + settings.stop_timeout
    try:
        await app.scheduler.drain(settings.stop_timeout, hurry=stops.hurry)
        await _deliver_finished(app, max(deadline, loop.time() + DELIVERY_GRACE), stops)
    finally:
        await bot.close()  # the gateway goes; deliveries still in flight are cancelled (next start: once)
        with contextlib.suppress(asyncio.CancelledError):
            await client
    log.info("disconnected from Discord")


async def _deliver_finished(app: ImagineApp, deadline: float, stops: StopSignals) -> None:
    """Wait (until `deadline`, or a second signal) while results that are finished are still being delivered,
    so that what the drain finished reaches Discord before the client closes."""
    loop = asyncio.get_running_loop()
    while loop.time() < deadline and not stops.hurry.is_set():
        try:
            waiting = await app.results.undelivered_results()
        except Exception:
            log.warning("could not read the undelivered results while stopping", exc_info=True)
            return
        if not waiting:
            return
        await asyncio.sleep(DELIVERY_POLL)
    log.info("stopping with results still undelivered; they are delivered at the next start")
