"""Prometheus metrics (SPEC section 5, `/metrics`): counters in-process, gauges from the store."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from bridge.store import tables as t

registry = CollectorRegistry()

inbound_total = Counter(
    "skolebro_inbound", "Inbound events accepted", ["channel"], registry=registry
)
outbound_total = Counter(
    "skolebro_outbound", "Outbound send results", ["channel", "status"], registry=registry
)
outbox_depth = Gauge("skolebro_outbox_depth", "Deliveries queued or sending", registry=registry)
dead_letters = Gauge(
    "skolebro_dead_letters", "Dead inbound events and deliveries", ["kind"], registry=registry
)
ack_seconds = Histogram(
    "skolebro_inbound_ack_seconds",
    "Time from a provider's request to our durable acknowledgement",
    ["channel"],
    registry=registry,
)
processing_seconds = Histogram(
    "skolebro_processing_seconds",
    "Time from an inbound event's arrival to its effects being stored",
    ["channel"],
    registry=registry,
)
delivery_seconds = Histogram(
    "skolebro_delivery_seconds",
    "Time from a delivery being queued to its provider accepting it",
    ["channel"],
    registry=registry,
)

circuit_state = Gauge(
    "skolebro_circuit_state",
    "Outbound circuit breaker per channel: 0 closed, 1 half-open, 2 open",
    ["channel"],
    registry=registry,
)
CIRCUIT_VALUES = {"closed": 0, "half-open": 1, "open": 2}
# The breakers' states in this process, for /healthz (bridge.outbox keeps them current).
circuits: dict[str, str] = {}


def set_circuit(channel: str, state: str) -> None:
    circuits[channel] = state
    circuit_state.labels(channel=channel).set(CIRCUIT_VALUES[state])


async def refresh_from_store(engine: AsyncEngine) -> None:
    """Set the gauges that are facts about the store rather than about this process."""
    d, e = t.deliveries, t.inbound_events
    async with engine.connect() as conn:
        depth = await conn.scalar(select(func.count()).where(d.c.status.in_(("queued", "sending"))))
        dead_deliveries = await conn.scalar(select(func.count()).where(d.c.status == "dead"))
        dead_events = await conn.scalar(select(func.count()).where(e.c.status == "dead"))
    outbox_depth.set(depth or 0)
    dead_letters.labels(kind="delivery").set(dead_deliveries or 0)
    dead_letters.labels(kind="inbound").set(dead_events or 0)


def render() -> bytes:
    return generate_latest(registry)
