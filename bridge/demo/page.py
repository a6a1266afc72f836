"""The demo's page and the small JSON endpoints behind it.

The page plays every outside party, and what it shows comes from where those parties
would see it: a parent's phone is what the Twilio and Telegram fakes hold for that
number or chat, a mailbox is what the SMTP fake received for that address, and an
announcement's progress is the bridge's own JSON API. A parent texting goes through the
Twilio fake (which signs the webhook as Twilio does), chatting through the Telegram
fake, and mail is real SMTP to the bridge's inbound listener. Only the list of people
to pick comes from the roster the demo generated.
"""

from __future__ import annotations

import json
import time
from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid, parsedate_to_datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import aiosmtplib
from aiohttp import web

if TYPE_CHECKING:
    from bridge.demo.run import Parts

STATIC = Path(__file__).with_name("static")
PARTS: web.AppKey[Parts] = web.AppKey("parts")
SESSION: web.AppKey[aiohttp.ClientSession] = web.AppKey("session", aiohttp.ClientSession)
SENT: web.AppKey[list[dict[str, Any]]] = web.AppKey("sent", list)  # mail the page sent
MAX_TEXT = 4000


def build_page(parts: Parts) -> web.Application:
    app = web.Application(client_max_size=256 * 1024)
    app[PARTS] = parts
    app[SENT] = []

    async def session_context(app: web.Application) -> Any:
        app[SESSION] = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        yield
        await app[SESSION].close()

    app.cleanup_ctx.append(session_context)
    r = app.router
    r.add_get("/", index)
    r.add_static("/static/", STATIC)
    r.add_get("/demo/directory", directory)
    r.add_get("/demo/phone/{guardian}", phone)
    r.add_post("/demo/sms", send_sms)
    r.add_post("/demo/telegram", send_telegram)
    r.add_post("/demo/mail", send_mail)
    r.add_get("/demo/mailbox/{mailbox}", mailbox)
    r.add_post("/demo/announcements", announce)
    r.add_get("/demo/announcements/{id}", announcement)
    r.add_post("/demo/digest", digest)
    return app


# --- helpers ------------------------------------------------------------------------


def _parts(request: web.Request) -> Parts:
    return request.app[PARTS]


def _problem(status: int, detail: str) -> web.Response:
    return web.json_response({"error": detail}, status=status)


async def _body(request: web.Request) -> dict[str, Any]:
    try:
        data = await request.json()
    except ValueError:
        raise web.HTTPBadRequest(text="a JSON object is required") from None
    if not isinstance(data, dict):
        raise web.HTTPBadRequest(text="a JSON object is required")
    return data


def _text(data: dict[str, Any], name: str, *, required: bool = True) -> str:
    value = data.get(name, "")
    if not isinstance(value, str) or (required and not value.strip()) or len(value) > MAX_TEXT:
        raise web.HTTPBadRequest(text=f"{name}: a text of 1 to {MAX_TEXT} characters")
    return value


def _guardian(request: web.Request, guardian_id: Any) -> Any:
    parent = _parts(request).municipality.guardian(str(guardian_id))
    if parent is None:
        raise web.HTTPNotFound(text="no such parent in the demo")
    return parent


def _when(value: Any) -> float:
    """A Twilio RFC 2822 date or a mail's Date header -> epoch seconds (0 when missing)."""
    if not value:
        return 0.0
    try:
        return parsedate_to_datetime(str(value)).timestamp()
    except (TypeError, ValueError):
        return 0.0


def _plain(message: EmailMessage) -> str:
    part = message.get_body(("plain",))
    if part is None:
        return ""
    content = part.get_content()  # type: ignore[attr-defined]
    return content if isinstance(content, str) else ""


def _mail_json(index: int, message: EmailMessage, *, mine: bool = False) -> dict[str, Any]:
    return {
        "n": index,
        "mine": mine,
        "from": str(message.get("From", "")),
        "to": str(message.get("To", "")),
        "subject": str(message.get("Subject", "")),
        "date": str(message.get("Date", "")),
        "at": _when(message.get("Date")),
        "reply_to": str(message.get("Reply-To", "")),
        "message_id": str(message.get("Message-ID", "")),
        "text": _plain(message),
        "html": message.get_body(("html",)) is not None,
    }


