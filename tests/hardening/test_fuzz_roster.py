"""Fuzzing the roster import (SPEC 4) on a real store: rows of random text never raise.

Every data row is created, updated, unchanged or rejected; a rejection names its line
(a line of the file) and a one-line reason, even when the reason quotes a cell with a
line break in it. Names are stored as written (tests/test_roster.py keeps a quoted line
break); test_abuse_mail.py shows that such a name cannot inject a mail header.
"""

from __future__ import annotations

import asyncio
import csv
import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from bridge.roster import RosterError, RosterResult, import_roster
from bridge.roster.model import one_line
from bridge.store.db import create_engine
from tests.hardening.harness import sqlite_url

HEADER = [
    "kind", "unit_id", "name", "unit_type", "email", "phone", "group_id", "student_id",
    "first_name", "last_name", "sfo_unit_id", "groups", "guardian_id", "mobile", "language",
    "channels", "students", "restricted_students", "protected", "digest", "staff_id", "notify",
    "from", "to",
]  # fmt: skip
BASE = [
    {"kind": "unit", "unit_id": "u-a", "name": "A skole", "unit_type": "school",
     "email": "a@example.no"},
    {"kind": "unit", "unit_id": "u-a-sfo", "name": "A SFO", "unit_type": "sfo"},
    {"kind": "group", "unit_id": "u-a", "group_id": "g-1", "name": "1A"},
    {"kind": "student", "student_id": "s-1", "first_name": "Ola", "last_name": "N",
     "unit_id": "u-a", "sfo_unit_id": "u-a-sfo", "groups": "g-1"},
]  # fmt: skip
FUZZ = settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
VALUE = st.one_of(
    st.text(max_size=30),
    st.sampled_from(["u-a", "u-a-sfo", "g-1", "s-1", "s-1;s-2", "912 34 567", "+4791234567",
                     "0047 91234567", "kari@example.no", "Kari\r\nBcc: x@evil.example", "nb",
                     "sms;email;telegram", "yes", "no", "each", "2026-12-24", "2026-13-01",
                     "school", "sfo", "'; DROP TABLE guardians;--", "x" * 65, "\x00", ";;"]),
)  # fmt: skip
ROW = st.fixed_dictionaries(
    {"kind": st.one_of(st.sampled_from(["unit", "group", "student", "guardian", "staff",
                                        "closed", "UNIT", " guardian", "x", ""]), st.text())},
    optional={c: VALUE for c in HEADER if c != "kind"},
)  # fmt: skip
CONTROL = [chr(c) for c in range(32) if c != 9] + ["\x7f", "\u2028", "\u2029", "\x85"]


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    tmp = tmp_path_factory.mktemp("roster-fuzz")
    yield sqlite_url(tmp), tmp


def _write(path: Path, rows: list[dict[str, str]]) -> int:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=HEADER, lineterminator="\r\n")
    writer.writeheader()
    for row in rows:
        writer.writerow(row)
    data = buf.getvalue()
    path.write_bytes(data.encode("utf-8", "surrogatepass"))
    # Lines as an editor (and the csv module) counts them: a lone CR ends one too.
    return sum(1 for _ in io.StringIO(data, newline=""))


async def _import(url: str, path: Path) -> RosterResult:
    engine = create_engine(url)
    try:
        return await import_roster(engine, path)
    finally:
        await engine.dispose()


@FUZZ
@given(rows=st.lists(ROW, max_size=8))
@example(
    rows=[
        {
            "kind": "guardian",
            "guardian_id": "gd-x",
            "first_name": "Kari\r\nBcc: a@b.c",
            "last_name": "N",
            "mobile": "912 34 567",
            "students": "s-1",
        }
    ]
)
@example(
    rows=[
        {
            "kind": "guardian",
            "guardian_id": "gd-y",
            "first_name": "K",
            "mobile": "9\n1",
            "students": "s-1",
        }
    ]
)
@example(
    rows=[
        {
            "kind": "staff",
            "staff_id": "st-1",
            "first_name": "A\rB",
            "email": "a@b.no",
            "unit_id": "u-a",
        }
    ]
)
@example(rows=[{"kind": "unit", "unit_id": "u-b", "name": "B\nSubject: x", "unit_type": "school"}])
def test_random_rows_are_imported_or_rejected_with_a_line_and_a_reason(
    db: tuple[str, Path], rows: list[dict[str, str]]
) -> None:
    url, tmp = db
    path = tmp / "roster.csv"
    all_rows = BASE + rows
    lines = _write(path, all_rows)
    try:
        result = asyncio.run(_import(url, path))
    except RosterError as e:
        assert "\n" not in str(e)
        return
    counted = result.created + result.updated + result.unchanged + len(result.rejected)
    assert counted >= len([r for r in all_rows if any(one_line(v).strip() for v in r.values())])
    for rejection in result.rejected:
        assert 2 <= rejection.line <= lines, rejection
        assert rejection.reason and isinstance(rejection.reason, str)
        for c in CONTROL:
            assert c not in rejection.reason, (rejection, c)  # one line per rejection
