"""The aiohttp application: health, metrics, and the routes adapters mount."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST
from sqlalchemy import event, exc, text
from sqlalchemy.ext.asyncio import AsyncEngine

from bridge import metrics

log = logging.getLogger("skolebro.store")

ENGINE: web.AppKey[AsyncEngine] = web.AppKey("engine", AsyncEngine)
# /healthz waits this long for the store's answer before it says the store is slow.
HEALTH_TIMEOUT_SECONDS = 3.0
# A store error keeps /healthz at "failing" this long: a full disk or a lock lets reads
# through, so a SELECT alone would say "ok" while no inbound event can be stored.
STORE_ERROR_WINDOW_SECONDS = 10.0
# Errors about the statement or the data, not about the store being able to take writes.
_NOT_STORE_FAULTS = (exc.IntegrityError, exc.ProgrammingError, exc.DataError)


def _reason(error: BaseException | None) -> str:
    """A short, data-free name for a store error: SQLite's error name, else the class."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        name = getattr(error, "sqlite_errorname", None)
        if name:
            return str(name)
        error = error.__cause__ or error.__context__ or getattr(error, "orig", None)
    return "error"


class StoreHealth:
    """Whether the store takes writes, as this process last saw it (for /healthz).

    Fed by the engine's own `handle_error` event: a store error (lock, full disk, lost
    connection) marks it failing for `STORE_ERROR_WINDOW_SECONDS`. An outage is logged
    once, when it starts, with the error's name only (never a statement or parameters).
    """

    def __init__(self) -> None:
        self.failed_at: float | None = None
        self.reason = ""

    def watch(self, engine: AsyncEngine) -> None:
        event.listen(engine.sync_engine, "handle_error", self._on_error)

    def _on_error(self, context: Any) -> None:
        error = context.sqlalchemy_exception or context.original_exception
        if isinstance(error, _NOT_STORE_FAULTS) and not context.is_disconnect:
            return
        reason = _reason(context.original_exception)
        if reason == "error":
            reason = type(context.original_exception).__name__
        if self.failing() is None:
            log.error("store failing: %s; inbound is answered 503 until it recovers", reason)
        self.failed_at = time.monotonic()
        self.reason = reason

    def failing(self) -> str | None:
        """The name of a store error seen within the window, or None."""
        if self.failed_at is None:
            return None
        if time.monotonic() - self.failed_at > STORE_ERROR_WINDOW_SECONDS:
            return None
        return self.reason


STORE_HEALTH: web.AppKey[StoreHealth] = web.AppKey("store_health", StoreHealth)
PROBE: web.AppKey[dict[str, Any]] = web.AppKey("store_probe", dict)


async def _select_one(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        await conn.execute(text("SELECT 1"))


async def _probe(app: web.Application) -> str | None:
    """None when the store answers a SELECT in time, else a short reason.

    The probe is never cancelled (cancelling a pooled connection mid-statement may
    cost the connection); a slow one is left to finish and the next request reuses it.
    """
    box = app[PROBE]
    task: asyncio.Task[None] | None = box.get("task")
    if task is None or task.done():
        task = asyncio.create_task(_select_one(app[ENGINE]))
        task.add_done_callback(lambda t: t.cancelled() or t.exception())
        box["task"] = task
    done, _ = await asyncio.wait({task}, timeout=HEALTH_TIMEOUT_SECONDS)
    if not done:
        return "slow"
    error = task.exception()
    if error is not None:  # any store failure means "not healthy", never a crash
        reason = _reason(error)
        return reason if reason != "error" else type(error).__name__
    return None


async def healthz(request: web.Request) -> web.Response:
    app = request.app
    body: dict[str, Any] = {"status": "ok", "store": "ok"}
    unreachable = await _probe(app)
    failing = app[STORE_HEALTH].failing()
    if unreachable is not None:
        body.update(status="unavailable", store="unavailable", store_error=unreachable)
    elif failing is not None:
        body.update(status="unavailable", store="failing", store_error=failing)
    if metrics.circuits:
        body["channels"] = dict(sorted(metrics.circuits.items()))
    return web.json_response(body, status=200 if body["status"] == "ok" else 503)


async def metrics_page(request: web.Request) -> web.Response:
    try:
        await metrics.refresh_from_store(request.app[ENGINE])
    except Exception:  # the counters are still worth serving while the store is down
        pass
    return web.Response(body=metrics.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})


def build_app(engine: AsyncEngine, *, client_max_size: int = 1024 * 1024) -> web.Application:
    app = web.Application(client_max_size=client_max_size)
    app[ENGINE] = engine
    health = StoreHealth()
    health.watch(engine)
    app[STORE_HEALTH] = health
    app[PROBE] = {}
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics_page)
    return app
