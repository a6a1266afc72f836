"""The school's own system hears of every absence recorded or cancelled (SPEC `[[webhooks]]`).

A real bridge, a parent texting through the Twilio fake, and a real HTTP server on
loopback playing the school's system: each POST is checked for its HMAC signature and
its body, and failures are retried by the delivery engine.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from collections.abc import AsyncIterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from bridge.app import Bridge
from bridge.config import ConfigError, parse_config
from bridge.export import export_deliveries
from bridge.gdpr import erase_guardian
from bridge.store import tables as t
from tests.conftest import EXAMPLE_ROSTER
from tests.world import World, eventually, free_port, running_world

KJERSTI = "+4791234567"  # Ola (school + SFO) and Kari (school)
SECRET = "hook-secret-for-tests"


class School:
    """The school's system: answers with the queued statuses, then 200, and keeps each POST."""

    def __init__(self, statuses: list[int] | None = None) -> None:
        self.statuses = list(statuses or [])
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.port = free_port()
        self.runner: web.AppRunner | None = None

    async def hook(self, request: web.Request) -> web.Response:
        body = await request.read()
        status = self.statuses.pop(0) if self.statuses else 200
        self.received.append((dict(request.headers), body))
        return web.Response(status=status)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/fravaer"

    async def __aenter__(self) -> School:
        app = web.Application()
        app.router.add_post("/hooks/fravaer", self.hook)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.runner is not None
        await self.runner.cleanup()

    def accepted(self) -> list[dict[str, Any]]:
        """Every POST received, each checked against its signature."""
        out = []
        for headers, body in self.received:
            expected = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
            assert headers["X-Skolebro-Signature"] == expected
            assert headers["Content-Type"].startswith("application/json")
            out.append({"delivery": headers["X-Skolebro-Delivery"], **json.loads(body)})
        return out


@pytest.fixture
async def school() -> AsyncIterator[School]:
    async with School(statuses=[503]) as s:
        yield s


@pytest.fixture
async def world(database_url: str, tmp_path: Path, school: School) -> AsyncIterator[World]:
    os.environ["TEST_HOOK_SECRET"] = SECRET
    hooks = f"""
[[webhooks]]
unit_id = "u-fjell"
url = "{school.url}"
secret_env = "TEST_HOOK_SECRET"
"""
    async with running_world(database_url, tmp_path, EXAMPLE_ROSTER, hooks) as w:
        yield w


async def test_recorded_and_cancelled_absences_reach_the_school_signed_and_retried(
    world: World, school: School
) -> None:
    assert await world.text(KJERSTI, "Ola er syk i dag") == 200
    # The first POST got 503; the delivery engine tries again and the second is taken.
    await eventually(lambda: len(school.received) == 2)
    first, second = school.accepted()
    assert first == second  # the same delivery, byte for byte, with the same id
    assert second["event"] == "absence.recorded"
    absence = second["absence"]
    # Only the school has a hook: the SFO report made from the same text is not sent.
    assert absence["unit_id"] == "u-fjell" and absence["student_id"] == "s-ola"
    assert absence["reported_by"] == "gd-kjersti" and absence["channel"] == "sms"
    assert absence["status"] == "active" and absence["reason"] == "illness"
    assert set(absence) >= {"id", "student", "unit_type", "from", "to", "received_at", "note"}

    assert await world.text(KJERSTI, "ANGRE") == 200
    await eventually(lambda: len(school.received) == 3)
    cancelled = school.accepted()[2]
    assert cancelled["event"] == "absence.cancelled"
    assert cancelled["absence"]["id"] == absence["id"]
    assert cancelled["absence"]["status"] == "cancelled"
    assert cancelled["delivery"] != second["delivery"]

    rows = await world.rows(t.deliveries, t.deliveries.c.channel == "webhook")
    assert {r["status"] for r in rows} == {"sent"}
    assert max(r["attempts"] for r in rows) == 2
    # The export of deliveries lists what reached guardians, not the school's plumbing.
    exported = await export_deliveries(world.bridge.engine, world.bridge.settings.tz)
    assert exported and all(d["channel"] != "webhook" for d in exported)


async def test_a_withdrawn_day_cancels_that_part_and_records_the_rest(
    world: World, school: School
) -> None:
    monday = date.today() + timedelta(days=7 - date.today().weekday())
    friday = monday + timedelta(days=4)
    text = f"Kari er syk fra {monday.day}.{monday.month} til {friday.day}.{friday.month}"
    assert await world.text(KJERSTI, text) == 200
    await eventually(lambda: len(school.received) == 2)
    wednesday = monday + timedelta(days=2)
    withdrawn = f"Kari er frisk likevel og kommer {wednesday.day}.{wednesday.month}"
    assert await world.text(KJERSTI, withdrawn) == 200
    await eventually(lambda: len(school.received) >= 5)
    events = [(e["event"], e["absence"]["from"], e["absence"]["to"]) for e in school.accepted()]
    day = date.isoformat
    assert sorted(events[2:]) == sorted(
        [
            ("absence.cancelled", day(wednesday), day(wednesday)),
            ("absence.recorded", day(monday), day(monday + timedelta(days=1))),
            ("absence.recorded", day(wednesday + timedelta(days=1)), day(friday)),
        ]
    )


async def test_a_permanent_refusal_is_not_retried(database_url: str, tmp_path: Path) -> None:
    os.environ["TEST_HOOK_SECRET"] = SECRET
    async with School(statuses=[404]) as school:
        hooks = f'[[webhooks]]\nunit_id = "u-fjell"\nurl = "{school.url}"\n'
        hooks += 'secret_env = "TEST_HOOK_SECRET"\n'
        async with running_world(database_url, tmp_path, EXAMPLE_ROSTER, hooks) as world:
            assert await world.text(KJERSTI, "Kari er syk i dag") == 200
            rows = await eventually(
                lambda: world.rows(
                    t.deliveries,
                    t.deliveries.c.channel == "webhook",
                    t.deliveries.c.status == "failed",
                )
            )
            assert rows[0]["last_error"] == "http 404" and rows[0]["attempts"] == 1
            assert len(school.received) == 1


def test_a_hook_without_its_secret_is_a_config_error(tmp_path: Path) -> None:
    settings = parse_config(
        '[[webhooks]]\nunit_id = "u-fjell"\nurl = "http://127.0.0.1:9/h"\n'
        'secret_env = "SKOLEBRO_TEST_UNSET_SECRET"\n',
        base_dir=tmp_path,
    )
    with pytest.raises(ConfigError, match=r"webhooks\[0\]\.secret_env"):
        Bridge(settings)


async def test_erasing_the_guardian_erases_them_from_the_notices_too(
    world: World, school: School
) -> None:
    assert await world.text(KJERSTI, "Kari er syk i dag, hun har feber") == 200
    await eventually(lambda: len(school.received) == 2)
    counts = await erase_guardian(world.bridge.engine, "gd-kjersti")
    assert counts["webhooks"] == 1
    (row,) = await world.rows(t.deliveries, t.deliveries.c.channel == "webhook")
    notice = json.loads(row["body"])["absence"]
    assert notice["reported_by"] is None and notice["note"] is None
    assert notice["student_id"] == "s-kari"
