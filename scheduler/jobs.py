"""The bridge's clock: digests at their local time, hourly housekeeping (APScheduler 3.11).

Jobs (an `AsyncIOScheduler` on the running loop, triggers in `bridge.timezone`):

- "digest:absence" and "digest:unanswered" at `digests.absence_time` on `digests.days`:
  every active unit's digest for the day, skipping Norwegian public holidays and each
  unit's closed days. `misfire_grace_time` is `digests.grace_minutes` and runs coalesce,
  so a loop that wakes late still sends within the grace, once.
- "digest:guardian" daily at `GUARDIAN_DIGEST_AT`: the guardians' digest mail.
- "housekeeping" hourly (first round a minute after start).

At start, `catch_up()` looks at each digest's latest scheduled time: within the grace,
the day's digests are run now (a bridge down from 08:00 to 09:00 sends at 09:00); past
it, they are not sent, the miss is logged, and each unit's day is marked missed
(`bridge.digests.mark_missed`), so the core notifies that day's absence reports at once.
A fire that APScheduler itself reports missed is marked the same way.

Idempotency lives in `digest_runs`, not in the scheduler: two bridges (or two
`Scheduler`s) firing together send each digest once.

Daylight saving time: the cron trigger works in local time. A daily time that does not
exist on the spring-forward night (02:30 in Europe/Oslo) fires once, at the instant the
wall clock would have shown it (03:30 summer time); a time that occurs twice on the
fall-back night fires once, at its first occurrence (`DailyTrigger`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Any

from apscheduler.events import EVENT_JOB_MISSED, JobExecutionEvent
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from bridge import digests
from bridge.config import Settings
from bridge.store import tables as t
from bridge.understand import is_public_holiday
from scheduler.housekeeping import HousekeepingResult, housekeeping

log = logging.getLogger("skolebro.scheduler")

GUARDIAN_DIGEST_AT = time(16, 0)  # after the school day, before quiet hours
HOUSEKEEPING_EVERY = timedelta(hours=1)
DIGEST_KINDS = (digests.ABSENCE, digests.UNANSWERED)
GUARDIAN = "guardian"
_ONE = timedelta(microseconds=1)


class DailyTrigger(CronTrigger):  # type: ignore[misc]
    """A cron trigger for a fixed local time that fires once a day across DST changes.

    APScheduler's `CronTrigger` fires a wall time that occurs twice (the fall-back night)
    twice; this one skips the second occurrence."""

    def get_next_fire_time(
        self, previous_fire_time: datetime | None, now: datetime
    ) -> datetime | None:
        fire: datetime | None = super().get_next_fire_time(previous_fire_time, now)
        while fire is not None and _second_occurrence(fire):
            fire = super().get_next_fire_time(fire, _after(fire))
        return fire


def _after(moment: datetime) -> datetime:
    """The instant just after `moment`, in UTC: local wall-clock arithmetic drops `fold`."""
    return moment.astimezone(UTC) + _ONE


def _second_occurrence(moment: datetime) -> bool:
    return moment.fold == 1 and moment.replace(fold=0).utcoffset() != moment.utcoffset()


def digest_trigger(settings: Settings) -> DailyTrigger:
    hour, minute = (int(x) for x in settings.digests.absence_time.split(":"))
    return DailyTrigger(
        hour=hour, minute=minute, day_of_week=settings.digests.days, timezone=settings.tz
    )


def guardian_trigger(settings: Settings, at: time = GUARDIAN_DIGEST_AT) -> DailyTrigger:
    return DailyTrigger(hour=at.hour, minute=at.minute, timezone=settings.tz)


def previous_fire_time(
    trigger: CronTrigger, now: datetime, lookback: timedelta = timedelta(days=8)
) -> datetime | None:
    """The trigger's latest fire time at or before `now` (within `lookback`)."""
    latest = None
    fire = trigger.get_next_fire_time(None, now - lookback)
    while fire is not None and fire <= now:
        latest = fire
        fire = trigger.get_next_fire_time(fire, _after(fire))
    return latest


def local_day(moment: datetime, tz: tzinfo) -> date:
    return moment.astimezone(tz).date()


