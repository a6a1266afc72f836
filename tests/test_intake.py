"""Group commit on intake: many accepts, few transactions, nothing acknowledged early."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import event, func, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine

from bridge import metrics
from bridge.domain import Channel, InboundEvent, StoreUnavailable
from bridge.inbox import accept
from bridge.intake import Intake
from bridge.store import tables as t
from bridge.store.db import create_engine

E = t.inbound_events


def _event(external_id: str, channel: Channel = Channel.SMS, **payload: Any) -> InboundEvent:
    return InboundEvent(
        channel=channel,
        external_id=external_id,
        sender="+4791234567",
        text="Ola er syk",
        received_at=datetime.now(UTC),
        payload=payload,
    )


def _commits(engine: AsyncEngine) -> list[int]:
    seen: list[int] = []
    event.listen(engine.sync_engine, "commit", lambda _conn: seen.append(1))
    return seen


async def _stored(engine: AsyncEngine, prefix: str) -> int:
    async with engine.connect() as conn:
        found = await conn.scalar(
            select(func.count()).select_from(E).where(E.c.external_id.like(f"{prefix}%"))
        )
    return int(found or 0)


def _inbound_count(channel: str) -> float:
    return metrics.inbound_total.labels(channel=channel)._value.get()


async def test_many_concurrent_accepts_land_in_few_transactions(engine: AsyncEngine) -> None:
    intake = Intake(engine)
    commits = _commits(engine)
    counted = _inbound_count("sms")
    results = await asyncio.gather(*(intake.accept(_event(f"SMmany{i}")) for i in range(300)))
    assert all(r.new for r in results)
    ids = [r.event_id for r in results]
    assert ids == sorted(ids) and len(set(ids)) == 300  # ids follow arrival order
    assert len(commits) <= 3 and intake.groups == len(commits)
    assert await _stored(engine, "SMmany") == 300
    assert _inbound_count("sms") - counted == 300  # each new event counted once
    await intake.close()


async def test_a_group_is_capped(engine: AsyncEngine) -> None:
    intake = Intake(engine, max_group=40)
    await asyncio.gather(*(intake.accept(_event(f"SMcap{i}")) for i in range(100)))
    assert intake.groups == 3 and intake.items == 100
    await intake.close()


async def test_repeats_in_a_group_and_in_the_store_are_not_new(engine: AsyncEngine) -> None:
    old = await accept(engine, _event("SMold"))
    intake = Intake(engine)
    counted = _inbound_count("sms")
    a1, a2, again, b, other = await asyncio.gather(
        intake.accept(_event("SMa")),
        intake.accept(_event("SMa")),
        intake.accept(_event("SMold")),
        intake.accept(_event("SMb")),
        intake.accept(_event("SMa", channel=Channel.EMAIL)),  # another channel: its own
    )
    assert intake.groups == 1
    assert a1.new and not a2.new and a1.event_id == a2.event_id
    assert not again.new and again.event_id == old.event_id
    assert b.new and other.new and other.event_id not in (a1.event_id, b.event_id)
    assert _inbound_count("sms") - counted == 2
    async with engine.connect() as conn:
        rows = await conn.scalar(select(func.count()).select_from(E))
    assert rows == 4  # SMold, SMa, SMb, and SMa by e-mail
    await intake.close()


async def test_a_failing_group_answers_every_waiter_and_stores_nothing(
    engine: AsyncEngine,
) -> None:
    intake = Intake(engine)
    await intake.accept(_event("SMbefore"))  # the writer is running and warm

    def fail(_conn: Any) -> None:  # every statement has run; the commit fails
        raise OperationalError("COMMIT", {}, Exception("disk I/O error"))

    event.listen(engine.sync_engine, "commit", fail)
    results = await asyncio.gather(
        *(intake.accept(_event(f"SMfail{i}")) for i in range(20)), return_exceptions=True
    )
    event.remove(engine.sync_engine, "commit", fail)
    assert all(isinstance(r, StoreUnavailable) for r in results), results
    assert {str(r) for r in results} == {"OperationalError"}
    assert await _stored(engine, "SMfail") == 0
    # The store is back: the same events (a provider's retries) are stored, as new.
    retried = await asyncio.gather(*(intake.accept(_event(f"SMfail{i}")) for i in range(20)))
    assert all(r.new for r in retried)
    assert await _stored(engine, "SMfail") == 20
    await intake.close()


async def test_one_bad_event_fails_alone(engine: AsyncEngine) -> None:
    """A value the store cannot take fails its own event, not its whole group."""
    intake = Intake(engine)
    results = await asyncio.gather(
        intake.accept(_event("SMok1")),
        intake.accept(_event("SMbad", weird=object())),  # not JSON
        intake.accept(_event("SMok2")),
        return_exceptions=True,
    )
    assert not isinstance(results[0], BaseException) and results[0].new
    assert isinstance(results[1], Exception)
    assert not isinstance(results[2], BaseException) and results[2].new
    assert await _stored(engine, "SMok") == 2 and await _stored(engine, "SMbad") == 0
    await intake.close()


async def test_no_accept_is_answered_before_its_commit(
    engine: AsyncEngine, database_url: str
) -> None:
    intake = Intake(engine)
    tasks: list[asyncio.Task[Any]] = []
    answered_at_commit: list[int] = []

    def on_commit(_conn: Any) -> None:  # runs right before the COMMIT goes to the store
        answered_at_commit.append(sum(task.done() for task in tasks))

    event.listen(engine.sync_engine, "commit", on_commit)
    other = create_engine(database_url)  # a connection of its own: sees committed rows only
    try:

        async def accept_and_look(i: int) -> bool:
            accepted = await intake.accept(_event(f"SMvis{i}"))
            async with other.connect() as conn:
                found = await conn.scalar(select(E.c.id).where(E.c.external_id == f"SMvis{i}"))
            return found == accepted.event_id

        tasks.extend(asyncio.create_task(accept_and_look(i)) for i in range(50))
        assert all(await asyncio.gather(*tasks))
    finally:
        await other.dispose()
    assert answered_at_commit and set(answered_at_commit) == {0}
    await intake.close()


async def test_a_caller_that_gives_up_does_not_spoil_the_group(engine: AsyncEngine) -> None:
    intake = Intake(engine)
    hurried = asyncio.create_task(intake.accept(_event("SMgone")))
    others = [asyncio.create_task(intake.accept(_event(f"SMstay{i}"))) for i in range(5)]
    await asyncio.sleep(0)
    hurried.cancel()
    results = await asyncio.gather(*others)
    assert all(r.new for r in results)
    # The cancelled one may or may not be stored; its provider's retry is then a repeat.
    again = await intake.accept(_event("SMgone"))
    assert again.event_id > 0
    await intake.close()


async def test_closed_intake_refuses(engine: AsyncEngine) -> None:
    intake = Intake(engine)
    queued = asyncio.create_task(intake.accept(_event("SMlast")))
    await asyncio.sleep(0)
    await intake.close()
    assert (await queued).new  # what was queued is written before the writer stops
    with pytest.raises(StoreUnavailable):
        await intake.accept(_event("SMlate"))
