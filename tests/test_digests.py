"""Digests on a real store (SQLite and PostgreSQL): who gets what, once."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from adapters.mail_out import MailContent
from bridge import digests
from bridge.announcements import create_announcement
from bridge.config import DigestSettings, EmailSettings, Settings
from bridge.roster import import_roster
from bridge.store import tables as t
from bridge.store.ids import new_id
from tests.conftest import EXAMPLE_ROSTER

SETTINGS = Settings(email=EmailSettings(enabled=True), digests=DigestSettings())
TUE = date(2026, 3, 3)  # a Tuesday, a school day
MON = date(2026, 3, 2)
WED = date(2026, 3, 4)


async def _store(engine: AsyncEngine) -> None:
    await import_roster(engine, EXAMPLE_ROSTER)
    async with engine.begin() as conn:
        # Amina has a confidential address: her name must not reach a digest.
        await conn.execute(
            update(t.guardians).where(t.guardians.c.id == "gd-amina").values(protected=True)
        )
        await conn.execute(update(t.staff).where(t.staff.c.id == "st-tor").values(language="en"))


def _absence(
    student: str,
    unit: str,
    start: date,
    end: date | None = None,
    *,
    by: str | None = "gd-kjersti",
    channel: str = "sms",
    note: str | None = None,
    from_time: str | None = None,
    to_time: str | None = None,
    reason: str = "illness",
    status: str = "active",
    created: datetime | None = None,
) -> dict[str, Any]:
    now = created or datetime.now(UTC) - timedelta(hours=1)
    return {
        "id": new_id("ab"),
        "student_id": student,
        "unit_id": unit,
        "from_date": start,
        "to_date": end or start,
        "from_time": from_time,
        "to_time": to_time,
        "reason": reason,
        "note": note,
        "reported_by": by,
        "channel": channel,
        "received_at": now,
        "status": status,
        "created_at": now,
        "updated_at": now,
    }


async def _add(engine: AsyncEngine, *rows: dict[str, Any]) -> list[str]:
    async with engine.begin() as conn:
        await conn.execute(insert(t.absences), list(rows))
    return [r["id"] for r in rows]


async def _mails(engine: AsyncEngine, kind: str = "digest") -> dict[str, dict[str, Any]]:
    """Queued e-mails of this delivery kind, by address: the row plus its parsed mail."""
    d = t.deliveries
    async with engine.connect() as conn:
        rows = (await conn.execute(select(d).where(d.c.kind == kind))).mappings().all()
    found = {}
    for row in rows:
        content = MailContent.from_json(row["body"])
        found[row["address"]] = {**row, "mail": content}
    return found


def _section(text: str, start: str, end: str | None) -> str:
    tail = text.split(start, 1)[1]
    return tail.split(end, 1)[0] if end else tail


async def test_absence_digest_groups_children_and_keeps_units_apart(engine: AsyncEngine) -> None:
    await _store(engine)
    await _add(
        engine,
        _absence("s-ola", "u-fjell", TUE, note="Ola har feber"),  # unredacted on purpose
        _absence("s-kari", "u-fjell", MON, WED, from_time="10:00", reason="appointment"),
        _absence("s-aisha", "u-fjell", TUE, by="gd-amina", channel="email", reason="other"),
        _absence("s-ola", "u-fjell-sfo", TUE, from_time="15:00", note="SFO-henting"),
        _absence("s-kari", "u-fjell", TUE, status="cancelled", note="avlyst"),
        _absence("s-aisha", "u-fjell", WED, note="neste dag"),
    )
    result = await digests.run_digest(engine, SETTINGS, kind="absence", unit_id="u-fjell", day=TUE)
    assert result == digests.DigestResult(sent=True, already=False, deliveries=2)
    mails = await _mails(engine)
    assert set(mails) == {"lise.berg@example.kommune.no", "tor.vik@example.kommune.no"}

    lise = mails["lise.berg@example.kommune.no"]
    assert lise["staff_id"] == "st-lise" and lise["priority"] == "bulk"
    mail: MailContent = lise["mail"]
    assert mail.subject == "Fravær tirsdag 3.3. – Fjellsiden skole"
    assert mail.auto_submitted and mail.html and "<table" in mail.html
    assert mail.reply_to and mail.reply_to.endswith("@" + SETTINGS.email.reply_domain)
    mine = _section(mail.text, "Dine grupper", "Resten av Fjellsiden skole")
    rest = _section(mail.text, "Resten av Fjellsiden skole", "Fravær per skoledag")
    assert "Ola Nordmann" in mine and "Aisha Hassan" in mine and "Kari Nordmann" not in mine
    assert "Kari Nordmann" in rest and "2.3.–4.3., fra kl. 10:00, time hos lege e.l." in rest
    assert mine.index("Aisha Hassan") < mine.index("Ola Nordmann")
    # The note is redacted once more; the protected guardian is only "foresatt".
    assert "feber" not in mail.text and "Merknad: Ola har [fjernet]" in mail.text
    assert "Amina" not in mail.text and "Meldt av foresatt" in mail.text
    assert "Meldt av Kjersti Nordmann" in mail.text
    assert "feber" not in mail.html and "Amina" not in mail.html
    # Never the SFO's report, a cancelled one, or another day's.
    # ("fra kl. 15:00", not "15:00": the mail may name the time it was made.)
    for absent in ("SFO-henting", "fra kl. 15:00", "avlyst", "neste dag"):
        assert absent not in mail.text and absent not in mail.html

    tor: MailContent = mails["tor.vik@example.kommune.no"]["mail"]
    assert tor.subject == "Absences Tuesday 3.3. – Fjellsiden skole"
    mine = _section(tor.text, "Your groups", "Rest of Fjellsiden skole")
    rest = _section(tor.text, "Rest of Fjellsiden skole", "Absences per school day")
    assert "Kari Nordmann" in mine and "Ola Nordmann" not in mine
    assert "Ola Nordmann" in rest and "Aisha Hassan" in rest
    assert "Reported by guardian" in tor.text

    sfo = await digests.run_digest(engine, SETTINGS, kind="absence", unit_id="u-fjell-sfo", day=TUE)
    assert sfo.deliveries == 1
    siri: MailContent = (await _mails(engine))["sfo.leder@example.kommune.no"]["mail"]
    assert "SFO-henting" in siri.text and "fra kl. 15:00" in siri.text
    assert "Kari" not in siri.text and "Aisha" not in siri.text


async def test_a_second_or_concurrent_run_sends_nothing(engine: AsyncEngine) -> None:
    await _store(engine)
    await _add(engine, _absence("s-ola", "u-fjell", TUE))
    runs = await asyncio.gather(
        *(
            digests.run_digest(engine, SETTINGS, kind="absence", unit_id="u-fjell", day=TUE)
            for _ in range(3)
        )
    )
    assert sorted((r.sent, r.already) for r in runs) == [
        (False, True),
        (False, True),
        (True, False),
    ]
    again = await digests.run_digest(engine, SETTINGS, kind="absence", unit_id="u-fjell", day=TUE)
    assert again == digests.DigestResult(sent=False, already=True, deliveries=0)
    assert len(await _mails(engine)) == 2
    async with engine.connect() as conn:
        run = (await conn.execute(select(t.digest_runs))).mappings().one()
    assert (run["unit_id"], run["kind"], run["day"], run["deliveries"]) == (
        "u-fjell",
        "absence",
        TUE,
        2,
    )
    assert run["sent_at"] is not None and run["started_at"] <= run["sent_at"]


async def test_preview_shows_the_first_recipients_text_and_sends_nothing(
    engine: AsyncEngine,
) -> None:
    await _store(engine)
    await _add(engine, _absence("s-ola", "u-fjell", TUE), _absence("s-kari", "u-fjell", TUE))
    text = await digests.preview_digest(
        engine, SETTINGS, kind="absence", unit_id="u-fjell", day=TUE
    )
    async with engine.connect() as conn:
        for table in (t.deliveries, t.digest_runs, t.reply_tokens):
            assert (await conn.execute(select(table))).first() is None
    await digests.run_digest(engine, SETTINGS, kind="absence", unit_id="u-fjell", day=TUE)
    assert (await _mails(engine))["lise.berg@example.kommune.no"]["mail"].text == text
    with pytest.raises(digests.DigestError, match="unknown unit"):
        await digests.preview_digest(engine, SETTINGS, kind="absence", unit_id="u-x", day=TUE)
    with pytest.raises(digests.DigestError, match="unknown digest kind"):
        await digests.run_digest(engine, SETTINGS, kind="weekly", unit_id="u-fjell", day=TUE)


async def test_a_unit_without_digest_staff_gets_it_at_its_own_address(engine: AsyncEngine) -> None:
    await _store(engine)
    async with engine.begin() as conn:
        await conn.execute(
            update(t.staff_units).where(t.staff_units.c.unit_id == "u-fjell").values(notify="each")
        )
    await _add(engine, _absence("s-ola", "u-fjell", TUE))
    preview = await digests.preview_digest(
        engine, SETTINGS, kind="absence", unit_id="u-fjell", day=TUE
    )
    assert "Ola Nordmann" in preview and "Dine grupper" not in preview  # the whole unit
    await digests.run_digest(engine, SETTINGS, kind="absence", unit_id="u-fjell", day=TUE)
    mails = await _mails(engine)
    assert list(mails) == ["fjellsiden.skole@example.kommune.no"]
    assert mails["fjellsiden.skole@example.kommune.no"]["staff_id"] is None
    assert mails["fjellsiden.skole@example.kommune.no"]["mail"].text == preview


async def test_late_reports_are_notified_at_once_and_listed_in_the_next_digest(
    engine: AsyncEngine,
) -> None:
    await _store(engine)
    early = datetime.now(UTC) - timedelta(hours=2)
    await _add(engine, _absence("s-kari", "u-fjell", MON, created=early))
    await digests.run_digest(engine, SETTINGS, kind="absence", unit_id="u-fjell", day=MON)
    # Tuesday's digest was missed; a Tuesday report from before the miss reached nobody.
    [for_missed_day] = await _add(
        engine, _absence("s-aisha", "u-fjell", TUE, created=early, by="gd-amina")
    )
    assert await digests.mark_missed(engine, kind="absence", unit_id="u-fjell", day=TUE)
    assert not await digests.mark_missed(engine, kind="absence", unit_id="u-fjell", day=TUE)
    missed = await digests.run_digest(engine, SETTINGS, kind="absence", unit_id="u-fjell", day=TUE)
    assert missed == digests.DigestResult(sent=False, already=True, deliveries=0, missed=True)

    # A report for Monday arrives after Monday's digest went out.
    [late] = await _add(engine, _absence("s-ola", "u-fjell", MON, created=datetime.now(UTC)))
    async with engine.begin() as conn:
        assert await digests.digest_already_sent(conn, "u-fjell", MON)
        assert await digests.digest_already_sent(conn, "u-fjell", TUE)  # missed counts
        assert not await digests.digest_already_sent(conn, "u-fjell", WED)
        noon_wed = datetime(2026, 3, 4, 11, 0, tzinfo=UTC)
        needing = await digests.absences_needing_notice(
            conn, SETTINGS, [late, for_missed_day], now=noon_wed
        )
        assert sorted(needing) == sorted([late, for_missed_day])
        assert await digests.notify_late_absence(conn, SETTINGS, [late]) == 1
    [notice] = (await _mails(engine, "notification")).values()
    assert notice["address"] == "lise.berg@example.kommune.no"  # follows 2A, digest or both
    assert notice["priority"] == "normal"
    assert notice["mail"].subject == "Ny fraværsmelding: Ola Nordmann"
    assert "2.3." in notice["mail"].text and "hele dagen" in notice["mail"].text

    await digests.run_digest(engine, SETTINGS, kind="absence", unit_id="u-fjell", day=WED)
    wed = [m for m in (await _mails(engine)).values() if "4.3." in m["mail"].subject]
    text = next(m["mail"].text for m in wed if m["address"].startswith("lise"))
    late_part = _section(text, "Meldt etter forrige oversikt", "Fravær per skoledag")
    assert "Ola Nordmann (2A)" in late_part and "2.3." in late_part  # reported late
    assert "Aisha Hassan (2A)" in late_part and "3.3." in late_part  # the missed day's
    assert "Kari" not in late_part  # was in Monday's digest


async def test_late_notice_goes_to_the_office_when_no_digest_staff_follows(
    engine: AsyncEngine,
) -> None:
    await _store(engine)
    async with engine.begin() as conn:
        await conn.execute(
            update(t.staff_units)
            .where(t.staff_units.c.unit_id == "u-fjell-sfo")
            .values(notify="each")
        )
    [sfo] = await _add(engine, _absence("s-ola", "u-fjell-sfo", TUE, from_time="14:00"))
    async with engine.begin() as conn:
        assert await digests.notify_late_absence(conn, SETTINGS, [sfo]) == 1
    [notice] = (await _mails(engine, "notification")).values()
    assert notice["address"] == "fjellsiden.sfo@example.kommune.no" and notice["staff_id"] is None
    assert "fra kl. 14:00" in notice["mail"].text


async def test_unanswered_messages_go_to_followers_then_to_the_office(
    engine: AsyncEngine,
) -> None:
    await _store(engine)
    now = datetime.now(UTC)
    m, th = t.messages, t.threads

    async def thread(student: str, guardian: str, *messages: tuple[str, float, str]) -> str:
        thread_id = new_id("th")
        async with engine.begin() as conn:
            await conn.execute(
                insert(th),
                {
                    "id": thread_id,
                    "guardian_id": guardian,
                    "unit_id": "u-fjell",
                    "student_id": student,
                    "created_at": now - timedelta(days=5),
                    "last_message_at": now,
                },
            )
            for direction, hours_ago, body in messages:
                await conn.execute(
                    insert(m),
                    {
                        "id": new_id("msg"),
                        "thread_id": thread_id,
                        "direction": direction,
                        "channel": "sms",
                        "author": guardian if direction == "in" else "st-lise",
                        "body": body,
                        "sensitive": [],
                        "sent_at": now - timedelta(hours=hours_ago),
                    },
                )
        return thread_id

    ola = await thread("s-ola", "gd-kjersti", ("in", 30, "Når er foreldremøtet?"))
    kari = await thread("s-kari", "gd-per", ("in", 50, "Hvor er gymtøyet?"), ("in", 3, "Hallo?"))
    await thread("s-aisha", "gd-amina", ("in", 30, "Spørsmål"), ("out", 29, "Svar"))
    await thread("s-kari", "gd-kjersti", ("in", 2, "Fersk melding"))

    preview = await digests.preview_digest(
        engine,
        SETTINGS,
        kind="unanswered",
        unit_id="u-fjell",
        day=now.astimezone(SETTINGS.tz).date(),
    )
    assert "Ola Nordmann (2A) – Kjersti Nordmann" in preview and "Kari" not in preview
    result = await digests.run_digest(
        engine,
        SETTINGS,
        kind="unanswered",
        unit_id="u-fjell",
        day=now.astimezone(SETTINGS.tz).date(),
    )
    assert result.deliveries == 3
    mails = await _mails(engine)
    assert set(mails) == {
        "lise.berg@example.kommune.no",
        "tor.vik@example.kommune.no",
        "fjellsiden.skole@example.kommune.no",
    }
    lise = mails["lise.berg@example.kommune.no"]["mail"].text
    assert "Ola Nordmann (2A)" in lise and "Når er foreldremøtet?" in lise
    assert "Kari" not in lise and "Aisha" not in lise and "Fersk" not in lise
    tor = mails["tor.vik@example.kommune.no"]["mail"].text
    assert "Kari Nordmann (5B) – Per Nordmann" in tor
    assert "unanswered messages: 2" in tor and "Latest: Hallo?" in tor
    assert "also sent to the office" in tor
    office = mails["fjellsiden.skole@example.kommune.no"]["mail"].text
    assert "Kari Nordmann" in office and "Ola" not in office and "48 timer" in office
    # Each entry carries a reply address bound to its thread.
    async with engine.connect() as conn:
        tokens = (await conn.execute(select(t.reply_tokens))).mappings().all()
    bound = {(r["recipient_id"], r["thread_id"]) for r in tokens if r["thread_id"]}
    assert bound == {("st-lise", ola), ("st-tor", kari), ("u-fjell", kari)}
    assert "Answer by writing to r-" in tor


async def test_guardian_digest_collects_held_announcements(engine: AsyncEngine) -> None:
    await _store(engine)
    async with engine.begin() as conn:
        await conn.execute(
            update(t.guardians)
            .where(t.guardians.c.id.in_(("gd-amina", "gd-kjersti")))
            .values(digest=True)
        )
    made = []
    for text in ("Tur til skogen fredag.", "Husk matpakke."):
        made.append(
            await create_announcement(
                engine, SETTINGS, unit_id="u-fjell", text=text, student_ids=["s-aisha", "s-ola"]
            )
        )
    d = t.deliveries
    # The core's fan-out holds digest guardians' e-mails; done here by hand.
    async with engine.begin() as conn:
        held = await conn.execute(
            update(d)
            .where(d.c.channel == "email", d.c.guardian_id.in_(("gd-amina", "gd-kjersti")))
            .values(status="skipped", last_error=digests.HELD)
        )
        assert held.rowcount == 2  # Amina's first channel is e-mail; Kjersti's is SMS
    today = datetime.now(SETTINGS.tz).date()
    async with engine.begin() as conn:
        assert await digests.guardian_digest(conn, SETTINGS, today) == 1
    async with engine.begin() as conn:
        assert await digests.guardian_digest(conn, SETTINGS, today) == 0
    [mail] = (await _mails(engine)).values()
    assert mail["guardian_id"] == "gd-amina" and mail["address"] == "amina.hassan@example.no"
    content: MailContent = mail["mail"]
    assert content.subject.startswith("Messages from the school")  # her language is en
    assert content.text.index("Tur til skogen") < content.text.index("Husk matpakke")
    assert content.list_unsubscribe and "STOPP" in content.list_unsubscribe
    async with engine.connect() as conn:
        marks = set(await conn.scalars(select(d.c.last_error).where(d.c.status == "skipped")))
    assert marks == {f"{digests.HELD}:{mail['id']}"}
    assert all(a.deliveries >= 3 for a in made)


async def test_guardian_digest_falls_back_when_the_address_said_stopp(engine: AsyncEngine) -> None:
    await _store(engine)
    await create_announcement(
        engine, SETTINGS, unit_id="u-fjell", text="Hei", student_ids=["s-aisha"]
    )
    d = t.deliveries
    now = datetime.now(UTC)
    async with engine.begin() as conn:
        await conn.execute(
            update(d)
            .where(d.c.channel == "email")
            .values(status="skipped", last_error=digests.HELD)
        )
        await conn.execute(
            insert(t.contact_points),
            {
                "channel": "email",
                "address": "amina.hassan@example.no",
                "opted_out_at": now,
                "updated_at": now,
            },
        )
        assert await digests.guardian_digest(conn, SETTINGS, now.date() + timedelta(days=1)) == 0
    async with engine.connect() as conn:
        rows = (await conn.execute(select(d).order_by(d.c.created_at))).mappings().all()
    sms = [r for r in rows if r["channel"] == "sms" and r["fallback_of"]]
    assert len(sms) == 1 and sms[0]["body"] == "Fjellsiden skole: Hei"
    assert not [r for r in rows if r["kind"] == "digest"]


async def test_chart_counts_school_days_only(engine: AsyncEngine) -> None:
    await _store(engine)
    day = date(2027, 5, 19)  # 17 May 2027 is a Monday and a public holiday
    async with engine.begin() as conn:
        await conn.execute(
            insert(t.closed_days),
            {
                "unit_id": "u-fjell",
                "from_date": date(2027, 5, 3),
                "to_date": date(2027, 5, 4),
                "name": "planleggingsdager",
                "created_at": datetime.now(UTC),
            },
        )
    await _add(
        engine,
        _absence("s-ola", "u-fjell", date(2027, 5, 10), date(2027, 5, 19)),
        _absence("s-ola", "u-fjell", day, from_time="12:00"),  # the same child: counted once
        _absence("s-kari", "u-fjell", day),
        _absence("s-aisha", "u-fjell-sfo", day),
    )
    async with engine.connect() as conn:
        unit = await digests.load_unit(conn, "u-fjell")
        digest = await digests.build_absence_digest(conn, SETTINGS, unit, day)
    days = [d for d, _ in digest.chart]
    assert date(2027, 5, 17) not in days and date(2027, 5, 3) not in days
    assert all(d.weekday() < 5 for d in days) and days[-1] == day
    assert len(days) == 20 - 4  # four weeks, less 6 May (Ascension), 17 May and 2 closed days
    counts = dict(digest.chart)
    assert counts[day] == 2 and counts[date(2027, 5, 18)] == 1 and counts[date(2027, 5, 7)] == 0
    rendered = digests.render_absence_digest(
        digest, digests.DigestRecipient(None, None, "nn", ()), SETTINGS
    )
    assert rendered.subject == "Fråvær onsdag 19.5. – Fjellsiden skole"
    assert "Siste fire veker: 8 fråvær på 16 skuledagar, høgst 2 på éin dag." in rendered.text
    assert rendered.html.count('bgcolor="#d9822b"') == 1  # the day itself, highlighted


def test_mail_json_is_what_the_adapter_reads() -> None:
    body = digests.mail_json(
        to="a@example.no",
        subject="Emne",
        text="tekst",
        html_part="<p>tekst</p>",
        reply_to="r-x@svar.example.no",
        from_display="Skole (skolebro)",
    )
    content = MailContent.from_json(body)
    assert (content.html, content.auto_submitted, content.reply_to) == (
        "<p>tekst</p>",
        True,
        "r-x@svar.example.no",
    )
    assert json.loads(body)["mail"]["text"] == "tekst"


def test_days_setting_parses_ranges_and_lists() -> None:
    assert digests.parse_days("mon-fri") == frozenset(range(5))
    assert digests.parse_days("mon,wed,fri") == frozenset({0, 2, 4})
    assert digests.parse_days("sat-mon") == frozenset({5, 6, 0})


async def test_run_digests_runs_many_units_in_one_chunk_each_once(engine: AsyncEngine) -> None:
    await _store(engine)
    await _add(engine, _absence("s-ola", "u-fjell", TUE), _absence("s-ola", "u-fjell-sfo", TUE))
    first = await digests.run_digest(
        engine, SETTINGS, kind="absence", unit_id="u-fjell-sfo", day=TUE
    )
    assert first.deliveries == 1
    results = await digests.run_digests(
        engine, SETTINGS, kind="absence", unit_ids=["u-fjell-sfo", "u-fjell"], day=TUE
    )
    assert results == {
        "u-fjell": digests.DigestResult(sent=True, already=False, deliveries=2),
        "u-fjell-sfo": digests.DigestResult(sent=False, already=True, deliveries=0),
    }
    assert len(await _mails(engine)) == 3
    with pytest.raises(digests.DigestError, match="unknown unit: u-nope"):
        await digests.run_digests(
            engine, SETTINGS, kind="absence", unit_ids=["u-fjell", "u-nope"], day=WED
        )
    async with engine.connect() as conn:  # the failed chunk left nothing behind
        assert (
            await conn.execute(select(t.digest_runs).where(t.digest_runs.c.day == WED))
        ).first() is None
