"""What an inbound mail is before anyone reads it: a chain of small single-purpose filters.

After Zammad's `Channel::Filter::*`: each filter looks at the parsed message and the SMTP
envelope and either returns a `Verdict` or passes (None). The first verdict wins; a mail
no filter claims is a message for the core. The order matters and is written down in
`FILTERS`:

1. `dmarc_refusal`  - a trusted `Authentication-Results` says DMARC failed: refuse (550).
2. `own_loop`       - our own mail came back (our Message-ID, our loop header).
3. `delivery_report`- a DSN (multipart/report; report-type=delivery-status) or an
                      `X-Failed-Recipients` bounce: before the auto-reply check, because
                      DSNs carry `Auto-Submitted` too and we want their status.
4. `auto_reply`     - RFC 3834 and the vendors' headers, bulk/list mail, read receipts,
                      out-of-office subjects.
5. `null_sender`    - anything else from `<>`, MAILER-DAEMON or postmaster: automatic by
                      definition; a bounce when it quotes one of our Message-IDs.
6. `sender_mismatch`- with no trusted authserv-ids, envelope sender and From must agree.

Verdicts say what the mail is and why (a short reason for logs: never an address, a
subject or a body).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email.message import EmailMessage, Message
from email.parser import HeaderParser
from email.policy import default as default_policy
from enum import StrEnum

from adapters.mail_parse import (
    addresses,
    decode_part,
    has_header,
    header,
    message_id,
    message_ids,
    subparts,
    walk,
)

# Outbound mail carries this header and Message-IDs `<MSGID_PREFIX...@our domain>`.
LOOP_HEADER = "X-Skolebro-Loop"
MSGID_PREFIX = "skolebro."

REFUSE_DMARC = "550 5.7.1 Message rejected: DMARC policy failure"


class Kind(StrEnum):
    MESSAGE = "message"  # for the core
    AUTO_REPLY = "auto_reply"  # out-of-office, vacation, bulk, read receipts: dropped
    BOUNCE = "bounce"  # a delivery report: status recorded, nothing stored
    LOOP = "loop"  # our own mail coming back: dropped
    UNTRUSTED = "untrusted"  # the sender is not who the envelope says: dropped, no answer
    REFUSED = "refused"  # refused at DATA (the reply says why)


@dataclass(frozen=True)
class Envelope:
    """What the SMTP session knows, and whom the listener trusts."""

    mail_from: str  # lower-cased reverse path; "" for the null sender <>
    rcpt_tos: tuple[str, ...]
    our_domain: str  # the domain of our Message-IDs (the from_address's domain)
    trusted_authserv_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class Bounce:
    """A delivery report about one of our messages."""

    original_message_id: str | None  # ours, without angle brackets; None when not found
    action: str  # "failed", "delayed", "delivered", ... (RFC 3464); "failed" for plain bounces
    status: str | None  # enhanced status code, e.g. "5.1.1"
    code: int | None  # the basic SMTP reply code when the report names one, e.g. 550
    failed_recipient: str | None  # for tests and the core's checks; never logged
    contact_dead: bool

    @property
    def failed(self) -> bool:
        return self.action == "failed"

    @property
    def error(self) -> str:
        return f"bounce: {self.status or self.code or 'unknown'}"


@dataclass(frozen=True)
class Verdict:
    kind: Kind
    reason: str  # short and content-free: "auto-submitted", "dsn", "own message-id"
    bounce: Bounce | None = None
    reply: str | None = None  # the SMTP reply for REFUSED


Filter = Callable[[EmailMessage, Envelope], Verdict | None]


# -- 1. DMARC ------------------------------------------------------------------------------


def dmarc_refusal(msg: EmailMessage, env: Envelope) -> Verdict | None:
    """A DMARC failure that a trusted server recorded: refuse at DATA (SPEC 5)."""
    if not env.trusted_authserv_ids:
        return None
    trusted = {t.lower() for t in env.trusted_authserv_ids}
    for value in _all_headers(msg, "Authentication-Results"):
        authserv_id, results = parse_authentication_results(value)
        if authserv_id in trusted and results.get("dmarc") == "fail":
            return Verdict(Kind.REFUSED, "dmarc=fail", reply=REFUSE_DMARC)
    return None


def parse_authentication_results(value: str) -> tuple[str, dict[str, str]]:
    """RFC 8601: (authserv-id lower-cased, {method: result}) of one header value."""
    text = value
    for _ in range(10):  # comments nest; ten levels is more than any MTA writes
        stripped = re.sub(r"\([^()]*\)", " ", text)
        if stripped == text:
            break
        text = stripped
    parts = [p.strip() for p in text.split(";")]
    authserv = parts[0].split()[0].lower() if parts and parts[0].split() else ""
    results: dict[str, str] = {}
    for part in parts[1:]:
        m = re.match(r"^([A-Za-z0-9_.-]+)(?:/\d+)?\s*=\s*([A-Za-z0-9_-]+)", part)
        if m:
            results.setdefault(m.group(1).lower(), m.group(2).lower())
    return authserv, results


# -- 2. loops ------------------------------------------------------------------------------


def is_our_message_id(mid: str | None, our_domain: str, *, strict: bool = True) -> bool:
    """Whether a Message-ID is one we made (`strict`) or at least in our domain."""
    if not mid:
        return False
    local, _, domain = mid.lower().rpartition("@")
    if domain != our_domain.lower():
        return False
    return local.startswith(MSGID_PREFIX) if strict else True


def own_loop(msg: EmailMessage, env: Envelope) -> Verdict | None:
    if has_header(msg, LOOP_HEADER):
        return Verdict(Kind.LOOP, "loop header")
    # Strict: staff whose mail client names its Message-IDs after their (our) domain,
    # as Thunderbird does, must not look like a loop.
    if is_our_message_id(message_id(msg), env.our_domain):
        return Verdict(Kind.LOOP, "own message-id")
    return None


# -- 3. delivery reports ---------------------------------------------------------------------

_STATUS = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?![\d.])")
_BASIC_CODE = re.compile(r"(?<!\d)([45]\d\d)(?!\d)")
_QUOTED_MSGID = re.compile(r"(?im)^[ \t>]*message-id:[ \t]*<?([^\s<>]+@[^\s<>]+?)>?[ \t]*$")
_USER_UNKNOWN = re.compile(
    r"no such (user|mailbox|recipient|address)|user unknown|unknown (user|recipient|mailbox)"
    r"|does ?n[o']t exist|invalid (recipient|mailbox|address)|recipient (address )?rejected"
    r"|mailbox (unavailable|not found|disabled|inactive)|address (rejected|not found)"
    r"|account (disabled|closed|not found|inactive)|no mailbox|unrouteable address"
    r"|user (not found|doesn't have|does not have)",
    re.IGNORECASE,
)
# Address-status codes that say the address itself is gone (RFC 3463): bad mailbox, bad
# system, bad syntax, moved, null MX; and a disabled mailbox. Not 5.1.7/5.1.8: those are
# about our sender. Policy refusals (5.7.x), full mailboxes and size limits leave the
# address usable: marking it dead would end a guardian's e-mail for a spam filter's mood.
_DEAD_STATUSES = frozenset(
    {"5.1.0", "5.1.1", "5.1.2", "5.1.3", "5.1.4", "5.1.6", "5.1.10", "5.2.1"}
)


def address_is_dead(code: int | None, status: str | None, text: str = "") -> bool:
    """Whether a permanent SMTP failure says the address is unusable, not just this mail.

    `status` (an enhanced code) decides when given; otherwise 551 and 553 do, and 550
    when its text reads like "no such user" (550 is also the usual policy refusal).
    """
    if status:
        return status in _DEAD_STATUSES
    if code in (551, 553):
        return True
    return code == 550 and bool(_USER_UNKNOWN.search(text))


def enhanced_status(text: str) -> str | None:
    m = _STATUS.search(text)
    return ".".join(m.groups()) if m else None


def delivery_report(msg: EmailMessage, env: Envelope) -> Verdict | None:
    is_dsn = (
        msg.get_content_type() == "multipart/report"
        and str(msg.get_param("report-type") or "").lower() == "delivery-status"
    )
    if not is_dsn and not has_header(msg, "X-Failed-Recipients"):
        return None
    return Verdict(
        Kind.BOUNCE, "dsn" if is_dsn else "x-failed-recipients", bounce=_bounce(msg, env)
    )


def _bounce(msg: EmailMessage, env: Envelope, *, replies_count: bool = True) -> Bounce:
    """The original Message-ID, status and failed recipient of a bounce, as far as known."""
    action, status, recipient, diagnostic = "failed", None, None, ""
    fields = _delivery_status_fields(msg)
    if fields:
        # The first recipient that failed, else the first one reported.
        chosen = next((f for f in fields if f.get("action") == "failed"), fields[0])
        action = chosen.get("action") or "failed"
        status = enhanced_status(chosen.get("status", ""))
        recipient = _after_type(chosen.get("final-recipient") or chosen.get("original-recipient"))
        diagnostic = chosen.get("diagnostic-code", "")
        if not status:
            status = enhanced_status(diagnostic)
    text = _report_text(msg)
    if not status:
        status = enhanced_status(text)
    if recipient is None:
        failed = header(msg, "X-Failed-Recipients")
        recipient = failed.split(",")[0].strip().lower() or None
    code_match = _BASIC_CODE.search(diagnostic or text)
    code = int(code_match.group(1)) if code_match else None
    permanent = (status or "5").startswith("5") if action == "failed" else False
    dead = permanent and address_is_dead(code, status, diagnostic or text)
    return Bounce(
        original_message_id=_original_message_id(msg, env, text, replies_count=replies_count),
        action=action,
        status=status,
        code=code,
        failed_recipient=recipient,
        contact_dead=dead,
    )


def _delivery_status_fields(msg: EmailMessage) -> list[dict[str, str]]:
    """The per-recipient field blocks of a message/delivery-status part, lower-cased keys."""
    for part, _, _ in walk(msg, max_depth=3):
        if part.get_content_type() != "message/delivery-status":
            continue
        found: list[dict[str, str]] = []
        for block in subparts(part):  # the per-message block has neither Action nor Status
            fields = {k.lower(): " ".join(str(v).split()) for k, v in block.items()}
            if "action" in fields or "status" in fields:
                fields["action"] = fields.get("action", "failed").lower()
                found.append(fields)
        return found
    return []


def _after_type(value: str | None) -> str | None:
    """`rfc822; user@example.com` -> `user@example.com`."""
    if not value:
        return None
    return value.split(";", 1)[-1].strip().strip("<>").lower() or None


def _report_text(msg: EmailMessage) -> str:
    """The human-readable text of a bounce, for status codes and quoted headers."""
    texts: list[str] = []
    for part, _, _ in walk(msg, max_depth=4):
        if part.get_content_type() in ("text/plain", "text/rfc822-headers"):
            texts.append(decode_part(part)[:200_000])
        if len(texts) >= 5:
            break
    return "\n".join(texts)


def _original_headers(msg: EmailMessage) -> Iterator[Message]:
    """The headers of the original message a report carries, in the usual places."""
    for part, _, _ in walk(msg, max_depth=4):
        ctype = part.get_content_type()
        if ctype in ("message/rfc822", "message/global", "message/rfc822-headers"):
            inner = part.get_payload()
            if isinstance(inner, list) and inner and isinstance(inner[0], Message):
                yield inner[0]
            elif isinstance(inner, str):  # a headers-only part the parser left as text
                yield HeaderParser(policy=default_policy).parsestr(inner, headersonly=True)
        elif ctype == "text/rfc822-headers":
            yield HeaderParser(policy=default_policy).parsestr(decode_part(part), headersonly=True)


def _original_message_id(
    msg: EmailMessage, env: Envelope, text: str, *, replies_count: bool
) -> str | None:
    """Our Message-ID that a bounce is about; only ids in our domain are of interest."""
    candidates: list[str] = []
    for original in _original_headers(msg):
        mid = message_id(original)
        if mid:
            candidates.append(mid)
    candidates += [m.group(1) for m in _QUOTED_MSGID.finditer(text)]
    if replies_count:
        candidates += message_ids(header(msg, "In-Reply-To"))
        candidates += message_ids(header(msg, "References"))
    for mid in candidates:
        if is_our_message_id(mid, env.our_domain, strict=False):
            return mid
    return None


# -- 4. auto-replies ---------------------------------------------------------------------------

# Subjects no parent writes: an out-of-office reply's, in the languages we meet.
_AUTO_SUBJECT = re.compile(
    r"^\s*(?:\[[^\]]{0,40}\]\s*)?\[?\s*"
    r"(automatisk svar|autosvar|automatic reply|auto[- ]?reply|auto[- ]?response"
    r"|out of (?:the )?office|automatische antwort|abwesenheitsnotiz|réponse automatique)",
    re.IGNORECASE,
)
# Subjects that an out-of-office reply uses but that a parent may also write ("Fravær: Ola
# er syk"): they count only on a reply to an earlier mail, with the colon right after.
_AWAY_SUBJECT = re.compile(
    r"^\s*(fravær|fråvær|frånvaro|fraværende|ikke til stede|ikkje til stades|borte|ferie"
    r"|permisjon|absence|away|vacation|on leave)\s*:",
    re.IGNORECASE,
)
_BULK_PRECEDENCE = frozenset({"bulk", "junk", "list", "auto_reply"})
_AUTO_HEADERS = ("X-Autoreply", "X-Autorespond", "X-Autoresponse", "X-Autogenerated")
# Reports that are not bounces: read receipts (MDN) and spam complaints (ARF).
_OTHER_REPORTS = frozenset({"disposition-notification", "feedback-report"})


def auto_reply(msg: EmailMessage, env: Envelope) -> Verdict | None:
    submitted = header(msg, "Auto-Submitted").split(";")[0].strip().lower()
    if submitted and submitted != "no":
        return Verdict(Kind.AUTO_REPLY, "auto-submitted")
    for name in _AUTO_HEADERS:
        if has_header(msg, name):
            return Verdict(Kind.AUTO_REPLY, name.lower())
    if header(msg, "Precedence").strip().lower() in _BULK_PRECEDENCE:
        return Verdict(Kind.AUTO_REPLY, "precedence")
    if has_header(msg, "List-Id"):
        return Verdict(Kind.AUTO_REPLY, "list-id")
    if header(msg, "X-Loop").strip().lower() in ("yes", "true", "1"):
        return Verdict(Kind.AUTO_REPLY, "x-loop")
    is_reply = has_header(msg, "In-Reply-To") or has_header(msg, "References")
    # Exchange marks its own automatic answers so; on a reply it means one of those.
    if is_reply and has_header(msg, "X-Auto-Response-Suppress"):
        return Verdict(Kind.AUTO_REPLY, "x-auto-response-suppress")
    if msg.get_content_type() == "multipart/report":
        if str(msg.get_param("report-type") or "").lower() in _OTHER_REPORTS:
            return Verdict(Kind.AUTO_REPLY, "report")
    subject = header(msg, "Subject")
    if _AUTO_SUBJECT.match(subject):
        return Verdict(Kind.AUTO_REPLY, "subject")
    if is_reply and _AWAY_SUBJECT.match(subject):
        return Verdict(Kind.AUTO_REPLY, "away subject")
    return None


# -- 5. the null sender and the mailer daemons ------------------------------------------------

_DAEMONS = frozenset({"mailer-daemon", "postmaster", "mail-daemon", "mailerdaemon"})


def null_sender(msg: EmailMessage, env: Envelope) -> Verdict | None:
    from_locals = {a.rpartition("@")[0] for a in addresses(msg, "From")}
    daemon = bool(from_locals & _DAEMONS) or env.mail_from.rpartition("@")[0] in _DAEMONS
    if env.mail_from and not daemon:
        return None
    if daemon:
        return Verdict(Kind.BOUNCE, "mailer-daemon", bounce=_bounce(msg, env))
    # Plain `<>` without a daemon's name: a bounce only when it carries one of our
    # Message-IDs in a quoted original. Not by In-Reply-To alone, because an out-of-office
    # reply sent from <> without the usual headers would then fail a delivery.
    bounce = _bounce(msg, env, replies_count=False)
    if bounce.original_message_id:
        return Verdict(Kind.BOUNCE, "null sender", bounce=bounce)
    return Verdict(Kind.AUTO_REPLY, "null sender")


# -- 6. sender trust --------------------------------------------------------------------------


def sender_mismatch(msg: EmailMessage, env: Envelope) -> Verdict | None:
    """SPEC 5: with no trusted authserv-ids, the envelope sender must be the From address."""
    if env.trusted_authserv_ids:
        return None
    senders = addresses(msg, "From")
    if not senders or senders[0] != env.mail_from:
        return Verdict(Kind.UNTRUSTED, "envelope/from mismatch" if senders else "no from")
    return None


FILTERS: tuple[Filter, ...] = (
    dmarc_refusal,
    own_loop,
    delivery_report,
    auto_reply,
    null_sender,
    sender_mismatch,
)


def run_filters(
    msg: EmailMessage, env: Envelope, filters: tuple[Filter, ...] = FILTERS
) -> Verdict | None:
    """The first filter's verdict, or None: a message for the core."""
    for check in filters:
        verdict = check(msg, env)
        if verdict is not None:
            return verdict
    return None


def _all_headers(msg: Message, name: str) -> list[str]:
    try:
        return [str(v) for v in msg.get_all(name) or []]
    except Exception:
        return [str(v) for k, v in msg.raw_items() if k.lower() == name.lower()]
