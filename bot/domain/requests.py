"""Turn what a member typed (prompt text with flags, plus any explicit options) into GenerationParams."""

from __future__ import annotations

import random
from typing import TypeVar

from bot.domain.errors import InvalidRequest
from bot.domain.flags import parse_prompt
from bot.domain.params import GenerationLimits, GenerationParams, build_params

T = TypeVar("T")


def params_from_text(
    text: str,
    *,
    limits: GenerationLimits,
    negative: str | None = None,
    aspect: str | None = None,
    seed: int | None = None,
    steps: int | None = None,
    guidance: float | None = None,
    rng: random.Random | None = None,
) -> GenerationParams:
    """Options and flags may both be used; giving one setting two different values is an error."""
    parsed = parse_prompt(text)
    negatives = [part for part in (negative, *parsed.negative) if part]
    return build_params(
        parsed.prompt,
        limits=limits,
        negative_prompt=", ".join(negatives),
        aspect=_one("aspect", aspect, parsed.aspect),
        seed=_one("seed", seed, parsed.seed),
        steps=_one("steps", steps, parsed.steps),
        guidance=_one("guidance", guidance, parsed.guidance),
        rng=rng,
    )


def _one(name: str, option: T | None, flag: T | None) -> T | None:
    if option is not None and flag is not None and option != flag:
        raise InvalidRequest(
            f"You gave the {name} twice ({option} as an option and {flag} as `--` flag); give it once.",
            field=name,
        )
    return option if option is not None else flag
