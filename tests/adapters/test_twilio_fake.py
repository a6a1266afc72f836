"""The loopback Twilio: the real SDK against it, its errors, its list, its signed callbacks."""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta

import aiohttp
import pytest
from aiohttp import web
from twilio.base.exceptions import TwilioRestException
from twilio.request_validator import RequestValidator
from twilio.rest import Client

from adapters.fakes.twilio import FakeTwilio, num_segments
from adapters.sms_twilio import LoopbackTwilioHttpClient

ACCOUNT = "AC" + "0123456789abcdef" * 2
TOKEN = "fake-auth-token-0123456789"
OURS = "+4759440000"
PARENT = "+4791234567"
AUTH = {"Authorization": aiohttp.encode_basic_auth(ACCOUNT, TOKEN)}


@pytest.fixture
async def fake() -> AsyncIterator[FakeTwilio]:
    async with FakeTwilio(ACCOUNT, TOKEN, callback_delay=0.001, retry_delay=0.001) as f:
        yield f


@pytest.fixture
async def client(fake: FakeTwilio) -> AsyncIterator[Client]:
    http = LoopbackTwilioHttpClient(fake.base_url, timeout=5)
    yield Client(ACCOUNT, TOKEN, http_client=http)
    await http.close()


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def serve(handler: Handler, path: str = "/hook") -> tuple[web.AppRunner, str]:
    app = web.Application()
    app.router.add_post(path, handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}{path}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_sdk_creates_a_message_in_twilio_shape(fake: FakeTwilio, client: Client) -> None:
    msg = await client.messages.create_async(
        to=PARENT, from_=OURS, body="Hei", status_callback="http://127.0.0.1:1/cb"
    )
    assert re.fullmatch(r"SM[0-9a-f]{32}", msg.sid or "")
    assert msg.status == "queued"
    assert msg.direction == "outbound-api"
    assert msg.to == PARENT and msg.from_ == OURS and msg.body == "Hei"
    assert isinstance(msg.date_created, datetime) and msg.date_created.tzinfo is not None
    assert msg.date_sent is None and msg.price is None and msg.error_code is None
    assert msg.num_segments == "1" and msg.api_version == "2010-04-01"
    assert msg.uri == f"/2010-04-01/Accounts/{ACCOUNT}/Messages/{msg.sid}.json"
    [sent] = fake.sent
    assert (sent.sid, sent.to, sent.from_, sent.body) == (msg.sid, PARENT, OURS, "Hei")
    assert sent.status_callback == "http://127.0.0.1:1/cb"
    fetched = await client.messages(msg.sid).fetch_async()
    assert fetched.sid == msg.sid


async def test_messaging_service_send_is_accepted(fake: FakeTwilio, client: Client) -> None:
    msg = await client.messages.create_async(
        to=PARENT, messaging_service_sid="MG" + "1" * 32, body="Hei"
    )
    assert msg.status == "accepted" and msg.from_ is None
    assert fake.sent[0].messaging_service_sid == "MG" + "1" * 32


async def test_wrong_token_is_refused(fake: FakeTwilio) -> None:
    http = LoopbackTwilioHttpClient(fake.base_url, timeout=5)
    try:
        bad = Client(ACCOUNT, "not-the-token", http_client=http)
        with pytest.raises(TwilioRestException) as info:
            await bad.messages.create_async(to=PARENT, from_=OURS, body="x")
    finally:
        await http.close()
    assert info.value.status == 401 and info.value.code == 20003
    assert fake.sent == []


async def test_raw_401_has_twilio_error_body(fake: FakeTwilio) -> None:
    url = f"{fake.base_url}/2010-04-01/Accounts/{ACCOUNT}/Messages.json"
    async with aiohttp.ClientSession() as s, s.post(url, data={"To": PARENT}) as resp:
        assert resp.status == 401
        assert "Basic" in resp.headers["WWW-Authenticate"]
        assert await resp.json() == {
            "code": 20003,
            "message": "Authenticate",
            "more_info": "https://www.twilio.com/docs/errors/20003",
            "status": 401,
        }


