"""A loopback stand-in for the Telegram Bot API and its webhook.

It is a real aiohttp server on 127.0.0.1 that speaks the Bot API's wire format at
`/bot<token>/<method>`, so aiogram (through `TelegramAPIServer.from_base(base_url)`) and the
adapter's real HTTP handlers are what the tests exercise:

- Requests: JSON, form-encoded or multipart bodies, or a query string; method names are
  case-insensitive, as Telegram's are. Answers are `{"ok": true, "result": ...}` or
  `{"ok": false, "error_code": ..., "description": ...}` with the matching HTTP status,
  and `parameters.retry_after` on 429.
- Methods: getMe, getUpdates (offset confirms and drops, limit, long-poll `timeout`,
  `allowed_updates`, "terminated by other getUpdates request" for a second poller),
  sendMessage (inline and reply keyboards, `request_contact`, `reply_parameters` or the
  older `reply_to_message_id`), editMessageText, editMessageReplyMarkup,
  answerCallbackQuery, setMyCommands/getMyCommands/deleteMyCommands (per language code),
  setWebhook/deleteWebhook/getWebhookInfo, sendChatAction.
- Webhook mode: once `setWebhook` is called, pending updates are POSTed to the URL one at
  a time with `X-Telegram-Bot-Api-Secret-Token`, retried on any non-2xx answer, and
  getUpdates answers 409, as Telegram does. Unlike Telegram, http:// and any port are
  accepted (the tests' server is on loopback).

Parents are simulated with `send_text()`, `send_command()`, `send_start()`,
`share_contact()`, `press_button()`, `send_media()` and `inject()` (any raw update).
Knobs are plain attributes and methods: `block()`, `forget_chat()`, `rate_limit()`,
`fail_next()`, `drop_polls()`, `abort_polls()`, `latency`. Records for assertions: `sent`
(per chat), `calls`, `polls`, `confirmed`, `pending`, `commands`, `callback_answers`,
`chat_actions`, `webhook_attempts`.

A private chat's id is its user's id, as on Telegram; group chats have negative ids.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import re
import secrets
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from adapters.fakes.base import LoopbackFake

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
MAX_TEXT = 4096  # UTF-16 code units, as Telegram counts them
MAX_CALLBACK_DATA = 64  # bytes
MAX_CALLBACK_ANSWER = 200
# What getUpdates returns when `allowed_updates` was never set, or set to [].
DEFAULT_EXCLUDED = frozenset({"chat_member", "message_reaction", "message_reaction_count"})
MEDIA_KINDS = (
    "photo",
    "voice",
    "video",
    "video_note",
    "document",
    "sticker",
    "audio",
    "animation",
)
CHAT_ACTIONS = frozenset(
    {
        "typing",
        "upload_photo",
        "record_video",
        "upload_video",
        "record_voice",
        "upload_voice",
        "upload_document",
        "choose_sticker",
        "find_location",
        "record_video_note",
        "upload_video_note",
    }
)
FORBIDDEN = {
    "blocked": "Forbidden: bot was blocked by the user",
    "deactivated": "Forbidden: user is deactivated",
    "kicked": "Forbidden: bot was kicked from the group chat",
    "never_started": "Forbidden: bot can't initiate conversation with a user",
}
NOT_MODIFIED = (
    "Bad Request: message is not modified: specified new message content and reply markup "
    "are exactly the same as a current content and reply markup of the message"
)
_COMMAND = re.compile(r"^[a-z0-9_]{1,32}$")
_SECRET_TOKEN = re.compile(r"^[A-Za-z0-9_-]{1,256}$")
_LANGUAGE = re.compile(r"^[a-z]{2}$")


def utf16_len(text: str) -> int:
    """Telegram's length of a text: UTF-16 code units, not code points."""
    return len(text.encode("utf-16-le")) // 2


class ApiError(Exception):
    """An error answer: HTTP status = error_code, as the Bot API sends them."""

    def __init__(self, status: int, description: str, retry_after: int | None = None) -> None:
        super().__init__(description)
        self.status = status
        self.description = description
        self.retry_after = retry_after

    def response(self) -> web.Response:
        body: dict[str, Any] = {
            "ok": False,
            "error_code": self.status,
            "description": self.description,
        }
        if self.retry_after is not None:
            body["parameters"] = {"retry_after": self.retry_after}
        return web.json_response(body, status=self.status)


class _Abort(Exception):
    """Close the connection without an answer (a dropped long poll)."""


@dataclass
class SentMessage:
    """One message the bot sent, as it stands now (edits update it)."""

    chat_id: int
    message_id: int
    text: str
    reply_markup: dict[str, Any] | None
    reply_to_message_id: int | None
    at: float  # time.monotonic() when it was sent
    edits: int = 0

    @property
    def buttons(self) -> list[list[tuple[str, str]]]:
        """The inline keyboard as rows of (text, callback_data)."""
        rows = (self.reply_markup or {}).get("inline_keyboard") or []
        return [[(b.get("text", ""), b.get("callback_data", "")) for b in row] for row in rows]

    @property
    def requests_contact(self) -> bool:
        rows = (self.reply_markup or {}).get("keyboard") or []
        return any(isinstance(b, dict) and b.get("request_contact") for row in rows for b in row)


