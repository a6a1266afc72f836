"""Telegram link codes: the one way (besides a verified shared contact) a chat becomes a
guardian's (SPEC sections 2 and 8).

`create_invite` makes a one-time code and sends the guardian the deep link
`https://t.me/<bot_username>?start=<code>` by SMS or e-mail; `redeem` turns the code
that comes back in `/start <code>` into a link between the chat and the guardian.

The code is a bearer secret: only its SHA-256 is stored, it works once (the use is
marked in the same transaction as the link is made, by a conditional UPDATE, so two
chats racing with one code cannot both win), and it lasts 72 hours.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from bridge import outbox
from bridge.config import Settings
from bridge.i18n import translate
from bridge.routing import load_routes
from bridge.store import tables as t

log = logging.getLogger("skolebro.invites")

CODE_TTL = timedelta(hours=72)
# The link travels on a channel that already proves who the guardian is.
INVITE_CHANNELS = ("sms", "email")
LINK_CHANNEL = "telegram"


class InviteError(Exception):
    """The invite cannot be made; str() is the one line the operator sees."""


@dataclass(frozen=True)
class Invite:
    code_expires_at: datetime  # aware, UTC
    channel: str  # "sms" or "email": where the link was sent


def hash_code(code: str) -> str:
    return hashlib.sha256(code.encode("utf-8")).hexdigest()


def invite_link(settings: Settings, code: str) -> str:
    return f"https://t.me/{settings.telegram.bot_username}?start={code}"


async def create_invite(
    engine: AsyncEngine,
    settings: Settings,
    guardian_id: str,
    *,
    actor: str = "cli",
    now: datetime | None = None,
) -> Invite:
    """Store a new code for the guardian and queue the link on their first SMS or e-mail
    channel; InviteError for an unknown or inactive guardian, or one with neither."""
    now = now or datetime.now(UTC)
    g = t.guardians
    async with engine.begin() as conn:
        guardian = (
            await conn.execute(
                select(g.c.id, g.c.language, g.c.active).where(g.c.id == guardian_id)
            )
        ).first()
        if guardian is None:
            raise InviteError(f"unknown guardian: {guardian_id}")
        if not guardian.active:
            raise InviteError(f"guardian {guardian_id} is not active")
        routes = (await load_routes(conn, [guardian_id])).by_guardian.get(guardian_id, [])
        # Their order decides; a channel without an identity, or a number or address known
        # to be dead, is passed over. An opt-out does not count: the school asked for this.
        route = next((r for r in routes if r.channel in INVITE_CHANNELS and not r.dead), None)
        if route is None:
            raise InviteError(
                f"guardian {guardian_id} has no SMS number or e-mail address in their channels"
            )
        code = secrets.token_urlsafe(16)
        expires_at = now + CODE_TTL
        await conn.execute(
            insert(t.link_codes),
            {
                "code_hash": hash_code(code),
                "guardian_id": guardian_id,
                "channel": LINK_CHANNEL,
                "created_at": now,
                "expires_at": expires_at,
                "used_at": None,
            },
        )
        lang = guardian.language or settings.bridge.default_language
        await outbox.enqueue(
            conn,
            kind="invite",
            channel=route.channel,
            address=route.address,
            body=translate(
                lang,
                "Connect Telegram to the school's message service: open {link} "
                "(it works once, for 72 hours).",
                link=invite_link(settings, code),
            ),
            subject=(
                translate(lang, "Connect Telegram to the school's message service")
                if route.channel == "email"
                else None
            ),
            guardian_id=guardian_id,
            priority="urgent",
        )
        # Neither the code nor the address: the audit log outlives both.
        await conn.execute(
            insert(t.audit_log),
            {
                "at": now,
                "actor": actor,
                "action": "telegram.invite",
                "subject": guardian_id,
                "detail": {"channel": route.channel, "expires_at": expires_at.isoformat()},
            },
        )
    log.info("telegram invite for guardian %s queued on %s", guardian_id, route.channel)
    return Invite(code_expires_at=expires_at, channel=route.channel)


async def redeem(
    conn: AsyncConnection,
    code: str,
    chat_id: str | int,
    user_id: int | None,
    *,
    now: datetime | None = None,
) -> str | None:
    """Link the chat to the code's guardian and use the code up, in the caller's
    transaction; the guardian id, or None for an unknown, used or expired code (or a
    guardian no longer active)."""
    now = now or datetime.now(UTC)
    if not code or len(code) > 128:
        return None
    lc, g = t.link_codes, t.guardians
    guardian_id = await conn.scalar(
        update(lc)
        .where(
            lc.c.code_hash == hash_code(code),
            lc.c.channel == LINK_CHANNEL,
            lc.c.used_at.is_(None),
            lc.c.expires_at > now,
            lc.c.guardian_id.in_(select(g.c.id).where(g.c.active.is_(True))),
        )
        .values(used_at=now)
        .returning(lc.c.guardian_id)
    )
    if guardian_id is None:
        return None
    await link_chat(conn, chat_id, [str(guardian_id)], user_id, via="code", now=now)
    return str(guardian_id)


async def link_chat(
    conn: AsyncConnection,
    chat_id: str | int,
    guardian_ids: Iterable[str],
    user_id: int | None,
    *,
    via: str,
    now: datetime | None = None,
) -> None:
    """Make the chat these guardians' Telegram identity.

    A guardian has one chat: a link made from a new phone replaces the old one, so a
    lost or passed-on phone stops acting for them. Linking is a fresh opt-in, so an
    earlier STOPP or a "bot blocked" mark on this chat no longer holds.
    """
    now = now or datetime.now(UTC)
    chat = int(chat_id)
    link, cp = t.telegram_links, t.contact_points
    for guardian_id in dict.fromkeys(guardian_ids):
        await conn.execute(delete(link).where(link.c.guardian_id == guardian_id))
        await conn.execute(
            insert(link),
            {"chat_id": chat, "guardian_id": guardian_id, "user_id": user_id, "linked_at": now},
        )
        await conn.execute(
            insert(t.audit_log),
            {
                "at": now,
                "actor": guardian_id,
                "action": "telegram.link",
                "subject": guardian_id,
                "detail": {"via": via},
            },
        )
    await conn.execute(
        update(cp)
        .where(cp.c.channel == LINK_CHANNEL, cp.c.address == str(chat))
        .values(opted_out_at=None, dead_at=None, dead_reason=None, opted_in_at=now, updated_at=now)
    )


async def unlink_chat(conn: AsyncConnection, chat_id: str | int) -> list[str]:
    """Remove every link of this chat (`/stopp`); returns the guardian ids it had."""
    link = t.telegram_links
    chat = int(chat_id)
    guardian_ids = list(
        (await conn.execute(select(link.c.guardian_id).where(link.c.chat_id == chat))).scalars()
    )
    if guardian_ids:
        await conn.execute(delete(link).where(link.c.chat_id == chat))
        now = datetime.now(UTC)
        await conn.execute(
            insert(t.audit_log),
            [
                {
                    "at": now,
                    "actor": gid,
                    "action": "telegram.unlink",
                    "subject": gid,
                    "detail": None,
                }
                for gid in guardian_ids
            ],
        )
    return guardian_ids
