"""SMS segment counting: GSM-7 (with Norwegian letters) against UCS-2."""

from __future__ import annotations

import pytest

from bridge.sms_text import sms_length


@pytest.mark.parametrize(
    ("text", "encoding", "units", "segments"),
    [
        ("", "GSM-7", 0, 1),
        ("Ola er syk i dag", "GSM-7", 16, 1),
        ("Blåbærsyltetøy på Ærøy", "GSM-7", 22, 1),  # æøå are GSM-7
        ("a" * 160, "GSM-7", 160, 1),
        ("a" * 161, "GSM-7", 161, 2),
        ("a" * 306, "GSM-7", 306, 2),
        ("a" * 307, "GSM-7", 307, 3),
        ("€" * 80, "GSM-7", 160, 1),  # extension characters take two septets
        ("€" * 81, "GSM-7", 162, 2),
        ("Hei 😊", "UCS-2", 6, 1),  # an emoji is two UTF-16 units
        ("ä" * 69 + "ł", "UCS-2", 70, 1),
        ("ł" * 71, "UCS-2", 71, 2),
        ("ł" * 135, "UCS-2", 135, 3),
    ],
)
def test_segments(text: str, encoding: str, units: int, segments: int) -> None:
    got = sms_length(text)
    assert (got.encoding, got.units, got.segments) == (encoding, units, segments)
