"""Small helpers shared by the understanding tests."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from bridge.understand import Child, Interpretation, interpret

OLA_KARI = [Child("Ola Nordmann", ("school", "sfo")), Child("Kari Nordmann", ("school",))]
MAJA = [Child("Maja Pedersen", ("school", "sfo"))]
SOFIE = [Child("Sofie Larsen", ("school",))]

# Thursday 26 November 2026, 07:12 in Oslo.
THURSDAY_MORNING = "2026-11-26T07:12:00+01:00"


def read(
    text: str, at: str = THURSDAY_MORNING, children: list[Child] | None = None, **kw: Any
) -> Interpretation:
    """Interpret `text` received at `at` (ISO 8601) from a guardian of `children`."""
    return interpret(
        text, datetime.fromisoformat(at), OLA_KARI if children is None else children, **kw
    )


def spans(text: str, at: str = THURSDAY_MORNING, children: list[Child] | None = None, **kw: Any):
    """The absences as tuples: (first name, units, from, to, from_time, to_time, reason)."""
    result = read(text, at, children, **kw)
    return [
        (
            a.child.split()[0],
            "+".join(a.units),
            a.start.isoformat(),
            a.end.isoformat(),
            a.from_time.strftime("%H:%M") if a.from_time else None,
            a.to_time.strftime("%H:%M") if a.to_time else None,
            a.reason,
        )
        for a in result.absences
    ]


def dates(text: str, at: str = THURSDAY_MORNING, children: list[Child] | None = None, **kw: Any):
    """(from, to) of the single absence in `text`."""
    found = spans(text, at, MAJA if children is None else children, **kw)
    assert len(found) == 1, found
    return found[0][2], found[0][3]
