"""The `imagine-bot` command: run the bot, migrate, generate locally, check the setup, prune old images,
make a tiny model, benchmark the renderer."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from bot.domain.errors import ImagineError
from bot.domain.events import JobUpdate
from bot.domain.jobs import JobState
from bot.domain.members import Requester
from bot.domain.requests import refuse_unusable_characters
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
    try:
        settings = load_settings()
    except SettingsError as error:
        console.print(f"[red]{error}[/red]")
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
    }
    try:
        return asyncio.run(handlers[args.command](settings, args))
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="imagine-bot", description=__doc__)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    run = commands.add_parser("run", help="run the Discord bot (needs DISCORD_TOKEN)")
    run.add_argument(
        "--no-worker",
        action="store_true",
        help="only the Discord side: `imagine-bot worker` processes render (needs PostgreSQL)",
    )
    commands.add_parser(
        "worker", help="render jobs from the shared queue, without Discord (needs PostgreSQL)"
    )
    commands.add_parser("migrate", help="upgrade the database to the newest schema")
    generate = commands.add_parser("generate", help="make one 2×2 grid locally, without Discord")
    generate.add_argument("prompt", help='the prompt, flags included: "a lighthouse --ar 3:2 --seed 7"')
    generate.add_argument(
        "--out", type=Path, default=Path("out"), help="folder for the images (default: out)"
    )
    generate.add_argument("--negative", help="what to keep out of the image")
    generate.add_argument("--seed", type=int)
    generate.add_argument("--steps", type=int)
    generate.add_argument("--guidance", type=float)
    commands.add_parser("doctor", help="report settings, database, device and whether the model loads")
    prune = commands.add_parser(
        "prune", help="delete the image files of jobs older than IMAGE_RETENTION_DAYS (the jobs stay)"
    )
    prune.add_argument("--dry-run", action="store_true", help="only say what would be freed; delete nothing")
    prune.add_argument(
        "--days",
        type=_days,
        help="jobs that finished more than this many days ago (default: IMAGE_RETENTION_DAYS; 0: all)",
    )
    tiny = commands.add_parser("make-tiny-model", help="write a tiny random-weight SDXL pipeline folder")
    tiny.add_argument("path", help="folder to write; then run with MODEL=<folder>")
    bench = commands.add_parser(
        "bench", help="images/s of the optimized renderer against plain diffusers, measured in one run"
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
    # The prompt's characters are checked before the model loads. Bytes that are not UTF-8 reach Python as
    # lone surrogates (surrogateescape), which this refuses in one line; the full request is validated by
    # the service below.
    try:
        refuse_unusable_characters(args.prompt, field="prompt")
        if args.negative is not None:
            refuse_unusable_characters(args.negative, field="negative")
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
    size = _size_words(report.bytes) + (f" ({report.bytes:,} bytes)" if report.bytes >= 1000 else "")
    table.add_row("would free" if args.dry_run else "freed", f"{report.jobs:,}", f"{report.files:,}", size)
    Console().print(table)
    if args.dry_run:
        console.print("Dry run: nothing was deleted.")
    return 0


def _size_words(size: int) -> str:
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1000:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} TB"


async def _doctor(settings: Settings, args: argparse.Namespace) -> int:
    from bot.store.database import migrate

    table = Table("check", "result", title="imagine-bot doctor")
    healthy = True
    token = settings.discord_token
    table.add_row(
        "DISCORD_TOKEN", "set" if token and token.get_secret_value() else "[yellow]not set[/yellow]"
    )
    table.add_row("DATABASE_URL", describe_url(settings.database_url))
    table.add_row("MODEL", settings.model)
    table.add_row(
        "FAST_MODEL",
        f"{settings.fast_model} ({settings.fast_scheduler}, {settings.fast_steps} steps)"
        if settings.fast_model
        else "not set: no fast mode",
    )
    try:
        await migrate(settings.database_url)
        table.add_row("database", "reachable, schema up to date")
    except Exception as error:
        healthy = False
        table.add_row("database", f"[red]{error}[/red]")
    try:
        from inference.device import choose_device, choose_dtype

        device = choose_device(settings.device)
        table.add_row(
            "device", f"{device}, {str(choose_dtype(settings.dtype, device)).removeprefix('torch.')}"
        )
    except Exception as error:
        healthy = False
        table.add_row("device", f"[red]{error}[/red]")
    try:
        from bot.runtime.app import make_backend

        started = time.perf_counter()
        backend = make_backend(settings)
        await asyncio.to_thread(backend.load)
        table.add_row(
            "model", f"loads in {time.perf_counter() - started:.1f} s, {backend.native_resolution} px"
        )
    except Exception as error:
        healthy = False
        table.add_row("model", f"[red]does not load: {error}[/red]")
    Console().print(table)
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
