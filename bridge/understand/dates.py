"""Date and time expressions in nb, nn and en, and how they resolve (SPEC 6, dates).

`scan` finds the expressions in normalized text; `resolve_dates` turns the ones that
concern an absence into an inclusive date range relative to the day received.
"""

from __future__ import annotations

import re
from calendar import monthrange
from dataclasses import dataclass
from datetime import date, time, timedelta
from functools import lru_cache

from .calendar import SchoolDayRule, add_school_days, next_school_day

WEEKDAYS: dict[str, int] = {
    "mandag": 0,
    "måndag": 0,
    "monday": 0,
    "tirsdag": 1,
    "tysdag": 1,
    "tuesday": 1,
    "onsdag": 2,
    "wednesday": 2,
    "torsdag": 3,
    "thursday": 3,
    "fredag": 4,
    "friday": 4,
    "lørdag": 5,
    "laurdag": 5,
    "saturday": 5,
    "søndag": 6,
    "sundag": 6,
    "sunday": 6,
}

MONTHS: dict[str, int] = {
    "januar": 1,
    "january": 1,
    "jan": 1,
    "februar": 2,
    "february": 2,
    "feb": 2,
    "mars": 3,
    "march": 3,
    "mar": 3,
    "april": 4,
    "apr": 4,
    "mai": 5,
    "may": 5,
    "juni": 6,
    "june": 6,
    "jun": 6,
    "juli": 7,
    "july": 7,
    "jul": 7,
    "august": 8,
    "aug": 8,
    "september": 9,
    "sept": 9,
    "sep": 9,
    "oktober": 10,
    "october": 10,
    "okt": 10,
    "oct": 10,
    "november": 11,
    "nov": 11,
    "desember": 12,
    "december": 12,
    "des": 12,
    "dec": 12,
}

NUMBER_WORDS: dict[str, int] = {
    "en": 1,
    "ett": 1,
    "ei": 1,
    "ein": 1,
    "eitt": 1,
    "one": 1,
    "a": 1,
    "an": 1,
    "to": 2,
    "two": 2,
    "tre": 3,
    "three": 3,
    "fire": 4,
    "four": 4,
    "fem": 5,
    "five": 5,
    "seks": 6,
    "six": 6,
    "sju": 7,
    "syv": 7,
    "seven": 7,
    "åtte": 8,
    "eight": 8,
    "ni": 9,
    "nine": 9,
    "ti": 10,
    "ten": 10,
    "et par": 2,
    "ett par": 2,
    "eit par": 2,
    "a couple of": 2,
    "a couple": 2,
    "couple of": 2,
}


def _alt(words: list[str]) -> str:
    return "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))


_MONTH = r"(?:" + _alt(list(MONTHS)) + r")"
_WEEKDAY = r"(?:" + _alt(list(WEEKDAYS)) + r")"
_NUMWORD = r"(?:" + _alt(list(NUMBER_WORDS)) + r")"
_WEEK = r"(?:uka|uken|uke|veka|veke|week)"
_AMPM = r"(?:a\.m\.|p\.m\.|am|pm)"
_B = r"(?<![\w])"
_E = r"(?![\w])"

_REL_WORDS: list[tuple[str, int]] = [
    (r"(?:the\s+)?day\s+after\s+tomorrow|i\s?overmorgen|i\s?overmorgon|overimorgen", 2),
    (r"i\s?forgårs|the\s+day\s+before\s+yesterday", -2),
    (r"i\s?morgen|i\s?morgon|i\s?morra|i\s?mårra|i\s?mårå|i\s?morn|tomorrow|tomorow|tmrw", 1),
    (r"i\s?går|i\s?gær|yesterday|yday", -1),
    (
        r"i\s?dag|today|tonight|this\s+morning|this\s+afternoon|i\s+morges|i\s+kveld"
        r"|i\s+ettermiddag|i\s+formiddag",
        0,
    ),
]

