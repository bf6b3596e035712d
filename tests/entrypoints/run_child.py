"""`imagine-bot run` in a process of its own, connected to the fake Discord a test serves.

Usage: python -m tests.entrypoints.run_child REST_BASE_URL GATEWAY_URL [imagine-bot arguments…]

The same `main()` as the `imagine-bot` command (settings from the environment, signals, exit code), with
discord.py pointed at the fake: what `fake.patch_discord()` does inside a test's own process.
"""

from __future__ import annotations

import sys

from bot.entrypoints.cli import main
from fake_discord.patch import patch_discord

if __name__ == "__main__":
    with patch_discord(sys.argv[1], sys.argv[2]):
        sys.exit(main(sys.argv[3:] or ["run"]))
