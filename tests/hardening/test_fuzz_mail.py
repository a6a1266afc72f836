"""Fuzzing inbound mail: MIME parsing, the filters and the reply stripper, as pure functions.

`adapters.mail_in.analyse` is everything the listener does with DATA before the store:
parse (mail_parse), filter (mail_filters: bounces, auto-replies, loops, sender checks)
and summarise. On any bytes — malformed, nested, huge, in wrong or unknown charsets — it
returns a verdict or raises MimeTooComplex, never anything else, and what it keeps is
bounded: one-line headers and a text not much longer than the mail. `strip_reply` (what
a staff member's reply keeps) never raises and never adds text.
"""

from __future__ import annotations

import base64
import quopri
import time
from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from adapters.mail_filters import Envelope
from adapters.mail_in import Analysis, analyse
from adapters.mail_parse import MimeTooComplex, html_to_text
from bridge.email_reply import strip_reply

FUZZ = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
NOW = datetime(2026, 11, 26, 7, 12, tzinfo=UTC)
ENV = Envelope(
    mail_from="kari@example.no",
    rcpt_tos=("r-abc@svar.example.kommune.no", "u-fjell@svar.example.kommune.no"),
    our_domain="example.kommune.no",
)
ENV_TRUSTED = Envelope(
    mail_from="",
    rcpt_tos=("u-fjell@svar.example.kommune.no",),
    our_domain="example.kommune.no",
    trusted_authserv_ids=("mx.example.kommune.no",),
)
# Text may grow in decoding only by line marks (`> ` for a blockquote, `- ` for a list item).
GROWTH = 6

CHARSETS = st.sampled_from(
    ["utf-8", "us-ascii", "iso-8859-1", "windows-1252", "utf-16", "utf-7", "koi8-r", "gb2312",
     "x-unknown", "", '"utf-8"', "utf-8'", "iso-2022-jp", "unicode-1-1-utf-7", "base64", "\x00"]
)  # fmt: skip
ENCODINGS = st.sampled_from(["7bit", "8bit", "base64", "quoted-printable", "x-uuencode", "bogus"])
HEADER_TEXT = st.text(
    alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="\r\n"), max_size=60
)
ADDRESS = st.one_of(
    st.sampled_from(["kari@example.no", "<kari@example.no>", "Kari <kari@example.no>",
                     "MAILER-DAEMON@mx.example.no", "", "@", "a@b@c", "undisclosed-recipients:;",
                     '"Kari \\"K\\"" <kari@example.no>', "=?utf-8?b?S2FyaQ==?= <kari@example.no>"]),
    HEADER_TEXT,
)  # fmt: skip
HEADERS = st.lists(
    st.one_of(
        st.tuples(st.just("From"), ADDRESS),
        st.tuples(st.just("Subject"), st.one_of(HEADER_TEXT, st.just("=?x-bad?q?=FF=FE?="),
                                                st.just("=?utf-8?b?!!!?="))),
        st.tuples(st.sampled_from(["Message-ID", "In-Reply-To", "References"]),
                  st.one_of(HEADER_TEXT, st.just("<a@b>"), st.just("<" * 50))),
        st.tuples(st.sampled_from(["Auto-Submitted", "Precedence", "X-Autoreply",
                                   "Authentication-Results", "Return-Path", "Content-Type",
                                   "Content-Transfer-Encoding", "Content-Disposition", "Date",
                                   "X-Loop", "List-Id"]), HEADER_TEXT),
    ),
    max_size=8,
)  # fmt: skip


def _body(text: str, charset: str, encoding: str) -> bytes:
    data = text.encode(charset.strip("\"'") or "utf-8", "replace") if _known(charset) else (
        text.encode("utf-8", "surrogatepass"))  # fmt: skip
    if encoding == "base64":
        return base64.encodebytes(data)
    if encoding == "quoted-printable":
        return quopri.encodestring(data)
    return data


