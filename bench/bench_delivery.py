"""Delivery engine: fan an announcement out to 100,000 guardians, then dispatch deliveries.

Run: .venv/bin/python bench/bench_delivery.py [--guardians 100000] [--dispatch 5000]
     [--slow-dispatch 2000] [--pg-guardians 20000 | --no-postgres] [--profile]
     [--enqueue-only [--channels email]]

Each figure is printed beside a baseline measured in the same run, with their ratio:

1. Enqueue (SQLite): `create_announcement` to a unit of N guardians (N deliveries; one
   INSERT ... SELECT in the database), against a raw stdlib `sqlite3` `executemany` of the
   very rows it wrote (all 22 columns, as stored) into an empty copy of the deliveries table
   (the same DDL: columns, check constraints, foreign keys and every index) in the same
   database file, with the engine's pragmas, in one transaction. For scale, the same rows
   through `exec_driver_sql` (aiosqlite's executemany) on the bridge's engine. The roster
   import before it is timed separately and is not part of any figure.
2. Dispatch against zero latency: `OutboxWorker.run()` (its lanes of rounds) over `--dispatch`
   deliveries of that queue, (a) with an in-process null sender (SENT at once: the
   engine's own ceiling, and the baseline), (b) with the real `TwilioSender` against
   `FakeTwilio` in a subprocess (status callbacks off), so that the fake's CPU is not
   counted as the bridge's; on a 2-core machine they still share the cores. For scale,
   `TwilioSender.send` alone against the fake, with no engine and no store.
3. 50 ms provider latency over `--slow-dispatch` deliveries: (c) the null sender sleeping
   50 ms, (d) the fake with `delay_seconds = 0.05`; the bound is concurrency / latency
   (32 / 0.05 = 640/s), and achieved/bound is printed.
4. PostgreSQL (if a server answers at 127.0.0.1:5432): the enqueue and the dispatch
   figures on a fresh database (created and dropped here) with a smaller roster
   (`--pg-guardians`), so its queue is smaller than SQLite's.

Each dispatch line shows the time per claim (`OutboxWorker.claim`, wrapped here), and
the CPU of this process and of the fake's. `--profile` runs the enqueue and dispatches
(a) and (b) under cProfile and prints the top functions by own time (the main thread
only: SQLite works in aiosqlite's thread).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import csv
import dataclasses
import io
import os
import pstats
import resource
import signal
import sqlite3
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import twilio.rest.api.v2010.account.message  # noqa: F401  (see below)
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from adapters.fakes.twilio import FakeTwilio
from adapters.sms_twilio import TwilioSender
from bridge import announcements
from bridge.announcements import create_announcement
from bridge.config import Settings, parse_config
from bridge.domain import Channel, Outgoing, SendOutcome, SendResult
from bridge.outbox import OutboxWorker
from bridge.roster import import_roster
from bridge.roster.csv_rows import COLUMNS
from bridge.store import tables as t
from bridge.store.db import create_engine
from bridge.store.migrate import upgrade

# The twilio SDK imports its Messages API on the first send; it is imported above so that
# this one-off cost (a few hundred ms) is not counted in the first TwilioSender figure.

ACCOUNT = "AC" + "0123456789abcdef" * 2
TOKEN = "bench-delivery-token"
TOKEN_ENV = "BENCH_DELIVERY_TWILIO_TOKEN"
UNIT = "u-bench"
TEXT = "Foreldremøte torsdag kl. 18 i gymsalen. Velkommen!"
LATENCY = 0.05
CONCURRENCY = 32
BATCH = 200
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
T = TypeVar("T")
ROOT = Path(__file__).resolve().parent.parent


def write_roster(path: Path, n: int, channels: str = "sms") -> Path:
    """One school (+ SFO) with 70 groups and n students, each with one guardian.

    Guardian i has mobile +47 9000 0000 + i (valid Norwegian mobiles up to 10 million),
    an e-mail address, and channels `sms` only (or `channels`), so the announcement makes
    one SMS each (or one e-mail, with its reply token).
    """
    groups = [f"g-{grade}{letter}" for grade in range(1, 8) for letter in "ABCDEFGHIJ"]
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS, restval="")
        w.writeheader()
        w.writerow({"kind": "unit", "unit_id": UNIT, "name": "Benkvik skole",
                    "unit_type": "school", "email": "benkvik@example.kommune.no",
                    "phone": "55560000"})  # fmt: skip
        w.writerow({"kind": "unit", "unit_id": f"{UNIT}-sfo", "name": "Benkvik SFO",
                    "unit_type": "sfo", "email": "benkvik.sfo@example.kommune.no"})  # fmt: skip
        for g in groups:
            w.writerow({"kind": "group", "unit_id": UNIT, "group_id": g, "name": g[2:]})
        for i in range(n):
            w.writerow({"kind": "student", "unit_id": UNIT, "student_id": f"s-{i}",
                        "first_name": f"Barn{i}", "last_name": "Test",
                        "groups": groups[i % len(groups)]})  # fmt: skip
            w.writerow(
                {
                    "kind": "guardian",
                    "guardian_id": f"gd-{i}",
                    "first_name": f"Foresatt{i}",
                    "last_name": "Test",
                    "mobile": f"+47{90000000 + i}",
                    "email": f"g{i}@example.no",
                    "language": "nb",
                    "channels": channels,
                    "students": f"s-{i}",
                }
            )
    return path


def make_settings(database_url: str, api_base_url: str = "http://127.0.0.1:9") -> Settings:
    return parse_config(
        f"""
