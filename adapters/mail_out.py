"""Outbound e-mail: what the core wants said -> a MIME message -> a pooled SMTP connection.

Transport only. `Outgoing` carries a body and a subject; e-mail needs more (HTML, Reply-To,
threading, List-Unsubscribe), so the core may put a `MailContent` in the delivery's body as
JSON: a body that starts with `{"mail":` (exactly `MAIL_JSON_PREFIX`, what
`MailContent.to_json()` writes) is read as one; any other body is plain text.

Decisions worth knowing:

- Message-IDs are `<skolebro.<delivery_id>@<from_address's domain>>` unless the content
  names one. `send()` returns it (without brackets) as the provider id; the listener's
  bounce handling reports failures under the same id. The `skolebro.` prefix lets the
  loop filter tell our own mail from staff mail in the same domain.
- Every message carries `X-Skolebro-Loop` so that it is recognised if it ever comes back.
- The envelope sender (MAIL FROM) is the content's Reply-To when that is an address at
  `reply_domain` and no `smtp_username` is set: bounces then come back to the listener
  under a token the core knows. Authenticated submission (a username) usually pins the
  sender to the account, so then it is `from_address` (and bounces go to its mailbox).
  The constructor's `envelope_from` overrides this.
- One connection (or `pool_size` of them) is kept and reused; a connection idle for a
  while is probed with NOOP before use, so a server that dropped it costs a reconnect,
  never a message sent twice.
- `classify()` is the one place an error becomes TRANSIENT or PERMANENT; its text is our
  own (code, enhanced status, short reason), never the server's words, which often quote
  the address.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import re
import ssl
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from email.policy import SMTPUTF8 as SMTPUTF8_POLICY
from email.policy import EmailPolicy
from email.utils import format_datetime, parseaddr
from typing import Literal

import aiosmtplib

from adapters.mail_filters import LOOP_HEADER, MSGID_PREFIX, address_is_dead, enhanced_status
from adapters.mail_parse import clean_line, message_ids
from bridge.config import Settings
from bridge.domain import Outgoing, SendOutcome, SendResult

log = logging.getLogger(__name__)

MAIL_JSON_PREFIX = '{"mail":'
SEND_TIMEOUT_SECONDS = 30.0
QUIT_TIMEOUT_SECONDS = 3.0  # closing: a stuck relay must not hold up a stop
# A pooled connection unused for this long gets a NOOP before the next message.
IDLE_PROBE_SECONDS = 5.0

# Headers the content's `headers` may not set: we write them, or they would break threading,
# loop detection or the envelope.
_PROTECTED_HEADERS = frozenset(
    {
        "from", "to", "cc", "bcc", "sender", "subject", "date", "message-id", "reply-to",
        "in-reply-to", "references", "mime-version", "content-type",
        "content-transfer-encoding", "auto-submitted", "list-unsubscribe",
        "list-unsubscribe-post", "return-path", LOOP_HEADER.lower(),
    }
)  # fmt: skip
_HEADER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,75}$")
_ID_SAFE = re.compile(r"[^A-Za-z0-9._-]")

REASONS: dict[int, str] = {
    421: "service not available",
    450: "mailbox unavailable",
    451: "local error in processing",
    452: "insufficient system storage",
    454: "TLS not available",
    500: "command not recognised",
    501: "syntax error",
    502: "command not implemented",
    503: "bad sequence of commands",
    530: "authentication or TLS required",
    534: "authentication mechanism too weak",
    535: "authentication failed",
    550: "mailbox unavailable",
    551: "user not local",
    552: "exceeded storage allocation",
    553: "mailbox name not allowed",
    554: "transaction failed",
    555: "parameters not recognised",
}


# -- content -------------------------------------------------------------------------------


@dataclass(frozen=True)
class MailContent:
    """An e-mail as the core composes it; travels in a delivery's body as `to_json()`."""

    to: str  # the To header ("Kari Nordmann <kari@example.no>" or a bare address)
    subject: str
    text: str
    html: str | None = None
    from_display: str | None = None  # display name for from_address ("Fjell skole")
    reply_to: str | None = None  # normally r-<token>@reply_domain
    message_id: str | None = None  # without brackets; default: from the delivery id
    in_reply_to: str | None = None
    references: tuple[str, ...] = ()
    auto_submitted: bool = False  # RFC 3834 "auto-generated": notifications, digests
    list_unsubscribe: str | None = None  # an https: or mailto: URI (or several, bracketed)
    headers: Mapping[str, str] = field(default_factory=dict)  # extra X- headers

    def to_json(self) -> str:
        """`{"mail":{...}}`: what the core stores as the delivery's body."""
        data = {
            "to": self.to,
            "subject": self.subject,
            "text": self.text,
            "html": self.html,
            "from_display": self.from_display,
            "reply_to": self.reply_to,
            "message_id": self.message_id,
            "in_reply_to": self.in_reply_to,
            "references": list(self.references),
            "auto_submitted": self.auto_submitted,
            "list_unsubscribe": self.list_unsubscribe,
            "headers": dict(self.headers),
        }
        return json.dumps({"mail": data}, ensure_ascii=False, separators=(",", ":"))

    @staticmethod
    def is_json(body: str) -> bool:
        return body.startswith(MAIL_JSON_PREFIX)

    @classmethod
    def from_json(cls, body: str) -> MailContent:
        """Read `to_json()`'s output; ValueError when it is not that. Unknown keys are
        ignored, so a newer core may add fields."""
        data = json.loads(body)
        mail = data.get("mail") if isinstance(data, dict) else None
        if not isinstance(mail, dict):
            raise ValueError("not a mail document")

        def text(key: str, required: bool = False) -> str | None:
            value = mail.get(key)
            if value is None and not required:
                return None
            if not isinstance(value, str):
                raise ValueError(f"mail.{key}: expected a string")
            return value

        refs = mail.get("references") or []
        headers = mail.get("headers") or {}
        if not isinstance(refs, list) or not all(isinstance(r, str) for r in refs):
            raise ValueError("mail.references: expected a list of strings")
        if not isinstance(headers, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
        ):
            raise ValueError("mail.headers: expected an object of strings")
        auto = mail.get("auto_submitted", False)
        if not isinstance(auto, bool):
            raise ValueError("mail.auto_submitted: expected a boolean")
        return cls(
            to=text("to") or "",
            subject=text("subject") or "",
            text=text("text", required=True) or "",
            html=text("html"),
            from_display=text("from_display"),
            reply_to=text("reply_to"),
            message_id=text("message_id"),
            in_reply_to=text("in_reply_to"),
            references=tuple(refs),
            auto_submitted=auto,
            list_unsubscribe=text("list_unsubscribe"),
            headers=headers,
        )


