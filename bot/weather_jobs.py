"""Cold-weather jobs on python-telegram-bot's JobQueue (APScheduler), re-armed from the database at every start.

Three jobs, all safe to run at any moment and after any crash:

* **check** (every ``weather.check_interval_hours``): fetch each area's forecast; a provider error is retried inside
  the provider and never escapes; a forecast older than ``stale_after_hours`` is reported to coordinators once (and
  its recovery too). A successful forecast is run through the area's trigger: a cold spell opens the area's one
  event (so the same spell never alerts twice), which becomes a broadcast — a draft with an approval card, or sent at
  once in "auto" mode; when the forecast is clear again the event closes and a stand-down goes out.
* **pump** (4 times a second): fans running broadcasts out. Each step composes the messages of the next subscribers
  (in their language, with the warm stations open nearest to them), writes them to the outbox with one delivery row
  each and moves the broadcast's cursor — in one transaction, so a crash resumes exactly where it stopped and the
  outbox dedupe keys mean nobody gets a broadcast twice. It keeps only about two seconds of sending in the outbox, so
  staff alerts and notifications never queue behind a whole broadcast.
* **progress** (every ``weather.report_interval_seconds``): counts each running broadcast's deliveries, deactivates
  subscribers Telegram refused with 403, edits the coordinators' card with the counts, and closes the broadcast when
  nobody is left.

Time: decisions about forecasts, events and quiet hours use ``services.clock`` (tests freeze it); outbox times stay on
the real clock, so a quiet-hours delay is computed on the first and applied on the second.
Logs carry area keys, broadcast ids and counts only — never a subscriber's id, place or message.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt
from scipy.spatial import cKDTree
from sqlmodel.ext.asyncio.session import AsyncSession
from telegram.ext import Application, ContextTypes

from bot.config import Settings
from bot.forecast import ForecastProvider, ForecastUnavailable, provider_from_settings
from bot.i18n import Translator, translator
from bot.services import Services
from bot.weather_areas import configured_areas
from handlers.broadcast import (
    AlertParts,
    WarmStation,
    alert_parts,
    announcement_text,
    card_key,
    card_keyboard,
    card_text,
    message_keyboard,
    moment_text,
    standdown_text,
    station_entry,
)
from handlers.station_views import distance_text
from models import outbox, station_search, weather
from models.base import utcnow
from models.hours import OpenState, open_state
from models.outbox import NewMessage
from models.stations import AMENITY_BIT, Station, StationStatus
from models.weather import Area, Broadcast, BroadcastStatus, ColdEvent, DeliveryCounts, Kind, Recipient

log = logging.getLogger("waystation.weather")

JOB_CHECK, JOB_PUMP, JOB_PROGRESS, JOB_ARM = "weather-check", "weather-pump", "weather-progress", "weather-arm"
RUNTIME = "weather"
PUMP_INTERVAL = 0.25  # seconds between fan-out steps
PUMP_BUDGET = 0.5  # at most this long per pump run (composing is CPU work: the loop must breathe)
CHUNK = 250  # recipients per transaction
COMPOSE_SLICE = 16  # recipients composed between two turns of the event loop (a few milliseconds of CPU)
STARTUP_DELAY = 30.0  # the first forecast check after a start, at the earliest (a crash loop must not hammer it)
OUTBOX_SECONDS = 2.0  # how much sending a fan-out keeps queued in the outbox


def broadcast_rate(settings: Settings) -> float:
    """Messages per second a broadcast goes out at."""
    if settings.weather.paid_broadcast:
        return settings.weather.paid_max_rate
    return settings.weather.broadcast_rate or settings.telegram.overall_max_rate


def outbox_window(settings: Settings) -> int:
    return int(min(5000, max(100, broadcast_rate(settings) * OUTBOX_SECONDS)))


# --- the runtime kept in bot_data ---------------------------------------------------------------------------------


@dataclass
class Runtime:
    provider: ForecastProvider
    check_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    pump_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    progress_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    composers: dict[int, Composer] = field(default_factory=dict)
    reported: dict[int, DeliveryCounts] = field(default_factory=dict)
    blocked_seen: dict[int, int] = field(default_factory=dict)
    fed: dict[int, tuple[float, float]] = field(default_factory=dict)  # broadcast → (loop time, credit) for rate caps


def runtime(application: Application[Any, Any, Any, Any, Any, Any]) -> Runtime:
    found = application.bot_data.get(RUNTIME)
    if found is None:
        settings = _services(application).settings
        found = application.bot_data[RUNTIME] = Runtime(provider=provider_from_settings(settings.weather))
    return cast(Runtime, found)


def _services(application: Application[Any, Any, Any, Any, Any, Any]) -> Services:
    return cast(Services, application.bot_data["services"])


# --- scheduling ---------------------------------------------------------------------------------------------------


def schedule(application: Application[Any, Any, Any, Any, Any, Any]) -> None:
    """Arm the weather jobs (call after the Application started; calling again replaces them).

    Forecast checks resume on their rhythm from the last check stored in the database (not before STARTUP_DELAY);
    broadcasts that were being sent when the process stopped are picked up by the next pump run."""
    job_queue = application.job_queue
    if job_queue is None:
        raise RuntimeError("python-telegram-bot's job queue is missing (install python-telegram-bot[job-queue])")
    for name in (JOB_CHECK, JOB_PUMP, JOB_PROGRESS, JOB_ARM):
        for job in job_queue.get_jobs_by_name(name):
            job.schedule_removal()
    runtime(application)
    settings = _services(application).settings
    options = {"max_instances": 4, "coalesce": True, "misfire_grace_time": None}
    job_queue.run_repeating(_pump_job, interval=PUMP_INTERVAL, first=PUMP_INTERVAL, name=JOB_PUMP, job_kwargs=options)
    job_queue.run_repeating(
        _progress_job,
        interval=settings.weather.report_interval_seconds,
        first=settings.weather.report_interval_seconds,
        name=JOB_PROGRESS,
        job_kwargs=options,
    )
    if settings.weather.areas:
        job_queue.run_once(_arm_checks, when=0.1, name=JOB_ARM)
    else:
        log.info("weather: no areas configured; forecast checks are off")


async def stop(application: Application[Any, Any, Any, Any, Any, Any]) -> None:
    """Stop the weather jobs and release the forecast provider's connections (call before the Application stops)."""
    if application.job_queue is not None:
        for name in (JOB_CHECK, JOB_PUMP, JOB_PROGRESS, JOB_ARM):
            for job in application.job_queue.get_jobs_by_name(name):
                job.schedule_removal()
    found = application.bot_data.pop(RUNTIME, None)
    if isinstance(found, Runtime):
        await found.provider.close()


