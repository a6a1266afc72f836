"""Sensitive categories and redaction (SPEC 6: `sensitive`, `redacted`)."""

from __future__ import annotations

import re

from .lexicon import Span, scan
from .model import Category
from .text import normalize

REDACTION = "[fjernet]"

_LEXICON_CATEGORIES: tuple[Category, ...] = (
    "bullying",
    "child_welfare",
    "finances",
    "health",
    "religion",
)

# Eleven digits, optionally one space after the six date digits, not inside a longer number.
_ID_CANDIDATE = re.compile(r"(?<![\d])(\d{6}) ?(\d{5})(?![\d])")
_ID_SHAPE = re.compile(r"\d{6} ?\d{5}", re.ASCII)
_HAS_ELEVEN_DIGITS = re.compile(r"\d{6} ?\d{5}")
_W1 = (3, 7, 6, 1, 8, 9, 4, 5, 2)
_W2 = (5, 4, 3, 2, 7, 6, 5, 4, 3, 2)


def _check_digit(digits: list[int], weights: tuple[int, ...]) -> int | None:
    rest = 11 - sum(d * w for d, w in zip(digits, weights, strict=False)) % 11
    if rest == 11:
        return 0
    if rest == 10:
        return None
    return rest


def is_national_id(number: str) -> bool:
    """Whether `number` (11 digits, one space allowed after six) has valid mod-11 check digits.

    Covers fødselsnummer and D numbers alike: both use the same two check digits.
    """
    if not _ID_SHAPE.fullmatch(number):
        return False
    digits = [int(c) for c in number if c != " "]
    k1 = _check_digit(digits[:9], _W1)
    if k1 is None or k1 != digits[9]:
        return False
    k2 = _check_digit(digits[:10], _W2)
    return k2 is not None and k2 == digits[10]


def _inside(span: tuple[int, int], others: list[tuple[int, int]]) -> bool:
    return any(o[0] <= span[0] and span[1] <= o[1] for o in others)


def find_sensitive(
    text: str, norm: str | None = None, lexicon: dict[str, list[Span]] | None = None
) -> list[tuple[int, int, Category]]:
    """Every sensitive span in `text` as (start, end, category), in text order.

    `norm` and `lexicon` may be passed when the caller has already computed them.
    """
    norm = normalize(text) if norm is None else norm
    lexicon = scan(norm) if lexicon is None else lexicon
    found: list[tuple[int, int, Category]] = []
    for category in _LEXICON_CATEGORIES:
        spans = lexicon.get(category, [])
        if category == "health" and spans:
            # "syk", "tannlege" and the like are the bare fact, not a health detail.
            general = lexicon.get("health_general", [])
            spans = [s for s in spans if not _inside(s, general)]
        found.extend((s, e, category) for s, e in spans)
    if _HAS_ELEVEN_DIGITS.search(norm):
        for m in _ID_CANDIDATE.finditer(norm):
            if is_national_id(m.group(0)):
                found.append((m.start(), m.end(), "id_number"))
    found.sort()
    return found


def apply_redaction(text: str, spans: list[tuple[int, int, Category]]) -> str:
    """Replace every span (merged where they overlap) with the redaction mark."""
    if not spans:
        return text
    merged: list[list[int]] = []
    for start, end, _ in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    out: list[str] = []
    pos = 0
    for start, end in merged:
        out.append(text[pos:start])
        out.append(REDACTION)
        pos = end
    out.append(text[pos:])
    return "".join(out)


def redact(text: str) -> tuple[str, list[Category]]:
    """Redact any text (a parent's or a staff member's): (redacted text, sorted categories)."""
    spans = find_sensitive(text)
    return apply_redaction(text, spans), sorted({c for _, _, c in spans})
