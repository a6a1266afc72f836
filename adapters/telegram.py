"""Telegram transport: updates in (long polling or webhook), messages and buttons out.

Transport only: Bot API wire format <-> `bridge.domain` types. Whether a chat is linked,
what a button press or a shared contact means, what to answer: the core decides.

Decisions worth knowing:

- aiogram is the HTTP client (`AiohttpSession(api=TelegramAPIServer.from_base(url))`, so
  `telegram.api_base_url` can point at the loopback fake) and maps Bot API errors to typed
  exceptions; `classify()` turns those into SendResults in one place.
- No aiogram Dispatcher. Its polling confirms an update (by asking for the next offset)
  as soon as it has been handed to a handler, not once it is durable; and one update that
  fails aiogram's pydantic validation fails the whole getUpdates batch, forever. So the
  poller asks for raw JSON (`_GetRawUpdates`), parses each update on its own with
  `event_from_update()` (the same function the webhook uses), and moves the offset past an
  update only after `accept()` returned for it. A crash in between means Telegram hands
  the update out again, and the core dedups it by `update_id`.
- Updates we do not act on (other types, group chats, callbacks without data or message)
  are confirmed all the same, so they are not handed out again; they never reach the core.
- Strings are kept verbatim except NUL and lone surrogates (valid JSON, but PostgreSQL
  cannot store them): a poison update would block the poller's queue for good.
- Logs and errors carry update ids, delivery ids, message ids and our own short reasons:
  never a text, a phone number or a chat id.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hmac
import json
import logging
import random
import re
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp
from aiogram import Bot
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.exceptions import (
    ClientDecodeError,
    TelegramAPIError,
    TelegramBadRequest,
    TelegramConflictError,
    TelegramEntityTooLarge,
    TelegramForbiddenError,
    TelegramMigrateToChat,
    TelegramNetworkError,
    TelegramNotFound,
    TelegramRetryAfter,
    TelegramServerError,
    TelegramUnauthorizedError,
)
from aiogram.methods import GetUpdates
from aiogram.types import (
    BotCommand,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    KeyboardButton,
    ReplyKeyboardMarkup,
    ReplyKeyboardRemove,
    ReplyParameters,
)
from aiogram.utils.token import TokenValidationError
from aiohttp import web

from bridge import metrics
from bridge.config import ConfigError, Settings
from bridge.domain import (
    AcceptInbound,
    Channel,
    InboundEvent,
    Outgoing,
    SendOutcome,
    SendResult,
)

log = logging.getLogger(__name__)

TELEGRAM_PATH = "/webhooks/telegram"
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
# The update types the core acts on; Telegram then does not even create the others.
ALLOWED_UPDATES = ["message", "callback_query"]
# The largest real update is a few tens of KB (4096 characters of text plus entities and a
# quoted message); anything far larger is not Telegram.
MAX_UPDATE_BYTES = 1024 * 1024
POLL_TIMEOUT = 25  # seconds a long poll waits; under the 30-60 s proxies tend to cut
SEND_TIMEOUT = 15  # seconds for any other call
STORE_RETRY_AFTER = 5  # seconds suggested on a 503; Telegram retries on its own schedule
PER_CHAT_INTERVAL = 1.0  # Telegram: "avoid sending more than one message per second" per chat
MAX_TEXT = 4096  # UTF-16 code units per message
MAX_CALLBACK_ANSWER = 200
MEDIA_KEYS = ("photo", "voice", "video", "video_note", "document", "sticker", "audio", "animation")
CONTENT_MARKER = '{"telegram":'
DEFAULT_CONTACT_BUTTON = "📱 Del telefonnummeret mitt"
TELEGRAM_API = "https://api.telegram.org"

_COMMAND = re.compile(r"^/([A-Za-z0-9_]{1,32})(?:@[A-Za-z0-9_]{1,64})?(?:\s+(.*))?$", re.DOTALL)
_UNSAFE = re.compile("[\x00\ud800-\udfff]")
_CHAT_ID = re.compile(r"^-?[0-9]{1,20}$")


class TelegramSetupFailed(Exception):
    """setWebhook / deleteWebhook failed; the message says why (never the token)."""


# -- the bot ----------------------------------------------------------------------------


class _Session(AiohttpSession):
    """aiogram's aiohttp session, minus the 250 ms pause on close when there is no TLS.

    The pause lets TLS connections shut down cleanly; a plain-http loopback server (tests,
    the demo) has none, and every short-lived bot would pay it.
    """

    async def close(self) -> None:
        if self.api.base.startswith("https://"):
            await super().close()
        elif self._session is not None and not self._session.closed:
            await self._session.close()


def make_bot(settings: Settings, *, timeout: float = SEND_TIMEOUT) -> Bot:
    """An aiogram Bot that talks to `telegram.api_base_url`; ConfigError for a bad token."""
    token = settings.secret("telegram", "token_env")
    api = TelegramAPIServer.from_base(settings.telegram.api_base_url or TELEGRAM_API)
    try:
        return Bot(token, session=_Session(api=api, timeout=timeout))
    except TokenValidationError:
        raise ConfigError(
            f"telegram.token_env: {settings.telegram.token_env} does not hold a bot token"
        ) from None


class _GetRawUpdates(GetUpdates):
    """getUpdates answered as plain JSON: each update is parsed (or skipped) on its own."""

    __returning__ = list[Any]


# -- inbound ----------------------------------------------------------------------------


def clean(value: str) -> str:
    """A string as we store it: verbatim, except NUL and lone surrogates (see the docstring)."""
    return _UNSAFE.sub("\ufffd", value)


def update_id_of(update: Any) -> int | None:
    """The update's id, or None when it has no usable one."""
    uid = _int(update.get("update_id")) if isinstance(update, Mapping) else None
    return uid if uid is not None and uid >= 0 else None


