"""Teams: who answers which cases, where, when, and who is told when nobody answers.

A team has a name, its staff group chat, members with a role *in that team*, the kinds of help it takes, an area
(a GeoJSON polygon or a centre + radius), duty hours in OpenStreetMap ``opening_hours`` syntax and a weekly rota
(one on-call person per weekday). A new case goes to every team whose area contains its location and whose kinds
match; no location or no match → the default team.

Invite and group-link codes are one-time and expire: using one is a conditional UPDATE, so two people using the
same code at once cannot both succeed.

Escalation keeps one *watch* row per open case (``escalation_timers``): its phase (unclaimed / claimed), how many
steps fired, and when it is next due. A runner fires a due watch with a conditional UPDATE on its ``fired`` counter
in the same transaction as the messages it enqueues, so a watch never fires twice — not across two runners, not
across a restart — and a crash before the commit leaves it due, to fire once after start-up.
"""

from __future__ import annotations

import enum
import json
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

from geographiclib.geodesic import Geodesic
from shapely.geometry import Point, mapping, shape
from shapely.geometry.base import BaseGeometry
from shapely.ops import unary_union
from shapely.prepared import PreparedGeometry, prep
from shapely.validation import explain_validity
from sqlalchemy import JSON, BigInteger, Column, ForeignKey, Integer, String, func, or_, update
from sqlalchemy import case as sql_case
from sqlalchemy import select as sa_select
from sqlmodel import Field, SQLModel, col, select
from sqlmodel.ext.asyncio.session import AsyncSession
from sqlmodel.sql.sqltypes import UTCDateTime

from models import hours
from models.base import utcnow
from models.cases import OPEN_STATUSES, Case, CaseEvent, CaseStatus
from models.outbox import OutboxItem, OutboxStatus
from models.staff import Role, Staff
from models.users import User

NAME_LENGTH = 100
HOURS_LENGTH = 500
ALWAYS = "24/7"
# The rank of roles when one person holds several: inviting a coordinator never demotes an admin.
ROLE_RANK: dict[str, int] = {Role.KEEPER: 0, Role.RESPONDER: 1, Role.COORDINATOR: 2, Role.ADMIN: 3}
ACTING_ROLES = frozenset({Role.RESPONDER.value, Role.COORDINATOR.value, Role.ADMIN.value})
LEADING_ROLES = frozenset({Role.COORDINATOR.value, Role.ADMIN.value})
# Case kinds a team may take besides kinds of help (a report of someone out in the cold is kind "report").
CASE_KINDS = ("report",)
# Case events written here: staff bookkeeping, not changes the requester made or needs to be told about.
STAFF_EVENTS = frozenset({"escalated", "claim_reminder", "released"})


class CodeKind(enum.StrEnum):
    INVITE = "invite"  # t.me/<bot>?start=invite_<code>: makes the person a member of the team
    LINK = "link"  # /linkteam <code> in a group: makes the group the team's chat


class Phase(enum.StrEnum):
    UNCLAIMED = "unclaimed"  # escalating: nobody took the case yet
    CLAIMED = "claimed"  # watching for a stale claim
    DONE = "done"  # the case is closed


class AreaError(ValueError):
    """An area that cannot be used, with a short reason for the operator."""