def content_for(out: Outgoing) -> MailContent:
    """The mail an `Outgoing` stands for: its JSON `MailContent`, or its body as plain text.

    The delivery's address fills an empty `to`, its subject an empty `subject`.
    """
    if MailContent.is_json(out.body):
        content = MailContent.from_json(out.body)
        return replace(
            content,
            to=content.to or out.address,
            subject=content.subject or (out.subject or ""),
        )
    return MailContent(to=out.address, subject=out.subject or "", text=out.body)


def domain_of(address: str) -> str:
    return address.rpartition("@")[2].lower()


def make_message_id(delivery_id: str | None, settings: Settings) -> str:
    """`skolebro.<delivery_id>@<our domain>`, without brackets (a random id without one)."""
    local = _ID_SAFE.sub("-", delivery_id) if delivery_id else uuid.uuid4().hex
    return f"{MSGID_PREFIX}{local}@{domain_of(settings.email.from_address)}"


def _bracketed(ids: list[str]) -> str:
    return " ".join(f"<{i}>" for i in ids)


def render_message(
    content: MailContent,
    settings: Settings,
    *,
    delivery_id: str | None = None,
    now: datetime | None = None,
    utf8: bool = False,
) -> tuple[bytes, str]:
    """The MIME message as SMTP's DATA (CRLF, ASCII), and its Message-ID (no brackets).

    text/plain, or multipart/alternative with HTML; UTF-8 throughout. Most mails of one
    announcement or digest differ only in `_recipient_headers`. The rest (From, Subject,
    the MIME parts) is rendered by the email package once per content and kept
    (`_shared_part`); the per-recipient headers are written out as they are when plain
    (`_plain_header`: what the email package would write too), else folded by the email
    package one by one. Parsing every header was most of what a message cost
    (bench/RESULTS.md, morning rush). With `utf8` (an SMTPUTF8 envelope) those headers
    carry UTF-8 as it is, else encoded words.

    ValueError when the content cannot make a valid message (a bad address, a header).
    """
    headers, message_id = _recipient_headers(content, settings, delivery_id, now)
    shared = _shared_part(
        content.from_display,
        content.subject,
        content.text,
        content.html,
        content.auto_submitted,
        tuple(content.headers.items()),
        settings.email.from_address,
    )
    policy = SMTPUTF8_POLICY if utf8 else SMTP_POLICY
    head = b"".join(_header_line(name, value, policy) for name, value in headers)
    return head + shared, message_id


