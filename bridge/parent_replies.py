"""What a parent's text answers (SPEC section 8, "Parents replying").

An SMS or Telegram text that is not an absence answers, in this order:

1. the thread its way in names: an e-mail reply token's thread;
2. the bot message a Telegram reply quotes: a staff reply's thread, or an announcement;
3. else the latest staff reply or announcement that reached this contact point on this
   channel within 72 hours.

A staff reply names one thread (one child, one unit). An announcement names its unit and
the children it addressed: for a group announcement the guardian's children in those
groups, for named students those among the guardian's children, for the whole unit
every child of theirs enrolled there. The caller asks which child when several remain.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from bridge.directory import Child, Sender
from bridge.store import tables as t

REPLY_WINDOW = timedelta(hours=72)
REACHED = ("sent", "delivered")


@dataclass(frozen=True)
class ReplyTarget:
    children: tuple[Child, ...]  # one or more of the sender's own children
    unit_id: str


async def reply_target(
    conn: AsyncConnection,
    *,
    channel: str,
    address: str,
    sender: Sender,
    received_at: datetime,
    thread_hint: str | None,
    quoted: str | None,
    staff_reply: dict[str, Any] | None,
) -> ReplyTarget | None:
    """What this text answers, or None when it answers nothing in particular.

    `quoted` is the provider id of the bot message a Telegram reply quotes;
    `staff_reply` the conversation's `{"thread_id", "at"}` of the latest staff reply.
    """
    if thread_hint:
        return await _thread(conn, sender, thread_hint)
    d = t.deliveries
    if quoted:
        row = (
            await conn.execute(
                select(d.c.thread_id, d.c.announcement_id).where(
                    d.c.channel == channel,
                    d.c.provider_id == quoted,
                    d.c.guardian_id.in_(sender.guardian_ids),
                )
            )
        ).first()
        if row is not None and row.thread_id:
            return await _thread(conn, sender, row.thread_id)
        if row is not None and row.announcement_id:
            return await _announcement(conn, sender, row.announcement_id)
    since = received_at - REPLY_WINDOW
    latest = (
        await conn.execute(
            select(d.c.announcement_id, d.c.created_at)
            .where(
                d.c.guardian_id.in_(sender.guardian_ids),
                d.c.channel == channel,
                d.c.address == address,
                d.c.announcement_id.is_not(None),
                d.c.status.in_(REACHED),
                d.c.created_at >= since,
            )
            .order_by(d.c.created_at.desc())
            .limit(1)
        )
    ).first()
    staff_at, staff_thread = None, None
    if staff_reply and staff_reply.get("at") and staff_reply.get("thread_id"):
        staff_at = datetime.fromisoformat(str(staff_reply["at"]))
        staff_thread = str(staff_reply["thread_id"])
    if staff_thread and staff_at and staff_at >= since:
        if latest is None or staff_at >= latest.created_at:
            return await _thread(conn, sender, staff_thread)
    if latest is not None:
        return await _announcement(conn, sender, latest.announcement_id)
    return None


async def _thread(conn: AsyncConnection, sender: Sender, thread_id: str) -> ReplyTarget | None:
    th = t.threads
    row = (
        await conn.execute(
            select(th.c.student_id, th.c.unit_id).where(
                th.c.id == thread_id, th.c.guardian_id.in_(sender.guardian_ids)
            )
        )
    ).first()
    if row is None:
        return None
    children = tuple(c for c in sender.children if c.student_id == row.student_id)
    return ReplyTarget(children, row.unit_id) if children else None


async def _announcement(
    conn: AsyncConnection, sender: Sender, announcement_id: str
) -> ReplyTarget | None:
    a = t.announcements
    row = (
        await conn.execute(
            select(a.c.unit_id, a.c.group_ids, a.c.student_ids).where(a.c.id == announcement_id)
        )
    ).first()
    if row is None:
        return None
    children = [c for c in sender.children if row.unit_id in (c.unit_id, c.sfo_unit_id)]
    if row.group_ids or row.student_ids:
        sg = t.student_groups
        addressed = set(row.student_ids or [])
        if row.group_ids:
            addressed |= set(
                await conn.scalars(
                    select(sg.c.student_id).where(
                        sg.c.unit_id == row.unit_id,
                        sg.c.group_id.in_(list(row.group_ids)),
                        sg.c.student_id.in_([c.student_id for c in children]),
                    )
                )
            )
        children = [c for c in children if c.student_id in addressed]
    return ReplyTarget(tuple(children), row.unit_id) if children else None
