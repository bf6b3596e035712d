"""Start-up failures as one line that names the setting and says what to do; the traceback only at DEBUG.

A broken setup (the database unreachable, refused or missing, a refused Discord login, a missing model
folder, an unwritable IMAGE_DIR) ends the command with exit code 2 and one such line. Anything else that
stops a command is one line too (exit code 1); LOG_LEVEL=DEBUG logs where it happened.
"""

from __future__ import annotations

import logging
from pathlib import Path

from rich.console import Console

from bot.runtime.settings import DEFAULT_MODEL, Settings, SettingsError
from bot.store import StoreUnavailable

log = logging.getLogger(__name__)

SETUP_FAILED = 2  # the exit code of a start-up failure an operator fixes in the settings
UNEXPECTED = 1


def say(console: Console, line: str) -> None:
    """Print one line in red: never wrapped at the terminal's width, brackets in it taken as text."""
    console.print(line, style="red", markup=False, highlight=False, soft_wrap=True)


def report(console: Console, error: Exception) -> int:
    """Say why a command stopped, in one line, and return its exit code; the traceback goes to the log at
    DEBUG only."""
    log.debug("where it failed", exc_info=error)
    if isinstance(error, SettingsError | StoreUnavailable):
        say(console, str(error))
        return SETUP_FAILED
    say(
        console,
        f"Stopped by an unexpected error: {type(error).__name__}: {first_line(error)} "
        "(LOG_LEVEL=DEBUG shows where).",
    )
    return UNEXPECTED


def first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0].strip() if lines else type(error).__name__


def check_model_folder(settings: Settings) -> None:
    """A MODEL that is plainly a path (absolute, ./ or ~) must be a diffusers pipeline folder: said now, in
    one line, rather than as a hub error about an invalid repository id once loading starts."""
    model = settings.model
    if not model.startswith(("/", "./", "../", "~")):
        return  # a hub id (owner/name), or a relative folder diffusers looks for first
    folder = Path(model).expanduser()
    if not folder.is_dir():
        raise SettingsError(
            f"Setting MODEL is invalid: the folder {folder} does not exist; set MODEL to a diffusers "
            f"pipeline folder (one with model_index.json) or a hub id such as {DEFAULT_MODEL}."
        )
    if not (folder / "model_index.json").is_file():
        raise SettingsError(
            f"Setting MODEL is invalid: {folder} is not a diffusers pipeline folder (no model_index.json); "
            f"set MODEL to one (e.g. from `imagine-bot make-tiny-model`) or a hub id such as {DEFAULT_MODEL}."
        )


def model_failure(settings: Settings, error: BaseException) -> SettingsError:
    """The model (or the fast model, the safety classifier or the warm-up) failed to load: one line naming
    the settings involved."""
    named = [f"MODEL={settings.model}"]
    if settings.fast_model:
        named.append(f"FAST_MODEL={settings.fast_model}")
    if settings.safety_model.strip().lower() != "off":
        named.append(f"SAFETY_MODEL={settings.safety_model}")
    return SettingsError(
        f"The model did not load ({type(error).__name__}: {first_line(error)}): check {', '.join(named)} "
        "(a diffusers folder or a hub id; LOG_LEVEL=DEBUG shows where it failed)."
    )
