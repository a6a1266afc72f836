"""Telegram end to end: invite by SMS, link, report with the bot, undo, and a blocked bot.

The real bridge polls the loopback Bot API fake through aiogram; invites go out by
SMS through the Twilio fake.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bridge.announcements import create_announcement
from bridge.invites import create_invite
from bridge.store import tables as t
from tests.conftest import EXAMPLE_ROSTER
from tests.world import World, eventually, running_world

PER = "+4792345678"  # nn; channels telegram;sms; Ola and Kari
CHAT = 555001


@pytest.fixture
async def world(database_url: str, tmp_path: Path) -> AsyncIterator[World]:
    async with running_world(database_url, tmp_path, EXAMPLE_ROSTER, telegram=True) as w:
        yield w


def chat_texts(world: World) -> list[str]:
    assert world.telegram is not None
    return [m.text for m in world.telegram.sent.get(CHAT, [])]


async def link_per(world: World) -> None:
    assert world.telegram is not None
    await create_invite(world.bridge.engine, world.bridge.settings, "gd-per")
    world.bridge.outbox.wake.set()
    sms = (await eventually(lambda: world.replies_to(PER)))[0]
    code = re.search(r"start=([\w-]+)", sms)
    assert code and "t.me/skolebro_test_bot" in sms
    world.telegram.send_start(CHAT, code.group(1))
    await eventually(lambda: world.rows(t.telegram_links, t.telegram_links.c.chat_id == CHAT))
    await eventually(lambda: chat_texts(world))


async def test_invite_link_report_and_undo_by_button(world: World) -> None:
    assert world.telegram is not None
    await link_per(world)
    world.telegram.send_text(CHAT, "Kari er sjuk i dag")
    confirmation = await eventually(
        lambda: [m for m in world.telegram.sent[CHAT] if "Kari" in m.text]  # type: ignore[union-attr]
    )
    absences = await world.rows(t.absences)
    assert [(a["student_id"], a["channel"]) for a in absences] == [("s-kari", "telegram")]
    assert "Fråvær registrert" in confirmation[0].text
    markup = confirmation[0].reply_markup or {}
    buttons = [b for row in markup.get("inline_keyboard", []) for b in row]
    assert [b["callback_data"] for b in buttons] == ["undo"]
    world.telegram.press_button(CHAT, confirmation[0].message_id, "undo")
    await eventually(lambda: world.rows(t.absences, t.absences.c.status == "cancelled"))


async def test_unlinked_chat_gets_instructions_only(world: World) -> None:
    assert world.telegram is not None
    world.telegram.send_text(777002, "Ola er syk i dag")
    await eventually(lambda: world.telegram.sent.get(777002))  # type: ignore[union-attr]
    assert await world.rows(t.absences) == [] and await world.rows(t.threads) == []


async def test_blocked_bot_falls_back_to_sms(world: World) -> None:
    assert world.telegram is not None
    await link_per(world)
    world.telegram.block(CHAT)
    created = await create_announcement(
        world.bridge.engine, world.bridge.settings, unit_id="u-fjell", student_ids=["s-kari"],
        text="Skolen stenger kl 12",
    )  # fmt: skip
    world.bridge.outbox.wake.set()
    await eventually(lambda: [r for r in world.replies_to(PER) if "stenger" in r], within=15)
    rows = await world.rows(t.deliveries, t.deliveries.c.announcement_id == created.announcement_id)
    per = [r for r in rows if r["guardian_id"] == "gd-per"]
    telegram = next(r for r in per if r["channel"] == "telegram")
    sms = next(r for r in per if r["channel"] == "sms")
    assert telegram["status"] == "failed" and sms["fallback_of"] == telegram["id"]


async def _press_latest(world: World, data: str) -> None:
    """Press the button with `data` on the bot's latest message that has it."""
    assert world.telegram is not None
    for message in reversed(world.telegram.sent[CHAT]):
        rows = (message.reply_markup or {}).get("inline_keyboard", [])
        if any(b.get("callback_data") == data for row in rows for b in row):
            world.telegram.press_button(CHAT, message.message_id, data)
            return
    raise AssertionError(f"no button {data}")


async def test_absence_by_buttons_for_ola_at_school_and_sfo(world: World) -> None:
    assert world.telegram is not None
    await link_per(world)
    seen = len(chat_texts(world))
    world.telegram.send_command(CHAT, "fravaer")
    for step in ("f:child:1", "f:unit:2", "f:day:0", "f:reason:0"):  # Ola, both, today, ill
        await eventually(lambda before=seen: len(chat_texts(world)) > before)
        seen = len(chat_texts(world))
        await _press_latest(world, step)
    absences = await eventually(lambda: world.rows(t.absences))
    assert {(a["student_id"], a["unit_id"]) for a in absences} == {
        ("s-ola", "u-fjell"),
        ("s-ola", "u-fjell-sfo"),
    }
    assert {a["channel"] for a in absences} == {"telegram"}
    confirmation = await eventually(
        lambda: [x for x in chat_texts(world) if "SFO" in x and "Ola" in x]
    )
    assert "ANGRE" in confirmation[-1]


async def test_a_reply_quoting_an_announcement_answers_that_one(world: World) -> None:
    assert world.telegram is not None
    await link_per(world)
    first = await create_announcement(
        world.bridge.engine, world.bridge.settings, unit_id="u-fjell", student_ids=["s-ola"],
        text="Ola har glemt lua si",
    )  # fmt: skip
    world.bridge.outbox.wake.set()
    ola_msg = (await eventually(lambda: [m for m in world.telegram.sent[CHAT] if "lua" in m.text]))[
        0
    ]  # type: ignore[union-attr]
    await create_announcement(
        world.bridge.engine, world.bridge.settings, unit_id="u-fjell", student_ids=["s-kari"],
        text="Kari fikk pris i dag",
    )  # fmt: skip
    world.bridge.outbox.wake.set()
    await eventually(lambda: [m for m in world.telegram.sent[CHAT] if "pris" in m.text])  # type: ignore[union-attr]
    await eventually(
        lambda: world.rows(
            t.deliveries,
            t.deliveries.c.announcement_id == first.announcement_id,
            t.deliveries.c.status == "sent",
        )
    )

    # Quoting the first announcement answers it (Ola), though Kari's came later...
    world.telegram.send_text(CHAT, "Takk, eg hentar ho", reply_to=ola_msg.message_id)
    threads = await eventually(lambda: world.rows(t.threads))
    assert [(th["student_id"], th["guardian_id"]) for th in threads] == [("s-ola", "gd-per")]
    # ...and a text quoting nothing answers the latest one (Kari).
    world.telegram.send_text(CHAT, "Så kjekt, takk")
    await eventually(lambda: world.rows(t.threads, t.threads.c.student_id == "s-kari"))
