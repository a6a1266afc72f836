"""Engines for the store: SQLite (WAL, foreign keys) or PostgreSQL, from one URL."""

from __future__ import annotations

import collections
import logging
import sqlite3
from typing import Any

import aiosqlite
from sqlalchemy import event
from sqlalchemy.dialects.sqlite.aiosqlite import (
    AsyncAdapt_aiosqlite_connection,
    AsyncAdapt_aiosqlite_cursor,
    AsyncAdapt_aiosqlite_dbapi,
)
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.util import EMPTY_DICT

# aiosqlite logs every statement with its parameters (bodies, numbers, addresses) at
# DEBUG: never let that through, whatever level the root logger is set to.
logging.getLogger("aiosqlite").setLevel(logging.INFO)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


class _OneHopCursor(AsyncAdapt_aiosqlite_cursor):
    """A cursor that costs one trip to aiosqlite's thread per statement.

    SQLAlchemy's aiosqlite adapter makes four (cursor, execute, fetchall, close), and
    each trip hands the GIL to that thread and back: on a busy event loop that, not
    SQLite, is most of what a statement costs. Here the sqlite3 cursor is made, run,
    read to the end and closed in one function queued to the same thread, so what
    SQLite sees (one connection, one thread, the same statements in the same order)
    does not change. Server-side cursors (`stream_results`) keep SQLAlchemy's own.
    """

    __slots__ = ("_description", "_lastrowid", "_rowcount")

    def __init__(self, adapt_connection: Any) -> None:
        self._adapt_connection = adapt_connection
        self._connection = adapt_connection._connection
        self._soft_closed_memoized = EMPTY_DICT
        self._rows = collections.deque()
        self._description: Any = None
        self._rowcount = -1
        self._lastrowid: int | None = None

    @property
    def description(self) -> Any:
        return self._description

    @property
    def rowcount(self) -> int:
        return self._rowcount

    @property
    def lastrowid(self) -> Any:
        return self._lastrowid

    async def _async_soft_close(self) -> None:
        return None

    def close(self) -> None:
        self._rows.clear()

    async def _run(self, many: bool, operation: Any, parameters: Any) -> None:
        raw: aiosqlite.Connection = self._connection  # type: ignore[assignment]

        def run() -> tuple[Any, list[Any] | None, int, int | None]:
            cursor = raw._conn.cursor()
            try:
                if many:
                    cursor.executemany(operation, parameters)
                else:
                    cursor.execute(operation, () if parameters is None else parameters)
                description = cursor.description
                rows = cursor.fetchall() if description else None
                return description, rows, cursor.rowcount, cursor.lastrowid
            finally:
                cursor.close()

        async with self._adapt_connection._execute_mutex:
            description, rows, self._rowcount, self._lastrowid = await raw._execute(run)
        self._description = description
        self._rows = collections.deque(rows or ())

    async def _execute_async(self, operation: Any, parameters: Any) -> Any:
        await self._run(False, operation, parameters)

    async def _executemany_async(self, operation: Any, seq_of_parameters: Any) -> Any:
        await self._run(True, operation, seq_of_parameters)


class _OneHopConnection(AsyncAdapt_aiosqlite_connection):
    __slots__ = ()
    _cursor_cls = _OneHopCursor


class _OneHopDBAPI(AsyncAdapt_aiosqlite_dbapi):
    def connect(self, *arg: Any, **kw: Any) -> Any:
        adapted = super().connect(*arg, **kw)
        return _OneHopConnection(self, adapted._connection)


def create_engine(database_url: str, **kwargs: Any) -> AsyncEngine:
    """An async engine; on SQLite every connection gets WAL and foreign keys."""
    url = make_url(database_url)
    # A store error's message (and so any logged traceback) must not carry the
    # statement's parameters: they hold bodies, numbers and addresses.
    kwargs.setdefault("hide_parameters", True)
    if url.get_backend_name() == "sqlite":
        # One connection: SQLite has one writer, and queueing for it in Python is far
        # cheaper than SQLite's busy handler, which sleeps in growing steps.
        kwargs.setdefault("pool_size", 1)
        kwargs.setdefault("max_overflow", 0)
        kwargs.setdefault("pool_timeout", 60)
        kwargs.setdefault("module", _OneHopDBAPI(aiosqlite, sqlite3))
        engine = create_async_engine(url, **kwargs)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    kwargs.setdefault("pool_size", 10)
    kwargs.setdefault("pool_pre_ping", True)
    return create_async_engine(url, **kwargs)


def is_sqlite(engine: AsyncEngine) -> bool:
    return engine.dialect.name == "sqlite"