class Team(SQLModel, table=True):
    __tablename__ = "teams"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(sa_column=Column(String(NAME_LENGTH), unique=True, nullable=False))
    # The staff group (set with /linkteam in the group itself, so ids are never typed).
    chat_id: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    # Kinds of help (models.cases.HELP_KINDS) and case kinds ("report") the team takes; empty: every kind.
    kinds: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    # A GeoJSON Polygon or MultiPolygon (lon, lat order), or a centre and radius; neither: no area of its own.
    area: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    center_lat: float | None = None
    center_lon: float | None = None
    radius_m: float | None = None
    duty_hours: str = Field(default=ALWAYS, sa_column=Column(String(HOURS_LENGTH), nullable=False))
    # The team's own escalation chain (a list of {"after_minutes", "notify"}); None: the configured default.
    escalation: list[dict[str, Any]] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    created_at: datetime = Field(default_factory=utcnow)

    @property
    def has_area(self) -> bool:
        return self.area is not None or (self.center_lat is not None and self.radius_m is not None)

    def covers(self, lat: float, lon: float) -> bool:
        """Is the point inside the team's area (geodesic distance for a circle)?"""
        if self.area is not None:
            return _prepared(_area_key(self.area)).covers(Point(lon, lat))
        if self.center_lat is not None and self.center_lon is not None and self.radius_m is not None:
            distance = Geodesic.WGS84.Inverse(self.center_lat, self.center_lon, lat, lon)["s12"]
            return bool(distance <= self.radius_m)
        return False

    def takes(self, case: Case) -> bool:
        if not self.kinds:
            return True
        return case.kind in self.kinds or bool(set(case.categories) & set(self.kinds))

    def area_text(self) -> str:
        """For operators (CLI): what the area is, in a few words."""
        if self.area is not None:
            return f"{self.area.get('type', 'polygon')}"
        if self.center_lat is not None and self.center_lon is not None and self.radius_m is not None:
            return f"{self.center_lat:.5f},{self.center_lon:.5f} r={self.radius_m / 1000:g} km"
        return "-"


class TeamMember(SQLModel, table=True):
    __tablename__ = "team_members"

    team_id: int = Field(
        sa_column=Column(Integer, ForeignKey("teams.id", ondelete="CASCADE"), primary_key=True, autoincrement=False)
    )
    telegram_id: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False, index=True))
    role: str = Field(sa_column=Column(String(16), nullable=False))
    added_at: datetime = Field(default_factory=utcnow)


class RotaEntry(SQLModel, table=True):
    """The weekly rota: who is on call for a team on a weekday (0 = Monday)."""

    __tablename__ = "team_rota"

    team_id: int = Field(
        sa_column=Column(Integer, ForeignKey("teams.id", ondelete="CASCADE"), primary_key=True, autoincrement=False)
    )
    weekday: int = Field(sa_column=Column(Integer, primary_key=True, autoincrement=False))
    telegram_id: int = Field(sa_column=Column(BigInteger, nullable=False))


class TeamCode(SQLModel, table=True):
    """A one-time, expiring code: an invite to a team or the link between a group and a team."""

    __tablename__ = "team_codes"

    code: str = Field(sa_column=Column(String(32), primary_key=True))
    kind: str = Field(sa_column=Column(String(16), nullable=False))
    team_id: int = Field(sa_column=Column(Integer, ForeignKey("teams.id", ondelete="CASCADE"), nullable=False))
    role: str | None = Field(default=None, sa_column=Column(String(16), nullable=True))
    created_by: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    created_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    expires_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    used_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime(), nullable=True))
    used_by: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))


class CaseTeam(SQLModel, table=True):
    """Which teams a case went to: by area (and kinds), as the default team, or by escalation."""

    __tablename__ = "case_teams"

    case_id: int = Field(
        sa_column=Column(Integer, ForeignKey("cases.id", ondelete="CASCADE"), primary_key=True, autoincrement=False)
    )
    team_id: int = Field(
        sa_column=Column(
            Integer, ForeignKey("teams.id", ondelete="CASCADE"), primary_key=True, autoincrement=False, index=True
        )
    )
    reason: str = Field(sa_column=Column(String(16), nullable=False))  # area | default | escalation
    added_at: datetime = Field(default_factory=utcnow)


class EscalationTimer(SQLModel, table=True):
    """The escalation watch of one case; times come from the bot's clock (frozen in tests)."""

    __tablename__ = "escalation_timers"

    id: int | None = Field(default=None, primary_key=True)
    case_id: int = Field(
        sa_column=Column(Integer, ForeignKey("cases.id", ondelete="CASCADE"), unique=True, nullable=False)
    )
    phase: str = Field(default=Phase.UNCLAIMED.value, sa_column=Column(String(16), nullable=False))
    # Steps fired in this phase (unclaimed: chain steps and repeats; claimed: 1 once the claimer was reminded).
    step: int = Field(default=0, sa_column=Column(Integer, nullable=False))
    # When the phase's clock started (unclaimed: arrival, shifted by time off duty; claimed: the last update).
    base_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    due_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime(), nullable=True, index=True))
    # Claimed phase: the newest case event counted as an update (so a new one resets the stale-claim clock).
    mark: int | None = Field(default=None, sa_column=Column(Integer, nullable=True))
    # Incremented by every firing: the fencing token of the conditional UPDATE that claims a firing.
    fired: int = Field(default=0, sa_column=Column(Integer, nullable=False))
    updated_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))


