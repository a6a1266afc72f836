"""The authorization matrix (issue #11): every way in, every refusal.

A guardian acts only on their own children, by SMS, Telegram, e-mail, the API and the
CLI; one removed from the roster, or no longer linked to a student, can do nothing for
that student; staff reach only their own units' threads, and only while they are staff;
reply tokens and Telegram buttons cannot be forged or replayed into another thread.
The API's unit scopes are proved in tests/test_api.py
(`check_a_key_for_one_unit_reaches_nothing_of_another`, the `reported_by` checks).
"""

from __future__ import annotations

import csv
from collections.abc import AsyncIterator
from pathlib import Path

import aiosmtplib
import pytest

from bridge.announcements import AnnouncementError, create_announcement
from bridge.roster import import_roster
from bridge.store import tables as t
from tests.cli import skolebro, write_config
from tests.test_email_flow import mails_to, send_mail
from tests.test_promises import (
    CLOSED_FROM,
    CLOSED_TO,
    COLUMNS,
    FAR,
    MOR,
    STAFF,
    notices,
    write_promises_roster,
)
from tests.world import World, eventually, running_world

EVA = "eva@example.no"  # e-mail first; Nora's second guardian
SFO_STAFF = "sfo.leder@example.kommune.no"
REPLY_DOMAIN = "svar.example.kommune.no"
EXTRA = [
    {"kind": "guardian", "guardian_id": "gd-eva", "first_name": "Eva", "last_name": "Post",
     "mobile": "+4791000006", "email": EVA, "language": "nb", "channels": "email;sms",
     "students": "s-nora"},
    {"kind": "staff", "unit_id": "u-fjell-sfo", "staff_id": "st-siri", "first_name": "Siri",
     "last_name": "Dahl", "email": SFO_STAFF, "notify": "each"},
    {"kind": "unit", "unit_id": "u-berg", "name": "Berg skole", "unit_type": "school",
     "email": "post@berg.example.kommune.no"},
    {"kind": "student", "unit_id": "u-berg", "student_id": "s-berg", "first_name": "Bjørn",
     "last_name": "Berg"},
]  # fmt: skip


def write_roster(path: Path, *, drop: set[str] = frozenset(), **changes: str) -> Path:
    """The promises roster plus EXTRA, less the rows whose id is in `drop`, with
    `changes` mapping a guardian id to its new `students`."""
    write_promises_roster(path, CLOSED_FROM, CLOSED_TO)
    with path.open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    rows += [{c: row.get(c, "") for c in COLUMNS} for row in EXTRA]
    kept = []
    for row in rows:
        if {row["guardian_id"], row["staff_id"]} & drop:
            continue
        if row["guardian_id"] in changes:
            row["students"] = changes[row["guardian_id"]]
        kept.append(row)
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(kept)
    return path


@pytest.fixture
async def world(database_url: str, tmp_path: Path) -> AsyncIterator[World]:
    roster = write_roster(tmp_path / "roster.csv")
    async with running_world(database_url, tmp_path, roster, email=True) as w:
        yield w


async def reimport(world: World, tmp_path: Path, **kw: object) -> None:
    changed = write_roster(tmp_path / "changed.csv", **kw)  # type: ignore[arg-type]
    result = await import_roster(world.bridge.engine, changed, full=True)
    assert not result.rejected


async def threads_of(world: World, student_id: str) -> list[dict[str, object]]:
    return await world.rows(t.threads, t.threads.c.student_id == student_id)


# --- a guardian acts only on their own children --------------------------------------


async def test_another_familys_child_cannot_be_reported_or_written_about(
    world: World,
) -> None:
    await world.text(MOR, "Lars er syk i dag")  # Lars is gd-skjult's child
    await world.text(MOR, "Hei, Lars har glemt lua si hos oss")
    await send_mail(
        world, sender="mor@example.no", to=f"u-fjell@{REPLY_DOMAIN}",
        body="Nora er syk i dag.", subject="Fravær",
    )  # fmt: skip
    await eventually(lambda: len(world.replies_to(MOR)) >= 2)
    await eventually(lambda: mails_to(world, "mor@example.no"))
    assert await world.rows(t.absences) == []
    assert await threads_of(world, "s-lars") == [] and await threads_of(world, "s-nora") == []


