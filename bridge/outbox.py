"""Deliveries: everything that leaves the bridge, and the operator's retry of them."""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import and_, bindparam, insert, select, text, tuple_, update
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from bridge import metrics, reply_tokens
from bridge.config import DeliverySettings, Settings
from bridge.domain import (
    MAIL_MARKER,
    Channel,
    Outgoing,
    SendOutcome,
    SendResult,
    StatusUpdate,
    StoreUnavailable,
    mail_content,
)
from bridge.routing import load_routes
from bridge.sms_text import sms_length
from bridge.store import tables as t
from bridge.store.ids import new_id

log = logging.getLogger("skolebro.outbox")

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
        found = {row_id: status for row_id, status in await conn.execute(query)}
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


# --- queueing and sending ----------------------------------------------------------

# A send may take this long (the adapters' request timeouts are 15-30 s): a lease with
# less left is renewed before the call, so no other worker can take it mid-send.
SEND_MARGIN = timedelta(seconds=35)
LANES = 2  # rounds in flight per channel
PRIORITY_ORDER = {"urgent": 0, "normal": 1, "bulk": 2}
# Status moves forward only; failed and dead are terminal (SPEC section 8).
RANK = {"queued": 0, "sending": 1, "sent": 2, "delivered": 3}
TERMINAL = ("delivered", "failed", "dead", "skipped")
GIVE_WAY_PER_SECOND = 100  # announcements and digests, while inbound events wait
WEBHOOK_PER_SECOND = 20  # the school's own system: no provider limit, but be gentle
# The one reply an unknown number gets: its address is forgotten once the send is over,
# as the stranger's event keeps only a hash of the number (SPEC section 8).
STRANGER = "stranger"


async def enqueue(
    conn: AsyncConnection,
    *,
    kind: str,
    channel: str,
    address: str,
    body: str,
    guardian_id: str | None = None,
    staff_id: str | None = None,
    thread_id: str | None = None,
    announcement_id: str | None = None,
    subject: str | None = None,
    priority: str = "normal",
    not_before: datetime | None = None,
    fallback_of: str | None = None,
    status: str = "queued",
) -> str:
    """Queue one delivery in the caller's transaction; returns its id."""
    now = datetime.now(UTC)
    delivery_id = new_id("dl")
    await conn.execute(
        insert(t.deliveries),
        {
            "id": delivery_id,
            "kind": kind,
            "announcement_id": announcement_id,
            "guardian_id": guardian_id,
            "staff_id": staff_id,
            "thread_id": thread_id,
            "channel": channel,
            "address": address,
            "subject": subject,
            "body": body,
            "priority": priority,
            "status": status,
            "attempts": 0,
            "next_attempt_at": not_before or now,
            "fallback_of": fallback_of,
            "segments": sms_length(body).segments if channel == "sms" else None,
            "created_at": now,
            "updated_at": now,
        },
    )
    return delivery_id


def backoff_seconds(attempts: int, settings: DeliverySettings) -> float:
    """Doubling from the initial delay, capped, with ±20% jitter so retries spread out."""
    base = min(
        settings.backoff_initial_seconds * (2 ** max(attempts - 1, 0)),
        settings.backoff_max_seconds,
    )
    return base * random.uniform(0.8, 1.2)


class ChannelSender(Protocol):
    async def send(self, out: Outgoing) -> SendResult:
        """Hand one delivery to the provider."""


