"""Digests: the daily absence digest, the unanswered-messages digest, the guardians' daily mail.

Absence digest (kind "absence"), per unit and school day: to each active staff member
with `notify` digest or both in that unit (the unit's own address when it has none),
the unit's active absence reports covering the day, the staff member's groups first,
then the rest of the unit; reports that reached the store after the previous digest
went out (and concern an earlier day), or that concern a day whose digest was missed,
are listed once more as late additions. A small bar chart of the unit's absences per
school day over the last four weeks closes it. A school's digest never shows SFO
reports and vice versa: every absence row belongs to one unit.

Unanswered digest (kind "unanswered"): threads of the unit whose oldest parent message
since the last staff reply is older than `digests.unanswered_after_hours`, to the
digest staff who follow the student, each with a reply address bound to the thread;
when older than twice that, the unit's own address gets them too.

Idempotency: a run first inserts its `digest_runs` row (unit, kind, day) and queues its
deliveries in the same transaction, so a second or concurrent run finds the row and
sends nothing. A row with `sent_at` NULL and `deliveries` 0 means the day's digest was
*missed* (the bridge was down past `digests.grace_minutes`): it is never sent later,
and absence reports for that day are notified at once instead (`digest_already_sent`
is true for sent and missed days alike). `run_digests` takes many units, `RUN_CHUNK`
per transaction, and builds their digests in a fixed number of queries per chunk.

A report recorded while its unit's digest is being built is either in that digest or
notified at once, provided the core asks `absences_needing_notice` (or
`digest_already_sent`) in the transaction that records it: on PostgreSQL the run holds
an advisory lock on (unit, kind, day) that the question waits for; on SQLite the single
writer orders them the same way.

Guardian digest: guardians with `digest` set get one mail a day with the day's
announcements instead of one mail each. The announcement fan-out *holds* such a
guardian's e-mail delivery: status "skipped", `last_error` "digest" (`HELD`);
`guardian_digest` collects held deliveries into one mail per guardian and marks each
held row `last_error` "digest:<id of the digest delivery>" in the same transaction.

Mail bodies are the adapter's `{"mail": {...}}` JSON with a text and an HTML part, in
the recipient's language. Logs carry ids and counts only.
"""

from __future__ import annotations

import hashlib
import html
import json
import logging
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    and_,
    bindparam,
    exists,
    func,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from bridge import outbox, reply_tokens
from bridge.config import Settings
from bridge.i18n import translate
from bridge.routing import load_routes
from bridge.store import tables as t
from bridge.understand import is_public_holiday, redact

log = logging.getLogger("skolebro.digests")

ABSENCE = "absence"
UNANSWERED = "unanswered"
KINDS = (ABSENCE, UNANSWERED)
HELD = "digest"  # `last_error` of an announcement e-mail held for the guardian's digest
CHART_DAYS = 28  # the chart's four weeks, the digest's day included
LATE_LOOKBACK = timedelta(days=31)  # late additions concern at most this far back
UNANSWERED_LOOKBACK = timedelta(days=14)  # older unanswered messages are not nagged about
EXCERPT_CHARS = 160
RUN_CHUNK = 50  # units per transaction in `run_digests`
_WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class DigestError(Exception):
    """Unknown unit or kind: the one line the user sees."""


@dataclass(frozen=True)
class DigestResult:
    sent: bool  # this run built and queued the digest
    already: bool  # a run for (unit, kind, day) existed: nothing was sent
    deliveries: int
    missed: bool = False  # the existing run is a missed day (bridge down past the grace)


# --- calendar ------------------------------------------------------------------------


def parse_days(spec: str) -> frozenset[int]:
    """`digests.days` ("mon-fri", "mon,wed,fri", "mon-wed,fri") -> weekday numbers (Mon=0)."""
    found: set[int] = set()
    for part in spec.lower().split(","):
        part = part.strip()
        if not part:
            continue
        first, _, last = part.partition("-")
        start = _WEEKDAYS.index(first.strip())
        end = _WEEKDAYS.index(last.strip()) if last else start
        day = start
        while True:
            found.add(day)
            if day == end:
                break
            day = (day + 1) % 7
    return frozenset(found)


@dataclass(frozen=True)
class UnitCalendar:
    """Which days a unit gets a digest: a configured weekday, no public holiday, not closed."""

    weekdays: frozenset[int]
    closed: frozenset[date] = frozenset()

    def is_digest_day(self, day: date) -> bool:
        return (
            day.weekday() in self.weekdays and not is_public_holiday(day) and day not in self.closed
        )


async def closed_days(
    conn: AsyncConnection, unit_ids: Sequence[str], start: date, end: date
) -> dict[str, set[date]]:
    """Each unit's closed days (roster `closed` rows) within [start, end]."""
    c = t.closed_days
    found: dict[str, set[date]] = defaultdict(set)
    if not unit_ids:
        return found
    rows = await conn.execute(
        select(c.c.unit_id, c.c.from_date, c.c.to_date).where(
            c.c.unit_id.in_(list(unit_ids)), c.c.from_date <= end, c.c.to_date >= start
        )
    )
    for unit_id, lo, hi in rows:
        day = max(lo, start)
        while day <= min(hi, end):
            found[unit_id].add(day)
            day += timedelta(days=1)
    return found


# --- the unit and who gets its digest ---------------------------------------------------


@dataclass(frozen=True)
class UnitInfo:
    id: str
    name: str
    unit_type: str
    email: str | None


@dataclass(frozen=True)
class DigestRecipient:
    staff_id: str | None  # None: the unit's own address (or a generic preview)
    email: str | None
    language: str
    groups: tuple[str, ...]  # followed group ids; empty: the whole unit


async def load_unit(conn: AsyncConnection, unit_id: str) -> UnitInfo:
    return (await load_units(conn, [unit_id]))[unit_id]


async def load_units(conn: AsyncConnection, unit_ids: Sequence[str]) -> dict[str, UnitInfo]:
    u = t.units
    found = {
        r.id: UnitInfo(r.id, r.name, r.unit_type, r.email)
        for r in await conn.execute(
            select(u.c.id, u.c.name, u.c.unit_type, u.c.email).where(u.c.id.in_(list(unit_ids)))
        )
    }
    for unit_id in unit_ids:
        if unit_id not in found:
            raise DigestError(f"unknown unit: {unit_id}")
    return found


async def digest_staff_by_unit(
    conn: AsyncConnection, settings: Settings, unit_ids: Sequence[str]
) -> dict[str, list[DigestRecipient]]:
    """Active staff with notify digest or both, per unit, by staff id."""
    st, su = t.staff, t.staff_units
    rows = await conn.execute(
        select(su.c.unit_id, st.c.id, st.c.email, st.c.language, su.c.groups)
        .join(su, su.c.staff_id == st.c.id)
        .where(
            su.c.unit_id.in_(list(unit_ids)),
            su.c.active.is_(True),
            st.c.active.is_(True),
            su.c.notify.in_(("digest", "both")),
        )
        .order_by(su.c.unit_id, st.c.id)
    )
    default = settings.bridge.default_language
    found: dict[str, list[DigestRecipient]] = defaultdict(list)
    for r in rows:
        found[r.unit_id].append(
            DigestRecipient(r.id, r.email, r.language or default, tuple(r.groups or ()))
        )
    return found


