"""The labelled dev corpus (shared/corpus/dev.jsonl) item by item, as score.py judges it."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from bridge.understand import understand

CORPUS = Path(__file__).resolve().parents[3] / "shared" / "corpus" / "dev.jsonl"


def _items() -> list[dict]:
    if not CORPUS.is_file():
        return []
    with CORPUS.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _key(a: dict) -> tuple:
    return (
        a["child"],
        tuple(sorted(a["units"])),
        a["from"],
        a["to"],
        a["from_time"],
        a["to_time"],
        a["reason"],
    )


@pytest.mark.skipif(not CORPUS.is_file(), reason="shared/corpus/dev.jsonl not beside the repo")
@pytest.mark.parametrize("item", _items(), ids=lambda it: it["id"])
def test_dev_corpus_item(item: dict) -> None:
    got = understand({k: item[k] for k in ("id", "text", "received_at", "children")})
    exp = item["expect"]
    assert got["id"] == item["id"]
    assert got["intent"] == exp["intent"]
    assert Counter(map(_key, got["absences"])) == Counter(map(_key, exp["absences"]))
    assert sorted(got["clarify"]) == sorted(exp["clarify"])
    assert got["sensitive"] == sorted(exp["sensitive"])
    if exp["sensitive"]:
        for word in item["must_not_contain"]:
            assert word.lower() not in got["redacted"].lower()
    else:
        assert got["redacted"] == item["text"]
