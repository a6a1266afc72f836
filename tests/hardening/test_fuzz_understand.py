"""Fuzzing `bridge.understand`: any request gives a SPEC 6 shape or InvalidRequest, never a crash.

tests/understand/test_properties.py covers well-formed requests in one time zone; here the
requests themselves are arbitrary JSON, the time zone and the unit's closed days vary
(including a calendar with no school day at all), and every field of the answer is
checked against SPEC 6, not only its keys.
"""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from bridge.understand import REDACTION, InvalidRequest, redact, understand
from bridge.understand.command import answer, run

ROOT = Path(__file__).resolve().parents[2]
INTENTS = {"absence", "absence_cancel", "message", "stop", "start", "help"}
REASONS = {"illness", "appointment", "other", "unspecified"}
CATEGORIES = {"bullying", "child_welfare", "finances", "health", "id_number", "religion"}
HHMM = re.compile(r"(?:[01]\d|2[0-3]):[0-5]\d")
ZONES = ["Europe/Oslo", "UTC", "America/Los_Angeles", "Pacific/Kiritimati", "Asia/Kathmandu"]
FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

WORDS = [
    "Ola", "Kari", "Åse", "olas", "Oal", "er", "syk", "frisk", "likevel", "i dag", "i går",
    "i morgen", "i overmorgen", "fra", "til", "kl", "klokka", "10", "3pm", "12:30", "12.30",
    "31.11", "29.2", "28/11", "28. november", "1.1.2027", "mandag", "neste", "fredag",
    "resten av uka", "hele uka", "3 dager", "tre dagar", "999999999 dager", "SFO", "AKS",
    "skolen", "begge deler", "begge", "barna", "ikke", "kommer", "går", "hentes", "feber",
    "BUP", "barnevern", "mobbet", "NAV", "03041661215", "030416 61215", "STOPP", "start",
    "HJELP", "ANGRE", "?", ".", "!", "🤒", "\u202e", "\x00", "\r\n", "–", "-", "og",
]  # fmt: skip

