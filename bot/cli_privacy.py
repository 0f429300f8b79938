"""`waystation privacy purge [--days N] [--dry-run]`: the retention purge from the operator's shell.

Hooked into bot/cli.py with ``add_parser(commands)``. Prints counts only, never personal data. Unfinished forms are
left to the running bot's daily job (it holds them in memory as well; see bot/retention.py).
"""

from __future__ import annotations

import argparse
import asyncio
from datetime import timedelta
from typing import Any

from bot.config import ConfigError, Settings
from bot.database import Database
from models import privacy


async def _purge(settings: Settings, days: int, dry_run: bool) -> privacy.Purged:
    database = Database(settings.database.url)
    try:
        if settings.database.upgrade_on_start:
            await database.upgrade()
        async with database.session() as session:
            return await privacy.purge(
                session,
                timedelta(days=days),
                geocode_max_age=timedelta(days=settings.geocoding.cache_days),
                forms=False,
                dry_run=dry_run,
            )
    finally:
        await database.dispose()


def _purge_command(settings: Settings, args: argparse.Namespace) -> int:
    days = settings.privacy.retention_days if args.days is None else args.days
    if days < 1:
        raise ConfigError("--days: expected at least 1")
    purged = asyncio.run(_purge(settings, days, args.dry_run))
    verb = "would anonymise" if args.dry_run else "anonymised"
    deleted = "would delete" if args.dry_run else "deleted"
    print(
        f"{verb} {purged.cases} case(s) closed more than {days} day(s) ago; "
        f"{deleted} {purged.users} inactive user(s) and {purged.geocode} old geocoder answer(s)"
    )
    return 0


def add_parser(subparsers: Any) -> None:
    """Add ``privacy`` and its actions to the CLI (`subparsers` is the parser's top-level add_subparsers())."""
    privacy_parser = subparsers.add_parser("privacy", help="personal data: the retention purge")
    actions = privacy_parser.add_subparsers(dest="privacy_command", required=True, metavar="ACTION")
    purge = actions.add_parser("purge", help="anonymise closed cases older than privacy.retention_days")
    purge.add_argument("--days", type=int, help="override privacy.retention_days")
    purge.add_argument("--dry-run", action="store_true", help="count what would be purged, change nothing")
    purge.set_defaults(handler=_purge_command)
