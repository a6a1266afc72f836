"""Property: understand() never raises on a well-formed request and always answers in shape."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.understand import understand

WORDS = [
    "Ola",
    "Kari",
    "er",
    "syk",
    "sjuk",
    "i dag",
    "i morgen",
    "fra",
    "til",
    "kl",
    "10",
    "12.30",
    "31.11",
    "28/11",
    "mandag",
    "neste",
    "fredag",
    "resten av uka",
    "3 dager",
    "SFO",
    "skolen",
    "begge",
    "barna",
    "likevel",
    "ikke",
    "kommer",
    "går",
    "feber",
    "NAV",
    "03041661215",
    "mobbet",
    "?",
    ".",
    "!",
    "🤒",
    "hele",
    "uke 50",
    "both",
    "the kids",
    "pm",
    "-",
    "og",
]
UNITS = st.lists(st.sampled_from(["school", "sfo"]), unique=True)
CHILD = st.fixed_dictionaries(
    {"name": st.text(min_size=1, max_size=20).filter(str.strip), "units": UNITS}
)
TEXT = st.one_of(
    st.text(max_size=300),
    st.lists(st.sampled_from(WORDS), max_size=25).map(" ".join),
)
WHEN = st.datetimes(
    min_value=datetime(2000, 1, 2), max_value=datetime(2099, 12, 30), timezones=st.just(UTC)
)


@settings(max_examples=400, deadline=None)
@given(text=TEXT, when=WHEN, children=st.lists(CHILD, max_size=4), id_=st.integers())
def test_understand_never_raises_and_keeps_the_shape(text, when, children, id_) -> None:
    out = understand(
        {"id": id_, "text": text, "received_at": when.isoformat(), "children": children}
    )
    assert set(out) == {"id", "intent", "absences", "clarify", "sensitive", "redacted"}
    assert out["id"] == id_
    assert out["intent"] in {"absence", "absence_cancel", "message", "stop", "start", "help"}
    assert set(out["clarify"]) <= {"child", "date", "unit"}
    assert out["sensitive"] == sorted(set(out["sensitive"]))
    assert isinstance(out["redacted"], str)
    if not out["sensitive"]:
        assert out["redacted"] == text
    if out["intent"] not in ("absence", "absence_cancel") or out["clarify"]:
        assert out["absences"] == []
    names = {c["name"].strip() for c in children}
    for a in out["absences"]:
        assert a["child"] in names
        assert a["units"] and set(a["units"]) <= {"school", "sfo"}
        assert a["from"] <= a["to"]
        assert a["reason"] in {"illness", "appointment", "other", "unspecified"}
        if a["from_time"] or a["to_time"]:
            assert a["from"] == a["to"]
