"""The `imagine-bot` command: run the bot, migrate, generate locally, check the setup, prune old images,
back up and restore, make a tiny model, benchmark the renderer."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from bot.domain.errors import ImagineError
from bot.domain.events import JobUpdate
from bot.domain.jobs import JobState
from bot.domain.members import Requester
from bot.domain.params import GenerationLimits
from bot.domain.requests import request_from_text
from bot.runtime.logs import configure_logging
from bot.runtime.settings import Settings, SettingsError, load_settings
from bot.store.database import describe_url

console = Console(stderr=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    if args.command == "make-tiny-model":
        return _make_tiny_model(Path(args.path))
    if args.command == "bench":
        return _bench(args)
    from bot.runtime.failures import report, say

    try:
        settings = load_settings()
    except SettingsError as error:
        say(console, str(error))
        return 2
    token = settings.discord_token.get_secret_value() if settings.discord_token else ""
    configure_logging(settings.log_level, json=settings.log_json, secrets=[token])
    handlers = {
        "run": _run,
        "worker": _worker,
        "migrate": _migrate,
        "generate": _generate,
        "doctor": _doctor,
        "prune": _prune,
        "backup": _backup,
        "restore": _restore,
    }
    try:
        return asyncio.run(handlers[args.command](settings, args))
    except KeyboardInterrupt:
        return 130
    except Exception as error:  # one line that says what to fix (exit 2) or what broke (1): runtime.failures
        return report(console, error)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="imagine-bot", description=__doc__)
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {_version()}", help="print the version and exit"
    )
    commands = parser.add_subparsers(
        dest="command", metavar="COMMAND", help="one of these (`imagine-bot COMMAND --help` for its options):"
    )

    def command(name: str, summary: str, description: str) -> argparse.ArgumentParser:
        return commands.add_parser(name, help=summary, description=description)

    run = command(
        "run",
        "run the Discord bot (needs DISCORD_TOKEN)",
        "Run the Discord bot: it migrates the database, loads the model and renders the jobs itself, "
        "unless --no-worker. Needs DISCORD_TOKEN; every setting is an environment variable (.env.example).",
    )
    run.add_argument(
        "--no-worker",
        action="store_true",
        help="only the Discord side: `imagine-bot worker` processes render (needs PostgreSQL)",
    )
    command(
        "worker",
        "render jobs from the shared queue, without Discord (needs PostgreSQL)",
        "Render jobs from the queue that every process shares on PostgreSQL, without Discord: start any "
        "number beside one `imagine-bot run --no-worker`. Give each a unique WORKER_NAME.",
    )
    command(
        "migrate",
        "upgrade the database to the newest schema",
        "Upgrade the database at DATABASE_URL to the newest schema (the bot also does this at start). "
        "A SQLite file that does not exist is created.",
    )
    generate = command(
        "generate",
        "make one 2×2 grid locally, without Discord",
        "Make one 2×2 grid locally, through the same store and scheduler the bot uses, and write the grid "
        "and its four images. The prompt is checked before the model loads.",
    )
    generate.add_argument("prompt", help='the prompt, flags included: "a lighthouse --ar 3:2 --seed 7"')
    generate.add_argument(
        "--out", type=Path, default=Path("out"), help="folder for the images (default: out)"
    )
    generate.add_argument("--negative", help="what to keep out of the image")
    generate.add_argument(
        "--seed", type=int, help="seed of the first image; the others use seed+1… (0–4294967295)"
    )
    generate.add_argument(
        "--steps", type=int, help="denoising steps (default: DEFAULT_STEPS; at most MAX_STEPS)"
    )
    generate.add_argument(
        "--guidance", type=float, help="classifier-free guidance (default: DEFAULT_GUIDANCE)"
    )
    doctor = command(
        "doctor",
        "check the setup: settings, database, IMAGE_DIR, token, model, device; changes nothing",
        "Check the setup and change nothing: the settings (secrets hidden), the database and its "
        "migrations (none run), IMAGE_DIR writable and its free disk, the token with Discord, the model "
        "(found, not downloaded), the device and dtype. Each finding is ok, a warning or a failure with "
        "what to do; any failure exits 1.",
    )
    doctor.add_argument(
        "--load-model",
        action="store_true",
        help="also load the model, as the bot does (minutes for SDXL; downloads a hub model not yet cached)",
    )
    prune = command(
        "prune",
        "delete the image files of jobs older than IMAGE_RETENTION_DAYS (the jobs stay)",
        "Delete the image files of jobs that finished more than IMAGE_RETENTION_DAYS days ago and mark "
        "the jobs expired; the jobs stay. Safe beside a running bot.",
    )
    prune.add_argument("--dry-run", action="store_true", help="only say what would be freed; delete nothing")
    prune.add_argument(
        "--days",
        type=_days,
        help="jobs that finished more than this many days ago (default: IMAGE_RETENTION_DAYS; 0: all)",
    )
    backup = command(
        "backup",
        "copy the database (SQLite) and the images into a new folder",
        "Write a backup into DIR (new or empty): a consistent copy of the SQLite database, safe while the "
        "bot runs, and the image files. On PostgreSQL it copies the images and prints the pg_dump command "
        "for the database.",
    )
    backup.add_argument("dir", type=Path, help="the folder to write the backup into (new or empty)")
    restore = command(
        "restore",
        "put a backup's database and images back",
        "Restore a backup written by `imagine-bot backup`: the database (SQLite; the pg_restore command "
        "on PostgreSQL) and the image files. Stop the bot first. It refuses to overwrite a database or "
        "image folder that holds anything, unless --force.",
    )
    restore.add_argument("dir", type=Path, help="the backup folder")
    restore.add_argument(
        "--force", action="store_true", help="overwrite the database and image files that are there"
    )
    tiny = command(
        "make-tiny-model",
        "write a tiny random-weight SDXL pipeline folder",
        "Write a tiny random-weight SDXL pipeline folder (64 px, renders in a second on a CPU) that "
        "MODEL=PATH loads, with a tiny fast UNet and LoRA beside it: for trying the bot without a GPU.",
    )
    tiny.add_argument("path", help="folder to write; then run with MODEL=<folder>")
    bench = command(
        "bench",
        "images/s of the optimized renderer against plain diffusers, measured in one run",
        "Measure images/s of the optimized renderer against plain diffusers in one run, per batch size "
        "and image size; --profile-out writes the batch profile the bot reads at start.",
    )
    bench.add_argument(
        "--model",
        default="tiny",
        help="tiny (default, runs anywhere), sdxl-random (real SDXL architecture, random weights, CUDA "
        "only) or a diffusers folder / hub id",
    )
    bench.add_argument("--device", default="auto", help="auto, cuda, cuda:N, mps or cpu (default: auto)")
    bench.add_argument("--batch-sizes", default="1,2,4,8", help="images per call (default: 1,2,4,8)")
    bench.add_argument("--steps", type=int, default=30, help="denoising steps (default: 30)")
    bench.add_argument("--size", type=int, help="square image side in pixels (default: the model's native)")
    bench.add_argument(
        "--buckets",
        help="sizes to measure, e.g. 1024x1024,1344x768, or `all`: every aspect-ratio bucket and its upscale "
        "double (default: the model's native square)",
    )
    bench.add_argument(
        "--profile-out",
        type=Path,
        help="write the optimized images/s per size and batch size to this batch profile (JSON), which the "
        "bot reads at start (BATCH_PROFILE; default file data/batch-profile.json)",
    )
    bench.add_argument(
        "--no-plain", action="store_true", help="measure only the optimized renderer (enough for a profile)"
    )
    bench.add_argument(
        "--compile",
        choices=("auto", "on", "off"),
        default="auto",
        help="torch.compile in the optimized renderer (default auto: on CUDA only); match the bot's COMPILE",
    )
    bench.add_argument("--repeats", type=int, default=2, help="timed calls per batch size (default: 2)")
    bench.add_argument(
        "--peak-tflops", type=float, default=790.0, help="the GPU's dense bf16 TFLOP/s for MFU (H100: 790)"
    )
    return parser


def _make_tiny_model(path: Path) -> int:
    from inference.tiny import FAST_UNET_FILE, make_tiny_model

    make_tiny_model(path)
    console.print(
        f"Wrote a tiny random-weight SDXL pipeline to {path}. Try: MODEL={path} imagine-bot generate …\n"
        f"With FAST_MODEL={path / FAST_UNET_FILE} too, `--fast` in a prompt uses its tiny fast UNet."
    )
    return 0


def _bench(args: argparse.Namespace) -> int:
    from bot.domain.batch_profile import DEFAULT_TOLERANCE, image_budgets
    from inference.bench import (
        COLUMNS,
        BenchConfig,
        format_size,
        parse_batch_sizes,
        run_bench,
        table_rows,
        write_profile,
    )

    try:
        config = BenchConfig(
            model=args.model,
            device=args.device,
            batch_sizes=parse_batch_sizes(args.batch_sizes),
            steps=args.steps,
            size=args.size,
            repeats=args.repeats,
            peak_tflops=args.peak_tflops,
            buckets=args.buckets,
            plain=not args.no_plain,
            compile=args.compile,
        )
        with console.status("Benchmarking…") as status:
            result = run_bench(config, report=lambda line: status.update(f"Benchmarking… {line}"))
    except ValueError as error:
        console.print(f"[red]{error}[/red]")
        return 2
    sizes = ", ".join(format_size(size) for size in result.sizes)
    title = (
        f"imagine-bot bench: {result.model} on {result.device} ({result.device_name}), {sizes}, "
        f"{result.steps} steps, CFG"
    )
    table = Table(*COLUMNS, title=title)
    for row in table_rows(result):
        table.add_row(*row)
    Console().print(table)
    if args.profile_out is not None:
        try:
            write_profile(result, args.profile_out)
        except OSError as error:
            console.print(f"[red]Could not write {args.profile_out}: {error.strerror or error}[/red]")
            return 1
        budgets = ", ".join(
            f"{format_size(size)}: {images}" for size, images in image_budgets(result.profile()).items()
        )
        console.print(
            f"Wrote the batch profile {args.profile_out}; budgets (images per call, within "
            f"{DEFAULT_TOLERANCE:.0%} of the best images/s): {budgets}. The bot reads it at start from "
            f"BATCH_PROFILE (default data/batch-profile.json)."
        )
    return 0


async def _run(settings: Settings, args: argparse.Namespace) -> int:
    from bot.discord_app.runner import run_bot

    return await run_bot(settings, console, render=not args.no_worker)


async def _worker(settings: Settings, args: argparse.Namespace) -> int:
    from bot.entrypoints.worker import run_worker

    return await run_worker(settings, console)


async def _migrate(settings: Settings, args: argparse.Namespace) -> int:
    from bot.store.database import migrate

    await migrate(settings.database_url)
    console.print(f"Database is up to date: {describe_url(settings.database_url)}")
    return 0


async def _generate(settings: Settings, args: argparse.Namespace) -> int:
    # Everything that can be refused is refused before the model loads (seconds to minutes), in one line:
    # an --out that is a file, and the whole request (characters, flags, aspect, steps, guidance, seed)
    # against the settings' limits. Bytes that are not UTF-8 reach Python as lone surrogates
    # (surrogateescape), which request_from_text refuses too. The service checks the request again.
    blocking = _file_in_the_way(args.out)
    if blocking is not None:
        where = "" if blocking == args.out else f": {blocking}"
        message = f"--out {args.out}{where} is a file: give a folder for the images."
        console.print(message, style="red", markup=False, soft_wrap=True)
        return 2
    try:
        _check_request(settings, args)
    except ImagineError as error:
        console.print(str(error), style="red", markup=False, soft_wrap=True)
        return 2

    from bot.runtime.app import ImagineApp
    from bot.utils.imaging import compose_grid

    with console.status("Loading the model…"):
        try:
            app = await ImagineApp.start(settings)
        except SettingsError as error:
            console.print(f"[red]{error}[/red]")
            return 2
    try:
        try:
            job = await app.service.imagine(
                Requester.local(),
                args.prompt,
                negative=args.negative,
                seed=args.seed,
                steps=args.steps,
                guidance=args.guidance,
            )
        except ImagineError as error:
            console.print(f"[red]{error}[/red]")
            return 2
        params = job.spec.params
        console.print(
            f"Job #{job.id}: {params.width}×{params.height}, {params.steps} steps, "
            f"guidance {params.guidance:g}, seed {params.seed}"
        )
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total}"),
            TimeElapsedColumn(),
            console=console,
        ) as progress:
            bar = progress.add_task("queued", total=params.steps)

            def show(update: JobUpdate) -> None:
                if update.job_id == job.id and update.total_steps:
                    progress.update(
                        bar, description="generating", completed=update.step, total=update.total_steps
                    )

            app.results.follow(show)
            finished = await app.results.wait_finished(job.id)
        if finished.state is not JobState.SUCCEEDED:
            console.print(f"[red]Job #{job.id} {finished.state.value}: {finished.error}[/red]")
            return 1
        args.out.mkdir(parents=True, exist_ok=True)
        images = await app.results.images(job.id)
        for index, image in enumerate(images):
            image.save(args.out / f"{job.id}-{index + 1}.png")
        compose_grid(images).save(args.out / f"{job.id}-grid.png")
        console.print(f"Wrote {args.out}/{job.id}-grid.png and {len(images)} images (seeds {params.seed}…).")
        return 0
    finally:
        await app.close()


def _file_in_the_way(folder: Path) -> Path | None:
    """The file that keeps `folder` from being made: itself, or the nearest existing parent of it."""
    existing = next((path for path in (folder, *folder.parents) if path.exists()), None)
    return existing if existing is not None and not existing.is_dir() else None


def _check_request(settings: Settings, args: argparse.Namespace) -> None:
    """Validate the request as the service will, before any model is loaded. The model's native size is
    not known yet, so sizes are reckoned at BASE_RESOLUTION or SDXL's 1024 px: only the size chosen
    depends on it, never whether a request is accepted."""
    native = settings.base_resolution or GenerationLimits().base_resolution
    request_from_text(
        args.prompt,
        limits=settings.generation_limits(native),
        fast_limits=settings.fast_generation_limits(native),
        negative=args.negative,
        seed=args.seed,
        steps=args.steps,
        guidance=args.guidance,
    )


def _days(text: str) -> int:
    try:
        days = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of days") from None
    if days < 0:
        raise argparse.ArgumentTypeError(f"{days} days: give 0 or more")
    return days


async def _prune(settings: Settings, args: argparse.Namespace) -> int:
    """Delete (or with --dry-run, count) the image files of old jobs, and show what that frees."""
    from bot.domain.clock import SystemClock
    from bot.services.retention import RetentionService
    from bot.store import Stores, StoreUnavailable

    days = settings.image_retention_days if args.days is None else args.days
    if args.days is None and days == 0:
        console.print(
            "IMAGE_RETENTION_DAYS is 0: images are kept forever, so nothing is pruned. "
            "`imagine-bot prune --days N` prunes by hand."
        )
        return 0
    clock = SystemClock()
    try:
        stores = await Stores.open(settings.database_url, settings.image_dir, clock)
    except StoreUnavailable as error:
        console.print(f"[red]{error}[/red]")
        return 2
    async with stores:
        retention = RetentionService(stores.removals, clock, retention_days=settings.image_retention_days)
        with console.status("Looking for old images…" if args.dry_run else "Deleting old images…"):
            report = await retention.prune(days, dry_run=args.dry_run)
    since = f"more than {days} day{'s' if days != 1 else ''} ago" if days else "up to now"
    console.print(
        f"Images of jobs that finished {since} (before {report.cutoff:%Y-%m-%d %H:%M} UTC):", soft_wrap=True
    )
    table = Table(
        "", "jobs", "files", "size", title=f"imagine-bot prune{' --dry-run' if args.dry_run else ''}"
    )
    from bot.entrypoints.backup import size_words

    size = size_words(report.bytes) + (f" ({report.bytes:,} bytes)" if report.bytes >= 1000 else "")
    table.add_row("would free" if args.dry_run else "freed", f"{report.jobs:,}", f"{report.files:,}", size)
    Console().print(table)
    if args.dry_run:
        console.print("Dry run: nothing was deleted.")
    return 0


async def _doctor(settings: Settings, args: argparse.Namespace) -> int:
    from bot.entrypoints.doctor import run_doctor

    return await run_doctor(settings, console, load_model=args.load_model)


async def _backup(settings: Settings, args: argparse.Namespace) -> int:
    from bot.entrypoints.backup import backup

    return await backup(settings, args.dir, console, version=_version())


async def _restore(settings: Settings, args: argparse.Namespace) -> int:
    from bot.entrypoints.backup import restore

    return await restore(settings, args.dir, console, force=args.force)


def _version() -> str:
    """The installed package's version (pyproject.toml's, when installed from this checkout)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("imagine-bot")
    except PackageNotFoundError:
        return "unknown (not installed)"


if __name__ == "__main__":
    sys.exit(main())
