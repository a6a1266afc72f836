"""The mail adapter on the wire: real SMTP and LMTP on loopback, no mocks of our own code.

- `MailListener` gets mail from the aiosmtplib client (and a small raw LMTP client).
- `MailSender` sends into `adapters.fakes.smtp.FakeSmtp`, a real aiosmtpd server.

The in-test `Core` is the contract the core gives the listener: `accept` keyed by external
id (a repeat is `Accepted(new=False)`), `StoreUnavailable` while it is "down",
`record_status`, and `recipient_ok` knowing one token and one unit.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from typing import Any

import aiosmtplib
import pytest

from adapters.fakes.smtp import FakeSmtp, TlsUnavailable
from adapters.mail_in import MailListener
from adapters.mail_out import MailContent, MailSender
from bridge.config import ConfigError, EmailSettings, Settings
from bridge.domain import (
    Accepted,
    Channel,
    InboundEvent,
    Outgoing,
    SendOutcome,
    StatusUpdate,
    StoreUnavailable,
)

DOMAIN = "svar.example.kommune.no"
TOKEN = f"r-k7q2m9x4tb@{DOMAIN}"
UNIT = f"u-fjell@{DOMAIN}"
PARENT = "kari.nordmann@example.no"
OUR_ID = "skolebro.dl-018f2a7c4e1b9d2c4a5e6f7081@example.kommune.no"
SMALL = 100_000


@dataclass
class Core:
    events: dict[str, InboundEvent] = field(default_factory=dict)
    statuses: list[StatusUpdate] = field(default_factory=list)
    down: bool = False
    fail_for: set[str] = field(default_factory=set)  # recipients whose events fail to store
    rcpt_down: bool = False
    accept_calls: int = 0

    async def accept(self, event: InboundEvent) -> Accepted:
        self.accept_calls += 1
        if self.down or event.payload["to"] in self.fail_for:
            raise StoreUnavailable("down")
        new = event.external_id not in self.events
        self.events.setdefault(event.external_id, event)
        return Accepted(event_id=len(self.events), new=new)

    async def record_status(self, update: StatusUpdate) -> None:
        if self.down:
            raise StoreUnavailable("down")
        self.statuses.append(update)

    async def recipient_ok(self, address: str) -> bool:
        if self.rcpt_down:
            raise StoreUnavailable("down")
        return address in (TOKEN, UNIT)


def settings(**email: Any) -> Settings:
    base = {"enabled": True, "listen_port": 0, "max_message_bytes": SMALL}
    return Settings(email=replace(EmailSettings(), **{**base, **email}))


@pytest.fixture
def core() -> Core:
    return Core()


async def running(core: Core, **email: Any) -> MailListener:
    listener = MailListener(settings(**email), core.accept, core.record_status, core.recipient_ok)
    await listener.start()
    return listener


@pytest.fixture
async def listener(core: Core) -> AsyncIterator[MailListener]:
    server = await running(core)
    yield server
    await server.stop()


def parent_mail(
    text: str = "Ola er syk i dag.",
    sender: str = PARENT,
    extra: str = "",
    message_id: str = "<CAJx8s+abc@mail.gmail.com>",
) -> bytes:
    return (
        f"From: Kari Nordmann <{sender}>\r\nTo: {TOKEN}\r\nSubject: Re: Ukeplan\r\n"
        f"Message-ID: {message_id}\r\nIn-Reply-To: <{OUR_ID}>\r\n{extra}"
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
        f"{text}\r\n"
    ).encode()


def client(listener: MailListener) -> aiosmtplib.SMTP:
    return aiosmtplib.SMTP(hostname="127.0.0.1", port=listener.port, start_tls=False, timeout=10)


async def send(
    listener: MailListener, raw: bytes, sender: str = PARENT, rcpts: tuple[str, ...] = (TOKEN,)
) -> tuple[dict[str, Any], str]:
    async with client(listener) as smtp:
        return await smtp.sendmail(sender, list(rcpts), raw)


# -- the listener: recipients ----------------------------------------------------------------


async def test_a_parent_reply_is_stored_before_250(listener: MailListener, core: Core) -> None:
    errors, reply = await send(listener, parent_mail())
    assert (errors, reply) == ({}, "2.0.0 OK")
    (event,) = core.events.values()
    assert event.channel == Channel.EMAIL
    assert event.sender == PARENT
    assert event.text == "Ola er syk i dag."
    assert event.external_id == f"CAJx8s+abc@mail.gmail.com|{PARENT}|{TOKEN}"
    assert event.payload == {
        "to": TOKEN,
        "subject": "Re: Ukeplan",
        "message_id": "CAJx8s+abc@mail.gmail.com",
        "in_reply_to": OUR_ID,
        "references": [],
        "attachments": [],
    }
    assert event.received_at.tzinfo is not None


async def test_the_same_mail_twice_is_one_event(listener: MailListener, core: Core) -> None:
    await send(listener, parent_mail())
    await send(listener, parent_mail())
    assert core.accept_calls == 2
    assert len(core.events) == 1


@pytest.mark.parametrize(
    "rcpt",
    [
        "someone@example.com",  # never an open relay
        f"r-unknown@{DOMAIN}",  # the core does not know the token
        f"u-closed@{DOMAIN}",
        f"r-k7q2m9x4tb@other.{DOMAIN}",
        f'"r-k7q2m9x4tb x"@{DOMAIN}',  # not a shape we hand out
    ],
)
async def test_rcpt_refused_with_550(listener: MailListener, core: Core, rcpt: str) -> None:
    async with client(listener) as smtp:
        await smtp.mail(PARENT)
        with pytest.raises(aiosmtplib.SMTPRecipientRefused) as refused:
            await smtp.rcpt(rcpt)
    assert refused.value.code == 550
    assert core.events == {}


async def test_rcpt_domain_is_case_insensitive(listener: MailListener, core: Core) -> None:
    await send(listener, parent_mail(), rcpts=(TOKEN.replace("svar.example", "SVAR.Example"),))
    (event,) = core.events.values()
    assert event.payload["to"] == TOKEN


async def test_rcpt_check_failing_is_a_temporary_451(listener: MailListener, core: Core) -> None:
    core.rcpt_down = True
    async with client(listener) as smtp:
        await smtp.mail(PARENT)
        with pytest.raises(aiosmtplib.SMTPRecipientRefused) as refused:
            await smtp.rcpt(TOKEN)
    assert refused.value.code == 451


async def test_two_recipients_make_two_events(listener: MailListener, core: Core) -> None:
    errors, _ = await send(listener, parent_mail(), rcpts=(TOKEN, UNIT, "x@example.com"))
    assert set(errors) == {"x@example.com"}
    assert sorted(e.payload["to"] for e in core.events.values()) == [TOKEN, UNIT]
    assert len({e.external_id for e in core.events.values()}) == 2


async def test_too_many_recipients(core: Core) -> None:
    listener = MailListener(
        settings(), core.accept, core.record_status, core.recipient_ok, max_recipients=1
    )
    await listener.start()
    try:
        async with client(listener) as smtp:
            await smtp.mail(PARENT)
            await smtp.rcpt(TOKEN)
            with pytest.raises(aiosmtplib.SMTPRecipientRefused) as refused:
                await smtp.rcpt(UNIT)
        assert refused.value.code == 452
    finally:
        await listener.stop()


# -- the listener: size ------------------------------------------------------------------------


async def test_declared_size_over_the_limit_is_552_at_mail(listener: MailListener) -> None:
    async with client(listener) as smtp:
        await smtp.ehlo()
        assert smtp.supports_extension("size")
        assert smtp.esmtp_extensions["size"] == str(SMALL)
        with pytest.raises(aiosmtplib.SMTPSenderRefused) as refused:
            await smtp.mail(PARENT, options=[f"SIZE={SMALL + 1}"])
    assert refused.value.code == 552


async def test_oversized_data_without_size_is_552_after_data(
    listener: MailListener, core: Core
) -> None:
    body = ("Ola er syk. " * 80 + "\r\n") * 150  # ~145 KB
    async with client(listener) as smtp:
        await smtp.mail(PARENT)  # no SIZE parameter
        await smtp.rcpt(TOKEN)
        with pytest.raises(aiosmtplib.SMTPDataError) as refused:
            await smtp.data(parent_mail(body))
        assert refused.value.code == 552
        await smtp.noop()  # the session goes on
    assert core.events == {}


async def test_the_default_limit_refuses_a_30_mb_body(core: Core) -> None:
    listener = await running(core, max_message_bytes=EmailSettings().max_message_bytes)
    try:
        line = b"A" * 998 + b"\r\n"
        raw = parent_mail() + line * (30 * 1024 * 1024 // len(line))
        started = time.monotonic()
        async with client(listener) as smtp:
            await smtp.mail(PARENT)
            await smtp.rcpt(TOKEN)
            with pytest.raises(aiosmtplib.SMTPDataError) as refused:
                await smtp.data(raw)
        assert refused.value.code == 552
        assert time.monotonic() - started < 20
        assert core.events == {}
    finally:
        await listener.stop()


# -- the listener: what is not a message -------------------------------------------------------


async def test_envelope_from_mismatch_is_250_and_nothing(
    listener: MailListener, core: Core
) -> None:
    errors, reply = await send(listener, parent_mail(), sender="mallory@attacker.example")
    assert (errors, reply) == ({}, "2.0.0 OK")  # no refusal: a bounce would be backscatter
    assert core.accept_calls == 0


async def test_dmarc_fail_from_a_trusted_server_is_refused(core: Core) -> None:
    listener = await running(core, trusted_authserv_ids=("mx.example.kommune.no",))
    try:
        failed = "Authentication-Results: mx.example.kommune.no; dmarc=fail header.from=x\r\n"
        with pytest.raises(aiosmtplib.SMTPDataError) as refused:
            await send(listener, parent_mail(extra=failed), sender="srs0=x@forwarder.example")
        assert refused.value.code == 550
        assert "5.7.1" in refused.value.message
        # Someone else's word is not believed; envelope and From may differ here (SRS).
        forged = "Authentication-Results: evil.example; dmarc=fail\r\n"
        await send(listener, parent_mail(extra=forged), sender="srs0=x@forwarder.example")
        passed = "Authentication-Results: mx.example.kommune.no; dmarc=pass\r\n"
        await send(
            listener,
            parent_mail(extra=passed, message_id="<other@x>"),
            sender="srs0=x@forwarder.example",
        )
        assert len(core.events) == 2
    finally:
        await listener.stop()


@pytest.mark.parametrize(
    "extra",
    [
        "Auto-Submitted: auto-replied\r\n",
        "Precedence: bulk\r\n",
        "X-Skolebro-Loop: example.kommune.no\r\n",
    ],
)
async def test_auto_replies_and_loops_are_250_and_nothing(
    listener: MailListener, core: Core, extra: str
) -> None:
    errors, reply = await send(listener, parent_mail(extra=extra))
    assert (errors, reply) == ({}, "2.0.0 OK")
    assert core.accept_calls == 0
    assert core.statuses == []


def dsn(status: str = "5.1.1", action: str = "failed") -> bytes:
    return (
        "From: Mail Delivery System <MAILER-DAEMON@mx.example.no>\r\n"
        f"To: {TOKEN}\r\nSubject: Undelivered Mail Returned to Sender\r\n"
        "Message-ID: <dsn.1@mx.example.no>\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n\r\n'
        "--B\r\nContent-Type: text/plain\r\n\r\nYour message could not be delivered.\r\n"
        "--B\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example.no\r\n"
        f"\r\nFinal-Recipient: rfc822; {PARENT}\r\nAction: {action}\r\nStatus: {status}\r\n"
        "--B\r\nContent-Type: text/rfc822-headers\r\n\r\n"
        f"From: skolebro@example.kommune.no\r\nMessage-ID: <{OUR_ID}>\r\n"
        "--B--\r\n"
    ).encode()


@pytest.mark.parametrize(
    ("status", "action", "recorded", "dead"),
    [
        ("5.1.1", "failed", True, True),
        ("5.7.1", "failed", True, False),
        ("4.4.7", "failed", True, False),
        ("4.4.1", "delayed", False, False),
    ],
)
async def test_a_bounce_records_a_status_and_stores_nothing(
    listener: MailListener, core: Core, status: str, action: str, recorded: bool, dead: bool
) -> None:
    errors, reply = await send(listener, dsn(status, action), sender="")
    assert (errors, reply) == ({}, "2.0.0 OK")
    assert core.accept_calls == 0
    if recorded:
        assert core.statuses == [
            StatusUpdate(
                channel=Channel.EMAIL,
                provider_id=OUR_ID,
                status="failed",
                error=f"bounce: {status}",
                contact_dead=dead,
            )
        ]
    else:
        assert core.statuses == []


async def test_a_bounce_we_cannot_record_is_retried(listener: MailListener, core: Core) -> None:
    core.down = True
    with pytest.raises(aiosmtplib.SMTPDataError) as refused:
        await send(listener, dsn(), sender="")
    assert refused.value.code == 451


# -- the listener: durability --------------------------------------------------------------------


async def test_store_down_is_451_and_the_retry_is_stored(
    listener: MailListener, core: Core
) -> None:
    core.down = True
    with pytest.raises(aiosmtplib.SMTPDataError) as refused:
        await send(listener, parent_mail())
    assert refused.value.code == 451  # the sending MTA keeps the mail and tries again
    assert core.events == {}
    core.down = False
    await send(listener, parent_mail())
    assert len(core.events) == 1


async def test_smtp_one_failing_recipient_makes_the_whole_transaction_451(
    listener: MailListener, core: Core
) -> None:
    core.fail_for = {UNIT}
    with pytest.raises(aiosmtplib.SMTPDataError) as refused:
        await send(listener, parent_mail(), rcpts=(TOKEN, UNIT))
    assert refused.value.code == 451
    core.fail_for = set()
    await send(listener, parent_mail(), rcpts=(TOKEN, UNIT))  # the MTA's retry
    assert len(core.events) == 2  # the first recipient's event was not duplicated


async def test_accept_that_hangs_is_451_after_the_timeout(core: Core) -> None:
    async def slow(event: InboundEvent) -> Accepted:
        await asyncio.sleep(5)
        raise AssertionError("not reached")

    listener = MailListener(
        settings(), slow, core.record_status, core.recipient_ok, accept_timeout=0.2
    )
    await listener.start()
    try:
        with pytest.raises(aiosmtplib.SMTPDataError) as refused:
            await send(listener, parent_mail())
        assert refused.value.code == 451
    finally:
        await listener.stop()


async def test_mime_bomb_is_refused_and_the_listener_lives_on(
    listener: MailListener, core: Core
) -> None:
    parts = "".join(f"--B\r\nContent-Type: text/plain\r\n\r\n{i}\r\n" for i in range(10_000))
    bomb = (
        f"From: <{PARENT}>\r\nSubject: x\r\nMIME-Version: 1.0\r\n"
        f'Content-Type: multipart/mixed; boundary="B"\r\n\r\n{parts}--B--\r\n'
    ).encode()
    levels = "".join(
        f'Content-Type: multipart/mixed; boundary="b{i}"\r\n\r\n--b{i}\r\n' for i in range(1500)
    )
    nested = f"From: <{PARENT}>\r\nSubject: x\r\nMIME-Version: 1.0\r\n{levels}\r\nx\r\n".encode()
    big = await running(core, max_message_bytes=2_000_000)
    try:
        for raw in (bomb, nested):
            started = time.monotonic()
            with pytest.raises(aiosmtplib.SMTPDataError) as refused:
                await send(big, raw)
            assert refused.value.code == 554
            assert time.monotonic() - started < 3
    finally:
        await big.stop()
    await send(listener, parent_mail())
    assert len(core.events) == 1


# -- LMTP ----------------------------------------------------------------------------------------


async def lmtp_session(port: int, rcpts: list[str], raw: bytes) -> list[str]:
    """A minimal LMTP client (aiosmtplib speaks no LHLO): the replies after the greeting."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    replies: list[str] = []

    async def reply() -> str:
        lines = []
        while True:
            line = (await asyncio.wait_for(reader.readline(), 10)).decode().rstrip("\r\n")
            lines.append(line)
            if len(line) < 4 or line[3] != "-":
                return "\n".join(lines)

    await reply()  # greeting
    for command in ["LHLO client.example", f"MAIL FROM:<{PARENT}>"] + [
        f"RCPT TO:<{r}>" for r in rcpts
    ]:
        writer.write(command.encode() + b"\r\n")
        replies.append(await reply())
    writer.write(b"DATA\r\n")
    replies.append(await reply())
    writer.write(raw + b".\r\n")
    accepted = sum(1 for r in replies if r.startswith("250 2.1.5"))
    for _ in range(accepted):
        replies.append(await reply())
    writer.write(b"QUIT\r\n")
    await reply()
    writer.close()
    await writer.wait_closed()
    return replies


