"""Generation parameters: validation, defaults and SDXL size buckets."""

from __future__ import annotations

import random

import pytest

from bot.domain.errors import InvalidRequest
from bot.domain.params import MAX_SEED, AspectRatio, GenerationLimits, build_params
from bot.domain.requests import request_from_text

LIMITS = GenerationLimits()


@pytest.mark.parametrize(
    ("ratio", "size"),
    [
        ("1:1", (1024, 1024)),
        ("16:9", (1344, 768)),
        ("9:16", (768, 1344)),
        ("3:2", (1216, 832)),
        ("4:3", (1152, 896)),
        ("21:9", (1536, 640)),
        ("3:1", (1536, 640)),
    ],
)
def test_aspect_ratio_snaps_to_trained_bucket(ratio: str, size: tuple[int, int]) -> None:
    """Each ratio becomes the nearest SDXL training bucket."""
    assert AspectRatio.parse(ratio).bucket() == size


def test_buckets_scale_to_smaller_models() -> None:
    """A 64-pixel model gets buckets scaled down, sides multiples of 16."""
    width, height = AspectRatio.parse("16:9").bucket(64)
    assert (width, height) == (80, 48)
    assert AspectRatio.parse("1:1").bucket(64) == (64, 64)


@pytest.mark.parametrize("text", ["wide", "16:0", "4:1", "1:5", "1:2:3", "-1:2"])
def test_bad_aspect_ratios_are_refused(text: str) -> None:
    """Malformed, zero or too extreme ratios raise InvalidRequest naming the field."""
    with pytest.raises(InvalidRequest) as caught:
        AspectRatio.parse(text)
    assert caught.value.field == "aspect"


def test_defaults_fill_in() -> None:
    """Missing steps, guidance and seed take the limits' defaults and a random seed."""
    params = build_params("a cat", limits=LIMITS, rng=random.Random(1))
    assert (params.width, params.height, params.steps, params.guidance) == (1024, 1024, 30, 6.0)
    assert 0 <= params.seed <= MAX_SEED
    assert params == build_params("a cat", limits=LIMITS, rng=random.Random(1))


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"prompt": "   "}, "prompt"),
        ({"prompt": "x" * 1501}, "prompt"),
        ({"negative_prompt": "y" * 1001}, "negative"),
        ({"steps": 0}, "steps"),
        ({"steps": 61}, "steps"),
        ({"guidance": -1.0}, "guidance"),
        ({"guidance": float("nan")}, "guidance"),
        ({"seed": MAX_SEED + 1}, "seed"),
        ({"seed": -1}, "seed"),
    ],
)
def test_out_of_range_values_are_refused(kwargs: dict[str, object], field: str) -> None:
    """Every bound is checked, and the error says which field and what is allowed."""
    prompt = str(kwargs.pop("prompt", "a cat"))
    with pytest.raises(InvalidRequest) as caught:
        build_params(prompt, limits=LIMITS, **kwargs)  # type: ignore[arg-type]
    assert caught.value.field == field


def test_image_seeds_are_consecutive_and_wrap() -> None:
    """A job's four images use seed, seed+1, ... wrapping at 2^32."""
    params = build_params("a cat", limits=LIMITS, seed=MAX_SEED - 1)
    assert params.image_seeds(4) == (MAX_SEED - 1, MAX_SEED, 0, 1)


def test_flags_and_options_merge() -> None:
    """Flags and options combine; negatives join; the same value twice is fine."""
    params = request_from_text(
        "a fox --ar 2:3 --seed 5 --no blur", limits=LIMITS, negative="text", seed=5, steps=20
    ).params
    assert (params.prompt, params.width, params.height) == ("a fox", 832, 1216)
    assert (params.seed, params.steps, params.negative_prompt) == (5, 20, "text, blur")


def test_conflicting_option_and_flag_is_an_error() -> None:
    """A seed given as option and as a different --seed flag is refused, naming both."""
    with pytest.raises(InvalidRequest, match="seed twice"):
        request_from_text("a fox --seed 5", limits=LIMITS, seed=6)
