"""Text as the model reads it: which characters a prompt may hold, and the form in which words are compared.

Two jobs, both plain standard-library Python:

- `refuse_unusable_characters`: control characters (NUL, escape…), lone surrogates (what Python makes of
  bytes that are not UTF-8) and Unicode non-characters are refused with a message that names the field.
  PostgreSQL cannot store NUL or a lone surrogate, and no member means to type one.
- `fold`: the form in which a prompt and a blocked word meet (docs/hostile-inputs.md). In order:
  1. drop what renders as nothing: format characters (category Cf: zero-width space and joiners, soft
     hyphen, BOM, bidi controls, tag characters), every Default_Ignorable_Code_Point (variation selectors,
     Hangul fillers, the combining grapheme joiner), and control characters, surrogates, non-characters;
  2. NFKC: full-width and mathematical letters, ligatures, superscripts become plain letters (then 1 again,
     for the few that NFKC turns into an ignorable);
  3. accents off: NFD, drop the combining diacritical marks (U+0300–036F and the other diacritic blocks:
     accents and "Zalgo" stacks), NFC; the marks of Indic and other scripts are kept;
  4. confusables to Latin (`CONFUSABLES`), case folding, confusables again (the table has capitals whose
     small letter looks like another Latin letter: Greek Ν is n, ν is v);
  5. runs of whitespace become one space.
"""

from __future__ import annotations

import unicodedata

# Default_Ignorable_Code_Point (Unicode's DerivedCoreProperties.txt): code points that render as nothing
# unless a font says otherwise. Most are Cf; the variation selectors, U+034F, U+17B4–17B5 and U+180B–180F are
# Mn and the Hangul fillers Lo, so the category alone misses them. tests/domain/test_text.py checks the
# ranges against the `regex` module's property table.
DEFAULT_IGNORABLE: tuple[tuple[int, int], ...] = (
    (0x00AD, 0x00AD),
    (0x034F, 0x034F),
    (0x061C, 0x061C),
    (0x115F, 0x1160),
    (0x17B4, 0x17B5),
    (0x180B, 0x180F),
    (0x200B, 0x200F),
    (0x202A, 0x202E),
    (0x2060, 0x206F),
    (0x3164, 0x3164),
    (0xFE00, 0xFE0F),
    (0xFEFF, 0xFEFF),
    (0xFFA0, 0xFFA0),
    (0xFFF0, 0xFFF8),
    (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A),
    (0xE0000, 0xE0FFF),
)

# Combining marks that put accents on letters (and, stacked, make "Zalgo" text): Combining Diacritical
# Marks and its Extended and Supplement blocks, the marks for symbols, the half marks, and the Cyrillic
# combining marks. The vowel signs and other marks of Indic, Thai, Hebrew, Arabic… scripts are kept.
DIACRITICS: tuple[tuple[int, int], ...] = (
    (0x0300, 0x036F),
    (0x0483, 0x0489),
    (0x1AB0, 0x1AFF),
    (0x1DC0, 0x1DFF),
    (0x20D0, 0x20FF),
    (0xFE20, 0xFE2F),
)

