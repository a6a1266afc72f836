"""SMS end to end: a parent texts the school through the Twilio fake and gets answers.

A real bridge (HTTP server, inbox and outbox workers) on a real store, the real
twilio SDK talking to the loopback fake, and signed webhooks over a socket.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from bridge.export import export_absences
from bridge.store import tables as t
from tests.conftest import EXAMPLE_ROSTER
from tests.world import World, eventually, running_world

KJERSTI = "+4791234567"  # nb; Ola (school + SFO) and Kari (school)
PER = "+4792345678"  # nn; the same children as Kjersti
AMINA = "+4793456789"  # en; Aisha (school + SFO)
STRANGER = "+4799999999"
OSLO = ZoneInfo("Europe/Oslo")


@pytest.fixture
async def world(database_url: str, tmp_path: Path) -> AsyncIterator[World]:
    async with running_world(database_url, tmp_path, EXAMPLE_ROSTER) as w:
        yield w


def _today() -> str:
    return datetime.now(OSLO).date().isoformat()


def _dm(iso: str) -> str:
    _, m, d = (int(x) for x in iso.split("-"))
    return f"{d}.{m}."


async def test_absence_is_recorded_confirmed_and_undone(world: World) -> None:
    assert await world.text(KJERSTI, "Ola er syk i dag", sid="SM" + "a" * 32) == 200
    reply = await eventually(lambda: world.replies_to(KJERSTI))
    absences = await world.rows(t.absences)
    assert {(a["student_id"], a["unit_id"]) for a in absences} == {
        ("s-ola", "u-fjell"),
        ("s-ola", "u-fjell-sfo"),
    }
    assert all(a["from_date"].isoformat() == _today() for a in absences)
    assert all(a["reported_by"] == "gd-kjersti" and a["channel"] == "sms" for a in absences)
    confirmation = reply[0]
    assert "Ola" in confirmation and "SFO" in confirmation and "ANGRE" in confirmation
    assert _dm(_today()) in confirmation and "sykdom" in confirmation

    # Twilio retrying the same webhook changes nothing.
    for _ in range(2):
        assert await world.text(KJERSTI, "Ola er syk i dag", sid="SM" + "a" * 32) == 200
    await asyncio.sleep(0.3)
    assert len(await world.rows(t.absences)) == 2
    assert len(world.replies_to(KJERSTI)) == 1

    assert await world.text(KJERSTI, "angre!") == 200
    await eventually(lambda: len(world.replies_to(KJERSTI)) == 2)
    assert {a["status"] for a in await world.rows(t.absences)} == {"cancelled"}
    assert "angret" in world.replies_to(KJERSTI)[1]


async def test_missing_child_is_asked_for_with_numbered_choices(world: World) -> None:
    await world.text(KJERSTI, "Er hjemme i dag, syk")
    question = (await eventually(lambda: world.replies_to(KJERSTI)))[0]
    assert "1: Kari" in question and "2: Ola" in question and "3: begge" in question
    assert await world.rows(t.absences) == []
    await world.text(KJERSTI, "1")
    await eventually(lambda: len(world.replies_to(KJERSTI)) == 2)
    absences = await world.rows(t.absences)
    assert [(a["student_id"], a["unit_id"]) for a in absences] == [("s-kari", "u-fjell")]
    assert "Kari" in world.replies_to(KJERSTI)[1]


async def test_nynorsk_guardian_is_answered_in_nynorsk(world: World) -> None:
    await world.text(PER, "Kari er sjuk i dag")
    reply = (await eventually(lambda: world.replies_to(PER)))[0]
    assert "Fråvær registrert" in reply and "Kari" in reply and "sjukdom" in reply


async def test_message_about_one_of_two_children_asks_which(world: World) -> None:
    await world.text(KJERSTI, "Hei, når er foreldremøtet?")
    question = (await eventually(lambda: world.replies_to(KJERSTI)))[0]
    assert "1: Kari" in question and "3: begge" in question
    assert await world.rows(t.messages) == []
    await world.text(KJERSTI, "2")
    await eventually(lambda: len(world.replies_to(KJERSTI)) == 2)
    threads = await world.rows(t.threads)
    assert [(th["student_id"], th["unit_id"]) for th in threads] == [("s-ola", "u-fjell")]
    assert (await world.rows(t.messages))[0]["body"] == "Hei, når er foreldremøtet?"


async def test_english_guardian_gets_english_and_undo(world: World) -> None:
    await world.text(AMINA, "Aisha has a dentist appointment tomorrow at 10, she leaves school")
    reply = (await eventually(lambda: world.replies_to(AMINA)))[0]
    assert "Aisha" in reply and "UNDO" in reply and "appointment" in reply
    absences = await world.rows(t.absences)
    assert len(absences) == 1 and absences[0]["reason"] == "appointment"


async def test_message_goes_to_the_thread_and_is_acknowledged(world: World) -> None:
    await world.text(KJERSTI, "Hei! Kan Kari ta med kake til klassen på fredag?")
    reply = (await eventually(lambda: world.replies_to(KJERSTI)))[0]
    assert "Fjellsiden skole" in reply
    threads = await world.rows(t.threads)
    assert [(th["student_id"], th["unit_id"]) for th in threads] == [("s-kari", "u-fjell")]
    messages = await world.rows(t.messages)
    assert messages[0]["body"] == "Hei! Kan Kari ta med kake til klassen på fredag?"
    assert messages[0]["direction"] == "in" and messages[0]["author"] == "gd-kjersti"


async def test_sensitive_details_are_redacted_everywhere(world: World) -> None:
    await world.text(KJERSTI, "Kari har feber og omgangssyke, blir hjemme i dag")
    replies = await eventually(
        lambda: len(world.replies_to(KJERSTI)) >= 2 and world.replies_to(KJERSTI)
    )
    assert any("sensitive opplysninger" in r for r in replies)
    absences = await world.rows(t.absences)
    assert len(absences) == 1 and absences[0]["reason"] == "illness"
    assert "feber" not in (absences[0]["note"] or "")
    events = await world.rows(t.inbound_events)
    assert events[0]["status"] == "processed"
    assert "feber" not in events[0]["body"] and "omgangssyke" not in events[0]["body"]
    assert "[fjernet]" in events[0]["body"]
    export = await export_absences(world.bridge.engine, datetime.now(OSLO).date(), OSLO)
    assert "feber" not in json.dumps(export, ensure_ascii=False)


async def test_unknown_number_gets_one_reply_a_day_and_nothing_is_kept(world: World) -> None:
    await world.text(STRANGER, "Hei, hvem er dette?")
    await eventually(lambda: world.replies_to(STRANGER))
    await world.text(STRANGER, "Hallo??")
    await eventually(
        lambda: world.rows(t.inbound_events, t.inbound_events.c.status == "processed"),
    )
    await asyncio.sleep(0.5)
    assert len(world.replies_to(STRANGER)) == 1
    events = await world.rows(t.inbound_events)
    assert all(e["body"] is None and e["sender"] is None for e in events)
    assert await world.rows(t.threads) == [] and await world.rows(t.absences) == []


async def test_bad_signature_is_refused_and_nothing_is_stored(world: World) -> None:
    assert await world.text(KJERSTI, "Ola er syk", bad_signature=True) == 403
    assert await world.text(KJERSTI, "Ola er syk", unsigned=True) == 403
    assert await world.rows(t.inbound_events) == []


async def test_messages_missed_during_an_outage_are_fetched_from_twilio(world: World) -> None:
    # Twilio logged the message but the webhook never got through (here: refused).
    assert await world.text(KJERSTI, "Ola er syk i dag", bad_signature=True) == 403
    assert await world.rows(t.inbound_events) == []
    world.bridge.caught_up.clear()
    world.bridge.recover_now.set()
    await asyncio.wait_for(world.bridge.caught_up.wait(), 10)
    await eventually(lambda: world.replies_to(KJERSTI))
    assert len(await world.rows(t.absences)) == 2


async def test_stop_is_acknowledged_and_remembered(world: World) -> None:
    await world.text(KJERSTI, "STOPP")
    reply = (await eventually(lambda: world.replies_to(KJERSTI)))[0]
    assert "START" in reply
    points = await world.rows(t.contact_points, t.contact_points.c.address == KJERSTI)
    assert points[0]["opted_out_at"] is not None
    await world.text(KJERSTI, "start")
    await eventually(lambda: len(world.replies_to(KJERSTI)) == 2)
    points = await world.rows(t.contact_points, t.contact_points.c.address == KJERSTI)
    assert points[0]["opted_out_at"] is None


async def test_delivery_status_follows_twilio_callbacks(world: World) -> None:
    await world.text(KJERSTI, "Ola er syk i dag")
    await eventually(lambda: world.replies_to(KJERSTI))
    delivered = await eventually(
        lambda: world.rows(t.deliveries, t.deliveries.c.status == "delivered"), within=10
    )
    assert delivered[0]["provider_id"].startswith("SM")
    assert delivered[0]["kind"] == "reply" and delivered[0]["attempts"] == 1


async def test_picture_gets_a_text_only_notice_once_a_day(world: World) -> None:
    await world.text(KJERSTI, "", media=1)
    await eventually(lambda: world.replies_to(KJERSTI))
    await world.text(KJERSTI, "", media=2)
    await asyncio.sleep(0.5)
    replies = world.replies_to(KJERSTI)
    assert len(replies) == 1 and "tekst" in replies[0]


async def test_received_time_is_stored_in_utc(world: World) -> None:
    before = datetime.now(UTC)
    await world.text(KJERSTI, "Ola er syk i dag")
    await eventually(lambda: world.replies_to(KJERSTI))
    event = (await world.rows(t.inbound_events))[0]
    assert before <= event["received_at"] <= datetime.now(UTC)
