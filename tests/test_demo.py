"""`skolebro demo` as a user starts it: a real process that prints its page's address,
serves the page and the bridge, takes an announcement through the bridge's own API,
keeps numbers, addresses and bodies out of its logs, and exits 0 on SIGTERM."""

from __future__ import annotations

import contextlib
import json
import re
import signal
import subprocess
import time
import tomllib
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bridge.demo.municipality import generate
from tests.cli import SKOLEBRO

URL_LINE = re.compile(r"^http://127\.0\.0\.1:(\d+)/$")


@dataclass
class Demo:
    process: subprocess.Popen[str]
    url: str  # the page, as printed
    bridge_url: str  # the bridge's own HTTP server, from the config the demo wrote
    folder: Path
    stderr: Path

    def get(self, path: str, base: str | None = None) -> Any:
        with urllib.request.urlopen((base or self.url).rstrip("/") + path, timeout=10) as r:
            body = r.read()
            return json.loads(body) if r.headers.get_content_type() == "application/json" else body

    def post(self, path: str, data: dict[str, Any]) -> Any:
        request = urllib.request.Request(
            self.url.rstrip("/") + path,
            data=json.dumps(data).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as r:
            return json.loads(r.read())


@contextlib.contextmanager
def running_demo(tmp_path: Path, start_within: float = 60) -> Iterator[Demo]:
    """`skolebro demo --port 0 --dir <tmp>`, yielded once it printed its address."""
    folder = tmp_path / "demo"
    stderr = tmp_path / "demo.stderr"
    with stderr.open("w") as err:
        process = subprocess.Popen(
            [SKOLEBRO, "demo", "--port", "0", "--dir", str(folder)],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            cwd=tmp_path,
        )
    try:
        assert process.stdout is not None
        deadline = time.monotonic() + start_within
        url = None
        # The address is the last line printed at start; a readline that blocks past the
        # deadline means the demo hung, and the test's own timeout ends it.
        for line in process.stdout:
            if URL_LINE.match(line.rstrip("\n")):
                url = line.strip()
                break
            assert time.monotonic() < deadline, "no address printed in time"
        assert url, f"the demo exited ({process.poll()}): {stderr.read_text()[-2000:]}"
        config = tomllib.loads((folder / "skolebro.toml").read_text(encoding="utf-8"))
        yield Demo(process, url, config["bridge"]["public_url"], folder, stderr)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)


def stop(demo: Demo) -> tuple[int, float]:
    """SIGTERM; returns the exit status and how long it took."""
    started = time.monotonic()
    demo.process.send_signal(signal.SIGTERM)
    status = demo.process.wait(20)
    return status, time.monotonic() - started


def eventually(check: Any, within: float = 15.0) -> Any:
    deadline = time.monotonic() + within
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out; last value {value!r}"
        time.sleep(0.2)


def test_generated_municipality_covers_every_channel_and_notify_choice() -> None:
    m = generate()
    assert len(m.students) == 200
    assert {u.type for u in m.units} == {"school", "sfo"} and len(m.units) == 4
    assert {g.channels.split(";")[0] for g in m.guardians} == {"sms", "telegram", "email"}
    assert {s.notify for s in m.staff} == {"each", "digest", "both"}
    kjersti = m.guardians[0]
    assert kjersti.name == "Kjersti Nordmann" and kjersti.channels.startswith("sms")
    names = {s.id: s.first_name for s in m.students}
    assert [names[s] for s in kjersti.students] == ["Ola", "Kari"]
    assert len({g.mobile for g in m.guardians}) == len(m.guardians)
    assert generate().rows() == m.rows()  # the same municipality every time


def test_demo_serves_page_and_bridge_and_stops_on_sigterm(tmp_path: Path) -> None:
    with running_demo(tmp_path) as demo:
        page = demo.get("/")
        assert b"skolebro demo" in page and b"/static/demo.js" in page
        assert b"textContent" in demo.get("/static/demo.js")
        assert demo.get("/healthz", demo.bridge_url)["status"] == "ok"
        directory = demo.get("/demo/directory")
        assert len(directory["parents"]) > 200 and directory["mailboxes"]

        # An announcement through the bridge's own API, watched until the fakes have it.
        created = demo.post(
            "/demo/announcements",
            {"unit_id": "u-fjell", "group_ids": ["g-fjell-2a"], "text": "Turdag fredag"},
        )
        assert created["deliveries"] > 0

        def all_out() -> dict[str, Any] | None:
            a = demo.get(f"/demo/announcements/{created['announcement_id']}")
            done = sum(a["fakes"].values()) == a["deliveries"]
            return a if done else None

        a = eventually(all_out)
        assert set(a["summary"]) == {"sms", "telegram", "email"}
        assert eventually(
            lambda: (
                "delivered"
                in demo.get(f"/demo/announcements/{created['announcement_id']}")["summary"]["sms"]
            )
        )

        # A parent texts; the confirmation comes back to the phone.
        assert demo.post("/demo/sms", {"guardian": "gd-001", "text": "Ola er syk i dag"}) == {
            "webhook_status": 200
        }

        def confirmations() -> list[dict[str, Any]]:
            sms = demo.get("/demo/phone/gd-001")["sms"]
            return [m for m in sms if not m["mine"] and "Ola" in m["text"]]

        assert "ANGRE" in eventually(confirmations)[0]["text"]

        status, took = stop(demo)
        assert status == 0
        assert took < 15
    logs = demo.stderr.read_text()
    assert "Ola er syk" not in logs and "Turdag" not in logs
    m = generate()
    for g in m.guardians:
        assert g.mobile.lstrip("+") not in logs and g.email not in logs
    for s in m.staff:
        assert s.email not in logs


def test_busy_port_is_one_line(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        result = subprocess.run(
            [SKOLEBRO, "demo", "--port", str(port), "--dir", str(tmp_path / "d")],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 1
    assert f"127.0.0.1:{port}" in result.stderr and "Traceback" not in result.stderr
