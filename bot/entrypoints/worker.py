"""`imagine-bot worker`: render jobs from the queue that several processes share, until stopped."""

from __future__ import annotations

import logging

from rich.console import Console

from bot.observability import Metrics, scheduler_ready_check, scheduler_worker_up, serve_observability
from bot.runtime.app import ImagineApp, make_backend
from bot.runtime.failures import say
from bot.runtime.settings import Settings, SettingsError
from bot.runtime.stopping import stop_signals

log = logging.getLogger(__name__)


async def run_worker(settings: Settings, console: Console) -> int:
    """Render until SIGTERM or SIGINT; then finish the running batch (STOP_TIMEOUT) or hand it back, and
    return 0."""
    if not settings.shares_queue:
        say(
            console,
            "A worker needs DATABASE_URL=postgresql+asyncpg://… shared with the bot; with SQLite the bot "
            "renders by itself.",
        )
        return 2
    metrics = Metrics(role="worker")  # the Discord side reports the shared queue's depth, not workers
    async with stop_signals() as stops:
        try:
            with console.status("Loading the model…"):
                app = await stops.unless_stopped(
                    ImagineApp.start(settings, backend=metrics.instrument(make_backend(settings)))
                )
        except SettingsError as error:
            say(console, str(error))
            return 2
        if app is None:
            log.info("stopped while starting")
            return 0
        metrics.watch(app.scheduler, worker_up=lambda: scheduler_worker_up(app.scheduler))
        metrics.watch_disk(settings.image_dir)
        try:
            async with serve_observability(
                settings, metrics, scheduler_ready_check(app.scheduler, app.stores.database)
            ):
                log.info("worker %s is taking jobs", settings.worker_name)
                await stops.requested.wait()
                # Rendered results are stored; a batch still rendering after STOP_TIMEOUT goes back to the
                # queue, for another worker or the next start.
                await app.scheduler.drain(settings.stop_timeout, hurry=stops.hurry)
        finally:
            await app.close()
    log.info("worker %s stopped", settings.worker_name)
    return 0
