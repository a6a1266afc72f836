"""The Twilio SMS adapter against the loopback fake: real HTTP, the real SDK, real signatures.

The in-test `Store` is the contract the core gives adapters (`AcceptInbound`,
`RecordStatus`): events keyed by external id, `Accepted(new=False)` for a repeat, and
`StoreUnavailable` while it is "down".
"""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import pytest
from aiohttp import web
from twilio.base.exceptions import TwilioRestException

from adapters.fakes.twilio import FakeTwilio
from adapters.sms_twilio import (
    SMS_PATH,
    STATUS_PATH,
    TWIML_EMPTY,
    FetchFailed,
    TwilioSender,
    TwilioWebhooks,
    classify,
    fetch_recent,
    retry_after_seconds,
    routes,
)
from bridge.config import ConfigError, Settings, parse_config
from bridge.domain import (
    Accepted,
    Channel,
    InboundEvent,
    Outgoing,
    SendOutcome,
    StatusUpdate,
    StoreUnavailable,
)

ACCOUNT = "AC" + "0123456789abcdef" * 2
TOKEN = "test-auth-token-9876543210"
OURS = "+4759440000"
PARENT = "+4791234567"
DATA = Path(__file__).resolve().parent.parent / "data" / "twilio"
INBOUND_CASES = [
    pytest.param(json.loads(p.read_text(encoding="utf-8")), id=p.stem)
    for p in sorted(DATA.glob("inbound_*.json"))
]
STATUS_CASES = json.loads((DATA / "status_callbacks.json").read_text(encoding="utf-8"))


def make_settings(public_url: str, api_base_url: str, *, service: str = "") -> Settings:
    return parse_config(
        f"""
[bridge]
public_url = "{public_url}"

[sms]
enabled = true
account_sid = "{ACCOUNT}"
auth_token_env = "TEST_TWILIO_TOKEN"
from_number = "{OURS}"
messaging_service_sid = "{service}"
api_base_url = "{api_base_url}"
"""
    )


@dataclass
class Store:
    """The core's side of the contract, in memory; `down` > 0 fails that many calls."""

    events: dict[str, InboundEvent] = field(default_factory=dict)
    calls: list[tuple[str, bool]] = field(default_factory=list)
    statuses: list[StatusUpdate] = field(default_factory=list)
    down: int = 0  # -1: down until told otherwise

    def _check(self) -> None:
        if self.down:
            if self.down > 0:
                self.down -= 1
            raise StoreUnavailable("database is locked")

    async def accept(self, event: InboundEvent) -> Accepted:
        self._check()
        new = event.external_id not in self.events
        if new:
            self.events[event.external_id] = event
        self.calls.append((event.external_id, new))
        return Accepted(event_id=list(self.events).index(event.external_id) + 1, new=new)

    async def record_status(self, update: StatusUpdate) -> None:
        self._check()
        self.statuses.append(update)


@dataclass
class Env:
    fake: FakeTwilio
    settings: Settings
    store: Store
    public_url: str

    @property
    def sms_url(self) -> str:
        return self.public_url + SMS_PATH

    @property
    def status_url(self) -> str:
        return self.public_url + STATUS_PATH


@pytest.fixture
async def env(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Env]:
    monkeypatch.setenv("TEST_TWILIO_TOKEN", TOKEN)
    # Bind first: the public URL (which signatures cover) must be known before the routes.
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    public_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    fake = FakeTwilio(
        ACCOUNT,
        TOKEN,
        webhook_url=public_url + SMS_PATH + "#rc=3&rp=all",
        callback_delay=0.001,
        retry_delay=0.001,
    )
    await fake.start()
    settings = make_settings(public_url, fake.base_url)
    store = Store()
    app = web.Application()
    app.add_routes(routes(settings, store.accept, store.record_status))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.SockSite(runner, sock).start()
    try:
        yield Env(fake, settings, store, public_url)
    finally:
        await runner.cleanup()
        await fake.stop()


@pytest.fixture
async def sender(env: Env) -> AsyncIterator[TwilioSender]:
    s = TwilioSender(env.settings, timeout=2)
    yield s
    await s.close()