async def test_a_guardian_removed_from_the_roster_can_do_nothing(
    world: World, tmp_path: Path
) -> None:
    await reimport(world, tmp_path, drop={"gd-far"})
    await world.text(FAR, "Ola er syk i dag")
    await send_mail(
        world, sender="far@example.no", to=f"u-fjell@{REPLY_DOMAIN}",
        body="Ola er syk i dag.", subject="Fravær",
    )  # fmt: skip
    events = await eventually(
        lambda: world.rows(t.inbound_events, t.inbound_events.c.status == "processed")
    )
    await eventually(lambda: world.replies_to(FAR))  # the stranger's one reply
    assert await world.rows(t.absences) == [] and await world.rows(t.threads) == []
    assert len(events) >= 1 and mails_to(world, "far@example.no") == []  # no backscatter
    reply = world.replies_to(FAR)
    assert len(reply) == 1 and "ikke registrert" in reply[0]


async def test_a_student_no_longer_linked_is_out_of_reach(world: World, tmp_path: Path) -> None:
    await reimport(world, tmp_path, **{"gd-mor": "s-kari"})  # Ola is no longer hers
    await world.text(MOR, "Ola er syk i dag")
    await eventually(lambda: world.replies_to(MOR))
    assert await world.rows(t.absences, t.absences.c.student_id == "s-ola") == []
    with pytest.raises(AnnouncementError):  # nor is Bjørn of Berg skole Fjellsiden's
        await create_announcement(
            world.bridge.engine, world.bridge.settings, unit_id="u-fjell",
            student_ids=["s-berg"], text="Hei",
        )  # fmt: skip


# --- reply tokens: bound to one recipient, one thread ---------------------------------


async def _eva_token(world: World) -> str:
    await create_announcement(
        world.bridge.engine, world.bridge.settings, unit_id="u-fjell", student_ids=["s-nora"],
        text="Husk gymtøy",
    )  # fmt: skip
    world.bridge.outbox.wake.set()
    mail = (await eventually(lambda: mails_to(world, EVA)))[0]
    return str(mail["Reply-To"])


async def test_a_guardians_reply_token_is_hers_alone(world: World) -> None:
    token = await _eva_token(world)
    # Another guardian, and a staff member, writing to Eva's token: 250, and nothing.
    for sender in ("mor@example.no", STAFF):
        answer = await send_mail(world, sender=sender, to=token, body="Hei fra meg")
        assert isinstance(answer, aiosmtplib.SMTPResponse) and answer.code == 250
    # A forged From with the right address but another envelope sender is refused too.
    await send_mail(world, sender="mor@example.no", to=token, body="Forfalsket",
                    headers={"Reply-To": EVA})  # fmt: skip
    await send_mail(world, sender=EVA, to=token, body="Takk, skal huske det")
    (thread,) = await eventually(lambda: threads_of(world, "s-nora"))
    messages = await world.rows(t.messages, t.messages.c.thread_id == thread["id"])
    assert [m["author"] for m in messages] == ["gd-eva"]
    assert thread["guardian_id"] == "gd-eva"


async def test_staff_reach_only_their_units_threads_and_only_while_staff(
    world: World, tmp_path: Path
) -> None:
    await world.text(MOR, "Hei! Kan Kari ta med kake på fredag?")
    token = (await eventually(lambda: notices(world)))[0]
    before = len(world.replies_to(MOR))
    # The SFO's staff member holds no key to the school's thread.
    await send_mail(world, sender=SFO_STAFF, to=token, body="Nei, det går ikke.")
    # A staff member removed from the roster loses her threads at once.
    await reimport(world, tmp_path, drop={"st-lise"})
    answer = await send_mail(world, sender=STAFF, to=token, body="Ja, det går fint!")
    assert isinstance(answer, (aiosmtplib.SMTPResponse, aiosmtplib.SMTPRecipientsRefused))
    await eventually(world.all_processed)
    assert len(world.replies_to(MOR)) == before
    outgoing = await world.rows(t.messages, t.messages.c.direction == "out")
    assert [(m["author"], m["body"]) for m in outgoing] == []


# --- the CLI ---------------------------------------------------------------------------


def test_the_cli_refuses_students_and_guardians_outside_the_unit(
    tmp_path: Path, database_url: str
) -> None:
    cfg = write_config(tmp_path, database_url)
    roster = write_roster(tmp_path / "roster.csv")
    assert skolebro("import-roster", str(roster), "--config", str(cfg)).returncode == 0
    other = skolebro("announce", "--unit", "u-fjell", "--student", "s-berg", "--text", "Hei",
                     "--config", str(cfg))  # fmt: skip
    assert other.returncode == 1 and "s-berg" in other.stderr
    removed = write_roster(tmp_path / "removed.csv", drop={"gd-far"})
    assert skolebro("import-roster", str(removed), "--full", "--config", str(cfg)).returncode == 0
    invite = skolebro("invite", "--guardian", "gd-far", "--channel", "telegram",
                      "--config", str(cfg))  # fmt: skip
    assert invite.returncode == 1 and "gd-far" in invite.stderr