[bridge]
database_url = "{database_url}"
public_url = "http://127.0.0.1:9"
[sms]
enabled = true
account_sid = "{ACCOUNT}"
auth_token_env = "{TOKEN_ENV}"
from_number = "+4759440000"
api_base_url = "{api_base_url}"
max_per_second = 1000000
[delivery]
quiet_hours = ""
"""
    )


def with_api(settings: Settings, api_base_url: str) -> Settings:
    return dataclasses.replace(
        settings, sms=dataclasses.replace(settings.sms, api_base_url=api_base_url)
    )


@dataclasses.dataclass
class Took:
    wall: float = 0.0
    cpu: float = 0.0  # this process, all threads (aiosqlite's included)


@contextlib.contextmanager
def stopwatch() -> Iterator[Took]:
    took = Took()
    cpu0, t0 = time.process_time(), time.perf_counter()
    try:
        yield took
    finally:
        took.wall, took.cpu = time.perf_counter() - t0, time.process_time() - cpu0


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def rate(n: int, seconds: float) -> str:
    return f"{n / seconds:,.0f}/s" if seconds > 0 else "-"


async def profiled(enabled: bool, label: str, coro: Awaitable[T]) -> T:
    """Await `coro`, under cProfile when enabled; print the top functions by own time."""
    if not enabled:
        return await coro
    prof = cProfile.Profile()
    prof.enable()
    try:
        return await coro
    finally:
        prof.disable()
        out = io.StringIO()
        stats = pstats.Stats(prof, stream=out)
        stats.sort_stats("tottime").print_stats(18)
        print(f"\n--- cProfile: {label} (by own time) ---")
        lines = out.getvalue().splitlines()
        start = next((i for i, line in enumerate(lines) if "ncalls" in line), 0)
        print("\n".join(lines[start:]))


# --- enqueue ---------------------------------------------------------------------------


def recreate_copy(db: Path, *, drop_only: bool = False) -> None:
    """(Re)create `deliveries_copy`: the deliveries table's DDL and indexes, renamed.

    Dropped with foreign keys off: `fallback_of` references the table itself and has no
    index, so with them on SQLite scans the whole table for each row it removes.
    """
    con = sqlite3.connect(db, isolation_level=None)
    try:
        con.execute("PRAGMA foreign_keys=OFF")
        con.execute("DROP TABLE IF EXISTS deliveries_copy")
        if drop_only:
            return
        for (sql,) in con.execute(
            "SELECT sql FROM sqlite_master WHERE tbl_name = 'deliveries' AND sql IS NOT NULL"
            " ORDER BY type DESC"  # the table before its indexes
        ).fetchall():
            con.execute(sql.replace("deliveries", "deliveries_copy"))
    finally:
        con.close()


def stored_rows(db: Path, announcement_id: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    """The announcement's delivery rows as SQLite stores them, in insertion order."""
    con = sqlite3.connect(db)
    try:
        cols = [r[1] for r in con.execute("PRAGMA table_info(deliveries)")]
        rows = con.execute(
            f"SELECT {', '.join(cols)} FROM deliveries WHERE announcement_id = ? ORDER BY rowid",
            (announcement_id,),
        ).fetchall()
        return cols, rows
    finally:
        con.close()


def insert_sql(cols: list[str]) -> str:
    return f"INSERT INTO deliveries_copy ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})"


