"""The aiohttp application: health, metrics, and the routes adapters mount."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from bridge import metrics

ENGINE: web.AppKey[AsyncEngine] = web.AppKey("engine", AsyncEngine)


async def healthz(request: web.Request) -> web.Response:
    engine = request.app[ENGINE]
    try:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
    except Exception as e:  # any store failure means "not healthy", never a crash
        return web.json_response({"status": "unavailable", "store": type(e).__name__}, status=503)
    return web.json_response({"status": "ok", "store": "ok"})


async def metrics_page(request: web.Request) -> web.Response:
    try:
        await metrics.refresh_from_store(request.app[ENGINE])
    except Exception:  # the counters are still worth serving while the store is down
        pass
    return web.Response(body=metrics.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})


def build_app(engine: AsyncEngine, *, client_max_size: int = 1024 * 1024) -> web.Application:
    app = web.Application(client_max_size=client_max_size)
    app[ENGINE] = engine
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics_page)
    return app
