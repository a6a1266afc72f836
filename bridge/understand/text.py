"""Text helpers: a lower-cased copy with the same offsets, name folding, sentences."""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

# Characters folded to ASCII look-alikes one-for-one, so offsets stay the same.
_SAME_LENGTH = str.maketrans(
    {
        "’": "'",
        "‘": "'",
        "´": "'",
        "`": "'",
        "–": "-",
        "—": "-",
        "‒": "-",
        "−": "-",
        "\u00a0": " ",
        "\u2009": " ",
        "\u202f": " ",
    }
)


_SPECIAL = re.compile("[’‘´`–—‒−\u00a0\u2009\u202f]")


def normalize(text: str) -> str:
    """Lower-case `text` keeping every character at its offset (so spans map back)."""
    lowered = text.lower()
    if len(lowered) != len(text):
        # A few characters (İ) grow when lower-cased; keep those as they are.
        lowered = "".join(c if len(c.lower()) != 1 else c.lower() for c in text)
    if _SPECIAL.search(lowered) is None:
        return lowered
    return lowered.translate(_SAME_LENGTH)


_WORD = re.compile(r"\w+")

Word = tuple[int, int, str]


def split_words(norm: str) -> list[Word]:
    """(start, end, word) of every word in normalized text; shared by all the scanners."""
    return [(m.start(), m.end(), m.group()) for m in _WORD.finditer(norm)]


_FOLD = str.maketrans({"ø": "o", "æ": "ae", "ß": "ss", "đ": "d", "ł": "l"})


@lru_cache(maxsize=65536)
def fold(word: str) -> str:
    """Fold a name for comparison: lower case, no accents (é→e, å→a, ø→o)."""
    decomposed = unicodedata.normalize("NFKD", word.lower().translate(_FOLD))
    return "".join(c for c in decomposed if not unicodedata.combining(c)).replace("’", "'")


# Abbreviations whose full stop does not end a sentence ("kl. 10", "pga. sykdom").
_ABBREVIATIONS = frozenset(
    "kl ca pga ifm mvh dvs evt osv nr tlf tom fom mr mrs ms dr st bl eks ev ref jf".split()
)
_MONTH_STARTS = (
    "jan",
    "feb",
    "mar",
    "apr",
    "mai",
    "may",
    "jun",
    "jul",
    "aug",
    "sep",
    "okt",
    "oct",
    "nov",
    "des",
    "dec",
    "og ",
    "and",
    "til",
    "-",
)
_BREAK = re.compile(r"[!?\n]+|\.+(?=\s|$)")


def _ends_sentence(norm: str, dot: int, end: int) -> bool:
    """Whether the full stop(s) at norm[dot:end] end a sentence."""
    before = norm[max(0, dot - 12) : dot].rsplit(None, 1)
    word = before[-1].strip("().,!?:;'\"") if before else ""
    if word in _ABBREVIATIONS:
        return False
    if word.isdigit():
        # "28. november" and "1.-3. mars" keep going; "kommer kl 12. Hun ..." ends.
        rest = norm[end : end + 8].lstrip()
        return not rest or not (rest[0].isdigit() or rest.startswith(_MONTH_STARTS))
    return True


def sentences(norm: str) -> list[tuple[int, int]]:
    """Split normalized text into sentence spans (start, end), end exclusive."""
    spans: list[tuple[int, int]] = []
    start = 0
    for m in _BREAK.finditer(norm):
        if m.group(0)[0] == "." and not _ends_sentence(norm, m.start(), m.end()):
            continue
        end = m.end()
        if norm[start:end].strip():
            spans.append((start, end))
        start = end
    if norm[start:].strip():
        spans.append((start, len(norm)))
    return spans or [(0, len(norm))]


def within_one_edit(a: str, b: str) -> bool:
    """Whether `a` and `b` differ by at most one added, dropped or changed letter."""
    la, lb = len(a), len(b)
    if abs(la - lb) > 1:
        return False
    if la > lb:
        a, b, la, lb = b, a, lb, la
    i = 0
    while i < la and a[i] == b[i]:
        i += 1
    if la == lb:
        return a[i + 1 :] == b[i + 1 :]
    return a[i:] == b[i + 1 :]
