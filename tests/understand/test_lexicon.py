"""The word lists: format, loading, and the fast paths that must not change results."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bridge.understand import lexicon
from bridge.understand.dates import scan as scan_dates
from bridge.understand.lexicon import LexiconIndex, _parse, _Term, categories
from bridge.understand.text import normalize

CORPUS = Path(__file__).resolve().parents[3] / "shared" / "corpus" / "dev.jsonl"


def index_of(*terms: str) -> LexiconIndex:
    out = []
    for t in terms:
        cat = "x"
        if t.startswith("!"):
            cat, t = "!x", t[1:]
        out.append(_Term(cat, _parse(t)))
    return LexiconIndex(out)


def found(idx: LexiconIndex, text: str) -> list[str]:
    norm = normalize(text)
    return [norm[s:e] for s, e in idx.scan(norm).get("x", [])]


def test_term_forms() -> None:
    idx = index_of("feber", "influensa*", "*betennelse", "vondt i *", "rs-virus")
    assert found(idx, "Feber og influensaen") == ["feber", "influensaen"]
    assert found(idx, "halsbetennelse, betennelse") == ["halsbetennelse"]
    assert found(idx, "vondt i magen") == ["vondt i magen"]
    assert found(idx, "RS-virus eller rs virus") == ["rs-virus", "rs virus"]
    assert found(idx, "feberfri") == []  # whole words only


def test_exceptions_and_punctuation_between_words() -> None:
    idx = index_of("dårlig", "!dårlig råd")
    assert found(idx, "Vi har dårlig råd") == []
    assert found(idx, "Han er dårlig. Råd meg") == ["dårlig"]
    idx = index_of("dårlig råd")
    assert found(idx, "dårlig, råd") == []


def test_longest_match_wins() -> None:
    idx = index_of("vondt", "vondt i *")
    assert found(idx, "vondt i hodet") == ["vondt i hodet"]


def test_every_category_loads_in_every_language() -> None:
    names = categories()
    for required in (
        "health",
        "health_general",
        "religion",
        "bullying",
        "finances",
        "child_welfare",
        "illness",
        "appointment",
        "other",
    ):
        assert required in names
    folder = Path(lexicon.__file__).parent / "lexicon"
    for name in ("health", "religion", "bullying", "finances", "child_welfare"):
        for lang in ("nb", "nn", "en"):
            assert (folder / f"{name}.{lang}.txt").is_file()
    for path in folder.glob("*.txt"):
        for raw in path.read_text(encoding="utf-8").splitlines():
            line = raw.split("#", 1)[0].strip()
            if line and path.name.split(".")[0] != "common":
                assert _parse(line.lstrip("!")), (path.name, raw)


def _texts() -> list[str]:
    extra = [
        "Ola er borte fra 1.12 til 3.12",
        "kl 10-12",
        "fra 10 til 12",
        "i overmorgen",
        "neste fredag",
        "fredag neste uke",
        "resten av veka",
        "uke 50",
        "hele neste uke",
        "the 28th",
        "den 30.",
        "1.-3. desember",
        "halv 12",
        "12-tiden",
        "3pm",
        "3:15 pm",
        "tre dager",
        "a couple of days",
        "ei veke",
        "yesterday",
        "i går",
        "9.05",
        "10.45",
    ]
    if CORPUS.is_file():
        extra += [json.loads(x)["text"] for x in CORPUS.read_text(encoding="utf-8").splitlines()]
    return extra


@pytest.mark.parametrize("text", _texts())
def test_date_scan_prefilter_changes_nothing(text: str) -> None:
    norm = normalize(text)
    assert scan_dates(norm) == scan_dates(norm, prefilter=False)
