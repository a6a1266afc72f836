"""Wiring for `skolebro run`: store, HTTP server, channel adapters and workers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web

from bridge import inbox, logs, mail_flow, outbox, telegram_bot
from bridge.api import add_api
from bridge.config import Settings
from bridge.domain import Accepted, InboundEvent, StatusUpdate, StoreUnavailable
from bridge.group_commit import GroupCommit
from bridge.http import build_app
from bridge.intake import Intake
from bridge.leader import Leadership
from bridge.store.db import create_engine

log = logging.getLogger("skolebro")

STOP_SECONDS = 15
# SMTP connections kept open to the relay: one send waits out four round trips, so a
# single connection caps a storm's e-mail share (bench/RESULTS.md, morning rush).
MAIL_CONNECTIONS = 4
STATUS_GROUP = 200  # status callbacks written in one transaction at most
SMS_RECOVERY_EVERY = timedelta(minutes=15)
SMS_RECOVERY_WINDOW = timedelta(hours=48)


class Bridge:
    """One running bridge: the HTTP server, the enabled channels and the workers."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.engine = create_engine(settings.database_url)
        self.intake = Intake(self.engine)  # group commit: many webhooks, one transaction
        # Status callbacks the same way: a storm brings two per SMS (sent, delivered).
        self.statuses: GroupCommit[StatusUpdate, None] = GroupCommit(
            lambda updates: outbox.record_statuses(self.engine, settings, updates),
            name="statuses",
            max_group=STATUS_GROUP,
            splittable=outbox.status_error_splittable,
            unavailable=StoreUnavailable,
        )
        self.inbox = inbox.InboxWorker(self.engine, settings, intake_waiting=self.intake.waiting)
        self.senders: dict[str, Any] = {}
        self.app = build_app(self.engine)
        self.stopping = asyncio.Event()
        # Set first on stop: no new sends are claimed while the rest shuts down, so
        # only what is in flight goes out (and the stop stays within its 15 s).
        self.sending_stop = asyncio.Event()
        self.caught_up = asyncio.Event()  # set after each look for missed inbound
        self.recover_now = asyncio.Event()  # look for missed inbound before the next round
        self.store_was_down = False
        self.tasks: list[asyncio.Task[None]] = []
        self.runner: web.AppRunner | None = None
        self.scheduler: Any = None
        self.leadership = Leadership(self.engine)
        self.polling: asyncio.Task[None] | None = None
        self.polling_stop = asyncio.Event()
        self.port: int | None = None
        if settings.sms.enabled:
            from adapters import sms_twilio

            self.app.add_routes(sms_twilio.routes(settings, self.accept, self.record_status))
            self.senders["sms"] = sms_twilio.TwilioSender(settings)
        self.mail_listener: Any = None
        if settings.email.enabled:
            from adapters import email as mail

            self.senders["email"] = mail.MailSender(settings, pool_size=MAIL_CONNECTIONS)
            self.mail_listener = mail.MailListener(
                settings, self.accept, self.record_status, self.recipient_ok
            )
        self.telegram_sender: Any = None
        if settings.telegram.enabled:
            from adapters import telegram

            self.telegram_sender = telegram.TelegramSender(settings)
            self.senders["telegram"] = self.telegram_sender
            if settings.telegram.mode == "webhook":
                self.app.add_routes(telegram.routes(settings, self.accept))
        if settings.webhooks:
            from adapters.webhook import WebhookSender

            self.senders["webhook"] = WebhookSender(settings)
        self.callback_answers: set[asyncio.Task[Any]] = set()
        self.outbox = outbox.OutboxWorker(
            self.engine, settings, self.senders, inbox_behind=self.inbox.behind
        )
        add_api(self.app, self.engine, settings, on_outbound=self.outbox.wake.set)

    async def accept(self, event: InboundEvent) -> Accepted:
        try:
            accepted = await self.intake.accept(event)
        except StoreUnavailable:
            self.store_was_down = True
            raise
        if self.store_was_down:
            # The store is back: fetch what Twilio could not hand us meanwhile now,
            # not at the next 15-minute round (its own retries may be over by then).
            self.store_was_down = False
            self.recover_now.set()
        if accepted.new:
            self.inbox.wake.set()
        query_id = event.payload.get("callback_query_id")
        if self.telegram_sender is not None and query_id:
            # Telegram waits only seconds for a button's answer; the real answer comes
            # as a chat message once the event is processed.
            task = asyncio.create_task(self.telegram_sender.answer_callback(str(query_id)))
            self.callback_answers.add(task)
            task.add_done_callback(self.callback_answers.discard)
        return accepted

    async def record_status(self, update: StatusUpdate) -> None:
        await self.statuses.submit(update)

    async def recipient_ok(self, address: str) -> bool:
        return await mail_flow.recipient_ok(self.engine, self.settings, address)

    async def start(self) -> None:
        self.runner = web.AppRunner(self.app, shutdown_timeout=5)
        await self.runner.setup()
        site = web.TCPSite(self.runner, self.settings.http.host, self.settings.http.port)
        await site.start()
        server = getattr(site, "_server", None)
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else self.settings.http.port
        if self.mail_listener is not None:
            await self.mail_listener.start()
        self.tasks = [
            asyncio.create_task(self.inbox.run(self.stopping)),
            asyncio.create_task(self.outbox.run(self.sending_stop)),
        ]
        if self.telegram_sender is not None:
            await self._start_telegram()
        # The scheduler and Telegram polling run in one process at a time (bridge.leader).
        self.tasks.append(
            asyncio.create_task(
                self.leadership.run(self.stopping, self._start_singletons, self._stop_singletons)
            )
        )
        if self.settings.sms.enabled:
            self.tasks.append(asyncio.create_task(self._recover_sms()))
        else:
            self.caught_up.set()
        log.info("listening on http://%s:%d/", self.settings.http.host, self.port)

    async def _start_telegram(self) -> None:
        from adapters import telegram

        try:
            await self.telegram_sender.set_commands(
                telegram_bot.bot_commands(), self.settings.bridge.default_language
            )
            if self.settings.telegram.mode == "webhook":
                await telegram.set_webhook(self.settings)
        except Exception:
            log.warning("telegram set-up calls failed; the bot still runs", exc_info=True)

    async def _start_singletons(self) -> None:
        """What only the leading process runs: the scheduler, and Telegram polling."""
        from scheduler.jobs import Scheduler

        # Housekeeping runs whether or not digests are on; the scheduler decides.
        self.scheduler = Scheduler(self.engine, self.settings)
        self.scheduler.start()
        if self.telegram_sender is not None and self.settings.telegram.mode == "polling":
            from adapters import telegram

            self.polling_stop = asyncio.Event()
            poller = telegram.TelegramPoller(self.settings, self.accept)
            self.polling = asyncio.create_task(poller.run(self.polling_stop))

    async def _stop_singletons(self) -> None:
        scheduler, self.scheduler = self.scheduler, None
        if scheduler is not None:
            await scheduler.stop(5)
        polling, self.polling = self.polling, None
        if polling is not None:
            self.polling_stop.set()
            _, late = await asyncio.wait([polling], timeout=STOP_SECONDS / 3)
            for task in late:
                task.cancel()

    async def _recover_sms(self) -> None:
        """Take in the messages Twilio received while we could not (SPEC section 8)."""
        from adapters import sms_twilio

        while not self.stopping.is_set():
            since = datetime.now(UTC) - SMS_RECOVERY_WINDOW
            try:
                events = await sms_twilio.fetch_recent(self.settings, since)
                taken = 0
                for event in events:
                    taken += (await self.accept(event)).new
                if taken:
                    log.info("took in %d SMS missed while unreachable", taken)
            except Exception:
                log.warning("could not fetch recent SMS from Twilio", exc_info=True)
            self.caught_up.set()
            self.recover_now.clear()
            waiters = [
                asyncio.ensure_future(self.stopping.wait()),
                asyncio.ensure_future(self.recover_now.wait()),
            ]
            await asyncio.wait(
                waiters,
                timeout=SMS_RECOVERY_EVERY.total_seconds(),
                return_when=asyncio.FIRST_COMPLETED,
            )
            for waiter in waiters:
                waiter.cancel()

    async def stop(self) -> None:
        """Stop accepting, let the workers finish what is in flight, close everything."""
        self.sending_stop.set()
        if self.runner is not None:
            await self.runner.cleanup()
        if self.mail_listener is not None:
            await self.mail_listener.stop()
        await self._stop_singletons()
        with contextlib.suppress(TimeoutError):  # a timeout answers the waiters "unavailable"
            await asyncio.wait_for(self.intake.close(), STOP_SECONDS / 3)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.statuses.close(), STOP_SECONDS / 6)
        self.stopping.set()
        if self.tasks:
            _, pending = await asyncio.wait(self.tasks, timeout=STOP_SECONDS - 6)
            for task in pending:
                task.cancel()
        for sender in self.senders.values():
            await sender.close()
        await self.engine.dispose()


async def run_bridge(settings: Settings) -> int:
    """Serve until SIGINT/SIGTERM, then stop accepting and finish within 15 s."""
    logs.configure()
    # Handlers first: a SIGTERM that arrives while the bridge is still starting (the
    # HTTP port already answers) stops it gracefully once it has started.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    bridge = Bridge(settings)
    await bridge.start()
    await stop.wait()
    log.info("stopping")
    await bridge.stop()
    return 0