def raw_executemany(db: Path, cols: list[str], rows: list[tuple[Any, ...]]) -> Took:
    """Stdlib sqlite3: the rows, as stored, into an empty copy of the deliveries table.

    Same DDL (check constraints, foreign keys), the same indexes, the engine's pragmas,
    one transaction, the rows already in memory as tuples: the floor for writing them
    from Python.
    """
    con = sqlite3.connect(db, isolation_level=None)
    try:
        for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "foreign_keys=ON"):
            con.execute(f"PRAGMA {pragma}")
        with stopwatch() as took:
            con.execute("BEGIN")
            con.executemany(insert_sql(cols), rows)
            con.execute("COMMIT")
        return took
    finally:
        con.close()


async def driver_executemany(
    engine: AsyncEngine, cols: list[str], rows: list[tuple[Any, ...]]
) -> Took:
    """`exec_driver_sql` with the stored tuples: aiosqlite's executemany, one call, through
    the bridge's own engine (its thread hop and its connection's pragmas)."""
    with stopwatch() as took:
        async with engine.begin() as conn:
            await conn.exec_driver_sql(insert_sql(cols), rows)
    return took


PHASES = ("_recipients", "planned_routes", "_write_mails", "_counts")


@contextlib.contextmanager
def timing_wrappers(phases: dict[str, float]) -> Iterator[None]:
    """Time `create_announcement`'s phases (wall clock): the recipient checks, the route
    plan's preparation (one query for the distinct channel orders), the e-mail bodies and
    tokens, and the counts; the rest is the INSERT ... SELECT and the commit."""
    saved = {name: getattr(announcements, name) for name in PHASES}

    def wrap(name: str, fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return await fn(*args, **kwargs)
            finally:
                phases[name] = phases.get(name, 0.0) + time.perf_counter() - t0

        return timed

    for name, fn in saved.items():
        setattr(announcements, name, wrap(name, fn))
    try:
        yield
    finally:
        for name, fn in saved.items():
            setattr(announcements, name, fn)


# --- dispatch --------------------------------------------------------------------------


class NullSender:
    """SENT at once (or after `delay` seconds): no provider, the engine alone."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay

    async def send(self, out: Outgoing) -> SendResult:
        if self.delay:
            await asyncio.sleep(self.delay)
        return SendResult(SendOutcome.SENT, provider_id=f"NULL{out.delivery_id}")


@dataclasses.dataclass
class Dispatch:
    sent: int
    other: int  # ended failed or dead meanwhile (provider errors): should be 0
    seconds: float
    cpu: float  # this process's CPU seconds (engine, SQLite's thread, the sender)
    rounds: int
    claiming: float  # seconds spent in claims (nothing is sent meanwhile)

    @property
    def per_second(self) -> float:
        return self.sent / self.seconds


async def count(engine: AsyncEngine, status: str) -> int:
    d = t.deliveries
    async with engine.connect() as conn:
        return int(
            await conn.scalar(select(func.count()).select_from(d).where(d.c.status == status)) or 0
        )


async def failures(engine: AsyncEngine) -> int:
    return await count(engine, "failed") + await count(engine, "dead")


async def top_up(engine: AsyncEngine, settings: Settings, n: int) -> None:
    """Another announcement when fewer than n deliveries are queued (not timed)."""
    if await count(engine, "queued") < n:
        await create_announcement(engine, settings, unit_id=UNIT, text=TEXT)


async def dispatch(
    engine: AsyncEngine,
    settings: Settings,
    sender: Any,
    n: int,
    *,
    batch: int = BATCH,
    concurrency: int = CONCURRENCY,
) -> Dispatch:
    """The worker's own loop (its overlapping rounds) until n deliveries were sent."""
    await top_up(engine, settings, n)
    sent_before = await count(engine, "sent")
    failed_before = await failures(engine)
    worker = OutboxWorker(engine, settings, {"sms": sender}, batch=batch, concurrency=concurrency)
    claim = worker.claim
    claiming = 0.0
    rounds = 0

    async def timed_claim(channel: str) -> list[dict[str, Any]]:
        nonlocal claiming, rounds
        t0 = time.perf_counter()
        try:
            got = await claim(channel)
            rounds += bool(got)
            return got
        finally:
            claiming += time.perf_counter() - t0

    worker.claim = timed_claim  # type: ignore[method-assign]
    stop = asyncio.Event()
    cpu0, t0 = time.process_time(), time.perf_counter()
    task = asyncio.create_task(worker.run(stop))
    sent = 0
    while sent < n:
        await asyncio.sleep(0.05)
        sent = await count(engine, "sent") - sent_before
        if task.done():
            raise RuntimeError("the worker stopped")
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    stop.set()
    await task
    # Not `sent` again: the worker goes on sending until it sees `stop`.
    return Dispatch(sent, await failures(engine) - failed_before, elapsed, cpu, rounds, claiming)


class QuietFakeTwilio(FakeTwilio):
    """The fake without status callbacks: the benchmark measures sends, not callbacks."""

    def _spawn(self, coro: Any) -> None:
        coro.close()


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def serve_fake(delay: float) -> None:
    """Subprocess mode: run the fake until SIGTERM; print its URL, then the CPU seconds it
    used from then on (not its start-up) and how many sends it accepted."""
    fake = QuietFakeTwilio(ACCOUNT, TOKEN)
    fake.delay_seconds = delay
    await fake.start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    print(fake.base_url, flush=True)
    started = cpu_seconds()
    await stop.wait()
    print(f"{cpu_seconds() - started:.3f} {len(fake.sent)}", flush=True)
    await fake.stop()


@dataclasses.dataclass
class FakeProcess:
    url: str
    cpu: float = 0.0  # the fake process's CPU seconds, known after it stopped
    accepted: int = 0


@contextlib.asynccontextmanager
async def fake_twilio(delay: float) -> AsyncIterator[FakeProcess]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "--serve-fake",
        str(delay),
        stdout=asyncio.subprocess.PIPE,
        cwd=ROOT,
    )
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 30)
    if not line:
        raise RuntimeError("the fake did not start")
    fp = FakeProcess(line.decode().strip())
    try:
        yield fp
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = await proc.communicate()
        cpu, accepted = out.decode().split()
        fp.cpu, fp.accepted = float(cpu), int(accepted)