async def digest_staff(
    conn: AsyncConnection, settings: Settings, unit_id: str
) -> list[DigestRecipient]:
    """Active staff of the unit with notify digest or both, by staff id."""
    return (await digest_staff_by_unit(conn, settings, [unit_id])).get(unit_id, [])


async def digest_recipients(
    conn: AsyncConnection, settings: Settings, unit: UnitInfo
) -> list[DigestRecipient]:
    """The unit's digest staff; the unit's own address when it has none (SPEC 8's rule
    for messages: what is for the unit reaches someone)."""
    staff = await digest_staff(conn, settings, unit.id)
    if staff:
        return staff
    return [_office(settings, unit)] if unit.email else []


def _office(settings: Settings, unit: UnitInfo) -> DigestRecipient:
    return DigestRecipient(None, unit.email, settings.bridge.default_language, ())


def _follows(recipient: DigestRecipient, groups: Iterable[str]) -> bool:
    return not recipient.groups or bool(set(recipient.groups) & set(groups))


# --- absence reports as a digest lists them -----------------------------------------------


@dataclass(frozen=True)
class Entry:
    """One absence report, with what a digest line shows."""

    absence_id: str
    student_id: str
    first_name: str
    last_name: str
    groups: tuple[str, ...]  # the student's group ids in the report's unit, by group name
    from_date: date
    to_date: date
    from_time: str | None
    to_time: str | None
    reason: str
    note: str | None  # redacted once more on the way out
    channel: str
    received_at: datetime
    created_at: datetime
    reported_by: str | None
    reporter: str | None  # "First Last"; None for a protected guardian
    unit_id: str = ""

    @property
    def child(self) -> str:
        return f"{self.first_name} {self.last_name}"

    def covers(self, day: date) -> bool:
        return self.from_date <= day <= self.to_date


async def _groups(conn: AsyncConnection, unit_ids: Sequence[str]) -> dict[tuple[str, str], str]:
    g = t.groups
    rows = await conn.execute(
        select(g.c.unit_id, g.c.id, g.c.name).where(g.c.unit_id.in_(list(unit_ids)))
    )
    return {(r.unit_id, r.id): r.name for r in rows}


def _sorted_groups(
    group_ids: Iterable[str], unit_id: str, names: dict[tuple[str, str], str]
) -> list[str]:
    return sorted(group_ids, key=lambda gid: (names.get((unit_id, gid), gid), gid))


async def load_entries(
    conn: AsyncConnection, *where: ColumnElement[bool], group_names: dict[tuple[str, str], str]
) -> list[Entry]:
    """Absence reports matching `where` (on `absences` columns), with names and groups,
    by child; two queries however many. Notes are redacted once more here."""
    a, s, g, sg = t.absences, t.students, t.guardians, t.student_groups
    rows = (
        await conn.execute(
            select(
                a.c.id,
                a.c.student_id,
                a.c.unit_id,
                s.c.first_name,
                s.c.last_name,
                a.c.from_date,
                a.c.to_date,
                a.c.from_time,
                a.c.to_time,
                a.c.reason,
                a.c.note,
                a.c.channel,
                a.c.received_at,
                a.c.created_at,
                a.c.reported_by,
                g.c.first_name.label("g_first"),
                g.c.last_name.label("g_last"),
                g.c.protected,
            )
            .join(s, s.c.id == a.c.student_id)
            .outerjoin(g, g.c.id == a.c.reported_by)
            .where(*where)
        )
    ).all()
    if not rows:
        return []
    memberships: dict[tuple[str, str], list[str]] = defaultdict(list)
    for m in await conn.execute(
        select(sg.c.student_id, sg.c.unit_id, sg.c.group_id)
        .join(a, and_(a.c.student_id == sg.c.student_id, a.c.unit_id == sg.c.unit_id))
        .where(*where)
        .distinct()
    ):
        memberships[(m.student_id, m.unit_id)].append(m.group_id)
    entries = []
    for r in rows:
        groups = _sorted_groups(
            memberships.get((r.student_id, r.unit_id), []), r.unit_id, group_names
        )
        reporter = None
        if r.reported_by is not None and r.g_first is not None and not r.protected:
            reporter = f"{r.g_first} {r.g_last}"
        entries.append(
            Entry(
                absence_id=r.id,
                student_id=r.student_id,
                first_name=r.first_name,
                last_name=r.last_name,
                groups=tuple(groups),
                from_date=r.from_date,
                to_date=r.to_date,
                from_time=r.from_time,
                to_time=r.to_time,
                reason=r.reason,
                note=redact(r.note)[0] if r.note else r.note,
                channel=r.channel,
                received_at=r.received_at,
                created_at=r.created_at,
                reported_by=r.reported_by,
                reporter=reporter,
                unit_id=r.unit_id,
            )
        )
    entries.sort(key=lambda e: (e.first_name, e.last_name, e.from_date, e.received_at))
    return entries


@dataclass
class AbsenceDigest:
    unit: UnitInfo
    day: date
    entries: list[Entry]  # active reports covering the day
    late: list[Entry]  # reported after the previous digest, or for a missed day
    group_names: dict[str, str]  # group id -> name, this unit's
    chart: list[tuple[date, int]]  # school days of the last four weeks -> children absent
    previous_run: date | None = None
    # Rendered entries per (absence, language, variant), shared by the recipients.
    lines: dict[tuple[str, str, bool, str | None], tuple[list[str], str]] = field(
        default_factory=dict
    )


async def build_absence_digest(
    conn: AsyncConnection, settings: Settings, unit: UnitInfo, day: date
) -> AbsenceDigest:
    """Everything the unit's absence digest for `day` shows (no recipient yet)."""
    return (await build_absence_digests(conn, settings, [unit], day))[unit.id]


async def build_absence_digests(
    conn: AsyncConnection, settings: Settings, units: Sequence[UnitInfo], day: date
) -> dict[str, AbsenceDigest]:
    """`build_absence_digest` for many units at once, in a fixed number of queries."""
    a, dr = t.absences, t.digest_runs
    ids = [u.id for u in units]
    floor = day - LATE_LOOKBACK
    chart_start = day - timedelta(days=CHART_DAYS - 1)
    weekdays = parse_days(settings.digests.days)
    closed = await closed_days(conn, ids, min(floor, chart_start), day)
    calendars = {u: UnitCalendar(weekdays, frozenset(closed.get(u, ()))) for u in ids}
    all_names = await _groups(conn, ids)
    # The latest sent digest before `day`, per unit.
    latest = (
        select(dr.c.unit_id, func.max(dr.c.day).label("day"))
        .where(
            dr.c.unit_id.in_(ids), dr.c.kind == ABSENCE, dr.c.day < day, dr.c.sent_at.is_not(None)
        )
        .group_by(dr.c.unit_id)
        .subquery()
    )
    previous = {
        r.unit_id: (r.day, r.started_at)
        for r in await conn.execute(
            select(dr.c.unit_id, dr.c.day, dr.c.started_at).join(
                latest,
                and_(
                    dr.c.unit_id == latest.c.unit_id,
                    dr.c.day == latest.c.day,
                    dr.c.kind == ABSENCE,
                ),
            )
        )
    }
    covering = and_(a.c.from_date <= day, a.c.to_date >= day)
    condition: ColumnElement[bool] = covering
    if previous:
        # A superset of every unit's late candidates; each unit's own test follows.
        earliest_start = min(started for _, started in previous.values())
        earliest_day = min(prev_day for prev_day, _ in previous.values())
        condition = or_(
            covering,
            and_(
                a.c.to_date < day,
                a.c.to_date >= floor,
                or_(a.c.created_at >= earliest_start, a.c.to_date > earliest_day),
            ),
        )
    entries = await load_entries(
        conn, a.c.unit_id.in_(ids), a.c.status == "active", condition, group_names=all_names
    )
    charts = await _charts(conn, ids, day, calendars)
    digests_by_unit = {
        u.id: AbsenceDigest(
            unit=u,
            day=day,
            entries=[],
            late=[],
            group_names={
                gid: name for (unit_id, gid), name in all_names.items() if unit_id == u.id
            },
            chart=charts[u.id],
            previous_run=previous[u.id][0] if u.id in previous else None,
        )
        for u in units
    }
    for e in entries:
        digest = digests_by_unit[e.unit_id]
        if e.covers(day):
            digest.entries.append(e)
        elif e.unit_id in previous and _is_late(
            e, calendars[e.unit_id], previous[e.unit_id], floor
        ):
            digest.late.append(e)
    for digest in digests_by_unit.values():
        digest.late.sort(key=lambda e: (e.from_date, e.first_name, e.last_name))
    return digests_by_unit


