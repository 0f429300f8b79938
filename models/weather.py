"""Cold-weather alerts: subscriptions, areas, forecasts, cold events, broadcasts and their deliveries.

Areas come from the configuration (`Area`, built by the caller); everything else is a table here:

* `Subscription` — who wants alerts: chat, language, where (a rounded location and/or an area), which kinds
  (cold alerts, all announcements) and quiet hours. One per chat.
* `Forecast` — the last hourly forecast fetched for each area, and how fetching it has been failing.
* `ColdEvent` — one cold spell in one area: opened once when the forecast first meets the trigger, kept (and
  extended) while it lasts, closed when the forecast is clear again. A unique "open key" allows one open event per
  area, so the same cold spell never alerts twice however often the forecast is checked.
* `Broadcast` — one message to many subscribers (a cold alert, its stand-down, or a coordinator's announcement), with
  its approval state and the fan-out's progress (a cursor over subscription ids, moved in the same transaction as
  the outbox rows it wrote, so a crash resumes exactly where it stopped).
* `Delivery` — one row per recipient and broadcast, pointing at its outbox item: the delivery report counts from
  there, and blocked recipients are found there.

The trigger rules (`find_spell`, `spell_over`) and quiet hours (`quiet_until`) are pure functions.
Never imports Telegram: the texts are rendered in handlers/broadcast.py, the jobs run in bot/weather_jobs.py.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from functools import cached_property
from typing import Any
from zoneinfo import ZoneInfo

from shapely import contains_xy
from shapely.geometry import Polygon
from shapely.prepared import PreparedGeometry, prep
from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    and_,
    delete,
    func,
    update,
)
from sqlalchemy import select as sa_select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import Field, SQLModel, col, select
from sqlmodel.ext.asyncio.session import AsyncSession
from sqlmodel.sql.sqltypes import UTCDateTime

from models import outbox
from models.base import utcnow
from models.outbox import NewMessage, OutboxItem, OutboxStatus
from models.staff import Staff
from models.station_search import geodesic_m
from models.users import User

# Shared locations are kept to 3 decimals (about 100 m): enough to rank nearby stations, no more precise than that.
LOCATION_DECIMALS = 3
MAX_TEXT = 3000  # a coordinator's announcement or note; the rendered message stays under Telegram's 4096


class Kind(enum.StrEnum):
    ALERT = "alert"  # a cold spell is coming
    STANDDOWN = "standdown"  # it is over
    MANUAL = "manual"  # a coordinator's /broadcast


class BroadcastStatus(enum.StrEnum):
    DRAFT = "draft"  # waiting for a coordinator (approval mode)
    SENDING = "sending"  # approved or automatic: fanned out and being delivered
    DONE = "done"  # everyone handled; final counts stored
    DISMISSED = "dismissed"  # a coordinator said no, or the spell ended before anyone approved


# --- areas and triggers (configuration, not tables) -------------------------------------------------------------


@dataclass(frozen=True)
class Trigger:
    """When a forecast hour is cold, and how long a spell must last / be clear (see config.example.toml)."""

    min_temperature_c: float | None = -15.0
    apparent_temperature_c: float | None = -20.0
    snowfall_cm: float | None = None
    min_hours: int = 3
    hysteresis_c: float = 2.0
    clear_hours: int = 6


@dataclass(frozen=True)
class Area:
    key: str
    name: str
    lat: float
    lon: float
    timezone: str
    trigger: Trigger = Trigger()
    names: Mapping[str, str] = field(default_factory=dict)
    polygon: tuple[tuple[float, float], ...] = ()  # (lat, lon) corners

    def display_name(self, language: str) -> str:
        return self.names.get(language, self.name)

    @cached_property
    def _shape(self) -> PreparedGeometry | None:
        if len(self.polygon) < 3:
            return None
        return prep(Polygon([(lon, lat) for lat, lon in self.polygon]))  # shapely works in x = lon, y = lat

    def contains(self, lat: float, lon: float) -> bool:
        shape = self._shape
        return shape is not None and bool(contains_xy(shape.context, lon, lat))

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


def polygon_centre(polygon: Sequence[tuple[float, float]]) -> tuple[float, float]:
    """(lat, lon) of a polygon's centroid: where its forecast is fetched when no centre is configured."""
    centroid = Polygon([(lon, lat) for lat, lon in polygon]).centroid
    return float(centroid.y), float(centroid.x)


