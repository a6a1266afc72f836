"""Twilio SMS transport: the inbound webhook, status callbacks, REST sends, catch-up listing.

Transport only: provider wire format <-> `bridge.domain` types. Nothing here decides what
a message means or whom it is from; that is the core's business.

Decisions worth knowing (see also the README's Twilio section):

- Signatures are checked with the twilio SDK's `RequestValidator` over
  `bridge.public_url` + the raw request path and query string. A URL fragment never
  reaches a server, so the URL without one is what we check first; because the webhook
  URL operators configure carries connection overrides (`#rc=3&rp=all`, SPEC 8), a
  signature over the URL *with* one of `SIGNED_FRAGMENTS` is accepted too. Both need the
  auth token, so accepting the second form widens nothing an attacker could use.
- Durable before acknowledged: 200 only after `accept()` returned; any exception from it
  (`StoreUnavailable` or not) is a 503 with Retry-After so that Twilio retries.
- A NUL in a field is replaced by U+FFFD: PostgreSQL cannot store it in text, and a poison
  event that 503s forever would block the catch-up listing too. Everything else (RTL
  overrides, emoji, combining marks) is kept verbatim.
- Errors and logs carry Twilio codes, SIDs and our own short reasons, never a body or a
  phone number (Twilio's own error messages often contain the number, so we drop them).
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import logging
import math
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import aiohttp
from aiohttp import web
from multidict import MultiDict
from twilio.base.exceptions import TwilioException, TwilioRestException, TwilioServiceException
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.http.response import Response as TwilioResponse
from twilio.request_validator import RequestValidator
from twilio.rest import Client

from bridge import metrics
from bridge.config import Settings
from bridge.domain import (
    AcceptInbound,
    Channel,
    InboundEvent,
    Outgoing,
    RecordStatus,
    SendOutcome,
    SendResult,
    StatusUpdate,
)

log = logging.getLogger(__name__)

SMS_PATH = "/webhooks/twilio/sms"
STATUS_PATH = "/webhooks/twilio/status"
TWILIO_API = "https://api.twilio.com"
TWIML_EMPTY = '<?xml version="1.0" encoding="UTF-8"?><Response/>'
# Twilio's forms are a few hundred bytes plus the body (at most 1600 characters, under
# 20 KB even percent-encoded four-byte characters); anything far larger is not Twilio.
MAX_FORM_BYTES = 64 * 1024
MAX_FORM_FIELDS = 200
# Fragments the operator's webhook URL may carry (README, SPEC 8) and Twilio may sign.
SIGNED_FRAGMENTS: tuple[str, ...] = ("#rc=3&rp=all",)
# Seconds we suggest to a provider while the store is down; Twilio's own retry timing
# comes from the connection overrides, this is for anything else that honours it.
STORE_RETRY_AFTER = 5
SEND_TIMEOUT_SECONDS = 15.0
_MAX_SID = 64

# Our own short reasons for the codes we meet: Twilio's messages may name the number.
REASONS: dict[int, str] = {
    20003: "authentication failed",
    20404: "not found",
    20429: "too many requests",
    20500: "Twilio internal error",
    20503: "Twilio unavailable",
    21211: "invalid To number",
    21217: "invalid phone number",
    21401: "invalid phone number",
    21407: "number type cannot receive SMS",
    21408: "region not enabled for SMS",
    21602: "empty body",
    21603: "no From number",
    21604: "no To number",
    21606: "From number cannot send to this destination",
    21608: "unverified number on a trial account",
    21610: "recipient unsubscribed (STOP)",
    21611: "sender queue full",
    21612: "To number not reachable by SMS",
    21614: "To number is not a mobile number",
    21617: "body too long",
    21635: "To number is a landline",
    30001: "queue overflow",
    30002: "account suspended",
    30003: "unreachable handset",
    30004: "message blocked",
    30005: "unknown handset",
    30006: "landline or unreachable carrier",
    30007: "carrier filtered",
    30008: "unknown error",
}
# Codes that say the address itself cannot take our SMS: the core falls back to the
# guardian's next channel. 21610 is here because, like a blocked bot, nothing reaches the
# number until the parent texts START. Not here: 30003 (phone off or out of coverage),
# 30004/30007 (blocking or filtering that may be ours), 21408 (our account's settings).
DEAD_ADDRESS_CODES = frozenset(
    {21211, 21217, 21401, 21407, 21610, 21612, 21614, 21635, 30005, 30006}
)
# 4xx answers that are about load or credentials rather than the message: worth retrying.
# 20003 (401) is here so a rotated or mistyped token costs retries, not failed messages.
TRANSIENT_CODES = frozenset({20003, 20429, 21611})

# Twilio's message statuses -> StatusUpdate.status; unlisted ones are intermediate.
STATUS_MAP = {
    "sent": "sent",
    "delivered": "delivered",
    "read": "delivered",
    "undelivered": "failed",
    "failed": "failed",
    "canceled": "failed",
}


class FetchFailed(Exception):
    """Twilio's Messages list could not be read; the message says why (code, no data)."""


