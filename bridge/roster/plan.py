"""Validate a read roster against what the store holds, and plan the writes.

Pure: takes the rows and a snapshot of the store (`Existing`), returns the counts, the
rejections and the bulk writes (`Op`) in an order the foreign keys accept. Keeping the
diff in Python is what lets a 90,000-row roster import with one SELECT per table.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Literal

from sqlalchemy import Table

from bridge.roster import fields as f
from bridge.roster.model import Rejection, Roster, RosterResult, Where
from bridge.store import tables as t

# The stored fields each comparison covers, in the order of the value tuples below.
UNIT_COLS = ("name", "unit_type", "email", "phone", "active")
GROUP_COLS = ("name", "active")
CLOSED_COLS = ("name",)
STUDENT_COLS = ("first_name", "last_name", "unit_id", "sfo_unit_id", "active")
GUARDIAN_COLS = (
    "first_name",
    "last_name",
    "mobile",
    "email",
    "language",
    "channels",
    "protected",
    "digest",
    "roster_order",
    "active",
)
STAFF_COLS = ("first_name", "last_name", "email", "language", "active")
STAFF_UNIT_COLS = ("notify", "groups", "active")  # groups as a tuple here, a JSON list stored

Values = tuple[Any, ...]
GroupKey = tuple[str, str]  # (unit_id, group_id)


@dataclass
class Existing:
    """The roster part of the store, loaded with one SELECT per table."""

    units: dict[str, Values] = field(default_factory=dict)
    groups: dict[GroupKey, Values] = field(default_factory=dict)
    closed: dict[tuple[str, date, date], Values] = field(default_factory=dict)
    students: dict[str, Values] = field(default_factory=dict)
    student_groups: dict[str, set[GroupKey]] = field(default_factory=dict)
    guardians: dict[str, Values] = field(default_factory=dict)
    guardian_links: dict[str, dict[str, bool]] = field(default_factory=dict)  # -> restricted
    staff: dict[str, Values] = field(default_factory=dict)
    staff_units: dict[tuple[str, str], Values] = field(default_factory=dict)


@dataclass
class Op:
    """One bulk statement: rows for an executemany; update/delete match `key` as `k_<col>`."""

    action: Literal["insert", "update", "delete"]
    table: Table
    key: tuple[str, ...] = ()
    rows: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Plan:
    result: RosterResult
    ops: list[Op]

    @property
    def row_writes(self) -> int:
        return sum(len(op.rows) for op in self.ops)


def _stored(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


class _Planner:
    def __init__(self, roster: Roster, existing: Existing, full: bool, now: datetime) -> None:
        self.roster = roster
        self.old = existing
        self.full = full
        self.now = now
        self.result = RosterResult(rejected=list(roster.rejected), full=full)
        # Ops in foreign-key order; each table's inserts come before the rows that refer to them.
        self._ops: dict[tuple[str, str, str], Op] = {}
        for table, actions in (
            (t.units, "insert update"),
            (t.groups, "insert update"),
            (t.closed_days, "insert update"),
            (t.students, "insert update"),
            (t.student_groups, "delete insert"),
            (t.guardians, "insert update"),
            (t.guardian_students, "delete insert update"),
            (t.staff, "insert update"),
            (t.staff_units, "insert update"),
        ):
            key = tuple(c.name for c in table.primary_key.columns)
            for action in actions.split():
                self._ops[(table.name, action, "")] = Op(action, table, key)  # type: ignore[arg-type]
        for table in (t.students, t.guardians, t.staff, t.staff_units):
            key = tuple(c.name for c in table.primary_key.columns)
            self._ops[(table.name, "update", "deactivate")] = Op("update", table, key)

    # --- bookkeeping -------------------------------------------------------------

    def reject(self, where: Where, reason: str) -> None:
        self.result.rejected.append(Rejection(where.line, reason, where.file))

    def count(self, status: str) -> None:
        if status == "created":
            self.result.created += 1
        elif status == "updated":
            self.result.updated += 1
        else:
            self.result.unchanged += 1

    def op(self, table: Table, action: str, tag: str = "") -> Op:
        return self._ops[(table.name, action, tag)]

    def upsert(
        self,
        table: Table,
        key: Sequence[Any],
        cols: Sequence[str],
        values: Values,
        old: Values | None,
    ) -> str:
        """Queue an insert or an update of one row; say which (or that nothing changed)."""
        stamped = "updated_at" in table.c
        if old is None:
            row = dict(zip(self.op(table, "insert").key, key, strict=True))
            row.update(zip(cols, map(_stored, values), strict=True))
            if "created_at" in table.c:
                row["created_at"] = self.now
            if stamped:
                row["updated_at"] = self.now
            self.op(table, "insert").rows.append(row)
            return "created"
        if old == values:
            return "unchanged"
        op = self.op(table, "update")
        row = {f"k_{k}": v for k, v in zip(op.key, key, strict=True)}
        row.update(zip(cols, map(_stored, values), strict=True))
        if stamped:
            row["updated_at"] = self.now
        op.rows.append(row)
        return "updated"

    # --- the kinds, in the order their references need ----------------------------

    def plan(self) -> Plan:
        unit_types = self.units()
        groups = self.groups(unit_types)
        self.closed(unit_types)
        students = self.students(unit_types, groups)
        self.guardians(students)
        self.staff(unit_types, groups)
        if self.full:
            self.deactivate()
        self.result.rejected.sort(key=lambda r: (r.file or "", r.line))
        ops = [op for op in self._ops.values() if op.rows]
        return Plan(self.result, ops)

    def units(self) -> dict[str, str]:
        types = {uid: values[1] for uid, values in self.old.units.items()}
        first: dict[str, Where] = {}
        for r in self.roster.units:
            label = f"unit {r.id}"
            if r.id in first:
                self.reject(r.where, f"{label}: listed twice (first in {first[r.id]})")
                continue
            first[r.id] = r.where
            errors: list[str] = []
            unit_type = _try(errors, f.unit_type, r.unit_type)
            email = _try(errors, f.email, r.email)
            phone = _try(errors, f.phone, r.phone, "phone")
            _try(errors, f.check_id, r.id, "unit_id")
            if not r.name:
                errors.append("missing name")
            if errors:
                self.reject(r.where, f"{label}: {'; '.join(errors)}")
                continue
            values = (r.name, unit_type, email, phone, True)
            self.count(self.upsert(t.units, (r.id,), UNIT_COLS, values, self.old.units.get(r.id)))
            types[r.id] = str(unit_type)
        return types

    def groups(self, unit_types: dict[str, str]) -> set[GroupKey]:
        known = set(self.old.groups)
        first: dict[GroupKey, Where] = {}
        for r in self.roster.groups:
            key = (r.unit_id, r.id)
            label = f"group {r.id}"
            if key in first:
                self.reject(
                    r.where, f"{label}: listed twice in {r.unit_id} (first in {first[key]})"
                )
                continue
            first[key] = r.where
            errors: list[str] = []
            _try(errors, f.check_id, r.id, "group_id")
            if not r.unit_id:
                errors.append("missing unit_id")
            elif r.unit_id not in unit_types:
                errors.append(f"unit {r.unit_id} is unknown")
            if errors:
                self.reject(r.where, f"{label}: {'; '.join(errors)}")
                continue
            values = (r.name or r.id, True)
            self.count(self.upsert(t.groups, key, GROUP_COLS, values, self.old.groups.get(key)))
            known.add(key)
        return known

    def closed(self, unit_types: dict[str, str]) -> None:
        first: dict[tuple[str, date, date], Where] = {}
        for r in self.roster.closed:
            label = f"closed {r.unit_id}"
            errors: list[str] = []
            if r.unit_id not in unit_types:
                errors.append(f"unit {r.unit_id} is unknown")
            start = _try(errors, f.iso_date, r.from_date, "from")
            end = _try(errors, f.iso_date, r.to_date, "to") if r.to_date else start
            if start is not None and end is not None and start > end:
                errors.append(f"from {start} is after to {end}")
            if errors or start is None or end is None:
                self.reject(r.where, f"{label}: {'; '.join(errors)}")
                continue
            key = (r.unit_id, start, end)
            if key in first:
                self.reject(r.where, f"{label}: {start}–{end} listed twice (first in {first[key]})")
                continue
            first[key] = r.where
            self.count(
                self.upsert(t.closed_days, key, CLOSED_COLS, (r.name,), self.old.closed.get(key))
            )

    def students(self, unit_types: dict[str, str], groups: set[GroupKey]) -> _Known:
        known = _Known(
            self.old.students.keys() & self.roster.listed_students
            if self.full
            else self.old.students.keys(),
        )
        for r in self.roster.students:
            label = f"student {r.id}"
            if r.id in known.valid:
                self.reject(r.where, f"{label}: listed twice (first in {known.valid[r.id]})")
                continue
            errors: list[str] = []
            _try(errors, f.check_id, r.id, "student_id")
            if not r.first_name:
                errors.append("missing first_name")
            _check_unit(errors, unit_types, r.unit_id, "school", "unit_id")
            if r.sfo_unit_id:
                _check_unit(errors, unit_types, r.sfo_unit_id, "sfo", "sfo_unit_id")
            links: set[GroupKey] = set()
            for gid in r.groups:
                found = {(u, gid) for u in (r.unit_id, r.sfo_unit_id) if u and (u, gid) in groups}
                if not found:
                    units = " or ".join(u for u in (r.unit_id, r.sfo_unit_id) if u)
                    errors.append(f"group {gid} is not a group of {units}")
                links |= found
            if errors:
                known.rejected.setdefault(r.id, r.where)
                self.reject(r.where, f"{label}: {'; '.join(errors)}")
                continue
            known.valid[r.id] = r.where
            values = (r.first_name, r.last_name, r.unit_id, r.sfo_unit_id or None, True)
            status = self.upsert(
                t.students, (r.id,), STUDENT_COLS, values, self.old.students.get(r.id)
            )
            old_links = self.old.student_groups.get(r.id, set())
            if links != old_links:
                self.op(t.student_groups, "delete").rows.extend(
                    {"k_student_id": r.id, "k_unit_id": u, "k_group_id": g}
                    for u, g in sorted(old_links - links)
                )
                self.op(t.student_groups, "insert").rows.extend(
                    {"student_id": r.id, "unit_id": u, "group_id": g}
                    for u, g in sorted(links - old_links)
                )
                if status == "unchanged":
                    status = "updated"
            self.count(status)
        return known

    def guardians(self, students: _Known) -> None:
        first: dict[str, Where] = {}
        for r in self.roster.guardians:
            label = f"guardian {r.id}"
            if r.id in first:
                self.reject(r.where, f"{label}: listed twice (first in {first[r.id]})")
                continue
            first[r.id] = r.where
            errors: list[str] = []
            _try(errors, f.check_id, r.id, "guardian_id")
            mobile = _try(errors, f.phone, r.mobile)
            email = _try(errors, f.email, r.email)
            language = _try(errors, f.language, r.language)
            if r.channels is None:
                # Nothing said: the identities the roster gives, SMS first.
                channels = [c for c, has in (("sms", r.mobile), ("email", r.email)) if has]
            else:
                channels = _try(errors, f.channels, r.channels) or []
            protected = _try(errors, f.yes_no, r.protected, "protected")
            digest = _try(errors, f.yes_no, r.digest, "digest")
            links = {sid: False for sid in r.students}
            links.update((sid, True) for sid in r.restricted)
            if not links:
                errors.append("no students")
            for sid in r.students:
                students.check(errors, sid, "student")
            for sid in r.restricted:
                students.check(errors, sid, "restricted student")
            if errors:
                self.reject(r.where, f"{label}: {'; '.join(errors)}")
                continue
            values = (
                r.first_name,
                r.last_name,
                mobile,
                email,
                language,
                ",".join(channels),
                protected,
                digest,
                r.where.line,  # roster_order: "the guardian listed first in the roster"
                True,
            )
            status = self.upsert(
                t.guardians, (r.id,), GUARDIAN_COLS, values, self.old.guardians.get(r.id)
            )
            old_links = self.old.guardian_links.get(r.id, {})
            if links != old_links:
                self.op(t.guardian_students, "delete").rows.extend(
                    {"k_guardian_id": r.id, "k_student_id": sid}
                    for sid in sorted(old_links.keys() - links.keys())
                )
                for sid, restricted in links.items():
                    if sid not in old_links:
                        self.op(t.guardian_students, "insert").rows.append(
                            {"guardian_id": r.id, "student_id": sid, "restricted": restricted}
                        )
                    elif old_links[sid] != restricted:
                        self.op(t.guardian_students, "update").rows.append(
                            {"k_guardian_id": r.id, "k_student_id": sid, "restricted": restricted}
                        )
                if status == "unchanged":
                    status = "updated"
            self.count(status)

    def staff(self, unit_types: dict[str, str], groups: set[GroupKey]) -> None:
        # A staff member in several units has one row per unit; the person's fields come
        # from their first good row, and later rows may leave them empty or must agree.
        person: dict[str, tuple[Where, Values]] = {}
        first: dict[tuple[str, str], Where] = {}
        for r in self.roster.staff:
            label = f"staff {r.id}"
            key = (r.id, r.unit_id)
            if key in first:
                self.reject(
                    r.where, f"{label}: listed twice for {r.unit_id} (first in {first[key]})"
                )
                continue
            first[key] = r.where
            errors: list[str] = []
            _try(errors, f.check_id, r.id, "staff_id")
            email = _try(errors, f.email, r.email)
            language = _try(errors, f.language, r.language, default=None)
            notify = _try(errors, f.notify, r.notify)
            if not r.unit_id:
                errors.append("missing unit_id")
            elif r.unit_id not in unit_types:
                errors.append(f"unit {r.unit_id} is unknown")
            else:
                errors.extend(
                    f"group {gid} is not a group of {r.unit_id}"
                    for gid in r.groups
                    if (r.unit_id, gid) not in groups
                )
            values: Values = (r.first_name, r.last_name, email, language, True)
            earlier = person.get(r.id)
            if earlier is not None:
                where0, values0 = earlier
                merged = tuple(
                    v if v not in ("", None) else v0 for v, v0 in zip(values, values0, strict=True)
                )
                differ = [c for c, a, b in zip(STAFF_COLS, merged, values0, strict=True) if a != b]
                if differ:
                    errors.append(f"{', '.join(differ)} differ from {where0}")
                values = values0
            elif not r.email:
                errors.append("missing email")
            if errors:
                self.reject(r.where, f"{label}: {'; '.join(errors)}")
                continue
            status = "unchanged"
            if earlier is None:
                person[r.id] = (r.where, values)
                status = self.upsert(t.staff, (r.id,), STAFF_COLS, values, self.old.staff.get(r.id))
            unit_values = (notify, tuple(r.groups), True)
            unit_status = self.upsert(
                t.staff_units, key, STAFF_UNIT_COLS, unit_values, self.old.staff_units.get(key)
            )
            if "created" in (status, unit_status):
                status = "created"
            elif "updated" in (status, unit_status):
                status = "updated"
            self.count(status)

    def deactivate(self) -> None:
        """A full import: whoever the file no longer lists is set inactive, never deleted."""
        stamp: dict[str, Any] = {"active": False, "updated_at": self.now}
        listed_staff = {sid for sid, _ in self.roster.listed_staff_units}
        gone_staff: set[str] = set()
        for table, old, listed in (
            (t.students, self.old.students, self.roster.listed_students),
            (t.guardians, self.old.guardians, self.roster.listed_guardians),
            (t.staff, self.old.staff, listed_staff),
        ):
            rows = [
                {"k_id": i, **stamp} for i, v in sorted(old.items()) if v[-1] and i not in listed
            ]
            self.op(table, "update", "deactivate").rows.extend(rows)
            self.result.deactivated += len(rows)
            if table is t.staff:
                gone_staff = {str(row["k_id"]) for row in rows}
        memberships = self.op(t.staff_units, "update", "deactivate")
        for (sid, uid), v in sorted(self.old.staff_units.items()):
            if v[-1] and (sid, uid) not in self.roster.listed_staff_units:
                memberships.rows.append({"k_staff_id": sid, "k_unit_id": uid, "active": False})
                # Someone leaving altogether counts once, as a person.
                if sid not in gone_staff:
                    self.result.deactivated += 1


class _Known:
    """Students a guardian may name: this file's good rows, and the store's."""

    def __init__(self, stored: Iterable[str]) -> None:
        self.stored = set(stored)
        self.valid: dict[str, Where] = {}
        self.rejected: dict[str, Where] = {}

    def check(self, errors: list[str], ident: str, what: str) -> None:
        if ident in self.valid or ident in self.stored:
            return
        if ident in self.rejected:
            errors.append(f"{what} {ident} is not imported ({self.rejected[ident]} was rejected)")
        else:
            errors.append(f"{what} {ident} is unknown")


def _check_unit(
    errors: list[str], unit_types: dict[str, str], unit_id: str, kind: str, column: str
) -> None:
    if not unit_id:
        errors.append(f"missing {column}")
    elif unit_id not in unit_types:
        errors.append(f"unit {unit_id} is unknown")
    elif unit_types[unit_id] != kind:
        errors.append(f"{column} {unit_id} is not a unit of type {kind}")


def _try(errors: list[str], check: Any, *args: Any, **kwargs: Any) -> Any:
    """Run one field rule; a `FieldError` joins the row's reasons and gives None."""
    try:
        return check(*args, **kwargs)
    except f.FieldError as e:
        errors.append(str(e))
        return None


def make_plan(roster: Roster, existing: Existing, *, full: bool, now: datetime) -> Plan:
    return _Planner(roster, existing, full, now).plan()
