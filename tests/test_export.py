"""`skolebro export` and the operator retries, on a store holding real rows."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from sqlalchemy import insert

from bridge.store import tables as t
from bridge.store.db import create_engine
from tests.cli import skolebro, write_config

T0 = datetime(2026, 11, 26, 6, 12, tzinfo=UTC)


def _seed(database_url: str) -> None:
    async def run() -> None:
        engine = create_engine(database_url)
        stamp = {"created_at": T0, "updated_at": T0}
        async with engine.begin() as conn:
            await conn.execute(
                insert(t.units),
                [
                    {"id": "u-fjell", "name": "Fjell", "unit_type": "school", **stamp},
                    {"id": "u-sfo", "name": "Fjell SFO", "unit_type": "sfo", **stamp},
                ],
            )
            await conn.execute(
                insert(t.students),
                {"id": "s-ola", "first_name": "Ola", "last_name": "Nordmann",
                 "unit_id": "u-fjell", "sfo_unit_id": "u-sfo", **stamp},
            )  # fmt: skip
            await conn.execute(
                insert(t.guardians),
                {"id": "gd-k", "first_name": "K", "last_name": "N", "mobile": "+4791234567",
                 "email": "k@example.no", "language": "nb", "channels": "sms,email", **stamp},
            )  # fmt: skip
            base = {"student_id": "s-ola", "reason": "illness", "reported_by": "gd-k",
                    "channel": "sms", "received_at": T0, "from_time": None, "to_time": None,
                    **stamp}  # fmt: skip
            await conn.execute(
                insert(t.absences),
                [
                    {**base, "id": "ab-1", "unit_id": "u-fjell", "from_date": date(2026, 11, 26),
                     "to_date": date(2026, 11, 27), "status": "active"},
                    {**base, "id": "ab-2", "unit_id": "u-sfo", "from_date": date(2026, 11, 26),
                     "to_date": date(2026, 11, 26), "status": "cancelled",
                     "from_time": "14:00", "to_time": None},
                    {**base, "id": "ab-3", "unit_id": "u-fjell", "from_date": date(2026, 11, 30),
                     "to_date": date(2026, 11, 30), "status": "active"},
                ],
            )  # fmt: skip
            await conn.execute(
                insert(t.threads),
                {"id": "th-1", "guardian_id": "gd-k", "unit_id": "u-fjell", "student_id": "s-ola",
                 "created_at": T0, "last_message_at": T0},
            )  # fmt: skip
            await conn.execute(
                insert(t.messages),
                {"id": "m-1", "thread_id": "th-1", "direction": "in", "channel": "sms",
                 "author": "gd-k", "body": "Hei", "sensitive": [], "sent_at": T0},
            )  # fmt: skip
            await conn.execute(
                insert(t.announcements),
                {"id": "an-1", "unit_id": "u-fjell", "text": "Stengt", "created_at": T0},
            )
            dbase = {"kind": "announcement", "announcement_id": "an-1", "guardian_id": "gd-k",
                     "next_attempt_at": T0, "fallback_of": None, "provider_id": None,
                     "last_error": None, **stamp}  # fmt: skip
            await conn.execute(
                insert(t.deliveries),
                [
                    {**dbase, "id": "d-1", "channel": "sms", "address": "+4791234567",
                     "status": "dead", "attempts": 8, "last_error": "20429: too many requests"},
                    {**dbase, "id": "d-2", "channel": "email", "address": "k@example.no",
                     "status": "failed", "attempts": 1, "last_error": "550"},
                    {**dbase, "id": "d-3", "channel": "sms", "address": "+4791234567",
                     "status": "delivered", "attempts": 1, "fallback_of": "d-2",
                     "provider_id": "SM1"},
                ],
            )  # fmt: skip
        await engine.dispose()

    asyncio.run(run())


@pytest.fixture
def config(tmp_path: Path, database_url: str) -> Path:
    _seed(database_url)
    return write_config(tmp_path, database_url)


def test_absences_covering_a_date_including_cancelled(config: Path) -> None:
    out = skolebro("export", "absences", "--date", "2026-11-26", "--config", str(config))
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert [r["id"] for r in rows] == ["ab-1", "ab-2"]
    assert rows[0] == {
        "id": "ab-1", "student_id": "s-ola", "student": "Ola Nordmann", "unit_id": "u-fjell",
        "unit_type": "school", "from": "2026-11-26", "to": "2026-11-27", "from_time": None,
        "to_time": None, "reason": "illness", "note": None, "reported_by": "gd-k",
        "channel": "sms", "received_at": "2026-11-26T07:12:00+01:00", "status": "active",
    }  # fmt: skip
    assert rows[1]["status"] == "cancelled" and rows[1]["unit_type"] == "sfo"
    only_sfo = skolebro(
        "export", "absences", "--date", "2026-11-27", "--unit", "u-sfo", "--config", str(config)
    )
    assert json.loads(only_sfo.stdout) == []


def test_threads_with_messages(config: Path) -> None:
    rows = json.loads(skolebro("export", "threads", "--config", str(config)).stdout)
    assert rows == [
        {"id": "th-1", "unit_id": "u-fjell", "student_id": "s-ola", "guardian_ids": ["gd-k"],
         "messages": [{"id": "m-1", "direction": "in", "channel": "sms", "author": "gd-k",
                       "body": "Hei", "sent_at": "2026-11-26T07:12:00+01:00", "sensitive": []}]}
    ]  # fmt: skip
    later = skolebro("export", "threads", "--since", "2026-11-27T00:00:00", "--config", str(config))
    assert json.loads(later.stdout) == []


def test_deliveries_and_retry_rules(config: Path) -> None:
    rows = json.loads(
        skolebro("export", "deliveries", "--announcement", "an-1", "--config", str(config)).stdout
    )
    assert [r["id"] for r in rows] == ["d-1", "d-2", "d-3"]
    assert set(rows[0]) == {
        "id", "announcement_id", "guardian_id", "channel", "address", "status", "attempts",
        "last_error", "provider_id", "fallback_of", "updated_at",
    }  # fmt: skip
    assert rows[2]["fallback_of"] == "d-2"
    # d-2 reached the guardian by its fallback d-3, d-3 is not dead: only d-1 goes again.
    out = skolebro("deliveries", "retry", "d-1", "d-2", "d-3", "d-9", "--config", str(config))
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("1 deliveries queued again, 3 not")
    assert "d-2: the recipient got it by a fallback" in out.stdout
    assert "d-9: no such delivery" in out.stdout
    rows = json.loads(skolebro("export", "deliveries", "--config", str(config)).stdout)
    assert {r["id"]: (r["status"], r["attempts"]) for r in rows}["d-1"] == ("queued", 0)


def test_apikey_is_printed_once_and_stored_hashed(config: Path, database_url: str) -> None:
    out = skolebro("apikey", "create", "--unit", "u-fjell", "--read-only", "--config", str(config))
    assert out.returncode == 0, out.stderr
    secret = out.stdout.strip()
    assert secret.startswith("sb_") and len(secret) > 30

    async def stored() -> list[str]:
        engine = create_engine(database_url)
        async with engine.connect() as conn:
            rows = (await conn.execute(t.api_keys.select())).mappings().all()
        await engine.dispose()
        return [json.dumps(dict(r), default=str) for r in rows]

    rows = asyncio.run(stored())
    assert len(rows) == 1 and secret not in rows[0] and '"read_only": true' in rows[0]
