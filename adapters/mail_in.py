"""Inbound e-mail: an SMTP or LMTP listener (aiosmtpd) that turns mail into InboundEvents.

Transport only. The listener checks what the wire can tell (recipient shape, size,
structure, auto-replies, bounces, loops, envelope/From agreement, DMARC); the core decides
whom a mail is from and what it means. SPEC 5 and 8 in short, as built here:

- RCPT: only `r-<token>@reply_domain` and `<unit_id>@reply_domain`, and only when the
  core's `recipient_ok(address)` agrees (unknown, expired or revoked tokens: 550). Never an
  open relay. `recipient_ok` raising is a 451: the sending MTA tries again.
- Size: `max_message_bytes` is aiosmtpd's `data_size_limit`, advertised as SIZE: a larger
  declared SIZE gets 552 at MAIL, a larger DATA gets 552 after it.
- DATA: parse (bounded, in a worker thread), run `adapters.mail_filters.FILTERS`, then
  - refused (DMARC failure under a trusted authserv-id): 550 5.7.1;
  - auto-reply, loop, untrusted sender: 250 and nothing stored (no backscatter);
  - bounce: `record_status(failed)` for our original Message-ID, then 250;
  - a message: one `InboundEvent` per recipient, `accept()`ed before the 250. Any
    exception from `accept` (StoreUnavailable or another) is `451 4.3.0`, so the sending
    MTA keeps the mail and retries: nothing acknowledged is lost.
- LMTP answers DATA once per recipient (RFC 2033); SMTP once for all of them, so one
  failed `accept` makes the whole transaction 451 and the retry is deduplicated by the
  external id `<Message-ID>|<sender>|<recipient>`.

Logs carry a digest of the Message-ID (`m-<12 hex>`) and event ids, never an address, a
subject or a body; aiosmtpd's own `mail.log` chatter below WARNING (which names senders
and recipients) is filtered out while a listener runs.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Any

from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import SMTP, Session
from aiosmtpd.smtp import Envelope as SmtpEnvelope

from adapters.mail_filters import Bounce, Envelope, Kind, Verdict, run_filters
from adapters.mail_parse import (
    Attachment,
    MimeTooComplex,
    addresses,
    attachments,
    best_text,
    envelope_address,
    header,
    message_id,
    message_ids,
    parse_mail,
    synthetic_message_id,
)
from bridge.config import Settings
from bridge.domain import AcceptInbound, Channel, InboundEvent, RecordStatus, StatusUpdate

log = logging.getLogger(__name__)

RecipientCheck = Callable[[str], Awaitable[bool]]

REPLY_OK = "250 2.0.0 OK"
REPLY_RCPT_OK = "250 2.1.5 OK"
REPLY_NO_SUCH_RECIPIENT = "550 5.1.1 No such recipient here"
REPLY_TRY_LATER = "451 4.3.0 try again later"
REPLY_TOO_COMPLEX = "554 5.6.0 Message structure too complex"
REPLY_TOO_MANY_RECIPIENTS = "452 4.5.3 Too many recipients"

# One mail to several of our addresses is rare (a parent writing to two units); more than
# this is not a parent.
MAX_RECIPIENTS = 20
# Seconds the core may take to store an event before the sender is told to retry.
ACCEPT_TIMEOUT = 60.0
# Seconds `stop()` waits for transactions in flight before closing connections.
STOP_GRACE = 10.0
# Local parts worth asking the core about: `r-<token>` and roster-style unit ids.
_LOCAL_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._=-]{0,127}$")
_MAX_ID = 250


# -- the pure part: bytes + envelope -> what to do ------------------------------------------


@dataclass(frozen=True)
class MailSummary:
    """What the core gets to know of a message (the text undecided, quotes and all)."""

    message_id: str  # without angle brackets; synthesized from a hash when missing
    sender: str | None  # the From address, lower-cased
    subject: str
    text: str
    in_reply_to: str | None
    references: tuple[str, ...]
    attachments: tuple[Attachment, ...]


@dataclass(frozen=True)
class Analysis:
    kind: Kind
    reason: str
    log_id: str  # a digest of the Message-ID: what the logs say instead of the id itself
    events: tuple[InboundEvent, ...] = ()
    bounce: Bounce | None = None
    reply: str | None = None  # an SMTP refusal, for Kind.REFUSED
    summary: MailSummary | None = field(default=None, compare=False)


def summarize(msg: EmailMessage, raw: bytes) -> MailSummary:
    senders = addresses(msg, "From")
    in_reply_to = message_ids(header(msg, "In-Reply-To"))
    return MailSummary(
        message_id=message_id(msg) or synthetic_message_id(msg, raw),
        sender=senders[0] if senders else None,
        subject=header(msg, "Subject"),
        text=best_text(msg),
        in_reply_to=in_reply_to[0] if in_reply_to else None,
        references=tuple(message_ids(header(msg, "References"))),
        attachments=tuple(attachments(msg)),
    )


def log_id(mid: str) -> str:
    """A Message-ID as logs show it: some ids carry a sender's own domain name."""
    return "m-" + hashlib.sha256(mid.encode("utf-8", "replace")).hexdigest()[:12]