async def test_lmtp_answers_each_recipient(core: Core) -> None:
    listener = await running(core, protocol="lmtp")
    try:
        core.fail_for = {UNIT}
        replies = await lmtp_session(listener.port, [TOKEN, "x@example.com", UNIT], parent_mail())
        assert replies[0].startswith("250-")  # LHLO
        assert [r[:3] for r in replies[1:]] == ["250", "250", "550", "250", "354", "250", "451"]
        (event,) = core.events.values()
        assert event.payload["to"] == TOKEN
    finally:
        await listener.stop()


async def test_lmtp_refuses_smtp_greetings(core: Core) -> None:
    listener = await running(core, protocol="lmtp")
    try:
        with pytest.raises(aiosmtplib.SMTPHeloError):
            await send(listener, parent_mail())
    finally:
        await listener.stop()


# -- life --------------------------------------------------------------------------------------


async def test_stop_closes_the_port_and_is_idempotent(core: Core) -> None:
    listener = await running(core)
    port = listener.port
    await listener.stop()
    await listener.stop()
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", port)


async def test_stop_lets_a_transaction_in_flight_finish(core: Core) -> None:
    started = asyncio.Event()

    async def slow_accept(event: InboundEvent) -> Accepted:
        started.set()
        await asyncio.sleep(0.3)
        return await core.accept(event)

    listener = MailListener(settings(), slow_accept, core.record_status, core.recipient_ok)
    await listener.start()
    sending = asyncio.create_task(send(listener, parent_mail()))
    await started.wait()
    await listener.stop()
    assert (await sending)[1] == "2.0.0 OK"
    assert len(core.events) == 1