@pytest.mark.parametrize(
    ("setup", "to", "status", "code"),
    [
        (lambda f: None, "12345", 400, 21211),
        (lambda f: f.mark_invalid("+4790000001"), "+4790000001", 400, 21211),
        (lambda f: f.mark_unsubscribed("+4790000002"), "+4790000002", 400, 21610),
        (lambda f: f.mark_not_mobile("+4722000000"), "+4722000000", 400, 21614),
        (lambda f: f.fail_next(status=429), PARENT, 429, 20429),
        (lambda f: f.fail_next(status=503), PARENT, 503, 20503),
        (lambda f: f.fail_next(status=400, code=21408), PARENT, 400, 21408),
    ],
)
async def test_error_codes(
    fake: FakeTwilio,
    client: Client,
    setup: Callable[[FakeTwilio], None],
    to: str,
    status: int,
    code: int,
) -> None:
    setup(fake)
    with pytest.raises(TwilioRestException) as info:
        await client.messages.create_async(to=to, from_=OURS, body="x")
    assert (info.value.status, info.value.code) == (status, code)
    # The failure plan is used up: the next send goes through.
    if to == PARENT:
        ok = await client.messages.create_async(to=to, from_=OURS, body="x")
        assert ok.status == "queued"


async def test_missing_fields_get_their_codes(fake: FakeTwilio, client: Client) -> None:
    with pytest.raises(TwilioRestException) as info:
        await client.messages.create_async(to=PARENT, from_=OURS)
    assert info.value.code == 21602
    with pytest.raises(TwilioRestException) as info:
        await client.messages.create_async(to=PARENT, body="x")
    assert info.value.code == 21603


async def test_fail_next_for_one_destination_and_retry_after(fake: FakeTwilio) -> None:
    fake.fail_next(2, status=429, retry_after=7, to="+4790000009")
    url = f"{fake.base_url}/2010-04-01/Accounts/{ACCOUNT}/Messages.json"
    async with aiohttp.ClientSession(headers=AUTH) as s:
        form = {"To": PARENT, "From": OURS, "Body": "x"}
        async with s.post(url, data=form) as resp:
            assert resp.status == 201  # other numbers are not affected
        form["To"] = "+4790000009"
        for _ in range(2):
            async with s.post(url, data=form) as resp:
                assert resp.status == 429
                assert resp.headers["Retry-After"] == "7"
                assert (await resp.json())["code"] == 20429
        async with s.post(url, data=form) as resp:
            assert resp.status == 201


async def test_latency_knob(fake: FakeTwilio, client: Client) -> None:
    fake.delay_seconds = 0.2
    loop = asyncio.get_running_loop()
    start = loop.time()
    await client.messages.create_async(to=PARENT, from_=OURS, body="x")
    assert loop.time() - start >= 0.2


async def test_list_filters_and_pages(fake: FakeTwilio, client: Client) -> None:
    for i in range(5):
        await client.messages.create_async(to=PARENT, from_=OURS, body=f"ut {i}")
    await client.messages.create_async(to="+4790000003", from_=OURS, body="annen")
    for i in range(3):
        await fake.send_inbound(PARENT, OURS, f"inn {i}")  # no webhook URL: just recorded
    await fake.drain()  # outbound messages are "sent" (have a date_sent) from here on

    to_parent = await client.messages.list_async(to=PARENT, page_size=2)
    assert [m.body for m in to_parent] == [f"ut {i}" for i in reversed(range(5))]  # newest first
    to_us = await client.messages.list_async(to=OURS, page_size=2)
    assert [m.body for m in to_us] == ["inn 2", "inn 1", "inn 0"]
    assert {m.direction for m in to_us} == {"inbound"} and {m.status for m in to_us} == {"received"}
    from_parent = await client.messages.list_async(from_=PARENT)
    assert len(from_parent) == 3

    hour_ago = datetime.now(UTC) - timedelta(hours=1)
    later = datetime.now(UTC) + timedelta(hours=1)
    assert len(await client.messages.list_async(date_sent_after=hour_ago)) == 9
    assert await client.messages.list_async(date_sent_after=later) == []
    assert len(await client.messages.list_async(date_sent_before=later, to=OURS)) == 3
    assert await client.messages.list_async(date_sent_before=hour_ago) == []
    today = datetime.now(UTC).date().isoformat()
    assert len(await client.messages.list_async(date_sent=today, to=OURS)) == 3
    assert len(await client.messages.list_async(limit=4)) == 4


