"""Point discord.py at the fake: REST base URL and gateway URL, restored afterwards."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import discord.gateway
import discord.http
import yarl


@contextmanager
def patch_discord(base_url: str, gateway_url: str) -> Iterator[None]:
    """Set `Route.BASE` and `DiscordWebSocket.DEFAULT_GATEWAY` (a `yarl.URL`) before a client starts.

    `Route.BASE` is read when each `Route` is built, so a client created before this still works;
    `DEFAULT_GATEWAY` is read on (re)connect when no resume URL is known.
    """
    route = discord.http.Route
    ws = discord.gateway.DiscordWebSocket
    old_base, old_gateway = route.BASE, ws.DEFAULT_GATEWAY
    route.BASE = base_url
    ws.DEFAULT_GATEWAY = yarl.URL(gateway_url)
    try:
        yield
    finally:
        route.BASE = old_base
        ws.DEFAULT_GATEWAY = old_gateway
