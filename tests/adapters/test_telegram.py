"""The Telegram adapter against the loopback Bot API: real aiogram, real HTTP, both modes.

The in-test `Store` is the contract the core gives adapters (`AcceptInbound`): events keyed
by external id (the core dedups Telegram updates by update_id), `Accepted(new=False)` for a
repeat, and `StoreUnavailable` while it is "down".
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiogram.exceptions import ClientDecodeError, TelegramNetworkError
from aiogram.methods import SendMessage
from aiohttp import web

from adapters.fakes.telegram import FakeTelegram
from adapters.telegram import (
    ALLOWED_UPDATES,
    SECRET_HEADER,
    TELEGRAM_PATH,
    Button,
    TelegramContent,
    TelegramPoller,
    TelegramSender,
    answer_callback,
    classify,
    delete_webhook,
    event_from_update,
    routes,
    set_commands,
    set_webhook,
    split_text,
)
from bridge.config import ConfigError, Settings, parse_config
from bridge.domain import (
    Accepted,
    Channel,
    InboundEvent,
    Outgoing,
    SendOutcome,
    SendResult,
    StoreUnavailable,
)

TOKEN = "7000000001:AAH-test_token-for-the-loopback"
SECRET = "webhook-Secret_0123456789"
KARI = 5012345678
PER = 5098765432
DATA = Path(__file__).resolve().parent.parent / "data" / "telegram"
CASES: dict[str, dict[str, Any]] = {
    p.stem.removeprefix("update_"): json.loads(p.read_text(encoding="utf-8"))
    for p in sorted(DATA.glob("update_*.json"))
}
UPDATE_CASES = [pytest.param(case, id=name) for name, case in CASES.items()]
NOT_UPDATES = json.loads((DATA / "not_updates.json").read_text(encoding="utf-8"))["cases"]


def make_settings(public_url: str, api_base_url: str) -> Settings:
    return parse_config(
        f"""
[bridge]
public_url = "{public_url}"

[telegram]
enabled = true
token_env = "TEST_TELEGRAM_TOKEN"
mode = "webhook"
api_base_url = "{api_base_url}"
webhook_secret_env = "TEST_TELEGRAM_SECRET"
"""
    )


@dataclass
class Store:
    """The core's side of the contract, in memory; `down` > 0 fails that many calls."""

    events: dict[str, InboundEvent] = field(default_factory=dict)
    calls: list[tuple[str, bool]] = field(default_factory=list)
    failures: int = 0
    down: int = 0  # -1: down until told otherwise
    after_accept: Callable[[InboundEvent], object] | None = None
    gate: asyncio.Event | None = None  # when set up, accept waits for it

    async def accept(self, event: InboundEvent) -> Accepted:
        if self.gate is not None:
            await self.gate.wait()
        if self.down:
            if self.down > 0:
                self.down -= 1
            self.failures += 1
            raise StoreUnavailable("database is locked")
        new = event.external_id not in self.events
        if new:
            self.events[event.external_id] = event
        self.calls.append((event.external_id, new))
        if self.after_accept is not None:
            self.after_accept(event)
        return Accepted(event_id=list(self.events).index(event.external_id) + 1, new=new)


@dataclass
class Env:
    fake: FakeTelegram
    settings: Settings
    store: Store
    public_url: str

    @property
    def webhook_url(self) -> str:
        return self.public_url + TELEGRAM_PATH


@pytest.fixture
async def env(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Env]:
    monkeypatch.setenv("TEST_TELEGRAM_TOKEN", TOKEN)
    monkeypatch.setenv("TEST_TELEGRAM_SECRET", SECRET)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    public_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    fake = FakeTelegram(TOKEN, webhook_retry_delay=0.001)
    await fake.start()
    settings = make_settings(public_url, fake.base_url)
    store = Store()
    app = web.Application()
    app.add_routes(routes(settings, store.accept))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.SockSite(runner, sock).start()
    try:
        yield Env(fake, settings, store, public_url)
    finally:
        await runner.cleanup()
        await fake.stop()


@pytest.fixture
async def sender(env: Env) -> AsyncIterator[TelegramSender]:
    s = TelegramSender(env.settings, timeout=2, per_chat_interval=0)
    yield s
    await s.close()


class Polling:
    """A TelegramPoller running in the background until `stop()`."""

    def __init__(self, env: Env, **kwargs: Any) -> None:
        options: dict[str, Any] = {"poll_timeout": 2, "backoff_initial": 0.01, "backoff_max": 0.05}
        options.update(kwargs)
        self.poller = TelegramPoller(env.settings, env.store.accept, **options)
        self.stopping = asyncio.Event()
        self.task = asyncio.create_task(self.poller.run(self.stopping))

    async def stop(self) -> None:
        self.stopping.set()
        await asyncio.wait_for(self.task, 5)


