"""Fault: the SMTP server drops the connection in the middle of DATA (issue #11).

The interrupted deliveries are retried and reach their recipients, each exactly once,
and at no moment is a delivery marked sent whose mail the server has not accepted.
"""

from __future__ import annotations

import collections
from pathlib import Path

import pytest

from bridge.announcements import create_announcement
from bridge.store import tables as t
from tests.world import World, eventually, running_world, write_roster

N = 12
GUARDIANS = [(f"gd-{i}", "email", "nb") for i in range(N)]
DROPS = 4


def received(world: World) -> collections.Counter[str]:
    assert world.smtp is not None
    return collections.Counter(r for m in world.smtp.messages for r in m.rcpt_tos)


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
async def test_a_connection_dropped_mid_data_is_retried_and_sent_once(
    database_url: str, tmp_path: Path
) -> None:
    roster = write_roster(tmp_path / "roster.csv", GUARDIANS)
    async with running_world(database_url, tmp_path, roster, email=True) as world:
        assert world.smtp is not None
        world.smtp.drop_next(DROPS)
        created = await create_announcement(
            world.bridge.engine,
            world.bridge.settings,
            unit_id="u-fjell",
            group_ids=["g-5b"],
            text="Husk gymtøy i morgen",
        )
        world.bridge.outbox.wake.set()
        assert created.deliveries == N

        async def all_sent_and_none_before_its_time() -> bool:
            rows = await world.rows(t.deliveries)
            got = received(world)
            for row in rows:  # sent means the server accepted that very mail
                if row["status"] in ("sent", "delivered"):
                    assert got[row["address"]] >= 1, row["id"]
            return all(r["status"] == "sent" for r in rows)

        await eventually(all_sent_and_none_before_its_time, within=60)
        assert world.smtp._drops == 0  # every drop happened
        got = received(world)
        assert got == {f"g{i}@example.no": 1 for i in range(N)}, got
        rows = await world.rows(t.deliveries)
        retried = [r for r in rows if r["attempts"] > 1]
        assert len(retried) == DROPS, [(r["attempts"], r["last_error"]) for r in rows]
