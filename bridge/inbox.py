"""Inbound events: the durable record of everything providers handed us."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any

from sqlalchemy import bindparam, func, insert, select, update
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from bridge import conversation, mail_flow, metrics, outbox, telegram_bot
from bridge.config import Settings
from bridge.conversation import Context
from bridge.directory import Sender, batch_cache, find_sender, find_senders
from bridge.domain import Accepted, Channel, InboundEvent, StoreUnavailable
from bridge.i18n import translate
from bridge.intake import store_events
from bridge.store import tables as t
from bridge.understand import redact

log = logging.getLogger("skolebro.inbox")


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


# --- accepting: durable before acknowledged ------------------------------------------


async def accept(engine: AsyncEngine, event: InboundEvent) -> Accepted:
    """Commit the raw event once per (channel, external id); StoreUnavailable if we can't.

    One event alone through `bridge.intake.store_events`; the running bridge takes
    webhooks through `bridge.intake.Intake`, which commits many at once the same way.
    """
    return (await store_events(engine, [event]))[0]


# --- processing ------------------------------------------------------------------------

# What marking an event processed may set (a batch writes them with one executemany).
_DONE_KEYS = ("status", "processed_at", "body", "payload", "sender")

MAX_PROCESSING_ATTEMPTS = 5
UNKNOWN_REPLY_EVERY = timedelta(hours=24)
# SMS pumping: many unknown numbers at once must not cost one reply each. Past this many
# explanatory replies to unknown senders on a channel within the last hour, strangers get
# none (and may get one later, as their last_reply_at stays unset).
UNKNOWN_REPLIES_PER_HOUR = 100


def address_hash(channel: str, address: str) -> str:
    return hashlib.sha256(f"skolebro:{channel}:{address}".encode()).hexdigest()


# A batch is one transaction: at most this many events, and no new event is started
# once it has run this long, so that webhooks waiting for the store are not held up.
BATCH_EVENTS = 50
BATCH_SECONDS = 0.05
# On SQLite a batch holds the one connection, and webhooks wait for it behind the batch
# (their group commit cannot start): once the batch has run this long, it ends at the
# next event whenever the intake has events waiting. PostgreSQL gives each its own.
BATCH_YIELD_SECONDS = 0.005


class _EventFailed(Exception):
    """An event raised inside a batch: the batch is rolled back and this one tried alone."""

    def __init__(self, index: int) -> None:
        super().__init__(index)
        self.index = index


class InboxWorker:
    """Turns pending inbound events into their effects.

    Events are processed in order, in batches of up to BATCH_EVENTS in one transaction
    each: an event's effects and its "processed" mark still commit together, exactly
    once. When one event raises, its batch is rolled back, the events before it are
    processed again as a batch, and it is tried alone, where a failure is counted as
    before (dead after MAX_PROCESSING_ATTEMPTS); the events after it wait for the next
    batch.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        settings: Settings,
        *,
        batch_events: int = BATCH_EVENTS,
        batch_seconds: float = BATCH_SECONDS,
        intake_waiting: Callable[[], bool] | None = None,
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.batch_events = max(1, batch_events)
        self.batch_seconds = batch_seconds
        self.intake_waiting = intake_waiting
        self.wake = asyncio.Event()
        self._behind = False  # the last look found pending events

    def behind(self) -> bool:
        """Whether inbound events wait: since the last look found some, until one finds
        none (the outbox gives way meanwhile)."""
        return self._behind or self.wake.is_set()

    async def run_once(self, limit: int = 100) -> int:
        """Process up to `limit` pending events, each tried once; returns how many."""
        e = t.inbound_events
        async with self.engine.connect() as conn:
            ids = list(
                (
                    await conn.execute(
                        select(e.c.id).where(e.c.status == "pending").order_by(e.c.id).limit(limit)
                    )
                ).scalars()
            )
        self._behind = bool(ids)
        done = 0
        while done < len(ids):
            done += await self._batch(ids[done : done + self.batch_events])
            await asyncio.sleep(0)  # let waiting webhooks have the store between batches
        return len(ids)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                handled = await self.run_once()
            except StoreUnavailable as exc:
                log.warning("inbox: the store is failing (%s); trying again shortly", exc)
                handled = 0
            except Exception:
                log.exception("inbox round failed")
                handled = 0
            if handled:
                continue
            self.wake.clear()
            waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self.wake.wait())]
            await asyncio.wait(waiters, timeout=1.0, return_when=asyncio.FIRST_COMPLETED)
            for w in waiters:
                w.cancel()

    async def _batch(self, ids: list[int]) -> int:
        """Process a prefix of `ids` in one transaction; returns how many ids it took."""
        if len(ids) == 1:
            await self.process(ids[0])
            return 1
        try:
            return await self._process_batch(ids)
        except _EventFailed as failed:
            done = 0
            while done < failed.index:  # the good ones before it, committed once, in order
                done += await self._batch(ids[done : failed.index])
            await self.process(ids[failed.index])  # alone: a failure counts there
            return failed.index + 1
        except Exception:
            log.exception("inbound batch of %s events failed; one at a time", len(ids))
            for event_id in ids:
                await self.process(event_id)
            return len(ids)

    async def _process_batch(self, ids: list[int]) -> int:
        e = t.inbound_events
        loop = asyncio.get_running_loop()
        started = loop.time()
        deadline = started + self.batch_seconds
        taken = 0
        done: list[tuple[Any, Channel, dict[str, Any]]] = []
        with batch_cache():
            async with self.engine.begin() as conn:
                query = select(e).where(e.c.id.in_(ids), e.c.status == "pending").order_by(e.c.id)
                if conn.dialect.name == "postgresql":
                    query = query.with_for_update(skip_locked=True)
                rows = {r["id"]: r for r in (await conn.execute(query)).mappings()}
                senders = await find_senders(
                    conn,
                    [r["sender"] for r in rows.values() if r["channel"] == Channel.SMS.value],
                    self.settings.bridge.default_language,
                )
                for index, event_id in enumerate(ids):
                    if taken and self._batch_over(conn, started, deadline):
                        break
                    taken = index + 1
                    row = rows.get(event_id)
                    if row is None:  # processed meanwhile, or another process has it
                        continue
                    try:
                        channel, values = await self._effects(conn, row, senders)
                    except Exception as exc:
                        raise _EventFailed(index) from exc
                    done.append((row, channel, values))
                if done:
                    await conn.execute(
                        update(e)
                        .where(e.c.id == bindparam("event_id"))
                        .values({k: bindparam(f"v_{k}", type_=e.c[k].type) for k in _DONE_KEYS}),
                        [
                            {"event_id": row["id"]}
                            | {f"v_{k}": values.get(k, row[k]) for k in _DONE_KEYS}
                            for row, _, values in done
                        ],
                    )
        for row, channel, _ in done:
            self._observe(row, channel)
        return taken

    def _batch_over(self, conn: AsyncConnection, started: float, deadline: float) -> bool:
        now = asyncio.get_running_loop().time()
        if now > deadline:
            return True
        return (
            self.intake_waiting is not None
            and now > started + BATCH_YIELD_SECONDS
            and conn.dialect.name == "sqlite"
            and self.intake_waiting()
        )

    async def process(self, event_id: int) -> None:
        """Process one event; a failure is counted, and the event dies after a few."""
        try:
            await self._process(event_id)
        except Exception as exc:
            if _store_fault(exc):
                # Not the event's fault (a full disk, a lost connection): it is not
                # counted towards dead-lettering, and is processed once the store is back.
                raise StoreUnavailable(type(exc).__name__) from exc
            log.exception("inbound event %s failed", event_id)
            e = t.inbound_events
            async with self.engine.begin() as conn:
                attempts = (
                    await conn.scalar(select(e.c.attempts).where(e.c.id == event_id)) or 0
                ) + 1
                await conn.execute(
                    update(e)
                    .where(e.c.id == event_id, e.c.status == "pending")
                    .values(
                        attempts=attempts,
                        last_error=f"{type(exc).__name__}"[:200],
                        status="dead" if attempts >= MAX_PROCESSING_ATTEMPTS else "pending",
                    )
                )

    async def _process(self, event_id: int) -> None:
        e = t.inbound_events
        with batch_cache():
            async with self.engine.begin() as conn:
                query = select(e).where(e.c.id == event_id, e.c.status == "pending")
                if conn.dialect.name == "postgresql":
                    query = query.with_for_update(skip_locked=True)
                row = (await conn.execute(query)).mappings().first()
                if row is None:
                    return
                channel, values = await self._effects(conn, row, None)
                await conn.execute(update(e).where(e.c.id == event_id).values(**values))
        self._observe(row, channel)

    def _observe(self, row: Any, channel: Channel) -> None:
        lag = (datetime.now(UTC) - row["received_at"]).total_seconds()
        metrics.processing_seconds.labels(channel=channel.value).observe(max(lag, 0))
        log.info("inbound event %s processed", row["id"])

    async def _effects(
        self, conn: AsyncConnection, row: Any, senders: dict[str, Sender] | None
    ) -> tuple[Channel, dict[str, Any]]:
        """Write one event's effects; returns the values that mark it processed.

        `senders` holds the batch's SMS senders, looked up at once (None: look up here).
        """
        event_id = row["id"]
        channel = Channel(row["channel"])
        payload = dict(row["payload"] or {})
        media_count = int(payload.get("media_count", 0) or 0)
        values: dict[str, Any] = {"status": "processed", "processed_at": datetime.now(UTC)}
        if channel == Channel.EMAIL:
            outcome = await mail_flow.handle_email(
                conn,
                self.settings,
                event_id=event_id,
                sender=row["sender"],
                text=row["body"] or "",
                payload=payload,
                received_at=row["received_at"],
                media_count=media_count,
            )
            # A subject may hold what the body would: keep only its redacted form.
            payload["subject"] = redact(str(payload.get("subject") or ""))[0]
            payload["sensitive"] = outcome.sensitive
            values.update(body=outcome.body, payload=payload)
        elif channel == Channel.TELEGRAM:
            outcome = await telegram_bot.handle_update(
                conn,
                self.settings,
                event_id=event_id,
                chat_id=row["sender"],
                text=row["body"] or "",
                payload=payload,  # scrubbed in place of link codes and phone numbers
                received_at=row["received_at"],
                media_count=media_count,
            )
            payload["sensitive"] = outcome.sensitive
            values.update(body=outcome.body, payload=payload)
            if isinstance(outcome, telegram_bot.TelegramOutcome) and outcome.stranger:
                values["sender"] = None
        else:
            if senders is not None and channel == Channel.SMS:
                sender = senders.get(row["sender"])
            else:
                sender = await find_sender(
                    conn, channel, row["sender"], self.settings.bridge.default_language
                )
            if sender is None:
                await self._unknown(conn, channel, row["sender"], row["received_at"])
                payload.pop("From", None)
                values.update(sender=None, body=None, payload=payload)
            else:
                ctx = Context(
                    conn=conn,
                    settings=self.settings,
                    channel=channel.value,
                    address=row["sender"],
                    sender=sender,
                    event_id=event_id,
                    received_at=row["received_at"],
                )
                outcome = await conversation.handle(ctx, row["body"] or "", media_count)
                payload["sensitive"] = outcome.sensitive
                values.update(body=outcome.body, payload=payload)
        return channel, values

    async def _unknown(
        self, conn: AsyncConnection, channel: Channel, address: str, received_at: datetime
    ) -> None:
        """A stranger: at most one explanatory reply a day, and nothing else (SMS pumping)."""
        u = t.unknown_senders
        digest = address_hash(channel.value, address)
        now = datetime.now(UTC)
        where = (u.c.channel == channel.value, u.c.address_hash == digest)
        row = (await conn.execute(select(u.c.last_reply_at).where(*where))).first()
        reply = (
            row is None
            or row.last_reply_at is None
            or (now - row.last_reply_at >= UNKNOWN_REPLY_EVERY)
        )
        if reply:
            recent = await conn.scalar(
                select(func.count())
                .select_from(u)
                .where(u.c.channel == channel.value, u.c.last_reply_at > now - timedelta(hours=1))
            )
            if (recent or 0) >= UNKNOWN_REPLIES_PER_HOUR:
                reply = False
                log.warning("unknown senders on %s: hourly reply cap reached", channel.value)
        if row is None:
            await conn.execute(
                insert(u),
                {"channel": channel.value, "address_hash": digest,
                 "last_reply_at": now if reply else None, "last_seen_at": now},
            )  # fmt: skip
        else:
            values: dict[str, Any] = {"last_seen_at": now}
            if reply:
                values["last_reply_at"] = now
            await conn.execute(update(u).where(*where).values(**values))
        if reply and channel in (Channel.SMS, Channel.TELEGRAM):
            await outbox.enqueue(
                conn,
                kind=outbox.STRANGER,
                channel=channel.value,
                address=address,
                body=translate(
                    self.settings.bridge.default_language,
                    "This number is not registered with the school. Please contact the school "
                    "to update your contact details.",
                ),
                priority="urgent",
            )


# SQLite reports a bad statement ("no such column") as an OperationalError too: only
# these mean the store itself is failing, so that a real bug still dead-letters.
_SQLITE_FAULTS = ("locked", "full", "disk i/o", "unable to open", "readonly", "busy")


def _store_fault(exc: BaseException) -> bool:
    """Whether an error is the store's (unavailable, full, connection lost), not the event's."""
    if isinstance(exc, InterfaceError | OSError | StoreUnavailable):
        return True
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    if isinstance(exc, OperationalError):
        message = str(exc.orig).lower()
        return "sqlite" not in type(exc.orig).__module__ or any(
            f in message for f in _SQLITE_FAULTS
        )
    return False
