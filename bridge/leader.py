"""One process at a time: the scheduler and Telegram polling, whoever holds the lock.

Several `skolebro run` processes may share one PostgreSQL store: each takes inbound
webhooks, processes the inbox and sends deliveries (their claims and leases keep that
safe). Scheduled jobs and Telegram long polling must run in exactly one of them: two
pollers would fight over `getUpdates` (Telegram answers 409), and two schedulers would
waste work. `Leadership` holds a session-level advisory lock on a connection of its own:

- A process that does not hold it tries again every `retry_seconds` (5 s).
- The holder checks its connection every `check_seconds`; if the connection is gone,
  the lock is gone with it, and the role stops at once.
- When the holder dies, its connection closes and PostgreSQL releases the lock; another
  process takes it on its next try, well within 30 s.

On SQLite the store belongs to one process, so the role simply runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from sqlalchemy import BigInteger, func, literal, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

log = logging.getLogger(__name__)

# "skolebro" in ASCII, as a 64-bit key: the lock for the singleton role.
SINGLETON_KEY = int.from_bytes(b"skolebro", "big") & 0x7FFF_FFFF_FFFF_FFFF

Role = Callable[[], Awaitable[None]]


class Leadership:
    def __init__(
        self,
        engine: AsyncEngine,
        *,
        key: int = SINGLETON_KEY,
        retry_seconds: float = 5.0,
        check_seconds: float = 5.0,
    ) -> None:
        self.engine = engine
        self.key = key
        self.retry_seconds = retry_seconds
        self.check_seconds = check_seconds
        self.leading = asyncio.Event()  # set while this process holds the role

    async def run(self, stop: asyncio.Event, start_role: Role, stop_role: Role) -> None:
        """Hold the role whenever we can, until `stop`; the role is stopped on the way out."""
        if self.engine.dialect.name != "postgresql":
            await self._lead(start_role)
            await stop.wait()
            await self._step_down(stop_role)
            return
        while not stop.is_set():
            try:
                async with self.engine.connect() as conn:
                    if await self._try_lock(conn):
                        try:
                            await self._lead(start_role)
                            await self._hold(conn, stop)
                        finally:
                            await self._step_down(stop_role)
                            with contextlib.suppress(Exception):
                                await self._unlock(conn)
                            # Never hand a connection that may still hold the lock back
                            # to the pool: closing it releases the lock for certain.
                            await conn.invalidate()
            except Exception:
                log.warning("leadership: lost the store connection", exc_info=True)
            await _pause(self.retry_seconds, stop)

    async def _try_lock(self, conn: AsyncConnection) -> bool:
        got = await conn.scalar(select(func.pg_try_advisory_lock(literal(self.key, BigInteger))))
        await conn.commit()
        return bool(got)

    async def _unlock(self, conn: AsyncConnection) -> None:
        await conn.scalar(select(func.pg_advisory_unlock(literal(self.key, BigInteger))))
        await conn.commit()

    async def _hold(self, conn: AsyncConnection, stop: asyncio.Event) -> None:
        """Until `stop`, or until the connection holding the lock fails (then raise)."""
        while not stop.is_set():
            await _pause(self.check_seconds, stop)
            await conn.scalar(select(literal(1)))
            await conn.commit()

    async def _lead(self, start_role: Role) -> None:
        log.info("leadership: this process runs the scheduler and polling")
        self.leading.set()
        await start_role()

    async def _step_down(self, stop_role: Role) -> None:
        if not self.leading.is_set():
            return
        self.leading.clear()
        log.info("leadership: stepping down")
        try:
            await stop_role()
        except Exception:
            log.exception("leadership: stopping the role failed")


async def _pause(seconds: float, stop: asyncio.Event) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)