async def _arm_checks(context: ContextTypes.DEFAULT_TYPE) -> None:
    application = context.application
    svc = _services(application)
    interval = svc.settings.weather.check_interval_hours * 3600
    async with svc.db.session() as session:
        rows = await weather.forecasts(session)
    attempts = [rows[key].attempted_at for key in configured_areas(svc.settings) if key in rows]
    due_in = 0.0
    if attempts and all(at is not None for at in attempts) and len(attempts) == len(configured_areas(svc.settings)):
        oldest = min(at for at in attempts if at is not None)
        due_in = (oldest + timedelta(seconds=interval) - svc.clock()).total_seconds()
    first = max(STARTUP_DELAY, due_in)
    assert application.job_queue is not None
    application.job_queue.run_repeating(
        _check_job,
        interval=interval,
        first=first,
        name=JOB_CHECK,
        job_kwargs={"max_instances": 1, "coalesce": True, "misfire_grace_time": None},
    )
    log.info("weather: forecast checks every %.1f h, the next in %.0f s", interval / 3600, first)


async def _check_job(context: ContextTypes.DEFAULT_TYPE) -> None:
    await check_forecasts(context.application)


async def _pump_job(context: ContextTypes.DEFAULT_TYPE) -> None:
    await pump(context.application)


async def _progress_job(context: ContextTypes.DEFAULT_TYPE) -> None:
    await progress(context.application)


# --- forecast checks ----------------------------------------------------------------------------------------------


async def coordinator_chats(session: AsyncSession, settings: Settings) -> list[int]:
    """Where approval cards, reports and notices go: the configured chats, else every coordinator privately."""
    if settings.weather.coordinator_chat_ids:
        return list(settings.weather.coordinator_chat_ids)
    return [member.telegram_id for member in await weather.coordinators(session)]


