"""Drive the installed `skolebro` command the way a user does."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SKOLEBRO = str(Path(sys.executable).with_name("skolebro"))


def skolebro(
    *args: str, stdin: str | None = None, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if k != "SKOLEBRO_CONFIG"}
    full_env.update(env or {})
    return subprocess.run(
        [SKOLEBRO, *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=full_env,
        cwd=cwd,
        timeout=120,
    )


def write_config(directory: Path, database_url: str, extra: str = "") -> Path:
    path = directory / "skolebro.toml"
    path.write_text(f'[bridge]\ndatabase_url = "{database_url}"\n{extra}', encoding="utf-8")
    return path
