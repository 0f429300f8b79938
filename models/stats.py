"""The season report: every figure relief stations print ("157 person-times helped, 1,200 street patrols, 280 items
handed out, 20 escorts"), computed from the bot's own records for a period and, optionally, one team.

Pure domain: no Telegram here. ``compute`` gathers the figures, ``csv_text`` writes the anonymised rows; the text and
the chart are rendered by handlers/stats.py and bot/charts.py from the ``Report``.

What counts where:
* A case (request or report) belongs to the period in which it came in, like ``reports.found_counts``: "received",
  "claimed", "resolved" and the times are about the cases received in the period. With a team, only the cases that
  went to that team (by area, as the default team, or by escalation).
* Person-times helped: each request resolved with help given (a ``help_*`` reason) is one; each report ending
  "helped on the spot" or "taken to a station or shelter" counts its number of people. Distinct people: the distinct
  requesters of those requests, plus each anonymous request and each person of a report (they cannot be told apart).
* Time to claim / to resolve: from arrival to the (latest) claim / to the resolution, in minutes; median and 90th
  percentile (linear interpolation between closest ranks, as numpy's default).
* Patrols by their start; items handed out = items given on resolve + on patrols; broadcasts by their start (not by
  team: a broadcast goes to weather areas); station use per local day.
"""

from __future__ import annotations

import csv
import io
import re
import statistics
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import func
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from models.aid import CaseAid, kind_of
from models.cases import HELP_GIVEN, OPEN_STATUSES, Case, CaseEvent, CaseKind, CaseStatus
from models.patrols import Patrol
from models.reports import ReportDetails
from models.station_usage import StationUsage
from models.stations import Station
from models.teams import CaseTeam, Team
from models.weather import Broadcast, BroadcastStatus

PERIOD_KINDS = ("week", "month", "season")
MAX_DAYS = 732  # a custom period of up to two years
HELPED_OUTCOMES = frozenset({"helped_on_the_spot", "taken_to_shelter"})
# Rounding of locations in the CSV: two decimals of a degree, about 1.1 km north-south (less east-west).
CSV_DECIMALS = 2
CSV_COLUMNS = (
    "record",
    "row",
    "date",
    "week",
    "teams",
    "kinds",
    "status",
    "closing",
    "claim_minutes",
    "resolve_minutes",
    "escalations",
    "help_given",
    "items",
    "aid_amount",
    "people",
    "found",
    "lat_1km",
    "lon_1km",
    "duration_minutes",
    "station_id",
    "shown",
    "opened",
    "recipients",
    "sent",
)
_DATE = re.compile(r"(\d{4})-(\d{1,2})-(\d{1,2})")


# --- periods ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Period:
    """Local calendar days from ``first_day`` to ``last_day``, both included."""

    kind: str  # week | month | season | custom
    first_day: date
    last_day: date

    def bounds(self, tz: ZoneInfo) -> tuple[datetime, datetime]:
        """[since, until) in UTC: local midnight of the first day to local midnight after the last."""
        since = datetime.combine(self.first_day, time(), tzinfo=tz).astimezone(UTC)
        until = datetime.combine(self.last_day + timedelta(days=1), time(), tzinfo=tz).astimezone(UTC)
        return since, until

    @property
    def code(self) -> str:
        """Short form for buttons and the command line: week, month, season, or 20260101-20260131."""
        if self.kind in PERIOD_KINDS:
            return self.kind
        return f"{self.first_day:%Y%m%d}-{self.last_day:%Y%m%d}"


def _month_day(value: str, year: int) -> date:
    month, day = (int(part) for part in value.split("-"))
    if (month, day) == (2, 29):
        try:
            return date(year, 2, 29)
        except ValueError:
            return date(year, 2, 28)
    return date(year, month, day)


def season_range(start: str, end: str, today: date) -> tuple[date, date]:
    """The configured season: fixed dates as they are; month-days → the season that started last (on or before
    today), ending on the next ``end`` after its start."""
    if len(start) == 10:
        return date.fromisoformat(start), date.fromisoformat(end)
    first = _month_day(start, today.year)
    if first > today:
        first = _month_day(start, today.year - 1)
    last = _month_day(end, first.year)
    if last < first:
        last = _month_day(end, first.year + 1)
    return first, last


