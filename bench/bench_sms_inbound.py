"""Signed Twilio inbound webhooks on SQLite: the real bridge beside a bare floor.

Run: .venv/bin/python bench/bench_sms_inbound.py [--seconds N] [--rate 1000 [--rate 400]]

Two servers are measured in the same run, one after the other, each on a fresh SQLite
file (WAL, synchronous=NORMAL, through `bridge.store.db.create_engine`):

- floor: a bare aiohttp handler that reads the form, checks X-Twilio-Signature with the
  twilio SDK's RequestValidator, inserts one row (SQLAlchemy async + aiosqlite) and
  answers `<Response/>`;
- bridge: `bridge.app.Bridge` with `[sms] enabled`, a generated roster (`--guardians`
  guardians, one child each, school u-fjell and its SFO), its inbox worker turning events
  into absences, thread messages and replies, and its outbox worker sending the replies
  through the Twilio fake (which posts signed status callbacks back, as Twilio does).

For each server, a load generator in a separate process posts pre-signed, realistic
inbound forms (the fake's `inbound_form` + `signature`, a unique MessageSid each; one in
50 from a number not in the roster), in four phases:

- warmup: the throughput phase for one second;
- throughput: `--concurrency` keep-alive clients, closed loop, for `--seconds` -> 200s
  acknowledged per second;
- half: open loop at half the rate that server just acknowledged, for `--rate-seconds`
  -> latency when it is not overloaded;
- rate: open loop at `--rate` requests/s for `--rate-seconds` (sends go out on schedule
  whatever the answers) -> p50/p95/p99 acknowledgement latency; one such phase per
  `--rate` given (e.g. `--rate 200 --rate 400 --rate 1000`). Latency is measured from
  each request's scheduled send time, so a server that falls behind is not excused.

For the bridge, after each phase: events processed per second while the load ran, the
time from the end of the load until no inbound event is pending (the lag; at most
`--drain-limit` seconds), the processing rate in that time, and the replies the Twilio
fake took. Replies are paced by `[sms] max_per_second` (`--sms-rate`).

By default the server under test is pinned to CPU 0 and the load generator and the
Twilio fake to CPU 1 (`--no-pin` to let the scheduler place them). CPU seconds of the
server process per acknowledged request are printed too: unlike rates, they hardly move
when other work shares the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import functools
import multiprocessing
import os
import resource
import socket
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
from aiohttp import web
from sqlalchemy import Column, DateTime, Integer, MetaData, Table, Text, func, insert, select
from sqlalchemy import event as sa_event
from sqlalchemy.ext.asyncio import AsyncEngine
from twilio.request_validator import RequestValidator

from adapters.fakes.twilio import FakeTwilio
from bridge.store.db import create_engine

ACCOUNT = "AC" + "0123456789abcdef" * 2
TOKEN = "bench-twilio-token"
TOKEN_ENV = "BENCH_SMS_TWILIO_TOKEN"
SCHOOL_NUMBER = "+4759440000"
SMS_PATH = "/webhooks/twilio/sms"
TWIML_EMPTY = '<?xml version="1.0" encoding="UTF-8"?><Response/>'
FIRST_MOBILE = 4790000000  # guardian i texts from +47 9000 0000 + i
STRANGER_EVERY = 50  # one request in 50 comes from a number not in the roster
FIRST = ["Ola", "Kari", "Aisha", "Noah", "Emma", "Jakob", "Nora", "Filip", "Sara", "Mohammed"]
LAST = ["Nordmann", "Hansen", "Johansen", "Olsen", "Larsen", "Hassan", "Berg", "Vik", "Dahl"]
# Half absence reports, half messages to the school, as parents write them.
BODIES = [
    "{n} er syk i dag",
    "Hei! Kan {n} ta med kake til klassen på fredag?",
    "{n} har tannlege på mandag kl 10, går fra skolen kl 9.30",
    "Takk for beskjed!",
    "{n} er syk og blir hjemme i dag",
    "Hvor er gymtøyet til {n}? Det ble glemt i garderoben.",
    "{n} kommer ikke på SFO i dag",
    "Når er foreldremøtet for {n} sin klasse?",
]
ROSTER_HEADER = [
    "kind", "unit_id", "name", "unit_type", "email", "phone", "group_id", "student_id",
    "first_name", "last_name", "sfo_unit_id", "groups", "guardian_id", "mobile", "language",
    "channels", "students", "staff_id", "notify",
]  # fmt: skip


# -- shared helpers -----------------------------------------------------------------------


def pin(cpu: int | None) -> None:
    """Keep this process (and the threads it starts from now on) on one CPU."""
    if cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {cpu})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def percentile(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile of an ascending list (0.0 for an empty one)."""
    if not sorted_values:
        return 0.0
    rank = max(1, min(len(sorted_values), round(p / 100 * len(sorted_values) + 0.5)))
    return sorted_values[rank - 1]


