"""Telegram updates in polling mode against the loopback Bot API fake: the bridge beside its
own poller storing updates with nothing processing them.

Run: .venv/bin/python bench/bench_telegram.py [--updates 1000] [--chats 200]

A roster of `--chats` guardians (+ a few for the warm-up), each with one child in u-fjell
(tests/world.py's `write_roster`: child i is "Barn{i}"), channels "telegram;sms". Each
guardian's chat is linked by inserting its `telegram_links` row directly (what `/start
<code>` ends in; the link flow itself is not measured). Then `--updates` text updates,
"Barn{i} er syk i dag", are injected into `adapters.fakes.telegram.FakeTelegram` at once,
spread round-robin over the chats (so each chat reports its child several times), and the
clock runs until they are all handled. Measured, in the same run:

- baseline: `adapters.telegram.TelegramPoller` (aiogram's getUpdates, 100 a poll) with
  `bridge.inbox.accept` as its accept function, on a fresh migrated SQLite store, and
  nothing processing the stored events: the time until every update is an inbound event.
  This is the bridge's own intake path without the bridge (not aiogram's bare loop);
- bridge, processing held: `tests.world.running_world(telegram=True)`, a real `Bridge`
  whose inbox worker is told to take nothing until every update is stored (intake alone),
  then everything (processing alone, and the confirmations sent through the outbox and
  `TelegramSender` to the fake at `max_per_second = 200`, as the world configures it);
- bridge, both at once: the same, as in service: updates per second until every event is
  processed, and until every confirmation has reached the fake.

The fake runs in the same process as the poller (as in tests/world.py), so its CPU (JSON
for getUpdates and sendMessage) is inside every figure, the baseline's too. CPU seconds per
update (all threads, and the event-loop thread alone) and SQL statements per update are
printed beside wall time: on a shared machine they move far less than rates. The process
is pinned to CPU 0 (`--no-pin` to leave it to the scheduler): the bridge is one event loop.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import platform
import sqlite3
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # tests.world is not an installed package
    sys.path.insert(0, str(REPO))

import aiogram  # noqa: E402
from common import (  # noqa: E402
    Profiler,
    StatementCounter,
    cpu_seconds,
    load_average,
    migrated_sqlite,
    pin,
)
from sqlalchemy import func, insert, select  # noqa: E402

from adapters.fakes.telegram import FakeTelegram  # noqa: E402
from adapters.telegram import TelegramPoller  # noqa: E402
from bridge import inbox  # noqa: E402
from bridge.config import parse_config  # noqa: E402
from bridge.domain import Accepted, InboundEvent  # noqa: E402
from bridge.store import tables as t  # noqa: E402
from bridge.store.db import create_engine  # noqa: E402
from tests.world import BOT_TOKEN, running_world, write_roster  # noqa: E402

FIRST_CHAT = 810_000_000  # chat i (a private chat: its id is the user's id)
START = time.perf_counter()
WARMUP = 20  # updates (from their own chats) processed before the clock starts
BASELINE_TOKEN_ENV = "BENCH_TELEGRAM_BOT_TOKEN"


async def event_counts(engine: Any) -> Counter[str]:
    e = t.inbound_events
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(e.c.status, func.count()).where(e.c.channel == "telegram").group_by(e.c.status)
        )
        return Counter({status: int(n) for status, n in rows})


def inject(fake: FakeTelegram, chats: list[int], first_child: int, count: int) -> None:
    """`count` text updates, round-robin over `chats`; chat k writes about its own child."""
    for j in range(count):
        k = j % len(chats)
        fake.send_text(chats[k], f"Barn{first_child + k} er syk i dag")


def sent_total(fake: FakeTelegram, chats: list[int]) -> int:
    return sum(len(fake.sent.get(chat, [])) for chat in chats)


async def until(check: Any, seconds: float) -> bool:
    """Poll `check()` (sync or async) every 50 ms until it is true; False after `seconds`."""
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return True
        await asyncio.sleep(0.05)
    return False


# -- baseline: the poller alone, storing ----------------------------------------------------


async def baseline(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    await asyncio.to_thread(folder.mkdir)
    url = await migrated_sqlite(folder)
    fake = FakeTelegram(BOT_TOKEN)
    await fake.start()
    os.environ[BASELINE_TOKEN_ENV] = BOT_TOKEN
    settings = parse_config(
        f"""
