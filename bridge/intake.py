"""Taking in inbound events: durable before acknowledged, many in one commit.

`store_events` commits a list of raw events in one transaction: one multi-row
`INSERT ... ON CONFLICT (channel, external_id) DO NOTHING RETURNING`, and for the
repeats one SELECT of their stored ids. It is the only way an inbound event is stored;
`bridge.inbox.accept` is `store_events` with one event.

`Intake` is group commit (`bridge.group_commit`) in front of it: every webhook waiting
at the same moment is stored by one `store_events`, and each is answered only after the
commit. On SQLite's single connection that also leaves the connection free far more
often for the inbox worker, which queues for it beside the writer.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, OperationalError, StatementError
from sqlalchemy.ext.asyncio import AsyncEngine

from bridge import metrics
from bridge.domain import Accepted, InboundEvent, StoreUnavailable
from bridge.group_commit import GroupCommit
from bridge.store import tables as t

log = logging.getLogger("skolebro.intake")

MAX_GROUP = 500  # events in one transaction at most


def _row(event: InboundEvent) -> dict[str, Any]:
    return {
        "channel": event.channel.value,
        "external_id": event.external_id,
        "sender": event.sender,
        "body": event.text,
        "payload": {**event.payload, "media_count": event.media_count},
        "received_at": event.received_at,
        "status": "pending",
        "attempts": 0,
    }


async def store_events(engine: AsyncEngine, events: Sequence[InboundEvent]) -> list[Accepted]:
    """Commit the raw events, once per (channel, external id), in one transaction.

    Returns one Accepted per event, in order; an event whose key came earlier in the list
    or is already stored is not new and gets the stored id. Raises StoreUnavailable when
    the store cannot take them (then none of them is stored).
    """
    if not events:
        return []
    e = t.inbound_events
    keys = [(ev.channel.value, ev.external_id) for ev in events]
    first: dict[tuple[str, str], int] = {}  # key -> index of its first event
    for index, key in enumerate(keys):
        first.setdefault(key, index)
    rows = [_row(events[i]) for i in first.values()]  # in arrival order: ids follow it
    try:
        async with engine.begin() as conn:
            dialect_insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
            statement = (
                dialect_insert(e)
                .on_conflict_do_nothing(index_elements=["channel", "external_id"])
                .returning(e.c.id, e.c.channel, e.c.external_id)
            )
            # One statement for all rows (SQLAlchemy's "insertmanyvalues"); RETURNING
            # gives the rows that were inserted, so the repeats are the ones missing.
            inserted = {
                (r.channel, r.external_id): int(r.id)
                for r in (await conn.execute(statement, rows)).all()
            }
            stored = dict(inserted)
            repeats = [key for key in first if key not in inserted]
            by_channel: dict[str, list[str]] = {}
            for channel, external_id in repeats:
                by_channel.setdefault(channel, []).append(external_id)
            for channel, external_ids in by_channel.items():
                # `channel = ? AND external_id IN (...)` searches the unique index; a
                # row-value IN over both columns made SQLite scan all of it (2.5 s at
                # 5M events, with the one connection held: bench/RESULTS.md, Scale).
                found = await conn.execute(
                    select(e.c.id, e.c.channel, e.c.external_id).where(
                        e.c.channel == channel, e.c.external_id.in_(external_ids)
                    )
                )
                stored.update({(r.channel, r.external_id): int(r.id) for r in found})
            if len(stored) < len(first):
                raise StoreUnavailable("inbound event neither stored nor found")
    except (OperationalError, DBAPIError, OSError) as exc:
        raise StoreUnavailable(type(exc).__name__) from exc
    for key in inserted:
        metrics.inbound_total.labels(channel=key[0]).inc()
    return [
        Accepted(stored[key], new=key in inserted and first[key] == index)
        for index, key in enumerate(keys)
    ]


def _row_level(exc: BaseException) -> bool:
    """An error that one event's data may cause, not the store being down."""
    cause = exc.__cause__ if isinstance(exc, StoreUnavailable) else exc
    if isinstance(cause, DataError | IntegrityError):
        return True
    if isinstance(cause, StatementError) and not isinstance(cause, DBAPIError):
        return True  # a value the driver could not bind
    return isinstance(cause, TypeError | ValueError)


class Intake(GroupCommit[InboundEvent, Accepted]):
    """Group commit for inbound events: `accept` returns once its event is committed."""

    def __init__(self, engine: AsyncEngine, *, max_group: int = MAX_GROUP) -> None:
        super().__init__(
            lambda events: store_events(engine, events),
            name="intake",
            max_group=max_group,
            splittable=_row_level,
            unavailable=StoreUnavailable,
        )

    async def accept(self, event: InboundEvent) -> Accepted:
        """Commit `event` (with whatever else is waiting); StoreUnavailable if we can't.

        A cancelled caller (a timeout) does not cancel the group; its event may be stored
        all the same, and the provider's retry is then a repeat."""
        return await self.submit(event)