def cpu_seconds() -> float:
    """CPU seconds this process (all its threads) has used so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def child_name(i: int) -> str:
    return FIRST[i % len(FIRST)]


def write_roster(path: Path, guardians: int) -> None:
    """One school with its SFO, `guardians` guardians with one child each (every 2nd in SFO)."""
    rows: list[dict[str, str]] = [
        {"kind": "unit", "unit_id": "u-fjell", "name": "Fjellsiden skole", "unit_type": "school",
         "email": "fjellsiden.skole@example.kommune.no", "phone": "55560000"},
        {"kind": "unit", "unit_id": "u-fjell-sfo", "name": "Fjellsiden SFO", "unit_type": "sfo",
         "email": "fjellsiden.sfo@example.kommune.no", "phone": "55560001"},
    ]  # fmt: skip
    for grade in range(1, 8):
        for letter in "abc":
            rows.append({"kind": "group", "unit_id": "u-fjell", "group_id": f"g-{grade}{letter}",
                         "name": f"{grade}{letter.upper()}"})  # fmt: skip
            rows.append({"kind": "staff", "unit_id": "u-fjell", "staff_id": f"st-{grade}{letter}",
                         "first_name": "Lærer", "last_name": f"{grade}{letter.upper()}",
                         "email": f"laerer.{grade}{letter}@example.kommune.no",
                         "groups": f"g-{grade}{letter}", "notify": "digest"})  # fmt: skip
    rows.append({"kind": "staff", "unit_id": "u-fjell-sfo", "staff_id": "st-sfo",
                 "first_name": "Siri", "last_name": "Dahl", "notify": "both",
                 "email": "sfo.leder@example.kommune.no"})  # fmt: skip
    for i in range(guardians):
        group = f"g-{i % 7 + 1}{'abc'[i % 3]}"
        rows.append({"kind": "student", "unit_id": "u-fjell", "student_id": f"s-{i}",
                     "first_name": child_name(i), "last_name": LAST[i % len(LAST)],
                     "sfo_unit_id": "u-fjell-sfo" if i % 2 == 0 else "",
                     "groups": group})  # fmt: skip
        rows.append({"kind": "guardian", "guardian_id": f"gd-{i}", "first_name": "Forelder",
                     "last_name": LAST[i % len(LAST)], "mobile": f"+{FIRST_MOBILE + i}",
                     "email": f"forelder{i}@example.no", "language": "nb",
                     "channels": "sms;email", "students": f"s-{i}"})  # fmt: skip
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=ROSTER_HEADER)
        writer.writeheader()
        writer.writerows(rows)


# -- load generator (its own process) -----------------------------------------------------


@dataclass
class Request:
    body: bytes
    signature: str


def build_requests(
    fake: FakeTwilio, url: str, tag: int, count: int, guardians: int
) -> list[Request]:
    """`count` signed inbound forms with MessageSids unique to this phase (`tag`)."""
    out: list[Request] = []
    for i in range(count):
        g = (i * 7919 + tag * 104729) % guardians  # spread over the roster
        sender = f"+{FIRST_MOBILE + g}" if i % STRANGER_EVERY else f"+4741{i % 1000000:06d}"
        body = BODIES[(i + tag) % len(BODIES)].format(n=child_name(g))
        form = fake.inbound_form(sender, SCHOOL_NUMBER, body, sid=f"SM{tag:02x}{i:030x}")
        out.append(Request(urlencode(form).encode(), fake.signature(url, form)))
    return out


def _headers(req: Request) -> dict[str, str]:
    return {
        "Content-Type": "application/x-www-form-urlencoded",
        "User-Agent": "TwilioProxy/1.1",
        "X-Twilio-Signature": req.signature,
    }


async def closed_loop(
    url: str, requests: list[Request], seconds: float, concurrency: int
) -> dict[str, Any]:
    """`concurrency` clients posting back to back for `seconds`."""
    statuses: Counter[int] = Counter()
    latencies: list[float] = []
    next_index = 0
    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        loop = asyncio.get_running_loop()
        started_wall = time.time()
        started = loop.time()
        deadline = started + seconds

        async def worker() -> None:
            nonlocal next_index
            while loop.time() < deadline and next_index < len(requests):
                req = requests[next_index]
                next_index += 1
                sent = loop.time()
                try:
                    async with session.post(url, data=req.body, headers=_headers(req)) as resp:
                        await resp.read()
                        status = resp.status
                except (aiohttp.ClientError, TimeoutError):
                    status = 0
                statuses[status] += 1
                latencies.append(loop.time() - sent)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = loop.time() - started
    latencies.sort()
    return {
        "statuses": dict(statuses),
        "ok": statuses[200],
        "elapsed": elapsed,
        "start_wall": started_wall,
        "end_wall": started_wall + elapsed,
        "exhausted": next_index >= len(requests),
        "p50": percentile(latencies, 50),
        "p99": percentile(latencies, 99),
    }


async def open_loop(url: str, requests: list[Request], rate: float) -> dict[str, Any]:
    """Send request i at start + i/rate, whatever the earlier ones are doing."""
    n = len(requests)
    results: list[tuple[float, float, float, int]] = []
    connector = aiohttp.TCPConnector(limit=2048)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        loop = asyncio.get_running_loop()

        async def one(req: Request, scheduled: float) -> None:
            sent = loop.time()
            try:
                async with session.post(url, data=req.body, headers=_headers(req)) as resp:
                    await resp.read()
                    status = resp.status
            except (aiohttp.ClientError, TimeoutError):
                status = 0
            results.append((scheduled, sent, loop.time(), status))

        async def touch() -> None:
            async with session.get(url.rsplit("/", 3)[0] + "/nowhere") as resp:
                await resp.read()

        # Open some connections first, so the measured window does not pay for them.
        await asyncio.gather(*(touch() for _ in range(64)))
        tasks: list[asyncio.Task[None]] = []
        started_wall = time.time()
        start = loop.time() + 0.01
        i = 0
        while i < n:
            now = loop.time()
            while i < n and start + i / rate <= now:
                tasks.append(asyncio.create_task(one(requests[i], start + i / rate)))
                i += 1
            if i < n:
                await asyncio.sleep(max(0.0, start + i / rate - loop.time()))
        send_end = loop.time()
        await asyncio.gather(*tasks)
        finished = loop.time()
    ok = [r for r in results if r[3] == 200]
    from_schedule = sorted(done - scheduled for scheduled, _, done, _ in ok)
    from_send = sorted(done - sent for _, sent, done, _ in ok)
    send_lag = sorted(sent - scheduled for scheduled, sent, _, _ in results)
    statuses = Counter(r[3] for r in results)
    return {
        "statuses": dict(statuses),
        "ok": len(ok),
        "offered_rate": n / max(send_end - start, 1e-9),
        "elapsed": finished - start,
        "start_wall": started_wall,
        "end_wall": started_wall + (finished - start),
        "p50": percentile(from_schedule, 50),
        "p95": percentile(from_schedule, 95),
        "p99": percentile(from_schedule, 99),
        "max": from_schedule[-1] if from_schedule else 0.0,
        "p99_from_send": percentile(from_send, 99),
        "send_lag_p99": percentile(send_lag, 99),
    }


def client_main(conn: Connection, cpu: int | None, guardians: int) -> None:
    pin(cpu)
    asyncio.run(_client_loop(conn, guardians))


async def _client_loop(conn: Connection, guardians: int) -> None:
    fake = FakeTwilio(ACCOUNT, TOKEN)  # never started: only its forms and signatures
    requests: list[Request] = []
    while True:
        cmd: dict[str, Any] = await asyncio.to_thread(conn.recv)
        if cmd["op"] == "quit":
            return
        if cmd["op"] == "prepare":  # untimed: build and sign the forms of the next phase
            requests = build_requests(fake, cmd["url"], cmd["tag"], cmd["count"], guardians)
            conn.send({"ready": len(requests)})
            continue
        cpu0 = cpu_seconds()
        if cmd["op"] == "closed":
            result = await closed_loop(cmd["url"], requests, cmd["seconds"], cmd["concurrency"])
        else:
            result = await open_loop(cmd["url"], requests, cmd["rate"])
        result["client_cpu"] = cpu_seconds() - cpu0
        requests = []
        conn.send(result)


class LoadClient:
    """The server side's handle on the load-generator process."""

    def __init__(self, cpu: int | None, guardians: int) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=client_main, args=(child, cpu, guardians), daemon=True)
        self.process.start()

    async def run(self, **cmd: Any) -> dict[str, Any]:
        self.conn.send(cmd)
        result: dict[str, Any] = await asyncio.to_thread(self.conn.recv)
        return result

    def close(self) -> None:
        self.conn.send({"op": "quit"})
        self.process.join(10)