# -- the sender ----------------------------------------------------------------------------------


def sender_settings(sink: FakeSmtp, **email: Any) -> Settings:
    base = {"enabled": True, "smtp_host": "127.0.0.1", "smtp_port": sink.port, "smtp_tls": "none"}
    return Settings(email=replace(EmailSettings(), **{**base, **email}))


def outgoing(n: int = 1, body: str = "Hei Kari!", address: str = PARENT) -> Outgoing:
    return Outgoing(f"dl-{n:04d}", Channel.EMAIL, address, body, subject="Ukeplan")


def lf(text: str) -> str:
    return text.replace("\r\n", "\n")  # mail on the wire has CRLF line ends


@pytest.fixture
async def sink() -> AsyncIterator[FakeSmtp]:
    async with FakeSmtp() as smtp:
        yield smtp


async def test_send_rich_mail(sink: FakeSmtp) -> None:
    content = MailContent(
        to=f"Kari Nordmann <{PARENT}>",
        subject="Ukeplan for 5B – uke 48",
        text="Hei Kari!\n\nHusk gymtøy på tirsdag.",
        html="<p>Hei Kari!</p><p>Husk gymtøy på tirsdag.</p>",
        from_display="Fjell skole",
        reply_to=TOKEN,
        auto_submitted=True,
        list_unsubscribe="https://bro.example.kommune.no/u/abc",
    )
    async with MailSender(sender_settings(sink)) as sender:
        result = await sender.send(outgoing(7, content.to_json()))
    assert result.outcome == SendOutcome.SENT
    assert result.provider_id == "skolebro.dl-0007@example.kommune.no"
    (got,) = await sink.wait_for(1)
    assert got.mail_from == TOKEN  # bounces come back to the listener under the token
    assert got.rcpt_tos == [PARENT]
    msg = got.message
    assert str(msg["Message-ID"]) == f"<{result.provider_id}>"
    assert str(msg["From"]) == "Fjell skole <skolebro@example.kommune.no>"
    assert str(msg["Subject"]) == "Ukeplan for 5B – uke 48"
    assert str(msg["Reply-To"]) == TOKEN
    assert str(msg["Auto-Submitted"]) == "auto-generated"
    assert str(msg["List-Unsubscribe-Post"]) == "List-Unsubscribe=One-Click"
    assert msg["Date"] is not None and msg["X-Skolebro-Loop"] is not None
    plain, html = msg.iter_parts()
    assert lf(plain.get_content()) == "Hei Kari!\n\nHusk gymtøy på tirsdag.\n"
    assert "gymtøy" in html.get_content()


