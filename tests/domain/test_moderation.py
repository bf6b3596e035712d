"""Blocked words match whole words in any case, however they are spelled: invisible characters, look-alike
letters, full-width forms and accents do not hide one, and letters around it still keep it whole."""

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


@pytest.mark.parametrize(
    "prompt",
    [
        "g\u200bore",  # zero-width space (the probe)
        "g\u00adore",  # soft hyphen (the probe)
        "gоre",  # Cyrillic о (the probe)
        "gore_",  # underscore after (the probe)
        "gore2",  # digit after (the probe)
        "2gore",
        "_gore_",
        "gore's",
        "ｇｏｒｅ",  # full-width
        "GoRe",
        "GОRЕ",  # Cyrillic capitals О and Е
        "ɡοrе",  # Latin script g, Greek ο, Cyrillic е
        "go\u0301re",  # combining acute on the o
        "góre",  # precomposed
        "g\u0336o\u0336r\u0336e\u0336",  # strike-through marks
        "\u202egore",  # right-to-left override in front
        "g\U000e0067ore",  # a tag character inside
        "g\u200d\u200core",  # joiners
        "go\ufe0fre",  # variation selector
        "𝐠𝐨𝐫𝐞",  # mathematical bold
        "a scene full of gore, in a cave",
        "a knight, --no gore",
    ],
)
def test_hidden_spellings_of_a_blocked_word_are_found(prompt: str) -> None:
    """Each way a probe (or we) tried to slip `gore` past the filter is caught."""
    assert find_blocked_word(prompt, ["gore"]) == "gore"


@pytest.mark.parametrize(
    ("prompt", "blocked"),
    [
        ("class act", "ass"),
        ("a first-class passenger", "ass"),
        ("assassin's creed", "ass"),
        ("concatenate", "cat"),
        ("Scunthorpe United", "cunt"),
        ("Essex countryside", "sex"),
        ("cocktail party", "cock"),
        ("сlass act", "ass"),  # a Cyrillic с in front still makes a letter
        ("gorefest", "gore"),
        ("gore\u200bfest", "gore"),  # an invisible character does not make a word break
        ("r345", "r34"),  # a blocked word ending in a digit is not found inside a longer number
        ("dogore", "gore"),
    ],
)
def test_letters_around_a_blocked_word_keep_it_whole(prompt: str, blocked: str) -> None:
    """No Scunthorpe problem: a blocked word inside a longer word is not a match."""
    assert find_blocked_word(prompt, [blocked]) is None


@pytest.mark.parametrize(
    "prompt",
    [
        "a blood moon",
        "a blood\u00a0moon",  # no-break space
        "a blood\u3000moon",  # ideographic space
        "a blood_moon",
        "a blood-moon",
        "a bl\u200bood  \u2060 moon",
        "a blооd mооn",  # Cyrillic о throughout
        "a ＢＬＯＯＤ ＭＯＯＮ",
    ],
)
def test_a_phrase_matches_across_any_spacing_and_spelling(prompt: str) -> None:
    """A blocked phrase is found whatever separates its words and however its letters are written."""
    assert find_blocked_word(prompt, ["blood moon"]) == "blood moon"


@pytest.mark.parametrize(
    ("typed", "stored"),
    [
        ("gоre", "gore"),  # a Cyrillic о is stored as the Latin o it looks like
        ("G\u200bORE", "gore"),
        ("ｇｏｒｅ", "gore"),
        ("Gore\x00", "gore"),
        ("  Blood \t MOON ", "blood moon"),
        ("\u200b", ""),  # nothing visible: refused as empty by the service
    ],
)
def test_stored_words_are_folded_like_prompts(typed: str, stored: str) -> None:
    """A blocked word is stored in the form prompts are compared in, so the two meet (and one spelling of a
    word is one entry)."""
    assert normalize_word(typed) == stored


@pytest.mark.parametrize("blocked", ["gоre", "GORE", "g\u200bore", "ɡore"])
def test_a_word_blocked_in_a_disguise_still_blocks_the_plain_word(blocked: str) -> None:
    """The blocked word is folded too, however the moderator typed it."""
    assert find_blocked_word("lots of gore", [blocked]) == blocked


def test_the_first_blocked_word_found_is_named() -> None:
    """The member is told which word it was, as the server stored it."""
    assert find_blocked_word("a cat in the gоre", ["dog", "gore", "cat"]) == "gore"
