"""Batch profiles: the measured throughput of each batch size per resolution, and the budgets chosen from it.

`imagine-bot bench --profile-out FILE` measures images/s for each batch size at each (width, height) it is
asked for and writes a profile (JSON, `BatchProfile.to_json`). At start the bot reads it (BATCH_PROFILE)
and turns it into an image budget per size with `image_budgets`: the smallest batch size whose images/s is
within `DEFAULT_TOLERANCE` of the best one measured there. A larger batch than that adds latency (every
job in it waits for the whole batch) for a gain smaller than the measurement's noise. Sizes the profile
does not cover keep MAX_BATCH_IMAGES.

Plain data and code: no file, torch or clock here.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

PROFILE_VERSION = 1
# Within 3% of the best images/s counts as "as fast": repeated runs of `imagine-bot bench` differ by more
# than that, so a larger batch must beat the smaller one by more to earn its extra latency.
DEFAULT_TOLERANCE = 0.03

Size = tuple[int, int]  # (width, height) in pixels


class ProfileError(ValueError):
    """A batch profile that cannot be used; the message says what is wrong with it."""


@dataclass(frozen=True)
class BucketThroughput:
    """images/s for each batch size measured at one (width, height)."""

    width: int
    height: int
    images_per_s: Mapping[int, float]  # batch size → images per second

    @property
    def size(self) -> Size:
        return self.width, self.height


@dataclass(frozen=True)
class BatchProfile:
    device: str  # "cuda:0", "cpu", …
    device_name: str  # "NVIDIA H100 80GB HBM3", the CPU's model name, …
    model: str
    dtype: str
    optimizations: str  # as Optimizations.describe() writes them
    steps: int
    guidance: float
    buckets: tuple[BucketThroughput, ...]

    def describe(self) -> str:
        return (
            f"{self.model} on {self.device_name or self.device} ({self.dtype}, {self.optimizations}), "
            f"{self.steps} steps"
        )

    def to_json(self) -> str:
        data: dict[str, Any] = {
            "version": PROFILE_VERSION,
            "device": self.device,
            "device_name": self.device_name,
            "model": self.model,
            "dtype": self.dtype,
            "optimizations": self.optimizations,
            "steps": self.steps,
            "guidance": self.guidance,
            "buckets": [
                {
                    "width": bucket.width,
                    "height": bucket.height,
                    "images_per_s": {str(size): rate for size, rate in sorted(bucket.images_per_s.items())},
                }
                for bucket in self.buckets
            ],
        }
        return json.dumps(data, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> BatchProfile:
        """Parse a profile; anything malformed raises ProfileError naming the bad part."""
        try:
            data = json.loads(text)
        except ValueError as error:
            raise ProfileError(f"not JSON ({error})") from None
        if not isinstance(data, dict):
            raise ProfileError("not a JSON object")
        if data.get("version") != PROFILE_VERSION:
            raise ProfileError(f"version {data.get('version')!r} is not {PROFILE_VERSION}")
        raw_buckets = data.get("buckets")
        if not isinstance(raw_buckets, list) or not raw_buckets:
            raise ProfileError("it has no buckets")
        buckets = tuple(_bucket(raw, index) for index, raw in enumerate(raw_buckets))
        sizes = [bucket.size for bucket in buckets]
        if len(set(sizes)) != len(sizes):
            raise ProfileError("a bucket is listed twice")
        try:
            steps = int(data.get("steps", 0))
            guidance = float(data.get("guidance", 0.0))
        except (TypeError, ValueError):
            raise ProfileError("steps or guidance is not a number") from None
        return cls(
            device=str(data.get("device", "")),
            device_name=str(data.get("device_name", "")),
            model=str(data.get("model", "")),
            dtype=str(data.get("dtype", "")),
            optimizations=str(data.get("optimizations", "")),
            steps=steps,
            guidance=guidance,
            buckets=buckets,
        )


def _bucket(raw: object, index: int) -> BucketThroughput:
    where = f"bucket {index + 1}"
    if not isinstance(raw, dict):
        raise ProfileError(f"{where} is not an object")
    width, height = raw.get("width"), raw.get("height")
    if not (isinstance(width, int) and isinstance(height, int) and width > 0 and height > 0):
        raise ProfileError(f"{where} needs a positive integer width and height")
    rates = raw.get("images_per_s")
    if not isinstance(rates, dict) or not rates:
        raise ProfileError(f"{where} ({width}x{height}) has no images_per_s")
    parsed: dict[int, float] = {}
    where = f"{where} ({width}x{height})"
    for size_text, rate in rates.items():
        try:
            size = int(size_text)
        except ValueError:
            raise ProfileError(f"{where}: batch size {size_text!r} is not a number") from None
        if size < 1:
            raise ProfileError(f"{where}: batch size {size} is not positive")
        number = isinstance(rate, int | float) and not isinstance(rate, bool)
        if not number or not math.isfinite(rate) or rate <= 0:
            raise ProfileError(f"{where}: images/s {rate!r} for batch {size} is not a positive number")
        parsed[size] = float(rate)
    return BucketThroughput(width, height, parsed)


def choose_batch_size(images_per_s: Mapping[int, float], tolerance: float = DEFAULT_TOLERANCE) -> int:
    """The smallest batch size whose images/s is at least (1 - tolerance) × the best measured."""
    if not images_per_s:
        raise ValueError("No batch sizes were measured.")
    if not 0 <= tolerance < 1:
        raise ValueError(f"Tolerance must be in [0, 1); got {tolerance}.")
    best = max(images_per_s.values())
    return min(size for size, rate in images_per_s.items() if rate >= best * (1 - tolerance))


def image_budgets(profile: BatchProfile, tolerance: float = DEFAULT_TOLERANCE) -> dict[Size, int]:
    """Images per pipeline call for each measured (width, height); unmeasured sizes are left out."""
    return {bucket.size: choose_batch_size(bucket.images_per_s, tolerance) for bucket in profile.buckets}


def parse_sizes(text: str) -> tuple[Size, ...]:
    """ "1024x1024, 1344x768" → ((1024, 1024), (1344, 768)); `×` works as well as `x`."""
    sizes: list[Size] = []
    for part in text.split(","):
        item = part.strip().lower().replace("×", "x")
        if not item:
            continue
        match = re.fullmatch(r"([0-9]{1,5})x([0-9]{1,5})", item)
        if match is None:
            raise ValueError(f"{part.strip()!r} is not a size; write WIDTHxHEIGHT, for example 1024x1024.")
        size = (int(match[1]), int(match[2]))
        if min(size) < 1:
            raise ValueError(f"{part.strip()!r} has a zero side.")
        if size not in sizes:
            sizes.append(size)
    if not sizes:
        raise ValueError(f"{text!r} lists no size; write WIDTHxHEIGHT, for example 1024x1024.")
    return tuple(sizes)
