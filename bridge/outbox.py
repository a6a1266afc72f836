"""Deliveries: everything that leaves the bridge, and the operator's retry of them."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import and_, case, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from bridge import metrics
from bridge.config import DeliverySettings, Settings
from bridge.domain import Channel, Outgoing, SendOutcome, SendResult, StatusUpdate
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

PRIORITY_ORDER = {"urgent": 0, "normal": 1, "bulk": 2}
# Status moves forward only; failed and dead are terminal (SPEC section 8).
RANK = {"queued": 0, "sending": 1, "sent": 2, "delivered": 3}
TERMINAL = ("delivered", "failed", "dead", "skipped")


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


class OutboxWorker:
    """Claims due deliveries with a lease, sends them, and records what happened."""

    def __init__(
        self,
        engine: AsyncEngine,
        settings: Settings,
        senders: dict[str, ChannelSender],
        *,
        batch: int = 200,
        concurrency: int = 32,
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.senders = senders
        self.batch = batch
        self.owner = new_id("worker")
        self.wake = asyncio.Event()
        self.limits = {
            "sms": RateLimit(settings.sms.max_per_second),
            "telegram": RateLimit(settings.telegram.max_per_second),
            "email": RateLimit(settings.email.max_per_second),
        }
        # Bounded concurrency per channel: a slow provider cannot take every slot.
        self.slots = {channel: asyncio.Semaphore(concurrency) for channel in self.limits}

    async def claim(self) -> list[dict[str, Any]]:
        """Take up to `batch` due deliveries on our channels, leased to this worker."""
        d = t.deliveries
        now = datetime.now(UTC)
        due = (
            select(d.c.id)
            .where(
                d.c.channel.in_(list(self.senders)),
                or_(
                    and_(d.c.status == "queued", d.c.next_attempt_at <= now),
                    and_(d.c.status == "sending", d.c.lease_until < now),
                ),
            )
            .order_by(case(PRIORITY_ORDER, value=d.c.priority, else_=1), d.c.next_attempt_at)
            .limit(self.batch)
        )
        async with self.engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                due = due.with_for_update(skip_locked=True)
            ids = list((await conn.execute(due)).scalars())
            if not ids:
                return []
            await conn.execute(
                update(d)
                .where(d.c.id.in_(ids))
                .values(
                    status="sending",
                    lease_owner=self.owner,
                    lease_until=now + timedelta(seconds=self.settings.delivery.lease_seconds),
                    updated_at=now,
                )
            )
            rows = (await conn.execute(select(d).where(d.c.id.in_(ids)))).mappings().all()
        return [dict(r) for r in rows]

    async def run_once(self) -> int:
        """One claim-and-send round; returns how many deliveries it handled."""
        claimed = await self.claim()
        if claimed:
            await asyncio.gather(*(self._send(row) for row in claimed))
        return len(claimed)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                handled = await self.run_once()
            except Exception:
                log.exception("outbox round failed")
                handled = 0
            if handled:
                continue
            self.wake.clear()
            waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self.wake.wait())]
            await asyncio.wait(waiters, timeout=1.0, return_when=asyncio.FIRST_COMPLETED)
            for w in waiters:
                w.cancel()

    async def _send(self, row: dict[str, Any]) -> None:
        async with self.slots[row["channel"]]:
            await self._send_now(row)

    async def _send_now(self, row: dict[str, Any]) -> None:
        d = t.deliveries
        await self.limits[row["channel"]].take()
        # The send-once guard: count the attempt under our lease right before the call,
        # so a lease we lost (another worker took over) never sends a second time.
        async with self.engine.begin() as conn:
            if await _opted_out_now(conn, row):
                await conn.execute(
                    update(d)
                    .where(d.c.id == row["id"], d.c.lease_owner == self.owner)
                    .values(
                        status="skipped",
                        last_error="opted out",
                        lease_owner=None,
                        lease_until=None,
                        updated_at=datetime.now(UTC),
                    )
                )
                await fall_back(conn, row)
                self.wake.set()
                return
            guarded = await conn.execute(
                update(d)
                .where(d.c.id == row["id"], d.c.lease_owner == self.owner, d.c.status == "sending")
                .values(attempts=d.c.attempts + 1)
            )
        if not guarded.rowcount:
            return
        attempts = row["attempts"] + 1
        out = Outgoing(
            delivery_id=row["id"],
            channel=Channel(row["channel"]),
            address=row["address"],
            body=row["body"] or "",
            subject=row["subject"],
        )
        try:
            result = await self.senders[row["channel"]].send(out)
        except Exception as e:  # an adapter bug must not lose the delivery
            log.exception("sender raised for delivery %s", row["id"])
            result = SendResult(SendOutcome.TRANSIENT, error=type(e).__name__)
        await self._record(row, attempts, result)

    async def _record(self, row: dict[str, Any], attempts: int, result: SendResult) -> None:
        d = t.deliveries
        now = datetime.now(UTC)
        values: dict[str, Any] = {"updated_at": now, "lease_owner": None, "lease_until": None}
        if result.outcome == SendOutcome.SENT:
            values.update(status="sent", provider_id=result.provider_id, last_error=None)
        elif (
            result.outcome == SendOutcome.TRANSIENT
            and attempts < self.settings.delivery.max_attempts
        ):
            delay = backoff_seconds(attempts, self.settings.delivery)
            if result.retry_after:
                delay = max(delay, result.retry_after)
                self.limits[row["channel"]].hold(result.retry_after)
            values.update(
                status="queued",
                last_error=result.error,
                next_attempt_at=now + timedelta(seconds=delay),
            )
        else:
            status = "dead" if result.outcome == SendOutcome.TRANSIENT else "failed"
            values.update(status=status, last_error=result.error)
        async with self.engine.begin() as conn:
            mine = and_(d.c.id == row["id"], d.c.lease_owner == self.owner)
            if values["status"] == "sent":
                # A status callback may have overtaken us: never move it back to "sent".
                mine = and_(mine, d.c.status == "sending")
            done = await conn.execute(update(d).where(mine).values(**values))
            if not done.rowcount and values["status"] == "sent":
                await conn.execute(
                    update(d)
                    .where(d.c.id == row["id"])
                    .values(provider_id=result.provider_id, lease_owner=None, lease_until=None)
                )
            if result.contact_dead:
                await mark_contact_dead(conn, row["channel"], row["address"], result.error)
            if values["status"] == "failed":
                await fall_back(conn, row)
                self.wake.set()
        metrics.outbound_total.labels(channel=row["channel"], status=values["status"]).inc()
        if values["status"] == "sent":
            waited = (now - row["created_at"]).total_seconds()
            metrics.delivery_seconds.labels(channel=row["channel"]).observe(max(waited, 0))
        log.info("delivery %s %s (attempt %d)", row["id"], values["status"], attempts)


UNSOLICITED = ("announcement", "digest")


async def _opted_out_now(conn: AsyncConnection, row: dict[str, Any]) -> bool:
    """An unsolicited, non-urgent delivery to an address that has since said STOPP."""
    if row["kind"] not in UNSOLICITED or row["priority"] == "urgent":
        return False
    cp = t.contact_points
    stopped = await conn.scalar(
        select(cp.c.opted_out_at).where(
            cp.c.channel == row["channel"], cp.c.address == row["address"]
        )
    )
    return stopped is not None


async def fall_back(conn: AsyncConnection, row: dict[str, Any]) -> list[str]:
    """New deliveries on the guardian's next channels after a failed or skipped one.

    Opted-out channels on the way get `skipped` deliveries (unless urgent), each
    naming the one it replaces in `fallback_of`; returns the new ids.
    """
    if not row.get("guardian_id"):
        return []
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
        if announcement is not None:
            text, unit_name = announcement
            body = text if route.channel == "email" else f"{unit_name}: {text}"
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


async def record_status(engine: AsyncEngine, update_: StatusUpdate) -> None:
    """A provider's later word on a send; moves a delivery forward, never back."""
    d = t.deliveries
    now = datetime.now(UTC)
    if update_.delivery_id:
        where = d.c.id == update_.delivery_id
    else:
        where = and_(d.c.channel == update_.channel.value, d.c.provider_id == update_.provider_id)
    async with engine.begin() as conn:
        found = (await conn.execute(select(d).where(where))).mappings().first()
        if found is None or found["status"] in TERMINAL:
            return
        row = dict(found)
        if update_.status == "failed":
            values: dict[str, Any] = {"status": "failed", "last_error": update_.error}
        elif RANK.get(update_.status, -1) > RANK.get(row["status"], -1):
            values = {"status": update_.status}
        else:
            return
        if not row["provider_id"]:
            values["provider_id"] = update_.provider_id
        await conn.execute(update(d).where(d.c.id == row["id"]).values(updated_at=now, **values))
        if update_.contact_dead and row["address"]:
            await mark_contact_dead(conn, update_.channel.value, row["address"], update_.error)
        if values["status"] == "failed":
            await fall_back(conn, row)