async def test_send_plain_text_body(sink: FakeSmtp) -> None:
    async with MailSender(sender_settings(sink)) as sender:
        result = await sender.send(outgoing(body="Ola er registrert syk i dag."))
    assert result.outcome == SendOutcome.SENT
    (got,) = await sink.wait_for(1)
    assert got.mail_from == "skolebro@example.kommune.no"  # no reply token to bounce to
    assert got.message.get_content_type() == "text/plain"
    assert lf(got.message.get_content()) == "Ola er registrert syk i dag.\n"
    assert str(got.message["Subject"]) == "Ukeplan"


async def test_one_connection_for_many_mails(sink: FakeSmtp) -> None:
    async with MailSender(sender_settings(sink)) as sender:
        for n in range(5):
            assert (await sender.send(outgoing(n))).outcome == SendOutcome.SENT
        results = await asyncio.gather(*(sender.send(outgoing(n)) for n in range(5, 15)))
    assert all(r.outcome == SendOutcome.SENT for r in results)
    await sink.wait_for(15)
    assert sink.connections == 1
    assert {m.connection for m in sink.messages} == {1}


async def test_a_pool_of_two(sink: FakeSmtp) -> None:
    sink.latency = 0.05
    async with MailSender(sender_settings(sink), pool_size=2) as sender:
        results = await asyncio.gather(*(sender.send(outgoing(n)) for n in range(6)))
    assert all(r.outcome == SendOutcome.SENT for r in results)
    assert sink.connections == 2