async def check_forecasts(application: Application[Any, Any, Any, Any, Any, Any]) -> None:
    """One round of forecast checks over every area (the job's body; tests call it directly)."""
    rt = runtime(application)
    if rt.check_lock.locked():
        return
    async with rt.check_lock:
        for area in configured_areas(_services(application).settings).values():
            try:
                await _check_area(application, rt, area)
            except Exception as exc:  # one area's trouble (database hiccup, a bug) must not stop the others
                log.error("weather: check of area %s failed: %s", area.key, type(exc).__name__)


async def _check_area(application: Application[Any, Any, Any, Any, Any, Any], rt: Runtime, area: Area) -> None:
    svc = _services(application)
    settings = svc.settings.weather
    now = svc.clock()
    try:
        hours = await rt.provider.hourly(area.lat, area.lon, settings.forecast_hours)
    except ForecastUnavailable as exc:
        await _forecast_failed(svc, area, exc.category, now)
        return
    except Exception as exc:  # a provider bug: same as an outage, never a crashed job
        await _forecast_failed(svc, area, f"internal:{type(exc).__name__}", now)
        return
    async with svc.db.session() as session:
        row = await weather.record_forecast(session, area.key, hours, now)
        if row.stale_reported_at is not None:
            await _notify(
                session,
                svc,
                _fresh_text,
                area,
                dedupe=f"weather:fresh:{area.key}:{int(row.stale_reported_at.timestamp())}",
            )
            row.stale_reported_at = None
            session.add(row)
        await _evaluate(session, svc, area, hours, now)
        await session.commit()
    svc.wake_outbox()


async def _forecast_failed(svc: Services, area: Area, category: str, now: datetime) -> None:
    log.warning("weather: no forecast for area %s (%s)", area.key, category)
    stale_after = timedelta(hours=svc.settings.weather.stale_after_hours)
    async with svc.db.session() as session:
        row = await weather.record_failure(session, area.key, category, now)
        if weather.is_stale(row, now, stale_after) and row.stale_reported_at is None:
            since = int(row.fetched_at.timestamp()) if row.fetched_at else 0

            def text(t: Translator, area: Area, zone: ZoneInfo) -> str:
                return _stale_text(t, area, zone, row.fetched_at, category, svc.settings.weather.check_interval_hours)

            await _notify(session, svc, text, area, dedupe=f"weather:stale:{area.key}:{since}")
            row.stale_reported_at = now
            session.add(row)
        await session.commit()
    svc.wake_outbox()


def _stale_text(
    t: Translator, area: Area, zone: ZoneInfo, since: datetime | None, category: str, every_hours: float
) -> str:
    name = area.display_name(t.language)
    lines = [t.gettext("⚠️ <b>No fresh forecast for {area}</b>").format(area=name)]
    if since is None:
        lines.append(t.gettext("The forecast service has not answered yet ({error}).").format(error=category))
    else:
        lines.append(
            t.gettext("The forecast service has not answered since {time} ({error}).").format(
                time=moment_text(t, since, zone), error=category
            )
        )
    lines.append(
        t.gettext(
            "Cold-weather alerts for this area cannot be sent until it answers. I keep trying every {hours} hours; "
            "please watch the weather yourselves meanwhile."
        ).format(hours=t.number(every_hours, "#,##0.#"))
    )
    return "\n".join(lines)


def _fresh_text(t: Translator, area: Area, _zone: ZoneInfo) -> str:
    return t.gettext("✅ Forecasts for {area} are coming in again.").format(area=area.display_name(t.language))


async def _notify(session: AsyncSession, svc: Services, render: Any, area: Area, *, dedupe: str) -> None:
    t = translator(svc.settings.i18n.default_language)
    text = render(t, area, area.zone)
    for chat in await coordinator_chats(session, svc.settings):
        await outbox.enqueue_message(session, chat, text, dedupe_key=f"{dedupe}:{chat}")


