"""Run `imagine-bot` (or a test's child script) as a real process, as an operator or systemd would.

The child runs in a folder of the test's own, so no `.env` from the checkout is read; its settings are the
environment the test gives (on top of this process's, less any imagine-bot setting the test run carries).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Settings a developer's shell may carry that would change what a child does.
_CLEARED = ("DATABASE_URL", "IMAGE_DIR", "MODEL", "DISCORD_TOKEN", "LOG_LEVEL", "LOG_JSON", "STOP_TIMEOUT")


def child_env(settings: Mapping[str, str]) -> dict[str, str]:
    """This process's environment without imagine-bot settings, plus `settings`; the metrics server off
    unless the test asks for it, and the repository importable (for `python -m tests…`)."""
    env = {key: value for key, value in os.environ.items() if key not in _CLEARED}
    env.update({"METRICS_PORT": "0", "SAFETY_MODEL": "off", "PYTHONPATH": str(ROOT)})
    # One torch thread: two OpenMP threads on a machine the test run already keeps busy spin against each
    # other, and a render of seconds takes a minute.
    env.setdefault("OMP_NUM_THREADS", "1")
    env.update(settings)
    return env


def start(args: list[str], settings: Mapping[str, str], cwd: Path) -> subprocess.Popen[str]:
    """`python ARGS…` (e.g. `-m bot migrate`) with `settings` in its environment, output captured."""
    return subprocess.Popen(
        [sys.executable, *args],
        cwd=cwd,
        env=child_env(settings),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def run_bot_command(
    args: list[str], settings: Mapping[str, str], cwd: Path, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """`python -m bot ARGS…` to the end."""
    return subprocess.run(
        [sys.executable, "-m", "bot", *args],
        cwd=cwd,
        env=child_env(settings),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