def out(to: str = PARENT, body: str = "Hei fra skolen", delivery_id: str = "d-1") -> Outgoing:
    return Outgoing(delivery_id=delivery_id, channel=Channel.SMS, address=to, body=body)


async def raw_post(
    url: str, body: bytes | str, headers: dict[str, str] | None = None
) -> tuple[int, str]:
    async with aiohttp.ClientSession() as s, s.post(url, data=body, headers=headers) as resp:
        return resp.status, await resp.text()


FORM = {"Content-Type": "application/x-www-form-urlencoded"}


# -- inbound webhook ---------------------------------------------------------------------


@pytest.mark.parametrize("case", INBOUND_CASES)
async def test_inbound_fixture_forms_become_events(env: Env, case: dict[str, Any]) -> None:
    before = datetime.now(UTC)
    status, text = await env.fake.post_form(env.sms_url, case["form"])
    assert (status, text) == (200, TWIML_EMPTY)
    expected = case["expected"]
    event = env.store.events[expected["external_id"]]
    assert event.channel is Channel.SMS
    assert event.sender == expected["sender"]
    assert event.text == expected["text"]
    assert event.media_count == expected["media_count"]
    assert event.payload == expected["payload"]
    assert "Body" not in event.payload and "From" not in event.payload
    assert before <= event.received_at <= datetime.now(UTC)


async def test_signed_inbound_gets_twiml_and_is_stored(env: Env) -> None:
    async with aiohttp.ClientSession() as s:
        form = env.fake.inbound_form(PARENT, OURS, "Per er syk")
        headers = {"X-Twilio-Signature": env.fake.signature(env.sms_url, form)}
        async with s.post(env.sms_url, data=form, headers=headers) as resp:
            assert resp.status == 200
            assert resp.content_type == "text/xml"
            assert await resp.text() == '<?xml version="1.0" encoding="UTF-8"?><Response/>'
    event = env.store.events[form["MessageSid"]]
    assert (event.sender, event.text, event.media_count) == (PARENT, "Per er syk", 0)
    assert event.received_at.tzinfo is not None


async def test_send_inbound_with_media(env: Env) -> None:
    status, _ = await env.fake.send_inbound(PARENT, OURS, "Bilde", media=2, sid="MM" + "c" * 32)
    assert status == 200
    event = env.store.events["MM" + "c" * 32]
    assert event.media_count == 2 and event.text == "Bilde"
    assert event.payload["NumMedia"] == "2"


async def test_signature_over_url_with_fragment_is_accepted(env: Env) -> None:
    env.fake.sign_with_fragment = True
    status, _ = await env.fake.send_inbound(PARENT, OURS, "hei")
    assert status == 200 and len(env.store.events) == 1


@pytest.mark.parametrize("how", ["bad", "missing", "other-token", "tampered", "other-url"])
async def test_bad_or_missing_signature_is_403_and_stores_nothing(env: Env, how: str) -> None:
    if how == "bad":
        status, _ = await env.fake.send_inbound(PARENT, OURS, "hei", bad_signature=True)
    elif how == "missing":
        status, _ = await env.fake.send_inbound(PARENT, OURS, "hei", unsigned=True)
    else:
        form = env.fake.inbound_form(PARENT, OURS, "hei")
        if how == "other-token":
            impostor = FakeTwilio(ACCOUNT, "guessed-token")
            signature = impostor.signature(env.sms_url, form)
        elif how == "other-url":
            signature = env.fake.signature(env.public_url + "/elsewhere", form)
        else:
            signature = env.fake.signature(env.sms_url, form)
            form["Body"] = "Ikke syk likevel"
        status, _ = await env.fake.post_form(env.sms_url, form, signature=signature, sign=False)
    assert status == 403
    assert env.store.events == {} and env.store.calls == []


async def test_repeated_message_sid_is_200_and_a_duplicate(env: Env) -> None:
    sid = "SM" + "d" * 32
    assert (await env.fake.send_inbound(PARENT, OURS, "hei", sid=sid))[0] == 200
    assert (await env.fake.send_inbound(PARENT, OURS, "hei", sid=sid))[0] == 200
    assert env.store.calls == [(sid, True), (sid, False)]
    assert len(env.store.events) == 1


