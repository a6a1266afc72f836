"""The Telegram side of the dialogue: linking chats, commands, buttons, the absence flow.

`handle_update` is what the inbox calls for each Telegram event, inside the transaction
that marks the event processed, so everything here happens exactly once per update.

- A chat acts for guardians only once linked (SPEC section 8): by a one-time code from
  `skolebro invite` (`/start <code>`), or by a shared contact whose number is on the
  roster and whose `user_id` is the sender's own (Telegram fills in `user_id` for the
  account that owns the number, so someone else's number never carries ours). An
  unlinked chat gets instructions with a "share my number" button, and nothing else.
- `/stopp` (`/stop`) unlinks the chat; `/start` in a linked chat gets a short help.
- `/fravaer` (`/fravær`, `/absence`) asks child -> unit -> day -> reason with buttons;
  its state lives in the chat's `conversations` row under "flow", and a button's
  callback data is only an index into that state's options (`f:<step>:<i>`), so forged
  data can pick nothing the state did not offer. The last step records through
  `conversation._record`: the same reports, confirmation (with its undo button) and undo
  state as an SMS absence.
- Anything else from a linked chat is `conversation.handle`'s: free text, media (its
  notice), answers to its questions (`c:<n>` buttons are the answer "<n>" while the
  question is open) and `undo` (the undo word).
- Telegram wants each callback query answered (the button's spinner); that takes the
  adapter, so the caller does it (`adapters.telegram.TelegramSender.answer_callback`).

Logs carry event ids and counts only: never a chat id, a phone number, a code or a text.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

import phonenumbers
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncConnection

from bridge import conversation, invites, outbox
from bridge.config import Settings
from bridge.conversation import QUESTION_TTL, Context, Outcome
from bridge.directory import Child, Sender, find_sender
from bridge.domain import Channel, telegram_content
from bridge.i18n import LANGUAGES, translate
from bridge.store import tables as t
from bridge.understand import understand

log = logging.getLogger("skolebro.telegram")

CHANNEL = Channel.TELEGRAM.value
STOP_COMMANDS = {"stopp", "stop"}
ABSENCE_COMMANDS = {"fravaer", "fravær", "fravar", "fråvær", "fravear", "absence"}
FLOW_TTL = QUESTION_TTL
ALL = "*"  # the "all children" option of the child step
# The adapter only recognises ASCII command names; "/fravær" arrives as plain text.
_TEXT_COMMAND = re.compile(r"^/(\w{1,32})(?:@\w+)?\s*$")
_FLOW_DATA = re.compile(r"^f:(child|unit|day|reason):(\d{1,2})$")
_CHOICE_DATA = re.compile(r"^c:(\d{1,2})$")
_DIGIT = re.compile(r"\d")
_DATE_WORDS = {
    "dag", "morgen", "morgon", "overmorgen", "today", "tomorrow", "neste", "next",
    "mandag", "måndag", "monday", "tirsdag", "tysdag", "tuesday", "onsdag", "wednesday",
    "torsdag", "thursday", "fredag", "friday", "lørdag", "laurdag", "saturday",
    "søndag", "sundag", "sunday",
}  # fmt: skip
# The note on a flow's reports (what staff read), in Norwegian like the parents' texts.
_NOTE_REASON = {
    "illness": "er syk",
    "appointment": "har time hos lege e.l.",
    "other": "er borte av annen grunn",
}
_NOTE_UNITS: dict[tuple[str, ...], str] = {
    ("school",): "skole",
    ("sfo",): "SFO",
    ("school", "sfo"): "skole og SFO",
}


@dataclass
class TelegramOutcome(Outcome):
    """An Outcome that also says whether the chat is a stranger (linked to no guardian):
    then, as for an unknown SMS number, the event keeps neither body nor sender."""

    stranger: bool = False


async def handle_update(
    conn: AsyncConnection,
    settings: Settings,
    *,
    event_id: int,
    chat_id: str,
    text: str,
    payload: dict[str, Any],
    received_at: datetime,
    media_count: int,
) -> Outcome:
    """Process one Telegram event; returns what to keep of its body.

    The link code (`start_payload`) and a shared phone number (`contact_phone`) are
    removed from `payload` in place: the caller stores the payload afterwards, and
    neither may outlive this call. For a stranger the sender's user id goes too.
    """
    kind = str(payload.get("kind") or "message")
    code = payload.pop("start_payload", None)
    phone = payload.pop("contact_phone", None)
    if kind == "start" and isinstance(code, str) and code:
        outcome = await _start_with_code(conn, settings, event_id, chat_id, code, payload)
    elif kind == "contact":
        outcome = await _contact(conn, settings, event_id, chat_id, phone, payload)
    else:
        sender = await find_sender(
            conn, Channel.TELEGRAM, chat_id, settings.bridge.default_language
        )
        if sender is None:
            await _instructions(conn, chat_id, _language_of(payload, settings))
            outcome = TelegramOutcome(body=None, stranger=True)
        else:
            ctx = Context(
                conn=conn,
                settings=settings,
                channel=CHANNEL,
                address=chat_id,
                sender=sender,
                event_id=event_id,
                received_at=received_at,
                quoted=_quoted(chat_id, payload),
            )
            outcome = await _linked(ctx, kind, text, payload, media_count)
    if isinstance(outcome, TelegramOutcome) and outcome.stranger:
        payload.pop("user_id", None)
        payload.pop("contact_user_id", None)
    return outcome


def _quoted(chat_id: str, payload: dict[str, Any]) -> str | None:
    """The provider id of the bot message this one replies to (as TelegramSender sets it)."""
    message_id = payload.get("reply_to_message_id")
    return f"{chat_id}:{message_id}" if isinstance(message_id, int) else None


# --- linking -------------------------------------------------------------------------


async def _start_with_code(
    conn: AsyncConnection,
    settings: Settings,
    event_id: int,
    chat_id: str,
    code: str,
    payload: dict[str, Any],
) -> Outcome:
    user_id = _int(payload.get("user_id"))
    guardian_id = await invites.redeem(conn, code, chat_id, user_id)
    sender = await find_sender(conn, Channel.TELEGRAM, chat_id, settings.bridge.default_language)
    if guardian_id is not None and sender is not None:
        log.info("telegram event %s: chat linked by code", event_id)
        await _welcome(conn, chat_id, sender)
        return TelegramOutcome(body=None)
    log.info("telegram event %s: link code refused", event_id)
    lang = sender.language if sender else _language_of(payload, settings)
    invalid = translate(
        lang,
        "This link does not work any more: a link works once, for 72 hours. "
        "Ask the school for a new one.",
    )
    if sender is None:
        await _instructions(conn, chat_id, lang, first=invalid)
        return TelegramOutcome(body=None, stranger=True)
    await _send(conn, chat_id, invalid, guardian_id=sender.reporter_id)
    return TelegramOutcome(body=None)


async def _contact(
    conn: AsyncConnection,
    settings: Settings,
    event_id: int,
    chat_id: str,
    phone: Any,
    payload: dict[str, Any],
) -> Outcome:
    user_id = _int(payload.get("user_id"))
    contact_user_id = _int(payload.get("contact_user_id"))
    before = await find_sender(conn, Channel.TELEGRAM, chat_id, settings.bridge.default_language)
    lang = before.language if before else _language_of(payload, settings)
    if user_id is None or contact_user_id != user_id:
        # Someone else's contact, or a number with no Telegram account behind it: it
        # proves nothing about who writes.
        log.info("telegram event %s: a contact that is not the sender's own", event_id)
        why = translate(lang, "Please share your own phone number.")
        return await _contact_refused(conn, chat_id, before, lang, why)
    number = normalise_phone(phone if isinstance(phone, str) else "")
    g = t.guardians
    query = select(g.c.id).where(g.c.active.is_(True), g.c.mobile == number)
    rows = (await conn.execute(query.order_by(g.c.roster_order, g.c.id))).all() if number else []
    if not rows:
        log.info("telegram event %s: shared number not on the roster", event_id)
        why = translate(
            lang,
            "We could not find this phone number in the school's register. "
            "Please contact the school.",
        )
        return await _contact_refused(conn, chat_id, before, lang, why)
    # A number shared by several guardians links them all (a shared contact point).
    await invites.link_chat(conn, chat_id, [r.id for r in rows], user_id, via="contact")
    log.info("telegram event %s: chat linked by contact to %d guardian(s)", event_id, len(rows))
    sender = await find_sender(conn, Channel.TELEGRAM, chat_id, settings.bridge.default_language)
    assert sender is not None  # linked just now, to active guardians
    await _welcome(conn, chat_id, sender)
    return TelegramOutcome(body=None)


async def _contact_refused(
    conn: AsyncConnection, chat_id: str, sender: Sender | None, lang: str, why: str
) -> Outcome:
    if sender is None:
        await _instructions(conn, chat_id, lang, first=why)
        return TelegramOutcome(body=None, stranger=True)
    await _send(conn, chat_id, why, guardian_id=sender.reporter_id)
    return TelegramOutcome(body=None)


def normalise_phone(raw: str) -> str | None:
    """E.164 for a shared contact's number, or None. Telegram sends the international
    number, often without the "+" ("4791234567"); a phone book may hold it nationally."""
    digits = re.sub(r"[^\d+]", "", raw)
    if not digits:
        return None
    candidates = [digits] if digits.startswith(("+", "00")) else ["+" + digits, digits]
    for candidate in candidates:
        if candidate.startswith("00"):
            candidate = "+" + candidate[2:]
        try:
            number = phonenumbers.parse(candidate, "NO")
        except phonenumbers.NumberParseException:
            continue
        if phonenumbers.is_valid_number(number):
            return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    return None


async def _welcome(conn: AsyncConnection, chat_id: str, sender: Sender) -> None:
    text = translate(
        sender.language,
        "This chat is now connected to the school. Write to the school here, or report an "
        "absence with /fravaer. /stopp disconnects the chat.",
    )
    # Take the "share my number" keyboard away, if it was shown.
    body = telegram_content(text, remove_keyboard=True)
    await _send(conn, chat_id, body, guardian_id=sender.reporter_id)


async def _instructions(
    conn: AsyncConnection, chat_id: str, lang: str, *, first: str | None = None
) -> None:
    text = translate(
        lang,
        "This chat is not connected to the school. Open the link the school sent you by SMS "
        "or e-mail, or share your phone number with the button below so that we can find "
        "you in the school's register.",
    )
    body = telegram_content(
        f"{first}\n\n{text}" if first else text,
        request_contact=translate(lang, "📱 Share my phone number"),
    )
    await _send(conn, chat_id, body)


# --- a linked chat -------------------------------------------------------------------


async def _linked(
    ctx: Context, kind: str, text: str, payload: dict[str, Any], media_count: int
) -> Outcome:
    if kind == "callback":
        return await _callback(ctx, str(payload.get("callback_data") or ""))
    command: str | None = None
    if kind == "start":
        command = "start"
    elif kind == "command":
        command = str(payload.get("command") or "")
    elif match := _TEXT_COMMAND.match(text.strip()):
        command = match.group(1)
    if command is not None:
        return await _command(ctx, command.casefold(), text)
    state = await conversation._load_state(ctx)
    flow = _live_flow(state, ctx.received_at)
    # A typed date answers "which day?" as well as the "another date" prompt.
    if flow is not None and flow.get("step") in ("day", "date") and _looks_like_date(text):
        return await _typed_date(ctx, state, flow, text)
    if "flow" in state:
        # A text that does not answer the flow is a new message; the flow is dropped,
        # as an SMS question is.
        state.pop("flow")
        await conversation._save_state(ctx, state)
    return await conversation.handle(ctx, text, media_count)


async def _command(ctx: Context, command: str, text: str) -> Outcome:
    if command in STOP_COMMANDS:
        await invites.unlink_chat(ctx.conn, ctx.address)
        c = t.conversations
        await ctx.conn.execute(delete(c).where(c.c.channel == CHANNEL, c.c.address == ctx.address))
        log.info("telegram event %s: chat unlinked", ctx.event_id)
        await ctx.reply(
            ctx._(
                "This chat is no longer connected to the school, and nothing more will be "
                "sent here. To connect it again, ask the school for a new link."
            )
        )
        return Outcome(body=text)
    if command in ABSENCE_COMMANDS:
        await _start_flow(ctx)
        return Outcome(body=text)
    await ctx.reply(
        ctx._(
            "You are connected to the school. Write to the school here, or report an absence "
            'with /fravaer or in your own words, e.g. "Ola is ill today". /stopp disconnects '
            "this chat."
        )
    )
    return Outcome(body=None if command == "start" else text)


async def _callback(ctx: Context, data: str) -> Outcome:
    """A button press: the flow's `f:...`, a question's `c:<n>`, or `undo`."""
    if data == "undo":
        return await conversation.handle(ctx, "UNDO" if ctx.lang == "en" else "ANGRE", 0)
    state = await conversation._load_state(ctx)
    if match := _CHOICE_DATA.match(data):
        question = state.get("question")
        if _question_takes(question, int(match.group(1)), ctx.received_at):
            return await conversation.handle(ctx, match.group(1), 0)
    elif match := _FLOW_DATA.match(data):
        flow = _live_flow(state, ctx.received_at)
        if flow is not None:
            outcome = await _flow_answer(ctx, state, flow, match.group(1), int(match.group(2)))
            if outcome is not None:
                return outcome
    log.info("telegram event %s: a stale or unknown button", ctx.event_id)
    await ctx.reply(ctx._("This button has expired. Send /fravaer to report an absence."))
    return Outcome(body="")


def _question_takes(question: Any, number: int, now: datetime) -> bool:
    """Whether `number` is one of the open question's choices (what its buttons offer)."""
    if not isinstance(question, dict):
        return False
    if not conversation._fresh(question.get("asked_at"), QUESTION_TTL, now):
        return False
    kind = question.get("kind")
    if kind == "message_child":
        count = len(question.get("student_ids") or []) + 1
    elif kind == "child":
        count = len(question.get("options") or []) + 1
    elif kind == "unit":
        count = len(question.get("options") or [])
    else:
        count = 0
    return 1 <= number <= count


