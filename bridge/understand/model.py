"""The typed results of understanding one message (SPEC 6)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, time
from typing import Any, Literal

Intent = Literal["absence", "absence_cancel", "message", "stop", "start", "help"]
Unit = Literal["school", "sfo"]
Reason = Literal["illness", "appointment", "other", "unspecified"]
Slot = Literal["child", "date", "unit"]
Category = Literal["bullying", "child_welfare", "finances", "health", "id_number", "religion"]

UNITS: tuple[Unit, ...] = ("school", "sfo")


def _hhmm(t: time | None) -> str | None:
    return None if t is None else f"{t.hour:02d}:{t.minute:02d}"


@dataclass(frozen=True, slots=True)
class Child:
    """A guardian's child as the roster knows it: full name and enrolled units."""

    name: str
    units: tuple[Unit, ...] = ("school",)


@dataclass(frozen=True, slots=True)
class AbsenceSpan:
    """One child's absence: units, an inclusive date range, optional part-day times."""

    child: str
    units: tuple[Unit, ...]
    start: date
    end: date
    from_time: time | None
    to_time: time | None
    reason: Reason

    def to_dict(self) -> dict[str, Any]:
        """The SPEC 6 output shape of this absence."""
        return {
            "child": self.child,
            "units": list(self.units),
            "from": self.start.isoformat(),
            "to": self.end.isoformat(),
            "from_time": _hhmm(self.from_time),
            "to_time": _hhmm(self.to_time),
            "reason": self.reason,
        }


@dataclass(frozen=True, slots=True)
class Interpretation:
    """What a message means: intent, absences, missing slots and privacy findings."""

    intent: Intent
    absences: tuple[AbsenceSpan, ...] = ()
    clarify: tuple[Slot, ...] = ()
    sensitive: tuple[Category, ...] = ()
    redacted: str = ""
    sensitive_spans: tuple[tuple[int, int, Category], ...] = field(default=(), repr=False)

    def to_dict(self, id: Any = None) -> dict[str, Any]:
        """The SPEC 6 output object, with `id` echoed back."""
        return {
            "id": id,
            "intent": self.intent,
            "absences": [a.to_dict() for a in self.absences],
            "clarify": list(self.clarify),
            "sensitive": list(self.sensitive),
            "redacted": self.redacted,
        }
