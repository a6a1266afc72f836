"""Load the reviewable word lists in `lexicon/` and match them against text.

File format (also in lexicon/README.md): one term or phrase per line, `#` starts a
comment. Matching ignores case and respects word boundaries. Inside a term:

- a trailing `*` lets the last word go on (`influensa*` matches `influensaen`);
- a leading `*` requires at least one letter in front (`*feber` matches
  `skarlagensfeber`, not `feber` itself, so list `feber` too);
- a `*` standing alone is any one word (`vondt i *` matches `vondt i magen`);
- a hyphen or apostrophe inside a term also matches a space (`rs-virus`, `rs virus`);
- a line starting with `!` is an exception: text it matches is never a match of that
  category (`!dårlig råd` keeps "dårlig råd" out of the illness words).

All categories are indexed together by word, so one pass over a message's words finds
every category's matches (a regular expression per category was ten times slower).
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from functools import cache
from importlib import resources

LANGUAGES = ("nb", "nn", "en")

EXACT, PREFIX, SUFFIX, INFIX, ANY = range(5)

_WORD = re.compile(r"\w+")
# What may stand between two words of one phrase: spaces, a hyphen, an apostrophe.
_GAP = re.compile(r"[ \t\-'&]+")

Span = tuple[int, int]
WordPattern = tuple[int, str]


@dataclass(frozen=True, slots=True)
class _Term:
    category: str
    words: tuple[WordPattern, ...]


def _parse(term: str) -> tuple[WordPattern, ...]:
    """Split a lexicon term into word patterns (kind, core)."""
    out: list[WordPattern] = []
    for word in term.split():
        if word == "*":
            out.append((ANY, ""))
            continue
        lead, trail = word.startswith("*"), word.endswith("*")
        parts = _WORD.findall(word.strip("*"))
        for i, part in enumerate(parts):
            first, last = i == 0, i == len(parts) - 1
            if first and lead and last and trail:
                kind = INFIX
            elif first and lead:
                kind = SUFFIX
            elif last and trail:
                kind = PREFIX
            else:
                kind = EXACT
            out.append((kind, part))
    return tuple(out)


def _word_ok(pattern: WordPattern, word: str) -> bool:
    kind, core = pattern
    if kind == EXACT:
        return word == core
    if kind == PREFIX:
        return word.startswith(core)
    if kind == SUFFIX:
        return len(word) > len(core) and word.endswith(core)
    if kind == INFIX:
        return core in word[1:]
    return True


class LexiconIndex:
    """Every category's terms, indexed by the pattern of their first word(s)."""

    def __init__(self, terms: list[_Term]) -> None:
        self.exact: dict[str, list[_Term]] = defaultdict(list)
        self.prefix: dict[str, list[_Term]] = defaultdict(list)
        self.suffix: dict[str, list[_Term]] = defaultdict(list)
        self.other: list[_Term] = []
        # Phrases whose first two words are plain words, by those two words: frequent
        # first words ("er", "ikke") then cost one lookup instead of a check per phrase.
        self.pairs: dict[tuple[str, str], list[_Term]] = defaultdict(list)
        for term in terms:
            kind, core = term.words[0]
            if kind == EXACT and len(term.words) > 1 and term.words[1][0] == EXACT:
                self.pairs[(core, term.words[1][1])].append(term)
            elif kind == EXACT:
                self.exact[core].append(term)
            elif kind == PREFIX:
                self.prefix[core].append(term)
            elif kind == SUFFIX:
                self.suffix[core].append(term)
            else:
                self.other.append(term)
        self.pair_firsts = frozenset(first for first, _ in self.pairs)
        self.prefix_lengths = sorted({len(k) for k in self.prefix})
        self.suffix_lengths = sorted({len(k) for k in self.suffix})
        self._cache: dict[str, tuple[tuple[str, ...], tuple[_Term, ...]]] = {}

    def _candidates(self, word: str) -> tuple[tuple[str, ...], tuple[_Term, ...]]:
        """(categories of one-word terms matching `word`, phrases that may start with it)."""
        # Messages reuse a small vocabulary, so remembering each word's terms pays off.
        found = self._cache.get(word)
        if found is None:
            if len(self._cache) > 100_000:
                self._cache.clear()
            terms = self._lookup(word)
            singles = tuple(t.category for t in terms if len(t.words) == 1)
            phrases = tuple(t for t in terms if len(t.words) > 1)
            found = self._cache[word] = (singles, phrases)
        return found

    def _lookup(self, word: str) -> list[_Term]:
        found: list[_Term] = list(self.exact.get(word, ()))
        n = len(word)
        for length in self.prefix_lengths:
            if length > n:
                break
            hit = self.prefix.get(word[:length])
            if hit:
                found.extend(hit)
        for length in self.suffix_lengths:
            if length >= n:
                break
            hit = self.suffix.get(word[n - length :])
            if hit:
                found.extend(hit)
        for term in self.other:
            if _word_ok(term.words[0], word):
                found.append(term)
        return found

    def scan(
        self, norm: str, tokens: list[tuple[int, int, str]] | None = None
    ) -> dict[str, list[Span]]:
        """All matches in lower-cased text per category, exceptions applied."""
        if tokens is None:
            tokens = [(m.start(), m.end(), m.group()) for m in _WORD.finditer(norm)]
        count = len(tokens)
        joined: list[bool | None] = [None] * count

        def follows(j: int) -> bool:
            """Word j continues the phrase of word j-1 (only spaces or a hyphen between)."""
            ok = joined[j]
            if ok is None:
                ok = joined[j] = _GAP.fullmatch(norm, tokens[j - 1][1], tokens[j][0]) is not None
            return ok

        cache = self._cache
        pair_firsts = self.pair_firsts
        raw: dict[str, list[Span]] = {}
        for i, (start, end, word) in enumerate(tokens):
            found = cache.get(word)
            if found is None:
                found = self._candidates(word)
            singles, phrases = found
            if singles:
                for category in singles:
                    raw.setdefault(category, []).append((start, end))
            if i + 1 == count:
                continue
            if word in pair_firsts:
                paired = self.pairs.get((word, tokens[i + 1][2]))
                if paired and follows(i + 1):
                    phrases = phrases + tuple(paired)
            for term in phrases:
                patterns = term.words
                last = i + len(patterns) - 1
                if last >= count:
                    continue
                for k in range(1, len(patterns)):
                    j = i + k
                    if not follows(j) or not _word_ok(patterns[k], tokens[j][2]):
                        break
                else:
                    raw.setdefault(term.category, []).append((start, tokens[last][1]))
        result: dict[str, list[Span]] = {}
        for category, spans in raw.items():
            if category[0] == "!":
                continue
            picked = _leftmost_longest(spans) if len(spans) > 1 else spans
            blocked = raw.get("!" + category)
            if blocked:
                picked = [
                    s for s in picked if not any(s[0] < b[1] and b[0] < s[1] for b in blocked)
                ]
            if picked:
                result[category] = picked
        return result


