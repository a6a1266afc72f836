"""Keep only the new text of an e-mail reply: drop quoted mail, forwards and signatures.

A Python port of the approach of Discourse's email_reply_trimmer (MIT licence, Copyright (c)
Discourse, https://github.com/discourse/email_reply_trimmer): every line gets a one-letter
kind, and rules written over the string of kinds decide which lines stay. The kinds are

    e empty, d delimiter ("--", "____"), s mobile signature ("Sendt fra min iPhone"),
    b embedded-mail marker ("On … wrote:", "-----Original Message-----"),
    h mail header ("Fra: …", "Sendt: …"), q quote ("> …"), t text,
    c/x/p code fence that opens/closes/does both.

Differences from the Ruby original (version 0.1.13):

- more languages and mail clients (see `bridge.email_reply_patterns`), and reply headers
  must hold a digit (a date), so "On Monday the teacher said:" stays text;
- the answer is made of the sender's lines as written: invisible format characters, odd
  spaces and quote marks like "Richard>" or "|" are normalised only to classify a line,
  and the first kept line keeps its indentation;
- a lone header-like line between lines of text ("Til: alle i 3B") is text, and a mail
  that is nothing but one quote is kept whole rather than cut to its first line;
- every step takes time linear in the size of the mail: the original's regexes over the
  string of kinds and over the whole text can backtrack quadratically on hostile input.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections import defaultdict, deque
from collections.abc import Callable, Sequence
from itertools import accumulate

from bridge import email_reply_patterns as P

__all__ = ["strip_reply"]

EMPTY, DELIMITER, SIGNATURE, EMBEDDED, HEADER, QUOTE, TEXT = "e", "d", "s", "b", "h", "q", "t"
CODE_OPEN, CODE_CLOSE, CODE_EITHER = "c", "x", "p"

# Invisible format characters (bidi marks, zero-width ones, BOM, soft hyphen) vanish and
# every kind of space becomes a plain one, but only in the copy used for classifying.
_INVISIBLE = (
    "\u00ad\u061c\u180e\u200b\u200c\u200d\u200e\u200f\u202a\u202b\u202c\u202d\u202e"
    "\u2060\u2061\u2062\u2063\u2064\u2066\u2067\u2068\u2069\ufeff"
)
_SPACES = (
    "\u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a"
    "\u202f\u205f\u3000"
)
_NORMALISE = str.maketrans(
    {
        **dict.fromkeys(_INVISIBLE, None),
        **dict.fromkeys(_SPACES, " "),
        "\uff1a": ":",  # the full-width colon of Chinese and Japanese reply headers
    }
)

# str.translate looks every character up in a dict: slow, so only run it where it changes something.
_ODD_CHARACTERS = re.compile(f"[{_INVISIBLE}{_SPACES}\uff1a]")

# A code block: an opening fence, then text, empty lines or delimiters, then a closing fence.
_CODE_BLOCK = re.compile(r"[cp][etd]*[xp]")
_TEXT_THEN_MARKER = re.compile(r"te*b")
_TEXT_THEN_HEADERS = re.compile(r"t[eq]*h{3,}")
_LONE_HEADER = re.compile(r"(?<=t)(e*)h(?=e*t)")

# Preprocessing, all on single lines.
_PGP_SIGNED = "-----BEGIN PGP SIGNED MESSAGE-----"
_PGP_HASH = re.compile(r"^Hash: \w+$")
_PGP_SIGNATURE_BEGIN = "-----BEGIN PGP SIGNATURE-----"
_PGP_SIGNATURE_END = "-----END PGP SIGNATURE-----"
_UNSUBSCRIBE = re.compile(r"^Unsubscribe: .+@.", re.IGNORECASE)
_ALIAS_QUOTE = re.compile(r'^.*?>{5} "[^"]{1,300}" == .{1,300}? writes:')
_ENCLOSED_NAMED_OPEN = re.compile(r"^>>> ?(.+?) ?>>>$")
_ENCLOSED_OPEN = re.compile(r"^>{4,}[ \t]*$")
_ENCLOSED_CLOSE = re.compile(r"^<{4,}[ \t]*$")
_ENCLOSED_NAMED_CLOSE = re.compile(r"^<<< ?(.+?) ?<<<$")
_QUOTE_PREFIX = re.compile(r"^(?:[ \t]*[^\W\d_]*[>|])+")
_QUOTE_MARK = re.compile(r"[^\W\d_]+>|\|")
_YEAR = re.compile(r"(?<!\d)\d{4}")
_DATE = re.compile(r"(?<!\d)(?:\d{4}|\d{1,2}[./-]\d{1,2}[./-]\d{2,4})(?!\d)")
# A reply header spread over more lines than this is left alone, as upstream does.
_MAX_HEADER_LINES = 5


def strip_reply(text: str) -> str:
    """Return the new text of one plain-text e-mail body, without quotes, forwards, signatures."""
    if not _normalise(text).strip():
        return ""
    lines = _preprocess(text)
    norms = [_classifiable(line) for line in lines]
    kinds: dict[str, str] = {}
    lines, norms = _join_split_markers(lines, norms, kinds)
    pattern = "".join([_classify(norm, kinds) for norm in norms])
    # Blank lines at either end go; the first kept line keeps its indentation (code, poems).
    return "\n".join(_trim_blank_ends([lines[i] for i in _select(pattern)])).rstrip()


def _normalise(line: str) -> str:
    return line.translate(_NORMALISE) if _ODD_CHARACTERS.search(line) else line


def _classifiable(line: str) -> str:
    """Return the copy of a line used for classifying it; the answer keeps the original."""
    line = _normalise(line)
    # "Richard> text", "C>" and "| text" are quote marks too: they become ">".
    if ">" in line or "|" in line:
        # Only the start of a line can hold quote marks; the bound keeps ">" * 10**6 cheap.
        m = _QUOTE_PREFIX.match(line, 0, 200)
        if m:
            return _QUOTE_MARK.sub(">", m.group()) + line[m.end() :]
    return line


# --- preprocessing --------------------------------------------------------------------------


def _preprocess(text: str) -> list[str]:
    """Split the body into lines and undo mail-client quirks that hide a line's kind."""
    # A byte-order mark at the start is an encoding artefact, not text.
    text = text.removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
    lines = text.split("\n")
    lines = _drop_pgp(lines)
    lines = _trim_blank_ends(lines)
    lines = _drop_unsubscribe(lines)
    lines = [_ALIAS_QUOTE.sub("", line) if "writes:" in line else line for line in lines]
    lines = _unwrap_enclosed_quotes(lines)
    return _trim_blank_ends(lines)


