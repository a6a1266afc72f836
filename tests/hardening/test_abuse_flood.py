"""A guardian flooding the school: every message still reaches the thread, but the
bridge stops answering each one (and stops mailing staff for each) after
FLOOD_LIMIT an hour, and says so once, politely (issue #11)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bridge.conversation import FLOOD_LIMIT
from bridge.store import tables as t
from tests.conftest import EXAMPLE_ROSTER
from tests.world import World, eventually, running_world

AMINA = "+4793456789"  # en; one child, Aisha (2A: Lise is notified of each message)
EXTRA = 5


@pytest.fixture
async def world(database_url: str, tmp_path: Path) -> AsyncIterator[World]:
    async with running_world(database_url, tmp_path, EXAMPLE_ROSTER, email=True) as w:
        yield w


async def test_a_flood_is_kept_whole_but_answered_once(world: World) -> None:
    total = FLOOD_LIMIT + EXTRA
    for i in range(total):
        assert await world.text(AMINA, f"Hello, question {i} about Aisha's homework") == 200

    async def all_in_thread() -> bool:
        return len(await world.rows(t.messages, t.messages.c.direction == "in")) == total

    await eventually(all_in_thread, within=60)
    replies = await eventually(lambda: len(world.replies_to(AMINA)) >= FLOOD_LIMIT + 1 and
                               world.replies_to(AMINA), within=60)  # fmt: skip
    acks = [r for r in replies if r.startswith("Your message has been passed on")]
    polite = [r for r in replies if "many messages" in r]
    assert len(acks) == FLOOD_LIMIT and len(polite) == 1
    notices = await world.rows(t.deliveries, t.deliveries.c.staff_id.is_not(None))
    assert len(notices) == FLOOD_LIMIT  # the rest wait in the unanswered digest
    # An absence is still confirmed, flood or not.
    assert await world.text(AMINA, "Aisha is sick today") == 200
    await eventually(lambda: [r for r in world.replies_to(AMINA) if "UNDO" in r])
    assert (
        len([r for r in world.replies_to(AMINA) if r.startswith("Your message has been passed on")])
        == FLOOD_LIMIT
    )
