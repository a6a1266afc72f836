"""The delivery engine: announcements fanned out, retried, rerouted and tracked.

Through the real bridge and the Twilio fake; e-mail and Telegram deliveries are
queued for their own senders.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import insert

from bridge.announcements import AnnouncementError, create_announcement, summary
from bridge.domain import Channel, StatusUpdate
from bridge.outbox import record_status
from bridge.routing import quiet_until
from bridge.store import tables as t
from tests.cli import skolebro, write_config
from tests.world import World, eventually, running_world, write_roster

MIXED = [
    (f"gd-{i}", ["sms", "sms;email", "email;sms", "telegram;sms"][i % 4], "nb") for i in range(30)
]


def mobile(i: int) -> str:
    return f"+479100{i:04d}"


@pytest.fixture
async def world(database_url: str, tmp_path: Path) -> AsyncIterator[World]:
    roster = write_roster(tmp_path / "roster.csv", MIXED)
    async with running_world(database_url, tmp_path, roster) as w:
        yield w


async def announce(world: World, **kw: object) -> str:
    created = await create_announcement(
        world.bridge.engine, world.bridge.settings, unit_id="u-fjell", **kw
    )
    world.bridge.outbox.wake.set()
    return created.announcement_id


async def test_group_announcement_reaches_each_guardian_once(world: World) -> None:
    announcement_id = await announce(
        world, group_ids=["g-5b"], text="Skolen stenger kl 12 i morgen"
    )
    rows = await world.rows(t.deliveries, t.deliveries.c.announcement_id == announcement_id)
    assert len(rows) == 30 and len({r["guardian_id"] for r in rows}) == 30
    by_channel = {r["guardian_id"]: r["channel"] for r in rows}
    # Telegram first, but nobody has linked a chat: passed over silently, to SMS.
    assert by_channel["gd-3"] == "sms" and by_channel["gd-2"] == "email"
    sms = [r for r in rows if r["channel"] == "sms"]
    assert {r["segments"] for r in sms} == {1}
    assert {r["segments"] for r in rows if r["channel"] == "email"} == {None}
    await eventually(lambda: _delivered(world, announcement_id, len(sms)), within=15)
    texts = [m.body for m in world.twilio.sent]
    assert texts.count("Fjellsiden skole: Skolen stenger kl 12 i morgen") == len(sms)
    counts = await summary(world.bridge.engine, announcement_id)
    assert counts["sms"] == {"delivered": len(sms)}
    assert counts["email"] == {"queued": 30 - len(sms)}


async def _delivered(world: World, announcement_id: str, n: int) -> bool:
    rows = await world.rows(
        t.deliveries,
        t.deliveries.c.announcement_id == announcement_id,
        t.deliveries.c.status == "delivered",
    )
    return len(rows) == n


async def test_server_error_is_retried_then_delivered(world: World) -> None:
    world.twilio.fail_next(1, status=500, to=mobile(0))
    announcement_id = await announce(world, student_ids=["s-0"], text="Husk gymtøy")
    await eventually(lambda: _delivered(world, announcement_id, 1))
    (row,) = await world.rows(t.deliveries, t.deliveries.c.announcement_id == announcement_id)
    assert row["attempts"] == 2 and row["status"] == "delivered" and row["last_error"] is None


async def test_invalid_number_fails_at_once_and_falls_back_to_email(world: World) -> None:
    world.twilio.mark_invalid(mobile(1))  # gd-1: sms;email
    announcement_id = await announce(world, student_ids=["s-1"], text="Husk gymtøy")
    rows = await eventually(
        lambda: _rows_where(world, announcement_id, lambda rs: len(rs) == 2), within=10
    )
    failed, fallback = sorted(rows, key=lambda r: r["created_at"])
    assert failed["status"] == "failed" and failed["attempts"] == 1
    assert failed["last_error"].startswith("21211")
    assert fallback["channel"] == "email" and fallback["fallback_of"] == failed["id"]
    assert fallback["address"] == "g1@example.no"
    mail = json.loads(fallback["body"])["mail"]
    assert mail["text"] == "Husk gymtøy" and mail["reply_to"].startswith("r-")
    points = await world.rows(t.contact_points, t.contact_points.c.address == mobile(1))
    assert points[0]["dead_at"] is not None
    # The next announcement passes over the dead number.
    second = await announce(world, student_ids=["s-1"], text="Ny beskjed")
    (row,) = await world.rows(t.deliveries, t.deliveries.c.announcement_id == second)
    assert row["channel"] == "email"


async def _rows_where(world: World, announcement_id: str, ok) -> list[dict] | None:  # type: ignore[no-untyped-def]
    rows = await world.rows(t.deliveries, t.deliveries.c.announcement_id == announcement_id)
    return rows if ok(rows) else None


async def test_rate_limited_send_waits_for_retry_after(world: World) -> None:
    world.twilio.fail_next(1, status=429, retry_after=1, to=mobile(4))
    started = datetime.now(UTC)
    announcement_id = await announce(world, student_ids=["s-4"], text="Husk matpakke")
    await eventually(lambda: _delivered(world, announcement_id, 1))
    sends = [m for m in world.twilio.sent if m.to == mobile(4)]
    assert len(sends) == 1  # the 429 was not a send
    (row,) = await world.rows(t.deliveries, t.deliveries.c.announcement_id == announcement_id)
    assert row["attempts"] == 2
    assert row["updated_at"] - started >= timedelta(seconds=1)


async def test_stopped_guardian_is_skipped_and_reached_on_the_next_channel(
    world: World,
) -> None:
    await world.text(mobile(5), "STOPP")  # gd-5: sms;email
    await eventually(lambda: world.replies_to(mobile(5)))
    announcement_id = await announce(world, student_ids=["s-5"], text="Foreldremøte")
    rows = await world.rows(t.deliveries, t.deliveries.c.announcement_id == announcement_id)
    skipped = next(r for r in rows if r["channel"] == "sms")
    fallback = next(r for r in rows if r["channel"] == "email")
    assert skipped["status"] == "skipped" and fallback["fallback_of"] == skipped["id"]
    assert fallback["status"] == "queued"
    await asyncio.sleep(0.3)
    assert world.replies_to(mobile(5))[1:] == []  # nothing after the STOPP acknowledgement

    urgent = await announce(world, student_ids=["s-5"], text="Stengt i dag!", urgent=True)
    await eventually(lambda: _delivered(world, urgent, 1))
    assert world.replies_to(mobile(5))[-1] == "Fjellsiden skole: Stengt i dag!"


async def test_only_skipped_when_no_other_channel_is_open(world: World) -> None:
    await world.text(mobile(0), "STOPP")  # gd-0: sms only
    await eventually(lambda: world.replies_to(mobile(0)))
    announcement_id = await announce(world, student_ids=["s-0"], text="Hei")
    rows = await world.rows(t.deliveries, t.deliveries.c.announcement_id == announcement_id)
    assert [(r["channel"], r["status"]) for r in rows] == [("sms", "skipped")]


async def test_out_of_order_callbacks_keep_the_furthest_status(world: World) -> None:
    announcement_id = await announce(world, student_ids=["s-0"], text="Hei")
    await eventually(lambda: _delivered(world, announcement_id, 1))
    (row,) = await world.rows(t.deliveries, t.deliveries.c.announcement_id == announcement_id)
    for late in ("sent", "queued"):
        await record_status(
            world.bridge.engine,
            world.bridge.settings,
            StatusUpdate(Channel.SMS, row["provider_id"], late),
        )
    (row,) = await world.rows(t.deliveries, t.deliveries.c.announcement_id == announcement_id)
    assert row["status"] == "delivered"


async def test_failed_callback_after_sent_falls_back(world: World) -> None:
    world.twilio.set_outcome(mobile(1), "undelivered", 30005)  # unknown destination handset
    announcement_id = await announce(world, student_ids=["s-1"], text="Hei")
    rows = await eventually(
        lambda: _rows_where(world, announcement_id, lambda rs: len(rs) == 2), within=10
    )
    first = next(r for r in rows if r["channel"] == "sms")
    assert first["status"] == "failed" and "30005" in first["last_error"]
    assert next(r for r in rows if r["channel"] == "email")["fallback_of"] == first["id"]


async def test_unknown_group_and_overlong_text_are_refused(world: World) -> None:
    with pytest.raises(AnnouncementError, match="g-9z"):
        await announce(world, group_ids=["g-9z"], text="Hei")
    with pytest.raises(AnnouncementError, match="too long for SMS"):
        await announce(world, text="Lang beskjed. " * 120)
    assert await world.rows(t.announcements) == []


def test_quiet_hours() -> None:
    from zoneinfo import ZoneInfo

    oslo = ZoneInfo("Europe/Oslo")
    late = datetime(2026, 11, 26, 22, 30, tzinfo=oslo)
    assert quiet_until(late, "21:00-07:00", oslo) == datetime(2026, 11, 27, 7, 0, tzinfo=oslo)
    early = datetime(2026, 11, 27, 6, 0, tzinfo=oslo)
    assert quiet_until(early, "21:00-07:00", oslo) == datetime(2026, 11, 27, 7, 0, tzinfo=oslo)
    assert quiet_until(datetime(2026, 11, 27, 12, 0, tzinfo=oslo), "21:00-07:00", oslo) is None
    assert quiet_until(late, "", oslo) is None
    assert quiet_until(datetime(2026, 11, 27, 12, 0, tzinfo=oslo), "11:00-13:00", oslo) == (
        datetime(2026, 11, 27, 13, 0, tzinfo=oslo)
    )


def test_announce_command_in_quiet_hours(tmp_path: Path, database_url: str) -> None:
    roster = write_roster(tmp_path / "roster.csv", MIXED[:4])
    cfg = write_config(tmp_path, database_url, '[delivery]\nquiet_hours = "00:00-23:59"\n')
    assert skolebro("import-roster", str(roster), "--config", str(cfg)).returncode == 0
    out = skolebro(
        "announce", "--unit", "u-fjell", "--group", "g-5b", "--text", "Hei", "--json",
        "--config", str(cfg),
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["deliveries"] == 4 and isinstance(result["announcement_id"], str)
    rows = json.loads(
        skolebro("export", "deliveries", "--announcement", result["announcement_id"],
                 "--config", str(cfg)).stdout
    )  # fmt: skip
    assert {r["status"] for r in rows} == {"queued"}
    urgent = skolebro(
        "announce", "--unit", "u-fjell", "--student", "s-0", "--text", "Nå!", "--urgent",
        "--config", str(cfg),
    )  # fmt: skip
    assert urgent.returncode == 0 and "quiet hours" not in urgent.stdout
    bad = skolebro("announce", "--unit", "u-nope", "--text", "x", "--config", str(cfg))
    assert bad.returncode == 1 and "u-nope" in bad.stderr


async def test_retry_of_a_failed_delivery_reached_by_fallback_is_refused(world: World) -> None:
    now = datetime.now(UTC)
    async with world.bridge.engine.begin() as conn:
        base = {"kind": "announcement", "guardian_id": "gd-1", "priority": "bulk",
                "attempts": 1, "next_attempt_at": now, "created_at": now, "updated_at": now,
                "body": "x"}  # fmt: skip
        await conn.execute(
            insert(t.deliveries),
            [
                {**base, "id": "dl-a", "channel": "sms", "address": mobile(1),
                 "status": "failed", "fallback_of": None},
                {**base, "id": "dl-b", "channel": "email", "address": "g1@example.no",
                 "status": "sent", "fallback_of": "dl-a"},
            ],
        )  # fmt: skip
    from bridge.outbox import retry

    result = await retry(world.bridge.engine, ["dl-a"])
    assert result.queued == 0 and "fallback" in result.reasons[0]


async def test_email_announcements_carry_reply_to_and_digest_guardians_are_held(
    world: World,
) -> None:
    from sqlalchemy import update

    async with world.bridge.engine.begin() as conn:
        await conn.execute(
            update(t.guardians).where(t.guardians.c.id == "gd-6").values(digest=True)
        )
    announcement_id = await announce(world, student_ids=["s-2", "s-6"], text="Aktivitetsdag")
    rows = await world.rows(t.deliveries, t.deliveries.c.announcement_id == announcement_id)
    by_guardian = {r["guardian_id"]: r for r in rows}
    mail = json.loads(by_guardian["gd-2"]["body"])["mail"]
    assert mail["reply_to"].startswith("r-") and mail["reply_to"].endswith(
        "@svar.example.kommune.no"
    )
    assert mail["list_unsubscribe"].startswith("mailto:r-") and mail["text"] == "Aktivitetsdag"
    held = by_guardian["gd-6"]
    assert (held["channel"], held["status"], held["last_error"]) == ("email", "skipped", "digest")
    assert [r for r in rows if r["fallback_of"] == held["id"]] == []
