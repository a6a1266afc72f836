"""Hourly housekeeping: retention, expired codes and dialogue state, stuck leases.

- Retention (`privacy.retention_days`): message bodies, processed inbound event bodies
  and finished deliveries' bodies older than that become NULL; the rows stay.
- Link codes past their expiry, reply tokens a week past theirs, and dialogue state
  (`conversations`) that expired, is empty, or has not changed for longer than any of
  its parts lives, are deleted.
- Deliveries stuck in "sending" whose lease ran out more than `STUCK_LEASE` ago (a
  worker died mid-send) are queued again, or made "dead" when their attempts are used
  up. The workers also take over expired leases themselves; this makes the state true
  for anyone looking (exports, metrics) and bounds how long it can be wrong.

Each step is one statement; on PostgreSQL a transaction-scoped advisory lock lets only
one process do a round at a time. Logs carry counts only.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import BigInteger, Text, cast, delete, func, literal, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from bridge.config import Settings
from bridge.conversation import QUESTION_TTL, UNDO_WINDOW
from bridge.parent_replies import REPLY_WINDOW
from bridge.store import tables as t

log = logging.getLogger("skolebro.housekeeping")

STUCK_LEASE = timedelta(minutes=10)
# No part of a conversation's state lives longer than this (question, undo, reply context).
STALE_CONVERSATION = max(QUESTION_TTL, UNDO_WINDOW, REPLY_WINDOW) + timedelta(days=1)
EXPIRED_TOKEN_KEPT = timedelta(days=7)
FINISHED = ("sent", "delivered", "failed", "dead", "skipped")
_LOCK_KEY = 0x736B6F6C6562726F  # "skolebro" as 64 bits


@dataclass
class HousekeepingResult:
    messages_cleared: int = 0
    inbound_cleared: int = 0
    deliveries_cleared: int = 0
    link_codes_deleted: int = 0
    reply_tokens_deleted: int = 0
    conversations_deleted: int = 0
    leases_requeued: int = 0
    leases_dead: int = 0
    skipped: bool = False  # another process holds the round


async def _try_lock(conn: AsyncConnection) -> bool:
    if conn.dialect.name != "postgresql":
        return True
    return bool(
        await conn.scalar(select(func.pg_try_advisory_xact_lock(literal(_LOCK_KEY, BigInteger))))
    )


async def housekeeping(
    engine: AsyncEngine, settings: Settings, *, now: datetime | None = None
) -> HousekeepingResult:
    now = now or datetime.now(UTC)
    result = HousekeepingResult()
    cutoff = now - timedelta(days=settings.privacy.retention_days)
    m, ie, d, lc, rt, c = (
        t.messages,
        t.inbound_events,
        t.deliveries,
        t.link_codes,
        t.reply_tokens,
        t.conversations,
    )
    async with engine.begin() as conn:
        if not await _try_lock(conn):
            result.skipped = True
            return result
        done = await conn.execute(
            update(m).where(m.c.sent_at < cutoff, m.c.body.is_not(None)).values(body=None)
        )
        result.messages_cleared = done.rowcount or 0
        done = await conn.execute(
            update(ie)
            .where(ie.c.received_at < cutoff, ie.c.status != "pending", ie.c.body.is_not(None))
            .values(body=None)
        )
        result.inbound_cleared = done.rowcount or 0
        done = await conn.execute(
            update(d)
            .where(d.c.created_at < cutoff, d.c.status.in_(FINISHED), d.c.body.is_not(None))
            .values(body=None)
        )
        result.deliveries_cleared = done.rowcount or 0
        done = await conn.execute(delete(lc).where(lc.c.expires_at < now))
        result.link_codes_deleted = done.rowcount or 0
        done = await conn.execute(delete(rt).where(rt.c.expires_at < now - EXPIRED_TOKEN_KEPT))
        result.reply_tokens_deleted = done.rowcount or 0
        done = await conn.execute(
            delete(c).where(
                or_(
                    c.c.expires_at < now,
                    c.c.updated_at < now - STALE_CONVERSATION,
                    cast(c.c.state, Text).in_(("{}", "null")),
                )
            )
        )
        result.conversations_deleted = done.rowcount or 0
        stuck = (d.c.status == "sending", d.c.lease_until < now - STUCK_LEASE)
        max_attempts = settings.delivery.max_attempts
        done = await conn.execute(
            update(d)
            .where(*stuck, d.c.attempts >= max_attempts)
            .values(
                status="dead",
                last_error="lease expired",
                lease_owner=None,
                lease_until=None,
                updated_at=now,
            )
        )
        result.leases_dead = done.rowcount or 0
        done = await conn.execute(
            update(d)
            .where(*stuck, d.c.attempts < max_attempts)
            .values(
                status="queued",
                next_attempt_at=now,
                lease_owner=None,
                lease_until=None,
                updated_at=now,
            )
        )
        result.leases_requeued = done.rowcount or 0
    log.info(
        "housekeeping: cleared %d message, %d inbound and %d delivery bodies; deleted %d link "
        "codes, %d reply tokens, %d conversations; leases requeued %d, dead %d",
        result.messages_cleared,
        result.inbound_cleared,
        result.deliveries_cleared,
        result.link_codes_deleted,
        result.reply_tokens_deleted,
        result.conversations_deleted,
        result.leases_requeued,
        result.leases_dead,
    )
    return result
