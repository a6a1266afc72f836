"""Dates (SPEC 6): first absent day, named days, weekdays, explicit dates, ranges, weeks."""

from __future__ import annotations

from datetime import date

import pytest

from bridge.understand import is_default_school_day, is_public_holiday
from bridge.understand.dates import nearest_occurrence

from .util import MAJA, dates, read, spans

THU_0712 = "2026-11-26T07:12:00+01:00"
THU_1500 = "2026-11-26T15:00:00+01:00"
THU_1459 = "2026-11-26T14:59:00+01:00"
FRI_1700 = "2026-11-27T17:00:00+01:00"
SAT = "2026-11-28T10:00:00+01:00"
SUN = "2026-11-29T19:00:00+01:00"


# --- the first absent day -----------------------------------------------------------------


def test_no_date_before_cutoff_on_a_school_day_is_today() -> None:
    assert dates("Maja er syk", THU_0712) == ("2026-11-26", "2026-11-26")
    assert dates("Maja er syk", THU_1459) == ("2026-11-26", "2026-11-26")


def test_no_date_at_or_after_cutoff_is_next_school_day() -> None:
    assert dates("Maja er syk", THU_1500) == ("2026-11-27", "2026-11-27")


def test_cutoff_is_local_time_not_utc() -> None:
    # 13:59Z is 14:59 in Oslo (before 15:00); 14:00Z is 15:00.
    assert dates("Maja er syk", "2026-11-26T13:59:00Z") == ("2026-11-26", "2026-11-26")
    assert dates("Maja er syk", "2026-11-26T14:00:00Z") == ("2026-11-27", "2026-11-27")
    # Summer time: 13:30Z is 15:30 in Oslo.
    assert dates("Maja er syk", "2027-06-02T13:30:00Z") == ("2027-06-03", "2027-06-03")


def test_local_date_differs_from_utc_date() -> None:
    # 23:30Z on Sunday is 00:30 on Monday in Oslo.
    assert dates("Maja er syk", "2026-11-29T23:30:00Z") == ("2026-11-30", "2026-11-30")


def test_friday_evening_and_weekend_go_to_monday() -> None:
    assert dates("Maja er syk", FRI_1700) == ("2026-11-30", "2026-11-30")
    assert dates("Maja er syk", SAT) == ("2026-11-30", "2026-11-30")
    assert dates("Maja er syk", SUN) == ("2026-11-30", "2026-11-30")


def test_public_holidays_are_skipped() -> None:
    # Kristi himmelfartsdag: Thursday 6 May 2027.
    assert is_public_holiday(date(2027, 5, 6))
    assert dates("Maja er syk", "2027-05-05T18:00:00+02:00") == ("2027-05-07", "2027-05-07")
    assert dates("Maja er syk", "2027-05-06T07:00:00+02:00") == ("2027-05-07", "2027-05-07")
    # 17. mai 2027 is a Monday (and 2. pinsedag): Friday evening goes to Tuesday.
    assert dates("Maja er syk", "2027-05-14T18:00:00+02:00") == ("2027-05-18", "2027-05-18")
    # Påske 2027: skjærtorsdag 25.3, langfredag 26.3, 2. påskedag 29.3.
    assert dates("Maja er syk", "2027-03-24T16:00:00+01:00") == ("2027-03-30", "2027-03-30")
    # 1. nyttårsdag and 1. mai.
    assert dates("Maja er syk", "2027-01-01T08:00:00+01:00") == ("2027-01-04", "2027-01-04")
    assert not is_default_school_day(date(2026, 5, 1))


def test_christmas_and_new_year_boundary() -> None:
    # Thursday 24 Dec 2026 after 15:00: 25th and 26th are holidays, then the weekend.
    assert dates("Maja er syk", "2026-12-24T16:00:00+01:00") == ("2026-12-28", "2026-12-28")
    assert dates("Maja er syk", "2026-12-31T16:00:00+01:00") == ("2027-01-04", "2027-01-04")


