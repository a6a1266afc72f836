"""Who at a unit hears about a student: staff following the student's groups, or the unit.

Staff follow the groups listed for them in that unit, or the whole unit when none
are listed (SPEC section 8). Per-message mail goes to followers with `notify` each or
both; when there is none, to the unit's own address.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from bridge.store import tables as t


@dataclass(frozen=True)
class Recipient:
    staff_id: str | None  # None: the unit's own address
    email: str
    language: str | None


async def followers(
    conn: AsyncConnection, unit_id: str, student_id: str, notify: tuple[str, ...]
) -> list[Recipient]:
    """Active staff of the unit who follow the student and chose one of `notify`."""
    su, st, sg = t.staff_units, t.staff, t.student_groups
    groups = set(
        await conn.scalars(
            select(sg.c.group_id).where(sg.c.student_id == student_id, sg.c.unit_id == unit_id)
        )
    )
    rows = await conn.execute(
        select(st.c.id, st.c.email, st.c.language, su.c.groups)
        .join(su, su.c.staff_id == st.c.id)
        .where(
            su.c.unit_id == unit_id,
            su.c.active.is_(True),
            st.c.active.is_(True),
            su.c.notify.in_(notify),
        )
        .order_by(st.c.id)
    )
    return [
        Recipient(r.id, r.email, r.language) for r in rows if not r.groups or groups & set(r.groups)
    ]


async def message_recipients(
    conn: AsyncConnection, unit_id: str, student_id: str
) -> list[Recipient]:
    """Who gets an e-mail for each parent message: followers, else the unit's address."""
    found = await followers(conn, unit_id, student_id, ("each", "both"))
    if found:
        return found
    unit_email = await conn.scalar(select(t.units.c.email).where(t.units.c.id == unit_id))
    return [Recipient(None, unit_email, None)] if unit_email else []