# Letters of the Latin, Greek, Cyrillic and Armenian scripts that Unicode's confusables data
# (confusables.txt, UTS #39, as shipped by the `confusable-homoglyphs` package) lists as confusable with one
# ASCII letter, mapped to that letter in small case. Where Unicode uses "l" as the prototype of a capital
# I-like letter (Greek Ι, Cyrillic І and Ӏ), the capital maps to "i": it stands for an I. Letters that the
# data links only to a Latin small capital (ᴛ, ʜ, ʙ, ᴋ, ᴍ), directly or through one other letter, map to that
# small capital's letter (Cyrillic т and Greek τ are t, н is h, к and κ are k); the small capitals map to
# their letter too. Digits and leet are out of scope. tests/domain/test_text.py derives this table from the
# data and fails when an entry is missing or is not backed by it; characters that NFKC or the accent step
# already turn into ASCII (full-width, mathematical letters, é) need no entry.
CONFUSABLES: dict[str, str] = {
    "\u0131": "i",  # ı LATIN SMALL LETTER DOTLESS I
    "\u0138": "k",  # ĸ LATIN SMALL LETTER KRA
    "\u0184": "b",  # Ƅ LATIN CAPITAL LETTER TONE SIX
    "\u018d": "g",  # ƍ LATIN SMALL LETTER TURNED DELTA
    "\u0196": "i",  # Ɩ LATIN CAPITAL LETTER IOTA
    "\u01a6": "r",  # Ʀ LATIN LETTER YR
    "\u01bd": "s",  # ƽ LATIN SMALL LETTER TONE FIVE
    "\u01c0": "l",  # ǀ LATIN LETTER DENTAL CLICK
    "\u0251": "a",  # ɑ LATIN SMALL LETTER ALPHA
    "\u0261": "g",  # ɡ LATIN SMALL LETTER SCRIPT G
    "\u0262": "g",  # ɢ LATIN LETTER SMALL CAPITAL G
    "\u0263": "y",  # ɣ LATIN SMALL LETTER GAMMA
    "\u0269": "i",  # ɩ LATIN SMALL LETTER IOTA
    "\u026a": "i",  # ɪ LATIN LETTER SMALL CAPITAL I
    "\u026f": "w",  # ɯ LATIN SMALL LETTER TURNED M
    "\u0274": "n",  # ɴ LATIN LETTER SMALL CAPITAL N
    "\u0280": "r",  # ʀ LATIN LETTER SMALL CAPITAL R
    "\u028b": "u",  # ʋ LATIN SMALL LETTER V WITH HOOK
    "\u028d": "m",  # ʍ LATIN SMALL LETTER TURNED W
    "\u028f": "y",  # ʏ LATIN LETTER SMALL CAPITAL Y
    "\u0299": "b",  # ʙ LATIN LETTER SMALL CAPITAL B
    "\u029c": "h",  # ʜ LATIN LETTER SMALL CAPITAL H
    "\u029f": "l",  # ʟ LATIN LETTER SMALL CAPITAL L
    "\u037f": "j",  # Ϳ GREEK CAPITAL LETTER YOT
    "\u0391": "a",  # Α GREEK CAPITAL LETTER ALPHA
    "\u0392": "b",  # Β GREEK CAPITAL LETTER BETA
    "\u0395": "e",  # Ε GREEK CAPITAL LETTER EPSILON
    "\u0396": "z",  # Ζ GREEK CAPITAL LETTER ZETA
    "\u0397": "h",  # Η GREEK CAPITAL LETTER ETA
    "\u0399": "i",  # Ι GREEK CAPITAL LETTER IOTA
    "\u039a": "k",  # Κ GREEK CAPITAL LETTER KAPPA
    "\u039c": "m",  # Μ GREEK CAPITAL LETTER MU
    "\u039d": "n",  # Ν GREEK CAPITAL LETTER NU
    "\u039f": "o",  # Ο GREEK CAPITAL LETTER OMICRON
    "\u03a1": "p",  # Ρ GREEK CAPITAL LETTER RHO
    "\u03a4": "t",  # Τ GREEK CAPITAL LETTER TAU
    "\u03a5": "y",  # Υ GREEK CAPITAL LETTER UPSILON
    "\u03a7": "x",  # Χ GREEK CAPITAL LETTER CHI
    "\u03b1": "a",  # α GREEK SMALL LETTER ALPHA
    "\u03b3": "y",  # γ GREEK SMALL LETTER GAMMA
    "\u03b9": "i",  # ι GREEK SMALL LETTER IOTA
    "\u03ba": "k",  # κ GREEK SMALL LETTER KAPPA
    "\u03bd": "v",  # ν GREEK SMALL LETTER NU
    "\u03bf": "o",  # ο GREEK SMALL LETTER OMICRON
    "\u03c1": "p",  # ρ GREEK SMALL LETTER RHO
    "\u03c3": "o",  # σ GREEK SMALL LETTER SIGMA
    "\u03c4": "t",  # τ GREEK SMALL LETTER TAU
    "\u03c5": "u",  # υ GREEK SMALL LETTER UPSILON
    "\u03dc": "f",  # Ϝ GREEK LETTER DIGAMMA
    "\u03f3": "j",  # ϳ GREEK LETTER YOT
    "\u03fa": "m",  # Ϻ GREEK CAPITAL LETTER SAN
    "\u0405": "s",  # Ѕ CYRILLIC CAPITAL LETTER DZE
    "\u0406": "i",  # І CYRILLIC CAPITAL LETTER BYELORUSSIAN-UKRAINIAN I
    "\u0408": "j",  # Ј CYRILLIC CAPITAL LETTER JE
    "\u0410": "a",  # А CYRILLIC CAPITAL LETTER A
    "\u0412": "b",  # В CYRILLIC CAPITAL LETTER VE
    "\u0415": "e",  # Е CYRILLIC CAPITAL LETTER IE
    "\u041a": "k",  # К CYRILLIC CAPITAL LETTER KA
    "\u041c": "m",  # М CYRILLIC CAPITAL LETTER EM
    "\u041d": "h",  # Н CYRILLIC CAPITAL LETTER EN
    "\u041e": "o",  # О CYRILLIC CAPITAL LETTER O
    "\u0420": "p",  # Р CYRILLIC CAPITAL LETTER ER
    "\u0421": "c",  # С CYRILLIC CAPITAL LETTER ES
    "\u0422": "t",  # Т CYRILLIC CAPITAL LETTER TE
    "\u0423": "y",  # У CYRILLIC CAPITAL LETTER U
    "\u0425": "x",  # Х CYRILLIC CAPITAL LETTER HA
    "\u042c": "b",  # Ь CYRILLIC CAPITAL LETTER SOFT SIGN
    "\u0430": "a",  # а CYRILLIC SMALL LETTER A
    "\u0432": "b",  # в CYRILLIC SMALL LETTER VE
    "\u0433": "r",  # г CYRILLIC SMALL LETTER GHE
    "\u0435": "e",  # е CYRILLIC SMALL LETTER IE
    "\u043a": "k",  # к CYRILLIC SMALL LETTER KA
    "\u043c": "m",  # м CYRILLIC SMALL LETTER EM
    "\u043d": "h",  # н CYRILLIC SMALL LETTER EN
    "\u043e": "o",  # о CYRILLIC SMALL LETTER O
    "\u0440": "p",  # р CYRILLIC SMALL LETTER ER
    "\u0441": "c",  # с CYRILLIC SMALL LETTER ES
    "\u0442": "t",  # т CYRILLIC SMALL LETTER TE
    "\u0443": "y",  # у CYRILLIC SMALL LETTER U
    "\u0445": "x",  # х CYRILLIC SMALL LETTER HA
    "\u0455": "s",  # ѕ CYRILLIC SMALL LETTER DZE
    "\u0456": "i",  # і CYRILLIC SMALL LETTER BYELORUSSIAN-UKRAINIAN I
    "\u0458": "j",  # ј CYRILLIC SMALL LETTER JE
    "\u0461": "w",  # ѡ CYRILLIC SMALL LETTER OMEGA
    "\u0474": "v",  # Ѵ CYRILLIC CAPITAL LETTER IZHITSA
    "\u0475": "v",  # ѵ CYRILLIC SMALL LETTER IZHITSA
    "\u04ae": "y",  # Ү CYRILLIC CAPITAL LETTER STRAIGHT U
    "\u04af": "y",  # ү CYRILLIC SMALL LETTER STRAIGHT U
    "\u04bb": "h",  # һ CYRILLIC SMALL LETTER SHHA
    "\u04bd": "e",  # ҽ CYRILLIC SMALL LETTER ABKHASIAN CHE
    "\u04c0": "i",  # Ӏ CYRILLIC LETTER PALOCHKA
    "\u04cf": "i",  # ӏ CYRILLIC SMALL LETTER PALOCHKA
    "\u0501": "d",  # ԁ CYRILLIC SMALL LETTER KOMI DE
    "\u050c": "g",  # Ԍ CYRILLIC CAPITAL LETTER KOMI SJE
    "\u050d": "g",  # ԍ CYRILLIC SMALL LETTER KOMI SJE
    "\u051b": "q",  # ԛ CYRILLIC SMALL LETTER QA
    "\u051c": "w",  # Ԝ CYRILLIC CAPITAL LETTER WE
    "\u051d": "w",  # ԝ CYRILLIC SMALL LETTER WE
    "\u054d": "u",  # Ս ARMENIAN CAPITAL LETTER SEH
    "\u054f": "s",  # Տ ARMENIAN CAPITAL LETTER TIWN
    "\u0555": "o",  # Օ ARMENIAN CAPITAL LETTER OH
    "\u0561": "w",  # ա ARMENIAN SMALL LETTER AYB
    "\u0563": "q",  # գ ARMENIAN SMALL LETTER GIM
    "\u0566": "q",  # զ ARMENIAN SMALL LETTER ZA
    "\u0570": "h",  # հ ARMENIAN SMALL LETTER HO
    "\u0578": "n",  # ո ARMENIAN SMALL LETTER VO
    "\u057c": "n",  # ռ ARMENIAN SMALL LETTER RA
    "\u057d": "u",  # ս ARMENIAN SMALL LETTER SEH
    "\u0581": "g",  # ց ARMENIAN SMALL LETTER CO
    "\u0584": "f",  # ք ARMENIAN SMALL LETTER KEH
    "\u0585": "o",  # օ ARMENIAN SMALL LETTER OH
    "\u1d00": "a",  # ᴀ LATIN LETTER SMALL CAPITAL A
    "\u1d04": "c",  # ᴄ LATIN LETTER SMALL CAPITAL C
    "\u1d05": "d",  # ᴅ LATIN LETTER SMALL CAPITAL D
    "\u1d07": "e",  # ᴇ LATIN LETTER SMALL CAPITAL E
    "\u1d0a": "j",  # ᴊ LATIN LETTER SMALL CAPITAL J
    "\u1d0b": "k",  # ᴋ LATIN LETTER SMALL CAPITAL K
    "\u1d0d": "m",  # ᴍ LATIN LETTER SMALL CAPITAL M
    "\u1d0f": "o",  # ᴏ LATIN LETTER SMALL CAPITAL O
    "\u1d11": "o",  # ᴑ LATIN SMALL LETTER SIDEWAYS O
    "\u1d18": "p",  # ᴘ LATIN LETTER SMALL CAPITAL P
    "\u1d1b": "t",  # ᴛ LATIN LETTER SMALL CAPITAL T
    "\u1d1c": "u",  # ᴜ LATIN LETTER SMALL CAPITAL U
    "\u1d20": "v",  # ᴠ LATIN LETTER SMALL CAPITAL V
    "\u1d21": "w",  # ᴡ LATIN LETTER SMALL CAPITAL W
    "\u1d22": "z",  # ᴢ LATIN LETTER SMALL CAPITAL Z
    "\u1d26": "r",  # ᴦ GREEK LETTER SMALL CAPITAL GAMMA
    "\u1d29": "p",  # ᴩ GREEK LETTER SMALL CAPITAL RHO
    "\u1d83": "g",  # ᶃ LATIN SMALL LETTER G WITH PALATAL HOOK
    "\u1d8c": "y",  # ᶌ LATIN SMALL LETTER V WITH PALATAL HOOK
    "\u1e9d": "f",  # ẝ LATIN SMALL LETTER LONG S WITH HIGH STROKE
    "\u1eff": "y",  # ỿ LATIN SMALL LETTER Y WITH LOOP
    "\ua647": "i",  # ꙇ CYRILLIC SMALL LETTER IOTA
    "\ua730": "f",  # ꜰ LATIN LETTER SMALL CAPITAL F
    "\ua731": "s",  # ꜱ LATIN LETTER SMALL CAPITAL S
    "\ua798": "f",  # Ꞙ LATIN CAPITAL LETTER F WITH STROKE
    "\ua799": "f",  # ꞙ LATIN SMALL LETTER F WITH STROKE
    "\ua79f": "u",  # ꞟ LATIN SMALL LETTER VOLAPUK UE
    "\ua7af": "q",  # ꞯ LATIN LETTER SMALL CAPITAL Q
    "\ua7b2": "j",  # Ʝ LATIN CAPITAL LETTER J WITH CROSSED-TAIL
    "\ua7b3": "x",  # Ꭓ LATIN CAPITAL LETTER CHI
    "\ua7b4": "b",  # Ꞵ LATIN CAPITAL LETTER BETA
    "\uab32": "e",  # ꬲ LATIN SMALL LETTER BLACKLETTER E
    "\uab35": "f",  # ꬵ LATIN SMALL LETTER LENIS F
    "\uab3d": "o",  # ꬽ LATIN SMALL LETTER BLACKLETTER O
    "\uab47": "r",  # ꭇ LATIN SMALL LETTER R WITHOUT HANDLE
    "\uab48": "r",  # ꭈ LATIN SMALL LETTER DOUBLE R
    "\uab4e": "u",  # ꭎ LATIN SMALL LETTER U WITH SHORT RIGHT LEG
    "\uab52": "u",  # ꭒ LATIN SMALL LETTER U WITH LEFT HOOK
    "\uab5a": "y",  # ꭚ LATIN SMALL LETTER Y WITH SHORT RIGHT LEG
}