def test_closed_days_are_not_school_days() -> None:
    closed = {date(2026, 11, 27)}
    result = spans("Maja er syk", THU_1500, MAJA, closed_days=closed)
    assert result[0][2] == "2026-11-30"
    result = spans("Maja er syk i 3 dager", THU_0712, MAJA, closed_days=closed.__contains__)
    assert result[0][2:4] == ("2026-11-26", "2026-12-01")


def test_custom_school_day_rule() -> None:
    result = spans("Maja er syk", SAT, MAJA, is_school_day=lambda d: True)
    assert result[0][2] == "2026-11-28"


# --- named days ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Maja er syk i dag", "2026-11-28"),
        ("Maja er syk idag", "2026-11-28"),
        ("Maja is sick today", "2026-11-28"),
        ("Maja er syk i morgen", "2026-11-29"),
        ("Maja er sjuk i morgon", "2026-11-29"),
        ("Maja is sick tomorrow", "2026-11-29"),
        ("Maja er borte i overmorgen", "2026-11-30"),
        ("Maja var syk i går", "2026-11-27"),
        ("Maja was sick yesterday", "2026-11-27"),
    ],
)
def test_named_days_are_kept_even_on_weekends(text: str, expected: str) -> None:
    assert dates(text, SAT) == (expected, expected)


def test_named_day_after_cutoff_is_still_that_day() -> None:
    assert dates("Maja er syk i dag", THU_1500) == ("2026-11-26", "2026-11-26")


# --- weekdays -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Maja er borte mandag", "2026-11-30"),
        ("Maja er borte på mandag", "2026-11-30"),
        ("Maja er vekke på måndag", "2026-11-30"),
        ("Maja is away on Monday", "2026-11-30"),
        ("Maja er borte torsdag", "2026-11-26"),  # received Thursday: the same day
        ("Maja er borte på fredag", "2026-11-27"),
        ("Maja er borte tysdag", "2026-12-01"),
        ("Maja er borte neste fredag", "2026-12-04"),  # the following ISO week
        ("Maja is away next Friday", "2026-12-04"),
        ("Maja er borte neste mandag", "2026-11-30"),
        ("Maja er borte fredag neste uke", "2026-12-04"),
    ],
)
def test_weekday_names(text: str, expected: str) -> None:
    assert dates(text, THU_0712) == (expected, expected)


def test_next_weekday_from_a_tuesday() -> None:
    assert dates("Maja er borte neste fredag", "2027-02-09T20:00:00+01:00") == (
        "2027-02-19",
        "2027-02-19",
    )


# --- explicit dates -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Maja er borte 28.11", "2026-11-28"),
        ("Maja er borte 28/11", "2026-11-28"),
        ("Maja er borte 28. november", "2026-11-28"),
        ("Maja er borte 28 nov", "2026-11-28"),
        ("Maja er borte 28.11.2026", "2026-11-28"),
        ("Maja er borte 28.11.26", "2026-11-28"),
        ("Maja is away on November 28th", "2026-11-28"),
        ("Maja is away on the 28th of November", "2026-11-28"),
        ("Maja er borte 2026-11-28", "2026-11-28"),
        ("Maja er borte den 30.", "2026-11-30"),
    ],
)
def test_explicit_dates(text: str, expected: str) -> None:
    assert dates(text, "2026-11-20T08:00:00+01:00") == (expected, expected)


def test_year_less_date_is_the_nearest_occurrence() -> None:
    assert nearest_occurrence(2, 1, date(2026, 12, 20)) == date(2027, 1, 2)
    assert nearest_occurrence(28, 12, date(2027, 1, 5)) == date(2026, 12, 28)
    assert dates("Maja er borte 4. januar", "2026-12-18T08:00:00+01:00")[0] == "2027-01-04"
    assert dates("Maja var borte 28.12", "2027-01-05T08:00:00+01:00")[0] == "2026-12-28"


@pytest.mark.parametrize(
    "text", ["Maja er borte 31.11", "Maja er borte 30.2", "Maja er borte 31. april"]
)
def test_impossible_dates_ask_for_the_date(text: str) -> None:
    result = read(text, THU_0712, MAJA)
    assert result.intent == "absence"
    assert result.absences == ()
    assert result.clarify == ("date",)


