"""A running bridge on a real store with the loopback provider fakes, as tests drive it."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import os
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select

from adapters.fakes.smtp import FakeSmtp
from adapters.fakes.telegram import FakeTelegram
from adapters.fakes.twilio import FakeTwilio
from bridge.announcements import create_announcement
from bridge.app import Bridge
from bridge.config import parse_config
from bridge.roster import import_roster
from bridge.store import tables as t

ACCOUNT = "AC" + "0123456789abcdef" * 2
TOKEN = "world-test-token"
BOT_TOKEN = "123456789:AAF-world-test-token_abcdefghijklmnopq"
SCHOOL_NUMBER = "+4759440000"
ROSTER_HEADER = [
    "kind", "unit_id", "name", "unit_type", "email", "phone", "group_id", "student_id",
    "first_name", "last_name", "sfo_unit_id", "groups", "guardian_id", "mobile", "language",
    "channels", "students", "staff_id", "notify",
]  # fmt: skip


def sms_toml(twilio_url: str, token_env: str, max_per_second: int) -> str:
    """A test config's [sms] section: the Twilio fake at `twilio_url`."""
    return f"""[sms]
enabled = true
account_sid = "{ACCOUNT}"
auth_token_env = "{token_env}"
from_number = "{SCHOOL_NUMBER}"
api_base_url = "{twilio_url}"
max_per_second = {max_per_second}
"""


def email_toml(
    smtp_port: int, listen_port: int, reply_domain: str = "svar.example.kommune.no"
) -> str:
    """A test config's [email] section: the SMTP fake on `smtp_port`, our listener on
    `listen_port`."""
    return f"""[email]
enabled = true
smtp_host = "127.0.0.1"
smtp_port = {smtp_port}
smtp_tls = "none"
from_address = "skolebro@example.kommune.no"
reply_domain = "{reply_domain}"
listen_host = "127.0.0.1"
listen_port = {listen_port}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class World:
    bridge: Bridge
    twilio: FakeTwilio
    smtp: FakeSmtp | None = None
    telegram: FakeTelegram | None = None

    async def text(self, number: str, body: str, **kw: Any) -> int:
        status, _ = await self.twilio.send_inbound(number, SCHOOL_NUMBER, body, **kw)
        return status

    def replies_to(self, number: str) -> list[str]:
        return [m.body for m in self.twilio.sent if m.to == number]

    async def announce(self, unit_id: str = "u-fjell", **kw: Any) -> str:
        """Queue an announcement as the API and the CLI do, and wake the outbox."""
        created = await create_announcement(
            self.bridge.engine, self.bridge.settings, unit_id=unit_id, **kw
        )
        self.bridge.outbox.wake.set()
        return created.announcement_id

    async def all_processed(self) -> bool:
        """Inbound events were stored, and every one of them is processed."""
        events = await self.rows(t.inbound_events)
        return bool(events) and all(e["status"] == "processed" for e in events)

    async def rows(self, table: Any, *where: Any) -> list[dict[str, Any]]:
        async with self.bridge.engine.connect() as conn:
            result = await conn.execute(select(table).where(*where))
            return [dict(r) for r in result.mappings()]


async def eventually(check: Callable[[], Any], within: float = 10.0) -> Any:
    """Poll until `check` returns something truthy (an async or plain callable)."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting; last value {value!r}")
        await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def running_world(
    database_url: str,
    tmp_path: Path,
    roster: Path,
    extra_toml: str = "",
    *,
    email: bool = False,
    telegram: bool = False,
) -> AsyncIterator[World]:
    """The bridge with SMS (and e-mail) on, its roster imported, the fakes beside it."""
    port = free_port()
    smtp = FakeSmtp() if email else None
    bot = FakeTelegram(BOT_TOKEN) if telegram else None
    if bot is not None:
        await bot.start()
        os.environ[f"WORLD_BOT_TOKEN_{port}"] = BOT_TOKEN
        extra_toml += f"""
[telegram]
enabled = true
token_env = "WORLD_BOT_TOKEN_{port}"
mode = "polling"
api_base_url = "{bot.base_url}"
bot_username = "skolebro_test_bot"
max_per_second = 200
"""
    if smtp is not None:
        await smtp.start()
        extra_toml += "\n" + email_toml(smtp.port, free_port()) + "max_message_bytes = 200000\n"
    public = f"http://127.0.0.1:{port}"
    twilio = FakeTwilio(ACCOUNT, TOKEN, webhook_url=f"{public}/webhooks/twilio/sms#rc=3&rp=all")
    await twilio.start()
    token_env = f"WORLD_TWILIO_TOKEN_{port}"
    os.environ[token_env] = TOKEN
    settings = parse_config(
        f"""
[bridge]
public_url = "{public}"
database_url = "{database_url}"
[http]
port = {port}
{sms_toml(twilio.base_url, token_env, 500)}[delivery]
backoff_initial_seconds = 0.05
backoff_max_seconds = 1
quiet_hours = ""
{extra_toml}
""",
        base_dir=tmp_path,
    )
    bridge = Bridge(settings)
    result = await import_roster(bridge.engine, roster)
    assert not result.rejected, result.rejected
    await bridge.start()
    await asyncio.wait_for(bridge.caught_up.wait(), 10)
    try:
        yield World(bridge, twilio, smtp, bot)
    finally:
        await bridge.stop()
        await twilio.stop()
        if smtp is not None:
            await smtp.stop()
        if bot is not None:
            await bot.stop()
        os.environ.pop(token_env, None)


def write_roster(path: Path, guardians: list[tuple[str, str, str]]) -> Path:
    """A roster: one school + SFO, group g-5b, and per guardian (id, channels, language)
    one child in 5B; guardian i has mobile +479100{i:04d} and e-mail g{i}@example.no."""
    rows = [
        {"kind": "unit", "unit_id": "u-fjell", "name": "Fjellsiden skole", "unit_type": "school",
         "email": "skole@example.kommune.no"},
        {"kind": "unit", "unit_id": "u-fjell-sfo", "name": "Fjellsiden SFO", "unit_type": "sfo",
         "email": "sfo@example.kommune.no"},
        {"kind": "group", "unit_id": "u-fjell", "group_id": "g-5b", "name": "5B"},
        {"kind": "group", "unit_id": "u-fjell", "group_id": "g-2a", "name": "2A"},
    ]  # fmt: skip
    for i, (gid, channels, language) in enumerate(guardians):
        rows.append(
            {"kind": "student", "unit_id": "u-fjell", "student_id": f"s-{i}",
             "first_name": f"Barn{i}", "last_name": "Test", "sfo_unit_id": "u-fjell-sfo",
             "groups": "g-5b"}
        )  # fmt: skip
        rows.append(
            {"kind": "guardian", "guardian_id": gid, "first_name": f"Foresatt{i}",
             "last_name": "Test", "mobile": f"+479100{i:04d}", "email": f"g{i}@example.no",
             "language": language, "channels": channels, "students": f"s-{i}"}
        )  # fmt: skip
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=ROSTER_HEADER)
        writer.writeheader()
        for row in rows:
            writer.writerow(row)
    return path