def _trim_blank_ends(lines: list[str]) -> list[str]:
    """Drop blank lines (invisible characters count as blank) at both ends."""
    start, end = 0, len(lines)
    while start < end and not _normalise(lines[start]).strip():
        start += 1
    while end > start and not _normalise(lines[end - 1]).strip():
        end -= 1
    return lines[start:end]


def _drop_pgp(lines: list[str]) -> list[str]:
    """Remove a PGP-signed header at the top and the signature block."""
    first = next((i for i, line in enumerate(lines) if line.strip()), None)
    if first is not None and lines[first].strip() == _PGP_SIGNED:
        rest = first + 1
        if rest < len(lines) and _PGP_HASH.match(lines[rest]):
            rest += 1
        lines = lines[rest:]
    try:
        begin = lines.index(_PGP_SIGNATURE_BEGIN)
    except ValueError:
        return lines
    ends = [i for i in range(begin + 1, len(lines)) if lines[i].startswith(_PGP_SIGNATURE_END)]
    if not ends:
        return lines
    last = ends[-1]
    tail = lines[last][len(_PGP_SIGNATURE_END) :]
    return [*lines[:begin], *([tail] if tail else []), *lines[last + 1 :]]


def _drop_unsubscribe(lines: list[str]) -> list[str]:
    """Remove a mailing list's "Unsubscribe: …" footer at the very end."""
    if lines and _UNSUBSCRIBE.match(lines[-1]):
        return _trim_blank_ends(lines[:-1])
    if len(lines) >= 2 and _UNSUBSCRIBE.match(lines[-2]) and "http:" in lines[-1][1:-1]:
        return _trim_blank_ends(lines[:-2])
    return lines


