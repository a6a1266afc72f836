"""From one parent message to an Interpretation (SPEC 6). Pure: no I/O, no clock."""

from __future__ import annotations

import re
from bisect import bisect_left, bisect_right
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, time
from zoneinfo import ZoneInfo

from .calendar import ClosedDays, SchoolDayRule, school_day_rule
from .children import Mention, find_mentions
from .dates import Token, first_absent_day, resolve_dates
from .dates import scan as scan_dates
from .lexicon import Span, scan
from .model import (
    UNITS,
    AbsenceSpan,
    Category,
    Child,
    Intent,
    Interpretation,
    Reason,
    Slot,
    Unit,
)
from .sensitive import apply_redaction, find_sensitive
from .text import Word, normalize, sentences, split_words

KEYWORDS: dict[str, Intent] = {
    "stopp": "stop",
    "stop": "stop",
    "avslutt": "stop",
    "avmeld": "stop",
    "start": "start",
    "starte": "start",
    "hjelp": "help",
    "help": "help",
}

_KEYWORD = re.compile(r"\s*([^\W\d_]+)[\W_]*", re.DOTALL)
_CUTOFF = time(15, 0)
_SCHOOL_START = time(8, 30)
_SCHOOL_END = time(14, 0)

_NEGATIONS = frozenset(
    "ikke ikkje ikkje not never aldri no uten utan without won't wont can't cant cannot "
    "isn't isnt aren't doesn't didn't don't wouldn't shouldn't wasn't trenger_ikke".split()
)
_WORD = re.compile(r"[\w']+")
# Words that start a new clause: a negation before them does not reach past them.
_CLAUSE_WORDS = frozenset("men but og and så so fordi because".split())
_NEG_PRESENCE = re.compile(
    r"(?<!\w)(?:ikke|ikkje|not|never|\w+n't|wont|cannot)\s+(?:(?!og\b|men\b|and\b|but\b)[\w']+\s+)"
    r"{0,3}?(?:på|til|i|at|to|in|on|for)?\s*(?:the\s+)?"
    r"(?:skolen?|skulen?|school|sfo(?:-?en)?|aks|aktivitetsskolen)(?!\w)"
)
_WH_QUESTION = re.compile(
    r"(?<!\w)(?:hvordan|korleis|hva|kva|hvem|kven|hvor|kvar|når|hvorfor|kvifor|how|what|"
    r"who|where|when|why|which)(?!\w)"
)
_REASON_MARKER = re.compile(
    r"(?<!\w)(?:(?:pga|ifm)\.?|på grunn av|pågrunn av|grunnet|grunna|i forbindelse med|"
    r"because of|because|due to|fordi|ettersom)\s+[\w]"
    r"|(?<!\w)(?:skal|skal også)\s+(?:i|på|til)\s+(?!skolen?\b|skulen?\b|sfo\b|aks\b|kl\b|"
    r"ikke\b|ikkje\b|\d)[\w]"
    r"|(?<!\w)(?:going|we're going|we are going|have to go|has to go)\s+(?:to|on)\s+"
    r"(?!school\b|sfo\b)[\w]"
)
# Words that _REASON_MARKER starts with: a cheap test before the expression.
_REASON_WORDS = frozenset(
    "pga pga. ifm ifm. på grunnet grunna pågrunn i because due fordi ettersom skal going we're "
    "we have has".split()
)
_PREP_FROM = re.compile(r"(?:^|\s)(?:fra|frå|from|etter|after|f\.o\.m\.?)\s*$")
_PREP_TO = re.compile(r"(?:^|\s)(?:til|until|till|før|before|innen|by)\s*$")
_TIME_RANGE_GAP = re.compile(r"\s*(?:-+|til|to|until|og|and)\s*")

_CUE_MATCHERS = (
    "absence",
    "absence_weak",
    "appointment",
    "illness",
    "other",
    "cancel",
    "recovered",
    "leave",
    "arrive",
    "school",
    "sfo",
    "both_units",
    "after_all",
    "whole_day",
    "also",
    "health",
)


def keyword_intent(text: str) -> Intent | None:
    """`stop`, `start` or `help` when the whole text is one keyword (trailing marks allowed)."""
    m = _KEYWORD.fullmatch(text)
    if m is None:
        return None
    return KEYWORDS.get(m.group(1).casefold())


def is_stop(text: str) -> bool:
    """Whether the text is an opt-out keyword (STOPP, STOP, AVSLUTT, AVMELD)."""
    return keyword_intent(text) == "stop"


