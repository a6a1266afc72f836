"""Deliveries: everything that leaves the bridge, and the operator's retry of them."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from bridge.store import tables as t

RETRYABLE = ("dead", "failed")
REACHED = ("sent", "delivered")


@dataclass
class RetryResult:
    queued: int = 0
    refused: int = 0
    reasons: list[str] = field(default_factory=list)


async def _reached_by_fallback(conn: AsyncConnection, delivery_id: str) -> bool:
    """Whether a fallback of this delivery (at any depth) reached the recipient."""
    d = t.deliveries
    frontier = [delivery_id]
    while frontier:
        rows = (
            await conn.execute(select(d.c.id, d.c.status).where(d.c.fallback_of.in_(frontier)))
        ).all()
        if any(status in REACHED for _, status in rows):
            return True
        frontier = [row_id for row_id, _ in rows]
    return False


async def retry(engine: AsyncEngine, ids: list[str], *, all_dead: bool = False) -> RetryResult:
    """Queue dead or failed deliveries again: a person's decision, the one backward move."""
    d = t.deliveries
    result = RetryResult()
    now = datetime.now(UTC)
    async with engine.begin() as conn:
        if all_dead:
            query = select(d.c.id, d.c.status).where(d.c.status == "dead")
        else:
            query = select(d.c.id, d.c.status).where(d.c.id.in_(ids))
        found = dict((await conn.execute(query)).tuples().all())
        for delivery_id in ids:
            if delivery_id not in found:
                result.refused += 1
                result.reasons.append(f"{delivery_id}: no such delivery")
        for delivery_id, status in found.items():
            if status not in RETRYABLE:
                result.refused += 1
                result.reasons.append(f"{delivery_id}: is {status}, not dead or failed")
                continue
            if await _reached_by_fallback(conn, delivery_id):
                result.refused += 1
                result.reasons.append(f"{delivery_id}: the recipient got it by a fallback")
                continue
            await conn.execute(
                update(d)
                .where(d.c.id == delivery_id, d.c.status.in_(RETRYABLE))
                .values(
                    status="queued",
                    attempts=0,
                    next_attempt_at=now,
                    lease_owner=None,
                    lease_until=None,
                    updated_at=now,
                )
            )
            await conn.execute(
                insert(t.audit_log),
                {"at": now, "actor": "cli", "action": "delivery.retry", "subject": delivery_id},
            )
            result.queued += 1
    return result