async def until(condition: Callable[[], bool], seconds: float = 5.0) -> None:
    for _ in range(int(seconds / 0.005)):
        if condition():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("condition not met in time")


def out(body: str, chat: int | str = KARI, delivery_id: str = "d-1") -> Outgoing:
    return Outgoing(delivery_id=delivery_id, channel=Channel.TELEGRAM, address=str(chat), body=body)


async def post(
    url: str, body: bytes | str, secret: str | None = SECRET, **headers: str
) -> tuple[int, str]:
    if secret is not None:
        headers[SECRET_HEADER] = secret
    headers.setdefault("Content-Type", "application/json")
    async with aiohttp.ClientSession() as s, s.post(url, data=body, headers=headers) as resp:
        return resp.status, await resp.text()


def check_event(event: InboundEvent, expected: dict[str, Any]) -> None:
    assert event.channel is Channel.TELEGRAM
    assert event.external_id == expected["external_id"]
    assert event.sender == expected["sender"]
    assert event.text == expected["text"]
    assert event.media_count == expected["media_count"]
    assert event.payload == expected["payload"]
    assert event.received_at.tzinfo is not None


# -- inbound: update -> event, table-driven ----------------------------------------------


@pytest.mark.parametrize("case", UPDATE_CASES)
def test_fixture_update_parses_to_expected_event(case: dict[str, Any]) -> None:
    event = event_from_update(case["update"], datetime.now(UTC))
    if case["expected"] is None:
        assert event is None
    else:
        assert event is not None
        check_event(event, case["expected"])
        if event.payload["kind"] != "contact":
            assert not any("phone" in key for key in event.payload)


@pytest.mark.parametrize("raw", NOT_UPDATES, ids=range(len(NOT_UPDATES)))
def test_json_that_is_not_an_update_is_a_value_error(raw: Any) -> None:
    with pytest.raises(ValueError):
        event_from_update(raw if isinstance(raw, dict) else {"x": raw}, datetime.now(UTC))


@pytest.mark.parametrize("case", UPDATE_CASES)
async def test_fixture_update_through_the_webhook(env: Env, case: dict[str, Any]) -> None:
    status, text = await post(env.webhook_url, json.dumps(case["update"]))
    assert (status, json.loads(text)) == (200, {})
    if case["expected"] is None:
        assert env.store.calls == []
    else:
        check_event(env.store.events[case["expected"]["external_id"]], case["expected"])


async def test_fixture_updates_through_polling(env: Env) -> None:
    """Every fixture in one queue: one poller takes the batch, stores what is for the core
    and confirms all of it (even the updates that are not for us)."""
    cases = list(CASES.values())
    ids = [env.fake.inject(case["update"])["update_id"] for case in cases]
    polling = Polling(env)
    try:
        await until(lambda: env.fake.pending == [] and set(ids) <= set(env.fake.confirmed))
    finally:
        await polling.stop()
    wanted = sorted(
        (case["expected"] for case in cases if case["expected"] is not None),
        key=lambda expected: int(expected["external_id"]),
    )
    assert env.store.calls == [(expected["external_id"], True) for expected in wanted]
    for case in cases:
        if case["expected"] is not None:
            check_event(env.store.events[case["expected"]["external_id"]], case["expected"])


async def test_fake_parent_actions_become_events(env: Env, sender: TelegramSender) -> None:
    """What the fake's helpers produce is what the adapter reads (and the fixtures show)."""
    env.fake.add_chat(KARI)
    await sender.send(out(TelegramContent("Hvem?", buttons=[[Button("Ola", "q:1")]]).to_json()))
    env.fake.send_text(KARI, "Ola er syk")
    env.fake.send_start(KARI, "code-123")
    env.fake.send_command(KARI, "stopp")
    env.fake.share_contact(KARI, "4791234567")
    env.fake.share_contact(KARI, "4798765432", contact_user_id=PER)
    env.fake.press_button(KARI, 1, "q:1")
    env.fake.send_media(KARI, "photo", caption="Lapp")
    env.fake.send_media(KARI, "voice")
    env.fake.send_text(KARI, "Takk!", reply_to=1)
    polling = Polling(env)
    try:
        await until(lambda: len(env.store.events) == 9)
    finally:
        await polling.stop()
    events = list(env.store.events.values())
    assert [e.payload["kind"] for e in events] == [
        "message",
        "start",
        "command",
        "contact",
        "contact",
        "callback",
        "message",
        "message",
        "message",
    ]
    assert {e.sender for e in events} == {str(KARI)}
    assert events[1].payload["start_payload"] == "code-123"
    assert events[2].payload["command"] == "stopp"
    assert events[3].payload["contact_user_id"] == KARI == events[3].payload["user_id"]
    assert events[3].payload["contact_phone"] == "4791234567"
    assert events[4].payload["contact_user_id"] == PER
    assert events[5].payload["callback_data"] == "q:1"
    assert events[5].payload["callback_message_id"] == 1
    assert (events[6].text, events[6].media_count) == ("Lapp", 1)
    assert (events[7].text, events[7].media_count) == ("", 1)
    assert events[8].payload["reply_to_message_id"] == 1
    ids = [int(e.external_id) for e in events]
    assert ids == sorted(ids)


