"""The mail adapter's pure parts: text extraction, the filters, building and classifying.

Wire-level behaviour (the listener, the sender, the fake sink) is in test_email_smtp.py;
the real-mail corpus in test_email_fixtures.py.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser

import aiosmtplib
import pytest

from adapters.mail_filters import (
    FILTERS,
    Envelope,
    Kind,
    address_is_dead,
    auto_reply,
    dmarc_refusal,
    parse_authentication_results,
    run_filters,
    sender_mismatch,
)
from adapters.mail_in import analyse, external_id, log_id
from adapters.mail_out import (
    MAIL_JSON_PREFIX,
    EnvelopeFrom,
    MailContent,
    MailSender,
    classify,
    content_for,
    render_message,
)
from adapters.mail_parse import (
    MAX_MIME_PARTS,
    MimeTooComplex,
    decode_bytes,
    envelope_address,
    html_to_text,
    parse_mail,
    unflow,
)
from bridge.config import EmailSettings, Settings
from bridge.domain import Channel, Outgoing, SendOutcome

OURS = "example.kommune.no"
REPLY = "r-abc123@svar.example.kommune.no"
SETTINGS = Settings(email=replace(EmailSettings(), enabled=True))


def mail(headers: str, body: str = "Hei.\n") -> bytes:
    return (headers.strip("\n") + "\n\n" + body).encode("utf-8")


def env(mail_from: str = "kari@example.no", trusted: tuple[str, ...] = ()) -> Envelope:
    return Envelope(
        mail_from=mail_from, rcpt_tos=(REPLY,), our_domain=OURS, trusted_authserv_ids=trusted
    )


def parsed(raw: bytes) -> EmailMessage:
    msg = BytesParser(policy=policy.default).parsebytes(raw)
    assert isinstance(msg, EmailMessage)
    return msg


BASE = "From: Kari <kari@example.no>\nTo: r-abc123@svar.example.kommune.no\nSubject: Hei\n"


# -- text ------------------------------------------------------------------------------


def test_html_to_text_keeps_lines_quotes_and_entities() -> None:
    html = (
        "<html><head><style>p{color:red}</style><title>x</title></head><body>"
        "<div>Hei&nbsp;på deg &amp; dine</div><div><br></div><div>Linje   to<br>tre</div>"
        "<blockquote><p>sitat</p><blockquote>dypere</blockquote></blockquote>"
        "<script>alert(1)</script><pre>  kode\n  her</pre></body></html>"
    )
    assert html_to_text(html) == (
        "Hei på deg & dine\n\nLinje to\ntre\n> sitat\n> > dypere\n  kode\n  her"
    )


def test_html_to_text_survives_broken_markup() -> None:
    broken = "<div><p>Hei <b>der</div></blockquote></i> &bogus; <"
    assert html_to_text(broken) == "Hei der\n&bogus; <"


def test_unflow_joins_soft_breaks_and_keeps_signature() -> None:
    text = "En lang linje som \nfortsetter her.\n> sitert \n> videre\n-- \nKari"
    assert unflow(text) == "En lang linje som fortsetter her.\n> sitert videre\n-- \nKari"
    assert unflow("del \nsp", delsp=True) == "delsp"


@pytest.mark.parametrize(
    ("data", "charset", "expected"),
    [
        ("blå".encode(), "utf-8", "blå"),
        ("blå".encode("latin-1"), "iso-8859-1", "blå"),
        (b"\x93sitat\x94 \x80", "iso-8859-1", "“sitat” €"),  # Windows-1252 in disguise
        ("blå".encode(), "x-unknown", "blå"),
        ("blå".encode("latin-1"), "utf-8", "blå"),  # mislabelled: falls back
        ("blå".encode(), None, "blå"),
        (b"\x81\x8d", "ascii", "\x81\x8d"),  # nothing fits: Latin-1 never fails
    ],
)
def test_decode_bytes_never_fails(data: bytes, charset: str | None, expected: str) -> None:
    assert decode_bytes(data, charset) == expected


def test_envelope_address_normalises() -> None:
    assert envelope_address("<Kari@Example.NO>") == "kari@example.no"
    assert envelope_address("<>") == ""
    assert envelope_address("prvs=0123abcd=kari@example.no") == "kari@example.no"


def test_malformed_headers_do_not_crash() -> None:
    raw = mail(
        "From: =?utf-8?q?broken <<kari@@example.no>\nSubject: =?bogus?q?x?=\n"
        'Message-ID: no brackets here\nContent-Type: text/plain; charset="\n',
        "tekst\n",
    )
    analysis = analyse(raw, env("kari@example.no", trusted=("mx.example",)), datetime.now(UTC))
    assert analysis.kind in (Kind.MESSAGE, Kind.UNTRUSTED)


def test_mime_bomb_many_parts_is_refused_fast() -> None:
    parts = "".join(f"--B\nContent-Type: text/plain\n\npart {i}\n" for i in range(10_000))
    raw = mail(BASE + 'MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary="B"', parts)
    started = time.monotonic()
    with pytest.raises(MimeTooComplex):
        parse_mail(raw)
    assert time.monotonic() - started < 0.5


def test_mime_bomb_deep_nesting_is_refused_fast() -> None:
    head = "".join(
        f'Content-Type: multipart/mixed; boundary="b{i}"\n\n--b{i}\n' for i in range(5000)
    )
    raw = mail(BASE + "MIME-Version: 1.0\n" + head.rstrip("\n"), "x\n")
    started = time.monotonic()
    with pytest.raises(MimeTooComplex):
        parse_mail(raw)
    assert time.monotonic() - started < 0.5


def test_many_parts_below_the_limit_parse_in_bounded_time() -> None:
    n = MAX_MIME_PARTS - 2
    parts = "".join(f"--B\nContent-Type: text/plain\n\npart {i}\n" for i in range(n))
    raw = mail(BASE + 'MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary="B"', parts)
    started = time.monotonic()
    analysis = analyse(raw, env(), datetime.now(UTC))
    assert time.monotonic() - started < 5
    assert analysis.kind == Kind.MESSAGE
    assert analysis.events[0].text.startswith("part 0\npart 1\n")


def test_synthetic_message_id_is_stable_across_trace_headers() -> None:
    body = "From: Kari <kari@example.no>\nSubject: Hei\nDate: Thu, 26 Nov 2026 08:00:00 +0100\n"
    one = analyse(mail("Received: from a by b\n" + body), env(), datetime.now(UTC))
    two = analyse(mail("Received: from c by d\nReceived: x\n" + body), env(), datetime.now(UTC))
    assert one.events[0].external_id == two.events[0].external_id
    assert one.events[0].payload["message_id"].startswith("sha256-")


def test_external_id_and_log_id() -> None:
    assert external_id("a@b", "kari@example.no", REPLY) == f"a@b|kari@example.no|{REPLY}"
    long_id = "x" * 1000 + "@example.no"
    assert len(external_id(long_id, "k@e.no", REPLY)) < 150
    assert log_id("a@b") == log_id("a@b") != log_id("c@d")
    assert "@" not in log_id("kari@example.no")


# -- filters -------------------------------------------------------------------------------


def test_authentication_results_parsing() -> None:
    value = (
        "mx.example.kommune.no 1; (comment (nested)) dkim=pass header.d=example.no;"
        " spf=fail smtp.mailfrom=example.no; dmarc=fail (p=reject dis=none) header.from=x.no"
    )
    assert parse_authentication_results(value) == (
        "mx.example.kommune.no",
        {"dkim": "pass", "spf": "fail", "dmarc": "fail"},
    )


@pytest.mark.parametrize(
    ("authserv", "result", "refused"),
    [
        ("mx.example.kommune.no", "fail", True),
        ("MX.Example.Kommune.NO", "fail", True),
        ("mx.example.kommune.no", "pass", False),
        ("evil.example", "fail", False),  # a header anybody could have written
    ],
)
def test_dmarc_refusal_believes_trusted_servers_only(
    authserv: str, result: str, refused: bool
) -> None:
    msg = parsed(mail(BASE + f"Authentication-Results: {authserv}; dmarc={result}"))
    verdict = dmarc_refusal(msg, env(trusted=("mx.example.kommune.no",)))
    assert (verdict is not None and verdict.kind == Kind.REFUSED) is refused
    assert dmarc_refusal(msg, env()) is None  # no trusted ids: not consulted


@pytest.mark.parametrize(
    "extra",
    [
        "Auto-Submitted: auto-replied",
        "Auto-Submitted: auto-generated; owner-email=x@y.no",
        "X-Autoreply: yes",
        "X-Autorespond: Out of office",
        "Precedence: bulk",
        "Precedence: junk",
        "Precedence: list",
        "List-Id: <foreldre.fjell.example.no>",
        "In-Reply-To: <a@b>\nX-Auto-Response-Suppress: All",
        "Subject: Automatisk svar: Ukeplan",
        "Subject: Autosvar: Ukeplan",
        "Subject: Out of Office: Ukeplan",
        "Subject: [Auto-Reply] Ukeplan",
        "In-Reply-To: <a@b>\nSubject: Fravær: Ukeplan",
        "In-Reply-To: <a@b>\nSubject: Fråvær: Vekeplan",
    ],
)
def test_auto_replies(extra: str) -> None:
    headers = "From: Kari <kari@example.no>\n" + extra
    if "Subject:" not in extra:
        headers += "\nSubject: Hei"
    verdict = auto_reply(parsed(mail(headers)), env())
    assert verdict is not None and verdict.kind == Kind.AUTO_REPLY


@pytest.mark.parametrize(
    "extra",
    [
        "Auto-Submitted: no",
        "Precedence: first-class",
        "X-Auto-Response-Suppress: All",  # not a reply: a newly written mail may carry it
        "Subject: Fravær: Ola er syk i dag",  # a parent's new mail about an absence
        "Subject: SV: Fravær",
        "Subject: Ola er borte fra skolen",
    ],
)
def test_not_auto_replies(extra: str) -> None:
    headers = "From: Kari <kari@example.no>\n" + extra
    if "Subject:" not in extra:
        headers += "\nSubject: Hei"
    assert auto_reply(parsed(mail(headers)), env()) is None


def test_sender_mismatch_only_without_trusted_ids() -> None:
    msg = parsed(mail(BASE))
    assert sender_mismatch(msg, env("kari@example.no")) is None
    assert sender_mismatch(msg, env("KARI@example.no".lower())) is None
    verdict = sender_mismatch(msg, env("mallory@evil.example"))
    assert verdict is not None and verdict.kind == Kind.UNTRUSTED
    assert sender_mismatch(msg, env("mallory@evil.example", trusted=("mx.x",))) is None


def test_null_sender_without_our_id_is_an_auto_reply_not_a_bounce() -> None:
    # An out-of-office sent from <> with no markers but In-Reply-To our message: it must
    # not fail the delivery it answers.
    raw = mail(BASE + f"In-Reply-To: <skolebro.dl-1@{OURS}>", "Jeg er på ferie.\n")
    verdict = run_filters(parsed(raw), env(""))
    assert verdict is not None and verdict.kind == Kind.AUTO_REPLY


def test_filters_are_small_and_ordered() -> None:
    names = [f.__name__ for f in FILTERS]
    assert names == [
        "dmarc_refusal",
        "own_loop",
        "delivery_report",
        "auto_reply",
        "null_sender",
        "sender_mismatch",
    ]


def test_staff_mail_from_our_domain_is_no_loop() -> None:
    # Thunderbird names Message-IDs after the sender's domain, which may be ours.
    raw = mail(
        "From: Lærer <laerer@example.kommune.no>\nSubject: Svar\n"
        f"Message-ID: <3f9a1c2e-7b4d@{OURS}>"
    )
    analysis = analyse(raw, env("laerer@example.kommune.no"), datetime.now(UTC))
    assert analysis.kind == Kind.MESSAGE


@pytest.mark.parametrize(
    ("code", "status", "text", "dead"),
    [
        (550, "5.1.1", "", True),
        (550, "5.1.10", "", True),
        (554, "5.2.1", "mailbox disabled", True),
        (550, "5.7.1", "user unknown", False),  # the enhanced code decides
        (550, "5.1.8", "", False),  # our sender's domain, not their address
        (552, "5.2.2", "mailbox full", False),
        (551, None, "", True),
        (553, None, "", True),
        (550, None, "Requested action not taken: mailbox unavailable", True),
        (550, None, "No such user here", True),
        (550, None, "Message rejected due to content", False),
        (554, None, "no such user", False),
    ],
)
def test_address_is_dead(code: int, status: str | None, text: str, dead: bool) -> None:
    assert address_is_dead(code, status, text) is dead


# -- outbound: content and message ---------------------------------------------------------


def rich() -> MailContent:
    return MailContent(
        to="Kari Nordmann <kari@example.no>",
        subject="Ukeplan for 5B – uke 48",
        text="Hei Kari!\n\nHer er ukeplanen. Husk gymtøy.\n" + "lang linje " * 200,
        html="<p>Hei <b>Kari</b>!</p><p>Husk gymtøy.</p>",
        from_display="Fjell skole",
        reply_to=REPLY,
        in_reply_to="<orig@example.no>",
        references=("<first@example.no>", "orig@example.no"),
        auto_submitted=True,
        list_unsubscribe="https://bro.example.kommune.no/u/abc",
        headers={"X-Skolebro-Kind": "announcement"},
    )


def test_mail_content_json_round_trip() -> None:
    content = rich()
    body = content.to_json()
    assert body.startswith(MAIL_JSON_PREFIX)
    assert MailContent.is_json(body)
    assert MailContent.from_json(body) == content
    assert json.loads(body)["mail"]["subject"] == content.subject


@pytest.mark.parametrize(
    "body",
    [
        '{"mail": 1}',
        '{"mail":{"to":"a@b.no"}}',  # no text
        '{"mail":{"text":"x","references":"not a list"}}',
        '{"mail":{"text":"x","auto_submitted":"yes"}}',
        '{"mail":{"text":"x","headers":{"X-A":1}}}',
        '{"mail":',
    ],
)
def test_mail_content_rejects_malformed_json(body: str) -> None:
    with pytest.raises(ValueError):
        MailContent.from_json(body)


def test_content_for_plain_and_json_bodies() -> None:
    plain = Outgoing("dl-1", Channel.EMAIL, "kari@example.no", "Hei!", subject="Emne")
    assert content_for(plain) == MailContent(to="kari@example.no", subject="Emne", text="Hei!")
    body = MailContent(to="", subject="", text="x").to_json()
    out = Outgoing("dl-2", Channel.EMAIL, "kari@example.no", body, subject="Fra delivery")
    content = content_for(out)
    assert (content.to, content.subject) == ("kari@example.no", "Fra delivery")
    # A parent's text that merely starts with a brace is plain text.
    assert content_for(replace(plain, body='{"hei": 1}')).text == '{"hei": 1}'


def test_build_message_headers_and_parts() -> None:
    now = datetime(2026, 11, 26, 7, 12, tzinfo=UTC)
    data, message_id = render_message(rich(), SETTINGS, delivery_id="dl-0190abc", now=now)
    assert message_id == "skolebro.dl-0190abc@example.kommune.no"
    again = parsed(data)
    assert str(again["From"]) == "Fjell skole <skolebro@example.kommune.no>"
    assert str(again["To"]) == "Kari Nordmann <kari@example.no>"
    assert str(again["Subject"]) == "Ukeplan for 5B – uke 48"
    assert str(again["Message-ID"]) == "<skolebro.dl-0190abc@example.kommune.no>"
    assert str(again["Date"]) == "Thu, 26 Nov 2026 08:12:00 +0100"  # Europe/Oslo
    assert str(again["Reply-To"]) == REPLY
    assert str(again["In-Reply-To"]) == "<orig@example.no>"
    assert str(again["References"]) == "<first@example.no> <orig@example.no>"
    assert str(again["Auto-Submitted"]) == "auto-generated"
    assert str(again["List-Unsubscribe"]) == "<https://bro.example.kommune.no/u/abc>"
    assert str(again["List-Unsubscribe-Post"]) == "List-Unsubscribe=One-Click"
    assert str(again["X-Skolebro-Loop"]) == OURS
    assert str(again["X-Skolebro-Kind"]) == "announcement"
    assert again.get_content_type() == "multipart/alternative"
    plain, html = list(again.iter_parts())
    assert plain.get_content_type() == "text/plain"
    assert plain.get_content_charset() == "utf-8"
    text = plain.get_content().replace("\r\n", "\n")  # SMTP's line ends, as sent
    assert text.startswith("Hei Kari!\n\nHer er ukeplanen. Husk gymtøy.")
    assert html.get_content_type() == "text/html"
    assert "gymtøy" in html.get_content()
    assert "MIME-Version" not in plain
    assert all(len(line) <= 998 for line in data.split(b"\n")) and data.isascii()


def test_build_message_plain_and_minimal() -> None:
    content = MailContent(to="kari@example.no", subject="", text="Hei")
    msg = parsed(render_message(content, SETTINGS, delivery_id="dl-9")[0])
    assert msg.get_content_type() == "text/plain"
    assert str(msg["From"]) == "skolebro@example.kommune.no"
    for absent in ("Reply-To", "Auto-Submitted", "List-Unsubscribe", "List-Unsubscribe-Post"):
        assert absent not in msg
    mailto = replace(content, list_unsubscribe="mailto:stopp@svar.example.kommune.no")
    msg = parsed(render_message(mailto, SETTINGS)[0])
    assert str(msg["List-Unsubscribe"]) == "<mailto:stopp@svar.example.kommune.no>"
    assert "List-Unsubscribe-Post" not in msg  # one-click needs an https URI
    assert str(msg["Message-ID"]).startswith("<skolebro.")


def test_build_message_cannot_be_injected() -> None:
    content = MailContent(to="kari@example.no", subject="Hei\r\nBcc: all@evil.example", text="x")
    msg = parsed(render_message(content, SETTINGS)[0])
    assert "Bcc" not in msg
    with pytest.raises(ValueError):
        render_message(replace(content, headers={"From": "x@evil.example"}), SETTINGS)
    with pytest.raises(ValueError):
        render_message(replace(content, headers={"X-Bad Name": "x"}), SETTINGS)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("To", "kari@example.no"),
        ("To", "Kari.Nordmann+skole@example.no"),
        ("Reply-To", "r-0bb5e07c41ad3d29574afcb4160afd45@svar." + "lang." * 20 + "no"),
        ("Message-ID", "<skolebro.dl-0190abc@example.kommune.no>"),
        ("In-Reply-To", "<CAF=x_y+z@mail.example.no>"),
        ("Date", "Thu, 26 Nov 2026 08:12:00 +0100"),
        ("References", "<first@example.no> <orig@example.no>"),
        ("List-Unsubscribe", "<https://bro.example.kommune.no/u/abc>"),
        ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"),
    ],
)
def test_plain_headers_are_written_as_the_email_package_writes_them(name: str, value: str) -> None:
    # What `render_message` writes out by hand for the headers that vary per recipient.
    content = MailContent(to="kari@example.no", subject="Hei", text="Hei")
    field = {
        "To": "to", "Reply-To": "reply_to", "In-Reply-To": "in_reply_to",
        "List-Unsubscribe": "list_unsubscribe",
    }.get(name)  # fmt: skip
    if field is not None:
        data, _ = render_message(replace(content, **{field: value}), SETTINGS)
        assert f"\r\n{name}: {value}\r\n".encode() in b"\r\n" + data
    ours = f"{name}: {value}\r\n".encode()
    assert ours == policy.SMTP.fold_binary(name, policy.SMTP.header_factory(name, value))


def test_recipients_of_one_content_share_everything_but_their_headers() -> None:
    now = datetime(2026, 11, 26, 7, 12, tzinfo=UTC)
    content = replace(rich(), to="kari@example.no", reply_to=REPLY)
    one, _ = render_message(content, SETTINGS, delivery_id="dl-1", now=now)
    other, _ = render_message(replace(content, to="ola@example.no"), SETTINGS, now=now)
    assert one.split(b"\r\nFrom: ", 1)[1] == other.split(b"\r\nFrom: ", 1)[1]
    assert b"To: ola@example.no\r\n" in other and b"ola" not in one
    fast, again = parsed(one), parsed(other)
    assert [p.get_content() for p in fast.iter_parts()] == [
        p.get_content() for p in again.iter_parts()
    ]


def test_a_long_unsubscribe_link_stays_a_link() -> None:
    link = "mailto:r-0bb5e07c41ad3d29574afcb4160afd45@svar.example.kommune.no?subject=STOPP"
    content = MailContent(to="kari@example.no", subject="Hei", text="Hei", list_unsubscribe=link)
    data, _ = render_message(content, SETTINGS)
    # The email package would fold this one into encoded words, which no client follows.
    assert f"List-Unsubscribe: <{link}>\r\n".encode() in data
    assert str(parsed(data)["List-Unsubscribe"]) == f"<{link}>"


@pytest.mark.parametrize(
    ("to", "utf8", "expected"),
    [
        ("Kari Nordmann <kari@example.no>", False, b"To: Kari Nordmann <kari@example.no>\r\n"),
        ("Kåri <kari@example.no>", False, b"To: =?utf-8?q?K=C3=A5ri?= <kari@example.no>\r\n"),
        ("kåri@eksempel.no", True, "To: kåri@eksempel.no\r\n".encode()),
    ],
)
def test_other_headers_are_folded_by_the_email_package(
    to: str, utf8: bool, expected: bytes
) -> None:
    content = MailContent(to=to, subject="Hei", text="Hei")
    data, message_id = render_message(content, SETTINGS, delivery_id="dl-8", utf8=utf8)
    assert data.startswith(expected)
    assert message_id == "skolebro.dl-8@example.kommune.no"


# -- outbound: errors -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("exc", "outcome", "dead", "error"),
    [
        (
            aiosmtplib.SMTPRecipientsRefused(
                [
                    aiosmtplib.SMTPRecipientRefused(
                        550, "5.1.1 <kari@example.no>: User unknown", "kari@example.no"
                    )
                ]
            ),
            SendOutcome.PERMANENT,
            True,
            "550 5.1.1 mailbox unavailable",
        ),
        (
            aiosmtplib.SMTPRecipientRefused(450, "4.2.0 greylisted", "kari@example.no"),
            SendOutcome.TRANSIENT,
            False,
            "450 4.2.0 mailbox unavailable",
        ),
        (
            aiosmtplib.SMTPDataError(451, "4.3.0 try later"),
            SendOutcome.TRANSIENT,
            False,
            "451 4.3.0 local error in processing",
        ),
        (
            aiosmtplib.SMTPDataError(554, "5.7.1 spam"),
            SendOutcome.PERMANENT,
            False,
            "554 5.7.1 transaction failed",
        ),
        (
            aiosmtplib.SMTPRecipientRefused(553, "sorry, that domain isn't allowed", "k@x.no"),
            SendOutcome.PERMANENT,
            True,
            "553 mailbox name not allowed",
        ),
        (
            aiosmtplib.SMTPSenderRefused(550, "5.7.60 not allowed to send as", "a@b.no"),
            SendOutcome.TRANSIENT,
            False,
            "sender refused: 550 5.7.60 mailbox unavailable",
        ),
        (
            aiosmtplib.SMTPSenderRefused(552, "5.3.4 too big", "a@b.no"),
            SendOutcome.PERMANENT,
            False,
            "552 5.3.4 exceeded storage allocation",
        ),
        (
            aiosmtplib.SMTPAuthenticationError(535, "5.7.8 bad credentials"),
            SendOutcome.TRANSIENT,
            False,
            "535 5.7.8 authentication failed",
        ),
        (aiosmtplib.SMTPResponseException(421, "4.3.2 bye"), SendOutcome.TRANSIENT, False, None),
        (aiosmtplib.SMTPServerDisconnected("gone"), SendOutcome.TRANSIENT, False, None),
        (aiosmtplib.SMTPConnectError("refused"), SendOutcome.TRANSIENT, False, None),
        (aiosmtplib.SMTPReadTimeoutError("slow"), SendOutcome.TRANSIENT, False, "timeout"),
        (TimeoutError(), SendOutcome.TRANSIENT, False, "timeout"),
        (ConnectionResetError(), SendOutcome.TRANSIENT, False, None),
        (aiosmtplib.SMTPNotSupported("SMTPUTF8"), SendOutcome.PERMANENT, False, None),
        (RuntimeError("bug"), SendOutcome.TRANSIENT, False, "internal error: RuntimeError"),
    ],
)
def test_classify(exc: BaseException, outcome: SendOutcome, dead: bool, error: str | None) -> None:
    result = classify(exc)
    assert result.outcome == outcome
    assert result.contact_dead is dead
    if error is not None:
        assert result.error == error
    assert result.error is not None and "@" not in result.error


@pytest.mark.parametrize(
    ("reply_to", "username", "mode", "expected"),
    [
        (REPLY, "", "auto", REPLY),
        (f"Fjell skole <{REPLY}>", "", "auto", REPLY),
        (REPLY, "skolebro", "auto", "skolebro@example.kommune.no"),
        (REPLY, "skolebro", "reply_to", REPLY),
        (REPLY, "", "from_address", "skolebro@example.kommune.no"),
        ("kontor@fjell.example.no", "", "auto", "skolebro@example.kommune.no"),
        (None, "", "auto", "skolebro@example.kommune.no"),
    ],
)
def test_envelope_sender(
    monkeypatch: pytest.MonkeyPatch,
    reply_to: str | None,
    username: str,
    mode: EnvelopeFrom,
    expected: str,
) -> None:
    monkeypatch.setenv("SMTP_PASSWORD", "x")
    config = Settings(email=replace(SETTINGS.email, smtp_username=username))
    sender = MailSender(config, envelope_from=mode)
    content = MailContent(to="kari@example.no", subject="", text="", reply_to=reply_to)
    assert sender.envelope_sender(content) == expected
