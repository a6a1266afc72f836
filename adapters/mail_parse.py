"""Reading inbound mail: raw bytes -> a parsed message, its best plain text, its attachments.

Pure functions, no I/O; `adapters.mail_in` runs them in a worker thread. What they promise:

- Bounded work. The stdlib parser (`policy.default`) spends about a millisecond per MIME
  part on header parsing, and its nesting is recursive, so `parse_mail` counts the parts
  and the multipart containers in the raw bytes first and raises `MimeTooComplex` past
  `MAX_MIME_PARTS` / `MAX_MULTIPARTS`: a MIME bomb costs milliseconds, not minutes.
- Never a crash on odd input. Header values and charsets come from strangers: every header
  read falls back to the raw value, every decode falls back to a charset that cannot fail.
- The text is what the parent wrote, decoded, not trimmed: quoted replies stay (the core
  strips them). HTML-only mail becomes text with the stdlib `html.parser`; a `<blockquote>`
  becomes `> ` lines so that the core's reply trimmer sees the quote.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from email import policy
from email.header import decode_header, make_header
from email.message import EmailMessage, Message
from email.parser import BytesParser
from email.utils import getaddresses
from html.parser import HTMLParser
from typing import Any

# A parent's mail has a handful of parts; Outlook with a signature logo and two
# attachments has about ten. These limits keep the stdlib parser under a second.
MAX_MIME_PARTS = 300
MAX_MULTIPARTS = 50
MAX_DEPTH = 30
# Longer HTML is cut before conversion (html.parser takes about a second per 400 KB):
# a parent's HTML mail is a few kilobytes, a newsletter a few hundred.
MAX_HTML_CHARS = 400_000
MAX_ATTACHMENTS_LISTED = 100
# Quote marks written before a line of HTML-only mail, however deep its <blockquote>s: a
# deeper quote is a quote all the same, and a mark per level let 1000 nested blockquotes
# turn 112 KB of HTML into 40 MB of text (each <br> became a line of 2000 characters).
MAX_QUOTE_MARKS = 10

_BOUNDARY_PARAM = re.compile(rb"boundary[ \t]*=")  # on lower-cased bytes
_MSGID = re.compile(r"<([^<>\s]+)>")
_CID_PLACEHOLDER = re.compile(r"[ \t]*\[cid:[^\]\s]{1,200}\][ \t]*")
_BATV = re.compile(r"^(?:prvs|msprvs\d*|btv1)=[^=@]*=+(.+)$", re.IGNORECASE)

# Mail labelled ISO-8859-1 is in practice Windows-1252 (curly quotes, the euro sign), as
# browsers have long assumed; US-ASCII labels often hide UTF-8 from sloppy senders.
_CHARSET_ALIASES = {
    "iso-8859-1": "cp1252",
    "iso8859-1": "cp1252",
    "iso_8859-1": "cp1252",
    "latin1": "cp1252",
    "latin-1": "cp1252",
    "l1": "cp1252",
    "us-ascii": "utf-8",
    "ascii": "utf-8",
    "utf8": "utf-8",
    "unicode-1-1-utf-7": "utf-7",
    "ks_c_5601-1987": "cp949",
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "iso-8859-8-i": "iso-8859-8",
    "x-mac-roman": "mac-roman",
}


class MimeTooComplex(ValueError):
    """More MIME parts or nesting than we read: the listener refuses such mail (554)."""


@dataclass(frozen=True)
class Attachment:
    filename: str | None
    content_type: str
    size: int  # decoded bytes
    inline: bool  # part of an HTML body (a signature logo), not something the parent attached

    def as_payload(self) -> dict[str, Any]:
        return {
            "filename": self.filename,
            "content_type": self.content_type,
            "size": self.size,
            "inline": self.inline,
        }


# -- parsing -------------------------------------------------------------------------------


def parse_mail(raw: bytes) -> EmailMessage:
    """Raw RFC 5322 bytes -> EmailMessage; MimeTooComplex when the structure is a bomb."""
    # Counted on a lower-cased copy: case-insensitive regexes are several times slower on
    # a 10 MB message. A header name cannot contain a space, so `\ncontent-type:` is every
    # part the parser will see (the first line of the message is prefixed with `\n`).
    lowered = b"\n" + raw.lower()
    if lowered.count(b"\ncontent-type:") > MAX_MIME_PARTS:
        raise MimeTooComplex("too many MIME parts")
    if len(_BOUNDARY_PARAM.findall(lowered)) > MAX_MULTIPARTS:
        raise MimeTooComplex("too many multipart containers")
    try:
        msg = BytesParser(policy=policy.default).parsebytes(raw)
    except RecursionError:
        raise MimeTooComplex("MIME nesting too deep") from None
    assert isinstance(msg, EmailMessage)  # policy.default's message factory
    return msg


def header(msg: Message, name: str) -> str:
    """A header's decoded value ("" when absent), never raising on a malformed one."""
    try:
        value = msg.get(name)
        text = None if value is None else str(value)
    except Exception:  # the stdlib's structured header parsers have had crash bugs
        text = None
        for key, raw in msg.raw_items():
            if key.lower() == name.lower():
                text = _decode_words(str(raw))
                break
    return clean_line(text) if text is not None else ""


