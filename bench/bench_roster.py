"""Roster import at municipality scale: 50,000 guardians and 40,000 students on SQLite.

Run: .venv/bin/python bench/bench_roster.py [--guardians N] [--students N] [--keep DIR]

Prints, for a first import into a fresh database (everything created) and a re-import of
the same file (everything unchanged): elapsed seconds, roster rows per second and the peak
RSS of the process so far. The baseline, measured in the same run on the same rows, is
the floor for writing them: stdlib sqlite3 `executemany` of the student, guardian and
link rows into bare tables (no validation, no indexes, no foreign keys, one commit).
Parsing the CSV alone is printed too, for scale.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import multiprocessing
import random
import resource
import sqlite3
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from bridge.roster import import_roster
from bridge.roster.csv_rows import COLUMNS
from bridge.store.db import create_engine
from bridge.store.migrate import upgrade

FIRST = ["Ola", "Kari", "Aisha", "Noah", "Emma", "Jakob", "Nora", "Filip", "Sara", "Mohammed"]
Row = tuple[object, ...]
LAST = ["Nordmann", "Hansen", "Johansen", "Olsen", "Larsen", "Hassan", "Berg", "Vik", "Dahl"]


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def school_units(s: int) -> list[dict[str, str]]:
    """School `s` (unit `u-<s>`) and its SFO (`u-<s>-sfo`), as roster rows."""
    return [
        {"kind": "unit", "unit_id": f"u-{s}", "name": f"Skole {s}", "unit_type": "school",
         "email": f"skole{s}@example.kommune.no", "phone": f"5556{s:04d}"},
        {"kind": "unit", "unit_id": f"u-{s}-sfo", "name": f"Skole {s} SFO", "unit_type": "sfo",
         "email": f"sfo{s}@example.kommune.no"},
    ]  # fmt: skip


def generate(path: Path, n_guardians: int, n_students: int) -> dict[str, list[Row]]:
    """Write the roster; return the student, guardian and link rows for the baseline."""
    rnd = random.Random(20261126)
    schools = max(1, n_students // 1000)
    rows: list[dict[str, str]] = []
    raw: dict[str, list[Row]] = {"students": [], "guardians": [], "links": []}
    for s in range(schools):
        rows.extend(school_units(s))
        for grade in range(1, 8):
            for letter in "ABC":
                rows.append({"kind": "group", "unit_id": f"u-{s}", "group_id": f"g-{grade}{letter}",
                             "name": f"{grade}{letter}"})  # fmt: skip
        rows.append({"kind": "group", "unit_id": f"u-{s}-sfo", "group_id": "base-1",
                     "name": "Base 1"})  # fmt: skip
        rows.append({"kind": "closed", "unit_id": f"u-{s}", "name": "Planleggingsdag",
                     "from": "2026-11-27"})  # fmt: skip
        rows.append({"kind": "closed", "unit_id": f"u-{s}", "name": "Juleferie",
                     "from": "2026-12-21", "to": "2027-01-01"})  # fmt: skip
        for k in range(25):
            unit = f"u-{s}" if k < 22 else f"u-{s}-sfo"
            groups = f"g-{k % 7 + 1}{'ABC'[k % 3]}" if k < 21 else ""
            rows.append({"kind": "staff", "unit_id": unit, "staff_id": f"st-{s}-{k}",
                         "first_name": rnd.choice(FIRST), "last_name": rnd.choice(LAST),
                         "email": f"ansatt{s}.{k}@example.kommune.no", "groups": groups,
                         "notify": ("each", "digest", "both")[k % 3]})  # fmt: skip
    for i in range(n_students):
        school = i % schools
        sfo = f"u-{school}-sfo" if i % 10 < 4 else ""
        grade = (i // schools) % 7 + 1
        groups = f"g-{grade}{'ABC'[i % 3]}" + (";base-1" if sfo else "")
        first, last = rnd.choice(FIRST), rnd.choice(LAST)
        rows.append({"kind": "student", "unit_id": f"u-{school}", "student_id": f"s-{i}",
                     "first_name": first, "last_name": last, "sfo_unit_id": sfo,
                     "groups": groups})  # fmt: skip
        raw["students"].append((f"s-{i}", first, last, f"u-{school}", sfo or None))
    for g in range(n_guardians):
        # Each student has one or two guardians; every fifth guardian has a sibling too.
        children = [g % n_students]
        if g % 5 == 0:
            children.append((g + 1) % n_students)
        mobile = f"9{rnd.randrange(10**7):07d}"
        style = g % 3  # the three ways people write a Norwegian number
        shown = (f"{mobile[:3]} {mobile[3:5]} {mobile[5:]}", f"+47 {mobile}", f"0047{mobile}")
        first, last = rnd.choice(FIRST), rnd.choice(LAST)
        rows.append({"kind": "guardian", "guardian_id": f"gd-{g}", "first_name": first,
                     "last_name": last, "mobile": shown[style],
                     "email": f"foresatt{g}@example.no", "language": ("nb", "nn", "en")[g % 3],
                     "channels": "sms;email", "students": ";".join(f"s-{c}" for c in children),
                     "protected": "yes" if g % 97 == 0 else "",
                     "digest": "yes" if g % 7 == 0 else ""})  # fmt: skip
        raw["guardians"].append((f"gd-{g}", first, last, f"+47{mobile}", f"foresatt{g}@example.no"))
        raw["links"].extend((f"gd-{g}", f"s-{c}", False) for c in children)
    rnd.shuffle(rows)  # rows may come in any order; references resolve after reading
    with path.open("w", encoding="utf-8", newline="") as out:
        writer = csv.DictWriter(out, COLUMNS, restval="")
        writer.writeheader()
        writer.writerows(rows)
    return raw


def baseline_executemany(folder: Path, raw: dict[str, list[Row]]) -> float:
    """The floor: the same rows into bare SQLite tables with one executemany each."""
    db = sqlite3.connect(folder / "baseline.db")
    db.executescript(
        "CREATE TABLE s (id, first_name, last_name, unit_id, sfo_unit_id);"
        "CREATE TABLE g (id, first_name, last_name, mobile, email);"
        "CREATE TABLE l (guardian_id, student_id, restricted);"
    )
    start = time.perf_counter()
    db.executemany("INSERT INTO s VALUES (?, ?, ?, ?, ?)", raw["students"])
    db.executemany("INSERT INTO g VALUES (?, ?, ?, ?, ?)", raw["guardians"])
    db.executemany("INSERT INTO l VALUES (?, ?, ?)", raw["links"])
    db.commit()
    elapsed = time.perf_counter() - start
    db.close()
    return elapsed


def parse_only(path: Path) -> float:
    start = time.perf_counter()
    with path.open(encoding="utf-8-sig", newline="") as f:
        sum(1 for _ in csv.reader(f))
    return time.perf_counter() - start


def import_once(db: Path, roster: Path, progress: bool) -> tuple[float, int, list[str], float]:
    """One import in this (fresh) process: seconds, rows, summary, this process's peak RSS."""

    async def go() -> tuple[float, int, list[str]]:
        engine = create_engine(f"sqlite+aiosqlite:///{db}")
        try:
            start = time.perf_counter()
            result = await import_roster(engine, roster, progress=progress)
            elapsed = time.perf_counter() - start
        finally:
            await engine.dispose()
        n = result.created + result.updated + result.unchanged + len(result.rejected)
        return elapsed, n, result.summary_lines()

    elapsed, n, summary = asyncio.run(go())
    return elapsed, n, summary, peak_rss_mb()