def locate(areas: Iterable[Area], lat: float, lon: float, radius_m: float) -> Area | None:
    """The area a location belongs to: the first polygon containing it, else the nearest centre within `radius_m`."""
    candidates = list(areas)
    for area in candidates:
        if area.contains(lat, lon):
            return area
    ranked = sorted((geodesic_m(lat, lon, area.lat, area.lon), area.key) for area in candidates)
    if ranked and ranked[0][0] <= radius_m:
        return next(area for area in candidates if area.key == ranked[0][1])
    return None


def round_location(lat: float, lon: float) -> tuple[float, float]:
    return round(lat, LOCATION_DECIMALS), round(lon, LOCATION_DECIMALS)


# --- forecasts and the trigger rules ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Hour:
    """One forecast hour (its start, aware UTC). Missing values are None."""

    time: datetime
    temperature_c: float | None = None
    apparent_c: float | None = None
    wind_kmh: float | None = None
    snowfall_cm: float | None = None

    def to_json(self) -> list[Any]:
        return [int(self.time.timestamp()), self.temperature_c, self.apparent_c, self.wind_kmh, self.snowfall_cm]

    @classmethod
    def from_json(cls, row: Sequence[Any]) -> Hour:
        return cls(datetime.fromtimestamp(int(row[0]), UTC), *(None if v is None else float(v) for v in row[1:5]))


@dataclass(frozen=True)
class Spell:
    """A cold spell in a forecast: [starts_at, ends_at) and its figures."""

    starts_at: datetime
    ends_at: datetime
    reasons: tuple[str, ...]  # "temperature", "apparent", "snowfall"
    min_temperature_c: float | None
    min_apparent_c: float | None
    max_wind_kmh: float | None
    snowfall_cm: float | None


def cold_reasons(hour: Hour, trigger: Trigger, slack_c: float = 0.0) -> tuple[str, ...]:
    """Which conditions hold in this hour; `slack_c` (the hysteresis) widens the temperature thresholds."""
    reasons = []
    temperature, apparent, snowfall = trigger.min_temperature_c, trigger.apparent_temperature_c, trigger.snowfall_cm
    if temperature is not None and hour.temperature_c is not None and hour.temperature_c <= temperature + slack_c:
        reasons.append("temperature")
    if apparent is not None and hour.apparent_c is not None and hour.apparent_c <= apparent + slack_c:
        reasons.append("apparent")
    if snowfall is not None and hour.snowfall_cm is not None and hour.snowfall_cm >= snowfall:
        reasons.append("snowfall")
    return tuple(reasons)


def _ahead(hours: Sequence[Hour], now: datetime) -> list[Hour]:
    """The hours from the current one on, in order."""
    current = now.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    return sorted((h for h in hours if h.time >= current), key=lambda h: h.time)


def _consecutive(a: Hour, b: Hour) -> bool:
    return b.time - a.time == timedelta(hours=1)


def _figures(run: Sequence[Hour], reasons: Iterable[str]) -> Spell:
    def pick(values: Iterable[float | None], best: Any) -> float | None:
        present = [v for v in values if v is not None]
        return best(present) if present else None

    snow = [h.snowfall_cm for h in run if h.snowfall_cm is not None]
    order = ("temperature", "apparent", "snowfall")
    found = set(reasons)
    return Spell(
        starts_at=run[0].time,
        ends_at=run[-1].time + timedelta(hours=1),
        reasons=tuple(r for r in order if r in found),
        min_temperature_c=pick((h.temperature_c for h in run), min),
        min_apparent_c=pick((h.apparent_c for h in run), min),
        max_wind_kmh=pick((h.wind_kmh for h in run), max),
        snowfall_cm=round(sum(snow), 1) if snow else None,
    )


def find_spell(hours: Sequence[Hour], trigger: Trigger, now: datetime) -> Spell | None:
    """The first cold spell ahead: `min_hours` consecutive hours meeting the trigger, extended while the following
    hours stay within the hysteresis."""
    ahead = _ahead(hours, now)
    run: list[Hour] = []
    for index, hour in enumerate(ahead):
        if cold_reasons(hour, trigger) and (not run or _consecutive(run[-1], hour)):
            run.append(hour)
        else:
            run = [hour] if cold_reasons(hour, trigger) else []
        if len(run) >= trigger.min_hours:
            return _extend(run, ahead[index + 1 :], trigger)
    return None


def _extend(run: list[Hour], rest: Sequence[Hour], trigger: Trigger) -> Spell:
    spell = list(run)
    reasons = {r for h in run for r in cold_reasons(h, trigger)}
    for hour in rest:
        if not _consecutive(spell[-1], hour) or not cold_reasons(hour, trigger, trigger.hysteresis_c):
            break
        spell.append(hour)
        reasons.update(cold_reasons(hour, trigger))
    return _figures(spell, reasons)


