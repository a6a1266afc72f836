"""Sensitive categories, national identity numbers and redaction (SPEC 6)."""

from __future__ import annotations

import pytest

from bridge.understand import is_national_id, redact

from .util import read


@pytest.mark.parametrize(
    "number",
    [
        "03041661215",  # fødselsnummer (dev corpus)
        "030416 61215",  # one space after the six date digits
        "43041661209",  # D number: day + 40
        "15057545612",
        "24129987614",
        "61011034518",  # D number
    ],
)
def test_valid_national_ids(number: str) -> None:
    assert is_national_id(number)
    text, categories = redact(f"Nummeret er {number}, takk.")
    assert categories == ["id_number"]
    assert text == "Nummeret er [fjernet], takk."


@pytest.mark.parametrize(
    "number",
    ["03041661216", "03041661225", "12345678901", "00000000001", "4304166120", "030416  61215"],
)
def test_invalid_national_ids_are_not_ids(number: str) -> None:
    assert not is_national_id(number)
    assert "id_number" not in redact(f"Nummeret er {number}.")[1]


def test_id_inside_a_longer_number_is_not_an_id() -> None:
    assert redact("Ordrenummer 1030416612150")[1] == []


def test_phone_numbers_are_not_ids() -> None:
    assert redact("Ring meg på 91234567 eller +47 912 34 567")[1] == []


@pytest.mark.parametrize(
    ("text", "categories", "gone"),
    [
        ("Ola har feber og omgangssyke", ["health"], ["feber", "omgangssyke"]),
        ("Ola har vondt i magen", ["health"], ["magen"]),
        ("Ingrid har feber og kastar opp", ["health"], ["kastar opp"]),
        ("Noah has ADHD and takes medication", ["health"], ["adhd", "medication"]),
        ("Ola skal til psykolog på BUP", ["health"], ["psykolog", "bup"]),
        ("Kari blir mobbet i friminuttene", ["bullying"], ["mobbet"]),
        ("Ola is being bullied", ["bullying"], ["bullied"]),
        ("Vi har dårlig råd og får hjelp fra NAV", ["finances"], ["dårlig råd", "nav"]),
        ("We can't afford the trip", ["finances"], ["afford"]),
        ("Barnevernet vil ha et møte", ["child_welfare"], ["barnevernet"]),
        ("Ola bor i fosterhjem", ["child_welfare"], ["fosterhjem"]),
        ("Vi er muslimer og feirer id", ["religion"], ["muslimer"]),
        ("Ola faster under ramadan", ["religion"], ["ramadan"]),
        ("Kari har astma og er mobbet", ["bullying", "health"], ["astma", "mobbet"]),
    ],
)
def test_categories_and_redaction(text: str, categories: list[str], gone: list[str]) -> None:
    redacted, found = redact(text)
    assert found == categories
    for word in gone:
        assert word not in redacted.lower()
    assert "[fjernet]" in redacted


@pytest.mark.parametrize(
    "text",
    [
        "Ola er syk",
        "Ingrid er sjuk i dag",
        "Ola er dårlig",
        "Ola er ikke i form",
        "Aisha is sick today",
        "Maja is unwell",
        "Ola skal til legen",
        "Ola har legetime",
        "Kari skal til tannlegen",
        "Aisha skal til helsesøster",
        "Ola skal til ortodontist",
        "Yusuf has a doctor appointment",
        "Ola is at the dentist",
    ],
)
def test_bare_illness_and_general_appointments_are_not_sensitive(text: str) -> None:
    assert redact(text) == (text, [])


def test_redaction_keeps_everything_else_unchanged() -> None:
    text = "Hei!  Ola har FEBER 🤒, men\tkommer kl 10.\nMvh Per"
    redacted, _ = redact(text)
    assert redacted == "Hei!  Ola har [fjernet] 🤒, men\tkommer kl 10.\nMvh Per"


def test_interpretation_carries_sorted_categories() -> None:
    result = read("Kari er mobbet og har vondt i magen, hun blir hjemme i dag")
    assert result.sensitive == ("bullying", "health")
    assert result.intent == "absence"
    assert result.absences[0].reason == "illness"
