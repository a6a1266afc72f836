"""Absence reports: record, withdraw (cancel or split), undo.

Every change also queues the school's webhooks for the unit (`bridge.school_webhooks`),
in the same transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from bridge import school_webhooks
from bridge.config import Settings
from bridge.store import tables as t
from bridge.store.ids import new_id


@dataclass(frozen=True)
class Report:
    """One absence to record: one student, one unit, a date range and maybe a time span."""

    student_id: str
    unit_id: str
    from_date: date
    to_date: date
    from_time: str | None
    to_time: str | None
    reason: str


async def record(
    conn: AsyncConnection,
    settings: Settings,
    reports: list[Report],
    *,
    reported_by: str | None,
    channel: str,
    received_at: datetime,
    note: str | None,
    inbound_event_id: int | None,
) -> list[str]:
    """Store the reports in the caller's transaction; returns their ids."""
    now = datetime.now(UTC)
    rows: list[dict[str, Any]] = [
        {
            "id": new_id("ab"),
            "student_id": r.student_id,
            "unit_id": r.unit_id,
            "from_date": r.from_date,
            "to_date": r.to_date,
            "from_time": r.from_time,
            "to_time": r.to_time,
            "reason": r.reason,
            "note": note,
            "reported_by": reported_by,
            "channel": channel,
            "received_at": received_at,
            "status": "active",
            "inbound_event_id": inbound_event_id,
            "split_from": None,
            "created_at": now,
            "updated_at": now,
        }
        for r in reports
    ]
    ids = [str(r["id"]) for r in rows]
    if rows:
        await conn.execute(insert(t.absences), rows)
        await school_webhooks.absences_changed(conn, settings, ids, school_webhooks.RECORDED)
    return ids


async def cancel_ids(conn: AsyncConnection, settings: Settings, ids: list[str]) -> int:
    """Cancel these reports (undo); returns how many were still active."""
    a = t.absences
    cancelled = list(
        (
            await conn.execute(
                update(a)
                .where(a.c.id.in_(ids), a.c.status == "active")
                .values(status="cancelled", updated_at=datetime.now(UTC))
                .returning(a.c.id)
            )
        ).scalars()
    )
    await school_webhooks.absences_changed(conn, settings, cancelled, school_webhooks.CANCELLED)
    return len(cancelled)


async def withdraw(
    conn: AsyncConnection,
    settings: Settings,
    *,
    guardian_ids: tuple[str, ...],
    student_id: str,
    unit_id: str,
    from_date: date,
    to_date: date,
) -> list[str]:
    """Withdraw these days: reports wholly inside are cancelled, longer ones are split.

    Returns the ids of the reports that are now cancelled for the withdrawn days.
    """
    a = t.absences
    rows = (
        (
            await conn.execute(
                select(a).where(
                    a.c.student_id == student_id,
                    a.c.unit_id == unit_id,
                    a.c.status == "active",
                    a.c.reported_by.in_(guardian_ids),
                    a.c.from_date <= to_date,
                    a.c.to_date >= from_date,
                )
            )
        )
        .mappings()
        .all()
    )
    now = datetime.now(UTC)
    cancelled: list[str] = []
    remaining: list[str] = []
    one_day = timedelta(days=1)
    for row in rows:
        start, end = row["from_date"], row["to_date"]
        if from_date <= start and end <= to_date:
            await conn.execute(
                update(a).where(a.c.id == row["id"]).values(status="cancelled", updated_at=now)
            )
            cancelled.append(row["id"])
            continue
        # Split: the withdrawn overlap becomes a cancelled report, the rest stays active.
        cut_from, cut_to = max(start, from_date), min(end, to_date)
        pieces = [(cut_from, cut_to, "cancelled")]
        if start < cut_from:
            pieces.append((start, cut_from - one_day, "active"))
        if cut_to < end:
            pieces.append((cut_to + one_day, end, "active"))
        keep = {k: v for k, v in row.items() if k not in ("id", "from_date", "to_date", "status")}
        first = True
        for lo, hi, status in pieces:
            if first:  # the original row becomes the cancelled piece
                await conn.execute(
                    update(a)
                    .where(a.c.id == row["id"])
                    .values(from_date=lo, to_date=hi, status=status, updated_at=now)
                )
                cancelled.append(row["id"])
                first = False
                continue
            piece_id = new_id("ab")
            remaining.append(piece_id)
            await conn.execute(
                insert(a),
                {
                    **keep,
                    "id": piece_id,
                    "from_date": lo,
                    "to_date": hi,
                    "status": status,
                    "split_from": row["id"],
                    "created_at": now,
                    "updated_at": now,
                },
            )
    await school_webhooks.absences_changed(conn, settings, cancelled, school_webhooks.CANCELLED)
    await school_webhooks.absences_changed(conn, settings, remaining, school_webhooks.RECORDED)
    return cancelled