# -- inbound ----------------------------------------------------------------------------


def clean_text(value: str) -> str:
    """A form value as we store it: verbatim, except NUL (see the module docstring)."""
    return value.replace("\x00", "\ufffd")


def event_from_fields(fields: Mapping[str, str], received_at: datetime) -> InboundEvent:
    """Twilio's inbound fields (webhook form names) -> InboundEvent; ValueError if unusable."""
    sid = fields.get("MessageSid", "").strip()
    sender = fields.get("From", "").strip()
    if not sid or len(sid) > _MAX_SID or not sid.isascii() or not sid.isalnum():
        raise ValueError("MessageSid missing or malformed")
    if not sender:
        raise ValueError("From missing")
    try:
        media = max(0, int(fields.get("NumMedia", "0") or "0"))
    except ValueError:
        media = 0  # the count is informative; a garbled one should not lose the text
    payload = {
        key: clean_text(fields[key])
        for key in ("To", "NumMedia", "NumSegments", "MessagingServiceSid", "AccountSid")
        if fields.get(key)
    }
    return InboundEvent(
        channel=Channel.SMS,
        external_id=sid,
        sender=clean_text(sender),
        text=clean_text(fields.get("Body", "")),
        received_at=received_at,
        payload=payload,
        media_count=media,
    )


def status_from_fields(fields: Mapping[str, str]) -> StatusUpdate | None:
    """A status callback -> StatusUpdate, or None for statuses we do not record."""
    sid = fields.get("MessageSid", "") or fields.get("SmsSid", "")
    status = (fields.get("MessageStatus", "") or fields.get("SmsStatus", "")).lower()
    if not sid or len(sid) > _MAX_SID or not sid.isascii() or not sid.isalnum():
        raise ValueError("MessageSid missing or malformed")
    mapped = STATUS_MAP.get(status)
    if mapped is None:
        return None
    error: str | None = None
    dead = False
    if mapped == "failed":
        code = _int_or_none(fields.get("ErrorCode"))
        if code is not None:
            error = f"{code}: {REASONS.get(code, status)}"
            dead = code in DEAD_ADDRESS_CODES
        else:
            error = status
    return StatusUpdate(
        channel=Channel.SMS, provider_id=sid, status=mapped, error=error, contact_dead=dead
    )