# --- areas ----------------------------------------------------------------------------------------------------


def _area_key(area: dict[str, Any]) -> str:
    return json.dumps(area, sort_keys=True)


@lru_cache(maxsize=256)
def _prepared(area_json: str) -> PreparedGeometry:
    return prep(shape(json.loads(area_json)))


def parse_area(geojson: Any) -> dict[str, Any]:
    """A GeoJSON geometry, Feature or FeatureCollection → one valid (Multi)Polygon geometry to store.

    Raises AreaError with the reason (not a polygon, self-intersecting, empty…)."""
    if not isinstance(geojson, dict):
        raise AreaError("expected a GeoJSON object")
    kind = geojson.get("type")
    if kind == "FeatureCollection":
        features = geojson.get("features")
        if not isinstance(features, list) or not features:
            raise AreaError("the FeatureCollection has no features")
        geometries = [_feature_geometry(feature) for feature in features]
    elif kind == "Feature":
        geometries = [_feature_geometry(geojson)]
    else:
        geometries = [_geometry(geojson)]
    merged: BaseGeometry = geometries[0] if len(geometries) == 1 else unary_union(geometries)
    if merged.is_empty or merged.geom_type not in ("Polygon", "MultiPolygon"):
        raise AreaError("the area must be a Polygon or MultiPolygon")
    minx, miny, maxx, maxy = merged.bounds
    if minx < -180 or maxx > 180 or miny < -90 or maxy > 90:
        raise AreaError("coordinates must be longitude, latitude in degrees (GeoJSON order)")
    return dict(mapping(merged))


def _feature_geometry(feature: Any) -> BaseGeometry:
    if not isinstance(feature, dict) or feature.get("type") != "Feature":
        raise AreaError("expected GeoJSON Features in the FeatureCollection")
    return _geometry(feature.get("geometry"))


def _geometry(raw: Any) -> BaseGeometry:
    if not isinstance(raw, dict) or raw.get("type") not in ("Polygon", "MultiPolygon"):
        raise AreaError("the area must be a Polygon or MultiPolygon")
    try:
        geometry = shape(raw)
    except (ValueError, TypeError, AttributeError, IndexError) as exc:
        raise AreaError(f"not a valid GeoJSON {raw.get('type')} ({type(exc).__name__})") from None
    if geometry.is_empty:
        raise AreaError("the polygon is empty")
    if not geometry.is_valid:
        raise AreaError(f"the polygon is not valid: {explain_validity(geometry)}")
    return geometry


def check_circle(lat: float, lon: float, radius_m: float) -> None:
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        raise AreaError("the centre must be a latitude (-90…90) and a longitude (-180…180)")
    if not 0 < radius_m <= 1_000_000:
        raise AreaError("the radius must be more than 0 and at most 1000 km")


# --- teams ----------------------------------------------------------------------------------------------------


async def get(session: AsyncSession, team_id: int) -> Team | None:
    return await session.get(Team, team_id)


async def by_name(session: AsyncSession, name: str) -> Team | None:
    return (await session.exec(select(Team).where(Team.name == name))).first()


async def find(session: AsyncSession, name_or_id: str) -> Team | None:
    """A team by its name, or by its id (CLI arguments)."""
    found = await by_name(session, name_or_id)
    if found is None and name_or_id.isdigit():
        found = await get(session, int(name_or_id))
    return found


async def list_all(session: AsyncSession) -> list[Team]:
    return list((await session.exec(select(Team).order_by(col(Team.id)))).all())


async def any_team(session: AsyncSession) -> bool:
    """Are teams set up at all? (Without any, cards go to staff.alert_chat_ids as before.)"""
    return (await session.exec(select(Team.id).limit(1))).first() is not None


