"""`skolebro demo`: the real bridge, a generated municipality, the loopback fakes and a page.

Nothing here needs an account, a key or the internet: the Twilio, Telegram and SMTP
fakes listen on loopback, the secrets are made up at start and set in this process's
environment, and the store is SQLite in the demo's folder.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import signal
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from bridge.config import Settings, parse_config

log = logging.getLogger("skolebro.demo")

ACCOUNT = "AC" + "de30" * 8
SCHOOL_NUMBER = "+4759440000"
BOT_TOKEN_ENV = "SKOLEBRO_DEMO_BOT_TOKEN"
TWILIO_TOKEN_ENV = "SKOLEBRO_DEMO_TWILIO_TOKEN"
REPLY_DOMAIN = "svar.example.kommune.no"


class DemoError(Exception):
    """A reason the demo cannot start, for one line on stderr."""


@dataclass
class Parts:
    """What the page talks to: the fakes, the running bridge and its API key."""

    municipality: Any  # bridge.demo.municipality.Municipality
    twilio: Any  # adapters.fakes.twilio.FakeTwilio
    telegram: Any  # adapters.fakes.telegram.FakeTelegram
    smtp: Any  # adapters.fakes.smtp.FakeSmtp
    bridge: Any  # bridge.app.Bridge
    api_url: str
    api_key: str

    @property
    def settings(self) -> Settings:
        settings: Settings = self.bridge.settings
        return settings


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_free_or_fail(port: int) -> None:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError as e:
            raise busy(port, e) from None


def busy(port: int, e: OSError) -> DemoError:
    return DemoError(f"cannot listen on 127.0.0.1:{port} ({e.strerror}); try --port 0")


def demo_config(
    directory: Path, bridge_port: int, twilio_url: str, telegram_url: str, smtp_port: int
) -> str:
    """The demo's skolebro.toml: every channel on, pointed at the loopback fakes."""
    public = f"http://127.0.0.1:{bridge_port}"
    return f"""# Written by `skolebro demo`; its secrets live only in the demo's own environment.
[bridge]
public_url = "{public}"
database_url = "sqlite+aiosqlite:///skolebro.db"

[http]
host = "127.0.0.1"
port = {bridge_port}

[sms]
enabled = true
account_sid = "{ACCOUNT}"
auth_token_env = "{TWILIO_TOKEN_ENV}"
from_number = "{SCHOOL_NUMBER}"
api_base_url = "{twilio_url}"
max_per_second = 50

[telegram]
enabled = true
token_env = "{BOT_TOKEN_ENV}"
mode = "polling"
api_base_url = "{telegram_url}"
bot_username = "skolebro_demo_bot"

[email]
enabled = true
smtp_host = "127.0.0.1"
smtp_port = {smtp_port}
smtp_tls = "none"
from_address = "skolebro@example.kommune.no"
reply_domain = "{REPLY_DOMAIN}"
listen_host = "127.0.0.1"
listen_port = {free_port()}

[delivery]
backoff_initial_seconds = 1
backoff_max_seconds = 30
quiet_hours = ""  # the demo shows announcements at once, whatever the hour
"""


