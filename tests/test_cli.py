"""The command line as a user drives it: exit statuses, one-line errors, exports."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from tests.cli import SKOLEBRO, skolebro, write_config


@pytest.fixture
def config(tmp_path: Path, database_url: str) -> Path:
    return write_config(tmp_path, database_url)


def test_init_twice_succeeds(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, "sqlite+aiosqlite:///bro.db")
    first = skolebro("init", "--config", str(cfg))
    assert first.returncode == 0, first.stderr
    assert (tmp_path / "bro.db").exists()  # relative to the config file, not the cwd
    second = skolebro("--config", str(cfg), "init")
    assert second.returncode == 0, second.stderr
    assert "current" in second.stdout


def test_export_absences_on_an_empty_store(config: Path) -> None:
    result = skolebro("export", "absences", "--date", "2026-11-26", "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []


@pytest.mark.parametrize(
    "args",
    [
        ["export", "threads"],
        ["export", "threads", "--since", "2026-11-01T00:00:00+01:00", "--unit", "u-x"],
        ["export", "deliveries"],
        ["export", "deliveries", "--announcement", "an-1"],
        ["inbox", "list", "--dead"],
    ],
)
def test_other_exports_on_an_empty_store(config: Path, args: list[str]) -> None:
    result = skolebro(*args, "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []


def test_misspelt_key_is_named(tmp_path: Path) -> None:
    cfg = tmp_path / "skolebro.toml"
    cfg.write_text('[sms]\nform_number = "+4759440000"\n')
    result = skolebro("init", "--config", str(cfg))
    assert result.returncode == 1
    assert "sms.form_number" in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_config_from_environment_variable(tmp_path: Path) -> None:
    cfg = tmp_path / "elsewhere.toml"
    cfg.write_text("[bridge]\ntimezone = 'Mars/Olympus'\n")
    result = skolebro("init", env={"SKOLEBRO_CONFIG": str(cfg)})
    assert result.returncode == 1 and "bridge.timezone" in result.stderr


def test_missing_secret_for_an_enabled_channel(tmp_path: Path) -> None:
    cfg = write_config(
        tmp_path, "sqlite+aiosqlite:///bro.db", '[sms]\nenabled = true\nauth_token_env = "NOPE_X"\n'
    )
    result = skolebro("run", "--config", str(cfg), env={"NOPE_X": ""})
    assert result.returncode == 1
    assert "sms.auth_token_env" in result.stderr and "NOPE_X" in result.stderr


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    assert skolebro("no-such-command").returncode == 2
    assert skolebro("export", "absences").returncode == 2  # --date is required
    assert skolebro("export", "absences", "--date", "28.11.2026").returncode == 2
    assert skolebro().returncode == 2


def test_every_command_has_help() -> None:
    for command in [
        "init", "import-roster", "run", "demo", "understand", "announce", "export",
        "deliveries", "inbox", "digest", "invite", "apikey", "email", "gdpr",
    ]:  # fmt: skip
        result = skolebro(command, "--help")
        assert result.returncode == 0 and "usage:" in result.stdout, command


def test_apikey_needs_a_known_unit(config: Path) -> None:
    result = skolebro("apikey", "create", "--unit", "u-nowhere", "--config", str(config))
    assert result.returncode == 1 and "u-nowhere" in result.stderr


def test_store_unavailable_is_one_line(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, "postgresql+asyncpg://postgres@127.0.0.1:1/none")
    result = skolebro("export", "absences", "--date", "2026-11-26", "--config", str(cfg))
    assert result.returncode == 1
    assert "store unavailable" in result.stderr and "Traceback" not in result.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_run_serves_health_and_metrics_and_stops_on_sigterm(tmp_path: Path) -> None:
    port = _free_port()
    cfg = write_config(tmp_path, "sqlite+aiosqlite:///bro.db", f"[http]\nport = {port}\n")
    proc = subprocess.Popen(
        [SKOLEBRO, "run", "--config", str(cfg)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={k: v for k, v in os.environ.items() if k != "SKOLEBRO_CONFIG"},
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                    health = json.loads(r.read())
                break
            except OSError:
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                assert time.monotonic() < deadline, "bridge did not come up"
                time.sleep(0.2)
        assert health["status"] == "ok"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            text = r.read().decode()
        assert "skolebro_outbox_depth 0.0" in text
        assert 'skolebro_dead_letters{kind="inbound"} 0.0' in text
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
        assert time.monotonic() - started < 15
        # Structured logs: one JSON object per line, with level, logger and event.
        assert proc.stderr is not None
        records = [json.loads(line) for line in proc.stderr.read().splitlines() if line]
        assert records and all({"level", "logger", "event", "timestamp"} <= set(r) for r in records)
        assert any(r["event"] == "stopping" for r in records)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_import_roster_counts_and_rerun(config: Path) -> None:
    from tests.conftest import EXAMPLE_ROSTER

    first = skolebro("import-roster", str(EXAMPLE_ROSTER), "--config", str(config))
    assert first.returncode == 0, first.stderr
    assert first.stdout.splitlines()[0] == "created 13, updated 0, unchanged 0, rejected 0"
    again = skolebro("import-roster", str(EXAMPLE_ROSTER), "--json", "--config", str(config))
    assert json.loads(again.stdout) == {"created": 0, "updated": 0, "unchanged": 13, "rejected": []}


def test_import_roster_with_bad_rows_names_them_and_exits_1(config: Path) -> None:
    bad = Path(__file__).parent / "data" / "roster" / "bad.csv"
    human = skolebro("import-roster", str(bad), "--config", str(config))
    assert human.returncode == 1
    assert any(line.startswith("line 7:") for line in human.stdout.splitlines())
    assert any(line.startswith("line 9:") for line in human.stdout.splitlines())
    as_json = json.loads(
        skolebro("import-roster", str(bad), "--json", "--config", str(config)).stdout
    )
    assert [r["line"] for r in as_json["rejected"]] == [7, 9]
    missing = skolebro("import-roster", "/nonexistent.csv", "--config", str(config))
    assert missing.returncode == 1 and len(missing.stderr.strip().splitlines()) == 1


def test_digest_preview_run_and_run_again(config: Path) -> None:
    from tests.conftest import EXAMPLE_ROSTER

    assert skolebro("import-roster", str(EXAMPLE_ROSTER), "--config", str(config)).returncode == 0
    args = [
        "--kind",
        "absence",
        "--unit",
        "u-fjell",
        "--date",
        "2026-11-26",
        "--config",
        str(config),
    ]
    preview = skolebro("digest", "preview", *args)
    assert preview.returncode == 0 and preview.stdout.strip()
    first = skolebro("digest", "run", *args)
    assert first.returncode == 0 and "mails queued" in first.stdout
    again = skolebro("digest", "run", *args)
    assert again.returncode == 0 and "already sent" in again.stdout
    unknown = skolebro("digest", "run", "--kind", "absence", "--unit", "u-nope",
                       "--date", "2026-11-26", "--config", str(config))  # fmt: skip
    assert unknown.returncode == 1