class TwilioWebhooks:
    """The two webhook handlers; `routes()` or `add_routes(app)` mounts them."""

    def __init__(
        self,
        settings: Settings,
        accept: AcceptInbound,
        record_status: RecordStatus,
        *,
        signed_fragments: tuple[str, ...] = SIGNED_FRAGMENTS,
        max_form_bytes: int = MAX_FORM_BYTES,
    ) -> None:
        # Read the secret now: a missing token is a start-up error, not a 403 per request.
        self._validator = RequestValidator(settings.secret("sms", "auth_token_env"))
        self._public_url = settings.bridge.public_url.rstrip("/")
        self._accept = accept
        self._record_status = record_status
        self._fragments = signed_fragments
        self._max_bytes = max_form_bytes

    def routes(self) -> list[web.RouteDef]:
        return [web.post(SMS_PATH, self.inbound), web.post(STATUS_PATH, self.status)]

    def add_routes(self, app: web.Application) -> None:
        app.router.add_routes(self.routes())

    async def inbound(self, request: web.Request) -> web.Response:
        started = time.monotonic()
        form = await self._verified_form(request)
        if isinstance(form, web.Response):
            return form
        try:
            event = event_from_fields(form, datetime.now(UTC))
        except ValueError as e:
            return _text(400, str(e))
        try:
            accepted = await self._accept(event)
        except Exception as e:  # anything that is not "stored" must make Twilio retry
            log.warning("sms inbound %s not stored: %s", event.external_id, type(e).__name__)
            return _unavailable()
        metrics.ack_seconds.labels(channel=Channel.SMS.value).observe(time.monotonic() - started)
        log.info(
            "sms inbound %s stored as event %s (new=%s)",
            event.external_id,
            accepted.event_id,
            accepted.new,
        )
        return web.Response(text=TWIML_EMPTY, content_type="text/xml", charset="utf-8")

    async def status(self, request: web.Request) -> web.Response:
        form = await self._verified_form(request)
        if isinstance(form, web.Response):
            return form
        try:
            update = status_from_fields(form)
        except ValueError as e:
            return _text(400, str(e))
        delivery_id = request.query.get("d", "")
        if update is not None and delivery_id.isascii() and 0 < len(delivery_id) <= 64:
            update = dataclasses.replace(update, delivery_id=delivery_id)
        if update is not None:
            try:
                await self._record_status(update)
            except Exception as e:
                log.warning("sms status %s not stored: %s", update.provider_id, type(e).__name__)
                return _unavailable()
            log.debug("sms status %s -> %s", update.provider_id, update.status)
        return web.Response(text=TWIML_EMPTY, content_type="text/xml", charset="utf-8")

    async def _verified_form(self, request: web.Request) -> MultiDict[str] | web.Response:
        """The form of a request Twilio signed, or the response that refuses it."""
        signature = request.headers.get("X-Twilio-Signature", "")
        if not signature:
            # Refuse before reading the body: unsigned requests cost us nothing.
            return _text(403, "missing signature")
        if request.content_type != "application/x-www-form-urlencoded":
            return _text(400, "expected a form (application/x-www-form-urlencoded)")
        if request.content_length is not None and request.content_length > self._max_bytes:
            return _text(413, "form too large")
        raw = bytearray()
        try:
            async for chunk in request.content.iter_chunked(16 * 1024):
                raw += chunk
                if len(raw) > self._max_bytes:
                    return _text(413, "form too large")
        except aiohttp.ClientPayloadError:  # raised by aiohttp's server for bad framing
            return _text(400, "malformed body")
        try:
            pairs = parse_qsl(
                raw.decode("utf-8"),
                keep_blank_values=True,
                strict_parsing=False,
                errors="strict",
                max_num_fields=MAX_FORM_FIELDS,
            )
        except UnicodeDecodeError:
            return _text(400, "form is not UTF-8")
        except ValueError:
            return _text(400, "too many form fields")
        form: MultiDict[str] = MultiDict(pairs)
        url = self._public_url + request.raw_path
        candidates = [url, *(url + fragment for fragment in self._fragments)]
        if not any(self._validator.validate(u, form, signature) for u in candidates):
            log.warning("twilio webhook %s: bad signature", request.path)
            return _text(403, "bad signature")
        return form


def routes(
    settings: Settings, accept: AcceptInbound, record_status: RecordStatus
) -> list[web.RouteDef]:
    """`POST /webhooks/twilio/sms` and `POST /webhooks/twilio/status`, ready to add."""
    return TwilioWebhooks(settings, accept, record_status).routes()


def _text(status: int, text: str) -> web.Response:
    return web.Response(status=status, text=text)


def _unavailable() -> web.Response:
    return web.Response(
        status=503, text="store unavailable", headers={"Retry-After": str(STORE_RETRY_AFTER)}
    )


def _int_or_none(value: str | None) -> int | None:
    try:
        return int(value) if value else None
    except ValueError:
        return None


# -- outbound ---------------------------------------------------------------------------

# Headers of the last Twilio answer within one send() call. The SDK's exceptions do not
# carry the response headers, and Retry-After lives there; a context variable keeps
# concurrent sends (each in its own task) from seeing each other's answers.
_last_headers: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "twilio_last_headers", default=None
)


