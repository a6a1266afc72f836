"""The store on SQLite and PostgreSQL: schema, constraints and idempotent migration."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import pytest
from sqlalchemy import insert, inspect, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from bridge.store import tables as t
from bridge.store.migrate import current_revision, head_revision, upgrade

NOW = datetime(2026, 11, 26, 7, 12, tzinfo=UTC)


async def test_upgrade_is_idempotent(engine: AsyncEngine) -> None:
    assert await current_revision(engine) == head_revision()
    before, after = await upgrade(engine)
    assert before == after == head_revision()


async def test_every_table_exists_with_hot_path_indexes(engine: AsyncEngine) -> None:
    def inspect_all(conn):  # type: ignore[no-untyped-def]
        insp = inspect(conn)
        names = set(insp.get_table_names())
        idx = {
            name: {tuple(i["column_names"]) for i in insp.get_indexes(name)}
            for name in ("guardians", "deliveries", "absences", "staff")
        }
        uniques = {tuple(u["column_names"]) for u in insp.get_unique_constraints("inbound_events")}
        return names, idx, uniques

    async with engine.connect() as conn:
        names, idx, uniques = await conn.run_sync(inspect_all)
    assert set(t.metadata.tables) <= names
    assert ("mobile",) in idx["guardians"] and ("email",) in idx["guardians"]
    assert ("status", "next_attempt_at") in idx["deliveries"]
    assert ("unit_id", "from_date", "to_date") in idx["absences"]
    assert ("email",) in idx["staff"]
    assert ("channel", "external_id") in uniques


async def test_inbound_event_is_unique_per_channel_and_external_id(engine: AsyncEngine) -> None:
    row = {"channel": "sms", "external_id": "SM1", "received_at": NOW, "status": "pending"}
    async with engine.begin() as conn:
        await conn.execute(insert(t.inbound_events), row)
    with pytest.raises(IntegrityError):
        async with engine.begin() as conn:
            await conn.execute(insert(t.inbound_events), row)
    async with engine.begin() as conn:  # the same id on another channel is another event
        await conn.execute(insert(t.inbound_events), {**row, "channel": "telegram"})


async def test_times_round_trip_as_aware_utc(engine: AsyncEngine) -> None:
    oslo = timezone(timedelta(hours=1))
    async with engine.begin() as conn:
        await conn.execute(
            insert(t.inbound_events),
            {
                "channel": "sms",
                "external_id": "SM2",
                "received_at": datetime(2026, 11, 26, 8, 12, tzinfo=oslo),
                "status": "pending",
            },
        )
        got = (await conn.execute(select(t.inbound_events.c.received_at))).scalar_one()
    assert got == NOW and got.tzinfo is not None


async def test_foreign_keys_and_checks_are_enforced(engine: AsyncEngine) -> None:
    with pytest.raises(IntegrityError):
        async with engine.begin() as conn:
            await conn.execute(
                insert(t.students),
                {
                    "id": "s-x",
                    "first_name": "X",
                    "last_name": "Y",
                    "unit_id": "u-missing",
                    "created_at": NOW,
                    "updated_at": NOW,
                },
            )
    async with engine.begin() as conn:
        await conn.execute(
            insert(t.units),
            {"id": "u1", "name": "U", "unit_type": "school", "created_at": NOW, "updated_at": NOW},
        )
        await conn.execute(
            insert(t.students),
            {
                "id": "s1",
                "first_name": "A",
                "last_name": "B",
                "unit_id": "u1",
                "created_at": NOW,
                "updated_at": NOW,
            },
        )
    with pytest.raises(IntegrityError):
        async with engine.begin() as conn:
            await conn.execute(
                insert(t.absences),
                {
                    "id": "a1",
                    "student_id": "s1",
                    "unit_id": "u1",
                    "from_date": date(2026, 11, 27),
                    "to_date": date(2026, 11, 26),
                    "reason": "illness",
                    "channel": "sms",
                    "received_at": NOW,
                    "created_at": NOW,
                    "updated_at": NOW,
                },
            )