# -- the Twilio fake (its own process) ----------------------------------------------------


def twilio_main(conn: Connection, cpu: int | None) -> None:
    pin(cpu)
    asyncio.run(_twilio_loop(conn))


async def _twilio_loop(conn: Connection) -> None:
    fake = FakeTwilio(ACCOUNT, TOKEN, phone_number=SCHOOL_NUMBER)
    await fake.start()
    conn.send(fake.base_url)
    while True:
        cmd = await asyncio.to_thread(conn.recv)
        if cmd == "count":
            conn.send(
                {
                    "sent": len(fake.sent),
                    "callbacks": len(fake.callbacks),
                    "callbacks_ok": sum(1 for c in fake.callbacks if c.status == 200),
                }
            )
        else:
            break
    await fake.stop()
    conn.send("stopped")


class TwilioProcess:
    def __init__(self, cpu: int | None) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=twilio_main, args=(child, cpu), daemon=True)
        self.process.start()
        self.base_url: str = self.conn.recv()

    async def counts(self) -> dict[str, int]:
        self.conn.send("count")
        result: dict[str, int] = await asyncio.to_thread(self.conn.recv)
        return result

    def close(self) -> None:
        self.conn.send("stop")
        with contextlib.suppress(EOFError):
            self.conn.recv()
        self.process.join(10)