def test_leap_day() -> None:
    assert dates("Maja er borte 29.2", "2028-02-20T08:00:00+01:00")[0] == "2028-02-29"
    assert read("Maja er borte 29.02.2027", THU_0712, MAJA).clarify == ("date",)


# --- ranges -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Maja er borte fra mandag til onsdag", ("2026-11-30", "2026-12-02")),
        ("Maja er borte mandag–onsdag", ("2026-11-30", "2026-12-02")),
        ("Maja er borte mandag-onsdag", ("2026-11-30", "2026-12-02")),
        ("Maja is away from Monday to Wednesday", ("2026-11-30", "2026-12-02")),
        ("Maja er borte fra 3.12 til 5.12", ("2026-12-03", "2026-12-05")),
        ("Maja er borte 1.-3. desember", ("2026-12-01", "2026-12-03")),
        ("Maja er borte 1. og 2. desember", ("2026-12-01", "2026-12-02")),
        ("Maja er syk i dag og i morgen", ("2026-11-26", "2026-11-27")),
        ("Maja is sick today and tomorrow", ("2026-11-26", "2026-11-27")),
        ("Maja er borte fra fredag til mandag", ("2026-11-27", "2026-11-30")),
        ("Maja er borte til og med tirsdag", ("2026-11-26", "2026-12-01")),
        ("Maja er syk, er tilbake på mandag", ("2026-11-26", "2026-11-27")),
    ],
)
def test_ranges(text: str, expected: tuple[str, str]) -> None:
    assert dates(text, THU_0712) == expected


def test_range_over_new_year() -> None:
    assert dates("Maja er borte fra 30.12 til 3.1", "2026-12-18T08:00:00+01:00") == (
        "2026-12-30",
        "2027-01-03",
    )


def test_range_end_is_first_match_on_or_after_start() -> None:
    # Received Saturday: "fredag til tirsdag" is Friday 4 Dec .. Tuesday 8 Dec.
    assert dates("Maja er borte fra fredag til tirsdag", SAT) == ("2026-12-04", "2026-12-08")


# --- weeks and N days ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "Maja er syk resten av uka",
        "Maja er sjuk resten av veka",
        "Maja is off for the rest of the week",
        "Maja er borte hele uka",
        "Maja er borte heile veka",
        "Maja er borte denne uka",
        "Maja is away this week",
        "Maja is away all week",
    ],
)
def test_rest_of_the_week(text: str) -> None:
    # Wednesday morning: Wednesday to Friday.
    assert dates(text, "2027-01-13T07:20:00+01:00") == ("2027-01-13", "2027-01-15")
    # Sunday: the first absent day is Monday, through that week's Friday.
    assert dates(text, "2027-01-17T19:00:00+01:00") == ("2027-01-18", "2027-01-22")


def test_next_week_and_week_numbers() -> None:
    assert dates("Maja er borte hele neste uke", THU_0712) == ("2026-11-30", "2026-12-04")
    assert dates("Maja er borte i uke 50", THU_0712) == ("2026-12-07", "2026-12-11")


@pytest.mark.parametrize(
    ("text", "expected_to"),
    [
        ("Maja blir hjemme 3 dager", "2026-11-30"),
        ("Maja blir hjemme tre dager", "2026-11-30"),
        ("Maja blir heime tre dagar", "2026-11-30"),
        ("Maja stays home for three days", "2026-11-30"),
        ("Maja blir hjemme i 2 dager", "2026-11-27"),
        ("Maja stays home for 1 day", "2026-11-26"),
        ("Maja er borte ei veke", "2026-12-02"),
    ],
)
def test_n_school_days_skip_weekends(text: str, expected_to: str) -> None:
    assert dates(text, THU_0712) == ("2026-11-26", expected_to)


def test_n_days_skip_holidays() -> None:
    # Wednesday before Kristi himmelfartsdag: Wed, (Thu holiday), Fri.
    assert dates("Maja er syk i 2 dager", "2027-05-05T08:00:00+02:00") == (
        "2027-05-05",
        "2027-05-07",
    )