async def _evaluate(
    session: AsyncSession, svc: Services, area: Area, hours: Sequence[weather.Hour], now: datetime
) -> None:
    """Run the trigger on a fresh forecast: open, extend or close the area's event (in the caller's transaction)."""
    event = await weather.open_event(session, area.key)
    if event is None:
        spell = weather.find_spell(hours, area.trigger, now)
        if spell is None:
            return
        event = await weather.start_event(session, area.key, spell, now)
        if event is None:  # another process opened it a moment ago
            return
        log.info("weather: cold spell in area %s opened event %s (%s)", area.key, event.id, ",".join(spell.reasons))
        await _announce(session, svc, area, event)
        return
    if weather.spell_over(hours, area.trigger, now, event.ends_at):
        if await weather.close_event(session, event, now):
            log.info("weather: event %s in area %s is over", event.id, area.key)
            await _stand_down(session, svc, area, event)
        return
    spell = weather.current_spell(hours, area.trigger, now, event.ends_at)
    if spell is not None and weather.extend_event(event, spell):
        session.add(event)
        alert = await weather.get_broadcast(session, event.alert_broadcast_id) if event.alert_broadcast_id else None
        if alert is not None and alert.status == BroadcastStatus.DRAFT:
            await enqueue_cards(session, svc, alert)  # the draft shows the new figures


async def _announce(session: AsyncSession, svc: Services, area: Area, event: ColdEvent) -> None:
    chats = await coordinator_chats(session, svc.settings)
    approval = svc.settings.weather.mode == "approval"
    if approval and not chats:
        log.warning("weather: no coordinator to approve event %s (area %s); sending it at once", event.id, area.key)
        approval = False
    broadcast, _ = await weather.create_broadcast(
        session,
        Broadcast(
            kind=Kind.ALERT.value,
            event_id=event.id,
            area_keys=[area.key],
            urgent=True,
            status=(BroadcastStatus.DRAFT if approval else BroadcastStatus.SENDING).value,
            language=svc.settings.i18n.default_language,
            report_chats=chats,
        ),
    )
    event.alert_broadcast_id = broadcast.id
    session.add(event)
    await post_cards(session, svc, broadcast)


async def _stand_down(session: AsyncSession, svc: Services, area: Area, event: ColdEvent) -> None:
    alert = await weather.get_broadcast(session, event.alert_broadcast_id) if event.alert_broadcast_id else None
    if alert is None or alert.status == BroadcastStatus.DISMISSED:
        return
    if alert.status == BroadcastStatus.DRAFT:
        expired = await weather.decide(session, alert.id or 0, approve=False, by=None, by_name=None)
        if expired is not None:
            await enqueue_cards(session, svc, expired)
        return
    if not svc.settings.weather.stand_down:
        return
    broadcast, _ = await weather.create_broadcast(
        session,
        Broadcast(
            kind=Kind.STANDDOWN.value,
            event_id=event.id,
            area_keys=[area.key],
            urgent=False,
            status=BroadcastStatus.SENDING.value,
            language=svc.settings.i18n.default_language,
            report_chats=await coordinator_chats(session, svc.settings),
        ),
    )
    event.standdown_broadcast_id = broadcast.id
    session.add(event)
    await post_cards(session, svc, broadcast)


# --- composing a broadcast's messages -----------------------------------------------------------------------------


@dataclass
class WarmStations:
    """The stations with heating that are open at some point during a cold spell, for "the nearest to each subscriber".

    One k-d tree over their 3-D unit vectors (as models.station_search builds), queried for a whole chunk of
    subscribers at once: the k nearest by chord, then their WGS-84 geodesic distances (geographiclib, via
    station_search.geodesic_m) for ranking and display. Within a city a chord ranks like the geodesic except between
    stations less than 1 % apart in distance; the exact per-person search (station_search.nearest) costs 4 geodesics
    more per person, which at 1,000 alerts a second is most of the budget."""

    rows: dict[int, Station]
    states: dict[int, OpenState]  # each one's state when the spell starts (for "open · closes 22:00")
    ids: list[int] = field(default_factory=list)
    tree: cKDTree | None = None

    @classmethod
    def of(cls, rows: dict[int, Station], states: dict[int, OpenState]) -> WarmStations:
        ids = sorted(rows)
        tree = None
        if ids:
            tree = cKDTree(_unit_vectors([rows[i].lat for i in ids], [rows[i].lon for i in ids]))
        return cls(rows, states, ids, tree)

    def near_many(self, points: Sequence[tuple[float, float]], k: int, radius_m: float) -> list[list[WarmStation]]:
        if self.tree is None or not points:
            return [[] for _ in points]
        count = min(k, len(self.ids))
        reach = 2 * math.sin(min(radius_m / station_search.M_MIN, math.pi) / 2) * (1 + 1e-9)
        _, found = self.tree.query(
            _unit_vectors([lat for lat, _ in points], [lon for _, lon in points]), k=count, distance_upper_bound=reach
        )
        found = np.asarray(found).reshape(len(points), count)
        result = []
        for (lat, lon), row in zip(points, found.tolist(), strict=True):
            hits = []
            for position in row:
                if position >= len(self.ids):  # fewer than k within reach
                    continue
                station = self.rows[self.ids[position]]
                distance = station_search.geodesic_m(lat, lon, station.lat, station.lon)
                if distance <= radius_m:
                    hits.append(WarmStation(station, distance, self.states[self.ids[position]]))
            hits.sort(key=lambda hit: (hit.distance_m, hit.station.id or 0))
            result.append(hits)
        return result

    def near(self, lat: float, lon: float, k: int, radius_m: float) -> list[WarmStation]:
        return self.near_many([(lat, lon)], k, radius_m)[0]