def has_header(msg: Message, name: str) -> bool:
    return any(key.lower() == name.lower() for key in msg.keys())


def _decode_words(value: str) -> str:
    try:
        return str(make_header(decode_header(value)))
    except Exception:
        return value


def clean_line(value: str) -> str:
    """A header value on one line: folding undone, whitespace runs collapsed, NUL gone."""
    value = value.replace("\x00", "")
    return " ".join(value.split())


def addresses(msg: Message, name: str) -> list[str]:
    """The lower-cased addr-specs in an address header, in order; [] when unparseable."""
    found: list[str] = []
    try:
        value = msg.get(name)
        parsed = getattr(value, "addresses", None)
        if parsed is not None:
            found = [a.addr_spec for a in parsed if a.addr_spec]
    except Exception:
        found = []
    if not found:
        raw = [str(v) for k, v in msg.raw_items() if k.lower() == name.lower()]
        found = [addr for _, addr in getaddresses(raw) if addr]
    return [a.lower() for a in found if _looks_like_address(a)]


def _looks_like_address(addr: str) -> bool:
    local, at, domain = addr.rpartition("@")
    return bool(at and local and domain) and not any(c.isspace() for c in addr)


def envelope_address(reverse_path: str) -> str:
    """An SMTP reverse path as compared with `From`: lower-cased, BATV tag removed, <> -> ""."""
    addr = reverse_path.strip()
    if addr.startswith("<") and addr.endswith(">"):
        addr = addr[1:-1]
    local, at, domain = addr.rpartition("@")
    if at:
        # Corporate gateways sign the envelope sender (prvs=tag=local@domain); the From
        # header keeps the plain address, and a tag must not look like a forgery.
        m = _BATV.match(local)
        if m:
            local = m.group(1)
        addr = f"{local}@{domain}"
    return addr.lower()


def message_ids(value: str) -> list[str]:
    """The ids in a Message-ID, In-Reply-To or References value, without angle brackets."""
    found = _MSGID.findall(value)
    if not found and value.strip() and " " not in value.strip():
        found = [value.strip()]  # some senders forget the brackets
    return found


def message_id(msg: Message) -> str | None:
    ids = message_ids(header(msg, "Message-ID"))
    return ids[0] if ids else None


