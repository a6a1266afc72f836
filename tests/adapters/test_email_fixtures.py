"""Real mail shapes in `tests/data/eml/`, each beside `<name>.expect.json`: what it is.

Each case runs twice: through `analyse()` directly, and over real SMTP into a running
`MailListener` (aiosmtplib client, CRLF and dot-stuffing on the wire), where a message
must reach `accept()` with the same text and everything else must not.

An expectation holds `kind` (message, auto_reply, bounce, loop, untrusted), `reason`,
`sender`, `subject`, `text` (decoded, quotes kept) and, for messages, `stripped` (what
`bridge.email_reply.strip_reply` keeps), `message_id`, `media_count`, `attachments`; for
bounces, `bounce`. `envelope_from` overrides the SMTP sender (default: the From address).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiosmtplib
import pytest

from adapters.mail_filters import Envelope, Kind
from adapters.mail_in import MailListener, analyse, summarize
from adapters.mail_parse import parse_mail
from bridge.config import EmailSettings, Settings
from bridge.domain import Accepted, Channel, InboundEvent, StatusUpdate

DATA = Path(__file__).resolve().parent.parent / "data" / "eml"
REPLY = "r-k7q2m9x4tb@svar.example.kommune.no"
OUR_DOMAIN = "example.kommune.no"


def load(path: Path) -> dict[str, Any]:
    expect: dict[str, Any] = json.loads(path.with_suffix(".expect.json").read_text("utf-8"))
    return expect


EXPECTED = {p.stem: (p, load(p)) for p in sorted(DATA.glob("*.eml"))}
CASES = [pytest.param(path, expect, id=name) for name, (path, expect) in EXPECTED.items()]
MESSAGES = [
    pytest.param(path, expect, id=name)
    for name, (path, expect) in EXPECTED.items()
    if expect["kind"] == "message"
]

try:
    from bridge.email_reply import strip_reply
except ImportError:  # pragma: no cover - the trimmer lives in the core, written separately
    strip_reply = None  # type: ignore[assignment]


def envelope_from(expect: dict[str, Any]) -> str:
    return str(expect.get("envelope_from", expect["sender"] or ""))


def test_the_corpus_is_big_enough() -> None:
    assert len(EXPECTED) >= 25
    kinds = {expect["kind"] for _, expect in EXPECTED.values()}
    assert kinds == {"message", "auto_reply", "bounce", "loop", "untrusted"}


@pytest.mark.parametrize(("path", "expect"), CASES)
def test_fixture(path: Path, expect: dict[str, Any]) -> None:
    raw = path.read_bytes()
    env = Envelope(mail_from=envelope_from(expect), rcpt_tos=(REPLY,), our_domain=OUR_DOMAIN)
    analysis = analyse(raw, env, datetime(2026, 11, 26, 7, 30, tzinfo=UTC))
    summary = summarize(parse_mail(raw), raw)

    assert analysis.kind == expect["kind"]
    assert analysis.reason == expect["reason"]
    assert summary.sender == expect["sender"]
    assert summary.subject == expect["subject"]
    assert summary.text == expect["text"]
    assert "\x00" not in summary.text
    if expect["kind"] == "message":
        (event,) = analysis.events
        assert event.channel == Channel.EMAIL
        assert event.sender == expect["sender"]
        assert event.text == expect["text"]
        assert event.external_id == f"{expect['message_id']}|{expect['sender']}|{REPLY}"
        assert event.media_count == expect["media_count"]
        assert event.payload["to"] == REPLY
        assert event.payload["subject"] == expect["subject"]
        assert event.payload["message_id"] == expect["message_id"]
        assert event.payload["in_reply_to"] == expect.get("in_reply_to")
        assert event.payload["attachments"] == expect.get("attachments", [])
        assert json.loads(json.dumps(event.payload)) == event.payload  # storable as JSON
    else:
        assert analysis.events == ()
    if "bounce" in expect:
        bounce = analysis.bounce
        assert bounce is not None
        assert {
            "message_id": bounce.original_message_id,
            "action": bounce.action,
            "status": bounce.status,
            "failed_recipient": bounce.failed_recipient,
            "contact_dead": bounce.contact_dead,
        } == expect["bounce"]


@pytest.mark.skipif(strip_reply is None, reason="bridge.email_reply is not there yet")
@pytest.mark.parametrize(("path", "expect"), MESSAGES)
def test_fixture_new_text(path: Path, expect: dict[str, Any]) -> None:
    """The core's trimmer on what the adapter hands it: the parent's words, no quote."""
    assert strip_reply is not None
    assert strip_reply(expect["text"]) == expect["stripped"]


# -- the same cases over SMTP ----------------------------------------------------------------


class Core:
    """The core as the listener sees it: stores events, records statuses, knows tokens."""

    def __init__(self) -> None:
        self.events: dict[str, InboundEvent] = {}
        self.statuses: list[StatusUpdate] = []

    async def accept(self, event: InboundEvent) -> Accepted:
        new = event.external_id not in self.events
        self.events.setdefault(event.external_id, event)
        return Accepted(event_id=len(self.events), new=new)

    async def record_status(self, update: StatusUpdate) -> None:
        self.statuses.append(update)

    async def recipient_ok(self, address: str) -> bool:
        return address == REPLY


@pytest.fixture
async def listener() -> AsyncIterator[tuple[MailListener, Core]]:
    core = Core()
    settings = Settings(email=replace(EmailSettings(), enabled=True, listen_port=0))
    server = MailListener(settings, core.accept, core.record_status, core.recipient_ok)
    await server.start()
    yield server, core
    await server.stop()


@pytest.mark.parametrize(("path", "expect"), CASES)
async def test_fixture_over_smtp(
    listener: tuple[MailListener, Core], path: Path, expect: dict[str, Any]
) -> None:
    server, core = listener
    raw = path.read_bytes()  # noqa: ASYNC240 - a small fixture file
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=server.port, start_tls=False) as smtp:
        # aiosmtplib writes the null sender `<>` for "".
        errors, reply = await smtp.sendmail(envelope_from(expect), [REPLY], raw)
    assert errors == {}
    assert reply.startswith("2.0.0")
    if expect["kind"] == "message":
        (event,) = core.events.values()
        assert event.text == expect["text"]
        assert event.payload["subject"] == expect["subject"]
    else:
        assert core.events == {}
    if expect["kind"] == Kind.BOUNCE and expect["bounce"]["action"] == "failed":
        (status,) = core.statuses
        assert status.provider_id == expect["bounce"]["message_id"]
        assert status.status == "failed"
        assert status.contact_dead == expect["bounce"]["contact_dead"]
        assert status.error is not None and "@" not in status.error
    else:
        assert core.statuses == []
