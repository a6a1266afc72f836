"""A guardian's dialogue on one contact point: understand, ask, record, confirm, undo.

`handle` runs inside the transaction that marks the inbound event processed, so its
effects (reports, thread messages, replies queued as deliveries) land exactly once.
"""

from __future__ import annotations

import copy
import re
import unicodedata
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from bridge import absences, digests, outbox, parent_replies, reply_tokens, staff_notices, threads
from bridge.config import Settings
from bridge.directory import Child, Sender, closed_dates, unit_name
from bridge.domain import mail_content, telegram_content
from bridge.i18n import translate
from bridge.store import tables as t
from bridge.understand import understand

QUESTION_TTL = timedelta(hours=2)
# A guardian writing more than this many messages an hour on one channel floods: the
# messages still reach the thread (nothing is lost), but the bridge stops acknowledging
# each one and stops mailing staff for each (they are in the unanswered digest); the
# parent is told once, politely. Absence confirmations are always sent (SPEC 8).
FLOOD_LIMIT = 20
FLOOD_WINDOW = timedelta(hours=1)
UNDO_WINDOW = timedelta(hours=24)
UNDO_WORDS = {"angre", "undo"}
_WORD_EDGES = re.compile(r"^[\W_]+|[\W_]+$")
_SFO_WORD = re.compile(r"(?<!\w)(sfo|aks|aktivitetsskolen)(?!\w)", re.IGNORECASE)
_NUMBERS = re.compile(r"\d+")
ALL_WORDS = {"begge", "both", "alle", "all", "barna", "ungane", "all of them"}


@dataclass
class Outcome:
    """What processing stores about the event itself."""

    body: str | None  # the redacted text, or None with `reject`
    sensitive: list[str] = field(default_factory=list)


@dataclass
class Context:
    conn: AsyncConnection
    settings: Settings
    channel: str
    address: str
    sender: Sender
    event_id: int
    received_at: datetime  # aware
    # Where a message belongs when the way it came says so: the thread a reply token
    # answers, or the unit whose address a mail was sent to.
    thread_hint: str | None = None
    unit_hint: str | None = None
    quoted: str | None = None  # the provider id of the bot message a Telegram reply quotes
    # The conversation state as last read or written in this transaction (None: not
    # read yet), so that saving a state that did not change costs no statement.
    stored_state: dict[str, Any] | None = field(default=None, repr=False)

    @property
    def lang(self) -> str:
        return self.sender.language

    def _(self, message: str, **values: object) -> str:
        return translate(self.lang, message, **values)

    async def reply(
        self,
        text: str,
        thread_id: str | None = None,
        *,
        choices: int = 0,
        undo_word: str | None = None,
    ) -> None:
        """An answer to the guardian's own message, on the channel they wrote on.

        On Telegram, numbered choices become buttons that answer with their number,
        and an undo word becomes an undo button; elsewhere the text says it all.
        """
        body = text
        if self.channel == "email":
            body = await self._mail(text, thread_id)
        elif self.channel == "telegram" and (choices or undo_word):
            rows = [[(str(n), f"c:{n}")] for n in range(1, choices + 1)]
            if undo_word:
                rows.append([(undo_word, "undo")])
            body = telegram_content(text, rows)
        await outbox.enqueue(
            self.conn,
            kind="reply",
            channel=self.channel,
            address=self.address,
            body=body,
            guardian_id=self.sender.reporter_id,
            thread_id=thread_id,
            priority="urgent",
        )

    async def _mail(self, text: str, thread_id: str | None) -> str:
        """A reply by e-mail carries a Reply-To token bound to this guardian."""
        local = await reply_tokens.issue(
            self.conn,
            recipient_kind="guardian",
            recipient_id=self.sender.reporter_id,
            address=self.address,
            days=self.settings.email.reply_token_days,
            thread_id=thread_id or self.thread_hint,
        )
        return mail_content(
            to=self.address,
            subject=self._("Message from the school"),
            text=text,
            reply_to=f"{local}@{self.settings.email.reply_domain}",
        )


# --- state -------------------------------------------------------------------------


async def _load_state(ctx: Context) -> dict[str, Any]:
    c = t.conversations
    row = await ctx.conn.scalar(
        select(c.c.state).where(c.c.channel == ctx.channel, c.c.address == ctx.address)
    )
    state = dict(row or {})
    ctx.stored_state = copy.deepcopy(state)
    return state


