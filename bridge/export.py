"""The export shapes of SPEC section 7: absences, threads and deliveries as JSON-ready dicts."""

from __future__ import annotations

from datetime import date, datetime, tzinfo
from typing import Any

from sqlalchemy import and_, select
from sqlalchemy.ext.asyncio import AsyncEngine

from bridge import shapes
from bridge.store import tables as t


async def export_absences(
    engine: AsyncEngine, day: date, tz: tzinfo, unit_id: str | None = None
) -> list[dict[str, Any]]:
    """Absence reports covering `day`, cancelled ones included with their status."""
    a = t.absences
    conditions = [a.c.from_date <= day, a.c.to_date >= day]
    if unit_id:
        conditions.append(a.c.unit_id == unit_id)
    return await _absences(engine, tz, *conditions)


async def export_absences_by(
    engine: AsyncEngine, guardian_id: str, tz: tzinfo
) -> list[dict[str, Any]]:
    """Every absence report a guardian made."""
    return await _absences(engine, tz, t.absences.c.reported_by == guardian_id)


async def _absences(engine: AsyncEngine, tz: tzinfo, *conditions: Any) -> list[dict[str, Any]]:
    a, s, u = t.absences, t.students, t.units
    query = (
        select(a, s.c.first_name, s.c.last_name, u.c.unit_type)
        .join(s, s.c.id == a.c.student_id)
        .join(u, u.c.id == a.c.unit_id)
        .where(*conditions)
        .order_by(a.c.received_at, a.c.id)
    )
    async with engine.connect() as conn:
        rows = (await conn.execute(query)).mappings().all()
    return [shapes.absence(r, tz) for r in rows]


async def export_threads_of(
    engine: AsyncEngine, guardian_id: str, tz: tzinfo
) -> list[dict[str, Any]]:
    """A guardian's threads with all their messages."""
    return await export_threads(engine, tz, guardian_id=guardian_id)


async def export_threads(
    engine: AsyncEngine,
    tz: tzinfo,
    unit_id: str | None = None,
    since: datetime | None = None,
    *,
    guardian_id: str | None = None,
) -> list[dict[str, Any]]:
    """Threads with their messages; with `since`, threads active since then and those messages."""
    th, m = t.threads, t.messages
    thread_query = select(th).order_by(th.c.created_at, th.c.id)
    if unit_id:
        thread_query = thread_query.where(th.c.unit_id == unit_id)
    if since:
        thread_query = thread_query.where(th.c.last_message_at >= since)
    if guardian_id:
        thread_query = thread_query.where(th.c.guardian_id == guardian_id)
    message_query = (
        select(m).join(th, th.c.id == m.c.thread_id).order_by(m.c.thread_id, m.c.sent_at, m.c.id)
    )
    conditions = []
    if unit_id:
        conditions.append(th.c.unit_id == unit_id)
    if since:
        conditions.append(m.c.sent_at >= since)
    if guardian_id:
        conditions.append(th.c.guardian_id == guardian_id)
    if conditions:
        message_query = message_query.where(and_(*conditions))
    async with engine.connect() as conn:
        threads = (await conn.execute(thread_query)).mappings().all()
        messages = (await conn.execute(message_query)).mappings().all()
    by_thread: dict[str, list[dict[str, Any]]] = {}
    for r in messages:
        by_thread.setdefault(r["thread_id"], []).append(shapes.message(r, tz))
    return [
        {
            "id": r["id"],
            "unit_id": r["unit_id"],
            "student_id": r["student_id"],
            "guardian_ids": [r["guardian_id"]],
            "messages": by_thread.get(r["id"], []),
        }
        for r in threads
    ]


async def export_deliveries(
    engine: AsyncEngine, tz: tzinfo, announcement_id: str | None = None
) -> list[dict[str, Any]]:
    """Deliveries, optionally of one announcement, in creation order."""
    d, g = t.deliveries, t.guardians
    # The school's webhooks are the school's own plumbing, not messages to guardians.
    query = (
        select(d, g.c.protected)
        .outerjoin(g, g.c.id == d.c.guardian_id)
        .where(d.c.channel != "webhook")
        .order_by(d.c.created_at, d.c.id)
    )
    if announcement_id:
        query = query.where(d.c.announcement_id == announcement_id)
    async with engine.connect() as conn:
        rows = (await conn.execute(query)).mappings().all()
    return [
        {
            "id": r["id"],
            "announcement_id": r["announcement_id"],
            "guardian_id": r["guardian_id"],
            "channel": r["channel"],
            # A protected guardian's contact data is in no export (SPEC section 8).
            "address": None if r["protected"] else r["address"],
            "status": r["status"],
            "attempts": r["attempts"],
            "last_error": r["last_error"],
            "provider_id": r["provider_id"],
            "fallback_of": r["fallback_of"],
            "updated_at": shapes.iso(r["updated_at"], tz),
        }
        for r in rows
    ]
