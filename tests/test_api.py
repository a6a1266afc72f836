"""The JSON API at /api/v1 on the real aiohttp app and a real store (SQLite and PostgreSQL).

Every answer any test here gets is also checked against the OpenAPI document: its status
must be documented for the operation, its media type and body must match the schema.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import re
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import func, insert, select, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine

from bridge import threads as thread_store
from bridge.api import OPENAPI, add_api, api_routes
from bridge.api.auth import TokenBucket
from bridge.apikeys import create_api_key
from bridge.config import PrivacySettings, Settings
from bridge.export import export_absences, export_threads
from bridge.http import build_app
from bridge.roster import import_roster
from bridge.store import tables as t
from bridge.store.db import create_engine

try:  # shipped with schemathesis, the pinned test dependency
    import jsonschema_rs
except ImportError:  # pragma: no cover
    jsonschema_rs = None  # type: ignore[assignment]

EXAMPLE = Path(__file__).resolve().parent / "data" / "example.csv"
PREFIX = "/api/v1"
SETTINGS = Settings()
TZ = SETTINGS.tz

# The protected guardian: none of this may appear in an answer (SPEC 8).
HIDDEN = {"first": "Skjulte", "last": "Hemmeligsen", "mobile": "+4794567890",
          "email": "skjult.adresse@example.no"}  # fmt: skip
EXTRA_ROWS = [
    # Protected (confidential address), guardian of Aisha (school and SFO).
    {"kind": "guardian", "guardian_id": "gd-hidden", "first_name": HIDDEN["first"],
     "last_name": HIDDEN["last"], "mobile": HIDDEN["mobile"], "email": HIDDEN["email"],
     "language": "nb", "channels": "sms;email", "students": "s-aisha", "protected": "yes"},
    # Only Kari (school only): visible to u-fjell, not to u-fjell-sfo.
    {"kind": "guardian", "guardian_id": "gd-kari", "first_name": "Kåre", "last_name": "Ås",
     "mobile": "+4795678901", "email": "kare@example.no", "language": "nb",
     "channels": "email", "students": "s-kari"},
    # No parental responsibility for Ola: visible to no key at all.
    {"kind": "guardian", "guardian_id": "gd-nopower", "first_name": "Nils", "last_name": "Nei",
     "mobile": "+4796789012", "email": "nils@example.no", "language": "nb",
     "channels": "sms", "students": "", "restricted_students": "s-ola"},
]  # fmt: skip


def write_roster(folder: Path) -> Path:
    """tests/data/example.csv plus a protected guardian and restricted links."""
    with EXAMPLE.open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        header = [*list(reader.fieldnames or []), "restricted_students", "protected"]
        rows = [dict(r) for r in reader]
    path = folder / "roster.csv"
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=header, restval="")
        writer.writeheader()
        writer.writerows([*rows, *EXTRA_ROWS])
    return path


# --- checking answers against the document ------------------------------------------------


def _operation(method: str, path: str) -> dict[str, Any] | None:
    local = path.removeprefix(PREFIX)
    for template, item in OPENAPI["paths"].items():
        pattern = "^" + re.sub(r"\\\{[a-z_]+\\\}", "[^/]+", re.escape(template)) + "$"
        if re.match(pattern, local) and method.lower() in item:
            return dict(item[method.lower()])
    return None


def _validator(schema: dict[str, Any]) -> Any:
    assert jsonschema_rs is not None
    return jsonschema_rs.validator_for(
        {**schema, "components": OPENAPI["components"]}, validate_formats=True
    )


def check_against_document(method: str, path: str, status: int, ctype: str, body: Any) -> None:
    media = ctype.split(";")[0].strip()
    operation = _operation(method, path)
    if operation is None:  # an unknown path or method: a problem all the same
        assert status in (404, 405) and media == "application/problem+json", (status, media)
        return
    responses = operation["responses"]
    assert str(status) in responses, f"{method} {path}: {status} is not documented"
    response = responses[str(status)]
    if "$ref" in response:
        response = OPENAPI["components"]["responses"][response["$ref"].rsplit("/", 1)[1]]
    assert media in response["content"], f"{method} {path} {status}: {media}"
    if jsonschema_rs is not None and method != "HEAD":
        schema = response["content"][media]["schema"]
        errors = [str(e) for e in _validator(schema).iter_errors(body)]
        assert not errors, f"{method} {path} {status}: {errors[:3]}"


# --- the harness -------------------------------------------------------------------------


@dataclasses.dataclass
class Answer:
    status: int
    body: Any
    headers: Any
    text: str


@dataclasses.dataclass
class Api:
    client: TestClient[web.Request, web.Application]
    engine: AsyncEngine
    keys: dict[str, str]  # name -> secret
    key_ids: dict[str, str]  # name -> key id
    answers: list[Answer] = dataclasses.field(default_factory=list)

    async def call(self, method: str, path: str, key: str | None = "fjell", **kw: Any) -> Answer:
        headers = dict(kw.pop("headers", {}))
        if key is not None:
            headers["Authorization"] = f"Bearer {self.keys.get(key, key)}"
        async with self.client.request(method, PREFIX + path, headers=headers, **kw) as r:
            text = await r.text()
            ctype = r.headers.get("Content-Type", "")
            body = json.loads(text) if text else None
            assert "Traceback" not in text
            check_against_document(method, PREFIX + path.split("?")[0], r.status, ctype, body)
            answer = Answer(r.status, body, r.headers, text)
        self.answers.append(answer)
        return answer

    async def get(self, path: str, key: str | None = "fjell", **kw: Any) -> Answer:
        return await self.call("GET", path, key, **kw)

    async def post(self, path: str, body: Any, key: str | None = "fjell", **kw: Any) -> Answer:
        return await self.call("POST", path, key, json=body, **kw)

    async def count(self, table: Any, *where: Any) -> int:
        async with self.engine.connect() as conn:
            counted = await conn.scalar(select(func.count()).select_from(table).where(*where))
            return int(counted or 0)


async def make_keys(engine: AsyncEngine) -> tuple[dict[str, str], dict[str, str]]:
    keys: dict[str, str] = {}
    ids: dict[str, str] = {}
    for name, units, ro in [
        ("fjell", ["u-fjell"], False),
        ("sfo", ["u-fjell-sfo"], False),
        ("both", ["u-fjell", "u-fjell-sfo"], False),
        ("fjell_ro", ["u-fjell"], True),
    ]:
        ids[name], keys[name] = await create_api_key(engine, units, read_only=ro)
    return keys, ids


async def start_api(
    engine: AsyncEngine, settings: Settings = SETTINGS, **options: Any
) -> tuple[TestClient[web.Request, web.Application], list[int]]:
    wakes: list[int] = []
    app = build_app(engine)
    options.setdefault("rate", 1000.0)
    options.setdefault("burst", 1000)
    add_api(app, engine, settings, on_outbound=lambda: wakes.append(1), **options)
    client: TestClient[web.Request, web.Application] = TestClient(TestServer(app))
    await client.start_server()
    return client, wakes


@pytest.fixture
async def api(engine: AsyncEngine, tmp_path: Path) -> AsyncIterator[Api]:
    result = await import_roster(engine, write_roster(tmp_path))
    assert not result.rejected, result.rejected
    keys, ids = await make_keys(engine)
    client, _ = await start_api(engine)
    try:
        yield Api(client, engine, keys, ids)
    finally:
        await client.close()


async def seed_thread(
    engine: AsyncEngine, guardian: str, unit: str, student: str, body: str = "Hei!",
    channel: str = "sms", at: datetime | None = None,
) -> str:  # fmt: skip
    """A thread with one inbound message from the guardian."""
    async with engine.begin() as conn:
        thread_id = await thread_store.thread_for(conn, guardian, unit, student)
        await thread_store.add_message(
            conn, thread_id, direction="in", channel=channel, author=guardian, body=body,
            sensitive=[], sent_at=at or datetime.now(UTC),
        )  # fmt: skip
    return thread_id


def absence_body(**over: Any) -> dict[str, Any]:
    body = {"student_id": "s-ola", "unit_id": "u-fjell", "from": "2026-11-26",
            "to": "2026-11-27", "reason": "illness"}  # fmt: skip
    body.update(over)
    return body


# --- the document itself -----------------------------------------------------------------


def test_document_lists_every_route_and_only_those(tmp_path: Path) -> None:
    sub = api_routes(create_engine(f"sqlite+aiosqlite:///{tmp_path / 'x.db'}"), SETTINGS)
    routes = {
        (r.method, r.resource.canonical)
        for r in sub.router.routes()
        if r.method != "HEAD" and r.resource is not None
    }
    documented = {
        (method.upper(), path) for path, item in OPENAPI["paths"].items() for method in item
    }
    assert routes == documented
    assert OPENAPI["openapi"] == "3.1.0"
    # Every $ref resolves.
    text = json.dumps(OPENAPI)
    for ref in set(re.findall(r'"\$ref": "#/([^"]+)"', text)):
        node: Any = OPENAPI
        for part in ref.split("/"):
            node = node[part]
    # Every operation documents auth failures and rate limiting, except the document itself.
    for path, item in OPENAPI["paths"].items():
        for method, op in item.items():
            if path != "/openapi.json":
                assert {"401", "429", "500"} <= set(op["responses"]), (method, path)
            if method == "post":
                assert {"400", "403", "413", "415", "422"} <= set(op["responses"]), path


async def check_openapi_json_is_served_without_a_key(api: Api) -> None:
    answer = await api.get("/openapi.json", key=None)
    assert answer.status == 200
    assert answer.body == json.loads(json.dumps(OPENAPI))


# --- auth ----------------------------------------------------------------------------------


async def check_missing_unknown_and_revoked_keys_get_401(api: Api) -> None:
    for headers in [{}, {"Authorization": "Basic dXNlcjpwdw=="}, {"Authorization": "Bearer"}]:
        answer = await api.get("/absences", key=None, headers=headers)
        assert answer.status == 401
        assert answer.body["type"] == "urn:skolebro:problem:unauthorized"
        assert answer.headers["WWW-Authenticate"].startswith("Bearer")
    assert (await api.get("/absences", key="sb_not-a-key")).status == 401
    assert (await api.get("/threads/th-x", key=None)).status == 401  # before any lookup
    assert (await api.get("/absences", key="sfo")).status == 200
    async with api.engine.begin() as conn:
        await conn.execute(
            update(t.api_keys)
            .where(t.api_keys.c.id == api.key_ids["sfo"])
            .values(revoked_at=datetime.now(UTC))
        )
    assert (await api.get("/absences", key="sfo")).status == 401


async def check_unknown_path_and_method_are_problems(api: Api) -> None:
    answer = await api.get("/nothing-here")
    assert answer.status == 404 and answer.body["status"] == 404
    for path in ["/absences?form=2026-11-26", "/threads/th-x?verbose=1", "/absences/x?a=b"]:
        answer = await api.get(path)  # a typo must not pass unseen
        assert answer.status == 400 and answer.body["errors"][0]["field"] == "?", path
    assert answer.headers["Cache-Control"] == "no-store"
    answer = await api.call("DELETE", "/absences")
    assert answer.status == 405
    assert "GET" in answer.headers["Allow"] and "POST" in answer.headers["Allow"]
    assert answer.body["type"] == "urn:skolebro:problem:method-not-allowed"


# --- announcements ---------------------------------------------------------------------------


async def check_announcement_create_and_get_with_summary(api: Api) -> None:
    answer = await api.post(
        "/announcements",
        {"unit_id": "u-fjell", "text": "Turdag fredag!", "subject": "Tur", "group_ids": ["g-2a"]},
    )
    assert answer.status == 201, answer.body
    announcement_id = answer.body["announcement_id"]
    # 2A: Ola (Kjersti, Per) and Aisha (Amina, the protected guardian).
    assert answer.body["deliveries"] == 4
    assert answer.headers["Location"] == f"{PREFIX}/announcements/{announcement_id}"
    got = await api.get(f"/announcements/{announcement_id}")
    assert got.status == 200
    body = got.body
    assert body["id"] == announcement_id and body["unit_id"] == "u-fjell"
    assert body["text"] == "Turdag fredag!" and body["subject"] == "Tur"
    assert body["group_ids"] == ["g-2a"] and body["urgent"] is False
    assert body["created_by"] == api.key_ids["fjell"]
    assert body["deliveries"] == 4
    by_channel = body["summary"]
    assert sum(n for statuses in by_channel.values() for n in statuses.values()) == 4
    # Kjersti, Per (no linked chat: SMS) and the protected guardian by SMS; Amina by e-mail.
    assert by_channel == {"sms": {"queued": 3}, "email": {"queued": 1}}
    # Urgent, to a student: the union of the guardians, each once.
    answer = await api.post(
        "/announcements",
        {"unit_id": "u-fjell", "text": "Ring oss", "student_ids": ["s-kari"], "urgent": True},
    )
    assert (
        answer.status == 201
        and answer.body["deliveries"] == 3
        and answer.body["not_before"] is None
    )
    assert await api.count(t.audit_log, t.audit_log.c.action == "api.announcement.create") == 2
    blank = await api.post("/announcements", {"unit_id": "u-fjell", "text": "Hei", "subject": ""})
    got = await api.get(f"/announcements/{blank.body['announcement_id']}")
    assert got.body["subject"] is None and got.headers["Cache-Control"] == "no-store"


async def check_announcement_bad_input(api: Api) -> None:
    cases: list[tuple[Any, int, str]] = [
        ({"unit_id": "u-fjell", "text": "Hei", "group_ids": ["g-none"]}, 422, ""),
        ({"unit_id": "u-fjell", "text": "Hei", "student_ids": ["s-ghost"]}, 422, ""),
        ({"unit_id": "u-fjell", "text": "   "}, 422, "text"),
        ({"unit_id": "u-fjell"}, 422, "text"),
        ({"text": "Hei"}, 422, "unit_id"),
        ({"unit_id": "u-fjell", "text": "Hei", "urgent": "yes"}, 422, "urgent"),
        ({"unit_id": "u-fjell", "text": "Hei", "group_ids": "g-2a"}, 422, "group_ids"),
        ({"unit_id": "u-fjell", "text": "Hei", "colour": "red"}, 422, "colour"),
        ({"unit_id": "u-fjell", "text": "Hei\x00"}, 422, "text"),
        ({"unit_id": "u-fjell", "text": "x" * 2000}, 422, ""),  # too long for SMS
        (["u-fjell", "Hei"], 422, ""),
    ]
    for body, status, field in cases:
        answer = await api.post("/announcements", body)
        assert answer.status == status, (body, answer.body)
        assert answer.body["type"] == "urn:skolebro:problem:validation"
        if field:
            assert field in [e["field"] for e in answer.body["errors"]], answer.body
    answer = await api.call(
        "POST", "/announcements", data=b'{"unit_id": ', headers={"Content-Type": "application/json"}
    )
    assert answer.status == 400
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    answer = await api.call("POST", "/announcements", data="unit_id=u-fjell", headers=form)
    assert answer.status == 415
    big = json.dumps({"unit_id": "u-fjell", "text": "x" * 70_000})
    answer = await api.call(
        "POST", "/announcements", data=big, headers={"Content-Type": "application/json"}
    )
    assert answer.status == 413

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it comes
        for _ in range(20):
            yield b" " * 8192
        yield b"{}"

    answer = await api.call(
        "POST", "/announcements", data=chunks(), headers={"Content-Type": "application/json"}
    )
    assert answer.status == 413
    assert await api.count(t.announcements) == 0


# --- absences ---------------------------------------------------------------------------------


async def check_absence_create_get_and_list(api: Api) -> None:
    answer = await api.post("/absences", absence_body(note="Ringte kl 8"))
    assert answer.status == 201, answer.body
    created = answer.body
    assert created["channel"] == "api" and created["status"] == "active"
    assert created["reported_by"] is None and created["note"] == "Ringte kl 8"
    assert created["student"] == "Ola Nordmann" and created["unit_type"] == "school"
    assert (created["from"], created["to"]) == ("2026-11-26", "2026-11-27")
    assert answer.headers["Location"] == f"{PREFIX}/absences/{created['id']}"
    assert (await api.get(f"/absences/{created['id']}")).body == created
    # The SFO part of a day, phoned in by a guardian.
    sfo = await api.post(
        "/absences",
        absence_body(unit_id="u-fjell-sfo", to="2026-11-26", from_time="14:00",
                     reason="appointment", reported_by="gd-kjersti"),
        key="sfo",
    )  # fmt: skip
    assert sfo.status == 201, sfo.body
    assert sfo.body["reported_by"] == "gd-kjersti" and sfo.body["from_time"] == "14:00"
    listed = await api.get("/absences?from=2026-11-27&to=2026-11-30", key="both")
    assert [a["id"] for a in listed.body["items"]] == [created["id"]]
    listed = await api.get("/absences?from=2026-11-26&to=2026-11-26", key="both")
    assert {a["id"] for a in listed.body["items"]} == {created["id"], sfo.body["id"]}
    listed = await api.get("/absences?from=2026-11-26&unit_id=u-fjell-sfo", key="both")
    assert [a["id"] for a in listed.body["items"]] == [sfo.body["id"]]
    # Default: today.
    today = datetime.now(TZ).date().isoformat()
    now_report = await api.post("/absences", absence_body(**{"from": today, "to": today}))
    listed = await api.get("/absences")
    assert [a["id"] for a in listed.body["items"]] == [now_report.body["id"]]
    # Status filter: cancelled ones are listed too, with their status.
    async with api.engine.begin() as conn:
        await conn.execute(
            update(t.absences).where(t.absences.c.id == created["id"]).values(status="cancelled")
        )
    listed = await api.get("/absences?from=2026-11-26&to=2026-11-27")
    assert [a["status"] for a in listed.body["items"]] == ["cancelled"]
    listed = await api.get("/absences?from=2026-11-26&to=2026-11-27&status=active")
    assert listed.body["items"] == []


async def check_absence_shape_is_the_export_shape(api: Api) -> None:
    answer = await api.post("/absences", absence_body(note="Ringte"))
    exported = await export_absences(api.engine, date(2026, 11, 26), TZ, "u-fjell")
    assert [a for a in exported if a["id"] == answer.body["id"]] == [answer.body]


async def check_absence_note_is_redacted_or_dropped(api: Api) -> None:
    engine = api.engine
    answer = await api.post("/absences", absence_body(note="Ola har feber og omgangssyke"))
    assert answer.status == 201
    note = answer.body["note"]
    assert "feber" not in note and "omgangssyke" not in note and "[fjernet]" in note
    async with engine.connect() as conn:
        stored = await conn.scalar(
            select(t.absences.c.note).where(t.absences.c.id == answer.body["id"])
        )
    assert stored == note
    reject = dataclasses.replace(SETTINGS, privacy=PrivacySettings(sensitive_action="reject"))
    client, _ = await start_api(engine, reject)
    try:
        r = await client.post(f"{PREFIX}/absences", json=absence_body(note="Ola har feber"),
                              headers={"Authorization": f"Bearer {api.keys['fjell']}"})  # fmt: skip
        body = await r.json()
        assert r.status == 201 and body["note"] is None and body["reason"] == "illness"
    finally:
        await client.close()


async def check_absence_bad_input(api: Api) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        (absence_body(student_id="s-kari", unit_id="u-fjell-sfo"), "student_id"),  # not in SFO
        (absence_body(student_id="s-ghost"), "student_id"),
        (absence_body(**{"from": "2026-11-28", "to": "2026-11-27"}), "to"),
        (absence_body(**{"from": "2026-11-31"}), "from"),
        (absence_body(**{"from": "28.11.2026"}), "from"),
        (absence_body(to="2026-11-26", from_time="25:00"), "from_time"),
        (absence_body(to="2026-11-26", to_time="9:00"), "to_time"),
        (absence_body(from_time="10:00"), "from_time"),  # a time span over two days
        (absence_body(to="2026-11-26", from_time="12:00", to_time="10:00"), "to_time"),
        (absence_body(reason="holiday"), "reason"),
        (absence_body(reason=None), "reason"),
        (absence_body(reported_by="gd-nopower"), "reported_by"),  # restricted
        (absence_body(reported_by="gd-amina"), "reported_by"),  # not Ola's guardian
        (absence_body(note=7), "note"),
        (absence_body(extra=True), "extra"),
    ]
    for body, field in cases:
        answer = await api.post("/absences", body, key="both")
        assert answer.status == 422, (body, answer.body)
        assert field in [e["field"] for e in answer.body["errors"]], (body, answer.body)
    missing = {k: v for k, v in absence_body().items() if k != "from"}
    assert (await api.post("/absences", missing)).status == 422
    assert (await api.post("/absences", "just a string")).status == 422
    assert await api.count(t.absences) == 0


async def check_absence_list_pagination_and_bad_params(api: Api) -> None:
    ids = []
    for i in range(7):
        day = "2026-12-07"
        answer = await api.post("/absences", absence_body(note=f"#{i}", to=day, **{"from": day}))
        ids.append(answer.body["id"])
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        query = "/absences?from=2026-12-07&to=2026-12-07&limit=3"
        answer = await api.get(query + (f"&cursor={cursor}" if cursor else ""))
        assert answer.status == 200
        seen += [a["id"] for a in answer.body["items"]]
        pages += 1
        cursor = answer.body["next_cursor"]
        if cursor is None:
            break
    assert seen == sorted(ids) and pages == 3
    threads = await api.get("/threads?limit=1")
    assert threads.status == 200
    for query in [
        "limit=0", "limit=501", "limit=abc", "limit=-1", "cursor=nonsense", "cursor=eyJrIjoxfQ",
        "from=2026-13-01", "from=26.11.2026", "to=x", "from=2026-11-27&to=2026-11-26",
        "status=gone",
    ]:  # fmt: skip
        answer = await api.get(f"/absences?{query}")
        assert answer.status == 400, (query, answer.body)
        assert answer.body["type"] == "urn:skolebro:problem:bad-request"
    # A cursor from another list is refused.
    await seed_thread(api.engine, "gd-kjersti", "u-fjell", "s-ola")
    await seed_thread(api.engine, "gd-per", "u-fjell", "s-ola")
    thread_cursor = (await api.get("/threads?limit=1")).body["next_cursor"]
    assert thread_cursor
    assert (await api.get(f"/absences?cursor={thread_cursor}")).status == 400
    assert (await api.get("/absences?limit=500")).status == 200


# --- threads ----------------------------------------------------------------------------------


async def check_threads_list_get_and_reply(api: Api) -> None:
    old = datetime.now(UTC) - timedelta(days=3)
    first = await seed_thread(
        api.engine, "gd-kjersti", "u-fjell", "s-ola", "Hei fra Kjersti", at=old
    )
    second = await seed_thread(api.engine, "gd-per", "u-fjell", "s-kari", "Hei fra Per", "telegram")
    await seed_thread(api.engine, "gd-amina", "u-fjell-sfo", "s-aisha", "SFO-melding")
    listed = await api.get("/threads")
    assert [th["id"] for th in listed.body["items"]] == [first, second]
    assert "messages" not in listed.body["items"][0]
    page = await api.get("/threads?limit=1")
    assert [th["id"] for th in page.body["items"]] == [first] and page.body["next_cursor"]
    page = await api.get(f"/threads?limit=1&cursor={page.body['next_cursor']}")
    assert [th["id"] for th in page.body["items"]] == [second]
    assert page.body["next_cursor"] is None
    assert listed.body["items"][0]["guardian_ids"] == ["gd-kjersti"]
    since = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    listed = await api.get("/threads", params={"since": since, "include_messages": "true"})
    assert [th["id"] for th in listed.body["items"]] == [second]
    assert [m["body"] for m in listed.body["items"][0]["messages"]] == ["Hei fra Per"]
    listed = await api.get("/threads?since=2000-01-01&include_messages=true")
    assert len(listed.body["items"]) == 2
    assert (await api.get("/threads?since=yesterday")).status == 400
    assert (await api.get("/threads?since=")).status == 400
    for edge in ["0001-01-01", "0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"]:
        answer = await api.get("/threads", params={"since": edge})
        assert answer.status == 200, edge
    # An unencoded "+" arrives as a space; a time without an offset is local time.
    answer = await api.get(f"/threads?since={since[:19]} 00:00&include_messages=1")
    assert answer.status == 200
    answer = await api.get(f"/threads?since={since[:19]}")
    assert answer.status == 200
    got = await api.get(f"/threads/{first}")
    assert got.status == 200
    assert got.body["student_id"] == "s-ola" and got.body["unit_id"] == "u-fjell"
    assert [m["direction"] for m in got.body["messages"]] == ["in"]
    # A reply: stored, and sent by SMS, where Kjersti last wrote.
    answer = await api.post(f"/threads/{first}/replies", {"text": "Takk, vi ringer i morgen."})
    assert answer.status == 201, answer.body
    message, delivery = answer.body["message"], answer.body["delivery"]
    assert message["direction"] == "out" and message["channel"] == "api"
    assert (
        message["author"] == api.key_ids["fjell"] and message["body"] == "Takk, vi ringer i morgen."
    )
    assert delivery["channel"] == "sms" and delivery["status"] == "queued"
    async with api.engine.connect() as conn:
        row = (
            (await conn.execute(select(t.deliveries).where(t.deliveries.c.id == delivery["id"])))
            .mappings()
            .one()
        )
    assert row["address"] == "+4791234567" and row["thread_id"] == first and row["kind"] == "reply"
    assert row["body"].endswith("Takk, vi ringer i morgen.")
    got = await api.get(f"/threads/{first}")
    assert [m["direction"] for m in got.body["messages"]] == ["in", "out"]
    # As a staff member of the unit; not as one of another unit.
    answer = await api.post(
        f"/threads/{first}/replies", {"text": "Hilsen Lise", "staff_id": "st-lise"}
    )
    assert answer.status == 201 and answer.body["message"]["author"] == "st-lise"
    answer = await api.post(f"/threads/{first}/replies", {"text": "Hei", "staff_id": "st-siri"})
    assert answer.status == 422 and answer.body["errors"][0]["field"] == "staff_id"
    assert await api.count(t.messages, t.messages.c.thread_id == first) == 3
    for body in [{}, {"text": ""}, {"text": 5}, {"text": "x" * 3001}, {"text": "Hei", "cc": "x"}]:
        assert (await api.post(f"/threads/{first}/replies", body)).status == 422, body
    assert (await api.post("/threads/th-nothing/replies", {"text": "Hei"})).status == 404


async def check_thread_shape_is_the_export_shape(api: Api) -> None:
    thread_id = await seed_thread(api.engine, "gd-per", "u-fjell", "s-ola", "Hei")
    await api.post(f"/threads/{thread_id}/replies", {"text": "Hei igjen"})
    (exported,) = [x for x in await export_threads(api.engine, TZ) if x["id"] == thread_id]
    got = (await api.get(f"/threads/{thread_id}")).body
    assert {k: got[k] for k in exported} == exported


async def check_sensitive_reply_is_refused_and_not_stored(api: Api) -> None:
    thread_id = await seed_thread(api.engine, "gd-amina", "u-fjell", "s-aisha")
    before = await api.count(t.deliveries)
    answer = await api.post(
        f"/threads/{thread_id}/replies",
        {"text": "Vi har meldt saken til barnevernet, og Ola får medisin for ADHD."},
    )
    assert answer.status == 422
    assert answer.body["type"] == "urn:skolebro:problem:sensitive-content"
    assert "sensitive" in answer.body["detail"]
    assert answer.body["sensitive"]
    assert await api.count(t.messages, t.messages.c.thread_id == thread_id) == 1
    assert await api.count(t.deliveries) == before


async def check_reply_without_an_open_channel_is_stored_without_delivery(api: Api) -> None:
    thread_id = await seed_thread(api.engine, "gd-kari", "u-fjell", "s-kari", channel="email")
    async with api.engine.begin() as conn:
        await conn.execute(
            insert(t.contact_points),
            {"channel": "email", "address": "kare@example.no", "dead_at": datetime.now(UTC),
             "dead_reason": "550", "updated_at": datetime.now(UTC)},
        )  # fmt: skip
    answer = await api.post(f"/threads/{thread_id}/replies", {"text": "Hei"})
    assert answer.status == 201 and answer.body["delivery"] is None


# --- guardians ----------------------------------------------------------------------------------


async def check_contact_state(api: Api) -> None:
    answer = await api.get("/guardians/gd-kjersti/contact-state")
    assert answer.status == 200
    assert answer.body == {
        "guardian_id": "gd-kjersti", "active": True, "protected": False,
        "channels": [
            {"channel": "sms", "address": "+4791234567", "has_address": True,
             "available": True, "opted_out": False, "dead": False},
            {"channel": "email", "address": "kjersti.nordmann@example.no", "has_address": True,
             "available": True, "opted_out": False, "dead": False},
        ],
        "first_available": "sms",
    }  # fmt: skip
    now = datetime.now(UTC)
    async with api.engine.begin() as conn:
        await conn.execute(
            insert(t.contact_points),
            [{"channel": "sms", "address": "+4791234567", "opted_out_at": now, "dead_at": None,
              "updated_at": now},
             {"channel": "email", "address": "kjersti.nordmann@example.no", "opted_out_at": None,
              "dead_at": now, "updated_at": now}],
        )  # fmt: skip
    body = (await api.get("/guardians/gd-kjersti/contact-state")).body
    assert [(c["opted_out"], c["dead"], c["available"]) for c in body["channels"]] == [
        (True, False, False),
        (False, True, False),
    ]
    assert body["first_available"] is None
    # Per's order is telegram,sms and he has no linked chat.
    body = (await api.get("/guardians/gd-per/contact-state")).body
    assert body["channels"][0] == {
        "channel": "telegram", "address": None, "has_address": False,
        "available": False, "opted_out": False, "dead": False,
    }  # fmt: skip
    assert body["first_available"] == "sms"


async def check_protected_guardian_is_never_exposed(api: Api) -> None:
    body = (await api.get("/guardians/gd-hidden/contact-state", key="both")).body
    assert body["protected"] is True
    assert [c["address"] for c in body["channels"]] == [None, None]
    assert [c["has_address"] for c in body["channels"]] == [True, True]
    # Everything else that can touch the protected guardian: an absence they phoned in, their
    # thread and a reply to it, an announcement that reaches them.
    await api.post("/absences", absence_body(student_id="s-aisha", reported_by="gd-hidden"))
    thread_id = await seed_thread(api.engine, "gd-hidden", "u-fjell", "s-aisha")
    await api.post(f"/threads/{thread_id}/replies", {"text": "Takk for beskjed"})
    announcement = await api.post("/announcements", {"unit_id": "u-fjell", "text": "Hei alle"})
    await api.get(f"/announcements/{announcement.body['announcement_id']}")
    await api.get("/absences?from=2026-11-26", key="both")
    await api.get(f"/threads/{thread_id}")
    await api.get("/threads?include_messages=true&since=2000-01-01", key="both")
    assert len(api.answers) >= 8
    for answer in api.answers:
        for secret in HIDDEN.values():
            assert secret not in answer.text, answer.text


async def check_guardian_visibility_follows_units_and_responsibility(api: Api) -> None:
    # Kjersti: Ola (school and SFO) and Kari (school).
    assert (await api.get("/guardians/gd-kjersti/contact-state", key="sfo")).status == 200
    # Kåre: only Kari, who is not in the SFO.
    assert (await api.get("/guardians/gd-kari/contact-state", key="fjell")).status == 200
    assert (await api.get("/guardians/gd-kari/contact-state", key="sfo")).status == 404
    # Nils: no parental responsibility for Ola: nobody's to see.
    for key in ("fjell", "sfo", "both"):
        assert (await api.get("/guardians/gd-nopower/contact-state", key=key)).status == 404
    assert (await api.get("/guardians/gd-ghost/contact-state")).status == 404


# --- scope: a key of one unit, the objects of another, for every endpoint ----------------------


async def check_a_key_for_one_unit_reaches_nothing_of_another(api: Api) -> None:
    school = {
        "absence": (await api.post("/absences", absence_body(), key="fjell")).body["id"],
        "thread": await seed_thread(api.engine, "gd-kari", "u-fjell", "s-kari"),
        "announcement": (
            await api.post("/announcements", {"unit_id": "u-fjell", "text": "Skole"}, key="fjell")
        ).body["announcement_id"],
        "guardian": "gd-kari",
    }
    sfo = {
        "absence": (
            await api.post("/absences", absence_body(unit_id="u-fjell-sfo"), key="sfo")
        ).body["id"],
        "thread": await seed_thread(api.engine, "gd-amina", "u-fjell-sfo", "s-aisha"),
        "announcement": (
            await api.post("/announcements", {"unit_id": "u-fjell-sfo", "text": "SFO"}, key="sfo")
        ).body["announcement_id"],
    }
    counts = {tbl.name: await api.count(tbl) for tbl in (t.absences, t.messages, t.announcements)}
    not_found = (await api.get("/absences/ab-does-not-exist", key="sfo")).body

    async def refused(key: str, own_unit: str, theirs: dict[str, str], other_unit: str) -> None:
        # Objects by id: 404, exactly like one that does not exist.
        for path in [f"/absences/{theirs['absence']}", f"/threads/{theirs['thread']}",
                     f"/announcements/{theirs['announcement']}"]:  # fmt: skip
            answer = await api.get(path, key=key)
            assert answer.status == 404, (key, path)
        answer = await api.post(f"/threads/{theirs['thread']}/replies", {"text": "Hei"}, key=key)
        assert answer.status == 404
        # Naming the other unit: 403.
        for path in ["/absences", "/threads"]:
            assert (await api.get(f"{path}?unit_id={other_unit}", key=key)).status == 403
        answer = await api.post("/announcements", {"unit_id": other_unit, "text": "x"}, key=key)
        assert answer.status == 403
        answer = await api.post("/absences", absence_body(unit_id=other_unit), key=key)
        assert answer.status == 403
        # Lists without a unit: only the key's own.
        listed = await api.get("/absences?from=2026-11-26&to=2026-11-27", key=key)
        assert {a["unit_id"] for a in listed.body["items"]} == {own_unit}
        listed = await api.get("/threads", key=key)
        assert {th["unit_id"] for th in listed.body["items"]} == {own_unit}

    await refused("sfo", "u-fjell-sfo", school, "u-fjell")
    await refused("fjell", "u-fjell", sfo, "u-fjell-sfo")
    assert (await api.get("/guardians/gd-kari/contact-state", key="sfo")).status == 404
    other = (await api.get(f"/absences/{school['absence']}", key="sfo")).body
    assert other == not_found  # nothing tells "exists elsewhere" from "does not exist"
    # Nothing was written by the refused requests.
    after = {tbl.name: await api.count(tbl) for tbl in (t.absences, t.messages, t.announcements)}
    assert after == counts
    # A student of the school is no student of the SFO.
    answer = await api.post(
        "/absences", absence_body(student_id="s-kari", unit_id="u-fjell-sfo"), key="sfo"
    )
    assert answer.status == 422


async def check_read_only_key_reads_but_never_writes(api: Api) -> None:
    thread_id = await seed_thread(api.engine, "gd-kjersti", "u-fjell", "s-ola")
    for path, body in [
        ("/announcements", {"unit_id": "u-fjell", "text": "Hei"}),
        ("/absences", absence_body()),
        (f"/threads/{thread_id}/replies", {"text": "Hei"}),
        ("/threads/th-none/replies", {"text": "Hei"}),
    ]:
        answer = await api.post(path, body, key="fjell_ro")
        assert answer.status == 403, path
        assert answer.body["type"] == "urn:skolebro:problem:read-only-key"
    assert await api.count(t.announcements) == 0
    assert await api.count(t.absences) == 0
    assert await api.count(t.messages) == 1
    for path in ["/absences", "/threads", f"/threads/{thread_id}",
                 "/guardians/gd-kjersti/contact-state"]:  # fmt: skip
        assert (await api.get(path, key="fjell_ro")).status == 200, path


# --- rate limit and failures ------------------------------------------------------------------


def test_token_bucket() -> None:
    now = [0.0]
    bucket = TokenBucket(20, 40, clock=lambda: now[0])
    assert all(bucket.take("k") == 0 for _ in range(40))
    wait = bucket.take("k")
    assert 0 < wait <= 0.05 + 1e-9
    assert bucket.take("other") == 0
    now[0] += 0.5  # ten tokens back
    assert all(bucket.take("k") == 0 for _ in range(10))
    assert bucket.take("k") > 0
    assert TokenBucket.retry_after(0.01) == "1" and TokenBucket.retry_after(2.2) == "3"


async def check_rate_limit_answers_429_per_key(api: Api) -> None:
    client, _ = await start_api(api.engine, rate=0.5, burst=3)
    try:
        auth = {"Authorization": f"Bearer {api.keys['fjell']}"}
        statuses = []
        for _ in range(4):
            async with client.get(f"{PREFIX}/threads", headers=auth) as r:
                statuses.append(r.status)
                body, ctype, retry = await r.json(content_type=None), r.content_type, r.headers
        assert statuses == [200, 200, 200, 429]
        assert ctype == "application/problem+json" and body["status"] == 429
        assert int(retry["Retry-After"]) >= 1
        check_against_document("GET", f"{PREFIX}/threads", 429, ctype, body)
        other = {"Authorization": f"Bearer {api.keys['sfo']}"}
        async with client.get(f"{PREFIX}/threads", headers=other) as r:
            assert r.status == 200
    finally:
        await client.close()


async def check_unexpected_errors_are_bare_500_problems(
    api: Api, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    created = await api.post("/announcements", {"unit_id": "u-fjell", "text": "Hei"})

    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("secret detail +4791234567")

    monkeypatch.setattr("bridge.api.handlers.summary", broken)
    with caplog.at_level(logging.INFO, logger="skolebro.api"):
        answer = await api.get(f"/announcements/{created.body['announcement_id']}")
    assert answer.status == 500
    assert answer.body["type"] == "urn:skolebro:problem:internal"
    assert "secret" not in answer.text and "RuntimeError" not in answer.text
    assert "RuntimeError" in caplog.text and "secret" not in caplog.text
    assert "+4791234567" not in caplog.text

    async def down(*args: Any, **kwargs: Any) -> Any:
        raise OperationalError("SELECT", {}, ConnectionRefusedError("db down"))

    monkeypatch.setattr("bridge.api.find_key", down)
    answer = await api.get("/absences")
    assert answer.status == 503 and answer.headers["Retry-After"] == "5"


async def check_outbound_wakes_the_outbox(api: Api) -> None:
    client, wakes = await start_api(api.engine)
    try:
        auth = {"Authorization": f"Bearer {api.keys['fjell']}"}
        r = await client.post(
            f"{PREFIX}/announcements", json={"unit_id": "u-fjell", "text": "Hei"}, headers=auth
        )
        assert r.status == 201 and wakes == [1]
        r = await client.get(f"{PREFIX}/absences", headers=auth)
        assert r.status == 200 and wakes == [1]
    finally:
        await client.close()


def test_api_routes_mount_as_a_subapp(tmp_path: Path) -> None:
    app = web.Application()
    sub = api_routes(create_engine(f"sqlite+aiosqlite:///{tmp_path / 'x.db'}"), SETTINGS)
    app.add_subapp(PREFIX, sub)
    paths = {r.resource.canonical for r in app.router.routes() if r.resource is not None}
    assert f"{PREFIX}/openapi.json" in paths and f"{PREFIX}/threads/{{id}}/replies" in paths


# --- the groups: each runs on one fresh store per backend -----------------------------------


async def test_document_auth_and_routing(api: Api) -> None:
    await check_openapi_json_is_served_without_a_key(api)
    await check_unknown_path_and_method_are_problems(api)
    await check_missing_unknown_and_revoked_keys_get_401(api)


async def test_announcements(api: Api) -> None:
    await check_announcement_bad_input(api)
    await check_announcement_create_and_get_with_summary(api)


async def test_absences(api: Api) -> None:
    await check_absence_bad_input(api)
    await check_absence_create_get_and_list(api)
    await check_absence_shape_is_the_export_shape(api)
    await check_absence_note_is_redacted_or_dropped(api)


async def test_absence_pagination(api: Api) -> None:
    await check_absence_list_pagination_and_bad_params(api)


async def test_threads(api: Api) -> None:
    await check_threads_list_get_and_reply(api)
    await check_thread_shape_is_the_export_shape(api)
    await check_sensitive_reply_is_refused_and_not_stored(api)
    await check_reply_without_an_open_channel_is_stored_without_delivery(api)


async def test_guardians(api: Api) -> None:
    await check_contact_state(api)
    await check_guardian_visibility_follows_units_and_responsibility(api)
    await check_protected_guardian_is_never_exposed(api)


async def test_scope_and_read_only_keys(api: Api) -> None:
    await check_read_only_key_reads_but_never_writes(api)
    await check_a_key_for_one_unit_reaches_nothing_of_another(api)


async def test_rate_limit_failures_and_wakes(
    api: Api, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    await check_rate_limit_answers_429_per_key(api)
    await check_outbound_wakes_the_outbox(api)
    await check_unexpected_errors_are_bare_500_problems(api, monkeypatch, caplog)