def _is_late(
    e: Entry, calendar: UnitCalendar, previous: tuple[date, datetime], floor: date
) -> bool:
    """Reported after the previous sent digest (about a school day before this one), or
    about a school day after it, which had no digest (missed, or no run at all)."""
    prev_day, prev_started = previous

    def covers_digest_day(lo: date, hi: date) -> bool:
        current = max(lo, floor)
        while current <= hi:
            if calendar.is_digest_day(current):
                return True
            current += timedelta(days=1)
        return False

    if e.created_at >= prev_started and covers_digest_day(e.from_date, e.to_date):
        return True
    return covers_digest_day(max(e.from_date, prev_day + timedelta(days=1)), e.to_date)


async def _charts(
    conn: AsyncConnection, unit_ids: list[str], day: date, calendars: dict[str, UnitCalendar]
) -> dict[str, list[tuple[date, int]]]:
    """Children absent (active reports) per school day over the four weeks up to `day`."""
    a = t.absences
    start = day - timedelta(days=CHART_DAYS - 1)
    days = [start + timedelta(days=i) for i in range(CHART_DAYS)]
    school_days = {u: [d for d in days if calendars[u].is_digest_day(d)] for u in unit_ids}
    absent: dict[str, dict[date, set[str]]] = {
        u: {d: set() for d in school_days[u]} for u in unit_ids
    }
    rows = await conn.execute(
        select(a.c.unit_id, a.c.student_id, a.c.from_date, a.c.to_date).where(
            a.c.unit_id.in_(unit_ids),
            a.c.status == "active",
            a.c.from_date <= day,
            a.c.to_date >= start,
        )
    )
    for unit_id, student_id, lo, hi in rows:
        per_day = absent[unit_id]
        for d in school_days[unit_id]:
            if lo <= d <= hi:
                per_day[d].add(student_id)
    return {u: [(d, len(absent[u][d])) for d in school_days[u]] for u in unit_ids}


# --- rendering -------------------------------------------------------------------------


@dataclass(frozen=True)
class Rendered:
    subject: str
    text: str
    html: str


def mail_json(
    *,
    to: str,
    subject: str,
    text: str,
    html_part: str | None,
    reply_to: str,
    from_display: str | None,
    list_unsubscribe: str | None = None,
) -> str:
    """The adapter's `{"mail": {...}}` body (`adapters.mail_out.MailContent.to_json`'s
    shape), with an HTML part; always auto-submitted."""
    doc: dict[str, Any] = {
        "to": to,
        "subject": subject,
        "text": text,
        "html": html_part,
        "from_display": from_display,
        "reply_to": reply_to,
        "message_id": None,
        "in_reply_to": None,
        "references": [],
        "auto_submitted": True,
        "list_unsubscribe": list_unsubscribe,
        "headers": {},
    }
    return json.dumps({"mail": doc}, ensure_ascii=False, separators=(",", ":"))


def _dm(day: date) -> str:
    return f"{day.day}.{day.month}."


def _when(moment: datetime, tz: tzinfo) -> str:
    local = moment.astimezone(tz)
    return f"{_dm(local.date())} {local:%H:%M}"


def weekday_name(lang: str, day: date) -> str:
    names = (
        translate(lang, "Monday"),
        translate(lang, "Tuesday"),
        translate(lang, "Wednesday"),
        translate(lang, "Thursday"),
        translate(lang, "Friday"),
        translate(lang, "Saturday"),
        translate(lang, "Sunday"),
    )
    return names[day.weekday()]


def _reason(lang: str, reason: str) -> str:
    if reason == "illness":
        return translate(lang, "illness")
    if reason == "appointment":
        return translate(lang, "appointment")
    if reason == "other":
        return translate(lang, "other reason")
    return translate(lang, "no reason given")


def _span(lang: str, e: Entry) -> str:
    if e.from_time and e.to_time:
        return translate(lang, "{start}–{end}", start=e.from_time, end=e.to_time)
    if e.from_time:
        return translate(lang, "from {time}", time=e.from_time)
    if e.to_time:
        return translate(lang, "until {time}", time=e.to_time)
    return translate(lang, "whole day")


def _channel(lang: str, channel: str) -> str:
    if channel == "email":
        return translate(lang, "e-mail")
    return {"sms": "SMS", "telegram": "Telegram", "api": "API"}.get(channel, channel)


def _who(lang: str, e: Entry) -> str:
    if e.reporter is not None:
        return e.reporter
    if e.reported_by is None and e.channel == "api":
        return translate(lang, "the office")
    return translate(lang, "guardian")  # a protected guardian's name is never shown


def _dates(e: Entry) -> str:
    if e.from_date == e.to_date:
        return _dm(e.from_date)
    return f"{_dm(e.from_date)}–{_dm(e.to_date)}"


class _Doc:
    """A text part and an HTML part, written side by side."""

    def __init__(self, lang: str, title: str) -> None:
        self.lang = lang
        self.lines: list[str] = [title, "=" * min(len(title), 72), ""]
        self.parts: list[str] = [
            f'<!DOCTYPE html><html lang="{lang}"><head><meta charset="utf-8">'
            f"<title>{html.escape(title)}</title></head>"
            '<body style="margin:0;padding:16px;font-family:Arial,Helvetica,sans-serif;'
            'font-size:14px;line-height:1.4;color:#222222;">'
            '<div style="max-width:680px;">'
            f'<h1 style="font-size:20px;margin:0 0 12px 0;">{html.escape(title)}</h1>'
        ]

    def heading(self, text: str) -> None:
        self.lines += [text, "-" * min(len(text), 72)]
        self.parts.append(
            '<h2 style="font-size:16px;margin:18px 0 6px 0;border-bottom:1px solid #dddddd;">'
            f"{html.escape(text)}</h2>"
        )

    def subheading(self, text: str) -> None:
        self.lines.append(f"{text}:")
        self.parts.append(
            f'<h3 style="font-size:14px;margin:12px 0 4px 0;">{html.escape(text)}</h3>'
        )

    def para(self, text: str, *, muted: bool = False) -> None:
        self.lines += [text, ""]
        color = "#666666" if muted else "#222222"
        self.parts.append(f'<p style="margin:4px 0 8px 0;color:{color};">{html.escape(text)}</p>')

    def item(self, head: str, details: Sequence[str], small: Sequence[str] = ()) -> None:
        self.add(_item_parts(head, details, small))

    def add(self, parts: tuple[list[str], str]) -> None:
        self.lines += parts[0]
        self.parts.append(parts[1])

    def blank(self) -> None:
        if self.lines and self.lines[-1] != "":
            self.lines.append("")

    def raw_html(self, fragment: str) -> None:
        self.parts.append(fragment)

    def text_line(self, line: str) -> None:
        self.lines.append(line)

    def finish(self, footer: str) -> tuple[str, str]:
        self.blank()
        self.lines += ["-- ", footer]
        self.parts.append(
            '<p style="margin:24px 0 0 0;color:#888888;font-size:12px;">'
            f"{html.escape(footer)}</p></div></body></html>"
        )
        return "\n".join(self.lines) + "\n", "".join(self.parts)