def event_from_update(update: Mapping[str, Any], received_at: datetime) -> InboundEvent | None:
    """A Bot API Update -> InboundEvent, or None for an update we do not act on.

    ValueError when it is not an Update at all (no usable `update_id`). Any other shape,
    however odd, gives an event or None: never an exception.
    """
    uid = update_id_of(update)
    if uid is None:
        raise ValueError("update_id missing or malformed")
    message = update.get("message")
    if isinstance(message, Mapping):
        return _from_message(uid, message, received_at)
    query = update.get("callback_query")
    if isinstance(query, Mapping):
        return _from_callback(uid, query, received_at)
    return None


def _from_message(uid: int, msg: Mapping[str, Any], received_at: datetime) -> InboundEvent | None:
    chat = _mapping(msg.get("chat"))
    chat_id = _int(chat.get("id"))
    if chat_id is None or chat.get("type") != "private":
        return None  # groups and channels: the bot serves parents one to one
    user = _mapping(msg.get("from"))
    if user.get("is_bot") is True:
        return None
    raw_text = _str(msg.get("text"))
    text = raw_text if raw_text is not None else (_str(msg.get("caption")) or "")
    payload: dict[str, Any] = {
        "kind": "message",
        "user_id": _int(user.get("id")),
        "chat_type": "private",
        "message_id": _int(msg.get("message_id")),
        "language_code": _str(user.get("language_code")),
    }
    reply = msg.get("reply_to_message")
    if isinstance(reply, Mapping):
        author = reply.get("from")
        if isinstance(author, Mapping) and author.get("is_bot") is True:
            payload["reply_to_message_id"] = _int(reply.get("message_id"))
    contact = msg.get("contact")
    command = _COMMAND.match(raw_text) if raw_text is not None else None
    if isinstance(contact, Mapping):
        payload["kind"] = "contact"
        payload["contact_phone"] = _str(contact.get("phone_number"))
        payload["contact_user_id"] = _int(contact.get("user_id"))
    elif command is not None:
        name = command.group(1).lower()
        rest = (command.group(2) or "").strip()
        if name == "start":
            payload["kind"] = "start"
            payload["start_payload"] = clean(rest) if rest else None
        else:
            payload["kind"] = "command"
            payload["command"] = name
    media = 1 if any(msg.get(key) for key in MEDIA_KEYS) else 0
    return InboundEvent(
        channel=Channel.TELEGRAM,
        external_id=str(uid),
        sender=str(chat_id),
        text=clean(text),
        received_at=received_at,
        payload=_compact(payload),
        media_count=media,
    )


def _from_callback(
    uid: int, query: Mapping[str, Any], received_at: datetime
) -> InboundEvent | None:
    message = query.get("message")
    data = _str(query.get("data"))
    query_id = _str(query.get("id"))
    if not isinstance(message, Mapping) or data is None or not query_id:
        return None  # inline-mode or game callbacks: not from a message of ours
    chat = _mapping(message.get("chat"))
    chat_id = _int(chat.get("id"))
    if chat_id is None or chat.get("type") != "private":
        return None
    user = _mapping(query.get("from"))
    payload = {
        "kind": "callback",
        "user_id": _int(user.get("id")),
        "chat_type": "private",
        "callback_query_id": query_id,
        "callback_data": data,
        "callback_message_id": _int(message.get("message_id")),
        "language_code": _str(user.get("language_code")),
    }
    return InboundEvent(
        channel=Channel.TELEGRAM,
        external_id=str(uid),
        sender=str(chat_id),
        text="",
        received_at=received_at,
        payload=_compact(payload),
        media_count=0,
    )


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