def synthetic_message_id(msg: Message, raw: bytes) -> str:
    """A stable id for mail without a Message-ID: a hash of its content, not of trace headers.

    The sending MTA's retries carry the same content, but a relay in between may add a
    Received line per attempt; hashing the body and the author's headers avoids that.
    """
    split = raw.find(b"\r\n\r\n")
    body = raw[split:] if split >= 0 else raw[raw.find(b"\n\n") :]
    digest = hashlib.sha256()
    for name in ("From", "To", "Date", "Subject"):
        digest.update(header(msg, name).encode("utf-8", "replace") + b"\x00")
    digest.update(body)
    return f"sha256-{digest.hexdigest()[:40]}"


# -- walking the MIME tree -----------------------------------------------------------------


def subparts(part: Message) -> list[Message]:
    """A multipart's (or message/rfc822's) parts; [] for a leaf."""
    payload = part.get_payload()
    if not isinstance(payload, list):
        return []
    return [p for p in payload if isinstance(p, Message)]


def walk(msg: Message, max_depth: int = MAX_DEPTH) -> Iterator[tuple[Message, int, bool]]:
    """Every part with its depth and whether it sits inside multipart/related, iteratively.

    Nested messages (message/rfc822, a forward as attachment) are yielded, not entered.
    """
    stack: list[tuple[Message, int, bool]] = [(msg, 0, False)]
    while stack:
        part, depth, related = stack.pop()
        yield part, depth, related
        if depth >= max_depth or part.get_content_maintype() == "message":
            continue
        if part.is_multipart():
            inner = related or part.get_content_type() == "multipart/related"
            stack.extend((c, depth + 1, inner) for c in reversed(subparts(part)))


def _is_attachment(part: Message) -> bool:
    disposition = part.get_content_disposition()
    if disposition == "attachment":
        return True
    # A named part without a disposition is an attachment to most clients.
    return disposition is None and _filename(part) is not None


def _filename(part: Message) -> str | None:
    try:
        name = part.get_filename()
    except Exception:
        return None
    return clean_line(name) if name else None


def attachments(msg: Message) -> list[Attachment]:
    """What came along besides the text: listed (name, type, size), never stored."""
    found: list[Attachment] = []
    for part, depth, related in walk(msg):
        if part.is_multipart() and part.get_content_maintype() != "message":
            continue
        ctype = part.get_content_type()
        if depth == 0 and ctype in ("text/plain", "text/html"):
            continue  # a single-part mail's body
        if ctype in ("text/plain", "text/html") and not _is_attachment(part):
            continue  # a body part, or the alternative of one
        found.append(
            Attachment(
                filename=_filename(part),
                content_type=ctype,
                size=_size(part),
                inline=related and part.get_content_disposition() != "attachment",
            )
        )
        if len(found) >= MAX_ATTACHMENTS_LISTED:
            break
    return found


def _size(part: Message) -> int:
    try:
        if part.get_content_maintype() == "message":
            inner = subparts(part)
            return len(inner[0].as_bytes()) if inner else 0
        data = part.get_payload(decode=True)
    except Exception:
        return 0
    return len(data) if isinstance(data, bytes) else 0


# -- text --------------------------------------------------------------------------------


def best_text(msg: Message) -> str:
    """The text a person reads: text/plain where there is one, else the HTML as text."""
    text = _render(msg, 0) or ""
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "")
    # Outlook's plain text marks each inline picture `[cid:image001.png@01DB...]`.
    if "[cid:" in text:
        text = _CID_PLACEHOLDER.sub("", text)
    return text.strip()