def _item_parts(
    head: str, details: Sequence[str], small: Sequence[str] = ()
) -> tuple[list[str], str]:
    """One list item: its text lines and its HTML."""
    lines = [f"- {head}", *(f"  {d}" for d in (*details, *small))]
    inner = f"<strong>{html.escape(head)}</strong>"
    for d in details:
        inner += f"<br>{html.escape(d)}"
    for s in small:
        inner += f'<br><span style="color:#666666;font-size:12px;">{html.escape(s)}</span>'
    return lines, f'<p style="margin:4px 0 8px 12px;">{inner}</p>'


EntryKey = tuple[str, str, bool, str | None]


def _entry_item(
    doc: _Doc,
    lang: str,
    tz: tzinfo,
    e: Entry,
    *,
    show_dates: bool,
    group: str | None,
    cache: dict[EntryKey, tuple[list[str], str]] | None = None,
) -> None:
    key = (e.absence_id, lang, show_dates, group)
    if cache is not None and key in cache:
        doc.add(cache[key])
        return
    head = e.child + (f" ({group})" if group else "")
    parts = [_dates(e)] if show_dates else []
    parts += [_span(lang, e), _reason(lang, e.reason)]
    details = [", ".join(parts)]
    if e.note:  # redacted when loaded
        details.append(translate(lang, "Note: {note}", note=e.note))
    small = [
        translate(
            lang,
            "Reported by {who} {when} via {channel}",
            who=_who(lang, e),
            when=_when(e.received_at, tz),
            channel=_channel(lang, e.channel),
        )
    ]
    rendered = _item_parts(head, details, small)
    if cache is not None:
        cache[key] = rendered
    doc.add(rendered)


def _group_label(lang: str, digest: AbsenceDigest, gid: str | None) -> str:
    if gid is None:
        return translate(lang, "No group")
    return digest.group_names.get(gid, gid)


def _by_group(
    digest: AbsenceDigest, entries: Iterable[Entry], prefer: Sequence[str] = ()
) -> dict[str | None, list[Entry]]:
    """Entries under one group each: the first preferred group they are in, else their first."""
    grouped: dict[str | None, list[Entry]] = defaultdict(list)
    for e in entries:
        mine = [g for g in e.groups if g in prefer]
        grouped[mine[0] if mine else (e.groups[0] if e.groups else None)].append(e)
    return grouped


def _group_order(digest: AbsenceDigest, gids: Iterable[str | None]) -> list[str | None]:
    return sorted(
        gids, key=lambda g: (g is None, digest.group_names.get(g, g) if g else "", g or "")
    )


def render_absence_digest(
    digest: AbsenceDigest, recipient: DigestRecipient, settings: Settings
) -> Rendered:
    lang, tz, unit = recipient.language, settings.tz, digest.unit
    title = translate(
        lang,
        "Absences {weekday} {date} – {unit}",
        weekday=weekday_name(lang, digest.day),
        date=_dm(digest.day),
        unit=unit.name,
    )
    doc = _Doc(lang, title)
    doc.para(translate(lang, "Absence reports: {count}", count=len(digest.entries)))
    mine = [g for g in recipient.groups if g in digest.group_names]
    mine.sort(key=lambda g: (digest.group_names[g], g))
    if mine:
        ours = [e for e in digest.entries if set(e.groups) & set(mine)]
        rest = [e for e in digest.entries if not set(e.groups) & set(mine)]
        doc.heading(translate(lang, "Your groups"))
        grouped = _by_group(digest, ours, prefer=mine)
        for gid in mine:
            doc.subheading(_group_label(lang, digest, gid))
            if not grouped.get(gid):
                doc.para(translate(lang, "No absence reports."), muted=True)
            for e in grouped.get(gid, []):
                _entry_item(
                    doc,
                    lang,
                    tz,
                    e,
                    show_dates=e.from_date != e.to_date,
                    group=None,
                    cache=digest.lines,
                )
            doc.blank()
        doc.heading(translate(lang, "Rest of {unit}", unit=unit.name))
        _grouped_section(doc, lang, tz, digest, rest)
    else:
        doc.heading(unit.name)
        _grouped_section(doc, lang, tz, digest, digest.entries)
    if digest.late:
        doc.heading(translate(lang, "Reported after the last digest"))
        doc.para(
            translate(
                lang,
                "These arrived after the previous digest was sent, or concern a day without "
                "a digest.",
            ),
            muted=True,
        )
        for e in digest.late:
            group = _group_label(lang, digest, e.groups[0]) if e.groups else None
            _entry_item(doc, lang, tz, e, show_dates=True, group=group, cache=digest.lines)
        doc.blank()
    _chart_section(doc, lang, digest)
    text, html_part = doc.finish(translate(lang, "This is an automatic digest from skolebro."))
    return Rendered(title, text, html_part)


def _grouped_section(
    doc: _Doc, lang: str, tz: tzinfo, digest: AbsenceDigest, entries: list[Entry]
) -> None:
    if not entries:
        doc.para(translate(lang, "No absence reports."), muted=True)
        return
    grouped = _by_group(digest, entries)
    for gid in _group_order(digest, grouped):
        doc.subheading(_group_label(lang, digest, gid))
        for e in grouped[gid]:
            _entry_item(
                doc,
                lang,
                tz,
                e,
                show_dates=e.from_date != e.to_date,
                group=None,
                cache=digest.lines,
            )
        doc.blank()


_SPARKS = "▁▂▃▄▅▆▇█"
_BAR_PX = 48