# Telegram's ids are 64-bit signed integers at most; a larger number is no Telegram id
# (and would overflow the store's BIGINT when processed).
_INT64 = 2**63


def _int(value: Any) -> int | None:
    ok = isinstance(value, int) and not isinstance(value, bool) and -_INT64 <= value < _INT64
    return value if ok else None


def _str(value: Any) -> str | None:
    return clean(value) if isinstance(value, str) else None


def _compact(payload: dict[str, Any]) -> dict[str, Any]:
    # Absent is absent: the core reads payload.get(...), and stores less.
    return {k: v for k, v in payload.items() if v is not None}


def _parse(update: Any, received_at: datetime) -> InboundEvent | None:
    """event_from_update, with a bug of ours costing one skipped update, not the queue."""
    try:
        return event_from_update(update, received_at)
    except ValueError:
        return None
    except Exception:
        log.exception("telegram update %s: could not be read; skipped", update_id_of(update))
        return None


class TelegramWebhook:
    """`POST /webhooks/telegram`: Telegram's updates in webhook mode."""

    def __init__(
        self, settings: Settings, accept: AcceptInbound, *, max_bytes: int = MAX_UPDATE_BYTES
    ) -> None:
        # Read the secret now: a missing one is a start-up error, not a 403 per request.
        secret = settings.secret("telegram", "webhook_secret_env")
        self._secret = secret.encode("utf-8", "surrogateescape")
        self._accept = accept
        self._max_bytes = max_bytes

    def routes(self) -> list[web.RouteDef]:
        return [web.post(TELEGRAM_PATH, self.handle)]

    async def handle(self, request: web.Request) -> web.Response:
        started = time.monotonic()
        given = request.headers.get(SECRET_HEADER, "").encode("utf-8", "surrogateescape")
        if not hmac.compare_digest(given, self._secret):
            # Refuse before reading the body: unauthenticated requests cost us nothing.
            log.warning("telegram webhook: %s secret token", "bad" if given else "missing")
            return web.Response(status=403, text="bad secret token")
        raw = await _read_capped(request, self._max_bytes)
        if raw is None:
            return web.Response(status=400, text="body too large or malformed")
        try:
            update = json.loads(raw)
        except ValueError:  # includes UnicodeDecodeError
            return web.Response(status=400, text="not JSON")
        uid = update_id_of(update)
        if uid is None:
            return web.Response(status=400, text="not a Telegram update")
        event = _parse(update, datetime.now(UTC))
        if event is None:
            log.info("telegram update %s: not for us; confirmed", uid)
            return web.json_response({})
        try:
            accepted = await self._accept(event)
        except Exception as e:  # anything that is not "stored" must make Telegram retry
            log.warning("telegram update %s not stored: %s", uid, type(e).__name__)
            return web.Response(
                status=503,
                text="store unavailable",
                headers={"Retry-After": str(STORE_RETRY_AFTER)},
            )
        metrics.ack_seconds.labels(channel=Channel.TELEGRAM.value).observe(
            time.monotonic() - started
        )
        log.info(
            "telegram update %s stored as event %s (new=%s)", uid, accepted.event_id, accepted.new
        )
        return web.json_response({})


def routes(settings: Settings, accept: AcceptInbound) -> list[web.RouteDef]:
    """`POST /webhooks/telegram`, ready to add to the bridge's application."""
    return TelegramWebhook(settings, accept).routes()


async def _read_capped(request: web.Request, limit: int) -> bytes | None:
    if request.content_length is not None and request.content_length > limit:
        return None
    raw = bytearray()
    try:
        async for chunk in request.content.iter_chunked(16 * 1024):
            raw += chunk
            if len(raw) > limit:
                return None
    except aiohttp.ClientPayloadError:
        return None
    return bytes(raw)


async def set_webhook(settings: Settings) -> None:
    """Point Telegram at `public_url` + /webhooks/telegram, with our secret token."""
    url = settings.bridge.public_url.rstrip("/") + TELEGRAM_PATH
    secret = settings.secret("telegram", "webhook_secret_env")
    bot = make_bot(settings)
    try:
        await bot.set_webhook(
            url=url,
            secret_token=secret,
            allowed_updates=ALLOWED_UPDATES,
            drop_pending_updates=False,  # what waited while we were down is still wanted
        )
    except Exception as e:
        raise TelegramSetupFailed(f"setWebhook failed: {classify(e).error}") from None
    finally:
        await bot.session.close()
    log.info("telegram webhook set")


