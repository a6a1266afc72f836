"""Announcements: staff to the guardians of a unit, groups or students, one delivery each."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    CompoundSelect,
    Insert,
    Select,
    Text,
    and_,
    bindparam,
    case,
    false,
    func,
    insert,
    literal,
    not_,
    null,
    or_,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from bridge import reply_tokens
from bridge.config import Settings
from bridge.digests import HELD
from bridge.domain import mail_content
from bridge.routing import planned_routes, quiet_until
from bridge.sms_text import MAX_SEGMENTS, sms_length
from bridge.store import tables as t
from bridge.store.ids import new_id
from bridge.store.tables import UTCDateTime

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
) -> Select[tuple[str]]:
    """The guardians' ids: the union of the groups and students, each guardian once.

    Refuses unknown units, groups and students; each guardian is selected once.
    """
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
    return select(g.c.id).where(
        g.c.active.is_(True),
        g.c.id.in_(
            select(gs.c.guardian_id).where(
                gs.c.student_id.in_(students), gs.c.restricted.is_(False)
            )
        ),
    )


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
        who = await _recipients(conn, unit_id, group_ids or [], student_ids or [])
        # Worked out once for the whole fan-out (the database would otherwise redo it
        # for each channel).
        recipients = who.cte("recipients").prefix_with("MATERIALIZED")
        unit_name = str(await conn.scalar(select(t.units.c.name).where(t.units.c.id == unit_id)))
        short = f"{unit_name}: {text}"
        sms_segments = sms_length(short).segments
        if sms_segments > MAX_SEGMENTS:
            raise AnnouncementError(
                f"the text is too long for SMS ({sms_segments} segments, at most {MAX_SEGMENTS})"
            )
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
        fan_out = _FanOut(announcement_id, urgent, short, sms_segments, subject or unit_name)
        plan = await planned_routes(conn, recipients, urgent=urgent, id_prefix=_id_prefix("dl"))
        await conn.execute(fan_out.insert(plan, not_before or now, now))
        await _write_mails(
            conn,
            settings,
            announcement_id=announcement_id,
            unit_id=unit_id,
            unit_name=unit_name,
            subject=subject or unit_name,
            text=text,
            urgent=urgent,
            now=now,
        )
        firsts, skipped = await _counts(conn, announcement_id)
    return Created(announcement_id, firsts, skipped, not_before)


@dataclass(frozen=True)
class _FanOut:
    """The deliveries of one announcement, written by one INSERT ... SELECT.

    Each guardian's planned routes (`routing.planned_routes`) become a chain of
    deliveries: opted-out channels `skipped`, each next one naming the one before in
    `fallback_of`. A guardian with nothing to try gets one `skipped` delivery on channel
    `none`. A digest guardian's e-mail is held (`skipped`, last_error HELD) for their daily
    mail of announcements, unless the announcement is urgent. E-mail bodies carry a reply
    token each and are written afterwards by `_write_mails`.
    """

    announcement_id: str
    urgent: bool
    short: str  # the SMS and Telegram text
    sms_segments: int
    subject: str

    def insert(self, plan: CompoundSelect[Any], due: datetime, now: datetime) -> Insert:
        g, d = t.guardians, t.deliveries
        route = plan.subquery("plan")
        nothing_open = route.c.channel.is_(None)
        digest = false() if self.urgent else g.c.digest
        held = and_(route.c.channel == "email", digest, not_(route.c.opted_out))
        values: dict[str, ColumnElement[Any]] = {
            "id": route.c.id,
            "kind": literal("announcement", Text),
            "announcement_id": literal(self.announcement_id, Text),
            "guardian_id": route.c.guardian_id,
            "channel": func.coalesce(route.c.channel, "none"),
            "address": route.c.address,
            "subject": literal(self.subject, Text),
            "body": case(
                (nothing_open, ""), (route.c.channel == "email", null()), else_=self.short
            ),
            "priority": literal("urgent" if self.urgent else "bulk", Text),
            "status": case(
                (nothing_open, "skipped"),
                (route.c.opted_out, "skipped"),
                (held, "skipped"),
                else_="queued",
            ),
            "attempts": literal(0),
            "next_attempt_at": literal(due, UTCDateTime()),
            "last_error": case((nothing_open, "no open channel"), (held, HELD), else_=null()),
            "segments": case((route.c.channel == "sms", self.sms_segments), else_=null()),
            "fallback_of": route.c.fallback_of,
            "created_at": literal(now, UTCDateTime()),
            "updated_at": literal(now, UTCDateTime()),
        }
        rows = select(*(v.label(k) for k, v in values.items())).select_from(
            route.join(g, g.c.id == route.c.guardian_id)
        )
        return insert(d).from_select(list(values), rows)


async def _write_mails(
    conn: AsyncConnection,
    settings: Settings,
    *,
    announcement_id: str,
    unit_id: str,
    unit_name: str,
    subject: str,
    text: str,
    urgent: bool,
    now: datetime,
) -> None:
    """Every e-mail delivery's body, with a Reply-To token of its own (held ones too).

    Bulk mail also carries a List-Unsubscribe address.
    """
    d = t.deliveries
    mails = (
        await conn.execute(
            select(d.c.id, d.c.guardian_id, d.c.address).where(
                d.c.announcement_id == announcement_id, d.c.channel == "email"
            )
        )
    ).all()
    domain = settings.email.reply_domain
    tokens: list[dict[str, Any]] = []
    bodies: list[dict[str, Any]] = []
    for delivery_id, guardian_id, address in mails:
        local, token_row = reply_tokens.new_row(
            recipient_kind="guardian",
            recipient_id=guardian_id,
            address=address,
            days=settings.email.reply_token_days,
            unit_id=unit_id,
            now=now,
        )
        tokens.append(token_row)
        body = mail_content(
            to=address,
            subject=subject,
            text=text,
            reply_to=f"{local}@{domain}",
            from_display=unit_name,
            list_unsubscribe=None if urgent else f"mailto:{local}@{domain}?subject=STOPP",
        )
        bodies.append({"delivery_id": delivery_id, "mail": body})
    set_body = update(d).where(d.c.id == bindparam("delivery_id")).values(body=bindparam("mail"))
    for i in range(0, len(tokens), CHUNK):
        await conn.execute(insert(t.reply_tokens), tokens[i : i + CHUNK])
        await conn.execute(set_body, bodies[i : i + CHUNK])


async def _counts(conn: AsyncConnection, announcement_id: str) -> tuple[int, int]:
    """(first deliveries, skipped ones): held mail is not counted as skipped."""
    d = t.deliveries
    row = (
        await conn.execute(
            select(
                func.count().filter(d.c.fallback_of.is_(None)),
                func.count().filter(
                    d.c.status == "skipped", or_(d.c.last_error.is_(None), d.c.last_error != HELD)
                ),
            ).where(d.c.announcement_id == announcement_id)
        )
    ).one()
    return int(row[0]), int(row[1])


def _id_prefix(prefix: str) -> str:
    """`new_id`'s prefix and time part; the database draws the 80 random bits."""
    return new_id(prefix)[:-20]


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