async def test_list_page_json_shape(fake: FakeTwilio) -> None:
    for i in range(3):
        await fake.send_inbound(PARENT, OURS, f"inn {i}")
    url = f"{fake.base_url}/2010-04-01/Accounts/{ACCOUNT}/Messages.json"
    async with (
        aiohttp.ClientSession(headers=AUTH) as s,
        s.get(url, params={"To": OURS, "PageSize": "2"}) as resp,
    ):
        page = await resp.json()
    assert page["page"] == 0 and page["page_size"] == 2 and page["start"] == 0
    assert page["previous_page_uri"] is None
    assert page["next_page_uri"].startswith(f"/2010-04-01/Accounts/{ACCOUNT}/Messages.json?")
    assert "PageToken=PA" in page["next_page_uri"] and "To=%2B4759440000" in page["next_page_uri"]
    [first, _] = page["messages"]
    assert set(first) >= {
        "sid",
        "account_sid",
        "body",
        "date_created",
        "date_sent",
        "direction",
        "from",
        "to",
        "num_media",
        "num_segments",
        "status",
        "price",
        "uri",
        "subresource_uris",
    }
    assert re.fullmatch(r"\w{3}, \d{2} \w{3} \d{4} \d{2}:\d{2}:\d{2} \+0000", first["date_created"])


async def test_bad_date_filter_is_400(fake: FakeTwilio) -> None:
    url = f"{fake.base_url}/2010-04-01/Accounts/{ACCOUNT}/Messages.json"
    async with (
        aiohttp.ClientSession(headers=AUTH) as s,
        s.get(url, params={"DateSent>": "yesterday"}) as resp,
    ):
        assert resp.status == 400
        assert (await resp.json())["code"] == 20001


async def test_signed_status_callbacks_arrive_in_order(fake: FakeTwilio, client: Client) -> None:
    got: list[tuple[dict[str, str], bool]] = []
    validator = RequestValidator(TOKEN)

    async def hook(request: web.Request) -> web.Response:
        form = {k: str(v) for k, v in (await request.post()).items()}
        url = str(request.url)
        got.append((form, validator.validate(url, form, request.headers["X-Twilio-Signature"])))
        return web.Response(text="")

    runner, url = await serve(hook)
    try:
        fake.set_outcome("+4790000004", "undelivered", 30003)
        ok = await client.messages.create_async(
            to=PARENT, from_=OURS, body="a", status_callback=url
        )
        bad = await client.messages.create_async(
            to="+4790000004", from_=OURS, body="b", status_callback=url
        )
        await fake.drain()
    finally:
        await runner.cleanup()
    assert all(valid for _, valid in got)
    ok_seq = [f["MessageStatus"] for f, _ in got if f["MessageSid"] == ok.sid]
    bad_seq = [
        (f["MessageStatus"], f.get("ErrorCode")) for f, _ in got if f["MessageSid"] == bad.sid
    ]
    assert ok_seq == ["queued", "sent", "delivered"]
    assert bad_seq == [("queued", None), ("sent", None), ("undelivered", "30003")]
    delivered = next(f for f, _ in got if f["MessageStatus"] == "delivered")
    assert delivered["AccountSid"] == ACCOUNT and delivered["SmsStatus"] == "delivered"
    assert delivered["To"] == PARENT and delivered["From"] == OURS
    assert [c.status for c in fake.callbacks] == [200] * 6
    fetched = await client.messages(bad.sid).fetch_async()
    assert (fetched.status, fetched.error_code) == ("undelivered", 30003)


async def test_failed_outcome_skips_sent(fake: FakeTwilio, client: Client) -> None:
    fake.set_outcome(PARENT, "failed", 30008)
    runner, url = await serve(_ok)
    try:
        await client.messages.create_async(to=PARENT, from_=OURS, body="a", status_callback=url)
        await fake.drain()
    finally:
        await runner.cleanup()
    assert [c.params["MessageStatus"] for c in fake.callbacks] == ["queued", "failed"]
    assert fake.callbacks[-1].params["ErrorCode"] == "30008"


