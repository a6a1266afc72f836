"""SIGKILL while 200 signed SMS webhooks are arriving: after a restart, none lost, none twice."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from pathlib import Path

import aiohttp
import pytest
from sqlalchemy import func, select

from adapters.fakes.twilio import FakeTwilio
from bridge.store import tables as t
from bridge.store.db import create_engine
from tests.cli import skolebro, start_bridge, write_config
from tests.conftest import EXAMPLE_ROSTER
from tests.world import ACCOUNT, free_port, sms_toml

TOKEN = "kill-test-token"
AMINA = "+4793456789"  # one child, so each message goes straight to a thread
COUNT = 200


def _start(cfg: Path, port: int) -> subprocess.Popen[bytes]:
    return start_bridge(cfg, port, {"KILL_TWILIO_TOKEN": TOKEN})


@pytest.mark.slow
async def test_sigkill_during_inbound_loses_and_duplicates_nothing(
    tmp_path: Path, database_url: str
) -> None:
    port = free_port()
    public = f"http://127.0.0.1:{port}"
    url = f"{public}/webhooks/twilio/sms"
    async with FakeTwilio(ACCOUNT, TOKEN, webhook_url=url) as twilio:
        cfg = write_config(
            tmp_path,
            database_url,
            f"""public_url = "{public}"
[http]
port = {port}
{sms_toml(twilio.base_url, "KILL_TWILIO_TOKEN", 200)}""",
        )
        assert skolebro("import-roster", str(EXAMPLE_ROSTER), "--config", str(cfg)).returncode == 0
        forms = [
            twilio.inbound_form(AMINA, "+4759440000", f"Hei, melding nummer {i} om Aisha")
            for i in range(COUNT)
        ]
        acked: set[str] = set()
        third = asyncio.Event()
        proc = _start(cfg, port)

        async def post(session: aiohttp.ClientSession, form: dict[str, str]) -> None:
            headers = {"X-Twilio-Signature": twilio.signature(url, form)}
            try:
                async with session.post(url, data=form, headers=headers) as r:
                    if r.status == 200:
                        acked.add(form["MessageSid"])
                        if len(acked) >= COUNT // 3:
                            third.set()
            except (aiohttp.ClientError, OSError):
                pass  # the process died under us: Twilio would retry later

        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
            sends = [asyncio.create_task(post(session, f)) for f in forms]
            await asyncio.wait_for(third.wait(), 30)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            await asyncio.gather(*sends)
        assert COUNT // 3 <= len(acked) < COUNT, "the kill came too late to mean anything"

        proc = _start(cfg, port)
        try:
            async with aiohttp.ClientSession() as session:
                await asyncio.gather(
                    *(post(session, f) for f in forms if f["MessageSid"] not in acked)
                )
            assert len(acked) == COUNT
            engine = create_engine(database_url)
            try:
                deadline = time.monotonic() + 60
                while True:
                    async with engine.connect() as conn:
                        events = await conn.scalar(
                            select(func.count()).select_from(t.inbound_events)
                        )
                        done = await conn.scalar(
                            select(func.count()).where(t.inbound_events.c.status == "processed")
                        )
                        bodies = list(await conn.scalars(select(t.messages.c.body)))
                    if done == COUNT or time.monotonic() > deadline:
                        break
                    await asyncio.sleep(0.2)
            finally:
                await engine.dispose()
            assert events == COUNT and done == COUNT
            assert sorted(bodies) == sorted(f["Body"] for f in forms)  # each exactly once
        finally:
            proc.send_signal(signal.SIGTERM)
            assert await asyncio.to_thread(proc.wait, 15) == 0