async def test_huge_text_is_accepted_as_is(env: Env) -> None:
    text = "Ola er syk. " * 20_000  # 240 000 characters: the core caps, not the transport
    update = env.fake.send_text(KARI, text)
    polling = Polling(env)
    try:
        await until(lambda: update["update_id"] in env.fake.confirmed)
    finally:
        await polling.stop()
    assert env.store.events[str(update["update_id"])].text == text
    status, _ = await post(env.webhook_url, json.dumps({**update, "update_id": 1}))
    assert status == 200 and env.store.events["1"].text == text


# -- polling -----------------------------------------------------------------------------


async def test_offset_advances_only_after_accept_returned(env: Env) -> None:
    env.store.gate = asyncio.Event()
    ids = [env.fake.send_text(KARI, f"melding {i}")["update_id"] for i in range(3)]
    polling = Polling(env)
    try:
        await until(lambda: bool(env.fake.polls) and env.fake.polls[0].returned == ids)
        await asyncio.sleep(0.05)  # time for a wrong poller to confirm early
        assert env.fake.pending == ids and env.fake.confirmed == []
        assert len(env.fake.polls) == 1 and polling.poller.offset is None
        env.store.gate.set()
        await until(lambda: env.fake.confirmed == ids)
        assert polling.poller.offset == ids[-1] + 1
        assert env.fake.polls[1].offset == ids[-1] + 1
    finally:
        await polling.stop()
    assert env.store.calls == [(str(i), True) for i in ids]


async def test_store_down_then_up_none_lost_none_twice(env: Env) -> None:
    env.store.down = 4
    ids = [env.fake.send_text(KARI, f"melding {i}")["update_id"] for i in range(3)]
    polling = Polling(env)
    try:
        await until(lambda: env.fake.confirmed == ids)
    finally:
        await polling.stop()
    assert env.store.failures == 4
    assert env.store.calls == [(str(i), True) for i in ids]  # in order, each once
    assert env.fake.pending == []


async def test_stopped_while_store_down_the_updates_come_again(env: Env) -> None:
    env.store.down = -1
    ids = [env.fake.send_text(KARI, f"melding {i}")["update_id"] for i in range(2)]
    first = Polling(env)
    try:
        await until(lambda: env.store.failures >= 2)
    finally:
        await first.stop()
    assert env.fake.pending == ids and env.fake.confirmed == []
    env.store.down = 0
    second = Polling(env)
    try:
        await until(lambda: env.fake.confirmed == ids)
    finally:
        await second.stop()
    assert second.poller.offset == ids[-1] + 1
    assert env.store.calls == [(str(i), True) for i in ids]


async def test_crash_after_commit_before_confirm_is_a_repeat_the_core_dedups(env: Env) -> None:
    ids = [env.fake.send_text(KARI, f"melding {i}")["update_id"] for i in range(2)]
    first = Polling(env)
    env.store.after_accept = lambda event: first.task.cancel()  # "killed" right after commit
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(first.task, 5)
    env.store.after_accept = None
    assert env.fake.pending == ids  # Telegram never heard that they were stored
    second = Polling(env)
    try:
        await until(lambda: env.fake.confirmed == ids)
    finally:
        await second.stop()
    assert env.store.calls[0] == (str(ids[0]), True)
    assert (str(ids[0]), False) in env.store.calls  # the repeat, which changes nothing
    assert sorted(env.store.events) == sorted(str(i) for i in ids)


async def test_dropped_and_aborted_long_polls_recover(env: Env) -> None:
    env.fake.drop_polls(2)
    polling = Polling(env, poll_timeout=5)
    try:
        await until(lambda: len(env.fake.polls) >= 3)
        assert [p.outcome for p in env.fake.polls[:2]] == ["dropped", "dropped"]
        await asyncio.sleep(0.05)
        env.fake.abort_polls()  # the one waiting now
        await until(lambda: any(p.outcome == "aborted" for p in env.fake.polls))
        update = env.fake.send_text(KARI, "Kommer du?")
        await until(lambda: update["update_id"] in env.fake.confirmed)
    finally:
        await polling.stop()
    assert env.store.calls == [(str(update["update_id"]), True)]