class LoopbackTwilioHttpClient(AsyncTwilioHttpClient):
    """The SDK's aiohttp client, sending `https://api.twilio.com/...` to `base_url`.

    The twilio SDK has no base-URL setting; tests and the demo point `sms.api_base_url`
    at a loopback fake. It also applies `timeout` to every request: the SDK's async
    client otherwise passes `timeout=None` to aiohttp, which means no timeout at all.
    """

    def __init__(self, base_url: str, *, timeout: float = SEND_TIMEOUT_SECONDS) -> None:
        super().__init__(timeout=timeout)
        self.base_url = base_url.rstrip("/")

    def rewrite(self, url: str) -> str:
        if self.base_url == TWILIO_API:
            return url  # the real API: leave edge/region host names alone
        parts = urlsplit(url)
        rest = parts.path + (f"?{parts.query}" if parts.query else "")
        return self.base_url + rest

    async def request(
        self,
        method: str,
        url: str,
        params: dict[str, object] | None = None,
        data: dict[str, object] | None = None,
        headers: dict[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - the SDK's signature, kept as is
        allow_redirects: bool = False,
    ) -> TwilioResponse:
        if auth is not None:
            # The same Basic credentials as a header: aiohttp 3.14 deprecates `auth=`.
            headers = {**(headers or {}), "Authorization": aiohttp.encode_basic_auth(*auth)}
        response = await super().request(
            method,
            self.rewrite(url),
            params=params,
            data=data,
            headers=headers,
            auth=None,
            timeout=timeout if timeout is not None else self.timeout,
            allow_redirects=allow_redirects,
        )
        box = _last_headers.get()
        if box is not None:
            box["headers"] = response.headers
        return response


def _client(
    settings: Settings, token: str, timeout: float = SEND_TIMEOUT_SECONDS
) -> tuple[Client, LoopbackTwilioHttpClient]:
    http = LoopbackTwilioHttpClient(settings.sms.api_base_url, timeout=timeout)
    client = Client(settings.sms.account_sid, token, http_client=http)
    return client, http


def retry_after_seconds(headers: Mapping[str, Any] | None) -> float | None:
    """Retry-After (delta-seconds or an HTTP date) as seconds from now, or None."""
    if not headers:
        return None
    value = headers.get("Retry-After")
    if not value:
        return None
    value = str(value).strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - datetime.now(UTC)).total_seconds()
    if math.isnan(seconds) or math.isinf(seconds):
        return None
    return max(0.0, seconds)


def classify(exc: BaseException, headers: Mapping[str, Any] | None = None) -> SendResult:
    """The one place a failed send becomes TRANSIENT or PERMANENT (and maybe contact_dead).

    `headers` are the failed answer's headers, for Retry-After. The error text is a
    Twilio code and our short reason: never the body, the number or Twilio's message.
    """
    if isinstance(exc, TwilioRestException | TwilioServiceException):
        status = int(exc.status)
        code = _int_or_none(str(exc.code)) if exc.code is not None else None
        reason = REASONS.get(code, f"HTTP {status}") if code is not None else f"HTTP {status}"
        error = f"{code}: {reason}" if code is not None and code != status else reason
        if status == 429 or status >= 500 or (code in TRANSIENT_CODES):
            return SendResult(
                SendOutcome.TRANSIENT, error=error, retry_after=retry_after_seconds(headers)
            )
        return SendResult(
            SendOutcome.PERMANENT, error=error, contact_dead=code in DEAD_ADDRESS_CODES
        )
    if isinstance(exc, TimeoutError | aiohttp.ServerTimeoutError):
        return SendResult(SendOutcome.TRANSIENT, error="timeout")
    if isinstance(exc, aiohttp.ClientError | OSError):
        return SendResult(SendOutcome.TRANSIENT, error=f"connection error: {type(exc).__name__}")
    if isinstance(exc, TwilioException | ValueError):
        # An answer we could not read (a proxy's HTML page, a cut-off JSON): Twilio may
        # or may not have taken the message; at-least-once says try again.
        return SendResult(SendOutcome.TRANSIENT, error=f"unreadable answer: {type(exc).__name__}")
    # A bug of ours: retries end in "dead", which an operator sees and can retry.
    return SendResult(SendOutcome.TRANSIENT, error=f"internal error: {type(exc).__name__}")


