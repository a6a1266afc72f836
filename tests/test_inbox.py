"""The durable inbox: accept once per external id, and dead letters an operator can see."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from bridge.config import Settings
from bridge.domain import Channel, InboundEvent
from bridge.inbox import MAX_PROCESSING_ATTEMPTS, InboxWorker, accept
from bridge.store import tables as t
from tests.cli import skolebro, write_config


def _event(external_id: str, sender: str = "+4791234567", channel: Channel = Channel.SMS):
    return InboundEvent(
        channel=channel,
        external_id=external_id,
        sender=sender,
        text="Ola er syk",
        received_at=datetime.now(UTC),
    )


async def test_accept_is_idempotent_per_channel_and_id(engine: AsyncEngine) -> None:
    first = await accept(engine, _event("SM1"))
    again = await accept(engine, _event("SM1"))
    other = await accept(engine, _event("SM1", channel=Channel.EMAIL))
    assert first.new and not again.new and other.new
    assert first.event_id == again.event_id != other.event_id


async def test_an_event_that_keeps_failing_becomes_a_dead_letter(
    engine: AsyncEngine, database_url: str, tmp_path: Path
) -> None:
    # A Telegram "chat id" that is no number cannot be resolved: processing raises.
    accepted = await accept(engine, _event("upd-1", sender="not-a-chat", channel=Channel.TELEGRAM))
    worker = InboxWorker(engine, Settings())
    for _ in range(MAX_PROCESSING_ATTEMPTS):
        await worker.run_once()
    async with engine.connect() as conn:
        row = (
            (
                await conn.execute(
                    select(t.inbound_events).where(t.inbound_events.c.id == accepted.event_id)
                )
            )
            .mappings()
            .one()
        )
    assert row["status"] == "dead" and row["attempts"] == MAX_PROCESSING_ATTEMPTS
    assert row["last_error"] == "ValueError"
    assert await worker.run_once() == 0  # dead letters are not picked up again

    cfg = write_config(tmp_path, database_url)
    listed = json.loads(skolebro("inbox", "list", "--dead", "--config", str(cfg)).stdout)
    assert [e["id"] for e in listed] == [accepted.event_id]
    assert "not-a-chat" not in json.dumps(listed)  # no sender, no body in the listing
    out = skolebro("inbox", "retry", "--dead", "--config", str(cfg))
    assert out.returncode == 0 and out.stdout.startswith("1 inbound events queued again")
    assert await worker.run_once() == 1
