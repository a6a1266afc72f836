"""Abuse over e-mail: no open relay, no header injection, HTML escaped, over real SMTP.

The roster here has CR/LF and markup in names (a malicious or broken roster file); the
guardians write by SMS and e-mail; staff get notices, guardians an announcement whose
subject carries CR/LF, staff an absence digest with an HTML part. Every mail the SMTP
fake receives has one line per header, only the headers we write, only the intended
recipient, and no live markup in its HTML.
"""

from __future__ import annotations

import csv
from collections.abc import AsyncIterator
from datetime import datetime
from email import policy
from email.parser import BytesParser
from pathlib import Path
from zoneinfo import ZoneInfo

import aiosmtplib
import pytest

from bridge.announcements import create_announcement
from bridge.digests import run_digest
from tests.conftest import EXAMPLE_ROSTER
from tests.world import World, eventually, running_world

REPLY_DOMAIN = "svar.example.kommune.no"
LISE = "lise.berg@example.kommune.no"
AMINA = "amina.hassan@example.no"
KJERSTI = "+4791234567"
INJECT = "\r\nBcc: evil@attacker.example\r\nX-Injected: yes"
MARKUP = "<script>alert(1)</script><img src=x onerror=alert(2)>"
OSLO = ZoneInfo("Europe/Oslo")


def _hostile_roster(path: Path) -> Path:
    with EXAMPLE_ROSTER.open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        if row["kind"] == "student":
            row["last_name"] += INJECT + MARKUP
        if row["kind"] == "guardian":
            row["last_name"] += INJECT + MARKUP
        if row["kind"] == "unit":
            row["name"] += INJECT
        if row["kind"] == "staff":
            row["notify"] = "both"
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.fixture
async def world(database_url: str, tmp_path: Path) -> AsyncIterator[World]:
    roster = _hostile_roster(tmp_path / "hostile.csv")
    async with running_world(database_url, tmp_path, roster, email=True) as w:
        yield w


def _assert_clean(world: World) -> None:
    """No received mail carries an injected header or an unintended recipient."""
    assert world.smtp is not None
    assert world.smtp.messages
    for mail in world.smtp.messages:
        raw_head = mail.raw.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0]
        msg = BytesParser(policy=policy.default).parsebytes(mail.raw)
        names = {k.lower() for k in msg.keys()}
        assert "bcc" not in names and "x-injected" not in names, raw_head
        for line in raw_head.splitlines():
            assert not line.lower().startswith((b"bcc:", b"x-injected:")), raw_head
        assert all("attacker" not in r for r in mail.rcpt_tos)
        assert len(msg.get_all("To") or []) == 1
        assert "\n" not in str(msg["Subject"]) and "\r" not in str(msg["Subject"])
        html = msg.get_body(preferencelist=("html",))
        if html is not None:
            content = html.get_content()
            assert "<script" not in content.lower() and "<img src=x" not in content.lower()


async def test_inbound_smtp_is_not_an_open_relay(world: World) -> None:
    listener = world.bridge.mail_listener
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=listener.port)
    await client.connect()
    try:
        await client.ehlo()
        await client.mail("kjersti.nordmann@example.no")
        refused = [
            "victim@gmail.com",
            "postmaster@attacker.example",
            f"u-fjell@{REPLY_DOMAIN}.attacker.example",
            f"u-fjell%attacker.example@{REPLY_DOMAIN}",
            f"attacker.example!u-fjell@{REPLY_DOMAIN}",
            f"@{REPLY_DOMAIN}:victim@gmail.com",
            f'"victim@gmail.com"@{REPLY_DOMAIN}',
            f"r-unknowntoken@{REPLY_DOMAIN}",
            f"u-nosuchunit@{REPLY_DOMAIN}",
            "u-fjell@example.kommune.no",
        ]
        for rcpt in refused:
            code, _ = await _rcpt(client, rcpt)
            assert code == 550 or 500 <= code < 560, (rcpt, code)
        code, _ = await _rcpt(client, f"u-fjell@{REPLY_DOMAIN}")
        assert code == 250
    finally:
        await client.quit()


async def _rcpt(client: aiosmtplib.SMTP, rcpt: str) -> tuple[int, str]:
    try:
        response = await client.rcpt(rcpt)
    except aiosmtplib.SMTPRecipientRefused as e:
        return e.code, e.message
    except aiosmtplib.SMTPResponseException as e:
        return e.code, e.message
    return response.code, response.message


async def test_no_header_injection_and_no_live_html_in_any_mail(world: World) -> None:
    assert world.smtp is not None
    # A guardian's SMS about a child becomes a staff notice (names from the roster).
    await world.text(KJERSTI, f"Hei! Ola skal ha med kake på fredag {MARKUP}")
    await eventually(lambda: [m for m in world.smtp.messages if LISE in m.rcpt_tos])

    # A guardian writes to the unit with a subject that decodes to CR/LF.
    raw = (
        f"From: Amina <{AMINA}>\r\nTo: u-fjell@{REPLY_DOMAIN}\r\n"
        "Subject: =?utf-8?q?Hei=0D=0ABcc:_evil@attacker.example?=\r\n"
        "Message-ID: <inject-1@client.example.no>\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n\r\n"
        f"Aisha kommer seint i morgen. {MARKUP}\r\n"
    ).encode()
    await aiosmtplib.send(
        raw,
        hostname="127.0.0.1",
        port=world.bridge.mail_listener.port,
        sender=AMINA,
        recipients=[f"u-fjell@{REPLY_DOMAIN}"],
    )
    before = len(world.smtp.messages)
    await eventually(lambda: len(world.smtp.messages) > before)

    # An announcement with CR/LF in its subject and markup in its text (CLI and API
    # both call create_announcement).
    await create_announcement(
        world.bridge.engine,
        world.bridge.settings,
        unit_id="u-fjell",
        text=f"Foreldremøte {MARKUP}",
        subject="Info" + INJECT,
        urgent=True,
    )
    await eventually(lambda: [m for m in world.smtp.messages if AMINA in m.rcpt_tos])

    # An absence, then the unit's absence digest (text and HTML parts).
    await world.text(KJERSTI, "Ola er syk i dag")
    await eventually(lambda: len([r for r in world.replies_to(KJERSTI) if "ANGRE" in r]) >= 1)
    count = len(world.smtp.messages)
    today = datetime.now(OSLO).date()
    await run_digest(
        world.bridge.engine, world.bridge.settings, kind="absence", unit_id="u-fjell", day=today
    )
    world.bridge.outbox.wake.set()

    def htmls() -> list[object]:
        assert world.smtp is not None
        return [
            m for m in world.smtp.messages[count:]
            if m.message.get_body(preferencelist=("html",)) is not None
        ]  # fmt: skip

    await eventually(htmls, within=20)  # the digest, with its HTML part
    _assert_clean(world)
