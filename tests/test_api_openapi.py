"""The OpenAPI document against the running API: schemathesis fuzzes every operation.

The bridge runs in a thread of its own (its own event loop, engine and real HTTP server
on loopback) on a real store, SQLite and PostgreSQL, with the test roster imported and
some objects to find. schemathesis calls it synchronously and checks that no answer is
a server error and that every status, media type and body is the one the document
gives. Needs `schemathesis` (pinned in the test dependencies).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
import requests
from aiohttp import web
from hypothesis import HealthCheck, given, settings

from bridge import absences
from bridge import threads as thread_store
from bridge.announcements import create_announcement
from bridge.api import OPENAPI, add_api
from bridge.apikeys import create_api_key
from bridge.http import build_app
from bridge.roster import import_roster
from bridge.store.db import create_engine
from tests.test_api import SETTINGS, write_roster

schemathesis = pytest.importorskip("schemathesis")
from schemathesis import GenerationMode  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

# Per operation: 30 examples, two thirds valid data, one third invalid data.
POSITIVE_EXAMPLES = 20
NEGATIVE_EXAMPLES = 10
REAL_ID_EXAMPLES = 10  # and the operations on an object: 10 more with an id that exists
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
]


@dataclass
class Live:
    base_url: str = ""
    key: str = ""
    ids: dict[str, str] = field(default_factory=dict)  # path template -> a real id
    loop: asyncio.AbstractEventLoop | None = None
    stop: asyncio.Event | None = None
    error: BaseException | None = None
    ready: threading.Event = field(default_factory=threading.Event)


async def _serve(live: Live, database_url: str, roster: Path) -> None:
    engine = create_engine(database_url)
    runner: web.AppRunner | None = None
    try:
        await import_roster(engine, roster)
        _, live.key = await create_api_key(engine, ["u-fjell", "u-fjell-sfo"])
        async with engine.begin() as conn:  # something to find and to answer
            thread_id = await thread_store.thread_for(conn, "gd-kjersti", "u-fjell", "s-ola")
            await thread_store.add_message(
                conn, thread_id, direction="in", channel="sms", author="gd-kjersti",
                body="Hei", sensitive=[], sent_at=datetime.now(UTC),
            )  # fmt: skip
            (absence_id,) = await absences.record(
                conn,
                SETTINGS,
                [absences.Report("s-ola", "u-fjell-sfo", date(2026, 11, 26), date(2026, 11, 26),
                                 "14:00", None, "illness")],
                reported_by="gd-kjersti", channel="sms", received_at=datetime.now(UTC),
                note="Ola er syk", inbound_event_id=None,
            )  # fmt: skip
        created = await create_announcement(engine, SETTINGS, unit_id="u-fjell", text="Hei")
        live.ids = {
            "/absences/{id}": absence_id,
            "/announcements/{id}": created.announcement_id,
            "/threads/{id}": thread_id,
            "/threads/{id}/replies": thread_id,
            "/guardians/{id}/contact-state": "gd-hidden",
        }
        app = build_app(engine)
        add_api(app, engine, SETTINGS, rate=1e6, burst=10**6)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        live.base_url = f"http://127.0.0.1:{port}/api/v1"
        live.loop = asyncio.get_running_loop()
        live.stop = asyncio.Event()
        live.ready.set()
        await live.stop.wait()
    except BaseException as e:
        live.error = e
        live.ready.set()
    finally:
        if runner is not None:
            await runner.cleanup()
        await engine.dispose()


@pytest.fixture
def live_api(database_url: str, tmp_path: Path) -> Iterator[Live]:
    live = Live()
    roster = write_roster(tmp_path)
    thread = threading.Thread(
        target=lambda: asyncio.run(_serve(live, database_url, roster)), daemon=True
    )
    thread.start()
    assert live.ready.wait(60), "the API did not start"
    if live.error is not None:
        raise live.error
    yield live
    assert live.loop is not None and live.stop is not None
    live.loop.call_soon_threadsafe(live.stop.set)
    thread.join(30)


def _fuzz(strategy: Any, live: Live, session: Any, max_examples: int) -> set[int]:
    """Run the checks on up to `max_examples` generated requests; returns the statuses."""
    statuses: set[int] = set()

    @given(case=strategy)
    @settings(
        max_examples=max_examples,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
        database=None,
    )
    def run(case: Any) -> None:
        response = case.call_and_validate(
            base_url=live.base_url,
            session=session,
            headers={"Authorization": f"Bearer {live.key}"},
            checks=CHECKS,
        )
        statuses.add(response.status_code)

    run()
    return statuses


def test_every_operation_keeps_the_document(live_api: Live) -> None:
    """schemathesis's stateless checks, positive and negative data, on every operation.

    (Its pytest plugin's lazy `from_fixture` does not run under pytest 9, so the
    strategies are driven with hypothesis here directly.)
    """
    session = requests.Session()
    schema = schemathesis.openapi.from_dict(OPENAPI)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == sum(len(item) for item in OPENAPI["paths"].values())
    for operation in operations:
        modes = [(GenerationMode.POSITIVE, POSITIVE_EXAMPLES)]
        if operation.path != "/openapi.json":  # public and lenient: takes anything
            modes.append((GenerationMode.NEGATIVE, NEGATIVE_EXAMPLES))
        for mode, examples in modes:
            try:
                strategy = operation.as_strategy(generation_mode=mode)
                _fuzz(strategy, live_api, session, examples)
            except Exception as e:
                raise AssertionError(f"{operation.label} ({mode.value}): {e}") from e
        # Objects that exist: their answers (200, 201, 422...) keep the document too.
        pinned: dict[str, Any] = {}
        if (real := live_api.ids.get(operation.path)) is not None:
            pinned["path_parameters"] = {"id": real}
            seen = _fuzz(operation.as_strategy(**pinned), live_api, session, REAL_ID_EXAMPLES)
            assert seen & {200, 201}, (operation.label, seen)
        # The document's own examples are valid requests that succeed.
        for strategy in operation.get_strategies_from_examples(**pinned):
            seen = _fuzz(strategy, live_api, session, 5)
            assert seen <= {200, 201}, (operation.label, seen)
