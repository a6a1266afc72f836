"""API keys for the JSON API: random bearer secrets, stored only as a hash, scoped to units."""

from __future__ import annotations

import hashlib
import secrets
from datetime import UTC, datetime

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from bridge.store import tables as t
from bridge.store.ids import new_id


class UnknownUnit(Exception):
    """A unit id that the roster does not hold."""


def hash_key(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


async def create_api_key(
    engine: AsyncEngine, unit_ids: list[str], *, read_only: bool = False
) -> tuple[str, str]:
    """Create a key for these units; returns (key id, the secret, shown only this once)."""
    key_id = new_id("key")
    secret = f"sb_{secrets.token_urlsafe(32)}"
    async with engine.begin() as conn:
        known = set(
            (await conn.execute(select(t.units.c.id).where(t.units.c.id.in_(unit_ids)))).scalars()
        )
        missing = [u for u in unit_ids if u not in known]
        if missing:
            raise UnknownUnit(", ".join(missing))
        now = datetime.now(UTC)
        await conn.execute(
            insert(t.api_keys),
            {
                "id": key_id,
                "key_hash": hash_key(secret),
                "unit_ids": sorted(set(unit_ids)),
                "read_only": read_only,
                "created_at": now,
            },
        )
        await conn.execute(
            insert(t.audit_log),
            {
                "at": now,
                "actor": "cli",
                "action": "apikey.create",
                "subject": key_id,
                "detail": {"units": sorted(set(unit_ids)), "read_only": read_only},
            },
        )
    return key_id, secret
