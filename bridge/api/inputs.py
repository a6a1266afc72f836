"""Reading what a caller sends: the JSON body, query parameters, cursors. Bad input is a Problem."""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Any

from aiohttp import web

from bridge.api.problems import Problem, bad_param

MAX_BODY = 64 * 1024
DEFAULT_LIMIT = 100
MAX_LIMIT = 500
ID_MAX = 64

_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_TIME = re.compile(r"([01]\d|2[0-3]):[0-5]\d")
_DATETIME = re.compile(
    r"(\d{4}-\d{2}-\d{2})[Tt ](\d{2}:\d{2}(?::\d{2}(?:\.\d{1,6})?)?)(Z|z|[+-]\d{2}:\d{2})?"
)


def storable(value: str) -> bool:
    """Text a database can hold: no NUL character, no lone surrogate."""
    if "\x00" in value:
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def path_id(request: web.Request, name: str = "id") -> str | None:
    """A path id that could exist; None (so: 404) for one that cannot."""
    value = request.match_info.get(name, "")
    if not value or len(value) > ID_MAX or not storable(value):
        return None
    return value


# --- the body -------------------------------------------------------------------------


async def read_json(request: web.Request) -> Any:
    """The body as JSON: 413 over 64 KB, 415 for another media type, 400 when it is not JSON."""
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise Problem(413, f"the body is larger than {MAX_BODY} bytes")
    if "Content-Type" in request.headers:
        mime = request.content_type.lower()
        if mime != "application/json" and not (
            mime.startswith("application/") and mime.endswith("+json")
        ):
            raise Problem(415, "the body must be application/json")
    body = bytearray()
    while chunk := await request.content.read(16384):
        body += chunk
        if len(body) > MAX_BODY:
            raise Problem(413, f"the body is larger than {MAX_BODY} bytes")
    try:
        return json.loads(bytes(body).decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise Problem(400, "the body is not valid JSON (UTF-8)") from None


class Fields:
    """Typed access to a JSON object's members; every mistake is collected, then one 422."""

    def __init__(self, data: Any, allowed: Iterable[str]) -> None:
        self.errors: list[dict[str, str]] = []
        if not isinstance(data, dict):
            raise Problem(
                422,
                "the body must be a JSON object",
                errors=[{"field": "", "message": "must be a JSON object"}],
            )
        self.data: dict[str, Any] = data
        known = set(allowed)
        for name in data:
            if name not in known:
                self.fail(str(name), "unknown member")

    def fail(self, field: str, message: str) -> None:
        self.errors.append({"field": field, "message": message})

    def done(self) -> None:
        if self.errors:
            detail = "; ".join(f"{e['field']}: {e['message']}" for e in self.errors)
            raise Problem(422, detail, errors=self.errors)

    def string(
        self,
        name: str,
        *,
        required: bool = False,
        max_length: int = ID_MAX,
        nullable: bool = False,
        blank_ok: bool = False,
    ) -> str | None:
        if name not in self.data:
            if required:
                self.fail(name, "is required")
            return None
        value = self.data[name]
        if value is None and nullable:
            return None
        if not isinstance(value, str):
            self.fail(name, "must be a string")
            return None
        if not storable(value):
            self.fail(name, "contains a character that cannot be stored")
            return None
        if len(value) > max_length:
            self.fail(name, f"is longer than {max_length} characters")
            return None
        if not value.strip() and not blank_ok:
            self.fail(name, "must not be empty")
            return None
        return value

    def strings(self, name: str, *, max_items: int) -> list[str]:
        if name not in self.data:
            return []
        value = self.data[name]
        if not isinstance(value, list):
            self.fail(name, "must be an array of strings")
            return []
        if len(value) > max_items:
            self.fail(name, f"has more than {max_items} items")
            return []
        out: list[str] = []
        for i, item in enumerate(value):
            if not isinstance(item, str) or not item or len(item) > ID_MAX or not storable(item):
                self.fail(f"{name}[{i}]", f"must be an id of 1 to {ID_MAX} characters")
                continue
            out.append(item)
        return list(dict.fromkeys(out))

    def boolean(self, name: str, default: bool = False) -> bool:
        if name not in self.data:
            return default
        value = self.data[name]
        if not isinstance(value, bool):
            self.fail(name, "must be true or false")
            return default
        return value

    def date(self, name: str) -> date | None:
        value = self.string(name, required=True, max_length=10)
        if value is None:
            return None
        if not _DATE.fullmatch(value):
            self.fail(name, "must be a date, YYYY-MM-DD")
            return None
        try:
            return date.fromisoformat(value)
        except ValueError:
            self.fail(name, "is not a real date")
            return None

    def clock(self, name: str) -> str | None:
        value = self.string(name, max_length=5, nullable=True)
        if value is None:
            return None
        if not _TIME.fullmatch(value):
            self.fail(name, "must be a time of day, HH:MM")
            return None
        return value

    def choice(self, name: str, values: Iterable[str]) -> str | None:
        options = list(values)
        value = self.string(name, required=True, max_length=32)
        if value is not None and value not in options:
            self.fail(name, f"must be one of {', '.join(options)}")
            return None
        return value


# --- query parameters ----------------------------------------------------------------


def only_params(request: web.Request, *allowed: str) -> None:
    """400 for a query parameter the endpoint does not take (a typo must not pass unseen)."""
    unknown = sorted({name for name in request.query if name not in allowed})
    if unknown:
        shown = ", ".join(n if storable(n) and len(n) <= ID_MAX else "?" for n in unknown)
        raise Problem(
            400,
            f"unknown query parameter: {shown}",
            errors=[{"field": "?", "message": "unknown query parameter"}],
        )


def query(request: web.Request, name: str) -> str | None:
    value = request.query.get(name)
    if value is None:
        return None
    if not storable(value):
        raise bad_param(name, "contains a character that cannot be used")
    return value


def date_param(request: web.Request, name: str, default: date) -> date:
    value = query(request, name)
    if value is None:
        return default
    if not _DATE.fullmatch(value):
        raise bad_param(name, "must be a date, YYYY-MM-DD")
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise bad_param(name, "is not a real date") from None


def datetime_param(request: web.Request, name: str, tz: tzinfo) -> datetime | None:
    """An ISO 8601 date-time (no offset: local time), or a date (its local midnight)."""
    value = query(request, name)
    if value is None:
        return None
    # A "+" in an unencoded query string arrives as a space: "T07:00 01:00" is "+01:00".
    value = value.strip().replace(" ", "+") if "T" in value.upper() else value.strip()
    try:
        if _DATE.fullmatch(value):
            parsed = datetime.combine(date.fromisoformat(value), time())
        elif match := _DATETIME.fullmatch(value):
            day, clock, offset = match.groups()
            if offset in ("Z", "z"):
                offset = "+00:00"
            parsed = datetime.fromisoformat(f"{day}T{clock}{offset or ''}")
        else:
            raise ValueError(value)
    except ValueError:
        raise bad_param(name, "must be an ISO 8601 date-time or date") from None
    aware = parsed if parsed.tzinfo else parsed.replace(tzinfo=tz)
    try:
        return aware.astimezone(UTC)
    except OverflowError:  # within hours of year 1 or 9999: as early or as late as can be
        if aware.year == 1:
            return datetime.min.replace(tzinfo=UTC) + timedelta(days=1)
        return datetime.max.replace(tzinfo=UTC) - timedelta(days=1)


def limit_param(request: web.Request) -> int:
    value = query(request, "limit")
    if value is None:
        return DEFAULT_LIMIT
    if not value.isascii() or not value.isdigit() or len(value) > 6:
        raise bad_param("limit", f"must be a whole number from 1 to {MAX_LIMIT}")
    limit = int(value)
    if not 1 <= limit <= MAX_LIMIT:
        raise bad_param("limit", f"must be a whole number from 1 to {MAX_LIMIT}")
    return limit


def bool_param(request: web.Request, name: str) -> bool:
    value = query(request, name)
    if value is None:
        return False
    if value.lower() in ("true", "1", "yes"):
        return True
    if value.lower() in ("false", "0", "no"):
        return False
    raise bad_param(name, "must be true or false")


def choice_param(request: web.Request, name: str, values: Iterable[str]) -> str | None:
    value = query(request, name)
    if value is None:
        return None
    options = list(values)
    if value not in options:
        raise bad_param(name, f"must be one of {', '.join(options)}")
    return value


# --- cursors: opaque to the caller, the last id of the page and which list it belongs to ---


def encode_cursor(kind: str, last_id: str) -> str:
    raw = json.dumps({"k": kind, "a": last_id}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def cursor_param(request: web.Request, kind: str) -> str | None:
    value = query(request, "cursor")
    if value is None or value == "":
        return None
    try:
        if len(value) > 512:
            raise ValueError("too long")
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
        data: Mapping[str, Any] = json.loads(raw.decode("utf-8"))
        after = data["a"]
        if data["k"] != kind or not isinstance(after, str) or not storable(after):
            raise ValueError("not this list's cursor")
    except (ValueError, KeyError, TypeError, binascii.Error, UnicodeDecodeError, RecursionError):
        raise bad_param("cursor", "is not a cursor this list gave out") from None
    return after
