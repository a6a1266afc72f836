"""The JSON request/response of `skolebro understand` (SPEC 6) around `interpret`."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from .calendar import ClosedDays
from .interpret import interpret
from .model import UNITS, Child, Unit


class InvalidRequest(ValueError):
    """A request object that cannot be understood; the message names the field."""


def parse_children(value: Any) -> list[Child]:
    """Validate the `children` field into Child objects."""
    if not isinstance(value, list):
        raise InvalidRequest("children: expected a list of {name, units} objects")
    out: list[Child] = []
    for i, item in enumerate(value):
        if not isinstance(item, dict):
            raise InvalidRequest(f"children[{i}]: expected an object")
        name = item.get("name")
        if not isinstance(name, str) or not name.strip():
            raise InvalidRequest(f"children[{i}].name: expected a non-empty string")
        units = item.get("units")
        if not isinstance(units, list):
            raise InvalidRequest(f"children[{i}].units: expected a list of 'school'/'sfo'")
        for unit in units:
            if unit not in _UNIT_SET:
                raise InvalidRequest(f"children[{i}].units: unknown unit {unit!r}")
        ordered = _ORDERED.get(tuple(units)) or tuple(u for u in UNITS if u in units)
        out.append(Child(name.strip(), ordered))
    return out


_UNIT_SET = frozenset(UNITS)
_ORDERED: dict[tuple[str, ...], tuple[Unit, ...]] = {
    ("school", "sfo"): ("school", "sfo"),
    ("sfo", "school"): ("school", "sfo"),
    ("school",): ("school",),
    ("sfo",): ("sfo",),
}


def parse_received_at(value: Any) -> datetime:
    """Validate `received_at` (ISO 8601; without an offset it is local time)."""
    if not isinstance(value, str):
        raise InvalidRequest("received_at: expected an ISO 8601 date-time string")
    try:
        when = datetime.fromisoformat(value.strip())
    except ValueError:
        raise InvalidRequest(f"received_at: not an ISO 8601 date-time: {value[:40]!r}") from None
    if not _MIN_YEAR <= when.year <= _MAX_YEAR:
        # Near year 1 or 9999 converting to the time zone or counting days on overflows.
        raise InvalidRequest(f"received_at: year {when.year} is out of range")
    return when


_MIN_YEAR, _MAX_YEAR = 2, 9997


def understand(
    request: dict[str, Any],
    *,
    timezone: str = "Europe/Oslo",
    closed_days: ClosedDays | None = None,
) -> dict[str, Any]:
    """Understand one request object and return the SPEC 6 output object.

    Raises InvalidRequest when `text`, `received_at` or `children` is missing or invalid.
    """
    if not isinstance(request, dict):
        raise InvalidRequest("expected a JSON object")
    text = request.get("text")
    if not isinstance(text, str):
        raise InvalidRequest("text: expected a string")
    received_at = parse_received_at(request.get("received_at"))
    children = parse_children(request.get("children"))
    result = interpret(text, received_at, children, timezone=timezone, closed_days=closed_days)
    return result.to_dict(request.get("id"))