def _unit_vectors(lat_deg: Sequence[float], lon_deg: Sequence[float]) -> npt.NDArray[np.float64]:
    lat, lon = np.radians(np.asarray(lat_deg, dtype=np.float64)), np.radians(np.asarray(lon_deg, dtype=np.float64))
    return np.column_stack((np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)))


async def warm_stations(session: AsyncSession, event: ColdEvent, now: datetime, default_zone: str) -> WarmStations:
    """Load the candidates from the station index (open and temporarily closed stations, with their amenities) and keep
    those with heating, open (not temporarily closed) and open by their hours at some hour of the spell."""
    index = await station_search.get_index(session)
    heating = AMENITY_BIT["heating"]
    ids = [int(sid) for sid, bits in zip(index.ids.tolist(), index.bits.tolist(), strict=True) if bits & heating]
    rows = await station_search.fetch_stations(session, ids)
    start = max(event.starts_at, now)
    samples = [start + timedelta(hours=n) for n in range(49) if start + timedelta(hours=n) < event.ends_at] or [start]
    eligible: dict[int, Station] = {}
    states: dict[int, OpenState] = {}
    for sid, station in rows.items():
        if station.status != StationStatus.OPEN or not (station.amenity_bits & heating):
            continue
        zone = station.timezone or default_zone
        if any(open_state(station.opening_hours, zone, at).is_open for at in samples):
            eligible[sid] = station
            states[sid] = open_state(station.opening_hours, zone, start)
    return WarmStations.of(eligible, states)


