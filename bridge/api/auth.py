"""Bearer API keys (stored as sha256 hashes, scoped to units) and a per-key rate limit."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from bridge.apikeys import hash_key
from bridge.store import tables as t

MAX_KEY_LENGTH = 256


@dataclass(frozen=True)
class ApiKey:
    """The caller: a key's id, the units it may see and act for, and whether it may write."""

    id: str
    unit_ids: frozenset[str]
    read_only: bool


def bearer_token(header: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, or None when there is none."""
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    if len(token) > MAX_KEY_LENGTH or not token.isascii() or not token.isprintable():
        return None
    return token


async def find_key(engine: AsyncEngine, token: str) -> ApiKey | None:
    """The key whose hash this token has, unless it was revoked."""
    k = t.api_keys
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                select(k.c.id, k.c.unit_ids, k.c.read_only).where(
                    k.c.key_hash == hash_key(token), k.c.revoked_at.is_(None)
                )
            )
        ).one_or_none()
    if row is None:
        return None
    units = frozenset(str(u) for u in (row.unit_ids or []))
    return ApiKey(id=str(row.id), unit_ids=units, read_only=bool(row.read_only))


class TokenBucket:
    """One bucket per key: `rate` requests a second on average, bursts up to `burst`."""

    def __init__(
        self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be positive and burst at least 1")
        self.rate = float(rate)
        self.burst = float(burst)
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, at)

    def take(self, key: str) -> float:
        """Take one token: 0.0 when allowed, else the seconds until one is there."""
        now = self.clock()
        tokens, at = self._buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate)
        if tokens >= 1.0:
            self._buckets[key] = (tokens - 1.0, now)
            return 0.0
        self._buckets[key] = (tokens, now)
        return (1.0 - tokens) / self.rate

    @staticmethod
    def retry_after(wait: float) -> str:
        """The Retry-After header's value: whole seconds, at least one."""
        return str(max(1, math.ceil(wait)))