def _recipient_headers(
    content: MailContent, settings: Settings, delivery_id: str | None, now: datetime | None
) -> tuple[list[tuple[str, str]], str]:
    """The headers that differ from one recipient (or one send) to the next, and the
    Message-ID among them (without brackets)."""
    headers = [
        ("To", clean_line(content.to)),
        ("Date", format_datetime((now or datetime.now(UTC)).astimezone(settings.tz))),
    ]
    ids = message_ids(content.message_id or "") if content.message_id else []
    mid = ids[0] if ids else make_message_id(delivery_id, settings)
    headers.append(("Message-ID", f"<{mid}>"))
    if content.reply_to:
        headers.append(("Reply-To", clean_line(content.reply_to)))
    if content.in_reply_to:
        headers.append(("In-Reply-To", _bracketed(message_ids(content.in_reply_to)[:1])))
    refs = [r for ref in content.references for r in message_ids(ref)]
    if refs:
        headers.append(("References", _bracketed(refs)))
    if content.list_unsubscribe:
        value = clean_line(content.list_unsubscribe)
        if not value.startswith("<"):
            value = f"<{value}>"
        headers.append(("List-Unsubscribe", value))
        if "<https:" in value.lower():  # RFC 8058 one-click needs an HTTPS URI
            headers.append(("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"))
    return headers, mid


_PLAIN_ADDRESS = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")
_PLAIN_ID = re.compile(r"<[\x21-\x3b\x3d\x3f-\x7e]+>")  # printable ASCII but < and >
_PLAIN_URIS = re.compile(
    r"<[\x21-\x2b\x2d-\x3b\x3d\x3f-\x7e]+>(?:, ?<[\x21-\x2b\x2d-\x3b\x3d\x3f-\x7e]+>)*"
)
_LONGEST_LINE = 900  # RFC 5322 allows 998 characters on a line


def _plain_header(name: str, value: str) -> bool:
    """Whether `name: value` is a line to write as it is."""
    if len(name) + 2 + len(value) > _LONGEST_LINE:
        return False
    if name in ("To", "Reply-To"):  # one bare address: nothing to quote or fold
        return _PLAIN_ADDRESS.fullmatch(value) is not None
    if name in ("Message-ID", "In-Reply-To"):
        return _PLAIN_ID.fullmatch(value) is not None
    if name == "List-Unsubscribe":
        # Written whole even when long: the email package would fold a long one into
        # encoded words, which no mail client reads as a link (RFC 2369).
        return _PLAIN_URIS.fullmatch(value) is not None
    return len(name) + 2 + len(value) <= 78 and value.isascii() and value.isprintable()


