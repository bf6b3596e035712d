"""Midjourney-style flags parsed out of prompt text."""

from __future__ import annotations

import pytest

from bot.domain.errors import InvalidRequest
from bot.domain.flags import parse_prompt


def test_prompt_without_flags_is_kept_whole() -> None:
    """Text with single dashes and no flags passes through unchanged (spaces folded)."""
    parsed = parse_prompt("  a self-portrait   of a cat ")
    assert parsed.prompt == "a self-portrait of a cat"
    assert (parsed.aspect, parsed.seed, parsed.steps, parsed.guidance, parsed.negative) == (
        None,
        None,
        None,
        None,
        (),
    )


def test_every_flag_is_parsed() -> None:
    """--ar, --seed, --no, --steps and --guidance each land in their field."""
    parsed = parse_prompt(
        "a lighthouse at dusk --ar 16:9 --seed 42 --no text, people --steps 30 --guidance 6.5"
    )
    assert parsed.prompt == "a lighthouse at dusk"
    assert parsed.aspect == "16:9"
    assert parsed.seed == 42
    assert parsed.negative == ("text, people",)
    assert parsed.steps == 30
    assert parsed.guidance == 6.5


def test_aliases_case_and_phone_dashes() -> None:
    """--cfg is --guidance, flags ignore case, and an em dash from a phone counts as --."""
    parsed = parse_prompt("fox —AR 2:3 --CFG 7 –seed 1")
    assert (parsed.prompt, parsed.aspect, parsed.guidance, parsed.seed) == ("fox", "2:3", 7.0, 1)


def test_no_may_repeat() -> None:
    """Several --no flags add up."""
    assert parse_prompt("x --no text --no blur").negative == ("text", "blur")


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("cat --size 3", "--size"),
        ("cat --seed abc", "--seed"),
        ("cat --seed -4", "--seed"),
        ("cat --steps 3.5", "--steps"),
        ("cat --guidance lots", "--guidance"),
        ("cat --seed", "--seed"),
        ("cat --no", "--no"),
        ("cat --seed 1 --seed 2", "--seed"),
    ],
)
def test_bad_flags_name_the_flag(text: str, needle: str) -> None:
    """Unknown, empty, repeated or malformed flags give an error that names the flag."""
    with pytest.raises(InvalidRequest) as caught:
        parse_prompt(text)
    assert needle in str(caught.value)