# -- phases -------------------------------------------------------------------------------


@dataclass
class Phase:
    name: str
    client: dict[str, Any]
    server_cpu: float  # CPU seconds of the server process while the phase ran
    rate: float | None = None  # offered requests/s for the open-loop phases
    processing: dict[str, Any] = field(default_factory=dict)  # bridge only


@dataclass
class TargetResult:
    name: str
    phases: dict[str, Phase] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


# Phases in the order they run; tags keep each phase's MessageSids apart. Then one
# open-loop phase per offered rate (`--rate`, several allowed), named "rate <r>".
PHASES = ("warmup", "throughput", "half")


def phases(args: argparse.Namespace) -> list[str]:
    return [*PHASES, *(rate_phase(r) for r in args.rate)]


def rate_phase(rate: float) -> str:
    return f"rate {rate:g}"


WARM_REQUESTS = 60  # per fresh bridge, before its measured phase


async def drive(
    client: LoadClient, url: str, args: argparse.Namespace, result: TargetResult, kind: str
) -> Phase:
    """Prepare the phase's requests (untimed), then run it; server CPU covers the run only."""
    rate: float | None = None
    if kind in ("warmup", "throughput"):
        seconds = 1.0 if kind == "warmup" else args.seconds
        count = int(args.max_rate_guess * seconds)
        run = {"op": "closed", "url": url, "seconds": seconds, "concurrency": args.concurrency}
    else:
        if kind.startswith("rate "):
            rate = float(kind.split()[1])
        else:  # half of what this server acknowledged per second in the throughput phase
            c = result.phases["throughput"].client
            rate = max(1.0, round(c["ok"] / c["elapsed"] / 2))
        count = max(1, int(rate * args.rate_seconds))
        run = {"op": "open", "url": url, "rate": rate}
    await client.run(op="prepare", url=url, tag=phases(args).index(kind), count=count)
    cpu0 = cpu_seconds()
    outcome = await client.run(**run)
    return Phase(kind, outcome, cpu_seconds() - cpu0, rate)


async def run_plain(
    client: LoadClient, args: argparse.Namespace, tmp: Path, name: str
) -> TargetResult:
    """The floor; or with name "null", a handler that only reads the form and answers,
    to show what the load generator itself can do on this machine."""
    engine = create_engine(f"sqlite+aiosqlite:///{tmp / f'{name}.db'}")
    meta = MetaData()
    rows = Table(
        "inbound",
        meta,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("message_sid", Text, nullable=False),
        Column("sender", Text, nullable=False),
        Column("body", Text, nullable=False),
        Column("received_at", DateTime(timezone=True), nullable=False),
    )
    async with engine.begin() as conn:
        await conn.run_sync(meta.create_all)
    validator = RequestValidator(TOKEN)
    port = free_port()
    url = f"http://127.0.0.1:{port}{SMS_PATH}"

    async def null(request: web.Request) -> web.Response:
        await request.post()
        return web.Response(text=TWIML_EMPTY, content_type="text/xml", charset="utf-8")

    async def inbound(request: web.Request) -> web.Response:
        form = await request.post()
        if not validator.validate(url, form, request.headers.get("X-Twilio-Signature", "")):
            return web.Response(status=403, text="bad signature")
        async with engine.begin() as conn:
            await conn.execute(
                insert(rows).values(
                    message_sid=str(form["MessageSid"]),
                    sender=str(form["From"]),
                    body=str(form["Body"]),
                    received_at=datetime.now(UTC),
                )
            )
        return web.Response(text=TWIML_EMPTY, content_type="text/xml", charset="utf-8")

    app = web.Application()
    app.router.add_post(SMS_PATH, null if name == "null" else inbound)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    result = TargetResult(name)
    try:
        for kind in phases(args):
            result.phases[kind] = await drive(client, url, args, result, kind)
            print(f"  {name} {kind}: {summary(result.phases[kind])}", flush=True)
        async with engine.connect() as conn:
            result.extra["rows"] = await conn.scalar(select(func.count()).select_from(rows))
    finally:
        await runner.cleanup()
        await engine.dispose()
    return result


