"""Roster import (SPEC 4): our CSV and OneRoster bundles, on SQLite and PostgreSQL."""

from __future__ import annotations

import shutil
import zipfile
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from bridge.roster import RosterError, import_roster, read_roster
from bridge.store import tables as t

DATA = Path(__file__).parent / "data"
EXAMPLE = DATA / "example.csv"
ROSTER = DATA / "roster"
NOW = datetime(2026, 11, 26, 7, 12, tzinfo=UTC)


async def rows(engine: AsyncEngine, table: Any, *where: Any) -> list[dict[str, Any]]:
    async with engine.connect() as conn:
        result = await conn.execute(select(table).where(*where))
        return [dict(r._mapping) for r in result]


async def count(engine: AsyncEngine, table: Any) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(table))).scalar_one())


def write(tmp_path: Path, text: str, name: str = "roster.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# --- our CSV ------------------------------------------------------------------------


async def test_example_imports_every_kind_and_a_rerun_changes_nothing(
    engine: AsyncEngine,
) -> None:
    first = await import_roster(engine, EXAMPLE)
    assert first.to_json() == {"created": 13, "updated": 0, "unchanged": 0, "rejected": []}
    assert first.summary_lines() == ["created 13, updated 0, unchanged 0, rejected 0"]
    for table, n in [(t.units, 2), (t.groups, 2), (t.students, 3), (t.guardians, 3)]:
        assert await count(engine, table) == n
    assert await count(engine, t.staff) == 3 and await count(engine, t.staff_units) == 3
    stamps = {g["id"]: g["updated_at"] for g in await rows(engine, t.guardians)}

    again = await import_roster(engine, EXAMPLE)
    assert again.to_json() == {"created": 0, "updated": 0, "unchanged": 13, "rejected": []}
    guardians = {g["id"]: g for g in await rows(engine, t.guardians)}
    assert {i: g["updated_at"] for i, g in guardians.items()} == stamps

    # The first guardian listed is answerable: roster_order is the line number.
    assert {i: g["roster_order"] for i, g in guardians.items()} == {
        "gd-kjersti": 9,
        "gd-per": 10,
        "gd-amina": 11,
    }
    assert guardians["gd-per"]["channels"] == "telegram,sms"
    assert guardians["gd-per"]["language"] == "nn"
    ola = (await rows(engine, t.students, t.students.c.id == "s-ola"))[0]
    assert (ola["unit_id"], ola["sfo_unit_id"]) == ("u-fjell", "u-fjell-sfo")
    tor = await rows(engine, t.staff_units, t.staff_units.c.staff_id == "st-tor")
    assert [(s["unit_id"], s["notify"], s["groups"]) for s in tor] == [
        ("u-fjell", "digest", ["g-5b"])
    ]

    audit = await rows(engine, t.audit_log)
    assert [(a["actor"], a["action"]) for a in audit] == [("roster", "roster.import")] * 2
    assert audit[1]["detail"]["unchanged"] == 13
    assert "Nordmann" not in str(audit) and "+47" not in str(audit)


async def test_bad_rows_are_rejected_by_line_and_the_good_rows_imported(
    engine: AsyncEngine,
) -> None:
    result = await import_roster(engine, ROSTER / "bad.csv")
    assert result.to_json() == {
        "created": 7,
        "updated": 0,
        "unchanged": 0,
        "rejected": [
            {"line": 7, "reason": "guardian gd-x: mobile '123' is not a valid phone number"},
            {"line": 9, "reason": "guardian gd-lost: student s-nobody is unknown"},
        ],
    }
    assert result.summary_lines()[1:] == [
        "line 7: guardian gd-x: mobile '123' is not a valid phone number",
        "line 9: guardian gd-lost: student s-nobody is unknown",
    ]
    assert not result.ok
    assert {g["id"] for g in await rows(engine, t.guardians)} == {"gd-kjersti", "gd-per"}


async def test_three_ways_of_writing_a_norwegian_mobile_are_one_number(
    engine: AsyncEngine,
) -> None:
    result = await import_roster(engine, ROSTER / "phones.csv")
    assert (result.created, result.rejected) == (5, [])
    mobiles = {g["id"]: g["mobile"] for g in await rows(engine, t.guardians)}
    assert mobiles == {"gd-a": "+4791234567", "gd-b": "+4791234567", "gd-c": "+4791234567"}


async def test_a_changed_email_is_one_updated_row(engine: AsyncEngine, tmp_path: Path) -> None:
    await import_roster(engine, EXAMPLE)
    text = EXAMPLE.read_text(encoding="utf-8").replace(
        "per.nordmann@example.no", "Per.Nordmann@Example.com"
    )
    result = await import_roster(engine, write(tmp_path, text))
    assert result.to_json() == {"created": 0, "updated": 1, "unchanged": 12, "rejected": []}
    per = (await rows(engine, t.guardians, t.guardians.c.id == "gd-per"))[0]
    assert per["email"] == "per.nordmann@example.com"
    assert per["updated_at"] > per["created_at"]


async def test_full_deactivates_whom_the_file_drops_and_keeps_their_history(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    await import_roster(engine, EXAMPLE)
    async with engine.begin() as conn:
        await conn.execute(
            insert(t.threads).values(
                id="th-1", guardian_id="gd-per", unit_id="u-fjell", student_id="s-ola",
                created_at=NOW, last_message_at=NOW,
            )
        )  # fmt: skip
        await conn.execute(
            insert(t.messages).values(
                id="m-1", thread_id="th-1", direction="in", channel="sms", author="gd-per",
                body="Hei", sent_at=NOW,
            )
        )  # fmt: skip
    lines = EXAMPLE.read_text(encoding="utf-8").splitlines(keepends=True)
    dropped = [line for line in lines if "gd-per" not in line and "st-tor" not in line]
    trimmed = write(tmp_path, "".join(dropped))

    partial = await import_roster(engine, trimmed)  # without --full nobody is deactivated
    assert "deactivated" not in partial.to_json()
    assert all(g["active"] for g in await rows(engine, t.guardians))

    full = await import_roster(engine, trimmed, full=True)
    assert full.to_json()["deactivated"] == 2  # gd-per and st-tor
    assert full.summary_lines()[0].endswith("deactivated 2")
    per = (await rows(engine, t.guardians, t.guardians.c.id == "gd-per"))[0]
    assert per["active"] is False
    links = t.guardian_students.c.guardian_id == "gd-per"
    assert len(await rows(engine, t.guardian_students, links)) == 2  # the links stay too
    assert [m["body"] for m in await rows(engine, t.messages)] == ["Hei"]
    tor = await rows(engine, t.staff_units, t.staff_units.c.staff_id == "st-tor")
    assert [s["active"] for s in tor] == [False]
    assert (await import_roster(engine, trimmed, full=True)).deactivated == 0

    back = await import_roster(engine, EXAMPLE)  # they come back: active again
    assert (back.created, back.updated) == (0, 3)  # gd-per, st-tor, gd-amina's roster_order
    assert all(g["active"] for g in await rows(engine, t.guardians))
    assert all(s["active"] for s in await rows(engine, t.staff_units))


async def test_restricted_protected_digest_and_closed_days_are_stored(
    engine: AsyncEngine,
) -> None:
    result = await import_roster(engine, ROSTER / "options.csv")
    assert (result.created, result.rejected) == (9, [])
    guardians = {g["id"]: g for g in await rows(engine, t.guardians)}
    mor, far = guardians["gd-mor"], guardians["gd-far"]
    assert (mor["protected"], mor["digest"], far["protected"], far["digest"]) == (
        True,
        True,
        False,
        False,
    )
    assert (mor["email"], mor["language"], mor["channels"]) == ("mor@example.no", "nb", "sms,email")
    assert (far["mobile"], far["language"], far["channels"]) == (None, "en", "sms,email")
    links = {
        (link["guardian_id"], link["student_id"]): link["restricted"]
        for link in await rows(engine, t.guardian_students)
    }
    assert links == {
        ("gd-mor", "s-ola"): False,
        ("gd-mor", "s-kari"): False,
        ("gd-far", "s-ola"): False,
        ("gd-far", "s-kari"): True,
    }
    lise = (await rows(engine, t.staff))[0]
    assert (lise["email"], lise["language"]) == ("lise.berg@example.kommune.no", "nn")
    closed = {(c["from_date"], c["to_date"], c["name"]) for c in await rows(engine, t.closed_days)}
    assert closed == {
        (date(2026, 11, 27), date(2026, 11, 27), "Planleggingsdag"),
        (date(2026, 12, 21), date(2027, 1, 1), "Juleferie"),
    }
    assert (await import_roster(engine, ROSTER / "options.csv")).unchanged == 9


BAD_VALUES = """\
kind,unit_id,group_id,name,unit_type,email,student_id,first_name,groups,guardian_id,mobile,language,channels,students,staff_id,notify,from,to
unit,u-1,,Skole,school,,,,,,,,,,,,,
unit,u-2,,Noe,barnehage,,,,,,,,,,,,,
school,u-1,,,,,,,,,,,,,,,,
group,u-9,g-1,1A,,,,,,,,,,,,,,
student,u-1,,,,,s-1,Ola,g-404,,,,,,,,,
student,u-1,,,,,s-2,Kari,,,,,,,,,,
guardian,,,,,ikke-en-adresse,,Mor,,gd-1,,,,s-2,,,,
guardian,,,,,,,Far,,gd-2,,de,sms;fax,s-2,,,,
guardian,,,,,,,Tante,,gd-3,,,,,,,,
guardian,,,,,,,Onkel,,gd-4,,,,s-1,,,,
staff,u-1,,,,a@b.no,,Lise,,,,,,,st-1,never,,
closed,u-1,,Fri,,,,,,,,,,,,,2026-12-03,2026-12-01
closed,u-1,,Fri,,,,,,,,,,,,,2026-13-01,
guardian,,,,,,,Mor,,gd-1,,,,s-2,,,,
"""


async def test_each_bad_value_is_rejected_with_its_line_and_reason(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    result = await import_roster(engine, write(tmp_path, BAD_VALUES))
    reasons = {r.line: r.reason for r in result.rejected}
    assert reasons == {
        3: "unit u-2: unit_type 'barnehage' is not school or sfo",
        4: "unknown kind 'school' (one of unit, group, closed, student, guardian, staff)",
        5: "group g-1: unit u-9 is unknown",
        6: "student s-1: group g-404 is not a group of u-1",
        8: "guardian gd-1: email 'ikke-en-adresse' is not a valid e-mail address",
        9: "guardian gd-2: language 'de' is not nb, nn or en; "
        "channel 'fax' is not sms, telegram or email",
        10: "guardian gd-3: no students",
        11: "guardian gd-4: student s-1 is not imported (line 6 was rejected)",
        12: "staff st-1: notify 'never' is not each, digest or both",
        13: "closed u-1: from 2026-12-03 is after to 2026-12-01",
        14: "closed u-1: from '2026-13-01' is not a date (YYYY-MM-DD)",
        15: "guardian gd-1: listed twice (first in line 8)",
    }
    assert (result.created, result.updated, result.unchanged) == (2, 0, 0)  # u-1 and s-2


async def test_staff_in_several_units_count_one_row_per_unit(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    extra = "staff,u-fjell-sfo,,,lise.berg@example.kommune.no,,,,Lise,Berg,,,,,,,,st-lise,each\n"
    path = write(tmp_path, EXAMPLE.read_text(encoding="utf-8") + extra)
    result = await import_roster(engine, path)
    assert (result.created, result.rejected) == (14, [])
    lise = await rows(engine, t.staff_units, t.staff_units.c.staff_id == "st-lise")
    assert sorted((s["unit_id"], s["notify"]) for s in lise) == [
        ("u-fjell", "both"),
        ("u-fjell-sfo", "each"),
    ]
    assert await count(engine, t.staff) == 3


# --- OneRoster ----------------------------------------------------------------------


def zipped(folder: Path, tmp_path: Path) -> Path:
    """The fixture bundle as a zip made now, inside a sub-folder as exporters often do."""
    target = tmp_path / "oneroster.zip"
    with zipfile.ZipFile(target, "w") as bundle:
        for member in sorted(folder.iterdir()):
            bundle.write(member, f"export-2026/{member.name}")
    return target


@pytest.mark.parametrize("packed", ["folder", "zip"])
async def test_oneroster_bundle_maps_orgs_classes_users_and_enrollments(
    engine: AsyncEngine, tmp_path: Path, packed: str
) -> None:
    source = ROSTER / "oneroster"
    path = source if packed == "folder" else zipped(source, tmp_path)
    result = await import_roster(engine, path)
    assert result.to_json() == {
        "created": 14,  # 2 units, 3 groups, 3 students, 3 guardians, 3 staff
        "updated": 0,
        "unchanged": 0,
        "rejected": [
            {"line": 8, "reason": "enrollments.csv: enrollment enr-7: class cls-9z is unknown"},
            {
                "line": 11,
                "reason": "users.csv: guardian u-feil: mobile '123' is not a valid phone number",
            },
        ],
    }
    assert result.summary_lines()[1] == (
        "enrollments.csv line 8: enrollment enr-7: class cls-9z is unknown"
    )
    units = {u["id"]: u["unit_type"] for u in await rows(engine, t.units)}
    assert units == {"org-fjell": "school", "org-fjell-sfo": "sfo"}
    ola = (await rows(engine, t.students, t.students.c.id == "u-ola"))[0]
    assert (ola["unit_id"], ola["sfo_unit_id"]) == ("org-fjell", "org-fjell-sfo")
    groups = {(g["unit_id"], g["group_id"]) for g in await rows(engine, t.student_groups)}
    assert groups == {
        ("org-fjell", "cls-2a"),  # Ola and Aisha
        ("org-fjell", "cls-5b"),
        ("org-fjell-sfo", "cls-base1"),
    }
    guardians = {g["id"]: g for g in await rows(engine, t.guardians)}
    assert {i: (g["mobile"], g["language"], g["roster_order"]) for i, g in guardians.items()} == {
        "u-kjersti": ("+4791234567", "nb", 5),
        "u-per": ("+4792345678", "nn", 6),
        "u-amina": ("+4793456789", "en", 7),
    }
    assert guardians["u-kjersti"]["email"] == "kjersti.nordmann@example.no"
    links = {(x["guardian_id"], x["student_id"]) for x in await rows(engine, t.guardian_students)}
    # Per's link comes from Ola's agentSourcedIds: agents go both ways.
    assert links == {
        ("u-kjersti", "u-ola"),
        ("u-kjersti", "u-kari"),
        ("u-per", "u-ola"),
        ("u-amina", "u-aisha"),
    }
    staff = {
        (s["staff_id"], s["unit_id"]): (s["notify"], s["groups"])
        for s in await rows(engine, t.staff_units)
    }
    assert staff == {
        ("u-lise", "org-fjell"): ("both", ["cls-2a"]),
        ("u-tor", "org-fjell"): ("both", ["cls-5b"]),
        ("u-siri", "org-fjell-sfo"): ("both", []),
    }
    assert (await import_roster(engine, path)).unchanged == 14


async def test_oneroster_roles_csv_layout_and_a_teacher_who_is_a_parent(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    shutil.copy(ROSTER / "oneroster" / "orgs.csv", bundle / "orgs.csv")
    (bundle / "users.csv").write_text(
        "sourcedId,status,dateLastModified,enabledUser,username,userIds,givenName,familyName,"
        "middleName,identifier,email,sms,phone,agentSourcedIds,grades,password,"
        "userMasterIdentifier,resourceSourcedIds,preferredGivenName,preferredMiddleName,"
        "preferredFamilyName,primaryOrgSourcedId,pronouns\n"
        "u-ola,,,true,,,Olav,Nordmann,,,,,,u-lise,,,,,Ola,,,org-fjell,\n"
        "u-lise,,,true,,,Lise,Berg,,,lise@example.no,41234567,,u-ola,,,,,,,,org-fjell,\n",
        encoding="utf-8",
    )
    (bundle / "roles.csv").write_text(
        "sourcedId,status,dateLastModified,userSourcedId,roleType,role,beginDate,endDate,"
        "orgSourcedId,userProfileSourcedId\n"
        "r-1,,,u-ola,primary,student,,,org-fjell-sfo,\n"
        "r-2,,,u-ola,secondary,student,,,org-fjell,\n"
        "r-3,,,u-lise,primary,teacher,,,org-fjell,\n"
        "r-4,,,u-lise,secondary,parent,,,org-fjell,\n",
        encoding="utf-8",
    )
    result = await import_roster(engine, bundle)
    assert (result.created, result.rejected) == (5, [])  # 2 units, Ola, Lise twice
    ola = (await rows(engine, t.students))[0]
    assert (ola["first_name"], ola["unit_id"], ola["sfo_unit_id"]) == (
        "Ola",
        "org-fjell",
        "org-fjell-sfo",
    )
    assert [g["id"] for g in await rows(engine, t.guardians)] == ["u-lise"]
    assert [s["id"] for s in await rows(engine, t.staff)] == ["u-lise"]


# --- files that cannot be read at all ------------------------------------------------


def _latin1(tmp_path: Path) -> Path:
    path = tmp_path / "r.csv"
    path.write_bytes("kind,name\nunit,Bø skole\n".encode("latin-1"))  # as old Excel saves it
    return path


def _bundle_without_orgs(tmp_path: Path) -> Path:
    path = tmp_path / "x.zip"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("users.csv", "sourcedId,role\n")
    return path


UNREADABLE = {
    "missing": (lambda p: p / "nope.csv", "no such file"),
    "latin-1": (_latin1, "not UTF-8 text (line 2)"),
    "empty": (lambda p: write(p, ""), "no header row"),
    "no kind": (lambda p: write(p, "unit_id,name\nu-1,Skole\n"), "no 'kind' column"),
    "semicolons": (lambda p: write(p, "kind;unit_id\nunit;u-1\n"), "separated by ';'"),
    "one OneRoster file": (lambda p: write(p, "sourcedId,role\n", "users.csv"), "OneRoster"),
    "zip without orgs": (_bundle_without_orgs, "no orgs.csv"),
    "plain folder": (lambda p: p, "not a OneRoster bundle"),
}


@pytest.mark.parametrize("case", list(UNREADABLE))
def test_a_file_that_cannot_be_read_is_one_roster_error(tmp_path: Path, case: str) -> None:
    make, expected = UNREADABLE[case]
    with pytest.raises(RosterError) as caught:
        read_roster(make(tmp_path))
    assert expected in str(caught.value) and "\n" not in str(caught.value)


async def test_an_unreadable_file_writes_nothing(engine: AsyncEngine, tmp_path: Path) -> None:
    with pytest.raises(RosterError):
        await import_roster(engine, write(tmp_path, "unit_id,name\nu-1,Skole\n"))
    assert await count(engine, t.audit_log) == 0


async def test_progress_goes_to_stderr_only(
    engine: AsyncEngine, capsys: pytest.CaptureFixture[str]
) -> None:
    await import_roster(engine, EXAMPLE, progress=True)
    out, err = capsys.readouterr()
    assert out == "" and "writing" in err


def test_a_bom_crlf_quoted_fields_and_blank_lines_keep_line_numbers(tmp_path: Path) -> None:
    text = (
        "kind,unit_id,name,unit_type\r\n"
        'unit,u-1,"Skole, Fjellsiden",school\r\n'
        "\r\n"
        ",,,\r\n"
        'unit,u-2,"To\r\nlinjer",school\r\n'
        "unit,u-3,Tre,skole\r\n"
    )
    path = tmp_path / "bom.csv"
    path.write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    roster = read_roster(path)
    assert [(u.where.line, u.id, u.name) for u in roster.units] == [
        (2, "u-1", "Skole, Fjellsiden"),
        (5, "u-2", "To\r\nlinjer"),
        (7, "u-3", "Tre"),
    ]
