"""Fault: the Telegram Bot API drops long polls (connections closed without an answer,
and waiting polls aborted). Polling recovers with growing pauses, and no update is lost
or processed twice (issue #11)."""

from __future__ import annotations

import collections
from pathlib import Path

import pytest

from bridge.store import tables as t
from tests.world import World, eventually, running_world, write_roster

N = 6
GUARDIANS = [(f"gd-{i}", "telegram;sms", "nb") for i in range(N)]
DROPS = 3


def chat_id(i: int) -> int:
    return 7000 + i


async def processed(world: World, n: int) -> bool:
    events = await world.rows(t.inbound_events)
    return len(events) == n and all(e["status"] == "processed" for e in events)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_dropped_and_aborted_polls_lose_and_double_nothing(
    database_url: str, tmp_path: Path
) -> None:
    roster = write_roster(tmp_path / "roster.csv", GUARDIANS)
    async with running_world(database_url, tmp_path, roster, telegram=True) as world:
        bot = world.telegram
        assert bot is not None
        for i in range(N):  # each parent links the chat by sharing their own contact
            bot.share_contact(chat_id(i), f"479100{i:04d}")
        await eventually(lambda: processed(world, N), within=60)
        linked = {i: len(bot.texts(chat_id(i))) for i in range(N)}

        bot.drop_polls(DROPS)
        bot.abort_polls()  # the poll waiting now goes, then the next DROPS are dropped
        update_ids = [bot.send_text(chat_id(i), f"Barn{i} er syk i dag")["update_id"]
                      for i in range(N)]  # fmt: skip
        await eventually(lambda: not bot.pending, within=90)
        await eventually(lambda: processed(world, 2 * N), within=60)
        # Aborted again while waiting, with more updates coming in between.
        await eventually(lambda: bot.polls and bot.polls[-1].outcome == "ok", within=30)
        bot.abort_polls()
        update_ids += [bot.send_text(chat_id(i), f"Hei, dette er melding {i}")["update_id"]
                       for i in range(N)]  # fmt: skip
        await eventually(lambda: not bot.pending, within=90)
        await eventually(lambda: processed(world, 3 * N), within=60)

        outcomes = collections.Counter(p.outcome for p in bot.polls)
        assert outcomes["dropped"] == DROPS and outcomes["aborted"] >= 1, outcomes
        events = await world.rows(t.inbound_events)
        stored = collections.Counter(e["external_id"] for e in events)
        assert all(stored[str(u)] == 1 for u in update_ids), stored
        absences = await world.rows(t.absences)
        per_student = collections.Counter(a["student_id"] for a in absences)
        assert per_student == {f"s-{i}": 2 for i in range(N)}, per_student

        async def one_confirmation_each() -> bool:
            return all(len(bot.texts(chat_id(i))) >= linked[i] + 1 for i in range(N))

        await eventually(one_confirmation_each, within=60)
        for i in range(N):
            absence_replies = [x for x in bot.texts(chat_id(i))[linked[i] :] if "ANGRE" in x]
            assert len(absence_replies) == 1, bot.texts(chat_id(i))
