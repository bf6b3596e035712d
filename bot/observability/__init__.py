"""Observability: Prometheus metrics, health endpoints and the HTTP server that serves them.

Nothing here imports discord, torch or sqlalchemy: the metrics watch the scheduler through its listener API,
the render backend through a thin wrapper, and everything else through plain callbacks.
"""

from __future__ import annotations

from bot.observability.health import ReadyCheck, scheduler_ready_check, scheduler_worker_up
from bot.observability.metrics import DiscordLogHandler, InstrumentedBackend, Metrics
from bot.observability.server import make_app, serve, serve_observability

__all__ = [
    "DiscordLogHandler",
    "InstrumentedBackend",
    "Metrics",
    "ReadyCheck",
    "make_app",
    "scheduler_ready_check",
    "scheduler_worker_up",
    "serve",
    "serve_observability",
]
