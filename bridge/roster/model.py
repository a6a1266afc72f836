"""What a roster file says, before it meets the store, and what an import reports."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any


class RosterError(Exception):
    """The file cannot be read as a roster at all; the message is one line for the user."""


@dataclass(frozen=True, slots=True)
class Where:
    """The line a row starts on; `file` names the member of a OneRoster bundle."""

    line: int
    file: str | None = None

    def __str__(self) -> str:
        return f"{self.file} line {self.line}" if self.file else f"line {self.line}"


@dataclass(frozen=True, slots=True)
class Rejection:
    line: int
    reason: str
    file: str | None = None  # set for OneRoster bundles: the line is in this file

    def __post_init__(self) -> None:
        # A reason may quote a cell, and a quoted cell may hold a line break: the report
        # is one line per rejection all the same.
        object.__setattr__(self, "reason", one_line(self.reason))

    def to_json(self) -> dict[str, Any]:
        reason = f"{self.file}: {self.reason}" if self.file else self.reason
        return {"line": self.line, "reason": reason}

    def __str__(self) -> str:
        return f"{Where(self.line, self.file)}: {self.reason}"


@dataclass
class RosterResult:
    """Counts per roster row: each row is created, updated, unchanged or rejected."""

    created: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected: list[Rejection] = field(default_factory=list)
    # Students, guardians, staff and staff memberships set inactive by a full import.
    deactivated: int = 0
    full: bool = False

    @property
    def ok(self) -> bool:
        return not self.rejected

    def to_json(self) -> dict[str, Any]:
        """SPEC 2's object; a full import adds `deactivated` (an extra key, nothing renamed)."""
        out: dict[str, Any] = {
            "created": self.created,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "rejected": [r.to_json() for r in self.rejected],
        }
        if self.full:
            out["deactivated"] = self.deactivated
        return out

    def summary_lines(self) -> list[str]:
        counts = (
            f"created {self.created}, updated {self.updated}, unchanged {self.unchanged}, "
            f"rejected {len(self.rejected)}"
        )
        if self.full:
            counts += f", deactivated {self.deactivated}"
        return [counts, *(str(r) for r in self.rejected)]


# --- rows as read, before validation: raw text, split lists -----------------------


@dataclass(slots=True)
class UnitRow:
    where: Where
    id: str
    name: str
    unit_type: str
    email: str
    phone: str


@dataclass(slots=True)
class GroupRow:
    where: Where
    unit_id: str
    id: str
    name: str


@dataclass(slots=True)
class ClosedRow:
    where: Where
    unit_id: str
    from_date: str
    to_date: str
    name: str


@dataclass(slots=True)
class StudentRow:
    where: Where
    id: str
    first_name: str
    last_name: str
    unit_id: str
    sfo_unit_id: str
    groups: list[str]


@dataclass(slots=True)
class GuardianRow:
    where: Where
    id: str
    first_name: str
    last_name: str
    mobile: str
    email: str
    language: str
    channels: list[str] | None  # None: the file says nothing, derive from the identities
    students: list[str]
    restricted: list[str]
    protected: str
    digest: str


@dataclass(slots=True)
class StaffRow:
    where: Where
    id: str
    first_name: str
    last_name: str
    email: str
    unit_id: str
    groups: list[str]
    notify: str
    language: str


@dataclass
class Roster:
    """Everything one file holds, by kind, plus the rows already rejected while reading."""

    format: str  # "csv" or "oneroster"
    units: list[UnitRow] = field(default_factory=list)
    groups: list[GroupRow] = field(default_factory=list)
    closed: list[ClosedRow] = field(default_factory=list)
    students: list[StudentRow] = field(default_factory=list)
    guardians: list[GuardianRow] = field(default_factory=list)
    staff: list[StaffRow] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)
    # Ids the file lists even on rows that were rejected: a full import keeps them active.
    listed_students: set[str] = field(default_factory=set)
    listed_guardians: set[str] = field(default_factory=set)
    listed_staff_units: set[tuple[str, str]] = field(default_factory=set)

    def reject(self, where: Where, reason: str) -> None:
        self.rejected.append(Rejection(where.line, reason, where.file))

    @property
    def row_count(self) -> int:
        return (
            len(self.units)
            + len(self.groups)
            + len(self.closed)
            + len(self.students)
            + len(self.guardians)
            + len(self.staff)
        )


# Control characters (CR and LF above all) and line separators.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]+")


def one_line(value: str) -> str:
    """`value` with control characters and line separators each run made one space."""
    return _CONTROL.sub(" ", value) if _CONTROL.search(value) else value


def split_list(value: str, sep: str = ";") -> list[str]:
    """`a; b;;c` -> [a, b, c]: blanks dropped, first occurrence kept."""
    out: list[str] = []
    for part in value.split(sep):
        part = part.strip()
        if part and part not in out:
            out.append(part)
    return out