def is_start(text: str) -> bool:
    """Whether the text is an opt-in keyword (START, STARTE)."""
    return keyword_intent(text) == "start"


def is_help(text: str) -> bool:
    """Whether the text is a help keyword (HJELP, HELP)."""
    return keyword_intent(text) == "help"


@dataclass(slots=True)
class _Sentence:
    start: int
    end: int
    question: bool
    positive: bool = False  # reports an absence
    weak: bool = False
    cancel: bool = False  # explicitly withdraws
    negated_after_all: bool = False
    recovered: bool = False
    coming_after_all: bool = False


@dataclass(slots=True)
class _Analysis:
    """Everything found in one message, shared by the steps below."""

    text: str
    norm: str
    spans: dict[str, list[Span]]
    tokens: list[Token]
    bounds: list[Span]
    sentences: list[_Sentence] = field(default_factory=list)
    time_roles: dict[int, str] = field(default_factory=dict)  # token start -> "from"/"to"
    _starts: dict[str, list[int]] = field(default_factory=dict)
    _token_starts: list[int] = field(default_factory=list)
    _bound_starts: list[int] = field(default_factory=list)

    def within(self, name: str, lo: int, hi: int) -> list[Span]:
        """The spans of category `name` that start in [lo, hi) (spans are sorted)."""
        spans = self.spans[name]
        if not spans:
            return spans
        starts = self._starts.get(name)
        if starts is None:
            starts = self._starts[name] = [sp[0] for sp in spans]
        return spans[bisect_left(starts, lo) : bisect_left(starts, hi)]

    def tokens_in(self, lo: int, hi: int) -> list[Token]:
        """The date and time tokens that start in [lo, hi)."""
        if not self._token_starts and self.tokens:
            self._token_starts = [t.start for t in self.tokens]
        starts = self._token_starts
        return self.tokens[bisect_left(starts, lo) : bisect_left(starts, hi)]

    def sentence_index(self, pos: int) -> int:
        """Index in `bounds` of the sentence holding `pos`."""
        if not self._bound_starts:
            self._bound_starts = [b[0] for b in self.bounds]
        return max(0, bisect_right(self._bound_starts, pos) - 1)

    def sentences_over(self, lo: int, hi: int) -> list[_Sentence]:
        """The analysed sentences that overlap [lo, hi)."""
        if not self.sentences:
            return []
        first = self.sentence_index(lo)
        out = []
        for sent in self.sentences[first:]:
            if sent.start >= hi:
                break
            if sent.end > lo:
                out.append(sent)
        return out


def _in(span: tuple[int, int], start: int, end: int) -> bool:
    return start <= span[0] < end


def _negated(norm: str, pos: int, floor: int) -> bool:
    """Whether one of the three words before `pos`, in the same clause, negates it."""
    window = norm[max(floor, pos - 40) : pos]
    cut = max(window.rfind(","), window.rfind(";"), window.rfind(":"))
    before = window[cut + 1 :].split()[-3:]
    for i in range(len(before) - 1, -1, -1):
        word = before[i]
        if word in _CLAUSE_WORDS:
            return False
        if word in _NEGATIONS or "n't" in word:
            return True
    return False


def _negated_after(norm: str, end: int) -> bool:
    after = _WORD.findall(norm[end : end + 12])[:1]
    return bool(after) and (after[0] in _NEGATIONS or after[0].endswith("n't"))


def _analyse(text: str, norm: str, words: list[Word], lexicon: dict[str, list[Span]]) -> _Analysis:
    spans = {name: lexicon.get(name, []) for name in _CUE_MATCHERS}
    a = _Analysis(text, norm, spans, scan_dates(norm, words), sentences(norm))
    _assign_time_roles(a)
    for s, e in a.bounds:
        body = norm[s:e]
        question = "?" in body and bool(_WH_QUESTION.search(body))
        sent = _Sentence(s, e, question)
        _cues(a, sent)
        a.sentences.append(sent)
    return a


def _names_unit(a: _Analysis, start: int, end: int) -> bool:
    """Whether a unit word occurs in norm[start:end] (a cheap guard for _NEG_PRESENCE)."""
    return any(start <= sp[0] < end for sp in a.spans["school"] + a.spans["sfo"])


