"""Wiring for `skolebro run`: store, HTTP server, and an orderly stop on SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import signal

from aiohttp import web

from bridge.config import Settings
from bridge.http import build_app
from bridge.store.db import create_engine

log = logging.getLogger("skolebro")

STOP_SECONDS = 15


async def run_bridge(settings: Settings) -> int:
    """Serve until SIGINT/SIGTERM, then stop accepting and finish within 15 s."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    for channel in ("sms", "telegram", "email"):
        if getattr(settings, channel).enabled:
            log.warning("channel %s is enabled but not available yet; ignoring it", channel)
    engine = create_engine(settings.database_url)
    runner = web.AppRunner(build_app(engine), shutdown_timeout=STOP_SECONDS - 5)
    await runner.setup()
    site = web.TCPSite(runner, settings.http.host, settings.http.port)
    await site.start()
    log.info("listening on http://%s:%d/", settings.http.host, settings.http.port)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("stopping")
    await runner.cleanup()
    await engine.dispose()
    return 0