async def _save_state(ctx: Context, state: dict[str, Any]) -> None:
    """Store the state (no row for an empty one); nothing to do when it did not change."""
    if ctx.stored_state is not None and state == ctx.stored_state:
        return
    c = t.conversations
    now = datetime.now(UTC)
    where = (c.c.channel == ctx.channel, c.c.address == ctx.address)
    if not state:
        await ctx.conn.execute(delete(c).where(*where))
    else:
        done = await ctx.conn.execute(update(c).where(*where).values(state=state, updated_at=now))
        if not done.rowcount:
            await ctx.conn.execute(
                insert(c),
                {"channel": ctx.channel, "address": ctx.address, "state": state,
                 "updated_at": now},
            )  # fmt: skip
    ctx.stored_state = copy.deepcopy(state)


def _fresh(stamp: str | None, ttl: timedelta, now: datetime) -> bool:
    return bool(stamp) and now - datetime.fromisoformat(str(stamp)) <= ttl


# --- understanding -------------------------------------------------------------------


def _norm(text: str) -> str:
    folded = unicodedata.normalize("NFKD", text.casefold())
    return "".join(ch for ch in folded if not unicodedata.combining(ch))


def _bare_word(text: str) -> str:
    return _norm(_WORD_EDGES.sub("", text.strip()))


async def _understand(ctx: Context, text: str, children: tuple[Child, ...]) -> dict[str, Any]:
    units = sorted({u for c in children for u in (c.unit_id, c.sfo_unit_id) if u})
    local_day = ctx.received_at.astimezone(ctx.settings.tz).date()
    closed = await closed_dates(ctx.conn, units, local_day)
    return understand(
        {
            "id": str(ctx.event_id),
            "text": text,
            "received_at": ctx.received_at.astimezone(ctx.settings.tz).isoformat(),
            "children": [{"name": c.full_name, "units": c.unit_kinds} for c in children],
        },
        timezone=ctx.settings.bridge.timezone,
        closed_days=closed.__contains__,
    )


def _stored_text(ctx: Context, text: str, result: dict[str, Any]) -> str | None:
    """What of the parent's text may be kept, by `privacy.sensitive_action`."""
    if not result["sensitive"]:
        return text
    action = ctx.settings.privacy.sensitive_action
    if action == "reject":
        return None
    if action == "flag":
        return text
    return str(result["redacted"])


# --- rendering ---------------------------------------------------------------------


def _d(day: date) -> str:
    return f"{day.day}.{day.month}."


def _unit_words(ctx: Context, kinds: list[str]) -> str:
    if set(kinds) == {"school", "sfo"}:
        return ctx._("school and SFO")
    return ctx._("SFO") if kinds == ["sfo"] else ctx._("school")


def _reason_word(ctx: Context, reason: str) -> str:
    words = {
        "illness": ctx._("illness"),
        "appointment": ctx._("appointment"),
        "other": ctx._("other reason"),
    }
    return words.get(reason) or ctx._("no reason given")


def _confirmation_line(ctx: Context, first_name: str, absence: dict[str, Any]) -> str:
    start, end = date.fromisoformat(absence["from"]), date.fromisoformat(absence["to"])
    dates = _d(start) if start == end else f"{_d(start)}–{_d(end)}"
    times = ""
    if absence["from_time"] and absence["to_time"]:
        times = " " + ctx._("{start}–{end}", start=absence["from_time"], end=absence["to_time"])
    elif absence["from_time"]:
        times = " " + ctx._("from {time}", time=absence["from_time"])
    elif absence["to_time"]:
        times = " " + ctx._("until {time}", time=absence["to_time"])
    return ctx._(
        "{name}: absent from {units} {dates}{times} ({reason}).",
        name=first_name,
        units=_unit_words(ctx, absence["units"]),
        dates=dates,
        times=times,
        reason=_reason_word(ctx, absence["reason"]),
    )


def _choice_lines(labels: list[str]) -> str:
    return "\n".join(f"{i}: {label}" for i, label in enumerate(labels, 1))


def _labels(children: list[Child]) -> list[str]:
    firsts = [c.first_name for c in children]
    return [c.full_name if firsts.count(c.first_name) > 1 else c.first_name for c in children]


# --- the dialogue --------------------------------------------------------------------