def period_of(kind: str, today: date, season: tuple[str, str]) -> Period:
    """This week (from Monday), this month, or this season, as of ``today``."""
    if kind == "week":
        return Period("week", today - timedelta(days=today.weekday()), today)
    if kind == "month":
        return Period("month", today.replace(day=1), today)
    if kind == "season":
        first, last = season_range(season[0], season[1], today)
        return Period("season", first, last)
    raise ValueError(f"unknown period {kind!r}")


def custom(first: date, last: date) -> Period | None:
    """A custom period; None when backwards or longer than MAX_DAYS."""
    if last < first or (last - first).days + 1 > MAX_DAYS:
        return None
    return Period("custom", first, last)


def parse_dates(text: str) -> Period | None:
    """Two dates as typed or given: "2026-01-01 2026-01-31", "2026-01-01:2026-01-31", "2026-01-01 – 2026-1-31"."""
    found = _DATE.findall(text)
    leftover = _DATE.sub("", text).strip(" :~–—-to至到,，\t")
    if len(found) != 2 or leftover:
        return None
    try:
        first, last = (date(int(y), int(m), int(d)) for y, m, d in found)
    except ValueError:
        return None
    return custom(first, last)


def decode(code: str, today: date, season: tuple[str, str]) -> Period | None:
    """The inverse of ``Period.code`` (None for anything malformed: forged or old buttons)."""
    if code in PERIOD_KINDS:
        return period_of(code, today, season)
    match = re.fullmatch(r"(\d{8})-(\d{8})", code)
    if match is None:
        return None
    try:
        first = datetime.strptime(match.group(1), "%Y%m%d").date()
        last = datetime.strptime(match.group(2), "%Y%m%d").date()
    except ValueError:
        return None
    return custom(first, last)


# --- figures ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Durations:
    """Minutes: how many, the median and the 90th percentile (None when there are none)."""

    count: int = 0
    median: float | None = None
    p90: float | None = None


def durations(minutes: Sequence[float]) -> Durations:
    values = sorted(minutes)
    if not values:
        return Durations()
    if len(values) == 1:
        return Durations(1, values[0], values[0])
    p90 = statistics.quantiles(values, n=10, method="inclusive")[8]
    return Durations(len(values), statistics.median(values), p90)


@dataclass
class Flow:
    """Cases received in the period and where they are now."""

    received: int = 0
    claimed: int = 0  # claimed at some point (a report is claimed by Going / Found / Not found)
    resolved: int = 0
    cancelled: int = 0
    open: int = 0
    by_closing: dict[str, int] = field(default_factory=dict)  # requests: closing reason; reports: outcome


@dataclass(frozen=True)
class StationUse:
    station_id: int
    name: str | None
    name_en: str | None
    external_id: str
    shown: int
    opened: int

    def display_name(self, prefer_english: bool) -> str:
        first, second = (self.name_en, self.name) if prefer_english else (self.name, self.name_en)
        return first or second or self.external_id


@dataclass(frozen=True)
class Week:
    start: date  # a Monday
    by_kind: dict[str, int]  # requests by kind of help asked (a request may ask for several), and "report"
    claim_median: float | None  # minutes, cases received that week


@dataclass
class Report:
    period: Period
    team_id: int | None = None
    team_name: str | None = None
    requests: Flow = field(default_factory=Flow)
    reports: Flow = field(default_factory=Flow)
    found: int = 0
    not_found: int = 0
    search_unknown: int = 0
    helped_total: int = 0
    helped_distinct: int = 0
    helped_by_kind: dict[str, int] = field(default_factory=dict)
    escorts: int = 0
    claim: Durations = Durations()
    resolve: Durations = Durations()
    escalations: int = 0  # escalation steps fired
    escalated_cases: int = 0
    patrols: int = 0
    patrols_running: int = 0
    patrol_minutes: float = 0.0
    people_met: int = 0
    items: dict[str, int] = field(default_factory=dict)  # on resolve and on patrols
    items_on_patrols: int = 0
    aid_count: int = 0
    aid_total: float = 0.0
    broadcasts: int = 0
    broadcasts_by_kind: dict[str, int] = field(default_factory=dict)
    recipients: int = 0
    reach: int = 0  # messages delivered (finished broadcasts)
    blocked: int = 0
    stations: list[StationUse] = field(default_factory=list)  # most used first
    weeks: list[Week] = field(default_factory=list)

    @property
    def items_total(self) -> int:
        return sum(self.items.values())

    @property
    def shown_total(self) -> int:
        return sum(s.shown for s in self.stations)

    @property
    def opened_total(self) -> int:
        return sum(s.opened for s in self.stations)

    @property
    def empty(self) -> bool:
        """Nothing happened in the period (for this team)."""
        return not (
            self.requests.received
            or self.reports.received
            or self.patrols
            or self.broadcasts
            or self.shown_total
            or self.opened_total
        )


