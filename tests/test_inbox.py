"""The durable inbox: accept once per external id, and dead letters an operator can see."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import event, func, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine

from bridge import inbox
from bridge.config import Settings
from bridge.domain import Channel, InboundEvent
from bridge.inbox import MAX_PROCESSING_ATTEMPTS, InboxWorker, _store_fault, accept
from bridge.roster import import_roster
from bridge.store import tables as t
from tests.cli import skolebro, write_config
from tests.conftest import EXAMPLE_ROSTER


def _event(external_id: str, sender: str = "+4791234567", channel: Channel = Channel.SMS):
    return InboundEvent(
        channel=channel,
        external_id=external_id,
        sender=sender,
        text="Ola er syk",
        received_at=datetime.now(UTC),
    )


async def test_accept_is_idempotent_per_channel_and_id(engine: AsyncEngine) -> None:
    first = await accept(engine, _event("SM1"))
    again = await accept(engine, _event("SM1"))
    other = await accept(engine, _event("SM1", channel=Channel.EMAIL))
    assert first.new and not again.new and other.new
    assert first.event_id == again.event_id != other.event_id


async def test_an_event_that_keeps_failing_becomes_a_dead_letter(
    engine: AsyncEngine, database_url: str, tmp_path: Path
) -> None:
    # A Telegram "chat id" that is no number cannot be resolved: processing raises.
    accepted = await accept(engine, _event("upd-1", sender="not-a-chat", channel=Channel.TELEGRAM))
    worker = InboxWorker(engine, Settings())
    for _ in range(MAX_PROCESSING_ATTEMPTS):
        await worker.run_once()
    async with engine.connect() as conn:
        row = (
            (
                await conn.execute(
                    select(t.inbound_events).where(t.inbound_events.c.id == accepted.event_id)
                )
            )
            .mappings()
            .one()
        )
    assert row["status"] == "dead" and row["attempts"] == MAX_PROCESSING_ATTEMPTS
    assert row["last_error"] == "ValueError"
    assert await worker.run_once() == 0  # dead letters are not picked up again

    cfg = write_config(tmp_path, database_url)
    listed = json.loads(skolebro("inbox", "list", "--dead", "--config", str(cfg)).stdout)
    assert [e["id"] for e in listed] == [accepted.event_id]
    assert "not-a-chat" not in json.dumps(listed)  # no sender, no body in the listing
    out = skolebro("inbox", "retry", "--dead", "--config", str(cfg))
    assert out.returncode == 0 and out.stdout.startswith("1 inbound events queued again")
    assert await worker.run_once() == 1


# --- batches: many events in one transaction, a failing one still alone -----------------

KJERSTI = "+4791234567"  # Ola (school + SFO) and Kari (school), in the example roster
AMINA = "+4793456789"  # Aisha (school + SFO)


async def _pending_sms(engine: AsyncEngine, tag: str, count: int) -> list[int]:
    ids = []
    for i in range(count):
        sender, text = (KJERSTI, "Ola er syk i dag") if i % 2 else (AMINA, "Aisha is ill today")
        event = InboundEvent(
            channel=Channel.SMS,
            external_id=f"SM{tag}{i}",
            sender=sender,
            text=text,
            received_at=datetime.now(UTC),
        )
        ids.append((await accept(engine, event)).event_id)
    return ids


async def _absences_by_event(engine: AsyncEngine) -> dict[int, int]:
    a = t.absences
    async with engine.connect() as conn:
        rows = await conn.execute(select(a.c.inbound_event_id))
        found: dict[int, int] = {}
        for (event_id,) in rows:
            found[event_id] = found.get(event_id, 0) + 1
    return found


async def _statuses(engine: AsyncEngine) -> dict[int, tuple[str, int]]:
    e = t.inbound_events
    async with engine.connect() as conn:
        rows = await conn.execute(select(e.c.id, e.c.status, e.c.attempts))
        return {r.id: (r.status, r.attempts) for r in rows}


def _count_commits(engine: AsyncEngine) -> list[int]:
    commits = [0]

    def on_commit(_conn: object) -> None:
        commits[0] += 1

    event.listen(engine.sync_engine, "commit", on_commit)
    return commits


async def test_a_batch_of_events_commits_once(engine: AsyncEngine) -> None:
    await import_roster(engine, EXAMPLE_ROSTER)
    ids = await _pending_sms(engine, "b", 6)
    commits = _count_commits(engine)
    worker = InboxWorker(engine, Settings(), batch_seconds=60.0)
    assert await worker.run_once() == 6
    assert commits[0] == 1
    assert await _absences_by_event(engine) == {i: 2 for i in ids}  # both units, each once
    assert {s for s, _ in (await _statuses(engine)).values()} == {"processed"}
    async with engine.connect() as conn:
        replies = await conn.scalar(
            select(func.count()).select_from(t.deliveries).where(t.deliveries.c.kind == "reply")
        )
    assert replies == 6


async def test_a_failing_event_in_a_batch_fails_alone_and_the_others_commit_once(
    engine: AsyncEngine,
) -> None:
    await import_roster(engine, EXAMPLE_ROSTER)
    before = await _pending_sms(engine, "p", 3)
    # A Telegram "chat id" that is no number cannot be resolved: processing raises.
    poison = (
        await accept(engine, _event("upd-poison", sender="not-a-chat", channel=Channel.TELEGRAM))
    ).event_id
    after = await _pending_sms(engine, "q", 3)
    worker = InboxWorker(engine, Settings(), batch_seconds=60.0)
    assert await worker.run_once() == 7
    statuses = await _statuses(engine)
    assert statuses[poison] == ("pending", 1)
    assert all(statuses[i] == ("processed", 0) for i in before + after)
    assert await _absences_by_event(engine) == {i: 2 for i in before + after}

    for attempt in range(2, MAX_PROCESSING_ATTEMPTS + 1):
        assert await worker.run_once() == 1  # only the poison is left; the others stay done
        expected = "dead" if attempt == MAX_PROCESSING_ATTEMPTS else "pending"
        assert (await _statuses(engine))[poison] == (expected, attempt)
    assert await worker.run_once() == 0
    assert await _absences_by_event(engine) == {i: 2 for i in before + after}
    async with engine.connect() as conn:
        replies = await conn.scalar(
            select(func.count()).select_from(t.deliveries).where(t.deliveries.c.kind == "reply")
        )
    assert replies == 6  # one confirmation per good event, none twice


async def test_a_batch_stops_taking_events_when_its_time_is_up(engine: AsyncEngine) -> None:
    await import_roster(engine, EXAMPLE_ROSTER)
    ids = await _pending_sms(engine, "t", 4)
    commits = _count_commits(engine)
    worker = InboxWorker(engine, Settings(), batch_seconds=0.0)  # one event, then commit
    assert await worker.run_once() == 4
    assert commits[0] == 4
    assert await _absences_by_event(engine) == {i: 2 for i in ids}


async def test_on_sqlite_a_batch_gives_way_to_waiting_webhooks(
    engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite has one connection: while the intake has events waiting, a batch ends after
    BATCH_YIELD_SECONDS instead of BATCH_SECONDS. PostgreSQL batches do not give way."""
    await import_roster(engine, EXAMPLE_ROSTER)
    ids = await _pending_sms(engine, "y", 4)
    monkeypatch.setattr(inbox, "BATCH_YIELD_SECONDS", 0.0)
    waiting = [True]
    commits = _count_commits(engine)
    worker = InboxWorker(engine, Settings(), batch_seconds=60.0, intake_waiting=lambda: waiting[0])
    assert await worker.run_once() == 4
    assert commits[0] == (4 if engine.dialect.name == "sqlite" else 1)
    assert await _absences_by_event(engine) == {i: 2 for i in ids}

    more = await _pending_sms(engine, "z", 4)
    waiting[0] = False  # nobody waiting: one batch
    commits[0] = 0
    assert await worker.run_once() == 4
    assert commits[0] == 1
    assert await _absences_by_event(engine) == {i: 2 for i in ids + more}


@pytest.mark.parametrize(
    ("error", "fault"),
    [
        (sqlite3.OperationalError("database or disk is full"), True),
        (sqlite3.OperationalError("database is locked"), True),
        (sqlite3.OperationalError("no such column: foo"), False),  # a bug: dead-letters
        (ValueError("bad payload"), False),
    ],
)
def test_only_the_stores_own_faults_spare_an_event_its_attempts(
    error: Exception, fault: bool
) -> None:
    wrapped = OperationalError("stmt", {}, error) if isinstance(error, sqlite3.Error) else error
    assert _store_fault(wrapped) is fault
