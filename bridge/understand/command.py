"""`skolebro understand`: JSON lines in, one JSON line out per input line (SPEC 2, 6)."""

from __future__ import annotations

import io
import json
import sys
from typing import Any, TextIO

from .request import InvalidRequest, understand


def answer(raw: str, number: int) -> dict[str, Any]:
    """The output object for input line `number` (1-based): a result or an error."""
    try:
        request = json.loads(raw)
    except json.JSONDecodeError as e:
        return {"id": None, "error": f"line {number}: invalid JSON: {e.msg} at column {e.colno}"}
    except RecursionError:
        return {"id": None, "error": f"line {number}: invalid JSON: nested too deeply"}
    if not isinstance(request, dict):
        return {"id": None, "error": f"line {number}: expected a JSON object"}
    req_id = request.get("id")
    try:
        return understand(request)
    except InvalidRequest as e:
        return {"id": req_id, "error": f"line {number}: {e}"}
    except Exception as e:  # one bad line must not stop the stream
        return {"id": req_id, "error": f"line {number}: internal error: {type(e).__name__}"}


def encode(result: dict[str, Any], number: int) -> str:
    """One output line; escapes what UTF-8 cannot carry (lone surrogates from \\ud800)."""
    try:
        out = json.dumps(result, ensure_ascii=False, allow_nan=False)
        out.encode("utf-8")
        return out
    except UnicodeEncodeError:
        return json.dumps(result, ensure_ascii=True, allow_nan=False)
    except (TypeError, ValueError):
        return json.dumps({"id": None, "error": f"line {number}: id is not valid JSON"})


def run(stdin: TextIO, stdout: TextIO) -> int:
    """Answer every non-blank input line in order; exit 0 unless stdin cannot be read."""
    source = _utf8_reader(stdin)
    sink = _utf8_writer(stdout)
    number = 0
    try:
        for raw in source:
            number += 1
            if not raw.strip():
                continue
            sink.write(encode(answer(raw, number), number) + "\n")
            sink.flush()
    except OSError as e:
        print(f"skolebro understand: cannot read stdin: {e}", file=sys.stderr)
        return 1
    return 0


def _utf8_reader(stream: TextIO) -> TextIO:
    """The stream read as UTF-8 whatever the locale; bytes that are not UTF-8 become U+FFFD."""
    buffer = getattr(stream, "buffer", None)
    if buffer is None:
        return stream
    return io.TextIOWrapper(buffer, encoding="utf-8", errors="replace")


def _utf8_writer(stream: TextIO) -> TextIO:
    """The stream written as UTF-8 whatever the locale."""
    encoding = (getattr(stream, "encoding", None) or "").lower().replace("-", "")
    buffer = getattr(stream, "buffer", None)
    if buffer is None or encoding == "utf8":
        return stream
    return io.TextIOWrapper(buffer, encoding="utf-8", errors="strict", write_through=True)
