"""Turn what a member typed (prompt text with flags, plus any explicit options) into GenerationParams."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TypeVar

from bot.domain.errors import InvalidRequest
from bot.domain.flags import parse_prompt
from bot.domain.jobs import ModelKind
from bot.domain.params import GenerationLimits, GenerationParams, build_params
from bot.domain.text import describe_unusable, unusable_character

T = TypeVar("T")

FAST_UNAVAILABLE = (
    "Fast mode isn't set up on this bot, so `--fast` can't be used here. "
    "Leave it out and I'll use the full model."
)


@dataclass(frozen=True)
class ImagineRequest:
    """What to render, and with which model."""

    params: GenerationParams
    model: ModelKind


def request_from_text(
    text: str,
    *,
    limits: GenerationLimits,
    fast_limits: GenerationLimits | None = None,
    fast_by_default: bool = False,
    fast: bool | None = None,
    negative: str | None = None,
    aspect: str | None = None,
    seed: int | None = None,
    steps: int | None = None,
    guidance: float | None = None,
    rng: random.Random | None = None,
) -> ImagineRequest:
    """Choose the model, then validate the params against that model's limits.

    Options and flags may both be used; giving one setting two different values is an error.

    The model: `--fast` / `--quality` (or the `fast` option) if given, else the server's default.
    `fast_limits` is None when no fast model is configured: asking for it is then refused, and a server
    default of fast is ignored (members still get images, from the full model).

    Text holding a character no prompt may (`refuse_unusable_characters`) is refused before anything else.
    """
    refuse_unusable_characters(text, field="prompt")
    if negative is not None:
        refuse_unusable_characters(negative, field="negative")
    if aspect is not None:
        refuse_unusable_characters(aspect, field="aspect")
    parsed = parse_prompt(text)
    if fast is not None and parsed.fast is not None and fast != parsed.fast:
        flag = "--fast" if parsed.fast else "--quality"
        raise InvalidRequest(
            f"The `fast` option says {'yes' if fast else 'no'} but the prompt says `{flag}`; give one.",
            field="fast",
        )
    wanted = fast if fast is not None else parsed.fast
    if wanted and fast_limits is None:
        raise InvalidRequest(FAST_UNAVAILABLE, field="fast")
    use_fast = fast_limits is not None and (wanted if wanted is not None else fast_by_default)
    negatives = [part for part in (negative, *parsed.negative) if part]
    try:
        params = build_params(
            parsed.prompt,
            limits=fast_limits if use_fast and fast_limits is not None else limits,
            negative_prompt=", ".join(negatives),
            aspect=_one("aspect", aspect, parsed.aspect),
            seed=_one("seed", seed, parsed.seed),
            steps=_one("steps", steps, parsed.steps),
            guidance=_one("guidance", guidance, parsed.guidance),
            rng=rng,
        )
    except InvalidRequest as error:
        if use_fast and error.field in ("steps", "guidance"):
            hint = "That is fast mode's range; add `--quality` to use the full model."
            raise InvalidRequest(f"{error} {hint}", field=error.field) from None
        raise
    return ImagineRequest(params, ModelKind.FAST if use_fast else ModelKind.DEFAULT)


_FIELD_NAMES = {"prompt": "Your prompt", "negative": "Your negative prompt", "aspect": "The aspect ratio"}


def refuse_unusable_characters(text: str, *, field: str) -> None:
    """Raise InvalidRequest naming `field` when `text` holds a control character (other than tab and
    newlines), a lone surrogate or a non-character (bot/domain/text.py): no database stores every one of
    them (PostgreSQL refuses NUL), and no member means to type one. Every path that makes a job from text
    (Discord, the command line) comes through here first."""
    char = unusable_character(text)
    if char is not None:
        name = _FIELD_NAMES.get(field, f"The {field}")
        raise InvalidRequest(
            f"{name} contains {describe_unusable(char)}; please type it again without it.", field=field
        )


def _one(name: str, option: T | None, flag: T | None) -> T | None:
    if option is not None and flag is not None and option != flag:
        raise InvalidRequest(
            f"You gave the {name} twice ({option} as an option and {flag} as `--` flag); give it once.",
            field=name,
        )
    return option if option is not None else flag