@dataclass
class ApiCall:
    method: str  # as Telegram names it, e.g. "sendMessage"
    params: dict[str, Any]
    status: int  # HTTP status of the answer; 0 while running, or for a dropped connection


@dataclass
class PollRecord:
    offset: int | None
    timeout: int
    returned: list[int] = field(default_factory=list)  # update ids in the answer
    outcome: str = "ok"  # "ok", "dropped", "aborted", "conflict"


@dataclass
class CallbackAnswer:
    callback_query_id: str
    text: str | None
    show_alert: bool


@dataclass
class WebhookAttempt:
    update_id: int
    status: int  # 0: connection error or timeout
    error: str | None = None


@dataclass
class _Failure:
    status: int
    description: str
    retry_after: int | None
    method: str | None  # lower-case; None matches every method
    remaining: int


@dataclass
class _Webhook:
    url: str
    secret_token: str | None
    max_connections: int
    allowed_updates: list[str] | None
    last_error_date: int | None = None
    last_error_message: str | None = None


@dataclass
class _Chat:
    id: int
    type: str
    first_name: str | None
    last_name: str | None
    username: str | None
    title: str | None
    language_code: str | None
    forbidden: str | None = None
    next_message_id: int = 1
    messages: dict[int, dict[str, Any]] = field(default_factory=dict)

    def json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "type": self.type}
        if self.type == "private":
            out["first_name"] = self.first_name or ""
            if self.last_name:
                out["last_name"] = self.last_name
            if self.username:
                out["username"] = self.username
        else:
            out["title"] = self.title or ""
        return out


Handler = Callable[[dict[str, Any]], Awaitable[Any]]


