"""One place per rule for a roster field: phone numbers, e-mail, language, channels, yes/no.

Each function returns the stored form or raises `FieldError` with the reason a person reads.
"""

from __future__ import annotations

import re
from datetime import date
from functools import lru_cache

import phonenumbers

LANGUAGES = ("nb", "nn", "en")
CHANNELS = ("sms", "telegram", "email")
NOTIFY = ("each", "digest", "both")
UNIT_TYPES = ("school", "sfo")
MAX_ID = 64  # the id columns are String(64)

_YES = frozenset({"yes", "y", "ja", "j", "true", "1"})
_NO = frozenset({"", "no", "n", "nei", "false", "0"})

# Deliberately simple: one @, a dotted domain, none of the characters that make an address
# need quoting or carry a display name (which is what `email.utils.parseaddr` would accept
# and we would not want stored). Letters outside ASCII are allowed: Norwegian domains and
# mailboxes can hold æ, ø and å.
_LOCAL = r"[^\s@\"(),:;<>\[\]\\]+"
_LABEL = r"[^\W_](?:[\w-]*[^\W_])?"
_EMAIL = re.compile(rf"{_LOCAL}@{_LABEL}(?:\.{_LABEL})+")


class FieldError(ValueError):
    """A field that cannot be stored; str() is the reason."""


def check_id(value: str, what: str) -> str:
    if len(value) > MAX_ID:
        raise FieldError(f"{what} is longer than {MAX_ID} characters")
    return value


# `912 34 567`, `+47 91234567`, `0047 912-34-567`: most of a Norwegian roster. These skip
# `phonenumbers.parse` (three quarters of the cost) but are still checked by `is_valid_number`.
_NORWEGIAN = re.compile(r"(?:\+47|0047)?([1-9]\d{7})")
_SEPARATORS = str.maketrans("", "", " -./()\u00a0")


@lru_cache(maxsize=200_000)
def _e164(raw: str) -> str | None:
    # Cached: shared family numbers repeat, and parsing is the slowest step of an import.
    plain = _NORWEGIAN.fullmatch(raw.translate(_SEPARATORS))
    try:
        if plain:
            number = phonenumbers.PhoneNumber(country_code=47, national_number=int(plain[1]))
        else:
            number = phonenumbers.parse(raw, "NO")
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def phone(raw: str, what: str = "mobile") -> str | None:
    """E.164, Norway by default: `912 34 567`, `+47 912 34 567`, `0047 91234567` agree."""
    if not raw:
        return None
    e164 = _e164(raw)
    if e164 is None:
        raise FieldError(f"{what} '{raw}' is not a valid phone number")
    return e164


def email(raw: str, what: str = "email") -> str | None:
    """Lower-cased: addresses are looked up to find the sender of inbound mail."""
    if not raw:
        return None
    if not _EMAIL.fullmatch(raw) or ".." in raw:
        raise FieldError(f"{what} '{raw}' is not a valid e-mail address")
    local = raw.rsplit("@", 1)[0]
    if local.startswith(".") or local.endswith("."):
        raise FieldError(f"{what} '{raw}' is not a valid e-mail address")
    return raw.lower()


def language(raw: str, *, default: str | None = "nb") -> str | None:
    value = raw.strip().lower()
    if not value:
        return default
    if value not in LANGUAGES:
        raise FieldError(f"language '{raw}' is not nb, nn or en")
    return value


def channels(raw: list[str]) -> list[str]:
    out: list[str] = []
    for entry in raw:
        value = entry.lower()
        if value not in CHANNELS:
            raise FieldError(f"channel '{entry}' is not sms, telegram or email")
        if value not in out:
            out.append(value)
    return out


def notify(raw: str) -> str:
    value = raw.lower()
    if not value:
        return "both"  # a staff member who chose nothing hears of everything
    if value not in NOTIFY:
        raise FieldError(f"notify '{raw}' is not each, digest or both")
    return value


def unit_type(raw: str) -> str:
    value = raw.lower()
    if not value:
        raise FieldError("missing unit_type")
    if value not in UNIT_TYPES:
        raise FieldError(f"unit_type '{raw}' is not school or sfo")
    return value


def yes_no(raw: str, what: str) -> bool:
    value = raw.strip().lower()
    if value in _YES:
        return True
    if value in _NO:
        return False
    raise FieldError(f"{what} '{raw}' is not yes or no")


def iso_date(raw: str, what: str) -> date:
    if not raw:
        raise FieldError(f"missing {what}")
    try:
        return date.fromisoformat(raw)
    except ValueError:
        raise FieldError(f"{what} '{raw}' is not a date (YYYY-MM-DD)") from None
