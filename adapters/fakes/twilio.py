"""A loopback stand-in for Twilio's Messages API and its webhooks.

It is a real aiohttp server on 127.0.0.1 that speaks Twilio's wire format, so the real
twilio SDK, the real `RequestValidator` and the adapter's real HTTP handlers are what the
tests exercise:

- REST: `POST/GET /2010-04-01/Accounts/{AccountSid}/Messages.json` and
  `GET .../Messages/{Sid}.json`, HTTP Basic auth, Twilio's JSON shapes and error bodies.
- Status callbacks: signed form POSTs `queued -> sent -> delivered` (or `failed` /
  `undelivered` with an `ErrorCode`) to each message's `StatusCallback`, in order.
- Inbound: `send_inbound()` records a received message (so the Messages list shows it,
  as Twilio's does even when the webhook never got through) and POSTs a signed webhook,
  honouring the connection overrides (`#rc=3&rp=all`) in the webhook URL's fragment.

Knobs are plain attributes and methods: `fail_next()`, `mark_invalid()`,
`mark_unsubscribed()`, `mark_not_mobile()`, `set_outcome()`, `delay_seconds`,
`callback_delay`, `retry_delay`; and records for assertions: `sent`, `callbacks`,
`webhook_attempts`, `messages`.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from email.utils import format_datetime
from typing import Any
from urllib.parse import parse_qsl, urldefrag, urlencode

import aiohttp
from aiohttp import web
from twilio.request_validator import RequestValidator

from adapters.fakes.base import LoopbackFake

API_VERSION = "2010-04-01"
MORE_INFO = "https://www.twilio.com/docs/errors/{code}"
_E164 = re.compile(r"^\+[1-9]\d{6,14}$")
# GSM 03.38 basic set plus the extension table (extension characters take two septets).
_GSM_BASIC = set(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM_EXT = set("^{}\\[~]|€\f")
_FAIL_TEXT = {
    400: "Bad Request",
    401: "Authenticate",
    404: "The requested resource was not found",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
}
_DEFAULT_CODES = {401: 20003, 404: 20404, 429: 20429, 500: 20500, 503: 20503}


def new_sid(prefix: str = "SM") -> str:
    """A Twilio-shaped SID: two letters and 32 lower-case hex digits."""
    return prefix + secrets.token_hex(16)


def rfc2822(when: datetime | None) -> str | None:
    """Twilio's date format: `Thu, 24 Aug 2023 05:01:45 +0000`."""
    if when is None:
        return None
    return format_datetime(when.astimezone(UTC).replace(microsecond=0))


def num_segments(body: str) -> int:
    """How many SMS segments Twilio would bill for this body (GSM-7 or UCS-2)."""
    if all(c in _GSM_BASIC or c in _GSM_EXT for c in body):
        septets = sum(2 if c in _GSM_EXT else 1 for c in body)
        return 1 if septets <= 160 else math.ceil(septets / 153)
    units = len(body.encode("utf-16-le")) // 2  # UCS-2 counts UTF-16 code units
    return 1 if units <= 70 else math.ceil(units / 67)


def country_of(number: str) -> str:
    """A rough FromCountry/ToCountry for the numbers the tests use."""
    for prefix, country in (("+47", "NO"), ("+46", "SE"), ("+45", "DK"), ("+44", "GB")):
        if number.startswith(prefix):
            return country
    return "US" if number.startswith("+1") else ""


@dataclass
class SentMessage:
    """One message the fake accepted through its REST API, as tests assert on it."""

    sid: str
    to: str
    from_: str | None
    body: str
    status_callback: str | None
    messaging_service_sid: str | None = None


@dataclass
class CallbackRecord:
    """One status-callback POST the fake made (the last attempt's answer)."""

    url: str
    params: dict[str, str]
    status: int  # HTTP status of the last attempt; 0 when no HTTP answer came


@dataclass
class WebhookAttempt:
    url: str
    status: int  # 0: connection error or timeout
    error: str | None = None


@dataclass
class _Failure:
    status: int
    code: int
    message: str
    retry_after: str | None
    to: str | None
    remaining: int
    on: str


