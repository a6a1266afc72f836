"""Helpers the benchmarks share: CPU pinning and time, percentiles, ports, process memory."""

from __future__ import annotations

import os
import resource
import socket
from pathlib import Path


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
