"""Intents (SPEC 6): keywords, messages, absences, withdrawn absences, reasons, units."""

from __future__ import annotations

import pytest

from bridge.understand import is_help, is_start, is_stop, keyword_intent

from .util import MAJA, SOFIE, read, spans


@pytest.mark.parametrize(
    ("text", "intent"),
    [
        ("STOPP", "stop"),
        ("stopp", "stop"),
        ("Stop!", "stop"),
        ("avslutt", "stop"),
        ("AVMELD.", "stop"),
        ("  avmeld  ", "stop"),
        ("stopp 🛑", "stop"),
        ("START", "start"),
        ("Starte", "start"),
        ("start 👍", "start"),
        ("HJELP", "help"),
        ("Help!", "help"),
        ("help?", "help"),
        ("hjelp!!! 😅", "help"),
    ],
)
def test_keywords(text: str, intent: str) -> None:
    assert keyword_intent(text) == intent
    assert read(text).intent == intent


@pytest.mark.parametrize(
    "text",
    [
        "Hjelp! Hvordan melder jeg fravær?",
        "stopp å sende meg meldinger",
        "help me",
        "start på nytt",
    ],
)
def test_keyword_only_when_it_is_the_whole_text(text: str) -> None:
    assert keyword_intent(text) is None
    assert read(text).intent == "message"


def test_keyword_helpers() -> None:
    assert is_stop("STOPP") and not is_stop("START")
    assert is_start("starte") and not is_start("stopp")
    assert is_help("hjelp") and not is_help("hjelp meg")


@pytest.mark.parametrize(
    "text",
    [
        "Hei! Når er foreldremøtet for 5B?",
        "Tusen takk for en fin juleavslutning 🎄",
        "Mormor henter Ola på SFO i dag",
        "Hei, kva tid byrjar skulen etter juleferien?",
        "Hello, could you tell me when the winter break starts?",
        "Hvordan melder jeg fravær på SFO?",
        "Ola har glemt gymtøyet hjemme, kan han låne?",
        "Ola skal på SFO i dag",
        "Aisha har astma og må ha med seg inhalatoren på turen i morgen. Kan dere passe på det?",
        "",
        "   ",
        "🎉🎉🎉",
    ],
)
def test_messages(text: str) -> None:
    result = read(text)
    assert result.intent == "message"
    assert result.absences == ()
    assert result.clarify == ()


@pytest.mark.parametrize(
    "text",
    [
        "Ola er syk i dag",
        "ola er syk",
        "Ola er borte i morgen",
        "Ola blir hjemme i dag",
        "Ola er ikke på skolen i dag",
        "Ola skal ikke på SFO i morgen",
        "Ola kommer ikke i dag",
        "Ola won't be at school tomorrow",
        "Ola is sick today",
        "Ola is absent tomorrow",
        "Ola er sjuk og blir heime",
        "Ola er vekke i morgon",
        "Ola går kl 12 i dag",
        "Ola kommer kl 10 i morgen",
        "Ola har fri på fredag",
        "Ola skal til tannlegen på fredag",
        "Ola er syk i dag. Kan dere sende leksene?",  # absence + question = absence
        "Hei! Ola er dessverre syk i dag 🤒 Mvh mamma",
        "Ola har feber",
    ],
)
def test_absences(text: str) -> None:
    assert read(text).intent == "absence"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("Ola er ikke syk likevel og kommer i dag 👍", "illness"),
        ("Ola er ikkje sjuk likevel, han kjem i dag", "illness"),
        ("Ola har ikke feber lenger, så han kommer i dag likevel", "illness"),
        ("Ola er frisk igjen og kommer i dag", "illness"),
        ("Ola is well again and will come today", "illness"),
        ("Ola is not sick anymore", "illness"),
        ("Tannlegetimen til Kari er flyttet, så hun er ikke borte i morgen likevel", "appointment"),
        ("Ola trenger ikke gå kl 12 i dag likevel, legetimen ble avlyst", "appointment"),
        ("Please cancel Ola's absence on Friday, the trip was cancelled", "other"),
        ("Se bort fra meldingen om Ola, han kommer i dag", "unspecified"),
        ("Ola kommer likevel i dag", "unspecified"),
        ("Sorry, my mistake - Ola is not sick, he will be at school", "illness"),
        ("Vi kansellerer fraværet for Ola i morgen", "unspecified"),
    ],
)
def test_withdrawn_absences(text: str, reason: str) -> None:
    result = read(text)
    assert result.intent == "absence_cancel"
    assert len(result.absences) == 1
    assert result.absences[0].reason == reason


def test_withdrawn_absence_keeps_its_times() -> None:
    assert spans("Ola trenger ikke gå kl 12 i dag likevel") == [
        ("Ola", "school", "2026-11-26", "2026-11-26", "12:00", None, "unspecified")
    ]


@pytest.mark.parametrize(
    "text",
    ["Ola kommer ikke likevel", "Ola blir hjemme likevel", "Ola er syk likevel"],
)
def test_after_all_that_confirms_an_absence(text: str) -> None:
    assert read(text).intent == "absence"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("Ola er syk", "illness"),
        ("Ola er dårlig", "illness"),
        ("Ola har omgangssyke", "illness"),
        ("Ola has the flu", "illness"),
        ("Ola er borte pga legetime", "appointment"),
        ("Ola skal til ortodontist i morgen", "appointment"),
        ("Ola has a dentist appointment tomorrow", "appointment"),
        ("Ola er borte i morgen pga begravelse", "other"),
        ("Ola er vekke måndag, vi skal i gravferd", "other"),
        ("Ola is away on Friday for a wedding", "other"),
        ("Ola går kl 15 i dag, han skal på svømming", "other"),
        ("Ola er borte i morgen", "unspecified"),
        ("Ola er ikke syk, men er borte i morgen pga bryllup", "other"),
        ("Ola er ikke syk, men blir hjemme pga begravelse", "other"),
        ("Ola tar antibiotika og blir hjemme", "illness"),
        ("Ola har time hos BUP i morgen", "appointment"),
        ("Vi feirer id på fredag, Ola er borte", "other"),
    ],
)
def test_reasons(text: str, reason: str) -> None:
    assert read(text).absences[0].reason == reason


@pytest.mark.parametrize(
    ("text", "units"),
    [
        ("Ola er syk i dag", "school+sfo"),
        ("Ola er hjemme fra skolen i dag", "school"),
        ("Ola er heime frå skulen i dag", "school"),
        ("Ola won't be at school today", "school"),
        ("Ola er ikke på SFO i dag", "sfo"),
        ("Ola er ikke på AKS i dag", "sfo"),
        ("Ola er ikke på aktivitetsskolen i dag", "sfo"),
        ("Ola er borte fra både skole og SFO", "school+sfo"),
        ("Ola er borte fra skole og SFO", "school+sfo"),
        ("Ola er borte begge deler", "school+sfo"),
    ],
)
def test_units(text: str, units: str) -> None:
    assert spans(text)[0][1] == units


def test_aks_must_be_a_word_of_its_own() -> None:
    kids = [*MAJA]
    assert spans("Maja er syk i dag, Aksel også", children=kids)[0][1] == "school+sfo"


def test_units_not_enrolled_are_dropped() -> None:
    assert spans("Barna er borte fra skole og SFO i dag") == [
        ("Ola", "school+sfo", "2026-11-26", "2026-11-26", None, None, "unspecified"),
        ("Kari", "school", "2026-11-26", "2026-11-26", None, None, "unspecified"),
    ]
    assert read("Sofie er ikke på SFO i morgen", children=SOFIE).clarify == ("unit",)