async def test_server_errors_and_flood_control_are_waited_out(env: Env) -> None:
    env.fake.fail_next(2, status=502, description="Bad Gateway", method="getUpdates")
    env.fake.rate_limit(1, retry_after=1, method="getUpdates")
    update = env.fake.send_text(KARI, "hei")
    started = time.monotonic()
    polling = Polling(env)
    try:
        await until(lambda: update["update_id"] in env.fake.confirmed)
    finally:
        await polling.stop()
    assert time.monotonic() - started >= 0.9  # retry_after honoured
    assert [c.status for c in env.fake.calls if c.method == "getUpdates"][:3] == [502, 502, 429]
    assert env.store.calls == [(str(update["update_id"]), True)]


async def test_ignored_updates_are_confirmed_and_never_accepted(env: Env) -> None:
    group = env.fake.inject(
        {"message": {"message_id": 1, "chat": {"id": -100, "type": "group"}, "text": "x"}}
    )
    chatless = env.fake.inject({"message": {"message_id": 2, "text": "no chat"}})
    edited = env.fake.inject({"edited_message": {"message_id": 3, "text": "x"}})
    good = env.fake.send_text(KARI, "hei")
    polling = Polling(env)
    try:
        await until(lambda: good["update_id"] in env.fake.confirmed)
    finally:
        await polling.stop()
    assert env.store.calls == [(str(good["update_id"]), True)]
    confirmed = set(env.fake.confirmed)
    assert {group["update_id"], chatless["update_id"], edited["update_id"]} <= confirmed
    assert env.fake.pending == []


async def test_poller_asks_only_for_the_update_types_it_handles(env: Env) -> None:
    polling = Polling(env)
    try:
        await until(lambda: bool(env.fake.polls))
    finally:
        await polling.stop()
    first = next(c for c in env.fake.calls if c.method == "getUpdates")
    assert json.loads(first.params["allowed_updates"]) == ALLOWED_UPDATES
    assert int(first.params["timeout"]) == 2


async def test_stop_confirms_the_offset_on_the_way_out(env: Env) -> None:
    stopper: list[Polling] = []
    env.store.after_accept = lambda event: stopper[0].stopping.set()
    update = env.fake.send_text(KARI, "hei")
    polling = Polling(env)
    stopper.append(polling)
    await asyncio.wait_for(polling.task, 5)
    assert env.fake.confirmed == [update["update_id"]]
    last = env.fake.polls[-1]
    assert (last.offset, last.timeout) == (update["update_id"] + 1, 0)


async def test_stop_ends_a_waiting_long_poll_at_once(env: Env) -> None:
    polling = Polling(env, poll_timeout=30)
    await until(lambda: bool(env.fake.polls))
    started = time.monotonic()
    await polling.stop()
    assert time.monotonic() - started < 1


async def test_polling_removes_a_webhook_left_from_webhook_mode(env: Env) -> None:
    await set_webhook(env.settings)
    polling = Polling(env)
    try:
        await until(lambda: env.fake.webhook_url is None)
        update = env.fake.send_text(KARI, "hei")
        await until(lambda: update["update_id"] in env.fake.confirmed)
    finally:
        await polling.stop()
    assert env.store.calls == [(str(update["update_id"]), True)]
    methods = [c.method for c in env.fake.calls]
    assert methods.index("deleteWebhook") < methods.index("getUpdates")


# -- webhook -----------------------------------------------------------------------------


async def test_set_webhook_registers_our_url_and_secret(env: Env) -> None:
    await set_webhook(env.settings)
    assert env.fake.webhook_url == env.webhook_url
    assert env.fake.webhook_secret == SECRET
    call = next(c for c in env.fake.calls if c.method == "setWebhook")
    assert json.loads(call.params["allowed_updates"]) == ALLOWED_UPDATES
    assert call.params.get("drop_pending_updates") in (None, "false")
    await delete_webhook(env.settings)
    assert env.fake.webhook_url is None


async def test_webhook_mode_end_to_end(env: Env) -> None:
    await set_webhook(env.settings)
    a = env.fake.send_text(KARI, "Ola er syk")
    b = env.fake.share_contact(KARI, "4791234567")
    await env.fake.drain()
    assert [x.status for x in env.fake.webhook_attempts] == [200, 200]
    assert env.store.calls == [(str(a["update_id"]), True), (str(b["update_id"]), True)]
    assert env.store.events[str(b["update_id"])].payload["contact_phone"] == "4791234567"


async def test_webhook_store_unavailable_503_then_telegram_retries(env: Env) -> None:
    await set_webhook(env.settings)
    env.store.down = 2
    update = env.fake.send_text(KARI, "hei")
    await env.fake.drain()
    assert [x.status for x in env.fake.webhook_attempts] == [503, 503, 200]
    assert env.store.calls == [(str(update["update_id"]), True)]


async def test_webhook_503_carries_retry_after(env: Env) -> None:
    env.store.down = -1
    async with (
        aiohttp.ClientSession() as s,
        s.post(
            env.webhook_url,
            json={"update_id": 5, "message": {"chat": {"id": 1, "type": "private"}}},
            headers={SECRET_HEADER: SECRET},
        ) as resp,
    ):
        assert resp.status == 503 and resp.headers["Retry-After"] == "5"