def _chart_section(doc: _Doc, lang: str, digest: AbsenceDigest) -> None:
    """Counts only: a sparkline in the text part, table-cell bars in the HTML part."""
    chart = digest.chart
    if not chart:
        return
    title = translate(lang, "Absences per school day, last four weeks")
    counts = [n for _, n in chart]
    top = max(counts)
    summary = translate(
        lang,
        "Last four weeks: {total} absences on {days} school days, at most {max} in one day.",
        total=sum(counts),
        days=len(chart),
        max=top,
    )
    doc.heading(title)
    spark = "".join(
        _SPARKS[0] if top == 0 else _SPARKS[round(n / top * (len(_SPARKS) - 1))] for n in counts
    )
    doc.text_line(f"{_dm(chart[0][0])} {spark} {_dm(chart[-1][0])}")
    doc.para(summary)
    cells = []
    labels = []
    for day, n in chart:
        height = 2 if top == 0 or n == 0 else max(3, round(n / top * _BAR_PX))
        color = "#d9822b" if day == digest.day else ("#4a7ab5" if n else "#d5dde8")
        cells.append(
            '<td valign="bottom" align="center" width="22" '
            'style="font-size:10px;color:#555555;padding:0 1px;">'
            f"{n}"
            '<table role="presentation" cellpadding="0" cellspacing="0" border="0" width="16">'
            f'<tr><td height="{height}" bgcolor="{color}" style="height:{height}px;'
            f'background-color:{color};font-size:0;line-height:0;">&nbsp;</td></tr></table></td>'
        )
        labels.append(
            '<td align="center" style="font-size:9px;color:#777777;padding:2px 1px 0 1px;">'
            f"{day.day}.{day.month}</td>"
        )
    doc.raw_html(
        '<table role="presentation" cellpadding="0" cellspacing="0" border="0" '
        f'summary="{html.escape(summary)}">'
        f'<tr style="height:{_BAR_PX + 14}px;">{"".join(cells)}</tr>'
        f"<tr>{''.join(labels)}</tr></table>"
    )


# --- running an absence or unanswered digest ---------------------------------------------


def _lock_key(unit_id: str, kind: str, day: date) -> int:
    digest = hashlib.sha256(f"skolebro:digest:{unit_id}:{kind}:{day.isoformat()}".encode())
    return int.from_bytes(digest.digest()[:8], "big", signed=True)


async def _lock(conn: AsyncConnection, unit_id: str, kind: str, day: date, *, shared: bool) -> None:
    """On PostgreSQL, a transaction-scoped advisory lock on (unit, kind, day): a digest run
    holds it exclusively, `digest_already_sent` shared, so an absence recorded while the
    digest is being built is either in the digest or sees the digest as sent. SQLite's
    single writer gives the same order for free."""
    if conn.dialect.name != "postgresql":
        return
    key = literal(_lock_key(unit_id, kind, day), BigInteger)
    lock = func.pg_advisory_xact_lock_shared(key) if shared else func.pg_advisory_xact_lock(key)
    await conn.execute(select(lock))


async def _insert_runs(
    conn: AsyncConnection, unit_ids: Sequence[str], kind: str, day: date, now: datetime
) -> set[str]:
    """Insert each unit's run row unless one exists; the units whose row this inserted."""
    rows = [
        {
            "unit_id": unit_id,
            "kind": kind,
            "day": day,
            "started_at": now,
            "sent_at": None,
            "deliveries": 0,
        }
        for unit_id in unit_ids
    ]
    dialect: Any = pg_dialect if conn.dialect.name == "postgresql" else sqlite_dialect
    stmt = (
        dialect.insert(t.digest_runs)
        .values(rows)
        .on_conflict_do_nothing()
        .returning(t.digest_runs.c.unit_id)
    )
    return set(await conn.scalars(stmt))


def _run_key(unit_id: str, kind: str, day: date) -> tuple[ColumnElement[bool], ...]:
    dr = t.digest_runs
    return (dr.c.unit_id == unit_id, dr.c.kind == kind, dr.c.day == day)


async def run_digest(
    engine: AsyncEngine, settings: Settings, *, kind: str, unit_id: str, day: date
) -> DigestResult:
    """Build and queue the unit's digest for `day`, once: a second or concurrent run for
    the same (unit, kind, day), or a day marked missed, sends nothing (`already`)."""
    results = await run_digests(engine, settings, kind=kind, unit_ids=[unit_id], day=day)
    return results[unit_id]


async def run_digests(
    engine: AsyncEngine,
    settings: Settings,
    *,
    kind: str,
    unit_ids: Sequence[str],
    day: date,
    chunk: int = RUN_CHUNK,
) -> dict[str, DigestResult]:
    """`run_digest` for many units: one transaction per `chunk` units (each unit's run
    row and deliveries commit together); a chunk that fails is retried unit by unit,
    and a unit that still fails is logged and left without a run (so a later run may
    send it). Unknown units or kinds raise `DigestError`."""
    if kind not in KINDS:
        raise DigestError(f"unknown digest kind: {kind}")
    ids = sorted(dict.fromkeys(unit_ids))  # one lock order for every runner
    results: dict[str, DigestResult] = {}
    for i in range(0, len(ids), max(chunk, 1)):
        part = ids[i : i + max(chunk, 1)]
        try:
            results.update(await _run_chunk(engine, settings, kind, part, day))
        except DigestError:
            raise
        except Exception:
            if len(part) == 1:
                raise
            log.exception(
                "digest %s on %s: a chunk of %d units failed; unit by unit", kind, day, len(part)
            )
            for unit_id in part:
                try:
                    results.update(await _run_chunk(engine, settings, kind, [unit_id], day))
                except Exception:
                    log.exception("digest %s for unit %s on %s failed", kind, unit_id, day)
    sent = [r for r in results.values() if r.sent]
    log.info(
        "digest %s on %s: %d units sent (%d deliveries), %d already done",
        kind,
        day,
        len(sent),
        sum(r.deliveries for r in sent),
        len(results) - len(sent),
    )
    return results


async def _run_chunk(
    engine: AsyncEngine, settings: Settings, kind: str, unit_ids: list[str], day: date
) -> dict[str, DigestResult]:
    dr = t.digest_runs
    results: dict[str, DigestResult] = {}
    async with engine.begin() as conn:
        units = await load_units(conn, unit_ids)
        for unit_id in unit_ids:
            await _lock(conn, unit_id, kind, day, shared=False)
        claimed = await _insert_runs(conn, unit_ids, kind, day, datetime.now(UTC))
        done_before = [u for u in unit_ids if u not in claimed]
        if done_before:
            sent_at = {
                r.unit_id: r.sent_at
                for r in await conn.execute(
                    select(dr.c.unit_id, dr.c.sent_at).where(
                        dr.c.unit_id.in_(done_before), dr.c.kind == kind, dr.c.day == day
                    )
                )
            }
            for unit_id in done_before:
                log.debug("digest %s for unit %s on %s: already done", kind, unit_id, day)
                results[unit_id] = DigestResult(
                    sent=False, already=True, deliveries=0, missed=sent_at.get(unit_id) is None
                )
        if not claimed:
            return results
        mine = [units[u] for u in unit_ids if u in claimed]
        if kind == ABSENCE:
            counts = await _send_absence_digests(conn, settings, mine, day)
        else:
            at = _reference_time(settings, day)
            counts = {u.id: await _send_unanswered_digest(conn, settings, u, at) for u in mine}
        finished = datetime.now(UTC)
        await conn.execute(
            update(dr)
            .where(dr.c.unit_id == bindparam("b_unit"), dr.c.kind == kind, dr.c.day == day)
            .values(sent_at=finished, deliveries=bindparam("b_count")),
            [{"b_unit": u.id, "b_count": counts[u.id]} for u in mine],
        )
    for u in mine:
        log.debug("digest %s for unit %s on %s: %d deliveries", kind, u.id, day, counts[u.id])
        results[u.id] = DigestResult(sent=True, already=False, deliveries=counts[u.id])
    return results