class FakeTelegram(LoopbackFake):
    """The Bot API on loopback; see the module docstring."""

    def __init__(
        self,
        token: str,
        *,
        username: str = "skolebro_bot",
        first_name: str = "Skolebro",
        first_update_id: int = 700_000_001,
        webhook_retry_delay: float = 0.02,
        webhook_max_attempts: int = 20,
        webhook_timeout: float = 5.0,
    ) -> None:
        self.token = token
        self.bot_id = int(token.partition(":")[0])
        self.username = username
        self.first_name = first_name
        self.webhook_retry_delay = webhook_retry_delay
        self.webhook_max_attempts = webhook_max_attempts
        self.webhook_timeout = webhook_timeout
        self.latency = 0.0  # seconds added before every answer
        # Records for assertions.
        self.sent: defaultdict[int, list[SentMessage]] = defaultdict(list)
        self.calls: list[ApiCall] = []
        self.polls: list[PollRecord] = []
        self.confirmed: list[int] = []
        self.injected: list[int] = []
        self.commands: dict[str, list[tuple[str, str]]] = {}
        self.callback_answers: list[CallbackAnswer] = []
        self.chat_actions: list[tuple[int, str]] = []
        self.webhook_attempts: list[WebhookAttempt] = []
        self._next_update_id = first_update_id
        self._queue: list[dict[str, Any]] = []
        self._allowed: list[str] | None = None
        self._chats: dict[int, _Chat] = {}
        self._callbacks: dict[str, bool] = {}  # callback_query_id -> answered
        self._failures: list[_Failure] = []
        self._drop_polls = 0
        self._abort_gen = 0
        self._poll_gen = 0
        self._wakeup = asyncio.Event()
        self._webhook: _Webhook | None = None
        self._deliverer: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._runner: web.AppRunner | None = None
        self._port = 0
        self._handlers: dict[str, Handler] = {
            "getme": self._get_me,
            "getupdates": self._get_updates,
            "sendmessage": self._send_message,
            "editmessagetext": self._edit_message_text,
            "editmessagereplymarkup": self._edit_message_reply_markup,
            "answercallbackquery": self._answer_callback_query,
            "setmycommands": self._set_my_commands,
            "getmycommands": self._get_my_commands,
            "deletemycommands": self._delete_my_commands,
            "setwebhook": self._set_webhook,
            "deletewebhook": self._delete_webhook,
            "getwebhookinfo": self._get_webhook_info,
            "sendchataction": self._send_chat_action,
        }

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application(client_max_size=10 * 1024 * 1024)
        app.router.add_route("*", "/bot{token}/{method}", self._dispatch)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self._port = int(self._runner.addresses[0][1])
        self._session = aiohttp.ClientSession()

    async def stop(self) -> None:
        await self._stop_deliverer()
        self._webhook = None
        self._poll_gen += 1  # end waiting long polls now: shutting down waits for handlers
        self._notify()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def base_url(self) -> str:
        """What `[telegram] api_base_url` points at, instead of https://api.telegram.org."""
        if not self._port:
            raise RuntimeError("FakeTelegram is not started")
        return f"http://127.0.0.1:{self._port}"

    # -- knobs -----------------------------------------------------------------------

    def block(self, chat_id: int, reason: str = "blocked") -> None:
        """Sends to `chat_id` get 403 (`reason`: a FORBIDDEN key or a full description)."""
        self._chat(chat_id).forbidden = FORBIDDEN.get(reason, reason)

    def unblock(self, chat_id: int) -> None:
        self._chat(chat_id).forbidden = None

    def forget_chat(self, chat_id: int) -> None:
        """Sends to `chat_id` get 400 "chat not found" (a deleted account, a wrong id)."""
        self._chats.pop(chat_id, None)

    def rate_limit(
        self, n: int = 1, *, retry_after: int = 5, method: str | None = "sendMessage"
    ) -> None:
        """Answer the next `n` calls of `method` (None: of any method) with 429."""
        self.fail_next(
            n,
            status=429,
            description=f"Too Many Requests: retry after {retry_after}",
            retry_after=retry_after,
            method=method,
        )

    def fail_next(
        self,
        n: int = 1,
        *,
        status: int = 500,
        description: str = "Internal Server Error",
        retry_after: int | None = None,
        method: str | None = None,
    ) -> None:
        """Answer the next `n` calls of `method` (None: any method) with this error."""
        self._failures.append(
            _Failure(status, description, retry_after, method.lower() if method else None, n)
        )

    def drop_polls(self, n: int = 1) -> None:
        """Close the connection of the next `n` getUpdates calls without an answer."""
        self._drop_polls += n

    def abort_polls(self) -> None:
        """Close the connections of the long polls that are waiting now."""
        self._abort_gen += 1
        self._notify()

    # -- the bot's chats, and what parents do ------------------------------------------

    def add_chat(
        self,
        chat_id: int,
        *,
        first_name: str = "Kari",
        last_name: str | None = "Nordmann",
        username: str | None = None,
        language_code: str | None = "nb",
        chat_type: str | None = None,
        title: str | None = None,
    ) -> None:
        """Make `chat_id` known (a parent who opened the bot, or a group it is in)."""
        kind = chat_type or ("private" if chat_id > 0 else "group")
        if chat_id in self._chats:
            return
        self._chats[chat_id] = _Chat(
            id=chat_id,
            type=kind,
            first_name=first_name if kind == "private" else None,
            last_name=last_name if kind == "private" else None,
            username=username,
            title=title or (None if kind == "private" else "Foreldre 5B"),
            language_code=language_code,
        )

    def send_text(
        self,
        chat_id: int,
        text: str,
        *,
        user_id: int | None = None,
        reply_to: int | None = None,
        entities: list[dict[str, Any]] | None = None,
        language_code: str | None = "nb",
    ) -> dict[str, Any]:
        """A parent writes `text` in `chat_id` (optionally replying to message `reply_to`)."""
        extra: dict[str, Any] = {"text": text}
        if entities:
            extra["entities"] = entities
        return self._user_message(chat_id, extra, user_id, reply_to, language_code)

    def send_command(
        self, chat_id: int, command: str, args: str = "", *, language_code: str | None = "nb"
    ) -> dict[str, Any]:
        """A parent sends `/command args`, with the bot_command entity Telegram adds."""
        head = f"/{command}"
        text = f"{head} {args}" if args else head
        entity = {"offset": 0, "length": utf16_len(head), "type": "bot_command"}
        return self.send_text(chat_id, text, entities=[entity], language_code=language_code)

    def send_start(self, chat_id: int, payload: str | None = None) -> dict[str, Any]:
        """A parent opens `https://t.me/<bot>?start=<payload>` (or just presses Start)."""
        return self.send_command(chat_id, "start", payload or "")

    def share_contact(
        self,
        chat_id: int,
        phone_number: str,
        *,
        contact_user_id: int | bool | None = True,
        first_name: str = "Kari",
    ) -> dict[str, Any]:
        """A parent shares a contact: their own (`contact_user_id=True`, what the
        request_contact button sends), someone else's (an int), or one with no account
        (None). Telegram sends the number as the phone book has it, often without '+'."""
        self.add_chat(chat_id)
        contact: dict[str, Any] = {"phone_number": phone_number, "first_name": first_name}
        if contact_user_id is True:
            contact["user_id"] = chat_id
        elif isinstance(contact_user_id, int) and not isinstance(contact_user_id, bool):
            contact["user_id"] = contact_user_id
        return self._user_message(chat_id, {"contact": contact}, None, None, "nb")

    def send_media(
        self, chat_id: int, kind: str = "photo", *, caption: str | None = None
    ) -> dict[str, Any]:
        """A parent sends a photo, voice note, video, document, sticker, audio, ..."""
        if kind not in MEDIA_KINDS:
            raise ValueError(f"unknown media kind {kind!r}")
        extra: dict[str, Any] = {kind: _media_json(kind)}
        if kind == "animation":
            extra["document"] = _media_json("document")  # Telegram sends both
        if caption is not None:
            extra["caption"] = caption
        return self._user_message(chat_id, extra, None, None, "nb")

    def press_button(
        self, chat_id: int, message_id: int, data: str, *, user_id: int | None = None
    ) -> dict[str, Any]:
        """A parent presses the inline button with `data` on the bot's message."""
        chat = self._chats.get(chat_id)
        message = chat.messages.get(message_id) if chat else None
        if message is None or not message.get("from", {}).get("is_bot"):
            raise ValueError(f"no bot message {message_id} in chat {chat_id}")
        rows = (message.get("reply_markup") or {}).get("inline_keyboard") or []
        if not any(b.get("callback_data") == data for row in rows for b in row):
            raise ValueError(f"message {message_id} has no button with data {data!r}")
        query_id = str(secrets.randbelow(10**18) + 10**18)
        self._callbacks[query_id] = False
        assert chat is not None
        query = {
            "id": query_id,
            "from": self._user_json(user_id or chat_id, chat.language_code),
            "message": copy.deepcopy(message),
            "chat_instance": str(-(abs(chat_id) * 7919 % 10**18)),
            "data": data,
        }
        return self._add_update("callback_query", query)

    def inject(self, update: dict[str, Any]) -> dict[str, Any]:
        """Queue a raw update (any shape); an `update_id` is assigned when it has none."""
        update = copy.deepcopy(update)
        if "update_id" not in update:
            update["update_id"] = self._take_update_id()
        else:
            uid = update["update_id"]
            if isinstance(uid, int) and uid >= self._next_update_id:
                self._next_update_id = uid + 1
        # Telegram hands updates out in update_id order, whatever order they were made in.
        uid = update.get("update_id")
        at = len(self._queue)
        if isinstance(uid, int):
            while at and _key(self._queue[at - 1]) > uid:
                at -= 1
        self._queue.insert(at, update)
        if isinstance(update.get("update_id"), int):
            self.injected.append(update["update_id"])
        self._notify()
        return copy.deepcopy(update)

    # -- records ---------------------------------------------------------------------

    def texts(self, chat_id: int) -> list[str]:
        """What the bot sent to `chat_id`, in order (as it reads now, after edits)."""
        return [m.text for m in self.sent.get(chat_id, [])]

    @property
    def pending(self) -> list[int]:
        """Update ids not yet confirmed (by a getUpdates offset or a 2xx webhook answer)."""
        return [u["update_id"] for u in self._queue if isinstance(u.get("update_id"), int)]

    def history(self, chat_id: int) -> list[dict[str, Any]]:
        """Every message in the chat, the user's and the bot's, oldest first (Telegram's
        JSON, as it reads now); empty for an unknown chat."""
        chat = self._chats.get(chat_id)
        if chat is None:
            return []
        return [copy.deepcopy(chat.messages[k]) for k in sorted(chat.messages)]

    def message(self, chat_id: int, message_id: int) -> dict[str, Any] | None:
        """A message as the chat holds it (Telegram's JSON), or None."""
        chat = self._chats.get(chat_id)
        found = chat.messages.get(message_id) if chat else None
        return copy.deepcopy(found) if found is not None else None

    @property
    def webhook_url(self) -> str | None:
        return self._webhook.url if self._webhook else None

    @property
    def webhook_secret(self) -> str | None:
        return self._webhook.secret_token if self._webhook else None

    async def drain(self, limit_seconds: float = 5.0) -> None:
        """Wait until the webhook has taken (or given up on) every pending update."""
        async with asyncio.timeout(limit_seconds):
            while self._webhook is not None and self._deliverable():
                wakeup = self._wakeup
                await wakeup.wait()

    # -- HTTP ------------------------------------------------------------------------

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["method"]
        method = name.lower()
        call = ApiCall(name, {}, 0)
        self.calls.append(call)  # recorded when it starts: long polls end much later
        try:
            call.params = await self._params(request)
            if not secrets.compare_digest(
                request.match_info["token"].encode(), self.token.encode()
            ):
                raise ApiError(401, "Unauthorized")
            handler = self._handlers.get(method)
            if handler is None:
                raise ApiError(404, "Not Found: method not found")
            if self.latency > 0:
                await asyncio.sleep(self.latency)
            self._take_failure(method)
            result = await handler(call.params)
        except ApiError as e:
            call.status = e.status
            return e.response()
        except _Abort:
            if request.transport is not None:
                request.transport.abort()
            return web.Response(status=499)
        call.status = 200
        return web.json_response({"ok": True, "result": result})

    async def _params(self, request: web.Request) -> dict[str, Any]:
        params: dict[str, Any] = dict(request.query)
        if request.method != "POST" or not request.body_exists:
            return params
        if request.content_type == "application/json":
            try:
                body = await request.json()
            except ValueError:
                raise ApiError(400, "Bad Request: can't parse JSON request body") from None
            if not isinstance(body, dict):
                raise ApiError(400, "Bad Request: request body must be a JSON object")
            params.update(body)
        elif request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
            form = await request.post()
            params.update({k: v for k, v in form.items() if isinstance(v, str)})
        return params

    def _take_failure(self, method: str) -> None:
        for failure in self._failures:
            if failure.remaining <= 0 or failure.method not in (None, method):
                continue
            failure.remaining -= 1
            raise ApiError(failure.status, failure.description, failure.retry_after)

    # -- methods ---------------------------------------------------------------------

    async def _get_me(self, p: dict[str, Any]) -> Any:
        return {
            "id": self.bot_id,
            "is_bot": True,
            "first_name": self.first_name,
            "username": self.username,
            "can_join_groups": True,
            "can_read_all_group_messages": False,
            "supports_inline_queries": False,
            "can_connect_to_business": False,
            "has_main_web_app": False,
        }

    async def _get_updates(self, p: dict[str, Any]) -> Any:
        if self._webhook is not None:
            raise ApiError(
                409,
                "Conflict: can't use getUpdates method while webhook is active; "
                "use deleteWebhook to delete the webhook first",
            )
        offset = _int(p, "offset")
        limit = min(100, max(1, _int(p, "limit") or 100))
        timeout = max(0, _int(p, "timeout") or 0)
        allowed = _json(p, "allowed_updates")
        if allowed is not None:
            if not isinstance(allowed, list):
                raise ApiError(400, "Bad Request: can't parse allowed updates")
            self._allowed = [str(a) for a in allowed]
        record = PollRecord(offset, timeout)
        self.polls.append(record)
        if offset is not None:
            self._confirm_below(offset)
        if self._drop_polls > 0:
            self._drop_polls -= 1
            record.outcome = "dropped"
            raise _Abort
        self._poll_gen += 1
        generation, abort_gen = self._poll_gen, self._abort_gen
        self._notify()  # an older long poll sees it was superseded
        deadline = time.monotonic() + timeout
        while True:
            if self._poll_gen != generation:
                record.outcome = "conflict"
                raise ApiError(
                    409,
                    "Conflict: terminated by other getUpdates request; "
                    "make sure that only one bot instance is running",
                )
            if self._abort_gen != abort_gen:
                record.outcome = "aborted"
                raise _Abort
            batch = self._deliverable()[:limit]
            remaining = deadline - time.monotonic()
            if batch or remaining <= 0:
                record.returned = [u["update_id"] for u in batch if "update_id" in u]
                return copy.deepcopy(batch)
            wakeup = self._wakeup
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await wakeup.wait()

    async def _send_message(self, p: dict[str, Any]) -> Any:
        chat = self._target(p)
        text = _text(p)
        markup = _markup(p)
        reply_to = self._reply_target(chat, p)
        message_id = chat.next_message_id
        chat.next_message_id += 1
        message: dict[str, Any] = {
            "message_id": message_id,
            "from": self._bot_json(),
            "chat": chat.json(),
            "date": int(time.time()),
            "text": text,
        }
        if reply_to is not None:
            quoted = copy.deepcopy(chat.messages[reply_to])
            quoted.pop("reply_to_message", None)  # Telegram nests one level only
            message["reply_to_message"] = quoted
        if markup is not None and "inline_keyboard" in markup:
            message["reply_markup"] = markup  # only inline keyboards are part of a message
        chat.messages[message_id] = message
        self.sent[chat.id].append(
            SentMessage(chat.id, message_id, text, markup, reply_to, time.monotonic())
        )
        return message

    async def _edit_message_text(self, p: dict[str, Any]) -> Any:
        chat, message = self._editable(p)
        if "text" not in message:
            raise ApiError(400, "Bad Request: there is no text in the message to edit")
        text = _text(p)
        markup = _markup(p, inline_only=True)
        if text == message["text"] and markup == message.get("reply_markup"):
            raise ApiError(400, NOT_MODIFIED)
        return self._apply_edit(chat, message, text, markup)

    async def _edit_message_reply_markup(self, p: dict[str, Any]) -> Any:
        chat, message = self._editable(p)
        markup = _markup(p, inline_only=True)
        if markup == message.get("reply_markup"):
            raise ApiError(400, NOT_MODIFIED)
        return self._apply_edit(chat, message, message.get("text", ""), markup)

    async def _answer_callback_query(self, p: dict[str, Any]) -> Any:
        query_id = str(p.get("callback_query_id") or "")
        if not query_id:
            raise ApiError(400, 'Bad Request: parameter "callback_query_id" is required')
        if self._callbacks.get(query_id, True):
            raise ApiError(
                400,
                "Bad Request: query is too old and response timeout expired or query ID is invalid",
            )
        text = p.get("text")
        if text is not None and utf16_len(str(text)) > MAX_CALLBACK_ANSWER:
            raise ApiError(400, "Bad Request: MESSAGE_TOO_LONG")
        self._callbacks[query_id] = True
        self.callback_answers.append(
            CallbackAnswer(query_id, None if text is None else str(text), _bool(p, "show_alert"))
        )
        return True

    async def _set_my_commands(self, p: dict[str, Any]) -> Any:
        commands = _json(p, "commands")
        if not isinstance(commands, list) or len(commands) > 100:
            raise ApiError(400, "Bad Request: can't parse commands JSON object")
        parsed: list[tuple[str, str]] = []
        for c in commands:
            if not isinstance(c, dict):
                raise ApiError(400, "Bad Request: can't parse BotCommand")
            name, description = c.get("command"), c.get("description")
            if not isinstance(name, str) or not _COMMAND.match(name):
                raise ApiError(400, "Bad Request: BOT_COMMAND_INVALID")
            if not isinstance(description, str) or not 1 <= len(description.strip()) <= 256:
                raise ApiError(400, "Bad Request: BOT_COMMAND_DESCRIPTION_INVALID")
            parsed.append((name, description))
        self.commands[self._commands_key(p)] = parsed
        return True

    async def _get_my_commands(self, p: dict[str, Any]) -> Any:
        found = self.commands.get(self._commands_key(p), [])
        return [{"command": c, "description": d} for c, d in found]

    async def _delete_my_commands(self, p: dict[str, Any]) -> Any:
        self.commands.pop(self._commands_key(p), None)
        return True

    async def _set_webhook(self, p: dict[str, Any]) -> Any:
        url = str(p.get("url") or "")
        if not url:
            return await self._delete_webhook(p)
        if not url.startswith(("https://", "http://")):
            raise ApiError(400, "Bad Request: bad webhook: An HTTPS URL must be provided")
        secret = p.get("secret_token")
        if secret is not None and not _SECRET_TOKEN.match(str(secret)):
            raise ApiError(400, "Bad Request: secret token contains unallowed characters")
        allowed = _json(p, "allowed_updates")
        if allowed is not None and not isinstance(allowed, list):
            raise ApiError(400, "Bad Request: can't parse allowed updates")
        if _bool(p, "drop_pending_updates"):
            self._drop_all()
        if allowed is not None:
            self._allowed = [str(a) for a in allowed]
        await self._stop_deliverer()
        self._webhook = _Webhook(
            url=url,
            secret_token=None if secret is None else str(secret),
            max_connections=_int(p, "max_connections") or 40,
            allowed_updates=self._allowed,
        )
        self._poll_gen += 1  # a long poll in progress ends with a conflict
        self._notify()
        self._deliverer = asyncio.ensure_future(self._deliver_loop())
        return True

    async def _delete_webhook(self, p: dict[str, Any]) -> Any:
        if _bool(p, "drop_pending_updates"):
            self._drop_all()
        await self._stop_deliverer()
        self._webhook = None
        return True

    async def _get_webhook_info(self, p: dict[str, Any]) -> Any:
        hook = self._webhook
        info: dict[str, Any] = {
            "url": hook.url if hook else "",
            "has_custom_certificate": False,
            "pending_update_count": len(self._queue),
        }
        if hook is not None:
            info["max_connections"] = hook.max_connections
            if hook.allowed_updates is not None:
                info["allowed_updates"] = hook.allowed_updates
            if hook.last_error_date is not None:
                info["last_error_date"] = hook.last_error_date
                info["last_error_message"] = hook.last_error_message
        return info

    async def _send_chat_action(self, p: dict[str, Any]) -> Any:
        chat = self._target(p)
        action = str(p.get("action") or "")
        if action not in CHAT_ACTIONS:
            raise ApiError(400, "Bad Request: wrong parameter action in request")
        self.chat_actions.append((chat.id, action))
        return True

    # -- webhook delivery ------------------------------------------------------------

    async def _deliver_loop(self) -> None:
        failures: dict[int, int] = defaultdict(int)
        while (hook := self._webhook) is not None:
            ready = self._deliverable()
            if not ready:
                wakeup = self._wakeup
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(1.0):
                        await wakeup.wait()
                continue
            update = ready[0]
            uid = update.get("update_id")
            status, error = await self._post_update(hook, update)
            self.webhook_attempts.append(
                WebhookAttempt(uid if isinstance(uid, int) else -1, status, error)
            )
            if 200 <= status < 300:
                self._remove(update)
                continue
            hook.last_error_date = int(time.time())
            hook.last_error_message = error or f"Wrong response from the webhook: {status}"
            key = uid if isinstance(uid, int) else -1
            failures[key] += 1
            if failures[key] >= self.webhook_max_attempts:
                self._remove(update)  # Telegram gives up after "a reasonable number of attempts"
                continue
            await asyncio.sleep(self.webhook_retry_delay)

    async def _post_update(self, hook: _Webhook, update: dict[str, Any]) -> tuple[int, str | None]:
        assert self._session is not None, "FakeTelegram is not started"
        headers = {"Content-Type": "application/json"}
        if hook.secret_token is not None:
            headers[SECRET_HEADER] = hook.secret_token
        timeout = aiohttp.ClientTimeout(total=self.webhook_timeout)
        try:
            async with self._session.post(
                hook.url, data=json.dumps(update), headers=headers, timeout=timeout
            ) as resp:
                await resp.read()
                return resp.status, None
        except (TimeoutError, aiohttp.ClientError) as e:
            return 0, type(e).__name__

    async def _stop_deliverer(self) -> None:
        task, self._deliverer = self._deliverer, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    # -- internals -------------------------------------------------------------------

    def _notify(self) -> None:
        # Wake every waiter once; later waiters take the fresh event.
        self._wakeup.set()
        self._wakeup = asyncio.Event()

    def _take_update_id(self) -> int:
        uid = self._next_update_id
        self._next_update_id += 1
        return uid

    def _add_update(self, kind: str, body: dict[str, Any]) -> dict[str, Any]:
        return self.inject({"update_id": self._take_update_id(), kind: body})

    def _allows(self, update: dict[str, Any]) -> bool:
        kinds = [k for k in update if k != "update_id"]
        if not kinds:
            return True  # a malformed update still reaches the bot; its shape is the test
        if not self._allowed:
            return kinds[0] not in DEFAULT_EXCLUDED
        return kinds[0] in self._allowed

    def _deliverable(self) -> list[dict[str, Any]]:
        # Updates of types the bot did not ask for are dropped, as Telegram never makes them.
        for update in [u for u in self._queue if not self._allows(u)]:
            self._remove(update)
        return list(self._queue)

    def _remove(self, update: dict[str, Any]) -> None:
        self._queue.remove(update)
        if isinstance(update.get("update_id"), int):
            self.confirmed.append(update["update_id"])
        self._notify()

    def _confirm_below(self, offset: int) -> None:
        if offset < 0:
            keep = self._queue[offset:]
            for update in [u for u in self._queue if u not in keep]:
                self._remove(update)
            return
        for update in list(self._queue):
            uid = update.get("update_id")
            if not isinstance(uid, int) or uid < offset:
                self._remove(update)

    def _drop_all(self) -> None:
        for update in list(self._queue):
            self._remove(update)

    def _chat(self, chat_id: int) -> _Chat:
        self.add_chat(chat_id)
        return self._chats[chat_id]

    def _user_json(self, user_id: int, language_code: str | None) -> dict[str, Any]:
        chat = self._chats.get(user_id)
        out: dict[str, Any] = {
            "id": user_id,
            "is_bot": False,
            "first_name": (chat.first_name if chat and chat.first_name else "Kari"),
        }
        if chat and chat.last_name:
            out["last_name"] = chat.last_name
        if language_code:
            out["language_code"] = language_code
        return out

    def _bot_json(self) -> dict[str, Any]:
        return {
            "id": self.bot_id,
            "is_bot": True,
            "first_name": self.first_name,
            "username": self.username,
        }

    def _user_message(
        self,
        chat_id: int,
        extra: dict[str, Any],
        user_id: int | None,
        reply_to: int | None,
        language_code: str | None,
    ) -> dict[str, Any]:
        chat = self._chat(chat_id)
        sender = user_id if user_id is not None else chat_id
        message_id = chat.next_message_id
        chat.next_message_id += 1
        message: dict[str, Any] = {
            "message_id": message_id,
            "from": self._user_json(sender, language_code),
            "chat": chat.json(),
            "date": int(time.time()),
            **extra,
        }
        if reply_to is not None:
            quoted = chat.messages.get(reply_to)
            if quoted is None:
                raise ValueError(f"no message {reply_to} in chat {chat_id}")
            quoted = copy.deepcopy(quoted)
            quoted.pop("reply_to_message", None)
            message["reply_to_message"] = quoted
        chat.messages[message_id] = message
        return self._add_update("message", copy.deepcopy(message))

    def _target(self, p: dict[str, Any]) -> _Chat:
        raw = p.get("chat_id")
        if raw is None or raw == "":
            raise ApiError(400, "Bad Request: chat_id is empty")
        chat: _Chat | None = None
        if isinstance(raw, str) and raw.startswith("@"):
            chat = next((c for c in self._chats.values() if c.username == raw[1:]), None)
        else:
            try:
                chat = self._chats.get(int(raw))
            except (TypeError, ValueError):
                chat = None
        if chat is None:
            raise ApiError(400, "Bad Request: chat not found")
        if chat.forbidden:
            raise ApiError(403, chat.forbidden)
        return chat

    def _reply_target(self, chat: _Chat, p: dict[str, Any]) -> int | None:
        params = _json(p, "reply_parameters")
        if isinstance(params, dict):
            target, allow = (
                params.get("message_id"),
                bool(params.get("allow_sending_without_reply")),
            )
        else:
            target, allow = _int(p, "reply_to_message_id"), _bool(p, "allow_sending_without_reply")
        if target is None:
            return None
        if not isinstance(target, int) or target not in chat.messages:
            if allow:
                return None
            raise ApiError(400, "Bad Request: message to be replied not found")
        return target

    def _editable(self, p: dict[str, Any]) -> tuple[_Chat, dict[str, Any]]:
        chat = self._target(p)
        message_id = _int(p, "message_id")
        message = chat.messages.get(message_id) if message_id is not None else None
        if message is None:
            raise ApiError(400, "Bad Request: message to edit not found")
        if message.get("from", {}).get("id") != self.bot_id:
            raise ApiError(400, "Bad Request: message can't be edited")
        return chat, message

    def _apply_edit(
        self, chat: _Chat, message: dict[str, Any], text: str, markup: dict[str, Any] | None
    ) -> dict[str, Any]:
        message["text"] = text
        message["edit_date"] = int(time.time())
        if markup is None:
            message.pop("reply_markup", None)
        else:
            message["reply_markup"] = markup
        for record in self.sent.get(chat.id, []):
            if record.message_id == message["message_id"]:
                record.text, record.reply_markup = text, markup
                record.edits += 1
        return copy.deepcopy(message)

    def _commands_key(self, p: dict[str, Any]) -> str:
        language = str(p.get("language_code") or "")
        if language and not _LANGUAGE.match(language):
            raise ApiError(400, "Bad Request: invalid language code specified")
        scope = _json(p, "scope")
        scope_type = scope.get("type") if isinstance(scope, dict) else "default"
        return language if scope_type in (None, "default") else f"{scope_type}:{language}"