@pytest.mark.parametrize(
    "secret", [None, "", "wrong", SECRET.upper(), SECRET[:-1], SECRET + "x", "ø" + SECRET]
)
async def test_wrong_or_missing_secret_is_403_and_stores_nothing(
    env: Env, secret: str | None
) -> None:
    body = json.dumps(env.fake.send_text(KARI, "hei"))
    if secret is not None and not secret.isascii():
        async with (
            aiohttp.ClientSession() as s,
            s.post(env.webhook_url, data=body, headers={SECRET_HEADER: secret}) as resp,
        ):
            status = resp.status
    else:
        status, _ = await post(env.webhook_url, body, secret=secret)
    assert status == 403
    assert env.store.calls == []


async def test_repeated_update_is_200_and_a_duplicate(env: Env) -> None:
    body = json.dumps(env.fake.send_text(KARI, "hei"))
    assert (await post(env.webhook_url, body))[0] == 200
    assert (await post(env.webhook_url, body))[0] == 200
    assert [new for _, new in env.store.calls] == [True, False]


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b"\xff\xfe{}",
        b"",
        b"[]",
        b'"update"',
        b'{"message": {}}',
        b'{"update_id": "1"}',
    ],
)
async def test_bad_json_or_not_an_update_is_400(env: Env, body: bytes) -> None:
    status, _ = await post(env.webhook_url, body)
    assert status == 400 and env.store.calls == []


async def test_oversized_body_is_400(env: Env) -> None:
    message = {"chat": {"id": 1, "type": "private"}, "text": "x" * (2 * 1024 * 1024)}
    update = {"update_id": 1, "message": message}
    status, _ = await post(env.webhook_url, json.dumps(update))
    assert status == 400 and env.store.calls == []