async def delete_webhook(settings: Settings) -> None:
    """Remove the webhook (polling needs that), keeping the pending updates."""
    bot = make_bot(settings)
    try:
        await bot.delete_webhook(drop_pending_updates=False)
    except Exception as e:
        raise TelegramSetupFailed(f"deleteWebhook failed: {classify(e).error}") from None
    finally:
        await bot.session.close()


# -- polling ----------------------------------------------------------------------------


@dataclass
class _Backoff:
    initial: float
    maximum: float
    current: float = field(default=0.0)

    def next(self) -> float:
        self.current = min(self.maximum, self.current * 2 if self.current else self.initial)
        return self.current * random.uniform(0.8, 1.2)

    def reset(self) -> None:
        self.current = 0.0


async def _pause(seconds: float, stop: asyncio.Event) -> None:
    """Sleep, but wake at once when asked to stop."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=max(0.0, seconds))


class TelegramPoller:
    """Long-polls getUpdates and hands each update to `accept` before confirming it."""

    def __init__(
        self,
        settings: Settings,
        accept: AcceptInbound,
        *,
        poll_timeout: int = POLL_TIMEOUT,
        backoff_initial: float = 1.0,
        backoff_max: float = 30.0,
        delete_webhook_first: bool = True,
    ) -> None:
        # aiogram's timeout covers the whole request: the long poll plus time to answer.
        self._bot = make_bot(settings, timeout=poll_timeout + SEND_TIMEOUT)
        self._accept = accept
        self._poll_timeout = poll_timeout
        self._backoff = _Backoff(backoff_initial, backoff_max)
        self._delete_webhook_first = delete_webhook_first
        self.offset: int | None = None  # the next update id we want; all below are stored
        self._told: int | None = None  # the offset Telegram last heard from us

    async def run(self, stop: asyncio.Event) -> None:
        """Poll until `stop` is set; then confirm what was stored, and close."""
        try:
            if self._delete_webhook_first:
                await self._delete_webhook()
            while not stop.is_set():
                updates = await self._fetch(stop)
                if updates:
                    await self._take(updates, stop)
            await self._confirm()
        finally:
            await self._bot.session.close()

    async def _delete_webhook(self) -> None:
        # Without this a webhook left over from webhook mode makes every getUpdates a 409.
        try:
            await self._bot.delete_webhook(drop_pending_updates=False)
        except Exception as e:
            log.warning("telegram: deleteWebhook failed (%s); polling anyway", classify(e).error)

    async def _fetch(self, stop: asyncio.Event) -> list[Any] | None:
        """One getUpdates; None when stopped or failed (after backing off)."""
        method = _GetRawUpdates(
            offset=self.offset,
            limit=100,
            timeout=self._poll_timeout,
            allowed_updates=ALLOWED_UPDATES,
        )
        poll = asyncio.ensure_future(self._bot(method))
        stopping = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({poll, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
        if not poll.done():
            # Nothing from an unfinished poll was taken, so nothing is lost by dropping it.
            poll.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await poll
            return None
        try:
            updates = poll.result()
        except TelegramRetryAfter as e:
            log.warning("telegram getUpdates: flood control, waiting %s s", e.retry_after)
            await _pause(float(e.retry_after), stop)
            return None
        except Exception as e:
            delay = self._backoff.next()
            level = logging.ERROR if _is_config_error(e) else logging.WARNING
            log.log(level, "telegram getUpdates failed (%s); retry in %.1f s", _why(e), delay)
            await _pause(delay, stop)
            return None
        self._backoff.reset()
        self._told = self.offset
        return updates

    async def _take(self, updates: list[Any], stop: asyncio.Event) -> None:
        """Store each update in order, advancing the offset past each one once it is durable."""
        received_at = datetime.now(UTC)
        started = time.monotonic()
        for update in updates:
            uid = update_id_of(update)
            if uid is None:
                log.warning("telegram getUpdates: an entry without an update_id; skipped")
                continue
            if self.offset is not None and uid < self.offset:
                continue  # confirmed already; Telegram should not have sent it
            event = _parse(update, received_at)
            if event is None:
                log.info("telegram update %s: not for us; confirmed", uid)
            elif not await self._accept_until_stored(event, uid, stop):
                return  # stopping: this and later updates are fetched again next time
            else:
                metrics.ack_seconds.labels(channel=Channel.TELEGRAM.value).observe(
                    time.monotonic() - started
                )
            self.offset = uid + 1

    async def _accept_until_stored(
        self, event: InboundEvent, uid: int, stop: asyncio.Event
    ) -> bool:
        """accept(event), retried with backoff while the store is down; False if stopped.

        Durability wins over liveness: an update the store keeps refusing blocks the ones
        behind it (Telegram keeps them 24 hours), and the log says so loudly.
        """
        backoff = _Backoff(self._backoff.initial, self._backoff.maximum)
        failures = 0
        while True:
            try:
                accepted = await self._accept(event)
            except Exception as e:
                failures += 1
                delay = backoff.next()
                level = logging.ERROR if failures >= 5 else logging.WARNING
                log.log(
                    level,
                    "telegram update %s not stored (%s, attempt %d); retry in %.1f s",
                    uid,
                    type(e).__name__,
                    failures,
                    delay,
                )
                await _pause(delay, stop)
                if stop.is_set():
                    return False
                continue
            log.info(
                "telegram update %s stored as event %s (new=%s)",
                uid,
                accepted.event_id,
                accepted.new,
            )
            return True

    async def _confirm(self) -> None:
        """Tell Telegram the stored offset on the way out, so a restart starts after it."""
        if self.offset is None or self.offset == self._told:
            return
        try:
            # limit=1, timeout=0: an update this returns is not confirmed, so none is lost.
            await self._bot(_GetRawUpdates(offset=self.offset, limit=1, timeout=0))
            self._told = self.offset
        except Exception as e:
            log.info("telegram: could not confirm offset on stop (%s); dedup covers it", _why(e))


def _is_config_error(exc: BaseException) -> bool:
    return isinstance(exc, TelegramUnauthorizedError | TelegramNotFound | TelegramConflictError)


def _why(exc: BaseException) -> str:
    return classify(exc).error or type(exc).__name__


# -- outbound ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Button:
    """An inline button: what it says, and the callback data it sends back (1-64 bytes)."""

    text: str
    data: str


@dataclass(frozen=True)
class TelegramContent:
    """What one Telegram delivery shows; `to_json()` is the `Outgoing.body` the core stores.

    - `buttons`: rows of inline buttons under the text.
    - `request_contact`: a one-time reply keyboard with one button that shares the
      parent's own phone number (`contact_button_text` is its label, in their language).
    - `remove_keyboard`: take such a keyboard away again (after the contact came).
    - `reply_to_message_id`: show the text as a reply to that message.
    - `edit_message_id`: change that bot message instead of sending a new one (its text,
      and its buttons: none given removes them); with an empty text only the buttons change.
    """

    text: str = ""
    buttons: Sequence[Sequence[Button]] = ()  # stored as tuples
    request_contact: bool = False
    contact_button_text: str = DEFAULT_CONTACT_BUTTON
    remove_keyboard: bool = False
    reply_to_message_id: int | None = None
    edit_message_id: int | None = None

    def __post_init__(self) -> None:
        rows = tuple(tuple(row) for row in self.buttons)
        object.__setattr__(self, "buttons", rows)
        for button in (b for row in rows for b in row):
            if not isinstance(button, Button) or not button.text.strip():
                raise ValueError("a button needs a text")
            if not 1 <= len(button.data.encode("utf-8")) <= 64:
                raise ValueError("button data must be 1-64 bytes")
        if sum((bool(rows), self.request_contact, self.remove_keyboard)) > 1:
            raise ValueError("one keyboard per message: buttons, request_contact or remove")
        if self.edit_message_id is not None:
            if self.request_contact or self.remove_keyboard:
                raise ValueError("an edit can change inline buttons only")
        elif not self.text.strip():
            raise ValueError("a message needs a text")
        if self.request_contact and not self.contact_button_text.strip():
            raise ValueError("the contact button needs a text")

    def to_json(self) -> str:
        doc = {
            "telegram": {
                "text": self.text,
                "buttons": [
                    [{"text": b.text, "data": b.data} for b in row] for row in self.buttons
                ],
                "request_contact": self.request_contact,
                "contact_button_text": self.contact_button_text,
                "remove_keyboard": self.remove_keyboard,
                "reply_to_message_id": self.reply_to_message_id,
                "edit_message_id": self.edit_message_id,
            }
        }
        return json.dumps(doc, ensure_ascii=False, separators=(",", ":"))

    @classmethod
    def from_body(cls, body: str) -> TelegramContent:
        """An `Outgoing.body`: plain text, or `to_json()`'s document. ValueError if unusable."""
        if not body.startswith(CONTENT_MARKER):
            return cls(text=body)
        try:
            doc = json.loads(body)["telegram"]
        except (ValueError, KeyError, TypeError):
            raise ValueError("telegram content is not valid JSON") from None
        if not isinstance(doc, dict):
            raise ValueError("telegram content is not an object")
        known = {f.name for f in dataclasses.fields(cls)}
        if set(doc) - known:
            raise ValueError(f"unknown telegram content keys: {sorted(set(doc) - known)}")
        rows = doc.get("buttons") or []
        if not isinstance(rows, list) or not all(isinstance(r, list) for r in rows):
            raise ValueError("buttons must be rows of buttons")
        buttons: list[tuple[Button, ...]] = []
        for row in rows:
            if not all(
                isinstance(b, dict)
                and isinstance(b.get("text"), str)
                and isinstance(b.get("data"), str)
                for b in row
            ):
                raise ValueError("a button is {text, data}")
            buttons.append(tuple(Button(b["text"], b["data"]) for b in row))
        return cls(
            text=_typed(doc, "text", str, ""),
            buttons=tuple(buttons),
            request_contact=_typed(doc, "request_contact", bool, False),
            contact_button_text=_typed(doc, "contact_button_text", str, DEFAULT_CONTACT_BUTTON),
            remove_keyboard=_typed(doc, "remove_keyboard", bool, False),
            reply_to_message_id=_typed(doc, "reply_to_message_id", int, None),
            edit_message_id=_typed(doc, "edit_message_id", int, None),
        )


