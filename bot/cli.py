"""The operator command line: `waystation run`, `waystation db upgrade`, …

Configuration problems print one line naming the key and exit with status 2 (no traceback).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TypeVar

from sqlmodel.ext.asyncio.session import AsyncSession

from bot import cli_privacy, cli_stats, cli_teams, logs
from bot.config import ConfigError, Settings, load_settings
from bot.database import Database

EXIT_CONFIG = 2
T = TypeVar("T")


def _run(settings: Settings, _args: argparse.Namespace) -> int:
    from bot.runner import BotRunner

    token = settings.require_token()
    if settings.telegram.mode == "webhook" and not settings.telegram.webhook.url:
        raise ConfigError("telegram.webhook.url: missing — the public https:// URL Telegram should call")
    secrets = [token]
    if settings.telegram.webhook.secret_token:
        secrets.append(settings.telegram.webhook.secret_token.get_secret_value())
    logs.configure(settings.logging.level, secrets=secrets)
    asyncio.run(BotRunner(settings).run_until_signal())
    return 0


def _demo(args: argparse.Namespace) -> int:
    from bot.sandbox.demo import run_demo

    return run_demo(args.port, language=args.language)


def _db_upgrade(settings: Settings, args: argparse.Namespace) -> int:
    async def upgrade() -> str | None:
        database = Database(settings.database.url)
        try:
            await database.upgrade(args.revision)
            return await database.current_revision()
        finally:
            await database.dispose()

    print(f"database schema at revision {asyncio.run(upgrade())}")
    return 0


def _db_current(settings: Settings, _args: argparse.Namespace) -> int:
    async def current() -> str | None:
        database = Database(settings.database.url)
        try:
            return await database.current_revision()
        finally:
            await database.dispose()

    print(asyncio.run(current()) or "empty database (run: waystation db upgrade)")
    return 0


def _db_revision(settings: Settings, args: argparse.Namespace) -> int:
    from models.schema import revision

    revision(settings.database.url, args.message)
    return 0


async def _with_session(settings: Settings, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
    """Open the database (upgrading it first, as the bot would) and run one unit of work."""
    database = Database(settings.database.url)
    try:
        if settings.database.upgrade_on_start:
            await database.upgrade()
        async with database.session() as session:
            return await work(session)
    finally:
        await database.dispose()


def _stations_import(settings: Settings, args: argparse.Namespace) -> int:
    from models import station_import

    path = station_import.DEMO_FILE if args.demo else args.file
    if path is None:
        raise ConfigError("stations import: give a FILE or --demo")
    try:
        report = asyncio.run(
            _with_session(settings, lambda s: station_import.import_stations(s, path, dry_run=args.dry_run))
        )
    except (station_import.StationFileError, OSError) as exc:
        print(f"waystation: {path}: {exc}", file=sys.stderr)
        return 1
    for error in report.errors:
        print(f"{path}: {error}", file=sys.stderr)
    verb = "would import" if report.dry_run else "imported"
    print(
        f"{verb}: {report.created} new, {report.updated} updated, {report.unchanged} unchanged, "
        f"{len(report.errors)} row(s) skipped"
    )
    return 0 if report.ok else 1


def _stations_export(settings: Settings, args: argparse.Namespace) -> int:
    from models import station_import

    text = asyncio.run(_with_session(settings, lambda s: station_import.export_stations(s, args.format)))
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


def _staff_add(settings: Settings, args: argparse.Namespace) -> int:
    from models import staff, stations

    async def add(session: AsyncSession) -> str:
        station_id = None
        if args.station:
            station = await stations.get_by_external_id(session, args.station)
            if station is None:
                raise ConfigError(
                    f"--station {args.station}: no station with that id (see: waystation stations export)"
                )
            station_id = station.id
        member = await staff.add(session, args.telegram_id, args.name, staff.Role(args.role), station_id)
        return f"staff {member.telegram_id} ({member.role}) saved"

    print(asyncio.run(_with_session(settings, add)))
    return 0


def _staff_list(settings: Settings, _args: argparse.Namespace) -> int:
    from models import staff

    members = asyncio.run(_with_session(settings, staff.list_all))
    for member in members:
        station = f" station={member.station_id}" if member.station_id else ""
        print(f"{member.telegram_id}\t{member.role}\t{member.name}{station}")
    if not members:
        print("no staff yet: waystation staff add TELEGRAM_ID --name NAME --role ROLE")
    return 0


def _staff_remove(settings: Settings, args: argparse.Namespace) -> int:
    from models import staff

    removed = asyncio.run(_with_session(settings, lambda s: staff.remove(s, args.telegram_id)))
    print(f"staff {args.telegram_id} removed" if removed else f"staff {args.telegram_id} not found")
    return 0 if removed else 1


Command = Callable[[Settings, argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="waystation", description="Waystation Telegram bot")
    parser.add_argument("--config", metavar="PATH", help="config file (default: $WAYSTATION_CONFIG or ./config.toml)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="run the bot (long polling or webhook, as configured)")
    run.set_defaults(handler=_run)

    demo = commands.add_parser("demo", help="try the whole bot in a browser, without Telegram (throw-away data)")
    demo.add_argument("--port", type=int, default=8080, help="web page port on 127.0.0.1 (0: any free port)")
    demo.add_argument("--language", choices=["en", "zh"], default="en", help="the demo people's Telegram language")
    demo.set_defaults(handler=_demo, needs_settings=False)

    db = commands.add_parser("db", help="database schema")
    db_commands = db.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    upgrade = db_commands.add_parser("upgrade", help="apply pending migrations")
    upgrade.add_argument("revision", nargs="?", default="head")
    upgrade.set_defaults(handler=_db_upgrade)
    db_commands.add_parser("current", help="show the schema revision").set_defaults(handler=_db_current)
    rev = db_commands.add_parser("revision", help="(developers) autogenerate a migration from the models")
    rev.add_argument("-m", "--message", required=True)
    rev.set_defaults(handler=_db_revision)

    stations = commands.add_parser("stations", help="the station directory")
    station_commands = stations.add_subparsers(dest="stations_command", required=True, metavar="ACTION")
    imp = station_commands.add_parser("import", help="import CSV, GeoJSON (incl. OSM tags) or an HSDS package")
    imp.add_argument("file", nargs="?", type=Path)
    imp.add_argument("--demo", action="store_true", help="load the demo stations (Changzhou and Daqing)")
    imp.add_argument("--dry-run", action="store_true", help="check and report, write nothing")
    imp.set_defaults(handler=_stations_import)
    exp = station_commands.add_parser("export", help="write every station as CSV or GeoJSON")
    exp.add_argument("--format", choices=["csv", "geojson"], default="csv")
    exp.add_argument("--output", "-o", help="file to write (default: standard output)")
    exp.set_defaults(handler=_stations_export)

    cli_teams.add_parser(commands)
    cli_stats.add_parser(commands)
    cli_privacy.add_parser(commands)

    staff = commands.add_parser("staff", help="staff members and their roles")
    staff_commands = staff.add_subparsers(dest="staff_command", required=True, metavar="ACTION")
    add = staff_commands.add_parser("add", help="add or update a staff member")
    add.add_argument("telegram_id", type=int)
    add.add_argument("--name", required=True)
    add.add_argument("--role", required=True, choices=["keeper", "responder", "coordinator", "admin"])
    add.add_argument("--station", help="for keepers: the station's id in the directory")
    add.set_defaults(handler=_staff_add)
    staff_commands.add_parser("list", help="list staff").set_defaults(handler=_staff_list)
    rm = staff_commands.add_parser("remove", help="remove a staff member")
    rm.add_argument("telegram_id", type=int)
    rm.set_defaults(handler=_staff_remove)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if not getattr(args, "needs_settings", True):
            # The demo builds its own settings: a broken or real config.toml must not stop (or leak into) it.
            return int(args.handler(args))
        handler: Command = args.handler
        settings = load_settings(args.config)
        return handler(settings, args)
    except ConfigError as exc:
        print(f"waystation: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
