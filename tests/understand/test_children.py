"""Which children a message is about (SPEC 6, children)."""

from __future__ import annotations

import pytest

from bridge.understand import Child

from .util import MAJA, OLA_KARI, read, spans

THREE = [
    Child("William Olsen", ("school", "sfo")),
    Child("Olivia Olsen", ("school", "sfo")),
    Child("Henrik Olsen", ("school",)),
]


def names(text: str, children: list[Child] | None = None) -> list[str]:
    return [s[0] for s in spans(text, children=children)]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Ola er syk", ["Ola"]),
        ("ola er syk", ["Ola"]),
        ("OLA ER SYK", ["Ola"]),
        ("Ola Nordmann er syk", ["Ola"]),
        ("Olas mage er dårlig", ["Ola"]),
        ("Ola's stomach hurts, he stays home", ["Ola"]),
        ("Kari er syk", ["Kari"]),
        ("Karii er syk", ["Kari"]),  # one letter added
        ("Kar er syk", ["Kari"]),  # one letter dropped
        ("Kary er syk", ["Kari"]),  # one letter changed
        ("Ola og Kari er syke", ["Ola", "Kari"]),
        ("Barna er syke", ["Ola", "Kari"]),
        ("Ungane er sjuke", ["Ola", "Kari"]),
        ("Begge er syke", ["Ola", "Kari"]),
        ("Both kids are sick", ["Ola", "Kari"]),
        ("The kids are sick", ["Ola", "Kari"]),
        ("Alle er syke i dag", ["Ola", "Kari"]),
        ("Hei, Ola er syk. Mvh Per", ["Ola"]),
        ("Hi, Kari is sick today. Amina", ["Kari"]),
    ],
)
def test_matching(text: str, expected: list[str]) -> None:
    assert names(text) == expected


def test_accents_are_ignored() -> None:
    kids = [Child("Linnéa Haugen", ("school", "sfo"))]
    assert names("Linnea er syk", kids) == ["Linnéa"]
    kids = [Child("Bjørn Aas", ("school",))]
    assert names("Bjorn er syk", kids) == ["Bjørn"]


def test_short_names_get_no_typo() -> None:
    # "Ola" has three letters: "Oal" is an unknown name, not Ola.
    result = read("Oal er syk i dag")
    assert result.clarify == ("child",)


def test_typo_must_match_exactly_one_child() -> None:
    kids = [Child("Nora Hansen", ("school",)), Child("Nova Hansen", ("school",))]
    assert read("Nola er syk", children=kids).clarify == ("child",)


def test_begge_deler_is_units_not_children() -> None:
    assert spans("Ola er borte begge deler i dag") == [
        ("Ola", "school+sfo", "2026-11-26", "2026-11-26", None, None, "unspecified")
    ]


def test_one_child_and_no_name_is_that_child() -> None:
    assert names("Er syk i dag, blir hjemme", MAJA) == ["Maja"]


@pytest.mark.parametrize(
    "text",
    [
        "Hei, en av ungene er syk i dag",
        "Den minste er syk i dag",
        "One of the kids has a fever",
        "syk i dag",
    ],
)
def test_several_children_and_no_name_asks_which(text: str) -> None:
    result = read(text)
    assert result.intent == "absence"
    assert result.absences == ()
    assert result.clarify == ("child",)


def test_unknown_name_asks_which_even_with_one_child() -> None:
    result = read("Eirin er sjuk i dag", children=[Child("Tobias Eide", ("school",))])
    assert result.clarify == ("child",)


def test_three_children() -> None:
    assert names("Alle tre er syke i dag", THREE) == ["William", "Olivia", "Henrik"]
    assert read("Hei, den minste er syk i dag", children=THREE).clarify == ("child",)


def test_sibling_who_comes_as_usual_is_not_absent() -> None:
    assert names("Ola er syk i dag, men Kari kommer som vanlig") == ["Ola"]


def test_sibling_with_also_shares_the_absence() -> None:
    assert names("Ola er syk i dag. Kari også.") == ["Ola", "Kari"]


def test_each_child_keeps_its_own_details() -> None:
    assert spans("Ola er syk i dag og Kari går kl 12") == [
        ("Ola", "school+sfo", "2026-11-26", "2026-11-26", None, None, "illness"),
        ("Kari", "school", "2026-11-26", "2026-11-26", "12:00", None, "unspecified"),
    ]


def test_each_child_gets_its_own_enrolled_units() -> None:
    assert [s[1] for s in spans("Barna er syke")] == ["school+sfo", "school"]


def test_no_children_at_all() -> None:
    assert read("Ola er syk", children=[]).clarify == ("child",)


def test_acronyms_are_not_names() -> None:
    assert names("NAV sier Ola er syk", OLA_KARI) == ["Ola"]