_CONFUSABLES = str.maketrans(CONFUSABLES)
_WHITESPACE_CONTROLS = frozenset("\t\n\r")
_ASCII_CONTROLS = {code: None for code in (*range(0x20), 0x7F) if not chr(code).isspace()}


def fold(text: str) -> str:
    """The form in which prompts and blocked words are compared (the module's docstring has the steps)."""
    if text.isascii():  # most prompts: only the control characters and the case to undo
        return " ".join(text.translate(_ASCII_CONTROLS).lower().split())
    text = unicodedata.normalize("NFKC", _drop_invisible(text))
    text = _drop_invisible(text)
    text = "".join(char for char in unicodedata.normalize("NFD", text) if not _in(DIACRITICS, char))
    text = unicodedata.normalize("NFC", text)
    text = text.translate(_CONFUSABLES).casefold().translate(_CONFUSABLES)
    return " ".join(text.split())


def unusable_character(text: str) -> str | None:
    """The first character no prompt may hold: a control character other than tab and newlines, a lone
    surrogate, or a Unicode non-character; None when there is none."""
    for char in text:
        if _unusable(char):
            return char
    return None


def describe_unusable(char: str) -> str:
    """What the member is told the character is, with its code point (it may not show on their screen)."""
    code = f"U+{ord(char):04X}"
    category = unicodedata.category(char)
    if category == "Cs":
        return f"a broken character ({code}) that isn't valid text"
    if category == "Cc":
        return f"an invisible control character ({code}) I can't use"
    return f"a character reserved for internal use ({code}) I can't use"


def _unusable(char: str) -> bool:
    category = unicodedata.category(char)
    if category == "Cc":
        return char not in _WHITESPACE_CONTROLS
    return category == "Cs" or _noncharacter(char)


def _noncharacter(char: str) -> bool:
    """U+FDD0–FDEF and the last two code points of every plane (U+FFFE, U+FFFF, U+1FFFE…)."""
    code = ord(char)
    return 0xFDD0 <= code <= 0xFDEF or code & 0xFFFE == 0xFFFE


def _drop_invisible(text: str) -> str:
    return "".join(char for char in text if not _invisible(char))


def _invisible(char: str) -> bool:
    """Renders as nothing: dropped. Whitespace controls (tab, newlines) stay, to separate words."""
    if " " <= char <= "~":
        return False
    category = unicodedata.category(char)
    if category == "Cc":
        return not char.isspace()
    return category in ("Cf", "Cs") or _in(DEFAULT_IGNORABLE, char) or _noncharacter(char)


def _in(ranges: tuple[tuple[int, int], ...], char: str) -> bool:
    code = ord(char)
    return any(low <= code <= high for low, high in ranges)
