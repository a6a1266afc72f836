"""Inbound events: the durable record of everything providers handed us."""

from __future__ import annotations

from datetime import tzinfo
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from bridge.store import tables as t


async def list_dead(engine: AsyncEngine, tz: tzinfo) -> list[dict[str, Any]]:
    """Dead inbound events: ids, channel, times and the error, never the body or sender."""
    e = t.inbound_events
    query = select(
        e.c.id, e.c.channel, e.c.external_id, e.c.received_at, e.c.attempts, e.c.last_error
    ).where(e.c.status == "dead")
    async with engine.connect() as conn:
        rows = (await conn.execute(query.order_by(e.c.id))).mappings().all()
    return [{**dict(r), "received_at": r["received_at"].astimezone(tz).isoformat()} for r in rows]


async def retry(engine: AsyncEngine, ids: list[int], *, all_dead: bool = False) -> int:
    """Queue dead events again with a fresh attempt count; returns how many."""
    e = t.inbound_events
    query = update(e).where(e.c.status == "dead")
    if not all_dead:
        query = query.where(e.c.id.in_(ids))
    async with engine.begin() as conn:
        result = await conn.execute(query.values(status="pending", attempts=0))
    return int(result.rowcount or 0)