JSON_SCALAR = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20)
)
JSON = st.recursive(
    JSON_SCALAR,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
UNITS = st.lists(st.sampled_from(["school", "sfo"]), unique=True)
NAME = st.one_of(
    st.sampled_from(["Ola Nordmann", "Kari Nordmann", "Åse Ødegård", "Ola", "O", "Ola-Kari"]),
    st.text(min_size=1, max_size=20).filter(str.strip),
)
CHILD = st.fixed_dictionaries({"name": NAME, "units": UNITS})
TEXT = st.one_of(
    st.text(max_size=400),
    st.lists(st.sampled_from(WORDS), max_size=30).map(" ".join),
)
WHEN = st.datetimes(
    min_value=datetime(1900, 1, 2), max_value=datetime(9997, 12, 31, 23, 59), timezones=st.just(UTC)
).map(lambda d: d.isoformat())
LOCAL_WHEN = st.datetimes(min_value=datetime(2000, 1, 2), max_value=datetime(2099, 12, 30)).map(
    lambda d: d.isoformat()
)
CLOSED = st.one_of(
    st.none(),
    st.sets(st.dates(min_value=date(2025, 1, 1), max_value=date(2028, 12, 31)), max_size=40),
    st.just(lambda day: True),  # a calendar without a single school day
    st.just(lambda day: day.day % 2 == 0),
)


def assert_shape(out: dict[str, Any], request: dict[str, Any]) -> None:
    """Every field of a SPEC 6 answer, as the contract states it."""
    assert set(out) == {"id", "intent", "absences", "clarify", "sensitive", "redacted"}
    assert out["id"] == request.get("id")
    assert out["intent"] in INTENTS
    names = {c["name"].strip() for c in request["children"]}
    units_of: dict[str, set[str]] = {}
    for c in request["children"]:
        units_of.setdefault(c["name"].strip(), set()).update(c["units"])
    assert isinstance(out["absences"], list)
    if out["intent"] not in {"absence", "absence_cancel"}:
        assert out["absences"] == []
    for a in out["absences"]:
        assert set(a) == {"child", "units", "from", "to", "from_time", "to_time", "reason"}
        assert a["child"] in names
        assert a["units"], a
        assert set(a["units"]) <= units_of[a["child"]]
        assert a["units"] == sorted(set(a["units"]), key=["school", "sfo"].index)
        start, end = date.fromisoformat(a["from"]), date.fromisoformat(a["to"])
        assert start <= end
        for key in ("from_time", "to_time"):
            assert a[key] is None or HHMM.fullmatch(a[key]), a
        if a["from_time"] is not None or a["to_time"] is not None:
            assert start == end, a  # times only for part of one day
        assert a["reason"] in REASONS
    assert isinstance(out["clarify"], list)
    assert len(out["clarify"]) == len(set(out["clarify"]))
    assert set(out["clarify"]) <= {"child", "date", "unit"}
    assert out["sensitive"] == sorted(set(out["sensitive"]))
    assert set(out["sensitive"]) <= CATEGORIES
    assert isinstance(out["redacted"], str)
    if not out["sensitive"]:
        assert out["redacted"] == request["text"]
    json.dumps(out)  # serialisable as it is


@FUZZ
@given(
    text=TEXT,
    when=st.one_of(WHEN, LOCAL_WHEN),
    children=st.lists(CHILD, max_size=4),
    zone=st.sampled_from(ZONES),
    closed=CLOSED,
    id_=JSON,
)
@example(
    text="Ola er syk i 999999999 dager",
    when="2026-11-26T07:12:00+01:00",
    children=[{"name": "Ola", "units": ["school"]}],
    zone="Europe/Oslo",
    closed=None,
    id_=1,
)
@example(
    text="Ola er syk resten av uka",
    when="9997-12-31T23:59:59+00:00",
    children=[{"name": "Ola", "units": ["sfo"]}],
    zone="Pacific/Kiritimati",
    closed=None,
    id_="edge",
)
@example(text="Ola er syk i morgen", when="2026-11-26T07:12:00+01:00",
         children=[{"name": "Ola", "units": ["school"]}], zone="UTC", closed=lambda d: True,
         id_=None)  # fmt: skip
def test_well_formed_requests_always_get_a_valid_answer(
    text: str, when: str, children: list[dict[str, Any]], zone: str, closed: Any, id_: Any
) -> None:
    request = {"id": id_, "text": text, "received_at": when, "children": children}
    out = understand(request, timezone=zone, closed_days=closed)
    assert_shape(out, request)


@FUZZ
@given(request=st.one_of(JSON, st.dictionaries(
    st.sampled_from(["id", "text", "received_at", "children"]), JSON)))  # fmt: skip
def test_arbitrary_json_is_an_answer_or_invalid_request_never_anything_else(request: Any) -> None:
    try:
        out = understand(request)
    except InvalidRequest as e:
        assert str(e)  # names what is wrong
        return
    assert_shape(out, request)


@settings(max_examples=300, deadline=None)
@given(text=st.one_of(st.text(max_size=600), st.lists(st.sampled_from(WORDS)).map(" ".join)))
def test_redact_never_raises_and_only_replaces_spans(text: str) -> None:
    redacted, categories = redact(text)
    assert isinstance(redacted, str)
    assert categories == sorted(set(categories))
    assert set(categories) <= CATEGORIES
    if not categories:
        assert redacted == text
    else:
        assert REDACTION in redacted
    assert redact(redacted)[1] in ([], categories) or set(redact(redacted)[1]) <= set(categories)


@FUZZ
@given(raw=st.one_of(st.text(max_size=200), JSON.map(json.dumps)), number=st.integers(1, 10**6))
def test_one_cli_line_always_answers_one_json_object(raw: str, number: int) -> None:
    out = answer(raw, number)
    assert isinstance(out, dict) and "id" in out
    if "error" in out:
        assert out["error"].startswith(f"line {number}: ")
        assert "Traceback" not in out["error"]
    json.dumps(out, ensure_ascii=True)


def _lines(data: bytes) -> list[str]:
    """The lines `skolebro understand` reads: UTF-8 with U+FFFD, universal newlines."""
    return io.TextIOWrapper(io.BytesIO(data), encoding="utf-8", errors="replace").readlines()


@FUZZ
@given(chunks=st.lists(st.one_of(
    st.binary(max_size=80),
    st.text(max_size=80).map(lambda s: s.encode("utf-8", "surrogatepass")),
    st.builds(lambda t, i: json.dumps({"id": i, "text": t, "received_at": "2026-11-26T07:12",
                                       "children": [{"name": "Ola", "units": ["school"]}]}
                                      ).encode(), st.text(max_size=60), JSON),
), max_size=8))  # fmt: skip
def test_cli_stream_of_arbitrary_bytes_gives_one_json_line_per_line(chunks: list[bytes]) -> None:
    data = b"\n".join(chunks)
    stdin = io.TextIOWrapper(io.BytesIO(data), encoding="utf-8", errors="replace")
    out_buf = io.BytesIO()
    stdout = io.TextIOWrapper(out_buf, encoding="utf-8", write_through=True)
    assert run(stdin, stdout) == 0
    stdout.flush()
    expected = [line for line in _lines(data) if line.strip()]
    got = out_buf.getvalue().decode("utf-8").split("\n")
    assert got[-1] == ""
    got = got[:-1]
    assert len(got) == len(expected)
    for line in got:
        obj = json.loads(line)
        assert isinstance(obj, dict) and "id" in obj


def test_cli_process_on_random_bytes_never_prints_a_traceback() -> None:
    """The real console script over a few hundred garbage lines (seeded, reproducible)."""
    import random

    rng = random.Random(11)
    lines = [bytes(rng.randrange(256) for _ in range(rng.randrange(1, 120))) for _ in range(300)]
    lines += [b'{"id": 1, "text": "Ola er syk", "received_at": "2026-11-26T07:12", "children": 5}']
    lines += [b'{"id": [1e999], "text": "x", "received_at": "2026-11-26", "children": []}']
    lines += [b"[" * 100000]
    data = b"\n".join(lines) + b"\n"
    proc = subprocess.run(
        [str(Path(sys.executable).with_name("skolebro")), "understand"],
        input=data,
        capture_output=True,
        cwd=ROOT,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert b"Traceback" not in proc.stderr
    out = proc.stdout.decode("utf-8").splitlines()
    assert len(out) == len([x for x in _lines(data) if x.strip()])
    for line in out:
        assert isinstance(json.loads(line), dict)


def test_received_at_at_the_ends_of_the_calendar_is_refused_not_a_crash() -> None:
    """Regression (found by the fuzzer): 9999-12-31 in UTC+14 raised OverflowError."""
    kid = [{"name": "Ola", "units": ["school"]}]
    for when in ("9999-12-31T12:00:00+00:00", "0001-01-01T00:00:00+05:00"):
        request = {"id": when, "text": "Ola er syk i 30 dager", "received_at": when,
                   "children": kid}  # fmt: skip
        try:
            understand(request, timezone="Pacific/Kiritimati")
        except InvalidRequest as e:
            assert "received_at" in str(e)
        else:
            raise AssertionError("an out-of-range year should be refused")
        assert answer(json.dumps(request), 1)["error"].startswith("line 1: received_at")
    late = {"id": 1, "text": "Ola er syk i 30 dager resten av uka",
            "received_at": "9997-12-31T23:59:00+00:00", "children": kid}  # fmt: skip
    assert_shape(understand(late, timezone="Pacific/Kiritimati"), late)
