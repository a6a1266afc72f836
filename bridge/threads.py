"""Threads: one guardian, one unit, one student; and the messages in them."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from bridge.store import tables as t
from bridge.store.ids import new_id


async def thread_for(conn: AsyncConnection, guardian_id: str, unit_id: str, student_id: str) -> str:
    """The thread's id, created on first use."""
    th = t.threads
    found = await conn.scalar(
        select(th.c.id).where(
            th.c.guardian_id == guardian_id,
            th.c.unit_id == unit_id,
            th.c.student_id == student_id,
        )
    )
    if found:
        return str(found)
    now = datetime.now(UTC)
    thread_id = new_id("th")
    await conn.execute(
        insert(th),
        {
            "id": thread_id,
            "guardian_id": guardian_id,
            "unit_id": unit_id,
            "student_id": student_id,
            "created_at": now,
            "last_message_at": now,
        },
    )
    return thread_id


async def add_message(
    conn: AsyncConnection,
    thread_id: str,
    *,
    direction: str,
    channel: str,
    author: str,
    body: str | None,
    sensitive: list[str],
    sent_at: datetime,
    inbound_event_id: int | None = None,
) -> str:
    message_id = new_id("msg")
    await conn.execute(
        insert(t.messages),
        {
            "id": message_id,
            "thread_id": thread_id,
            "direction": direction,
            "channel": channel,
            "author": author,
            "body": body,
            "sensitive": sensitive,
            "sent_at": sent_at,
            "inbound_event_id": inbound_event_id,
        },
    )
    await conn.execute(
        update(t.threads).where(t.threads.c.id == thread_id).values(last_message_at=sent_at)
    )
    return message_id


async def claim_sensitive_notice(conn: AsyncConnection, thread_id: str) -> bool:
    """True the first time per thread: the parent is told once about sensitive content."""
    result = await conn.execute(
        update(t.threads)
        .where(t.threads.c.id == thread_id, t.threads.c.sensitive_notice_sent.is_(False))
        .values(sensitive_notice_sent=True)
    )
    return bool(result.rowcount)