def _key(update: dict[str, Any]) -> int:
    uid = update.get("update_id")
    return uid if isinstance(uid, int) else -1


# -- parameter parsing ------------------------------------------------------------------


def _int(p: dict[str, Any], key: str) -> int | None:
    value = p.get(key)
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise ApiError(400, f"Bad Request: invalid {key} specified")
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ApiError(400, f"Bad Request: invalid {key} specified") from None


def _bool(p: dict[str, Any], key: str) -> bool:
    return p.get(key) in (True, "true", "True", "1", 1)


def _json(p: dict[str, Any], key: str) -> Any:
    value = p.get(key)
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            raise ApiError(400, f"Bad Request: can't parse {key} JSON object") from None
    return value


def _text(p: dict[str, Any]) -> str:
    text = p.get("text")
    if not isinstance(text, str) or not text.strip():
        raise ApiError(400, "Bad Request: message text is empty")
    if utf16_len(text) > MAX_TEXT:
        raise ApiError(400, "Bad Request: message is too long")
    return text


def _markup(p: dict[str, Any], *, inline_only: bool = False) -> dict[str, Any] | None:
    markup = _json(p, "reply_markup")
    if markup is None:
        return None
    if not isinstance(markup, dict):
        raise ApiError(400, "Bad Request: can't parse reply keyboard markup JSON object")
    if "inline_keyboard" in markup:
        rows = markup["inline_keyboard"]
        if not isinstance(rows, list) or not all(isinstance(r, list) for r in rows):
            raise ApiError(400, "Bad Request: can't parse inline keyboard button")
        for button in (b for row in rows for b in row):
            if not isinstance(button, dict) or not str(button.get("text") or "").strip():
                raise ApiError(
                    400, "Bad Request: text buttons are unallowed in the inline keyboard"
                )
            data = button.get("callback_data")
            if data is not None and not 1 <= len(str(data).encode()) <= MAX_CALLBACK_DATA:
                raise ApiError(400, "Bad Request: BUTTON_DATA_INVALID")
        return markup
    if inline_only:
        raise ApiError(400, "Bad Request: inline keyboard expected")
    if "keyboard" in markup:
        rows = markup["keyboard"]
        if not isinstance(rows, list) or not rows or not all(isinstance(r, list) for r in rows):
            raise ApiError(400, "Bad Request: can't parse keyboard button")
        for button in (b for row in rows for b in row):
            text = button.get("text") if isinstance(button, dict) else button
            if not isinstance(text, str) or not text.strip():
                raise ApiError(400, "Bad Request: keyboard button text is empty")
        return markup
    if markup.get("remove_keyboard") is True or markup.get("force_reply") is True:
        return markup
    raise ApiError(400, "Bad Request: can't parse reply keyboard markup JSON object")


