"""Fault: the database unavailable for about 10 s (issue #11).

A locked SQLite (another connection holding `BEGIN EXCLUSIVE`) and a stopped
PostgreSQL (the test database's connections terminated and new ones refused). Inbound
SMS then answers 503 (or, on SQLite, waits out the lock), Twilio retries (`#rc=3&rp=all`),
and nothing is lost: every message is stored once and processed once. /healthz keeps
answering throughout, saying the store is down while it is and ok after.
"""

from __future__ import annotations

import asyncio
import collections
import sqlite3
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from sqlalchemy.engine import make_url

from bridge.store import tables as t
from tests.conftest import PG_HOST
from tests.world import World, eventually, running_world, write_roster

N = 8
GUARDIANS = [(f"gd-{i}", "sms", "nb") for i in range(N)]
OUTAGE = 10.0
# Twilio's three retries spread over more than the outage (real Twilio's spacing is its
# own; after that the bridge's catch-up listing takes in what is left).
RETRY_DELAY = 5.0


def mobile(i: int) -> str:
    return f"+479100{i:04d}"


async def healthz(world: World) -> tuple[int, dict[str, Any]]:
    timeout = aiohttp.ClientTimeout(total=30)
    async with (
        aiohttp.ClientSession(timeout=timeout) as s,
        s.get(f"http://127.0.0.1:{world.bridge.port}/healthz") as r,
    ):
        return r.status, await r.json()


async def store_down(world: World) -> bool:
    status, body = await healthz(world)
    return status == 503 and body["status"] == "unavailable"


async def store_ok(world: World) -> bool:
    status, body = await healthz(world)
    return status == 200 and body["store"] == "ok"


async def text_during_outage(world: World) -> list[asyncio.Task[int]]:
    """Each guardian reports an absence, while the store is down."""
    return [asyncio.create_task(world.text(mobile(i), f"Barn{i} er syk i dag")) for i in range(N)]


async def check_each_stored_and_processed_once(world: World) -> None:
    async def all_processed() -> bool:
        events = await world.rows(t.inbound_events)
        return len(events) == N and all(e["status"] == "processed" for e in events)

    await eventually(all_processed, within=90)
    events = await world.rows(t.inbound_events)
    assert len({e["external_id"] for e in events}) == N
    absences = await world.rows(t.absences)
    # One absence message each: school and SFO, from that one event.
    per_student = collections.Counter(a["student_id"] for a in absences)
    assert per_student == {f"s-{i}": 2 for i in range(N)}, per_student
    assert len({a["inbound_event_id"] for a in absences}) == N

    async def confirmed() -> bool:
        return all(world.replies_to(mobile(i)) for i in range(N))

    await eventually(confirmed, within=60)
    for i in range(N):
        assert len(world.replies_to(mobile(i))) == 1, world.replies_to(mobile(i))


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_a_locked_sqlite_loses_nothing_and_healthz_says_so(
    database_url: str, tmp_path: Path
) -> None:
    roster = write_roster(tmp_path / "roster.csv", GUARDIANS)
    path = make_url(database_url).database
    assert path
    async with running_world(database_url, tmp_path, roster) as world:
        world.twilio.retry_delay = RETRY_DELAY
        assert await store_ok(world)
        other = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
        try:
            await asyncio.to_thread(other.execute, "BEGIN EXCLUSIVE")
            sends = await text_during_outage(world)
            # A write waits on the lock with the one pooled connection: /healthz says so.
            await eventually(lambda: store_down(world), within=OUTAGE - 2)
            await asyncio.sleep(OUTAGE)  # the outage itself
        finally:
            await asyncio.to_thread(other.execute, "COMMIT")
            other.close()
        statuses = await asyncio.gather(*sends)
        assert set(statuses) <= {200}, statuses  # each got through at last, no 4xx
        attempts = [a.status for a in world.twilio.webhook_attempts]
        assert any(s != 200 for s in attempts), attempts  # there were 503s or timeouts
        await eventually(lambda: store_ok(world), within=60)
        await check_each_stored_and_processed_once(world)


async def _pg_admin(sql: str, *args: Any) -> None:
    conn = await asyncpg.connect(PG_HOST)
    try:
        await conn.execute(sql, *args)
    finally:
        await conn.close()


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_a_stopped_postgresql_loses_nothing_and_healthz_says_so(
    database_url: str, tmp_path: Path
) -> None:
    roster = write_roster(tmp_path / "roster.csv", GUARDIANS)
    name = make_url(database_url).database
    assert name
    async with running_world(database_url, tmp_path, roster) as world:
        world.twilio.retry_delay = RETRY_DELAY
        assert await store_ok(world)
        try:
            await _pg_admin(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
            await _pg_admin(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = $1 AND pid <> pg_backend_pid()",
                name,
            )
            sends = await text_during_outage(world)
            await eventually(lambda: store_down(world), within=OUTAGE - 2)
            status, body = await healthz(world)
            assert status == 503 and body["store"] == "unavailable", body
            await asyncio.sleep(OUTAGE)  # the outage itself
        finally:
            await _pg_admin(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        statuses = await asyncio.gather(*sends)
        attempts = [a.status for a in world.twilio.webhook_attempts]
        assert 503 in attempts, attempts
        assert set(statuses) <= {200}, (statuses, attempts)
        await eventually(lambda: store_ok(world), within=60)
        await check_each_stored_and_processed_once(world)
