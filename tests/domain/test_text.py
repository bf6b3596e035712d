"""The text folding that blocked words are matched in, and the tables it rests on, checked against Unicode's
own data rather than trusted."""

from __future__ import annotations

import json
import re
import string
import sys
import unicodedata
from importlib import resources

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.domain.text import CONFUSABLES, DEFAULT_IGNORABLE, DIACRITICS, fold, unusable_character

SCRIPTS = ("LATIN", "GREEK", "CYRILLIC", "ARMENIAN")


def unicode_confusables() -> dict[str, set[str]]:
    """Unicode's confusables.txt (UTS #39) as the `confusable-homoglyphs` package ships it: each character
    and the single characters it is confusable with, both ways."""
    raw = resources.files("confusable_homoglyphs").joinpath("confusables.json").read_text(encoding="utf-8")
    data: dict[str, list[dict[str, str]]] = json.loads(raw)
    return {char: {entry["c"] for entry in entries if len(entry["c"]) == 1} for char, entries in data.items()}


def small_capital(char: str) -> str | None:
    """`t` for LATIN LETTER SMALL CAPITAL T, and so on."""
    found = re.fullmatch(r"LATIN LETTER SMALL CAPITAL ([A-Z])", unicodedata.name(char, ""))
    return found.group(1).lower() if found else None


def in_scope(char: str) -> bool:
    """A letter of the mapped scripts that NFKC and the accent step leave alone (else they handle it)."""
    return (
        len(char) == 1
        and not char.isascii()
        and unicodedata.name(char, "?").split()[0] in SCRIPTS
        and unicodedata.category(char).startswith("L")
        and unicodedata.normalize("NFKC", char) == char
        and unicodedata.normalize("NFD", char) == char
    )


def backed_targets(char: str, data: dict[str, set[str]]) -> set[str]:
    """The ASCII letters the data supports mapping `char` to, by the rules in bot/domain/text.py."""
    near = data.get(char, set())
    ascii_letters = {other for other in near if other in string.ascii_letters}
    if ascii_letters:
        # Unicode's prototype of a capital I is "l"; a capital I-like letter stands for an I.
        capital = char.casefold() != char
        return {"i" if other == "l" and capital else other.lower() for other in ascii_letters}
    if (letter := small_capital(char)) is not None:
        return {letter}
    two_steps = near | {far for other in near for far in data.get(other, set())}
    return {letter for other in two_steps if (letter := small_capital(other)) is not None}


def test_every_confusable_is_backed_by_unicode_data() -> None:
    """Each entry maps a letter in scope to the one ASCII letter Unicode's confusables data gives it."""
    data = unicode_confusables()
    wrong = {
        char: (target, backed_targets(char, data))
        for char, target in CONFUSABLES.items()
        if not in_scope(char) or backed_targets(char, data) != {target}
    }
    assert wrong == {}


def test_no_confusable_from_the_data_is_missing() -> None:
    """Every letter in scope that the data links to exactly one ASCII letter has its entry (regenerate the
    table from `derived_table()` when the data grows)."""
    assert {char: CONFUSABLES.get(char) for char in derived_table() if CONFUSABLES.get(char) is None} == {}


def derived_table() -> dict[str, str]:
    """The table as the data derives it (small capitals that the data does not list are added by name)."""
    data = unicode_confusables()
    table: dict[str, str] = {}
    for char in sorted(filter(in_scope, data)):
        targets = backed_targets(char, data)
        if len(targets) == 1:
            table[char] = targets.pop()
    return table


@pytest.mark.parametrize(
    ("letters", "latin"),
    [
        ("аеорсухіјѕԁ", "aeopcyxijsd"),  # Cyrillic
        ("ɡɑı", "gai"),  # Latin letters that look like others
        ("οαινρτυκ", "oaivptuk"),  # Greek
        ("АВЕКМНОРСТХ", "abekmhopctx"),  # Cyrillic capitals
        ("ΑΒΕΗΙΚΜΝΟΡΤΧ", "abehikmnoptx"),  # Greek capitals
    ],
)
def test_the_look_alikes_the_probe_named_read_as_latin(letters: str, latin: str) -> None:
    """The Cyrillic and Greek look-alikes most used to dodge a filter fold to the Latin letter they mimic."""
    assert fold(letters) == latin


def test_default_ignorable_ranges_are_unicodes() -> None:
    """DEFAULT_IGNORABLE is exactly Unicode's Default_Ignorable_Code_Point (from the `regex` module's
    tables, which follow a recent Unicode)."""
    regex = pytest.importorskip("regex")
    ignorable = regex.compile(r"\p{Default_Ignorable_Code_Point}")
    expected = {code for code in range(sys.maxunicode + 1) if ignorable.match(chr(code))}
    ours = {code for low, high in DEFAULT_IGNORABLE for code in range(low, high + 1)}
    assert ours == expected