# Every expression, as named alternatives; where two start at the same place, the
# earlier one in this list wins.
_PARTS: list[str] = [
    # Periods of a week.
    _B + r"(?P<rest>(?:for\s+)?(?:the\s+)?rest\s+of\s+(?:the|this)\s+week"
    r"|resten\s+av\s+(?:denne\s+)?" + _WEEK + r"|ut\s+" + _WEEK + r")" + _E,
    _B + r"(?P<nextweek>(?:hele\s+|heile\s+|all\s+(?:of\s+)?|the\s+whole\s+|whole\s+)?"
    r"(?:neste|next|kommende|komande|coming)\s+" + _WEEK + r")" + _E,
    _B + r"(?P<thisweek>(?:hele|heile|denne|this|all|whole|the\s+whole|hele\s+denne"
    r"|heile\s+denne|all\s+this|this\s+whole|for\s+the\s+whole)\s+" + _WEEK + r")" + _E,
    _B + r"(?P<weekno>(?:uke|veke|week|uka|veka)\s*(?P<weekno_n>\d{1,2}))(?![\d.:/])",
    # Dates.
    r"(?<![\d.])(?P<iso>(?P<iso_y>\d{4})-(?P<iso_m>\d{1,2})-(?P<iso_d>\d{1,2}))(?!\d)",
    r"(?<![\d.:])(?P<dmr>(?P<dmr_a>\d{1,2})\.?\s*(?:-|til|og|to|and|&)\s*"
    r"(?P<dmr_b>\d{1,2})(?:\.|st|nd|rd|th)?\s*(?:of\s+)?(?P<dmr_m>" + _MONTH + r")\.?"
    r"(?:\s+(?P<dmr_y>\d{4}))?)" + _E,
    r"(?<![\d.:])(?P<dmn>(?P<dmn_d>\d{1,2})(?:\.|st|nd|rd|th)?\s*(?:of\s+)?"
    r"(?P<dmn_m>" + _MONTH + r")" + _E + r"\.?(?:\s*,?\s*(?P<dmn_y>\d{4})(?!\d))?)",
    _B + r"(?P<mnd>(?P<mnd_m>" + _MONTH + r")\.?\s+(?:the\s+)?(?P<mnd_d>\d{1,2})"
    r"(?:st|nd|rd|th)?(?![\d]|[.:]\d)(?:,?\s+(?P<mnd_y>\d{4})(?!\d))?)",
    _B + r"(?P<dayonly>(?:den|the)\s+(?P<dayonly_d>\d{1,2})(?:\.|st|nd|rd|th))"
    r"(?!\d|\s*(?:of\s+)?" + _MONTH + _E + r")",
    # N school days (or weeks).
    r"(?<![\w.,])(?P<ndays>(?P<ndays_n>\d{1,2}|" + _NUMWORD + r")\s+(?:(?:hele\s+|more\s+"
    r"|school\s+|full\s+)?(?P<ndays_u>skoledager|skuledagar|dager|dagar|dagene|dagane|days"
    r"|dag|day|uker|veker|veke|uke|weeks|week)))" + _E,
    # Times.
    _B + r"(?P<half>(?:kl\.?\s*|klokka\s+|klokken\s+)?(?P<half_k>halv|kvart\s+over"
    r"|kvart\s+på|quarter\s+past|quarter\s+to|half\s+past)\s+(?P<half_h>\d{1,2}))"
    r"(?![\d])",
    _B + r"(?P<kl>(?:kl\.?|klokka|klokken|at|ca\.?\s*kl\.?)\s*"
    r"(?:(?P<kl_hm>\d{3,4})|(?P<kl_h>\d{1,2})(?:[.:](?P<kl_m>\d{2}))?)"
    r"(?![\d]|[.:]\d)\s*(?P<kl_ap>" + _AMPM + r")?)(?!\w)",
    r"(?<![\d:.])(?P<colon>(?P<colon_h>\d{1,2}):(?P<colon_m>\d{2})(?!\d)\s*"
    r"(?P<colon_ap>" + _AMPM + r")?)(?!\w)",
    r"(?<![\d.:])(?P<ampm>(?P<ampm_h>\d{1,2})(?:[.](?P<ampm_m>\d{2}))?\s*"
    r"(?P<ampm_ap>" + _AMPM + r"))(?!\w)",
    _B + r"(?P<about>(?:around|about|approx\.?|ca\.?|cirka|rundt|omkring)\s+"
    r"(?P<about_h>\d{1,2})(?:[.:](?P<about_m>\d{2}))?\s*(?P<about_ap>" + _AMPM + r")?)"
    r"(?![\d\w.:/]|\s*(?:dager|dagar|days|day|dag|uker|weeks|veker|timer|hours|min))",
    r"(?<![\d.:])(?P<tiden>(?P<tiden_h>\d{1,2})-?tiden)" + _E,
    _B + r"(?P<noon>noon|midday|lunsjtid)" + _E,
    r"(?<![\d.,:/])(?P<num>(?P<num_a>\d{1,2})(?P<num_sep>[./])(?P<num_b>\d{1,2})"
    r"(?:(?P=num_sep)(?P<num_y>\d{4}|\d{2}))?)(?!\d|[./]\d)",
    # Relative days and weekday names.
    _B + r"(?P<rel>" + "|".join(f"(?:{p})" for p, _ in _REL_WORDS) + r")" + _E,
    _B + r"(?P<wd>(?:(?P<wd_pre>neste|next|kommende|førstkommende|komande|this|denne"
    r"|forrige|last|sist|førre|this\s+coming|coming)\s+)?(?P<wd_name>" + _WEEKDAY + r")"
    r"(?:en)?(?!\w)(?:\s+(?:i\s+|in\s+)?(?P<wd_post>neste|next|denne|this|forrige|last)"
    r"\s+" + _WEEK + _E + r")?)",
]

