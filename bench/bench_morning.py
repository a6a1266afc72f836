"""The morning rush of a municipality, replayed against a running `skolebro run` (issue #10).

Run: .venv/bin/python bench/bench_morning.py [--compress 60] [--texts 20000]
     [--guardians 70000] [--quick]          (or `make bench-morning`)

What it does:

- writes a roster (SPEC section 4): `--students` students in schools of 1,000 (each
  with its SFO, 40% of children enrolled there), `--guardians` guardians (every student
  has one; the rest are second guardians; every fifth guardian has two children), first
  channels spread over SMS, Telegram and e-mail; `skolebro init`, `import-roster` and
  `apikey create` as the CLI runs them; every Telegram-first guardian's chat is linked by
  inserting its `telegram_links` row (what a shared contact or `/start <code>` leaves);
- starts the Twilio, Telegram (webhook mode) and SMTP fakes in this process, with one
  shared pace of `--send-rate` (1,500) sends/s over the three, and the bridge as a
  `skolebro run` subprocess on SQLite (pinned to CPU 0, this process to CPU 1);
- replays `--minutes` (90) of morning at `--compress` times real speed: `--texts`
  absence texts, arriving as a Poisson process whose rate follows a morning curve with
  one peak minute at 10x the average, each on the sender's first channel (SMS: the
  Twilio fake's signed webhook; Telegram: a webhook POST with the secret token; e-mail:
  SMTP to `<unit_id>@reply_domain`). 5% are clarifying dialogues: a parent with two
  children names neither, the bridge asks (numbered SMS lines, Telegram buttons), and
  the parent answers "1" (or presses button 1) a "think time" after the question
  reaches the fake;
- at the middle of the morning, a storm: one urgent announcement per school through the
  JSON API, to every guardian (70,000), timed until the fakes have taken all of it;
- samples every second: queue depth (`/metrics` `skolebro_outbox_depth`, pending inbound
  events in the store), the bridge's RSS, sends at the fakes;
- reports acknowledgement latency percentiles (from each request's scheduled time to
  the 200 / 250), processing lag (`processed_at - received_at` of every event, from the
  store), delivery throughput, drain time, peak RSS of each process and the database
  size, each beside its goal, and draws `bench/morning.png`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import json
import math
import os
import random
import re
import resource
import secrets
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import aiosmtplib
from aiohttp import web
from aiosmtpd.smtp import SMTP, Envelope, Session
from bench_roster import school_units
from common import (
    cpu_seconds,
    free_port,
    load_average,
    own_peak_rss_mb,
    percentile,
    pin,
    proc_memory_mb,
    work_folder,
)

from adapters.fakes.smtp import FakeSmtp
from adapters.fakes.telegram import FakeTelegram
from adapters.fakes.twilio import FakeTwilio
from bridge.roster.csv_rows import COLUMNS

REPO = Path(__file__).resolve().parent.parent
SKOLEBRO = Path(sys.executable).parent / "skolebro"
ACCOUNT = "AC" + "0f1e2d3c" * 4
SCHOOL_NUMBER = "+4759440000"
REPLY_DOMAIN = "svar.example.kommune.no"
FIRST_MOBILE = 4790000000  # guardian g texts from +47 9000 0000 + g
FIRST_CHAT = 810_000_000  # guardian g's Telegram chat (a private chat: id = user id)
FIRST_UPDATE = 100_000_000  # our update ids; the fake's own start at 700,000,001
STORM_MARK = "STORM"
STORM_TEXT = f"{STORM_MARK}: Alle skoler er stengt i dag på grunn av uværet. Hold barna hjemme."
THINK_SECONDS = 20.0  # morning seconds a parent takes to answer the bridge's question
FIRST = ["Ola", "Kari", "Aisha", "Noah", "Emma", "Jakob", "Nora", "Filip", "Sara", "Mohammed"]
LAST = ["Nordmann", "Hansen", "Johansen", "Olsen", "Larsen", "Hassan", "Berg", "Vik", "Dahl"]
CHANNELS = ("sms;email", "telegram;sms;email", "email;sms")  # by guardian id mod 3
ABSENCES = [
    "{n} er syk i dag",
    "{n} er syk i dag og i morgen",
    "Hei! {n} er dårlig og blir hjemme i dag. Hilsen {p}",
    "{n} har tannlege kl 10 og kommer på skolen kl 12",
    "{n} blir hentet kl 13 i dag",
    "{n} har feber og er hjemme i dag",
    "{n} kommer ikke på SFO i dag",
    "{n} er forkjølet og blir hjemme resten av uka",
]
NAMELESS = ["Syk i dag", "Er syk og blir hjemme i dag", "Blir hjemme i dag, er dårlig"]
GOALS = {"ack_p99_ms": 50.0, "lag_s": 2.0, "storm_s": 60.0, "rss_mb": 300.0}


# -- the municipality ------------------------------------------------------------------------


def child_name(s: int) -> str:
    return FIRST[s % len(FIRST)]


def children_of(g: int, students: int) -> list[int]:
    first = g % students
    return [first, (first + 1) % students] if g % 5 == 0 else [first]


def first_channel(g: int) -> str:
    return CHANNELS[g % 3].split(";")[0]


def write_roster(path: Path, guardians: int, students: int) -> int:
    """Write the roster CSV; return the number of schools."""
    schools = max(2, students // 1000)
    rows: list[dict[str, str]] = []
    for s in range(schools):
        rows.extend(school_units(s))
        for grade in range(1, 8):
            rows.append({"kind": "group", "unit_id": f"u-{s}", "group_id": f"g-{grade}",
                         "name": f"{grade}A"})  # fmt: skip
            rows.append({"kind": "staff", "unit_id": f"u-{s}", "staff_id": f"st-{s}-{grade}",
                         "first_name": "Lærer", "last_name": f"{s}-{grade}",
                         "email": f"laerer{s}.{grade}@example.kommune.no", "groups": f"g-{grade}",
                         "notify": ("each", "digest", "both")[grade % 3]})  # fmt: skip
        rows.append({"kind": "staff", "unit_id": f"u-{s}-sfo", "staff_id": f"st-{s}-sfo",
                     "first_name": "SFO", "last_name": f"Leder {s}", "notify": "both",
                     "email": f"sfoleder{s}@example.kommune.no"})  # fmt: skip
    for i in range(students):
        school = i % schools
        sfo = f"u-{school}-sfo" if i % 10 < 4 else ""
        rows.append({"kind": "student", "unit_id": f"u-{school}", "student_id": f"s-{i}",
                     "first_name": child_name(i), "last_name": LAST[(i // 10) % len(LAST)],
                     "sfo_unit_id": sfo, "groups": f"g-{(i // schools) % 7 + 1}"})  # fmt: skip
    for g in range(guardians):
        rows.append({"kind": "guardian", "guardian_id": f"gd-{g}", "first_name": "Forelder",
                     "last_name": LAST[g % len(LAST)], "mobile": f"+{FIRST_MOBILE + g}",
                     "email": f"foresatt{g}@example.no",
                     "language": "en" if g % 20 == 19 else "nb", "channels": CHANNELS[g % 3],
                     "students": ";".join(f"s-{c}" for c in children_of(g, students))})  # fmt: skip
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS, restval="")
        writer.writeheader()
        writer.writerows(rows)
    return schools


def config_text(
    port: int,
    twilio: str,
    telegram: str,
    smtp_port: int,
    mail_port: int,
    database_url: str = "sqlite+aiosqlite:///skolebro.db",
) -> str:
    per_channel = 1500  # the fakes' shared pace is what binds, as the providers' would
    return f"""[bridge]
