"""Announcements: staff to the guardians of a unit, groups or students, one delivery each."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, insert, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from bridge import reply_tokens
from bridge.config import Settings
from bridge.digests import HELD
from bridge.domain import mail_content
from bridge.routing import load_routes, quiet_until
from bridge.sms_text import MAX_SEGMENTS, sms_length
from bridge.store import tables as t
from bridge.store.ids import new_id

CHUNK = 5000


class AnnouncementError(Exception):
    """Unknown unit, group or student: the one line the user sees."""


@dataclass(frozen=True)
class Created:
    announcement_id: str
    deliveries: int  # first deliveries, one per guardian; fallbacks not counted
    skipped: int
    not_before: datetime | None  # when quiet hours hold the deliveries back


async def _recipients(
    conn: AsyncConnection, unit_id: str, group_ids: list[str], student_ids: list[str]
) -> list[str]:
    """Guardian ids, each once, in roster order: the union of the groups and students."""
    s, sg, gs, g = t.students, t.student_groups, t.guardian_students, t.guardians
    if not await conn.scalar(select(t.units.c.id).where(t.units.c.id == unit_id)):
        raise AnnouncementError(f"unknown unit: {unit_id}")
    in_unit = or_(s.c.unit_id == unit_id, s.c.sfo_unit_id == unit_id)
    if group_ids:
        known = set(
            await conn.scalars(
                select(t.groups.c.id).where(
                    t.groups.c.unit_id == unit_id, t.groups.c.id.in_(group_ids)
                )
            )
        )
        if missing := [x for x in group_ids if x not in known]:
            raise AnnouncementError(f"unknown group in {unit_id}: {', '.join(missing)}")
    if student_ids:
        known = set(await conn.scalars(select(s.c.id).where(s.c.id.in_(student_ids), in_unit)))
        if missing := [x for x in student_ids if x not in known]:
            raise AnnouncementError(f"unknown student in {unit_id}: {', '.join(missing)}")
    students = select(s.c.id).where(in_unit, s.c.active.is_(True))
    if group_ids or student_ids:
        conditions = []
        if group_ids:
            conditions.append(
                s.c.id.in_(
                    select(sg.c.student_id).where(
                        sg.c.unit_id == unit_id, sg.c.group_id.in_(group_ids)
                    )
                )
            )
        if student_ids:
            conditions.append(s.c.id.in_(student_ids))
        students = students.where(or_(*conditions))
    query = (
        select(g.c.id, g.c.roster_order)
        .where(
            g.c.active.is_(True),
            g.c.id.in_(
                select(gs.c.guardian_id).where(
                    gs.c.student_id.in_(students), gs.c.restricted.is_(False)
                )
            ),
        )
        .order_by(g.c.roster_order, g.c.id)
    )
    return [r.id for r in await conn.execute(query)]


async def create_announcement(
    engine: AsyncEngine,
    settings: Settings,
    *,
    unit_id: str,
    text: str,
    group_ids: list[str] | None = None,
    student_ids: list[str] | None = None,
    subject: str | None = None,
    urgent: bool = False,
    created_by: str = "cli",
) -> Created:
    """Store the announcement and fan it out into deliveries, all in one transaction."""
    if not text.strip():
        raise AnnouncementError("the announcement has no text")
    now = datetime.now(UTC)
    not_before = None if urgent else quiet_until(now, settings.delivery.quiet_hours, settings.tz)
    announcement_id = new_id("an")
    async with engine.begin() as conn:
        guardians = await _recipients(conn, unit_id, group_ids or [], student_ids or [])
        unit_name = await conn.scalar(select(t.units.c.name).where(t.units.c.id == unit_id))
        await conn.execute(
            insert(t.announcements),
            {
                "id": announcement_id,
                "unit_id": unit_id,
                "group_ids": group_ids or [],
                "student_ids": student_ids or [],
                "subject": subject,
                "text": text,
                "urgent": urgent,
                "created_by": created_by,
                "created_at": now,
            },
        )
        routes = await load_routes(conn, guardians)
        short = f"{unit_name}: {text}"
        sms_segments = sms_length(short).segments
        if sms_segments > MAX_SEGMENTS:
            raise AnnouncementError(
                f"the text is too long for SMS ({sms_segments} segments, at most {MAX_SEGMENTS})"
            )
        base: dict[str, Any] = {
            "kind": "announcement",
            "announcement_id": announcement_id,
            "staff_id": None,
            "thread_id": None,
            "subject": subject or unit_name,
            "priority": "urgent" if urgent else "bulk",
            "attempts": 0,
            "next_attempt_at": not_before or now,
            "created_at": now,
            "updated_at": now,
        }
        rows: list[dict[str, Any]] = []
        tokens: list[dict[str, Any]] = []
        firsts = skipped = 0
        held = set() if urgent else await _digest_guardians(conn, guardians)
        domain = settings.email.reply_domain

        def mail(guardian_id: str, address: str) -> str:
            # Every mail carries a Reply-To token; bulk mail also a List-Unsubscribe.
            local, token_row = reply_tokens.new_row(
                recipient_kind="guardian",
                recipient_id=guardian_id,
                address=address,
                days=settings.email.reply_token_days,
                unit_id=unit_id,
                now=now,
            )
            tokens.append(token_row)
            return mail_content(
                to=address,
                subject=subject or str(unit_name),
                text=text,
                reply_to=f"{local}@{domain}",
                from_display=str(unit_name),
                list_unsubscribe=None if urgent else f"mailto:{local}@{domain}?subject=STOPP",
            )

        for guardian_id in guardians:
            plan = routes.plan(guardian_id, urgent=urgent)
            if not plan:
                # No channel can be tried at all: one skipped delivery says so.
                rows.append(_row(base, guardian_id, None, None, "", "skipped", None))
                firsts += 1
                skipped += 1
                continue
            previous = None
            for route in plan:
                skip = route.opted_out and not urgent
                hold = not skip and route.channel == "email" and guardian_id in held
                body = mail(guardian_id, route.address) if route.channel == "email" else short
                row = _row(
                    base,
                    guardian_id,
                    route.channel,
                    route.address,
                    body,
                    "skipped" if skip or hold else "queued",
                    previous,
                )
                if hold:
                    # One daily mail of announcements instead (the guardian's digest).
                    row["last_error"] = HELD
                row["segments"] = sms_segments if route.channel == "sms" else None
                rows.append(row)
                if previous is None:
                    firsts += 1
                skipped += skip
                previous = row["id"]
        for i in range(0, len(tokens), CHUNK):
            await conn.execute(insert(t.reply_tokens), tokens[i : i + CHUNK])
        for i in range(0, len(rows), CHUNK):
            await conn.execute(insert(t.deliveries), rows[i : i + CHUNK])
    return Created(announcement_id, firsts, skipped, not_before)


async def _digest_guardians(conn: AsyncConnection, guardian_ids: list[str]) -> set[str]:
    """Which of these guardians chose one daily mail of announcements."""
    g = t.guardians
    found: set[str] = set()
    for i in range(0, len(guardian_ids), 500):
        chunk = guardian_ids[i : i + 500]
        found |= set(await conn.scalars(select(g.c.id).where(g.c.id.in_(chunk), g.c.digest)))
    return found


def _row(
    base: dict[str, Any],
    guardian_id: str,
    channel: str | None,
    address: str | None,
    body: str,
    status: str,
    fallback_of: str | None,
) -> dict[str, Any]:
    return {
        **base,
        "id": new_id("dl"),
        "guardian_id": guardian_id,
        "channel": channel or "none",
        "address": address,
        "body": body,
        "status": status,
        "last_error": "no open channel" if channel is None else None,
        "provider_id": None,
        "fallback_of": fallback_of,
        "segments": None,
    }


async def summary(engine: AsyncEngine, announcement_id: str) -> dict[str, dict[str, int]]:
    """Deliveries per channel and status: who was reached, for the school to see."""
    d = t.deliveries
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(d.c.channel, d.c.status, func.count())
            .where(d.c.announcement_id == announcement_id)
            .group_by(d.c.channel, d.c.status)
        )
        result: dict[str, dict[str, int]] = {}
        for channel, status, count in rows:
            result.setdefault(channel, {})[status] = int(count)
    return result