class RateLimit:
    """A token bucket: at most `rate` sends a second on one channel, bursts of one second."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.tokens = rate
        self.stamp = time.monotonic()
        self.lock = asyncio.Lock()

    async def take(self) -> None:
        async with self.lock:
            while True:
                now = time.monotonic()
                self.tokens = min(self.rate, self.tokens + (now - self.stamp) * self.rate)
                self.stamp = now
                if self.tokens >= 1:
                    self.tokens -= 1
                    return
                await asyncio.sleep((1 - self.tokens) / self.rate)

    def hold(self, seconds: float) -> None:
        """The provider asked us to wait (Retry-After)."""
        self.tokens = -seconds * self.rate


# The circuit breaker (per channel, per process): after this many transient failures in
# a row the channel opens, its loop claims nothing for a cool-down, and then one probe
# send decides (half-open). The cool-down doubles on each failed probe, to a cap. Module
# constants rather than `[delivery]` keys (SPEC fixes that section); tests pass smaller
# values to OutboxWorker.
BREAKER_FAILURES = 10
BREAKER_COOL_DOWN_SECONDS = 30.0
BREAKER_COOL_DOWN_MAX_SECONDS = 300.0
CLOSED, OPEN, HALF_OPEN = "closed", "open", "half-open"


class CircuitBreaker:
    """One channel's breaker: closed -> open (cool-down) -> half-open (one probe) -> closed.

    A send the provider answered (sent, or a permanent refusal of that one message)
    closes it; a transient failure counts towards opening it. While it is open the
    channel's loop claims nothing, so queued deliveries stay queued with their attempts
    uncounted; sends already claimed when it opens are put back the same way.
    """

    def __init__(
        self,
        channel: str,
        *,
        failures: int = BREAKER_FAILURES,
        cool_down: float = BREAKER_COOL_DOWN_SECONDS,
        cool_down_max: float = BREAKER_COOL_DOWN_MAX_SECONDS,
    ) -> None:
        self.channel = channel
        self.threshold = max(1, failures)
        self.initial = cool_down
        self.cap = max(cool_down, cool_down_max)
        self.cool_down = cool_down
        self.state = CLOSED
        self.failures = 0  # transient failures in a row
        self.opened_at = 0.0
        self.probing = False  # the half-open probe is in flight
        metrics.set_circuit(channel, CLOSED)

    def retry_in(self) -> float:
        """Seconds until an open breaker lets a probe through (0 when not open)."""
        if self.state != OPEN:
            return 0.0
        return max(0.0, self.opened_at + self.cool_down - time.monotonic())

    def claimable(self, wanted: int) -> int:
        """How many deliveries the channel may claim now: all, none, or the one probe."""
        if self.state == OPEN and self.retry_in() <= 0:
            self._set(HALF_OPEN)
        if self.state == CLOSED:
            return wanted
        if self.state == HALF_OPEN and not self.probing:
            self.probing = True
            return 1
        return 0

    def may_send(self, probe: bool) -> bool:
        """Right before a provider call: False once the breaker opened meanwhile (a
        half-open breaker lets only its probe through)."""
        return self.state == CLOSED or (probe and self.state == HALF_OPEN)

    def probe_unused(self) -> None:
        """The probe's claim found nothing (or was put back): let the next round probe."""
        self.probing = False

    def record(self, outcome: SendOutcome) -> None:
        if outcome != SendOutcome.TRANSIENT:
            if self.state != CLOSED:
                log.info("circuit for %s closed: the provider answers again", self.channel)
            self.failures = 0
            self.probing = False
            self.cool_down = self.initial
            self._set(CLOSED)
            return
        self.failures += 1
        if self.state == HALF_OPEN:
            self.probing = False
            self.cool_down = min(self.cool_down * 2, self.cap)
            self._open()
        elif self.state == CLOSED and self.failures >= self.threshold:
            self._open()

    def _open(self) -> None:
        self.opened_at = time.monotonic()
        self._set(OPEN)
        log.warning(
            "circuit for %s open for %.0f s after %d transient failures in a row",
            self.channel,
            self.cool_down,
            self.failures,
        )

    def _set(self, state: str) -> None:
        self.state = state
        metrics.set_circuit(self.channel, state)


