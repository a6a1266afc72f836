"""The endpoints of the JSON API. Every object is checked against the calling key's units.

Scope rule: a `unit_id` the caller names (a list's filter, a new object's unit) that the
key is not for gets 403; an object looked up by id that belongs to another unit gets
404, exactly as one that does not exist, so that a key learns nothing about other units.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from sqlalchemy import exists, func, insert, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from bridge import absences as absence_store
from bridge import shapes
from bridge import threads as thread_store
from bridge.announcements import AnnouncementError, create_announcement, summary
from bridge.api import inputs
from bridge.api.auth import ApiKey
from bridge.api.problems import Problem, json_response
from bridge.config import Settings
from bridge.mail_flow import deliver_to_guardian
from bridge.routing import CHANNELS, load_routes
from bridge.sms_text import MAX_SEGMENTS
from bridge.store import tables as t
from bridge.understand import redact

log = logging.getLogger("skolebro.api")

API_KEY: web.RequestKey[ApiKey] = web.RequestKey("skolebro_api_key", ApiKey)

REASONS = ("illness", "appointment", "other", "unspecified")
STATUSES = ("active", "cancelled")
TEXT_MAX = 5000  # an announcement; SMS limits it further (422)
REPLY_MAX = 3000
NOTE_MAX = 2000
SUBJECT_MAX = 200
MAX_GROUPS = 200
MAX_STUDENTS = 1000


class Handlers:
    """One instance per mounted API: the store, the settings, and who to wake for outbound."""

    def __init__(
        self,
        engine: AsyncEngine,
        settings: Settings,
        on_outbound: Callable[[], None] | None = None,
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.on_outbound = on_outbound

    # --- helpers ---------------------------------------------------------------------

    @staticmethod
    def key(request: web.Request) -> ApiKey:
        return request[API_KEY]

    @staticmethod
    def writer(request: web.Request) -> ApiKey:
        key = request[API_KEY]
        if key.read_only:
            raise Problem(403, "this API key is read-only", slug="read-only-key")
        return key

    @staticmethod
    def units(request: web.Request, key: ApiKey) -> list[str]:
        """The `unit_id` filter, which must be one of the key's units; default all of them."""
        unit = inputs.query(request, "unit_id")
        if unit is None or unit == "":
            return sorted(key.unit_ids)
        if unit not in key.unit_ids:
            raise Problem(403, "this API key is not scoped to that unit")
        return [unit]

    async def _audit(
        self, conn: AsyncConnection, key: ApiKey, action: str, subject: str, detail: Any
    ) -> None:
        await conn.execute(
            insert(t.audit_log),
            {
                "at": datetime.now(UTC),
                "actor": key.id,
                "action": action,
                "subject": subject,
                "detail": detail,
            },
        )

    def _wake(self) -> None:
        if self.on_outbound is not None:
            self.on_outbound()

    # --- announcements ---------------------------------------------------------------

    async def create_announcement(self, request: web.Request) -> web.StreamResponse:
        key = self.writer(request)
        inputs.only_params(request)
        f = inputs.Fields(
            await inputs.read_json(request),
            ("unit_id", "text", "subject", "group_ids", "student_ids", "urgent"),
        )
        unit_id = f.string("unit_id", required=True)
        if unit_id is not None and unit_id not in key.unit_ids:
            raise Problem(403, "this API key is not scoped to that unit")
        text = f.string("text", required=True, max_length=TEXT_MAX)
        subject = f.string("subject", max_length=SUBJECT_MAX, nullable=True, blank_ok=True)
        group_ids = f.strings("group_ids", max_items=MAX_GROUPS)
        student_ids = f.strings("student_ids", max_items=MAX_STUDENTS)
        urgent = f.boolean("urgent")
        f.done()
        assert unit_id is not None and text is not None
        try:
            created = await create_announcement(
                self.engine,
                self.settings,
                unit_id=unit_id,
                text=text,
                group_ids=group_ids,
                student_ids=student_ids,
                subject=subject.strip() if subject and subject.strip() else None,
                urgent=urgent,
                created_by=key.id,
            )
        except AnnouncementError as e:
            raise Problem(422, str(e)) from None
        async with self.engine.begin() as conn:
            await self._audit(
                conn,
                key,
                "api.announcement.create",
                created.announcement_id,
                {"unit_id": unit_id, "deliveries": created.deliveries},
            )
        log.info(
            "key %s: announcement %s, %d deliveries",
            key.id,
            created.announcement_id,
            created.deliveries,
        )
        self._wake()
        return json_response(
            {
                "announcement_id": created.announcement_id,
                "deliveries": created.deliveries,
                "skipped": created.skipped,
                "not_before": shapes.iso(created.not_before, self.settings.tz),
            },
            status=201,
            headers={"Location": f"{request.path.rstrip('/')}/{created.announcement_id}"},
        )

    async def get_announcement(self, request: web.Request) -> web.StreamResponse:
        key = self.key(request)
        inputs.only_params(request)
        announcement_id = inputs.path_id(request)
        a, d = t.announcements, t.deliveries
        row = None
        firsts = 0
        if announcement_id is not None:
            async with self.engine.connect() as conn:
                row = (
                    (
                        await conn.execute(
                            select(a).where(
                                a.c.id == announcement_id, a.c.unit_id.in_(key.unit_ids)
                            )
                        )
                    )
                    .mappings()
                    .one_or_none()
                )
                if row is not None:
                    firsts = int(
                        await conn.scalar(
                            select(func.count()).where(
                                d.c.announcement_id == announcement_id, d.c.fallback_of.is_(None)
                            )
                        )
                        or 0
                    )
        if row is None or announcement_id is None:
            raise Problem(404, "no such announcement")
        tz = self.settings.tz
        return json_response(
            {
                "id": row["id"],
                "unit_id": row["unit_id"],
                "group_ids": list(row["group_ids"] or []),
                "student_ids": list(row["student_ids"] or []),
                "subject": row["subject"],
                "text": row["text"],
                "urgent": bool(row["urgent"]),
                "created_by": row["created_by"],
                "created_at": shapes.iso(row["created_at"], tz),
                "deliveries": firsts,
                "summary": await summary(self.engine, announcement_id),
            }
        )

    # --- absences --------------------------------------------------------------------

    def _absence_query(self) -> Any:
        a, s, u = t.absences, t.students, t.units
        return (
            select(a, s.c.first_name, s.c.last_name, u.c.unit_type)
            .join(s, s.c.id == a.c.student_id)
            .join(u, u.c.id == a.c.unit_id)
        )

    async def list_absences(self, request: web.Request) -> web.StreamResponse:
        key = self.key(request)
        inputs.only_params(request, "unit_id", "from", "to", "status", "limit", "cursor")
        units = self.units(request, key)
        today = datetime.now(self.settings.tz).date()
        start = inputs.date_param(request, "from", today)
        end = inputs.date_param(request, "to", today if start <= today else start)
        if start > end:
            raise Problem(400, "from is after to", errors=[{"field": "to", "message": "< from"}])
        status = inputs.choice_param(request, "status", STATUSES)
        limit = inputs.limit_param(request)
        after = inputs.cursor_param(request, "absences")
        a = t.absences
        query = (
            self._absence_query()
            .where(a.c.unit_id.in_(units), a.c.from_date <= end, a.c.to_date >= start)
            .order_by(a.c.id)
            .limit(limit + 1)
        )
        if status:
            query = query.where(a.c.status == status)
        if after:
            query = query.where(a.c.id > after)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return self._page(
            "absences", [shapes.absence(r, self.settings.tz) for r in rows[:limit]], rows, limit
        )

    @staticmethod
    def _page(kind: str, items: list[dict[str, Any]], rows: Any, limit: int) -> web.StreamResponse:
        more = len(rows) > limit
        return json_response(
            {
                "items": items,
                "next_cursor": inputs.encode_cursor(kind, items[-1]["id"]) if more else None,
            }
        )

    async def get_absence(self, request: web.Request) -> web.StreamResponse:
        key = self.key(request)
        inputs.only_params(request)
        absence_id = inputs.path_id(request)
        row = None
        if absence_id is not None:
            a = t.absences
            async with self.engine.connect() as conn:
                row = (
                    (
                        await conn.execute(
                            self._absence_query().where(
                                a.c.id == absence_id, a.c.unit_id.in_(key.unit_ids)
                            )
                        )
                    )
                    .mappings()
                    .one_or_none()
                )
        if row is None:
            raise Problem(404, "no such absence report")
        return json_response(shapes.absence(row, self.settings.tz))

    def _kept_note(self, note: str | None) -> str | None:
        """What of an office note may be stored, by `privacy.sensitive_action`."""
        if note is None or not note.strip():
            return None
        redacted, categories = redact(note)
        if not categories:
            return note
        action = self.settings.privacy.sensitive_action
        if action == "reject":
            return None
        if action == "flag":
            return note
        return redacted

    async def create_absence(self, request: web.Request) -> web.StreamResponse:
        key = self.writer(request)
        inputs.only_params(request)
        f = inputs.Fields(
            await inputs.read_json(request),
            (
                "student_id",
                "unit_id",
                "from",
                "to",
                "from_time",
                "to_time",
                "reason",
                "note",
                "reported_by",
            ),
        )
        unit_id = f.string("unit_id", required=True)
        if unit_id is not None and unit_id not in key.unit_ids:
            raise Problem(403, "this API key is not scoped to that unit")
        student_id = f.string("student_id", required=True)
        start, end = f.date("from"), f.date("to")
        from_time, to_time = f.clock("from_time"), f.clock("to_time")
        reason = f.choice("reason", REASONS)
        note = f.string("note", max_length=NOTE_MAX, nullable=True, blank_ok=True)
        reported_by = f.string("reported_by", nullable=True)
        if start and end and start > end:
            f.fail("to", "must not be before from")
        if start and end and start != end and (from_time or to_time):
            f.fail("from_time", "a time span is only for an absence within one day")
        if from_time and to_time and from_time >= to_time:
            f.fail("to_time", "must be after from_time")
        f.done()
        assert unit_id and student_id and start and end and reason
        s, gs, g = t.students, t.guardian_students, t.guardians
        async with self.engine.begin() as conn:
            enrolled = await conn.scalar(
                select(s.c.id).where(
                    s.c.id == student_id,
                    s.c.active.is_(True),
                    or_(s.c.unit_id == unit_id, s.c.sfo_unit_id == unit_id),
                )
            )
            if enrolled is None:
                f.fail("student_id", "no such student is enrolled in that unit")
            if reported_by is not None:
                guardian = await conn.scalar(
                    select(g.c.id)
                    .join(gs, gs.c.guardian_id == g.c.id)
                    .where(
                        g.c.id == reported_by,
                        g.c.active.is_(True),
                        gs.c.student_id == student_id,
                        gs.c.restricted.is_(False),
                    )
                )
                if guardian is None:
                    f.fail("reported_by", "is not a guardian with responsibility for the student")
            f.done()
            now = datetime.now(UTC)
            (absence_id,) = await absence_store.record(
                conn,
                self.settings,
                [
                    absence_store.Report(
                        student_id=student_id,
                        unit_id=unit_id,
                        from_date=start,
                        to_date=end,
                        from_time=from_time,
                        to_time=to_time,
                        reason=reason,
                    )
                ],
                reported_by=reported_by,
                channel="api",
                received_at=now,
                note=self._kept_note(note),
                inbound_event_id=None,
            )
            await self._audit(conn, key, "api.absence.create", absence_id, {"unit_id": unit_id})
            row = (
                (await conn.execute(self._absence_query().where(t.absences.c.id == absence_id)))
                .mappings()
                .one()
            )
        log.info("key %s: absence %s for student %s", key.id, absence_id, student_id)
        return json_response(
            shapes.absence(row, self.settings.tz),
            status=201,
            headers={"Location": f"{request.path.rstrip('/')}/{absence_id}"},
        )

    # --- threads ---------------------------------------------------------------------

    async def _messages(
        self, conn: AsyncConnection, thread_ids: list[str], since: datetime | None
    ) -> dict[str, list[dict[str, Any]]]:
        m = t.messages
        by_thread: dict[str, list[dict[str, Any]]] = {tid: [] for tid in thread_ids}
        for i in range(0, len(thread_ids), 500):
            query = (
                select(m)
                .where(m.c.thread_id.in_(thread_ids[i : i + 500]))
                .order_by(m.c.thread_id, m.c.sent_at, m.c.id)
            )
            if since is not None:
                query = query.where(m.c.sent_at >= since)
            for r in (await conn.execute(query)).mappings():
                by_thread[r["thread_id"]].append(shapes.message(r, self.settings.tz))
        return by_thread

    async def list_threads(self, request: web.Request) -> web.StreamResponse:
        key = self.key(request)
        inputs.only_params(request, "unit_id", "since", "include_messages", "limit", "cursor")
        units = self.units(request, key)
        since = inputs.datetime_param(request, "since", self.settings.tz)
        with_messages = inputs.bool_param(request, "include_messages")
        limit = inputs.limit_param(request)
        after = inputs.cursor_param(request, "threads")
        th = t.threads
        query = select(th).where(th.c.unit_id.in_(units)).order_by(th.c.id).limit(limit + 1)
        if since is not None:
            query = query.where(th.c.last_message_at >= since)
        if after:
            query = query.where(th.c.id > after)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
            page = rows[:limit]
            messages = (
                await self._messages(conn, [r["id"] for r in page], since)
                if with_messages
                else None
            )
        tz = self.settings.tz
        items = [
            shapes.thread(r, tz, messages[r["id"]] if messages is not None else None) for r in page
        ]
        return self._page("threads", items, rows, limit)

    async def _visible_thread(self, request: web.Request, key: ApiKey) -> Any:
        thread_id = inputs.path_id(request)
        row = None
        if thread_id is not None:
            th = t.threads
            async with self.engine.connect() as conn:
                row = (
                    (
                        await conn.execute(
                            select(th).where(th.c.id == thread_id, th.c.unit_id.in_(key.unit_ids))
                        )
                    )
                    .mappings()
                    .one_or_none()
                )
        if row is None:
            raise Problem(404, "no such thread")
        return row

    async def get_thread(self, request: web.Request) -> web.StreamResponse:
        inputs.only_params(request)
        row = await self._visible_thread(request, self.key(request))
        async with self.engine.connect() as conn:
            messages = await self._messages(conn, [row["id"]], None)
        return json_response(shapes.thread(row, self.settings.tz, messages[row["id"]]))

    async def post_reply(self, request: web.Request) -> web.StreamResponse:
        key = self.writer(request)
        inputs.only_params(request)
        thread = await self._visible_thread(request, key)
        f = inputs.Fields(await inputs.read_json(request), ("text", "staff_id"))
        text = f.string("text", required=True, max_length=REPLY_MAX)
        staff_id = f.string("staff_id", nullable=True)
        f.done()
        assert text is not None
        text = text.strip()
        _, categories = redact(text)
        if categories:
            found = [str(c) for c in categories]
            raise Problem(
                422,
                "The reply was not sent: it contains sensitive information "
                f"({', '.join(found)}). Please call the guardian instead.",
                slug="sensitive-content",
                extra={"sensitive": found},
            )
        su, st = t.staff_units, t.staff
        async with self.engine.begin() as conn:
            if staff_id is not None:
                member = await conn.scalar(
                    select(su.c.staff_id)
                    .join(st, st.c.id == su.c.staff_id)
                    .where(
                        su.c.staff_id == staff_id,
                        su.c.unit_id == thread["unit_id"],
                        su.c.active.is_(True),
                        st.c.active.is_(True),
                    )
                )
                if member is None:
                    f.fail("staff_id", "is not a staff member of the thread's unit")
                    f.done()
            now = datetime.now(UTC)
            message_id = await thread_store.add_message(
                conn,
                thread["id"],
                direction="out",
                channel="api",
                author=staff_id or key.id,
                body=text,
                sensitive=[],
                sent_at=now,
            )
            delivery_id = await deliver_to_guardian(conn, self.settings, thread, text)
            delivery = None
            if delivery_id is not None:
                d = t.deliveries
                sent = (
                    await conn.execute(
                        select(d.c.id, d.c.channel, d.c.status, d.c.segments).where(
                            d.c.id == delivery_id
                        )
                    )
                ).one()
                if sent.channel == "sms" and (sent.segments or 0) > MAX_SEGMENTS:
                    raise Problem(
                        422,
                        f"the reply is too long for SMS ({sent.segments} segments, "
                        f"at most {MAX_SEGMENTS})",
                        errors=[{"field": "text", "message": "too long for SMS"}],
                    )
                delivery = {"id": sent.id, "channel": sent.channel, "status": sent.status}
            await self._audit(
                conn,
                key,
                "api.thread.reply",
                message_id,
                {"thread_id": thread["id"], "delivery_id": delivery_id},
            )
            stored = (
                (await conn.execute(select(t.messages).where(t.messages.c.id == message_id)))
                .mappings()
                .one()
            )
        log.info(
            "key %s: reply %s in thread %s, delivery %s",
            key.id,
            message_id,
            thread["id"],
            delivery_id,
        )
        self._wake()
        return json_response(
            {"message": shapes.message(stored, self.settings.tz), "delivery": delivery},
            status=201,
        )

    # --- guardians -------------------------------------------------------------------

    async def contact_state(self, request: web.Request) -> web.StreamResponse:
        key = self.key(request)
        inputs.only_params(request)
        guardian_id = inputs.path_id(request)
        g, gs, s = t.guardians, t.guardian_students, t.students
        row = None
        routes: list[Any] = []
        if guardian_id is not None:
            visible = exists(
                select(gs.c.guardian_id)
                .join(s, s.c.id == gs.c.student_id)
                .where(
                    gs.c.guardian_id == g.c.id,
                    gs.c.restricted.is_(False),
                    or_(s.c.unit_id.in_(key.unit_ids), s.c.sfo_unit_id.in_(key.unit_ids)),
                )
            )
            async with self.engine.connect() as conn:
                row = (
                    await conn.execute(
                        select(g.c.id, g.c.channels, g.c.protected, g.c.active).where(
                            g.c.id == guardian_id, visible
                        )
                    )
                ).one_or_none()
                if row is not None:
                    routes = (await load_routes(conn, [row.id])).by_guardian.get(row.id, [])
        if row is None:
            raise Problem(404, "no such guardian")
        protected = bool(row.protected)
        by_channel = {r.channel: r for r in routes}
        channels = []
        for name in dict.fromkeys(c.strip() for c in str(row.channels).split(",")):
            if name not in CHANNELS:
                continue
            route = by_channel.get(name)
            channels.append(
                {
                    "channel": name,
                    "address": None if route is None or protected else route.address,
                    "has_address": route is not None,
                    "available": route is not None and not route.opted_out and not route.dead,
                    "opted_out": bool(route and route.opted_out),
                    "dead": bool(route and route.dead),
                }
            )
        first = next((c["channel"] for c in channels if c["available"]), None)
        return json_response(
            {
                "guardian_id": row.id,
                "active": bool(row.active),
                "protected": protected,
                "channels": channels,
                "first_available": first,
            }
        )
