"""`imagine-bot doctor`: is this setup ready to run? It reads and never writes.

It shows the settings that matter (secrets masked), then one finding per check, each ok, warning or
failure with what to do: the database reachable and at which migration (pending migrations are a
finding: it never migrates, and a missing SQLite file is never created), IMAGE_DIR writable (tried with
a file that has no name and is gone when closed; the folder is never created) and its free disk, the
token asked of Discord (`GET /users/@me`), the model found as a folder or in the Hugging Face cache
(never downloaded; loaded only with `--load-model`), the device and dtype. Any failure: exit code 1.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import stat
import tempfile
import time
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import aiohttp
from rich.console import Console
from rich.table import Table

from bot.entrypoints.backup import size_words
from bot.runtime.settings import Settings
from bot.store.database import describe_url
from bot.store.errors import StoreUnavailable
from bot.store.revision import DatabaseMissing, read_revision

DISCORD_API = "https://discord.com/api/v10"
WARN_FREE_BYTES = 5 * 10**9  # under this much free disk where IMAGE_DIR is: a warning
FAIL_FREE_BYTES = 1 * 10**9  # under this: a failure (a day of a busy server's images)
SDXL_DOWNLOAD = "about 7 GB for SDXL base in fp16"
# A Hugging Face hub id as the hub spells them: owner/name, at most 96 characters.
HUB_ID = re.compile(r"(?=.{3,96}$)[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*")


class Level(StrEnum):
    OK = "ok"
    WARNING = "warning"
    FAILURE = "failure"


@dataclass(frozen=True)
class Finding:
    """One check's answer: what was found, and what to do about it (nothing when it is ok)."""

    check: str
    level: Level
    result: str
    action: str = ""


async def run_doctor(
    settings: Settings, console: Console, *, load_model: bool = False, discord_api: str | None = None
) -> int:
    """Print the settings and the findings as tables; 1 if any check failed, else 0."""
    out = Console()
    table = Table("setting", "value", title="imagine-bot doctor: settings")
    for name, value in settings_rows(settings):
        table.add_row(name, value)
    out.print(table)
    with console.status("Checking…"):
        findings = await examine(settings, load_model=load_model, discord_api=discord_api)
    table = Table("check", "", "found", "what to do", title="imagine-bot doctor: checks")
    style = {Level.OK: "green", Level.WARNING: "yellow", Level.FAILURE: "red"}
    for finding in findings:
        level = f"[{style[finding.level]}]{finding.level.value}[/]"
        table.add_row(finding.check, level, finding.result, finding.action)
    out.print(table)
    failures = sum(finding.level is Level.FAILURE for finding in findings)
    warnings = sum(finding.level is Level.WARNING for finding in findings)
    console.print(
        f"{failures} failure{'s' if failures != 1 else ''}, {warnings} warning{'s' if warnings != 1 else ''}."
    )
    return 1 if failures else 0


async def examine(
    settings: Settings,
    *,
    load_model: bool = False,
    discord_api: str | None = None,
    hub_cache: Path | None = None,
) -> list[Finding]:
    """Every check, in the order shown."""
    findings = [await check_database(settings.database_url)]
    findings += check_image_dir(settings.image_dir)
    token = settings.discord_token.get_secret_value() if settings.discord_token else None
    findings.append(await check_token(token, api=discord_api))
    model = check_model(settings.model, hub_cache=hub_cache)
    findings.append(model)
    if load_model:
        if model.level is Level.FAILURE:
            findings.append(Finding("model loads", Level.FAILURE, "not tried: the model was not found"))
        else:
            findings.append(await check_model_loads(settings))
    findings.append(check_device(settings.device, settings.dtype))
    return findings


