"""`waystation stats [--period week|month|season|FROM:TO] [--team NAME|ID] [--csv FILE|-] [--language LANG]`.

The same figures as /stats, as plain text in the chosen language; ``--csv`` writes the anonymised rows (``-``: to
standard output, instead of the text). Hooked into bot/cli.py with ``add_parser(commands)``. Problems print one line
and exit with status 1.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlmodel.ext.asyncio.session import AsyncSession

from bot.config import Settings
from bot.database import Database
from models import stats


class StatsCliError(Exception):
    """A problem with the arguments, worded for the operator."""


def _period(settings: Settings, raw: str) -> stats.Period:
    today = datetime.now(settings.tz).date()
    if raw in stats.PERIOD_KINDS:
        return stats.period_of(raw, today, (settings.season.start, settings.season.end))
    period = stats.parse_dates(raw)
    if period is None:
        raise StatsCliError(
            f"--period {raw!r}: expected week, month, season or FROM:TO dates such as 2026-12-01:2026-12-31 "
            f"(at most {stats.MAX_DAYS} days)"
        )
    return period


async def _team_id(session: AsyncSession, name: str | None) -> int | None:
    from models import teams

    if not name:
        return None
    team = await teams.find(session, name)
    if team is None:
        raise StatsCliError(f"--team {name!r}: no such team (see: waystation teams list)")
    return team.id


async def _work(settings: Settings, args: argparse.Namespace) -> tuple[str | None, str | None]:
    """(text report or None, CSV or None)."""
    from bot.i18n import translator
    from handlers.stats import plain, report_text

    period = _period(settings, args.period)
    database = Database(settings.database.url)
    try:
        if settings.database.upgrade_on_start:
            await database.upgrade()
        async with database.session() as session:
            team_id = await _team_id(session, args.team)
            report = await stats.compute(session, period, settings.tz, team_id=team_id)
            rows = await stats.csv_rows(session, period, settings.tz, team_id=team_id) if args.csv else None
    finally:
        await database.dispose()
    language = args.language or settings.i18n.default_language
    text = None if args.csv == "-" else plain(report_text(translator(language), report, settings))
    return text, stats.csv_text(rows) if rows is not None else None


def _stats(settings: Settings, args: argparse.Namespace) -> int:
    try:
        text, csv = asyncio.run(_work(settings, args))
    except StatsCliError as exc:
        print(f"waystation: {exc}", file=sys.stderr)
        return 1
    if text is not None:
        print(text)
    if csv is not None:
        if args.csv == "-":
            sys.stdout.write(csv)
        else:
            Path(args.csv).write_text(csv, encoding="utf-8")
            print(f"wrote {csv.count(chr(10)) - 1} anonymised row(s) to {args.csv}")
    return 0


def add_parser(commands: Any) -> None:
    """Add ``stats`` to the CLI (`commands` is the parser's top-level add_subparsers())."""
    stats = commands.add_parser("stats", help="the season report: figures as text, anonymised rows as CSV")
    stats.add_argument(
        "--period",
        default="season",
        metavar="PERIOD",
        help="week, month, season (as configured in [season]) or FROM:TO dates, e.g. 2026-12-01:2026-12-31 "
        "(default: season)",
    )
    stats.add_argument("--team", metavar="NAME|ID", help="only the cases and patrols of this team")
    stats.add_argument("--csv", metavar="FILE", help="also write the anonymised rows as CSV to FILE ('-': stdout only)")
    stats.add_argument("--language", choices=["en", "zh_Hans"], help="language of the text (default: i18n default)")
    stats.set_defaults(handler=_stats)