async def preview_digest(
    engine: AsyncEngine, settings: Settings, *, kind: str, unit_id: str, day: date
) -> str:
    """The digest's text part for its first recipient (a whole-unit view when the unit
    has no digest staff); writes and sends nothing."""
    if kind not in KINDS:
        raise DigestError(f"unknown digest kind: {kind}")
    async with engine.connect() as conn:
        unit = await load_unit(conn, unit_id)
        staff = await digest_staff(conn, settings, unit_id)
        recipient = staff[0] if staff else _office(settings, unit)
        if kind == ABSENCE:
            digest = await build_absence_digest(conn, settings, unit, day)
            return render_absence_digest(digest, recipient, settings).text
        at = _reference_time(settings, day)
        waiting = await build_unanswered(conn, settings, unit, at)
        hours = settings.digests.unanswered_after_hours
        if staff:
            mine = [w for w in waiting if _follows(recipient, w.groups)]
        else:
            mine = waiting
        placeholder = f"r-…@{settings.email.reply_domain}"
        return render_unanswered(
            unit,
            mine,
            recipient.language,
            settings,
            hours,
            dict.fromkeys((w.thread_id for w in mine), placeholder),
        ).text


async def mark_missed(engine: AsyncEngine, *, kind: str, unit_id: str, day: date) -> bool:
    """Record the day's digest as missed (`sent_at` NULL, `deliveries` 0) unless a run
    exists; whether this call marked it."""
    async with engine.begin() as conn:
        await _lock(conn, unit_id, kind, day, shared=False)
        marked = bool(await _insert_runs(conn, [unit_id], kind, day, datetime.now(UTC)))
    if marked:
        log.warning("digest %s for unit %s on %s missed: marked, not sent", kind, unit_id, day)
    return marked


def _reference_time(settings: Settings, day: date) -> datetime:
    """'Now' for a digest of `day`: now for today, else that day's digest time."""
    tz = settings.tz
    now = datetime.now(UTC)
    if now.astimezone(tz).date() == day:
        return now
    clock = time.fromisoformat(settings.digests.absence_time)
    return datetime.combine(day, clock, tzinfo=tz).astimezone(UTC)


async def _reply_to(
    conn: AsyncConnection,
    settings: Settings,
    unit: UnitInfo,
    recipient: DigestRecipient,
    thread_id: str | None = None,
) -> str:
    local = await reply_tokens.issue(
        conn,
        recipient_kind="staff" if recipient.staff_id else "unit",
        recipient_id=recipient.staff_id or unit.id,
        address=recipient.email or "",
        days=settings.email.reply_token_days,
        thread_id=thread_id,
        unit_id=unit.id,
    )
    return f"{local}@{settings.email.reply_domain}"


async def _queue_staff_mail(
    conn: AsyncConnection,
    settings: Settings,
    unit: UnitInfo,
    recipient: DigestRecipient,
    rendered: Rendered,
    *,
    kind: str,
    priority: str,
) -> str:
    email = recipient.email or ""
    body = mail_json(
        to=email,
        subject=rendered.subject,
        text=rendered.text,
        html_part=rendered.html,
        reply_to=await _reply_to(conn, settings, unit, recipient),
        from_display=f"{unit.name} (skolebro)",
    )
    return await outbox.enqueue(
        conn,
        kind=kind,
        channel="email",
        address=email,
        staff_id=recipient.staff_id,
        subject=rendered.subject,
        body=body,
        priority=priority,
    )


async def render_absence_digests(
    conn: AsyncConnection, settings: Settings, units: Sequence[UnitInfo], day: date
) -> dict[str, list[tuple[DigestRecipient, Rendered]]]:
    """Each unit's absence digest mails, per recipient (built in a fixed number of
    queries however many units); nothing is written."""
    staff = await digest_staff_by_unit(conn, settings, [u.id for u in units])
    recipients = {
        u.id: staff.get(u.id) or ([_office(settings, u)] if u.email else []) for u in units
    }
    served = [u for u in units if recipients[u.id]]
    built = await build_absence_digests(conn, settings, served, day) if served else {}
    return {
        u.id: [(r, render_absence_digest(built[u.id], r, settings)) for r in recipients[u.id]]
        for u in units
    }


async def _send_absence_digests(
    conn: AsyncConnection, settings: Settings, units: Sequence[UnitInfo], day: date
) -> dict[str, int]:
    mails = await render_absence_digests(conn, settings, units, day)
    for unit in units:
        for recipient, rendered in mails[unit.id]:
            await _queue_staff_mail(
                conn, settings, unit, recipient, rendered, kind="digest", priority="bulk"
            )
    return {u.id: len(mails[u.id]) for u in units}


# --- late absence reports: notified at once -------------------------------------------------


async def digest_already_sent(conn: AsyncConnection, unit_id: str, day: date) -> bool:
    """Whether the unit's absence digest for `day` went out or was missed: a report for
    that day that arrives now is notified at once (`notify_late_absence`).

    Call it in the transaction that records the report, after the insert: on PostgreSQL
    it waits for a digest being built for that day, so the report is in it or notified."""
    await _lock(conn, unit_id, ABSENCE, day, shared=True)
    found = await conn.scalar(select(t.digest_runs.c.day).where(*_run_key(unit_id, ABSENCE, day)))
    return found is not None


async def absences_needing_notice(
    conn: AsyncConnection,
    settings: Settings,
    absence_ids: Sequence[str],
    *,
    now: datetime | None = None,
) -> list[str]:
    """Of these reports, those covering a day up to today whose absence digest was
    already sent or missed: what the core passes to `notify_late_absence`. Call it in
    the transaction that recorded them (see `digest_already_sent`)."""
    if not absence_ids:
        return []
    a = t.absences
    today = (now or datetime.now(UTC)).astimezone(settings.tz).date()
    rows = (
        await conn.execute(
            select(a.c.id, a.c.unit_id, a.c.from_date, a.c.to_date).where(
                a.c.id.in_(list(absence_ids)), a.c.status == "active", a.c.from_date <= today
            )
        )
    ).all()
    # The (unit, day) pairs in one order, the digest runs' own: locks never cross.
    pairs: dict[tuple[str, date], list[str]] = defaultdict(list)
    for absence_id, unit_id, lo, hi in rows:
        day = max(lo, today - LATE_LOOKBACK)
        while day <= min(hi, today):
            pairs[(unit_id, day)].append(absence_id)
            day += timedelta(days=1)
    found: set[str] = set()
    for (unit_id, day), ids in sorted(pairs.items()):
        if set(ids) - found and await digest_already_sent(conn, unit_id, day):
            found.update(ids)
    return [r.id for r in rows if r.id in found]


