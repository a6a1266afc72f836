"""What crosses between adapters and the core: inbound events in, outgoing sends out.

Adapters turn provider payloads into these and back; the core never sees a payload's
provider-specific shape beyond the `payload` dict it stores verbatim.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any


class Channel(StrEnum):
    SMS = "sms"
    TELEGRAM = "telegram"
    EMAIL = "email"
    API = "api"
    WEBHOOK = "webhook"  # the school's own system ([[webhooks]]), outbound only


@dataclass(frozen=True)
class InboundEvent:
    """One thing a provider handed us, before we know what it means."""

    channel: Channel
    external_id: str  # MessageSid, update_id, Message-ID + sender: the dedup key
    sender: str  # E.164 number, lower-cased e-mail address, Telegram chat id
    text: str
    received_at: datetime  # aware
    payload: dict[str, Any] = field(default_factory=dict)  # provider fields, minus the body
    media_count: int = 0  # pictures, voice notes: counted, never downloaded


@dataclass(frozen=True)
class Accepted:
    """The durable answer to an inbound event: its row id, and whether it was new."""

    event_id: int
    new: bool


class StoreUnavailable(Exception):
    """The store cannot take an event now: the provider must be told to retry (503)."""


# The core's entry point for adapters: commit the raw event, then acknowledge.
AcceptInbound = Callable[[InboundEvent], Awaitable[Accepted]]


class SendOutcome(StrEnum):
    SENT = "sent"  # the provider took it
    TRANSIENT = "transient"  # worth another try later (timeouts, 429, 5xx)
    PERMANENT = "permanent"  # never worth retrying (invalid number, unsubscribed, blocked)


@dataclass(frozen=True)
class Outgoing:
    """One delivery, rendered, as an adapter sends it."""

    delivery_id: str
    channel: Channel
    address: str
    body: str
    subject: str | None = None


@dataclass(frozen=True)
class SendResult:
    outcome: SendOutcome
    provider_id: str | None = None
    error: str | None = None  # a provider code and short reason; never the body or address
    retry_after: float | None = None  # seconds, when the provider said so
    contact_dead: bool = False  # the address itself is permanently unusable


@dataclass(frozen=True)
class StatusUpdate:
    """A provider's later word on a send: a status callback, a bounce."""

    channel: Channel
    provider_id: str
    status: str  # "sent", "delivered", "failed"
    error: str | None = None
    contact_dead: bool = False
    # Our own delivery id, when the provider hands it back (a callback URL's query):
    # it finds the delivery even before the provider's id has been recorded.
    delivery_id: str | None = None


RecordStatus = Callable[[StatusUpdate], Awaitable[None]]


TELEGRAM_MARKER = '{"telegram":'  # a delivery body starting so is rich Telegram content


def telegram_content(
    text: str,
    buttons: list[list[tuple[str, str]]] | None = None,
    *,
    request_contact: str | None = None,
    remove_keyboard: bool = False,
) -> str:
    """A Telegram delivery body with inline buttons (label, callback data) or a contact
    request button (its label); `adapters.telegram.TelegramContent.from_body` reads it."""
    doc: dict[str, Any] = {
        "text": text,
        "buttons": [
            [{"text": label, "data": data} for label, data in row] for row in buttons or []
        ],
        "remove_keyboard": remove_keyboard,
    }
    if request_contact:
        doc.update(request_contact=True, contact_button_text=request_contact)
    return json.dumps({"telegram": doc}, ensure_ascii=False, separators=(",", ":"))


MAIL_MARKER = '{"mail":'  # a delivery body starting so is rich e-mail content


def mail_content(
    *,
    to: str,
    subject: str,
    text: str,
    reply_to: str,
    from_display: str | None = None,
    auto_submitted: bool = False,
    list_unsubscribe: str | None = None,
    in_reply_to: str | None = None,
) -> str:
    """An e-mail delivery body; `adapters.mail_out.MailContent.from_json` reads it."""
    doc = {
        "to": to,
        "subject": subject,
        "text": text,
        "reply_to": reply_to,
        "from_display": from_display,
        "auto_submitted": auto_submitted,
        "list_unsubscribe": list_unsubscribe,
        "in_reply_to": in_reply_to,
    }
    return json.dumps({"mail": doc}, ensure_ascii=False, separators=(",", ":"))
