"""The `skolebro` command line (SPEC section 2).

Exit status: 0 success, 1 a failure the user must fix (one line on stderr, no
traceback), 2 a usage error (argparse's own status).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable, Coroutine
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # `understand` and `email strip` must start fast: no SQLAlchemy for them
    from bridge.config import Settings


class CommandError(Exception):
    """A failure the user must fix; its message is the one line printed."""


Handler = Callable[[argparse.Namespace, "Settings"], Coroutine[Any, Any, int]]


def _date(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {value!r}") from None


def _datetime(value: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {value!r}") from None
    return parsed


def _print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, ensure_ascii=False, indent=2) + "\n")


async def _engine(settings: Settings):  # type: ignore[no-untyped-def]
    """An engine on the configured store, its schema created or upgraded when behind."""
    from bridge.store.db import create_engine
    from bridge.store.migrate import current_revision, head_revision, upgrade

    engine = create_engine(settings.database_url)
    if await current_revision(engine) != head_revision():
        await upgrade(engine)
    return engine


# --- handlers -------------------------------------------------------------------


async def cmd_init(args: argparse.Namespace, settings: Settings) -> int:
    from bridge.store.db import create_engine
    from bridge.store.migrate import upgrade

    engine = create_engine(settings.database_url)
    try:
        before, after = await upgrade(engine)
    finally:
        await engine.dispose()
    if before == after:
        print(f"schema is current (revision {after})")
    else:
        print(f"schema upgraded from {before or 'empty'} to revision {after}")
    return 0


async def cmd_import_roster(args: argparse.Namespace, settings: Settings) -> int:
    from bridge.roster import RosterError, import_roster

    engine = await _engine(settings)
    try:
        result = await import_roster(
            engine, Path(args.file), full=args.full, progress=sys.stderr.isatty()
        )
    except RosterError as e:
        raise CommandError(str(e)) from None
    finally:
        await engine.dispose()
    if args.json:
        _print_json(result.to_json())
    else:
        for line in result.summary_lines():
            print(line)
    return 1 if result.rejected else 0


async def cmd_export(args: argparse.Namespace, settings: Settings) -> int:
    from bridge import export

    engine = await _engine(settings)
    try:
        if args.what == "absences":
            rows = await export.export_absences(engine, args.date, settings.tz, args.unit)
        elif args.what == "threads":
            since = args.since
            if since is not None and since.tzinfo is None:
                since = since.replace(tzinfo=settings.tz)
            rows = await export.export_threads(engine, settings.tz, args.unit, since)
        else:
            rows = await export.export_deliveries(engine, settings.tz, args.announcement)
    finally:
        await engine.dispose()
    _print_json(rows)
    return 0


async def cmd_announce(args: argparse.Namespace, settings: Settings) -> int:
    from bridge.announcements import AnnouncementError, create_announcement

    engine = await _engine(settings)
    try:
        created = await create_announcement(
            engine,
            settings,
            unit_id=args.unit,
            text=args.text,
            group_ids=args.group,
            student_ids=args.student,
            subject=args.subject,
            urgent=args.urgent,
        )
    except AnnouncementError as e:
        raise CommandError(str(e)) from None
    finally:
        await engine.dispose()
    if args.json:
        print(
            json.dumps(
                {"announcement_id": created.announcement_id, "deliveries": created.deliveries}
            )
        )
        return 0
    line = f"announcement {created.announcement_id}: {created.deliveries} deliveries"
    if created.skipped:
        line += f" ({created.skipped} skipped: opted out or no open channel)"
    if created.not_before:
        line += f", held until {created.not_before.astimezone(settings.tz):%H:%M} (quiet hours)"
    print(line)
    return 0


async def cmd_invite(args: argparse.Namespace, settings: Settings) -> int:
    from bridge.invites import InviteError, create_invite

    engine = await _engine(settings)
    try:
        invite = await create_invite(engine, settings, args.guardian)
    except InviteError as e:
        raise CommandError(str(e)) from None
    finally:
        await engine.dispose()
    expires = invite.code_expires_at.astimezone(settings.tz).isoformat(timespec="minutes")
    print(
        f"invite for {args.guardian} queued by {invite.channel}; "
        f"the link works once, until {expires}"
    )
    return 0


async def cmd_gdpr(args: argparse.Namespace, settings: Settings) -> int:
    from bridge.gdpr import UnknownGuardian, erase_guardian, export_guardian

    engine = await _engine(settings)
    try:
        if args.action == "export":
            _print_json(await export_guardian(engine, args.guardian, settings.tz))
        else:
            counts = await erase_guardian(engine, args.guardian)
            print(
                f"guardian {args.guardian} erased: {counts['absences']} absence reports "
                f"anonymised, {counts['messages']} messages and "
                f"{counts['deliveries']} deliveries emptied"
            )
    except UnknownGuardian as e:
        raise CommandError(f"unknown guardian: {e}") from None
    finally:
        await engine.dispose()
    return 0


async def cmd_digest(args: argparse.Namespace, settings: Settings) -> int:
    from bridge.digests import DigestError, preview_digest, run_digest

    engine = await _engine(settings)
    try:
        if args.action == "preview":
            text = await preview_digest(
                engine, settings, kind=args.kind, unit_id=args.unit, day=args.date
            )
            sys.stdout.write(text.rstrip("\n") + "\n")
            return 0
        result = await run_digest(
            engine, settings, kind=args.kind, unit_id=args.unit, day=args.date
        )
    except DigestError as e:
        raise CommandError(str(e)) from None
    finally:
        await engine.dispose()
    what = f"{args.kind} digest for {args.unit} on {args.date.isoformat()}"
    if result.already:
        print(f"{what} was already {'marked missed' if result.missed else 'sent'}; nothing sent")
    else:
        print(f"{what}: {result.deliveries} mails queued")
    return 0


async def cmd_apikey_create(args: argparse.Namespace, settings: Settings) -> int:
    from bridge.apikeys import UnknownUnit, create_api_key

    engine = await _engine(settings)
    try:
        key_id, secret = await create_api_key(engine, args.unit, read_only=args.read_only)
    except UnknownUnit as e:
        raise CommandError(f"unknown unit: {e}") from None
    finally:
        await engine.dispose()
    print(secret)
    print(
        f"api key {key_id} for {', '.join(args.unit)} (shown once; store it now)", file=sys.stderr
    )
    return 0


async def cmd_inbox(args: argparse.Namespace, settings: Settings) -> int:
    from bridge import inbox

    engine = await _engine(settings)
    try:
        if args.action == "list":
            _print_json(await inbox.list_dead(engine, settings.tz))
            return 0
        if not args.ids and not args.dead:
            raise CommandError("give event ids or --dead")
        count = await inbox.retry(engine, [int(i) for i in args.ids], all_dead=args.dead)
    finally:
        await engine.dispose()
    print(f"{count} inbound events queued again")
    return 0


async def cmd_deliveries_retry(args: argparse.Namespace, settings: Settings) -> int:
    from bridge import outbox

    if not args.ids and not args.dead:
        raise CommandError("give delivery ids or --dead")
    engine = await _engine(settings)
    try:
        result = await outbox.retry(engine, args.ids, all_dead=args.dead)
    finally:
        await engine.dispose()
    print(f"{result.queued} deliveries queued again, {result.refused} not")
    for line in result.reasons:
        print(line)
    return 0


async def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    from bridge.app import run_bridge

    settings.require_channel_secrets("sms", "telegram", "email")
    engine = await _engine(settings)
    await engine.dispose()
    return await run_bridge(settings)


async def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from bridge.demo.run import DemoError, run_demo

    try:
        return await run_demo(args.port, args.dir)
    except DemoError as e:
        raise CommandError(str(e)) from None


# --- the parser -------------------------------------------------------------------


def _config_option(parser: argparse.ArgumentParser, top: bool) -> None:
    parser.add_argument(
        "--config",
        metavar="PATH",
        default=None if top else argparse.SUPPRESS,
        help="config file (default: $SKOLEBRO_CONFIG, else ./skolebro.toml)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="skolebro", description="A school-home messaging bridge.")
    _config_option(parser, top=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(name: str, handler: Handler | None, help: str, **kw: Any) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help, **kw)
        _config_option(p, top=False)
        p.set_defaults(handler=handler)
        return p

    add("init", cmd_init, "create or migrate the database to the current schema")

    p = add("import-roster", cmd_import_roster, "import or update the roster (CSV or OneRoster)")
    p.add_argument("file", help="roster CSV, or a OneRoster 1.2 CSV folder or zip")
    p.add_argument("--json", action="store_true", help="print the counts as JSON")
    p.add_argument("--full", action="store_true", help="deactivate people the file no longer lists")

    add("run", cmd_run, "run the bridge until SIGINT/SIGTERM")

    p = add("demo", cmd_demo, "a working bridge to try in the browser")
    p.add_argument("--port", type=int, default=8000, help="the page's port (0: any free port)")
    p.add_argument("--dir", default=None, help="folder for the demo's files (default: a new one)")

    add("understand", None, "JSON lines in, understood JSON lines out (SPEC section 6)")

    p = add("announce", cmd_announce, "queue an announcement")
    p.add_argument("--unit", required=True)
    p.add_argument("--group", action="append", default=[])
    p.add_argument("--student", action="append", default=[])
    p.add_argument("--text", required=True)
    p.add_argument("--subject")
    p.add_argument("--urgent", action="store_true")
    p.add_argument("--json", action="store_true")

    p = add("export", cmd_export, "export absences, threads or deliveries as JSON")
    what = p.add_subparsers(dest="what", metavar="WHAT", required=True)
    e = what.add_parser("absences", help="absence reports covering a date")
    _config_option(e, top=False)
    e.add_argument("--date", type=_date, required=True)
    e.add_argument("--unit")
    e = what.add_parser("threads", help="threads with their messages")
    _config_option(e, top=False)
    e.add_argument("--unit")
    e.add_argument("--since", type=_datetime)
    e = what.add_parser("deliveries", help="deliveries")
    _config_option(e, top=False)
    e.add_argument("--announcement")

    p = add("deliveries", cmd_deliveries_retry, "queue dead or failed deliveries again")
    act = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    r = act.add_parser("retry", help="queue deliveries again")
    _config_option(r, top=False)
    r.add_argument("ids", nargs="*", metavar="ID")
    r.add_argument("--dead", action="store_true", help="every dead delivery")

    p = add("inbox", cmd_inbox, "inbound events whose processing keeps failing")
    act = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    r = act.add_parser("list", help="list dead inbound events")
    _config_option(r, top=False)
    r.add_argument("--dead", action="store_true", required=True)
    r = act.add_parser("retry", help="give inbound events another try")
    _config_option(r, top=False)
    r.add_argument("ids", nargs="*", metavar="ID")
    r.add_argument("--dead", action="store_true", help="every dead event")

    p = add("digest", cmd_digest, "build and send, or preview, a digest")
    act = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    for name in ("run", "preview"):
        r = act.add_parser(name, help=f"{name} a digest")
        _config_option(r, top=False)
        r.add_argument("--kind", required=True, choices=["absence", "unanswered"])
        r.add_argument("--unit", required=True)
        r.add_argument("--date", type=_date, required=True)

    p = add("invite", cmd_invite, "send a guardian a Telegram link code")
    p.add_argument("--guardian", required=True)
    p.add_argument("--channel", required=True, choices=["telegram"])

    p = add("apikey", cmd_apikey_create, "API keys for the JSON API")
    act = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    r = act.add_parser("create", help="create an API key and print it once")
    _config_option(r, top=False)
    r.add_argument("--unit", action="append", required=True)
    r.add_argument("--read-only", action="store_true")

    p = add("email", None, "e-mail tools")
    act = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    r = act.add_parser("strip", help="print the new text of an e-mail body read on stdin")
    _config_option(r, top=False)

    p = add("gdpr", cmd_gdpr, "export or erase a guardian's data")
    act = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    for name in ("export", "erase"):
        r = act.add_parser(name, help=f"{name} everything stored about a guardian")
        _config_option(r, top=False)
        r.add_argument("--guardian", required=True)
    return parser


def _fail(message: str) -> int:
    print(f"skolebro: {message}", file=sys.stderr)
    return 1


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "understand":
        # Needs no config at all (SPEC section 2).
        from bridge.understand.command import run

        return run(sys.stdin, sys.stdout)
    if args.command == "email":
        from bridge.email_reply import strip_reply

        sys.stdout.write(strip_reply(sys.stdin.read()) + "\n")
        return 0
    from sqlalchemy.exc import DBAPIError, OperationalError

    from bridge.config import ConfigError, load_config

    try:
        settings = load_config(args.config)
        return asyncio.run(args.handler(args, settings))
    except (ConfigError, CommandError) as e:
        return _fail(str(e))
    except (OperationalError, DBAPIError, OSError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        return _fail(f"store unavailable: {first}")
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