async def save(
    session: AsyncSession,
    name: str,
    *,
    kinds: Sequence[str] | None = None,
    duty_hours: str | None = None,
    escalation: list[dict[str, Any]] | None = None,
    clear_escalation: bool = False,
) -> tuple[Team, bool]:
    """Add a team or update the given fields of an existing one (flushed; the caller commits). (team, created)."""
    name = name.strip()
    if not 0 < len(name) <= NAME_LENGTH:
        raise ValueError(f"a team name is 1-{NAME_LENGTH} characters")
    if duty_hours is not None:
        problem = hours.validate(duty_hours)
        if problem:
            raise ValueError(problem)
    team = await by_name(session, name)
    created = team is None
    if team is None:
        team = Team(name=name)
    if kinds is not None:
        team.kinds = sorted(set(kinds))
    if duty_hours is not None:
        team.duty_hours = duty_hours.strip()
    if escalation is not None:
        team.escalation = escalation
    elif clear_escalation:
        team.escalation = None
    session.add(team)
    await session.flush()
    return team, created


async def set_area(
    session: AsyncSession,
    team: Team,
    *,
    geojson: Any = None,
    center: tuple[float, float] | None = None,
    radius_m: float | None = None,
) -> Team:
    """Replace the team's area with a polygon, a circle, or nothing (flushed; the caller commits)."""
    team.area = team.center_lat = team.center_lon = team.radius_m = None
    if geojson is not None:
        team.area = parse_area(geojson)
    elif center is not None and radius_m is not None:
        check_circle(center[0], center[1], radius_m)
        team.center_lat, team.center_lon, team.radius_m = center[0], center[1], radius_m
    session.add(team)
    await session.flush()
    return team


async def link_chat(session: AsyncSession, team_id: int, chat_id: int) -> None:
    await session.exec(update(Team).where(col(Team.id) == team_id).values(chat_id=chat_id))


async def default_team(session: AsyncSession, name: str) -> Team | None:
    """The configured default team (teams.default_team), if it exists."""
    return await by_name(session, name) if name.strip() else None


# --- members --------------------------------------------------------------------------------------------------


async def add_member(session: AsyncSession, team: Team, telegram_id: int, name: str, role: Role) -> TeamMember:
    """Make someone a member of the team with a role (flushed; the caller commits).

    The person becomes staff if they were not; their staff role is raised to the team role if it was lower (so a
    new responder can act at once), never lowered."""
    assert team.id is not None
    member = await session.get(Staff, telegram_id)
    if member is None:
        session.add(Staff(telegram_id=telegram_id, name=name[:200], role=role.value))
    elif ROLE_RANK.get(role.value, 0) > ROLE_RANK.get(member.role, 0):
        member.role = role.value
        session.add(member)
    membership = await session.get(TeamMember, (team.id, telegram_id))
    if membership is None:
        membership = TeamMember(team_id=team.id, telegram_id=telegram_id, role=role.value)
    else:
        membership.role = role.value
    session.add(membership)
    await session.flush()
    return membership


async def remove_member(session: AsyncSession, team_id: int, telegram_id: int) -> bool:
    """Remove someone from a team and from its rota (flushed; the caller commits). Staff rows stay."""
    membership = await session.get(TeamMember, (team_id, telegram_id))
    if membership is None:
        return False
    await session.delete(membership)
    for entry in (
        await session.exec(select(RotaEntry).where(RotaEntry.team_id == team_id, RotaEntry.telegram_id == telegram_id))
    ).all():
        await session.delete(entry)
    await session.flush()
    return True


@dataclass(frozen=True)
class Member:
    telegram_id: int
    name: str
    role: str  # the role in the team


async def members(session: AsyncSession, team_id: int) -> list[Member]:
    statement = (
        select(TeamMember, Staff)
        .join(Staff, col(Staff.telegram_id) == col(TeamMember.telegram_id))
        .where(TeamMember.team_id == team_id)
        .order_by(col(Staff.name), col(Staff.telegram_id))
    )
    rows = (await session.exec(statement)).all()
    return [Member(membership.telegram_id, person.name, membership.role) for membership, person in rows]


async def memberships(session: AsyncSession, telegram_id: int) -> dict[int, str]:
    """team id → the person's role in it."""
    rows = (await session.exec(select(TeamMember).where(TeamMember.telegram_id == telegram_id))).all()
    return {row.team_id: row.role for row in rows}


