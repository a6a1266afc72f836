"""Taking in inbound events: durable before acknowledged, many in one commit.

`store_events` commits a list of raw events in one transaction: one multi-row
`INSERT ... ON CONFLICT (channel, external_id) DO NOTHING RETURNING`, and for the
repeats one SELECT of their stored ids. It is the only way an inbound event is stored;
`bridge.inbox.accept` is `store_events` with one event.

`Intake` is group commit in front of it. Each `accept` queues its event with a future;
one writer task takes everything queued (up to `max_group`), stores it with one
`store_events`, and resolves every future only after the commit. Nothing waits on a
timer: while a group is being written the next one gathers, so a lone event is written
at once and a burst costs one transaction per group instead of one per event. On
SQLite's single connection that also leaves the connection free far more often for the
inbox worker, which queues for it beside the writer.
"""

from __future__ import annotations

import asyncio
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


def _copy(exc: Exception) -> Exception:
    """The exception for one waiter: a StoreUnavailable of its own (so that tracebacks do
    not pile up on one instance raised in many tasks), any other error as it is."""
    if not isinstance(exc, StoreUnavailable):
        return exc
    copy = StoreUnavailable(*exc.args)
    copy.__cause__ = exc.__cause__
    return copy


_Waiter = tuple[InboundEvent, "asyncio.Future[Accepted]"]


class Intake:
    """Group commit for inbound events: `accept` returns once its event is committed."""

    def __init__(self, engine: AsyncEngine, *, max_group: int = MAX_GROUP) -> None:
        self.engine = engine
        self.max_group = max(1, max_group)
        self._queue: list[_Waiter] = []
        self._wake = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._closed = False
        self._writing = False  # a group taken and not yet answered
        self.groups = 0  # transactions written, for tests and benchmarks
        self.events = 0

    async def accept(self, event: InboundEvent) -> Accepted:
        """Commit `event` (with whatever else is waiting); StoreUnavailable if we can't."""
        if self._closed:
            raise StoreUnavailable("intake closed")
        future: asyncio.Future[Accepted] = asyncio.get_running_loop().create_future()
        self._queue.append((event, future))
        self._wake.set()
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._run(), name="skolebro-intake")
        # A cancelled caller (a timeout) does not cancel the group; its event may be
        # stored all the same, and the provider's retry is then a repeat.
        return await future

    def waiting(self) -> bool:
        """Whether events wait to be written (queued, or in a group not yet committed)."""
        return self._writing or bool(self._queue)

    async def close(self) -> None:
        """Write what is queued, then stop the writer; later accepts are refused."""
        self._closed = True
        self._wake.set()
        if self._writer is not None:
            await self._writer

    async def _run(self) -> None:
        while True:
            if not self._queue:
                if self._closed:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            group = self._queue[: self.max_group]
            del self._queue[: self.max_group]
            self._writing = True
            try:
                await self._write(group)
            except BaseException as exc:  # cancelled while writing: no answer is a "stored"
                for _, future in group:
                    if not future.done():
                        future.set_exception(StoreUnavailable("intake stopped"))
                for _, future in self._queue:
                    if not future.done():
                        future.set_exception(StoreUnavailable("intake stopped"))
                self._queue.clear()
                if isinstance(exc, asyncio.CancelledError | KeyboardInterrupt | SystemExit):
                    raise
                log.exception("intake writer failed")
            finally:
                self._writing = False

    async def _write(self, group: list[_Waiter]) -> None:
        events = [event for event, _ in group]
        try:
            results = await store_events(self.engine, events)
        except Exception as exc:
            if len(group) > 1 and _row_level(exc):
                # One event's data may have failed the group: each alone, so that only
                # the one at fault is refused. The group itself stored nothing.
                log.warning(
                    "intake group of %d events failed (%s); one at a time",
                    len(group),
                    type(exc.__cause__ or exc).__name__,
                )
                for waiter in group:
                    await self._write([waiter])
                return
            for _, future in group:
                if not future.done():
                    future.set_exception(_copy(exc))
            return
        self.groups += 1
        self.events += len(group)
        for (_, future), accepted in zip(group, results, strict=True):
            if not future.done():
                future.set_result(accepted)
