"""Fault: the disk under SQLite is full (`PRAGMA max_page_count` on the bridge's own
connection, its free pages used up by a filler table). Inbound answers 503, one clear
error is logged (with no number or body), /healthz keeps answering and says the store
is failing; once there is space again, everything resumes and nothing is lost (#11)."""

from __future__ import annotations

import collections
import logging
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from bridge.store import tables as t
from tests.hardening.test_faults_store import healthz, mobile
from tests.world import World, eventually, running_world, write_roster

N = 60
GUARDIANS = [(f"gd-{i}", "sms", "nb") for i in range(N)]
UNLIMITED = 1073741823  # SQLite's default max_page_count


async def fill_the_disk(world: World) -> None:
    """The bridge's one pooled connection may grow the file no more."""
    async with world.bridge.engine.begin() as conn:
        await conn.execute(text("CREATE TABLE IF NOT EXISTS fault_filler (x BLOB)"))
    async with world.bridge.engine.connect() as conn:
        pages = await conn.scalar(text("PRAGMA page_count"))
        await conn.execute(text(f"PRAGMA max_page_count = {int(pages)}"))
    size = 4000
    while size >= 16:  # use up the free pages and the filler's own free space
        try:
            async with world.bridge.engine.begin() as conn:
                await conn.execute(text(f"INSERT INTO fault_filler VALUES (zeroblob({size}))"))
        except OperationalError:
            size //= 2


async def free_the_disk(world: World) -> None:
    async with world.bridge.engine.connect() as conn:
        await conn.execute(text(f"PRAGMA max_page_count = {UNLIMITED}"))
    async with world.bridge.engine.begin() as conn:
        await conn.execute(text("DROP TABLE fault_filler"))


async def disk_full_then_freed(world: World, caplog: pytest.LogCaptureFixture) -> int:
    """Fill the disk, text until inbound is refused, free it; returns how many texted."""
    await fill_the_disk(world)
    # Small rows still fit in the free space of pages the file has: text until the
    # store has no room left for the raw event, then a few more.
    statuses: list[int] = []
    for i in range(N):
        statuses.append(await world.text(mobile(i), f"Barn{i} er syk i dag"))
        if statuses[-3:] == [503] * 3:
            break
    assert statuses[-1] == 503, statuses
    sent = len(statuses)
    status, body = await healthz(world)
    assert status == 503 and body["store"] == "failing", body
    assert body["store_error"] == "SQLITE_FULL"
    failing = [r for r in caplog.records if r.getMessage().startswith("store failing")]
    assert len(failing) == 1, [r.getMessage() for r in failing]
    await free_the_disk(world)
    assert sent < N - 1, "the disk filled too late to mean anything"
    # The first text the store takes again sets off the catch-up at once: what Twilio
    # could not hand us meanwhile it still lists, and the bridge takes that in too.
    assert await world.text(mobile(N - 1), f"Barn{N - 1} er syk i dag") == 200

    async def all_stored() -> bool:
        return len(await world.rows(t.inbound_events)) == sent + 1

    await eventually(all_stored, within=60)
    return sent


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_a_full_disk_is_503_and_healthz_says_so_then_inbound_resumes(
    database_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    roster = write_roster(tmp_path / "roster.csv", GUARDIANS)
    async with running_world(database_url, tmp_path, roster) as world:
        sent = await disk_full_then_freed(world, caplog)
        events = await world.rows(t.inbound_events)
        assert len({e["external_id"] for e in events}) == sent + 1  # each stored once
        logged = "\n".join(r.getMessage() for r in caplog.records)
        for i in range(sent):
            assert mobile(i) not in logged and f"Barn{i} er syk" not in logged

        async def healthy() -> bool:
            status, body = await healthz(world)
            return status == 200 and body["store"] == "ok"

        await eventually(healthy, within=60)
        # The text sent after the disk was freed is processed.

        async def processed() -> bool:
            rows = await world.rows(t.absences, t.absences.c.student_id == f"s-{N - 1}")
            return len(rows) == 2

        await eventually(processed, within=60)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_events_stored_while_the_disk_is_full_are_processed_once_it_is_freed(
    database_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    roster = write_roster(tmp_path / "roster.csv", GUARDIANS)
    async with running_world(database_url, tmp_path, roster) as world:
        sent = await disk_full_then_freed(world, caplog)

        async def all_done() -> bool:
            events = await world.rows(t.inbound_events)
            return all(e["status"] != "pending" for e in events)

        await eventually(all_done, within=60)
        events = await world.rows(t.inbound_events)
        assert [e["status"] for e in events] == ["processed"] * (sent + 1)
        absences = await world.rows(t.absences)
        per_student = collections.Counter(a["student_id"] for a in absences)
        texted = [*range(sent), N - 1]
        assert per_student == {f"s-{i}": 2 for i in texted}, per_student

        async def confirmed() -> bool:
            return all(len(world.replies_to(mobile(i))) == 1 for i in texted)

        await eventually(confirmed, within=60)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_store_errors_log_no_sql_parameters(
    database_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    roster = write_roster(tmp_path / "roster.csv", GUARDIANS)
    async with running_world(database_url, tmp_path, roster) as world:
        sent = await disk_full_then_freed(world, caplog)
        formatter = logging.Formatter()
        logged = "\n".join(formatter.format(r) for r in caplog.records)
        assert "OperationalError" in logged  # tracebacks were logged
        for i in range(sent):
            assert mobile(i) not in logged and f"Barn{i} er syk" not in logged