[bridge]
database_url = "{url}"
[telegram]
enabled = true
token_env = "{BASELINE_TOKEN_ENV}"
mode = "polling"
api_base_url = "{fake.base_url}"
bot_username = "skolebro_test_bot"
""",
        base_dir=folder,
    )
    engine = create_engine(url)
    stop = asyncio.Event()

    async def accept(event: InboundEvent) -> Accepted:
        return await inbox.accept(engine, event)

    chats = [FIRST_CHAT + k for k in range(args.chats)]
    poller = TelegramPoller(settings, accept)
    task = asyncio.create_task(poller.run(stop))
    try:
        warm = [FIRST_CHAT - 1 - k for k in range(WARMUP)]
        inject(fake, warm, 0, WARMUP)

        async def warmed() -> bool:
            return sum((await event_counts(engine)).values()) >= WARMUP

        await until(warmed, 30)
        statements = StatementCounter(engine)
        cpu0, main0, t0 = cpu_seconds(), time.thread_time(), time.perf_counter()
        inject(fake, chats, 0, args.updates)
        injected = time.perf_counter() - t0
        stored_at = None
        while time.perf_counter() - t0 < args.limit:
            await asyncio.sleep(0.02)
            if sum((await event_counts(engine)).values()) >= args.updates + WARMUP:
                stored_at = time.perf_counter() - t0
                break
        cpu, main = cpu_seconds() - cpu0, time.thread_time() - main0
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
        await engine.dispose()
        await fake.stop()
        os.environ.pop(BASELINE_TOKEN_ENV, None)
    return {
        "stored": stored_at,
        "injected": injected,
        "cpu": cpu,
        "main": main,
        "statements": statements.total,
        "polls": len(fake.polls),
    }


# -- the bridge -----------------------------------------------------------------------------


async def link(engine: Any, fake: FakeTelegram, chats: list[int], first: int) -> None:
    """Chat k acts for guardian gd-(first + k), as after `/start <code>`."""
    now = datetime.now(UTC)
    rows = [
        {"chat_id": chat, "guardian_id": f"gd-{first + k}", "user_id": chat, "linked_at": now}
        for k, chat in enumerate(chats)
    ]
    async with engine.begin() as conn:
        await conn.execute(insert(t.telegram_links), rows)
    for chat in chats:
        fake.add_chat(chat, first_name="Foresatt", last_name="Test")


async def bridge_run(args: argparse.Namespace, folder: Path, *, hold: bool) -> dict[str, Any]:
    """With `hold`, the inbox worker takes nothing until every update is stored, then
    everything; without, polling and processing run at once, as in service."""
    await asyncio.to_thread(folder.mkdir)
    url = await migrated_sqlite(folder)
    guardians = [(f"gd-{i}", "telegram;sms", "nb") for i in range(args.chats + WARMUP)]
    roster = write_roster(folder / "roster.csv", guardians)
    n = args.updates
    async with running_world(url, folder, roster, telegram=True) as world:
        fake = world.telegram
        assert fake is not None
        engine = world.bridge.engine
        worker = world.bridge.inbox
        chats = [FIRST_CHAT + k for k in range(args.chats)]
        warm = [FIRST_CHAT + args.chats + k for k in range(WARMUP)]
        await link(engine, fake, chats + warm, 0)
        # Warm-up (lexicons, holidays, compiled queries, the sender's session).
        inject(fake, warm, args.chats, WARMUP)
        await until(lambda: sent_total(fake, warm) >= WARMUP, 30)
        sent_before = sent_total(fake, chats)

        released = asyncio.Event()
        if hold:  # the instance's method only; the worker loop itself is unchanged
            run_once = worker.run_once

            async def held(limit: int = 100) -> int:
                return await run_once(limit) if released.is_set() else 0

            worker.run_once = held  # type: ignore[method-assign]
        else:
            released.set()

        statements = StatementCounter(engine)
        profiler = Profiler(args.profile)
        marks: dict[str, float] = {}
        cpu_marks: dict[str, tuple[float, float, int]] = {}
        cpu0, main0, t0 = cpu_seconds(), time.thread_time(), time.perf_counter()

        def mark(name: str) -> None:
            marks[name] = time.perf_counter() - t0
            cpu_marks[name] = (cpu_seconds() - cpu0, time.thread_time() - main0, statements.total)

        with profiler:
            inject(fake, chats, 0, n)
            mark("injected")
            processed_during_intake = 0
            while time.perf_counter() - t0 < args.limit:
                await asyncio.sleep(0.05)
                counts = await event_counts(engine)
                done = counts["processed"] + counts["dead"] - WARMUP
                if "stored" not in marks and sum(counts.values()) - WARMUP >= n:
                    mark("stored")
                    processed_during_intake = done
                    if hold:
                        released.set()
                        worker.wake.set()
                if "processed" not in marks and done >= n:
                    mark("processed")
                if sent_total(fake, chats) - sent_before >= n:
                    mark("confirmed")
                    break
            mark("end")
        profiler.print("bridge, " + ("intake, then processing" if hold else "both at once"))
        counts = await event_counts(engine)
        texts = Counter(
            m.text.split("\n")[0][:60] for chat in chats for m in fake.sent.get(chat, [])
        )
        async with engine.connect() as conn:
            a = t.absences
            absences: dict[str, int] = {
                status: int(count)
                for status, count in await conn.execute(
                    select(a.c.status, func.count())
                    .where(a.c.channel == "telegram")
                    .group_by(a.c.status)
                )
            }
            distinct = await conn.scalar(
                select(func.count()).select_from(
                    select(a.c.student_id, a.c.unit_id, a.c.from_date)
                    .where(a.c.channel == "telegram")
                    .distinct()
                    .subquery()
                )
            )
            d = t.deliveries
            deliveries = {
                f"{kind}:{channel}:{status}": int(count)
                for kind, channel, status, count in await conn.execute(
                    select(d.c.kind, d.c.channel, d.c.status, func.count()).group_by(
                        d.c.kind, d.c.channel, d.c.status
                    )
                )
            }
    return {
        "marks": marks,
        "cpu": cpu_marks,
        "processed_during_intake": processed_during_intake,
        "processed": counts["processed"] - WARMUP,
        "dead": counts["dead"],
        "pending": counts["pending"],
        "sent": sent_total(fake, chats) - sent_before,
        "absences": absences,
        "distinct_absences": distinct,
        "deliveries": deliveries,
        "texts": texts.most_common(4),
        "statements_top": statements.top(),
        "polls": len(fake.polls),
    }


# -- report --------------------------------------------------------------------------------


def per(value: float, n: int, unit: str = "ms") -> str:
    return f"{value / n * 1000:.2f} {unit}" if n else "-"


def report(args: argparse.Namespace, base: dict[str, Any], runs: dict[str, dict[str, Any]]) -> None:
    n = args.updates
    base_rate = n / base["stored"] if base["stored"] else 0.0
    print(f"\n{n} text updates over {args.chats} linked chats, polling (getUpdates, 100 a poll)")
    print("| | poller + `inbox.accept` alone (baseline) | " + " | ".join(runs) + " |")
    print("| --- | ---: |" + " ---: |" * len(runs))

    def row(label: str, base_cell: str, cell: Any) -> None:
        print(f"| {label} | {base_cell} | " + " | ".join(cell(r) for r in runs.values()) + " |")

    def at(r: dict[str, Any], name: str) -> float | None:
        return r["marks"].get(name)

    def rate_cell(r: dict[str, Any], name: str, start: str | None = None) -> str:
        end = at(r, name)
        if end is None:
            return f"not reached in {args.limit:.0f} s"
        begin = at(r, start) if start else 0.0
        assert begin is not None
        value = n / (end - begin)
        ratio = f" (**{value / base_rate:.2f}** x baseline)" if base_rate and not start else ""
        return f"**{value:,.0f}/s** ({end - begin:.2f} s){ratio}"

    row(
        "stored (all updates are inbound events)",
        f"**{base_rate:,.0f}/s** ({base['stored']:.2f} s)" if base["stored"] else "not reached",
        lambda r: rate_cell(r, "stored"),
    )
    row(
        "processed, counted from the injection",
        "-",
        lambda r: rate_cell(r, "processed"),
    )
    row(
        "processed, counted from the last store",
        "-",
        lambda r: rate_cell(r, "processed", "stored"),
    )
    row(
        "all confirmations at the fake",
        "-",
        lambda r: rate_cell(r, "confirmed"),
    )

    def cpu_cell(r: dict[str, Any], name: str, start: str | None = None) -> str:
        end = r["cpu"].get(name)
        if end is None:
            return "-"
        begin = r["cpu"][start] if start else (0.0, 0.0, 0)
        return (
            f"{per(end[0] - begin[0], n)} ({per(end[1] - begin[1], n)} loop), "
            f"{(end[2] - begin[2]) / n:.1f} SQL"
        )

    row(
        "CPU per update storing (event-loop thread), SQL statements per update",
        f"{per(base['cpu'], n)} ({per(base['main'], n)} loop), {base['statements'] / n:.1f} SQL",
        lambda r: cpu_cell(r, "stored"),
    )
    row(
        "... processing and confirming, after the last store",
        "-",
        lambda r: cpu_cell(r, "confirmed", "stored") if "confirmed" in r["cpu"] else "-",
    )
    row(
        "... everything, injection to the last confirmation",
        "-",
        lambda r: cpu_cell(r, "confirmed"),
    )
    row(
        "processed while updates were still being stored",
        "-",
        lambda r: str(r["processed_during_intake"]),
    )
    row("getUpdates calls", str(base["polls"]), lambda r: str(r["polls"]))
    print(
        f"injecting the updates into the fake (baseline run): {base['injected'] * 1000:.0f} ms, "
        "inside the clock"
    )
    for label, r in runs.items():
        print(
            f"outcome ({label}): processed {r['processed']}, dead {r['dead']}, pending "
            f"{r['pending']}; telegram absences {r['absences']} "
            f"({r['distinct_absences']} distinct child/unit/day); {r['sent']} messages to the "
            f"chats; deliveries {r['deliveries']}; most common first lines: {r['texts']}"
        )
        print(f"statements ({label}): {r['statements_top']}")


async def amain(args: argparse.Namespace) -> None:
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, SQLite {sqlite3.sqlite_version}, aiogram "
        f"{aiogram.__version__}; pinned to CPU 0: {args.pinned}; load average at start "
        f"{load_average()}"
    )
    with tempfile.TemporaryDirectory(prefix="bench-telegram-") as folder:
        base = await baseline(args, Path(folder) / "baseline")
        runs: dict[str, dict[str, Any]] = {}
        if not args.skip_held:
            runs["bridge, processing held"] = await bridge_run(
                args, Path(folder) / "held", hold=True
            )
        runs["bridge, both at once"] = await bridge_run(args, Path(folder) / "both", hold=False)
    report(args, base, runs)
    print(f"load average at end {load_average()}; the run took {time.perf_counter() - START:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--updates", type=int, default=1000)
    parser.add_argument("--chats", type=int, default=200)
    parser.add_argument("--limit", type=float, default=60.0, help="seconds to wait per run")
    parser.add_argument("--no-pin", action="store_true", help="do not pin to CPU 0")
    parser.add_argument("--skip-held", action="store_true", help="only the as-in-service run")
    parser.add_argument("--profile", action="store_true", help="cProfile the bridge runs")
    args = parser.parse_args()
    args.pinned = not args.no_pin and (os.cpu_count() or 1) >= 2
    pin(0 if args.pinned else None)
    # The scheduler warns about yesterday's digests, missed on a fresh store: not news here.
    for name in ("skolebro.digests", "skolebro.scheduler"):
        logging.getLogger(name).setLevel(logging.ERROR)
    asyncio.run(amain(args))


if __name__ == "__main__":
    main()
