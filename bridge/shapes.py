"""Rows to the JSON shapes of SPEC section 7, used by the exports and the JSON API alike."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, tzinfo
from typing import Any


def iso(value: datetime | None, tz: tzinfo) -> str | None:
    return value.astimezone(tz).isoformat() if value else None


def absence(r: Mapping[Any, Any], tz: tzinfo) -> dict[str, Any]:
    """An absence row joined with its student's names and its unit's type."""
    return {
        "id": r["id"],
        "student_id": r["student_id"],
        "student": f"{r['first_name']} {r['last_name']}".strip(),
        "unit_id": r["unit_id"],
        "unit_type": r["unit_type"],
        "from": r["from_date"].isoformat(),
        "to": r["to_date"].isoformat(),
        "from_time": r["from_time"],
        "to_time": r["to_time"],
        "reason": r["reason"],
        "note": r["note"],
        "reported_by": r["reported_by"],
        "channel": r["channel"],
        "received_at": iso(r["received_at"], tz),
        "status": r["status"],
    }


def message(r: Mapping[Any, Any], tz: tzinfo) -> dict[str, Any]:
    return {
        "id": r["id"],
        "direction": r["direction"],
        "channel": r["channel"],
        "author": r["author"],
        "body": r["body"],
        "sent_at": iso(r["sent_at"], tz),
        "sensitive": list(r["sensitive"] or []),
    }


def thread(
    r: Mapping[Any, Any], tz: tzinfo, messages: list[dict[str, Any]] | None
) -> dict[str, Any]:
    """The export's thread, with its times; `messages` only when they were asked for."""
    out: dict[str, Any] = {
        "id": r["id"],
        "unit_id": r["unit_id"],
        "student_id": r["student_id"],
        "guardian_ids": [r["guardian_id"]],
        "created_at": iso(r["created_at"], tz),
        "last_message_at": iso(r["last_message_at"], tz),
    }
    if messages is not None:
        out["messages"] = messages
    return out