async def test_store_unavailable_503_then_twilio_retries_until_through(env: Env) -> None:
    env.store.down = 2
    status, text = await env.fake.send_inbound(PARENT, OURS, "hei", sid="SM" + "e" * 32)
    assert (status, text) == (200, TWIML_EMPTY)
    assert [a.status for a in env.fake.webhook_attempts] == [503, 503, 200]
    assert env.store.calls == [("SM" + "e" * 32, True)]


async def test_store_unavailable_answers_503_with_retry_after(env: Env) -> None:
    env.store.down = -1
    form = env.fake.inbound_form(PARENT, OURS, "hei")
    headers = {"X-Twilio-Signature": env.fake.signature(env.sms_url, form)}
    async with (
        aiohttp.ClientSession() as s,
        s.post(env.sms_url, data=form, headers=headers) as resp,
    ):
        assert resp.status == 503
        assert int(resp.headers["Retry-After"]) > 0
    assert env.store.events == {}


async def test_any_accept_failure_is_503(env: Env) -> None:
    async def broken(event: InboundEvent) -> Accepted:
        raise RuntimeError("boom")

    hooks = TwilioWebhooks(env.settings, broken, env.store.record_status)
    app = web.Application()
    hooks.add_routes(app)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        # Signed for the public URL, delivered to this second server's port.
        form = env.fake.inbound_form(PARENT, OURS, "hei")
        signature = env.fake.signature(env.sms_url, form)
        status, _ = await raw_post(
            f"http://127.0.0.1:{port}{SMS_PATH}",
            urlencode(form),
            {**FORM, "X-Twilio-Signature": signature},
        )
    finally:
        await runner.cleanup()
    assert status == 503


@pytest.mark.parametrize(
    ("body", "content_type", "status"),
    [
        (b"Body=%FF%FE&MessageSid=SM1&From=%2B4791234567", "form", 400),  # not UTF-8
        (b"\xff\xfe\x00garbage", "form", 400),
        (b'{"MessageSid": "SM1"}', "application/json", 400),
        (b"a=1&" * 300, "form", 400),  # too many fields
        (b"Body=" + b"x" * 70_000, "form", 413),
    ],
    ids=["bad-utf8-escape", "binary", "json", "many-fields", "oversized"],
)
async def test_malformed_or_oversized_forms_are_clear_4xx(
    env: Env, body: bytes, content_type: str, status: int
) -> None:
    ctype = FORM["Content-Type"] if content_type == "form" else content_type
    headers = {"Content-Type": ctype, "X-Twilio-Signature": "c2lnbmF0dXJl"}
    got, text = await raw_post(env.sms_url, body, headers)
    assert got == status and text and len(text) < 100
    assert env.store.events == {}


async def test_oversized_declared_length_is_refused_unread(env: Env) -> None:
    got, _ = await raw_post(
        env.sms_url,
        b"Body=" + b"x" * 200_000,
        {**FORM, "X-Twilio-Signature": "c2lnbmF0dXJl"},
    )
    assert got == 413


@pytest.mark.parametrize("missing", ["MessageSid", "From"])
async def test_signed_form_without_sid_or_sender_is_400(env: Env, missing: str) -> None:
    form = env.fake.inbound_form(PARENT, OURS, "hei")
    del form[missing]
    if missing == "MessageSid":
        del form["SmsSid"], form["SmsMessageSid"]
    status, text = await env.fake.post_form(env.sms_url, form)
    assert status == 400 and missing in text
    assert env.store.calls == []


async def test_garbled_num_media_still_stores_the_text(env: Env) -> None:
    form = env.fake.inbound_form(PARENT, OURS, "hei")
    form["NumMedia"] = "lots"
    assert (await env.fake.post_form(env.sms_url, form))[0] == 200
    assert env.store.events[form["MessageSid"]].media_count == 0


# -- status callbacks --------------------------------------------------------------------


