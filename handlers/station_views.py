"""Rendering of station lists and cards (texts and keyboards), kept apart from the handlers that decide what to send.

Callback data is stateless: every button carries the whole view it leads to (origin, filters, page), so buttons keep
working after a restart and a forged value can only ask for another public view.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from urllib.parse import quote

from babel.dates import format_date, format_time
from telegram import InlineKeyboardButton, InlineKeyboardMarkup

from bot.i18n import Translator
from handlers.common import esc
from handlers.vocabulary import ALERT_PRESETS, QUICK_FILTERS, SERVICES, amenity_icon, amenity_label
from models.hours import OpenState
from models.stations import AMENITY_BIT, Station, StationStatus

PAGE_SIZE = 5
LIST_PREFIX, CARD_PREFIX, FEEDBACK_PREFIX = "nf", "sc", "fb"


@dataclass(frozen=True)
class ListView:
    """What a result list shows: origin, filters (amenity bitmask, open now) and page."""

    lat: float
    lon: float
    mask: int = 0
    open_now: bool = False
    page: int = 0

    def callback(self) -> str:
        return f"{LIST_PREFIX}|{self.lat:.5f}|{self.lon:.5f}|{self.mask}|{int(self.open_now)}|{self.page}"

    @classmethod
    def parse(cls, data: str) -> ListView | None:
        """None for anything malformed (forged or from an older version)."""
        parts = data.split("|")
        if len(parts) != 6 or parts[0] != LIST_PREFIX:
            return None
        try:
            view = cls(float(parts[1]), float(parts[2]), int(parts[3]), parts[4] == "1", int(parts[5]))
        except ValueError:
            return None
        all_bits = sum(AMENITY_BIT.values())
        if not (-90 <= view.lat <= 90 and -180 <= view.lon <= 180 and 0 <= view.mask <= all_bits):
            return None
        if not 0 <= view.page <= 20:
            return None
        return view

    @property
    def amenities(self) -> list[str]:
        return [name for name, bit in AMENITY_BIT.items() if self.mask & bit]


@dataclass(frozen=True)
class StationLine:
    station: Station
    distance_m: float
    state: OpenState


def distance_text(t: Translator, meters: float) -> str:
    if meters < 1000:
        return t.gettext("{distance} m").format(
            distance=t.number(round(meters / 10) * 10 if meters >= 100 else round(meters))
        )
    kilometers = meters / 1000
    return t.gettext("{distance} km").format(distance=t.number(kilometers, "#,##0.0" if kilometers < 100 else "#,##0"))


def _when(t: Translator, moment: datetime, now: datetime) -> str:
    """ "08:00", "tomorrow 08:00", "Mon 08:00" or "3 Dec 08:00", in the station's zone."""
    clock = format_time(moment, "HH:mm", locale=t.language)
    days = (moment.date() - now.astimezone(moment.tzinfo).date()).days
    if days == 0:
        return clock
    if days == 1:
        return t.gettext("tomorrow {time}").format(time=clock)
    if days < 7:
        return f"{format_date(moment, 'EEE', locale=t.language)} {clock}"
    return f"{format_date(moment, 'medium', locale=t.language)} {clock}"


def alert_text(t: Translator, station: Station) -> str | None:
    if station.alert_code in ALERT_PRESETS:
        return t.gettext(ALERT_PRESETS[station.alert_code])
    return esc(station.alert) if station.alert else None


def open_text(t: Translator, station: Station, state: OpenState, now: datetime) -> str:
    if station.status == StationStatus.TEMPORARILY_CLOSED:
        notice = alert_text(t, station)
        if notice:
            return t.gettext("⛔ temporarily closed: {notice}").format(notice=notice)
        return t.gettext("⛔ temporarily closed")
    if station.status == StationStatus.CLOSED:
        return t.gettext("⛔ closed")
    if state.is_open is None:
        return t.gettext("⚪ hours unknown")
    if state.is_open:
        if state.changes_at is None:
            return t.gettext("🟢 open 24 hours")
        return t.gettext("🟢 open · closes {when}").format(when=_when(t, state.changes_at, now))
    if state.changes_at is None:
        return t.gettext("🔴 closed")
    return t.gettext("🔴 closed · opens {when}").format(when=_when(t, state.changes_at, now))


def station_name(t: Translator, station: Station) -> str:
    return esc(station.display_name(prefer_english=t.language == "en"))


def list_text(
    t: Translator,
    view: ListView,
    lines: list[StationLine],
    now: datetime,
    *,
    beyond_radius_km: float | None,
    place_label: str | None = None,
) -> str:
    parts = [t.gettext("<b>Nearest care stations</b>")]
    if place_label:
        parts[0] += "\n" + t.gettext("📍 near {place}").format(place=esc(place_label))
    if view.amenities or view.open_now:
        chosen = [amenity_label(t, a) for a in view.amenities]
        if view.open_now:
            chosen.append(t.gettext("🟢 Open now"))
        parts.append(t.gettext("Only: {filters}").format(filters=", ".join(chosen)))
    if not lines:
        parts.append(t.gettext("No station matches these filters. Tap a filter to remove it."))
        return "\n\n".join(parts)
    if beyond_radius_km is not None:
        parts.append(
            t.gettext("There is no station within {radius} km. The nearest one is {distance} away:").format(
                radius=t.number(beyond_radius_km, "#,##0"), distance=distance_text(t, lines[0].distance_m)
            )
        )
    start = view.page * PAGE_SIZE
    for number, line in enumerate(lines, start=start + 1):
        icons = "".join(amenity_icon(a) for a in line.station.amenities)
        entry = f"{number}. <b>{station_name(t, line.station)}</b> — {distance_text(t, line.distance_m)}\n"
        entry += "    " + open_text(t, line.station, line.state, now)
        if icons:
            entry += "\n    " + icons
        parts.append(entry)
    return "\n\n".join(parts)