def _known(charset: str) -> bool:
    try:
        "".encode(charset.strip("\"'") or "utf-8")
    except (LookupError, ValueError):
        return False
    return True


LEAF_TYPES = st.sampled_from(
    ["text/plain", "text/html", "text/plain; format=flowed", "application/pdf", "image/png",
     "message/rfc822", "message/delivery-status", "text/rfc822-headers", "bogus"]
)  # fmt: skip
DISPOSITIONS = st.sampled_from(
    ['Content-Disposition: attachment; filename="a.pdf"\r\n', "Content-Disposition: inline\r\n",
     "Content-ID: <x@y>\r\n", "Content-Disposition: attachment; filename*=utf-8''%FF\r\n"]
)  # fmt: skip


@st.composite
def leaf(draw: st.DrawFn) -> bytes:
    ctype = draw(LEAF_TYPES)
    charset = draw(CHARSETS)
    encoding = draw(ENCODINGS)
    text = draw(st.one_of(
        st.text(max_size=300),
        st.sampled_from(["<blockquote>" * 40 + "x<br>" * 40, "<p>Hei</p><script>x</script>",
                         "> quoted\n>> deeper\nOn Mon, X wrote:\n-- \nsig", "Final-Recipient: x",
                         "<html><body><div>" * 60, "=\n=3D=XX", "begin 644 x\n`\nend"]),
    ))  # fmt: skip
    head = f"Content-Type: {ctype}; charset={charset}\r\nContent-Transfer-Encoding: {encoding}\r\n"
    if draw(st.booleans()):
        head += draw(DISPOSITIONS)
    return head.encode("utf-8", "surrogatepass") + b"\r\n" + _body(text, charset, encoding)


