"""`imagine-bot worker`: render jobs from the queue that several processes share, until stopped."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

from rich.console import Console

from bot.observability import Metrics, scheduler_ready_check, scheduler_worker_up, serve_observability
from bot.runtime.app import ImagineApp, make_backend
from bot.runtime.settings import Settings, SettingsError

log = logging.getLogger(__name__)


async def run_worker(settings: Settings, console: Console) -> int:
    if not settings.shares_queue:
        console.print(
            "[red]A worker needs DATABASE_URL=postgresql+asyncpg://… shared with the bot; with SQLite the "
            "bot renders by itself.[/red]"
        )
        return 2
    metrics = Metrics(role="worker")  # the Discord side reports the shared queue's depth, not workers
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signum, stop.set)
    try:
        with console.status("Loading the model…"):
            app = await ImagineApp.start(settings, backend=metrics.instrument(make_backend(settings)))
    except SettingsError as error:
        console.print(f"[red]{error}[/red]")
        return 2
    metrics.watch(app.scheduler, worker_up=lambda: scheduler_worker_up(app.scheduler))
    metrics.watch_disk(settings.image_dir)
    try:
        async with serve_observability(
            settings, metrics, scheduler_ready_check(app.scheduler, app.stores.database)
        ):
            log.info("worker %s is taking jobs", settings.worker_name)
            await stop.wait()
    finally:
        await app.close()  # rendered results are stored first; a batch still rendering is re-run elsewhere
    return 0
