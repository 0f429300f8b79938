"""The operator command line: `waystation run`, `waystation db upgrade`, …

Configuration problems print one line naming the key and exit with status 2 (no traceback).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Sequence

from bot import logs
from bot.config import ConfigError, Settings, load_settings
from bot.database import Database

EXIT_CONFIG = 2


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


Command = Callable[[Settings, argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="waystation", description="Waystation Telegram bot")
    parser.add_argument("--config", metavar="PATH", help="config file (default: $WAYSTATION_CONFIG or ./config.toml)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="run the bot (long polling or webhook, as configured)")
    run.set_defaults(handler=_run)

    db = commands.add_parser("db", help="database schema")
    db_commands = db.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    upgrade = db_commands.add_parser("upgrade", help="apply pending migrations")
    upgrade.add_argument("revision", nargs="?", default="head")
    upgrade.set_defaults(handler=_db_upgrade)
    db_commands.add_parser("current", help="show the schema revision").set_defaults(handler=_db_current)
    rev = db_commands.add_parser("revision", help="(developers) autogenerate a migration from the models")
    rev.add_argument("-m", "--message", required=True)
    rev.set_defaults(handler=_db_revision)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler: Command = args.handler
    try:
        settings = load_settings(args.config)
        return handler(settings, args)
    except ConfigError as exc:
        print(f"waystation: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