async def notify_late_absence(
    conn: AsyncConnection, settings: Settings, absence_ids: Sequence[str]
) -> int:
    """Mail these absence reports at once (in the caller's transaction): to the unit's
    digest staff who follow the student, else all its digest staff, else the unit's own
    address. One mail per recipient; returns how many were queued."""
    if not absence_ids or not settings.email.enabled:
        return 0
    a = t.absences
    units = list(
        dict.fromkeys(
            await conn.scalars(
                select(a.c.unit_id).where(a.c.id.in_(list(absence_ids)), a.c.status == "active")
            )
        )
    )
    group_names = await _groups(conn, units) if units else {}
    entries = await load_entries(
        conn, a.c.id.in_(list(absence_ids)), a.c.status == "active", group_names=group_names
    )
    by_unit: dict[str, list[Entry]] = defaultdict(list)
    for e in entries:
        by_unit[e.unit_id].append(e)
    queued = 0
    for unit_id, unit_entries in by_unit.items():
        unit = await load_unit(conn, unit_id)
        staff = await digest_staff(conn, settings, unit_id)
        per: dict[DigestRecipient, list[Entry]] = defaultdict(list)
        for e in unit_entries:
            chosen = [r for r in staff if _follows(r, e.groups)] or staff
            if not chosen and unit.email:
                chosen = [_office(settings, unit)]
            for r in chosen:
                per[r].append(e)
        names = {gid: name for (u, gid), name in group_names.items() if u == unit_id}
        for recipient, items in per.items():
            rendered = render_late_notice(unit, items, recipient.language, settings, names)
            await _queue_staff_mail(
                conn, settings, unit, recipient, rendered, kind="notification", priority="normal"
            )
            queued += 1
        log.info(
            "late absence notice for unit %s: %d reports, %d mails",
            unit_id,
            len(unit_entries),
            len(per),
        )
    return queued


def render_late_notice(
    unit: UnitInfo,
    entries: list[Entry],
    lang: str,
    settings: Settings,
    group_names: dict[str, str],
) -> Rendered:
    if len(entries) == 1:
        subject = translate(lang, "New absence report: {child}", child=entries[0].child)
    else:
        subject = translate(lang, "New absence reports: {count}", count=len(entries))
    doc = _Doc(lang, subject)
    doc.para(
        translate(
            lang,
            "This arrived after the day's absence digest was sent, or on a day without a digest:",
        )
    )
    for e in entries:
        group = group_names.get(e.groups[0], e.groups[0]) if e.groups else None
        _entry_item(doc, lang, settings.tz, e, show_dates=True, group=group)
    text, html_part = doc.finish(translate(lang, "This is an automatic digest from skolebro."))
    return Rendered(subject, text, html_part)


# --- unanswered messages -------------------------------------------------------------------


@dataclass(frozen=True)
class Waiting:
    """A thread whose parent messages since the last staff reply wait for an answer."""

    thread_id: str
    student_id: str
    child: str
    guardian: str | None  # None for a protected guardian
    groups: tuple[str, ...]
    group_label: str | None
    since: datetime  # the oldest unanswered message
    count: int
    latest: str | None  # the latest unanswered message's (redacted) text
    sensitive: bool
    escalated: bool  # older than twice the limit: the unit's address gets it too


async def build_unanswered(
    conn: AsyncConnection, settings: Settings, unit: UnitInfo, at: datetime
) -> list[Waiting]:
    m, th, s, g = t.messages, t.threads, t.students, t.guardians
    reply = m.alias("reply")
    limit = timedelta(hours=settings.digests.unanswered_after_hours)
    answered = exists().where(
        reply.c.thread_id == m.c.thread_id,
        reply.c.direction == "out",
        reply.c.sent_at > m.c.sent_at,
    )
    rows = (
        await conn.execute(
            select(
                m.c.thread_id,
                func.min(m.c.sent_at).label("since"),
                func.max(m.c.sent_at).label("latest"),
                func.count().label("n"),
            )
            .join(th, th.c.id == m.c.thread_id)
            .where(
                th.c.unit_id == unit.id,
                m.c.direction == "in",
                m.c.sent_at <= at,
                m.c.sent_at >= at - UNANSWERED_LOOKBACK,
                ~answered,
            )
            .group_by(m.c.thread_id)
            .having(func.min(m.c.sent_at) <= at - limit)
        )
    ).all()
    if not rows:
        return []
    ids = [r.thread_id for r in rows]
    info = {
        r.id: r
        for r in await conn.execute(
            select(
                th.c.id,
                th.c.student_id,
                s.c.first_name,
                s.c.last_name,
                g.c.first_name.label("g_first"),
                g.c.last_name.label("g_last"),
                g.c.protected,
            )
            .join(s, s.c.id == th.c.student_id)
            .join(g, g.c.id == th.c.guardian_id)
            .where(th.c.id.in_(ids))
        )
    }
    latest: dict[str, tuple[str | None, bool]] = {}
    for message in await conn.execute(
        select(m.c.thread_id, m.c.body, m.c.sensitive)
        .where(m.c.thread_id.in_(ids), m.c.direction == "in", m.c.sent_at <= at)
        .order_by(m.c.thread_id, m.c.sent_at)
    ):
        latest[message.thread_id] = (message.body, bool(message.sensitive))
    names = await _groups(conn, [unit.id])
    sg = t.student_groups
    memberships: dict[str, list[str]] = defaultdict(list)
    for member in await conn.execute(
        select(sg.c.student_id, sg.c.group_id).where(
            sg.c.unit_id == unit.id,
            sg.c.student_id.in_([info[i].student_id for i in ids if i in info]),
        )
    ):
        memberships[member.student_id].append(member.group_id)
    waiting = []
    for r in rows:
        thread = info.get(r.thread_id)
        if thread is None:
            continue
        groups = tuple(
            sorted(
                memberships.get(thread.student_id, []),
                key=lambda gid: (names.get((unit.id, gid), gid), gid),
            )
        )
        body, sensitive = latest.get(r.thread_id, (None, False))
        waiting.append(
            Waiting(
                thread_id=r.thread_id,
                student_id=thread.student_id,
                child=f"{thread.first_name} {thread.last_name}",
                guardian=None if thread.protected else f"{thread.g_first} {thread.g_last}",
                groups=groups,
                group_label=names.get((unit.id, groups[0]), groups[0]) if groups else None,
                since=r.since,
                count=int(r.n),
                latest=body,
                sensitive=sensitive,
                escalated=r.since <= at - 2 * limit,
            )
        )
    waiting.sort(key=lambda w: (w.since, w.child))
    return waiting


def _excerpt(text: str) -> str:
    clean, _ = redact(" ".join(text.split()))
    return clean if len(clean) <= EXCERPT_CHARS else clean[: EXCERPT_CHARS - 1].rstrip() + "…"


def render_unanswered(
    unit: UnitInfo,
    waiting: list[Waiting],
    lang: str,
    settings: Settings,
    hours: int,
    reply_addresses: dict[str, str],
) -> Rendered:
    tz = settings.tz
    subject = translate(lang, "Unanswered messages – {unit}", unit=unit.name)
    doc = _Doc(lang, subject)
    doc.para(
        translate(
            lang,
            "Messages from guardians without an answer for more than {hours} hours:",
            hours=hours,
        )
    )
    if not waiting:
        doc.para(translate(lang, "No unanswered messages."), muted=True)
    for w in waiting:
        head = w.child + (f" ({w.group_label})" if w.group_label else "")
        if w.guardian:
            head += f" – {w.guardian}"
        else:
            head += f" – {translate(lang, 'guardian')}"
        details = [
            translate(
                lang,
                "Waiting since {when}, unanswered messages: {count}",
                when=_when(w.since, tz),
                count=w.count,
            )
        ]
        if w.latest is None:
            details.append(translate(lang, "(The text is no longer kept.)"))
        else:
            details.append(translate(lang, "Latest: {text}", text=_excerpt(w.latest)))
        if w.sensitive:
            details.append(translate(lang, "Sensitive details were removed from this message."))
        small = []
        if w.escalated:
            small.append(translate(lang, "also sent to the office"))
        if w.thread_id in reply_addresses:
            small.append(
                translate(
                    lang, "Answer by writing to {address}", address=reply_addresses[w.thread_id]
                )
            )
        doc.item(head, details, small)
    text, html_part = doc.finish(translate(lang, "This is an automatic digest from skolebro."))
    return Rendered(subject, text, html_part)