_WORD_START = re.compile(r"(?<!\w)\w+")
_DIGIT = "<digit>"
_WEEK_PREFIXES = ("uke", "veke", "week", "uka", "veka")
_WD_PREFIXES = "neste next kommende førstkommende komande this denne forrige last sist førre coming"
_REL_FIRST = """i idag igår igær imorgen imorgon imorra imårra imårå imorn iovermorgen iovermorgon
    overimorgen iforgårs the day today tonight this tomorrow tomorow tmrw yesterday yday"""
# The words each alternative can start with; scanning tries, at each word, only the
# alternatives that word can start (one big pattern at every word was four times slower).
# tests/understand checks the result against an unfiltered scan.
_STARTS: dict[str, frozenset[str]] = {
    "rest": frozenset("for the rest resten ut".split()),
    "nextweek": frozenset("hele heile all the whole neste next kommende komande coming".split()),
    "thisweek": frozenset("hele heile denne this all whole the for".split()),
    "weekno": frozenset(),  # by prefix, see _parts_for
    "iso": frozenset([_DIGIT]),
    "dmr": frozenset([_DIGIT]),
    "dmn": frozenset([_DIGIT]),
    "mnd": frozenset(MONTHS),
    "dayonly": frozenset(["den", "the"]),
    "ndays": frozenset([_DIGIT, *(w.split()[0] for w in NUMBER_WORDS)]),
    "half": frozenset("kl klokka klokken halv kvart quarter half".split()),
    "kl": frozenset("kl klokka klokken at ca".split()),
    "colon": frozenset([_DIGIT]),
    "ampm": frozenset([_DIGIT]),
    "tiden": frozenset([_DIGIT]),
    "noon": frozenset("noon midday lunsjtid".split()),
    "about": frozenset("around about approx ca cirka rundt omkring".split()),
    "num": frozenset([_DIGIT]),
    "rel": frozenset(_REL_FIRST.split()),
    "wd": frozenset([*WEEKDAYS, *(w + "en" for w in WEEKDAYS), *_WD_PREFIXES.split()]),
}
_STARTERS = frozenset().union(*_STARTS.values())
_PART_NAMES = [re.findall(r"\(\?P<(\w+)>", p)[0] for p in _PARTS]
_ALL_PARTS = re.compile("|".join(_PARTS))


