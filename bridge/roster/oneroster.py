"""Read a OneRoster 1.2 CSV bundle (a folder or a zip) as roster rows.

The mapping, and the choices made where OneRoster has no word for a Norwegian idea:

- `orgs.csv`: an org of type `school` is a school unit. An org is an **SFO unit** when its
  metadata says so (`metadata.unitType` or `metadata.skolebro.unitType` = `sfo`), or else
  when its type is `school`, `department` or `program` and its name holds the word SFO,
  AKS, aktivitetsskole(n) or skolefritidsordning(en) — that is how Norwegian school
  systems export them. Other orgs (district, local, ...) are not units and are passed
  over without a count. Unit e-mail and phone may come from `metadata.email`/`.phone`.
- `classes.csv` → groups of the class's `schoolSourcedId`, named by `title` (else
  `classCode`).
- `users.csv`: the role and orgs come from `role` and `orgSourcedIds` when users.csv has
  them (the 1.1 layout many exporters still write), else from `roles.csv` (1.2), with
  `primaryOrgSourcedId` first. Names prefer `preferredGivenName`/`preferredFamilyName`:
  parents write the name the child goes by.
  - `student` → a student: the first school among their orgs, the first SFO as their SFO
    unit, their student enrolments as groups.
  - `guardian`, `parent`, `relative`, `relativeOfStudent` → a guardian: mobile from
    `sms`, else `phone`; `email`; students from `agentSourcedIds`, and from the students
    that name this user among their own agents; `language`, `channels`,
    `restrictedStudents`, `protected` and `digest` from `metadata.*` when present.
  - `teacher`, `administrator`, `aide`, `principal`, `siteAdministrator`, `counselor` →
    staff, one membership per school or SFO among their orgs (and the units of the classes
    they teach), groups from their enrolments, `notify` from `metadata.notify`, else `both`.
  - A user with several roles becomes each of them (a teacher who is also a parent).
  - Other roles (proctor, district administrators, ...) are passed over.
- Rows with `status` `tobedeleted` or `inactive` count as absent.
- Rejections name the file and its line; `roster_order` of a guardian is their line in
  users.csv.
"""

from __future__ import annotations

import re
import zipfile
from collections.abc import Callable
from pathlib import Path

