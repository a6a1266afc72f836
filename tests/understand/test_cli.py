"""`skolebro understand` as a process: every input line gets one valid output line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
AT = "2026-11-26T07:12:00+01:00"
KIDS = [{"name": "Ola Nordmann", "units": ["school", "sfo"]}]


def line(id_: str, text: str, **extra: object) -> str:
    obj: dict[str, object] = {"id": id_, "text": text, "received_at": AT, "children": KIDS}
    obj.update(extra)
    return json.dumps(obj, ensure_ascii=False)


def run_cli(stdin: bytes) -> tuple[int, list[dict]]:
    proc = subprocess.run(
        [sys.executable, "-m", "bridge.cli", "understand"],
        input=stdin,
        capture_output=True,
        cwd=ROOT,
        timeout=120,
        check=False,
    )
    out = proc.stdout.decode("utf-8")
    return proc.returncode, [json.loads(x) for x in out.splitlines()]


def test_bad_input_lines_each_get_an_answer_and_the_stream_goes_on() -> None:
    lines = [
        line("empty", ""),
        line("long", "Ola er syk i dag. " * 556),  # about 10,000 characters
        line("control", "Ola\x00 er\x07 syk\x1b[31m i dag\r"),
        line("rtl", "\u202eOla er syk i dag\u202c \u200f"),
        line("emoji", "🤒🤒🤒"),
        line("badtime", "Ola er syk", received_at="yesterday"),
        "{not json",
        line("nochildren", "Ola er syk", children=None),
        "[1, 2, 3]",
        json.dumps(
            {
                "id": "badunit",
                "text": "x",
                "received_at": AT,
                "children": [{"name": "Ola", "units": ["kindergarten"]}],
            }
        ),
        "",
        line("last", "Ola er syk i dag"),
    ]
    code, out = run_cli(("\n".join(lines) + "\n").encode("utf-8"))
    assert code == 0
    assert len(out) == len(lines) - 1  # the blank line is skipped
    by_id = {o.get("id"): o for o in out if o.get("id") is not None}
    assert by_id["empty"]["intent"] == "message"
    assert by_id["long"]["intent"] == "absence"
    assert by_id["control"]["intent"] == "absence"
    assert by_id["rtl"]["intent"] == "absence"
    assert by_id["emoji"]["intent"] == "message"
    assert by_id["emoji"]["redacted"] == "🤒🤒🤒"
    assert by_id["badtime"]["error"].startswith("line 6: received_at")
    assert by_id["nochildren"]["error"].startswith("line 8: children")
    assert by_id["badunit"]["error"].startswith("line 10: children[0].units")
    assert by_id["last"]["absences"][0]["from"] == "2026-11-26"
    errors = [o for o in out if o.get("id") is None]
    assert [e["error"].split(":")[0] for e in errors] == ["line 7", "line 9"]
    for o in out:
        assert set(o) in (
            {"id", "error"},
            {"id", "intent", "absences", "clarify", "sensitive", "redacted"},
        )


def test_output_is_in_input_order_and_utf8() -> None:
    lines = [line(f"n{i}", f"Ola er syk i dag nr {i} – blåbær") for i in range(50)]
    code, out = run_cli(("\n".join(lines) + "\n").encode("utf-8"))
    assert code == 0
    assert [o["id"] for o in out] == [f"n{i}" for i in range(50)]
    assert out[0]["redacted"].endswith("– blåbær")


def test_invalid_utf8_and_lone_surrogates_still_answer() -> None:
    raw = line("bytes", "Ola er syk").encode("utf-8").replace(b"syk", b"syk\xff\xfe")
    kids = json.dumps(KIDS)
    surrogate = (
        f'{{"id": "sur", "text": "\\ud800 Ola er syk", "received_at": "{AT}", "children": {kids}}}'
    )
    code, out = run_cli(raw + b"\n" + surrogate.encode() + b"\n")
    assert code == 0
    assert [o["id"] for o in out] == ["bytes", "sur"]
    assert out[1]["intent"] == "absence"


def test_empty_stdin() -> None:
    assert run_cli(b"") == (0, [])