def test_diacritic_ranges_hold_only_combining_marks() -> None:
    """The accent step removes combining marks only (assigned ones in those blocks are all Mn or Me)."""
    categories = {
        unicodedata.category(chr(code)) for low, high in DIACRITICS for code in range(low, high + 1)
    }
    assert categories <= {"Mn", "Me", "Cn"}


@pytest.mark.parametrize(
    ("text", "folded"),
    [
        ("g\u200bore", "gore"),  # zero-width space
        ("g\u00adore", "gore"),  # soft hyphen
        ("g\u200core", "gore"),  # zero-width non-joiner
        ("g\u200dore", "gore"),  # zero-width joiner
        ("\ufeffgore", "gore"),  # byte order mark
        ("g\u2060ore", "gore"),  # word joiner
        ("\u202egore\u202c", "gore"),  # right-to-left override … pop
        ("g\u2066ore\u2069", "gore"),  # bidi isolates
        ("go\ufe0fre", "gore"),  # variation selector
        ("g\U000e0067\U000e006fore", "gore"),  # tag characters (invisible g, o)
        ("g\u034fore", "gore"),  # combining grapheme joiner
        ("g\u3164ore", "gore"),  # Hangul filler
        ("ｇｏｒｅ", "gore"),  # full-width
        ("𝐠𝐨𝐫𝐞", "gore"),  # mathematical bold
        ("ⓖⓞⓡⓔ", "gore"),  # circled
        ("go\u0301re", "gore"),  # combining acute
        ("góre", "gore"),  # precomposed ó
        ("g\u0337o\u0337r\u0337e\u0337", "gore"),  # a stroke through each letter
        ("g\u0300\u0316\u0489o\u0352\u035br\u1ab0e\u1dc4\u20e3", "gore"),  # Zalgo stacks
        ("GoRe", "gore"),
        ("ꜱᴛᴏᴘ", "stop"),  # small capitals
        ("  a \t Blood\n  Moon ", "a blood moon"),
        ("Straße", "strasse"),
    ],
)
def test_fold(text: str, folded: str) -> None:
    """Invisible characters go, compatibility forms and accents are undone, look-alikes read as Latin."""
    assert fold(text) == folded


@pytest.mark.parametrize("text", ["हिंदी", "한국어", "日本語", "עִבְרִית"])
def test_fold_keeps_other_scripts(text: str) -> None:
    """Marks that are part of a script's letters (Devanagari, Hebrew points) and syllables are kept."""
    assert fold(text) == unicodedata.normalize("NFC", text).casefold()


@settings(max_examples=500, deadline=None, derandomize=True)
@given(st.text(max_size=40))
def test_fold_is_idempotent(text: str) -> None:
    """A stored blocked word is folded again when matched: folding twice must change nothing."""
    once = fold(text)
    assert fold(once) == once
    assert unusable_character(once) is None


def test_fold_is_idempotent_for_every_code_point() -> None:
    """Every assigned character, alone and after a letter, folds to a fixed point."""
    assigned = (chr(code) for code in range(sys.maxunicode + 1))
    for char in (char for char in assigned if unicodedata.category(char) not in ("Cn", "Co")):
        for text in (char, "o" + char):
            once = fold(text)
            assert fold(once) == once, hex(ord(char))


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("a\x00cat", "\x00"),
        ("a \udcff cat", "\udcff"),
        ("escape \x1b[31m", "\x1b"),
        ("del\x7f", "\x7f"),
        ("next line\x85", "\x85"),
        ("a\ufffeb", "\ufffe"),
        ("a\U0010ffffb", "\U0010ffff"),
        ("a\ufdd0b", "\ufdd0"),
        ("tab\tnew\nline\r", None),
        ("g\u200bore", None),  # invisible but harmless: folded away, not refused
        ("ünïcödé 🦊", None),
    ],
)
def test_unusable_character(text: str, found: str | None) -> None:
    """Controls other than tab and newlines, lone surrogates and non-characters are unusable."""
    assert unusable_character(text) == found


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.text(alphabet=st.characters(max_codepoint=0x7F), max_size=40))
def test_the_ascii_shortcut_agrees_with_the_full_steps(text: str) -> None:
    """ASCII text takes a shortcut; with one non-ASCII letter added it takes every step, to the same end."""
    assert fold(text + " é") == (fold(text) + " e").strip()