def _cues(a: _Analysis, sent: _Sentence) -> None:
    norm, s, e = a.norm, sent.start, sent.end
    body = norm[s:e]
    neg_spans = False
    for name in ("absence", "illness"):
        for span in a.within(name, s, e):
            if _negated(norm, span[0], s):
                neg_spans = True
            else:
                sent.positive = True
    if (a.within("school", s, e) or a.within("sfo", s, e)) and _NEG_PRESENCE.search(body):
        sent.positive = True
    tokens = a.tokens_in(s, e)
    for name in ("absence_weak", "appointment"):
        for span in a.within(name, s, e):
            if _negated(norm, span[0], s):
                neg_spans = True
            elif tokens and not body.rstrip().endswith("?"):
                sent.weak = True
    for span in a.within("leave", s, e):
        if _negated(norm, span[0], s):
            neg_spans = True
    # A leaving or arriving verb with its time is a part-day absence.
    for tok in tokens:
        if tok.kind == "time" and a.time_roles.get(tok.start, "").endswith("verb"):
            sent.positive = True
    after_all = bool(a.within("after_all", s, e))
    sent.cancel = bool(a.within("cancel", s, e))
    sent.negated_after_all = after_all and neg_spans
    sent.recovered = any(not _negated(norm, sp[0], s) for sp in a.within("recovered", s, e))
    if after_all or neg_spans:
        # "kommer likevel", or "er ikke syk, han kommer": coming after all.
        for span in a.within("arrive", s, e):
            if not _negated(norm, span[0], s) and not _negated_after(norm, span[1]):
                sent.coming_after_all = True
    if sent.question:
        sent.positive = sent.weak = False


def _assign_time_roles(a: _Analysis) -> None:
    """Decide for every time whether it starts (`from`) or ends (`to`) the absence."""
    norm = a.norm
    times = [t for t in a.tokens if t.kind == "time"]
    if not times:
        return
    verbs = sorted(
        [(s, e, "from") for s, e in a.spans["leave"]] + [(s, e, "to") for s, e in a.spans["arrive"]]
    )
    verb_starts = [v[0] for v in verbs]
    i = 0
    while i < len(times):
        tok = times[i]
        nxt = times[i + 1] if i + 1 < len(times) else None
        if nxt is not None and _TIME_RANGE_GAP.fullmatch(norm, tok.end, nxt.start):
            a.time_roles[tok.start] = "from-range"
            a.time_roles[nxt.start] = "to-range"
            i += 2
            continue
        s, e = a.bounds[a.sentence_index(tok.start)]
        prev_end = max(s, times[i - 1].end) if i > 0 and times[i - 1].end <= tok.start else s
        lo, hi = bisect_left(verb_starts, prev_end), bisect_left(verb_starts, tok.start)
        before = [v for v in verbs[lo:hi] if v[1] <= tok.start]
        role = ""
        if before:
            role = before[-1][2] + "-verb"
        else:
            # "kl 12 går Ola": a verb right after the time.
            j = bisect_left(verb_starts, tok.end)
            if j < len(verbs) and not norm[tok.end : verbs[j][0]].strip():
                role = verbs[j][2] + "-verb"
        if not role:
            head = norm[max(s, tok.start - 20) : tok.start]
            if _PREP_FROM.search(head):
                role = "from-prep"
            elif _PREP_TO.search(head):
                role = "to-prep"
            elif a.within("appointment", s, e):
                # "tannlegen kl 10": the child leaves for the appointment then.
                role = "from-appointment"
        if role:
            a.time_roles[tok.start] = role
        i += 1


def _intent(a: _Analysis) -> Intent:
    sents = a.sentences
    positive = any(s.positive for s in sents)
    if any(s.cancel or s.negated_after_all for s in sents):
        return "absence_cancel"
    if not positive and any(s.recovered or s.coming_after_all for s in sents):
        return "absence_cancel"
    if positive or any(s.weak for s in sents):
        return "absence"
    return "message"


@dataclass(slots=True)
class _Group:
    """Children named together, and the stretch of text that speaks about them."""

    indexes: frozenset[int]
    start: int
    end: int


def _groups(a: _Analysis, mentions: list[Mention]) -> list[_Group]:
    groups: list[_Group] = []
    for m in mentions:
        if groups:
            gap = a.norm[groups[-1].end : m.start]
            if re.fullmatch(r"[\s,&+]*(?:og|and|eller|or|samt)?[\s,&+]*", gap):
                last = groups[-1]
                groups[-1] = _Group(last.indexes | m.indexes, last.start, m.end)
                continue
        groups.append(_Group(m.indexes, m.start, m.end))
    # Each group owns the text up to the next group; the first also owns what precedes it.
    out: list[_Group] = []
    for i, g in enumerate(groups):
        start = 0 if i == 0 else g.start
        end = groups[i + 1].start if i + 1 < len(groups) else len(a.norm)
        out.append(_Group(g.indexes, start, end))
    return out