@pytest.mark.parametrize("case", STATUS_CASES, ids=[c["name"] for c in STATUS_CASES])
async def test_status_callbacks_map_to_status_updates(env: Env, case: dict[str, Any]) -> None:
    status, _ = await env.fake.post_form(env.status_url, case["form"])
    assert status == 200
    if case["expected"] is None:
        assert env.store.statuses == []
        return
    [update] = env.store.statuses
    assert update == StatusUpdate(
        channel=Channel.SMS,
        provider_id=case["form"]["MessageSid"],
        status=case["expected"]["status"],
        error=case["expected"]["error"],
        contact_dead=case["expected"]["contact_dead"],
    )


async def test_status_callback_signature_rule(env: Env) -> None:
    form = STATUS_CASES[4]["form"]
    assert (await env.fake.post_form(env.status_url, form, signature="AAAA", sign=False))[0] == 403
    assert (await env.fake.post_form(env.status_url, form, sign=False))[0] == 403
    assert env.store.statuses == []


async def test_status_callback_store_unavailable_is_503(env: Env) -> None:
    env.store.down = 1
    status, _ = await env.fake.post_form(env.status_url, STATUS_CASES[4]["form"])
    assert status == 503
    assert (await env.fake.post_form(env.status_url, STATUS_CASES[4]["form"]))[0] == 200


# -- sending -----------------------------------------------------------------------------


async def test_send_success_and_callbacks_reach_record_status(
    env: Env, sender: TwilioSender
) -> None:
    result = await sender.send(out())
    assert result.outcome is SendOutcome.SENT
    assert result.provider_id and result.provider_id.startswith("SM")
    [sent] = env.fake.sent
    assert (sent.sid, sent.to, sent.from_, sent.body) == (
        result.provider_id,
        PARENT,
        OURS,
        "Hei fra skolen",
    )
    # SPEC's callback path, carrying our delivery id so a fast callback finds it.
    assert sent.status_callback == env.public_url + "/webhooks/twilio/status?d=d-1"
    await env.fake.drain()
    assert [c.status for c in env.fake.callbacks] == [200, 200, 200]
    assert [(u.provider_id, u.status, u.delivery_id) for u in env.store.statuses] == [
        (result.provider_id, "sent", "d-1"),
        (result.provider_id, "delivered", "d-1"),
    ]


async def test_undelivered_to_unknown_handset_marks_contact_dead(
    env: Env, sender: TwilioSender
) -> None:
    env.fake.set_outcome(PARENT, "undelivered", 30005)
    result = await sender.send(out())
    await env.fake.drain()
    assert env.store.statuses[-1] == StatusUpdate(
        channel=Channel.SMS,
        provider_id=str(result.provider_id),
        status="failed",
        error="30005: unknown handset",
        contact_dead=True,
        delivery_id="d-1",
    )