def _leftmost_longest(spans: list[Span]) -> list[Span]:
    picked: list[Span] = []
    for span in sorted(spans, key=lambda s: (s[0], -s[1])):
        if not picked or span[0] >= picked[-1][1]:
            picked.append(span)
    return picked


def _lines(name: str) -> list[str]:
    out: list[str] = []
    folder = resources.files("bridge.understand").joinpath("lexicon")
    for lang in LANGUAGES:
        res = folder.joinpath(f"{name}.{lang}.txt")
        if not res.is_file():
            continue
        for raw in res.read_text(encoding="utf-8").splitlines():
            line = raw.split("#", 1)[0].strip().lower()
            if line:
                out.append(line)
    return out


def categories() -> list[str]:
    """The lexicon categories present in the package, from the file names."""
    folder = resources.files("bridge.understand").joinpath("lexicon")
    names = {
        entry.name.split(".")[0]
        for entry in folder.iterdir()
        if entry.name.endswith(".txt") and entry.name.count(".") == 2
    }
    return sorted(names - {"common"})


@cache
def index() -> LexiconIndex:
    """One index over every category (loaded once per process)."""
    terms: list[_Term] = []
    for name in categories():
        for line in _lines(name):
            category = name
            if line.startswith("!"):
                category, line = "!" + name, line[1:].strip()
            words = _parse(line)
            if words:
                terms.append(_Term(category, words))
    return LexiconIndex(terms)


def scan(norm: str, tokens: list[tuple[int, int, str]] | None = None) -> dict[str, list[Span]]:
    """Every category's matches in normalized text (`tokens`: its words, if already split)."""
    return index().scan(norm, tokens)


@dataclass(frozen=True, slots=True)
class Matcher:
    """One category, for callers that need just that one."""

    name: str

    def spans(self, norm: str) -> list[Span]:
        """(start, end) of every match in normalized text, exceptions removed."""
        return scan(norm).get(self.name, [])

    def search(self, norm: str) -> bool:
        """Whether any term matches."""
        return bool(self.spans(norm))


@cache
def matcher(name: str) -> Matcher:
    """The matcher for lexicon category `name`."""
    return Matcher(name)


@cache
def words(name: str) -> frozenset[str]:
    """A lexicon as a plain set of lower-case words (lines may hold several words)."""
    return frozenset(w for line in _lines(name) for w in line.split())