async def handle(ctx: Context, text: str, media_count: int) -> Outcome:
    """Process one message from a known guardian; returns what to keep of the event."""
    now = ctx.received_at
    state = await _load_state(ctx)
    if media_count:
        await _media_notice(ctx)
    word = _bare_word(text)
    if word in UNDO_WORDS:
        await _undo(ctx, state, now)
        return Outcome(body=text)

    question = state.get("question")
    if question and _fresh(question.get("asked_at"), QUESTION_TTL, now):
        if question.get("kind") == "message_child":
            chosen = _chosen_children(ctx, question, text)
            if chosen:
                state.pop("question", None)
                await _deliver_message(ctx, chosen, question, unit_id=question.get("unit_id"))
                await _save_state(ctx, state)
                return Outcome(body=text)
        else:
            answered = _answer_text(ctx, question, text)
            if answered is not None:
                state.pop("question", None)
                return await _interpret(
                    ctx,
                    state,
                    answered,
                    original_event=question.get("event_id", ctx.event_id),
                    reason_hint=question.get("reason"),
                )
    state.pop("question", None)
    if not text.strip() and media_count:
        await _save_state(ctx, state)
        return Outcome(body="")
    return await _interpret(ctx, state, text, original_event=ctx.event_id)


async def _interpret(
    ctx: Context,
    state: dict[str, Any],
    text: str,
    *,
    original_event: int,
    reason_hint: str | None = None,
) -> Outcome:
    children = ctx.sender.children
    result = await _understand(ctx, text, children)
    intent = result.get("intent", "message")
    stored = _stored_text(ctx, text, result)
    outcome = Outcome(body=stored, sensitive=list(result.get("sensitive", [])))

    if intent in ("stop", "start"):
        await _set_opt_out(ctx, stopped=intent == "stop")
        await ctx.reply(
            ctx._("You will no longer get messages from the school here. Send START to resume.")
            if intent == "stop"
            else ctx._("You will get messages from the school here again. Send STOPP to stop.")
        )
    elif intent == "help":
        await ctx.reply(
            ctx._(
                "This is the school's message service. Write what you want to tell the "
                'school, or report an absence, e.g. "Ola is ill today". ANGRE undoes the '
                "latest absence report, STOPP stops messages."
            )
        )
    elif not children:
        await ctx.reply(ctx._("We could not find any child of yours here. Please call the school."))
    elif intent == "absence" and result["clarify"]:
        await _ask(ctx, state, text, result, children)
    elif intent == "absence":
        if reason_hint:
            for a in result["absences"]:
                if a["reason"] == "unspecified":
                    a["reason"] = reason_hint
        await _record(ctx, state, text, result, stored, original_event)
    elif intent == "absence_cancel":
        await _withdraw(ctx, text, result, stored, outcome)
    else:
        await _message(ctx, state, text, stored, outcome)
        return outcome
    await _sensitive_notice(ctx, outcome, children)
    await _save_state(ctx, state)
    return outcome


async def _ask(
    ctx: Context,
    state: dict[str, Any],
    text: str,
    result: dict[str, Any],
    children: tuple[Child, ...],
) -> None:
    """Ask for the first missing slot; the answer is read together with the text.

    The question keeps the redacted text only (no sensitive span may stay in the
    store), with the reason read from the whole text, so it survives redaction.
    """
    missing = result["clarify"]
    question: dict[str, Any]
    if "child" in missing:
        labels = _labels(list(children))
        question = {
            "kind": "child",
            "options": labels,
            "prompt": ctx._("Which child is it about? Answer with a number:")
            + "\n"
            + _choice_lines([*labels, _all_word(ctx, len(labels))]),
        }
    elif "date" in missing:
        question = {
            "kind": "date",
            "prompt": ctx._('Which day is it? Answer e.g. "today", "tomorrow" or "3.12".'),
        }
    else:
        question = {
            "kind": "unit",
            "options": ["skole", "SFO", "skole og SFO"],
            "prompt": ctx._("School or SFO? Answer with a number:")
            + "\n"
            + _choice_lines([ctx._("school"), ctx._("SFO"), ctx._("both")]),
        }
    probe = await _understand(ctx, text, children[:1])
    reasons = [a["reason"] for a in probe.get("absences", [])]
    question.update(
        text=result["redacted"],
        reason=reasons[0] if reasons else None,
        asked_at=ctx.received_at.isoformat(),
        event_id=ctx.event_id,
    )
    state["question"] = question
    await ctx.reply(
        str(question["prompt"]),
        choices=len(question.get("options", [])) + (1 if question["kind"] == "child" else 0),
    )


def _all_word(ctx: Context, count: int) -> str:
    return ctx._("both") if count == 2 else ctx._("all of them")