async def wait_processed(
    engine: AsyncEngine, tag: int, end_wall: float, limit: float
) -> dict[str, Any]:
    """After a phase: how many of its events were processed while the load ran, and how
    long until no inbound event at all was pending (at most `limit` seconds)."""
    from bridge.store import tables as t

    e = t.inbound_events
    mine = e.c.external_id.like(f"SM{tag:02x}%")
    drained_at: float | None = None
    deadline = time.monotonic() + limit
    while True:
        async with engine.connect() as conn:
            pending = await conn.scalar(
                select(func.count()).select_from(e).where(e.c.status == "pending")
            )
        if not pending:
            drained_at = time.time()
            break
        if time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    async with engine.connect() as conn:
        found = await conn.execute(
            select(e.c.status, func.count()).where(mine).group_by(e.c.status)
        )
        counts: dict[str, int] = {status: n for status, n in found}
        during = await conn.scalar(
            select(func.count())
            .select_from(e)
            .where(mine, e.c.processed_at <= datetime.fromtimestamp(end_wall, UTC))
        )
    processed = counts.get("processed", 0)
    after = processed - (during or 0)
    waited = (drained_at or time.time()) - end_wall
    return {
        "accepted": sum(counts.values()),
        "statuses": counts,
        "processed_during_load": during or 0,
        "pending_left": counts.get("pending", 0),
        "lag": (drained_at - end_wall) if drained_at is not None else None,
        # With no webhook load: the inbox (and outbox) working through the backlog.
        "rate_after_load": after / waited if after and waited > 0 else None,
    }


@contextlib.asynccontextmanager
async def fresh_bridge(
    args: argparse.Namespace, tmp: Path, twilio: TwilioProcess, name: str
) -> AsyncIterator[Any]:
    """A started Bridge on a new migrated SQLite file with the generated roster imported."""
    from bridge.app import Bridge
    from bridge.config import parse_config
    from bridge.roster import import_roster
    from bridge.store.migrate import upgrade

    database_url = f"sqlite+aiosqlite:///{tmp / f'bridge-{name}.db'}"
    engine = create_engine(database_url)
    await upgrade(engine)
    await engine.dispose()
    roster = tmp / "roster.csv"
    if not roster.exists():
        write_roster(roster, args.guardians)
    port = free_port()
    public = f"http://127.0.0.1:{port}"
    os.environ[TOKEN_ENV] = TOKEN
    settings = parse_config(
        f"""
[bridge]
public_url = "{public}"
database_url = "{database_url}"
[http]
port = {port}
[sms]
enabled = true
account_sid = "{ACCOUNT}"
auth_token_env = "{TOKEN_ENV}"
from_number = "{SCHOOL_NUMBER}"
api_base_url = "{twilio.base_url}"
max_per_second = {args.sms_rate}
""",
        base_dir=tmp,
    )
    bridge = Bridge(settings)
    imported = await import_roster(bridge.engine, roster)
    if imported.rejected:
        raise RuntimeError(f"roster rows rejected: {imported.rejected[:3]}")
    await bridge.start()
    try:
        await asyncio.wait_for(bridge.caught_up.wait(), 10)
        yield bridge
    finally:
        await bridge.stop()