@dataclass
class _Overrides:
    """Twilio's connection overrides, from a URL fragment like `#rc=3&rp=all`."""

    retries: int = 1
    policy: frozenset[str] = frozenset({"ct"})
    connect_timeout: float = 5.0
    read_timeout: float = 15.0
    total_timeout: float = 15.0

    @classmethod
    def parse(cls, fragment: str, default_retries: int = 1) -> _Overrides:
        o = cls(retries=default_retries)
        for key, value in parse_qsl(fragment, keep_blank_values=True):
            try:
                if key == "rc":
                    o.retries = max(0, min(5, int(value)))
                elif key == "rp":
                    parts = {p.strip() for p in value.split(",") if p.strip()}
                    o.policy = frozenset({"4xx", "5xx", "ct", "rt"} if "all" in parts else parts)
                elif key == "ct":
                    o.connect_timeout = int(value) / 1000
                elif key == "rt":
                    o.read_timeout = int(value) / 1000
                elif key == "tt":
                    o.total_timeout = int(value) / 1000
            except ValueError:
                continue  # Twilio ignores an override it cannot read
        return o


@dataclass
class _Record:
    """A message resource as the fake stores it (both directions)."""

    sid: str
    direction: str
    from_: str | None
    to: str
    body: str
    status: str
    created: datetime
    seq: int
    num_media: int = 0
    messaging_service_sid: str | None = None
    sent_at: datetime | None = None
    updated: datetime | None = None
    error_code: int | None = None
    status_callback: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class FakeTwilio(LoopbackFake):
    """Twilio's Messages API and webhooks on loopback; see the module docstring."""

    def __init__(
        self,
        account_sid: str,
        auth_token: str,
        *,
        webhook_url: str | None = None,
        phone_number: str = "+4759440000",
        messaging_service_sid: str | None = None,
        callback_delay: float = 0.01,
        callback_retries: int = 3,
        retry_delay: float = 0.02,
        sign_with_fragment: bool = False,
    ) -> None:
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.webhook_url = webhook_url  # inbound messages go here (may carry #rc=...)
        self.phone_number = phone_number
        self.messaging_service_sid = messaging_service_sid
        self.callback_delay = callback_delay  # seconds between successive status callbacks
        self.callback_retries = callback_retries  # on connection errors, without a fragment
        self.retry_delay = retry_delay  # seconds between webhook/callback retries
        # Which URL the signature covers when the webhook URL has a fragment: without it
        # (what reaches the server) by default; True to sign the URL as configured.
        self.sign_with_fragment = sign_with_fragment
        self.delay_seconds = 0.0  # latency added to every REST answer
        self.create_requests = 0  # send requests received, whatever they were answered
        self.sent: list[SentMessage] = []
        self.callbacks: list[CallbackRecord] = []
        self.webhook_attempts: list[WebhookAttempt] = []
        self._validator = RequestValidator(auth_token)
        self._records: list[_Record] = []
        self._failures: list[_Failure] = []
        self._invalid: set[str] = set()
        self._unsubscribed: set[str] = set()
        self._not_mobile: set[str] = set()
        self._outcomes: dict[str, tuple[str, int | None]] = {}
        self._seq = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._port = 0

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application()
        prefix = f"/{API_VERSION}/Accounts/{{account}}/Messages"
        app.router.add_post(prefix + ".json", self._create)
        app.router.add_get(prefix + ".json", self._list)
        app.router.add_get(prefix + "/{sid}.json", self._fetch)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self._port = int(self._runner.addresses[0][1])
        self._session = aiohttp.ClientSession()

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def base_url(self) -> str:
        """What `[sms] api_base_url` points at: the replacement for https://api.twilio.com."""
        if not self._port:
            raise RuntimeError("FakeTwilio is not started")
        return f"http://127.0.0.1:{self._port}"

    # -- knobs -----------------------------------------------------------------------

    def fail_next(
        self,
        n: int = 1,
        *,
        status: int = 500,
        code: int | None = None,
        message: str | None = None,
        retry_after: float | str | None = None,
        to: str | None = None,
        on: str = "create",
    ) -> None:
        """Answer the next `n` matching requests (`on` "create" or "list") with an error.

        `to` limits it to sends to that number; `retry_after` adds a Retry-After header.
        """
        self._failures.append(
            _Failure(
                status=status,
                code=code if code is not None else _DEFAULT_CODES.get(status, status),
                message=message or _FAIL_TEXT.get(status, "Error"),
                retry_after=None if retry_after is None else str(retry_after),
                to=to,
                remaining=n,
                on=on,
            )
        )

    def clear_failures(self) -> None:
        """Forget the failures `fail_next` queued that have not happened yet."""
        self._failures.clear()

    def mark_invalid(self, number: str) -> None:
        """Sends to `number` get 400 / 21211 (invalid 'To' number)."""
        self._invalid.add(number)

    def mark_unsubscribed(self, number: str) -> None:
        """Sends to `number` get 400 / 21610 (the recipient texted STOP to Twilio)."""
        self._unsubscribed.add(number)

    def mark_not_mobile(self, number: str) -> None:
        """Sends to `number` get 400 / 21614 (not a mobile number)."""
        self._not_mobile.add(number)

    def set_outcome(self, number: str, status: str, error_code: int | None = None) -> None:
        """How delivery to `number` ends: "delivered", "undelivered" or "failed"."""
        if status not in ("delivered", "undelivered", "failed"):
            raise ValueError(status)
        self._outcomes[number] = (status, error_code)

    def signature(self, url: str, params: Mapping[str, str] | Sequence[tuple[str, str]]) -> str:
        """X-Twilio-Signature for a POST of `params` to `url`, as Twilio computes it."""
        return self._validator.compute_signature(url, dict(params))

    @property
    def messages(self) -> list[dict[str, Any]]:
        """Every message resource (both directions), newest first, in Twilio's JSON shape."""
        return [self._json(r) for r in self._ordered()]

    async def drain(self, limit_seconds: float = 5.0) -> None:
        """Wait until every status callback scheduled so far has been delivered or given up."""
        if self._tasks:
            async with asyncio.timeout(limit_seconds):
                await asyncio.gather(*list(self._tasks))

    # -- inbound ---------------------------------------------------------------------

    def inbound_form(
        self,
        from_: str,
        to: str,
        body: str,
        *,
        media: int = 0,
        sid: str | None = None,
        messaging_service_sid: str | None = None,
    ) -> dict[str, str]:
        """The form Twilio posts to an incoming-message webhook, field for field."""
        sid = sid or new_sid("MM" if media else "SM")
        form: dict[str, str] = {
            "ToCountry": country_of(to),
            "ToState": "",
            "SmsMessageSid": sid,
            "NumMedia": str(media),
            "ToCity": "",
            "FromZip": "",
            "SmsSid": sid,
            "FromState": "",
            "SmsStatus": "received",
            "FromCity": "",
            "Body": body,
            "FromCountry": country_of(from_),
            "To": to,
            "ToZip": "",
            "NumSegments": str(num_segments(body)),
            "MessageSid": sid,
            "AccountSid": self.account_sid,
            "From": from_,
            "ApiVersion": API_VERSION,
        }
        if messaging_service_sid or self.messaging_service_sid:
            form["MessagingServiceSid"] = str(messaging_service_sid or self.messaging_service_sid)
        for i in range(media):
            form[f"MediaContentType{i}"] = "image/jpeg"
            form[f"MediaUrl{i}"] = (
                f"https://api.twilio.com/{API_VERSION}/Accounts/{self.account_sid}"
                f"/Messages/{sid}/Media/{new_sid('ME')}"
            )
        return form

    async def send_inbound(
        self,
        from_: str,
        to: str,
        body: str,
        *,
        media: int = 0,
        sid: str | None = None,
        messaging_service_sid: str | None = None,
        bad_signature: bool = False,
        unsigned: bool = False,
        url: str | None = None,
    ) -> tuple[int, str]:
        """A parent texts `body` from `from_` to `to`: record it, then POST the webhook.

        Returns the last attempt's (HTTP status, body text); status 0 means no HTTP answer
        (connection refused, timeout) or no webhook URL. The message is listed by GET
        Messages.json whatever the webhook answered, as Twilio's own log keeps it.
        """
        form = self.inbound_form(
            from_, to, body, media=media, sid=sid, messaging_service_sid=messaging_service_sid
        )
        now = datetime.now(UTC)
        self._add(
            _Record(
                sid=form["MessageSid"],
                direction="inbound",
                from_=from_,
                to=to,
                body=body,
                status="received",
                created=now,
                seq=0,
                num_media=media,
                messaging_service_sid=form.get("MessagingServiceSid"),
                sent_at=now,
                updated=now,
            )
        )
        target = url or self.webhook_url
        if not target:
            return 0, "no webhook URL"
        signature: str | None
        if unsigned:
            signature = None
        elif bad_signature:
            signature = self.signature(target + "/wrong", form)
        else:
            signature = self.signature(self._signed_url(target), form)
        status, text = await self._post(target, form, signature, default_retries=1)
        return status, text

    async def post_form(
        self,
        url: str,
        params: Mapping[str, str] | Sequence[tuple[str, str]],
        *,
        signature: str | None = None,
        sign: bool = True,
    ) -> tuple[int, str]:
        """One signed (or, with sign=False, `signature`-as-given) form POST, no retries."""
        pairs = list(params.items()) if isinstance(params, Mapping) else list(params)
        if sign and signature is None:
            signature = self._validator.compute_signature(self._signed_url(url), _multi(pairs))
        status, text, _ = await self._attempt(url, pairs, signature, _Overrides(retries=0))
        return status, text

    # -- REST handlers ---------------------------------------------------------------

    async def _create(self, request: web.Request) -> web.Response:
        self.create_requests += 1
        await self._latency()
        denied = self._authenticate(request)
        if denied is not None:
            return denied
        form = await request.post()
        to = str(form.get("To", ""))
        failure = self._take_failure("create", to)
        if failure is not None:
            return failure
        from_ = str(form.get("From", "")) or None
        service = str(form.get("MessagingServiceSid", "")) or None
        body = str(form.get("Body", ""))
        callback = str(form.get("StatusCallback", "")) or None
        if not to:
            return self._error(400, 21604, "A 'To' phone number is required.")
        if not from_ and not service:
            return self._error(400, 21603, "A 'From' phone number is required.")
        if not body and "MediaUrl" not in form and "ContentSid" not in form:
            return self._error(400, 21602, "Message body is required.")
        if len(body) > 1600:
            return self._error(
                400, 21617, "The concatenated message body exceeds the 1600 character limit."
            )
        # Twilio's real messages name the number; the adapter must not copy them anywhere.
        if not _E164.match(to) or to in self._invalid:
            return self._error(400, 21211, f"The 'To' number {to} is not a valid phone number.")
        if to in self._unsubscribed:
            return self._error(400, 21610, "Attempt to send to unsubscribed recipient")
        if to in self._not_mobile:
            return self._error(400, 21614, f"'To' number {to} is not a valid mobile number")
        now = datetime.now(UTC)
        record = _Record(
            sid=new_sid("SM"),
            direction="outbound-api",
            from_=from_,
            to=to,
            body=body,
            status="queued" if from_ else "accepted",
            created=now,
            seq=0,
            messaging_service_sid=service,
            updated=now,
            status_callback=callback,
        )
        self._add(record)
        self.sent.append(
            SentMessage(
                sid=record.sid,
                to=to,
                from_=from_,
                body=body,
                status_callback=callback,
                messaging_service_sid=service,
            )
        )
        self._spawn(self._lifecycle(record))
        return web.json_response(self._json(record), status=201)

    async def _list(self, request: web.Request) -> web.Response:
        await self._latency()
        denied = self._authenticate(request)
        if denied is not None:
            return denied
        failure = self._take_failure("list", None)
        if failure is not None:
            return failure
        q = request.query
        try:
            page_size = max(1, min(1000, int(q.get("PageSize", "50"))))
            page = max(0, int(q.get("Page", "0")))
            after = _date_filter(q.get("DateSent>"), lower=True)
            before = _date_filter(q.get("DateSent<"), lower=False)
            exact = _date_filter(q.get("DateSent"), lower=True)
        except ValueError:
            return self._error(400, 20001, "Invalid value for a query parameter")
        rows = self._ordered()
        if "To" in q:
            rows = [r for r in rows if r.to == q["To"]]
        if "From" in q:
            rows = [r for r in rows if r.from_ == q["From"]]
        if after or before or exact:
            rows = [r for r in rows if r.sent_at is not None]
        if after:
            rows = [r for r in rows if r.sent_at and r.sent_at >= after]
        if before:
            rows = [r for r in rows if r.sent_at and r.sent_at < before]
        if exact:
            day_end = exact + timedelta(days=1)
            rows = [r for r in rows if r.sent_at and exact <= r.sent_at < day_end]
        token = q.get("PageToken", "")
        if token.startswith("PA"):
            # A token names the last row of the previous page, so paging stays stable
            # while new messages arrive at the head of the list.
            sids = [r.sid for r in rows]
            start = sids.index(token[2:]) + 1 if token[2:] in sids else len(rows)
        else:
            start = page * page_size
        chunk = rows[start : start + page_size]
        filters = [(k, v) for k, v in q.items() if k not in ("PageSize", "Page", "PageToken")]
        base = f"/{API_VERSION}/Accounts/{self.account_sid}/Messages.json"

        def uri(page_no: int, token: str | None = None) -> str:
            params = [*filters, ("PageSize", str(page_size)), ("Page", str(page_no))]
            if token:
                params.append(("PageToken", token))
            return f"{base}?{urlencode(params)}"

        has_more = start + page_size < len(rows)
        payload = {
            "first_page_uri": uri(0),
            "end": start + len(chunk) - 1 if chunk else start,
            "previous_page_uri": uri(page - 1) if page > 0 else None,
            "messages": [self._json(r) for r in chunk],
            "uri": uri(page, token or None),
            "page_size": page_size,
            "start": start,
            "next_page_uri": uri(page + 1, "PA" + chunk[-1].sid) if has_more and chunk else None,
            "page": page,
        }
        return web.json_response(payload)

    async def _fetch(self, request: web.Request) -> web.Response:
        await self._latency()
        denied = self._authenticate(request)
        if denied is not None:
            return denied
        for record in self._records:
            if record.sid == request.match_info["sid"]:
                return web.json_response(self._json(record))
        return self._error(404, 20404, "The requested resource was not found")

    # -- internals -------------------------------------------------------------------

    def _authenticate(self, request: web.Request) -> web.Response | None:
        expected = aiohttp.encode_basic_auth(self.account_sid, self.auth_token)
        given = request.headers.get("Authorization", "")
        if not secrets.compare_digest(given.encode(), expected.encode()):
            return self._error(
                401, 20003, "Authenticate", headers={"WWW-Authenticate": 'Basic realm="Twilio API"'}
            )
        if request.match_info["account"] != self.account_sid:
            return self._error(404, 20404, "The requested resource was not found")
        return None

    def _take_failure(self, on: str, to: str | None) -> web.Response | None:
        for failure in self._failures:
            if failure.on != on or failure.remaining <= 0:
                continue
            if failure.to is not None and failure.to != to:
                continue
            failure.remaining -= 1
            headers = {"Retry-After": failure.retry_after} if failure.retry_after else None
            return self._error(failure.status, failure.code, failure.message, headers=headers)
        return None

    @staticmethod
    def _error(
        status: int, code: int, message: str, *, headers: Mapping[str, str] | None = None
    ) -> web.Response:
        body = {
            "code": code,
            "message": message,
            "more_info": MORE_INFO.format(code=code),
            "status": status,
        }
        return web.json_response(body, status=status, headers=headers)

    async def _latency(self) -> None:
        if self.delay_seconds > 0:
            await asyncio.sleep(self.delay_seconds)

    def _add(self, record: _Record) -> None:
        self._seq += 1
        record.seq = self._seq
        self._records.append(record)

    def _ordered(self) -> list[_Record]:
        # Twilio lists newest first.
        return sorted(self._records, key=lambda r: (r.sent_at or r.created, r.seq), reverse=True)

    def _json(self, r: _Record) -> dict[str, Any]:
        uri = f"/{API_VERSION}/Accounts/{self.account_sid}/Messages/{r.sid}"
        return {
            "account_sid": self.account_sid,
            "api_version": API_VERSION,
            "body": r.body,
            "date_created": rfc2822(r.created),
            "date_sent": rfc2822(r.sent_at),
            "date_updated": rfc2822(r.updated or r.created),
            "direction": r.direction,
            "error_code": r.error_code,
            "error_message": None,
            "from": r.from_,
            "messaging_service_sid": r.messaging_service_sid,
            "num_media": str(r.num_media),
            "num_segments": str(num_segments(r.body)),
            "price": None,
            "price_unit": "USD",
            "sid": r.sid,
            "status": r.status,
            "subresource_uris": {
                "media": f"{uri}/Media.json",
                "feedback": f"{uri}/Feedback.json",
            },
            "to": r.to,
            "uri": f"{uri}.json",
        }

    def _spawn(self, coro: Any) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _lifecycle(self, record: _Record) -> None:
        """Move an accepted message through its statuses, calling back after each one."""
        final, error_code = self._outcomes.get(record.to, ("delivered", None))
        steps = ["queued", "failed"] if final == "failed" else ["queued", "sent", final]
        if record.from_ is None:
            record.from_ = self.phone_number  # a messaging service picks the sender
        for step in steps:
            await asyncio.sleep(self.callback_delay)
            now = datetime.now(UTC)
            record.status = step
            record.updated = now
            if step == "sent":
                record.sent_at = now
            if step in ("failed", "undelivered"):
                record.error_code = error_code or 30008
            if record.status_callback:
                await self._status_callback(record, now)

    async def _status_callback(self, record: _Record, now: datetime) -> None:
        assert record.status_callback is not None
        params: dict[str, str] = {
            "SmsSid": record.sid,
            "SmsStatus": record.status,
            "MessageStatus": record.status,
            "To": record.to,
            "MessageSid": record.sid,
            "AccountSid": self.account_sid,
            "From": record.from_ or "",
            "ApiVersion": API_VERSION,
        }
        if record.messaging_service_sid:
            params["MessagingServiceSid"] = record.messaging_service_sid
        if record.error_code is not None:
            params["ErrorCode"] = str(record.error_code)
        if record.status == "delivered":
            params["RawDlrDoneDate"] = now.strftime("%y%m%d%H%M")
        url = record.status_callback
        signature = self.signature(self._signed_url(url), params)
        status, _ = await self._post(url, params, signature, default_retries=self.callback_retries)
        self.callbacks.append(CallbackRecord(url=url, params=params, status=status))

    def _signed_url(self, url: str) -> str:
        return url if self.sign_with_fragment else urldefrag(url).url

    async def _post(
        self, url: str, params: Mapping[str, str], signature: str | None, *, default_retries: int
    ) -> tuple[int, str]:
        """POST with Twilio's retry rules: `rc` more tries for the failures `rp` names."""
        overrides = _Overrides.parse(urldefrag(url).fragment, default_retries)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + overrides.total_timeout
        status, text = 0, ""
        for attempt in range(overrides.retries + 1):
            if attempt:
                await asyncio.sleep(self.retry_delay)
            status, text, kind = await self._attempt(
                url, list(params.items()), signature, overrides
            )
            if kind is None or kind not in overrides.policy or loop.time() >= deadline:
                break
        return status, text

    async def _attempt(
        self,
        url: str,
        pairs: list[tuple[str, str]],
        signature: str | None,
        overrides: _Overrides,
    ) -> tuple[int, str, str | None]:
        """One POST; returns (status, text, retry class: "4xx"/"5xx"/"ct"/"rt" or None)."""
        assert self._session is not None, "FakeTwilio is not started"
        headers = {
            "User-Agent": "TwilioProxy/1.1",
            "Content-Type": "application/x-www-form-urlencoded",
            "I-Twilio-Idempotency-Token": secrets.token_hex(16),
        }
        if signature is not None:
            headers["X-Twilio-Signature"] = signature
        target = urldefrag(url).url  # a fragment never goes on the wire
        timeout = aiohttp.ClientTimeout(
            total=overrides.total_timeout,
            sock_connect=overrides.connect_timeout,
            sock_read=overrides.read_timeout,
        )
        try:
            async with self._session.post(
                target, data=urlencode(pairs), headers=headers, timeout=timeout
            ) as resp:
                text = await resp.text(errors="replace")
                status = resp.status
        except (TimeoutError, aiohttp.ServerTimeoutError) as e:
            self.webhook_attempts.append(WebhookAttempt(url, 0, type(e).__name__))
            return 0, "timeout", "rt"
        except aiohttp.ClientError as e:
            self.webhook_attempts.append(WebhookAttempt(url, 0, type(e).__name__))
            return 0, f"connection error: {type(e).__name__}", "ct"
        self.webhook_attempts.append(WebhookAttempt(url, status))
        kind = "5xx" if status >= 500 else "4xx" if status >= 400 else None
        return status, text, kind


def _multi(pairs: list[tuple[str, str]]) -> dict[str, str]:
    # RequestValidator takes a plain dict; Twilio never repeats a key in its forms.
    return dict(pairs)


def _date_filter(value: str | None, *, lower: bool) -> datetime | None:
    """A DateSent filter value -> the bound it sets (dates cover their whole UTC day)."""
    if value is None or value == "":
        return None
    if len(value) == 10:
        day = date.fromisoformat(value)
        start = datetime(day.year, day.month, day.day, tzinfo=UTC)
        return start if lower else start + timedelta(days=1)
    when = datetime.fromisoformat(value)
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    # An upper bound with a time is inclusive to the second.
    return when if lower else when + timedelta(seconds=1)
