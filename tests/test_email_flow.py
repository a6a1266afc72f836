"""E-mail end to end over real SMTP: staff notified, staff replying, guardians writing.

The bridge sends through the SMTP sink and listens for mail on loopback; the test
plays the staff member's and the parent's mail clients with aiosmtplib.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path

import aiosmtplib
import pytest

from bridge.store import tables as t
from tests.conftest import EXAMPLE_ROSTER
from tests.world import World, eventually, running_world

KJERSTI = "+4791234567"  # Ola (2A: Lise follows, notify both) and Kari (5B: Tor, digest only)
REPLY_DOMAIN = "svar.example.kommune.no"


@pytest.fixture
async def world(database_url: str, tmp_path: Path) -> AsyncIterator[World]:
    async with running_world(database_url, tmp_path, EXAMPLE_ROSTER, email=True) as w:
        yield w


def mails_to(world: World, address: str) -> list[EmailMessage]:
    assert world.smtp is not None
    return [m.message for m in world.smtp.messages if address in m.rcpt_tos]


async def send_mail(
    world: World,
    *,
    sender: str,
    to: str,
    body: str,
    subject: str = "Re: Melding",
    headers: dict[str, str] | None = None,
) -> aiosmtplib.SMTPResponse | Exception:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject
    msg["Message-ID"] = make_msgid(domain="client.example.no")
    for key, value in (headers or {}).items():
        msg[key] = value
    msg.set_content(body)
    listener = world.bridge.mail_listener
    try:
        _, response = await aiosmtplib.send(
            msg, hostname="127.0.0.1", port=listener.port, sender=sender, recipients=[to]
        )
    except aiosmtplib.SMTPException as e:
        return e
    return aiosmtplib.SMTPResponse(250, response)


async def test_staff_notified_and_reply_reaches_the_parent_without_the_quote(
    world: World,
) -> None:
    await world.text(KJERSTI, "Hei! Ola skal ha med kake på fredag, går det bra?")
    notice = (await eventually(lambda: mails_to(world, "lise.berg@example.kommune.no")))[0]
    assert notice["Auto-Submitted"] == "auto-generated"
    reply_to = notice["Reply-To"]
    assert reply_to.startswith("r-") and reply_to.endswith("@" + REPLY_DOMAIN)
    assert "Ola Nordmann" in notice["Subject"]
    text = notice.get_body(("plain",)).get_content()
    assert "kake" in text and "Kjersti" in text
    # Tor follows Kari's group but chose digests: no mail for him.
    assert mails_to(world, "tor.vik@example.kommune.no") == []

    quoted = (
        "Det går fint, vi gleder oss!\n\nHilsen Lise\n\n"
        "Fra: Fjellsiden skole (skolebro) <skolebro@example.kommune.no>\n"
        "Sendt: torsdag 26. november 2026 08:12\n"
        "Til: Lise Berg <lise.berg@example.kommune.no>\n"
        "Emne: Melding om Ola Nordmann\n\n"
        "Kjersti Nordmann skrev om Ola Nordmann:\nHei! Ola skal ha med kake på fredag\n"
    )
    result = await send_mail(world, sender="lise.berg@example.kommune.no", to=reply_to, body=quoted)
    assert not isinstance(result, Exception)
    sms = await eventually(lambda: [r for r in world.replies_to(KJERSTI) if "gleder" in r])
    assert sms[0].startswith("Fjellsiden skole: Det går fint, vi gleder oss!")
    assert "Emne:" not in sms[0] and "Sendt:" not in sms[0]
    messages = await world.rows(t.messages, t.messages.c.direction == "out")
    assert messages[0]["author"] == "st-lise" and "Fra:" not in messages[0]["body"]

    # The parent answers by SMS within 72 hours: it goes to the same thread.
    await world.text(KJERSTI, "Tusen takk!")
    await eventually(lambda: world.rows(t.messages, t.messages.c.body == "Tusen takk!"))
    threads = await world.rows(t.threads)
    assert len(threads) == 1


async def test_forged_reply_has_no_effect(world: World) -> None:
    await world.text(KJERSTI, "Hei! Ola skal ha med kake på fredag.")
    notice = (await eventually(lambda: mails_to(world, "lise.berg@example.kommune.no")))[0]
    result = await send_mail(
        world, sender="mallory@evil.example", to=notice["Reply-To"], body="Hent Ola kl 10"
    )
    assert not isinstance(result, Exception)  # 250: no backscatter, no answer
    await eventually(lambda: world.rows(t.inbound_events, t.inbound_events.c.channel == "email"))
    await eventually(lambda: world.rows(t.inbound_events, t.inbound_events.c.status == "processed"))
    assert await world.rows(t.messages, t.messages.c.direction == "out") == []
    assert not [r for r in world.replies_to(KJERSTI) if "Hent" in r]


async def test_guardian_reports_absence_by_mail_and_gets_a_confirmation(world: World) -> None:
    result = await send_mail(
        world,
        sender="amina.hassan@example.no",
        to=f"u-fjell@{REPLY_DOMAIN}",
        subject="Aisha",
        body="Hi, Aisha is sick today and stays home.\n\nBest regards\nAmina",
    )
    assert not isinstance(result, Exception)
    confirmation = (await eventually(lambda: mails_to(world, "amina.hassan@example.no")))[0]
    text = confirmation.get_body(("plain",)).get_content()
    assert "Aisha" in text and "UNDO" in text
    assert confirmation["Reply-To"].startswith("r-")
    absences = await world.rows(t.absences)
    assert {a["channel"] for a in absences} == {"email"} and len(absences) == 2

    # UNDO by replying to the confirmation.
    await send_mail(
        world, sender="amina.hassan@example.no", to=confirmation["Reply-To"], body="UNDO"
    )
    await eventually(lambda: world.rows(t.absences, t.absences.c.status == "cancelled"), within=10)


async def test_out_of_office_reply_to_a_notification_is_ignored(world: World) -> None:
    await world.text(KJERSTI, "Hei! Ola skal ha med kake på fredag.")
    notice = (await eventually(lambda: mails_to(world, "lise.berg@example.kommune.no")))[0]
    before = len(world.smtp.messages) if world.smtp else 0
    result = await send_mail(
        world,
        sender="lise.berg@example.kommune.no",
        to=notice["Reply-To"],
        subject="Automatisk svar: Melding om Ola Nordmann",
        body="Jeg er på kurs til mandag.",
        headers={"Auto-Submitted": "auto-replied"},
    )
    assert not isinstance(result, Exception)
    await asyncio.sleep(0.5)
    assert await world.rows(t.messages, t.messages.c.direction == "out") == []
    assert len(world.smtp.messages if world.smtp else []) == before


async def test_mail_to_a_foreign_domain_or_unknown_token_is_refused(world: World) -> None:
    foreign = await send_mail(
        world, sender="amina.hassan@example.no", to="x@example.org", body="hei"
    )
    assert isinstance(foreign, aiosmtplib.SMTPRecipientsRefused)
    unknown = await send_mail(
        world, sender="amina.hassan@example.no", to=f"r-{'0' * 32}@{REPLY_DOMAIN}", body="hei"
    )
    assert isinstance(unknown, aiosmtplib.SMTPRecipientsRefused)
    assert await world.rows(t.inbound_events) == []


async def test_sensitive_staff_reply_is_not_sent(world: World) -> None:
    await world.text(KJERSTI, "Hei! Ola skal ha med kake på fredag.")
    notice = (await eventually(lambda: mails_to(world, "lise.berg@example.kommune.no")))[0]
    await send_mail(
        world,
        sender="lise.berg@example.kommune.no",
        to=notice["Reply-To"],
        body="Ola har vondt i magen og fikk paracet av helsesykepleier.",
    )
    told = await eventually(
        lambda: (
            [m for m in mails_to(world, "lise.berg@example.kommune.no") if m is not notice][1:]
            or [m for m in mails_to(world, "lise.berg@example.kommune.no")][1:]
        )
    )
    assert "ikke sendt" in str(told[0]["Subject"])
    assert not [r for r in world.replies_to(KJERSTI) if "vondt" in r]


async def test_staff_reply_after_a_day_skips_a_stopped_channel(world: World) -> None:
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import update

    await world.text(KJERSTI, "Hei! Ola skal ha med kake på fredag.")
    notice = (await eventually(lambda: mails_to(world, "lise.berg@example.kommune.no")))[0]
    await world.text(KJERSTI, "STOPP")
    await eventually(lambda: [r for r in world.replies_to(KJERSTI) if "START" in r])
    async with world.bridge.engine.begin() as conn:  # the parent wrote two days ago
        await conn.execute(update(t.messages).values(sent_at=datetime.now(UTC) - timedelta(days=2)))
    sms_before = len(world.replies_to(KJERSTI))
    await send_mail(
        world, sender="lise.berg@example.kommune.no", to=notice["Reply-To"], body="Det går fint!"
    )
    # Kjersti's order is sms;email: the stopped SMS is passed over for e-mail.
    reply = await eventually(
        lambda: [m for m in mails_to(world, "kjersti.nordmann@example.no")
                 if "Det går fint" in m.get_body(("plain",)).get_content()]
    )  # fmt: skip
    assert reply and len(world.replies_to(KJERSTI)) == sms_before