def leads_any(staff: Staff, roles: dict[int, str]) -> bool:
    """Coordinators and admins (by staff role, or by their role in any team) see and act on every team's cases."""
    return staff.role in LEADING_ROLES or any(role in LEADING_ROLES for role in roles.values())


async def coordinators(session: AsyncSession, team_ids: Iterable[int]) -> list[Staff]:
    """Who hears a coordinator escalation: the teams' coordinators and admins, else every staff coordinator."""
    ids = list(team_ids)
    found: list[Staff] = []
    if ids:
        statement = (
            select(Staff)
            .join(TeamMember, col(TeamMember.telegram_id) == col(Staff.telegram_id))
            .where(col(TeamMember.team_id).in_(ids), col(TeamMember.role).in_(sorted(LEADING_ROLES)))
            .order_by(col(Staff.telegram_id))
        )
        found = _unique((await session.exec(statement)).all())
    if not found:
        statement = select(Staff).where(col(Staff.role).in_(sorted(LEADING_ROLES))).order_by(col(Staff.telegram_id))
        found = list((await session.exec(statement)).all())
    return found


async def responders(session: AsyncSession, team_ids: Iterable[int]) -> list[Staff]:
    """Everyone who may act on the teams' cases (for a "whole team" escalation); no teams: every acting staff."""
    ids = list(team_ids)
    if ids:
        statement = (
            select(Staff)
            .join(TeamMember, col(TeamMember.telegram_id) == col(Staff.telegram_id))
            .where(col(TeamMember.team_id).in_(ids), col(TeamMember.role).in_(sorted(ACTING_ROLES)))
            .order_by(col(Staff.telegram_id))
        )
        return _unique((await session.exec(statement)).all())
    statement = select(Staff).where(col(Staff.role).in_(sorted(ACTING_ROLES))).order_by(col(Staff.telegram_id))
    return list((await session.exec(statement)).all())


def _unique(people: Iterable[Staff]) -> list[Staff]:
    """Staff rows once each (a person in two of the teams is listed once)."""
    return list({person.telegram_id: person for person in people}.values())


async def unreachable(session: AsyncSession, telegram_ids: Iterable[int]) -> set[int]:
    """People the bot cannot write to privately: never seen at all, or the last direct message to them was refused
    (blocked, or "chat not found": they never pressed Start)."""
    ids = sorted(set(telegram_ids))
    if not ids:
        return set()
    known = set((await session.exec(select(User.telegram_id).where(col(User.telegram_id).in_(ids)))).all())
    latest = (
        sa_select(col(OutboxItem.chat_id), func.max(col(OutboxItem.id)).label("last_id"))
        .where(
            col(OutboxItem.chat_id).in_(ids),
            col(OutboxItem.status).in_([OutboxStatus.SENT.value, OutboxStatus.FAILED.value]),
        )
        .group_by(col(OutboxItem.chat_id))
        .subquery()
    )
    refused = sa_select(col(OutboxItem.chat_id)).join(latest, latest.c.last_id == col(OutboxItem.id))
    refused = refused.where(
        col(OutboxItem.status) == OutboxStatus.FAILED.value,
        or_(
            col(OutboxItem.last_error).like("forbidden%"),
            col(OutboxItem.last_error) == "bad_request:chat_not_found",
        ),
    )
    blocked = {int(row[0]) for row in (await session.exec(refused)).all()}  # type: ignore[call-overload]
    return {i for i in ids if i not in known} | blocked


# --- rota and duty hours --------------------------------------------------------------------------------------


async def rota(session: AsyncSession, team_id: int) -> dict[int, int]:
    """weekday (0 = Monday) → the on-call person's Telegram id."""
    rows = (await session.exec(select(RotaEntry).where(RotaEntry.team_id == team_id))).all()
    return {row.weekday: row.telegram_id for row in rows}


async def set_on_call(session: AsyncSession, team_id: int, weekday: int, telegram_id: int | None) -> None:
    """Set (or clear, with None) the on-call person of a weekday (flushed; the caller commits)."""
    if not 0 <= weekday <= 6:
        raise ValueError("weekday is 0 (Monday) to 6 (Sunday)")
    entry = await session.get(RotaEntry, (team_id, weekday))
    if telegram_id is None:
        if entry is not None:
            await session.delete(entry)
    elif entry is None:
        session.add(RotaEntry(team_id=team_id, weekday=weekday, telegram_id=telegram_id))
    else:
        entry.telegram_id = telegram_id
        session.add(entry)
    await session.flush()