async def tls_sink(mode: str, **kwargs: Any) -> FakeSmtp:
    sink = FakeSmtp(tls=mode, **kwargs)  # type: ignore[arg-type]
    try:
        await sink.start()
    except TlsUnavailable as e:
        pytest.skip(str(e))
    return sink


@pytest.mark.parametrize("mode", ["starttls", "tls"])
async def test_tls_modes(mode: str) -> None:
    sink = await tls_sink(mode)
    try:
        config = sender_settings(sink, smtp_tls=mode)
        async with MailSender(config, tls_context=sink.client_tls_context()) as sender:
            assert (await sender.send(outgoing())).outcome == SendOutcome.SENT
        (got,) = await sink.wait_for(1)
        assert got.tls is True
        # Without trusting the sink's certificate the handshake fails: worth a retry,
        # not a failed delivery (a renewed certificate may be on its way).
        async with MailSender(config) as sender:
            result = await sender.send(outgoing(2))
        assert result.outcome == SendOutcome.TRANSIENT
    finally:
        await sink.stop()


async def test_tls_none_never_upgrades() -> None:
    sink = await tls_sink("starttls")  # offers STARTTLS and requires it
    try:
        async with MailSender(sender_settings(sink, smtp_tls="none")) as sender:
            result = await sender.send(outgoing())
        assert result.outcome == SendOutcome.TRANSIENT  # 530: our configuration, not theirs
        assert result.error is not None and result.error.startswith("sender refused: 530")
        assert sink.messages == []
    finally:
        await sink.stop()


