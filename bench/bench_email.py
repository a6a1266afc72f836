"""E-mail in and out over real SMTP on loopback: the bridge beside bare aiosmtplib/aiosmtpd.

Run: .venv/bin/python bench/bench_email.py [--mails 500] [--outbound 1000]

(a) Inbound. A roster of `--mails` guardians (+ a few for the warm-up), each with one child
in u-fjell (tests/world.py's `write_roster`: guardian i is g{i}@example.no, child "Barn{i}").
Guardian i sends one mail to `u-fjell@<reply_domain>`: half absence reports ("Barn3 er syk i
dag"), half messages to the school. A client in a separate process sends them over
`--connections` concurrent SMTP connections (aiosmtplib, several mails per connection, as
an MTA does), as fast as the answers come. Measured, in the same run:

- baseline: the same mails to a bare aiosmtpd sink (`adapters.fakes.smtp.FakeSmtp`, which
  parses each mail and keeps it): accepted (250) per second;
- bridge: `tests.world.running_world(email=True)`, a real `Bridge` on a fresh SQLite file
  with its mail listener (RCPT check, parse + filters in a worker thread, one committed
  inbound event per mail before the 250), inbox worker and outbox (confirmations go out
  through `MailSender` to the world's `FakeSmtp`, in this process, paced by `[email]
  max_per_second`, 20/s by default, which the world keeps). Twice, each on a fresh store
  after a warm-up of 20 mails:
  - processing held: the inbox worker takes nothing until the client is done (accepting
    alone), then everything (processing alone);
  - both at once, as in service: accepted per second, and processed per second = the
    time from the first mail until every inbound event is processed.

Also printed: the CPU of `adapters.mail_in.analyse` alone on the same mails, SQL statements
per mail (counted on the engine), and, with `--profile`, a cProfile of the event-loop
thread's CPU by library and by function.

(b) Outbound. `--outbound` staff notification mails (the shape `bridge.staff_notices` makes:
a `mail_content` JSON body with Reply-To token, From display name, Auto-Submitted) through
`adapters.mail_out.MailSender` with one pooled connection, into a `FakeSmtp` running in a
separate process, one caller at a time (`--concurrent` adds 32 callers sharing the pool, as
the outbox calls it). Baseline: aiosmtplib's `sendmail` over one connection of the very
bytes `render_message` makes (rendered before the clock starts), i.e. the same bytes
without our code in the timed loop.

The server under test (the listener or the sender) is pinned to CPU 0 and the other side
to CPU 1 (`--no-pin` to let the scheduler place them). CPU seconds per item of each
process are printed beside wall time: on a shared machine they move far less than rates.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import multiprocessing
import os
import platform
import sqlite3
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from email.utils import format_datetime, make_msgid
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # tests.world is not an installed package
    sys.path.insert(0, str(REPO))

import aiosmtplib  # noqa: E402
from common import (  # noqa: E402
    Profiler,
    StatementCounter,
    cpu_seconds,
    load_average,
    migrated_sqlite,
    pin,
)
from sqlalchemy import func, select  # noqa: E402

from adapters.fakes.smtp import FakeSmtp  # noqa: E402
from adapters.mail_filters import Envelope as MailEnvelope  # noqa: E402
from adapters.mail_in import analyse  # noqa: E402
from adapters.mail_out import MailSender, content_for, render_message  # noqa: E402
from bridge.config import parse_config  # noqa: E402
from bridge.domain import Channel, Outgoing, mail_content  # noqa: E402
from bridge.store import tables as t  # noqa: E402
from tests.world import running_world, write_roster  # noqa: E402

REPLY_DOMAIN = "svar.example.kommune.no"  # what running_world configures
FROM_ADDRESS = "skolebro@example.kommune.no"
START = time.perf_counter()
WARMUP = 20  # mails (from their own guardians) processed before the clock starts
# Guardian i writes about "Barn{i}"; even bodies are absence reports, odd ones messages.
BODIES = [
    "Barn{i} er syk i dag.\n\nHilsen\nForesatt{i}",
    "Hei!\nKan Barn{i} ta med kake til klassen på fredag? Hun har bursdag.\n\nMvh Foresatt{i}",
    "Hei, Barn{i} er syk og blir hjemme i dag og i morgen.\n\nVennlig hilsen\nForesatt{i} Test",
    "Hvor er gymtøyet til Barn{i}? Det ble glemt i garderoben i går.\n\nForesatt{i}",
    "Barn{i} har vondt i hodet og er hjemme i dag.\n\nSendt fra min iPhone",
    "Takk for informasjonen om turdagen. Barn{i} gleder seg!\n\nHilsen Foresatt{i}",
]
SUBJECTS = ["Fravær", "Spørsmål", "Barn{i}", "Gymtøy", "Syk", "Turdag"]


# -- helpers --------------------------------------------------------------------------------


def percentile(values: list[float], p: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(p / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


@dataclass
class Mail:
    sender: str
    rcpt: str
    raw: bytes


def guardian_mail(i: int, tag: str) -> Mail:
    """Guardian i writes to the school, as a mail program would."""
    sender = f"g{i}@example.no"
    rcpt = f"u-fjell@{REPLY_DOMAIN}"
    msg = EmailMessage()
    msg["From"] = f"Foresatt{i} Test <{sender}>"
    msg["To"] = f"Fjellsiden skole <{rcpt}>"
    msg["Subject"] = SUBJECTS[i % len(SUBJECTS)].format(i=i)
    msg["Date"] = format_datetime(datetime.now(UTC))
    msg["Message-ID"] = make_msgid(idstring=f"{tag}{i}", domain="mail.example.no")
    msg["User-Agent"] = "Mozilla Thunderbird"
    msg.set_content(BODIES[i % len(BODIES)].format(i=i))
    return Mail(sender, rcpt, msg.as_bytes(policy=SMTP_POLICY))


# -- the SMTP client (its own process) ---------------------------------------------------


async def _send_over(
    port: int, mails: list[Mail], codes: Counter[int], latencies: list[float]
) -> None:
    smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, local_hostname="mx.example.no")
    await smtp.connect()
    try:
        for mail in mails:
            started = time.perf_counter()
            try:
                _, reply = await smtp.sendmail(mail.sender, [mail.rcpt], mail.raw)
                code = int(reply.split()[0]) if reply[:3].isdigit() else 250
            except aiosmtplib.SMTPRecipientsRefused as e:
                code = e.recipients[0].code if e.recipients else 550
            except aiosmtplib.SMTPResponseException as e:
                code = e.code
            codes[code] += 1
            latencies.append(time.perf_counter() - started)
    finally:
        try:
            await smtp.quit()
        except aiosmtplib.SMTPException:
            smtp.close()


async def _client(port: int, mails: list[Mail], connections: int) -> dict[str, Any]:
    codes: Counter[int] = Counter()
    latencies: list[float] = []
    shares = [mails[k::connections] for k in range(connections)]
    cpu0, started = cpu_seconds(), time.perf_counter()
    await asyncio.gather(*(_send_over(port, share, codes, latencies) for share in shares if share))
    return {
        "seconds": time.perf_counter() - started,
        "cpu": cpu_seconds() - cpu0,
        "codes": dict(codes),
        "p50": percentile(latencies, 50),
        "p99": percentile(latencies, 99),
    }


def client_process(conn: Connection, cpu: int | None) -> None:
    """Receive (port, mails, connections), wait for "go", send, answer with the figures."""
    pin(cpu)
    port, mails, connections = conn.recv()
    conn.send("ready")
    conn.recv()  # go
    conn.send(asyncio.run(_client(port, mails, connections)))
    conn.close()


async def _recv(conn: Connection) -> Any:
    """conn.recv() without blocking the event loop (the server under test runs on it)."""
    if not conn.poll():
        loop = asyncio.get_running_loop()
        ready = asyncio.Event()
        loop.add_reader(conn.fileno(), ready.set)
        try:
            await ready.wait()
        finally:
            loop.remove_reader(conn.fileno())
    return conn.recv()


class Client:
    """The client process: started before the clock, told to go, joined after."""

    def __init__(self, port: int, mails: list[Mail], connections: int, cpu: int | None) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=client_process, args=(child, cpu), daemon=True)
        self.process.start()
        self.conn.send((port, mails, connections))

    async def ready(self) -> None:
        assert await _recv(self.conn) == "ready"

    def go(self) -> None:
        self.conn.send("go")

    async def result(self) -> dict[str, Any]:
        result = await _recv(self.conn)
        self.process.join(5)
        return dict(result)


# -- (a) inbound --------------------------------------------------------------------------


async def inbound_baseline(args: argparse.Namespace, mails: list[Mail]) -> dict[str, Any]:
    sink = FakeSmtp()
    await sink.start()
    try:
        client = Client(sink.port, mails, args.connections, args.client_cpu)
        await client.ready()
        cpu0 = cpu_seconds()
        client.go()
        result = await client.result()
        result["server_cpu"] = cpu_seconds() - cpu0
        result["stored"] = len(sink.messages)
    finally:
        await sink.stop()
    return result


async def _event_counts(engine: Any) -> Counter[str]:
    e = t.inbound_events
    async with engine.connect() as conn:
        rows = await conn.execute(select(e.c.status, func.count()).group_by(e.c.status))
        return Counter({status: int(n) for status, n in rows})


async def _wait_processed(engine: Any, target: int, limit: float) -> float | None:
    """Poll until `target` events are processed or dead; the perf_counter() then, or None."""
    while time.perf_counter() < limit:
        counts = await _event_counts(engine)
        if counts["processed"] + counts["dead"] >= target:
            return time.perf_counter()
        await asyncio.sleep(0.1)
    return None


async def inbound_bridge(
    args: argparse.Namespace,
    folder: Path,
    mails: list[Mail],
    warmup: list[Mail],
    *,
    hold: bool,
) -> dict[str, Any]:
    """The bridge taking `mails`. With `hold`, the inbox worker processes nothing until
    the client is done (accepting alone), then everything (processing alone); without,
    both run at once, as in service."""
    await asyncio.to_thread(folder.mkdir)
    url = await migrated_sqlite(folder)
    guardians = [(f"gd-{i}", "email", "nb") for i in range(len(mails) + len(warmup))]
    roster = write_roster(folder / "roster.csv", guardians)
    n = len(mails)
    async with running_world(url, folder, roster, email=True) as world:
        assert world.smtp is not None
        engine = world.bridge.engine
        worker = world.bridge.inbox
        port = world.bridge.mail_listener.port
        # Warm-up (first-use costs: lexicons, holidays, compiled queries), then a clean slate.
        warm = Client(port, warmup, 1, args.client_cpu)
        await warm.ready()
        warm.go()
        await warm.result()
        await _wait_processed(engine, len(warmup), time.perf_counter() + 30)
        before = await _event_counts(engine)
        done_before = before["processed"] + before["dead"]
        sink_before = len(world.smtp.messages)

        released = asyncio.Event()
        if hold:  # the instance's method only; the worker loop itself is unchanged
            run_once = worker.run_once

            async def held(limit: int = 100) -> int:
                return await run_once(limit) if released.is_set() else 0

            worker.run_once = held  # type: ignore[method-assign]
        else:
            released.set()

        client = Client(port, mails, args.connections, args.client_cpu)
        await client.ready()
        statements = StatementCounter(engine)
        profiler = Profiler(args.profile)
        cpu0, main0, t0 = cpu_seconds(), time.thread_time(), time.perf_counter()
        with profiler:
            client.go()
            result_task = asyncio.ensure_future(client.result())
            accept_end: float | None = None
            processed_at_accept_end = 0
            drained_at: float | None = None
            limit = t0 + args.drain_limit
            while time.perf_counter() < limit:
                await asyncio.sleep(0.1)
                counts = await _event_counts(engine)
                done = counts["processed"] + counts["dead"] - done_before
                if accept_end is None and result_task.done():
                    accept_end, cpu_accept = time.perf_counter(), cpu_seconds() - cpu0
                    main_accept = time.thread_time() - main0
                    statements_accept = statements.total
                    processed_at_accept_end = done
                    if hold:
                        released.set()
                        worker.wake.set()
                if done >= n:
                    drained_at = time.perf_counter()
                    break
            cpu_total, main_total = cpu_seconds() - cpu0, time.thread_time() - main0
        profiler.print("bridge, " + ("accepting, then processing" if hold else "both at once"))
        result = await result_task
        if accept_end is None:
            accept_end, cpu_accept = time.perf_counter(), cpu_seconds() - cpu0
            main_accept = time.thread_time() - main0
            statements_accept = statements.total
            processed_at_accept_end = done
        statements_total = statements.total
        counts = await _event_counts(engine)
        async with engine.connect() as conn:
            d = t.deliveries
            kinds = {
                f"{kind}:{channel}": int(count)
                for kind, channel, count in await conn.execute(
                    select(d.c.kind, d.c.channel, func.count()).group_by(d.c.kind, d.c.channel)
                )
            }
            absences = await conn.scalar(
                select(func.count()).select_from(t.absences).where(t.absences.c.channel == "email")
            )
            threads = await conn.scalar(select(func.count()).select_from(t.threads))
        result.update(
            server_cpu_accept=cpu_accept,
            server_cpu_total=cpu_total,
            server_cpu_main=main_total,
            server_cpu_main_accept=main_accept,
            statements_accept=statements_accept,
            statements_total=statements_total,
            statements_top=statements.top(),
            accept_window=accept_end - t0,
            processed_during_accept=processed_at_accept_end,
            drained=None if drained_at is None else drained_at - t0,
            after_accept=None if drained_at is None else drained_at - accept_end,
            processed=counts["processed"] + counts["dead"] - done_before,
            dead=counts["dead"] - before["dead"],
            pending=counts["pending"],
            deliveries=kinds,
            absences=absences,
            threads=threads,
            confirmations_sent=len(world.smtp.messages) - sink_before,
        )
    return result


# -- (b) outbound ---------------------------------------------------------------------------


def sink_process(conn: Connection, cpu: int | None) -> None:
    """A FakeSmtp in its own process: sends its port, then answers "count" until "stop"."""
    pin(cpu)

    async def main() -> None:
        sink = FakeSmtp()
        await sink.start()
        conn.send(sink.port)
        while True:
            command = await _recv(conn)
            if command == "stop":
                break
            conn.send((len(sink.messages), cpu_seconds()))
            sink.messages.clear()
        await sink.stop()

    asyncio.run(main())
    conn.close()


def notification_settings(port: int) -> Any:
    return parse_config(
        f"""