def settings_rows(settings: Settings) -> list[tuple[str, str]]:
    """The settings an operator checks first, by their variable names; secrets masked, and `(default)`
    beside each one the environment does not set."""
    token = settings.discord_token.get_secret_value() if settings.discord_token else ""
    values: dict[str, str] = {
        "discord_token": f"set ({len(token)} characters, hidden)" if token else "not set",
        "discord_guild_id": str(settings.discord_guild_id or "not set: commands sync globally"),
        "database_url": describe_url(settings.database_url),
        "image_dir": f"{settings.image_dir} ({settings.image_dir.expanduser().absolute()})",
        "image_retention_days": (
            f"{settings.image_retention_days}" if settings.image_retention_days else "0: kept forever"
        ),
        "model": settings.model,
        "vae": settings.vae or "the model's own",
        "fast_model": (
            f"{settings.fast_model} ({settings.fast_scheduler}, {settings.fast_steps} steps)"
            if settings.fast_model
            else "not set: no fast mode"
        ),
        "device": settings.device,
        "dtype": settings.dtype,
        "optimize": f"{settings.optimize}, compile {settings.compile}",
        "max_batch_images": str(settings.max_batch_images),
        "batch_profile": str(settings.batch_profile_path() or "none"),
        "safety_model": (
            f"{settings.safety_model} ({settings.safety_mode}, threshold {settings.safety_threshold:g})"
        ),
        "daily_quota": str(settings.daily_quota if settings.daily_quota is not None else "none"),
        "log_level": f"{settings.log_level}{', JSON' if settings.log_json else ''}",
        "metrics_port": (
            f"{settings.metrics_host}:{settings.metrics_port}" if settings.metrics_port else "0: off"
        ),
    }
    given = settings.model_fields_set
    return [
        (name.upper(), value if name in given else f"{value} (default)") for name, value in values.items()
    ]


# --- the database ---------------------------------------------------------------------------------


async def check_database(url: str) -> Finding:
    """Reachable, and at which migration; read-only (nothing migrated, no file created)."""
    where = describe_url(url)
    try:
        schema = await read_revision(url)
    except DatabaseMissing as error:
        return Finding(
            "database",
            Level.WARNING,
            f"{where}: the file {error.path} does not exist yet",
            "`imagine-bot migrate` creates it (the bot also does at its first start)",
        )
    except StoreUnavailable as error:
        return Finding("database", Level.FAILURE, str(error), "check DATABASE_URL, and that the server runs")
    newest = ", ".join(schema.heads)
    current = ", ".join(schema.current) or "no migration yet"
    if schema.unknown:
        return Finding(
            "database",
            Level.FAILURE,
            f"{where}: at revision {current}, which this version does not know (newest here: {newest})",
            "a newer imagine-bot migrated it: run that version, or restore a backup made with this one",
        )
    if schema.pending:
        count = len(schema.pending)
        return Finding(
            "database",
            Level.WARNING,
            f"{where}: at revision {current}; {count} migration{'s' if count != 1 else ''} pending "
            f"({', '.join(schema.pending)})",
            "run `imagine-bot migrate` (the bot also migrates at start)",
        )
    return Finding("database", Level.OK, f"{where}: reachable, at revision {current} (the newest)")


# --- the image folder -----------------------------------------------------------------------------


def check_image_dir(
    image_dir: Path, *, warn_below: int = WARN_FREE_BYTES, fail_below: int = FAIL_FREE_BYTES
) -> list[Finding]:
    """IMAGE_DIR is a folder this user can write (tried, leaving nothing), and its disk's free space."""
    path = image_dir.expanduser()
    owner = "give the bot's user the folder (chown), or set IMAGE_DIR to a folder it owns"
    try:
        mode: int | None = path.stat().st_mode
    except (FileNotFoundError, NotADirectoryError):
        mode = None
    except OSError as error:  # e.g. a parent folder this user may not enter
        folder = Finding(
            "IMAGE_DIR",
            Level.FAILURE,
            f"{path} cannot be reached by this user (uid {os.geteuid()}): {error.strerror or error}",
            owner,
        )
        existing = _nearest_existing(path)
        return [folder, check_free_disk(existing, warn_below=warn_below, fail_below=fail_below)]
    if mode is not None and stat.S_ISDIR(mode):
        problem = _not_writable(path)
        if problem is None:
            folder = Finding("IMAGE_DIR", Level.OK, f"{path}: a folder, writable")
        else:
            folder = Finding(
                "IMAGE_DIR",
                Level.FAILURE,
                f"{path} is not writable by this user (uid {os.geteuid()}): {problem}",
                owner,
            )
        existing = path
    elif mode is not None:
        folder = Finding(
            "IMAGE_DIR", Level.FAILURE, f"{path} is a file, not a folder", "set IMAGE_DIR to a folder"
        )
        existing = path.parent
    else:
        existing = _nearest_existing(path)
        problem = _not_writable(existing)
        if problem is None:
            folder = Finding(
                "IMAGE_DIR",
                Level.WARNING,
                f"{path} does not exist yet; {existing} is writable, so the bot creates it at start",
                f"nothing, or create it now: mkdir -p {path}",
            )
        else:
            folder = Finding(
                "IMAGE_DIR",
                Level.FAILURE,
                f"{path} does not exist, and the bot cannot create it: {existing} is not writable "
                f"({problem})",
                "create the folder for the bot's user, or set IMAGE_DIR to a folder it owns",
            )
    return [folder, check_free_disk(existing, warn_below=warn_below, fail_below=fail_below)]