def _segment_reports(a: _Analysis, start: int, end: int, intent: Intent) -> bool | None:
    """Whether this stretch reports (or withdraws) an absence; None when it says nothing."""
    norm = a.norm
    for sent in a.sentences_over(start, end):
        lo, hi = max(sent.start, start), min(sent.end, end)
        for name in ("absence", "illness"):
            for span in a.within(name, lo, hi):
                if not _negated(norm, span[0], sent.start):
                    return True
        if (a.within("school", lo, hi) or a.within("sfo", lo, hi)) and _NEG_PRESENCE.search(
            norm[lo:hi]
        ):
            return True
        for tok in a.tokens_in(lo, hi):
            if tok.kind == "time" and tok.start in a.time_roles:
                return True
        if intent == "absence_cancel" and (
            a.within("cancel", lo, hi)
            or a.within("recovered", lo, hi)
            or a.within("after_all", lo, hi)
        ):
            return True
        if a.within("absence_weak", lo, hi) or a.within("appointment", lo, hi):
            return True
    if a.within("also", start, end):
        return True
    return None


def _reason(a: _Analysis, start: int, end: int, intent: Intent) -> Reason:
    norm = a.norm
    floors = [s.start for s in a.sentences]

    def sentence_start(pos: int) -> int:
        return max([f for f in floors if f <= pos], default=0)

    illness = a.within("illness", start, end)
    appointment = a.within("appointment", start, end)
    # Health details (a diagnosis, a medicine) give illness too, unless they are the
    # appointment itself ("psykolog", "BUP").
    illness += [
        h
        for h in a.within("health", start, end)
        if not any(p[0] < h[1] and h[0] < p[1] for p in appointment)
    ]
    if intent == "absence":
        illness = [s for s in illness if not _negated(norm, s[0], sentence_start(s[0]))]
    if illness or (intent == "absence_cancel" and a.within("recovered", start, end)):
        return "illness"
    if appointment:
        return "appointment"
    if a.within("other", start, end):
        return "other"
    if not _REASON_WORDS.isdisjoint(norm[start:end].split()) and _REASON_MARKER.search(
        norm, start, end
    ):
        return "other"
    return "unspecified"


def _units(a: _Analysis, start: int, end: int) -> set[Unit]:
    both = bool(a.within("both_units", start, end))
    school = bool(a.within("school", start, end))
    sfo = bool(a.within("sfo", start, end))
    if both or (school and sfo):
        return {"school", "sfo"}
    if school:
        return {"school"}
    if sfo:
        return {"sfo"}
    return set()


_ROLE_RANK = {"range": 0, "verb": 0, "prep": 1, "appointment": 2}


def _times(a: _Analysis, start: int, end: int, cue_only: bool) -> tuple[time | None, time | None]:
    """The absence's from/to times.

    A range or a verb beats a preposition, which beats a bare appointment time; among
    equals the first one counts.
    """
    best: dict[str, tuple[int, time]] = {}
    for tok in a.tokens_in(start, end):
        role = a.time_roles.get(tok.start) if tok.kind == "time" else None
        if role is None:
            continue
        side, how = role.split("-", 1)
        if how != "verb" and how != "range" and cue_only:
            sent = a.sentences[a.sentence_index(tok.start)] if a.sentences else None
            if sent is None or not (
                sent.positive or sent.weak or sent.cancel or sent.negated_after_all
            ):
                continue
        value = tok.value[1]
        assert isinstance(value, time)
        rank = _ROLE_RANK[how]
        if side not in best or rank < best[side][0]:
            best[side] = (rank, value)
    from_t = best["from"][1] if "from" in best else None
    to_t = best["to"][1] if "to" in best else None
    return from_t, to_t


def _cue_sentence_tokens(a: _Analysis) -> list[Token]:
    """Dates in sentences that report something, when any of those carries a date."""
    picked: list[Token] = []
    for sent in a.sentences:
        if sent.positive or sent.weak or sent.cancel or sent.negated_after_all or sent.recovered:
            picked.extend(a.tokens_in(sent.start, sent.end))
    if any(t.kind != "time" for t in picked):
        return picked
    return a.tokens