async def _send_unanswered_digest(
    conn: AsyncConnection, settings: Settings, unit: UnitInfo, at: datetime
) -> int:
    waiting = await build_unanswered(conn, settings, unit, at)
    if not waiting:
        return 0
    hours = settings.digests.unanswered_after_hours
    plan: list[tuple[DigestRecipient, list[Waiting], int]] = []
    for recipient in await digest_staff(conn, settings, unit.id):
        mine = [w for w in waiting if _follows(recipient, w.groups)]
        if mine:
            plan.append((recipient, mine, hours))
    escalated = [w for w in waiting if w.escalated]
    if escalated and unit.email:
        plan.append((_office(settings, unit), escalated, 2 * hours))
    for recipient, items, limit in plan:
        addresses = {
            w.thread_id: await _reply_to(conn, settings, unit, recipient, w.thread_id)
            for w in items
        }
        rendered = render_unanswered(unit, items, recipient.language, settings, limit, addresses)
        await _queue_staff_mail(
            conn, settings, unit, recipient, rendered, kind="digest", priority="bulk"
        )
    return len(plan)


# --- guardians' daily mail of announcements ----------------------------------------------------


@dataclass
class _GuardianMail:
    guardian_id: str
    address: str
    language: str
    held: list[dict[str, Any]] = field(default_factory=list)


async def guardian_digest(conn: AsyncConnection, settings: Settings, day: date) -> int:
    """One mail per digest guardian with the announcements held for them up to the end
    of `day` (local), in the caller's transaction; returns how many mails were queued.

    Held deliveries (see the module's notes) whose e-mail address has since said STOPP
    or died get their fallbacks instead, as an announcement would. A concurrent run is
    detected when marking the held rows and raises `DigestError` (roll back)."""
    if not settings.email.enabled:
        return 0
    d, an, u, g = t.deliveries, t.announcements, t.units, t.guardians
    end = datetime.combine(day + timedelta(days=1), time(0), tzinfo=settings.tz)
    rows = (
        (
            await conn.execute(
                select(
                    d,
                    an.c.subject.label("a_subject"),
                    an.c.text.label("a_text"),
                    an.c.created_at.label("a_created"),
                    u.c.name.label("unit_name"),
                    g.c.language.label("g_language"),
                )
                .join(an, an.c.id == d.c.announcement_id)
                .join(u, u.c.id == an.c.unit_id)
                .join(g, g.c.id == d.c.guardian_id)
                .where(
                    d.c.kind == "announcement",
                    d.c.channel == "email",
                    d.c.status == "skipped",
                    d.c.last_error == HELD,
                    d.c.created_at < end,
                )
                .order_by(d.c.guardian_id, an.c.created_at, d.c.id)
            )
        )
        .mappings()
        .all()
    )
    if not rows:
        return 0
    mails: dict[tuple[str, str], _GuardianMail] = {}
    for r in rows:
        key = (r["guardian_id"], r["address"])
        if key not in mails:
            lang = r["g_language"] or settings.bridge.default_language
            mails[key] = _GuardianMail(r["guardian_id"], r["address"], lang)
        mails[key].held.append(dict(r))
    routes = await load_routes(conn, [k[0] for k in mails])
    queued = 0
    for mail in mails.values():
        route = next(
            (
                x
                for x in routes.by_guardian.get(mail.guardian_id, [])
                if x.channel == "email" and x.address == mail.address
            ),
            None,
        )
        if route is None or route.opted_out or route.dead:
            for held in mail.held:
                await outbox.fall_back(conn, held, settings)
            await _mark_held(conn, mail, f"{HELD}:fallback")
            continue
        delivery_id = await _queue_guardian_mail(conn, settings, mail, day)
        await _mark_held(conn, mail, f"{HELD}:{delivery_id}")
        queued += 1
    log.info("guardian digest for %s: %d mails, %d held deliveries", day, queued, len(rows))
    return queued


async def _mark_held(conn: AsyncConnection, mail: _GuardianMail, mark: str) -> None:
    d = t.deliveries
    ids = [h["id"] for h in mail.held]
    done = await conn.execute(
        update(d)
        .where(d.c.id.in_(ids), d.c.last_error == HELD)
        .values(last_error=mark, updated_at=datetime.now(UTC))
    )
    if done.rowcount != len(ids):
        raise DigestError("held deliveries were taken by another guardian digest run")


async def _queue_guardian_mail(
    conn: AsyncConnection, settings: Settings, mail: _GuardianMail, day: date
) -> str:
    lang = mail.language
    subject = translate(lang, "Messages from the school {date}", date=_dm(day))
    doc = _Doc(lang, subject)
    doc.para(translate(lang, "The day's messages from the school:"))
    for held in mail.held:
        head = f"{held['unit_name']}, {_when(held['a_created'], settings.tz)}"
        if held["a_subject"]:
            head += f": {held['a_subject']}"
        doc.heading(head)
        for paragraph in str(held["a_text"]).split("\n\n"):
            doc.para(paragraph.strip())
    local = await reply_tokens.issue(
        conn,
        recipient_kind="guardian",
        recipient_id=mail.guardian_id,
        address=mail.address,
        days=settings.email.reply_token_days,
    )
    reply_to = f"{local}@{settings.email.reply_domain}"
    text, html_part = doc.finish(
        translate(
            lang,
            "You get the school's messages in one e-mail a day. Reply STOPP to get no more "
            "e-mail from the school.",
        )
    )
    body = mail_json(
        to=mail.address,
        subject=subject,
        text=text,
        html_part=html_part,
        reply_to=reply_to,
        from_display="skolebro",
        list_unsubscribe=f"<mailto:{reply_to}?subject=STOPP>",
    )
    return await outbox.enqueue(
        conn,
        kind="digest",
        channel="email",
        address=mail.address,
        guardian_id=mail.guardian_id,
        subject=subject,
        body=body,
        priority="bulk",
    )


__all__ = [
    "ABSENCE",
    "HELD",
    "KINDS",
    "RUN_CHUNK",
    "UNANSWERED",
    "AbsenceDigest",
    "DigestError",
    "DigestRecipient",
    "DigestResult",
    "Entry",
    "Rendered",
    "UnitCalendar",
    "UnitInfo",
    "Waiting",
    "absences_needing_notice",
    "build_absence_digest",
    "build_absence_digests",
    "build_unanswered",
    "closed_days",
    "digest_already_sent",
    "digest_recipients",
    "digest_staff",
    "digest_staff_by_unit",
    "guardian_digest",
    "load_unit",
    "load_units",
    "mail_json",
    "mark_missed",
    "notify_late_absence",
    "parse_days",
    "preview_digest",
    "render_absence_digest",
    "render_absence_digests",
    "render_late_notice",
    "render_unanswered",
    "run_digest",
    "run_digests",
]