# --- the /fravaer flow ----------------------------------------------------------------


def _live_flow(state: dict[str, Any], now: datetime) -> dict[str, Any] | None:
    flow = state.get("flow")
    if isinstance(flow, dict) and conversation._fresh(flow.get("at"), FLOW_TTL, now):
        return flow
    return None


async def _start_flow(ctx: Context) -> None:
    if not ctx.sender.children:
        await ctx.reply(ctx._("We could not find any child of yours here. Please call the school."))
        return
    state = await conversation._load_state(ctx)
    state.pop("question", None)  # the flow replaces an open question
    flow: dict[str, Any] = {}
    if len(ctx.sender.children) == 1:
        flow["children"] = [ctx.sender.children[0].student_id]
    await _advance(ctx, state, flow)


async def _flow_answer(
    ctx: Context, state: dict[str, Any], flow: dict[str, Any], step: str, index: int
) -> Outcome | None:
    """Apply a flow button; None (and nothing changed) when the state did not offer it.

    The event keeps the report's words once the flow is done (a press has no text)."""
    options = flow.get("options")
    if flow.get("step") != step or not isinstance(options, list) or index >= len(options):
        return None
    value = options[index]
    if step == "child":
        ids = [o for o in options if o != ALL] if value == ALL else [value]
        if not _chosen(ctx, ids):
            return None  # the roster changed meanwhile
        flow["children"] = ids
    elif step == "unit":
        flow["units"] = list(value)
    elif step == "day":
        today = ctx.received_at.astimezone(ctx.settings.tz).date()
        if value == "other":
            flow["awaiting_date"] = True
        else:
            day = today + timedelta(days=1 if value == "tomorrow" else 0)
            flow["from"] = flow["to"] = day.isoformat()
    else:
        flow["reason"] = value
    return Outcome(body=await _advance(ctx, state, flow) or "")