def _typed(doc: Mapping[str, Any], key: str, tp: type, default: Any) -> Any:
    value = doc.get(key)
    if value is None:
        return default
    if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
        raise ValueError(f"telegram content: {key} must be {tp.__name__}")
    return value


def split_text(text: str, limit: int = MAX_TEXT) -> list[str]:
    """Cut a text into messages of at most `limit` UTF-16 units, at paragraph, line or word
    ends when there is one in the second half of a piece."""
    pieces: list[str] = []
    while _utf16_len(text) > limit:
        cut = _fit(text, limit)
        window = text[:cut]
        for sep in ("\n\n", "\n", " "):
            at = window.rfind(sep)
            if at >= cut // 2:
                cut = at + len(sep)
                break
        pieces.append(text[:cut].rstrip() or text[:cut])
        text = text[cut:]
    pieces.append(text)
    return pieces


def _utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


def _fit(text: str, limit: int) -> int:
    """The longest prefix (in code points) of at most `limit` UTF-16 units."""
    units = 0
    for i, ch in enumerate(text):
        units += 2 if ord(ch) > 0xFFFF else 1
        if units > limit:
            return i
    return len(text)


# Our short reasons for the descriptions we meet (Telegram's own are kept out of errors:
# a future one might quote something we sent).
_REASONS = (
    ("bot was blocked by the user", "bot blocked by the user"),
    ("user is deactivated", "user deactivated"),
    ("bot was kicked", "bot kicked from the chat"),
    ("bot can't initiate conversation", "user never started the bot"),
    ("bot can't send messages to bots", "chat is a bot"),
    ("chat not found", "chat not found"),
    ("message to edit not found", "message to edit not found"),
    ("message can't be edited", "message can't be edited"),
    ("message is not modified", "message not modified"),
    ("message to be replied not found", "replied message not found"),
    ("message is too long", "text too long"),
    ("message text is empty", "empty text"),
    ("button_data_invalid", "invalid button data"),
    ("query is too old", "callback query too old"),
    ("can't parse", "unparsable request"),
)
# 403s and 400s that say the chat itself cannot take our messages: the core falls back to
# the guardian's next channel. Blocking is undone by the parent restarting the bot, which
# reaches us as a new message, like START by SMS.
_DEAD_CHAT = frozenset(
    {
        "bot blocked by the user",
        "user deactivated",
        "bot kicked from the chat",
        "user never started the bot",
        "chat is a bot",
        "chat not found",
    }
)


