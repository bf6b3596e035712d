"""Blocked words: a prompt is refused when it contains one as a whole word, in any letter case."""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Iterable


def normalize_word(word: str) -> str:
    """How a blocked word is stored: trimmed, case-folded, inner spaces collapsed."""
    return " ".join(unicodedata.normalize("NFKC", word).casefold().split())


def find_blocked_word(text: str, blocked: Iterable[str]) -> str | None:
    """The first blocked word or phrase found in `text` at word boundaries, or None.

    `cat` blocks "a Cat!" and "CAT-girl" but not "concatenate"; a phrase matches across any spacing.
    """
    haystack = normalize_word(text)
    for word in blocked:
        pattern = _word_pattern(word)
        if pattern is not None and pattern.search(haystack):
            return word
    return None


@functools.lru_cache(maxsize=4096)
def _word_pattern(word: str) -> re.Pattern[str] | None:
    """The word's pattern, built once: every request is checked against every blocked word of its guild."""
    needle = normalize_word(word)
    if not needle:
        return None
    return re.compile(r"(?<!\w)" + r"\s+".join(re.escape(part) for part in needle.split()) + r"(?!\w)")
