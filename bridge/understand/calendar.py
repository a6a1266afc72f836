"""School days: Monday to Friday, not a Norwegian public holiday, not a closed day."""

from __future__ import annotations

from collections.abc import Callable, Collection
from datetime import date, timedelta
from functools import cache

import holidays


@cache
def _holidays_of(year: int) -> frozenset[date]:
    return frozenset(holidays.Norway(years=year).keys())


def is_public_holiday(day: date) -> bool:
    """Whether `day` is a Norwegian public holiday (Sundays aside)."""
    return day in _holidays_of(day.year)


def is_default_school_day(day: date) -> bool:
    """Monday–Friday and not a Norwegian public holiday (SPEC 6)."""
    return day.weekday() < 5 and not is_public_holiday(day)


SchoolDayRule = Callable[[date], bool]


ClosedDays = Callable[[date], bool] | Collection[date]


def school_day_rule(closed_days: ClosedDays | None = None) -> SchoolDayRule:
    """The default rule, also skipping a unit's closed days (a predicate or a set of dates)."""
    if closed_days is None:
        return is_default_school_day
    closed: Callable[[date], bool] = (
        closed_days if callable(closed_days) else frozenset(closed_days).__contains__
    )

    def rule(day: date) -> bool:
        return is_default_school_day(day) and not closed(day)

    return rule


def next_school_day(day: date, is_school_day: SchoolDayRule, *, inclusive: bool) -> date:
    """The first school day on (when inclusive) or after `day`."""
    current = day if inclusive else day + timedelta(days=1)
    # A year without a school day only happens with a broken closed-days rule; stop there.
    for _ in range(366):
        if is_school_day(current):
            return current
        current += timedelta(days=1)
    return day


def add_school_days(start: date, count: int, is_school_day: SchoolDayRule) -> date:
    """The last of `count` school days counted from `start` (start counts when a school day)."""
    current = next_school_day(start, is_school_day, inclusive=True)
    for _ in range(max(count, 1) - 1):
        current = next_school_day(current, is_school_day, inclusive=False)
    return current