@lru_cache(maxsize=1024)
def _parts_for(key: str) -> re.Pattern[str] | None:
    """The combined pattern of the alternatives that can start with this word."""
    chosen = [
        part
        for name, part in zip(_PART_NAMES, _PARTS, strict=True)
        if key in _STARTS[name] or (name == "weekno" and key.startswith(_WEEK_PREFIXES))
    ]
    return re.compile("|".join(chosen)) if chosen else None


_REL_COMPILED = [(re.compile(p), n) for p, n in _REL_WORDS]

# Bare hours in a range ("fra 10 til 12", "mellom 10 og 12", "between 10 and 12").
_BARE_RANGE = re.compile(
    r"(?<![\w.])(?:fra|frå|from|mellom|between)\s+(?P<a>\d{1,2})(?:[.:](?P<am>\d{2}))?"
    r"\s*(?:-|til|to|until|og|and)\s*(?P<b>\d{1,2})(?:[.:](?P<bm>\d{2}))?"
    r"(?![\d]|[./]\d|\.?\s*" + _MONTH + _E + r")"
)
_RANGE_WORD = re.compile(r"fra|frå|from|mellom|between")
# A bare hour right after a time and a range word ("kl 10-12", "kl 10 til 12").
_AFTER_TIME = re.compile(
    r"\s*(?:-|til|to|until|og|and)\s*(?:kl\.?\s*)?(?P<h>\d{1,2})(?:[.:](?P<m>\d{2}))?"
    r"\s*(?P<ap>" + _AMPM + r")?(?![\d\w]|[./]\d)"
)


@dataclass(slots=True)
class Token:
    """One date, period or time expression found in the text."""

    kind: str  # "date", "bad", "period", "ndays", "time"
    start: int
    end: int
    # date: ("rel", n) | ("wd", weekday, mode) | ("dm", d, m, y) | ("day", d)
    # period: ("rest",) | ("next",) | ("weekno", n); ndays: ("n", count); time: ("t", time)
    value: tuple[object, ...]
    explicit_time: bool = True


def _mk_time(hour: int, minute: int, ampm: str | None, *, bare: bool) -> time | None:
    if ampm:
        if hour > 12 or hour == 0:
            return None
        pm = ampm.startswith("p")
        hour = (hour % 12) + (12 if pm else 0)
    elif bare and 1 <= hour <= 6:
        # School runs from morning to afternoon: "kl 2" or "at 3" is afternoon.
        hour += 12
    if hour > 23 or minute > 59:
        return None
    return time(hour, minute)


def _valid_dm(d: int, m: int) -> bool:
    return 1 <= m <= 12 and 1 <= d <= (29 if m == 2 else monthrange(2001, m)[1])


def _year(y: str | None) -> int | None:
    if y is None:
        return None
    n = int(y)
    return n + 2000 if n < 100 else n


def _date_token(start: int, end: int, d: int, m: int, y: int | None) -> Token:
    if not _valid_dm(d, m):
        return Token("bad", start, end, ())
    if y is not None:
        try:
            date(y, m, d)
        except ValueError:
            return Token("bad", start, end, ())
    return Token("date", start, end, ("dm", d, m, y))


def _time_after_kl(g: dict[str, str | None]) -> time | None:
    if g["kl_hm"]:
        hm = g["kl_hm"]
        hour, minute = int(hm[:-2]), int(hm[-2:])
    else:
        hour, minute = int(g["kl_h"] or 0), int(g["kl_m"] or 0)
    return _mk_time(hour, minute, g["kl_ap"], bare=not g["kl_m"] and not g["kl_hm"])