def current_spell(hours: Sequence[Hour], trigger: Trigger, now: datetime, planned_end: datetime) -> Spell | None:
    """While an event is open: its spell in a fresh forecast, or None when the forecast no longer has it.

    Cold hours count with the hysteresis; cold hours with fewer than `clear_hours` milder hours between them belong to
    one spell (a mild afternoon does not end it). The event's spell is the first such run that starts before its
    planned end (or within `clear_hours` from now): a later run is another spell, with an event of its own."""
    ahead = _ahead(hours, now)
    if not ahead:
        return None
    runs: list[list[Hour]] = []
    for hour in ahead:
        if not cold_reasons(hour, trigger, trigger.hysteresis_c):
            continue
        if runs and hour.time - runs[-1][-1].time <= timedelta(hours=trigger.clear_hours):
            runs[-1].append(hour)
        else:
            runs.append([hour])
    horizon = max(planned_end, ahead[0].time + timedelta(hours=trigger.clear_hours))
    if not runs or runs[0][0].time >= horizon:
        return None
    run = runs[0]
    return _figures(run, {r for h in run for r in cold_reasons(h, trigger, trigger.hysteresis_c)})


def spell_over(hours: Sequence[Hour], trigger: Trigger, now: datetime, planned_end: datetime) -> bool:
    """True when the forecast covers at least `clear_hours` ahead and no longer has the event's spell."""
    return len(_ahead(hours, now)) >= trigger.clear_hours and current_spell(hours, trigger, now, planned_end) is None


# --- quiet hours ------------------------------------------------------------------------------------------------


def parse_minutes(text: str) -> int | None:
    """ "22:00" → 1320; None if it is not a time of day."""
    try:
        parsed = time.fromisoformat(text.strip())
    except ValueError:
        return None
    return parsed.hour * 60 + parsed.minute


def quiet_until(quiet_start: int | None, quiet_end: int | None, now: datetime, zone: ZoneInfo) -> datetime | None:
    """When quiet hours (local minutes after midnight, possibly across midnight) end, if `now` is inside them."""
    if quiet_start is None or quiet_end is None or quiet_start == quiet_end:
        return None
    local = now.astimezone(zone)
    minute = local.hour * 60 + local.minute
    inside = (
        quiet_start <= minute < quiet_end if quiet_start < quiet_end else minute >= quiet_start or minute < quiet_end
    )
    if not inside:
        return None
    end_day = local.date() if minute < quiet_end else local.date() + timedelta(days=1)
    end = datetime.combine(end_day, time(quiet_end // 60, quiet_end % 60), tzinfo=zone)
    return end.astimezone(UTC)


# --- tables -----------------------------------------------------------------------------------------------------


class Subscription(SQLModel, table=True):
    __tablename__ = "weather_subscriptions"
    __table_args__ = (Index("ix_weather_subscriptions_active_area_id", "active", "area_key", "id"),)

    id: int | None = Field(default=None, primary_key=True)
    chat_id: int = Field(sa_column=Column(BigInteger, nullable=False, unique=True))
    language: str = Field(default="en", max_length=16)
    area_key: str | None = Field(default=None, sa_column=Column(String(32), nullable=True))
    lat: float | None = Field(default=None, sa_column=Column(Float, nullable=True))
    lon: float | None = Field(default=None, sa_column=Column(Float, nullable=True))
    cold_alerts: bool = Field(default=True, sa_column=Column(Boolean, nullable=False))
    announcements: bool = Field(default=False, sa_column=Column(Boolean, nullable=False))
    # Local minutes after midnight in the area's zone; both None: no quiet hours.
    quiet_start: int | None = Field(default=None, sa_column=Column(Integer, nullable=True))
    quiet_end: int | None = Field(default=None, sa_column=Column(Integer, nullable=True))
    active: bool = Field(default=True, sa_column=Column(Boolean, nullable=False))
    # Why it stopped: "blocked" (Telegram answered 403); unsubscribing deletes the row instead.
    inactive_reason: str | None = Field(default=None, sa_column=Column(String(16), nullable=True))
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))
    updated_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))

    @property
    def has_quiet_hours(self) -> bool:
        return self.quiet_start is not None and self.quiet_end is not None and self.quiet_start != self.quiet_end


class Forecast(SQLModel, table=True):
    __tablename__ = "weather_forecasts"

    area_key: str = Field(sa_column=Column(String(32), primary_key=True))
    # The hours of the last successful fetch, as [unix time, temperature, apparent, wind, snowfall] rows.
    hours: list[list[Any]] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    fetched_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime(), nullable=True))
    attempted_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime(), nullable=True))
    failures: int = Field(default=0, sa_column=Column(Integer, nullable=False))  # failed checks in a row
    last_error: str | None = Field(default=None, sa_column=Column(String(64), nullable=True))
    # When coordinators were told the forecast is stale (cleared when it is fresh again).
    stale_reported_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime(), nullable=True))

    def parsed(self) -> list[Hour]:
        return [Hour.from_json(row) for row in self.hours]


