"""`waystation teams add|list|set-area|add-member|remove-member|link-code`: teams from the operator's shell.

Hooked into bot/cli.py with ``add_parser(commands)``. Problems print one line and exit with status 1; nothing here
prints personal data beyond the names the operator typed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

from sqlmodel.ext.asyncio.session import AsyncSession

from bot.config import Settings
from bot.database import Database

T = TypeVar("T")
ROLES = ("keeper", "responder", "coordinator", "admin")


class TeamsCliError(Exception):
    """A problem with the command's arguments or data, worded for the operator."""


async def _with_session(settings: Settings, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
    database = Database(settings.database.url)
    try:
        if settings.database.upgrade_on_start:
            await database.upgrade()
        async with database.session() as session:
            return await work(session)
    finally:
        await database.dispose()


def _run(settings: Settings, work: Callable[[AsyncSession], Awaitable[str]]) -> int:
    try:
        print(asyncio.run(_with_session(settings, work)))
    except TeamsCliError as exc:
        print(f"waystation: {exc}", file=sys.stderr)
        return 1
    return 0


async def _team(session: AsyncSession, name: str) -> Any:
    from models import teams

    team = await teams.find(session, name)
    if team is None:
        raise TeamsCliError(f"no team {name!r} (see: waystation teams list)")
    return team


async def _link_code_line(session: AsyncSession, settings: Settings, team: Any) -> str:
    from models import teams
    from models.base import utcnow

    code = await teams.create_code(
        session,
        teams.CodeKind.LINK,
        team.id,
        now=utcnow(),
        valid_for=timedelta(hours=settings.teams.link_code_valid_hours),
    )
    await session.commit()
    until = code.expires_at.astimezone(settings.tz).strftime("%Y-%m-%d %H:%M")
    return (
        f"to link its staff group, add the bot to the group and send there: /linkteam {code.code} (once, until {until})"
    )


def _kinds(raw: str) -> list[str]:
    from models.cases import HELP_KINDS
    from models.teams import CASE_KINDS

    if raw.strip().lower() in ("", "all", "*"):
        return []
    kinds = [part.strip() for part in raw.split(",") if part.strip()]
    unknown = [k for k in kinds if k not in HELP_KINDS and k not in CASE_KINDS]
    if unknown:
        raise TeamsCliError(f"--kinds: unknown {', '.join(unknown)} (known: {', '.join((*HELP_KINDS, *CASE_KINDS))})")
    return kinds


def _add(settings: Settings, args: argparse.Namespace) -> int:
    from bot.escalation import validate_chain
    from models import teams

    async def work(session: AsyncSession) -> str:
        kinds = _kinds(args.kinds) if args.kinds is not None else None
        chain = None
        reset = args.escalation is not None and args.escalation.strip().lower() == "default"
        if args.escalation is not None and not reset:
            try:
                chain = validate_chain(json.loads(args.escalation))
            except json.JSONDecodeError as exc:
                raise TeamsCliError(f"--escalation: not valid JSON ({exc.msg})") from None
            except ValueError as exc:
                raise TeamsCliError(str(exc)) from None
        try:
            team, created = await teams.save(
                session, args.name, kinds=kinds, duty_hours=args.hours, escalation=chain, clear_escalation=reset
            )
        except ValueError as exc:
            raise TeamsCliError(f"--hours: {exc}" if args.hours and "hours" in str(exc) else str(exc)) from None
        await session.commit()
        line = f"team {team.name!r} {'added' if created else 'updated'} (id {team.id})"
        if team.chat_id is None:
            line += "\n" + await _link_code_line(session, settings, team)
        if not team.has_area and team.name != settings.teams.default_team:
            line += (
                "\nit has no area yet: waystation teams set-area "
                + _quote(team.name)
                + " --center LAT,LON --radius-km KM"
            )
        return line

    return _run(settings, work)


def _quote(name: str) -> str:
    return f'"{name}"' if " " in name else name


def _list(settings: Settings, _args: argparse.Namespace) -> int:
    from models import teams

    async def work(session: AsyncSession) -> str:
        rows = []
        for team in await teams.list_all(session):
            assert team.id is not None
            members = await teams.members(session, team.id)
            default = " (default team)" if team.name == settings.teams.default_team else ""
            chain = "own" if team.escalation else "default"
            rows.append(
                f"{team.id}\t{team.name}{default}\tgroup={'linked' if team.chat_id is not None else '-'}"
                f"\tkinds={','.join(team.kinds) or 'all'}\tarea={team.area_text()}\thours={team.duty_hours}"
                f"\tmembers={len(members)}\tescalation={chain}"
            )
            rows += [f"\t{m.telegram_id}\t{m.role}\t{m.name}" for m in members]
        return "\n".join(rows) or "no teams yet: waystation teams add NAME"

    return _run(settings, work)


def _set_area(settings: Settings, args: argparse.Namespace) -> int:
    from models import teams

    geojson: Any = None
    if args.geojson is not None:
        try:
            geojson = json.loads(Path(args.geojson).read_text(encoding="utf-8"))
        except OSError as exc:
            print(f"waystation: {args.geojson}: {exc.strerror or exc}", file=sys.stderr)
            return 1
        except json.JSONDecodeError as exc:
            print(f"waystation: {args.geojson}: not valid JSON ({exc.msg}, line {exc.lineno})", file=sys.stderr)
            return 1

    async def work(session: AsyncSession) -> str:
        team = await _team(session, args.name)
        try:
            if geojson is not None:
                await teams.set_area(session, team, geojson=geojson)
            elif args.center is not None:
                if args.radius_km is None:
                    raise TeamsCliError("--center needs --radius-km")
                await teams.set_area(session, team, center=args.center, radius_m=args.radius_km * 1000)
            else:
                await teams.set_area(session, team)
        except teams.AreaError as exc:
            raise TeamsCliError(f"area of {team.name!r}: {exc}") from None
        await session.commit()
        return f"team {team.name!r}: area {team.area_text()}"

    return _run(settings, work)


def _add_member(settings: Settings, args: argparse.Namespace) -> int:
    from models import staff, teams

    async def work(session: AsyncSession) -> str:
        team = await _team(session, args.name)
        existing = await staff.get(session, args.telegram_id)
        name = args.person or (existing.name if existing is not None else None)
        if not name:
            raise TeamsCliError(f"{args.telegram_id} is not staff yet: give their name with --person NAME")
        await teams.add_member(session, team, args.telegram_id, name, staff.Role(args.role))
        await session.commit()
        return f"{args.telegram_id} is a {args.role} of {team.name!r}"

    return _run(settings, work)


def _remove_member(settings: Settings, args: argparse.Namespace) -> int:
    from models import teams

    async def work(session: AsyncSession) -> str:
        team = await _team(session, args.name)
        if not await teams.remove_member(session, team.id, args.telegram_id):
            raise TeamsCliError(f"{args.telegram_id} is not a member of {team.name!r}")
        await session.commit()
        line = f"{args.telegram_id} removed from {team.name!r}"
        if not await teams.memberships(session, args.telegram_id):
            line += (
                "\nthey are in no team now but still staff (acting for the default team):"
                f" waystation staff remove {args.telegram_id} to remove them entirely"
            )
        return line

    return _run(settings, work)


def _link_code(settings: Settings, args: argparse.Namespace) -> int:
    async def work(session: AsyncSession) -> str:
        team = await _team(session, args.name)
        return f"team {team.name!r}: " + await _link_code_line(session, settings, team)

    return _run(settings, work)


def _center(value: str) -> tuple[float, float]:
    try:
        lat_text, lon_text = value.split(",")
        return float(lat_text), float(lon_text)
    except ValueError:
        raise argparse.ArgumentTypeError("expected LAT,LON such as 31.7160,119.9590") from None


def add_parser(subparsers: Any) -> None:
    """Add ``teams`` and its actions to the CLI (`subparsers` is the parser's top-level add_subparsers())."""
    teams = subparsers.add_parser("teams", help="teams: their groups, areas, kinds of help, duty hours and members")
    actions = teams.add_subparsers(dest="teams_command", required=True, metavar="ACTION")

    add = actions.add_parser("add", help="add a team, or change the given settings of one")
    add.add_argument("name")
    add.add_argument("--kinds", help="kinds of help it takes, comma separated (food,bed,…,report), or 'all' (default)")
    add.add_argument(
        "--hours", help='duty hours in OpenStreetMap opening_hours syntax, e.g. "Mo-Fr 08:00-20:00" (24/7)'
    )
    add.add_argument(
        "--escalation",
        metavar="JSON",
        help='its own escalation chain, e.g. \'[{"after_minutes": 5, "notify": ["group", "on_call"]}]\', or "default"',
    )
    add.set_defaults(handler=_add)

    actions.add_parser("list", help="list teams and their members").set_defaults(handler=_list)

    area = actions.add_parser("set-area", help="set a team's area: a GeoJSON polygon, or a centre and radius")
    area.add_argument("name", help="the team's name or id")
    where = area.add_mutually_exclusive_group(required=True)
    where.add_argument(
        "--geojson", metavar="FILE", help="a GeoJSON Polygon/MultiPolygon (or Feature/FeatureCollection)"
    )
    where.add_argument("--center", metavar="LAT,LON", type=_center, help="the centre of a circle")
    where.add_argument("--clear", action="store_true", help="no area (the team then gets cases only as the default)")
    area.add_argument("--radius-km", type=float, help="the circle's radius in kilometres")
    area.set_defaults(handler=_set_area)

    member = actions.add_parser("add-member", help="add someone to a team (they become staff if they were not)")
    member.add_argument("name", help="the team's name or id")
    member.add_argument("telegram_id", type=int)
    member.add_argument("--role", required=True, choices=ROLES)
    member.add_argument("--person", metavar="NAME", help="their name (needed when they are not staff yet)")
    member.set_defaults(handler=_add_member)

    remove = actions.add_parser("remove-member", help="remove someone from a team (and its rota)")
    remove.add_argument("name", help="the team's name or id")
    remove.add_argument("telegram_id", type=int)
    remove.set_defaults(handler=_remove_member)

    code = actions.add_parser("link-code", help="a new one-time code for /linkteam in the team's group")
    code.add_argument("name", help="the team's name or id")
    code.set_defaults(handler=_link_code)
