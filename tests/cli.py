"""Drive the installed `skolebro` command the way a user does."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
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


def start_bridge(
    cfg: Path, port: int, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """`skolebro run` in a child process, returned once its HTTP port accepts."""
    full_env = {k: v for k, v in os.environ.items() if k != "SKOLEBRO_CONFIG"}
    full_env.update(env or {})
    proc = subprocess.Popen(
        [SKOLEBRO, "run", "--config", str(cfg)],
        env=full_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return proc
        assert proc.poll() is None, "bridge exited at start"
        time.sleep(0.1)
    proc.kill()
    raise AssertionError("bridge did not come up")


def write_config(directory: Path, database_url: str, extra: str = "") -> Path:
    path = directory / "skolebro.toml"
    path.write_text(f'[bridge]\ndatabase_url = "{database_url}"\n{extra}', encoding="utf-8")
    return path
