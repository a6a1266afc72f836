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
from typing import Any, TypeVar

from sqlalchemy import (
    CTE,
    ColumnElement,
    CompoundSelect,
    Integer,
    Select,
    Text,
    and_,
    case,
    cast,
    false,
    func,
    literal,
    not_,
    null,
    select,
    tuple_,
    union_all,
)
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

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


async def planned_routes(
    conn: AsyncConnection, recipients: CTE, *, urgent: bool, id_prefix: str
) -> CompoundSelect[tuple[str, str, str | None, str | None, bool | None, str | None]]:
    """`Routes.plan` for every guardian in `recipients` (a CTE of guardian `id`s), in SQL.

    Rows (id, guardian_id, channel, address, opted_out, fallback_of): one per planned
    route, each with a fresh delivery id (`id_prefix` and 80 random bits) and the id of
    the route before it in `fallback_of`; a guardian with nothing to try has one row with
    channel NULL (`Routes.plan`'s []). The rules are `load_routes` and `Routes.plan`'s,
    which stay the reference (the tests compare the two): a channel is tried when it is
    in the guardian's order, has an identity and is not dead, and no open channel comes
    before it; with `urgent`, opt-outs do not count. The database, not Python, walks the
    guardians, so an announcement to a whole unit costs one INSERT ... SELECT.
    """
    g, link, cp = t.guardians, t.telegram_links, t.contact_points
    # A guardian's order is free text; the few distinct ones are parsed here, in Python.
    orders = {
        channels: _order(channels)
        for channels in await conn.scalars(
            select(g.c.channels).distinct().join(recipients, recipients.c.id == g.c.id)
        )
    }
    links = select(
        link.c.guardian_id,
        cast(link.c.chat_id, Text).label("chat"),
        func.row_number()
        .over(partition_by=link.c.guardian_id, order_by=link.c.linked_at.desc())
        .label("n"),
    ).subquery("links")
    addresses = {"sms": g.c.mobile, "email": g.c.email, "telegram": links.c.chat}
    # One row per guardian: for each channel its place in their order (NULL when it is
    # not tried at all), its address, whether it is opted out, and a delivery id.
    source = recipients.join(g, g.c.id == recipients.c.id).outerjoin(
        links,
        and_(links.c.guardian_id == g.c.id, links.c.n == 1),  # the latest link wins
    )
    columns: list[ColumnElement[Any]] = [g.c.id.label("guardian_id")]
    for channel in CHANNELS:
        point = cp.alias(f"cp_{channel}")
        address = addresses[channel]
        source = source.outerjoin(
            point, and_(point.c.channel == channel, point.c.address == address)
        )
        places = {s: order.index(channel) for s, order in orders.items() if channel in order}
        usable = and_(
            g.c.channels.in_(list(places)),
            address.is_not(None),
            address != "",  # no identity on this channel: passed over silently
            point.c.dead_at.is_(None),  # a dead address is passed over
        )
        place: ColumnElement[Any] = cast(null(), Integer)  # in nobody's order
        if places:
            place = case((usable, case(places, value=g.c.channels)))
        opted_out = false() if urgent else point.c.opted_out_at.is_not(None)
        columns += [
            place.label(f"{channel}_pos"),
            address.label(f"{channel}_address"),
            opted_out.label(f"{channel}_opted_out"),
            (literal(id_prefix, Text) + _RandomHex()).label(f"{channel}_id"),
        ]
    # Materialised, so that each id is drawn once and `fallback_of` refers to it.
    state = select(*columns).select_from(source).cte("channel_state").prefix_with("MATERIALIZED")

    def pos(channel: str) -> ColumnElement[Any]:
        return state.c[f"{channel}_pos"]

    def before(x: str, channel: str) -> ColumnElement[bool]:
        """Channel x is tried at all and comes before `channel`."""
        return and_(pos(x).is_not(None), pos(x) < pos(channel))

    plans: list[Select[Any]] = []
    for channel in CHANNELS:
        others = [x for x in CHANNELS if x != channel]
        # Tried when no open channel comes before it. Then every channel before it is
        # opted out and tried too, and the nearest of them is the one it falls back from.
        open_before = (and_(before(x, channel), not_(state.c[f"{x}_opted_out"])) for x in others)
        tried = and_(pos(channel).is_not(None), *(not_(o) for o in open_before))
        nearest = [
            (
                and_(
                    before(x, channel),
                    *(not_(and_(before(x, y), before(y, channel))) for y in others if y != x),
                ),
                state.c[f"{x}_id"],
            )
            for x in others
        ]
        plans.append(
            select(
                state.c[f"{channel}_id"].label("id"),
                state.c.guardian_id,
                literal(channel, Text).label("channel"),
                state.c[f"{channel}_address"].label("address"),
                state.c[f"{channel}_opted_out"].label("opted_out"),
                case(*nearest, else_=null()).label("fallback_of"),
            ).where(tried)
        )
    plans.append(
        select(
            (literal(id_prefix, Text) + _RandomHex()).label("id"),
            state.c.guardian_id,
            null().label("channel"),
            null().label("address"),
            null().label("opted_out"),
            null().label("fallback_of"),
        ).where(*(pos(channel).is_(None) for channel in CHANNELS))
    )
    return union_all(*plans)


class _RandomHex(FunctionElement[str]):
    """80 random bits as 20 lower-case hex digits (as in `new_id`), drawn by the database."""

    type = Text()
    inherit_cache = True


@compiles(_RandomHex)
def _random_hex_any(element: _RandomHex, compiler: SQLCompiler, **kw: Any) -> str:
    return "random_hex()"  # for printing statements; SQLite and PostgreSQL follow


@compiles(_RandomHex, "sqlite")
def _random_hex_sqlite(element: _RandomHex, compiler: SQLCompiler, **kw: Any) -> str:
    return "lower(hex(randomblob(10)))"


@compiles(_RandomHex, "postgresql")
def _random_hex_postgresql(element: _RandomHex, compiler: SQLCompiler, **kw: Any) -> str:
    # gen_random_uuid() (PostgreSQL 13+) draws from a strong generator; md5 spreads its
    # 122 random bits over the 20 hex digits taken.
    return "substr(md5(gen_random_uuid()::text), 1, 20)"


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
