"""Blocked words match whole words in any case."""

from __future__ import annotations

import pytest

from bot.domain.moderation import find_blocked_word, normalize_word


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("a Cat!", "cat"),
        ("CAT-girl", "cat"),
        ("concatenate", None),
        ("cats", None),
        ("a  Blood   Moon", "blood moon"),
        ("bloodmoon", None),
    ],
)
def test_word_boundaries_and_case(text: str, found: str | None) -> None:
    """Matches respect word boundaries and ignore case and spacing."""
    assert find_blocked_word(text, ["cat", "blood moon"]) == found


def test_normalize_word() -> None:
    """Stored words are trimmed, folded and single-spaced."""
    assert normalize_word("  Blood   MOON ") == "blood moon"