class ColdEvent(SQLModel, table=True):
    __tablename__ = "weather_events"

    id: int | None = Field(default=None, primary_key=True)
    area_key: str = Field(sa_column=Column(String(32), nullable=False, index=True))
    # The area's key while the event is open, NULL once closed: unique, so one open event per area.
    open_key: str | None = Field(default=None, sa_column=Column(String(32), nullable=True, unique=True))
    starts_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    ends_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    reasons: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    min_temperature_c: float | None = Field(default=None, sa_column=Column(Float, nullable=True))
    min_apparent_c: float | None = Field(default=None, sa_column=Column(Float, nullable=True))
    max_wind_kmh: float | None = Field(default=None, sa_column=Column(Float, nullable=True))
    snowfall_cm: float | None = Field(default=None, sa_column=Column(Float, nullable=True))
    opened_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))
    closed_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime(), nullable=True))
    alert_broadcast_id: int | None = Field(default=None, sa_column=Column(Integer, nullable=True))
    standdown_broadcast_id: int | None = Field(default=None, sa_column=Column(Integer, nullable=True))

    @property
    def is_open(self) -> bool:
        return self.closed_at is None


class Broadcast(SQLModel, table=True):
    __tablename__ = "weather_broadcasts"
    __table_args__ = (Index("ix_weather_broadcasts_status", "status"),)

    id: int | None = Field(default=None, primary_key=True)
    kind: str = Field(sa_column=Column(String(16), nullable=False))
    event_id: int | None = Field(
        default=None, sa_column=Column(Integer, ForeignKey("weather_events.id", ondelete="SET NULL"), nullable=True)
    )
    # Target areas; empty: every area (and subscribers outside all of them).
    area_keys: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    # A manual announcement's text, or a coordinator's note added to an alert (plain text, escaped when rendered).
    text: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    # Urgent messages are sent during quiet hours (silently); the others wait until the quiet hours end.
    urgent: bool = Field(default=False, sa_column=Column(Boolean, nullable=False))
    status: str = Field(default=BroadcastStatus.DRAFT.value, sa_column=Column(String(16), nullable=False))
    # The language the coordinators' cards are written in.
    language: str = Field(default="en", sa_column=Column(String(16), nullable=False))
    created_by: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    decided_by: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    decided_by_name: str | None = Field(default=None, sa_column=Column(String(200), nullable=True))
    # A manual broadcast's draft id: a second tap on "Send" (or a redelivered update) makes no second broadcast.
    idempotency_key: str | None = Field(default=None, sa_column=Column(String(64), nullable=True, unique=True))
    # Chats holding this broadcast's card (the approval card, then the delivery report; see handlers/broadcast.py).
    report_chats: list[int] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    # Fan-out progress: every active subscription with an id up to `cursor` has its outbox row.
    cursor: int = Field(default=0, sa_column=Column(Integer, nullable=False))
    fanned_out: bool = Field(default=False, sa_column=Column(Boolean, nullable=False))
    recipients: int = Field(default=0, sa_column=Column(Integer, nullable=False))
    # Final counts, stored when done (outbox rows are pruned after a week; these stay for the season report).
    sent: int = Field(default=0, sa_column=Column(Integer, nullable=False))
    failed: int = Field(default=0, sa_column=Column(Integer, nullable=False))
    blocked: int = Field(default=0, sa_column=Column(Integer, nullable=False))
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))
    started_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime(), nullable=True))
    finished_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime(), nullable=True))


class Delivery(SQLModel, table=True):
    __tablename__ = "weather_deliveries"
    __table_args__ = (Index("ix_weather_deliveries_chat_id", "chat_id"),)

    broadcast_id: int = Field(
        sa_column=Column(Integer, ForeignKey("weather_broadcasts.id", ondelete="CASCADE"), primary_key=True)
    )
    chat_id: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    # The outbox item carrying the message (outbox rows are pruned after a week; the delivery row stays).
    outbox_id: int | None = Field(default=None, sa_column=Column(Integer, nullable=True, index=True))


_subscriptions = Subscription.__table__  # type: ignore[attr-defined]
_deliveries = Delivery.__table__  # type: ignore[attr-defined]
_broadcasts = Broadcast.__table__  # type: ignore[attr-defined]
_events = ColdEvent.__table__  # type: ignore[attr-defined]
_outbox = OutboxItem.__table__  # type: ignore[attr-defined]
_users = User.__table__  # type: ignore[attr-defined]