def _media_json(kind: str) -> Any:
    file_id = "AgAC" + secrets.token_urlsafe(24)
    unique = "AQAD" + secrets.token_urlsafe(8)
    if kind == "photo":
        return [
            {"file_id": file_id + s, "file_unique_id": unique + s, "width": w, "height": h}
            for s, w, h in (("s", 90, 67), ("m", 320, 240), ("x", 1280, 960))
        ]
    base: dict[str, Any] = {"file_id": file_id, "file_unique_id": unique, "file_size": 48213}
    extra: dict[str, dict[str, Any]] = {
        "voice": {"duration": 4, "mime_type": "audio/ogg"},
        "audio": {"duration": 95, "mime_type": "audio/mpeg", "title": "Opptak"},
        "video": {"duration": 12, "width": 720, "height": 1280, "mime_type": "video/mp4"},
        "video_note": {"duration": 8, "length": 384},
        "document": {"file_name": "legeerklaering.pdf", "mime_type": "application/pdf"},
        "sticker": {
            "type": "regular",
            "width": 512,
            "height": 512,
            "is_animated": False,
            "is_video": False,
            "emoji": "🤒",
        },
        "animation": {"duration": 3, "width": 320, "height": 240, "mime_type": "video/mp4"},
    }
    return {**base, **extra[kind]}