async def _typed_date(
    ctx: Context, state: dict[str, Any], flow: dict[str, Any], text: str
) -> Outcome:
    span, sensitive = _read_date(ctx, text)
    # The answer is kept only when it holds nothing sensitive: it is a date, after all.
    body = None if sensitive else text
    if span is None:
        flow["awaiting_date"] = True
        await _ask(
            ctx,
            state,
            flow,
            "date",
            [],
            [],
            ctx._('We did not understand that date. Type it e.g. as "3.12".'),
        )
        return Outcome(body=body)
    flow.pop("awaiting_date", None)
    flow["from"], flow["to"] = span[0].isoformat(), span[1].isoformat()
    await _advance(ctx, state, flow)  # the reason is still to come
    return Outcome(body=body)


def _read_date(ctx: Context, text: str) -> tuple[tuple[date, date] | None, bool]:
    """The date or range a typed answer names, read as SMS texts are; and whether the
    answer holds something sensitive."""
    result = understand(
        {
            "id": f"tg-{ctx.event_id}",
            "text": f"syk {text}",
            "received_at": ctx.received_at.astimezone(ctx.settings.tz).isoformat(),
            "children": [{"name": "X", "units": ["school"]}],
        },
        timezone=ctx.settings.bridge.timezone,
    )
    sensitive = bool(result.get("sensitive"))
    absences = result.get("absences") or []
    if result.get("clarify") or not absences:
        return None, sensitive
    first = absences[0]
    return (date.fromisoformat(first["from"]), date.fromisoformat(first["to"])), sensitive