public_url = "http://127.0.0.1:{port}"
database_url = "{database_url}"

[http]
host = "127.0.0.1"
port = {port}

[sms]
enabled = true
account_sid = "{ACCOUNT}"
auth_token_env = "BENCH_MORNING_TWILIO_TOKEN"
from_number = "{SCHOOL_NUMBER}"
api_base_url = "{twilio}"
max_per_second = {per_channel}

[telegram]
enabled = true
token_env = "BENCH_MORNING_BOT_TOKEN"
mode = "webhook"
api_base_url = "{telegram}"
webhook_secret_env = "BENCH_MORNING_WEBHOOK_SECRET"
max_per_second = {per_channel}

[email]
enabled = true
smtp_host = "127.0.0.1"
smtp_port = {smtp_port}
smtp_tls = "none"
reply_domain = "{REPLY_DOMAIN}"
listen_host = "127.0.0.1"
listen_port = {mail_port}
max_per_second = {per_channel}

[delivery]
quiet_hours = ""

[digests]
enabled = false
"""


# -- the fakes, sharing one pace ----------------------------------------------------------------


class Pace:
    """At most `rate` sends per second over all fakes: a send waits for its slot."""

    def __init__(self, rate: float) -> None:
        self.interval = 1.0 / rate
        self.next = 0.0

    async def take(self) -> None:
        now = time.monotonic()
        slot = max(now, self.next)
        self.next = slot + self.interval
        if slot > now:
            await asyncio.sleep(slot - now)


@dataclass
class Sends:
    """What the fakes took: (monotonic time, channel, storm?) per send."""

    log: list[tuple[float, str, bool]] = field(default_factory=list)
    storm: int = 0
    storm_last: float = 0.0
    storm_by_channel: Counter[str] = field(default_factory=Counter)
    storm_last_by_channel: dict[str, float] = field(default_factory=dict)

    def add(self, channel: str, text: str) -> None:
        now = time.monotonic()
        storm = STORM_MARK in text
        self.log.append((now, channel, storm))
        if storm:
            self.storm += 1
            self.storm_last = now
            self.storm_by_channel[channel] += 1
            self.storm_last_by_channel[channel] = now


class PacedTwilio(FakeTwilio):
    def __init__(self, pace: Pace, sends: Sends, on_sms: Any, **kw: Any) -> None:
        super().__init__(**kw)
        self.pace, self.sends, self.on_sms = pace, sends, on_sms

    async def _create(self, request: web.Request) -> web.Response:
        await self.pace.take()
        response = await super()._create(request)
        if response.status == 201 and self.sent:
            last = self.sent[-1]
            self.sends.add("sms", last.body)
            self.on_sms(last.to, last.body)
        return response


class PacedTelegram(FakeTelegram):
    def __init__(self, pace: Pace, sends: Sends, on_message: Any, token: str) -> None:
        super().__init__(token)
        self.pace, self.sends, self.on_message = pace, sends, on_message

    async def _send_message(self, p: dict[str, Any]) -> Any:
        await self.pace.take()
        message = await super()._send_message(p)
        self.sends.add("telegram", str(message.get("text", "")))
        self.on_message(message)
        return message

    def callback(self, chat_id: int, message: dict[str, Any], data: str) -> dict[str, Any]:
        """A press on the button `data` of the bot's `message`, as the update Telegram sends."""
        query_id = str(secrets.randbelow(10**18) + 10**18)
        self._callbacks[query_id] = False  # so answerCallbackQuery finds it
        return {
            "id": query_id,
            "from": {"id": chat_id, "is_bot": False, "first_name": "Forelder"},
            "message": message,
            "chat_instance": str(chat_id * 7919 % 10**18),
            "data": data,
        }