def list_keyboard(t: Translator, view: ListView, lines: list[StationLine], *, has_more: bool) -> InlineKeyboardMarkup:
    start = view.page * PAGE_SIZE
    rows = [
        [
            InlineKeyboardButton(
                f"{n}. {line.station.display_name(t.language == 'en')}"[:60],
                callback_data=f"{CARD_PREFIX}|{line.station.id}",
            )
        ]
        for n, line in enumerate(lines, start=start + 1)
    ]
    toggles = []
    for name in QUICK_FILTERS:
        bit = AMENITY_BIT[name]
        active = bool(view.mask & bit)
        label = ("✓ " if active else "") + amenity_label(t, name)
        toggles.append(
            InlineKeyboardButton(label, callback_data=replace(view, mask=view.mask ^ bit, page=0).callback())
        )
    open_label = ("✓ " if view.open_now else "") + t.gettext("🟢 Open now")
    toggles.append(
        InlineKeyboardButton(open_label, callback_data=replace(view, open_now=not view.open_now, page=0).callback())
    )
    rows += [toggles[i : i + 3] for i in range(0, len(toggles), 3)]
    paging = []
    if view.page > 0:
        paging.append(
            InlineKeyboardButton(t.gettext("◀ Nearer"), callback_data=replace(view, page=view.page - 1).callback())
        )
    if has_more:
        paging.append(
            InlineKeyboardButton(t.gettext("More ▶"), callback_data=replace(view, page=view.page + 1).callback())
        )
    if paging:
        rows.append(paging)
    return InlineKeyboardMarkup(rows)


def directions_url(provider: str, station: Station) -> str:
    lat, lon = f"{station.lat:.6f}", f"{station.lon:.6f}"
    name = quote(station.display_name(prefer_english=False))
    if provider == "amap":
        return f"https://uri.amap.com/navigation?to={lon},{lat},{name}&mode=walk&coordinate=wgs84&callnative=1"
    if provider == "google":
        return f"https://www.google.com/maps/dir/?api=1&destination={lat},{lon}"
    if provider == "apple":
        return f"https://maps.apple.com/?daddr={lat},{lon}"
    return f"https://www.openstreetmap.org/directions?engine=fossgis_osrm_foot&route=%3B{lat}%2C{lon}"


def card_text(t: Translator, station: Station, state: OpenState, now: datetime, *, bot_username: str) -> str:
    prefer_en = t.language == "en"
    title = f"<b>{station_name(t, station)}</b>"
    other = station.name if prefer_en else station.name_en
    if other and other != station.display_name(prefer_en):
        title += f"\n{esc(other)}"
    lines = [title, ""]
    lines.append(open_text(t, station, state, now))
    if station.status != StationStatus.TEMPORARILY_CLOSED:
        notice = alert_text(t, station)
        if notice:
            lines.append(t.gettext("⚠️ Notice: {notice}").format(notice=notice))
    if station.opening_hours:
        lines.append(t.gettext("🕒 Hours: {hours}").format(hours=f"<code>{esc(station.opening_hours)}</code>"))
    if station.address:
        lines.append(t.gettext("📍 Address: {address}").format(address=esc(station.address)))
    if station.phone:
        lines.append(t.gettext("📞 Phone: {phone}").format(phone=esc(station.phone)))
    if station.operator:
        lines.append(t.gettext("🏢 Run by: {operator}").format(operator=esc(station.operator)))
    amenities = [amenity_label(t, a) for a in station.amenities if a not in SERVICES]
    services = [amenity_label(t, a) for a in station.amenities if a in SERVICES]
    if amenities:
        lines += ["", t.gettext("<b>Amenities</b>"), *amenities]
    if services:
        lines += ["", t.gettext("<b>Services</b>"), *services]
    extras = []
    if station.languages:
        extras.append(t.gettext("🗣 Languages: {languages}").format(languages=esc(", ".join(station.languages))))
    if station.step_free:
        extras.append(t.gettext("♿ Step-free entrance"))
    if station.accessible_toilet:
        extras.append(t.gettext("♿ Accessible toilet"))
    verified = (
        format_date(station.last_verified, "medium", locale=t.language)
        if station.last_verified
        else t.gettext("not yet")
    )
    extras.append(t.gettext("✔ Last verified: {date}").format(date=verified))
    link = f"https://t.me/{bot_username}?start=station_{station.id}"
    extras.append(t.gettext("🔗 Share: {link}").format(link=esc(link)))
    lines += ["", *extras]
    return "\n".join(lines)


def card_keyboard(t: Translator, station: Station, provider: str, *, staff: bool) -> InlineKeyboardMarkup:
    rows = [
        [InlineKeyboardButton(t.gettext("🧭 Directions"), url=directions_url(provider, station))],
        [InlineKeyboardButton(t.gettext("✏️ Report wrong info"), callback_data=f"{FEEDBACK_PREFIX}|{station.id}")],
    ]
    if staff:
        rows.append([InlineKeyboardButton(t.gettext("🛠 Update status (staff)"), callback_data=f"sp|{station.id}")])
    return InlineKeyboardMarkup(rows)