async def run_bridge(
    client: LoadClient, args: argparse.Namespace, tmp: Path, cpu: int | None
) -> TargetResult:
    """Each measured phase on its own fresh bridge, so no phase inherits another's backlog.

    Each instance is warmed first with a few requests (SQLAlchemy's statement caches are
    per engine), which are processed before the measured phase starts.
    """
    from bridge.store import tables as t

    twilio = TwilioProcess(cpu)
    result = TargetResult("bridge")
    totals: Counter[str] = Counter()
    try:
        for kind in phases(args)[1:]:
            async with fresh_bridge(args, tmp, twilio, kind) as bridge:
                url = bridge.settings.bridge.public_url + SMS_PATH
                tag = 0x40 + phases(args).index(kind)
                await client.run(op="prepare", url=url, tag=tag, count=WARM_REQUESTS)
                await client.run(op="closed", url=url, seconds=30.0, concurrency=4)
                await wait_processed(bridge.engine, tag, time.time(), 30.0)
                sent_before = (await twilio.counts())["sent"]
                phase = await drive(client, url, args, result, kind)
                phase.processing = await wait_processed(
                    bridge.engine,
                    phases(args).index(kind),
                    phase.client["end_wall"],
                    args.drain_limit,
                )
                phase.processing["replies"] = (await twilio.counts())["sent"] - sent_before
                result.phases[kind] = phase
                print(f"  bridge {kind}: {summary(phase)}", flush=True)
                async with bridge.engine.connect() as conn:
                    for key, table in (
                        ("absences", t.absences),
                        ("thread messages", t.messages),
                        ("sms deliveries", t.deliveries),
                    ):
                        totals[key] += await conn.scalar(select(func.count()).select_from(table))
        result.extra.update(totals)
        result.extra["replies the Twilio fake took"] = (await twilio.counts())["sent"]
    finally:
        twilio.close()
    return result


async def run_processing(args: argparse.Namespace, tmp: Path) -> TargetResult:
    """The inbox alone, no HTTP: `--events` accepted SMS (the same mix as the load
    generator's), then `InboxWorker.run_once` until none is pending, timed. Twice, each on
    a fresh store: one event per transaction (`batch_events=1`, the shape processing had
    before batches: the baseline) and the worker's default batches."""
    from bridge import inbox
    from bridge.config import parse_config
    from bridge.domain import Channel, InboundEvent
    from bridge.roster import import_roster
    from bridge.store.migrate import upgrade

    result = TargetResult("processing")
    roster = tmp / "roster.csv"
    if not roster.exists():
        write_roster(roster, args.guardians)
    for name, batch in (
        ("one event per transaction", 1),
        ("batches", getattr(inbox, "BATCH_EVENTS", 1)),
    ):
        database_url = f"sqlite+aiosqlite:///{tmp / f'processing-{name[0]}.db'}"
        engine = create_engine(database_url)
        await upgrade(engine)
        await import_roster(engine, roster)
        os.environ[TOKEN_ENV] = TOKEN
        settings = parse_config(
            f"""
[bridge]
public_url = "http://127.0.0.1:9"
database_url = "{database_url}"
[sms]
enabled = true
account_sid = "{ACCOUNT}"
auth_token_env = "{TOKEN_ENV}"
from_number = "{SCHOOL_NUMBER}"
""",
            base_dir=tmp,
        )
        for i in range(args.events):
            g = (i * 7919) % args.guardians
            sender = f"+{FIRST_MOBILE + g}" if i % STRANGER_EVERY else f"+4741{i % 1000000:06d}"
            text = BODIES[i % len(BODIES)].format(n=child_name(g))
            await inbox.accept(
                engine,
                InboundEvent(
                    channel=Channel.SMS,
                    external_id=f"SMp{i}",
                    sender=sender,
                    text=text,
                    received_at=datetime.now(UTC),
                    payload={"From": sender, "Body": text},
                ),
            )
        try:
            worker = inbox.InboxWorker(engine, settings, batch_events=batch)
        except TypeError:  # a worker from before batches: one event per transaction
            worker = inbox.InboxWorker(engine, settings)
        statements = [0]
        sa_event.listen(
            engine.sync_engine,
            "before_cursor_execute",
            functools.partial(_count_statement, statements),
        )
        cpu0, started = cpu_seconds(), time.perf_counter()
        handled = 0
        while n := await worker.run_once():
            handled += n
        elapsed, cpu = time.perf_counter() - started, cpu_seconds() - cpu0
        from bridge.store import tables as t

        async with engine.connect() as conn:
            found = await conn.execute(
                select(t.inbound_events.c.status, func.count()).group_by(t.inbound_events.c.status)
            )
            statuses = {status: int(k) for status, k in found}
        await engine.dispose()
        result.extra[name] = {
            "events": handled,
            "per_second": handled / elapsed,
            "cpu_ms": cpu / max(handled, 1) * 1000,
            "statements": statements[0] / max(handled, 1),
            "statuses": statuses,
        }
        print(
            f"  processing, {name}: {handled} events in {elapsed:.2f}s,"
            f" {handled / elapsed:.0f}/s, {cpu / max(handled, 1) * 1000:.2f} ms CPU and"
            f" {statements[0] / max(handled, 1):.1f} statements per event; {statuses}",
            flush=True,
        )
    return result