async def test_auth_over_starttls(monkeypatch: pytest.MonkeyPatch) -> None:
    sink = await tls_sink("starttls", auth=("skolebro", "hemmelig"))
    try:
        config = sender_settings(sink, smtp_tls="starttls", smtp_username="skolebro")
        monkeypatch.delenv("SMTP_PASSWORD", raising=False)
        with pytest.raises(ConfigError):
            MailSender(config)  # a missing secret is a start-up error
        monkeypatch.setenv("SMTP_PASSWORD", "hemmelig")
        async with MailSender(config, tls_context=sink.client_tls_context()) as sender:
            content = MailContent(to=PARENT, subject="x", text="y", reply_to=TOKEN)
            assert (await sender.send(outgoing(body=content.to_json()))).outcome == "sent"
        (got,) = await sink.wait_for(1)
        assert got.auth_user == "skolebro"
        # Authenticated submission pins the sender to the account's address.
        assert got.mail_from == "skolebro@example.kommune.no"
        monkeypatch.setenv("SMTP_PASSWORD", "feil")
        async with MailSender(config, tls_context=sink.client_tls_context()) as sender:
            result = await sender.send(outgoing(2))
        assert result.outcome == SendOutcome.TRANSIENT
        assert result.error == "535 5.7.8 authentication failed"
    finally:
        await sink.stop()


