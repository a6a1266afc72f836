"""Absence digests: build them for 300 units with 30 absences each, on SQLite.

Run: .venv/bin/python bench/bench_digests.py [--units 300] [--absences 30] [--staff 3]

A fresh SQLite store in a temporary folder (`create_engine` + `upgrade`) gets, per unit:
8 groups, 100 students (one guardian each, every fifth guardian protected), `--staff`
digest staff (one following two groups, one following one, the rest the whole unit) and
`--absences` active absence reports covering the digest day (a mix of whole days, part
days, ranges, notes), plus a sent digest the day before, so the late-additions query
has a previous run to work from. The rows are written with Core executemany and are not
timed.

Figures, each the best of `--repeat` rounds:

1. baseline: the raw SELECT of the digest's absences (absences joined to students, per
   unit, the same filter) through the same async engine: the floor for reading them;
2. build: `render_absence_digests` in chunks of `RUN_CHUNK` units, as `run_digests`
   does: the digests built and every recipient's mail rendered (text and HTML), nothing
   written;
3. run: `run_digests` for all units, as the scheduler calls it (also writes the run
   rows, one reply token and one queued delivery per recipient, one transaction per
   chunk); once.

Budget: building the 300 units' digests in under 5 s.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from bridge import digests
from bridge.config import EmailSettings, Settings
from bridge.store import tables as t
from bridge.store.db import create_engine
from bridge.store.migrate import upgrade

DAY = date(2026, 3, 4)  # a Wednesday
SETTINGS = Settings(email=EmailSettings(enabled=True))
FIRST = ["Ola", "Kari", "Aisha", "Noah", "Emma", "Jakob", "Nora", "Filip", "Sofie", "Lukas"]
LAST = ["Nordmann", "Hansen", "Hassan", "Berg", "Vik", "Dahl", "Lie", "Moe", "Aas", "Strand"]
NOTES = [None, None, "Kommer etter legetime.", "Reiser til besteforeldre.", None, "Feber"]


async def seed(engine: AsyncEngine, units: int, per_unit: int, staff_per_unit: int) -> None:
    rnd = random.Random(8)
    now = datetime.now(UTC)
    stamp = {"created_at": now, "updated_at": now}
    rows: dict[str, list[dict[str, Any]]] = {
        k: []
        for k in (
            "units",
            "groups",
            "students",
            "student_groups",
            "guardians",
            "guardian_students",
            "staff",
            "staff_units",
            "absences",
            "digest_runs",
        )
    }
    for u in range(units):
        unit_id = f"u{u:04d}"
        rows["units"].append(
            {
                "id": unit_id,
                "name": f"Skole {u}",
                "unit_type": "school",
                "email": f"skole{u}@example.kommune.no",
                "phone": None,
                "active": True,
                **stamp,
            }
        )
        groups = [f"g{g}" for g in range(8)]
        for g in groups:
            rows["groups"].append(
                {"unit_id": unit_id, "id": g, "name": f"{g[1:]}A", "active": True, **stamp}
            )
        students = []
        for s in range(100):
            sid = f"s{u:04d}-{s:03d}"
            students.append(sid)
            rows["students"].append(
                {
                    "id": sid,
                    "first_name": rnd.choice(FIRST),
                    "last_name": rnd.choice(LAST),
                    "unit_id": unit_id,
                    "sfo_unit_id": None,
                    "active": True,
                    **stamp,
                }
            )
            rows["student_groups"].append(
                {"student_id": sid, "unit_id": unit_id, "group_id": groups[s % 8]}
            )
            gid = f"gd{u:04d}-{s:03d}"
            rows["guardians"].append(
                {
                    "id": gid,
                    "first_name": rnd.choice(FIRST),
                    "last_name": rnd.choice(LAST),
                    "mobile": f"+479{u:04d}{s:03d}",
                    "email": f"{gid}@example.no",
                    "language": "nb",
                    "channels": "sms,email",
                    "protected": s % 5 == 0,
                    "digest": False,
                    "roster_order": u * 100 + s,
                    "active": True,
                    **stamp,
                }
            )
            rows["guardian_students"].append(
                {"guardian_id": gid, "student_id": sid, "restricted": False}
            )
        for k in range(staff_per_unit):
            st = f"st{u:04d}-{k}"
            rows["staff"].append(
                {
                    "id": st,
                    "first_name": "Lærer",
                    "last_name": str(k),
                    "email": f"{st}@example.kommune.no",
                    "language": ("nb", "nn", "en")[k % 3],
                    "active": True,
                    **stamp,
                }
            )
            followed = [groups[:2], groups[2:3]][k] if k < 2 else []
            rows["staff_units"].append(
                {
                    "staff_id": st,
                    "unit_id": unit_id,
                    "notify": "digest" if k % 2 else "both",
                    "groups": followed,
                    "active": True,
                }
            )
        for a in range(per_unit):
            sid = students[rnd.randrange(len(students))]
            start = DAY - timedelta(days=rnd.choice((0, 0, 0, 1, 2)))
            part = rnd.random() < 0.3
            received = now - timedelta(hours=rnd.randrange(1, 60))
            rows["absences"].append(
                {
                    "id": f"ab{u:04d}-{a:03d}",
                    "student_id": sid,
                    "unit_id": unit_id,
                    "from_date": start,
                    "to_date": DAY + timedelta(days=rnd.choice((0, 0, 1))),
                    "from_time": "10:00" if part else None,
                    "to_time": "12:00" if part and rnd.random() < 0.5 else None,
                    "reason": rnd.choice(("illness", "appointment", "other", "unspecified")),
                    "note": rnd.choice(NOTES),
                    "reported_by": f"gd{sid[1:]}",
                    "channel": rnd.choice(("sms", "telegram", "email")),
                    "received_at": received,
                    "status": "active",
                    "created_at": received,
                    "updated_at": received,
                }
            )
        rows["digest_runs"].append(
            {
                "unit_id": unit_id,
                "kind": "absence",
                "day": DAY - timedelta(days=1),
                "started_at": now - timedelta(days=1),
                "sent_at": now - timedelta(days=1),
                "deliveries": staff_per_unit,
            }
        )
    async with engine.begin() as conn:
        for name, batch in rows.items():
            table = getattr(t, name)
            for i in range(0, len(batch), 5000):
                await conn.execute(insert(table), batch[i : i + 5000])


async def baseline(engine: AsyncEngine, unit_ids: list[str]) -> int:
    a, s = t.absences, t.students
    found = 0
    async with engine.connect() as conn:
        for unit_id in unit_ids:
            rows = await conn.execute(
                select(a, s.c.first_name, s.c.last_name)
                .join(s, s.c.id == a.c.student_id)
                .where(
                    a.c.unit_id == unit_id,
                    a.c.status == "active",
                    a.c.from_date <= DAY,
                    a.c.to_date >= DAY,
                )
            )
            found += len(rows.all())
    return found


async def build(engine: AsyncEngine, unit_ids: list[str]) -> tuple[int, int, int]:
    """What a digest run computes, chunk by chunk as `run_digests` does, writing nothing."""
    mails = entries = chars = 0
    async with engine.connect() as conn:
        for i in range(0, len(unit_ids), digests.RUN_CHUNK):
            units = await digests.load_units(conn, unit_ids[i : i + digests.RUN_CHUNK])
            built = await digests.render_absence_digests(conn, SETTINGS, list(units.values()), DAY)
            for per_unit in built.values():
                for _, rendered in per_unit:
                    chars += len(rendered.text) + len(rendered.html)
                    mails += 1
                    entries += rendered.text.count("\n- ")
    return mails, entries, chars


async def run_all(engine: AsyncEngine, unit_ids: list[str], day: date) -> int:
    results = await digests.run_digests(
        engine, SETTINGS, kind="absence", unit_ids=unit_ids, day=day
    )
    return sum(r.deliveries for r in results.values())


async def timed(label: str, repeat: int, work: Any) -> tuple[float, Any]:
    best, value = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        value = await work()
        best = min(best, time.perf_counter() - start)
    return best, value


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--units", type=int, default=300)
    parser.add_argument("--absences", type=int, default=30)
    parser.add_argument("--staff", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        engine = create_engine(f"sqlite+aiosqlite:///{Path(folder) / 'bench.db'}")
        await upgrade(engine)
        start = time.perf_counter()
        await seed(engine, args.units, args.absences, args.staff)
        print(
            f"seeded {args.units} units x {args.absences} absences, {args.staff} digest staff "
            f"each, in {time.perf_counter() - start:.1f} s (not timed below)"
        )
        unit_ids = [f"u{u:04d}" for u in range(args.units)]
        base_s, found = await timed("baseline", args.repeat, lambda: baseline(engine, unit_ids))
        build_s, (mails, entries, chars) = await timed(
            "build", args.repeat, lambda: build(engine, unit_ids)
        )
        run_s, queued = await timed("run", 1, lambda: run_all(engine, unit_ids, DAY))
        await engine.dispose()
    print(f"baseline: raw SELECT of the digests' absences, {found} rows: {base_s:.2f} s")
    print(
        f"build: {args.units} units, {entries} report lines in {mails} mails rendered "
        f"(text + HTML, {chars / mails / 1000:.1f} kB each): {build_s:.2f} s, "
        f"{build_s / args.units * 1000:.1f} ms per unit, x{build_s / base_s:.1f} the baseline"
    )
    print(
        f"run: run_digests for {args.units} units, {queued} deliveries queued: {run_s:.2f} s, "
        f"x{run_s / base_s:.1f} the baseline"
    )
    budget = 5.0
    print(f"budget: build under {budget:.0f} s: {'met' if build_s < budget else 'NOT met'}")


if __name__ == "__main__":
    asyncio.run(main())