async def on_call(session: AsyncSession, team_id: int, when: datetime, timezone: str) -> int | None:
    """Who is on call at `when`: the rota entry of that local weekday (the shift is the day)."""
    weekday = when.astimezone(_zone(timezone)).weekday()
    entry = await session.get(RotaEntry, (team_id, weekday))
    return entry.telegram_id if entry is not None else None


def duty(team: Team | None, timezone: str, at: datetime) -> hours.OpenState:
    """On duty now? Unknown or unparseable hours count as on duty (an alert must never wait for nothing)."""
    if team is None:
        return hours.OpenState(is_open=True)
    state = hours.open_state(team.duty_hours or ALWAYS, timezone, at)
    return state if state.is_open is not None else hours.OpenState(is_open=True)


def _zone(timezone: str) -> Any:
    from zoneinfo import ZoneInfo

    return ZoneInfo(timezone)


# --- codes ----------------------------------------------------------------------------------------------------


async def create_code(
    session: AsyncSession,
    kind: CodeKind,
    team_id: int,
    *,
    now: datetime,
    valid_for: timedelta,
    role: Role | None = None,
    created_by: int | None = None,
) -> TeamCode:
    """A fresh one-time code (flushed; the caller commits). Invites fit a /start payload; link codes are short to
    copy into /linkteam."""
    code = secrets.token_urlsafe(12) if kind == CodeKind.INVITE else secrets.token_hex(5).upper()
    item = TeamCode(
        code=code,
        kind=kind.value,
        team_id=team_id,
        role=role.value if role is not None else None,
        created_by=created_by,
        created_at=now,
        expires_at=now + valid_for,
    )
    session.add(item)
    await session.flush()
    return item


async def peek_code(session: AsyncSession, code: str, kind: CodeKind) -> TeamCode | None:
    found = await session.get(TeamCode, code[:32])
    return found if found is not None and found.kind == kind.value else None


async def use_code(session: AsyncSession, code: str, kind: CodeKind, *, by: int, now: datetime) -> TeamCode | None:
    """Spend a code: unused, unexpired and of this kind → marked used by `by` (not committed). None otherwise.

    One conditional UPDATE: of two people using the same code at once exactly one gets it."""
    result = await session.exec(
        update(TeamCode)
        .where(
            col(TeamCode.code) == code[:32],
            col(TeamCode.kind) == kind.value,
            col(TeamCode.used_at).is_(None),
            col(TeamCode.expires_at) > now,
        )
        .values(used_at=now, used_by=by)
    )
    if result.rowcount != 1:
        return None
    return await session.get(TeamCode, code[:32], populate_existing=True)


# --- routing --------------------------------------------------------------------------------------------------


async def route(session: AsyncSession, case: Case, default_name: str) -> tuple[list[Team], str]:
    """The teams a new case goes to, and why ("area" or "default"; no team at all: ([], "default")).

    Teams whose area contains the location and whose kinds match; with no location or no such team, the default
    team (when configured and present)."""
    if case.lat is not None and case.lon is not None:
        lat, lon = case.lat, case.lon
        matched = [t for t in await list_all(session) if t.has_area and t.takes(case) and t.covers(lat, lon)]
        if matched:
            return matched, "area"
    fallback = await default_team(session, default_name)
    return ([fallback] if fallback is not None else []), "default"


async def assign(session: AsyncSession, case_id: int, teams: Iterable[Team], reason: str) -> list[Team]:
    """Record that the case went to these teams (idempotent; flushed). Returns the teams newly added."""
    added = []
    for team in teams:
        assert team.id is not None
        if await session.get(CaseTeam, (case_id, team.id)) is None:
            session.add(CaseTeam(case_id=case_id, team_id=team.id, reason=reason))
            added.append(team)
    await session.flush()
    return added


