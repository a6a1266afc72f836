"""A guardian's data exported whole, and erased: reports keep student and unit only."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from bridge.gdpr import UnknownGuardian, erase_guardian, export_guardian
from bridge.store import tables as t
from tests.conftest import EXAMPLE_ROSTER
from tests.world import World, eventually, running_world

KJERSTI = "+4791234567"
OSLO = ZoneInfo("Europe/Oslo")


@pytest.fixture
async def world(database_url: str, tmp_path: Path) -> AsyncIterator[World]:
    async with running_world(database_url, tmp_path, EXAMPLE_ROSTER) as w:
        yield w


async def test_export_then_erase(world: World) -> None:
    engine = world.bridge.engine
    await world.text(KJERSTI, "Ola er syk i dag")
    await world.text(KJERSTI, "Hei! Kan Kari ta med kake på fredag?")
    await eventually(lambda: len(world.replies_to(KJERSTI)) >= 2)
    await eventually(lambda: world.rows(t.messages))

    exported = await export_guardian(engine, "gd-kjersti", OSLO)
    assert exported["guardian"]["mobile"] == KJERSTI
    assert len(exported["absences_reported"]) == 2
    assert exported["threads"][0]["messages"][0]["body"].startswith("Hei! Kan Kari")
    assert {d["channel"] for d in exported["deliveries"]} == {"sms"}
    json.dumps(exported, ensure_ascii=False)  # JSON-ready

    counts = await erase_guardian(engine, "gd-kjersti")
    assert counts["absences"] == 2 and counts["messages"] == 1
    absences = await world.rows(t.absences)
    assert {(a["student_id"], a["reported_by"], a["note"]) for a in absences} == {
        ("s-ola", None, None)
    }
    assert {a["unit_id"] for a in absences} == {"u-fjell", "u-fjell-sfo"}
    (guardian,) = await world.rows(t.guardians, t.guardians.c.id == "gd-kjersti")
    assert guardian["mobile"] is None and guardian["first_name"] == "" and not guardian["active"]
    dump = json.dumps(
        [await world.rows(table) for table in (t.inbound_events, t.messages, t.deliveries,
                                                t.contact_points, t.conversations)],
        default=str, ensure_ascii=False,
    )  # fmt: skip
    assert KJERSTI not in dump and "kake" not in dump
    # Per shares no contact point with Kjersti: his data stays.
    (per,) = await world.rows(t.guardians, t.guardians.c.id == "gd-per")
    assert per["mobile"] == "+4792345678"


async def test_unknown_guardian(world: World) -> None:
    with pytest.raises(UnknownGuardian):
        await export_guardian(world.bridge.engine, "gd-nobody", OSLO)