def run(args: argparse.Namespace, folder: Path) -> int:
    roster = folder / "roster.csv"
    t0 = time.perf_counter()
    raw = generate(roster, args.guardians, args.students)
    print(f"generated {roster.stat().st_size / 1e6:.1f} MB in {time.perf_counter() - t0:.1f} s")
    parse = parse_only(roster)
    base = baseline_executemany(folder, raw)
    del raw
    print(f"baseline: csv parse only {parse:.2f} s; sqlite3 executemany of the rows {base:.2f} s")

    db = folder / "skolebro.db"
    engine = create_engine(f"sqlite+aiosqlite:///{db}")
    asyncio.run(upgrade(engine))
    asyncio.run(engine.dispose())
    failed = False
    for label in ("first import (all created)", "re-import (all unchanged)"):
        # Each import in a fresh process, as the CLI runs it: its peak RSS is its own.
        spawn = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=1, mp_context=spawn) as pool:
            elapsed, n, summary, rss = pool.submit(import_once, db, roster, args.progress).result()
        print(
            f"{label}: {elapsed:.2f} s, {n / elapsed:,.0f} rows/s, peak RSS {rss:.0f} MB, "
            f"x{elapsed / base:.1f} the executemany baseline; {summary[0]}"
        )
        failed |= len(summary) > 1 or elapsed > 60 or rss > 400
    print("within budget (60 s, 400 MB)" if not failed else "OVER BUDGET or rows rejected")
    return 1 if failed else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--guardians", type=int, default=50_000)
    parser.add_argument("--students", type=int, default=40_000)
    parser.add_argument("--progress", action="store_true", help="show the tqdm bars")
    parser.add_argument("--keep", type=Path, help="use and keep this folder")
    args = parser.parse_args()
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
        return run(args, args.keep)
    with tempfile.TemporaryDirectory(prefix="skolebro-bench-") as folder:
        return run(args, Path(folder))


if __name__ == "__main__":
    sys.exit(main())
