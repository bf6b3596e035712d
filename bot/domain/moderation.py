"""Blocked words: a prompt is refused when it contains one as a whole word, in any letter case."""

from __future__ import annotations

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
        needle = normalize_word(word)
        if not needle:
            continue
        pattern = r"(?<!\w)" + r"\s+".join(re.escape(part) for part in needle.split()) + r"(?!\w)"
        if re.search(pattern, haystack):
            return word
    return None
