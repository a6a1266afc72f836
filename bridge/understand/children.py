"""Which of the guardian's children a message is about (SPEC 6, children)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .dates import MONTHS, NUMBER_WORDS, WEEKDAYS
from .lexicon import words as lexicon_words
from .model import Child
from .text import Word, fold, within_one_edit

# Words after which a capitalised unknown word reads as the subject: "Mats er syk".
_SUBJECT_VERBS = frozenset(
    "er var blir ble har hadde skal må kan vil får fikk trenger føler kommer går drar "
    "kjem vert treng is was will won wont has had can cannot needs feels gets got isn "
    "wasn".split()
)
_NOT_NAMES = frozenset(WEEKDAYS) | frozenset(MONTHS) | frozenset(NUMBER_WORDS)


@dataclass(frozen=True, slots=True)
class Mention:
    """A place in the text that names children: indexes into `children`, or all of them."""

    start: int
    end: int
    indexes: frozenset[int]


def _keys(children: list[Child]) -> tuple[dict[str, set[int]], list[str]]:
    """Folded first names (and the first part of a double name) -> child indexes; surnames."""
    by_first: dict[str, set[int]] = {}
    surnames: list[str] = []
    for i, child in enumerate(children):
        parts = child.name.split()
        first = fold(parts[0]) if parts else ""
        by_first.setdefault(first, set()).add(i)
        if "-" in first:
            # "Anne-Marie" is split into two words like the text is.
            by_first.setdefault(first.split("-")[0], set()).add(i)
        surnames.append(fold(parts[-1]) if len(parts) > 1 else "")
    return by_first, surnames


def find_mentions(
    text: str,
    words: list[Word],
    children: list[Child],
    all_spans: list[tuple[int, int]],
    is_lexicon_word: Callable[[int, int], bool],
) -> tuple[list[Mention], bool]:
    """Child mentions in text order, and whether an unknown name is the subject of a clause.

    `words` are the normalized text's words (same offsets as `text`); `is_lexicon_word`
    says whether a span is covered by a lexicon match (such a word is no name).
    """
    by_first, surnames = _keys(children)
    # Every spelling that names a child outright: first name, possessive "Olas".
    names = {first + "s": idx for first, idx in by_first.items()}
    names.update(by_first)
    typo_names = [(i, f) for f, idx in by_first.items() if len(f) >= 4 for i in idx]
    common = lexicon_words("common")
    all_lower = text == text.lower()
    everyone = frozenset(range(len(children)))
    mentions = [Mention(s, e, everyone) for s, e in all_spans]
    unknown = False
    count = len(words)
    for n, (start, end, lower) in enumerate(words):
        exact = names.get(lower)
        if exact is None and not lower.isascii():
            exact = names.get(fold(lower))
        if exact:
            if len(exact) > 1 and n + 1 < count:
                # The same first name twice: the surname that follows decides.
                surname = fold(words[n + 1][2])
                exact = {i for i in exact if surnames[i] == surname} or exact
            mentions.append(Mention(start, end, frozenset(exact)))
            continue
        first_char = text[start]
        if not (all_lower or first_char.isupper()) or len(lower) < 3:
            continue
        word = fold(lower)
        if word in common or word in _NOT_NAMES or word.isdigit():
            continue
        if is_lexicon_word(start, end):
            continue
        bases = (word, word[:-1]) if word[-1] == "s" else (word,)
        typo = {
            i
            for i, first in typo_names
            for b in bases
            if abs(len(b) - len(first)) <= 1 and within_one_edit(b, first)
        }
        # In a text without capitals any word could be a name: there a misspelt name
        # must at least be the subject ("nroa er syk").
        subject = n + 1 < count and words[n + 1][2] in _SUBJECT_VERBS
        if len(typo) == 1 and (first_char.isupper() or subject):
            mentions.append(Mention(start, end, frozenset(typo)))
            continue
        acronym = text[start:end].isupper() and end - start <= 4
        if first_char.isupper() and not acronym and not unknown:
            # "Mats er syk": an unknown name as the subject of the report.
            unknown = subject
    mentions.sort(key=lambda x: x.start)
    return mentions, unknown