def _reason(exc: TelegramAPIError) -> str:
    text = exc.message.lower()
    for needle, reason in _REASONS:
        if needle in text:
            return reason
    return type(exc).__name__


def classify(exc: BaseException) -> SendResult:
    """The one place a failed Bot API call becomes TRANSIENT, PERMANENT or (for an edit
    that changed nothing) SENT; `contact_dead` when the chat cannot take messages at all.
    """
    if isinstance(exc, TelegramRetryAfter):
        return SendResult(
            SendOutcome.TRANSIENT, error="429: flood control", retry_after=float(exc.retry_after)
        )
    if isinstance(exc, TelegramMigrateToChat):
        return SendResult(SendOutcome.PERMANENT, error="400: group migrated", contact_dead=True)
    if isinstance(exc, TelegramForbiddenError):
        reason = _reason(exc)
        return SendResult(SendOutcome.PERMANENT, error=f"403: {reason}", contact_dead=True)
    if isinstance(exc, TelegramBadRequest):
        reason = _reason(exc)
        if reason == "message not modified":
            return SendResult(SendOutcome.SENT)  # a retried edit that already went through
        return SendResult(
            SendOutcome.PERMANENT, error=f"400: {reason}", contact_dead=reason in _DEAD_CHAT
        )
    if isinstance(exc, TelegramEntityTooLarge):
        return SendResult(SendOutcome.PERMANENT, error="413: request too large")
    if isinstance(exc, TelegramUnauthorizedError | TelegramNotFound):
        # A revoked or mistyped token: every message fails until an operator fixes it, so
        # let them wait as retries rather than fail for good.
        code = 401 if isinstance(exc, TelegramUnauthorizedError) else 404
        return SendResult(SendOutcome.TRANSIENT, error=f"{code}: bot token rejected")
    if isinstance(exc, TelegramConflictError):
        return SendResult(SendOutcome.TRANSIENT, error="409: conflict")
    if isinstance(exc, TelegramServerError):
        return SendResult(SendOutcome.TRANSIENT, error="5xx: Telegram server error")
    if isinstance(exc, TelegramNetworkError):
        timeout = isinstance(exc.__cause__, TimeoutError) or "timeout" in exc.message.lower()
        cause = type(exc.__cause__).__name__ if exc.__cause__ else "network"
        return SendResult(
            SendOutcome.TRANSIENT, error="timeout" if timeout else f"connection error: {cause}"
        )
    if isinstance(exc, TelegramAPIError):
        return SendResult(SendOutcome.TRANSIENT, error=f"Telegram error: {type(exc).__name__}")
    if isinstance(exc, TimeoutError):
        return SendResult(SendOutcome.TRANSIENT, error="timeout")
    if isinstance(exc, aiohttp.ClientError | OSError):
        return SendResult(SendOutcome.TRANSIENT, error=f"connection error: {type(exc).__name__}")
    if isinstance(exc, ClientDecodeError):
        # An answer we could not read (a proxy's HTML page): Telegram may or may not have
        # taken the message; at-least-once says try again.
        return SendResult(SendOutcome.TRANSIENT, error="unreadable answer")
    # A bug of ours: retries end in "dead", which an operator sees and can retry.
    return SendResult(SendOutcome.TRANSIENT, error=f"internal error: {type(exc).__name__}")