def scan(
    norm: str, words: list[tuple[int, int, str]] | None = None, *, prefilter: bool = True
) -> list[Token]:
    """Every date, period and time expression in normalized text, in order."""
    tokens: list[Token] = []
    pos = 0
    if words is None:
        words = [(m.start(), m.end(), m.group()) for m in _WORD_START.finditer(norm)]
    # Every expression starts a word: try the patterns only there.
    for w_start, _, word in words:
        if w_start < pos:
            continue
        if prefilter:
            if word[0].isdigit():
                word = _DIGIT
            elif word not in _STARTERS and not word.startswith(_WEEK_PREFIXES):
                continue
            pattern = _parts_for(word)
            if pattern is None:
                continue
        else:
            pattern = _ALL_PARTS
        m = pattern.match(norm, w_start)
        if m is None:
            continue
        pos = m.end()
        kind = m.lastgroup
        g = m.groupdict()
        s, e = m.start(), m.end()
        tok: Token | None = None
        if kind == "rest" or kind == "thisweek":
            tok = Token("period", s, e, ("rest",))
        elif kind == "nextweek":
            tok = Token("period", s, e, ("next",))
        elif kind == "weekno":
            n = int(g["weekno_n"] or 0)
            tok = Token("period", s, e, ("weekno", n)) if 1 <= n <= 53 else None
        elif kind == "iso":
            tok = _date_token(
                s, e, int(g["iso_d"] or 0), int(g["iso_m"] or 0), int(g["iso_y"] or 0)
            )
        elif kind == "dmr":
            month = MONTHS[(g["dmr_m"] or "").rstrip(".")]
            y = _year(g["dmr_y"])
            tokens.append(_date_token(s, m.end("dmr_a"), int(g["dmr_a"] or 0), month, y))
            tokens.append(_date_token(m.start("dmr_b"), e, int(g["dmr_b"] or 0), month, y))
            continue
        elif kind == "dmn":
            month = MONTHS[(g["dmn_m"] or "").rstrip(".")]
            tok = _date_token(s, e, int(g["dmn_d"] or 0), month, _year(g["dmn_y"]))
        elif kind == "mnd":
            month = MONTHS[(g["mnd_m"] or "").rstrip(".")]
            tok = _date_token(s, e, int(g["mnd_d"] or 0), month, _year(g["mnd_y"]))
        elif kind == "dayonly":
            d = int(g["dayonly_d"] or 0)
            tok = Token("date", s, e, ("day", d)) if 1 <= d <= 31 else Token("bad", s, e, ())
        elif kind == "ndays":
            word = g["ndays_n"] or ""
            n = int(word) if word.isdigit() else NUMBER_WORDS.get(" ".join(word.split()), 0)
            unit = g["ndays_u"] or ""
            if unit[0] in "uvw":
                n *= 5
            tok = Token("ndays", s, e, ("n", n)) if 0 < n <= 200 else None
        elif kind == "half":
            h = int(g["half_h"] or 0)
            kind_word = " ".join((g["half_k"] or "").split())
            if kind_word in ("halv",):
                hour, minute = h - 1, 30
            elif kind_word == "half past":
                hour, minute = h, 30
            elif kind_word in ("kvart over", "quarter past"):
                hour, minute = h, 15
            else:
                hour, minute = h - 1, 45
            t = _mk_time(hour % 24, minute, None, bare=True) if hour >= 0 else None
            tok = Token("time", s, e, ("t", t)) if t else None
        elif kind == "kl":
            t = _time_after_kl(g)
            tok = Token("time", s, e, ("t", t)) if t else None
        elif kind == "colon":
            t = _mk_time(int(g["colon_h"] or 0), int(g["colon_m"] or 0), g["colon_ap"], bare=False)
            tok = Token("time", s, e, ("t", t)) if t else None
        elif kind == "ampm":
            t = _mk_time(int(g["ampm_h"] or 0), int(g["ampm_m"] or 0), g["ampm_ap"], bare=False)
            tok = Token("time", s, e, ("t", t)) if t else None
        elif kind == "tiden":
            t = _mk_time(int(g["tiden_h"] or 0), 0, None, bare=True)
            tok = Token("time", s, e, ("t", t)) if t else None
        elif kind == "about":
            bare = g["about_m"] is None and g["about_ap"] is None
            h, mi = int(g["about_h"] or 0), int(g["about_m"] or 0)
            t = _mk_time(h, mi, g["about_ap"], bare=bare)
            tok = Token("time", s, e, ("t", t)) if t else None
        elif kind == "noon":
            tok = Token("time", s, e, ("t", time(12, 0)))
        elif kind == "num":
            tok = _numeric(s, e, g)
        elif kind == "rel":
            text = m.group("rel")
            offset = next(n for p, n in _REL_COMPILED if p.fullmatch(text))
            tok = Token("date", s, e, ("rel", offset))
        elif kind == "wd":
            pre = (g["wd_pre"] or "").split(" ")[0]
            post = g["wd_post"] or ""
            mode = "plain"
            if pre in ("neste", "next") or post in ("neste", "next"):
                mode = "next"
            elif pre in ("forrige", "last", "sist", "førre") or post in ("forrige", "last"):
                mode = "last"
            tok = Token("date", s, e, ("wd", WEEKDAYS[g["wd_name"] or ""], mode))
        if tok is not None:
            tokens.append(tok)
    _add_bare_times(norm, tokens)
    return tokens


