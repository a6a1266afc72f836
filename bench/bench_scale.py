"""Scaling curves (issue #10): inbound acknowledgements as the store grows, and delivery
throughput with several `skolebro run` processes on PostgreSQL.

Run: .venv/bin/python bench/bench_scale.py [--sizes 10000,1000000,5000000] [--seconds 20]
     .venv/bin/python bench/bench_scale.py --delivery [--processes 1,2,4]

Inbound (the default):

One SQLite store, grown in steps: before each measurement the store is topped up to the
next size with stdlib `sqlite3` executemany (processed `inbound_events`, one `messages`
row each, spread over one thread per guardian and child, dated over the past year).
Then a `skolebro run` subprocess (the same config, roster and fakes as
bench/bench_morning.py, 7,000 guardians) takes signed SMS webhooks from `--clients`
keep-alive clients in a closed loop for `--seconds` (after `--warmup` seconds that are
not counted), with its inbox and outbox working as in service; what a phase leaves
pending is marked processed (without effects) before the next, so every size starts
with no backlog. Printed per size:
acknowledged/s, p50/p99 latency, events processed meanwhile, the database size, and the
ratio to the smallest size (goal: the largest >= 0.8 of the smallest).

Delivery (`--delivery`): for each process count, a fresh PostgreSQL database (on
`--pg`, created and dropped by the script) with the same roster and every
Telegram-first guardian linked. N `skolebro run` processes (each with its own HTTP
port) start; once all answer /healthz, one urgent announcement per school is created
through the JSON API (8,400 deliveries over SMS, Telegram and e-mail). The clock runs
from the fakes' first send of it to their last; CPU is counted from the announcement
on. The Twilio fake sends no status callbacks here and no send pace applies
(`--send-rate`), so the fakes' own CPU is the only cost outside the bridges. Printed:
deliveries/s per process count, the bridges' CPU per delivery, and the ratio to one
process (goal: 2 processes >= 1.6x of 1).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
from bench_morning import (
    FIRST_CHAT,
    FIRST_MOBILE,
    Morning,
    PacedTwilio,
    child_name,
    children_of,
    cli,
    config_text,
    db_size_mb,
    first_channel,
    link_telegram,
    proc_cpu_seconds,
    start_bridge,
    wait_healthy,
    write_roster,
)
from common import free_port, load_average, percentile, pin, work_folder

GUARDIANS = 7_000
STUDENTS = 4_000
SEED_BODIES = ["{n} er syk i dag", "Hei, {n} har tannlege kl 10", "Takk for beskjed!"]


def seed(
    db: Path, have: int, want: int, guardians: int, students: int, chunk: int = 100_000
) -> int:
    """Top the store up to `want` stored inbound messages; returns how many were added."""
    if want <= have:
        return 0
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    now = datetime.now(UTC).replace(tzinfo=None)
    threads = conn.execute("SELECT id, guardian_id, student_id FROM threads").fetchall()
    if not threads:
        rows = []
        for g in range(guardians):
            for s in children_of(g, students):
                school = f"u-{s % max(2, students // 1000)}"
                rows.append((f"th-seed-{g}-{s}", f"gd-{g}", school, f"s-{s}", 0, now, now))
        conn.executemany(
            "INSERT INTO threads (id, guardian_id, unit_id, student_id, sensitive_notice_sent,"
            " created_at, last_message_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            [(*r[:5], str(r[5]), str(r[6])) for r in rows],
        )
        threads = [(r[0], r[1], r[3]) for r in rows]
    rnd = random.Random(have)
    first_id = int(conn.execute("SELECT coalesce(max(id), 0) FROM inbound_events").fetchone()[0])
    for start in range(have, want, chunk):
        events, messages = [], []
        for i in range(start, min(want, start + chunk)):
            thread_id, guardian, student = threads[i % len(threads)]
            when = str(now - timedelta(seconds=rnd.randrange(365 * 86400)))
            body = SEED_BODIES[i % 3].format(n=child_name(int(student[2:])))
            eid = first_id + 1 + i - have
            number = f"+{FIRST_MOBILE + int(guardian[3:])}"
            events.append((eid, "sms", f"SEED{i:012d}", number, body, "{}", when, "processed",
                           1, when))  # fmt: skip
            messages.append((f"ms-seed-{i}", thread_id, "in", "sms", guardian, body, "[]", when,
                             eid, f"SM{i:032x}"))  # fmt: skip
        conn.executemany(
            "INSERT INTO inbound_events (id, channel, external_id, sender, body, payload,"
            " received_at, status, attempts, processed_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
            events,
        )
        conn.executemany(
            "INSERT INTO messages (id, thread_id, direction, channel, author, body, sensitive,"
            " sent_at, inbound_event_id, provider_id) VALUES (?,?,?,?,?,?,?,?,?,?)",
            messages,
        )
        conn.commit()
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return want - have


async def closed_loop(m: Morning, clients: int, warmup: float, seconds: float) -> dict[str, Any]:
    """`clients` senders back to back; only what is answered inside the window counts."""
    t_start = time.monotonic() + warmup
    t_end = t_start + seconds
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    rnd = random.Random(clients)
    # MessageSids unique to this phase: a repeat (Twilio's retry) takes another path.
    m.seq = int(time.time() * 1000) << 20

    async def client() -> None:
        while (now := time.monotonic()) < t_end:
            g = rnd.randrange(GUARDIANS)
            text = f"{child_name(children_of(g, STUDENTS)[0])} er syk i dag"
            try:
                status = await m._sms(g, text)
            except (aiohttp.ClientError, OSError, TimeoutError):
                status = 0
            done = time.monotonic()
            if now >= t_start and done <= t_end:
                latencies.append(done - now)
                statuses[status] = statuses.get(status, 0) + 1

    await asyncio.gather(*(client() for _ in range(clients)))
    latencies.sort()
    return {
        "acked_s": statuses.get(200, 0) / seconds,
        "p50_ms": percentile(latencies, 50) * 1000,
        "p99_ms": percentile(latencies, 99) * 1000,
        "statuses": statuses,
    }


def clear_backlog(db: Path) -> int:
    """Mark what a previous phase left pending as processed (without effects), so that
    every size starts with no backlog; returns how many there were."""
    with contextlib.closing(sqlite3.connect(db)) as conn:
        n = conn.execute(
            "UPDATE inbound_events SET status = 'processed', processed_at = received_at"
            " WHERE status = 'pending'"
        ).rowcount
        conn.commit()
    return int(n)


def processed(db: Path) -> int:
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        row = conn.execute("SELECT count(*) FROM inbound_events WHERE status = 'processed'")
        return int(row.fetchone()[0])


async def measure(args: argparse.Namespace, folder: Path, size: int) -> dict[str, Any]:
    port = free_port()
    m = Morning(
        SimpleNamespace(send_rate=args.send_rate, compress=1.0, students=STUDENTS), folder, port
    )
    m.db = folder / "skolebro.db"
    async with contextlib.AsyncExitStack() as stack:
        env = await m.start_fakes(stack)
        m.write_config(folder, port)
        m.link_chats(GUARDIANS)
        before = processed(m.db)
        proc, log = start_bridge(folder, env, None if args.no_pin else 0, f"bridge-{size}.log")
        try:
            await wait_healthy(m.base, proc, 120)
            m.session = await stack.enter_async_context(
                aiohttp.ClientSession(
                    connector=aiohttp.TCPConnector(limit=256),
                    timeout=aiohttp.ClientTimeout(total=60),
                )
            )
            cpu0 = proc_cpu_seconds(proc.pid)
            result = await closed_loop(m, args.clients, args.warmup, args.seconds)
            result["bridge_cpu_ms_per_ack"] = (
                (proc_cpu_seconds(proc.pid) - cpu0)
                / max(1, sum(result["statuses"].values()))
                * 1000
            )
        finally:
            proc.send_signal(signal.SIGTERM)
            await asyncio.to_thread(proc.wait, 30)
            log.close()
            await m.twilio.stop()
    result["processed"] = processed(m.db) - before
    return result


async def run(args: argparse.Namespace, folder: Path) -> list[tuple[int, dict[str, Any]]]:
    sizes = sorted(int(s) for s in args.sizes.split(","))
    port = free_port()
    write_roster(folder / "roster.csv", GUARDIANS, STUDENTS)
    (folder / "skolebro.toml").write_text(
        config_text(port, "http://127.0.0.1:9", "http://127.0.0.1:9", 9, free_port())
    )
    env = dict(os.environ)
    cli(folder, env, "init")
    cli(folder, env, "import-roster", str(folder / "roster.csv"), "--json")
    link_telegram(folder / "skolebro.db", GUARDIANS)
    pin(None if args.no_pin else 1)
    results: list[tuple[int, dict[str, Any]]] = []
    have = 0
    for size in sizes:
        t = time.perf_counter()
        added = await asyncio.to_thread(
            seed, folder / "skolebro.db", have, size, GUARDIANS, STUDENTS
        )
        have = max(have, size)
        print(
            f"store at {size:,} messages (+{added:,} in {time.perf_counter() - t:.1f} s), "
            f"{db_size_mb(folder / 'skolebro.db'):.0f} MB; load {load_average()}",
            flush=True,
        )
        cleared = await asyncio.to_thread(clear_backlog, folder / "skolebro.db")
        if cleared:
            print(f"  ({cleared} events the previous phase left pending marked processed)")
        r = await measure(args, folder, size)
        r["db_mb"] = db_size_mb(folder / "skolebro.db")
        print(
            f"  acknowledged {r['acked_s']:.0f}/s, p50 {r['p50_ms']:.1f} ms, p99 "
            f"{r['p99_ms']:.1f} ms, bridge CPU {r['bridge_cpu_ms_per_ack']:.2f} ms/ack, "
            f"{r['processed']} processed meanwhile, statuses {r['statuses']}",
            flush=True,
        )
        results.append((size, r))
    return results


class PacedQuiet(PacedTwilio):
    """No status callbacks: their cost would be the fake's and the bridges' alike."""

    def _spawn(self, coro: Any) -> None:
        coro.close()


async def pg_admin(pg: str, sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(pg + "/postgres")
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def pg_link_telegram(url: str) -> None:
    import asyncpg

    now = datetime.now(UTC)
    conn = await asyncpg.connect(url)
    try:
        await conn.executemany(
            "INSERT INTO telegram_links (chat_id, guardian_id, user_id, linked_at)"
            " VALUES ($1, $2, $3, $4)",
            [(FIRST_CHAT + g, f"gd-{g}", FIRST_CHAT + g, now)
             for g in range(GUARDIANS) if first_channel(g) == "telegram"],
        )  # fmt: skip
    finally:
        await conn.close()


async def delivery_run(args: argparse.Namespace, folder: Path, n: int) -> dict[str, Any]:
    name = f"skolebro_scale_{os.getpid()}_{n}"
    await pg_admin(args.pg, f"DROP DATABASE IF EXISTS {name}")
    await pg_admin(args.pg, f"CREATE DATABASE {name}")
    url = f"{args.pg}/{name}".replace("postgresql://", "postgresql+asyncpg://")
    settings = SimpleNamespace(send_rate=args.send_rate, compress=1.0, students=STUDENTS)
    m = Morning(settings, folder, free_port(), PacedQuiet)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        async with contextlib.AsyncExitStack() as stack:
            env = await m.start_fakes(stack)
            configs, ports = [], []
            for k in range(n):
                sub = folder / f"p{n}-{k}"
                sub.mkdir(exist_ok=True)
                ports.append(free_port())
                configs.append(m.write_config(sub, ports[-1], url))
            cli(configs[0], env, "init")
            cli(configs[0], env, "import-roster", str(folder / "roster.csv"), "--json")
            m.schools = max(2, STUDENTS // 1000)
            units = [a for s in range(m.schools) for a in ("--unit", f"u-{s}")]
            m.api_key = cli(configs[0], env, "apikey", "create", *units).strip()
            await pg_link_telegram(url.replace("+asyncpg", ""))
            m.link_chats(GUARDIANS)
            for sub in configs:
                procs.append(start_bridge(sub, env, None)[0])
            for proc, port in zip(procs, ports, strict=True):
                await wait_healthy(f"http://127.0.0.1:{port}", proc, 120)
            m.base = f"http://127.0.0.1:{ports[0]}"
            m.session = await stack.enter_async_context(aiohttp.ClientSession())
            cpu0 = sum(proc_cpu_seconds(p.pid) for p in procs)
            await m.storm_now()  # one urgent announcement per school, through the API
            queued = int(m.storm["deliveries"])
            deadline = time.monotonic() + args.delivery_limit
            while m.sends.storm < queued and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
            cpu = sum(proc_cpu_seconds(p.pid) for p in procs) - cpu0
            first = next(t for t, _, storm in m.sends.log if storm)
            last = m.sends.storm_last
            return {
                "queued": queued,
                "handed": m.sends.storm,
                "seconds": last - first,
                "rate": m.sends.storm / max(1e-9, last - first),
                "cpu_ms": cpu / max(1, m.sends.storm) * 1000,
                "by_channel": {
                    ch: f"{count} by {m.sends.storm_last_by_channel[ch] - first:.1f} s"
                    for ch, count in sorted(m.sends.storm_by_channel.items())
                },
            }
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                await asyncio.to_thread(p.wait, 30)
            except subprocess.TimeoutExpired:
                p.kill()
        await pg_admin(args.pg, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


async def delivery(args: argparse.Namespace, folder: Path) -> list[tuple[int, dict[str, Any]]]:
    write_roster(folder / "roster.csv", GUARDIANS, STUDENTS)
    results = []
    for n in sorted(int(x) for x in args.processes.split(",")):
        r = await delivery_run(args, folder, n)
        print(
            f"{n} process(es): {r['handed']}/{r['queued']} handed over in {r['seconds']:.1f} s, "
            f"{r['rate']:.0f}/s, bridges' CPU {r['cpu_ms']:.2f} ms/delivery, "
            f"{r['by_channel']}; load {load_average()}",
            flush=True,
        )
        results.append((n, r))
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,1000000,5000000")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--send-rate", type=float, default=1500.0)
    parser.add_argument("--no-pin", action="store_true")
    parser.add_argument("--keep", type=Path, help="use and keep this folder")
    parser.add_argument("--delivery", action="store_true", help="the PostgreSQL curve instead")
    parser.add_argument("--processes", default="1,2,4")
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432")
    parser.add_argument("--delivery-limit", type=float, default=300.0, help="seconds per run")
    args = parser.parse_args()
    with work_folder(args.keep, "skolebro-scale-") as folder:
        if args.delivery:
            args.send_rate = 1e9 if args.send_rate == 1500.0 else args.send_rate
            runs = asyncio.run(delivery(args, folder))
        else:
            results = asyncio.run(run(args, folder))
    if args.delivery:
        one = runs[0][1]["rate"] or 1.0
        table(
            ["processes", "deliveries/s", "bridges' CPU/delivery", "x one process"],
            [[str(n), f"{r['rate']:.0f}", f"{r['cpu_ms']:.2f} ms", f"{r['rate'] / one:.2f}"]
             for n, r in runs],
        )  # fmt: skip
        two = next((r["rate"] / one for n, r in runs if n == 2), None)
        if two is not None:
            goal("2 processes / 1", two, 1.6)
        return 0
    first = results[0][1]["acked_s"] or 1.0
    table(
        ["stored messages", "acknowledged/s", "p50 / p99", "bridge CPU/ack", "x smallest"],
        [[f"{size:,}", f"{r['acked_s']:.0f}", f"{r['p50_ms']:.1f} / {r['p99_ms']:.1f} ms",
          f"{r['bridge_cpu_ms_per_ack']:.2f} ms", f"{r['acked_s'] / first:.2f}"]
         for size, r in results],
    )  # fmt: skip
    goal("largest / smallest", results[-1][1]["acked_s"] / first, 0.8)
    return 0


def table(columns: list[str], rows: list[list[str]]) -> None:
    print("\n| " + " | ".join(columns) + " |")
    print("|" + " ---: |" * len(columns))
    for row in rows:
        print("| " + " | ".join(row) + " |")


def goal(label: str, ratio: float, at_least: float) -> None:
    print(f"{label} = {ratio:.2f} (goal >= {at_least}: {'met' if ratio >= at_least else 'MISSED'})")


if __name__ == "__main__":
    sys.exit(main())
