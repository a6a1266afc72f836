"""Structured logs for `skolebro run`: one JSON object per line on stderr.

Every record (ours and the libraries') goes through structlog's formatter:
`{"timestamp", "level", "logger", "event", ...}`, with `exception` when there is one.
Log calls carry ids only, never bodies, numbers or addresses; libraries that would
log those at INFO or DEBUG (twilio, aiosqlite) are held back here and in the store.
"""

from __future__ import annotations

import logging
import sys

import structlog

# aiohttp's access log is held back too: every provider callback would be a line (three
# per SMS), each accepted event is logged by its adapter with its id, and /metrics
# counts the requests.
QUIET = {"twilio": logging.WARNING, "aiosqlite": logging.INFO, "aiohttp.access": logging.WARNING}


def configure(level: int = logging.INFO) -> None:
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            structlog.stdlib.add_log_level,
            structlog.stdlib.add_logger_name,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
        ],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(ensure_ascii=False),
        ],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name, floor in QUIET.items():
        logging.getLogger(name).setLevel(floor)