def _chosen_children(ctx: Context, question: dict[str, Any], answer: str) -> list[Child]:
    """The children a numbered-choice answer names: numbers, names, or both/all."""
    ids: list[str] = list(question.get("student_ids", []))
    by_id = {c.student_id: c for c in ctx.sender.children}
    options = [by_id[i] for i in ids if i in by_id]
    word = _bare_word(answer)
    if word in ALL_WORDS:
        return options
    numbers = [int(n) for n in _NUMBERS.findall(answer)]
    if numbers and all(1 <= n <= len(options) + 1 for n in numbers):
        if len(options) + 1 in numbers:
            return options
        return [options[n - 1] for n in dict.fromkeys(numbers)]
    return [c for c in options if _norm(c.first_name) in _norm(answer).split()]


def _answer_text(ctx: Context, question: dict[str, Any], answer: str) -> str | None:
    """The original text completed by the answer, or None when it is no answer."""
    original = str(question.get("text", ""))
    word = _bare_word(answer)
    options: list[str] = list(question.get("options", []))
    if question.get("kind") == "date":
        probe = understand(
            {
                "id": "q",
                "text": f"syk {answer}",
                "received_at": ctx.received_at.astimezone(ctx.settings.tz).isoformat(),
                "children": [{"name": "X", "units": ["school"]}],
            },
            timezone=ctx.settings.bridge.timezone,
        )
        return f"{original} {answer}" if "date" not in probe.get("clarify", ["date"]) else None
    if question.get("kind") == "child":
        if word in ALL_WORDS:
            return f"{original} (begge)"
        numbers = [int(n) for n in _NUMBERS.findall(answer)]
        if numbers and all(1 <= n <= len(options) + 1 for n in numbers):
            if len(options) + 1 in numbers:
                return f"{original} (begge)"
            return f"{original} ({' og '.join(options[n - 1] for n in dict.fromkeys(numbers))})"
        names = [o for o in options if _norm(o) in _norm(answer)]
        return f"{original} ({' og '.join(names)})" if names else None
    if question.get("kind") == "unit":
        numbers = [int(n) for n in _NUMBERS.findall(answer)]
        if len(numbers) == 1 and 1 <= numbers[0] <= len(options):
            return f"{original} ({options[numbers[0] - 1]})"
        if word in {"begge", "both", "begge deler"}:
            return f"{original} (skole og SFO)"
        if word in {"sfo", "aks"}:
            return f"{original} (SFO)"
        if word in {"skole", "skolen", "skule", "school"}:
            return f"{original} (skole)"
    return None


async def _record(
    ctx: Context,
    state: dict[str, Any],
    text: str,
    result: dict[str, Any],
    stored: str | None,
    original_event: int,
) -> None:
    by_name = {c.full_name: c for c in ctx.sender.children}
    reports: list[absences.Report] = []
    lines: list[str] = []
    ids: list[str] = []
    for a in result["absences"]:
        child = by_name.get(a["child"])
        if child is None:
            continue
        child_reports = [
            absences.Report(
                student_id=child.student_id,
                unit_id=unit_id,
                from_date=date.fromisoformat(a["from"]),
                to_date=date.fromisoformat(a["to"]),
                from_time=a["from_time"],
                to_time=a["to_time"],
                reason=a["reason"],
            )
            for kind in a["units"]
            if (unit_id := child.unit_for(kind))
        ]
        if not child_reports:
            continue
        ids += await absences.record(
            ctx.conn,
            ctx.settings,
            child_reports,
            reported_by=ctx.sender.guardian_for(child.student_id),
            channel=ctx.channel,
            received_at=ctx.received_at,
            note=stored,
            inbound_event_id=original_event,
        )
        reports += child_reports
        lines.append(_confirmation_line(ctx, child.first_name, a))
    if not reports:
        await ctx.reply(ctx._("We could not find any child of yours here. Please call the school."))
        return
    # A report for a day whose digest already went out (or was missed) is told at once,
    # in this same transaction: it is in a digest or notified, never neither.
    late = await digests.absences_needing_notice(ctx.conn, ctx.settings, ids)
    if late:
        await digests.notify_late_absence(ctx.conn, ctx.settings, late)
    state["last_absence"] = {"ids": ids, "at": ctx.received_at.isoformat()}
    undo = "UNDO" if ctx.lang == "en" else "ANGRE"
    await ctx.reply(
        ctx._("Absence registered.")
        + "\n"
        + "\n".join(lines)
        + "\n"
        + ctx._("Wrong? Answer {undo}.", undo=undo),
        undo_word=undo,
    )


