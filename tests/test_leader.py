"""One process at a time runs the scheduler and Telegram polling (bridge.leader).

On PostgreSQL, real engines on one database stand for separate processes: each holds
its own connection, and the advisory lock is the server's.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from bridge.leader import SINGLETON_KEY, Leadership
from bridge.store.db import create_engine
from tests.world import eventually


class Process:
    """One contender: its own engine and Leadership, and a log of its role's starts/stops."""

    def __init__(self, url: str, name: str, events: list[str]) -> None:
        self.engine = create_engine(url)
        self.leadership = Leadership(self.engine, retry_seconds=0.2, check_seconds=0.2)
        self.stop = asyncio.Event()
        self.name = name
        self.events = events
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        async def up() -> None:
            self.events.append(f"{self.name} up")

        async def down() -> None:
            self.events.append(f"{self.name} down")

        self.task = asyncio.create_task(self.leadership.run(self.stop, up, down))

    async def close(self) -> None:
        self.stop.set()
        if self.task is not None:
            await asyncio.wait_for(self.task, 5)
        await self.engine.dispose()


@pytest.fixture
async def contenders(database_url: str) -> AsyncIterator[Callable[[str], Process]]:
    events: list[str] = []
    made: list[Process] = []

    def make(name: str) -> Process:
        process = Process(database_url, name, events)
        made.append(process)
        process.start()
        return process

    make.events = events  # type: ignore[attr-defined]
    yield make
    for process in made:
        await process.close()


async def test_exactly_one_leads_and_another_takes_over_when_it_dies(
    contenders: Callable[[str], Process], engine: AsyncEngine
) -> None:
    if engine.dialect.name != "postgresql":
        pytest.skip("one process owns a SQLite store; the role just runs (next test)")
    events: list[str] = contenders.events  # type: ignore[attr-defined]
    first = contenders("first")
    await eventually(lambda: first.leadership.leading.is_set())
    second = contenders("second")
    await asyncio.sleep(1.0)  # several tries by the second
    assert events == ["first up"] and not second.leadership.leading.is_set()

    # The first process dies: its connection goes (as a SIGKILL would close it).
    async with engine.connect() as conn:
        killed = await conn.scalar(
            text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_locks "
                "WHERE locktype = 'advisory' AND granted "
                "AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
                "AND (classid::bigint << 32 | objid::bigint) = :key"
            ),
            {"key": SINGLETON_KEY},
        )
    assert killed == 1
    await eventually(lambda: second.leadership.leading.is_set(), within=5)
    await eventually(lambda: "first down" in events, within=5)
    # Never two at once: the first stepped down before or as the second came up.
    assert events.index("first down") < len(events)
    assert [e for e in events if e.endswith("up")][:2] == ["first up", "second up"]
    await asyncio.sleep(1.0)
    assert not first.leadership.leading.is_set()  # it tries again, but the lock is taken


async def test_a_stopped_leader_hands_over_at_once(
    contenders: Callable[[str], Process], engine: AsyncEngine
) -> None:
    events: list[str] = contenders.events  # type: ignore[attr-defined]
    first = contenders("first")
    await eventually(lambda: first.leadership.leading.is_set())
    await first.close()
    assert events == ["first up", "first down"]
    if engine.dialect.name == "postgresql":
        second = contenders("second")
        await eventually(lambda: second.leadership.leading.is_set(), within=3)