def check_free_disk(path: Path, *, warn_below: int, fail_below: int) -> Finding:
    try:
        usage = shutil.disk_usage(path)
    except OSError as error:
        return Finding("free disk", Level.WARNING, f"unknown for {path}: {error.strerror or error}")
    found = f"{size_words(usage.free)} free of {size_words(usage.total)} where IMAGE_DIR is"
    advice = "free space, lower IMAGE_RETENTION_DAYS, or run `imagine-bot prune`"
    if usage.free < fail_below:
        return Finding("free disk", Level.FAILURE, f"{found} (under {size_words(fail_below)})", advice)
    if usage.free < warn_below:
        return Finding("free disk", Level.WARNING, f"{found} (under {size_words(warn_below)})", advice)
    return Finding("free disk", Level.OK, found)


def _not_writable(folder: Path) -> str | None:
    """Why this user cannot create a file in `folder`, or None when it can. The file tried has no name
    where the system allows it (O_TMPFILE), else it is removed at once: nothing is left behind."""
    if not os.access(folder, os.W_OK | os.X_OK):
        return "permission denied"
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        return error.strerror or str(error)
    return None


def _nearest_existing(path: Path) -> Path:
    current = path.absolute()
    while not os.path.exists(current) and current != current.parent:  # False, never raising, when unreachable
        current = current.parent
    return current


# --- Discord --------------------------------------------------------------------------------------


async def check_token(token: str | None, *, api: str | None = None, timeout: float = 10.0) -> Finding:  # noqa: ASYNC109
    """Ask Discord who the token belongs to (`GET /users/@me`). No network is a warning: the token may
    be fine; a refusal (401) is a failure."""
    if not token:
        return Finding(
            "DISCORD_TOKEN",
            Level.WARNING,
            "not set: `imagine-bot run` needs it (workers do not)",
            "copy the bot's token from the Developer Portal (Bot → Reset Token) into DISCORD_TOKEN",
        )
    url = f"{(api or DISCORD_API).rstrip('/')}/users/@me"
    headers = {"Authorization": f"Bot {token}", "User-Agent": "DiscordBot (imagine-bot doctor, 1)"}
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session,
            session.get(url, headers=headers) as response,
        ):
            status = response.status
            user = await response.json() if status == 200 else {}
    except ValueError:  # a header aiohttp refuses: a line break or other control character in it
        return Finding(
            "DISCORD_TOKEN",
            Level.FAILURE,
            "holds a character no token has (a line break?)",
            "copy it again from the Developer Portal",
        )
    except (aiohttp.ClientError, TimeoutError) as error:
        reason = str(error) or type(error).__name__
        return Finding(
            "DISCORD_TOKEN",
            Level.WARNING,
            f"not checked: Discord could not be reached ({reason})",
            "check the network (the bot needs discord.com), then run doctor again",
        )
    if status == 401:
        return Finding(
            "DISCORD_TOKEN",
            Level.FAILURE,
            "DISCORD_TOKEN is refused: copy it again from the Developer Portal",
            "Developer Portal → your application → Bot → Reset Token, then set DISCORD_TOKEN",
        )
    if status != 200:
        return Finding(
            "DISCORD_TOKEN", Level.WARNING, f"not checked: Discord answered HTTP {status}", "try again later"
        )
    return Finding(
        "DISCORD_TOKEN", Level.OK, f"accepted: the bot is {user.get('username')} (id {user.get('id')})"
    )


# --- the model and the device ---------------------------------------------------------------------


