"""request_from_text refuses text no database stores every one of (NUL, lone surrogates, other controls)
with a short message naming the field, before anything else looks at it."""

from __future__ import annotations

import pytest

from bot.domain.errors import InvalidRequest
from bot.domain.params import GenerationLimits
from bot.domain.requests import request_from_text

LIMITS = GenerationLimits()


@pytest.mark.parametrize(
    ("prompt", "message"),
    [
        (
            "a\x00cat",
            "Your prompt contains an invisible control character (U+0000) I can't use; "
            "please type it again without it.",
        ),
        (
            "a \udcff cat",  # what Python makes of the byte 0xFF in a command-line argument
            "Your prompt contains a broken character (U+DCFF) that isn't valid text; "
            "please type it again without it.",
        ),
        (
            "a \ud83e cat",  # half of an emoji's UTF-16 pair
            "Your prompt contains a broken character (U+D83E) that isn't valid text; "
            "please type it again without it.",
        ),
        (
            "red \x1b[31m cat",
            "Your prompt contains an invisible control character (U+001B) I can't use; "
            "please type it again without it.",
        ),
        (
            "a cat\uffff",
            "Your prompt contains a character reserved for internal use (U+FFFF) I can't use; "
            "please type it again without it.",
        ),
        (
            "a cat --no dogs\x00",  # inside a flag's value, still the prompt the member typed
            "Your prompt contains an invisible control character (U+0000) I can't use; "
            "please type it again without it.",
        ),
    ],
)
def test_unusable_characters_in_the_prompt_are_refused(prompt: str, message: str) -> None:
    """The message names the field and the code point, which the member's screen may not show."""
    with pytest.raises(InvalidRequest) as refused:
        request_from_text(prompt, limits=LIMITS)
    assert str(refused.value) == message
    assert refused.value.field == "prompt"


def test_unusable_characters_in_the_negative_option_are_refused() -> None:
    """The `negative` option is checked as well, and named."""
    with pytest.raises(InvalidRequest) as refused:
        request_from_text("a cat", limits=LIMITS, negative="dogs\x00")
    assert str(refused.value) == (
        "Your negative prompt contains an invisible control character (U+0000) I can't use; "
        "please type it again without it."
    )
    assert refused.value.field == "negative"


def test_unusable_characters_in_the_aspect_option_are_refused() -> None:
    """Every text option is checked, so no message echoes a control character back."""
    with pytest.raises(InvalidRequest) as refused:
        request_from_text("a cat", limits=LIMITS, aspect="16:9\x00")
    assert refused.value.field == "aspect"


def test_characters_are_checked_before_the_flags() -> None:
    """A prompt with both a control character and a bad flag hears about the character."""
    with pytest.raises(InvalidRequest) as refused:
        request_from_text("a\x00cat --bogus 1", limits=LIMITS)
    assert refused.value.field == "prompt"


@pytest.mark.parametrize(
    "prompt",
    [
        "a cat\tin a hat\r\non a mat",  # ordinary whitespace
        "g\u200bore and a soft\u00adhyphen",  # invisible but storable: the blocked-word filter folds them
        "ünïcödé 🦊, 日本語, עִבְרִית",
        "a \u202eright-to-left\u202c cat",
    ],
)
def test_ordinary_and_invisible_but_storable_text_passes(prompt: str) -> None:
    """Only characters a database may not store are refused; the prompt is kept as typed otherwise."""
    params = request_from_text(prompt, limits=LIMITS).params
    assert params.prompt == " ".join(prompt.split())
