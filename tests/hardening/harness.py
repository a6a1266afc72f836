"""A running world (tests/world.py) on a loop of its own thread, for synchronous hypothesis tests.

Hypothesis drives plain functions; the bridge needs a running event loop. The world runs
in a background thread and each example submits coroutines to it with `call`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import Awaitable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import func, select

from adapters.fakes.telegram import FakeTelegram
from bridge.store import tables as t
from bridge.store.db import create_engine
from bridge.store.migrate import upgrade
from tests.world import BOT_TOKEN, World, eventually, running_world

T = TypeVar("T")
WEBHOOK_SECRET = "hardening-webhook-secret"


def sqlite_url(directory: Path) -> str:
    """A fresh migrated SQLite database in `directory` (fuzzers run on one world per module)."""
    url = f"sqlite+aiosqlite:///{directory / 'skolebro.db'}"

    async def go() -> None:
        engine = create_engine(url)
        await upgrade(engine)
        await engine.dispose()

    asyncio.run(go())
    return url


class ThreadedWorld:
    def __init__(self, world: World, loop: asyncio.AbstractEventLoop) -> None:
        self.world = world
        self.loop = loop

    def call(self, coro: Awaitable[T], timeout: float = 60) -> T:
        async def wrap() -> T:
            return await coro

        return asyncio.run_coroutine_threadsafe(wrap(), self.loop).result(timeout)

    @property
    def base(self) -> str:
        return self.world.bridge.settings.bridge.public_url.rstrip("/")

    def count(self, table: Any, *where: Any) -> int:
        async def go() -> int:
            async with self.world.bridge.engine.connect() as conn:
                return int(await conn.scalar(select(func.count()).select_from(table).where(*where)))

        return self.call(go())

    def settle(self, within: float = 30) -> None:
        """Wait until the inbox has processed every event it accepted."""
        e = t.inbound_events

        async def none_pending() -> bool:
            async with self.world.bridge.engine.connect() as conn:
                n = await conn.scalar(
                    select(func.count()).select_from(e).where(e.c.status == "pending")
                )
            return n == 0

        self.call(eventually(none_pending, within), timeout=within + 5)


@contextlib.contextmanager
def threaded_world(
    database_url: str,
    tmp_path: Path,
    roster: Path,
    extra_toml: str = "",
    *,
    telegram_webhook: bool = False,
    **kw: Any,
) -> Iterator[ThreadedWorld]:
    """`running_world` in a thread; with `telegram_webhook`, Telegram in webhook mode
    (secret `WEBHOOK_SECRET`) against a FakeTelegram, which is `ThreadedWorld.bot`."""
    loop = asyncio.new_event_loop()
    ready: dict[str, Any] = {}
    started = threading.Event()
    stop: asyncio.Event | None = None

    async def main() -> None:
        nonlocal stop
        stop = asyncio.Event()
        toml = extra_toml
        bot = None
        if telegram_webhook:
            bot = FakeTelegram(BOT_TOKEN)
            await bot.start()
            os.environ["HARDENING_BOT_TOKEN"] = BOT_TOKEN
            os.environ["HARDENING_WEBHOOK_SECRET"] = WEBHOOK_SECRET
            toml += f"""
[telegram]
enabled = true
token_env = "HARDENING_BOT_TOKEN"
mode = "webhook"
webhook_secret_env = "HARDENING_WEBHOOK_SECRET"
api_base_url = "{bot.base_url}"
bot_username = "skolebro_test_bot"
max_per_second = 500
"""
        try:
            async with running_world(database_url, tmp_path, roster, toml, **kw) as world:
                world.telegram = world.telegram or bot
                ready["world"] = world
                started.set()
                await stop.wait()
        except BaseException as e:
            ready["error"] = e
            started.set()
            raise
        finally:
            if bot is not None:
                await bot.stop()

    thread = threading.Thread(target=lambda: loop.run_until_complete(main()), daemon=True)
    thread.start()
    started.wait(60)
    if "error" in ready:
        raise ready["error"]
    try:
        yield ThreadedWorld(ready["world"], loop)
    finally:
        assert stop is not None
        loop.call_soon_threadsafe(stop.set)
        thread.join(30)
        loop.close()