async def run_demo(port: int, directory: str | None) -> int:
    """Start everything, print the page's address, serve until SIGINT/SIGTERM."""
    from adapters.fakes.smtp import FakeSmtp
    from adapters.fakes.telegram import FakeTelegram
    from adapters.fakes.twilio import FakeTwilio
    from bridge.apikeys import create_api_key
    from bridge.app import Bridge
    from bridge.demo.municipality import generate
    from bridge.demo.page import build_page
    from bridge.roster import import_roster
    from bridge.store.migrate import upgrade

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    # The twilio SDK logs request parameters (numbers, bodies) at INFO: keep it quiet.
    logging.getLogger("twilio").setLevel(logging.WARNING)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)  # the page polls

    if port:
        port_free_or_fail(port)  # before minutes of set-up, not after
    folder = Path(directory) if directory else Path(tempfile.mkdtemp(prefix="skolebro-demo-"))
    folder.mkdir(parents=True, exist_ok=True)
    municipality = generate()
    roster = municipality.write_csv(folder / "roster.csv")

    # Made-up secrets, set where the config's *_env keys look for them.
    os.environ[TWILIO_TOKEN_ENV] = secrets.token_hex(16)
    bot_id = secrets.randbelow(9 * 10**8) + 10**8
    os.environ[BOT_TOKEN_ENV] = f"{bot_id}:{secrets.token_urlsafe(26)}"

    bridge_port = free_port()
    public = f"http://127.0.0.1:{bridge_port}"
    twilio = FakeTwilio(
        ACCOUNT,
        os.environ[TWILIO_TOKEN_ENV],
        webhook_url=f"{public}/webhooks/twilio/sms#rc=3&rp=all",
        phone_number=SCHOOL_NUMBER,
        callback_delay=0.3,  # slow enough to watch queued -> sent -> delivered
    )
    telegram = FakeTelegram(os.environ[BOT_TOKEN_ENV], username="skolebro_demo_bot")
    smtp = FakeSmtp()
    page_runner: web.AppRunner | None = None
    bridge: Bridge | None = None
    async with contextlib.AsyncExitStack() as stack:
        for fake in (twilio, telegram, smtp):
            await stack.enter_async_context(fake)
        config = demo_config(folder, bridge_port, twilio.base_url, telegram.base_url, smtp.port)
        (folder / "skolebro.toml").write_text(config, encoding="utf-8")
        settings = parse_config(config, base_dir=folder, source=str(folder / "skolebro.toml"))
        settings.require_channel_secrets("sms", "telegram", "email")

        bridge = Bridge(settings)
        await upgrade(bridge.engine)
        result = await import_roster(bridge.engine, roster)
        if result.rejected:
            raise DemoError(f"the generated roster has rejected rows: {result.rejected[:3]}")
        _, api_key = await create_api_key(bridge.engine, [u.id for u in municipality.units])
        try:
            await bridge.start()
        except OSError as e:
            await bridge.stop()
            raise DemoError(f"cannot start the bridge: {e}") from None
        try:
            await asyncio.wait_for(bridge.caught_up.wait(), 15)
            parts = Parts(municipality, twilio, telegram, smtp, bridge, f"{public}/api/v1", api_key)
            page = build_page(parts)
            page_runner = web.AppRunner(page, access_log=None, shutdown_timeout=2)
            await page_runner.setup()
            site = web.TCPSite(page_runner, "127.0.0.1", port)
            try:
                await site.start()
            except OSError as e:
                raise busy(port, e) from None
            page_port = int(page_runner.addresses[0][1])
            link_telegram_parents(parts)
            print(f"skolebro demo: a bridge with a demo municipality; files in {folder}")
            print(f"bridge (API, /healthz, /metrics) on {public}/")
            print("open this page to play parents and staff; Ctrl-C stops:")
            print(f"http://127.0.0.1:{page_port}/", flush=True)
            await wait_for_signal()
            log.info("demo stopping")
        finally:
            if page_runner is not None:
                await page_runner.cleanup()
            # The Twilio fake keeps its webhook connections to the bridge alive, and the
            # bot's long poll waits in the Telegram fake: end both first, so that the
            # bridge's server has no open connection to wait for and stops at once.
            await twilio.stop()
            telegram.abort_polls()
            await bridge.stop()
    return 0


def link_telegram_parents(parts: Parts) -> None:
    """Every parent whose first channel is Telegram has opened the bot and shared their
    own contact, as the bot asks (the real linking flow, through the fake)."""
    for parent in parts.municipality.guardians:
        if parent.channels.startswith("telegram"):
            parts.telegram.add_chat(
                parent.telegram_chat,
                first_name=parent.first_name,
                last_name=parent.last_name,
                language_code=parent.language,
            )
            parts.telegram.share_contact(
                parent.telegram_chat, parent.mobile.lstrip("+"), first_name=parent.first_name
            )


async def wait_for_signal() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.remove_signal_handler(sig)