def _numeric(s: int, e: int, g: dict[str, str | None]) -> Token | None:
    """`A.B` / `A/B` / `A.B.Y`: a date, unless `A.B` cannot be one (then a time)."""
    a, b = int(g["num_a"] or 0), int(g["num_b"] or 0)
    year = _year(g["num_y"])
    if g["num_sep"] == "." and year is None and not 1 <= b <= 12:
        if len(g["num_b"] or "") == 2 and a <= 23 and b <= 59:
            return Token("time", s, e, ("t", time(a, b)))
        return None
    return _date_token(s, e, a, b, year)


def _add_bare_times(norm: str, tokens: list[Token]) -> None:
    """Bare hours that a range makes times: "fra 10 til 12", "kl 10-12"."""
    taken = [(t.start, t.end) for t in tokens]

    def free(s: int, e: int) -> bool:
        return not any(s < te and ts < e for ts, te in taken)

    extra: list[Token] = []
    ranges = _BARE_RANGE.finditer(norm) if _RANGE_WORD.search(norm) else ()
    for m in ranges:
        a, b = int(m.group("a")), int(m.group("b"))
        ta = _mk_time(a, int(m.group("am") or 0), None, bare=m.group("am") is None)
        tb = _mk_time(b, int(m.group("bm") or 0), None, bare=m.group("bm") is None)
        if ta and tb and free(m.start("a"), m.end()):
            extra.append(Token("time", m.start("a"), m.end("a"), ("t", ta)))
            extra.append(Token("time", m.start("b"), m.end(), ("t", tb)))
    for tok in tokens:
        if tok.kind != "time":
            continue
        after = _AFTER_TIME.match(norm, tok.end)
        if not after:
            continue
        bare = after.group("m") is None and after.group("ap") is None
        t = _mk_time(
            int(after.group("h")), int(after.group("m") or 0), after.group("ap"), bare=bare
        )
        if t and free(after.start("h"), after.end()):
            extra.append(Token("time", after.start("h"), after.end(), ("t", t)))
        elif t:
            # A date-looking "11.10" after "kl 10.10 -" is the end of a time range.
            for i, other in enumerate(tokens):
                if other.start == after.start("h") and other.kind in ("date", "bad"):
                    tokens[i] = Token("time", other.start, other.end, ("t", t))
    if extra:
        tokens.extend(extra)
        tokens.sort(key=lambda t: t.start)


# ---------------------------------------------------------------------------------------
# Resolution


