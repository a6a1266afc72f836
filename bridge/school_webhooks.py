"""Outgoing webhooks: tell the school's own system when an absence is recorded or cancelled.

Each `[[webhooks]]` entry (SPEC section 3) names a unit, a URL and the environment
variable holding a shared secret. Every change to an absence report of that unit queues
one delivery on the `webhook` channel in the caller's transaction, so the notice exists
exactly when the change does; the delivery engine then POSTs it with retries and backoff
like any other send (`adapters/webhook.py`).

The body is JSON: `{"event": "absence.recorded" | "absence.cancelled", "absence": {...}}`,
the absence in the export shape of SPEC section 7. The header `X-Skolebro-Signature` is
the lowercase hex HMAC-SHA256 of the exact body bytes under the unit's secret;
`X-Skolebro-Delivery` carries the delivery id, the same on every retry, so the receiver
can drop repeats. A withdrawn part of a longer report is sent as `absence.cancelled` for
the original report (now covering the withdrawn days) and `absence.recorded` for each
remaining part.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from bridge import outbox, shapes
from bridge.config import Settings, WebhookSettings
from bridge.store import tables as t

RECORDED = "absence.recorded"
CANCELLED = "absence.cancelled"
KIND = "webhook"


def sign(secret: str, body: bytes) -> str:
    """The `X-Skolebro-Signature` value: hex HMAC-SHA256 of the body."""
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def hooks_for(settings: Settings, unit_id: str) -> list[WebhookSettings]:
    return [hook for hook in settings.webhooks if hook.unit_id == unit_id]


async def absences_changed(
    conn: AsyncConnection, settings: Settings, ids: Sequence[str], event: str
) -> int:
    """Queue one notice per report and configured hook of its unit; returns how many."""
    if not settings.webhooks or not ids:
        return 0
    units = {hook.unit_id for hook in settings.webhooks}
    a, s, u = t.absences, t.students, t.units
    rows = (
        (
            await conn.execute(
                select(a, s.c.first_name, s.c.last_name, u.c.unit_type)
                .join(s, s.c.id == a.c.student_id)
                .join(u, u.c.id == a.c.unit_id)
                .where(a.c.id.in_(list(ids)), a.c.unit_id.in_(units))
                .order_by(a.c.from_date, a.c.id)
            )
        )
        .mappings()
        .all()
    )
    queued = 0
    for row in rows:
        body = json.dumps(
            {"event": event, "absence": shapes.absence(row, settings.tz)}, ensure_ascii=False
        )
        for hook in hooks_for(settings, row["unit_id"]):
            await outbox.enqueue(conn, kind=KIND, channel=KIND, address=hook.url, body=body)
            queued += 1
    return queued