def _insert(session_dialect: str) -> Any:
    return pg_insert if session_dialect == "postgresql" else sqlite_insert


# --- subscriptions ----------------------------------------------------------------------------------------------


async def get_subscription(session: AsyncSession, chat_id: int) -> Subscription | None:
    return (await session.exec(select(Subscription).where(Subscription.chat_id == chat_id))).first()


async def save_subscription(
    session: AsyncSession,
    chat_id: int,
    *,
    language: str,
    area_key: str | None,
    lat: float | None,
    lon: float | None,
    cold_alerts: bool,
    announcements: bool,
    quiet_start: int | None,
    quiet_end: int | None,
) -> Subscription:
    """Create or replace the chat's subscription (active again if it had been stopped), committed."""
    found = await get_subscription(session, chat_id)
    subscription = found or Subscription(chat_id=chat_id)
    if lat is not None and lon is not None:
        lat, lon = round_location(lat, lon)
    subscription.language = language
    subscription.area_key, subscription.lat, subscription.lon = area_key, lat, lon
    subscription.cold_alerts, subscription.announcements = cold_alerts, announcements
    subscription.quiet_start, subscription.quiet_end = quiet_start, quiet_end
    subscription.active, subscription.inactive_reason = True, None
    subscription.updated_at = utcnow()
    session.add(subscription)
    await session.commit()
    await session.refresh(subscription)
    return subscription


async def unsubscribe(session: AsyncSession, chat_id: int) -> bool:
    """Delete the chat's subscription (its location and preferences with it), committed. False if there was none."""
    connection = await session.connection()
    result = await connection.execute(delete(_subscriptions).where(_subscriptions.c.chat_id == chat_id))
    await session.commit()
    return bool(result.rowcount)


async def forget(session: AsyncSession, chat_id: int) -> None:
    """/forgetme: the subscription and every delivery record of this chat, committed."""
    connection = await session.connection()
    await connection.execute(delete(_subscriptions).where(_subscriptions.c.chat_id == chat_id))
    await connection.execute(delete(_deliveries).where(_deliveries.c.chat_id == chat_id))
    await session.commit()


def _audience(broadcast: Broadcast) -> list[Any]:
    """Conditions on weather_subscriptions selecting this broadcast's recipients."""
    conditions: list[Any] = [_subscriptions.c.active.is_(True)]
    if broadcast.area_keys:
        conditions.append(_subscriptions.c.area_key.in_(broadcast.area_keys))
    if broadcast.kind in (Kind.ALERT, Kind.STANDDOWN):
        conditions.append(_subscriptions.c.cold_alerts.is_(True))
    elif not broadcast.urgent:  # a plain announcement: only those who asked for all announcements
        conditions.append(_subscriptions.c.announcements.is_(True))
    return conditions


async def count_audience(session: AsyncSession, broadcast: Broadcast) -> int:
    connection = await session.connection()
    result = await connection.execute(sa_select(func.count()).select_from(_subscriptions).where(*_audience(broadcast)))
    return int(result.scalar_one())


async def count_subscribers(session: AsyncSession) -> dict[str | None, int]:
    """Active subscriptions by area key (None: outside every area)."""
    connection = await session.connection()
    rows = await connection.execute(
        sa_select(_subscriptions.c.area_key, func.count())
        .where(_subscriptions.c.active.is_(True))
        .group_by(_subscriptions.c.area_key)
    )
    return {key: int(count) for key, count in rows}


@dataclass(frozen=True)
class Recipient:
    subscription_id: int
    chat_id: int
    language: str  # the person's current choice (/language), else the one stored when subscribing
    area_key: str | None
    lat: float | None
    lon: float | None
    quiet_start: int | None
    quiet_end: int | None


async def next_recipients(session: AsyncSession, broadcast: Broadcast, limit: int) -> list[Recipient]:
    """The next `limit` recipients after the broadcast's cursor, in subscription id order."""
    statement = (
        sa_select(
            _subscriptions.c.id,
            _subscriptions.c.chat_id,
            func.coalesce(_users.c.language, _subscriptions.c.language),
            _subscriptions.c.area_key,
            _subscriptions.c.lat,
            _subscriptions.c.lon,
            _subscriptions.c.quiet_start,
            _subscriptions.c.quiet_end,
        )
        .select_from(_subscriptions.outerjoin(_users, _users.c.telegram_id == _subscriptions.c.chat_id))
        .where(*_audience(broadcast), _subscriptions.c.id > broadcast.cursor)
        .order_by(_subscriptions.c.id)
        .limit(limit)
    )
    connection = await session.connection()
    return [Recipient(*row) for row in await connection.execute(statement)]


