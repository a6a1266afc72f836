"""SIGKILL while 100 mails are being delivered: every mail that got 250 is kept, once."""

from __future__ import annotations

import asyncio
import signal
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path

import aiosmtplib
import pytest
from sqlalchemy import func, select

from adapters.fakes.smtp import FakeSmtp
from bridge.store import tables as t
from bridge.store.db import create_engine
from tests.cli import skolebro, start_bridge, write_config
from tests.conftest import EXAMPLE_ROSTER
from tests.world import eventually, free_port

pytestmark = pytest.mark.slow
COUNT = 100
AMINA = "amina.hassan@example.no"  # one child: each mail goes straight to a thread


def _mail(i: int) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = AMINA
    msg["To"] = "u-fjell@svar.example.kommune.no"
    msg["Subject"] = f"Melding {i}"
    msg["Message-ID"] = make_msgid(domain="client.example.no")
    msg.set_content(f"Hei, melding nummer {i} om Aisha")
    return msg


async def test_sigkill_during_inbound_mail_keeps_every_accepted_one(
    tmp_path: Path, database_url: str
) -> None:
    port, smtp_in = free_port(), free_port()
    async with FakeSmtp() as sink:
        cfg = write_config(
            tmp_path,
            database_url,
            f"""[http]
port = {port}
[email]
enabled = true
smtp_host = "127.0.0.1"
smtp_port = {sink.port}
smtp_tls = "none"
reply_domain = "svar.example.kommune.no"
listen_port = {smtp_in}
""",
        )
        assert skolebro("import-roster", str(EXAMPLE_ROSTER), "--config", str(cfg)).returncode == 0
        mails = [_mail(i) for i in range(COUNT)]
        acked: set[int] = set()
        third = asyncio.Event()
        # An MTA keeps a few connections open, not a hundred: with all at once, group
        # commit acknowledged every mail before the kill could land among them.
        connections = asyncio.Semaphore(4)

        async def deliver(i: int) -> None:
            try:
                async with connections:
                    await aiosmtplib.send(
                        mails[i], hostname="127.0.0.1", port=smtp_in, timeout=10,
                        sender=AMINA, recipients=[str(mails[i]["To"])],
                    )  # fmt: skip
            except (aiosmtplib.SMTPException, OSError):
                return  # the MTA keeps it and tries again later
            acked.add(i)
            if len(acked) >= COUNT // 3:
                third.set()

        proc = start_bridge(cfg, port)
        sends = [asyncio.create_task(deliver(i)) for i in range(COUNT)]
        await asyncio.wait_for(third.wait(), 60)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        await asyncio.gather(*sends)
        assert COUNT // 3 <= len(acked) < COUNT, "the kill came too late to mean anything"

        proc = start_bridge(cfg, port)
        try:
            await asyncio.gather(*(deliver(i) for i in range(COUNT) if i not in acked))
            assert len(acked) == COUNT
            engine = create_engine(database_url)

            async def all_processed() -> list[str] | None:
                async with engine.connect() as conn:
                    done = await conn.scalar(
                        select(func.count()).where(t.inbound_events.c.status == "processed")
                    )
                    bodies = list(await conn.scalars(select(t.messages.c.body)))
                return bodies if done == COUNT else None

            try:
                bodies = await eventually(all_processed, within=120)
                async with engine.connect() as conn:
                    events = await conn.scalar(select(func.count()).select_from(t.inbound_events))
            finally:
                await engine.dispose()
            assert events == COUNT
            assert sorted(bodies) == sorted(
                f"Hei, melding nummer {i} om Aisha" for i in range(COUNT)
            )
        finally:
            proc.send_signal(signal.SIGTERM)
            # Waited for in a thread: the SMTP sink it says QUIT to runs on this loop.
            assert await asyncio.to_thread(proc.wait, 15) == 0