async def _undo(ctx: Context, state: dict[str, Any], now: datetime) -> None:
    last = state.get("last_absence")
    if last and _fresh(last.get("at"), UNDO_WINDOW, now):
        count = await absences.cancel_ids(ctx.conn, ctx.settings, list(last.get("ids", [])))
        state.pop("last_absence", None)
        await _save_state(ctx, state)
        if count:
            await ctx.reply(ctx._("The absence report is cancelled."))
            return
    await ctx.reply(ctx._("There is no absence report from the last 24 hours to undo."))


async def _withdraw(
    ctx: Context, text: str, result: dict[str, Any], stored: str | None, outcome: Outcome
) -> None:
    by_name = {c.full_name: c for c in ctx.sender.children}
    lines: list[str] = []
    for a in result["absences"]:
        child = by_name.get(a["child"])
        if child is None:
            continue
        done = []
        for kind in a["units"]:
            unit_id = child.unit_for(kind)
            if unit_id:
                done += await absences.withdraw(
                    ctx.conn,
                    ctx.settings,
                    guardian_ids=ctx.sender.guardian_ids,
                    student_id=child.student_id,
                    unit_id=unit_id,
                    from_date=date.fromisoformat(a["from"]),
                    to_date=date.fromisoformat(a["to"]),
                )
        if done:
            lines.append(_confirmation_line(ctx, child.first_name, a))
    if lines:
        await ctx.reply(ctx._("Absence report withdrawn:") + "\n" + "\n".join(lines))
        return
    await ctx.reply(
        ctx._("We found no absence report to withdraw; your message goes to the school.")
    )
    await _to_thread(ctx, ctx.sender.children[0], text, stored, outcome)


async def _message(
    ctx: Context, state: dict[str, Any], text: str, stored: str | None, outcome: Outcome
) -> None:
    """A general message: to the thread it answers or names, or ask which child it is about."""
    target = await parent_replies.reply_target(
        ctx.conn,
        channel=ctx.channel,
        address=ctx.address,
        sender=ctx.sender,
        received_at=ctx.received_at,
        thread_hint=ctx.thread_hint,
        quoted=ctx.quoted,
        staff_reply=state.get("reply_context"),
    )
    unit_id = target.unit_id if target else None
    children = list(target.children) if target else list(ctx.sender.children)
    if target is None and ctx.unit_hint:
        children = [c for c in children if ctx.unit_hint in (c.unit_id, c.sfo_unit_id)] or children
    words = set(re.findall(r"\w+", _norm(text)))
    named = [c for c in children if _norm(c.first_name) in words]
    if len(named) == 1 or len(children) == 1:
        targets = named or children
        message = {"text": stored, "sensitive": outcome.sensitive}
        await _deliver_message(ctx, targets, message, unit_id=unit_id)
    else:
        options = named or children
        labels = _labels(options)
        state["question"] = {
            "kind": "message_child",
            "student_ids": [c.student_id for c in options],
            "unit_id": unit_id,
            "text": stored,
            "sensitive": outcome.sensitive,
            "asked_at": ctx.received_at.isoformat(),
            "event_id": ctx.event_id,
        }
        await ctx.reply(
            ctx._("Which child is the message about? Answer with a number:")
            + "\n"
            + _choice_lines([*labels, _all_word(ctx, len(labels))]),
            choices=len(labels) + 1,
        )
    await _sensitive_notice(ctx, outcome, tuple(named or children))
    await _save_state(ctx, state)


async def _deliver_message(
    ctx: Context, children: list[Child], message: dict[str, Any], unit_id: str | None = None
) -> None:
    """Put a (stored, maybe redacted) message in each child's thread and acknowledge it."""
    stored = message.get("text")
    outcome = Outcome(body=stored, sensitive=list(message.get("sensitive", [])))
    recent = await _recent_messages(ctx)
    units: list[str] = []
    thread_id = None
    for child in children:
        unit_name, thread_id = await _to_thread(
            ctx, child, stored or "", stored, outcome, unit_id=unit_id,
            notify=recent < FLOOD_LIMIT,
        )  # fmt: skip
        if unit_name not in units:
            units.append(unit_name)
    if recent == FLOOD_LIMIT:
        await ctx.reply(
            ctx._(
                "We have received many messages from you in a short time. They are all "
                "passed on to the school, but we will not answer each one for a while."
            ),
            thread_id,
        )
    elif recent < FLOOD_LIMIT:
        await ctx.reply(
            ctx._("Your message has been passed on to {unit}.", unit=", ".join(units)), thread_id
        )