def _header_line(name: str, value: str, policy: EmailPolicy[EmailMessage]) -> bytes:
    if _plain_header(name, value):
        return f"{name}: {value}\r\n".encode("ascii")
    # What `msg[name] = value` and flattening would write (ValueError as they would).
    return policy.fold_binary(name, policy.header_factory(name, value))


@functools.lru_cache(maxsize=64)
def _shared_part(
    from_display: str | None,
    subject: str,
    text: str,
    html: str | None,
    auto_submitted: bool,
    headers: tuple[tuple[str, str], ...],
    from_address: str,
) -> bytes:
    """From, Subject and the other shared headers, and the MIME parts, as SMTP bytes."""
    msg = EmailMessage()
    content = MailContent(
        to="",
        subject=subject,
        text=text,
        html=html,
        from_display=from_display,
        auto_submitted=auto_submitted,
        headers=dict(headers),
    )
    _add_shared(msg, content, from_address)
    return msg.as_bytes(policy=SMTP_POLICY)


def _add_shared(msg: EmailMessage, content: MailContent, from_address: str) -> None:
    msg["From"] = Address(
        display_name=clean_line(content.from_display or ""), addr_spec=from_address
    )
    msg["Subject"] = clean_line(content.subject)
    if content.auto_submitted:
        msg["Auto-Submitted"] = "auto-generated"
        # Exchange honours this and sends no out-of-office answer to automatic mail.
        msg["X-Auto-Response-Suppress"] = "OOF, AutoReply"
    msg[LOOP_HEADER] = domain_of(from_address)
    for name, value in content.headers.items():
        if not _HEADER_NAME.match(name) or name.lower() in _PROTECTED_HEADERS:
            raise ValueError("mail.headers: a header name that may not be set")
        msg[name] = clean_line(value)
    # Quoted-printable keeps Norwegian letters readable in any relay and lines short.
    msg.set_content(content.text, subtype="plain", charset="utf-8", cte="quoted-printable")
    if content.html is not None:
        msg.add_alternative(content.html, subtype="html", charset="utf-8", cte="quoted-printable")
        for part in msg.iter_parts():
            del part["MIME-Version"]  # the stdlib repeats it in each part; once is the rule


# -- errors ------------------------------------------------------------------------------


def classify(exc: BaseException) -> SendResult:
    """The one place a failed send becomes TRANSIENT or PERMANENT (and maybe contact_dead).

    4xx replies, lost connections and timeouts are worth another try; 5xx replies are not,
    and those that say the address does not exist mark the contact dead. Our own sender or
    credentials being refused is a configuration problem: retried, so that fixing the
    configuration saves the deliveries instead of failing them.
    """
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        if not exc.recipients:
            return SendResult(SendOutcome.PERMANENT, error="recipient refused")
        exc = exc.recipients[0]
    if isinstance(exc, aiosmtplib.SMTPAuthenticationError):
        return SendResult(SendOutcome.TRANSIENT, error=_error_text(exc.code, exc.message))
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        code, text = exc.code, exc.message
        error = _error_text(code, text)
        if 400 <= code < 500 or code < 200:  # 4xx, or aiosmtplib's -1 for a garbled reply
            return SendResult(SendOutcome.TRANSIENT, error=error)
        if isinstance(exc, aiosmtplib.SMTPSenderRefused) and code != 552:
            return SendResult(SendOutcome.TRANSIENT, error=f"sender refused: {error}")
        if code >= 500:
            about_recipient = isinstance(
                exc, aiosmtplib.SMTPRecipientRefused | aiosmtplib.SMTPDataError
            )
            dead = about_recipient and address_is_dead(code, enhanced_status(text), text)
            return SendResult(SendOutcome.PERMANENT, error=error, contact_dead=dead)
        return SendResult(SendOutcome.TRANSIENT, error=error)
    if isinstance(exc, aiosmtplib.SMTPNotSupported):
        # The server cannot take this message (an international address without SMTPUTF8).
        return SendResult(SendOutcome.PERMANENT, error="not supported by the server")
    if isinstance(exc, aiosmtplib.SMTPTimeoutError | TimeoutError):
        return SendResult(SendOutcome.TRANSIENT, error="timeout")
    if isinstance(exc, aiosmtplib.SMTPServerDisconnected | aiosmtplib.SMTPConnectError):
        return SendResult(SendOutcome.TRANSIENT, error=f"connection error: {type(exc).__name__}")
    if isinstance(exc, ssl.SSLError | OSError):
        return SendResult(SendOutcome.TRANSIENT, error=f"connection error: {type(exc).__name__}")
    # aiosmtplib's own state errors, or a bug of ours: retries end in "dead", which an
    # operator sees and can retry.
    return SendResult(SendOutcome.TRANSIENT, error=f"internal error: {type(exc).__name__}")