def external_id(mid: str, sender: str, rcpt: str) -> str:
    """The dedup key: one per message, sender and recipient (SPEC 8: same Message-ID from
    the same sender changes nothing). The recipient is in it so that a retry with fewer
    recipients (after a partial failure) maps each one to the same event."""
    if len(mid) > _MAX_ID:
        mid = "sha256-" + hashlib.sha256(mid.encode("utf-8", "replace")).hexdigest()[:40]
    return f"{mid}|{sender}|{rcpt}"


def analyse(raw: bytes, env: Envelope, received_at: datetime) -> Analysis:
    """Raw DATA + envelope -> a verdict and, for a message, one event per recipient.

    Raises MimeTooComplex for MIME bombs; nothing else on any input.
    """
    msg = parse_mail(raw)
    mid = message_id(msg)
    digest = log_id(mid or synthetic_message_id(msg, raw))
    verdict: Verdict | None = run_filters(msg, env)
    if verdict is not None:
        return Analysis(
            kind=verdict.kind,
            reason=verdict.reason,
            log_id=digest,
            bounce=verdict.bounce,
            reply=verdict.reply,
        )
    summary = summarize(msg, raw)
    if summary.sender is None:  # only reachable with trusted authserv-ids set
        return Analysis(kind=Kind.UNTRUSTED, reason="no from", log_id=digest)
    payload_base: dict[str, Any] = {
        "subject": summary.subject,
        "message_id": summary.message_id,
        "in_reply_to": summary.in_reply_to,
        "references": list(summary.references),
        "attachments": [a.as_payload() for a in summary.attachments],
    }
    media = sum(1 for a in summary.attachments if not a.inline)
    events: list[InboundEvent] = []
    for rcpt in dict.fromkeys(env.rcpt_tos):  # a repeated RCPT is one recipient
        events.append(
            InboundEvent(
                channel=Channel.EMAIL,
                external_id=external_id(summary.message_id, summary.sender, rcpt),
                sender=summary.sender,
                text=summary.text,
                received_at=received_at,
                payload={"to": rcpt, **payload_base},
                media_count=media,
            )
        )
    return Analysis(
        kind=Kind.MESSAGE, reason="message", log_id=digest, events=tuple(events), summary=summary
    )


# -- the listener ----------------------------------------------------------------------------


