"""Why discord.py can warn "Can't keep up, websocket is 41 s behind" against the local fake Discord.

Connects a plain `discord.Client` to `fake_discord.FakeDiscord` (heartbeat every `--interval-ms`), with a
second thread idle and then busy, and counts the ACKs whose measured latency is at least half the
interval. The race it shows, and the results: docs/benchmarks.md.

    .venv/bin/python -m benchmarks.heartbeat_race
"""

from __future__ import annotations

import argparse
import asyncio
import threading
from typing import Any

import discord
from rich.console import Console
from rich.table import Table

from benchmarks._common import machine_line
from fake_discord import FakeDiscord

latencies: list[float] = []
_original_ack = discord.gateway.KeepAliveHandler.ack


def _recording_ack(self: Any) -> None:
    _original_ack(self)
    latencies.append(self.latency)


async def measure(interval_ms: int, seconds: float, busy_thread: bool) -> tuple[int, int, float]:
    """(ACKs, ACKs measured at >= half the interval, median measured latency in ms)."""
    latencies.clear()
    stop = threading.Event()

    def burn() -> None:
        while not stop.is_set():
            sum(range(20_000))

    if busy_thread:
        threading.Thread(target=burn, daemon=True).start()
    try:
        async with FakeDiscord(heartbeat_interval_ms=interval_ms) as fake:
            with fake.patch_discord():
                client = discord.Client(intents=discord.Intents.default())
                running = asyncio.create_task(client.start(fake.token))
                await asyncio.sleep(seconds)
                await client.close()
                await asyncio.gather(running, return_exceptions=True)
    finally:
        stop.set()
    measured = sorted(latencies)
    late = sum(latency >= interval_ms / 2000 for latency in measured)
    median = measured[len(measured) // 2] * 1000 if measured else float("nan")
    return len(measured), late, median


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--interval-ms", type=int, default=200, help="heartbeat interval (default 200)")
    parser.add_argument("--seconds", type=float, default=15.0, help="per case (default 15)")
    args = parser.parse_args()
    discord.gateway.KeepAliveHandler.ack = _recording_ack  # type: ignore[method-assign]
    console = Console()
    console.print(f"heartbeat_race · {machine_line()}")
    table = Table(title=f"Heartbeat ACK latency as discord.py measures it, interval {args.interval_ms} ms")
    for column in ("second thread", "ACKs", "measured ≥ half the interval", "median measured ms"):
        table.add_column(column, justify="right")
    for busy in (False, True):
        acks, late, median = await measure(args.interval_ms, args.seconds, busy)
        table.add_row(
            "busy" if busy else "idle", str(acks), f"{late} ({late / max(acks, 1):.0%})", f"{median:.1f}"
        )
    console.print(table)


if __name__ == "__main__":
    asyncio.run(main())