def _unwrap_enclosed_quotes(lines: list[str]) -> list[str]:
    """Turn ">>> name >>> … <<< name <<<" and ">>>> … <<<<" blocks into "> " quotes."""
    if not any(line.startswith(">>>") for line in lines):
        return lines
    named_closers: dict[str, deque[int]] = defaultdict(deque)
    closers: deque[int] = deque()
    for i, line in enumerate(lines):
        if line.startswith("<<<"):
            if _ENCLOSED_CLOSE.match(line):
                closers.append(i)
            m = _ENCLOSED_NAMED_CLOSE.match(line)
            if m:
                named_closers[m.group(1)].append(i)
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        close = None
        m = _ENCLOSED_NAMED_OPEN.match(line)
        if m:
            close = _next_after(named_closers[m.group(1)], i + 1)
        if close is None and _ENCLOSED_OPEN.match(line):
            close = _next_after(closers, i + 1)
        if close is None:
            out.append(line)
            i += 1
            continue
        out.extend("> " + inner for inner in lines[i + 1 : close])
        i = close + 1
    return out


def _next_after(queue: deque[int], after: int) -> int | None:
    """Pop indices before `after` off the queue and return the first one left, if any."""
    while queue and queue[0] <= after:
        queue.popleft()
    return queue[0] if queue else None


def _join_split_markers(
    lines: list[str], norms: list[str], kinds: dict[str, str]
) -> tuple[list[str], list[str]]:
    """Join a reply header that the sender's client wrapped over up to five lines."""
    # Regex passes over the whole text find the few lines where such a header may start.
    text = "\n".join(norms)
    starts = list(accumulate((len(norm) + 1 for norm in norms), initial=0))
    candidates = sorted(
        {bisect_right(starts, m.start()) - 1 for r in P.MAY_OPEN_MARKER for m in r.finditer(text)}
    )
    out_lines: list[str] = []
    out_norms: list[str] = []
    done = 0  # lines before `done` are in the output already
    for i in candidates:
        if i < done or len(norms[i]) > P.MAX_MARKER_LINE:
            continue
        j = _split_marker_end(norms, i, kinds)
        if j is not None:
            out_lines += lines[done:i]
            out_norms += norms[done:i]
            out_lines.append(_join(lines[i : j + 1]))
            out_norms.append(_join(norms[i : j + 1]))
            done = j + 1
    if not done:
        return lines, norms
    return out_lines + lines[done:], out_norms + norms[done:]


def _join(parts: Sequence[str]) -> str:
    """Join lines as upstream does: newlines and the next line's leading blanks become " "."""
    return " ".join([parts[0].rstrip(), *(p.strip() for p in parts[1:] if p.strip())])