class _QuietMailLog(logging.Filter):
    """aiosmtpd logs every sender and recipient at INFO: keep its warnings only."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING


_QUIET = _QuietMailLog()


def quiet_aiosmtpd_log() -> None:
    logger = logging.getLogger("mail.log")
    if _QUIET not in logger.filters:
        logger.addFilter(_QUIET)


class _Smtp(SMTP):
    # RFC 5321 says 1000 octets a line, and aiosmtpd refuses longer ones with a permanent
    # 500; badly made HTML mail has longer lines, and a parent should not get a bounce
    # for their mail program's habits. Commands keep their own 512-octet limit.
    line_length_limit = 64 * 1024


class _Lmtp(LMTP):
    line_length_limit = 64 * 1024


class MailListener:
    """SMTP or LMTP (per `email.protocol`) on `email.listen_host:listen_port`."""

    def __init__(
        self,
        settings: Settings,
        accept: AcceptInbound,
        record_status: RecordStatus,
        recipient_ok: RecipientCheck,
        *,
        max_recipients: int = MAX_RECIPIENTS,
        accept_timeout: float = ACCEPT_TIMEOUT,
        stop_grace: float = STOP_GRACE,
    ) -> None:
        email = settings.email
        self._settings = settings
        self._accept = accept
        self._record_status = record_status
        self._recipient_ok = recipient_ok
        self._lmtp = email.protocol == "lmtp"
        self._reply_domain = email.reply_domain.lower()
        self._our_domain = email.from_address.rpartition("@")[2].lower()
        self._max_recipients = max_recipients
        self._accept_timeout = accept_timeout
        self._stop_grace = stop_grace
        self._server: asyncio.AbstractServer | None = None
        self._port: int | None = None
        self._connections: weakref.WeakSet[SMTP] = weakref.WeakSet()
        self._inflight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def port(self) -> int:
        """The bound port (an ephemeral one when `listen_port` is 0)."""
        if self._port is None:
            raise RuntimeError("the mail listener is not started")
        return self._port

    async def start(self) -> None:
        quiet_aiosmtpd_log()
        loop = asyncio.get_running_loop()
        email = self._settings.email
        self._server = await loop.create_server(
            self._new_connection, host=email.listen_host, port=email.listen_port
        )
        sockets = self._server.sockets or ()
        self._port = sockets[0].getsockname()[1] if sockets else email.listen_port
        log.info(
            "mail listener (%s) on %s:%d",
            "lmtp" if self._lmtp else "smtp",
            email.listen_host,
            self._port,
        )

    async def stop(self) -> None:
        """Stop listening, let transactions in flight finish (their 250), then disconnect."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        try:
            await asyncio.wait_for(self._idle.wait(), self._stop_grace)
        except TimeoutError:
            log.warning("mail listener: %d transactions still running at stop", self._inflight)
        for connection in list(self._connections):
            if connection.transport is not None:
                connection.transport.close()
        try:
            await asyncio.wait_for(server.wait_closed(), 5)
        except TimeoutError:
            pass
        log.info("mail listener stopped")

    async def __aenter__(self) -> MailListener:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _new_connection(self) -> SMTP:
        cls = _Lmtp if self._lmtp else _Smtp
        connection = cls(
            self,
            data_size_limit=self._settings.email.max_message_bytes,
            enable_SMTPUTF8=True,
            # Given, so that aiosmtpd does not look up our FQDN (blocking DNS) per connection.
            hostname=self._reply_domain,
            ident="skolebro",
        )
        self._connections.add(connection)
        return connection

    # aiosmtpd hooks: `handle_<COMMAND>(server, session, envelope, ...)` -> reply line.

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: SmtpEnvelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if len(envelope.rcpt_tos) >= self._max_recipients:
            return REPLY_TOO_MANY_RECIPIENTS
        local, at, domain = address.rpartition("@")
        if not at or domain.lower() != self._reply_domain or not _LOCAL_PART.match(local):
            return REPLY_NO_SUCH_RECIPIENT
        # The domain is case-insensitive; the local part is passed as written (tokens are
        # the core's, and it compares them as it made them).
        recipient = f"{local}@{domain.lower()}"
        try:
            ok = await asyncio.wait_for(self._recipient_ok(recipient), self._accept_timeout)
        except Exception as e:  # the store is down: the sending MTA must try again
            log.warning("mail rcpt check failed: %s", type(e).__name__)
            return REPLY_TRY_LATER
        if not ok:
            return REPLY_NO_SUCH_RECIPIENT
        envelope.rcpt_tos.append(recipient)
        envelope.rcpt_options.extend(rcpt_options)
        return REPLY_RCPT_OK

    async def handle_DATA(self, server: SMTP, session: Session, envelope: SmtpEnvelope) -> str:
        self._inflight += 1
        self._idle.clear()
        try:
            replies = await self._deliver(envelope)
        finally:
            self._inflight -= 1
            if not self._inflight:
                self._idle.set()
        if not self._lmtp:
            return replies[0]
        # LMTP: one reply per accepted recipient, in RCPT order (RFC 2033 4.2).
        for reply in replies[:-1]:
            await server.push(reply)
        return replies[-1]

    async def handle_exception(self, error: Exception) -> str:
        # aiosmtpd's default answer is a permanent 500 that quotes the exception.
        log.warning("mail session error: %s", type(error).__name__)
        return REPLY_TRY_LATER

    async def _deliver(self, envelope: SmtpEnvelope) -> list[str]:
        """The DATA replies: one per recipient (identical ones for SMTP)."""
        rcpts = list(envelope.rcpt_tos)
        raw = envelope.original_content or b""
        env = Envelope(
            mail_from=envelope_address(envelope.mail_from or ""),
            rcpt_tos=tuple(rcpts),
            our_domain=self._our_domain,
            trusted_authserv_ids=self._settings.email.trusted_authserv_ids,
        )
        try:
            # Parsing is CPU work in pure Python: keep the event loop answering others.
            analysis = await asyncio.to_thread(analyse, raw, env, datetime.now(UTC))
        except MimeTooComplex:
            log.info("mail refused: MIME structure too complex")
            return [REPLY_TOO_COMPLEX] * len(rcpts)
        except Exception as e:  # a bug of ours: the sender retries, an operator sees it
            log.error("mail analysis failed: %s", type(e).__name__)
            return [REPLY_TRY_LATER] * len(rcpts)

        if analysis.kind == Kind.REFUSED:
            log.info("mail %s refused: %s", analysis.log_id, analysis.reason)
            return [analysis.reply or REPLY_NO_SUCH_RECIPIENT] * len(rcpts)
        if analysis.kind == Kind.BOUNCE:
            return [await self._bounce(analysis)] * len(rcpts)
        if analysis.kind != Kind.MESSAGE:
            log.info("mail %s dropped: %s (%s)", analysis.log_id, analysis.kind, analysis.reason)
            return [REPLY_OK] * len(rcpts)

        by_rcpt = {event.payload["to"]: event for event in analysis.events}
        stored: dict[str, str] = {}
        for rcpt, event in by_rcpt.items():
            stored[rcpt] = await self._store(event, analysis.log_id)
        replies = [stored[r] for r in rcpts]
        if not self._lmtp and any(r != REPLY_OK for r in replies):
            return [REPLY_TRY_LATER]
        return replies

    async def _store(self, event: InboundEvent, digest: str) -> str:
        try:
            accepted = await asyncio.wait_for(self._accept(event), self._accept_timeout)
        except Exception as e:  # StoreUnavailable or anything else: not durable, not acked
            log.warning("mail %s not stored: %s", digest, type(e).__name__)
            return REPLY_TRY_LATER
        log.info("mail %s stored as event %s (new=%s)", digest, accepted.event_id, accepted.new)
        return REPLY_OK

    async def _bounce(self, analysis: Analysis) -> str:
        bounce = analysis.bounce
        if bounce is None or not bounce.failed or not bounce.original_message_id:
            log.info(
                "mail %s: bounce (%s) without a failure of ours",
                analysis.log_id,
                bounce.action if bounce else "-",
            )
            return REPLY_OK
        update = StatusUpdate(
            channel=Channel.EMAIL,
            provider_id=bounce.original_message_id,
            status="failed",
            error=bounce.error,
            contact_dead=bounce.contact_dead,
        )
        try:
            await asyncio.wait_for(self._record_status(update), self._accept_timeout)
        except Exception as e:
            log.warning("mail %s: bounce not recorded: %s", analysis.log_id, type(e).__name__)
            return REPLY_TRY_LATER
        # The original is our own Message-ID (a delivery id at our domain): safe to log.
        log.info(
            "mail %s: bounce for %s recorded (%s)",
            analysis.log_id,
            bounce.original_message_id,
            bounce.error,
        )
        return REPLY_OK


__all__ = [
    "Analysis",
    "MailListener",
    "MailSummary",
    "RecipientCheck",
    "analyse",
    "external_id",
    "log_id",
    "quiet_aiosmtpd_log",
    "summarize",
]