def _render(part: Message, depth: int) -> str | None:
    """The readable text of one part (recursion bounded by MAX_DEPTH and parse_mail)."""
    if depth > MAX_DEPTH:
        return None
    ctype = part.get_content_type()
    if part.get_content_maintype() == "message":
        return None  # a forwarded message attached: an attachment, not the parent's words
    if part.is_multipart():
        children = subparts(part)
        if not children:
            return None
        subtype = part.get_content_subtype()
        if subtype == "alternative":
            return _render_alternative(children, depth)
        if subtype == "related":
            return _render(_related_root(part, children), depth + 1)
        if subtype in ("signed", "report", "encrypted"):
            # The first part is the human-readable one; the rest is a signature or a report.
            return _render(children[0], depth + 1)
        # mixed and unknown: every inline text part in order (Apple Mail splits the text
        # around an inline picture into several parts).
        texts = [_render(c, depth + 1) for c in children if not _is_attachment(c)]
        joined = "\n".join(t for t in texts if t)
        return joined or None
    if _is_attachment(part):
        return None
    if ctype == "text/plain":
        text = decode_part(part)
        if str(part.get_param("format") or "").lower() == "flowed":
            text = unflow(text, delsp=str(part.get_param("delsp") or "").lower() == "yes")
        return text
    if ctype == "text/html":
        return html_to_text(decode_part(part))
    return None


def _render_alternative(children: list[Message], depth: int) -> str | None:
    # Plain text first: it is what the sender's client wrote, with quotes marked by ">".
    for child in children:
        if child.get_content_type() == "text/plain" and not _is_attachment(child):
            text = _render(child, depth + 1)
            if text and text.strip():
                return text
    for child in reversed(children):  # RFC 2046: the last alternative is the richest
        text = _render(child, depth + 1)
        if text and text.strip():
            return text
    return None


def _related_root(part: Message, children: list[Message]) -> Message:
    start = part.get_param("start", header="content-type")
    if isinstance(start, str):
        for child in children:
            if header(child, "Content-ID") == start:
                return child
    return children[0]


def decode_part(part: Message) -> str:
    """A leaf part's content as text: transfer encoding and charset decoded, NUL gone, `\n`
    line ends (mail on the wire has CRLF, files on disk often LF)."""
    try:
        data = part.get_payload(decode=True)
    except Exception:
        data = None
    if not isinstance(data, bytes):
        raw = part.get_payload()
        data = raw.encode("utf-8", "surrogateescape") if isinstance(raw, str) else b""
    try:
        charset = part.get_content_charset()
    except Exception:
        charset = None
    text = decode_bytes(data, charset).replace("\x00", "")
    return text.replace("\r\n", "\n").replace("\r", "\n")


def decode_bytes(data: bytes, charset: str | None) -> str:
    """Bytes in a declared charset, with fallbacks that always produce text."""
    candidates: list[str] = []
    if charset:
        charset = charset.strip().strip("\"'").lower()
        candidates.append(_CHARSET_ALIASES.get(charset, charset))
    candidates += ["utf-8", "cp1252"]
    for candidate in candidates:
        try:
            return data.decode(candidate)
        except (LookupError, UnicodeDecodeError, ValueError):
            continue
    return data.decode("latin-1")  # every byte is a character: cannot fail


def unflow(text: str, delsp: bool = False) -> str:
    """Undo RFC 3676 format=flowed: soft line breaks (a trailing space) join lines again."""
    out: list[str] = []
    buf: str | None = None
    buf_depth = 0

    def flush() -> None:
        nonlocal buf
        if buf is not None:
            out.append((">" * buf_depth + " " if buf_depth else "") + buf)
            buf = None

    for line in text.replace("\r\n", "\n").split("\n"):
        depth = len(line) - len(line.lstrip(">"))
        content = line[depth:]
        if content.startswith(" "):
            content = content[1:]  # space-stuffing, or the space after the quote marks
        if content == "-- ":  # the signature separator is never flowed
            flush()
            out.append((">" * depth + " " if depth else "") + content)
            continue
        if buf is not None and depth == buf_depth:
            buf += content
        else:
            flush()
            buf, buf_depth = content, depth
        if content.endswith(" "):
            if delsp:
                buf = buf[:-1]
            continue  # a soft break: the paragraph goes on
        flush()
    flush()
    return "\n".join(out)


# -- HTML to text ----------------------------------------------------------------------------