def _looks_like_date(text: str) -> bool:
    """Whether a text at the date step is meant as the date (else it is a new message)."""
    folded = text.casefold()
    return bool(_DIGIT.search(folded)) or bool(set(re.findall(r"\w+", folded)) & _DATE_WORDS)


async def _advance(ctx: Context, state: dict[str, Any], flow: dict[str, Any]) -> str | None:
    """Ask for the first slot the flow still lacks, or record the absence and return
    its note."""
    children = list(ctx.sender.children)
    if "children" not in flow:
        labels = _labels(children)
        await _ask(
            ctx,
            state,
            flow,
            "child",
            [c.student_id for c in children] + [ALL],
            [*labels, ctx._("both") if len(children) == 2 else ctx._("all of them")],
            ctx._("Absence: which child is it about?"),
        )
        return None
    chosen = _chosen(ctx, flow["children"])
    if not chosen:  # the roster changed under the flow
        state.pop("flow", None)
        await conversation._save_state(ctx, state)
        await ctx.reply(ctx._("We could not find any child of yours here. Please call the school."))
        return None
    if "units" not in flow:
        with_sfo = [c for c in chosen if c.sfo_unit_id]
        if not with_sfo:
            flow["units"] = ["school"]
        else:
            # SFO alone only when every chosen child attends it; "both" gives each child
            # the units they attend.
            options = [["school"]] + ([["sfo"]] if len(with_sfo) == len(chosen) else [])
            options.append(["school", "sfo"])
            words = {"school": ctx._("school"), "sfo": ctx._("SFO")}
            labels = [words[o[0]] if len(o) == 1 else ctx._("both") for o in options]
            await _ask(ctx, state, flow, "unit", options, labels, ctx._("School, SFO or both?"))
            return None
    if "from" not in flow:
        if flow.get("awaiting_date"):
            await _ask(
                ctx,
                state,
                flow,
                "date",
                [],
                [],
                ctx._('Type the date, e.g. "3.12" or "3.12–5.12".'),
            )
            return None
        await _ask(
            ctx,
            state,
            flow,
            "day",
            ["today", "tomorrow", "other"],
            [ctx._("today"), ctx._("tomorrow"), ctx._("another date")],
            ctx._("Which day?"),
        )
        return None
    if "reason" not in flow:
        await _ask(
            ctx,
            state,
            flow,
            "reason",
            ["illness", "appointment", "other"],
            [ctx._("illness"), ctx._("appointment"), ctx._("other reason")],
            ctx._("What is the reason?"),
        )
        return None
    return await _record(ctx, state, flow, chosen)


