"""Understanding parent messages: intent, absences, missing slots, sensitive content.

The contract is SPEC section 6. `understand` takes and returns its JSON objects;
`interpret` is the typed API the running bridge uses; `redact` works on any text.
"""

from .calendar import (
    ClosedDays,
    SchoolDayRule,
    is_default_school_day,
    is_public_holiday,
    school_day_rule,
)
from .interpret import interpret, is_help, is_start, is_stop, keyword_intent
from .model import (
    AbsenceSpan,
    Category,
    Child,
    Intent,
    Interpretation,
    Reason,
    Slot,
    Unit,
)
from .request import InvalidRequest, understand
from .sensitive import REDACTION, find_sensitive, is_national_id, redact

__all__ = [
    "REDACTION",
    "AbsenceSpan",
    "Category",
    "Child",
    "ClosedDays",
    "Intent",
    "Interpretation",
    "InvalidRequest",
    "Reason",
    "SchoolDayRule",
    "Slot",
    "Unit",
    "find_sensitive",
    "interpret",
    "is_default_school_day",
    "is_help",
    "is_national_id",
    "is_public_holiday",
    "is_start",
    "is_stop",
    "keyword_intent",
    "redact",
    "school_day_rule",
    "understand",
]