class Scheduler:
    """Digests and housekeeping on the running event loop.

    `start()` (inside the loop) schedules the jobs and starts the catch-up; `shutdown()`
    stops firing; `await stop()` also waits (bounded) for jobs in flight, which a
    shutdown does not cancel: each job's work runs shielded in a task of its own."""

    def __init__(
        self,
        engine: AsyncEngine,
        settings: Settings,
        *,
        guardian_digest_at: time = GUARDIAN_DIGEST_AT,
        housekeeping_every: timedelta = HOUSEKEEPING_EVERY,
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.tz = settings.tz
        self.grace = timedelta(minutes=settings.digests.grace_minutes)
        self.triggers: dict[str, DailyTrigger] = {
            digests.ABSENCE: digest_trigger(settings),
            digests.UNANSWERED: digest_trigger(settings),
            GUARDIAN: guardian_trigger(settings, guardian_digest_at),
        }
        self.housekeeping_every = housekeeping_every
        self.scheduler: AsyncIOScheduler | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def digests_on(self) -> bool:
        return self.settings.digests.enabled and self.settings.email.enabled

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        scheduler = AsyncIOScheduler(timezone=self.tz)
        if self.digests_on:
            grace = int(self.grace.total_seconds())
            for kind in (*DIGEST_KINDS, GUARDIAN):
                scheduler.add_job(
                    self._digest_job,
                    self.triggers[kind],
                    args=(kind,),
                    id=f"digest:{kind}",
                    misfire_grace_time=grace,
                    coalesce=True,
                    max_instances=1,
                )
            scheduler.add_listener(self._on_missed, EVENT_JOB_MISSED)
        elif self.settings.digests.enabled:
            log.warning("digests are enabled but e-mail is not: no digests are scheduled")
        scheduler.add_job(
            self._housekeeping_job,
            IntervalTrigger(seconds=self.housekeeping_every.total_seconds(), timezone=self.tz),
            id="housekeeping",
            next_run_time=datetime.now(self.tz) + timedelta(minutes=1),
            misfire_grace_time=int(self.housekeeping_every.total_seconds()),
            coalesce=True,
            max_instances=1,
        )
        scheduler.start()
        self.scheduler = scheduler
        if self.digests_on:
            self._spawn(self.catch_up(), "catch-up")
        log.info("scheduler started")

    def shutdown(self) -> None:
        """Stop firing; jobs in flight go on (see `stop`)."""
        scheduler, self.scheduler = self.scheduler, None
        if scheduler is not None and scheduler.running:
            scheduler.shutdown(wait=False)

    async def stop(self, grace_seconds: float = 10.0) -> None:
        """Stop firing and give jobs in flight up to `grace_seconds` to finish."""
        self.shutdown()
        pending = set(self._tasks)
        if pending:
            _, late = await asyncio.wait(pending, timeout=grace_seconds)
            for task in late:
                task.cancel()
            if late:
                await asyncio.wait(late)

    def wakeup(self) -> None:
        """Look for due jobs now (tests move the clock, then call this)."""
        if self.scheduler is not None:
            self.scheduler.wakeup()

    async def idle(self) -> None:
        """Wait until no job work is in flight."""
        while self._tasks:
            await asyncio.wait(set(self._tasks))

    def _spawn(self, work: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(work, name=f"scheduler:{name}")
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("scheduler job %s failed", task.get_name(), exc_info=task.exception())

    # -- jobs ---------------------------------------------------------------------------

    async def _digest_job(self, kind: str) -> None:
        now = datetime.now(UTC)
        fire = previous_fire_time(self.triggers[kind], now) or now
        day = local_day(fire, self.tz)
        work: Coroutine[Any, Any, object]
        if kind == GUARDIAN:
            work = self.run_guardian_digest(day)
        else:
            work = self.run_day(kind, day)
        await asyncio.shield(self._spawn(work, f"{kind}:{day}"))

    async def _housekeeping_job(self) -> None:
        await asyncio.shield(self._spawn(self.housekeeping(), "housekeeping"))

    def _on_missed(self, event: JobExecutionEvent) -> None:
        kind = str(event.job_id).removeprefix("digest:")
        if kind not in DIGEST_KINDS:
            return
        day = local_day(event.scheduled_run_time, self.tz)
        log.warning("digest %s for %s: fire missed past the grace time", kind, day)
        self._spawn(self.mark_missed_day(kind, day), f"missed:{kind}:{day}")

    async def housekeeping(self) -> HousekeepingResult:
        return await housekeeping(self.engine, self.settings)

    async def catch_up(self, now: datetime | None = None) -> None:
        """Run today's digests when their time passed within the grace; mark them missed
        when it passed longer ago (and no run exists)."""
        now = now or datetime.now(UTC)
        for kind in DIGEST_KINDS:
            fire = previous_fire_time(self.triggers[kind], now)
            if fire is None:
                continue
            day = local_day(fire, self.tz)
            if now - fire <= self.grace:
                log.info("digest %s for %s: due since %s, running now", kind, day, fire)
                await self.run_day(kind, day)
            else:
                await self.mark_missed_day(kind, day)
        fire = previous_fire_time(self.triggers[GUARDIAN], now)
        if fire is not None and now - fire <= self.grace:
            await self.run_guardian_digest(local_day(fire, self.tz))

    async def _units_for(self, day: date) -> list[str]:
        """Active units that have a digest on `day`: not a public holiday, not closed."""
        if is_public_holiday(day):
            log.info("no digests on %s: public holiday", day)
            return []
        async with self.engine.connect() as conn:
            units = list(
                await conn.scalars(
                    select(t.units.c.id).where(t.units.c.active.is_(True)).order_by(t.units.c.id)
                )
            )
            closed = await digests.closed_days(conn, units, day, day)
        for unit_id in units:
            if day in closed.get(unit_id, ()):
                log.info("no digest for unit %s on %s: closed day", unit_id, day)
        return [u for u in units if day not in closed.get(u, ())]

    async def run_day(self, kind: str, day: date) -> dict[str, digests.DigestResult]:
        """Every unit's digest of this kind for `day` (each once; failures are logged)."""
        units = await self._units_for(day)
        if not units:
            return {}
        try:
            return await digests.run_digests(
                self.engine, self.settings, kind=kind, unit_ids=units, day=day
            )
        except Exception:
            log.exception("digest %s for %s failed", kind, day)
            return {}

    async def mark_missed_day(self, kind: str, day: date) -> int:
        """Mark the day's digest missed for every unit that has none; returns how many."""
        marked = 0
        for unit_id in await self._units_for(day):
            marked += await digests.mark_missed(self.engine, kind=kind, unit_id=unit_id, day=day)
        if marked:
            log.warning(
                "digest %s for %s missed (bridge down past the %d-minute grace): %d units "
                "marked, nothing sent",
                kind,
                day,
                self.settings.digests.grace_minutes,
                marked,
            )
        return marked

    async def run_guardian_digest(self, day: date) -> int:
        try:
            async with self.engine.begin() as conn:
                return await digests.guardian_digest(conn, self.settings, day)
        except digests.DigestError:
            log.info("guardian digest for %s: taken by another run", day)
            return 0