def _received(parts: Parts, address: str) -> list[dict[str, Any]]:
    """What the SMTP fake received for `address`, oldest first."""
    address = address.lower()
    return [
        _mail_json(i, m.message)
        for i, m in enumerate(parts.smtp.messages)
        if address in (r.lower() for r in m.rcpt_tos)
    ]


# --- the page -----------------------------------------------------------------------


async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC / "index.html")


async def directory(request: web.Request) -> web.Response:
    parts = _parts(request)
    units = parts.municipality.directory()
    units["reply_domain"] = parts.settings.email.reply_domain
    units["bot_username"] = parts.settings.telegram.bot_username
    return web.json_response(units)


# --- a parent's phone ---------------------------------------------------------------


async def phone(request: web.Request) -> web.Response:
    """The parent's SMS thread with the school's number, their Telegram chat with the bot,
    and their mail (received by the SMTP fake, and sent from this page)."""
    parts = _parts(request)
    parent = _guardian(request, request.match_info["guardian"])
    sms = [
        {
            "mine": m["from"] == parent.mobile,
            "text": m["body"],
            "at": _when(m["date_sent"] or m["date_created"]),
            "status": m["status"],
        }
        for m in reversed(parts.twilio.messages)
        if parent.mobile in (m["from"], m["to"])
    ]
    bot_id = parts.telegram.bot_id
    chat = []
    for m in parts.telegram.history(parent.telegram_chat):
        rows = (m.get("reply_markup") or {}).get("inline_keyboard") or []
        chat.append(
            {
                "id": m["message_id"],
                "mine": m.get("from", {}).get("id") != bot_id,
                "text": m.get("text") or ("[kontakt delt]" if "contact" in m else "[media]"),
                "at": float(m.get("date", 0)),
                "buttons": [
                    [{"text": b.get("text", ""), "data": b.get("callback_data", "")} for b in row]
                    for row in rows
                ],
            }
        )
    mail = _received(parts, parent.email) + [
        s["mail"] for s in request.app[SENT] if s["who"] == parent.id
    ]
    mail.sort(key=lambda m: m["at"])
    return web.json_response(
        {
            "sms": sms,
            "telegram": chat,
            "email": mail,
            "school_number": parts.settings.sms.from_number,
        }
    )


async def send_sms(request: web.Request) -> web.Response:
    """The parent texts the school's number: the Twilio fake records it and posts the
    signed webhook to the bridge, as Twilio would."""
    parts = _parts(request)
    data = await _body(request)
    parent = _guardian(request, data.get("guardian"))
    text = _text(data, "text")
    status, _ = await parts.twilio.send_inbound(parent.mobile, parts.settings.sms.from_number, text)
    return web.json_response({"webhook_status": status})


async def send_telegram(request: web.Request) -> web.Response:
    """The parent writes to the bot, shares their contact, or presses a button."""
    parts = _parts(request)
    data = await _body(request)
    parent = _guardian(request, data.get("guardian"))
    chat = parent.telegram_chat
    bot = parts.telegram
    bot.add_chat(
        chat,
        first_name=parent.first_name,
        last_name=parent.last_name,
        language_code=parent.language,
    )
    action = data.get("action", "text")
    try:
        if action == "contact":
            bot.share_contact(chat, parent.mobile.lstrip("+"), first_name=parent.first_name)
        elif action == "button":
            bot.press_button(chat, int(data.get("message_id", 0)), str(data.get("data", "")))
        elif action == "text":
            text = _text(data, "text")
            if text.startswith("/") and " " not in text.strip():
                bot.send_command(chat, text.strip()[1:], language_code=parent.language)
            else:
                bot.send_text(chat, text, language_code=parent.language)
        else:
            return _problem(400, "action: text, contact or button")
    except ValueError as e:
        return _problem(400, str(e))
    return web.json_response({"ok": True})


# --- mail ---------------------------------------------------------------------------