def nearest_occurrence(day: int, month: int, ref: date) -> date | None:
    """The date with this day and month nearest to `ref` (ties go forward)."""
    best: date | None = None
    for year in (ref.year - 1, ref.year, ref.year + 1):
        try:
            cand = date(year, month, day)
        except ValueError:
            continue
        if best is None or abs((cand - ref).days) < abs((best - ref).days):
            best = cand
        elif abs((cand - ref).days) == abs((best - ref).days) and cand > best:
            best = cand
    return best


def _first_on_or_after(day: int, month: int, start: date) -> date | None:
    for year in (start.year, start.year + 1, start.year + 4):
        try:
            cand = date(year, month, day)
        except ValueError:
            continue
        if cand >= start:
            return cand
    return None


def _nearest_day_of_month(day: int, ref: date) -> date | None:
    best: date | None = None
    for shift in (-1, 0, 1):
        y, m = ref.year, ref.month + shift
        if m == 0:
            y, m = y - 1, 12
        elif m == 13:
            y, m = y + 1, 1
        try:
            cand = date(y, m, day)
        except ValueError:
            continue
        if best is None or abs((cand - ref).days) < abs((best - ref).days):
            best = cand
    return best


def _day_on_or_after(day: int, start: date) -> date | None:
    y, m = start.year, start.month
    for _ in range(3):
        try:
            cand = date(y, m, day)
            if cand >= start:
                return cand
        except ValueError:
            pass
        y, m = (y + 1, 1) if m == 12 else (y, m + 1)
    return None


def resolve_date(tok: Token, ref: date, after: date | None = None) -> date | None:
    """The day a date token names; `after` makes it the first match on or after that day."""
    v = tok.value
    kind = v[0]
    if kind == "rel":
        return ref + timedelta(days=int(v[1]))  # type: ignore[call-overload]
    if kind == "wd":
        weekday, mode = int(v[1]), v[2]  # type: ignore[call-overload]
        if mode == "next":
            monday = ref + timedelta(days=7 - ref.weekday())
            return monday + timedelta(days=weekday)
        if mode == "last":
            back = (ref.weekday() - weekday) % 7 or 7
            return ref - timedelta(days=back)
        base = after or ref
        return base + timedelta(days=(weekday - base.weekday()) % 7)
    if kind == "dm":
        d, m, y = int(v[1]), int(v[2]), v[3]  # type: ignore[call-overload]
        if y is not None:
            return date(int(y), m, d)  # type: ignore[call-overload]
        return _first_on_or_after(d, m, after) if after else nearest_occurrence(d, m, ref)
    if kind == "day":
        d = int(v[1])  # type: ignore[call-overload]
        return _day_on_or_after(d, after) if after else _nearest_day_of_month(d, ref)
    return None


_RANGE_GAP = re.compile(
    r"\.?\s*(?:-+|til(?:\s+og\s+med)?|t\.?o\.?m\.?|to|until|till|through|thru|fram\s+til"
    r"|frem\s+til|inntil|up\s+to)\s*"
)
_LIST_GAP = re.compile(r"\.?\s*(?:,|og|and|&|\+|samt)\s*(?:også\s+|òg\s+)?")
_END_WORDS = frozenset("til until till through thru t.o.m. t.o.m tom inntil".split())
_END_PAIRS = frozenset({("fram", "til"), ("frem", "til"), ("up", "to"), ("og", "med")})
_BACK_WORDS = frozenset(["tilbake", "back"])
_BACK_PREPS = frozenset("på on i by fra frå from".split())


def _ends_only(before: list[str]) -> bool:
    """Whether the words before a date make it the end of a range ("til fredag")."""
    return bool(before) and (before[-1] in _END_WORDS or tuple(before[-2:]) in _END_PAIRS)


def _back_on(before: list[str]) -> bool:
    """Whether the words before a date say the child is back then ("tilbake på mandag")."""
    if not before:
        return False
    if before[-1] in _BACK_WORDS:
        return True
    return len(before) > 1 and before[-1] in _BACK_PREPS and before[-2] in _BACK_WORDS