async def _ask(
    ctx: Context,
    state: dict[str, Any],
    flow: dict[str, Any],
    step: str,
    options: list[Any],
    labels: list[str],
    prompt: str,
) -> None:
    flow.update(step=step, options=options, at=ctx.received_at.isoformat())
    state["flow"] = flow
    await conversation._save_state(ctx, state)
    rows = [[(_capitalised(label), f"f:{step}:{i}")] for i, label in enumerate(labels)]
    body = telegram_content(prompt, rows) if rows else prompt
    await _send(ctx.conn, ctx.address, body, guardian_id=ctx.sender.reporter_id)


async def _record(
    ctx: Context, state: dict[str, Any], flow: dict[str, Any], chosen: list[Child]
) -> str:
    units: list[str] = list(flow["units"])
    start, end = date.fromisoformat(flow["from"]), date.fromisoformat(flow["to"])
    absences = [
        {
            "child": child.full_name,
            "units": kinds,
            "from": flow["from"],
            "to": flow["to"],
            "from_time": None,
            "to_time": None,
            "reason": flow["reason"],
        }
        for child in chosen
        if (kinds := [k for k in units if child.unit_for(k)])
    ]
    today = ctx.received_at.astimezone(ctx.settings.tz).date()
    note = _note(chosen, units, start, end, str(flow["reason"]), today)
    state.pop("flow", None)
    # The shared recording: reports, confirmation with its undo button, undo state.
    await conversation._record(ctx, state, note, {"absences": absences}, note, ctx.event_id)
    await conversation._save_state(ctx, state)
    log.info("telegram event %s: absence flow recorded %d child(ren)", ctx.event_id, len(chosen))
    return note


