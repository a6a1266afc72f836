"""Helpers the benchmarks share: CPU pinning and time, percentiles, ports, process memory."""

from __future__ import annotations

import contextlib
import cProfile
import io
import os
import pstats
import resource
import socket
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import event


def pin(cpu: int | None) -> None:
    """Keep this process (and the threads it starts from now on) on one CPU."""
    if cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {cpu})


def cpu_seconds() -> float:
    """CPU seconds this process (all its threads) has used so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def percentile(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile of an ascending list (0.0 for an empty one)."""
    if not sorted_values:
        return 0.0
    rank = max(1, min(len(sorted_values), round(p / 100 * len(sorted_values) + 0.5)))
    return sorted_values[rank - 1]


def load_average() -> str:
    try:
        one, five, _ = os.getloadavg()
    except OSError:
        return "?"
    return f"{one:.1f}/{five:.1f}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def work_folder(keep: Path | None, prefix: str) -> Iterator[Path]:
    """`keep` (made if missing, kept afterwards), else a temporary folder removed at the end."""
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        yield keep
        return
    with tempfile.TemporaryDirectory(prefix=prefix) as folder:
        yield Path(folder)


def proc_memory_mb(pid: int) -> tuple[float, float]:
    """(current RSS, peak RSS) of a live process in MB, from /proc/<pid>/status."""
    rss = hwm = 0.0
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return rss, hwm
    for line in text.splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) / 1024
        elif line.startswith("VmHWM:"):
            hwm = int(line.split()[1]) / 1024
    return rss, hwm


def own_peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


async def migrated_sqlite(folder: Path) -> str:
    from bridge.store.db import create_engine
    from bridge.store.migrate import upgrade

    url = f"sqlite+aiosqlite:///{folder / 'skolebro.db'}"
    engine = create_engine(url)
    await upgrade(engine)
    await engine.dispose()
    return url


class Profiler:
    """cProfile of the main thread (the event loop) while enabled, or nothing."""

    def __init__(self, on: bool) -> None:
        # Timed by the main thread's CPU clock: waiting (epoll, the pool) costs nothing.
        self.profile = cProfile.Profile(time.thread_time) if on else None

    def __enter__(self) -> Profiler:
        if self.profile is not None:
            self.profile.enable()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.profile is not None:
            self.profile.disable()

    def print(self, title: str, rows: int = 25) -> None:
        if self.profile is None:
            return
        out = io.StringIO()
        stats = pstats.Stats(self.profile, stream=out)
        by_area: Counter[str] = Counter()
        for (path, _, _), (_, _, tottime, _, _) in stats.stats.items():  # type: ignore[attr-defined]
            by_area[area(path)] += tottime
        total = sum(by_area.values()) or 1.0
        stats.sort_stats("tottime").print_stats(rows)
        print(f"\n--- profile: {title} (event-loop thread CPU, cProfile inflates it) ---")
        print(
            "CPU by area: "
            + ", ".join(f"{k} {v:.1f} s ({v / total:.0%})" for k, v in by_area.most_common())
        )
        print(out.getvalue())


class StatementCounter:
    """Counts the SQL statements an engine runs, by kind and table (load-independent)."""

    def __init__(self, engine: Any) -> None:
        self.by_kind: Counter[str] = Counter()
        self.total = 0
        event.listen(engine.sync_engine, "before_cursor_execute", self._seen)

    def _seen(self, conn: Any, cursor: Any, statement: str, *rest: Any) -> None:
        self.total += 1
        words = statement.split()
        verb = words[0].upper() if words else "?"
        if verb == "UPDATE":
            after = 0
        else:
            after = next((i for i, w in enumerate(words) if w in ("FROM", "INTO")), len(words))
        table = words[after + 1] if after + 1 < len(words) else "?"
        self.by_kind[f"{verb} {table}"] += 1

    def top(self, n: int = 12) -> str:
        return ", ".join(f"{k} {v}" for k, v in self.by_kind.most_common(n))


def area(path: str) -> str:
    """Which library (or part of ours) a profiled function's file belongs to."""
    for marker, name in (
        ("/bridge/", "bridge"),
        ("/adapters/", "adapters"),
        ("/scheduler/", "scheduler"),
        ("site-packages/sqlalchemy/", "sqlalchemy"),
        ("site-packages/aiosqlite/", "aiosqlite"),
        ("site-packages/aiosmtpd/", "aiosmtpd"),
        ("site-packages/aiosmtplib/", "aiosmtplib"),
        ("site-packages/aiohttp/", "aiohttp"),
        ("site-packages/aiogram/", "aiogram"),
        ("site-packages/pydantic", "pydantic"),
        ("/email/", "stdlib email"),
        ("/json/", "json"),
        ("/asyncio/", "asyncio"),
        ("/bench/", "bench"),
    ):
        if marker in path:
            return name
    return "other" if path != "~" else "builtins"