@dataclass(slots=True)
class DateSpan:
    """Resolved dates of one absence."""

    start: date
    end: date
    bad: bool = False
    explicit: bool = False


def first_absent_day(received: date, before_cutoff: bool, is_school_day: SchoolDayRule) -> date:
    """The day received if a school day and before 15:00, else the next school day."""
    if before_cutoff and is_school_day(received):
        return received
    return next_school_day(received, is_school_day, inclusive=False)


def _friday_of(day: date) -> date:
    return day + timedelta(days=4 - day.weekday()) if day.weekday() <= 4 else day


def resolve_dates(
    norm: str,
    tokens: list[Token],
    ref: date,
    first_day: date,
    is_school_day: SchoolDayRule,
) -> DateSpan:
    """Combine the date tokens of one absence into its date range."""
    dated = [t for t in tokens if t.kind in ("date", "bad", "period", "ndays")]
    if any(t.kind == "bad" for t in dated):
        return DateSpan(first_day, first_day, bad=True)
    starts: list[date] = []
    ends: list[date] = []
    exclusive_end: date | None = None
    prev_tok: Token | None = None
    prev_day: date | None = None
    for tok in dated:
        if tok.kind != "date":
            prev_tok, prev_day = None, None
            continue
        gap = norm[prev_tok.end : tok.start] if prev_tok is not None else ""
        before = norm[max(0, tok.start - 30) : tok.start].split()[-2:]
        if prev_tok is not None and prev_day is not None and _RANGE_GAP.fullmatch(gap):
            day = resolve_date(tok, ref, after=prev_day)
        elif prev_tok is not None and prev_day is not None and _LIST_GAP.fullmatch(gap):
            day = resolve_date(tok, ref, after=prev_day)
        elif _ends_only(before):
            day = resolve_date(tok, ref, after=first_day)
            if day is not None:
                starts.append(first_day)
        elif _back_on(before):
            day = resolve_date(tok, ref)
            if day is not None:
                exclusive_end = day
                prev_tok, prev_day = None, None
                continue
        else:
            day = resolve_date(tok, ref)
        if day is None:
            return DateSpan(first_day, first_day, bad=True)
        starts.append(day)
        ends.append(day)
        prev_tok, prev_day = tok, day
    explicit = bool(starts)
    anchor = min(starts) if starts else first_day
    for tok in dated:
        if tok.kind == "period":
            kind = tok.value[0]
            if kind == "rest":
                begin = next_school_day(anchor, is_school_day, inclusive=True)
                starts.append(begin)
                ends.append(_friday_of(begin))
            else:
                if kind == "next":
                    monday = ref + timedelta(days=7 - ref.weekday())
                else:
                    monday = _nearest_week(int(tok.value[1]), ref)  # type: ignore[call-overload]
                begin = next_school_day(monday, is_school_day, inclusive=True)
                starts.append(begin)
                ends.append(max(begin, monday + timedelta(days=4)))
        elif tok.kind == "ndays":
            count = int(tok.value[1])  # type: ignore[call-overload]
            starts.append(anchor)
            ends.append(add_school_days(anchor, count, is_school_day))
    if exclusive_end is not None and not ends:
        last = exclusive_end - timedelta(days=1)
        while last > first_day and not is_school_day(last):
            last -= timedelta(days=1)
        starts.append(first_day)
        ends.append(max(first_day, last))
    if not starts:
        return DateSpan(first_day, first_day)
    return DateSpan(min(starts), max(ends), explicit=explicit or bool(dated))


def _nearest_week(week: int, ref: date) -> date:
    best = ref
    best_gap: int | None = None
    iso_year = ref.isocalendar()[0]
    for year in (iso_year - 1, iso_year, iso_year + 1):
        try:
            monday = date.fromisocalendar(year, week, 1)
        except ValueError:
            continue
        gap = abs((monday - ref).days)
        if best_gap is None or gap < best_gap:
            best, best_gap = monday, gap
    return best
