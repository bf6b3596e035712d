"""Blocked words: a prompt is refused when it contains one as a whole word, however it is spelled.

Both sides are compared in `fold`'s form (bot/domain/text.py): no invisible characters, NFKC, no accents,
look-alike letters as Latin, case folded. A word is whole when no letter touches it: `ass` does not match
"class", but `gore` matches "gore_", "gore2" and "2gore" (underscores and digits separate words; a
blocked word that ends in a digit is still not matched inside a longer number).
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Callable, Iterable

from bot.domain.text import fold

# Between the words of a blocked phrase: any run of spaces, underscores or hyphens.
_GAP = r"[\s_\-]+"


def normalize_word(word: str) -> str:
    """How a blocked word is stored: in `fold`'s form, so a prompt and the word meet (and `gоre` with a
    Cyrillic о is the same entry as `gore`)."""
    return fold(word)


def find_blocked_word(text: str, blocked: Iterable[str]) -> str | None:
    """The first blocked word or phrase found in `text` as a whole word, or None.

    `cat` blocks "a Cat!", "CAT-girl", "cat_2" and "cat" with a zero-width space or a Cyrillic а inside,
    but not "concatenate"; a phrase matches across any spacing.
    """
    haystack = fold(text)
    for word in blocked:
        matches = _matcher(word)
        if matches is not None and matches(haystack):
            return word
    return None


@functools.lru_cache(maxsize=4096)
def _matcher(word: str) -> Callable[[str], bool] | None:
    """The word's matcher, built once: every request is checked against every blocked word of its guild."""
    parts = re.split(_GAP, fold(word))
    parts = [part for part in parts if part]
    if not parts:
        return None
    pattern = re.compile(_GAP.join(re.escape(part) for part in parts))
    first, last = parts[0][0], parts[-1][-1]

    def matches(haystack: str) -> bool:
        position = 0
        while (found := pattern.search(haystack, position)) is not None:
            start, end = found.span()
            before = haystack[start - 1] if start > 0 else ""
            after = haystack[end] if end < len(haystack) else ""
            if not _joins(before, first) and not _joins(after, last):
                return True
            position = start + 1
        return False

    return matches


def _joins(neighbour: str, edge: str) -> bool:
    """Whether `neighbour` continues the word whose outer character is `edge`: a letter (or a mark on one)
    always does; a digit only continues a number."""
    if not neighbour:
        return False
    kind = unicodedata.category(neighbour)[0]
    return kind in "LM" or (kind == "N" and unicodedata.category(edge)[0] == "N")
