"""Mail to staff: a parent's message as it arrives, with a Reply-To that answers the thread."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from bridge import outbox, reply_tokens
from bridge.config import Settings
from bridge.domain import mail_content
from bridge.followers import Recipient, message_recipients
from bridge.i18n import translate
from bridge.store import tables as t


def reply_address(settings: Settings, local_part: str) -> str:
    return f"{local_part}@{settings.email.reply_domain}"


async def notify_message(
    conn: AsyncConnection,
    settings: Settings,
    *,
    thread_id: str,
    unit_id: str,
    student_id: str,
    guardian_id: str,
    text: str | None,
    sensitive: list[str],
) -> int:
    """Queue one mail per follower (or the unit's address); returns how many."""
    if not settings.email.enabled:
        return 0
    names = (
        await conn.execute(
            select(
                t.students.c.first_name,
                t.students.c.last_name,
                t.guardians.c.first_name.label("g_first"),
                t.guardians.c.last_name.label("g_last"),
                t.units.c.name.label("unit_name"),
            )
            .select_from(t.students)
            .join(t.guardians, t.guardians.c.id == guardian_id)
            .join(t.units, t.units.c.id == unit_id)
            .where(t.students.c.id == student_id)
        )
    ).one()
    recipients = await message_recipients(conn, unit_id, student_id)
    for recipient in recipients:
        await _queue(conn, settings, recipient, thread_id, unit_id, names, text, sensitive)
    return len(recipients)


async def _queue(
    conn: AsyncConnection,
    settings: Settings,
    recipient: Recipient,
    thread_id: str,
    unit_id: str,
    names: Any,  # a row: first_name, last_name, g_first, g_last, unit_name
    text: str | None,
    sensitive: list[str],
) -> None:
    lang = recipient.language or settings.bridge.default_language
    child = f"{names.first_name} {names.last_name}"
    guardian = f"{names.g_first} {names.g_last}"
    unit_name = names.unit_name
    local = await reply_tokens.issue(
        conn,
        recipient_kind="staff" if recipient.staff_id else "unit",
        recipient_id=recipient.staff_id or unit_id,
        address=recipient.email,
        days=settings.email.reply_token_days,
        thread_id=thread_id,
        unit_id=unit_id,
    )
    body = (
        text
        if text is not None
        else translate(lang, "(The text was not kept: it held sensitive information.)")
    )
    lines = [
        translate(lang, "{guardian} wrote about {child}:", guardian=guardian, child=child),
        "",
        body,
        "",
    ]
    if sensitive:
        lines.append(translate(lang, "Sensitive details were removed from this message."))
    lines.append(translate(lang, "Reply to this e-mail to answer the guardian."))
    await outbox.enqueue(
        conn,
        kind="notification",
        channel="email",
        address=recipient.email,
        staff_id=recipient.staff_id,
        thread_id=thread_id,
        subject=translate(lang, "Message about {child}", child=child),
        body=mail_content(
            to=recipient.email,
            subject=translate(lang, "Message about {child}", child=child),
            text="\n".join(lines),
            reply_to=reply_address(settings, local),
            from_display=f"{unit_name} (skolebro)",
            auto_submitted=True,
        ),
        priority="normal",
    )