async def teams_of(session: AsyncSession, case_id: int) -> list[Team]:
    """The case's teams, in the order they got it (the first one's chain and hours drive escalation)."""
    statement = (
        select(Team)
        .join(CaseTeam, col(CaseTeam.team_id) == col(Team.id))
        .where(CaseTeam.case_id == case_id)
        .order_by(col(CaseTeam.added_at), col(Team.id))
    )
    return list((await session.exec(statement)).all())


async def teams_of_cases(session: AsyncSession, case_ids: Iterable[int]) -> dict[int, list[Team]]:
    ids = list(case_ids)
    found: dict[int, list[Team]] = {i: [] for i in ids}
    if not ids:
        return found
    statement = (
        select(CaseTeam, Team)
        .join(Team, col(Team.id) == col(CaseTeam.team_id))
        .where(col(CaseTeam.case_id).in_(ids))
        .order_by(col(CaseTeam.added_at), col(Team.id))
    )
    for link, team in (await session.exec(statement)).all():
        found[link.case_id].append(team)
    return found


async def may_act_on(session: AsyncSession, staff: Staff, case_id: int, default_name: str) -> bool:
    """Team scoping for someone whose role may act on cases: may they act on this case?

    Yes for coordinators and admins (of any team, or by staff role), for members of one of the case's teams, and
    for cases that went to no team. Staff who belong to no team count as the default team's."""
    if staff.role not in ACTING_ROLES:
        return False
    roles = await memberships(session, staff.telegram_id)
    if leads_any(staff, roles):
        return True
    case_team_ids = {team.id for team in await teams_of(session, case_id)}
    if not case_team_ids:
        return True
    if any(team_id in case_team_ids and role in ACTING_ROLES for team_id, role in roles.items()):
        return True
    if not roles:
        fallback = await default_team(session, default_name)
        return fallback is not None and fallback.id in case_team_ids
    return False


async def visible_team_ids(session: AsyncSession, staff: Staff, default_name: str) -> set[int] | None:
    """The teams whose queue someone sees; None: every team (coordinators and admins)."""
    roles = await memberships(session, staff.telegram_id)
    if leads_any(staff, roles):
        return None
    mine = {team_id for team_id, role in roles.items() if role in ACTING_ROLES}
    if not roles:
        fallback = await default_team(session, default_name)
        if fallback is not None and fallback.id is not None:
            mine.add(fallback.id)
    return mine


# --- the queue ------------------------------------------------------------------------------------------------


async def queue(session: AsyncSession, team_ids: set[int] | None, *, limit: int = 200) -> list[Case]:
    """Open cases of these teams (None: all) and cases that went to no team: unclaimed first, then oldest first."""
    statement = select(Case).where(col(Case.status).in_([s.value for s in OPEN_STATUSES]))
    if team_ids is not None:
        routed = sa_select(col(CaseTeam.case_id)).where(col(CaseTeam.team_id).in_(sorted(team_ids)))
        anywhere = sa_select(col(CaseTeam.case_id))
        statement = statement.where(or_(col(Case.id).in_(routed), col(Case.id).not_in(anywhere)))
    unclaimed_first = sql_case((col(Case.claimed_by).is_(None), 0), else_=1)
    statement = statement.order_by(unclaimed_first, col(Case.created_at), col(Case.id)).limit(limit)
    return list((await session.exec(statement)).all())


async def escalation_counts(session: AsyncSession, case_ids: Iterable[int]) -> dict[int, int]:
    """How many escalation steps each case went through (a flag in the queue)."""
    ids = list(case_ids)
    if not ids:
        return {}
    statement = (
        sa_select(col(CaseEvent.case_id), func.count())
        .where(col(CaseEvent.case_id).in_(ids), col(CaseEvent.action) == "escalated")
        .group_by(col(CaseEvent.case_id))
    )
    rows = (await session.exec(statement)).all()  # type: ignore[call-overload]
    return {int(case_id): int(count) for case_id, count in rows}


async def released_event(session: AsyncSession, case_id: int) -> CaseEvent | None:
    """The "released" event, while it is the latest claim-related news (the card says so until a new claim)."""
    statement = (
        select(CaseEvent)
        .where(CaseEvent.case_id == case_id, col(CaseEvent.action).in_(["claimed", "released"]))
        .order_by(col(CaseEvent.id).desc())
        .limit(1)
    )
    latest = (await session.exec(statement)).first()
    return latest if latest is not None and latest.action == "released" else None


