"""The scheduler on a controlled clock: when digests fire, catch up, or are missed.

Two ways of controlling time: the triggers' own fire-time arithmetic, and the real
`AsyncIOScheduler` on the test's event loop with `time_machine` holding the wall clock
still (`tick=False`); a test moves the clock and calls `wakeup()`, as the scheduler's
own timer would. The event loop's monotonic clock is left alone, so I/O runs as usual.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import time_machine
from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from bridge import digests
from bridge.config import DigestSettings, EmailSettings, PrivacySettings, Settings
from bridge.roster import import_roster
from bridge.store import tables as t
from bridge.store.db import create_engine
from bridge.store.ids import new_id
from scheduler.housekeeping import housekeeping
from scheduler.jobs import DailyTrigger, Scheduler, digest_trigger, previous_fire_time
from tests.conftest import EXAMPLE_ROSTER

OSLO = ZoneInfo("Europe/Oslo")
SETTINGS = Settings(email=EmailSettings(enabled=True), digests=DigestSettings())


def oslo(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=OSLO)


def fires(trigger: DailyTrigger, start: datetime, count: int) -> list[datetime]:
    """The trigger's next `count` fire times after `start`, as the scheduler asks for them."""
    found: list[datetime] = []
    previous = None
    now = start
    for _ in range(count):
        fire = trigger.get_next_fire_time(previous, now)
        assert fire is not None
        found.append(fire)
        previous, now = fire, fire
    return found


# --- trigger arithmetic ----------------------------------------------------------------


def test_the_digest_fires_at_0815_oslo_on_weekdays_only() -> None:
    trigger = digest_trigger(SETTINGS)
    week = fires(trigger, oslo(2026, 5, 14, 9, 0), 3)  # from Thursday after the digest
    assert [f.astimezone(OSLO) for f in week] == [
        oslo(2026, 5, 15, 8, 15),  # Friday
        oslo(2026, 5, 18, 8, 15),  # Monday: no Saturday, no Sunday
        oslo(2026, 5, 19, 8, 15),
    ]
    assert week[0].astimezone(UTC) == datetime(2026, 5, 15, 6, 15, tzinfo=UTC)


def test_the_digest_keeps_local_time_across_both_dst_changes() -> None:
    trigger = digest_trigger(SETTINGS)
    spring = fires(trigger, oslo(2026, 3, 27, 9, 0), 1)[0]  # Fri before the change
    assert spring.astimezone(UTC) == datetime(2026, 3, 30, 6, 15, tzinfo=UTC)  # 08:15 CEST
    autumn = fires(trigger, oslo(2026, 10, 23, 9, 0), 1)[0]
    assert autumn.astimezone(UTC) == datetime(2026, 10, 26, 7, 15, tzinfo=UTC)  # 08:15 CET


def test_a_0230_job_fires_once_on_each_dst_night() -> None:
    trigger = DailyTrigger(hour=2, minute=30, timezone=OSLO)
    spring = fires(trigger, oslo(2026, 3, 28, 12, 0), 2)
    # 02:30 does not exist on 29 March: once, when the clock would have shown it (03:30).
    assert [f.astimezone(UTC) for f in spring] == [
        datetime(2026, 3, 29, 1, 30, tzinfo=UTC),
        datetime(2026, 3, 30, 0, 30, tzinfo=UTC),
    ]
    autumn = fires(trigger, oslo(2026, 10, 24, 12, 0), 2)
    # 02:30 happens twice on 25 October: once, the first time (CEST).
    assert [f.astimezone(UTC) for f in autumn] == [
        datetime(2026, 10, 25, 0, 30, tzinfo=UTC),
        datetime(2026, 10, 26, 1, 30, tzinfo=UTC),
    ]
    assert previous_fire_time(trigger, datetime(2026, 10, 25, 1, 45, tzinfo=UTC)) == autumn[0]


# --- the real scheduler on a held clock -------------------------------------------------


async def _store(engine: AsyncEngine) -> None:
    await import_roster(engine, EXAMPLE_ROSTER)
    now = datetime.now(UTC)
    async with engine.begin() as conn:
        for student, unit in (("s-ola", "u-fjell"), ("s-ola", "u-fjell-sfo")):
            await conn.execute(
                insert(t.absences),
                {
                    "id": new_id("ab"),
                    "student_id": student,
                    "unit_id": unit,
                    "from_date": date(2026, 1, 1),
                    "to_date": date(2027, 12, 31),
                    "reason": "illness",
                    "reported_by": "gd-kjersti",
                    "channel": "sms",
                    "received_at": now,
                    "status": "active",
                    "created_at": now,
                    "updated_at": now,
                },
            )