async def deactivate_blocked(session: AsyncSession, broadcast_id: int) -> int:
    """Stop the subscriptions of recipients Telegram refused with 403 (blocked the bot, deleted account); committed.

    Read from the failed outbox items of this broadcast, so it is exact after any crash: run it as often as you like."""
    blocked = (
        sa_select(_deliveries.c.chat_id)
        .select_from(_deliveries.join(_outbox, _outbox.c.id == _deliveries.c.outbox_id))
        .where(
            _deliveries.c.broadcast_id == broadcast_id,
            _outbox.c.status == OutboxStatus.FAILED.value,
            _outbox.c.last_error.like("forbidden%"),
        )
    )
    connection = await session.connection()
    result = await connection.execute(
        update(_subscriptions)
        .where(_subscriptions.c.active.is_(True), _subscriptions.c.chat_id.in_(blocked))
        .values(active=False, inactive_reason="blocked", updated_at=utcnow())
    )
    await session.commit()
    return int(result.rowcount or 0)


# --- forecasts --------------------------------------------------------------------------------------------------


async def get_forecast(session: AsyncSession, area_key: str) -> Forecast | None:
    return await session.get(Forecast, area_key)


async def forecasts(session: AsyncSession) -> dict[str, Forecast]:
    return {row.area_key: row for row in await session.exec(select(Forecast))}


async def record_forecast(session: AsyncSession, area_key: str, hours: Sequence[Hour], at: datetime) -> Forecast:
    """Store a successful fetch (flushed; the caller commits)."""
    row = await session.get(Forecast, area_key) or Forecast(area_key=area_key)
    row.hours = [hour.to_json() for hour in hours]
    row.fetched_at = row.attempted_at = at
    row.failures = 0
    row.last_error = None
    session.add(row)
    await session.flush()
    return row


async def record_failure(session: AsyncSession, area_key: str, error: str, at: datetime) -> Forecast:
    """A fetch that failed after its retries (flushed; the caller commits)."""
    row = await session.get(Forecast, area_key) or Forecast(area_key=area_key)
    row.attempted_at = at
    row.failures += 1
    row.last_error = error[:64]
    session.add(row)
    await session.flush()
    return row


def is_stale(row: Forecast | None, now: datetime, stale_after: timedelta) -> bool:
    return row is None or row.fetched_at is None or now - row.fetched_at > stale_after


# --- cold events ------------------------------------------------------------------------------------------------


async def open_event(session: AsyncSession, area_key: str) -> ColdEvent | None:
    return (await session.exec(select(ColdEvent).where(ColdEvent.open_key == area_key))).first()


async def get_event(session: AsyncSession, event_id: int) -> ColdEvent | None:
    return await session.get(ColdEvent, event_id)


async def start_event(session: AsyncSession, area_key: str, spell: Spell, now: datetime) -> ColdEvent | None:
    """Open the area's event for this spell, unless one is open already (then None): flushed, the caller commits.

    ``INSERT … ON CONFLICT (open_key) DO NOTHING``: two checks racing (two processes) open it once."""
    connection = await session.connection()
    values = {
        "area_key": area_key,
        "open_key": area_key,
        "starts_at": spell.starts_at,
        "ends_at": spell.ends_at,
        "reasons": list(spell.reasons),
        "min_temperature_c": spell.min_temperature_c,
        "min_apparent_c": spell.min_apparent_c,
        "max_wind_kmh": spell.max_wind_kmh,
        "snowfall_cm": spell.snowfall_cm,
        "opened_at": now,
    }
    statement = _insert(connection.dialect.name)(_events).values(**values)
    result = await connection.execute(
        statement.on_conflict_do_nothing(index_elements=["open_key"]).returning(_events.c.id)
    )
    event_id = result.scalar_one_or_none()
    return None if event_id is None else await session.get(ColdEvent, int(event_id))


def extend_event(event: ColdEvent, spell: Spell) -> bool:
    """Fold a later forecast of the same spell into the event (longer, colder); True if anything changed."""

    def figures() -> tuple[Any, ...]:
        return (event.ends_at, event.min_temperature_c, event.min_apparent_c, event.max_wind_kmh, event.snowfall_cm)

    before = figures()

    def lower(a: float | None, b: float | None) -> float | None:
        return b if a is None else a if b is None else min(a, b)

    event.ends_at = max(event.ends_at, spell.ends_at)
    event.min_temperature_c = lower(event.min_temperature_c, spell.min_temperature_c)
    event.min_apparent_c = lower(event.min_apparent_c, spell.min_apparent_c)
    if spell.max_wind_kmh is not None:
        event.max_wind_kmh = max(event.max_wind_kmh or 0.0, spell.max_wind_kmh)
    if spell.snowfall_cm is not None:
        event.snowfall_cm = max(event.snowfall_cm or 0.0, spell.snowfall_cm)
    event.reasons = sorted(set(event.reasons) | set(spell.reasons), key=("temperature", "apparent", "snowfall").index)
    return before != figures()


