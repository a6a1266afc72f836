"""Reply addresses `r-<token>@reply_domain`: unguessable, bound to one recipient, revocable.

The token is 128 random bits; only its SHA-256 is stored. A lookup by hash is all
the check there is, so a signature would add nothing: a token that is not in the
table, is expired or revoked, does not exist.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from bridge.store import tables as t

PREFIX = "r-"


@dataclass(frozen=True)
class ReplyToken:
    recipient_kind: str  # "guardian" or "staff"
    recipient_id: str
    address: str
    thread_id: str | None
    unit_id: str | None


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_row(
    *,
    recipient_kind: str,
    recipient_id: str,
    address: str,
    days: int,
    thread_id: str | None = None,
    unit_id: str | None = None,
    now: datetime | None = None,
) -> tuple[str, dict[str, object]]:
    """A fresh token's Reply-To local part `r-<token>` and its row, for bulk inserts."""
    token = secrets.token_hex(16)
    now = now or datetime.now(UTC)
    row: dict[str, object] = {
        "token_hash": _hash(token),
        "recipient_kind": recipient_kind,
        "recipient_id": recipient_id,
        "address": address.lower(),
        "thread_id": thread_id,
        "unit_id": unit_id,
        "created_at": now,
        "expires_at": now + timedelta(days=days),
        "revoked_at": None,
    }
    return PREFIX + token, row


async def issue(
    conn: AsyncConnection,
    *,
    recipient_kind: str,
    recipient_id: str,
    address: str,
    days: int,
    thread_id: str | None = None,
    unit_id: str | None = None,
) -> str:
    """A fresh token; returns the Reply-To local part `r-<token>`."""
    local, row = new_row(
        recipient_kind=recipient_kind,
        recipient_id=recipient_id,
        address=address,
        days=days,
        thread_id=thread_id,
        unit_id=unit_id,
    )
    await conn.execute(insert(t.reply_tokens), row)
    return local


def token_of(local_part: str) -> str | None:
    """The token in `r-<token>`, or None when the local part is not a reply address."""
    local = local_part.lower()
    if not local.startswith(PREFIX):
        return None
    token = local[len(PREFIX) :]
    return token if len(token) == 32 and all(c in "0123456789abcdef" for c in token) else None


async def find(conn: AsyncConnection, token: str, now: datetime | None = None) -> ReplyToken | None:
    """The live token's binding, or None for unknown, expired or revoked ones."""
    rt = t.reply_tokens
    row = (
        (
            await conn.execute(
                select(rt).where(
                    rt.c.token_hash == _hash(token),
                    rt.c.revoked_at.is_(None),
                    rt.c.expires_at > (now or datetime.now(UTC)),
                )
            )
        )
        .mappings()
        .first()
    )
    if row is None:
        return None
    return ReplyToken(
        row["recipient_kind"], row["recipient_id"], row["address"], row["thread_id"], row["unit_id"]
    )


async def revoke(conn: AsyncConnection, token: str) -> bool:
    rt = t.reply_tokens
    done = await conn.execute(
        update(rt)
        .where(rt.c.token_hash == _hash(token), rt.c.revoked_at.is_(None))
        .values(revoked_at=datetime.now(UTC))
    )
    return bool(done.rowcount)
