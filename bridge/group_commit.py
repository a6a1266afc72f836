"""Group commit: many callers, one transaction, each answered only after it committed.

Each `submit` queues its item with a future; one writer task takes everything queued
(up to `max_group`), hands the list to `write` (which commits it in one transaction and
returns one result per item, in order), and resolves every future only after that.
Nothing waits on a timer: while a group is being written the next one gathers, so a
lone item is written at once and a burst costs one transaction per group instead of
one per item. On SQLite's single connection that also leaves the connection free far
more often for everyone else who queues for it.

When a group fails with an error that one item's data may cause (`splittable`), each
item is written alone, so only the one at fault is refused. Any other failure answers
every waiter of the group with the same error.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

log = logging.getLogger("skolebro.group_commit")

Item = TypeVar("Item")
Result = TypeVar("Result")


class GroupCommit(Generic[Item, Result]):
    """`submit` returns once its item is committed, together with whatever else waited."""

    def __init__(
        self,
        write: Callable[[Sequence[Item]], Awaitable[list[Result]]],
        *,
        name: str,
        max_group: int,
        splittable: Callable[[BaseException], bool],
        unavailable: type[Exception],
    ) -> None:
        self._write_group = write
        self.name = name
        self.max_group = max(1, max_group)
        self._splittable = splittable
        # The error for callers the writer cannot answer (closed, stopped); it takes
        # one message argument, and each waiter gets an instance of its own.
        self._unavailable = unavailable
        self._queue: list[tuple[Item, asyncio.Future[Result]]] = []
        self._wake = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._closed = False
        self._writing = False  # a group taken and not yet answered
        self.groups = 0  # transactions written, for tests and benchmarks
        self.items = 0

    async def submit(self, item: Item) -> Result:
        """Commit `item` (with whatever else is waiting) and return its result."""
        if self._closed:
            raise self._unavailable(f"{self.name} closed")
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._queue.append((item, future))
        self._wake.set()
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._run(), name=f"skolebro-{self.name}")
        # A cancelled caller (a timeout) does not cancel the group; its item may be
        # committed all the same.
        return await future

    def waiting(self) -> bool:
        """Whether items wait to be written (queued, or in a group not yet committed)."""
        return self._writing or bool(self._queue)

    async def close(self) -> None:
        """Write what is queued, then stop the writer; later submits are refused."""
        self._closed = True
        self._wake.set()
        if self._writer is not None:
            await self._writer

    async def _run(self) -> None:
        while True:
            if not self._queue:
                if self._closed:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            group = self._queue[: self.max_group]
            del self._queue[: self.max_group]
            self._writing = True
            try:
                await self._write(group)
            except BaseException as exc:  # cancelled while writing: no answer is a "done"
                for _, future in [*group, *self._queue]:
                    if not future.done():
                        future.set_exception(self._unavailable(f"{self.name} stopped"))
                self._queue.clear()
                if isinstance(exc, asyncio.CancelledError | KeyboardInterrupt | SystemExit):
                    raise
                log.exception("%s writer failed", self.name)
            finally:
                self._writing = False

    async def _write(self, group: list[tuple[Item, asyncio.Future[Result]]]) -> None:
        try:
            results = await self._write_group([item for item, _ in group])
        except Exception as exc:
            if len(group) > 1 and self._splittable(exc):
                # The group wrote nothing; each alone, so only the one at fault fails.
                log.warning(
                    "%s group of %d failed (%s); one at a time",
                    self.name,
                    len(group),
                    type(exc.__cause__ or exc).__name__,
                )
                for waiter in group:
                    await self._write([waiter])
                return
            for _, future in group:
                if not future.done():
                    future.set_exception(self._copy(exc))
            return
        self.groups += 1
        self.items += len(group)
        for (_, future), result in zip(group, results, strict=True):
            if not future.done():
                future.set_result(result)

    def _copy(self, exc: Exception) -> Exception:
        """The exception for one waiter: an unavailable error of its own (so that
        tracebacks do not pile up on one instance raised in many tasks), any other
        error as it is."""
        if type(exc) is not self._unavailable:
            return exc
        copy = self._unavailable(*exc.args)
        copy.__cause__ = exc.__cause__
        return copy