class PacedSmtp(FakeSmtp):
    def __init__(self, pace: Pace, sends: Sends) -> None:
        super().__init__()
        self.pace, self.sends = pace, sends

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        await self.pace.take()
        raw = envelope.original_content or b""
        head = raw[: raw.find(b"\r\n\r\n")].decode("ascii", "replace")
        self.sends.add("email", STORM_MARK if STORM_MARK in head else "")
        self.messages.clear()  # nobody reads them; 70,000 parsed mails would cost memory
        return await super().handle_DATA(server, session, envelope)


# -- the morning -----------------------------------------------------------------------------


@dataclass
class Arrival:
    at: float  # seconds after the run's start (compressed)
    guardian: int
    channel: str
    text: str
    dialogue: bool = False


def morning_weights(minutes: int) -> list[float]:
    """Relative arrival rate per minute: a morning bump, with one peak minute at 10x the
    average rate of the whole period."""
    centre, width = 0.4 * minutes, 0.22 * minutes
    w = [0.15 + math.exp(-(((m + 0.5 - centre) / width) ** 2)) for m in range(minutes)]
    peak = max(range(minutes), key=w.__getitem__)
    others = sum(w) - w[peak]
    w[peak] = 10 * others / (minutes - 10)  # then w[peak] = 10 * sum(w) / minutes
    return w


def schedule(args: argparse.Namespace, rnd: random.Random) -> tuple[list[Arrival], int]:
    """The morning's texts in time order, and the peak minute's index."""
    weights = morning_weights(args.minutes)
    peak = max(range(args.minutes), key=weights.__getitem__)
    order = list(range(args.guardians))
    rnd.shuffle(order)
    n_dialogues = round(args.texts * args.dialogues)
    # Dialogues: a parent with two children on SMS or Telegram who names neither.
    askable = [g for g in order if g % 5 == 0 and first_channel(g) in ("sms", "telegram")]
    dialogue = askable[:n_dialogues]
    taken = set(dialogue)
    plain = [g for g in order if g not in taken][: args.texts - len(dialogue)]
    if len(plain) + len(dialogue) < args.texts:
        raise SystemExit("more texts than guardians: each guardian texts once")
    minutes = rnd.choices(range(args.minutes), weights=weights, k=args.texts)
    arrivals: list[Arrival] = []
    for k, g in enumerate(dialogue + plain):
        at = (minutes[k] + rnd.random()) * 60 / args.compress
        if k < len(dialogue):
            text = NAMELESS[k % len(NAMELESS)]
        else:
            child = children_of(g, args.students)[0]
            text = ABSENCES[k % len(ABSENCES)].format(n=child_name(child), p="Forelder")
        arrivals.append(Arrival(at, g, first_channel(g), text, k < len(dialogue)))
    arrivals.sort(key=lambda a: a.at)
    return arrivals, peak


@dataclass
class Ack:
    scheduled: float  # monotonic (seconds since the morning began, once reported)
    latency: float  # seconds from `scheduled` to the answer
    channel: str
    status: int
    kind: str  # "text", "answer"