async def _recent_messages(ctx: Context) -> int:
    """How many messages this guardian wrote on this channel within the flood window."""
    m, th = t.messages, t.threads
    count = await ctx.conn.scalar(
        select(func.count())
        .select_from(m)
        .join(th, th.c.id == m.c.thread_id)
        .where(
            th.c.guardian_id.in_(ctx.sender.guardian_ids),
            m.c.direction == "in",
            m.c.channel == ctx.channel,
            m.c.sent_at > ctx.received_at - FLOOD_WINDOW,
        )
    )
    return int(count or 0)


async def _to_thread(
    ctx: Context,
    child: Child,
    text: str,
    stored: str | None,
    outcome: Outcome,
    *,
    unit_id: str | None = None,
    notify: bool = True,
) -> tuple[str, str]:
    """Put the message in the thread with the child's school, or SFO when it names SFO
    (or the unit the message was addressed to), and tell the staff who follow the child."""
    if unit_id is None:
        unit_id = child.unit_id
        if ctx.unit_hint and ctx.unit_hint in (child.unit_id, child.sfo_unit_id):
            unit_id = ctx.unit_hint
        elif child.sfo_unit_id and _SFO_WORD.search(text):
            unit_id = child.sfo_unit_id
    guardian_id = ctx.sender.guardian_for(child.student_id)
    thread_id = await threads.thread_for(ctx.conn, guardian_id, unit_id, child.student_id)
    await threads.add_message(
        ctx.conn,
        thread_id,
        direction="in",
        channel=ctx.channel,
        author=guardian_id,
        body=stored,
        sensitive=outcome.sensitive,
        sent_at=ctx.received_at,
        inbound_event_id=ctx.event_id,
    )
    if notify:
        await staff_notices.notify_message(
            ctx.conn,
            ctx.settings,
            thread_id=thread_id,
            unit_id=unit_id,
            student_id=child.student_id,
            guardian_id=guardian_id,
            text=stored,
            sensitive=outcome.sensitive,
        )
    return await unit_name(ctx.conn, unit_id), thread_id


async def _sensitive_notice(ctx: Context, outcome: Outcome, children: tuple[Child, ...]) -> None:
    if not outcome.sensitive or not children:
        return
    child = children[0]
    guardian_id = ctx.sender.guardian_for(child.student_id)
    thread_id = await threads.thread_for(ctx.conn, guardian_id, child.unit_id, child.student_id)
    if await threads.claim_sensitive_notice(ctx.conn, thread_id):
        await ctx.reply(
            ctx._(
                "Please do not send sensitive information here, such as health details. "
                "Call the school or use the school's contact form instead."
            ),
            thread_id,
        )


async def _media_notice(ctx: Context) -> None:
    """Pictures and voice notes are not downloaded; say so once per day."""
    cp = t.contact_points
    today = ctx.received_at.astimezone(ctx.settings.tz).date()
    where = (cp.c.channel == ctx.channel, cp.c.address == ctx.address)
    seen = (await ctx.conn.execute(select(cp.c.media_notice_on).where(*where))).first()
    if seen is not None and seen.media_notice_on == today:
        return
    now = datetime.now(UTC)
    if seen is None:
        await ctx.conn.execute(
            insert(cp),
            {"channel": ctx.channel, "address": ctx.address, "media_notice_on": today,
             "updated_at": now},
        )  # fmt: skip
    else:
        await ctx.conn.execute(
            update(cp).where(*where).values(media_notice_on=today, updated_at=now)
        )
    await ctx.reply(ctx._("We only receive text. Pictures and voice messages are not read."))


async def _set_opt_out(ctx: Context, *, stopped: bool) -> None:
    cp = t.contact_points
    now = datetime.now(UTC)
    values = {"opted_out_at": now} if stopped else {"opted_out_at": None, "opted_in_at": now}
    where = (cp.c.channel == ctx.channel, cp.c.address == ctx.address)
    done = await ctx.conn.execute(update(cp).where(*where).values(updated_at=now, **values))
    if not done.rowcount:
        await ctx.conn.execute(
            insert(cp),
            {"channel": ctx.channel, "address": ctx.address, "updated_at": now, **values},
        )