def _error_text(code: int, text: str) -> str:
    status = enhanced_status(text)
    reason = REASONS.get(code, "unexpected reply")
    return f"{code} {status} {reason}" if status else f"{code} {reason}"


# -- sending -----------------------------------------------------------------------------


class _Connection:
    """One SMTP connection of the pool: opened on first use, reused, reopened after errors."""

    def __init__(self, sender: MailSender) -> None:
        self._sender = sender
        self.smtp: aiosmtplib.SMTP | None = None
        self.last_used = 0.0

    async def send(self, data: bytes, mail_from: str, rcpt: str) -> None:
        await self._ready()
        smtp = self.smtp
        assert smtp is not None
        try:
            options: list[str] = []
            if not (mail_from + rcpt).isascii():
                # As aiosmtplib's send_message would: SMTPUTF8 (with 8BITMIME), or refused.
                if smtp.is_ehlo_or_helo_needed:
                    await smtp.ehlo()
                if not smtp.supports_extension("smtputf8"):
                    raise aiosmtplib.SMTPNotSupported("no SMTPUTF8 for a non-ASCII address")
                options.append("SMTPUTF8")
                if smtp.supports_extension("8bitmime"):
                    options.append("BODY=8BITMIME")
            await smtp.sendmail(mail_from, [rcpt], data, mail_options=options)
        except (aiosmtplib.SMTPRecipientsRefused, aiosmtplib.SMTPResponseException) as e:
            # aiosmtplib has sent RSET: the connection stays usable, except after a 421
            # (it closed it) or a refused login.
            if isinstance(e, aiosmtplib.SMTPAuthenticationError) or (
                isinstance(e, aiosmtplib.SMTPResponseException) and e.code == 421
            ):
                self.reset()
            raise
        except BaseException:
            self.reset()
            raise
        finally:
            self.last_used = time.monotonic()

    async def _ready(self) -> None:
        smtp = self.smtp
        if smtp is not None and smtp.is_connected:
            if time.monotonic() - self.last_used < self._sender.idle_probe_seconds:
                return
            try:
                response = await smtp.noop()
                if response.code == 250:
                    return
            except (aiosmtplib.SMTPException, OSError, TimeoutError):
                pass
            self.reset()  # the server dropped it while idle: a new one, nothing sent twice
        self.smtp = self._sender.new_client()
        try:
            await self.smtp.connect()
        except BaseException:
            self.reset()
            raise

    def reset(self) -> None:
        if self.smtp is not None:
            self.smtp.close()
        self.smtp = None

    async def close(self) -> None:
        smtp, self.smtp = self.smtp, None
        if smtp is None:
            return
        if smtp.is_connected:
            try:
                await asyncio.wait_for(smtp.quit(), QUIT_TIMEOUT_SECONDS)
            except Exception:
                pass
        smtp.close()


EnvelopeFrom = Literal["auto", "reply_to", "from_address"]


