"""Fault: SIGKILL at random points in a mixed workload, 20 times (slow suite, issue #11).

`skolebro run` in a child process takes absence reports by SMS, e-mail and Telegram,
fans an announcement out and sends a digest, and is killed and restarted 20 times. After
a last, clean run: no acknowledged inbound is lost, no absence is recorded twice, no
delivery goes twice unless it was in flight at a kill (the store then shows attempts > 1),
and the digest goes once.
"""

from __future__ import annotations

import asyncio
import csv
import random
import signal
import subprocess
from collections import Counter
from datetime import datetime
from email.message import EmailMessage
from pathlib import Path
from zoneinfo import ZoneInfo

import aiosmtplib
import pytest
from sqlalchemy import select

from adapters.fakes.smtp import FakeSmtp
from adapters.fakes.telegram import FakeTelegram
from adapters.fakes.twilio import FakeTwilio
from bridge.store import tables as t
from bridge.store.db import create_engine
from tests.cli import skolebro, start_bridge, write_config
from tests.world import (
    ACCOUNT,
    BOT_TOKEN,
    ROSTER_HEADER,
    SCHOOL_NUMBER,
    TOKEN,
    email_toml,
    eventually,
    free_port,
    sms_toml,
    write_roster,
)

pytestmark = pytest.mark.slow

KILLS = 20
PER_CHANNEL = KILLS  # one absence message per channel per run
N = 3 * PER_CHANNEL  # guardians: SMS senders, then e-mail senders, then Telegram senders
STAFF = "rektor@example.kommune.no"
REPLY_DOMAIN = "svar.example.kommune.no"
ENV = {"KILL_TWILIO_TOKEN": TOKEN, "KILL_BOT_TOKEN": BOT_TOKEN}


def mobile(i: int) -> str:
    return f"+479100{i:04d}"


def roster(tmp_path: Path) -> Path:
    path = write_roster(tmp_path / "roster.csv", [(f"gd-{i}", "sms;email", "nb") for i in range(N)])
    with path.open("a", newline="", encoding="utf-8") as f:
        csv.DictWriter(f, fieldnames=ROSTER_HEADER).writerow(
            {"kind": "staff", "staff_id": "st-1", "first_name": "Rita", "last_name": "Rektor",
             "email": STAFF, "unit_id": "u-fjell", "notify": "digest"}
        )  # fmt: skip
    return path


def config(tmp_path: Path, database_url: str, port: int, listen: int, fakes: tuple) -> Path:
    twilio, smtp, bot = fakes
    return write_config(
        tmp_path,
        database_url,
        f"""public_url = "http://127.0.0.1:{port}"
[http]
port = {port}
{sms_toml(twilio.base_url, "KILL_TWILIO_TOKEN", 200)}
{email_toml(smtp.port, listen, REPLY_DOMAIN)}
[telegram]
enabled = true
token_env = "KILL_BOT_TOKEN"
mode = "polling"
api_base_url = "{bot.base_url}"
bot_username = "skolebro_test_bot"
[delivery]
quiet_hours = ""
lease_seconds = 5
backoff_initial_seconds = 0.2
backoff_max_seconds = 2
[digests]
enabled = false
""",
    )


async def mail_until_taken(listen: int, i: int, stop_at: float) -> str:
    """A guardian's mail, offered again until the listener takes it (as an MTA would)."""
    msg = EmailMessage()
    msg["From"] = f"g{i}@example.no"
    msg["To"] = f"u-fjell@{REPLY_DOMAIN}"
    msg["Subject"] = "Fravær"
    msg["Message-ID"] = f"<kill-{i}@example.no>"
    msg.set_content(f"Barn{i} er syk i dag")
    loop = asyncio.get_running_loop()
    while loop.time() < stop_at:
        try:
            await aiosmtplib.send(msg, hostname="127.0.0.1", port=listen, timeout=10)
            return msg["Message-ID"]
        except (aiosmtplib.SMTPException, OSError):
            await asyncio.sleep(0.5)
    raise AssertionError(f"mail {i} never taken")