async def twilio_dispatch(
    engine: AsyncEngine, settings: Settings, n: int, delay: float, profile: bool = False
) -> tuple[Dispatch, FakeProcess]:
    async with fake_twilio(delay) as fp:
        sender = TwilioSender(with_api(settings, fp.url))
        try:
            result = await profiled(
                profile, "TwilioSender dispatch", dispatch(engine, settings, sender, n)
            )
        finally:
            await sender.close()
    return result, fp


async def sender_alone(settings: Settings, n: int) -> tuple[float, float, FakeProcess]:
    """`TwilioSender.send` n times, CONCURRENCY at a time, with no engine and no store:
    what the SDK and the fake manage on this machine. Returns (seconds, CPU seconds)."""
    async with fake_twilio(0.0) as fp:
        sender = TwilioSender(with_api(settings, fp.url))
        slots = asyncio.Semaphore(CONCURRENCY)

        async def one(i: int) -> SendResult:
            async with slots:
                return await sender.send(
                    Outgoing(f"dl-alone-{i}", Channel.SMS, f"+47{90000000 + i}", TEXT)
                )

        try:
            await asyncio.gather(*(one(i) for i in range(CONCURRENCY)))  # connections up
            cpu0, t0 = time.process_time(), time.perf_counter()
            results = await asyncio.gather(*(one(i) for i in range(n)))
            elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        finally:
            await sender.close()
    if any(r.outcome != SendOutcome.SENT for r in results):
        raise RuntimeError("the fake refused a send")
    return elapsed, cpu, fp


def show(label: str, d: Dispatch, extra: str = "") -> None:
    print(
        f"  {label:<44} {d.sent:>6,} sent in {d.seconds:6.2f} s = {d.per_second:7,.0f}/s"
        f"  (claims {d.claiming / d.rounds * 1000:3.0f} ms x {d.rounds}; "
        f"bridge CPU {d.cpu / d.sent * 1000:.2f} ms each{extra})"
        + (f"  NOT SENT: {d.other}" if d.other else "")
    )


