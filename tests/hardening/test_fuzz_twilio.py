"""Fuzzing the Twilio webhooks on the real aiohttp app over a real store.

Random and malformed requests — unsigned, badly signed, wrong content types, garbage
bodies, and correctly signed forms with random fields — are answered 2xx or 4xx, never
5xx; a refused request stores nothing, an accepted one stores exactly one event, and the
inbox processes every stored event without it dying.
"""

from __future__ import annotations

from collections.abc import Iterator

import aiohttp
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from multidict import MultiDict
from twilio.request_validator import RequestValidator

from bridge.store import tables as t
from tests.hardening.harness import ThreadedWorld, sqlite_url, threaded_world
from tests.world import TOKEN, write_roster

FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
SMS = "/webhooks/twilio/sms"
STATUS = "/webhooks/twilio/status"
KNOWN = "+4791000000"  # guardian 0 of write_roster


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadedWorld]:
    tmp = tmp_path_factory.mktemp("twilio-fuzz")
    url = sqlite_url(tmp)
    roster = write_roster(tmp / "roster.csv", [("gd-0", "sms", "nb"), ("gd-1", "sms", "en")])
    with threaded_world(url, tmp, roster) as w:
        yield w
        _assert_none_died(w)  # after whichever of this module's tests ran on this worker


def _assert_none_died(w: ThreadedWorld) -> None:
    w.settle()
    e = t.inbound_events
    assert w.count(e, e.c.status == "dead") == 0
    # Unknown senders keep neither body nor number (SPEC 8).
    assert w.count(e, e.c.sender.is_(None), e.c.body.is_not(None)) == 0


async def _post(
    url: str, body: bytes, headers: dict[str, str], method: str = "POST"
) -> tuple[int, str]:
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, url, data=body, headers=headers, allow_redirects=False) as r,
    ):
        return r.status, await r.text()


def _sign(url: str, form: MultiDict[str]) -> str:
    return str(RequestValidator(TOKEN).compute_signature(url, form))


def _encode(pairs: list[tuple[str, str]]) -> bytes:
    from urllib.parse import urlencode

    return urlencode(pairs).encode("utf-8", "surrogatepass")


TEXT = st.text(max_size=200)
SID = st.one_of(
    st.from_regex(r"SM[0-9a-f]{32}", fullmatch=True),
    st.text(max_size=70),
)
FROM = st.one_of(
    st.just(KNOWN), st.just("+4791000001"), st.from_regex(r"\+47[0-9]{8}", fullmatch=True), TEXT
)
FIELD_NAMES = st.sampled_from(
    ["MessageSid", "SmsSid", "From", "To", "Body", "NumMedia", "NumSegments", "AccountSid",
     "MessagingServiceSid", "MessageStatus", "ErrorCode", "MediaUrl0", "x", ""]
)  # fmt: skip
EXTRA = st.lists(st.tuples(FIELD_NAMES, TEXT), max_size=6)
HEADERS = st.dictionaries(
    st.sampled_from(["Content-Type", "X-Twilio-Signature", "Content-Encoding", "X-Forwarded-For",
                     "Transfer-Encoding-Hint", "Accept"]),
    st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=60),
)  # fmt: skip


def _no_5xx(status: int) -> None:
    assert status < 500, status


@FUZZ
@given(body=st.binary(max_size=2000), headers=HEADERS, path=st.sampled_from([SMS, STATUS]),
       method=st.sampled_from(["POST", "POST", "GET", "PUT"]))  # fmt: skip
@example(body=b"MessageSid=SM1&From=%2B4791000000&Body=hi", headers={
    "Content-Type": "application/x-www-form-urlencoded", "X-Twilio-Signature": "AAAA"},
    path=SMS, method="POST")  # fmt: skip