async def rows(database_url: str, table, *where) -> list[dict]:  # type: ignore[no-untyped-def]
    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            return [dict(r) for r in (await conn.execute(select(table).where(*where))).mappings()]
    finally:
        await engine.dispose()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_twenty_kills_in_a_mixed_workload_lose_and_double_nothing(
    database_url: str, tmp_path: Path
) -> None:
    rng = random.Random(11)
    port, listen = free_port(), free_port()
    twilio = FakeTwilio(
        ACCOUNT, TOKEN, webhook_url=f"http://127.0.0.1:{port}/webhooks/twilio/sms#rc=3&rp=all",
        retry_delay=0.5,
    )  # fmt: skip
    smtp, bot = FakeSmtp(), FakeTelegram(BOT_TOKEN)
    for fake in (twilio, smtp, bot):
        await fake.start()
    proc: subprocess.Popen[bytes] | None = None
    try:
        cfg = config(tmp_path, database_url, port, listen, (twilio, smtp, bot))
        assert (
            skolebro("import-roster", str(roster(tmp_path)), "--config", str(cfg)).returncode == 0
        )
        proc = start_bridge(cfg, port, ENV)
        for i in range(2 * PER_CHANNEL, N):  # the Telegram senders link their chats
            bot.share_contact(7000 + i, mobile(i)[1:])
        await eventually(lambda: not bot.pending, within=60)
        out = skolebro("announce", "--unit", "u-fjell", "--text", "Husk refleksvest",
                       "--config", str(cfg))  # fmt: skip
        assert out.returncode == 0, out.stderr
        today = datetime.now(ZoneInfo("Europe/Oslo")).date().isoformat()
        loop = asyncio.get_running_loop()
        sms: list[asyncio.Task[tuple[int, str]]] = []
        mails: list[asyncio.Task[str]] = []
        updates: list[int] = []
        for run in range(KILLS):
            i = run
            sms.append(asyncio.create_task(
                twilio.send_inbound(mobile(i), SCHOOL_NUMBER, f"Barn{i} er syk i dag",
                                    sid=f"SM{i:032x}")
            ))  # fmt: skip
            j = PER_CHANNEL + run
            mails.append(asyncio.create_task(mail_until_taken(listen, j, loop.time() + 240)))
            k = 2 * PER_CHANNEL + run
            updates.append(bot.send_text(7000 + k, f"Barn{k} er syk i dag")["update_id"])
            if run == KILLS // 2:  # the digest, while kills go on
                digest = await asyncio.to_thread(
                    skolebro, "digest", "run", "--kind", "absence", "--unit", "u-fjell",
                    "--date", today, "--config", str(cfg),
                )  # fmt: skip
                assert digest.returncode == 0, digest.stderr
            await asyncio.sleep(rng.uniform(0.2, 2.5))
            proc.send_signal(signal.SIGKILL)
            await asyncio.to_thread(proc.wait)
            proc = await asyncio.to_thread(start_bridge, cfg, port, ENV)

        # The last run is left alone: everything must come through now.
        statuses = await asyncio.gather(*sms)
        await asyncio.gather(*mails)
        await eventually(lambda: not bot.pending, within=120)
        sids = {f"SM{i:032x}" for i in range(PER_CHANNEL)}

        async def settled() -> bool:
            events = await rows(database_url, t.inbound_events)
            stored = {e["external_id"] for e in events}
            deliveries = await rows(database_url, t.deliveries)
            return (
                sids <= stored
                and all(str(u) in stored for u in updates)
                and all(e["status"] == "processed" for e in events)
                and not [d for d in deliveries if d["status"] in ("queued", "sending")]
            )

        await eventually(settled, within=180)
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 15) == 0
        proc = None

        events = await rows(database_url, t.inbound_events)
        assert not [e for e in events if e["status"] == "dead"]
        stored = Counter(e["external_id"] for e in events)
        assert all(n == 1 for n in stored.values())
        acked = {f"SM{i:032x}" for i, (status, _) in enumerate(statuses) if status == 200}
        assert acked <= set(stored)
        # Every absence message recorded once: school and SFO for each child.
        absences = await rows(database_url, t.absences)
        per_student = Counter(a["student_id"] for a in absences)
        assert per_student == {f"s-{i}": 2 for i in range(N)}, per_student
        # Each delivery reached its recipient once, unless in flight at a kill.
        deliveries = await rows(database_url, t.deliveries)
        twice_ok = {d["address"] for d in deliveries if d["attempts"] > 1}
        texts = Counter((m.to, m.body) for m in twilio.sent)
        doubled = {to for (to, _), n in texts.items() if n > 1}
        assert doubled <= twice_ok, doubled - twice_ok
        announced = [d for d in deliveries if d["kind"] == "announcement"]
        assert len(announced) == N and {d["status"] for d in announced} <= {"sent", "delivered"}
        mails_to = Counter((r, m.message["Subject"]) for m in smtp.messages for r in m.rcpt_tos)
        doubled_mail = {to for (to, _), n in mails_to.items() if n > 1}
        assert doubled_mail <= twice_ok, doubled_mail - twice_ok
        digests = [d for d in deliveries if d["kind"] == "digest"]
        assert len(digests) == 1 and digests[0]["status"] == "sent", digests
        # Later absences are notified one by one (the digest was sent): count the digest.
        digest_mails = [
            m for m in smtp.messages
            if STAFF in m.rcpt_tos and m.message["Subject"] == digests[0]["subject"]
        ]  # fmt: skip
        assert len(digest_mails) == 1 or digests[0]["attempts"] > 1, len(digest_mails)
        print(f"SMS acked at once {len(acked)}/{PER_CHANNEL}; retried deliveries "
              f"{len(twice_ok)}; doubled {len(doubled) + len(doubled_mail)}")  # fmt: skip
    finally:
        if proc is not None:
            proc.kill()
            proc.wait()
        for fake in (twilio, smtp, bot):
            await fake.stop()