class OutboxWorker:
    """Claims due deliveries with a lease, sends them, and records what happened.

    One loop per channel, so a slow or rate-limited provider never holds up another.
    The claim itself counts the attempt; right before each provider call the worker
    checks that its lease still holds (the send-once guard): other workers take over
    only expired leases. Results are written in small batches, so a crash can repeat
    at most the sends in flight (the concurrency limit) whose results were not written.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        settings: Settings,
        senders: dict[str, ChannelSender],
        *,
        batch: int = 200,
        concurrency: int = 32,
        breaker_failures: int | None = None,
        breaker_cool_down: float | None = None,
        breaker_cool_down_max: float | None = None,
        inbox_behind: Callable[[], bool] | None = None,
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.senders = senders
        # While parents' messages wait to be processed, announcements and digests go at
        # GIVE_WAY_PER_SECOND in all: a storm must not take the process from the inbox
        # for minutes, with the parents' confirmations and the staff's notices behind it.
        self.inbox_behind = inbox_behind
        self.give_way = RateLimit(GIVE_WAY_PER_SECOND)
        self.batch = batch
        self.concurrency = concurrency
        self.owner = new_id("worker")
        self.wake = asyncio.Event()
        self.limits = {
            "sms": RateLimit(settings.sms.max_per_second),
            "telegram": RateLimit(settings.telegram.max_per_second),
            "email": RateLimit(settings.email.max_per_second),
            "webhook": RateLimit(WEBHOOK_PER_SECOND),
        }
        self.lease = timedelta(seconds=settings.delivery.lease_seconds)
        # Shared by a channel's rounds: two rounds overlap (one claims and records while
        # the other sends), and together they never exceed the concurrency limit.
        self.slots = {channel: asyncio.Semaphore(concurrency) for channel in self.limits}
        self.breakers = {
            channel: CircuitBreaker(
                channel,
                failures=BREAKER_FAILURES if breaker_failures is None else breaker_failures,
                cool_down=(
                    BREAKER_COOL_DOWN_SECONDS if breaker_cool_down is None else breaker_cool_down
                ),
                cool_down_max=(
                    BREAKER_COOL_DOWN_MAX_SECONDS
                    if breaker_cool_down_max is None
                    else breaker_cool_down_max
                ),
            )
            for channel in senders
        }

    def _batch_for(self, channel: str) -> int:
        # About two seconds of sending: a rate-limited channel holds few leases at once.
        rate = self.limits[channel].rate if channel in self.limits else self.batch
        return max(1, min(self.batch, int(rate * 2)))

    async def claim(self, channel: str, limit: int | None = None) -> list[dict[str, Any]]:
        """Lease up to a batch of due deliveries on one channel, counting the attempt."""
        d = t.deliveries
        now = datetime.now(UTC)
        limit = self._batch_for(channel) if limit is None else min(limit, self._batch_for(channel))
        # One indexed query per priority, most urgent first, and one for leases that
        # ran out: each walks an index in order instead of sorting every due row.
        # Replies to parents come before all of them (their own partial index; the
        # condition is written out as the index's, so that SQLite sees it applies).
        queries = [
            select(d.c.id)
            .where(d.c.channel == channel, text(t.REPLY_QUEUED), d.c.next_attempt_at <= now)
            .order_by(d.c.next_attempt_at)
        ]
        queries += [
            select(d.c.id)
            .where(
                d.c.channel == channel,
                d.c.status == "queued",
                d.c.priority == priority,
                d.c.next_attempt_at <= now,
            )
            .order_by(d.c.next_attempt_at)
            for priority in PRIORITY_ORDER
        ]
        queries.append(
            select(d.c.id)
            .where(d.c.channel == channel, d.c.status == "sending", d.c.lease_until < now)
            .order_by(d.c.lease_until)
        )
        async with self.engine.begin() as conn:
            ids: list[str] = []
            for query in queries:
                if len(ids) >= limit:
                    break
                query = query.limit(limit - len(ids))
                if ids:  # a reply is also in its priority's index
                    query = query.where(d.c.id.not_in(ids))
                if conn.dialect.name == "postgresql":
                    query = query.with_for_update(skip_locked=True)
                ids += list((await conn.execute(query)).scalars())
            if not ids:
                return []
            claimed = (
                (
                    await conn.execute(
                        update(d)
                        .where(d.c.id.in_(ids))
                        .values(
                            status="sending",
                            attempts=d.c.attempts + 1,
                            lease_owner=self.owner,
                            lease_until=now + self.lease,
                            updated_at=now,
                        )
                        .returning(*d.c)
                    )
                )
                .mappings()
                .all()
            )
            rows = [dict(r) for r in claimed]
            stopped = await _opted_out(conn, rows)
            for row in rows:
                if row["id"] in stopped:
                    await conn.execute(
                        update(d)
                        .where(d.c.id == row["id"])
                        .values(
                            status="skipped",
                            last_error="opted out",
                            lease_owner=None,
                            lease_until=None,
                            updated_at=now,
                        )
                    )
                    await fall_back(conn, row, self.settings)
        if stopped:
            self.wake.set()
        return [r for r in rows if r["id"] not in stopped]

    async def run_once(self) -> int:
        """One claim-and-send round on every channel; returns how many it handled."""
        handled = await asyncio.gather(*(self._round(channel) for channel in self.senders))
        return sum(handled)

    async def _round(self, channel: str) -> int:
        breaker = self.breakers.get(channel)
        limit = None
        probe = False  # this round claims the half-open breaker's one probe
        if breaker is not None:
            limit = breaker.claimable(self._batch_for(channel))
            if limit == 0:
                return 0
            probe = breaker.state == HALF_OPEN
        try:
            claimed = await self.claim(channel, limit)
        except BaseException:
            if probe and breaker is not None:
                breaker.probe_unused()
            raise
        if not claimed:
            if probe and breaker is not None:
                breaker.probe_unused()
            return 0
        slots = self.slots[channel]
        results: list[tuple[dict[str, Any], SendResult]] = []
        held: list[dict[str, Any]] = []
        flushing = asyncio.Lock()

        async def one(row: dict[str, Any]) -> None:
            async with slots:
                if breaker is not None and not breaker.may_send(probe):
                    held.append(row)
                    return
                result = await self._send(row)
            if result is None:
                return
            if breaker is not None:
                breaker.record(result.outcome)
            results.append((row, result))
            if len(results) >= self.concurrency:
                async with flushing:
                    batch = results[:]
                    del results[: len(batch)]
                    await self._record(batch)

        try:
            await asyncio.gather(*(one(row) for row in claimed))
            async with flushing:
                await self._record(results)
            await self._put_back(held)
        finally:
            if probe and breaker is not None and breaker.state == HALF_OPEN:
                breaker.probe_unused()  # the probe never reached the provider
        return len(claimed) - len(held)

    async def _put_back(self, rows: list[dict[str, Any]]) -> None:
        """Claimed deliveries the open breaker kept from their send: queued again as
        they were, the claim's attempt not counted (SPEC 8: they are not failing)."""
        if not rows:
            return
        d = t.deliveries
        async with self.engine.begin() as conn:
            await conn.execute(
                update(d)
                .where(
                    d.c.id.in_([row["id"] for row in rows]),
                    d.c.lease_owner == self.owner,
                    d.c.status == "sending",
                )
                .values(
                    status="queued",
                    attempts=d.c.attempts - 1,
                    lease_owner=None,
                    lease_until=None,
                )
            )
        log.info("circuit open: %d deliveries put back in the queue", len(rows))

    async def run(self, stop: asyncio.Event) -> None:
        await asyncio.gather(
            *(self._loop(channel, stop) for channel in self.senders for _lane in range(LANES))
        )

    async def _loop(self, channel: str, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                handled = await self._round(channel)
            except Exception:
                log.exception("outbox round on %s failed", channel)
                handled = 0
            if handled:
                continue
            waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self.wake.wait())]
            await asyncio.wait(waiters, timeout=1.0, return_when=asyncio.FIRST_COMPLETED)
            for w in waiters:
                w.cancel()
            self.wake.clear()

    async def _send(self, row: dict[str, Any]) -> SendResult | None:
        """One provider call, if our lease still holds; None when it does not."""
        await self.limits[row["channel"]].take()
        if row["kind"] in UNSOLICITED and self.inbox_behind is not None and self.inbox_behind():
            await self.give_way.take()
        if datetime.now(UTC) > row["lease_until"] - SEND_MARGIN and not await self._extend(row):
            return None  # the lease ran out: another worker may own the delivery now
        out = Outgoing(
            delivery_id=row["id"],
            channel=Channel(row["channel"]),
            address=row["address"],
            body=row["body"] or "",
            subject=row["subject"],
        )
        try:
            return await self.senders[row["channel"]].send(out)
        except Exception as e:  # an adapter bug must not lose the delivery
            log.exception("sender raised for delivery %s", row["id"])
            return SendResult(SendOutcome.TRANSIENT, error=type(e).__name__)

    async def _extend(self, row: dict[str, Any]) -> bool:
        """Renew a lease about to run out, if it is still ours (the send-once guard)."""
        d = t.deliveries
        until = datetime.now(UTC) + max(self.lease, SEND_MARGIN * 2)
        async with self.engine.begin() as conn:
            done = await conn.execute(
                update(d)
                .where(
                    d.c.id == row["id"],
                    d.c.lease_owner == self.owner,
                    d.c.status == "sending",
                    d.c.lease_until > datetime.now(UTC),
                )
                .values(lease_until=until)
            )
        if done.rowcount:
            row["lease_until"] = until
        return bool(done.rowcount)

    def _outcome(self, row: dict[str, Any], result: SendResult, now: datetime) -> dict[str, Any]:
        """The row's new values after one send: sent, queued again, dead or failed."""
        values: dict[str, Any] = {
            "b_id": row["id"],
            "status": "sent",
            "provider_id": result.provider_id,
            "last_error": None,
            "next_attempt_at": row["next_attempt_at"],
            "updated_at": now,
        }
        if result.outcome == SendOutcome.SENT:
            return values
        values["provider_id"] = row["provider_id"]
        values["last_error"] = result.error
        if (
            result.outcome == SendOutcome.TRANSIENT
            and row["attempts"] < self.settings.delivery.max_attempts
        ):
            delay = backoff_seconds(row["attempts"], self.settings.delivery)
            if result.retry_after:
                delay = max(delay, result.retry_after)
                self.limits[row["channel"]].hold(result.retry_after)
            values.update(status="queued", next_attempt_at=now + timedelta(seconds=delay))
        else:
            values["status"] = "dead" if result.outcome == SendOutcome.TRANSIENT else "failed"
        return values

    async def _record(self, batch: list[tuple[dict[str, Any], SendResult]]) -> None:
        """Write a batch of send results in one transaction."""
        if not batch:
            return
        d = t.deliveries
        now = datetime.now(UTC)
        outcomes = [(row, result, self._outcome(row, result, now)) for row, result in batch]
        mine = and_(d.c.id == bindparam("b_id"), d.c.lease_owner == self.owner)
        columns = ("status", "provider_id", "last_error", "next_attempt_at", "updated_at")
        change: dict[str, Any] = {c: bindparam(f"b_{c}") for c in columns}
        change |= {"lease_owner": None, "lease_until": None}
        params = [{f"b_{k}" if k != "b_id" else k: v for k, v in o.items()} for _, _, o in outcomes]
        sent = [p for p in params if p["b_status"] == "sent"]
        other = [p for p in params if p["b_status"] != "sent"]
        async with self.engine.begin() as conn:
            if sent:
                # A status callback may have overtaken us: never move it back to "sent".
                await conn.execute(
                    update(d).where(mine, d.c.status == "sending").values(change), sent
                )
            if other:
                await conn.execute(update(d).where(mine).values(change), other)
            forget = [
                row["id"]
                for row, _, values in outcomes
                if row["kind"] == STRANGER and values["status"] != "queued"
            ]
            if forget:
                await conn.execute(update(d).where(d.c.id.in_(forget)).values(address=None))
            for row, result, values in outcomes:
                if result.contact_dead:
                    await mark_contact_dead(conn, row["channel"], row["address"], result.error)
                if values["status"] == "failed":
                    await fall_back(conn, row, self.settings)
                    self.wake.set()
        for row, _, values in outcomes:
            metrics.outbound_total.labels(channel=row["channel"], status=values["status"]).inc()
            if values["status"] == "sent":
                waited = (now - row["created_at"]).total_seconds()
                metrics.delivery_seconds.labels(channel=row["channel"]).observe(max(waited, 0))
        log.info("recorded %d send results", len(outcomes))