async def test_temporary_failure_is_transient_and_the_next_send_works(sink: FakeSmtp) -> None:
    sink.fail_next(1, "451 4.3.0 Temporary failure")
    async with MailSender(sender_settings(sink)) as sender:
        first = await sender.send(outgoing(1))
        second = await sender.send(outgoing(2))
    assert first.outcome == SendOutcome.TRANSIENT
    assert first.error == "451 4.3.0 local error in processing"
    assert not first.contact_dead
    assert second.outcome == SendOutcome.SENT
    assert sink.connections == 1


@pytest.mark.parametrize("stage", ["mail", "rcpt", "data"])
async def test_421_closes_and_the_next_send_reconnects(sink: FakeSmtp, stage: str) -> None:
    sink.fail_next(1, "421 4.3.2 Service shutting down", stage=stage)  # type: ignore[arg-type]
    async with MailSender(sender_settings(sink)) as sender:
        first = await sender.send(outgoing(1))
        second = await sender.send(outgoing(2))
    assert first.outcome == SendOutcome.TRANSIENT
    assert second.outcome == SendOutcome.SENT
    assert sink.connections == 2


async def test_connection_dropped_mid_data_is_transient(sink: FakeSmtp) -> None:
    sink.drop_next(1)
    async with MailSender(sender_settings(sink)) as sender:
        first = await sender.send(outgoing(1, body="Hei!\n" * 2000))
        second = await sender.send(outgoing(2))
    assert first.outcome == SendOutcome.TRANSIENT
    assert first.error is not None and first.error.startswith("connection error")
    assert second.outcome == SendOutcome.SENT


async def test_unknown_user_is_permanent_and_dead(sink: FakeSmtp) -> None:
    sink.refuse_recipient(PARENT)  # 550 5.1.1 <address>: ... User unknown
    async with MailSender(sender_settings(sink)) as sender:
        result = await sender.send(outgoing())
        after = await sender.send(outgoing(2, address="other@example.no"))
    assert result.outcome == SendOutcome.PERMANENT
    assert result.contact_dead is True
    assert result.error == "550 5.1.1 mailbox unavailable"  # the server's text named the address
    assert after.outcome == SendOutcome.SENT
    assert sink.connections == 1  # a refused recipient does not cost the connection


async def test_policy_refusal_is_permanent_but_not_dead(sink: FakeSmtp) -> None:
    sink.fail_next(1, "554 5.7.1 Message rejected as spam")
    async with MailSender(sender_settings(sink)) as sender:
        result = await sender.send(outgoing())
    assert (result.outcome, result.contact_dead) == (SendOutcome.PERMANENT, False)


