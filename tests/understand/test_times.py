"""Part-day absences (SPEC 6): times, leaving and arriving, and the units they imply."""

from __future__ import annotations

import pytest

from .util import SOFIE, read, spans


@pytest.mark.parametrize(
    ("text", "from_time", "to_time"),
    [
        ("Ola går kl 12 i dag", "12:00", None),
        ("Ola går kl. 12 i dag", "12:00", None),
        ("Ola må gå klokka 13 i dag", "13:00", None),
        ("Ola må gå klokken 13:15 i dag", "13:15", None),
        ("Ola blir hentet kl 10.15", "10:15", None),
        ("Ola hentes 11:30", "11:30", None),
        ("Ola hentes halv 12", "11:30", None),
        ("Ola drar kl 1215", "12:15", None),
        ("Ola will leave at 1pm", "13:00", None),
        ("Ola will be picked up at 12:30 pm", "12:30", None),
        ("Ola kommer kl 10 i dag", None, "10:00"),
        ("Ola kjem klokka 10 i dag", None, "10:00"),
        ("Ola kommer 09.45", None, "09:45"),
        ("Ola leveres kl 11", None, "11:00"),
        ("Ola will arrive at 10am", None, "10:00"),
        ("Ola er borte fra kl 10 til kl 12", "10:00", "12:00"),
        ("Ola er borte fra 10 til 12", "10:00", "12:00"),
        ("Ola er borte mellom 10 og 12", "10:00", "12:00"),
        ("Ola er borte kl 10-12", "10:00", "12:00"),
        ("Ola går kl 10 og kommer tilbake kl 12", "10:00", "12:00"),
        ("Ola er borte til kl 11", None, "11:00"),
        ("Ola skal til tannlegen kl 10", "10:00", None),
        ("Ola har time hos ortodontisten kl 9, så han kommer ca 10.30", "09:00", "10:30"),
        ("Ola has a doctor's appointment at 10 and will be back around 12", "10:00", "12:00"),
        ("Ola skal til legen kl 13 og blir hentet kl 12.30", "12:30", None),
        ("kl 12 går Ola", "12:00", None),
    ],
)
def test_times(text: str, from_time: str | None, to_time: str | None) -> None:
    (absence,) = spans(text)
    assert absence[4:6] == (from_time, to_time)


@pytest.mark.parametrize(
    ("text", "units"),
    [
        ("Ola går kl 12 i dag", "school"),
        ("Ola går kl 14 i dag", "school"),  # 14:00 is not after 14:00
        ("Ola går kl 15 i dag", "sfo"),
        ("Ola går kl 14:30 i dag", "sfo"),
        ("Ola kommer kl 08.15 i dag", "sfo"),
        ("Ola kommer kl 08.30 i dag", "school"),
        ("Ola går kl 15 fra skolen i dag", "school"),  # a named unit wins
    ],
)
def test_part_day_units(text: str, units: str) -> None:
    assert spans(text)[0][1] == units


def test_part_day_outside_school_hours_without_sfo_is_school() -> None:
    assert spans("Kari går kl 15 i dag")[0][1] == "school"


def test_a_time_is_not_a_date() -> None:
    # 10.45 has no month 45; kl 10.10 follows kl.
    assert spans("Ola kommer 10.45 i dag")[0][2:6] == ("2026-11-26", "2026-11-26", None, "10:45")
    assert spans("Ola kommer kl 10.10 i dag")[0][5] == "10:10"


def test_whole_day_drops_times() -> None:
    assert spans("Ola har legetime kl 10 og er borte hele dagen")[0][4:6] == (None, None)


def test_times_only_for_a_single_day() -> None:
    assert spans("Ola går kl 12 i dag og er borte i morgen")[0][4:6] == (None, None)


def test_unrelated_time_is_ignored() -> None:
    assert spans("Ola er syk i dag. Ring meg etter kl 16.")[0][4:6] == (None, None)


def test_sfo_named_but_not_enrolled_asks_for_unit() -> None:
    result = read("Sofie er ikke på SFO i morgen", children=SOFIE)
    assert result.intent == "absence"
    assert result.absences == ()
    assert result.clarify == ("unit",)