async def settle(*schedulers: Scheduler) -> None:
    """Let woken jobs start, then wait until their work (and what it set off) is done."""
    for _ in range(2):
        for _ in range(25):
            await asyncio.sleep(0)
        for s in schedulers:
            await s.idle()


async def fire_at(clock: Any, moment: datetime, *schedulers: Scheduler) -> None:
    clock.move_to(moment)
    for s in schedulers:
        s.wakeup()
    await settle(*schedulers)


@contextlib.asynccontextmanager
async def running(
    engine: AsyncEngine, at: datetime, settings: Settings = SETTINGS
) -> AsyncIterator[tuple[Scheduler, Any]]:
    with time_machine.travel(at, tick=False) as clock:
        scheduler = Scheduler(engine, settings)
        scheduler.start()
        try:
            await settle(scheduler)
            yield scheduler, clock
        finally:
            await scheduler.stop()


async def runs(engine: AsyncEngine, day: date, kind: str = "absence") -> list[dict[str, Any]]:
    dr = t.digest_runs
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(dr).where(dr.c.day == day, dr.c.kind == kind).order_by(dr.c.unit_id)
        )
        return [dict(r) for r in rows.mappings()]


async def digest_mails(engine: AsyncEngine) -> int:
    d = t.deliveries
    async with engine.connect() as conn:
        return int(await conn.scalar(select(func.count()).where(d.c.kind == "digest")) or 0)


async def test_digests_fire_at_0815_on_a_weekday_not_on_saturday_or_17_may(
    engine: AsyncEngine,
) -> None:
    await _store(engine)
    async with running(engine, oslo(2027, 5, 14, 8, 14, 59)) as (scheduler, clock):
        friday = date(2027, 5, 14)
        assert await runs(engine, friday) == []
        await fire_at(clock, oslo(2027, 5, 14, 8, 15), scheduler)
        sent = await runs(engine, friday)
        assert [(r["unit_id"], r["deliveries"]) for r in sent] == [
            ("u-fjell", 2),
            ("u-fjell-sfo", 1),
        ]
        assert {r["started_at"] for r in sent} == {oslo(2027, 5, 14, 8, 15).astimezone(UTC)}
        assert len(await runs(engine, friday, "unanswered")) == 2
        assert await digest_mails(engine) == 3

        await fire_at(clock, oslo(2027, 5, 15, 8, 15), scheduler)  # Saturday
        await fire_at(clock, oslo(2027, 5, 17, 8, 15), scheduler)  # Monday, 17 May
        assert await runs(engine, date(2027, 5, 15)) == []
        assert await runs(engine, date(2027, 5, 17)) == []
        assert await digest_mails(engine) == 3

        await fire_at(clock, oslo(2027, 5, 18, 8, 15), scheduler)
        assert len(await runs(engine, date(2027, 5, 18))) == 2
        assert await digest_mails(engine) == 6


async def test_a_units_closed_day_has_no_digest_for_that_unit_only(engine: AsyncEngine) -> None:
    await _store(engine)
    async with engine.begin() as conn:
        await conn.execute(
            insert(t.closed_days),
            {"unit_id": "u-fjell", "from_date": date(2027, 5, 14), "to_date": date(2027, 5, 14),
             "name": "Planleggingsdag", "created_at": datetime.now(UTC)},
        )  # fmt: skip
    async with running(engine, oslo(2027, 5, 14, 8, 14, 59)) as (scheduler, clock):
        await fire_at(clock, oslo(2027, 5, 14, 8, 15), scheduler)
        assert [r["unit_id"] for r in await runs(engine, date(2027, 5, 14))] == ["u-fjell-sfo"]


async def test_two_schedulers_on_one_store_send_each_digest_once(
    engine: AsyncEngine, database_url: str
) -> None:
    await _store(engine)
    other = create_engine(database_url)  # a second bridge process, as far as the store knows
    try:
        with time_machine.travel(oslo(2026, 6, 1, 8, 14, 59), tick=False) as clock:
            first, second = Scheduler(engine, SETTINGS), Scheduler(other, SETTINGS)
            first.start()
            second.start()
            try:
                await settle(first, second)
                await fire_at(clock, oslo(2026, 6, 1, 8, 15), first, second)
            finally:
                await first.stop()
                await second.stop()
    finally:
        await other.dispose()
    assert [(r["unit_id"], r["deliveries"]) for r in await runs(engine, date(2026, 6, 1))] == [
        ("u-fjell", 2),
        ("u-fjell-sfo", 1),
    ]
    assert await digest_mails(engine) == 3