def _split_marker_end(norms: list[str], i: int, kinds: dict[str, str]) -> int | None:
    """Return the last line of a reply header that starts on line `i` and spans lines."""
    first = norms[i]
    kind = _classify(first, kinds)
    # A line that is a header already may still be the start of a longer one (a Dutch
    # "… schreef X <x@y> het" + "volgende geschreven:"). A line ending with a colon is taken
    # for a whole header or for none: that also keeps lines of "On 2016:" from costing much.
    complete = kind == EMBEDDED
    if len(first) > P.MAX_MARKER_LINE or kind not in "tqb" or first.rstrip().endswith(":"):
        return None
    # The joined lines that could be a header: those ending like one, in upstream's order.
    windows: list[tuple[int, str]] = []
    parts = [first.rstrip()]
    size = len(parts[0])
    for j in range(i + 1, min(len(norms), i + _MAX_HEADER_LINES)):
        part = norms[j].strip()
        if not part:
            continue
        if _classify(norms[j], kinds) == EMBEDDED:
            break  # a header of its own: not the end of this one
        parts.append(part)
        size += len(part) + 1
        if size > P.MAX_MARKER_LINE:
            break
        if P.may_end_marker(part):
            windows.append((j, " ".join(parts)))
    if not windows:
        return None
    families: list[Callable[[str], bool]] = []
    if P.ON_DATE_OPENER.match(first):
        families += [P.on_date_someone_wrote, P.on_date_wrote_someone]
    if P.WROTE_ON_OPENER.search(first):
        families.append(P.someone_wrote_on_date)
    if _DATE.search(first):
        families.append(P.date_someone_wrote)
        if P.on_date_wrote_someone not in families:
            families.append(P.on_date_wrote_someone)
        # The address's "<" ends the first line or begins the next one, as Gmail wraps it.
        nxt = norms[i + 1].lstrip() if i + 1 < len(norms) else ""
        if _YEAR.search(first) and (first.count("<") > first.count(">") or nxt.startswith("<")):
            families.append(P.date_someone_email)
    for matches in families:
        for j, joined in windows:
            if matches(joined) and (not complete or joined.endswith(":")):
                return j
    return None


# --- classification -------------------------------------------------------------------------


def _classify(norm: str, cache: dict[str, str]) -> str:
    """Return the one-letter kind of a normalised line (cached: mails repeat lines)."""
    kind = cache.get(norm)
    if kind is None:
        kind = cache[norm] = _kind(norm)
    return kind


def _kind(line: str) -> str:
    """Return the kind of a normalised line; the order of the tests matters, as upstream."""
    if not line.strip():
        return EMPTY
    if P.DELIMITER.match(line):
        return DELIMITER
    if _is_signature(line):
        return SIGNATURE
    if P.is_embedded(line):
        return EMBEDDED
    if P.is_email_header(line):
        return HEADER
    if P.QUOTE.match(line):
        return QUOTE
    if line.startswith("```"):
        return CODE_EITHER if P.CODE_CLOSE.match(line) else CODE_OPEN
    if P.CODE_CLOSE.match(line):
        return CODE_CLOSE
    return TEXT


def _is_signature(line: str) -> bool:
    """Whether a line is a mobile or mail-client signature ("Sendt fra min iPhone")."""
    if len(line) > 4 * P.MAX_SIGNATURE_LINE:
        return False
    if "](" in line:
        line = P.MARKDOWN_LINK.sub(r"\1", line)
    return len(line) <= P.MAX_SIGNATURE_LINE and P.SIGNATURE.match(line) is not None


# --- the rules over the string of kinds -----------------------------------------------------