class MailSender:
    """Sends `Outgoing` e-mail through `email.smtp_host`; one instance per process."""

    def __init__(
        self,
        settings: Settings,
        *,
        pool_size: int = 1,
        timeout: float = SEND_TIMEOUT_SECONDS,
        tls_context: ssl.SSLContext | None = None,
        envelope_from: EnvelopeFrom = "auto",
        idle_probe_seconds: float = IDLE_PROBE_SECONDS,
    ) -> None:
        if pool_size < 1:
            raise ValueError("pool_size must be at least 1")
        email = settings.email
        self._settings = settings
        # Read the secret now: a missing password is a start-up error, not a failed send.
        self._password = (
            settings.secret("email", "smtp_password_env") if email.smtp_username else None
        )
        self._pool_size = pool_size
        self._timeout = timeout
        self._tls_context = tls_context
        self._envelope_from = envelope_from
        self.idle_probe_seconds = idle_probe_seconds
        self._pool: asyncio.LifoQueue[_Connection] | None = None
        self._connections: list[_Connection] = []

    def new_client(self) -> aiosmtplib.SMTP:
        email = self._settings.email
        return aiosmtplib.SMTP(
            hostname=email.smtp_host,
            port=email.smtp_port,
            username=email.smtp_username or None,
            password=self._password,
            # Our own name in EHLO; the default looks up the FQDN, slowly on some hosts.
            local_hostname=domain_of(email.from_address),
            timeout=self._timeout,
            use_tls=email.smtp_tls == "tls",
            start_tls=email.smtp_tls == "starttls",  # "none": never, even if offered
            tls_context=self._tls_context,
        )

    def envelope_sender(self, content: MailContent) -> str:
        email = self._settings.email
        reply_to = parseaddr(content.reply_to or "")[1]  # "Fjell skole <r-...@...>" too
        ours = bool(reply_to) and domain_of(reply_to) == email.reply_domain.lower()
        mode = self._envelope_from
        if mode == "auto":
            mode = "reply_to" if not email.smtp_username else "from_address"
        return reply_to if mode == "reply_to" and ours else email.from_address

    def _get_pool(self) -> asyncio.LifoQueue[_Connection]:
        # Made on first use: a queue belongs to the running event loop.
        if self._pool is None:
            self._pool = asyncio.LifoQueue()
            for _ in range(self._pool_size):
                connection = _Connection(self)
                self._connections.append(connection)
                self._pool.put_nowait(connection)
        return self._pool

    async def send(self, out: Outgoing) -> SendResult:
        try:
            content = content_for(out)
            mail_from, rcpt = self.envelope_sender(content), out.address.strip()
            data, provider_id = render_message(
                content,
                self._settings,
                delivery_id=out.delivery_id,
                utf8=not (mail_from + rcpt).isascii(),
            )
        except (ValueError, TypeError) as e:
            log.warning(
                "mail delivery %s: unusable content (%s)", out.delivery_id, type(e).__name__
            )
            return SendResult(SendOutcome.PERMANENT, error="invalid mail content")
        if not _plausible_address(rcpt):
            return SendResult(SendOutcome.PERMANENT, error="invalid address", contact_dead=True)
        pool = self._get_pool()
        connection = await pool.get()
        try:
            await connection.send(data, mail_from, rcpt)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            result = classify(e)
            log.warning(
                "mail delivery %s: %s (%s)", out.delivery_id, result.outcome.value, result.error
            )
            return result
        finally:
            pool.put_nowait(connection)
        log.info("mail delivery %s sent as %s", out.delivery_id, provider_id)
        return SendResult(SendOutcome.SENT, provider_id=provider_id)

    async def close(self) -> None:
        # All at once: each QUIT may wait out its timeout on a stuck relay, and a
        # stopping bridge has 15 s in all (SPEC 2).
        await asyncio.gather(*(connection.close() for connection in self._connections))

    async def __aenter__(self) -> MailSender:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def _plausible_address(address: str) -> bool:
    """Something SMTP can carry: one @, no spaces, brackets or line breaks."""
    local, at, domain = address.rpartition("@")
    if not (at and local and domain and "." in domain):
        return False
    return not any(c.isspace() or c in "<>,;\x00" for c in address)