async def test_a_bridge_down_from_0800_to_0900_sends_at_0900(engine: AsyncEngine) -> None:
    await _store(engine)
    async with running(engine, oslo(2026, 6, 2, 9, 0)) as (scheduler, clock):
        sent = await runs(engine, date(2026, 6, 2))
        assert [r["unit_id"] for r in sent] == ["u-fjell", "u-fjell-sfo"]
        assert all(r["sent_at"] == oslo(2026, 6, 2, 9, 0).astimezone(UTC) for r in sent)
        assert await digest_mails(engine) == 3
        # The next scheduled fire is tomorrow's; nothing more today.
        await fire_at(clock, oslo(2026, 6, 2, 12, 0), scheduler)
        assert await digest_mails(engine) == 3


async def test_a_bridge_down_past_the_grace_marks_the_day_missed(
    engine: AsyncEngine, caplog: pytest.LogCaptureFixture
) -> None:
    await _store(engine)
    caplog.set_level(logging.INFO)
    async with running(engine, oslo(2026, 6, 2, 11, 0)):
        missed = await runs(engine, date(2026, 6, 2))
        assert [(r["unit_id"], r["sent_at"], r["deliveries"]) for r in missed] == [
            ("u-fjell", None, 0),
            ("u-fjell-sfo", None, 0),
        ]
        assert await digest_mails(engine) == 0
        assert any(
            "missed" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records
        )
        async with engine.begin() as conn:  # the core: report for today -> notify at once
            assert await digests.digest_already_sent(conn, "u-fjell", date(2026, 6, 2))
        again = await digests.run_digest(
            engine, SETTINGS, kind="absence", unit_id="u-fjell", day=date(2026, 6, 2)
        )
        assert again.already and again.missed and not again.sent


async def test_a_fire_that_apscheduler_reports_missed_marks_the_day(engine: AsyncEngine) -> None:
    await _store(engine)
    async with running(engine, oslo(2026, 6, 3, 8, 0)) as (scheduler, clock):
        # The loop was stalled (a suspended machine) until past the grace time.
        await fire_at(clock, oslo(2026, 6, 3, 10, 16), scheduler)
        missed = await runs(engine, date(2026, 6, 3))
        assert [r["sent_at"] for r in missed] == [None, None]
    async with running(engine, oslo(2026, 6, 4, 8, 0)) as (scheduler, clock):
        await fire_at(clock, oslo(2026, 6, 4, 10, 14), scheduler)  # late, within the grace
        assert all(r["sent_at"] is not None for r in await runs(engine, date(2026, 6, 4)))


async def test_a_0230_digest_fires_once_on_the_spring_forward_night(engine: AsyncEngine) -> None:
    await _store(engine)
    settings = dataclasses.replace(
        SETTINGS, digests=DigestSettings(absence_time="02:30", days="mon-sun")
    )
    fired: list[tuple[date, datetime]] = []

    class Counting(Scheduler):
        async def run_day(self, kind: str, day: date) -> dict[str, digests.DigestResult]:
            if kind == "absence":
                fired.append((day, datetime.now(UTC)))
            return await super().run_day(kind, day)

    with time_machine.travel(datetime(2026, 3, 29, 0, 50, tzinfo=UTC), tick=False) as clock:
        scheduler = Counting(engine, settings)
        scheduler.start()
        try:
            await settle(scheduler)
            fired.clear()  # the start-up catch-up looked at the day before
            for minute in (datetime(2026, 3, 29, 1, 29, 59), datetime(2026, 3, 29, 1, 30)):
                await fire_at(clock, minute.replace(tzinfo=UTC), scheduler)
            await fire_at(clock, datetime(2026, 3, 29, 2, 30, tzinfo=UTC), scheduler)
            assert fired == [(date(2026, 3, 29), datetime(2026, 3, 29, 1, 30, tzinfo=UTC))]
            assert scheduler.scheduler is not None
            job = scheduler.scheduler.get_job("digest:absence")
            assert job.next_run_time.astimezone(UTC) == datetime(2026, 3, 30, 0, 30, tzinfo=UTC)
        finally:
            await scheduler.stop()
    assert [r["started_at"] for r in await runs(engine, date(2026, 3, 29))] == [
        datetime(2026, 3, 29, 1, 30, tzinfo=UTC)
    ] * 2

    fired.clear()
    with time_machine.travel(datetime(2026, 10, 25, 0, 0, tzinfo=UTC), tick=False) as clock:
        scheduler = Counting(engine, settings)
        scheduler.start()
        try:
            await settle(scheduler)
            fired.clear()
            for hour in (0, 1, 2):  # 02:30 CEST, 02:30 CET, 03:30 CET
                await fire_at(clock, datetime(2026, 10, 25, hour, 30, tzinfo=UTC), scheduler)
        finally:
            await scheduler.stop()
    assert fired == [(date(2026, 10, 25), datetime(2026, 10, 25, 0, 30, tzinfo=UTC))]


