"""Fault: Twilio answers 500 for a while. The per-channel circuit breaker stops the
bridge hammering it: a handful of requests per cool-down, not hundreds; no delivery
dies of the outage; after it, everything is delivered, each once (issue #11)."""

from __future__ import annotations

import asyncio
import collections
from pathlib import Path

import aiohttp
import pytest

from bridge import outbox
from bridge.announcements import create_announcement
from bridge.store import tables as t
from tests.world import World, eventually, running_world, write_roster

GUARDIANS = [(f"gd-{i}", "sms", "nb") for i in range(40)]
FAILURES = 5
COOL_DOWN = 0.5
COOL_DOWN_MAX = 2.0


async def get_json(world: World, path: str) -> tuple[int, dict]:
    async with (
        aiohttp.ClientSession() as s,
        s.get(f"http://127.0.0.1:{world.bridge.port}{path}") as r,
    ):
        return r.status, await r.json()


async def metric(world: World, line_start: str) -> float | None:
    async with (
        aiohttp.ClientSession() as s,
        s.get(f"http://127.0.0.1:{world.bridge.port}/metrics") as r,
    ):
        text = await r.text()
    for line in text.splitlines():
        if line.startswith(line_start):
            return float(line.rsplit(" ", 1)[1])
    return None


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_twilio_500s_open_the_circuit_and_everything_goes_once_after(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(outbox, "BREAKER_FAILURES", FAILURES)
    monkeypatch.setattr(outbox, "BREAKER_COOL_DOWN_SECONDS", COOL_DOWN)
    monkeypatch.setattr(outbox, "BREAKER_COOL_DOWN_MAX_SECONDS", COOL_DOWN_MAX)
    roster = write_roster(tmp_path / "roster.csv", GUARDIANS)
    async with running_world(database_url, tmp_path, roster) as world:
        twilio = world.twilio
        twilio.fail_next(10**6, status=500)
        created = await create_announcement(
            world.bridge.engine,
            world.bridge.settings,
            unit_id="u-fjell",
            group_ids=["g-5b"],
            text="Skolen stenger kl 12",
        )
        world.bridge.outbox.wake.set()
        assert created.deliveries == len(GUARDIANS)

        async def circuit_open() -> bool:
            status, body = await get_json(world, "/healthz")
            return status == 200 and body["channels"]["sms"] in ("open", "half-open")

        await eventually(circuit_open, within=30)
        assert await metric(world, 'skolebro_circuit_state{channel="sms"}') in (1.0, 2.0)
        # The first wave: the sends already in flight when the breaker opened.
        first_wave = twilio.create_requests
        assert first_wave <= world.bridge.outbox.concurrency + FAILURES
        outage = 8.0
        await asyncio.sleep(outage)  # an outage of fixed length, by design
        during = twilio.create_requests - first_wave
        print(f"first wave {first_wave}, during the outage {during}")
        # Probes only: one per cool-down (0.5, 1, 2, 2, ... s) -> about 6 in 8 s.
        assert during <= int(outage / COOL_DOWN) + 2, during
        rows = await world.rows(t.deliveries)
        assert not [r for r in rows if r["status"] in ("dead", "failed")]
        # Attempts are counted for sends that reached Twilio, not for held deliveries.
        assert sum(r["attempts"] for r in rows) <= twilio.create_requests

        twilio.clear_failures()

        async def all_delivered() -> bool:
            rows = await world.rows(t.deliveries)
            return all(r["status"] in ("sent", "delivered") for r in rows)

        await eventually(all_delivered, within=60)
        per_number = collections.Counter(m.to for m in twilio.sent)
        assert len(per_number) == len(GUARDIANS)
        assert set(per_number.values()) == {1}
        status, body = await get_json(world, "/healthz")
        assert status == 200 and body["channels"]["sms"] == "closed"