def _chosen(ctx: Context, student_ids: list[str]) -> list[Child]:
    """The sender's children among these ids, now: the roster may have changed."""
    wanted = set(student_ids)
    return [c for c in ctx.sender.children if c.student_id in wanted]


def _note(
    children: list[Child], units: list[str], start: date, end: date, reason: str, today: date
) -> str:
    """What the report says in words, e.g. "Ola er syk i dag (skole og SFO)"."""
    names = [c.first_name for c in children]
    who = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " og " + names[-1]
    if start != end:
        when = f"{start.day}.{start.month}.–{end.day}.{end.month}."
    elif start == today:
        when = "i dag"
    elif start == today + timedelta(days=1):
        when = "i morgen"
    else:
        when = f"{start.day}.{start.month}."
    what = _NOTE_REASON.get(reason, "er borte")
    where = _NOTE_UNITS.get(tuple(sorted(units)), "skole")
    return f"{who} {what} {when} ({where})"


def _labels(children: list[Child]) -> list[str]:
    firsts = [c.first_name for c in children]
    return [c.full_name if firsts.count(c.first_name) > 1 else c.first_name for c in children]


def _capitalised(label: str) -> str:
    return label[:1].upper() + label[1:]


# --- helpers ---------------------------------------------------------------------------


async def _send(
    conn: AsyncConnection, chat_id: str, body: str, *, guardian_id: str | None = None
) -> None:
    """An answer in this chat: urgent, as every answer to a parent's own message is."""
    await outbox.enqueue(
        conn,
        kind="reply",
        channel=CHANNEL,
        address=chat_id,
        body=body,
        guardian_id=guardian_id,
        priority="urgent",
    )


def _language_of(payload: dict[str, Any], settings: Settings) -> str:
    """An unlinked chat's language: the Telegram app's, when it is one of ours."""
    code = str(payload.get("language_code") or "").casefold()
    if code.startswith("nn"):
        return "nn"
    if code.startswith(("nb", "no")):
        return "nb"
    if code.startswith("en"):
        return "en"
    return settings.bridge.default_language


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def bot_commands() -> dict[str, list[tuple[str, str]]]:
    """The command menu per language, for `TelegramSender.set_commands` at start-up."""
    return {
        lang: [
            ("fravaer", translate(lang, "Report an absence")),
            ("stopp", translate(lang, "Disconnect this chat from the school")),
            ("hjelp", translate(lang, "Help")),
        ]
        for lang in LANGUAGES
    }