async def test_housekeeping_clears_old_bodies_expired_state_and_stuck_leases(
    engine: AsyncEngine,
) -> None:
    await _store(engine)
    now = datetime.now(UTC)
    old = now - timedelta(days=400)
    settings = dataclasses.replace(SETTINGS, privacy=PrivacySettings(retention_days=365))
    thread_id = new_id("th")
    async with engine.begin() as conn:
        await conn.execute(
            insert(t.threads),
            {
                "id": thread_id,
                "guardian_id": "gd-kjersti",
                "unit_id": "u-fjell",
                "student_id": "s-ola",
                "created_at": old,
                "last_message_at": now,
            },
        )
        for age, body in ((old, "gammel"), (now, "ny")):
            await conn.execute(
                insert(t.messages),
                {
                    "id": new_id("msg"),
                    "thread_id": thread_id,
                    "direction": "in",
                    "channel": "sms",
                    "author": "gd-kjersti",
                    "body": body,
                    "sensitive": [],
                    "sent_at": age,
                },
            )
        for ext, status in (("old-done", "processed"), ("old-pending", "pending")):
            await conn.execute(
                insert(t.inbound_events),
                {
                    "channel": "sms",
                    "external_id": ext,
                    "sender": "+4791234567",
                    "body": "tekst",
                    "received_at": old,
                    "status": status,
                },
            )
        for code, expires in (("expired", now - timedelta(hours=1)), ("live", now + timedelta(1))):
            await conn.execute(
                insert(t.link_codes),
                {
                    "code_hash": code,
                    "guardian_id": "gd-per",
                    "channel": "telegram",
                    "created_at": now - timedelta(days=3),
                    "expires_at": expires,
                },
            )
        for address, state, updated in (
            ("+4700000001", {}, now),
            ("+4700000002", {"question": {"asked_at": old.isoformat()}}, old),
            ("+4700000003", {"question": {"asked_at": now.isoformat()}}, now),
        ):
            await conn.execute(
                insert(t.conversations),
                {"channel": "sms", "address": address, "state": state, "updated_at": updated},
            )
        base = {
            "kind": "reply",
            "channel": "sms",
            "address": "+4791234567",
            "body": "hei",
            "priority": "normal",
            "next_attempt_at": now,
            "created_at": now,
            "updated_at": now,
        }
        stuck = {
            "stuck": ("sending", now - timedelta(minutes=30), 1),
            "used-up": ("sending", now - timedelta(minutes=30), 8),
            "fresh": ("sending", now - timedelta(minutes=2), 1),
        }
        for delivery_id, (status, lease, attempts) in stuck.items():
            await conn.execute(
                insert(t.deliveries),
                {
                    **base,
                    "id": delivery_id,
                    "status": status,
                    "lease_until": lease,
                    "lease_owner": "w",
                    "attempts": attempts,
                },
            )
    result = await housekeeping(engine, settings, now=now)
    assert (result.messages_cleared, result.inbound_cleared) == (1, 1)
    assert (result.link_codes_deleted, result.conversations_deleted) == (1, 2)
    assert (result.leases_requeued, result.leases_dead) == (1, 1)
    async with engine.connect() as conn:
        bodies = set(await conn.scalars(select(t.messages.c.body)))
        assert bodies == {None, "ny"}
        ie = t.inbound_events
        events = {
            r.external_id: r.body for r in await conn.execute(select(ie.c.external_id, ie.c.body))
        }
        assert events == {"old-done": None, "old-pending": "tekst"}  # never before processing
        assert set(await conn.scalars(select(t.link_codes.c.code_hash))) == {"live"}
        assert set(await conn.scalars(select(t.conversations.c.address))) == {"+4700000003"}
        d = t.deliveries
        states = {r.id: r.status for r in await conn.execute(select(d.c.id, d.c.status))}
        assert states == {"stuck": "queued", "used-up": "dead", "fresh": "sending"}
    again = await housekeeping(engine, settings, now=now)
    assert again.messages_cleared == again.leases_requeued == again.conversations_deleted == 0