def check_model(model: str, *, hub_cache: Path | None = None) -> Finding:
    """MODEL is a diffusers folder here, or a hub id (owner/name) in the Hugging Face cache. Nothing is
    downloaded; a hub id not downloaded yet is a warning (the first start downloads it)."""
    path = Path(model).expanduser()
    fix = "set MODEL to a diffusers folder (one with model_index.json) or a hub id, e.g. " + (
        "stabilityai/stable-diffusion-xl-base-1.0"
    )
    if path.is_dir():
        if (path / "model_index.json").is_file():
            return Finding(
                "model", Level.OK, f"the diffusers folder {path} (not loaded: --load-model loads it)"
            )
        return Finding(
            "model",
            Level.FAILURE,
            f"{path} is a folder, but not a diffusers pipeline (no model_index.json)",
            fix,
        )
    if path.exists():
        return Finding("model", Level.FAILURE, f"{path} is a file, not a diffusers folder", fix)
    from huggingface_hub import constants, try_to_load_from_cache

    hub_id = HUB_ID.fullmatch(model) is not None and "--" not in model and ".." not in model
    if hub_id:
        with contextlib.suppress(OSError, ValueError):
            cached = try_to_load_from_cache(model, "model_index.json", cache_dir=hub_cache)
            if isinstance(cached, str):
                return Finding(
                    "model",
                    Level.OK,
                    f"the hub model {model}, in the local cache {hub_cache or constants.HF_HUB_CACHE} "
                    "(not loaded: --load-model loads it)",
                )
    if not hub_id or _looks_like_a_path(model):
        return Finding("model", Level.FAILURE, f"MODEL: the folder {path.absolute()} does not exist", fix)
    cache = hub_cache or constants.HF_HUB_CACHE
    if _offline():
        return Finding(
            "model",
            Level.FAILURE,
            f"the hub model {model} is not in the local cache {cache}, and HF_HUB_OFFLINE is set",
            f"download it once online (`hf download {model}`), or set MODEL to a folder",
        )
    return Finding(
        "model",
        Level.WARNING,
        f"the hub model {model} is not downloaded yet (not in {cache}); no folder {path.absolute()} either",
        f"the first start downloads it ({SDXL_DOWNLOAD}); if MODEL is meant to be a folder, check its "
        "spelling",
    )


async def check_model_loads(settings: Settings) -> Finding:
    """Load the model as the bot does (`--load-model`): minutes for SDXL, and a download if not cached."""
    from bot.runtime.app import make_backend

    started = time.perf_counter()
    try:
        backend = make_backend(settings)
        await asyncio.to_thread(backend.load)
    except Exception as error:
        lines = str(error).strip().splitlines()
        return Finding(
            "model loads",
            Level.FAILURE,
            f"does not load: {lines[0] if lines else type(error).__name__}",
            "run `LOG_LEVEL=DEBUG imagine-bot doctor --load-model` for the whole error",
        )
    return Finding(
        "model loads",
        Level.OK,
        f"loaded in {time.perf_counter() - started:.1f} s; native size {backend.native_resolution} px",
    )


def check_device(device: str, dtype: str) -> Finding:
    """DEVICE and DTYPE as the bot will resolve them (auto: the best accelerator here)."""
    try:
        from inference.device import choose_device, choose_dtype

        chosen = choose_device(device)
        number_format = str(choose_dtype(dtype, chosen)).removeprefix("torch.")
    except (ValueError, RuntimeError) as error:
        return Finding(
            "device", Level.FAILURE, str(error), "set DEVICE (auto, cuda, cuda:N, mps or cpu) and DTYPE"
        )
    found = f"{chosen}, {number_format}"
    if chosen == "cpu" and device == "auto":
        return Finding(
            "device",
            Level.WARNING,
            f"{found}: no GPU found, so images render on the CPU (minutes each at 1024 px)",
            "install the GPU's driver and a CUDA build of torch; DEVICE=cpu says the CPU is meant",
        )
    return Finding("device", Level.OK, found)


def _looks_like_a_path(model: str) -> bool:
    return model.startswith(("/", "./", "../", "~", ".")) or Path(model.split("/", 1)[0]).is_dir()


def _offline() -> bool:
    flags = (os.environ.get(name, "") for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))
    return any(flag.strip().lower() in ("1", "on", "yes", "true") for flag in flags)