@dataclass
class _Lane:
    """One chat's place in the per-chat rate limit."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    last: float = float("-inf")  # when the previous call to the chat was answered


class TelegramSender:
    """Sends `Outgoing` Telegram deliveries through aiogram; one instance per process."""

    def __init__(
        self,
        settings: Settings,
        *,
        timeout: float = SEND_TIMEOUT,
        per_chat_interval: float = PER_CHAT_INTERVAL,
    ) -> None:
        self._settings = settings
        self._bot = make_bot(settings, timeout=timeout)  # fails at start-up on a bad token
        self._interval = per_chat_interval
        self._lanes: dict[int, _Lane] = {}

    async def send(self, out: Outgoing) -> SendResult:
        try:
            content = TelegramContent.from_body(out.body)
        except ValueError as e:
            log.warning("telegram delivery %s: unusable content (%s)", out.delivery_id, e)
            return SendResult(SendOutcome.PERMANENT, error=f"unusable content: {e}")
        chat_id = _chat_id(out.address)
        if chat_id is None:
            log.warning("telegram delivery %s: address is not a chat id", out.delivery_id)
            return SendResult(SendOutcome.PERMANENT, error="not a chat id", contact_dead=True)
        try:
            if content.edit_message_id is not None:
                message_id = await self._edit(chat_id, content)
            else:
                message_id = await self._send(chat_id, content)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            result = classify(e)
            if result.outcome is SendOutcome.SENT and content.edit_message_id is not None:
                result = dataclasses.replace(
                    result, provider_id=f"{chat_id}:{content.edit_message_id}"
                )
            log.warning(
                "telegram delivery %s: %s (%s)", out.delivery_id, result.outcome.value, result.error
            )
            return result
        log.info("telegram delivery %s sent as message %s", out.delivery_id, message_id)
        return SendResult(SendOutcome.SENT, provider_id=f"{chat_id}:{message_id}")

    async def _send(self, chat_id: int, content: TelegramContent) -> int:
        """Send the text (in pieces if it is too long); the first piece's message id."""
        markup: InlineKeyboardMarkup | ReplyKeyboardMarkup | ReplyKeyboardRemove | None = None
        if content.buttons:
            markup = _inline(content.buttons)
        elif content.request_contact:
            markup = ReplyKeyboardMarkup(
                keyboard=[[KeyboardButton(text=content.contact_button_text, request_contact=True)]],
                resize_keyboard=True,
                one_time_keyboard=True,
            )
        elif content.remove_keyboard:
            markup = ReplyKeyboardRemove(remove_keyboard=True)
        pieces = split_text(content.text)
        first: int | None = None
        for i, piece in enumerate(pieces):
            reply = None
            if i == 0 and content.reply_to_message_id is not None:
                # Deleted meanwhile? Then the text still goes, just not as a reply.
                reply = ReplyParameters(
                    message_id=content.reply_to_message_id, allow_sending_without_reply=True
                )
            async with self._turn(chat_id):
                message = await self._bot.send_message(
                    chat_id=chat_id,
                    text=piece,
                    reply_parameters=reply,
                    reply_markup=markup if i == len(pieces) - 1 else None,
                )
            first = message.message_id if first is None else first
        assert first is not None
        return first

    async def _edit(self, chat_id: int, content: TelegramContent) -> int:
        assert content.edit_message_id is not None
        markup = _inline(content.buttons) if content.buttons else None
        async with self._turn(chat_id):
            if content.text:
                await self._bot.edit_message_text(
                    chat_id=chat_id,
                    message_id=content.edit_message_id,
                    text=content.text,
                    reply_markup=markup,
                )
            else:
                await self._bot.edit_message_reply_markup(
                    chat_id=chat_id, message_id=content.edit_message_id, reply_markup=markup
                )
        return content.edit_message_id

    @contextlib.asynccontextmanager
    async def _turn(self, chat_id: int) -> AsyncIterator[None]:
        """One call per chat at a time, `interval` after the previous one was answered.

        Timed from the answer, not the request: then Telegram sees the calls at least the
        interval apart however long each took; and the lock keeps a chat's messages in order.
        """
        lane = self._lanes.get(chat_id)
        if lane is None:
            lane = self._lanes[chat_id] = _Lane()
        async with lane.lock:
            wait = lane.last + self._interval - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            try:
                yield
            finally:
                lane.last = time.monotonic()
        if len(self._lanes) > 4096:  # forget idle chats
            idle = time.monotonic() - self._interval
            self._lanes = {c: x for c, x in self._lanes.items() if x.lock.locked() or x.last > idle}

    async def answer_callback(self, callback_query_id: str, text: str | None = None) -> bool:
        """Stop the button's spinner (and show `text` briefly); False if Telegram refused."""
        if text is not None and _utf16_len(text) > MAX_CALLBACK_ANSWER:
            text = text[: _fit(text, MAX_CALLBACK_ANSWER - 1)] + "…"
        try:
            await self._bot.answer_callback_query(callback_query_id=callback_query_id, text=text)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            # Too late (Telegram waits some seconds) or already answered: cosmetic only.
            log.info("telegram callback answer failed: %s", classify(e).error)
            return False
        return True

    async def set_commands(
        self, commands: Mapping[str, Sequence[tuple[str, str]]], default_language: str
    ) -> list[str]:
        """The bot's command menu per language code, and `default_language`'s as the menu for
        every other language. Returns the codes set ("" is the default); failures are logged.
        """
        done: list[str] = []
        targets: list[tuple[str, Sequence[tuple[str, str]]]] = list(commands.items())
        fallback = commands.get(default_language) or next(iter(commands.values()), None)
        if fallback is not None:
            targets.append(("", fallback))
        for language, items in targets:
            menu = [BotCommand(command=name, description=text) for name, text in items]
            try:
                await self._bot.set_my_commands(commands=menu, language_code=language or None)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.warning("telegram setMyCommands %r failed: %s", language, classify(e).error)
                continue
            done.append(language)
        return done

    async def close(self) -> None:
        await self._bot.session.close()


def _inline(rows: Sequence[Sequence[Button]]) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup(
        inline_keyboard=[
            [InlineKeyboardButton(text=b.text, callback_data=b.data) for b in row] for row in rows
        ]
    )


def _chat_id(address: str) -> int | None:
    # Digits only: int() would also take "+4791234567", a phone number, not a chat.
    return int(address) if _CHAT_ID.match(address) else None


async def answer_callback(
    settings: Settings, callback_query_id: str, text: str | None = None
) -> bool:
    """answerCallbackQuery with a short-lived bot; prefer `TelegramSender.answer_callback`."""
    sender = TelegramSender(settings)
    try:
        return await sender.answer_callback(callback_query_id, text)
    finally:
        await sender.close()


async def set_commands(
    settings: Settings, commands: Mapping[str, Sequence[tuple[str, str]]]
) -> list[str]:
    """setMyCommands per language (nb, nn, en, ...) plus the default menu in
    `bridge.default_language`; see `TelegramSender.set_commands`."""
    sender = TelegramSender(settings)
    try:
        return await sender.set_commands(commands, settings.bridge.default_language)
    finally:
        await sender.close()
