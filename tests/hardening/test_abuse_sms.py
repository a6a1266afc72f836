"""Abuse over SMS: pumping from unknown numbers, and SQL in every text field.

SMS pumping (SPEC 8): an unknown number gets at most one explanatory reply a day, and
strangers together get at most `inbox.UNKNOWN_REPLIES_PER_HOUR` replies an hour, so a
burst from many numbers costs a bounded number of paid messages. Known guardians are
not held back by the cap.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from bridge import inbox
from bridge.store import tables as t
from tests.conftest import EXAMPLE_ROSTER
from tests.world import World, eventually, running_world

KJERSTI = "+4791234567"  # a guardian in the example roster (Ola and Kari)


@pytest.fixture
async def world(database_url: str, tmp_path: Path) -> AsyncIterator[World]:
    async with running_world(database_url, tmp_path, EXAMPLE_ROSTER) as w:
        yield w


async def _settled(world: World, n: int) -> None:
    e = t.inbound_events

    async def done() -> bool:
        rows = await world.rows(e, e.c.status == "processed")
        return len(rows) >= n

    await eventually(done, within=30)
    await asyncio.sleep(0.5)


def _strangers(n: int, base: int = 0) -> list[str]:
    return [f"+479{base + i:07d}" for i in range(n)]


def test_the_hourly_cap_is_a_small_constant() -> None:
    assert 0 < inbox.UNKNOWN_REPLIES_PER_HOUR <= 100


async def test_a_burst_from_one_unknown_number_costs_one_reply(world: World) -> None:
    stranger = "+4799999999"
    for i in range(10):
        assert await world.text(stranger, f"Hei {i}") == 200
    await _settled(world, 10)
    await eventually(lambda: world.replies_to(stranger))
    await asyncio.sleep(1)  # room for any further (wrong) reply to go out
    assert len(world.replies_to(stranger)) == 1
    events = await world.rows(t.inbound_events)
    assert all(e["sender"] is None and e["body"] is None for e in events)
    async with world.bridge.engine.connect() as conn:
        hashes = await conn.scalar(select(func.count()).select_from(t.unknown_senders))
    assert hashes == 1


async def test_many_unknown_numbers_cost_at_most_the_hourly_cap(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(inbox, "UNKNOWN_REPLIES_PER_HOUR", 5)
    numbers = _strangers(12, base=1000)
    for number in numbers:
        assert await world.text(number, "Vinn en iPhone! Svar JA") == 200
        assert await world.text(number, "igjen") == 200
    await _settled(world, 24)
    await eventually(lambda: len([n for n in numbers if world.replies_to(n)]) >= 5)
    await asyncio.sleep(1)
    replied = [n for n in numbers if world.replies_to(n)]
    assert len(replied) == 5
    assert all(len(world.replies_to(n)) == 1 for n in replied)

    # The cap is for strangers only: a guardian's absence is still confirmed.
    assert await world.text(KJERSTI, "Ola er syk i dag") == 200
    reply = await eventually(lambda: world.replies_to(KJERSTI))
    assert "Ola" in reply[0]
    assert len(await world.rows(t.absences)) == 2  # school and SFO


SQL = [
    "'; DROP TABLE guardians; --",
    "Robert'); DROP TABLE students;--",
    '" OR 1=1 --',
    "1; DELETE FROM inbound_events WHERE 1=1",
    "\\'; SELECT pg_sleep(5); --",
    "%' OR '%'='",
]


async def test_sql_in_sms_bodies_is_stored_verbatim_and_tables_stay(world: World) -> None:
    """Every text goes to the store as a bound parameter: stored as written, nothing run."""
    before = {name: await _count(world, table) for name, table in _tables().items()}
    for i, text in enumerate(SQL):
        assert (
            await world.text(KJERSTI, f"Hei, et spørsmål om Ola. {text}", sid=f"SM{i:032d}") == 200
        )
    await _settled(world, len(SQL))
    messages = await world.rows(t.messages, t.messages.c.direction == "in")
    bodies = {m["body"] for m in messages}
    for text in SQL:
        assert f"Hei, et spørsmål om Ola. {text}" in bodies
    after = {name: await _count(world, table) for name, table in _tables().items()}
    for name in ("guardians", "students", "units"):
        assert after[name] == before[name] > 0
    assert after["inbound_events"] == len(SQL)


def _tables() -> dict[str, object]:
    return {
        "guardians": t.guardians,
        "students": t.students,
        "units": t.units,
        "inbound_events": t.inbound_events,
    }


async def _count(world: World, table: object) -> int:
    async with world.bridge.engine.connect() as conn:
        return int(await conn.scalar(select(func.count()).select_from(table)))  # type: ignore[arg-type]
