"""Inbound e-mail: which addresses we take mail for, and what a mail means.

Mail comes to `r-<token>@reply_domain` (a reply to something we sent) or
`<unit_id>@reply_domain` (a guardian writing first). A token's mail counts only from
the token's own recipient; anything else has no effect and gets no answer, since an
answer to a forged sender would be backscatter (SPEC section 5).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from bridge import conversation, outbox, reply_tokens, threads
from bridge.config import Settings
from bridge.conversation import Context, Outcome
from bridge.directory import find_sender
from bridge.domain import Channel, mail_content
from bridge.email_reply import strip_reply
from bridge.i18n import translate
from bridge.routing import load_routes
from bridge.staff_notices import reply_address
from bridge.store import tables as t
from bridge.understand import redact

log = logging.getLogger("skolebro.mail")
ANSWER_WINDOW = timedelta(hours=24)


def _split(address: str) -> tuple[str, str]:
    local, _, domain = address.strip().rpartition("@")
    return local, domain.lower()


async def recipient_ok(engine: AsyncEngine, settings: Settings, address: str) -> bool:
    """Whether the listener takes mail for this recipient (else 550 at RCPT)."""
    local, domain = _split(address)
    if domain != settings.email.reply_domain.lower() or not local:
        return False
    async with engine.connect() as conn:
        token = reply_tokens.token_of(local)
        if token is not None:
            return await reply_tokens.find(conn, token) is not None
        unit = await conn.scalar(
            select(t.units.c.id).where(t.units.c.id == local, t.units.c.active.is_(True))
        )
        return unit is not None


async def handle_email(
    conn: AsyncConnection,
    settings: Settings,
    *,
    event_id: int,
    sender: str,
    text: str,
    payload: dict[str, Any],
    received_at: datetime,
    media_count: int,
) -> Outcome:
    """Process one accepted mail; returns what to keep of its body."""
    local, _ = _split(str(payload.get("to", "")))
    new_text = strip_reply(text).strip() or str(payload.get("subject") or "").strip()
    token = reply_tokens.token_of(local)
    binding = await reply_tokens.find(conn, token, received_at) if token else None
    if token is not None:
        if binding is None or binding.address != sender.lower():
            log.info("mail event %s: not from the token's recipient; no effect", event_id)
            return Outcome(body=None)
        if binding.recipient_kind in ("staff", "unit"):
            if not await _still_staff(conn, binding):
                log.info("mail event %s: the token's staff no longer serve there", event_id)
                return Outcome(body=None)
            return await _staff_reply(conn, settings, binding, event_id, new_text, received_at)
    guardian = await find_sender(conn, Channel.EMAIL, sender, settings.bridge.default_language)
    if guardian is None:
        log.info("mail event %s: sender is not a guardian; no effect", event_id)
        return Outcome(body=None)
    ctx = Context(
        conn=conn,
        settings=settings,
        channel="email",
        address=sender.lower(),
        sender=guardian,
        event_id=event_id,
        received_at=received_at,
        thread_hint=binding.thread_id if binding else None,
        unit_hint=None if token else local.lower(),
    )
    return await conversation.handle(ctx, new_text, media_count)


async def _still_staff(conn: AsyncConnection, binding: reply_tokens.ReplyToken) -> bool:
    """A staff token acts only while its holder is active staff of the thread's unit
    (a unit's own address, while the unit is active): the roster takes it back at once."""
    unit_id = binding.unit_id
    if binding.thread_id:
        unit_id = await conn.scalar(
            select(t.threads.c.unit_id).where(t.threads.c.id == binding.thread_id)
        )
    if unit_id is None:
        return False
    if binding.recipient_kind == "unit":
        active = await conn.scalar(select(t.units.c.active).where(t.units.c.id == unit_id))
        return bool(active)
    s, su = t.staff, t.staff_units
    found = await conn.scalar(
        select(s.c.id)
        .join(su, su.c.staff_id == s.c.id)
        .where(
            s.c.id == binding.recipient_id,
            s.c.active.is_(True),
            su.c.unit_id == unit_id,
            su.c.active.is_(True),
        )
    )
    return found is not None


async def _staff_reply(
    conn: AsyncConnection,
    settings: Settings,
    binding: reply_tokens.ReplyToken,
    event_id: int,
    text: str,
    received_at: datetime,
) -> Outcome:
    """A staff member answers a thread: store it and send it to the guardian."""
    staff_lang = settings.bridge.default_language
    if binding.recipient_kind == "staff":
        staff_lang = (
            await conn.scalar(
                select(t.staff.c.language).where(t.staff.c.id == binding.recipient_id)
            )
            or staff_lang
        )
    if not binding.thread_id or not text:
        return Outcome(body=text or None)
    _, categories = redact(text)
    if categories:
        # Not sent on any channel: the staff member is told why, and asked to call.
        local = await reply_tokens.issue(
            conn,
            recipient_kind=binding.recipient_kind,
            recipient_id=binding.recipient_id,
            address=binding.address,
            days=settings.email.reply_token_days,
            thread_id=binding.thread_id,
            unit_id=binding.unit_id,
        )
        await outbox.enqueue(
            conn,
            kind="notification",
            channel="email",
            address=binding.address,
            staff_id=binding.recipient_id if binding.recipient_kind == "staff" else None,
            thread_id=binding.thread_id,
            subject=translate(staff_lang, "Your reply was not sent"),
            body=mail_content(
                to=binding.address,
                subject=translate(staff_lang, "Your reply was not sent"),
                text=translate(
                    staff_lang,
                    "Your reply was not sent, because it contains sensitive information "
                    "({categories}). Please call the guardian instead.",
                    categories=", ".join(str(c) for c in categories),
                ),
                reply_to=reply_address(settings, local),
                auto_submitted=True,
            ),
            priority="urgent",
        )
        return Outcome(body=None, sensitive=[str(c) for c in categories])
    thread = (
        (await conn.execute(select(t.threads).where(t.threads.c.id == binding.thread_id)))
        .mappings()
        .one()
    )
    author = binding.recipient_id if binding.recipient_kind == "staff" else binding.unit_id or ""
    await threads.add_message(
        conn,
        binding.thread_id,
        direction="out",
        channel="email",
        author=author,
        body=text,
        sensitive=[],
        sent_at=received_at,
        inbound_event_id=event_id,
    )
    await deliver_to_guardian(conn, settings, thread, text)
    return Outcome(body=text)


async def deliver_to_guardian(
    conn: AsyncConnection, settings: Settings, thread: Any, text: str
) -> str | None:
    """Send a staff message to the thread's guardian on the channel they last wrote on
    in that thread, else their first open channel; returns the delivery id."""
    m = t.messages
    last = (
        await conn.execute(
            select(m.c.channel, m.c.sent_at)
            .where(m.c.thread_id == thread["id"], m.c.direction == "in")
            .order_by(m.c.sent_at.desc())
            .limit(1)
        )
    ).first()
    routes = (await load_routes(conn, [thread["guardian_id"]])).by_guardian.get(
        thread["guardian_id"], []
    )
    # An opted-out channel still carries an answer within 24 hours of the guardian's
    # own message there (SPEC section 8); later, only an open channel will do.
    recent = last is not None and datetime.now(UTC) - last.sent_at <= ANSWER_WINDOW
    usable = [r for r in routes if not r.dead and (recent or not r.opted_out)]
    route = next((r for r in usable if last and r.channel == last.channel), None) or next(
        (r for r in usable if not r.opted_out), None
    )
    if route is None:
        log.info("thread %s: the guardian has no open channel", thread["id"])
        return None
    unit_name = await conn.scalar(select(t.units.c.name).where(t.units.c.id == thread["unit_id"]))
    lang = await conn.scalar(
        select(t.guardians.c.language).where(t.guardians.c.id == thread["guardian_id"])
    )
    body = f"{unit_name}: {text}"
    if route.channel == "email":
        local = await reply_tokens.issue(
            conn,
            recipient_kind="guardian",
            recipient_id=thread["guardian_id"],
            address=route.address,
            days=settings.email.reply_token_days,
            thread_id=thread["id"],
            unit_id=thread["unit_id"],
        )
        body = mail_content(
            to=route.address,
            subject=translate(lang or "nb", "Message from {unit}", unit=unit_name),
            text=text,
            reply_to=reply_address(settings, local),
            from_display=str(unit_name),
        )
    delivery_id = await outbox.enqueue(
        conn,
        kind="reply",
        channel=route.channel,
        address=route.address,
        body=body,
        guardian_id=thread["guardian_id"],
        thread_id=thread["id"],
        priority="urgent",
    )
    await _remember_reply_context(conn, route.channel, route.address, thread["id"])
    return delivery_id


async def _remember_reply_context(
    conn: AsyncConnection, channel: str, address: str, thread_id: str
) -> None:
    """A text on this channel within 72 hours answers this thread (SPEC section 8)."""
    c = t.conversations
    where = (c.c.channel == channel, c.c.address == address)
    state = dict(await conn.scalar(select(c.c.state).where(*where)) or {})
    now = datetime.now(UTC)
    state["reply_context"] = {"thread_id": thread_id, "at": now.isoformat()}
    await conn.execute(delete(c).where(*where))
    await conn.execute(
        insert(c), {"channel": channel, "address": address, "state": state, "updated_at": now}
    )
