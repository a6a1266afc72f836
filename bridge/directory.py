"""Who is writing, and for which children: contact point -> guardians -> children.

Only active guardians and students count, and a guardian never acts for a
`restricted` student (SPEC section 4). A contact point shared by several guardians
acts for the union of their children; reports name the one listed first.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from bridge.domain import Channel
from bridge.store import tables as t


@dataclass(frozen=True)
class Child:
    student_id: str
    first_name: str
    last_name: str
    unit_id: str  # the school
    sfo_unit_id: str | None

    @property
    def full_name(self) -> str:
        return f"{self.first_name} {self.last_name}".strip()

    def unit_for(self, kind: str) -> str | None:
        """The unit id for "school" or "sfo", or None when not enrolled there."""
        return self.unit_id if kind == "school" else self.sfo_unit_id

    @property
    def unit_kinds(self) -> list[str]:
        return ["school", "sfo"] if self.sfo_unit_id else ["school"]


@dataclass(frozen=True)
class Sender:
    """The guardians behind one contact point and the children they may act for."""

    guardian_ids: tuple[str, ...]  # in roster order; the first one names reports
    language: str
    children: tuple[Child, ...]

    @property
    def reporter_id(self) -> str:
        return self.guardian_ids[0]

    def guardian_for(self, student_id: str) -> str:
        """The first listed guardian who may act for this student."""
        return self.acting.get(student_id, self.reporter_id)

    acting: dict[str, str]  # student id -> the first listed guardian who may act


# Within one inbox batch (one transaction), what processing never changes is read once:
# the units' closed days and names. `batch_cache()` opens such a scope for the task.
_cache: ContextVar[dict[Any, Any] | None] = ContextVar("skolebro_directory_cache", default=None)


@contextmanager
def batch_cache() -> Iterator[None]:
    token = _cache.set({})
    try:
        yield
    finally:
        _cache.reset(token)


async def find_senders(
    conn: AsyncConnection, addresses: Sequence[str], default_language: str = "nb"
) -> dict[str, Sender]:
    """`find_sender` for many SMS numbers at once, in two statements; strangers left out."""
    g = t.guardians
    wanted = sorted(set(addresses))
    if not wanted:
        return {}
    rows = (
        await conn.execute(
            select(g.c.id, g.c.language, g.c.mobile)
            .where(g.c.active.is_(True), g.c.mobile.in_(wanted))
            .order_by(g.c.roster_order, g.c.id)
        )
    ).all()
    by_address: dict[str, list[Any]] = {}
    for r in rows:
        by_address.setdefault(r.mobile, []).append(r)
    all_ids = tuple(dict.fromkeys(r.id for r in rows))
    links: dict[str, list[Any]] = {}
    for link in await _child_links(conn, all_ids) if all_ids else []:
        links.setdefault(link["guardian_id"], []).append(link)
    found: dict[str, Sender] = {}
    for address, mine in by_address.items():
        guardian_ids = tuple(r.id for r in mine)
        children, acting = _children_of(
            guardian_ids, [link for gid in guardian_ids for link in links.get(gid, [])]
        )
        found[address] = Sender(
            guardian_ids=guardian_ids,
            language=mine[0].language or default_language,
            children=tuple(children),
            acting=acting,
        )
    return found


async def find_sender(
    conn: AsyncConnection, channel: Channel, address: str, default_language: str = "nb"
) -> Sender | None:
    """The active guardians reachable at this address, or None for a stranger."""
    g, link = t.guardians, t.telegram_links
    query = select(g.c.id, g.c.language).where(g.c.active.is_(True))
    if channel == Channel.SMS:
        query = query.where(g.c.mobile == address)
    elif channel == Channel.EMAIL:
        query = query.where(g.c.email == address.lower())
    elif channel == Channel.TELEGRAM:
        query = query.join(link, link.c.guardian_id == g.c.id).where(link.c.chat_id == int(address))
    else:
        return None
    rows = (await conn.execute(query.order_by(g.c.roster_order, g.c.id))).all()
    if not rows:
        return None
    guardian_ids = tuple(r.id for r in rows)
    children, acting = await _children(conn, guardian_ids)
    return Sender(
        guardian_ids=guardian_ids,
        language=rows[0].language or default_language,
        children=tuple(children),
        acting=acting,
    )


async def _child_links(conn: AsyncConnection, guardian_ids: tuple[str, ...]) -> list[Any]:
    """(guardian, restricted, student) rows for these guardians' active students."""
    gs, s = t.guardian_students, t.students
    return list(
        (
            await conn.execute(
                select(gs.c.guardian_id, gs.c.restricted, s)
                .join(s, s.c.id == gs.c.student_id)
                .where(gs.c.guardian_id.in_(guardian_ids), s.c.active.is_(True))
            )
        ).mappings()
    )


async def _children(
    conn: AsyncConnection, guardian_ids: tuple[str, ...]
) -> tuple[list[Child], dict[str, str]]:
    return _children_of(guardian_ids, await _child_links(conn, guardian_ids))


def _children_of(
    guardian_ids: tuple[str, ...], links: list[Any]
) -> tuple[list[Child], dict[str, str]]:
    order = {gid: i for i, gid in enumerate(guardian_ids)}
    acting: dict[str, str] = {}
    by_id: dict[str, Child] = {}
    for r in links:
        if r["restricted"]:  # no parental responsibility: this guardian cannot act for them
            continue
        by_id[r["id"]] = Child(
            r["id"], r["first_name"], r["last_name"], r["unit_id"], r["sfo_unit_id"]
        )
        current = acting.get(r["id"])
        if current is None or order[r["guardian_id"]] < order[current]:
            acting[r["id"]] = r["guardian_id"]
    children = sorted(by_id.values(), key=lambda c: (c.first_name.lower(), c.student_id))
    return children, acting


async def closed_dates(conn: AsyncConnection, unit_ids: list[str], around: date) -> set[date]:
    """The units' closed days (roster kind `closed`) within a few months of `around`."""
    cache = _cache.get()
    key = ("closed", tuple(unit_ids), around)
    if cache is not None and key in cache:
        return set(cache[key])
    days = await _closed_dates(conn, unit_ids, around)
    if cache is not None:
        cache[key] = frozenset(days)
    return days


async def unit_name(conn: AsyncConnection, unit_id: str) -> str:
    """A unit's name (read once per inbox batch)."""
    cache = _cache.get()
    key = ("unit_name", unit_id)
    if cache is not None and key in cache:
        return str(cache[key])
    name = str(await conn.scalar(select(t.units.c.name).where(t.units.c.id == unit_id)))
    if cache is not None:
        cache[key] = name
    return name


async def _closed_dates(conn: AsyncConnection, unit_ids: list[str], around: date) -> set[date]:
    cd = t.closed_days
    lo, hi = around - timedelta(days=60), around + timedelta(days=200)
    rows = (
        await conn.execute(
            select(cd.c.from_date, cd.c.to_date).where(
                cd.c.unit_id.in_(unit_ids), cd.c.to_date >= lo, cd.c.from_date <= hi
            )
        )
    ).all()
    days: set[date] = set()
    for start, end in rows:
        day = max(start, lo)
        while day <= min(end, hi):
            days.add(day)
            day += timedelta(days=1)
    return days
