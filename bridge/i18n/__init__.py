"""Texts people read, in their language (nb, nn, en), from gettext catalogs.

Source strings are English; `i18n/<lang>/LC_MESSAGES/skolebro.po` holds each
language's translation. The catalogs are read with Babel once, at first use.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from babel.messages.pofile import read_po

LANGUAGES = ("nb", "nn", "en")
_DIR = Path(__file__).parent


@cache
def _catalog(language: str) -> dict[str, str]:
    path = _DIR / language / "LC_MESSAGES" / "skolebro.po"
    with path.open("rb") as f:
        catalog = read_po(f, locale=language)
    return {
        str(m.id): str(m.string)
        for m in catalog
        if m.id and m.string and not m.fuzzy and isinstance(m.id, str)
    }


def translate(language: str, message: str, **values: object) -> str:
    """`message` (English source) in `language`, with `{name}` fields filled in."""
    lang = language if language in LANGUAGES else "nb"
    text = _catalog(lang).get(message, message)
    return text.format(**values) if values else text


def catalog_ids(language: str) -> set[str]:
    return set(_catalog(language))
