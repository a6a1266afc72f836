"""The delivery engine: announcements fanned out, retried, rerouted and tracked.

Through the real bridge and the Twilio fake; e-mail and Telegram deliveries are
queued for their own senders.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from bridge.announcements import AnnouncementError, create_announcement, summary
from bridge.config import EmailSettings, Settings
from bridge.digests import HELD
from bridge.domain import Channel, StatusUpdate
from bridge.outbox import RateLimit, record_statuses
from bridge.routing import load_routes, quiet_until
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


async def test_group_announcement_reaches_each_guardian_once(world: World) -> None:
    announcement_id = await world.announce(group_ids=["g-5b"], text="Skolen stenger kl 12 i morgen")
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
    announcement_id = await world.announce(student_ids=["s-0"], text="Husk gymtøy")
    await eventually(lambda: _delivered(world, announcement_id, 1))
    (row,) = await world.rows(t.deliveries, t.deliveries.c.announcement_id == announcement_id)
    assert row["attempts"] == 2 and row["status"] == "delivered" and row["last_error"] is None


async def test_invalid_number_fails_at_once_and_falls_back_to_email(world: World) -> None:
    world.twilio.mark_invalid(mobile(1))  # gd-1: sms;email
    announcement_id = await world.announce(student_ids=["s-1"], text="Husk gymtøy")
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
    second = await world.announce(student_ids=["s-1"], text="Ny beskjed")
    (row,) = await world.rows(t.deliveries, t.deliveries.c.announcement_id == second)
    assert row["channel"] == "email"


async def _rows_where(world: World, announcement_id: str, ok) -> list[dict] | None:  # type: ignore[no-untyped-def]
    rows = await world.rows(t.deliveries, t.deliveries.c.announcement_id == announcement_id)
    return rows if ok(rows) else None


async def test_rate_limited_send_waits_for_retry_after(world: World) -> None:
    world.twilio.fail_next(1, status=429, retry_after=1, to=mobile(4))
    started = datetime.now(UTC)
    announcement_id = await world.announce(student_ids=["s-4"], text="Husk matpakke")
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
    announcement_id = await world.announce(student_ids=["s-5"], text="Foreldremøte")
    rows = await world.rows(t.deliveries, t.deliveries.c.announcement_id == announcement_id)
    skipped = next(r for r in rows if r["channel"] == "sms")
    fallback = next(r for r in rows if r["channel"] == "email")
    assert skipped["status"] == "skipped" and fallback["fallback_of"] == skipped["id"]
    assert fallback["status"] == "queued"
    await asyncio.sleep(0.3)
    assert world.replies_to(mobile(5))[1:] == []  # nothing after the STOPP acknowledgement

    urgent = await world.announce(student_ids=["s-5"], text="Stengt i dag!", urgent=True)
    await eventually(lambda: _delivered(world, urgent, 1))
    assert world.replies_to(mobile(5))[-1] == "Fjellsiden skole: Stengt i dag!"


async def test_only_skipped_when_no_other_channel_is_open(world: World) -> None:
    await world.text(mobile(0), "STOPP")  # gd-0: sms only
    await eventually(lambda: world.replies_to(mobile(0)))
    announcement_id = await world.announce(student_ids=["s-0"], text="Hei")
    rows = await world.rows(t.deliveries, t.deliveries.c.announcement_id == announcement_id)
    assert [(r["channel"], r["status"]) for r in rows] == [("sms", "skipped")]


async def test_out_of_order_callbacks_keep_the_furthest_status(world: World) -> None:
    announcement_id = await world.announce(student_ids=["s-0"], text="Hei")
    await eventually(lambda: _delivered(world, announcement_id, 1))
    (row,) = await world.rows(t.deliveries, t.deliveries.c.announcement_id == announcement_id)
    for late in ("sent", "queued"):
        await world.bridge.record_status(StatusUpdate(Channel.SMS, row["provider_id"], late))
    (row,) = await world.rows(t.deliveries, t.deliveries.c.announcement_id == announcement_id)
    assert row["status"] == "delivered"


async def test_callbacks_arriving_together_share_one_transaction(world: World) -> None:
    students = [f"s-{i}" for i in (0, 1, 4, 5, 8, 9)]  # SMS first
    announcement_id = await world.announce(student_ids=students, text="Hei")
    await eventually(lambda: _delivered(world, announcement_id, len(students)))
    rows = await world.rows(t.deliveries, t.deliveries.c.announcement_id == announcement_id)
    statuses = world.bridge.statuses
    # Every callback so far went through the group commit, and each was applied.
    assert statuses.items >= 2 * len(students)
    groups_before = statuses.groups
    late = [
        StatusUpdate(Channel.SMS, row["provider_id"], status)
        for row in rows
        for status in ("queued", "sent", "failed")
    ]
    await asyncio.gather(*(world.bridge.record_status(update) for update in late))
    assert statuses.groups - groups_before <= 2  # 18 callbacks, at most two transactions
    after = await world.rows(t.deliveries, t.deliveries.c.announcement_id == announcement_id)
    assert {r["status"] for r in after} == {"delivered"}  # never moved back


async def test_a_group_of_callbacks_applies_each_in_order(world: World) -> None:
    world.twilio.callback_delay = 60  # the fake's own callbacks come too late to matter
    announcement_id = await world.announce(student_ids=["s-0", "s-1"], text="Hei")
    rows = await eventually(
        lambda: _rows_where(
            world, announcement_id, lambda rs: {r["status"] for r in rs} == {"sent"}
        )
    )
    by_guardian = {r["guardian_id"]: r for r in rows}
    only_sms, sms_then_email = by_guardian["gd-0"], by_guardian["gd-1"]
    await record_statuses(
        world.bridge.engine,
        world.bridge.settings,
        [
            StatusUpdate(
                Channel.SMS, only_sms["provider_id"], "delivered", delivery_id=only_sms["id"]
            ),
            StatusUpdate(Channel.SMS, only_sms["provider_id"], "sent"),  # never back
            StatusUpdate(Channel.SMS, "SMunknown", "delivered", delivery_id="dl-unknown"),
            StatusUpdate(Channel.SMS, sms_then_email["provider_id"], "delivered"),  # by provider id
            StatusUpdate(Channel.SMS, sms_then_email["provider_id"], "failed", error="30005: x"),
        ],
    )
    after = await world.rows(t.deliveries, t.deliveries.c.announcement_id == announcement_id)
    status = {(r["guardian_id"], r["channel"]): r for r in after}
    assert status["gd-0", "sms"]["status"] == "delivered"
    # Delivered is final: the failure that came after it in the same group changes nothing.
    assert status["gd-1", "sms"]["status"] == "delivered" and ("gd-1", "email") not in status

    await record_statuses(
        world.bridge.engine,
        world.bridge.settings,
        [StatusUpdate(Channel.SMS, "SMx", "failed", error="30005: x", delivery_id=only_sms["id"])],
    )
    assert (await world.rows(t.deliveries, t.deliveries.c.id == only_sms["id"]))[0][
        "status"
    ] == "delivered"


async def test_a_failure_in_a_group_falls_back_and_the_rest_still_moves(world: World) -> None:
    world.twilio.callback_delay = 60
    announcement_id = await world.announce(student_ids=["s-0", "s-1"], text="Hei")
    rows = await eventually(
        lambda: _rows_where(
            world, announcement_id, lambda rs: {r["status"] for r in rs} == {"sent"}
        )
    )
    by_guardian = {r["guardian_id"]: r for r in rows}
    await record_statuses(
        world.bridge.engine,
        world.bridge.settings,
        [
            StatusUpdate(
                Channel.SMS, by_guardian["gd-1"]["provider_id"], "failed", error="30005: x"
            ),
            StatusUpdate(Channel.SMS, by_guardian["gd-1"]["provider_id"], "delivered"),  # too late
            StatusUpdate(Channel.SMS, by_guardian["gd-0"]["provider_id"], "delivered"),
        ],
    )
    after = await world.rows(t.deliveries, t.deliveries.c.announcement_id == announcement_id)
    status = {(r["guardian_id"], r["channel"]): r for r in after}
    failed = status["gd-1", "sms"]
    assert failed["status"] == "failed" and failed["last_error"] == "30005: x"
    assert status["gd-1", "email"]["fallback_of"] == failed["id"]
    assert status["gd-0", "sms"]["status"] == "delivered"


async def test_announcements_give_way_while_parents_texts_wait(world: World) -> None:
    outbox = world.bridge.outbox
    outbox.give_way = RateLimit(2)  # two at once, then two a second
    behind = [True]
    outbox.inbox_behind = lambda: behind[0]
    students = [f"s-{i}" for i in (0, 1, 4, 5, 8, 9, 12, 13)]  # SMS first
    started = time.monotonic()
    announcement_id = await world.announce(student_ids=students, text="Storm")
    await world.text(mobile(20), "HJELP")  # gd-20, not among them: the answer is a reply
    await eventually(lambda: world.replies_to(mobile(20)), within=5)
    answered = time.monotonic() - started
    await eventually(lambda: _delivered(world, announcement_id, len(students)), within=15)
    assert answered < 2.0 < time.monotonic() - started  # 6 after the first 2, at 2/s

    behind[0] = False  # nothing waits: announcements go at the channel's own pace
    outbox.give_way = RateLimit(0.001)
    started = time.monotonic()
    again = await world.announce(student_ids=students, text="Storm over")
    await eventually(lambda: _delivered(world, again, len(students)), within=5)
    assert time.monotonic() - started < 2.0


async def test_failed_callback_after_sent_falls_back(world: World) -> None:
    world.twilio.set_outcome(mobile(1), "undelivered", 30005)  # unknown destination handset
    announcement_id = await world.announce(student_ids=["s-1"], text="Hei")
    rows = await eventually(
        lambda: _rows_where(world, announcement_id, lambda rs: len(rs) == 2), within=10
    )
    first = next(r for r in rows if r["channel"] == "sms")
    assert first["status"] == "failed" and "30005" in first["last_error"]
    assert next(r for r in rows if r["channel"] == "email")["fallback_of"] == first["id"]


async def test_unknown_group_and_overlong_text_are_refused(world: World) -> None:
    with pytest.raises(AnnouncementError, match="g-9z"):
        await world.announce(group_ids=["g-9z"], text="Hei")
    with pytest.raises(AnnouncementError, match="too long for SMS"):
        await world.announce(text="Lang beskjed. " * 120)
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
    announcement_id = await world.announce(student_ids=["s-2", "s-6"], text="Aktivitetsdag")
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


# --- the set-based fan-out against `Routes.plan`, guardian by guardian -----------------

ORDERS = [
    "sms", "email", "telegram", "sms,email", "email,sms", "telegram,sms,email",
    "telegram,email,sms", "email,telegram,sms", "sms,telegram", " email , sms ",
    "sms,sms,email", "fax,email", "fax", "",
]  # fmt: skip
STATES = ["none", "opted_out", "opted_out", "dead", "both", "opted_in"]


async def _many_routing_cases(engine: AsyncEngine, n: int, seed: int) -> None:
    """n guardians of one unit, each a random mix of channel order, identities, links,
    STOPPs, dead addresses and digests; some inactive or restricted (not addressed)."""
    rng = random.Random(seed)
    now = datetime.now(UTC)
    stamps = {"created_at": now, "updated_at": now}
    guardians, students, family, links, points = [], [], [], [], {}
    for i in range(n):
        gid, sid = f"gx-{i:03d}", f"sx-{i:03d}"
        mobile = rng.choice([f"+479200{i:04d}", f"+479200{i:04d}", None, ""])
        email = rng.choice([f"gx{i}@example.no", f"gx{i}@example.no", None])
        guardians.append(
            {"id": gid, "first_name": "F", "last_name": "T", "mobile": mobile, "email": email,
             "language": "nb", "channels": rng.choice(ORDERS), "digest": rng.random() < 0.3,
             "roster_order": rng.randrange(n), "active": rng.random() > 0.05, **stamps}
        )  # fmt: skip
        students.append({"id": sid, "first_name": "B", "last_name": "T", "unit_id": "u-x",
                         "active": True, **stamps})  # fmt: skip
        family.append({"guardian_id": gid, "student_id": sid, "restricted": rng.random() < 0.05})
        chats = rng.choice([[], [], [7000 + i], [7000 + i, 8000 + i]])
        for k, chat in enumerate(chats):  # two links: the later one counts
            links.append({"chat_id": chat, "guardian_id": gid,
                          "linked_at": now - timedelta(hours=len(chats) - k)})  # fmt: skip
        for channel, address in (("sms", mobile), ("email", email), *(
            ("telegram", str(c)) for c in chats
        )):  # fmt: skip
            state = rng.choice(STATES)
            if address and state != "none":
                points[(channel, address)] = {
                    "channel": channel, "address": address, "updated_at": now,
                    "opted_out_at": now if state in ("opted_out", "both") else None,
                    "opted_in_at": now if state == "opted_in" else None,
                    "dead_at": now if state in ("dead", "both") else None,
                }  # fmt: skip
    async with engine.begin() as conn:
        await conn.execute(
            insert(t.units), {"id": "u-x", "name": "X skole", "unit_type": "school", **stamps}
        )
        await conn.execute(insert(t.guardians), guardians)
        await conn.execute(insert(t.students), students)
        await conn.execute(insert(t.guardian_students), family)
        if links:
            await conn.execute(insert(t.telegram_links), links)
        await conn.execute(insert(t.contact_points), list(points.values()))


async def _expected(engine: AsyncEngine, urgent: bool) -> dict[str, list[tuple[Any, ...]]]:
    """Per addressed guardian, the chain `Routes.plan` gives: (channel, address, status,
    last_error) for each delivery, first one first."""
    g, gs = t.guardians, t.guardian_students
    async with engine.connect() as conn:
        addressed = (
            await conn.execute(
                select(g.c.id, g.c.digest)
                .join(gs, gs.c.guardian_id == g.c.id)
                .where(g.c.active.is_(True), gs.c.restricted.is_(False))
            )
        ).all()
        routes = await load_routes(conn, [gid for gid, _ in addressed])
    expected = {}
    for gid, digest in addressed:
        plan = routes.plan(gid, urgent=urgent)
        chain: list[tuple[Any, ...]] = []
        for route in plan:
            skip = route.opted_out and not urgent
            hold = not skip and route.channel == "email" and digest and not urgent
            status = "skipped" if skip or hold else "queued"
            chain.append((route.channel, route.address, status, HELD if hold else None))
        expected[gid] = chain or [("none", None, "skipped", "no open channel")]
    return expected


@pytest.mark.parametrize("urgent", [False, True])
async def test_fan_out_matches_the_route_plan_for_every_guardian(
    engine: AsyncEngine, urgent: bool
) -> None:
    await _many_routing_cases(engine, 300, seed=5)
    settings = Settings(email=EmailSettings(enabled=True))
    created = await create_announcement(
        engine, settings, unit_id="u-x", text="Hei", subject="Tema", urgent=urgent
    )
    expected = await _expected(engine, urgent)
    d = t.deliveries
    async with engine.connect() as conn:
        rows = (
            (await conn.execute(select(d).where(d.c.announcement_id == created.announcement_id)))
            .mappings()
            .all()
        )
        tokens = (await conn.execute(select(t.reply_tokens))).mappings().all()
    by_id = {r["id"]: r for r in rows}
    assert len(by_id) == len(rows) and all(len(i) == len("dl-") + 32 for i in by_id)
    actual: dict[str, list[tuple[Any, ...]]] = {}
    for first in (r for r in rows if r["fallback_of"] is None):
        chain, row = [], first
        while row is not None:
            chain.append((row["channel"], row["address"], row["status"], row["last_error"]))
            assert row["guardian_id"] == first["guardian_id"]
            row = next((r for r in rows if r["fallback_of"] == row["id"]), None)
        actual[first["guardian_id"]] = chain
    assert sum(len(c) for c in actual.values()) == len(rows)  # every row in one chain
    assert actual == expected
    # The cases this seed covers: fallbacks, held mail, nothing open, everything skipped.
    chains = list(expected.values())
    assert any(c[0][0] == "none" for c in chains)
    if urgent:
        assert all(len(c) == 1 for c in chains) and any(c[0][2] == "queued" for c in chains)
    else:
        assert any(len(c) == 3 for c in chains) and any(c[-1][3] == HELD for c in chains)
        assert any(all(s == "skipped" and e is None for _, _, s, e in c) for c in chains)
    assert created.deliveries == len(expected)
    assert created.skipped == sum(
        1 for r in rows if r["status"] == "skipped" and r["last_error"] != HELD
    )
    # The shared values, and each e-mail with a reply token of its own.
    for r in rows:
        assert (r["kind"], r["subject"], r["attempts"]) == ("announcement", "Tema", 0)
        assert r["priority"] == ("urgent" if urgent else "bulk")
        assert r["next_attempt_at"] == r["created_at"] == r["updated_at"]
        assert r["segments"] == (1 if r["channel"] == "sms" else None)
        if r["channel"] in ("sms", "telegram"):
            assert r["body"] == "X skole: Hei"
    mails = [json.loads(r["body"])["mail"] for r in rows if r["channel"] == "email"]
    assert len(tokens) == len(mails) and len({m["reply_to"] for m in mails}) == len(mails)
    assert {m["to"] for m in mails} == {r["address"] for r in rows if r["channel"] == "email"}
    assert all(m["subject"] == "Tema" and m["text"] == "Hei" for m in mails)
    assert all((m["list_unsubscribe"] is None) == urgent for m in mails)


async def test_replies_are_claimed_before_an_earlier_urgent_storm(engine: AsyncEngine) -> None:
    from bridge.outbox import OutboxWorker, enqueue

    settings = Settings()
    storm = datetime.now(UTC) - timedelta(minutes=5)
    async with engine.begin() as conn:
        for i in range(300):  # an urgent announcement's deliveries, queued first
            await enqueue(
                conn, kind="announcement", channel="sms", address=f"+479200{i:04d}",
                body="Skolen stenger kl 12", priority="urgent", not_before=storm,
            )  # fmt: skip
        reply = await enqueue(
            conn, kind="reply", channel="sms", address="+4791234567",
            body="Fravær registrert.", priority="urgent",
        )  # fmt: skip
    worker = OutboxWorker(engine, settings, {}, batch=10)
    claimed = [row["id"] for row in await worker.claim("sms", limit=10)]
    assert reply in claimed and len(claimed) == len(set(claimed)) == 10
    if engine.dialect.name == "sqlite":  # by its own index, not a walk past the storm
        async with engine.connect() as conn:
            plan = await conn.exec_driver_sql(
                "EXPLAIN QUERY PLAN SELECT id FROM deliveries WHERE channel = 'sms' AND "
                f"{t.REPLY_QUEUED} AND next_attempt_at <= '9999' ORDER BY next_attempt_at"
            )
            assert "ix_deliveries_reply_claim" in str(plan.all())