UNSOLICITED = ("announcement", "digest")


async def _opted_out(conn: AsyncConnection, rows: list[dict[str, Any]]) -> set[str]:
    """Ids of unsolicited, non-urgent deliveries whose address has since said STOPP."""
    candidates = [r for r in rows if r["kind"] in UNSOLICITED and r["priority"] != "urgent"]
    if not candidates:
        return set()
    cp = t.contact_points
    pairs = list({(r["channel"], r["address"]) for r in candidates})
    stopped = {
        (p.channel, p.address)
        for p in await conn.execute(
            select(cp.c.channel, cp.c.address).where(
                tuple_(cp.c.channel, cp.c.address).in_(pairs), cp.c.opted_out_at.is_not(None)
            )
        )
    }
    return {r["id"] for r in candidates if (r["channel"], r["address"]) in stopped}


async def fall_back(conn: AsyncConnection, row: dict[str, Any], settings: Settings) -> list[str]:
    """New deliveries on the guardian's next channels after a failed or skipped one.

    Opted-out channels on the way get `skipped` deliveries (unless urgent), each
    naming the one it replaces in `fallback_of`; returns the new ids.
    """
    if not row.get("guardian_id") or row["kind"] == "digest":
        return []  # a digest mail is no text for another channel
    urgent = row["priority"] == "urgent"
    routes = await load_routes(conn, [row["guardian_id"]])
    plan = routes.plan(row["guardian_id"], urgent=urgent, after=row["channel"])
    if not plan:
        return []
    announcement = None
    if row.get("announcement_id"):
        announcement = (
            await conn.execute(
                select(t.announcements.c.text, t.units.c.name)
                .join(t.units, t.units.c.id == t.announcements.c.unit_id)
                .where(t.announcements.c.id == row["announcement_id"])
            )
        ).first()
    created: list[str] = []
    previous = row["id"]
    for route in plan:
        body = row["body"] or ""
        if body.startswith(MAIL_MARKER):
            body = json.loads(body)["mail"]["text"]  # the text of a mail, for another channel
        unit_name = None
        if announcement is not None:
            body, unit_name = announcement
            if route.channel != "email":
                body = f"{unit_name}: {body}"
        if route.channel == "email":
            # Every mail carries a Reply-To token bound to its recipient.
            local = await reply_tokens.issue(
                conn,
                recipient_kind="guardian",
                recipient_id=row["guardian_id"],
                address=route.address,
                days=settings.email.reply_token_days,
                thread_id=row.get("thread_id"),
            )
            body = mail_content(
                to=route.address,
                subject=row.get("subject") or "",
                text=body,
                reply_to=f"{local}@{settings.email.reply_domain}",
                from_display=unit_name,
            )
        skip = route.opted_out and not urgent
        previous = await enqueue(
            conn,
            kind=row["kind"],
            channel=route.channel,
            address=route.address,
            body=body,
            guardian_id=row["guardian_id"],
            staff_id=row.get("staff_id"),
            thread_id=row.get("thread_id"),
            announcement_id=row.get("announcement_id"),
            subject=row.get("subject"),
            priority=row["priority"],
            fallback_of=previous,
            status="skipped" if skip else "queued",
        )
        created.append(previous)
    return created


