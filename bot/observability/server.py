"""The observability HTTP server: /metrics (Prometheus), /healthz (liveness), /readyz (readiness).

`METRICS_HOST`/`METRICS_PORT` choose where it listens (default 127.0.0.1:9108); `METRICS_PORT=0` turns it off.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from bot.observability.health import ReadyCheck
from bot.observability.metrics import Metrics
from bot.runtime.settings import Settings

log = logging.getLogger(__name__)


def make_app(metrics: Metrics, ready_check: ReadyCheck) -> web.Application:
    async def metrics_view(request: web.Request) -> web.Response:
        response = web.Response(body=metrics.render())
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(request: web.Request) -> web.Response:
        try:
            reason = await ready_check()
        except Exception as error:
            reason = f"the readiness check failed: {type(error).__name__}"
        if reason is None:
            return web.Response(text="ready\n")
        return web.Response(status=503, text=reason.splitlines()[0] + "\n" if reason else "not ready\n")

    app = web.Application()
    app.router.add_get("/metrics", metrics_view)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app


@asynccontextmanager
async def serve(app: web.Application, host: str, port: int) -> AsyncIterator[str]:
    """Serve an app on host:port (port 0: any free port) and yield its base URL."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        server = site._server  # aiohttp keeps the bound socket here; it names the port actually used
        sockets = getattr(server, "sockets", None) or []
        bound_port = sockets[0].getsockname()[1] if sockets else port
        url_host = f"[{host}]" if ":" in host else host
        yield f"http://{url_host}:{bound_port}"
    finally:
        await runner.cleanup()


@asynccontextmanager
async def serve_observability(
    settings: Settings, metrics: Metrics, ready_check: ReadyCheck
) -> AsyncIterator[str | None]:
    """Serve /metrics, /healthz and /readyz while the block runs; yields the URL, or None when disabled."""
    if settings.metrics_port == 0:
        yield None
        return
    app = make_app(metrics, ready_check)
    try:
        serving = serve(app, settings.metrics_host, settings.metrics_port)
        url = await serving.__aenter__()
    except OSError as error:  # a port already taken must not stop the bot
        log.warning(
            "metrics server not started on %s:%s: %s", settings.metrics_host, settings.metrics_port, error
        )
        yield None
        return
    log.info("metrics and health checks at %s/metrics", url)
    try:
        yield url
    finally:
        await serving.__aexit__(None, None, None)
