"""What every loopback fake shares: start, stop, and use as an async context manager."""

from __future__ import annotations

from types import TracebackType
from typing import Self


class LoopbackFake:
    """A fake provider server: `async with Fake(...) as fake:` starts and stops it."""

    async def start(self) -> None:
        raise NotImplementedError

    async def stop(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