@dataclass
class Composer:
    """Builds each recipient's message for one broadcast. What is the same for everyone of a language (the alert's
    head and tail, each station's line, each distance as text) is rendered once: a broadcast composes a thousand
    messages a second, and babel's formatting is the costly part."""

    broadcast: Broadcast
    settings: Settings
    areas: dict[str, Area]
    event: ColdEvent | None = None
    warm: WarmStations | None = None
    _markups: dict[str, dict[str, Any] | None] = field(default_factory=dict)
    _texts: dict[str, str] = field(default_factory=dict)
    _parts: dict[tuple[str, bool], AlertParts] = field(default_factory=dict)
    _entries: dict[tuple[str, int, int], str] = field(default_factory=dict)  # (language, station, rank) → line head
    _distances: dict[tuple[str, int], str] = field(default_factory=dict)  # (language, metres as shown) → text

    @property
    def area(self) -> Area | None:
        keys = self.broadcast.area_keys
        return self.areas.get(keys[0]) if keys else None

    def markup(self, t: Translator) -> dict[str, Any] | None:
        if t.language not in self._markups:
            keyboard = message_keyboard(t, self.broadcast.kind)
            self._markups[t.language] = keyboard.to_dict() if keyboard is not None else None
        return self._markups[t.language]

    def text(
        self, t: Translator, lat: float | None, lon: float | None, stations: list[WarmStation] | None = None
    ) -> str:
        kind = self.broadcast.kind
        if kind == Kind.MANUAL:
            if t.language not in self._texts:
                self._texts[t.language] = announcement_text(t, self.broadcast.text or "")
            return self._texts[t.language]
        area = self.area
        assert area is not None
        if kind == Kind.STANDDOWN:
            if t.language not in self._texts:
                self._texts[t.language] = standdown_text(t, area)
            return self._texts[t.language]
        assert self.event is not None and self.warm is not None
        own = lat is not None and lon is not None
        parts = self._parts.get((t.language, own))
        if parts is None:
            parts = self._parts[(t.language, own)] = alert_parts(
                t,
                area=area,
                event=self.event,
                note=self.broadcast.text,
                own_location=own,
                hotline=self.settings.help.hotline,
                emergency_numbers=self.settings.help.emergency_numbers,
            )
        if stations is None:
            stations = self.nearest([self.place(lat, lon)])[0]
        return parts.text([self._entry(t, n, warm) for n, warm in enumerate(stations, start=1)])

    def place(self, lat: float | None, lon: float | None) -> tuple[float, float]:
        """Where a subscriber's warm stations are looked for: their location, else their area's centre."""
        if lat is not None and lon is not None:
            return lat, lon
        area = self.area
        assert area is not None
        return area.lat, area.lon

    def nearest(self, places: Sequence[tuple[float, float]]) -> list[list[WarmStation]]:
        assert self.warm is not None
        weather_settings = self.settings.weather
        return self.warm.near_many(
            places, weather_settings.stations_in_alert, weather_settings.station_radius_km * 1000
        )

    def messages(self, recipients: Sequence[Recipient], clock_now: datetime, real_now: datetime) -> list[NewMessage]:
        """The messages of a chunk of recipients (the warm stations of all of them found in one query)."""
        if self.broadcast.kind != Kind.ALERT:
            return [self.message(r, clock_now, real_now) for r in recipients]
        found = self.nearest([self.place(r.lat, r.lon) for r in recipients])
        return [self.message(r, clock_now, real_now, near) for r, near in zip(recipients, found, strict=True)]

    def _entry(self, t: Translator, number: int, warm: WarmStation) -> str:
        assert self.event is not None and warm.station.id is not None
        meters = warm.distance_m
        step = (t.language, _shown_distance(meters))
        distance = self._distances.get(step)
        if distance is None:
            distance = self._distances[step] = distance_text(t, meters)
        key = (t.language, warm.station.id, number)
        line = self._entries.get(key)
        if line is None:
            # The station's line with a placeholder for the distance, rendered once per language and rank.
            line = self._entries[key] = station_entry(t, number, warm, self.event.starts_at, distance="\x00")
        return line.replace("\x00", distance, 1)

    def message(
        self,
        recipient: Recipient,
        clock_now: datetime,
        real_now: datetime,
        stations: list[WarmStation] | None = None,
    ) -> NewMessage:
        t = translator(recipient.language)
        zone_area = self.areas.get(recipient.area_key or "")
        zone = zone_area.zone if zone_area is not None else self.settings.tz
        quiet_end = weather.quiet_until(recipient.quiet_start, recipient.quiet_end, clock_now, zone)
        not_before = None
        silent = False
        if quiet_end is not None:
            if self.broadcast.urgent:
                silent = True  # urgent: now, without a sound
            else:
                not_before = real_now + (quiet_end - clock_now)  # the wait, measured on the services clock
        assert self.broadcast.id is not None
        options = {"allow_paid_broadcast": True} if self.settings.weather.paid_broadcast else None
        return NewMessage(
            chat_id=recipient.chat_id,
            text=self.text(t, recipient.lat, recipient.lon, stations),
            dedupe_key=weather.dedupe_key(self.broadcast.id, recipient.chat_id),
            reply_markup=self.markup(t),
            not_before=not_before,
            disable_notification=silent,
            options=options,
        )


def _shown_distance(meters: float) -> int:
    """The distance as distance_text shows it (m to 1 m under 100 m, to 10 m under 1 km, then to 0.1 km, then 1 km),
    in metres: equal values render the same text."""
    if meters < 100:
        return round(meters)
    if meters < 1000:
        return round(meters / 10) * 10
    if meters < 100_000:
        return round(meters / 100) * 100
    return round(meters / 1000) * 1000


