"""`python -m bot`: run the Discord bot (the same as `imagine-bot run`); other commands as arguments."""

from __future__ import annotations

import sys

from bot.entrypoints.cli import main

sys.exit(main(sys.argv[1:] or ["run"]))
