"""Midjourney-style flags inside a prompt: `a lighthouse --ar 16:9 --seed 42 --no text, people`."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from bot.domain.errors import InvalidRequest

# Phones turn "--" into an en or em dash; people mean the flag, so accept those too.
_FLAG = re.compile(r"(?:^|\s)(?:--|—|–)([A-Za-z][\w-]*)")

_ALIASES = {
    "ar": "aspect",
    "aspect": "aspect",
    "seed": "seed",
    "no": "no",
    "steps": "steps",
    "guidance": "guidance",
    "cfg": "guidance",
    "fast": "fast",
    "quality": "quality",
}
# Flags that take no value: they switch something on.
_SWITCHES = frozenset({"fast", "quality"})
FLAG_HELP = "--ar W:H, --seed N, --no words, --steps N, --guidance X (also --cfg), --fast, --quality"


@dataclass(frozen=True)
class ParsedPrompt:
    """The prompt text without its flags, and the values the flags gave (None where absent)."""

    prompt: str
    aspect: str | None = None
    seed: int | None = None
    negative: tuple[str, ...] = field(default_factory=tuple)
    steps: int | None = None
    guidance: float | None = None
    fast: bool | None = None  # True: --fast, False: --quality (the full model), None: the server's default


def parse_prompt(text: str) -> ParsedPrompt:
    """Split flags off the prompt. Unknown, repeated or malformed flags raise InvalidRequest naming them."""
    matches = list(_FLAG.finditer(text))
    prompt = text[: matches[0].start()] if matches else text
    values: dict[str, str] = {}
    negatives: list[str] = []
    for position, match in enumerate(matches):
        end = matches[position + 1].start() if position + 1 < len(matches) else len(text)
        name = match.group(1).lower()
        value = text[match.end() : end].strip()
        canonical = _ALIASES.get(name)
        if canonical is None:
            raise InvalidRequest(f"I don't know the flag `--{name}`. Flags I know: {FLAG_HELP}.", field=name)
        if canonical == "no":
            if not value:
                raise InvalidRequest("`--no` needs the words to avoid, like `--no text, people`.", field="no")
            negatives.append(value)
            continue
        if canonical in values:
            raise InvalidRequest(f"`--{name}` is given twice; give it once.", field=canonical)
        if canonical in _SWITCHES:
            if value:
                raise InvalidRequest(
                    f"`--{name}` takes no value; put it after the prompt, like `a cat --{canonical}`.",
                    field=canonical,
                )
        elif not value:
            raise InvalidRequest(f"`--{name}` needs a value.", field=canonical)
        values[canonical] = value
    if "fast" in values and "quality" in values:
        raise InvalidRequest(
            "`--fast` and `--quality` ask for different models; give one of them.", field="fast"
        )

    return ParsedPrompt(
        prompt=" ".join(prompt.split()),
        aspect=values.get("aspect"),
        seed=_integer(values, "seed", "`--seed` takes a whole number like `--seed 42`"),
        negative=tuple(negatives),
        steps=_integer(values, "steps", "`--steps` takes a whole number like `--steps 30`"),
        guidance=_number(values, "guidance", "`--guidance` takes a number like `--guidance 6.5`"),
        fast=True if "fast" in values else False if "quality" in values else None,
    )


def _integer(values: dict[str, str], name: str, usage: str) -> int | None:
    raw = values.get(name)
    if raw is None:
        return None
    if not re.fullmatch(r"\d{1,12}", raw):
        raise InvalidRequest(f"{usage}; got `{raw}`.", field=name)
    return int(raw)


def _number(values: dict[str, str], name: str, usage: str) -> float | None:
    raw = values.get(name)
    if raw is None:
        return None
    if not re.fullmatch(r"\d{1,3}(?:\.\d{1,3})?", raw):
        raise InvalidRequest(f"{usage}; got `{raw}`.", field=name)
    return float(raw)