async def composer_for(session: AsyncSession, svc: Services, broadcast: Broadcast) -> Composer:
    composer = Composer(broadcast, svc.settings, configured_areas(svc.settings))
    if broadcast.kind == Kind.ALERT and broadcast.event_id is not None:
        composer.event = await weather.get_event(session, broadcast.event_id)
        if composer.event is not None:
            composer.warm = await warm_stations(session, composer.event, svc.clock(), svc.settings.timezone)
    if broadcast.kind != Kind.MANUAL and (
        composer.area is None or (broadcast.kind == Kind.ALERT and composer.warm is None)
    ):
        raise LookupError(f"broadcast {broadcast.id}: its area or event is gone")
    return composer


# --- the fan-out ----------------------------------------------------------------------------------------------------


async def pump(application: Application[Any, Any, Any, Any, Any, Any]) -> None:
    """Top up the outbox with the next recipients of every running broadcast (the job's body)."""
    rt = runtime(application)
    if rt.pump_lock.locked():
        return
    async with rt.pump_lock:
        svc = _services(application)
        async with svc.db.session() as session:
            active = [b for b in await weather.sending(session) if not b.fanned_out]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + PUMP_BUDGET
        for broadcast in active:
            try:
                await _fan_out(svc, rt, broadcast, deadline)
            except Exception as exc:  # left as it is: the next run retries from the stored cursor
                log.error("weather: fan-out of broadcast %s failed: %s", broadcast.id, type(exc).__name__)