def interpret(
    text: str,
    received_at: datetime,
    children: Iterable[Child],
    *,
    timezone: str = "Europe/Oslo",
    is_school_day: SchoolDayRule | None = None,
    closed_days: ClosedDays | None = None,
) -> Interpretation:
    """Understand one parent message received at `received_at` from a guardian of `children`.

    `is_school_day` replaces the whole school-day rule; `closed_days` (a predicate or a
    collection of dates) only adds a unit's closed days to the default rule (weekends and
    Norwegian public holidays). Both affect the first absent day, "N dager" and the
    periods; dates the parent names ("i morgen", "28.11") are kept as named.
    """
    kids = list(children)
    rule = is_school_day or school_day_rule(closed_days)
    norm = normalize(text)
    words = split_words(norm)
    lexicon = scan(norm, words)
    found = find_sensitive(text, norm, lexicon)
    categories: tuple[Category, ...] = tuple(sorted({c for _, _, c in found}))
    redacted = apply_redaction(text, found)
    keyword = keyword_intent(text)
    if keyword is not None:
        return Interpretation(keyword, (), (), categories, redacted, tuple(found))
    a = _analyse(text, norm, words, lexicon)
    intent = _intent(a)
    if intent == "message":
        return Interpretation(intent, (), (), categories, redacted, tuple(found))

    local = received_at.astimezone(ZoneInfo(timezone)) if received_at.tzinfo else received_at
    received = local.date()
    first_day = first_absent_day(received, local.time() < _CUTOFF, rule)

    covered = sorted(sp for spans in lexicon.values() for sp in spans)
    covered_starts = [sp[0] for sp in covered]
    reach: list[int] = []  # reach[i]: the furthest end among covered[: i + 1]
    for _, e in covered:
        reach.append(max(e, reach[-1]) if reach else e)

    def in_lexicon(start: int, end: int) -> bool:
        i = bisect_right(covered_starts, start)
        return i > 0 and reach[i - 1] >= end

    mentions, unknown = find_mentions(
        text, words, kids, lexicon.get("all_children", []), in_lexicon
    )
    clarify: set[Slot] = set()
    groups = _groups(a, mentions)
    # With several groups each keeps to its own stretch of text, even if only one is absent.
    single = len(groups) <= 1
    if len(groups) > 1:
        verdicts = [_segment_reports(a, g.start, g.end, intent) for g in groups]
        chosen = [g for g, v in zip(groups, verdicts, strict=True) if v]
        groups = chosen or groups
    if not groups:
        if len(kids) == 1 and not unknown:
            groups = [_Group(frozenset({0}), 0, len(norm))]
        else:
            clarify.add("child")

    whole_day = bool(a.spans["whole_day"])
    global_tokens = _cue_sentence_tokens(a)
    absences: list[AbsenceSpan] = []
    seen: set[int] = set()
    for g in groups:
        start, end = (0, len(norm)) if single else (g.start, g.end)
        if all(idx in seen for idx in g.indexes):
            continue
        dated = [t for t in a.tokens_in(start, end) if t.kind != "time"]
        if single or not dated:
            dated = [t for t in global_tokens if t.kind != "time"]
        span = resolve_dates(norm, dated, received, first_day, rule)
        if span.bad:
            clarify.add("date")
            continue
        from_t, to_t = _times(a, start, end, cue_only=True)
        part_day = (from_t or to_t) is not None and span.start == span.end and not whole_day
        if not part_day:
            from_t = to_t = None
        named = _units(a, start, end)
        reason = _reason(a, start, end, intent)
        if not single and a.within("also", start, end):
            # "Kari også": the same as said before, where this stretch says nothing itself.
            named = named or _units(a, 0, start)
            if reason == "unspecified":
                reason = _reason(a, 0, start, intent)
        for idx in sorted(g.indexes):
            if idx in seen or idx >= len(kids):
                continue
            seen.add(idx)
            child = kids[idx]
            units = _child_units(child, named, part_day, from_t, to_t)
            if not units:
                clarify.add("unit")
                continue
            absences.append(
                AbsenceSpan(child.name, units, span.start, span.end, from_t, to_t, reason)
            )
    if not groups and any(t.kind == "bad" for t in global_tokens):
        clarify.add("date")
    if clarify:
        absences = []
    return Interpretation(
        intent,
        tuple(absences),
        tuple(sorted(clarify)),
        categories,
        redacted,
        tuple(found),
    )


def _child_units(
    child: Child, named: set[Unit], part_day: bool, from_t: time | None, to_t: time | None
) -> tuple[Unit, ...]:
    enrolled = set(child.units)
    if named:
        wanted = named
    elif part_day:
        times = [t for t in (from_t, to_t) if t is not None]
        outside = all(t < _SCHOOL_START or t > _SCHOOL_END for t in times)
        wanted = {"sfo"} if outside and "sfo" in enrolled else {"school"}
    else:
        wanted = enrolled
    return tuple(u for u in UNITS if u in wanted and u in enrolled)