async def send_mail(request: web.Request) -> web.Response:
    """Real SMTP to the bridge's inbound listener, from a parent or a staff mailbox."""
    parts = _parts(request)
    data = await _body(request)
    who = str(data.get("from", ""))
    parent = parts.municipality.guardian(who)
    if parent is not None:
        sender, name = parent.email, parent.name
    else:
        address = parts.municipality.mailbox_address(who)
        if address is None:
            return _problem(404, "no such parent or mailbox in the demo")
        sender, name = address, who
    to = _text(data, "to").strip()
    subject = _text(data, "subject", required=False).strip() or "(uten emne)"
    body = _text(data, "text")
    msg = EmailMessage()
    msg["From"] = f'"{name}" <{sender}>' if parent is not None else sender
    msg["To"] = to
    msg["Subject"] = subject
    msg["Date"] = format_datetime(datetime.now().astimezone())
    msg["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2] or "demo.invalid")
    in_reply_to = str(data.get("in_reply_to", "") or "")
    if in_reply_to:
        msg["In-Reply-To"] = in_reply_to
        msg["References"] = in_reply_to
    msg.set_content(body)
    listener = parts.bridge.mail_listener
    try:
        _, answer = await aiosmtplib.send(
            msg, hostname="127.0.0.1", port=listener.port, sender=sender, recipients=[to]
        )
    except aiosmtplib.SMTPException as e:
        return web.json_response({"ok": False, "smtp": str(e)}, status=200)
    request.app[SENT].append(
        {"who": who, "mail": {**_mail_json(-1, msg, mine=True), "at": time.time()}}
    )
    return web.json_response({"ok": True, "smtp": answer})


async def mailbox(request: web.Request) -> web.Response:
    parts = _parts(request)
    who = request.match_info["mailbox"]
    address = parts.municipality.mailbox_address(who)
    if address is None:
        raise web.HTTPNotFound(text="no such mailbox in the demo")
    received = _received(parts, address)
    sent = [s["mail"] for s in request.app[SENT] if s["who"] == who]
    return web.json_response({"received": received[::-1], "sent": sent[::-1]})


# --- announcements, through the bridge's own JSON API --------------------------------


async def _api(request: web.Request, method: str, path: str, payload: Any = None) -> web.Response:
    parts = _parts(request)
    headers = {"Authorization": f"Bearer {parts.api_key}"}
    async with request.app[SESSION].request(
        method, parts.api_url + path, json=payload, headers=headers
    ) as resp:
        body = await resp.json(content_type=None)
        return web.json_response(body, status=resp.status)


async def announce(request: web.Request) -> web.Response:
    data = await _body(request)
    payload = {
        "unit_id": str(data.get("unit_id", "")),
        "text": _text(data, "text"),
        "urgent": bool(data.get("urgent")),
    }
    subject = _text(data, "subject", required=False).strip()
    if subject:
        payload["subject"] = subject
    groups = [str(g) for g in data.get("group_ids") or [] if g]
    if groups:
        payload["group_ids"] = groups
    return await _api(request, "POST", "/announcements", payload)


async def announcement(request: web.Request) -> web.Response:
    """The API's view of the announcement (with its delivery summary), and how many
    copies of its text each fake has received so far."""
    parts = _parts(request)
    answer = await _api(request, "GET", f"/announcements/{request.match_info['id']}")
    if answer.status != 200:
        return answer
    assert isinstance(answer.body, bytes)
    data = json.loads(answer.body)
    text = str(data.get("text", ""))
    data["fakes"] = {
        "sms": sum(1 for m in parts.twilio.sent if text in m.body),
        "telegram": sum(1 for msgs in parts.telegram.sent.values() for m in msgs if text in m.text),
        "email": sum(1 for m in parts.smtp.messages if text in _plain(m.message)),
    }
    return web.json_response(data)


async def digest(request: web.Request) -> web.Response:
    """Send a unit's absence digest for today now, as `skolebro digest run` does,
    instead of waiting for the scheduler's morning run."""
    from bridge.digests import DigestError, run_digest

    parts = _parts(request)
    data = await _body(request)
    unit_id = str(data.get("unit_id", ""))
    kind = str(data.get("kind", "absence"))
    today = datetime.now(parts.settings.tz).date()
    try:
        result = await run_digest(
            parts.bridge.engine, parts.settings, kind=kind, unit_id=unit_id, day=today
        )
    except DigestError as e:
        return _problem(400, str(e))
    parts.bridge.outbox.wake.set()
    return web.json_response(
        {
            "day": today.isoformat(),
            "already": result.already,
            "deliveries": result.deliveries,
        }
    )