async def _fan_out(svc: Services, rt: Runtime, broadcast: Broadcast, deadline: float) -> None:
    assert broadcast.id is not None
    loop = asyncio.get_running_loop()
    window = outbox_window(svc.settings)
    capped = svc.settings.weather.broadcast_rate is not None and not svc.settings.weather.paid_broadcast
    while loop.time() < deadline:
        async with svc.db.session() as session:
            composer = rt.composers.get(broadcast.id)
            if composer is None:
                composer = rt.composers[broadcast.id] = await composer_for(session, svc, broadcast)
            room = window - await weather.outstanding_messages(session)
            if capped:
                room = min(room, _credit(rt, broadcast.id, broadcast_rate(svc.settings), loop.time()))
            if room < min(CHUNK, window // 2):
                await session.commit()
                return  # enough queued: the outbox is sending it
            recipients = await weather.next_recipients(session, broadcast, min(room, CHUNK))
            if not recipients:
                await weather.mark_fanned_out(session, broadcast.id)
                log.info("weather: broadcast %s fanned out to %d recipient(s)", broadcast.id, broadcast.recipients)
                return
            clock_now, real_now = svc.clock(), utcnow()
            messages: list[NewMessage] = []
            for start in range(0, len(recipients), COMPOSE_SLICE):
                messages += composer.messages(recipients[start : start + COMPOSE_SLICE], clock_now, real_now)
                await asyncio.sleep(0)  # let the sender run: a stalled loop sends late, then in a burst (429)
            await weather.add_deliveries(session, broadcast, messages, cursor=recipients[-1].subscription_id)
            await session.commit()
        if capped:
            _spend(rt, broadcast.id, len(recipients))
        await asyncio.sleep(0)  # let the outbox worker start on them


def _credit(rt: Runtime, broadcast_id: int, rate: float, now: float) -> int:
    """Messages a rate-capped broadcast may add now (a token bucket of one second)."""
    at, credit = rt.fed.get(broadcast_id, (now, rate))
    credit = min(rate, credit + (now - at) * rate)
    rt.fed[broadcast_id] = (now, credit)
    return int(credit)


def _spend(rt: Runtime, broadcast_id: int, n: int) -> None:
    at, credit = rt.fed[broadcast_id]
    rt.fed[broadcast_id] = (at, credit - n)


# --- cards and progress ----------------------------------------------------------------------------------------------


async def _card(
    session: AsyncSession, svc: Services, broadcast: Broadcast, counts: DeliveryCounts | None
) -> tuple[str, dict[str, Any] | None]:
    t = translator(broadcast.language)
    areas = configured_areas(svc.settings)
    event = await weather.get_event(session, broadcast.event_id) if broadcast.event_id else None
    audience = await weather.count_audience(session, broadcast) if broadcast.status == BroadcastStatus.DRAFT else 0
    preview = None
    if broadcast.status == BroadcastStatus.DRAFT and broadcast.kind == Kind.ALERT:
        try:
            composer = await composer_for(session, svc, broadcast)
            preview = composer.text(t, None, None)
        except LookupError:
            preview = None
    area = areas.get(broadcast.area_keys[0]) if broadcast.area_keys else None
    zone = area.zone if area is not None else svc.settings.tz
    if counts is None and broadcast.status in (BroadcastStatus.SENDING, BroadcastStatus.DONE):
        counts = await weather.delivery_counts(session, broadcast)
    text = card_text(
        t, broadcast, areas=areas, event=event, audience=audience, counts=counts, preview=preview, zone=zone
    )
    keyboard = card_keyboard(t, broadcast)
    return text, keyboard.to_dict() if keyboard is not None else None


async def post_cards(
    session: AsyncSession, svc: Services, broadcast: Broadcast, counts: DeliveryCounts | None = None
) -> None:
    """Send the broadcast's card to each of its chats (in the caller's transaction)."""
    assert broadcast.id is not None
    text, markup = await _card(session, svc, broadcast, counts)
    for chat in broadcast.report_chats:
        await outbox.enqueue_message(
            session,
            chat,
            text,
            reply_markup=markup,
            card_key=card_key(broadcast.id, chat),
            dedupe_key=f"{card_key(broadcast.id, chat)}:card",
        )


async def enqueue_cards(
    session: AsyncSession, svc: Services, broadcast: Broadcast, counts: DeliveryCounts | None = None
) -> None:
    """Edit the broadcast's card in each of its chats (in the caller's transaction)."""
    assert broadcast.id is not None
    text, markup = await _card(session, svc, broadcast, counts)
    for chat in broadcast.report_chats:
        key = card_key(broadcast.id, chat)
        shown = await outbox.latest_card_payload(session, key)
        if shown is not None and shown.get("text") == text and shown.get("reply_markup") == markup:
            continue  # the card already says this (e.g. the first report after a restart)
        try:
            await outbox.enqueue_edit(session, key, text, reply_markup=markup)
        except outbox.UnknownCard:
            await outbox.enqueue_message(session, chat, text, reply_markup=markup, card_key=key)


async def progress(application: Application[Any, Any, Any, Any, Any, Any]) -> None:
    """Report on running broadcasts: counts on the cards, blocked subscribers stopped, finished ones closed."""
    rt = runtime(application)
    if rt.progress_lock.locked():
        return
    async with rt.progress_lock:
        svc = _services(application)
        async with svc.db.session() as session:
            active = await weather.sending(session)
        for broadcast in active:
            try:
                await _progress_one(svc, rt, broadcast)
            except Exception as exc:
                log.error("weather: progress of broadcast %s failed: %s", broadcast.id, type(exc).__name__)


async def _progress_one(svc: Services, rt: Runtime, broadcast: Broadcast) -> None:
    assert broadcast.id is not None
    async with svc.db.session() as session:
        counts = await weather.delivery_counts(session, broadcast)
        if counts.blocked > rt.blocked_seen.get(broadcast.id, 0):
            stopped = await weather.deactivate_blocked(session, broadcast.id)
            rt.blocked_seen[broadcast.id] = counts.blocked
            if stopped:
                log.info("weather: broadcast %s: %d subscription(s) stopped (blocked the bot)", broadcast.id, stopped)
        if broadcast.fanned_out and counts.finished:
            if await weather.finish(session, broadcast, counts, svc.clock()):
                done = await weather.get_broadcast(session, broadcast.id)
                assert done is not None
                await enqueue_cards(session, svc, done, counts)
                await session.commit()
                svc.wake_outbox()
                log.info(
                    "weather: broadcast %s done: %d sent, %d blocked, %d failed",
                    broadcast.id,
                    counts.sent,
                    counts.blocked,
                    counts.failed,
                )
            for cache in (rt.composers, rt.reported, rt.blocked_seen, rt.fed):
                cache.pop(broadcast.id, None)
            return
        if rt.reported.get(broadcast.id) != counts:
            await enqueue_cards(session, svc, broadcast, counts)
            await session.commit()
            svc.wake_outbox()
            rt.reported[broadcast.id] = counts


async def start_broadcast_now(application: Application[Any, Any, Any, Any, Any, Any]) -> None:
    """Run a pump step and a progress step at once (tests and the demo; the jobs do the same on their rhythm)."""
    await pump(application)
    await progress(application)