@example(
    body=b"%ff%fe=%c3%28",
    headers={"Content-Type": "application/x-www-form-urlencoded", "X-Twilio-Signature": "x"},
    path=SMS,
    method="POST",
)
def test_unsigned_and_garbage_requests_are_refused_and_store_nothing(
    world: ThreadedWorld, body: bytes, headers: dict[str, str], path: str, method: str
) -> None:
    before = world.count(t.inbound_events)
    status, _ = world.call(_post(world.base + path, body, headers, method))
    _no_5xx(status)
    assert status in (400, 403, 405, 413, 415), status
    assert world.count(t.inbound_events) == before


@FUZZ
@given(sid=SID, from_=FROM, body=TEXT, extra=EXTRA, media=st.one_of(TEXT, st.integers().map(str)))
@example(sid="SM" + "a" * 32, from_=KNOWN, body="Barn0 er syk'); DROP TABLE guardians;--",
         extra=[], media="0")  # fmt: skip
@example(sid="SM" + "b" * 32, from_="\x00\ud800", body="\x00", extra=[("From", "x")], media="-9")
def test_signed_random_forms_are_400_or_stored_once(
    world: ThreadedWorld, sid: str, from_: str, body: str, extra: list[tuple[str, str]], media: str
) -> None:
    pairs = [("MessageSid", sid), ("From", from_), ("To", "+4759440000"), ("Body", body),
             ("NumMedia", media), *extra]  # fmt: skip
    # What the server will parse (UTF-8 with surrogates cannot be sent: Twilio never does).
    pairs = [(k.encode("utf-8", "replace").decode(), v.encode("utf-8", "replace").decode())
             for k, v in pairs]  # fmt: skip
    form: MultiDict[str] = MultiDict(pairs)
    url = world.base + SMS
    headers = {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Twilio-Signature": _sign(url, form),
    }
    before = world.count(t.inbound_events)
    status, text = world.call(_post(url, _encode(pairs), headers))
    _no_5xx(status)
    after = world.count(t.inbound_events)
    if status == 200:
        assert "<Response/>" in text
        assert after - before in (0, 1)
        stored_sid = form.get("MessageSid", "").strip()
        assert world.count(t.inbound_events, t.inbound_events.c.external_id == stored_sid) == 1
    else:
        assert status == 400, (status, text)
        assert after == before


@FUZZ
@given(sid=SID, status_=st.one_of(st.sampled_from(["sent", "delivered", "failed", "undelivered",
                                                   "read", "queued"]), TEXT),
       code=st.one_of(TEXT, st.integers().map(str)), d=TEXT)  # fmt: skip
def test_signed_random_status_callbacks_are_never_5xx(
    world: ThreadedWorld, sid: str, status_: str, code: str, d: str
) -> None:
    from urllib.parse import quote

    pairs = [("MessageSid", sid), ("MessageStatus", status_), ("ErrorCode", code)]
    pairs = [(k, v.encode("utf-8", "replace").decode()) for k, v in pairs]
    url = world.base + STATUS + "?d=" + quote(d.encode("utf-8", "replace"), safe="")
    form: MultiDict[str] = MultiDict(pairs)
    headers = {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Twilio-Signature": _sign(url, form),
    }
    status, _ = world.call(_post(url, _encode(pairs), headers))
    _no_5xx(status)
    assert status in (200, 400, 403), status


def test_every_fuzzed_event_was_processed_none_died(world: ThreadedWorld) -> None:
    """A few odd but signed messages, then: every stored event processed, none dead."""
    url = world.base + SMS
    for i, (from_, body) in enumerate([(KNOWN, "1"), (KNOWN, "\u202e\x00"), ("x", "STOPP")]):
        pairs = [("MessageSid", f"SM{i:032x}"), ("From", from_), ("Body", body)]
        form: MultiDict[str] = MultiDict(pairs)
        headers = {
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Twilio-Signature": _sign(url, form),
        }
        status, _ = world.call(_post(url, _encode(pairs), headers))
        assert status == 200
    _assert_none_died(world)
    assert world.count(t.inbound_events) >= 3