async def close_event(session: AsyncSession, event: ColdEvent, now: datetime) -> bool:
    """Close an open event (conditional: closed once even if two checks race); flushed, the caller commits."""
    connection = await session.connection()
    result = await connection.execute(
        update(_events)
        .where(_events.c.id == event.id, _events.c.closed_at.is_(None))
        .values(closed_at=now, open_key=None)
    )
    if result.rowcount != 1:
        return False
    await session.refresh(event)
    return True


# --- broadcasts -------------------------------------------------------------------------------------------------


async def create_broadcast(session: AsyncSession, broadcast: Broadcast) -> tuple[Broadcast, bool]:
    """Insert a broadcast (flushed; the caller commits). With an idempotency key already used, that broadcast is
    returned instead and False."""
    if broadcast.idempotency_key is not None:
        found = (
            await session.exec(select(Broadcast).where(Broadcast.idempotency_key == broadcast.idempotency_key))
        ).first()
        if found is not None:
            return found, False
    if broadcast.text is not None and len(broadcast.text) > MAX_TEXT:
        raise ValueError(f"broadcast text longer than {MAX_TEXT} characters")
    if broadcast.status == BroadcastStatus.SENDING and broadcast.started_at is None:
        broadcast.started_at = utcnow()
    session.add(broadcast)
    await session.flush()
    return broadcast, True


async def get_broadcast(session: AsyncSession, broadcast_id: int) -> Broadcast | None:
    return await session.get(Broadcast, broadcast_id, populate_existing=True)


async def sending(session: AsyncSession) -> list[Broadcast]:
    """Broadcasts being delivered (to resume after a restart, and to report on)."""
    statement = select(Broadcast).where(Broadcast.status == BroadcastStatus.SENDING.value).order_by(col(Broadcast.id))
    return list(await session.exec(statement.execution_options(populate_existing=True)))


async def decide(
    session: AsyncSession, broadcast_id: int, *, approve: bool, by: int | None, by_name: str | None
) -> Broadcast | None:
    """Approve (→ sending) or dismiss a draft: one conditional UPDATE, so of two coordinators tapping at once exactly
    one decides; the other gets None. Flushed; the caller commits (with the cards' edits)."""
    values: dict[str, Any] = {
        "status": (BroadcastStatus.SENDING if approve else BroadcastStatus.DISMISSED).value,
        "decided_by": by,
        "decided_by_name": by_name,
    }
    if approve:
        values["started_at"] = utcnow()
    else:
        values["finished_at"] = utcnow()
    connection = await session.connection()
    result = await connection.execute(
        update(_broadcasts)
        .where(_broadcasts.c.id == broadcast_id, _broadcasts.c.status == BroadcastStatus.DRAFT.value)
        .values(**values)
    )
    if result.rowcount != 1:
        return None
    return await get_broadcast(session, broadcast_id)


async def set_note(session: AsyncSession, broadcast_id: int, note: str | None) -> Broadcast | None:
    """A coordinator's edit of a draft alert's note (only while it is a draft); flushed, the caller commits."""
    if note is not None and len(note) > MAX_TEXT:
        raise ValueError(f"note longer than {MAX_TEXT} characters")
    connection = await session.connection()
    result = await connection.execute(
        update(_broadcasts)
        .where(_broadcasts.c.id == broadcast_id, _broadcasts.c.status == BroadcastStatus.DRAFT.value)
        .values(text=note)
    )
    if result.rowcount != 1:
        return None
    return await get_broadcast(session, broadcast_id)