from bridge.roster.csv_rows import read_table
from bridge.roster.model import (
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

REQUIRED = ("orgs.csv", "users.csv")
OPTIONAL = ("classes.csv", "enrollments.csv", "roles.csv")
GUARDIAN_ROLES = frozenset({"guardian", "parent", "relative", "relativeofstudent"})
STAFF_ROLES = frozenset(
    {"teacher", "administrator", "aide", "principal", "siteadministrator", "counselor"}
)
SFO_ORG_TYPES = frozenset({"school", "department", "program"})
_SFO_NAME = re.compile(
    r"\b(sfo|aks|aktivitetsskolen?|skolefritidsordningen?)\b", re.IGNORECASE | re.UNICODE
)
_LANGUAGE_ALIASES = {"no": "nb", "nob": "nb", "nno": "nn", "eng": "en"}

Table = list[tuple[Where, dict[str, str]]]


def is_bundle_folder(path: Path) -> bool:
    names = {p.name.lower() for p in path.iterdir() if p.is_file()}
    return all(name in names for name in REQUIRED)


def _read_members(path: Path) -> dict[str, bytes]:
    """The bundle's CSV files by lower-case name, from a folder or a zip (any sub-folder)."""
    wanted = set(REQUIRED + OPTIONAL)
    found: dict[str, bytes] = {}
    if path.is_dir():
        for p in path.iterdir():
            if p.is_file() and p.name.lower() in wanted:
                found[p.name.lower()] = p.read_bytes()
    else:
        try:
            with zipfile.ZipFile(path) as bundle:
                # The shallowest copy wins; macOS resource forks are not files of the bundle.
                infos = sorted(bundle.infolist(), key=lambda i: i.filename.count("/"))
                for info in infos:
                    name = info.filename.rsplit("/", 1)[-1].lower()
                    if info.is_dir() or "__MACOSX" in info.filename or name not in wanted:
                        continue
                    found.setdefault(name, bundle.read(info))
        except (zipfile.BadZipFile, OSError) as e:
            raise RosterError(f"{path.name}: cannot be read as a zip ({e})") from None
    missing = [name for name in REQUIRED if name not in found]
    if missing:
        raise RosterError(
            f"{path.name}: not a OneRoster bundle (no {' or '.join(missing)}); "
            "a roster CSV must be a .csv file with a 'kind' column"
        )
    return found


def _table(members: dict[str, bytes], name: str) -> tuple[list[str], Table]:
    data = members.get(name)
    if data is None:
        return [], []
    header, records = read_table(data, name)
    columns = [h.lower() for h in header]
    rows: Table = []
    for line, record in records:
        row = {c: v.strip() for c, v in zip(columns, record, strict=False)}
        if row.get("status", "").lower() in ("tobedeleted", "inactive"):
            continue
        rows.append((Where(line, name), row))
    return columns, rows


def _meta(row: dict[str, str], *names: str) -> str:
    """An extension column: `metadata.skolebro.<name>` or `metadata.<name>`, any case."""
    for name in names:
        for key in (f"metadata.skolebro.{name.lower()}", f"metadata.{name.lower()}"):
            value = row.get(key, "")
            if value:
                return value
    return ""


def _unit_type(row: dict[str, str]) -> str | None:
    declared = _meta(row, "unitType", "unit_type").lower()
    if declared in ("school", "sfo"):
        return declared
    org_type = row.get("type", "").lower()
    if org_type in SFO_ORG_TYPES and _SFO_NAME.search(row.get("name", "")):
        return "sfo"
    return "school" if org_type == "school" else None


def _language(raw: str) -> str:
    """`nb-NO`, `nob`, `no` -> `nb`; what is left unknown is rejected by the field rule."""
    value = raw.strip().lower().replace("_", "-").split("-", 1)[0]
    return _LANGUAGE_ALIASES.get(value, value) if value else ""


def _ids(value: str) -> list[str]:
    """OneRoster's multi-valued fields are comma-separated inside one cell."""
    return split_list(value, ",")


def _unique(values: list[str]) -> list[str]:
    return list(dict.fromkeys(v for v in values if v))


def read_oneroster(path: Path, tick: Callable[[int], None] | None = None) -> Roster:
    members = _read_members(path)
    _, orgs = _table(members, "orgs.csv")
    user_columns, users = _table(members, "users.csv")
    _, classes = _table(members, "classes.csv")
    _, enrollments = _table(members, "enrollments.csv")
    role_columns, roles = _table(members, "roles.csv")
    del members
    if tick is not None:
        tick(len(orgs) + len(users) + len(classes) + len(enrollments) + len(roles))
    if "role" not in user_columns and "role" not in role_columns:
        raise RosterError(f"{path.name}: users.csv has no 'role' column and there is no roles.csv")
    roster = Roster(format="oneroster")

    unit_types: dict[str, str] = {}
    for where, row in orgs:
        oid = row.get("sourcedid", "")
        if not oid:
            roster.reject(where, "org: missing sourcedId")
            continue
        kind = _unit_type(row)
        if kind is None:
            continue
        unit_types[oid] = kind
        roster.units.append(
            UnitRow(
                where=where,
                id=oid,
                name=row.get("name", ""),
                unit_type=kind,
                email=_meta(row, "email"),
                phone=_meta(row, "phone"),
            )
        )

    class_units: dict[str, str] = {}
    for where, row in classes:
        cid = row.get("sourcedid", "")
        if not cid:
            roster.reject(where, "class: missing sourcedId")
            continue
        school = row.get("schoolsourcedid", "")
        class_units[cid] = school
        name = row.get("title", "") or row.get("classcode", "")
        roster.groups.append(GroupRow(where=where, unit_id=school, id=cid, name=name))

    # Every user's (role, org) pairs, from users.csv itself (1.1 layout) or roles.csv (1.2).
    user_roles: dict[str, list[tuple[str, str]]] = {}
    if "role" in user_columns:
        for _, row in users:
            role = row.get("role", "").lower()
            orgs_of = _ids(row.get("primaryorgsourcedid", "")) + _ids(row.get("orgsourcedids", ""))
            user_roles[row.get("sourcedid", "")] = [(role, o) for o in orgs_of] or [(role, "")]
    else:
        primary = {row.get("sourcedid", ""): row.get("primaryorgsourcedid", "") for _, row in users}
        for _, row in roles:
            uid = row.get("usersourcedid", "")
            pair = (row.get("role", "").lower(), row.get("orgsourcedid", ""))
            user_roles.setdefault(uid, []).append(pair)
        for uid, pairs in user_roles.items():
            # The primary org first: "the first school among their orgs" is the primary one.
            main = primary.get(uid, "")
            pairs.sort(key=lambda pair: pair[1] != main)

    user_ids = {row.get("sourcedid", "") for _, row in users}
    students_ids = {
        uid for uid, pairs in user_roles.items() if any(r == "student" for r, _ in pairs)
    }

    student_classes: dict[str, list[str]] = {}
    staff_classes: dict[str, list[str]] = {}
    for where, row in enrollments:
        role = row.get("role", "").lower()
        if role == "student":
            target = student_classes
        elif role in STAFF_ROLES:
            target = staff_classes
        else:
            continue
        label = f"enrollment {row.get('sourcedid', '')}".rstrip()
        cid, uid = row.get("classsourcedid", ""), row.get("usersourcedid", "")
        if cid not in class_units:
            roster.reject(where, f"{label}: class {cid or '(none)'} is unknown")
        elif uid not in user_ids:
            roster.reject(where, f"{label}: user {uid or '(none)'} is unknown")
        elif cid not in target.setdefault(uid, []):
            target[uid].append(cid)

    # Agents go both ways in OneRoster: a student's agents are their guardians.
    children_of: dict[str, list[str]] = {}
    for _, row in users:
        uid = row.get("sourcedid", "")
        if uid in students_ids:
            for agent in _ids(row.get("agentsourcedids", "")):
                children_of.setdefault(agent, []).append(uid)

    for where, row in users:
        uid = row.get("sourcedid", "")
        if not uid:
            roster.reject(where, "user: missing sourcedId")
            continue
        pairs = user_roles.get(uid, [])
        if not pairs:
            roster.reject(where, f"user {uid}: no role")
            continue
        first = row.get("preferredgivenname", "") or row.get("givenname", "")
        last = row.get("preferredfamilyname", "") or row.get("familyname", "")
        role_names = {r for r, _ in pairs}
        if "student" in role_names:
            roster.listed_students.add(uid)
            orgs_of = [o for r, o in pairs if r == "student"]
            schools = [o for o in orgs_of if unit_types.get(o) == "school"]
            sfos = [o for o in orgs_of if unit_types.get(o) == "sfo"]
            if not schools:
                roster.reject(where, f"student {uid}: none of its orgs is a school")
            else:
                roster.students.append(
                    StudentRow(
                        where=where,
                        id=uid,
                        first_name=first,
                        last_name=last,
                        unit_id=schools[0],
                        sfo_unit_id=sfos[0] if sfos else "",
                        groups=student_classes.get(uid, []),
                    )
                )
        if role_names & GUARDIAN_ROLES:
            roster.listed_guardians.add(uid)
            # Agents that are other adults (a spouse) are not children.
            children = [
                a
                for a in _ids(row.get("agentsourcedids", "")) + children_of.get(uid, [])
                if a in students_ids or a not in user_ids
            ]
            channels = _meta(row, "channels")
            roster.guardians.append(
                GuardianRow(
                    where=where,
                    id=uid,
                    first_name=first,
                    last_name=last,
                    mobile=row.get("sms", "") or row.get("phone", ""),
                    email=row.get("email", ""),
                    language=_language(_meta(row, "language", "preferredLanguage", "lang")),
                    channels=split_list(channels.replace(",", ";")) if channels else None,
                    students=_unique(children),
                    restricted=split_list(
                        _meta(row, "restrictedStudents", "restricted_students").replace(",", ";")
                    ),
                    protected=_meta(row, "protected"),
                    digest=_meta(row, "digest"),
                )
            )
        if role_names & STAFF_ROLES:
            taught = staff_classes.get(uid, [])
            units = [o for r, o in pairs if r in STAFF_ROLES and o in unit_types]
            units += [class_units[c] for c in taught]
            units = _unique(units)
            if not units:
                roster.reject(where, f"staff {uid}: none of its orgs is a school or SFO")
            for unit in units:
                roster.listed_staff_units.add((uid, unit))
                roster.staff.append(
                    StaffRow(
                        where=where,
                        id=uid,
                        first_name=first,
                        last_name=last,
                        email=row.get("email", ""),
                        unit_id=unit,
                        groups=[c for c in taught if class_units[c] == unit],
                        notify=_meta(row, "notify"),
                        language=_language(_meta(row, "language", "preferredLanguage", "lang")),
                    )
                )
    return roster