def _count_statement(counter: list[int], *_: Any) -> None:
    counter[0] += 1


def processing_rows(result: TargetResult) -> Iterator[str]:
    base, batched = result.extra["one event per transaction"], result.extra["batches"]
    yield "| inbox alone (no HTTP) | one event per transaction | batches | batches/one |"
    yield "| --- | ---: | ---: | ---: |"
    yield (
        f"| **events processed/s** | {base['per_second']:.0f} | {batched['per_second']:.0f} |"
        f" {batched['per_second'] / base['per_second']:.2f} |"
    )
    yield f"| CPU per event (ms) | {base['cpu_ms']:.2f} | {batched['cpu_ms']:.2f} | |"
    yield f"| SQL statements per event | {base['statements']:.1f} | {batched['statements']:.1f} | |"


# -- report -------------------------------------------------------------------------------


def ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.1f}"


def summary(phase: Phase) -> str:
    c = phase.client
    text = f"{c['ok']} ok of {sum(c['statuses'].values())} in {c['elapsed']:.2f}s"
    if phase.rate is not None:
        text += f" (offered {phase.rate:g}/s)"
    bad = {k: v for k, v in c["statuses"].items() if k != 200}
    if bad:
        text += f" (other answers: {bad})"
    if c.get("exhausted"):
        text += " (RAN OUT OF PREPARED REQUESTS: raise --max-rate-guess)"
    text += f", {c['ok'] / c['elapsed']:.0f}/s, p50 {ms(c['p50'])} ms, p99 {ms(c['p99'])} ms"
    text += f", server CPU {phase.server_cpu:.1f}s, client CPU {c['client_cpu']:.1f}s"
    p = phase.processing
    if p:
        lag = "not drained" if p["lag"] is None else f"{p['lag']:.1f}s"
        text += (
            f"; processed {p['processed_during_load']}/{p['accepted']} while loaded,"
            f" lag {lag}, replies {p['replies']}"
        )
        if p["statuses"].get("dead"):
            text += f", DEAD {p['statuses']['dead']}"
    return text