async def latest_update(session: AsyncSession, case_id: int) -> CaseEvent | None:
    """The newest event that counts as work on the case (escalation bookkeeping does not)."""
    statement = (
        select(CaseEvent)
        .where(CaseEvent.case_id == case_id, col(CaseEvent.action).not_in(sorted(STAFF_EVENTS)))
        .order_by(col(CaseEvent.id).desc())
        .limit(1)
    )
    return (await session.exec(statement)).first()


# --- escalation watches ---------------------------------------------------------------------------------------


async def arm(session: AsyncSession, case_id: int, *, base_at: datetime, due_at: datetime | None) -> EscalationTimer:
    """Start watching a new case (flushed, in the transaction that posts its cards). Idempotent."""
    existing = (await session.exec(select(EscalationTimer).where(EscalationTimer.case_id == case_id))).first()
    if existing is not None:
        return existing
    timer = EscalationTimer(case_id=case_id, base_at=base_at, due_at=due_at, updated_at=base_at)
    session.add(timer)
    await session.flush()
    return timer


async def timer_of(session: AsyncSession, case_id: int) -> EscalationTimer | None:
    return (await session.exec(select(EscalationTimer).where(EscalationTimer.case_id == case_id))).first()


async def due_timers(session: AsyncSession, now: datetime, *, limit: int = 100) -> list[tuple[int, int]]:
    """(timer id, fired) of watches due at `now`, most overdue first; ends its read transaction."""
    statement = (
        sa_select(col(EscalationTimer.id), col(EscalationTimer.fired))
        .where(col(EscalationTimer.due_at) <= now, col(EscalationTimer.phase) != Phase.DONE.value)
        .order_by(col(EscalationTimer.due_at), col(EscalationTimer.id))
        .limit(limit)
    )
    rows = [(int(i), int(f)) for i, f in (await session.exec(statement)).all()]  # type: ignore[call-overload]
    await session.commit()
    return rows


async def claim_timer(session: AsyncSession, timer_id: int, fired: int, now: datetime) -> EscalationTimer | None:
    """Take one firing of a due watch: the first statement of the caller's transaction, which must then commit
    the firing's messages and the watch's next state together (or roll everything back).

    Conditional on the ``fired`` counter the caller saw: of two runners (or a runner before and after a restart)
    exactly one gets a given firing. On PostgreSQL a watch locked by another runner is skipped, not waited for.
    ``updated_at`` is left as it was (the time of the previous look): the caller reads it, then sets it."""
    connection = await session.connection()
    if connection.dialect.name == "postgresql":
        locked = await session.exec(
            select(EscalationTimer.id)
            .where(EscalationTimer.id == timer_id, EscalationTimer.fired == fired)
            .with_for_update(skip_locked=True)
        )
        if locked.first() is None:
            await session.rollback()
            return None
    result = await session.exec(
        update(EscalationTimer)
        .where(
            col(EscalationTimer.id) == timer_id,
            col(EscalationTimer.fired) == fired,
            col(EscalationTimer.due_at) <= now,
            col(EscalationTimer.phase) != Phase.DONE.value,
        )
        .values(fired=EscalationTimer.fired + 1)
    )
    if result.rowcount != 1:
        await session.rollback()
        return None
    return await session.get(EscalationTimer, timer_id, populate_existing=True)


async def release_claim(session: AsyncSession, case_id: int, staff_id: int, *, hours_idle: float) -> bool:
    """Give a stale claim back to the queue: claimed (or waiting for information) by `staff_id` → new, unclaimed.

    Conditional, like every case transition: if the claimer acted or someone else changed the case meanwhile, nothing
    happens. The "released" event names the former claimer (by id) for the timeline."""
    result = await session.exec(
        update(Case)
        .where(
            col(Case.id) == case_id,
            col(Case.claimed_by) == staff_id,
            col(Case.status).in_([CaseStatus.CLAIMED.value, CaseStatus.NEED_INFO.value]),
        )
        .values(
            status=CaseStatus.NEW.value,
            claimed_by=None,
            claimed_by_name=None,
            claimed_at=None,
            updated_at=utcnow(),
        )
    )
    return bool(result.rowcount == 1)