def _select(pattern: str) -> list[int]:
    """Return the indices of the lines to keep, given one kind letter per line."""
    idx = list(range(len(pattern)))

    # Delimiters inside code blocks do not count: upper-case the whole block.
    pattern = _CODE_BLOCK.sub(lambda block: block.group().upper(), pattern)

    # Everything after the first delimiter ("--", "____") is a signature or a quoted mail.
    cut = pattern.find(DELIMITER)
    if cut >= 0:
        pattern, idx = pattern[:cut], idx[:cut]

    pattern, idx = _drop(pattern, idx, SIGNATURE)

    # The reply is at the end, below a quoted mail: "b", no text, then only text.
    if pattern.startswith(EMBEDDED):
        first_text = pattern.find(TEXT)
        if first_text >= 2 and not pattern[first_text:].strip("et"):
            return idx[first_text:]

    # Text, then a marker not followed by any quote: keep up to the text.
    m = _TEXT_THEN_MARKER.search(pattern, pattern.rfind(QUOTE) + 1)
    if m:
        pattern, idx = pattern[: m.start() + 1], idx[: m.start() + 1]

    # Text, then a marker followed by a quoted mail and at most 6 lines of text.
    at = _text_before_quoted_mail(pattern)
    if at is not None:
        pattern, idx = pattern[: at + 1], idx[: at + 1]

    # The mail ends with quotes and markers: drop them, keeping the line before them. With
    # nothing before them upstream keeps their first line; a mail that is one quote and
    # nothing else is kept whole here, as the best answer for a parent who only quoted.
    tail = len(pattern.rstrip("qbe"))
    if tail < len(pattern) and (tail > 0 or EMBEDDED in pattern):
        at = tail - 1 if tail > 0 and pattern[tail - 1] == TEXT else tail
        pattern, idx = pattern[: at + 1], idx[: at + 1]

    pattern, idx = _drop(pattern, idx, EMBEDDED)
    pattern = _spread_header_block(pattern)

    # Text, then a block of at least 3 headers: keep up to the text.
    m = _TEXT_THEN_HEADERS.search(pattern)
    if m:
        pattern, idx = pattern[: m.start() + 1], idx[: m.start() + 1]

    # Other header blocks go; a lone "Til: alle i 3B" between lines of text is text.
    pattern = _LONE_HEADER.sub(lambda lone: lone.group(1) + TEXT, pattern)
    pattern, idx = _drop(pattern, idx, HEADER)

    # Quotes at the end go when there is text.
    if TEXT in pattern:
        tail = len(pattern.rstrip("eq"))
        pattern, idx = pattern[:tail], idx[:tail]
    return idx


def _drop(pattern: str, idx: list[int], kind: str) -> tuple[str, list[int]]:
    """Remove the lines of one kind."""
    if kind not in pattern:
        return pattern, idx
    keep = [k for k, c in enumerate(pattern) if c != kind]
    return "".join(pattern[k] for k in keep), [idx[k] for k in keep]


def _text_before_quoted_mail(pattern: str) -> int | None:
    """Find upstream's /te*b[eqbh]*([te]*)$/ (with fewer than 7 "t" in the group) in O(n)."""
    # The match ends in the longest tail of [te]; before it, a run of [eqbh] holding the "b";
    # the "t" must sit right before that run, followed by "e"s up to a "b".
    tail = len(pattern.rstrip("te"))
    run = tail
    while run > 0 and pattern[run - 1] in "eqbh":
        run -= 1
    if run == 0 or pattern[run - 1] != TEXT:
        return None
    k = run
    while k < tail and pattern[k] == EMPTY:
        k += 1
    if k >= tail or pattern[k] != EMBEDDED or pattern.count(TEXT, tail) >= 7:
        return None
    return run - 1


def _spread_header_block(pattern: str) -> str:
    """Mark a header block wrapped over lines as headers: upstream's /h+[hte]+h+e/ in O(n)."""
    n = len(pattern)
    start = pattern.find(HEADER)
    while start >= 0:
        run_end = start
        while run_end < n and pattern[run_end] == HEADER:
            run_end += 1
        block_end = run_end
        while block_end < n and pattern[block_end] in "hte":
            block_end += 1
        # The match ends at the last "he" inside this [hte] block that leaves at least one
        # line between the leading headers and it ...
        last = pattern.rfind("he", run_end + 1, block_end)
        if last >= 0:
            end = last + 1
        # ... or, failing that, inside the leading run itself ("hhhe").
        elif run_end - start >= 3 and run_end < n and pattern[run_end] == EMPTY:
            end = run_end
        else:
            # No later start inside this block can match either.
            start = pattern.find(HEADER, block_end)
            continue
        return pattern[:start] + HEADER * (end - start + 1) + pattern[end + 1 :]
    return pattern