class Morning:
    """The load generator, the fakes' hooks and the sampler, on this process's loop."""

    def __init__(
        self,
        args: argparse.Namespace,
        folder: Path,
        port: int,
        twilio_cls: type[PacedTwilio] = PacedTwilio,
    ) -> None:
        self.args = args
        self.folder = folder
        self.base = f"http://127.0.0.1:{port}"
        self.pace = Pace(args.send_rate)
        self.sends = Sends()
        self.twilio_token = secrets.token_hex(16)
        self.bot_token = f"{secrets.randbelow(9 * 10**8) + 10**8}:{secrets.token_urlsafe(26)}"
        self.webhook_secret = secrets.token_urlsafe(24)
        self.twilio = twilio_cls(
            self.pace,
            self.sends,
            self._on_sms,
            account_sid=ACCOUNT,
            auth_token=self.twilio_token,
            phone_number=SCHOOL_NUMBER,
        )
        self.telegram = PacedTelegram(self.pace, self.sends, self._on_telegram, self.bot_token)
        self.smtp = PacedSmtp(self.pace, self.sends)
        self.acks: list[Ack] = []
        self.waiting: dict[str, int] = {}  # number or chat id -> guardian, asked nothing yet
        self.answered = 0
        self.samples: list[dict[str, float]] = []
        self.t0 = 0.0
        self.update_id = FIRST_UPDATE
        self.seq = 0
        self.tasks: set[asyncio.Task[Any]] = set()
        self.session: aiohttp.ClientSession | None = None
        self.smtp_slots = asyncio.Semaphore(64)
        self.mail_port = 0
        self.bridge_pid = 0
        self.storm: dict[str, Any] = {}
        self.api_key = ""
        self.db = folder / "skolebro.db"
        self.schools = 0

    # -- start-up ------------------------------------------------------------------------

    async def start_fakes(self, stack: contextlib.AsyncExitStack) -> dict[str, str]:
        """Start the fakes; return the environment that holds the bridge's secrets."""
        for fake in (self.twilio, self.telegram, self.smtp):
            await stack.enter_async_context(fake)
        env = dict(os.environ)
        env.update(
            BENCH_MORNING_TWILIO_TOKEN=self.twilio_token,
            BENCH_MORNING_BOT_TOKEN=self.bot_token,
            BENCH_MORNING_WEBHOOK_SECRET=self.webhook_secret,
        )
        return env

    def write_config(self, folder: Path, port: int, database_url: str | None = None) -> Path:
        """`folder`/skolebro.toml for a bridge on `port`, pointed at this run's fakes."""
        self.mail_port = free_port()
        extra = {"database_url": database_url} if database_url else {}
        (folder / "skolebro.toml").write_text(
            config_text(
                port,
                self.twilio.base_url,
                self.telegram.base_url,
                self.smtp.port,
                self.mail_port,
                **extra,
            )
        )
        return folder

    def link_chats(self, guardians: int) -> None:
        for g in range(guardians):
            if first_channel(g) == "telegram":
                self.telegram.add_chat(FIRST_CHAT + g, first_name="Forelder", last_name="Test")

    # -- sending as parents -------------------------------------------------------------

    def spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def send(self, a: Arrival, scheduled: float, kind: str = "text") -> None:
        if a.dialogue:  # before sending: the question may come back before our 200 does
            address = f"+{FIRST_MOBILE + a.guardian}" if a.channel == "sms" else ""
            self.waiting[address or str(FIRST_CHAT + a.guardian)] = a.guardian
        try:
            if a.channel == "sms":
                status = await self._sms(a.guardian, a.text)
            elif a.channel == "telegram":
                status = await self._telegram(self._text_update(a.guardian, a.text))
            else:
                status = await self._mail(a.guardian, a.text)
        except (aiohttp.ClientError, aiosmtplib.SMTPException, OSError, TimeoutError):
            status = 0
        self.acks.append(Ack(scheduled, time.monotonic() - scheduled, a.channel, status, kind))

    async def _sms(self, g: int, text: str) -> int:
        assert self.session is not None
        self.seq += 1
        url = f"{self.base}/webhooks/twilio/sms"
        form = self.twilio.inbound_form(
            f"+{FIRST_MOBILE + g}", SCHOOL_NUMBER, text, sid=f"SM{self.seq:032x}"
        )
        headers = {
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Twilio-Signature": self.twilio.signature(url, form),
        }
        async with self.session.post(url, data=urlencode(form), headers=headers) as resp:
            await resp.read()
            return resp.status

    def _text_update(self, g: int, text: str) -> dict[str, Any]:
        chat = FIRST_CHAT + g
        return {
            "message_id": 1_000_000 + self.update_id,
            "from": {"id": chat, "is_bot": False, "first_name": "Forelder", "language_code": "nb"},
            "chat": {"id": chat, "type": "private", "first_name": "Forelder"},
            "date": int(time.time()),
            "text": text,
        }

    async def _telegram(self, body: dict[str, Any], kind: str = "message") -> int:
        assert self.session is not None
        self.update_id += 1
        update = {"update_id": self.update_id, kind: body}
        headers = {
            "Content-Type": "application/json",
            "X-Telegram-Bot-Api-Secret-Token": self.webhook_secret,
        }
        async with self.session.post(
            f"{self.base}/webhooks/telegram", data=json.dumps(update), headers=headers
        ) as resp:
            await resp.read()
            return resp.status

    async def _mail(self, g: int, text: str) -> int:
        sender = f"foresatt{g}@example.no"
        school = children_of(g, self.args.students)[0] % self.schools
        rcpt = f"u-{school}@{REPLY_DOMAIN}"
        msg = EmailMessage()
        msg["From"] = f"Forelder {LAST[g % len(LAST)]} <{sender}>"
        msg["To"] = rcpt
        msg["Subject"] = "Fravær"
        msg["Date"] = format_datetime(datetime.now(UTC))
        msg["Message-ID"] = make_msgid(idstring=f"m{g}", domain="mail.example.no")
        msg.set_content(text + "\n\nHilsen\nForelder\n\nSendt fra min iPhone")
        raw = msg.as_bytes(policy=SMTP_POLICY)
        async with self.smtp_slots:
            smtp = aiosmtplib.SMTP(
                hostname="127.0.0.1", port=self.mail_port, local_hostname="mx.example.no"
            )
            await smtp.connect()
            try:
                _, reply = await smtp.sendmail(sender, [rcpt], raw)
            finally:
                with contextlib.suppress(aiosmtplib.SMTPException):
                    await smtp.quit()
        return int(reply[:3]) if reply[:3].isdigit() else 250

    # -- the parents' answers to the bridge's questions --------------------------------

    def _on_sms(self, to: str, body: str) -> None:
        g = self.waiting.get(to)
        if g is not None and "\n1: " in "\n" + body:
            del self.waiting[to]
            self.spawn(self._answer(Arrival(0, g, "sms", "1")))

    def _on_telegram(self, message: dict[str, Any]) -> None:
        chat = int(message["chat"]["id"])
        g = self.waiting.get(str(chat))
        rows = (message.get("reply_markup") or {}).get("inline_keyboard") or []
        data = [b.get("callback_data") for row in rows for b in row]
        if g is not None and "c:1" in data:
            del self.waiting[str(chat)]
            query = self.telegram.callback(chat, message, "c:1")
            self.spawn(self._answer(Arrival(0, g, "telegram", ""), query))

    async def _answer(self, a: Arrival, query: dict[str, Any] | None = None) -> None:
        await asyncio.sleep(THINK_SECONDS / self.args.compress)
        scheduled = time.monotonic()
        if query is None:
            await self.send(a, scheduled, "answer")
        else:
            try:
                status = await self._telegram(query, "callback_query")
            except (aiohttp.ClientError, OSError, TimeoutError):
                status = 0
            self.acks.append(
                Ack(scheduled, time.monotonic() - scheduled, "telegram", status, "answer")
            )
        self.answered += 1

    # -- the storm -------------------------------------------------------------------------

    async def storm_now(self) -> None:
        assert self.session is not None
        headers = {"Authorization": f"Bearer {self.api_key}"}
        started = time.monotonic()
        self.storm["start"] = started
        self.storm["sent_before"] = self.sends.storm

        async def one(unit: str) -> int:
            assert self.session is not None
            payload = {"unit_id": unit, "text": STORM_TEXT, "subject": f"{STORM_MARK}: stengt",
                       "urgent": True}  # fmt: skip
            async with self.session.post(
                f"{self.base}/api/v1/announcements", json=payload, headers=headers
            ) as resp:
                body = await resp.json()
                if resp.status != 201:
                    raise RuntimeError(f"announcement for {unit}: {resp.status} {body}")
                return int(body["deliveries"])

        counts = [await one(f"u-{s}") for s in range(self.schools)]
        self.storm["created"] = time.monotonic()
        self.storm["deliveries"] = sum(counts)

    def storm_done(self) -> bool:
        return bool(self.storm.get("deliveries")) and self.sends.storm >= self.storm["deliveries"]

    # -- sampling ------------------------------------------------------------------------------

    async def metric(self, name: str) -> float:
        assert self.session is not None
        async with self.session.get(f"{self.base}/metrics") as resp:
            text = await resp.text()
        m = re.search(rf"^{name} ([0-9.e+]+)$", text, re.M)
        return float(m.group(1)) if m else float("nan")

    def pending_events(self) -> int:
        with contextlib.closing(sqlite3.connect(f"file:{self.db}?mode=ro", uri=True)) as db:
            row = db.execute("SELECT count(*) FROM inbound_events WHERE status = 'pending'")
            return int(row.fetchone()[0])

    async def sampler(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            tick = time.monotonic()
            try:
                depth = await self.metric("skolebro_outbox_depth")
            except (aiohttp.ClientError, TimeoutError):
                depth = float("nan")
            pending = await asyncio.to_thread(self.pending_events)
            rss, hwm = proc_memory_mb(self.bridge_pid)
            self.samples.append(
                {
                    "t": tick - self.t0,
                    "depth": depth,
                    "pending": pending,
                    "rss": rss,
                    "hwm": hwm,
                    "acks": len(self.acks),
                    "sends": len(self.sends.log),
                }
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), max(0.0, 1.0 - (time.monotonic() - tick)))

    # -- the run --------------------------------------------------------------------------------

    async def replay(self, arrivals: list[Arrival], storm_at: float) -> float:
        """Send every arrival at its time (open loop); the storm at `storm_at`. Returns the
        monotonic time the morning ended (its last scheduled second)."""
        storm_task: asyncio.Task[None] | None = None
        for a in arrivals:
            due = self.t0 + a.at
            if storm_task is None and a.at >= storm_at:
                await asyncio.sleep(max(0.0, self.t0 + storm_at - time.monotonic()))
                storm_task = asyncio.ensure_future(self.storm_now())
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            self.spawn(self.send(a, due))
        if storm_task is None:
            storm_task = asyncio.ensure_future(self.storm_now())
        await storm_task
        return self.t0 + self.args.minutes * 60 / self.args.compress