async def mark_contact_dead(
    conn: AsyncConnection, channel: str, address: str, reason: str | None
) -> None:
    """Remember that an address cannot be reached, so later sends pass over it."""
    now = datetime.now(UTC)
    cp = t.contact_points
    done = await conn.execute(
        update(cp)
        .where(cp.c.channel == channel, cp.c.address == address)
        .values(dead_at=now, dead_reason=reason, updated_at=now)
    )
    if not done.rowcount:
        await conn.execute(
            insert(cp),
            {
                "channel": channel,
                "address": address,
                "dead_at": now,
                "dead_reason": reason,
                "updated_at": now,
            },
        )


async def record_statuses(
    engine: AsyncEngine, settings: Settings, updates: Sequence[StatusUpdate]
) -> list[None]:
    """Providers' later words on sends, applied in order in one transaction: each
    moves its delivery forward, never back.

    The running bridge writes every status callback waiting at the same moment this
    way (`bridge.group_commit`): a storm brings two per SMS (sent, delivered). The
    group costs one read and one write, whatever its size; only a failure (with its
    fallback) is written on its own."""
    d = t.deliveries
    now = datetime.now(UTC)
    async with engine.begin() as conn:
        by_id, by_provider = await _deliveries_for(conn, updates)
        moved: dict[str, dict[str, Any]] = {}  # delivery id -> its plain status change
        for update_ in updates:
            if update_.delivery_id:
                row = by_id.get(update_.delivery_id)
            else:
                row = by_provider.get((update_.channel.value, update_.provider_id))
            if row is None or row["status"] in TERMINAL:
                continue
            if update_.status == "failed":
                values: dict[str, Any] = {"status": "failed", "last_error": update_.error}
            elif RANK.get(update_.status, -1) > RANK.get(row["status"], -1):
                values = {"status": update_.status}
            else:
                continue
            values["provider_id"] = row["provider_id"] or update_.provider_id
            row.update(values)  # what a later update in the group sees
            if values["status"] != "failed":
                moved[row["id"]] = {
                    "_id": row["id"],
                    "_status": values["status"],
                    "_provider": values["provider_id"],
                }
                continue
            moved.pop(row["id"], None)
            await conn.execute(
                update(d).where(d.c.id == row["id"]).values(updated_at=now, **values)
            )
            if update_.contact_dead and row["address"]:
                await mark_contact_dead(conn, update_.channel.value, row["address"], update_.error)
            await fall_back(conn, row, settings)
        if moved:
            await conn.execute(
                update(d)
                .where(d.c.id == bindparam("_id"))
                .values(
                    updated_at=now,
                    status=bindparam("_status"),
                    provider_id=bindparam("_provider"),
                ),
                list(moved.values()),
            )
    return [None] * len(updates)


async def _deliveries_for(
    conn: AsyncConnection, updates: Sequence[StatusUpdate]
) -> tuple[dict[str, dict[str, Any]], dict[tuple[str, str], dict[str, Any]]]:
    """The deliveries the updates name, by id and by (channel, provider id): one dict
    per delivery, however it was named."""
    d = t.deliveries
    ids = {u.delivery_id for u in updates if u.delivery_id}
    provider_ids = {u.provider_id for u in updates if not u.delivery_id and u.provider_id}
    rows: dict[str, dict[str, Any]] = {}
    for where in (
        d.c.id.in_(ids) if ids else None,
        d.c.provider_id.in_(provider_ids) if provider_ids else None,
    ):
        if where is not None:
            for found in (await conn.execute(select(d).where(where))).mappings():
                rows.setdefault(found["id"], dict(found))
    by_provider = {
        (row["channel"], row["provider_id"]): row for row in rows.values() if row["provider_id"]
    }
    return rows, by_provider


def status_error_splittable(exc: BaseException) -> bool:
    """Whether one callback's data may have failed a group of them (not the store)."""
    return not isinstance(exc, OperationalError | InterfaceError | OSError | StoreUnavailable)