[email]
enabled = true
smtp_host = "127.0.0.1"
smtp_port = {port}
smtp_tls = "none"
from_address = "{FROM_ADDRESS}"
reply_domain = "{REPLY_DOMAIN}"
"""
    )


def notifications(count: int) -> list[Outgoing]:
    """Staff notices as `bridge.staff_notices` writes them (a mail_content JSON body)."""
    out: list[Outgoing] = []
    for i in range(count):
        to = f"laerer{i % 40}@example.kommune.no"
        subject = f"Melding om Barn{i} Test"
        text = "\n".join(
            [
                f"Foresatt{i} Test skrev om Barn{i} Test:",
                "",
                f"Hei! Kan Barn{i} ta med kake til klassen på fredag? Hun har bursdag, og vi "
                "lurer på om noen i klassen er allergiske mot nøtter eller egg.",
                "",
                "Svar på denne e-posten for å svare den foresatte.",
            ]
        )
        body = mail_content(
            to=to,
            subject=subject,
            text=text,
            reply_to=f"r-{i:032x}@{REPLY_DOMAIN}",
            from_display="Fjellsiden skole (skolebro)",
            auto_submitted=True,
        )
        out.append(Outgoing(f"dl-{i:08d}", Channel.EMAIL, to, body, subject))
    return out


async def _timed(coro_factory: Any, sink: Connection) -> dict[str, Any]:
    sink.send("count")  # clears the sink's records; its CPU so far
    _, sink_cpu0 = await _recv(sink)
    cpu0, t0 = cpu_seconds(), time.perf_counter()
    sent = await coro_factory()
    seconds, cpu = time.perf_counter() - t0, cpu_seconds() - cpu0
    sink.send("count")
    received, sink_cpu1 = await _recv(sink)
    return {
        "seconds": seconds,
        "cpu": cpu,
        "sent": sent,
        "received": received,
        "sink_cpu": sink_cpu1 - sink_cpu0,
    }


async def outbound(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    ctx = multiprocessing.get_context("spawn")
    sink, child = ctx.Pipe()
    process = ctx.Process(target=sink_process, args=(child, args.client_cpu), daemon=True)
    process.start()
    try:
        port = await _recv(sink)
        settings = notification_settings(port)
        outs = notifications(args.outbound)
        warm = notifications(20)
        results: dict[str, dict[str, Any]] = {}

        # What MailSender puts on the wire, built up front for the baseline.
        messages = []
        build_cpu0 = cpu_seconds()
        for out in outs:
            content = content_for(out)
            data, _ = render_message(content, settings, delivery_id=out.delivery_id)
            messages.append((data, content.reply_to or FROM_ADDRESS, out.address))
        results["build"] = {"cpu": cpu_seconds() - build_cpu0, "sent": len(messages)}

        # The baseline: one connection, opened and warmed before the clock starts.
        smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, local_hostname="example.kommune.no")
        await smtp.connect()
        for data, mail_from, rcpt in messages[:20]:
            await smtp.sendmail(mail_from, [rcpt], data)

        async def baseline_loop() -> int:
            ok = 0
            for data, mail_from, rcpt in messages:
                errors, _ = await smtp.sendmail(mail_from, [rcpt], data)
                ok += not errors
            return ok

        results["baseline"] = await _timed(baseline_loop, sink)
        await smtp.quit()

        sender = MailSender(settings)
        for out in warm:  # opens the pooled connection
            await sender.send(out)

        async def sequential() -> int:
            ok = 0
            for out in outs:
                result = await sender.send(out)
                ok += result.outcome.value == "sent"
            return ok

        async def concurrent() -> int:
            queue = list(outs)
            ok = 0

            async def worker() -> None:
                nonlocal ok
                while queue:
                    result = await sender.send(queue.pop())
                    ok += result.outcome.value == "sent"

            await asyncio.gather(*(worker() for _ in range(32)))
            return ok

        results["mailsender"] = await _timed(sequential, sink)
        if args.concurrent:
            results["mailsender_32"] = await _timed(concurrent, sink)
        await sender.close()
        sink.send("stop")
        return results
    finally:
        process.join(10)
        if process.is_alive():
            process.terminate()


# -- report --------------------------------------------------------------------------------


def rate(n: float, seconds: float | None) -> str:
    return f"{n / seconds:,.0f}/s" if seconds else "-"


def ms(cpu: float, n: int) -> str:
    return f"{cpu / n * 1000:.2f} ms" if n else "-"


def analyse_cpu(mails: list[Mail]) -> float:
    """CPU seconds per mail of `adapters.mail_in.analyse` (parse, filters, text) alone,
    in this thread: what the listener runs in a worker thread for each DATA."""
    env = [
        MailEnvelope(
            mail_from=m.sender,
            rcpt_tos=(m.rcpt,),
            our_domain=FROM_ADDRESS.rpartition("@")[2],
            trusted_authserv_ids=(),
        )
        for m in mails
    ]
    start = time.thread_time()
    for mail, envelope in zip(mails, env, strict=True):
        analyse(mail.raw, envelope, datetime.now(UTC))
    return (time.thread_time() - start) / len(mails)


def print_inbound(
    base: dict[str, Any], held: dict[str, Any], both: dict[str, Any], n: int, connections: int
) -> None:
    def accepted(r: dict[str, Any]) -> int:
        return int(r["codes"].get(250, 0))

    base_rate = accepted(base) / base["seconds"]

    def acc_rate(r: dict[str, Any]) -> str:
        value = accepted(r) / r["seconds"]
        return f"{value:,.0f} (**{value / base_rate:.2f}**)"

    def latency(r: dict[str, Any]) -> str:
        return f"{r['p50'] * 1000:.1f} / {r['p99'] * 1000:.1f} ms"

    print(f"\n(a) inbound: {n} mails over {connections} SMTP connections")
    print("| | sink (baseline) | bridge, processing held | bridge, both at once |")
    print("| --- | ---: | ---: | ---: |")
    print(
        f"| accepted (250) per second (x sink) | {base_rate:,.0f} | {acc_rate(held)} "
        f"| {acc_rate(both)} |"
    )
    print(f"| replies | {base['codes']} | {held['codes']} | {both['codes']} |")
    print(
        f"| time to send all | {base['seconds']:.2f} s | {held['seconds']:.2f} s "
        f"| {both['seconds']:.2f} s |"
    )
    print(f"| per-mail latency p50 / p99 | {latency(base)} | {latency(held)} | {latency(both)} |")
    print(
        f"| server CPU per mail while accepting | {ms(base['server_cpu'], accepted(base))} "
        f"| {ms(held['server_cpu_accept'], accepted(held))} "
        f"| {ms(both['server_cpu_accept'], accepted(both))} (with processing) |"
    )
    print(
        f"| client CPU per mail | {ms(base['cpu'], n)} | {ms(held['cpu'], n)} "
        f"| {ms(both['cpu'], n)} |"
    )
    h_after, b_all = held["after_accept"], both["drained"]
    print(
        "| processed per second | | "
        + (f"**{n / h_after:,.1f}** (all {n} in {h_after:.2f} s)" if h_after else "not drained")
        + " | "
        + (f"**{n / b_all:,.1f}** (all {n} {b_all:.2f} s after the first mail)" if b_all else "-")
        + " |"
    )
    print(
        f"| processed while mails still arrived | | 0 (held) | {both['processed_during_accept']} "
        f"in {both['accept_window']:.2f} s "
        f"({rate(both['processed_during_accept'], both['accept_window'])}) |"
    )
    if b_all:
        rest = n - both["processed_during_accept"]
        print(
            f"| processed after the last 250 | | | {rest} in {both['after_accept']:.2f} s "
            f"({rate(rest, both['after_accept'])}) |"
        )
    held_cpu = held["server_cpu_total"] - held["server_cpu_accept"]
    print(
        f"| bridge CPU per mail processed | | {ms(held_cpu, n)} (processing alone) "
        f"| {ms(both['server_cpu_total'], n)} (accepting + processing) |"
    )
    held_main = held["server_cpu_main"] - held["server_cpu_main_accept"]
    print(
        "| ... of which the event-loop thread (the rest: aiosqlite's thread, parsing) | "
        f"| {ms(held['server_cpu_main_accept'], n)} accepting, {ms(held_main, n)} processing "
        f"| {ms(both['server_cpu_main'], n)} |"
    )
    held_sql = held["statements_total"] - held["statements_accept"]
    print(
        "| SQL statements per mail (the poll for this table's figures included) | "
        f"| {held['statements_accept'] / n:.1f} accepting, {held_sql / n:.1f} processing "
        f"| {both['statements_total'] / n:.1f} |"
    )
    sink_ms = base["server_cpu"] / max(accepted(base), 1)
    print(
        "| ... of which the world's own sink taking the confirmations (in this process; "
        "estimated at the baseline sink's CPU per mail) | "
        f"| {ms(held['confirmations_sent'] * sink_ms, n)} "
        f"| {ms(both['confirmations_sent'] * sink_ms, n)} |"
    )
    print(
        f"`adapters.mail_in.analyse` alone (parse, filters, text; the listener runs it in a "
        f"worker thread): {base['analyse'] * 1000:.2f} ms CPU per mail"
    )
    for label, r in (("held", held), ("both", both)):
        print(
            f"outcome ({label}): processed {r['processed']}, dead {r['dead']}, pending "
            f"{r['pending']}; {r['absences']} e-mail absences, {r['threads']} threads; "
            f"deliveries queued {r['deliveries']}; {r['confirmations_sent']} mails reached "
            "the world's sink by then"
        )
        print(f"statements ({label}): {r['statements_top']}")


def print_outbound(results: dict[str, dict[str, Any]], m: int) -> None:
    base = results["baseline"]
    print(f"\n(b) outbound: {m} staff notification mails, one SMTP connection")
    print("| | mails/s | vs baseline | sender CPU per mail | sink CPU per mail | sent / received |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    base_rate = base["sent"] / base["seconds"]
    for key, label in (
        ("baseline", "aiosmtplib `sendmail`, prerendered messages (baseline)"),
        ("mailsender", "`MailSender.send`, one caller at a time"),
        ("mailsender_32", "`MailSender.send`, 32 concurrent callers, pool of 1"),
    ):
        r = results.get(key)
        if r is None:
            continue
        r_rate = r["sent"] / r["seconds"]
        print(
            f"| {label} | {r_rate:,.0f} | {r_rate / base_rate:.2f} | {ms(r['cpu'], r['sent'])} "
            f"| {ms(r['sink_cpu'], r['received'])} | {r['sent']} / {r['received']} |"
        )
    b = results["build"]
    print(f"`render_message` + `content_for` alone: {ms(b['cpu'], b['sent'])} CPU per mail")


async def amain(args: argparse.Namespace) -> None:
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, SQLite {sqlite3.sqlite_version}, aiosmtplib "
        f"{aiosmtplib.__version__}; load average at start {load_average()}"
    )
    if not args.skip_inbound:
        tag = f"{os.getpid()}-{int(time.time())}-"
        mails = [guardian_mail(i, tag) for i in range(args.mails)]
        warmup = [guardian_mail(args.mails + k, tag) for k in range(WARMUP)]
        base = await inbound_baseline(args, mails)
        base["analyse"] = analyse_cpu(mails)
        with tempfile.TemporaryDirectory(prefix="bench-email-") as folder:
            held = await inbound_bridge(args, Path(folder) / "held", mails, warmup, hold=True)
            both = await inbound_bridge(args, Path(folder) / "both", mails, warmup, hold=False)
        print_inbound(base, held, both, args.mails, args.connections)
    if not args.skip_outbound:
        print_outbound(await outbound(args), args.outbound)
    print(f"load average at end {load_average()}; the run took {time.perf_counter() - START:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mails", type=int, default=500, help="inbound mails (a)")
    parser.add_argument("--connections", type=int, default=4, help="client SMTP connections")
    parser.add_argument("--outbound", type=int, default=1000, help="outbound mails (b)")
    parser.add_argument(
        "--concurrent", action="store_true", help="(b) also with 32 concurrent callers"
    )
    parser.add_argument("--drain-limit", type=float, default=75.0, help="seconds to wait (a)")
    parser.add_argument("--no-pin", action="store_true", help="do not pin to CPUs")
    parser.add_argument("--profile", action="store_true", help="cProfile the bridge (a)")
    parser.add_argument("--skip-inbound", action="store_true")
    parser.add_argument("--skip-outbound", action="store_true")
    args = parser.parse_args()
    pinned = not args.no_pin and (os.cpu_count() or 1) >= 2
    args.client_cpu = 1 if pinned else None
    pin(0 if pinned else None)
    # The scheduler warns about yesterday's digests, missed on a fresh store: not news here.
    for name in ("skolebro.digests", "skolebro.scheduler"):
        logging.getLogger(name).setLevel(logging.ERROR)
    asyncio.run(amain(args))


if __name__ == "__main__":
    main()
