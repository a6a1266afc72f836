"""The store side of an import: one SELECT per table in, chunked executemany out."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import Table, and_, bindparam, delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.dml import Delete, Insert, Update

from bridge.roster.plan import (
    CLOSED_COLS,
    GROUP_COLS,
    GUARDIAN_COLS,
    STAFF_COLS,
    STAFF_UNIT_COLS,
    STUDENT_COLS,
    UNIT_COLS,
    Existing,
    Op,
)
from bridge.store import tables as t

# Rows per executemany: large enough to amortise a round trip, small enough that one
# chunk's parameters stay a few megabytes.
CHUNK = 2000


async def _rows(conn: AsyncConnection, table: Table, cols: tuple[str, ...]) -> Any:
    return await conn.execute(select(*(table.c[c] for c in cols)))


async def load_existing(conn: AsyncConnection) -> Existing:
    """The roster tables as the planner compares them (value tuples in the plan's order)."""
    ex = Existing()
    for row in await _rows(conn, t.units, ("id", *UNIT_COLS)):
        ex.units[row[0]] = tuple(row[1:])
    for row in await _rows(conn, t.groups, ("unit_id", "id", *GROUP_COLS)):
        ex.groups[(row[0], row[1])] = tuple(row[2:])
    for row in await _rows(conn, t.closed_days, ("unit_id", "from_date", "to_date", *CLOSED_COLS)):
        ex.closed[(row[0], row[1], row[2])] = tuple(row[3:])
    for row in await _rows(conn, t.students, ("id", *STUDENT_COLS)):
        ex.students[row[0]] = tuple(row[1:])
    for sid, uid, gid in await _rows(conn, t.student_groups, ("student_id", "unit_id", "group_id")):
        ex.student_groups.setdefault(sid, set()).add((uid, gid))
    for row in await _rows(conn, t.guardians, ("id", *GUARDIAN_COLS)):
        ex.guardians[row[0]] = tuple(row[1:])
    links = ("guardian_id", "student_id", "restricted")
    for gid, sid, restricted in await _rows(conn, t.guardian_students, links):
        ex.guardian_links.setdefault(gid, {})[sid] = bool(restricted)
    for row in await _rows(conn, t.staff, ("id", *STAFF_COLS)):
        ex.staff[row[0]] = tuple(row[1:])
    for sid, uid, notify, groups, active in await _rows(
        conn, t.staff_units, ("staff_id", "unit_id", *STAFF_UNIT_COLS)
    ):
        ex.staff_units[(sid, uid)] = (notify, tuple(groups or ()), active)
    return ex


def _statement(op: Op) -> Insert | Update | Delete:
    if op.action == "insert":
        return insert(op.table)
    match = and_(*(op.table.c[k] == bindparam(f"k_{k}") for k in op.key))
    if op.action == "update":
        # The SET clause comes from the parameter keys that name columns.
        return update(op.table).where(match)
    return delete(op.table).where(match)


async def run_ops(
    conn: AsyncConnection, ops: list[Op], tick: Callable[[int], None] | None = None
) -> None:
    for op in ops:
        statement = _statement(op)
        for start in range(0, len(op.rows), CHUNK):
            chunk = op.rows[start : start + CHUNK]
            await conn.execute(statement, chunk)
            if tick is not None:
                tick(len(chunk))
