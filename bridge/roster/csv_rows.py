"""Read skolebro's own roster CSV (SPEC 4): one file, a `kind` column, rows in any order."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterator
from pathlib import Path

from bridge.roster.model import (
    ClosedRow,
    GroupRow,
    GuardianRow,
    Roster,
    RosterError,
    StaffRow,
    StudentRow,
    UnitRow,
    Where,
    split_list,
)

KINDS = ("unit", "group", "closed", "student", "guardian", "staff")
# Every column of SPEC section 4, in the order our own files write them (a file may
# hold any subset, in any order).
COLUMNS = (
    "kind", "unit_id", "name", "unit_type", "email", "phone", "group_id", "student_id",
    "first_name", "last_name", "sfo_unit_id", "groups", "guardian_id", "mobile", "language",
    "channels", "students", "restricted_students", "protected", "digest", "staff_id",
    "notify", "from", "to",
)  # fmt: skip
_ID_COLUMN = {
    "unit": "unit_id",
    "group": "group_id",
    "closed": "unit_id",
    "student": "student_id",
    "guardian": "guardian_id",
    "staff": "staff_id",
}


def decode(data: bytes, name: str) -> str:
    """UTF-8, with or without a BOM; anything else is a one-line `RosterError`."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise RosterError(f"{name}: not UTF-8 text (line {line}); save it as 'CSV UTF-8'") from None


def read_table(data: bytes, name: str) -> tuple[list[str], Iterator[tuple[int, list[str]]]]:
    """Header (stripped), and the non-blank records, each with the line it starts on.

    The records are streamed: a 90,000-row roster is never held as one list of lists.
    """
    reader = csv.reader(io.StringIO(decode(data, name), newline=""))
    try:
        header = next(reader, None)
    except csv.Error as e:
        raise RosterError(f"{name} line {reader.line_num}: {e}") from None
    if not header or not any(h.strip() for h in header):
        raise RosterError(f"{name}: no header row in line 1")

    def records() -> Iterator[tuple[int, list[str]]]:
        previous = reader.line_num
        try:
            for record in reader:
                start, previous = previous + 1, reader.line_num
                if any(cell.strip() for cell in record):
                    yield start, record
        except csv.Error as e:
            raise RosterError(f"{name} line {reader.line_num}: {e}") from None

    return [h.strip() for h in header], records()


def read_csv(path: Path, tick: Callable[[int], None] | None = None) -> Roster:
    name = path.name
    try:
        data = path.read_bytes()
    except OSError as e:
        raise RosterError(f"{name}: cannot be read ({e.strerror or e})") from None
    header, records = read_table(data, name)
    del data
    columns = [h.lower() for h in header]
    if "kind" not in columns:
        if "sourcedid" in columns:
            raise RosterError(
                f"{name} is one file of a OneRoster bundle; "
                "give the folder or zip that holds orgs.csv and users.csv"
            )
        if len(columns) == 1 and ";" in header[0]:
            raise RosterError(f"{name}: columns are separated by ';'; the roster needs ','")
        raise RosterError(f"{name}: no 'kind' column in the header (line 1)")
    seen: set[str] = set()
    for column in columns:
        if column and column in seen:
            raise RosterError(f"{name}: column '{column}' appears twice in the header")
        seen.add(column)

    roster = Roster(format="csv")
    width = len(columns)
    n = 0
    for n, (line, record) in enumerate(records, 1):
        if tick is not None and n % 1000 == 0:
            tick(1000)
        where = Where(line)
        if len(record) > width and any(cell.strip() for cell in record[width:]):
            roster.reject(where, f"{len(record)} fields, but the header has {width}")
            continue
        row = {col: cell.strip() for col, cell in zip(columns, record, strict=False)}
        _add_row(roster, where, row)
    if tick is not None:
        tick(n % 1000)
    return roster


def _add_row(roster: Roster, where: Where, row: dict[str, str]) -> None:
    get = row.get
    kind = get("kind", "").lower()
    if kind not in KINDS:
        reason = f"unknown kind '{get('kind', '')}'" if kind else "missing kind"
        roster.reject(where, f"{reason} (one of {', '.join(KINDS)})")
        return
    id_column = _ID_COLUMN[kind]
    ident = get(id_column, "")
    if not ident:
        roster.reject(where, f"{kind}: missing {id_column}")
        return
    if kind == "unit":
        roster.units.append(
            UnitRow(
                where=where,
                id=ident,
                name=get("name", ""),
                unit_type=get("unit_type", ""),
                email=get("email", ""),
                phone=get("phone", ""),
            )
        )
    elif kind == "group":
        roster.groups.append(
            GroupRow(where=where, unit_id=get("unit_id", ""), id=ident, name=get("name", ""))
        )
    elif kind == "closed":
        roster.closed.append(
            ClosedRow(
                where=where,
                unit_id=ident,
                from_date=get("from", ""),
                to_date=get("to", ""),
                name=get("name", ""),
            )
        )
    elif kind == "student":
        roster.listed_students.add(ident)
        roster.students.append(
            StudentRow(
                where=where,
                id=ident,
                first_name=get("first_name", ""),
                last_name=get("last_name", ""),
                unit_id=get("unit_id", ""),
                sfo_unit_id=get("sfo_unit_id", ""),
                groups=split_list(get("groups", "")),
            )
        )
    elif kind == "guardian":
        roster.listed_guardians.add(ident)
        channels = get("channels", "")
        roster.guardians.append(
            GuardianRow(
                where=where,
                id=ident,
                first_name=get("first_name", ""),
                last_name=get("last_name", ""),
                mobile=get("mobile", ""),
                email=get("email", ""),
                language=get("language", ""),
                channels=split_list(channels) if channels else None,
                students=split_list(get("students", "")),
                restricted=split_list(get("restricted_students", "")),
                protected=get("protected", ""),
                digest=get("digest", ""),
            )
        )
    else:
        roster.listed_staff_units.add((ident, get("unit_id", "")))
        roster.staff.append(
            StaffRow(
                where=where,
                id=ident,
                first_name=get("first_name", ""),
                last_name=get("last_name", ""),
                email=get("email", ""),
                unit_id=get("unit_id", ""),
                groups=split_list(get("groups", "")),
                notify=get("notify", ""),
                language=get("language", ""),
            )
        )
