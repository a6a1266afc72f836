"""The loopback Bot API: plain aiogram and raw HTTP against it, its errors and its webhook."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiogram import Bot
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.exceptions import (
    TelegramBadRequest,
    TelegramConflictError,
    TelegramForbiddenError,
    TelegramNetworkError,
    TelegramRetryAfter,
    TelegramServerError,
    TelegramUnauthorizedError,
)
from aiogram.types import (
    BotCommand,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    KeyboardButton,
    ReplyKeyboardMarkup,
    ReplyParameters,
)
from aiohttp import web

from adapters.fakes.telegram import SECRET_HEADER, FakeTelegram, utf16_len

TOKEN = "7000000001:AAH-fake-token"
KARI = 5012345678


@pytest.fixture
async def fake() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram(TOKEN, webhook_retry_delay=0.001) as f:
        yield f


@pytest.fixture
async def bot(fake: FakeTelegram) -> AsyncIterator[Bot]:
    b = Bot(TOKEN, session=AiohttpSession(api=TelegramAPIServer.from_base(fake.base_url)))
    yield b
    await b.session.close()


def inline(*pairs: tuple[str, str]) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup(
        inline_keyboard=[[InlineKeyboardButton(text=t, callback_data=d) for t, d in pairs]]
    )


async def raw(fake: FakeTelegram, method: str, token: str = TOKEN, **kw: Any) -> tuple[int, Any]:
    url = f"{fake.base_url}/bot{token}/{method}"
    async with aiohttp.ClientSession() as s, s.post(url, **kw) as resp:
        return resp.status, await resp.json()


async def test_get_me_and_the_token(fake: FakeTelegram, bot: Bot) -> None:
    me = await bot.get_me()
    assert (me.id, me.is_bot, me.username) == (7000000001, True, "skolebro_bot")
    other = Bot("7000000001:wrong", session=AiohttpSession(api=bot.session.api))
    with pytest.raises(TelegramUnauthorizedError):
        await other.get_me()
    await other.session.close()
    status, body = await raw(fake, "noSuchMethod")
    assert (status, body["ok"], body["error_code"]) == (404, False, 404)


async def test_json_form_and_query_bodies_all_work(fake: FakeTelegram) -> None:
    fake.add_chat(KARI)
    markup = {"inline_keyboard": [[{"text": "Ja", "callback_data": "y"}]]}
    status, body = await raw(
        fake, "sendMessage", json={"chat_id": KARI, "text": "json", "reply_markup": markup}
    )
    assert status == 200 and body["result"]["reply_markup"] == markup
    form = {"chat_id": str(KARI), "text": "form", "reply_markup": json.dumps(markup)}
    status, body = await raw(fake, "SENDMESSAGE", data=form)  # names are case-insensitive
    assert status == 200 and body["result"]["text"] == "form"
    status, body = await raw(fake, "sendMessage", params={"chat_id": str(KARI), "text": "q"})
    assert status == 200 and body["result"]["message_id"] == 3
    status, body = await raw(
        fake, "sendMessage", data=b"{bad", headers={"Content-Type": "application/json"}
    )
    assert status == 400 and body["description"].startswith("Bad Request")
    assert fake.texts(KARI) == ["json", "form", "q"]


async def test_offset_confirms_and_limit_caps(fake: FakeTelegram, bot: Bot) -> None:
    ids = [fake.send_text(KARI, f"m{i}")["update_id"] for i in range(5)]
    first = await bot.get_updates(limit=2)
    assert [u.update_id for u in first] == ids[:2]
    again = await bot.get_updates(limit=2)  # nothing confirmed yet: the same two
    assert [u.update_id for u in again] == ids[:2]
    rest = await bot.get_updates(offset=ids[1] + 1)
    assert [u.update_id for u in rest] == ids[2:]
    assert fake.confirmed == ids[:2] and fake.pending == ids[2:]
    last = await bot.get_updates(offset=-1)  # only the newest; older ones are forgotten
    assert [u.update_id for u in last] == ids[-1:]
    assert fake.pending == ids[-1:]


async def test_long_poll_waits_for_an_update(fake: FakeTelegram, bot: Bot) -> None:
    started = time.monotonic()
    poll = asyncio.create_task(bot.get_updates(timeout=5))
    await asyncio.sleep(0.1)
    assert not poll.done()
    update = fake.send_text(KARI, "nå")
    got = await asyncio.wait_for(poll, 2)
    assert [u.update_id for u in got] == [update["update_id"]]
    assert time.monotonic() - started < 2
    assert got[0].message is not None and got[0].message.text == "nå"


async def test_long_poll_times_out_empty(fake: FakeTelegram, bot: Bot) -> None:
    started = time.monotonic()
    assert await bot.get_updates(timeout=1) == []
    assert 0.9 <= time.monotonic() - started < 3


async def test_a_second_poller_ends_the_first_with_a_conflict(fake: FakeTelegram, bot: Bot) -> None:
    first = asyncio.create_task(bot.get_updates(timeout=5))
    await asyncio.sleep(0.05)
    second = asyncio.create_task(bot.get_updates(timeout=1))
    with pytest.raises(TelegramConflictError, match="terminated by other getUpdates"):
        await asyncio.wait_for(first, 2)
    second.cancel()
    assert [p.outcome for p in fake.polls][:1] == ["conflict"]


async def test_allowed_updates_filter_what_is_handed_out(fake: FakeTelegram, bot: Bot) -> None:
    edited = fake.inject({"edited_message": {"message_id": 1}})
    text = fake.send_text(KARI, "hei")
    got = await bot.get_updates(allowed_updates=["message"])
    assert [u.update_id for u in got] == [text["update_id"]]
    assert edited["update_id"] in fake.confirmed  # dropped, as Telegram never made it


async def test_dropped_polls_are_network_errors(fake: FakeTelegram, bot: Bot) -> None:
    fake.drop_polls(1)
    with pytest.raises(TelegramNetworkError):
        await bot.get_updates()
    assert await bot.get_updates() == []
    assert [p.outcome for p in fake.polls] == ["dropped", "ok"]


async def test_errors_map_to_aiograms_exceptions(fake: FakeTelegram, bot: Bot) -> None:
    with pytest.raises(TelegramBadRequest, match="chat not found"):
        await bot.send_message(chat_id=KARI, text="hei")
    fake.add_chat(KARI)
    fake.rate_limit(1, retry_after=3)
    with pytest.raises(TelegramRetryAfter) as flood:
        await bot.send_message(chat_id=KARI, text="hei")
    assert flood.value.retry_after == 3
    fake.fail_next(1, status=502, description="Bad Gateway", method="getMe")
    await bot.send_message(chat_id=KARI, text="not matched: getMe only")
    with pytest.raises(TelegramServerError):
        await bot.get_me()
    fake.block(KARI)
    with pytest.raises(TelegramForbiddenError, match="bot was blocked by the user"):
        await bot.send_message(chat_id=KARI, text="hei")
    with pytest.raises(TelegramForbiddenError):
        await bot.send_chat_action(chat_id=KARI, action="typing")
    fake.unblock(KARI)
    await bot.send_chat_action(chat_id=KARI, action="typing")
    assert fake.chat_actions == [(KARI, "typing")]
    fake.forget_chat(KARI)
    with pytest.raises(TelegramBadRequest, match="chat not found"):
        await bot.send_message(chat_id=KARI, text="hei")


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"text": " "}, "message text is empty"),
        ({"text": "🤒" * 2049}, "message is too long"),
        ({"text": "x", "reply_markup": inline(("a", "d" * 65))}, "BUTTON_DATA_INVALID"),
        ({"text": "x", "reply_parameters": ReplyParameters(message_id=99)}, "replied not found"),
    ],
)
async def test_send_message_validation(
    fake: FakeTelegram, bot: Bot, kwargs: dict[str, Any], error: str
) -> None:
    fake.add_chat(KARI)
    with pytest.raises(TelegramBadRequest, match=error):
        await bot.send_message(chat_id=KARI, **kwargs)
    assert fake.sent[KARI] == []


async def test_keyboards_replies_and_records(fake: FakeTelegram, bot: Bot) -> None:
    asked = fake.send_text(KARI, "Spørsmål")["message"]["message_id"]
    contact = ReplyKeyboardMarkup(
        keyboard=[[KeyboardButton(text="Del", request_contact=True)]], one_time_keyboard=True
    )
    m1 = await bot.send_message(chat_id=KARI, text="Del nummeret", reply_markup=contact)
    m2 = await bot.send_message(
        chat_id=KARI, text="Svar", reply_parameters=ReplyParameters(message_id=asked)
    )
    m3 = await bot.send_message(chat_id=KARI, text="Velg", reply_markup=inline(("Ola", "q:1")))
    assert m1.reply_markup is None  # a reply keyboard is not part of the message
    assert m2.reply_to_message is not None and m2.reply_to_message.message_id == asked
    assert m3.reply_markup is not None
    sent = fake.sent[KARI]
    assert [m.message_id for m in sent] == [m1.message_id, m2.message_id, m3.message_id]
    assert sent[0].requests_contact and not sent[2].requests_contact
    assert sent[1].reply_to_message_id == asked
    assert sent[2].buttons == [[("Ola", "q:1")]]
    assert utf16_len("🤒a") == 3


async def test_edits(fake: FakeTelegram, bot: Bot) -> None:
    user_message = fake.send_text(KARI, "hei")["message"]["message_id"]
    m = await bot.send_message(chat_id=KARI, text="Velg", reply_markup=inline(("Ola", "q:1")))
    edited = await bot.edit_message_text(chat_id=KARI, message_id=m.message_id, text="Valgt")
    assert not isinstance(edited, bool) and edited.reply_markup is None
    with pytest.raises(TelegramBadRequest, match="message is not modified"):
        await bot.edit_message_text(chat_id=KARI, message_id=m.message_id, text="Valgt")
    await bot.edit_message_reply_markup(
        chat_id=KARI, message_id=m.message_id, reply_markup=inline(("Igjen", "q:2"))
    )
    assert fake.sent[KARI][0].buttons == [[("Igjen", "q:2")]] and fake.sent[KARI][0].edits == 2
    with pytest.raises(TelegramBadRequest, match="message can't be edited"):
        await bot.edit_message_text(chat_id=KARI, message_id=user_message, text="x")
    with pytest.raises(TelegramBadRequest, match="message to edit not found"):
        await bot.edit_message_text(chat_id=KARI, message_id=999, text="x")


async def test_callback_queries(fake: FakeTelegram, bot: Bot) -> None:
    m = await bot.send_message(
        chat_id=fake.send_text(KARI, "hei")["message"]["chat"]["id"],
        text="Velg",
        reply_markup=inline(("Ola", "q:1")),
    )
    with pytest.raises(ValueError):
        fake.press_button(KARI, m.message_id, "q:2")  # no such button
    update = fake.press_button(KARI, m.message_id, "q:1")
    got = await bot.get_updates(offset=update["update_id"])
    query = got[0].callback_query
    assert query is not None and query.data == "q:1" and query.from_user.id == KARI
    assert await bot.answer_callback_query(query.id, text="OK")
    with pytest.raises(TelegramBadRequest, match="query is too old"):
        await bot.answer_callback_query(query.id)
    assert [(a.text, a.show_alert) for a in fake.callback_answers] == [("OK", False)]


async def test_commands_per_language(fake: FakeTelegram, bot: Bot) -> None:
    await bot.set_my_commands(
        [BotCommand(command="start", description="Koble til")], language_code="nb"
    )
    await bot.set_my_commands([BotCommand(command="start", description="Connect")])
    assert fake.commands == {"nb": [("start", "Koble til")], "": [("start", "Connect")]}
    assert [c.command for c in await bot.get_my_commands(language_code="nb")] == ["start"]
    with pytest.raises(TelegramBadRequest, match="BOT_COMMAND_INVALID"):
        await bot.set_my_commands([BotCommand(command="Start-Now", description="x")])
    with pytest.raises(TelegramBadRequest, match="language code"):
        await bot.set_my_commands([BotCommand(command="x", description="x")], language_code="nob")
    await bot.delete_my_commands(language_code="nb")
    assert "nb" not in fake.commands


async def test_webhook_mode(fake: FakeTelegram, bot: Bot) -> None:
    seen: list[tuple[str | None, dict[str, Any]]] = []
    answers = [500, 200, 200]

    async def hook(request: web.Request) -> web.Response:
        seen.append((request.headers.get(SECRET_HEADER), await request.json()))
        return web.Response(status=answers.pop(0) if answers else 200)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}/hook"
    try:
        waiting = fake.send_text(KARI, "før webhook")
        await bot.set_webhook(url=url, secret_token="s3cret_TOKEN-1")
        with pytest.raises(TelegramConflictError, match="webhook is active"):
            await bot.get_updates()
        later = fake.send_text(KARI, "etter")
        await fake.drain()
        info = await bot.get_webhook_info()
        assert info.url == url and info.pending_update_count == 0
        assert info.last_error_message is not None  # the 500 is remembered
        assert [s for s, _ in seen] == ["s3cret_TOKEN-1"] * 3
        assert [u["update_id"] for _, u in seen] == [
            waiting["update_id"],
            waiting["update_id"],
            later["update_id"],
        ]
        assert [a.status for a in fake.webhook_attempts] == [500, 200, 200]
        with pytest.raises(TelegramBadRequest, match="unallowed characters"):
            await bot.set_webhook(url=url, secret_token="has space")
        await bot.delete_webhook()
        assert (await bot.get_webhook_info()).url == ""
        dropped = fake.send_text(KARI, "borte")
        await bot.delete_webhook(drop_pending_updates=True)
        assert dropped["update_id"] in fake.confirmed and await bot.get_updates() == []
    finally:
        await runner.cleanup()


async def test_webhook_gives_up_after_max_attempts(fake: FakeTelegram, bot: Bot) -> None:
    fake.webhook_max_attempts = 3
    await bot.set_webhook(url="http://127.0.0.1:9/nobody-listens")
    update = fake.send_text(KARI, "hei")
    await fake.drain()
    assert [a.status for a in fake.webhook_attempts] == [0, 0, 0]
    assert update["update_id"] in fake.confirmed


def test_helpers_refuse_what_telegram_could_not_send() -> None:
    fake = FakeTelegram(TOKEN)
    with pytest.raises(ValueError):
        fake.send_media(KARI, "hologram")
    with pytest.raises(ValueError):
        fake.send_text(KARI, "svar", reply_to=42)
    with pytest.raises(ValueError):
        fake.press_button(KARI, 1, "x")
    with pytest.raises(RuntimeError):
        _ = fake.base_url