async def test_send_through_messaging_service(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = make_settings(env.public_url, env.fake.base_url, service="MG" + "7" * 32)
    s = TwilioSender(settings)
    try:
        result = await s.send(out())
    finally:
        await s.close()
    assert result.outcome is SendOutcome.SENT
    [sent] = env.fake.sent
    assert sent.messaging_service_sid == "MG" + "7" * 32 and sent.from_ is None


@pytest.mark.parametrize(
    ("plan", "outcome", "error", "retry_after", "dead"),
    [
        ({"status": 429, "retry_after": 7}, "transient", "20429: too many requests", 7.0, False),
        ({"status": 429}, "transient", "20429: too many requests", None, False),
        ({"status": 500}, "transient", "20500: Twilio internal error", None, False),
        ({"status": 503, "retry_after": 2}, "transient", "20503: Twilio unavailable", 2.0, False),
        (
            {"status": 400, "code": 21408},
            "permanent",
            "21408: region not enabled for SMS",
            None,
            False,
        ),
        (
            {"status": 400, "code": 21614},
            "permanent",
            "21614: To number is not a mobile number",
            None,
            True,
        ),
        ({"status": 400, "code": 21611}, "transient", "21611: sender queue full", None, False),
        ({"status": 400, "code": 12345}, "permanent", "12345: HTTP 400", None, False),
    ],
)
async def test_send_failures_are_classified(
    env: Env,
    sender: TwilioSender,
    plan: dict[str, Any],
    outcome: str,
    error: str,
    retry_after: float | None,
    dead: bool,
) -> None:
    env.fake.fail_next(**plan)
    result = await sender.send(out())
    assert (result.outcome.value, result.error, result.retry_after, result.contact_dead) == (
        outcome,
        error,
        retry_after,
        dead,
    )
    assert result.provider_id is None


async def test_invalid_number_is_permanent_and_dead_without_leaking_it(
    env: Env, sender: TwilioSender
) -> None:
    result = await sender.send(out(to="004791234"))
    assert result.outcome is SendOutcome.PERMANENT and result.contact_dead
    assert result.error == "21211: invalid To number"
    env.fake.mark_invalid("+4790000001")
    result = await sender.send(out(to="+4790000001"))
    assert result.outcome is SendOutcome.PERMANENT and result.contact_dead
    assert "4790000001" not in str(result)


async def test_unsubscribed_is_permanent(env: Env, sender: TwilioSender) -> None:
    env.fake.mark_unsubscribed(PARENT)
    result = await sender.send(out())
    assert result.outcome is SendOutcome.PERMANENT
    assert result.error == "21610: recipient unsubscribed (STOP)"
    assert result.contact_dead  # like a blocked bot: nothing gets through until START


async def test_wrong_token_is_transient(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_TWILIO_TOKEN", "rotated")
    s = TwilioSender(env.settings)
    try:
        result = await s.send(out())
    finally:
        await s.close()
    assert (result.outcome, result.error) == (SendOutcome.TRANSIENT, "20003: authentication failed")


async def test_connection_refused_is_transient(env: Env, sender: TwilioSender) -> None:
    await env.fake.stop()
    result = await sender.send(out())
    assert result.outcome is SendOutcome.TRANSIENT
    assert result.error and result.error.startswith("connection error")


async def test_timeout_is_transient(env: Env) -> None:
    env.fake.delay_seconds = 0.4
    s = TwilioSender(env.settings, timeout=0.1)
    try:
        result = await s.send(out())
    finally:
        await s.close()
    assert (result.outcome, result.error) == (SendOutcome.TRANSIENT, "timeout")


async def test_missing_token_is_a_config_error(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TEST_TWILIO_TOKEN")
    with pytest.raises(ConfigError, match="TEST_TWILIO_TOKEN"):
        TwilioSender(env.settings)
    with pytest.raises(ConfigError):
        routes(env.settings, env.store.accept, env.store.record_status)


async def test_logs_carry_ids_not_numbers_or_bodies(
    env: Env, sender: TwilioSender, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="adapters")
    await sender.send(out(body="Hemmelig innhold"))
    env.fake.mark_invalid("+4790000001")
    await sender.send(out(to="+4790000001", body="Hemmelig innhold"))
    env.store.down = -1
    await env.fake.send_inbound(PARENT, OURS, "Privat melding")
    env.store.down = 0
    await env.fake.send_inbound(PARENT, OURS, "Privat melding")
    await env.fake.send_inbound(PARENT, OURS, "x", bad_signature=True)
    ours = [r.getMessage() for r in caplog.records if r.name.startswith("adapters")]
    assert ours
    for text in ours:
        for secret in ("91234567", "90000001", "Hemmelig", "Privat", TOKEN):
            assert secret not in text


# -- classify, unit --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("exc", "outcome", "dead"),
    [
        (
            TwilioRestException(400, "u", "The 'To' number +4791234567 is bad", 21211, "POST"),
            "permanent",
            True,
        ),
        (TwilioRestException(404, "u", "nope", 20404, "POST"), "permanent", False),
        (TwilioRestException(502, "u", "gateway", 502, "POST"), "transient", False),
        (TimeoutError(), "transient", False),
        (aiohttp.ServerDisconnectedError(), "transient", False),
        (ConnectionResetError(), "transient", False),
        (ValueError("Expecting value: line 1 column 1"), "transient", False),
        (KeyError("sid"), "transient", False),
    ],
)
def test_classify(exc: BaseException, outcome: str, dead: bool) -> None:
    result = classify(exc)
    assert (result.outcome.value, result.contact_dead) == (outcome, dead)
    assert result.error and "4791234567" not in result.error


def test_retry_after_forms() -> None:
    assert retry_after_seconds({"Retry-After": "12"}) == 12.0
    assert retry_after_seconds({"Retry-After": "-3"}) == 0.0
    assert retry_after_seconds({"Retry-After": "soon"}) is None
    assert retry_after_seconds({}) is None and retry_after_seconds(None) is None
    when = datetime.now(UTC) + timedelta(seconds=60)
    http_date = when.strftime("%a, %d %b %Y %H:%M:%S GMT")
    got = retry_after_seconds({"Retry-After": http_date})
    assert got is not None and 55 <= got <= 60


# -- catch-up ----------------------------------------------------------------------------


async def test_fetch_recent_returns_what_arrived_while_the_webhook_failed(
    env: Env, sender: TwilioSender
) -> None:
    env.store.down = -1  # the store is down: every webhook attempt gets 503
    s1 = (await env.fake.send_inbound(PARENT, OURS, "Ola er syk", sid="SM" + "1" * 32))[0]
    s2 = (await env.fake.send_inbound("+4798765432", OURS, "Bilde", media=1, sid="MM" + "2" * 32))[
        0
    ]
    assert (s1, s2) == (503, 503)
    await env.fake.send_inbound(PARENT, "+4759449999", "til et annet nummer")
    await sender.send(out())  # outbound: never taken in
    await env.fake.drain()

    since = datetime.now(UTC) - timedelta(hours=48)
    events = await fetch_recent(env.settings, since)
    assert [e.external_id for e in events] == ["SM" + "1" * 32, "MM" + "2" * 32]  # oldest first
    first, second = events
    assert (first.channel, first.sender, first.text, first.media_count) == (
        Channel.SMS,
        PARENT,
        "Ola er syk",
        0,
    )
    assert first.payload == {
        "To": OURS,
        "NumMedia": "0",
        "NumSegments": "1",
        "AccountSid": ACCOUNT,
    }
    assert second.media_count == 1 and second.sender == "+4798765432"
    assert first.received_at.tzinfo is not None and first.received_at >= since

    # The core takes them in once the store is back; a repeat is then a duplicate.
    env.store.down = 0
    for event in events:
        await env.store.accept(event)
    assert (await env.fake.send_inbound(PARENT, OURS, "Ola er syk", sid="SM" + "1" * 32))[0] == 200
    assert env.store.calls[-1] == ("SM" + "1" * 32, False)


async def test_fetch_recent_pages_and_respects_since(env: Env) -> None:
    env.fake.webhook_url = None
    for i in range(105):  # more than one page of 100
        await env.fake.send_inbound(PARENT, OURS, f"m{i}")  # no webhook: recorded only
    events = await fetch_recent(env.settings, datetime.now(UTC) - timedelta(hours=1))
    assert [e.text for e in events] == [f"m{i}" for i in range(105)]
    assert await fetch_recent(env.settings, datetime.now(UTC) + timedelta(minutes=5)) == []


async def test_fetch_recent_with_messaging_service(env: Env) -> None:
    settings = make_settings(env.public_url, env.fake.base_url, service="MG" + "5" * 32)
    env.fake.webhook_url = None
    await env.fake.send_inbound(
        PARENT, OURS, "via tjenesten", messaging_service_sid="MG" + "5" * 32
    )
    await env.fake.send_inbound(
        PARENT, "+4759449999", "annen tjeneste", messaging_service_sid="MG" + "6" * 32
    )
    events = await fetch_recent(settings, datetime.now(UTC) - timedelta(hours=1))
    assert [e.text for e in events] == ["via tjenesten"]
    assert events[0].payload["MessagingServiceSid"] == "MG" + "5" * 32


async def test_fetch_recent_failures_raise_fetch_failed(env: Env) -> None:
    env.fake.fail_next(status=500, on="list")
    with pytest.raises(FetchFailed):
        await fetch_recent(env.settings, datetime.now(UTC) - timedelta(hours=48))
    await env.fake.stop()
    with pytest.raises(FetchFailed, match="unreachable"):
        await fetch_recent(env.settings, datetime.now(UTC) - timedelta(hours=48))