class TwilioSender:
    """Sends `Outgoing` SMS through the real twilio SDK; one instance per process."""

    def __init__(self, settings: Settings, *, timeout: float = SEND_TIMEOUT_SECONDS) -> None:
        self._settings = settings
        self._token = settings.secret("sms", "auth_token_env")  # fail at start-up
        self._timeout = timeout
        self._status_callback = settings.bridge.public_url.rstrip("/") + STATUS_PATH
        self._client: Client | None = None
        self._http: LoopbackTwilioHttpClient | None = None

    def _get_client(self) -> Client:
        # Built on first use: the SDK's aiohttp session must be made inside the event loop.
        if self._client is None:
            self._client, self._http = _client(self._settings, self._token, self._timeout)
        return self._client

    async def send(self, out: Outgoing) -> SendResult:
        sms = self._settings.sms
        sender: dict[str, str] = (
            {"messaging_service_sid": sms.messaging_service_sid}
            if sms.messaging_service_sid
            else {"from_": sms.from_number}
        )
        box: dict[str, Any] = {}
        token = _last_headers.set(box)
        try:
            message = await self._get_client().messages.create_async(
                to=out.address,
                body=out.body,
                # Our delivery id rides along, so a callback that overtakes our own
                # bookkeeping of the provider's id still finds its delivery.
                status_callback=f"{self._status_callback}?{urlencode({'d': out.delivery_id})}",
                **sender,
            )
        except asyncio.CancelledError:
            raise
        except Exception as e:
            result = classify(e, box.get("headers"))
            log.warning(
                "sms delivery %s: %s (%s)", out.delivery_id, result.outcome.value, result.error
            )
            return result
        finally:
            _last_headers.reset(token)
        log.info("sms delivery %s sent as %s", out.delivery_id, message.sid)
        return SendResult(SendOutcome.SENT, provider_id=message.sid)

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
        self._client = self._http = None


# -- catch-up ---------------------------------------------------------------------------


async def fetch_recent(settings: Settings, since: datetime) -> list[InboundEvent]:
    """Inbound SMS Twilio received since `since`, oldest first, for the core to take in
    those it does not have (SPEC 8). Raises FetchFailed when Twilio cannot be read.

    With a messaging service every inbound message of that service counts; otherwise
    those sent to `sms.from_number`. The date filter is applied here as well, since
    Twilio documents only day precision for `DateSent>`.
    """
    since = since.astimezone(UTC) if since.tzinfo else since.replace(tzinfo=UTC)
    sms = settings.sms
    client, http = _client(settings, settings.secret("sms", "auth_token_env"))
    events: list[InboundEvent] = []
    try:
        filters: dict[str, Any] = {"date_sent_after": since, "page_size": 100}
        if not sms.messaging_service_sid:
            filters["to"] = sms.from_number
        stream = await client.messages.stream_async(**filters)
        async for message in stream:
            if message.direction != "inbound":
                continue
            if sms.messaging_service_sid and message.messaging_service_sid not in (
                sms.messaging_service_sid,
                None,
            ):
                continue
            received = message.date_created or message.date_sent
            if isinstance(received, datetime) and received < since:
                continue
            fields = {
                "MessageSid": message.sid or "",
                "From": message.from_ or "",
                "Body": message.body or "",
                "To": message.to or "",
                "NumMedia": str(message.num_media or "0"),
                "NumSegments": str(message.num_segments or ""),
                "MessagingServiceSid": message.messaging_service_sid or "",
                "AccountSid": message.account_sid or "",
            }
            try:
                events.append(
                    event_from_fields(
                        fields, received if isinstance(received, datetime) else datetime.now(UTC)
                    )
                )
            except ValueError:
                log.warning("sms catch-up: skipped an unusable message %s", message.sid)
    except (TwilioRestException, TwilioServiceException) as e:
        raise FetchFailed(f"Twilio answered {e.status} (code {e.code})") from None
    except TwilioException as e:  # Page.process_response: a non-200 page
        raise FetchFailed(f"Twilio list unreadable: {type(e).__name__}") from None
    except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as e:
        raise FetchFailed(f"Twilio unreachable: {type(e).__name__}") from None
    finally:
        await http.close()
    # Twilio lists newest first and its dates have whole seconds: reverse, then a stable
    # sort keeps arrival order within a second.
    events.reverse()
    events.sort(key=lambda e: e.received_at)
    log.info("sms catch-up: %d inbound messages since %s", len(events), since.isoformat())
    return events
