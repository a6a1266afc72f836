"""Privacy: logs hold ids, never phone numbers, e-mail addresses or message bodies.

One end-to-end flow through the real bridge — SMS in (an absence, a message, an unknown
number), e-mail in, Telegram in (linking by contact, a text), a staff reply by e-mail
back to the parent, an announcement — with every logger captured at DEBUG. Every line
(message, arguments and any traceback) is then searched for each number, address and
distinctive body word used. The fakes' own loggers are not the bridge's and are left out.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path

import aiosmtplib
import pytest

from bridge.announcements import create_announcement
from tests.conftest import EXAMPLE_ROSTER
from tests.world import World, eventually, running_world

REPLY_DOMAIN = "svar.example.kommune.no"
KJERSTI = "+4791234567"
PER = "+4792345678"
STRANGER = "+4799988877"
LISE = "lise.berg@example.kommune.no"
AMINA = "amina.hassan@example.no"
PER_CHAT = 6_100_000_001
# Distinctive words in each body: none may appear in any log line.
WORDS = {
    "sms-absence": "Influensafeber",
    "sms-message": "Sjokoladekake",
    "stranger": "Gratisiphone",
    "mail": "Svømmeundervisning",
    "telegram": "Bursdagsinvitasjon",
    "staff-reply": "Kakelotteriet",
    "announcement": "Foreldremøtekveld",
}
SECRETS = [
    KJERSTI, KJERSTI[1:], KJERSTI[3:], PER, PER[1:], PER[3:], STRANGER, STRANGER[3:],
    LISE, AMINA, "kjersti.nordmann@example.no", "per.nordmann@example.no", *WORDS.values(),
]  # fmt: skip


@pytest.fixture
async def world(database_url: str, tmp_path: Path) -> AsyncIterator[World]:
    async with running_world(
        database_url, tmp_path, EXAMPLE_ROSTER, email=True, telegram=True
    ) as w:
        yield w


def _lines(records: list[logging.LogRecord]) -> list[str]:
    out = []
    for r in records:
        if r.name.startswith("adapters.fakes"):
            continue
        text = f"{r.name} {r.levelname} {r.getMessage()}"
        if r.exc_info and r.exc_info[1] is not None:
            text += f" {r.exc_info[1]!r}"
        if r.exc_text:
            text += " " + r.exc_text
        out.append(text)
    return out


async def _mail(world: World, sender: str, to: str, subject: str, body: str, **h: str) -> None:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject
    msg["Message-ID"] = make_msgid(domain="client.example.no")
    for k, v in h.items():
        msg[k.replace("_", "-")] = v
    msg.set_content(body)
    await aiosmtplib.send(
        msg,
        hostname="127.0.0.1",
        port=world.bridge.mail_listener.port,
        sender=sender,
        recipients=[to],
    )


async def test_a_full_flow_logs_no_number_address_or_body(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    assert world.smtp is not None and world.telegram is not None
    caplog.set_level(logging.DEBUG)
    smtp, bot = world.smtp, world.telegram

    # SMS: an absence, a message to the school (a staff notice), an unknown number.
    await world.text(KJERSTI, f"Ola er syk i dag, {WORDS['sms-absence']}")
    await eventually(lambda: world.replies_to(KJERSTI))
    await world.text(KJERSTI, f"Hei! Ola skal ha med {WORDS['sms-message']} på fredag")
    notice = (await eventually(lambda: [m for m in smtp.messages if LISE in m.rcpt_tos]))[0]
    await world.text(STRANGER, f"Hei {WORDS['stranger']}")
    await eventually(lambda: world.replies_to(STRANGER))

    # E-mail: a guardian writes to the unit.
    before = len(smtp.messages)
    await _mail(world, AMINA, f"u-fjell@{REPLY_DOMAIN}", "Aisha", f"Hei, {WORDS['mail']}")
    await eventually(lambda: len(smtp.messages) > before)

    # Telegram: Per links his chat by sharing his own contact, then writes.
    bot.share_contact(PER_CHAT, PER[1:], first_name="Per")
    await eventually(lambda: bot.texts(PER_CHAT))
    sent = len(bot.texts(PER_CHAT))
    bot.send_text(PER_CHAT, f"Ola skal i {WORDS['telegram']} på lørdag")
    await eventually(lambda: len(smtp.messages) > before + 1)

    # A staff reply to the SMS notice reaches Kjersti.
    replies = len(world.replies_to(KJERSTI))
    await _mail(
        world,
        LISE,
        str(notice.message["Reply-To"]),
        "Re: " + str(notice.message["Subject"]),
        f"Det går fint! {WORDS['staff-reply']}\n\nMvh Lise",
        In_Reply_To=str(notice.message["Message-ID"]),
    )
    await eventually(lambda: len(world.replies_to(KJERSTI)) > replies)

    # An announcement to the unit.
    await create_announcement(
        world.bridge.engine,
        world.bridge.settings,
        unit_id="u-fjell",
        text=f"Velkommen til {WORDS['announcement']} torsdag",
        urgent=True,
    )
    world.bridge.outbox.wake.set()
    await eventually(lambda: [b for b in world.replies_to(KJERSTI) if WORDS["announcement"] in b])
    await eventually(lambda: len(bot.texts(PER_CHAT)) > sent)

    lines = _lines(caplog.records)
    assert len(lines) > 10  # the bridge did log: the scan means something
    leaks = [(s, line) for line in lines for s in SECRETS if s.lower() in line.lower()]
    shown = {line.split(" ", 1)[0] + " " + s: line[:400] for s, line in leaks}
    assert leaks == [], "\n".join(f"{k!r} in: {v}" for k, v in shown.items())
    # Nothing that looks like an address or a Norwegian mobile number either.
    address = re.compile(r"[\w.+-]+@[\w-]+\.[\w.]+")
    mobile = re.compile(r"(?<![\w-])(?:\+47)?[49]\d{7}(?!\d)")
    ours = re.compile(r"^skolebro\.dl-[0-9a-f]+@")  # our own Message-IDs: delivery ids

    def personal(line: str) -> bool:
        found = [m.group(0) for m in address.finditer(line)]
        return any(not ours.match(a) for a in found) or bool(mobile.search(line))

    odd = [line for line in lines if personal(line)]
    assert odd == [], "\n".join(line[:300] for line in odd)


async def test_aiosqlite_never_logs_sql_parameters(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from sqlalchemy import text

    from bridge.store.db import create_engine

    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'x.db'}")
    caplog.set_level(logging.DEBUG)
    try:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT :number"), {"number": KJERSTI})
    finally:
        await engine.dispose()
    assert KJERSTI not in caplog.text