async def test_webhook_routes_need_the_secret(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TEST_TELEGRAM_SECRET")
    with pytest.raises(ConfigError, match="webhook_secret_env"):
        routes(env.settings, env.store.accept)


def test_a_malformed_token_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_TELEGRAM_TOKEN", "not a token")
    settings = make_settings("https://bro.example.no", "http://127.0.0.1:9")
    with pytest.raises(ConfigError, match="token_env"):
        TelegramSender(settings)


# -- outbound ----------------------------------------------------------------------------


async def test_plain_text_is_sent(env: Env, sender: TelegramSender) -> None:
    env.fake.add_chat(KARI)
    result = await sender.send(out("Hei! Husk turdag i morgen."))
    assert result == SendResult(SendOutcome.SENT, provider_id=f"{KARI}:1")
    assert env.fake.texts(KARI) == ["Hei! Husk turdag i morgen."]
    assert env.fake.sent[KARI][0].reply_markup is None
    call = next(c for c in env.fake.calls if c.method == "sendMessage")
    assert "parse_mode" not in call.params  # plain text: a '<' in a name is not markup


async def test_buttons_then_press_then_answer(env: Env, sender: TelegramSender) -> None:
    env.fake.add_chat(KARI)
    content = TelegramContent(
        "Hvem gjelder det?",
        buttons=[[Button("Ola", "q7:1"), Button("Kari", "q7:2")], [Button("Begge", "q7:all")]],
    )
    result = await sender.send(out(content.to_json()))
    assert result.outcome is SendOutcome.SENT
    sent = env.fake.sent[KARI][0]
    assert sent.buttons == [[("Ola", "q7:1"), ("Kari", "q7:2")], [("Begge", "q7:all")]]
    update = env.fake.press_button(KARI, sent.message_id, "q7:all")
    event = event_from_update(update, datetime.now(UTC))
    assert event is not None and event.payload["callback_data"] == "q7:all"
    assert f"{KARI}:{event.payload['callback_message_id']}" == result.provider_id
    assert await sender.answer_callback(event.payload["callback_query_id"], "Registrert")
    assert env.fake.callback_answers[0].text == "Registrert"
    assert not await sender.answer_callback(event.payload["callback_query_id"])  # twice: refused


async def test_request_contact_keyboard_then_remove_it(env: Env, sender: TelegramSender) -> None:
    env.fake.add_chat(KARI)
    ask = TelegramContent(
        "Del nummeret ditt, så kjenner vi deg igjen.",
        request_contact=True,
        contact_button_text="📱 Del nummeret",
    )
    assert (await sender.send(out(ask.to_json()))).outcome is SendOutcome.SENT
    markup = env.fake.sent[KARI][0].reply_markup
    assert markup == {
        "keyboard": [[{"text": "📱 Del nummeret", "request_contact": True}]],
        "resize_keyboard": True,
        "one_time_keyboard": True,
    }
    assert env.fake.sent[KARI][0].requests_contact
    done = TelegramContent("Takk, nå er du koblet til.", remove_keyboard=True)
    assert (await sender.send(out(done.to_json()))).outcome is SendOutcome.SENT
    assert env.fake.sent[KARI][1].reply_markup == {"remove_keyboard": True}


async def test_reply_to_a_message(env: Env, sender: TelegramSender) -> None:
    update = env.fake.send_text(KARI, "Er det turdag i morgen?")
    asked = update["message"]["message_id"]
    content = TelegramContent("Ja, husk matpakke.", reply_to_message_id=asked)
    result = await sender.send(out(content.to_json()))
    assert result.outcome is SendOutcome.SENT
    assert env.fake.sent[KARI][0].reply_to_message_id == asked
    gone = TelegramContent("Svar på noe slettet", reply_to_message_id=999)
    assert (await sender.send(out(gone.to_json()))).outcome is SendOutcome.SENT
    assert env.fake.sent[KARI][1].reply_to_message_id is None


async def test_edit_a_question_after_the_answer(env: Env, sender: TelegramSender) -> None:
    env.fake.add_chat(KARI)
    ask = TelegramContent("Hvem?", buttons=[[Button("Ola", "q:1")]])
    asked = await sender.send(out(ask.to_json()))
    message_id = int(str(asked.provider_id).split(":")[1])
    edit = TelegramContent("Hvem? – Ola", edit_message_id=message_id)
    result = await sender.send(out(edit.to_json()))
    assert result == SendResult(SendOutcome.SENT, provider_id=f"{KARI}:{message_id}")
    assert env.fake.sent[KARI][0].text == "Hvem? – Ola"
    assert env.fake.sent[KARI][0].buttons == []  # no buttons given: they go
    again = await sender.send(out(edit.to_json()))  # a retry after a lost answer
    assert again == SendResult(SendOutcome.SENT, provider_id=f"{KARI}:{message_id}")
    missing = await sender.send(out(TelegramContent("x", edit_message_id=4242).to_json()))
    assert missing.outcome is SendOutcome.PERMANENT and not missing.contact_dead
    assert missing.error == "400: message to edit not found"


async def test_edit_only_the_buttons(env: Env, sender: TelegramSender) -> None:
    env.fake.add_chat(KARI)
    ask = TelegramContent("Hvem?", buttons=[[Button("Ola", "q:1"), Button("Kari", "q:2")]])
    message_id = int(str((await sender.send(out(ask.to_json()))).provider_id).split(":")[1])
    fewer = TelegramContent(edit_message_id=message_id, buttons=[[Button("Kari", "q:2")]])
    assert (await sender.send(out(fewer.to_json()))).outcome is SendOutcome.SENT
    assert env.fake.sent[KARI][0].buttons == [[("Kari", "q:2")]]
    assert env.fake.sent[KARI][0].text == "Hvem?"
    none = TelegramContent(edit_message_id=message_id)
    assert (await sender.send(out(none.to_json()))).outcome is SendOutcome.SENT
    assert env.fake.sent[KARI][0].buttons == []


async def test_long_text_goes_in_pieces(env: Env, sender: TelegramSender) -> None:
    env.fake.add_chat(KARI)
    paragraph = "Kjære foresatte. " * 100 + "\n\n"
    text = paragraph * 5  # ~8 600 characters
    content = TelegramContent(text, buttons=[[Button("OK", "ok")]], reply_to_message_id=None)
    result = await sender.send(out(content.to_json()))
    sent = env.fake.sent[KARI]
    assert result == SendResult(SendOutcome.SENT, provider_id=f"{KARI}:{sent[0].message_id}")
    assert len(sent) == 3
    assert " ".join(m.text for m in sent).split() == text.split()
    assert [bool(m.buttons) for m in sent] == [False, False, True]  # buttons under the last


def test_split_text_counts_utf16_units_and_prefers_breaks() -> None:
    assert split_text("a" * 4096) == ["a" * 4096]
    assert split_text("🤒" * 2048) == ["🤒" * 2048]  # 4096 UTF-16 units
    pieces = split_text("🤒" * 2049)
    assert pieces == ["🤒" * 2048, "🤒"]
    words = split_text("ord " * 2000)
    assert all(len(p) <= 4096 for p in words) and all(not p.endswith("or") for p in words[:-1])
    assert "".join(split_text("x" * 10_000)) == "x" * 10_000


@pytest.mark.parametrize(
    ("reason", "error"),
    [
        ("blocked", "403: bot blocked by the user"),
        ("deactivated", "403: user deactivated"),
        ("never_started", "403: user never started the bot"),
        ("kicked", "403: bot kicked from the chat"),
    ],
)
async def test_forbidden_is_permanent_and_the_contact_dead(
    env: Env, sender: TelegramSender, reason: str, error: str
) -> None:
    env.fake.block(KARI, reason)
    result = await sender.send(out("Husk turdag"))
    assert result == SendResult(SendOutcome.PERMANENT, error=error, contact_dead=True)


async def test_chat_not_found_is_permanent_and_the_contact_dead(
    env: Env, sender: TelegramSender
) -> None:
    result = await sender.send(out("Hei", chat=123))
    assert result == SendResult(
        SendOutcome.PERMANENT, error="400: chat not found", contact_dead=True
    )


async def test_flood_control_is_transient_with_retry_after(
    env: Env, sender: TelegramSender
) -> None:
    env.fake.add_chat(KARI)
    env.fake.rate_limit(1, retry_after=7)
    result = await sender.send(out("Hei"))
    assert result == SendResult(SendOutcome.TRANSIENT, error="429: flood control", retry_after=7.0)
    assert (await sender.send(out("Hei"))).outcome is SendOutcome.SENT


@pytest.mark.parametrize(
    ("status", "description", "outcome", "error"),
    [
        (500, "Internal Server Error", SendOutcome.TRANSIENT, "5xx: Telegram server error"),
        (502, "Bad Gateway", SendOutcome.TRANSIENT, "5xx: Telegram server error"),
        (401, "Unauthorized", SendOutcome.TRANSIENT, "401: bot token rejected"),
        (404, "Not Found", SendOutcome.TRANSIENT, "404: bot token rejected"),
        (400, "Bad Request: message is too long", SendOutcome.PERMANENT, "400: text too long"),
        (
            400,
            "Bad Request: PEER_ID_INVALID +4791234567",
            SendOutcome.PERMANENT,
            "400: TelegramBadRequest",
        ),
        (
            403,
            "Forbidden: something new +4791234567",
            SendOutcome.PERMANENT,
            "403: TelegramForbiddenError",
        ),
        (413, "Request Entity Too Large", SendOutcome.PERMANENT, "413: request too large"),
        (420, "Flood", SendOutcome.TRANSIENT, "Telegram error: TelegramAPIError"),
    ],
)
async def test_provider_errors_are_classified_without_their_text(
    env: Env,
    sender: TelegramSender,
    status: int,
    description: str,
    outcome: SendOutcome,
    error: str,
) -> None:
    env.fake.add_chat(KARI)
    env.fake.fail_next(status=status, description=description, method="sendMessage")
    result = await sender.send(out("Hei fra skolen, ring 91234567"))
    assert (result.outcome, result.error) == (outcome, error)
    assert "4791234567" not in str(result) and "91234567" not in str(result)


async def test_wrong_token_is_transient(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    env.fake.add_chat(KARI)
    monkeypatch.setenv("TEST_TELEGRAM_TOKEN", "7000000001:another-token")
    s = TelegramSender(env.settings, timeout=2, per_chat_interval=0)
    try:
        result = await s.send(out("Hei"))
    finally:
        await s.close()
    assert result == SendResult(SendOutcome.TRANSIENT, error="401: bot token rejected")


async def test_timeout_and_refused_connection_are_transient(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    env.fake.add_chat(KARI)
    env.fake.latency = 0.6
    slow = TelegramSender(env.settings, timeout=0.2, per_chat_interval=0)
    try:
        assert await slow.send(out("Hei")) == SendResult(SendOutcome.TRANSIENT, error="timeout")
    finally:
        await slow.close()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    closed = f"http://127.0.0.1:{sock.getsockname()[1]}"
    sock.close()
    gone = TelegramSender(make_settings(env.public_url, closed), timeout=1, per_chat_interval=0)
    try:
        result = await gone.send(out("Hei"))
    finally:
        await gone.close()
    assert result.outcome is SendOutcome.TRANSIENT
    assert str(result.error).startswith("connection error")


def test_classify_what_the_fake_cannot_produce() -> None:
    method = SendMessage(chat_id=1, text="secret body")
    decode = ClientDecodeError("Failed to decode object", ValueError("x"), "<html>")
    assert classify(decode) == SendResult(SendOutcome.TRANSIENT, error="unreadable answer")
    timeout = TelegramNetworkError(method=method, message="Request timeout error")
    assert classify(timeout) == SendResult(SendOutcome.TRANSIENT, error="timeout")
    assert classify(TimeoutError()).error == "timeout"
    assert classify(ConnectionResetError()).error == "connection error: ConnectionResetError"
    bug = classify(KeyError("x"))
    assert bug == SendResult(SendOutcome.TRANSIENT, error="internal error: KeyError")


async def test_one_message_per_second_per_chat(env: Env) -> None:
    env.fake.add_chat(KARI)
    env.fake.add_chat(PER)
    paced = TelegramSender(env.settings, timeout=5)  # the default interval: 1 s
    try:
        results = await asyncio.gather(
            paced.send(out("første", chat=KARI)),
            paced.send(out("andre", chat=KARI)),
            paced.send(out("til Per", chat=PER)),
        )
    finally:
        await paced.close()
    assert [r.outcome for r in results] == [SendOutcome.SENT] * 3
    kari = env.fake.sent[KARI]
    assert [m.text for m in kari] == ["første", "andre"]
    assert kari[1].at - kari[0].at >= 0.95
    assert env.fake.sent[PER][0].at < kari[1].at  # other chats do not wait


@pytest.mark.parametrize(
    "body",
    [
        '{"telegram": not json',
        '{"telegram":[]}',
        '{"telegram":{"text":"x","surprise":1}}',
        '{"telegram":{"text":""}}',
        '{"telegram":{"text":"x","buttons":[[{"text":"a","data":""}]]}}',
        '{"telegram":{"text":"x","buttons":[[{"text":"a","data":"' + "d" * 65 + '"}]]}}',
        '{"telegram":{"text":"x","buttons":[[{"text":"a","data":"b"}]],"request_contact":true}}',
        '{"telegram":{"text":"x","reply_to_message_id":"7"}}',
        '{"telegram":{"text":"x","edit_message_id":true}}',
        "",
        "   ",
    ],
)
async def test_unusable_content_is_permanent(env: Env, sender: TelegramSender, body: str) -> None:
    env.fake.add_chat(KARI)
    result = await sender.send(out(body))
    assert result.outcome is SendOutcome.PERMANENT and not result.contact_dead
    assert str(result.error).startswith("unusable content")
    assert env.fake.sent == {}


async def test_an_address_that_is_no_chat_id_is_a_dead_contact(sender: TelegramSender) -> None:
    result = await sender.send(out("Hei", chat="+4791234567"))
    assert result == SendResult(SendOutcome.PERMANENT, error="not a chat id", contact_dead=True)


def test_content_round_trips_through_json() -> None:
    content = TelegramContent(
        "Hvem gjelder det? 🤔",
        buttons=[[Button("Ola", "q:1")], [Button("Begge", "q:all")]],
        reply_to_message_id=12,
    )
    body = content.to_json()
    assert body.startswith('{"telegram":')
    assert TelegramContent.from_body(body) == content
    assert TelegramContent.from_body('Hei {"telegram": 1}') == TelegramContent(
        'Hei {"telegram": 1}'
    )
    ask = TelegramContent("Del nummeret", request_contact=True)
    assert TelegramContent.from_body(ask.to_json()) == ask
    edit = TelegramContent(edit_message_id=3)
    assert TelegramContent.from_body(edit.to_json()) == edit
    minimal = TelegramContent.from_body('{"telegram":{"text":"Hei"}}')
    assert minimal == TelegramContent("Hei")


async def test_commands_per_language_and_the_default(env: Env) -> None:
    commands = {
        "nb": [("start", "Koble til"), ("hjelp", "Hjelp"), ("stopp", "Koble fra")],
        "nn": [("start", "Kople til"), ("hjelp", "Hjelp"), ("stopp", "Kople frå")],
        "en": [("start", "Connect"), ("hjelp", "Help"), ("stopp", "Disconnect")],
    }
    assert await set_commands(env.settings, commands) == ["nb", "nn", "en", ""]
    assert env.fake.commands == {**commands, "": commands["nb"]}


async def test_a_refused_command_menu_is_logged_not_raised(env: Env) -> None:
    result = await set_commands(env.settings, {"en": [("Bad-Name", "x")], "nb": [("ok", "ok")]})
    assert result == ["nb", ""]


async def test_module_level_answer_callback(env: Env, sender: TelegramSender) -> None:
    env.fake.add_chat(KARI)
    await sender.send(out(TelegramContent("?", buttons=[[Button("Ja", "y")]]).to_json()))
    update = env.fake.press_button(KARI, 1, "y")
    long_text = "Takk! " * 100
    assert await answer_callback(env.settings, update["callback_query"]["id"], long_text)
    answer = env.fake.callback_answers[0]
    assert answer.text is not None and len(answer.text) <= 200 and answer.text.endswith("…")
    assert not await answer_callback(env.settings, "424242")


# -- privacy -----------------------------------------------------------------------------


async def test_logs_hold_ids_never_texts_phones_or_chat_ids(
    env: Env, sender: TelegramSender, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    await set_webhook(env.settings)
    env.fake.send_text(KARI, "Ola har vondt i magen")
    env.fake.share_contact(KARI, "4791234567")
    await env.fake.drain()
    await sender.send(out("Svar til Kari om magen"))
    env.fake.block(KARI)
    await sender.send(out("Svar til Kari om magen"))
    await post(env.webhook_url, b"{}", secret="wrong")
    logged = caplog.text
    assert "telegram update" in logged and "telegram delivery d-1" in logged
    for secret in ("magen", "4791234567", str(KARI), SECRET, TOKEN):
        assert secret not in logged