def rows_for(results: dict[str, TargetResult], args: argparse.Namespace) -> Iterator[str]:
    """The results table (Markdown)."""
    names = [n for n in ("null", "floor", "bridge") if n in results]
    ratio = "floor" in results and "bridge" in results

    def row(label: str, cell: Callable[[TargetResult], str], last: str = "") -> str:
        cells = " | ".join(cell(results[n]) for n in names)
        return f"| {label} | {cells} |" + (f" {last} |" if ratio else "")

    def acked(r: TargetResult, kind: str) -> float:
        c = r.phases[kind].client
        return float(c["ok"]) / c["elapsed"]

    def pair(kind: str, a: str, b: str) -> Callable[[TargetResult], str]:
        return lambda r: f"{ms(r.phases[kind].client[a])} / {ms(r.phases[kind].client[b])}"

    def offered(kind: str) -> Callable[[TargetResult], str]:
        return lambda r: f"{r.phases[kind].client['offered_rate']:.0f} / {acked(r, kind):.0f}"

    def thr(r: TargetResult) -> Phase:
        return r.phases["throughput"]

    header = " | ".join(names) + (" | bridge/floor" if ratio else "")
    yield f"| | {header} |"
    yield "| --- |" + " ---: |" * (len(names) + ratio)
    last = ""
    if ratio:
        last = (
            f"{acked(results['bridge'], 'throughput') / acked(results['floor'], 'throughput'):.2f}"
        )
    yield row(
        f"**acknowledged/s**, {args.concurrency} clients, {args.seconds:g} s",
        lambda r: f"{acked(r, 'throughput'):.0f}",
        last,
    )
    yield row("ack latency p50 / p99 at saturation (ms)", pair("throughput", "p50", "p99"))
    yield row(
        "server CPU per acknowledged request (ms)",
        lambda r: f"{thr(r).server_cpu / max(thr(r).client['ok'], 1) * 1000:.2f}",
    )
    yield row(
        "load generator CPU busy",
        lambda r: f"{thr(r).client['client_cpu'] / thr(r).client['elapsed']:.0%}",
    )
    for kind in ["half", *(rate_phase(r) for r in args.rate)]:
        label = f"{kind.split()[1]}/s" if kind != "half" else "half its throughput"
        yield row(
            f"offered {label} for {args.rate_seconds:g} s: offered / acknowledged per s",
            offered(kind),
        )
        yield row(f"offered {label}: **p50 / p99** ack latency (ms)", pair(kind, "p50", "p99"))
        yield row(f"offered {label}: p95 / max (ms)", pair(kind, "p95", "max"))
    if "bridge" not in results:
        return
    blank = " |" * (len(names) - 1)
    for kind in ["throughput", "half", *(rate_phase(r) for r in args.rate)]:
        phase = results["bridge"].phases[kind]
        p = phase.processing
        name = {"throughput": "throughput", "half": "half-throughput"}.get(kind) or (
            f"{kind.split()[1]}/s"
        )
        during = p["processed_during_load"] / phase.client["elapsed"]
        lag = "not drained" if p["lag"] is None else f"{p['lag']:.1f} s"
        after = "-" if p["rate_after_load"] is None else f"{p['rate_after_load']:.0f}"
        yield (
            f"| bridge processing, {name} phase: events/s while loaded; after load |{blank}"
            f" **{during:.0f}**; {after} |"
        )
        yield (
            f"| bridge processing, {name} phase: lag after load (still pending);"
            f" replies sent |{blank} {lag} ({p['pending_left']}); {p['replies']} |"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="throughput phase length")
    parser.add_argument(
        "--rate",
        type=float,
        action="append",
        help="offered requests/s of an open-loop phase; repeat for several (default 1000)",
    )
    parser.add_argument(
        "--rate-seconds", type=float, default=2.0, help="length of each offered-load phase"
    )
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--guardians", type=int, default=2000)
    parser.add_argument(
        "--sms-rate", type=float, default=100.0, help="[sms] max_per_second (reply sends/s)"
    )
    parser.add_argument(
        "--drain-limit", type=float, default=10.0, help="longest wait for processing to finish"
    )
    parser.add_argument(
        "--max-rate-guess", type=float, default=7000.0, help="requests/s to prepare for"
    )
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to CPUs")
    parser.add_argument(
        "--only",
        choices=["null", "floor", "bridge", "processing"],
        action="append",
        help="measure only these",
    )
    parser.add_argument(
        "--events", type=int, default=3000, help="events for the inbox-alone measurement"
    )
    args = parser.parse_args()
    args.rate = args.rate or [1000.0]
    targets = args.only or ["null", "floor", "bridge", "processing"]

    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    server_cpu = client_cpu = None
    if not args.no_pin and len(cpus) >= 2:
        server_cpu, client_cpu = cpus[0], cpus[1]
    pin(server_cpu)
    if server_cpu is not None:
        where = f"server on CPU {server_cpu}, load generator and Twilio fake on CPU {client_cpu}"
    else:
        where = "not pinned"
    print(f"{os.cpu_count()} CPUs; {where}; load average {os.getloadavg()[0]:.2f}", flush=True)
    started = time.monotonic()
    results: dict[str, TargetResult] = {}
    client = LoadClient(client_cpu, args.guardians)
    try:
        with tempfile.TemporaryDirectory(prefix="bench-sms-") as tmp:
            for name in targets:
                print(f"{name}: {TARGETS[name]}", flush=True)
                if name == "bridge":
                    results[name] = asyncio.run(run_bridge(client, args, Path(tmp), client_cpu))
                elif name == "processing":
                    results[name] = asyncio.run(run_processing(args, Path(tmp)))
                else:
                    results[name] = asyncio.run(run_plain(client, args, Path(tmp), name))
    finally:
        client.close()
    print()
    plain = {k: v for k, v in results.items() if k != "processing"}
    if plain:
        for line in rows_for(plain, args):
            print(line)
    if "processing" in results:
        print()
        for line in processing_rows(results["processing"]):
            print(line)
    if "bridge" in results:
        print()
        print(
            "bridge at the end:", ", ".join(f"{k} {v}" for k, v in results["bridge"].extra.items())
        )
    print(
        f"total {time.monotonic() - started:.0f} s; load average {os.getloadavg()[0]:.2f}",
        flush=True,
    )
    return 0


TARGETS = {
    "null": "reads the form and answers; no signature check, no store (load-generator check)",
    "floor": "bare aiohttp handler: RequestValidator + one INSERT per request",
    "bridge": "Bridge with [sms] enabled, inbox and outbox workers, replies via the Twilio fake",
    "processing": "the inbox worker alone on accepted events: one per transaction, then batches",
}


if __name__ == "__main__":
    sys.exit(main())