# -- the bridge as a subprocess -------------------------------------------------------------


def cli(folder: Path, env: dict[str, str], *argv: str) -> str:
    done = subprocess.run(
        [str(SKOLEBRO), "--config", str(folder / "skolebro.toml"), *argv],
        env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    if done.returncode not in (0,):
        raise SystemExit(f"skolebro {' '.join(argv)} failed: {done.stderr.strip()[-500:]}")
    return done.stdout


def link_telegram(db: Path, guardians: int) -> int:
    """Every Telegram-first guardian's chat linked, as a shared contact leaves it."""
    now = datetime.now(UTC).replace(tzinfo=None).isoformat(sep=" ")
    rows = [
        (FIRST_CHAT + g, f"gd-{g}", FIRST_CHAT + g, now)
        for g in range(guardians)
        if first_channel(g) == "telegram"
    ]
    with contextlib.closing(sqlite3.connect(db)) as conn:
        conn.executemany(
            "INSERT INTO telegram_links (chat_id, guardian_id, user_id, linked_at) "
            "VALUES (?, ?, ?, ?)",
            rows,
        )
        conn.commit()
    return len(rows)


def start_bridge(
    folder: Path, env: dict[str, str], cpu: int | None, log_name: str = "bridge.log"
) -> tuple[subprocess.Popen[bytes], Any]:
    """`skolebro run` on `folder`/skolebro.toml (pinned to `cpu`), its output in a log."""
    log = (folder / log_name).open("wb")
    proc = subprocess.Popen(
        [str(SKOLEBRO), "--config", str(folder / "skolebro.toml"), "run"],
        env=env, stdout=log, stderr=subprocess.STDOUT,
        preexec_fn=(lambda: pin(cpu)) if cpu is not None else None,
    )  # fmt: skip
    return proc, log


def proc_cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def wait_healthy(base: str, proc: subprocess.Popen[bytes], limit: float) -> None:
    deadline = time.monotonic() + limit
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise SystemExit(f"skolebro run exited with {proc.returncode} at start")
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(f"{base}/healthz") as resp:
                    if resp.status == 200:
                        return
            await asyncio.sleep(0.2)
    raise SystemExit("skolebro run did not answer /healthz in time")


def store_figures(db: Path) -> dict[str, Any]:
    """Processing lag of every event, and what the bridge stored, read at the end."""
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        lag = [
            float(x)
            for (x,) in conn.execute(
                "SELECT (julianday(processed_at) - julianday(received_at)) * 86400 "
                "FROM inbound_events WHERE status = 'processed' ORDER BY 1"
            )
        ]
        events = dict(conn.execute("SELECT status, count(*) FROM inbound_events GROUP BY 1"))
        deliveries = dict(
            conn.execute("SELECT kind || ' ' || status, count(*) FROM deliveries GROUP BY 1")
        )
        absences = conn.execute("SELECT count(*) FROM absences").fetchone()[0]
    return {"lag": lag, "events": events, "deliveries": deliveries, "absences": absences}


def db_size_mb(db: Path) -> float:
    return sum(p.stat().st_size for p in db.parent.glob(db.name + "*")) / 1e6


async def run(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    rnd = random.Random(args.seed)
    port = free_port()
    m = Morning(args, folder, port)
    figures: dict[str, Any] = {"load_start": load_average()}
    async with contextlib.AsyncExitStack() as stack:
        env = await m.start_fakes(stack)
        m.write_config(folder, port)
        t = time.perf_counter()
        m.schools = write_roster(folder / "roster.csv", args.guardians, args.students)
        cli(folder, env, "init")
        imported = json.loads(
            cli(folder, env, "import-roster", str(folder / "roster.csv"), "--json")
        )
        figures["import_s"] = time.perf_counter() - t
        figures["import_created"] = imported["created"]
        figures["import_rss_mb"] = resource_children_peak_mb()
        units = [a for s in range(m.schools) for a in ("--unit", f"u-{s}")]
        m.api_key = cli(folder, env, "apikey", "create", *units).strip()
        figures["linked"] = link_telegram(m.db, args.guardians)
        m.link_chats(args.guardians)
        arrivals, peak = schedule(args, rnd)
        figures["peak_minute"] = peak
        figures["db_before_mb"] = db_size_mb(m.db)
        print(
            f"set-up {time.perf_counter() - t:.1f} s: {imported['created']} roster rows, "
            f"{figures['linked']} Telegram chats linked, {m.schools} schools; "
            f"{len(arrivals)} texts over {args.minutes} min at {args.compress:g}x "
            f"({len(arrivals) / (args.minutes * 60 / args.compress):.0f}/s on average)",
            flush=True,
        )

        proc, log = start_bridge(folder, env, None if args.no_pin else 0)
        m.bridge_pid = proc.pid
        pin(None if args.no_pin else 1)
        try:
            await wait_healthy(m.base, proc, 60)
            for _ in range(100):  # the bridge sets its webhook at start
                if m.telegram.webhook_url:
                    break
                await asyncio.sleep(0.1)
            connector = aiohttp.TCPConnector(limit=256)
            timeout = aiohttp.ClientTimeout(total=120)
            m.session = await stack.enter_async_context(
                aiohttp.ClientSession(connector=connector, timeout=timeout)
            )
            figures.update(await measure(m, arrivals, args))
            _, figures["bridge_hwm_mb"] = proc_memory_mb(proc.pid)
            figures["bridge_cpu_s"] = proc_cpu_seconds(proc.pid)
            figures["db_mb"] = db_size_mb(m.db)
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                figures["exit"] = await asyncio.to_thread(proc.wait, 30)
            except subprocess.TimeoutExpired:
                proc.kill()
                figures["exit"] = "killed after 30 s"
            log.close()
            # The fakes' status callbacks would now hit a closed port: stop them first.
            await m.twilio.stop()
        figures["db_after_mb"] = db_size_mb(m.db)
        figures.update(store_figures(m.db))
    figures["bench_cpu_s"] = cpu_seconds()
    figures["bench_rss_mb"] = own_peak_rss_mb()
    figures["load_end"] = load_average()
    return figures


def resource_children_peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


async def measure(m: Morning, arrivals: list[Arrival], args: argparse.Namespace) -> dict[str, Any]:
    stop = asyncio.Event()
    m.t0 = time.monotonic() + 0.5
    sampler = asyncio.ensure_future(m.sampler(stop))
    storm_at = args.minutes * 60 / args.compress * args.storm_at
    cpu0 = proc_cpu_seconds(m.bridge_pid)
    end = await m.replay(arrivals, storm_at)
    # Drained: every text answered, every question answered and processed, the storm
    # handed over, no event pending and no delivery queued.
    deadline = time.monotonic() + args.drain_limit
    drained: float | None = None
    while time.monotonic() < deadline:
        last = m.samples[-1] if m.samples else {}
        if (
            not m.tasks
            and m.storm_done()
            and last.get("pending", 1) == 0
            and last.get("depth", 1) == 0
            and last.get("t", 0) > time.monotonic() - m.t0 - 1.5
        ):
            drained = time.monotonic()
            break
        await asyncio.sleep(0.25)
    stop.set()
    await sampler
    out: dict[str, Any] = {
        "end": end - m.t0,
        "drain_s": None if drained is None else drained - end,
        "cpu_run_s": proc_cpu_seconds(m.bridge_pid) - cpu0,
        "run_s": time.monotonic() - m.t0,
        "acks": [Ack(a.scheduled - m.t0, a.latency, a.channel, a.status, a.kind) for a in m.acks],
        "samples": m.samples,
        "sends": [(t - m.t0, ch, storm) for t, ch, storm in m.sends.log],
        "storm": {
            "at": m.storm.get("start", m.t0) - m.t0,
            "created_s": m.storm.get("created", 0) - m.storm.get("start", 0),
            "deliveries": m.storm.get("deliveries", 0),
            "handed": m.sends.storm,
            "done_s": (m.sends.storm_last - m.storm["start"]) if m.storm_done() else None,
            "by_channel": {
                ch: (n, m.sends.storm_last_by_channel[ch] - m.storm.get("start", 0))
                for ch, n in m.sends.storm_by_channel.items()
            },
        },
        "answered": m.answered,
        "unanswered_questions": len(m.waiting),
    }
    for task in list(m.tasks):
        task.cancel()
    return out


# -- report ---------------------------------------------------------------------------------


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def report(args: argparse.Namespace, f: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    say = lines.append
    acks: list[Ack] = f["acks"]
    ok = [a for a in acks if a.status in (200, 250)]
    all_lat = sorted(a.latency for a in acks)
    p99 = percentile(all_lat, 99) * 1000
    say(f"load average {f['load_start']} at start, {f['load_end']} at the end")
    say(f"requests: {len(acks)} ({len(ok)} answered 200/250; by status "
        f"{dict(Counter(a.status for a in acks))})")  # fmt: skip
    say(f"ack latency p99, all channels: {p99:.1f} ms (goal < {GOALS['ack_p99_ms']:.0f} ms: "
        f"{verdict(p99 < GOALS['ack_p99_ms'])})")  # fmt: skip
    for channel in ("sms", "telegram", "email"):
        lat = sorted(a.latency * 1000 for a in acks if a.channel == channel)
        if lat:
            p50, p95, p99c = (percentile(lat, p) for p in (50, 95, 99))
            say(f"  {channel:8} n={len(lat):6}  p50 {p50:8.1f}  p95 {p95:8.1f}  "
                f"p99 {p99c:8.1f}  max {lat[-1]:8.1f} ms")  # fmt: skip
    lag = f["lag"]
    lag_p99 = percentile(lag, 99)
    say(f"processing lag (processed_at - received_at) p50 {percentile(lag, 50):.2f} s, "
        f"p99 {lag_p99:.2f} s, max {(lag or [0])[-1]:.2f} s over {len(lag)} events "
        f"(goal < {GOALS['lag_s']:.0f} s: {verdict(lag_p99 < GOALS['lag_s'])})")  # fmt: skip
    st = f["storm"]
    done = st["done_s"]
    say(f"storm: {st['deliveries']} deliveries created in {st['created_s']:.1f} s at "
        f"t={st['at']:.1f} s; handed to the fakes: {st['handed']} in "
        f"{'not done' if done is None else f'{done:.1f} s'} (goal < {GOALS['storm_s']:.0f} s: "
        f"{verdict(done is not None and done < GOALS['storm_s'])})")  # fmt: skip
    for ch, (n, last) in sorted(st["by_channel"].items()):
        say(f"  {ch}: {n} storm sends, the last at {last:.1f} s")
    if done:
        say(f"  storm throughput {st['handed'] / done:.0f} sends/s "
            f"(fakes capped at {args.send_rate:g}/s in total)")  # fmt: skip
    sends = f["sends"]
    by_channel = Counter(ch for _, ch, _ in sends)
    span = (sends[-1][0] - sends[0][0]) if len(sends) > 1 else 0
    say(f"delivery: {len(sends)} sends at the fakes {dict(by_channel)}"
        + (f", {len(sends) / span:.0f}/s over {span:.0f} s" if span else ""))  # fmt: skip
    say(f"the morning ended at t={f['end']:.0f} s; drain time after it: "
        f"{'not drained' if f['drain_s'] is None else format(f['drain_s'], '.1f') + ' s'} "
        f"(limit {args.drain_limit:.0f} s)")  # fmt: skip
    hwm = f.get("bridge_hwm_mb", 0.0)
    first_rss = next((s["rss"] for s in f["samples"] if s["rss"]), 0.0)
    say(f"bridge RSS at the start of the morning: {first_rss:.0f} MB")
    say(f"peak RSS: bridge {hwm:.0f} MB (goal < {GOALS['rss_mb']:.0f} MB: "
        f"{verdict(0 < hwm < GOALS['rss_mb'])}); this process {f['bench_rss_mb']:.0f} MB; "
        f"import-roster {f['import_rss_mb']:.0f} MB")  # fmt: skip
    say(f"CPU: bridge {f['cpu_run_s']:.1f} s during the run "
        f"({f['cpu_run_s'] / max(1.0, f['run_s']):.0%} of one core over {f['run_s']:.0f} s), "
        f"this process {f['bench_cpu_s']:.1f} s in all")  # fmt: skip
    say(f"database: {f['db_before_mb']:.1f} MB after the import, {f['db_mb']:.1f} MB after the "
        f"run (with WAL), {f['db_after_mb']:.1f} MB after the bridge stopped")  # fmt: skip
    say(f"store: events {f['events']}, absences {f['absences']}; deliveries {f['deliveries']}")
    say(f"dialogues answered: {f['answered']}; questions never seen: "
        f"{f['unanswered_questions']}; bridge exit: {f['exit']}")  # fmt: skip
    say(f"set-up: roster import {f['import_s']:.1f} s; peak minute index {f['peak_minute']}")
    return lines


def plot(args: argparse.Namespace, f: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t0 = f["samples"][0]["t"] if f["samples"] else 0.0
    horizon = max([s["t"] for s in f["samples"]] + [1.0])
    bins = int(horizon) + 1
    per: dict[str, list[list[float]]] = defaultdict(lambda: [[] for _ in range(bins)])
    offered = [0] * bins
    sends = [0] * bins
    storm_sends = [0] * bins
    for a in f["acks"]:
        k = int(a.scheduled)
        if 0 <= k < bins:
            per[a.channel][k].append(a.latency * 1000)
            offered[k] += 1
    for t, _, storm in f["sends"]:
        k = int(t)
        if 0 <= k < bins:
            sends[k] += 1
            storm_sends[k] += storm
    fig, (ax1, ax2, ax3) = plt.subplots(3, 1, figsize=(11, 10), sharex=True)
    colours = {"sms": "tab:blue", "telegram": "tab:green", "email": "tab:orange"}
    for channel, buckets in per.items():
        xs = [k for k in range(bins) if buckets[k]]
        p99 = [percentile(sorted(buckets[k]), 99) for k in xs]
        p50 = [percentile(sorted(buckets[k]), 50) for k in xs]
        ax1.plot(xs, p99, color=colours[channel], label=f"{channel} p99")
        ax1.plot(xs, p50, color=colours[channel], linestyle=":", label=f"{channel} p50")
    ax1.axhline(GOALS["ack_p99_ms"], color="red", linewidth=0.8, label="goal p99 50 ms")
    ax1.set_yscale("log")
    ax1.set_ylabel("ack latency (ms)\nper second of arrival")
    ax1.legend(loc="upper left", fontsize=7, ncol=4)
    ts = [s["t"] - t0 for s in f["samples"]]
    ax2.plot(ts, [s["pending"] for s in f["samples"]], label="inbound events pending")
    ax2.plot(ts, [s["depth"] for s in f["samples"]], label="skolebro_outbox_depth")
    ax2.set_ylabel("queue depth")
    ax2.set_yscale("symlog")
    ax2.legend(loc="upper left", fontsize=8)
    ax3.plot(range(bins), offered, label="texts offered/s", color="tab:gray")
    ax3.plot(range(bins), sends, label="sends/s at the fakes", color="tab:purple")
    ax3.plot(range(bins), storm_sends, label="... of them storm", color="tab:red", linewidth=0.8)
    ax3.set_ylabel("per second")
    ax3.set_xlabel(f"seconds since the morning began ({args.compress:g}x compressed)")
    ax3.legend(loc="upper left", fontsize=8)
    for ax in (ax1, ax2, ax3):
        ax.axvline(f["storm"]["at"], color="red", linestyle="--", linewidth=0.8)
        ax.axvline(f["end"], color="black", linestyle="--", linewidth=0.8)
    fig.suptitle(
        f"skolebro morning rush: {args.texts:,} texts over {args.minutes} min at "
        f"{args.compress:g}x, storm to {args.guardians:,} guardians at the red line; "
        "the morning ends at the black line",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--compress", type=float, default=60.0)
    parser.add_argument("--texts", type=int, default=20_000)
    parser.add_argument("--guardians", type=int, default=70_000)
    parser.add_argument("--students", type=int, help="default: 4/7 of the guardians")
    parser.add_argument("--minutes", type=int, default=90)
    parser.add_argument("--dialogues", type=float, default=0.05)
    parser.add_argument("--storm-at", type=float, default=0.5, help="fraction of the morning")
    parser.add_argument("--send-rate", type=float, default=1500.0, help="all fakes together")
    parser.add_argument("--drain-limit", type=float, default=600.0, help="seconds")
    parser.add_argument("--seed", type=int, default=20261126)
    parser.add_argument("--quick", action="store_true", help="2,000 texts, 7,000 guardians")
    parser.add_argument("--no-pin", action="store_true")
    parser.add_argument("--png", type=Path, default=REPO / "bench" / "morning.png")
    parser.add_argument("--keep", type=Path, help="use and keep this folder")
    args = parser.parse_args()
    if args.quick:
        args.texts, args.guardians = 2_000, 7_000
    args.students = args.students or args.guardians * 4 // 7
    with work_folder(args.keep, "skolebro-morning-") as folder:
        figures = asyncio.run(run(args, folder))
    for line in report(args, figures):
        print(line)
    plot(args, figures, args.png)
    print(f"wrote {args.png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
