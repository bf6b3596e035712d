"""Builders for test data."""

from __future__ import annotations

from typing import Any

from PIL import Image

from bot.domain.jobs import IMAGES_PER_JOB, JobKind, JobSpec
from bot.domain.params import GenerationParams


def make_params(**overrides: Any) -> GenerationParams:
    values: dict[str, Any] = {
        "prompt": "a lighthouse at dusk, oil painting",
        "negative_prompt": "blurry",
        "width": 1024,
        "height": 1024,
        "steps": 30,
        "guidance": 6.0,
        "seed": 2**32 - 1,
        "aspect": "1:1",
    }
    values.update(overrides)
    return GenerationParams(**values)


def make_spec(
    kind: JobKind = JobKind.GENERATE, user_id: int = 2**63 - 1, guild_id: int | None = 2**62, **overrides: Any
) -> JobSpec:
    values: dict[str, Any] = {"channel_id": 2**61 + 5, "params": make_params()}
    values.update(overrides)
    return JobSpec(kind=kind, user_id=user_id, guild_id=guild_id, **values)


def make_images(kind: JobKind = JobKind.GENERATE, size: tuple[int, int] = (16, 12)) -> list[Image.Image]:
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)]
    return [Image.new("RGB", size, colours[i]) for i in range(IMAGES_PER_JOB[kind])]
