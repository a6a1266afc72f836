"""Sortable, unguessable text ids for what the bridge creates."""

from __future__ import annotations

import os
import time


def new_id(prefix: str) -> str:
    """`<prefix>-<48-bit ms time><80 random bits>`, hex: sorts by creation time."""
    return f"{prefix}-{int(time.time() * 1000):012x}{os.urandom(10).hex()}"