async def add_deliveries(
    session: AsyncSession, broadcast: Broadcast, messages: Sequence[NewMessage], *, cursor: int
) -> int:
    """One fan-out step, in the caller's transaction (the caller commits): the messages go to the outbox, one delivery
    row each, and the cursor moves past them — all or nothing, so a crash resumes exactly here. Returns how many
    messages were new (a resumed step finds the earlier ones by their dedupe keys)."""
    assert broadcast.id is not None
    inserted = await outbox.enqueue_messages(session, messages)
    rows = [
        {"broadcast_id": broadcast.id, "chat_id": m.chat_id, "outbox_id": inserted[m.dedupe_key]}
        for m in messages
        if m.dedupe_key in inserted
    ]
    connection = await session.connection()
    if rows:
        statement = _insert(connection.dialect.name)(_deliveries).on_conflict_do_nothing(
            index_elements=["broadcast_id", "chat_id"]
        )
        await connection.execute(statement, rows)
    await connection.execute(
        update(_broadcasts)
        .where(_broadcasts.c.id == broadcast.id)
        .values(cursor=cursor, recipients=_broadcasts.c.recipients + len(rows))
    )
    broadcast.cursor = cursor
    broadcast.recipients += len(rows)
    return len(rows)


async def mark_fanned_out(session: AsyncSession, broadcast_id: int) -> None:
    connection = await session.connection()
    await connection.execute(update(_broadcasts).where(_broadcasts.c.id == broadcast_id).values(fanned_out=True))
    await session.commit()


def dedupe_key(broadcast_id: int, chat_id: int) -> str:
    """The outbox dedupe key of a broadcast's message to one chat: nobody gets the same broadcast twice."""
    return f"broadcast:{broadcast_id}:to:{chat_id}"


@dataclass(frozen=True)
class DeliveryCounts:
    recipients: int = 0
    sent: int = 0
    failed: int = 0
    blocked: int = 0
    pending: int = 0  # still to send now (or being retried)
    scheduled: int = 0  # waiting for the end of someone's quiet hours

    @property
    def finished(self) -> bool:
        return self.pending == 0 and self.scheduled == 0


async def delivery_counts(session: AsyncSession, broadcast: Broadcast, now: datetime | None = None) -> DeliveryCounts:
    """Where the broadcast's messages are, from their outbox items (final counts once it is done)."""
    if broadcast.status == BroadcastStatus.DONE:
        return DeliveryCounts(broadcast.recipients, broadcast.sent, broadcast.failed, broadcast.blocked)
    now = now or utcnow()
    later = and_(_outbox.c.status == OutboxStatus.PENDING.value, _outbox.c.not_before > now)
    forbidden = _outbox.c.last_error.like("forbidden%")
    statement = (
        sa_select(
            _outbox.c.status,
            func.coalesce(forbidden, False).label("forbidden"),
            func.coalesce(later, False).label("later"),
            func.count(),
        )
        .select_from(_deliveries.join(_outbox, _outbox.c.id == _deliveries.c.outbox_id))
        .where(_deliveries.c.broadcast_id == broadcast.id)
        .group_by(_outbox.c.status, "forbidden", "later")
    )
    connection = await session.connection()
    counts = dict.fromkeys(("sent", "failed", "blocked", "pending", "scheduled"), 0)
    for status, is_forbidden, is_later, count in await connection.execute(statement):
        if status == OutboxStatus.SENT.value:
            counts["sent"] += count
        elif status == OutboxStatus.FAILED.value:
            counts["blocked" if is_forbidden else "failed"] += count
        elif status in outbox.OUTSTANDING:
            counts["scheduled" if is_later else "pending"] += count
        else:  # superseded: not used for broadcast messages
            counts["failed"] += count
    await session.commit()
    return DeliveryCounts(recipients=broadcast.recipients, **counts)


async def finish(session: AsyncSession, broadcast: Broadcast, counts: DeliveryCounts, now: datetime) -> bool:
    """sending → done with the final counts (conditional: finished once); committed."""
    connection = await session.connection()
    result = await connection.execute(
        update(_broadcasts)
        .where(_broadcasts.c.id == broadcast.id, _broadcasts.c.status == BroadcastStatus.SENDING.value)
        .values(
            status=BroadcastStatus.DONE.value,
            finished_at=now,
            sent=counts.sent,
            failed=counts.failed,
            blocked=counts.blocked,
        )
    )
    await session.commit()
    return result.rowcount == 1


async def set_report_chats(session: AsyncSession, broadcast_id: int, chats: Sequence[int]) -> None:
    connection = await session.connection()
    await connection.execute(
        update(_broadcasts).where(_broadcasts.c.id == broadcast_id).values(report_chats=list(chats))
    )


async def outstanding_messages(session: AsyncSession) -> int:
    """Outbox items waiting to be sent now: a fan-out keeps this low so other notifications never queue behind a
    whole broadcast."""
    return await outbox.outstanding(session)


# --- who coordinates --------------------------------------------------------------------------------------------


async def coordinators(session: AsyncSession) -> list[Staff]:
    """Staff who may broadcast (coordinators and admins), by id."""
    members = await session.exec(select(Staff).order_by(col(Staff.telegram_id)))
    return [member for member in members if member.can("broadcast")]
