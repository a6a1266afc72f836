"""Roster import (SPEC 4): skolebro's CSV or a OneRoster 1.2 CSV bundle into the store.

`import_roster` reads the whole file first (a file that cannot be read changes nothing),
then, in one transaction, loads the roster tables once, diffs in Python and writes only
what changed, in chunked executemany statements. Counting is per roster row.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from bridge.roster.apply import load_existing, run_ops
from bridge.roster.csv_rows import read_csv
from bridge.roster.model import Rejection, Roster, RosterError, RosterResult
from bridge.roster.oneroster import is_bundle_folder, read_oneroster
from bridge.roster.plan import make_plan
from bridge.store import tables as t

__all__ = ["Rejection", "RosterError", "RosterResult", "import_roster", "read_roster"]

log = logging.getLogger(__name__)

Tick = Callable[[int], None]


@contextmanager
def _bar(enabled: bool, desc: str, total: int | None = None) -> Iterator[Tick | None]:
    """A tqdm bar on stderr when asked for (the CLI asks only on a terminal), else nothing."""
    if not enabled:
        yield None
        return
    from tqdm import tqdm

    with tqdm(total=total, desc=desc, unit=" rows", file=sys.stderr, leave=False) as bar:
        yield bar.update


def read_roster(path: Path, tick: Tick | None = None) -> Roster:
    """Read a roster CSV, or a OneRoster folder or zip; `RosterError` if it cannot be read."""
    if not path.exists():
        raise RosterError(f"{path}: no such file or folder")
    if path.is_dir():
        if not is_bundle_folder(path):
            raise RosterError(
                f"{path}: a folder, but not a OneRoster bundle (no orgs.csv and users.csv)"
            )
        return read_oneroster(path, tick)
    if zipfile.is_zipfile(path):
        return read_oneroster(path, tick)
    return read_csv(path, tick)


async def import_roster(
    engine: AsyncEngine, path: Path, *, full: bool = False, progress: bool = False
) -> RosterResult:
    """Import or update the roster; rejected rows are reported, the good rows imported."""
    path = Path(path)
    with _bar(progress, "reading") as tick:
        roster = await asyncio.to_thread(read_roster, path, tick)
    now = datetime.now(UTC)
    async with engine.begin() as conn:
        existing = await load_existing(conn)
        plan = await asyncio.to_thread(make_plan, roster, existing, full=full, now=now)
        del existing
        with _bar(progress and plan.row_writes > 0, "writing", plan.row_writes) as tick:
            await run_ops(conn, plan.ops, tick)
        result = plan.result
        # Counts only: the audit log never holds names, numbers or addresses.
        await conn.execute(
            insert(t.audit_log).values(
                at=now,
                actor="roster",
                action="roster.import",
                subject=None,
                detail={
                    "format": roster.format,
                    "full": full,
                    "created": result.created,
                    "updated": result.updated,
                    "unchanged": result.unchanged,
                    "rejected": len(result.rejected),
                    "deactivated": result.deactivated,
                },
            )
        )
    log.info(
        "roster imported: format=%s created=%d updated=%d unchanged=%d rejected=%d deactivated=%d",
        roster.format,
        result.created,
        result.updated,
        result.unchanged,
        len(result.rejected),
        result.deactivated,
    )
    return result
