"""SIGKILL the process that runs the scheduler: another takes over, and the day's
digests go out once, neither twice nor missed (issue #10). PostgreSQL only: two
`skolebro run` processes share one store."""

from __future__ import annotations

import asyncio
import signal
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, insert, select, text

from adapters.fakes.smtp import FakeSmtp
from bridge.leader import SINGLETON_KEY
from bridge.store import tables as t
from bridge.store.db import create_engine
from bridge.store.ids import new_id
from tests.cli import skolebro, start_bridge, write_config
from tests.conftest import EXAMPLE_ROSTER
from tests.world import eventually, free_port

pytestmark = pytest.mark.slow
OSLO = ZoneInfo("Europe/Oslo")
HOLDER = text(
    "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted "
    "AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
    "AND (classid::bigint << 32 | objid::bigint) = :key"
)


def _digest_minute() -> datetime:
    """The first whole minute at least 50 s away, local time."""
    at = (datetime.now(OSLO) + timedelta(seconds=50)).replace(second=0, microsecond=0)
    return at + timedelta(minutes=1)


async def test_the_scheduler_moves_to_a_live_process_and_sends_each_digest_once(
    tmp_path: Path, database_url: str
) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("several processes share a PostgreSQL store only")
    at = _digest_minute()
    if at.date() != datetime.now(OSLO).date():
        pytest.skip("too close to midnight for a digest today")
    engine = create_engine(database_url)
    async with FakeSmtp() as sink:
        procs = []
        try:
            configs = []
            for name in ("a", "b"):
                port = free_port()
                (tmp_path / name).mkdir()
                cfg = write_config(
                    tmp_path / name,
                    database_url,
                    f"""[http]
port = {port}
[email]
enabled = true
smtp_host = "127.0.0.1"
smtp_port = {sink.port}
smtp_tls = "none"
reply_domain = "svar.example.kommune.no"
listen_port = {free_port()}
[digests]
enabled = true
absence_time = "{at:%H:%M}"
days = "mon-sun"
""",
                )
                configs.append((cfg, port))
            cfg_a, _ = configs[0]
            assert (
                skolebro("import-roster", str(EXAMPLE_ROSTER), "--config", str(cfg_a)).returncode
                == 0
            )
            now = datetime.now(UTC)
            async with engine.begin() as conn:
                for unit in ("u-fjell", "u-fjell-sfo"):
                    await conn.execute(
                        insert(t.absences),
                        {"id": new_id("ab"), "student_id": "s-ola", "unit_id": unit,
                         "from_date": at.date(), "to_date": at.date(), "reason": "illness",
                         "reported_by": "gd-kjersti", "channel": "sms", "received_at": now,
                         "status": "active", "created_at": now, "updated_at": now},
                    )  # fmt: skip

            async def holder() -> int | None:
                async with engine.connect() as conn:
                    return await conn.scalar(HOLDER, {"key": SINGLETON_KEY})

            procs.append(start_bridge(*configs[0]))
            first = await eventually(holder, within=30)
            procs.append(start_bridge(*configs[1]))
            await asyncio.sleep(6)  # the second has tried, and failed, at least once
            assert await holder() == first

            procs[0].send_signal(signal.SIGKILL)
            procs[0].wait()
            killed_at = time.monotonic()

            async def new_holder() -> int | None:
                pid = await holder()
                return pid if pid not in (None, first) else None

            second = await eventually(new_holder, within=30)
            assert second != first and time.monotonic() - killed_at < 30

            wait = (at - datetime.now(OSLO)).total_seconds()
            assert wait > 5, "the takeover came too late to mean anything"
            await asyncio.sleep(wait)

            async def sent() -> int | None:
                async with engine.connect() as conn:
                    runs = await conn.scalar(
                        select(func.count()).where(
                            t.digest_runs.c.kind == "absence", t.digest_runs.c.day == at.date()
                        )
                    )
                    statuses = list(
                        await conn.scalars(
                            select(t.deliveries.c.status).where(t.deliveries.c.kind == "digest")
                        )
                    )
                done = runs == 2 and statuses and all(s == "sent" for s in statuses)
                return len(statuses) if done else None

            digests = await eventually(sent, within=60)
            mails = [m for m in sink.messages if "Fravær" in str(m.message["Subject"])]
            assert digests >= 3 and len(mails) == len(
                {(tuple(m.rcpt_tos), str(m.message["Subject"])) for m in mails}
            ), "a digest was sent twice"
            assert len(mails) == 3  # Lise and Tor (school), Siri (SFO): once each
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
                    proc.wait(20)
            await engine.dispose()