_BLOCK_TAGS = frozenset(
    {
        "address", "article", "aside", "blockquote", "center", "dd", "div", "dl", "dt",
        "fieldset", "figcaption", "figure", "footer", "form", "h1", "h2", "h3", "h4", "h5",
        "h6", "header", "hr", "li", "main", "nav", "ol", "p", "pre", "section", "table",
        "tbody", "td", "tfoot", "th", "thead", "tr", "ul",
    }
)  # fmt: skip
_SKIP_TAGS = frozenset({"head", "script", "style", "template", "title", "noscript", "xml"})
_VOID_TAGS = frozenset({"br", "hr", "img", "meta", "link", "input", "wbr", "col", "area"})
_HTML_SPACE = re.compile(r"[ \t\r\n\f]+")


class _HtmlText(HTMLParser):
    """Collects the visible text of an HTML body as lines; blockquotes become `> ` lines."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.lines: list[str] = []
        self.line: list[str] = []
        self.has_text = False  # the current line holds more than whitespace
        self.ends_space = True  # the current line ends in a space (or is empty)
        self.line_quote = 0  # the quote depth the current line started at
        self.quote = 0
        self.skip = 0
        self.pre = 0

    def _break(self) -> None:
        joined = "".join(self.line)
        text = joined.rstrip() if self.pre else joined.strip()
        prefix = "> " * min(self.line_quote, MAX_QUOTE_MARKS)
        self.lines.append((prefix + text).rstrip())
        self._new_line()

    def _new_line(self) -> None:
        self.line = []
        self.has_text = False
        self.ends_space = True
        self.line_quote = self.quote

    def _soft_break(self) -> None:
        # A block boundary ends the current line unless it is empty already.
        if self.has_text:
            self._break()
        else:
            self._new_line()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIP_TAGS:
            self.skip += 1
        elif tag == "br":
            self._break()
        elif tag == "blockquote":
            self._soft_break()
            self.quote += 1
            self.line_quote = self.quote
        elif tag in _BLOCK_TAGS:
            self._soft_break()
            if tag == "pre":
                self.pre += 1
            elif tag == "li":
                self.line.append("- ")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "br":
            self._break()
        elif tag in _BLOCK_TAGS:
            self._soft_break()

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP_TAGS:
            self.skip = max(0, self.skip - 1)
        elif tag == "blockquote":
            self._soft_break()
            self.quote = max(0, self.quote - 1)
            self.line_quote = self.quote
        elif tag in _BLOCK_TAGS and tag not in _VOID_TAGS:
            self._soft_break()
            if tag == "pre":
                self.pre = max(0, self.pre - 1)

    def handle_data(self, data: str) -> None:
        if self.skip:
            return
        if "\xa0" in data and not data.strip(" \t\r\n\xa0"):
            # `<p>&nbsp;</p>` is how Outlook and many editors write an empty line.
            self.has_text = True
        data = data.replace("\xa0", " ")
        if not self.pre:
            # HTML whitespace rules: any run of spaces and newlines is one space.
            data = _HTML_SPACE.sub(" ", data)
            if self.ends_space:
                data = data.lstrip(" ")
        if not data:
            return
        if not self.has_text and data.strip():
            self.line_quote = self.quote
            self.has_text = True
        self.line.append(data)
        self.ends_space = data.endswith(" ")

    def text(self) -> str:
        self._soft_break()
        out: list[str] = []
        for line in self.lines:
            blank = not line.strip(" >")
            if blank and out and not out[-1].strip(" >"):
                continue  # at most one blank line in a row
            out.append(line)
        return "\n".join(out).strip("\n")


def html_to_text(html: str) -> str:
    """Visible text of an HTML body, one line per block, `> ` for blockquotes."""
    parser = _HtmlText()
    try:
        parser.feed(html[:MAX_HTML_CHARS])
        parser.close()
    except Exception:  # html.parser is lenient, but a stranger's markup gets no second chance
        pass
    return parser.text()
