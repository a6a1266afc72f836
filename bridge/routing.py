"""Which channel reaches a guardian: their channel order, their identities, opt-outs, dead ends.

A channel in a guardian's order with no identity (no number, no address, no linked
chat) is passed over silently; a dead address (invalid number, blocked bot) is passed
over; an opted-out one gets a `skipped` delivery unless the message is urgent or an
answer to the guardian (SPEC section 8).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta, tzinfo
from typing import TypeVar

from sqlalchemy import select, tuple_
from sqlalchemy.ext.asyncio import AsyncConnection

from bridge.store import tables as t

CHANNELS = ("sms", "telegram", "email")
T = TypeVar("T")


@dataclass(frozen=True)
class Route:
    channel: str
    address: str
    opted_out: bool
    dead: bool


@dataclass
class Routes:
    """Every guardian's channels in their order, with what we know of each address."""

    by_guardian: dict[str, list[Route]] = field(default_factory=dict)

    def plan(self, guardian_id: str, *, urgent: bool, after: str | None = None) -> list[Route]:
        """The routes to use in order: opted-out ones first (to be skipped), then one open.

        With `after`, only channels after that one in the guardian's order count (a
        fallback). Returns [] when nothing at all can be tried.
        """
        routes = self.by_guardian.get(guardian_id, [])
        if after is not None:
            names = [r.channel for r in routes]
            routes = routes[names.index(after) + 1 :] if after in names else []
        planned: list[Route] = []
        for route in routes:
            if route.dead:
                continue
            planned.append(route)
            if urgent or not route.opted_out:
                break
        return planned


async def load_routes(conn: AsyncConnection, guardian_ids: Iterable[str]) -> Routes:
    """Channels and contact state for these guardians, in a few bulk queries."""
    g, link, cp = t.guardians, t.telegram_links, t.contact_points
    ids = list(dict.fromkeys(guardian_ids))
    result = Routes()
    if not ids:
        return result
    guardians: list[tuple[str, str, str | None, str | None]] = []
    chats: dict[str, str] = {}
    for chunk in _chunks(ids):
        guardians += [
            (r.id, r.channels, r.mobile, r.email)
            for r in await conn.execute(
                select(g.c.id, g.c.channels, g.c.mobile, g.c.email).where(g.c.id.in_(chunk))
            )
        ]
        for r in await conn.execute(
            select(link.c.guardian_id, link.c.chat_id)
            .where(link.c.guardian_id.in_(chunk))
            .order_by(link.c.linked_at)
        ):
            chats[r.guardian_id] = str(r.chat_id)  # the latest link wins
    wanted: list[tuple[str, str]] = []
    for gid, channels, mobile, email in guardians:
        addresses = {"sms": mobile, "email": email, "telegram": chats.get(gid)}
        for channel in _order(channels):
            if addresses.get(channel):
                wanted.append((channel, str(addresses[channel])))
    state: dict[tuple[str, str], tuple[bool, bool]] = {}
    for chunk_pairs in _chunks(list(dict.fromkeys(wanted))):
        rows = await conn.execute(
            select(cp.c.channel, cp.c.address, cp.c.opted_out_at, cp.c.dead_at).where(
                tuple_(cp.c.channel, cp.c.address).in_(chunk_pairs)
            )
        )
        for point in rows:
            state[(point.channel, point.address)] = (
                point.opted_out_at is not None,
                point.dead_at is not None,
            )
    for gid, channels, mobile, email in guardians:
        addresses = {"sms": mobile, "email": email, "telegram": chats.get(gid)}
        routes = []
        for channel in _order(channels):
            address = addresses.get(channel)
            if not address:
                continue  # no identity on this channel: passed over silently
            opted_out, dead = state.get((channel, str(address)), (False, False))
            routes.append(Route(channel, str(address), opted_out, dead))
        result.by_guardian[gid] = routes
    return result


def _order(channels: str) -> list[str]:
    return [c for c in dict.fromkeys(x.strip() for x in channels.split(",")) if c in CHANNELS]


def _chunks(items: list[T], size: int = 500) -> Iterable[list[T]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def quiet_until(now: datetime, quiet_hours: str, tz: tzinfo) -> datetime | None:
    """When the quiet hours that `now` falls in end, or None outside them."""
    if not quiet_hours:
        return None
    start_s, end_s = quiet_hours.split("-")
    start, end = time.fromisoformat(start_s), time.fromisoformat(end_s)
    local = now.astimezone(tz)
    clock = local.time()
    if start <= end:
        inside = start <= clock < end
    else:  # across midnight, e.g. 21:00-07:00
        inside = clock >= start or clock < end
    if not inside:
        return None
    day = local.date() if clock < end else local.date() + timedelta(days=1)
    return datetime.combine(day, end, tzinfo=tz)