async def dispatch_figures(
    engine: AsyncEngine,
    settings: Settings,
    n: int,
    n_slow: int,
    profile: bool,
    label: str,
    alone: bool = True,
) -> dict[str, float]:
    """Zero-latency and 50 ms figures on one store; prints them, returns the rates."""
    print(
        f"\nDispatch, {label}: {n:,} deliveries each at zero latency, {n_slow:,} at 50 ms; "
        f"batch {BATCH}, concurrency {CONCURRENCY}"
    )
    null = await profiled(
        profile, f"null-sender dispatch, {label}", dispatch(engine, settings, NullSender(), n)
    )
    show("(a) null sender, zero latency [baseline]", null)
    tw, fp = await twilio_dispatch(engine, settings, n, 0.0, profile)
    show(
        "(b) TwilioSender -> FakeTwilio, zero latency",
        tw,
        f", fake {fp.cpu / fp.accepted * 1000:.2f} ms",
    )
    print(
        f"  ratio (b)/(a): {tw.per_second / null.per_second:.2f}; goal >= 2,000/s: "
        f"(a) {verdict(null.per_second >= 2000)}, (b) {verdict(tw.per_second >= 2000)}"
    )
    if alone:
        seconds, cpu, fp = await sender_alone(settings, n)
        print(
            f"  for scale, TwilioSender.send alone (no engine, no store), {CONCURRENCY} at a "
            f"time: {rate(n, seconds)} (bridge CPU {cpu / n * 1000:.2f} ms a send, fake CPU "
            f"{fp.cpu / fp.accepted * 1000:.2f} ms a request)"
        )
    bound = CONCURRENCY / LATENCY
    # A round claims BATCH rows and sends them CONCURRENCY at a time before it claims
    # again: ceil(BATCH / CONCURRENCY) waves of one latency each, at best.
    waves = -(-BATCH // CONCURRENCY)
    round_bound = BATCH / (waves * LATENCY)
    print(
        f"  50 ms latency: bound concurrency/latency = {bound:,.0f}/s; a round of {BATCH} in "
        f"{waves} waves allows at most {round_bound:,.0f}/s ({round_bound / bound:.2f} of it)"
    )
    slow = await dispatch(engine, settings, NullSender(LATENCY), n_slow)
    show("(c) null sender sleeping 50 ms", slow, f"; {slow.per_second / bound:.2f} of bound")
    slow_tw, fp = await twilio_dispatch(engine, settings, n_slow, LATENCY)
    show(
        "(d) TwilioSender -> FakeTwilio, 50 ms",
        slow_tw,
        f", fake {fp.cpu / fp.accepted * 1000:.2f} ms; {slow_tw.per_second / bound:.2f} of bound",
    )
    c, d = slow.per_second / bound, slow_tw.per_second / bound
    print(
        f"  achieved/bound: (c) {c:.2f}, (d) {d:.2f}; goal >= 0.90: (c) {verdict(c >= 0.9)}, "
        f"(d) {verdict(d >= 0.9)}"
    )
    return {
        "null": null.per_second,
        "twilio": tw.per_second,
        "null_50ms": slow.per_second,
        "twilio_50ms": slow_tw.per_second,
    }


# --- the stores ------------------------------------------------------------------------


async def import_timed(engine: AsyncEngine, roster: Path, what: str) -> None:
    t0 = time.perf_counter()
    result = await import_roster(engine, roster)
    if result.rejected:
        raise RuntimeError(f"roster rows rejected: {result.rejected[:3]}")
    print(f"Roster import ({what}; not part of any figure): {time.perf_counter() - t0:.1f} s")


async def sqlite_run(folder: Path, args: argparse.Namespace) -> None:
    n, profile = args.guardians, args.profile
    roster = write_roster(folder / "roster.csv", n, args.channels)
    db = folder / "bench.db"
    settings = make_settings(f"sqlite+aiosqlite:///{db}")
    engine = create_engine(settings.database_url)
    try:
        await upgrade(engine)
        await import_timed(engine, roster, f"{n:,} guardians and students, SQLite")

        phases: dict[str, float] = {}
        with timing_wrappers(phases), stopwatch() as enqueue:
            created = await profiled(
                profile,
                "create_announcement",
                create_announcement(engine, settings, unit_id=UNIT, text=TEXT),
            )
        if created.deliveries != n or created.skipped:
            raise RuntimeError(f"expected {n} deliveries, got {created}")
        await engine.dispose()  # the stdlib baseline has the file to itself
        cols, rows = stored_rows(db, created.announcement_id)
        assert len(rows) == n
        recreate_copy(db)
        raw = raw_executemany(db, cols, rows)
        recreate_copy(db)
        driver = await driver_executemany(engine, cols, rows)
        await engine.dispose()
        recreate_copy(db, drop_only=True)
        del rows
        ratio = raw.wall / enqueue.wall  # the enqueue's rate over the raw insert's
        rest = enqueue.wall - sum(phases.values())
        print(f"\nEnqueue, SQLite: one announcement to {n:,} guardians ({n:,} deliveries)")
        for label, took in (
            ("create_announcement", enqueue),
            ("raw sqlite3 executemany [baseline]", raw),
            ("aiosqlite executemany (scale)", driver),
        ):
            print(
                f"  {label:<36} {took.wall:6.2f} s  {rate(n, took.wall):>10}  "
                f"(CPU {took.cpu:5.2f} s)"
            )
            if took is enqueue:
                print(
                    f"    of which: recipient checks {phases['_recipients']:.2f} s, channel "
                    f"orders {phases['planned_routes']:.2f} s, INSERT ... SELECT and commit "
                    f"{rest:.2f} s, e-mail bodies {phases['_write_mails']:.2f} s, counts "
                    f"{phases['_counts']:.2f} s"
                )
        print(
            f"  ratio to the raw rate: {ratio:.2f} (goal >= 0.5: {verdict(ratio >= 0.5)}); "
            f"under 3 s: {verdict(enqueue.wall < 3)}; in CPU time: {raw.cpu / enqueue.cpu:.2f}"
        )

        if not args.enqueue_only:
            await dispatch_figures(
                engine,
                settings,
                args.dispatch,
                args.slow_dispatch,
                profile,
                f"SQLite, queue of {n:,}",
            )
    finally:
        await engine.dispose()


async def postgres_run(folder: Path, args: argparse.Namespace) -> None:
    n = args.pg_guardians
    import asyncpg  # only when a PostgreSQL run is wanted

    try:
        admin = await asyncpg.connect(PG_ADMIN, timeout=5)
    except (OSError, asyncpg.PostgresError) as e:
        print(f"\nPostgreSQL: skipped ({type(e).__name__}: no server at 127.0.0.1:5432)")
        return
    name = f"skolebro_bench_{uuid.uuid4().hex[:10]}"
    await admin.execute(f'CREATE DATABASE "{name}"')
    settings = make_settings(f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}")
    engine = create_engine(settings.database_url)
    try:
        await upgrade(engine)
        roster = write_roster(folder / "roster-pg.csv", n, args.channels)
        await import_timed(engine, roster, f"{n:,} guardians and students, PostgreSQL")
        t0 = time.perf_counter()
        created = await create_announcement(engine, settings, unit_id=UNIT, text=TEXT)
        enqueue = time.perf_counter() - t0
        print(
            f"\nEnqueue, PostgreSQL: one announcement to {created.deliveries:,} guardians: "
            f"{enqueue:.2f} s = {rate(created.deliveries, enqueue)} (no baseline)"
        )
        if not args.enqueue_only:
            await dispatch_figures(
                engine,
                settings,
                args.dispatch,
                args.slow_dispatch,
                False,
                f"PostgreSQL, queue of {n:,}",
                alone=False,
            )
    finally:
        await engine.dispose()
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def main(args: argparse.Namespace) -> None:
    os.environ[TOKEN_ENV] = TOKEN
    load = os.getloadavg()[0]
    print(
        f"Python {sys.version.split()[0]}, SQLite {sqlite3.sqlite_version}, "
        f"{os.cpu_count()} CPUs, load average {load:.1f} at start"
    )
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-delivery-") as tmp:
        await sqlite_run(Path(tmp), args)
        if not args.no_postgres:
            await postgres_run(Path(tmp), args)
    print(
        f"\nTotal {time.perf_counter() - t0:.0f} s; load average {os.getloadavg()[0]:.1f} "
        "at the end"
    )


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--guardians", type=int, default=100_000)
    parser.add_argument("--dispatch", type=int, default=5_000)
    parser.add_argument("--slow-dispatch", type=int, default=2_000, help="at 50 ms latency")
    parser.add_argument("--pg-guardians", type=int, default=20_000)
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--enqueue-only", action="store_true", help="skip the dispatch figures")
    parser.add_argument(
        "--channels",
        choices=("sms", "email"),
        default="sms",
        help="every guardian's channel order; the dispatch figures need sms",
    )
    parser.add_argument("--serve-fake", type=float, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.channels != "sms" and not args.enqueue_only:
        parser.error("--channels email needs --enqueue-only (the dispatch figures send SMS)")
    if args.serve_fake is not None:
        asyncio.run(serve_fake(args.serve_fake))
    else:
        asyncio.run(main(args))


if __name__ == "__main__":
    cli()