def multipart(children: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    @st.composite
    def build(draw: st.DrawFn) -> bytes:
        subtype = draw(st.sampled_from(["mixed", "alternative", "related", "signed", "report",
                                        "encrypted", "x-odd"]))  # fmt: skip
        boundary = draw(st.sampled_from(["b1", "=_b", "x" * 70, "", "a b"]))
        parts = draw(st.lists(children, max_size=4))
        close = draw(st.booleans())
        out = f'Content-Type: multipart/{subtype}; boundary="{boundary}"\r\n\r\n'.encode()
        out += b"preamble\r\n"
        for p in parts:
            out += f"--{boundary}\r\n".encode() + p + b"\r\n"
        if close:
            out += f"--{boundary}--\r\n".encode()
        return out

    return build()


MIME = st.recursive(leaf(), multipart, max_leaves=8)


@st.composite
def mail(draw: st.DrawFn) -> bytes:
    headers = draw(HEADERS)
    head = b"".join(f"{k}: {v}\r\n".encode("utf-8", "surrogatepass") for k, v in headers)
    return head + draw(MIME)


def _check(analysis: Analysis, raw: bytes) -> None:
    assert isinstance(analysis, Analysis)
    assert analysis.log_id.startswith("m-")
    for event in analysis.events:
        assert isinstance(event.text, str)
        assert "\x00" not in event.text
        assert len(event.text) <= GROWTH * len(raw) + 1000
        subject = event.payload["subject"]
        assert isinstance(subject, str) and "\n" not in subject and "\r" not in subject
        assert event.sender and "\n" not in event.sender
        assert len(event.external_id) < 2000
        assert event.payload["to"] in ENV.rcpt_tos + ENV_TRUSTED.rcpt_tos


def _analyse(raw: bytes, env: Envelope) -> None:
    try:
        analysis = analyse(raw, env, NOW)
    except MimeTooComplex:
        return
    _check(analysis, raw)


@FUZZ
@given(raw=st.binary(max_size=3000), trusted=st.booleans())
@example(raw=b"", trusted=False)
@example(raw=b"From: kari@example.no\r\n\r\n\x00\xff\xfe", trusted=False)
@example(raw=b"Content-Type: multipart/mixed; boundary=\r\n\r\n--\r\n--\r\n", trusted=True)
def test_random_bytes_give_a_verdict(raw: bytes, trusted: bool) -> None:
    _analyse(raw, ENV_TRUSTED if trusted else ENV)


@FUZZ
@given(raw=mail(), trusted=st.booleans())
def test_structured_mail_gives_a_verdict_and_bounded_text(raw: bytes, trusted: bool) -> None:
    _analyse(raw, ENV_TRUSTED if trusted else ENV)


def _from_kari(body: bytes, ctype: str = "text/html; charset=utf-8") -> bytes:
    return (
        b"From: Kari <kari@example.no>\r\nTo: u-fjell@svar.example.kommune.no\r\n"
        b"Subject: x\r\nMessage-ID: <m1@example.no>\r\n"
        + f"Content-Type: {ctype}\r\n\r\n".encode()
        + body
    )


def test_nested_blockquotes_do_not_multiply_the_text() -> None:
    """Regression (found here): 1000 nested <blockquote>s turned 112 KB into 40 MB."""
    html = "<blockquote>" * 1000 + "x<br>" * 20000
    assert len(html_to_text(html)) <= GROWTH * len(html)
    raw = _from_kari(html.encode())
    analysis = analyse(raw, ENV, NOW)
    assert analysis.events and len(analysis.events[0].text) <= GROWTH * len(raw)
    assert analysis.events[0].text.splitlines()[0].startswith("> ")  # still a quote


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(_from_kari(b"a" * 9_000_000, "text/plain"), id="9MB-one-line"),
        pytest.param(_from_kari(b"Hei\r\n" * 1_500_000, "text/plain"), id="7MB-lines"),
        pytest.param(_from_kari(b"<div>" * 1_000_000), id="5MB-html-divs"),
        pytest.param(
            _from_kari(b"x\r\n", 'multipart/mixed; boundary="b"')[:-3]
            + b"".join(b"--b\r\nContent-Type: text/plain\r\n\r\nx\r\n" for _ in range(250)),
            id="250-parts",
        ),
        pytest.param(
            b"Content-Type: multipart/mixed; boundary=b\r\n\r\n" * 2000, id="2000-multiparts"
        ),
        pytest.param(
            b"".join(
                f'Content-Type: multipart/mixed; boundary="b{i}"\r\n\r\n--b{i}\r\n'.encode()
                for i in range(45)
            ),
            id="45-deep",
        ),
        pytest.param(_from_kari(b"x", "text/plain; charset=" + "x" * 5000), id="long-charset"),
        pytest.param(
            b"Subject: " + b"=?utf-8?q?" + b"=C3" * 100_000 + b"?=\r\n\r\nx", id="subject"
        ),
    ],
)
def test_huge_and_deep_mail_is_handled_in_bounded_time(raw: bytes) -> None:
    started = time.monotonic()
    _analyse(raw, ENV)
    assert time.monotonic() - started < 30


TEXT = st.one_of(
    st.text(max_size=800),
    st.lists(
        st.sampled_from(["Hei", "> quoted", ">> deep", "", "-- ", "Sent from my iPhone",
                         "On Mon, 1 Dec 2025 at 10:00, Kari <k@e.no> wrote:", "Fra: Kari",
                         "Sendt: 1. desember", "-----Original Message-----", "Til: x", "Emne: y",
                         "-----BEGIN PGP SIGNED MESSAGE-----", "Hash: SHA256", "Mvh", "Ola",
                         "________________________________", "\u202e", "\r", "\t> x", "=" * 80]),
        max_size=40,
    ).map("\n".join),
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(text=TEXT)
def test_strip_reply_never_raises_and_never_adds_text(text: str) -> None:
    out = strip_reply(text)
    assert isinstance(out, str)
    assert len(out) <= len(text)