async def test_no_server_is_transient() -> None:
    async with FakeSmtp() as sink:
        config = sender_settings(sink)
    async with MailSender(config, timeout=2) as sender:
        result = await sender.send(outgoing())
    assert result.outcome == SendOutcome.TRANSIENT
    assert result.error is not None and result.error.startswith("connection error")


async def test_slow_server_is_a_transient_timeout(sink: FakeSmtp) -> None:
    sink.latency = 2
    async with MailSender(sender_settings(sink), timeout=0.3) as sender:
        result = await sender.send(outgoing())
    assert (result.outcome, result.error) == (SendOutcome.TRANSIENT, "timeout")


@pytest.mark.parametrize("probe", [0.0, 60.0])
async def test_a_connection_the_server_dropped_is_replaced(sink: FakeSmtp, probe: float) -> None:
    async with MailSender(sender_settings(sink), idle_probe_seconds=probe) as sender:
        assert (await sender.send(outgoing(1))).outcome == SendOutcome.SENT
        for connection in list(sink._live):  # the server's idle timeout
            if connection.transport is not None:
                connection.transport.close()
        await asyncio.sleep(0.05)
        assert (await sender.send(outgoing(2))).outcome == SendOutcome.SENT
    assert sink.connections == 2
    assert len(sink.messages) == 2  # nothing sent twice


async def test_unusable_deliveries_are_permanent(sink: FakeSmtp) -> None:
    async with MailSender(sender_settings(sink)) as sender:
        bad_json = await sender.send(outgoing(body='{"mail":{"to":"x"}}'))
        bad_address = await sender.send(outgoing(address="kari nordmann@example.no"))
        no_domain = await sender.send(outgoing(address="kari"))
    assert (bad_json.outcome, bad_json.error) == (SendOutcome.PERMANENT, "invalid mail content")
    assert (bad_address.outcome, bad_address.contact_dead) == (SendOutcome.PERMANENT, True)
    assert no_domain.outcome == SendOutcome.PERMANENT
    assert sink.messages == []


async def test_close_says_quit_and_the_sender_can_start_again(sink: FakeSmtp) -> None:
    sender = MailSender(sender_settings(sink))
    await sender.send(outgoing(1))
    await sender.close()
    await sender.send(outgoing(2))
    await sender.close()
    assert sink.connections == 2


# -- both ends -------------------------------------------------------------------------------------


async def test_our_own_mail_sent_to_our_listener_is_a_loop(core: Core) -> None:
    listener = await running(core)
    try:
        config = replace(
            settings(),
            email=replace(
                settings().email, smtp_host="127.0.0.1", smtp_port=listener.port, smtp_tls="none"
            ),
        )
        content = MailContent(to=TOKEN, subject="Ukeplan", text="Hei", reply_to=TOKEN)
        async with MailSender(config) as sender:
            result = await sender.send(outgoing(body=content.to_json(), address=TOKEN))
        assert result.outcome == SendOutcome.SENT  # 250, and nothing stored
        assert core.accept_calls == 0
    finally:
        await listener.stop()


async def test_logs_hold_no_addresses_subjects_or_bodies(
    core: Core, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    listener = await running(core)
    try:
        await send(listener, parent_mail("Ola har feber."))
        await send(listener, parent_mail(), sender="mallory@attacker.example")
        await send(listener, dsn(), sender="")
        async with FakeSmtp() as sink:
            sink.refuse_recipient(PARENT)
            async with MailSender(sender_settings(sink)) as sender:
                await sender.send(outgoing(body="Ola har feber."))
    finally:
        await listener.stop()
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "stored as event" in text and "delivery dl-0001" in text
    for secret in (PARENT, "mallory", TOKEN, "Ukeplan", "feber", "kari"):
        assert secret not in text


def test_the_sink_refuses_tls_without_openssl(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("adapters.fakes.smtp.shutil.which", lambda name: None)

    async def start() -> None:
        await FakeSmtp(tls="starttls").start()

    with pytest.raises(TlsUnavailable):
        asyncio.run(start())


def test_client_context_needs_a_certificate() -> None:
    with pytest.raises(RuntimeError):
        FakeSmtp().client_tls_context()
    assert isinstance(ssl.create_default_context(), ssl.SSLContext)