def _minutes(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return max(0.0, (end - start).total_seconds() / 60)


def _case_filters(since: datetime, until: datetime, team_id: int | None) -> list[Any]:
    filters: list[Any] = [col(Case.created_at) >= since, col(Case.created_at) < until]
    if team_id is not None:
        filters.append(col(Case.id).in_(select(CaseTeam.case_id).where(CaseTeam.team_id == team_id)))
    return filters


def _week_start(day: date) -> date:
    return day - timedelta(days=day.weekday())


@dataclass
class _Data:
    """The rows behind a report (shared by the figures and the CSV)."""

    cases: list[Case]
    details: dict[int, ReportDetails]
    aid: dict[int, CaseAid]
    escalations: dict[int, int]
    teams: dict[int, list[str]]
    patrols: list[Patrol]
    team_names: dict[int, str]
    broadcasts: list[Broadcast]
    stations: list[StationUse]


async def _load(session: AsyncSession, period: Period, tz: ZoneInfo, team_id: int | None) -> _Data:
    since, until = period.bounds(tz)
    filters = _case_filters(since, until, team_id)
    found_cases = list(
        (await session.exec(select(Case).where(*filters).order_by(col(Case.created_at), col(Case.id)))).all()
    )
    details = {
        d.case_id: d
        for d in (
            await session.exec(
                select(ReportDetails).join(Case, col(Case.id) == col(ReportDetails.case_id)).where(*filters)
            )
        ).all()
        if d.case_id is not None
    }
    aid = {
        a.case_id: a
        for a in (
            await session.exec(select(CaseAid).join(Case, col(Case.id) == col(CaseAid.case_id)).where(*filters))
        ).all()
    }
    escalated = select(CaseEvent.case_id, func.count()).join(Case, col(Case.id) == col(CaseEvent.case_id))
    escalated = escalated.where(*filters, CaseEvent.action == "escalated").group_by(col(CaseEvent.case_id))
    escalations = {int(case_id): int(n) for case_id, n in (await session.exec(escalated)).all()}
    team_names = {t.id: t.name for t in (await session.exec(select(Team))).all() if t.id is not None}
    routed: dict[int, list[str]] = defaultdict(list)
    routes = select(CaseTeam.case_id, CaseTeam.team_id).join(Case, col(Case.id) == col(CaseTeam.case_id))
    for case_id, routed_team in (await session.exec(routes.where(*filters).order_by(col(CaseTeam.team_id)))).all():
        routed[int(case_id)].append(team_names.get(routed_team, str(routed_team)))

    patrol_query = select(Patrol).where(col(Patrol.started_at) >= since, col(Patrol.started_at) < until)
    if team_id is not None:
        patrol_query = patrol_query.where(Patrol.team_id == team_id)
    found_patrols = list((await session.exec(patrol_query.order_by(col(Patrol.started_at)))).all())

    started = func.coalesce(col(Broadcast.started_at), col(Broadcast.created_at))
    broadcast_query = select(Broadcast).where(
        col(Broadcast.status).in_([BroadcastStatus.SENDING.value, BroadcastStatus.DONE.value]),
        started >= since,
        started < until,
    )
    found_broadcasts = list((await session.exec(broadcast_query.order_by(col(Broadcast.id)))).all())

    usage = (
        select(StationUsage.station_id, func.sum(StationUsage.shown), func.sum(StationUsage.opened))
        .where(col(StationUsage.day) >= period.first_day, col(StationUsage.day) <= period.last_day)
        .group_by(col(StationUsage.station_id))
    )
    sums = {int(sid): (int(shown or 0), int(opened or 0)) for sid, shown, opened in (await session.exec(usage)).all()}
    named = (await session.exec(select(Station).where(col(Station.id).in_(sums)))).all() if sums else []
    stations = [
        StationUse(station.id, station.name, station.name_en, station.external_id, *sums[station.id])
        for station in named
        if station.id is not None
    ]
    stations.sort(key=lambda s: (-s.opened, -s.shown, s.station_id))
    return _Data(
        found_cases, details, aid, escalations, dict(routed), found_patrols, team_names, found_broadcasts, stations
    )


def _flow_add(flow: Flow, case: Case, closing: str | None) -> None:
    flow.received += 1
    if case.claimed_at is not None:
        flow.claimed += 1
    if case.status == CaseStatus.RESOLVED:
        flow.resolved += 1
        if closing:
            flow.by_closing[closing] = flow.by_closing.get(closing, 0) + 1
    elif case.status == CaseStatus.CANCELLED:
        flow.cancelled += 1
    elif case.status in OPEN_STATUSES:
        flow.open += 1


def given_kinds(case: Case, aid: CaseAid | None) -> list[str]:
    """The kinds of help a resolved request gave: as recorded on resolve, else its closing reason's kind."""
    if case.status != CaseStatus.RESOLVED or case.closing_reason not in HELP_GIVEN:
        return []
    if aid is not None and aid.kinds:
        return list(aid.kinds)
    kind = kind_of(case.closing_reason)
    return [kind] if kind else []


async def compute(
    session: AsyncSession,
    period: Period,
    tz: ZoneInfo,
    *,
    team_id: int | None = None,
) -> Report:
    """Every figure of the season report for the period (and team)."""
    data = await _load(session, period, tz, team_id)
    report = Report(period=period, team_id=team_id, team_name=data.team_names.get(team_id) if team_id else None)
    claim_minutes: list[float] = []
    resolve_minutes: list[float] = []
    helped_requesters: set[int] = set()
    anonymous_helped = 0
    by_kind: Counter[str] = Counter()
    items: Counter[str] = Counter()
    weekly: dict[date, Counter[str]] = defaultdict(Counter)
    weekly_claims: dict[date, list[float]] = defaultdict(list)

    for case in data.cases:
        assert case.id is not None
        week = _week_start(case.created_at.astimezone(tz).date())
        details = data.details.get(case.id)
        claimed = _minutes(case.created_at, case.claimed_at)
        if claimed is not None:
            claim_minutes.append(claimed)
            weekly_claims[week].append(claimed)
        if case.status == CaseStatus.RESOLVED:
            resolved = _minutes(case.created_at, case.resolved_at)
            if resolved is not None:
                resolve_minutes.append(resolved)
        escalations = data.escalations.get(case.id, 0)
        report.escalations += escalations
        report.escalated_cases += int(escalations > 0)

        if case.kind == CaseKind.REPORT:
            outcome = details.outcome if details else None
            _flow_add(report.reports, case, outcome)
            weekly[week]["report"] += 1
            if details is not None:
                if details.found is True:
                    report.found += 1
                elif details.found is False:
                    report.not_found += 1
                else:
                    report.search_unknown += 1
                if case.status == CaseStatus.RESOLVED and outcome in HELPED_OUTCOMES:
                    report.helped_total += details.people
                    anonymous_helped += details.people
            else:
                report.search_unknown += 1
            continue

        _flow_add(report.requests, case, case.closing_reason)
        for kind in case.categories or ["other"]:
            weekly[week][kind] += 1
        aid = data.aid.get(case.id)
        kinds = given_kinds(case, aid)
        if kinds:
            report.helped_total += 1
            if case.requester_id is None:
                anonymous_helped += 1
            else:
                helped_requesters.add(case.requester_id)
            by_kind.update(kinds)
            report.escorts += int("escort" in kinds)
            if aid is not None:
                items.update(aid.items)
            if case.aid_amount is not None:
                report.aid_count += 1
                report.aid_total += case.aid_amount

    report.helped_distinct = len(helped_requesters) + anonymous_helped
    report.helped_by_kind = dict(by_kind.most_common())
    report.claim = durations(claim_minutes)
    report.resolve = durations(resolve_minutes)

    for patrol in data.patrols:
        report.patrols += 1
        if patrol.ended_at is None:
            report.patrols_running += 1
            continue
        report.patrol_minutes += _minutes(patrol.started_at, patrol.ended_at) or 0.0
        report.people_met += patrol.people_met or 0
        items.update(patrol.items)
        report.items_on_patrols += sum(patrol.items.values())
    report.items = {kind: n for kind, n in items.most_common() if n > 0}

    for broadcast in data.broadcasts:
        report.broadcasts += 1
        report.broadcasts_by_kind[broadcast.kind] = report.broadcasts_by_kind.get(broadcast.kind, 0) + 1
        report.recipients += broadcast.recipients
        if broadcast.status == BroadcastStatus.DONE:
            report.reach += broadcast.sent
            report.blocked += broadcast.blocked
    report.stations = data.stations

    if data.cases:
        week, last = _week_start(period.first_day), _week_start(period.last_day)
        while week <= last:
            claims = weekly_claims.get(week, [])
            report.weeks.append(Week(week, dict(weekly.get(week, {})), statistics.median(claims) if claims else None))
            week += timedelta(days=7)
    return report


# --- CSV ----------------------------------------------------------------------------------------------------------


def _round(value: float | None) -> str:
    return "" if value is None else f"{round(value, CSV_DECIMALS):.{CSV_DECIMALS}f}"


def _number(value: float | None) -> str:
    if value is None:
        return ""
    return str(int(value)) if float(value).is_integer() else f"{value:.1f}"


def _items(items: dict[str, int]) -> str:
    return ";".join(f"{kind}:{n}" for kind, n in items.items() if n > 0)


def _iso_week(day: date) -> str:
    year, week, _ = day.isocalendar()
    return f"{year}-W{week:02d}"


async def csv_rows(
    session: AsyncSession, period: Period, tz: ZoneInfo, *, team_id: int | None = None
) -> list[dict[str, str]]:
    """Anonymised rows: no names, ids of people, phones, references, free text; locations rounded to ~1 km; dates,
    not times. One row per case, patrol, broadcast and station used."""
    data = await _load(session, period, tz, team_id)
    rows: list[dict[str, str]] = []

    def add(record: str, day: date, **values: Any) -> None:
        row = dict.fromkeys(CSV_COLUMNS, "")
        row.update(record=record, row=str(len(rows) + 1), date=day.isoformat(), week=_iso_week(day))
        row.update({key: "" if value is None else str(value) for key, value in values.items()})
        rows.append(row)

    for case in data.cases:
        assert case.id is not None
        day = case.created_at.astimezone(tz).date()
        details = data.details.get(case.id)
        aid = data.aid.get(case.id)
        common: dict[str, Any] = {
            "teams": "+".join(data.teams.get(case.id, [])),
            "status": case.status,
            "claim_minutes": _number(_minutes(case.created_at, case.claimed_at)),
            "resolve_minutes": _number(
                _minutes(case.created_at, case.resolved_at) if case.status == CaseStatus.RESOLVED else None
            ),
            "escalations": data.escalations.get(case.id, 0),
            "lat_1km": _round(case.lat),
            "lon_1km": _round(case.lon),
        }
        if case.kind == CaseKind.REPORT:
            found = None if details is None or details.found is None else ("yes" if details.found else "no")
            add(
                "report",
                day,
                **common,
                closing=details.outcome if details else None,
                people=details.people if details else None,
                found=found,
            )
        else:
            add(
                "request",
                day,
                **common,
                kinds="+".join(case.categories),
                closing=case.closing_reason if case.status == CaseStatus.RESOLVED else None,
                help_given="+".join(given_kinds(case, aid)),
                items=_items(aid.items) if aid else None,
                aid_amount=_number(case.aid_amount),
            )
    for patrol in data.patrols:
        add(
            "patrol",
            patrol.started_at.astimezone(tz).date(),
            teams=data.team_names.get(patrol.team_id) if patrol.team_id else None,
            status="running" if patrol.ended_at is None else "done",
            duration_minutes=_number(_minutes(patrol.started_at, patrol.ended_at)),
            people=patrol.people_met,
            items=_items(patrol.items),
        )
    for broadcast in data.broadcasts:
        moment = broadcast.started_at or broadcast.created_at
        add(
            "broadcast",
            moment.astimezone(tz).date(),
            kinds=broadcast.kind,
            status=broadcast.status,
            recipients=broadcast.recipients,
            sent=broadcast.sent if broadcast.status == BroadcastStatus.DONE else None,
        )
    for use in data.stations:
        add("station", period.first_day, station_id=use.station_id, shown=use.shown, opened=use.opened)
    return rows


def csv_text(rows: Iterable[dict[str, str]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()
