"""A guardian's right of access and erasure (`skolebro gdpr export|erase`)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, tzinfo
from typing import Any

from sqlalchemy import delete, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from bridge.export import export_absences_by, export_threads_of
from bridge.store import tables as t


class UnknownGuardian(Exception):
    """No such guardian in the roster."""


def _iso(value: Any, tz: tzinfo) -> Any:
    return value.astimezone(tz).isoformat() if isinstance(value, datetime) else value


async def _guardian(conn: AsyncConnection, guardian_id: str) -> dict[str, Any]:
    row = (
        (await conn.execute(select(t.guardians).where(t.guardians.c.id == guardian_id)))
        .mappings()
        .first()
    )
    if row is None:
        raise UnknownGuardian(guardian_id)
    return dict(row)


def _addresses(guardian: dict[str, Any], chats: list[str]) -> list[tuple[str, str]]:
    pairs = [("sms", guardian["mobile"]), ("email", guardian["email"])]
    pairs += [("telegram", chat) for chat in chats]
    return [(channel, address) for channel, address in pairs if address]


async def export_guardian(engine: AsyncEngine, guardian_id: str, tz: tzinfo) -> dict[str, Any]:
    """Everything stored about one guardian, as one JSON-ready document."""
    async with engine.connect() as conn:
        guardian = await _guardian(conn, guardian_id)
        links = (
            (
                await conn.execute(
                    select(t.telegram_links).where(t.telegram_links.c.guardian_id == guardian_id)
                )
            )
            .mappings()
            .all()
        )
        chats = [str(link["chat_id"]) for link in links]
        students = (
            (
                await conn.execute(
                    select(
                        t.guardian_students.c.student_id, t.guardian_students.c.restricted
                    ).where(t.guardian_students.c.guardian_id == guardian_id)
                )
            )
            .mappings()
            .all()
        )
        pairs = _addresses(guardian, chats)
        points = []
        if pairs:
            cp = t.contact_points
            points = [
                dict(r)
                for r in (
                    await conn.execute(
                        select(cp).where(
                            or_(*(and_pair(cp, channel, address) for channel, address in pairs))
                        )
                    )
                ).mappings()
            ]
        deliveries = [
            dict(r)
            for r in (
                await conn.execute(
                    select(
                        t.deliveries.c.id,
                        t.deliveries.c.kind,
                        t.deliveries.c.channel,
                        t.deliveries.c.address,
                        t.deliveries.c.status,
                        t.deliveries.c.body,
                        t.deliveries.c.created_at,
                    ).where(t.deliveries.c.guardian_id == guardian_id)
                )
            ).mappings()
        ]
    return {
        "guardian": {k: _iso(v, tz) for k, v in guardian.items()},
        "students": [dict(s) for s in students],
        "telegram_links": [{k: _iso(v, tz) for k, v in dict(link).items()} for link in links],
        "contact_points": [{k: _iso(v, tz) for k, v in p.items()} for p in points],
        "threads": await export_threads_of(engine, guardian_id, tz),
        "absences_reported": await export_absences_by(engine, guardian_id, tz),
        "deliveries": [{k: _iso(v, tz) for k, v in d.items()} for d in deliveries],
    }


def and_pair(table: Any, channel: str, address: str) -> Any:
    return (table.c.channel == channel) & (table.c.address == address)


async def erase_guardian(engine: AsyncEngine, guardian_id: str) -> dict[str, int]:
    """Erase a guardian: their identity, contact points and texts. Absence reports keep
    the student, unit and dates, and lose who reported them and the free text."""
    counts: dict[str, int] = {}
    now = datetime.now(UTC)
    async with engine.begin() as conn:
        guardian = await _guardian(conn, guardian_id)
        chats = [
            str(c)
            for c in await conn.scalars(
                select(t.telegram_links.c.chat_id).where(
                    t.telegram_links.c.guardian_id == guardian_id
                )
            )
        ]
        pairs = _addresses(guardian, chats)
        a = t.absences
        counts["absences"] = (
            await conn.execute(
                update(a)
                .where(a.c.reported_by == guardian_id)
                .values(reported_by=None, note=None, updated_at=now)
            )
        ).rowcount or 0
        thread_ids = list(
            await conn.scalars(select(t.threads.c.id).where(t.threads.c.guardian_id == guardian_id))
        )
        counts["messages"] = (
            await conn.execute(
                update(t.messages).where(t.messages.c.thread_id.in_(thread_ids)).values(body=None)
            )
        ).rowcount or 0
        counts["deliveries"] = (
            await conn.execute(
                update(t.deliveries)
                .where(t.deliveries.c.guardian_id == guardian_id)
                .values(address=None, body=None, subject=None)
            )
        ).rowcount or 0
        counts["webhooks"] = await _erase_from_webhooks(conn, guardian_id)
        await conn.execute(
            delete(t.telegram_links).where(t.telegram_links.c.guardian_id == guardian_id)
        )
        await conn.execute(delete(t.link_codes).where(t.link_codes.c.guardian_id == guardian_id))
        await conn.execute(
            delete(t.reply_tokens).where(
                t.reply_tokens.c.recipient_kind == "guardian",
                t.reply_tokens.c.recipient_id == guardian_id,
            )
        )
        for channel, address in pairs:
            shared = await conn.scalar(
                select(t.guardians.c.id).where(
                    t.guardians.c.id != guardian_id,
                    (t.guardians.c.mobile == address)
                    if channel == "sms"
                    else (t.guardians.c.email == address)
                    if channel == "email"
                    else t.guardians.c.id.in_(
                        select(t.telegram_links.c.guardian_id).where(
                            t.telegram_links.c.chat_id == int(address)
                        )
                    ),
                )
            )
            if shared:
                continue  # another guardian's contact point too: theirs to keep
            for table in (t.contact_points, t.conversations):
                await conn.execute(delete(table).where(and_pair(table, channel, address)))
            ev = t.inbound_events
            await conn.execute(
                update(ev)
                .where(ev.c.channel == channel, ev.c.sender == address)
                .values(sender=None, body=None)
            )
        await conn.execute(
            update(t.guardians)
            .where(t.guardians.c.id == guardian_id)
            .values(
                first_name="",
                last_name="",
                mobile=None,
                email=None,
                channels="",
                active=False,
                updated_at=now,
            )
        )
        await conn.execute(
            insert(t.audit_log),
            {"at": now, "actor": "cli", "action": "gdpr.erase", "subject": guardian_id,
             "detail": counts},
        )  # fmt: skip
    return counts


async def _erase_from_webhooks(conn: AsyncConnection, guardian_id: str) -> int:
    """Webhook notices about the guardian's reports lose who reported them and the text,
    as the reports themselves do; queued ones are still sent, without them."""
    d = t.deliveries
    marker = json.dumps({"reported_by": guardian_id})[1:-1]  # '"reported_by": "<id>"'
    rows = (
        await conn.execute(
            select(d.c.id, d.c.body).where(
                d.c.kind == "webhook", d.c.body.contains(marker, autoescape=True)
            )
        )
    ).all()
    erased = 0
    for delivery_id, body in rows:
        notice = json.loads(body)
        if notice["absence"].get("reported_by") != guardian_id:
            continue
        notice["absence"].update(reported_by=None, note=None)
        erased += 1
        await conn.execute(
            update(d)
            .where(d.c.id == delivery_id)
            .values(body=json.dumps(notice, ensure_ascii=False))
        )
    return erased