async def _ok(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(text="")


async def test_callbacks_retry_on_connection_errors(fake: FakeTwilio, client: Client) -> None:
    fake.callback_retries = 2
    dead = f"http://127.0.0.1:{free_port()}/cb"
    await client.messages.create_async(to=PARENT, from_=OURS, body="a", status_callback=dead)
    await fake.drain()
    assert [c.status for c in fake.callbacks] == [0, 0, 0]
    assert len(fake.webhook_attempts) == 9  # three callbacks, each tried 1 + 2 times


@pytest.mark.parametrize(
    ("fragment", "attempts", "final"),
    [
        ("#rc=3&rp=all", 3, 200),  # two 500s, then through
        ("#rc=1&rp=all", 2, 500),  # out of retries
        ("#rc=3&rp=ct", 1, 500),  # a 500 is not a connection failure
        ("", 1, 500),  # Twilio's default retries only connection failures
    ],
)
async def test_inbound_webhook_honours_connection_overrides(
    fake: FakeTwilio, fragment: str, attempts: int, final: int
) -> None:
    seen: list[dict[str, str]] = []

    async def hook(request: web.Request) -> web.Response:
        seen.append({k: str(v) for k, v in (await request.post()).items()})
        return web.Response(status=500 if len(seen) <= 2 else 200, text="<Response/>")

    runner, url = await serve(hook)
    try:
        status, _ = await fake.send_inbound(PARENT, OURS, "hei", url=url + fragment)
    finally:
        await runner.cleanup()
    assert (len(seen), status) == (attempts, final)
    assert len({form["MessageSid"] for form in seen}) == 1  # a retry is the same message


async def test_inbound_webhook_form_and_signature(fake: FakeTwilio) -> None:
    seen: list[tuple[str, dict[str, str], str]] = []

    async def hook(request: web.Request) -> web.Response:
        form = {k: str(v) for k, v in (await request.post()).items()}
        seen.append((str(request.url), form, request.headers["X-Twilio-Signature"]))
        return web.Response(text="<Response/>")

    runner, url = await serve(hook)
    try:
        fake.webhook_url = url + "#rc=3&rp=all"
        status, text = await fake.send_inbound(PARENT, OURS, "Hei 👋", media=1)
        fake.sign_with_fragment = True
        await fake.send_inbound(PARENT, OURS, "igjen")
    finally:
        await runner.cleanup()
    assert (status, text) == (200, "<Response/>")
    (got_url, form, sig), (_, form2, sig2) = seen
    validator = RequestValidator(TOKEN)
    assert got_url == url  # the fragment never goes on the wire
    assert validator.validate(url, form, sig)
    assert validator.validate(url + "#rc=3&rp=all", form2, sig2)
    assert not validator.validate(url, form2, sig2)
    assert re.fullmatch(r"MM[0-9a-f]{32}", form["MessageSid"])
    assert form["SmsSid"] == form["SmsMessageSid"] == form["MessageSid"]
    assert form["From"] == PARENT and form["To"] == OURS and form["Body"] == "Hei 👋"
    assert form["AccountSid"] == ACCOUNT and form["ApiVersion"] == "2010-04-01"
    assert form["NumMedia"] == "1" and form["MediaContentType0"] == "image/jpeg"
    assert form["MediaUrl0"].startswith(f"https://api.twilio.com/2010-04-01/Accounts/{ACCOUNT}/")
    assert form["FromCountry"] == "NO" and form["SmsStatus"] == "received"


async def test_bad_and_missing_signatures(fake: FakeTwilio) -> None:
    seen: list[str | None] = []

    async def hook(request: web.Request) -> web.Response:
        form = {k: str(v) for k, v in (await request.post()).items()}
        sig = request.headers.get("X-Twilio-Signature")
        seen.append(sig)
        ok = sig is not None and RequestValidator(TOKEN).validate(str(request.url), form, sig)
        return web.Response(status=200 if ok else 403)

    runner, url = await serve(hook)
    try:
        assert (await fake.send_inbound(PARENT, OURS, "x", url=url, bad_signature=True))[0] == 403
        assert (await fake.send_inbound(PARENT, OURS, "x", url=url, unsigned=True))[0] == 403
        assert (await fake.send_inbound(PARENT, OURS, "x", url=url))[0] == 200
    finally:
        await runner.cleanup()
    assert seen[1] is None


async def test_inbound_without_reachable_webhook_is_still_listed(fake: FakeTwilio) -> None:
    url = f"http://127.0.0.1:{free_port()}/sms#rc=2&rp=all"
    status, text = await fake.send_inbound(PARENT, OURS, "hei", sid="SM" + "ab" * 16, url=url)
    assert status == 0 and "connection" in text
    assert len(fake.webhook_attempts) == 3
    assert [m["sid"] for m in fake.messages] == ["SM" + "ab" * 16]


def test_segments() -> None:
    assert num_segments("a" * 160) == 1
    assert num_segments("a" * 161) == 2
    assert num_segments("æøå" * 53 + "a") == 1  # æøå are GSM-7
    assert num_segments("€" * 80) == 1  # extension characters take two septets
    assert num_segments("€" * 81) == 2
    assert num_segments("ü" + "🙂" * 35) == 2  # emoji: UCS-2, two code units each
