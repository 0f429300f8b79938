"""Care stations, modelled on Open Referral HSDS: where they are, what they offer, when they are open.

Amenities and services come from a fixed vocabulary (labels and icons are translated in the handlers); opening hours
are OpenStreetMap `opening_hours` expressions evaluated in the station's time zone (see models.hours).
"""

from __future__ import annotations

import enum
from datetime import date, datetime
from typing import Any

from sqlalchemy import JSON, Column, Float, Index, String
from sqlmodel import Field, SQLModel, select
from sqlmodel.ext.asyncio.session import AsyncSession

from models.base import utcnow


class StationStatus(enum.StrEnum):
    OPEN = "open"
    TEMPORARILY_CLOSED = "temporarily_closed"
    CLOSED = "closed"


# The fixed vocabulary, in display order. Bit positions (the index) are used by the search index: never reorder,
# only append.
AMENITIES: tuple[str, ...] = (
    "hot_water",
    "drinking_water",
    "microwave",
    "first_aid",
    "rest_area",
    "toilet",
    "phone_charging",
    "food_box",
    "heating",
    "air_conditioning",
    "wifi",
    "shower",
    "lockers",
    "residence_permit",
    "job_referral",
    "legal_aid",
    "medical_care",
    "lodging",
)
AMENITY_BIT: dict[str, int] = {name: 1 << i for i, name in enumerate(AMENITIES)}


def amenity_mask(amenities: list[str] | tuple[str, ...] | set[str] | frozenset[str]) -> int:
    """Bitmask of known amenity names (unknown names are a validation error elsewhere, ignored here)."""
    mask = 0
    for name in amenities:
        mask |= AMENITY_BIT.get(name, 0)
    return mask


class Station(SQLModel, table=True):
    __tablename__ = "stations"
    __table_args__ = (Index("ix_stations_lat_lon", "lat", "lon"),)

    id: int | None = Field(default=None, primary_key=True)
    # Stable id from the source data set (CSV id, OSM node/123, HSDS location id): re-imports update by it.
    external_id: str = Field(sa_column=Column(String(128), unique=True, nullable=False, index=True))
    name: str | None = Field(default=None, max_length=200)  # Chinese (or local) name
    name_en: str | None = Field(default=None, max_length=200)
    address: str | None = Field(default=None, max_length=500)
    lat: float = Field(sa_column=Column(Float, nullable=False))
    lon: float = Field(sa_column=Column(Float, nullable=False))
    phone: str | None = Field(default=None, max_length=64)
    operator: str | None = Field(default=None, max_length=200)
    amenities: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    # Bitmask of `amenities` (see AMENITY_BIT), kept in step by set_amenities(); lets search filter cheaply.
    amenity_bits: int = 0
    opening_hours: str | None = Field(default=None, max_length=500)
    timezone: str | None = Field(default=None, max_length=64)  # None: the configured default zone
    status: str = Field(default=StationStatus.OPEN.value, max_length=32)
    alert: str | None = Field(default=None, max_length=500)
    # A preset notice staff picked in two taps ("food_box_empty", "closed_today"): shown translated, unlike `alert`.
    alert_code: str | None = Field(default=None, max_length=32)
    languages: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    step_free: bool | None = None
    accessible_toilet: bool | None = None
    last_verified: date | None = None
    updated_at: datetime = Field(default_factory=utcnow)

    def set_amenities(self, amenities: list[str]) -> None:
        ordered = [a for a in AMENITIES if a in set(amenities)]
        self.amenities = ordered
        self.amenity_bits = amenity_mask(ordered)

    def display_name(self, prefer_english: bool) -> str:
        """The name in the reader's script when there is one, else whichever exists."""
        first, second = (self.name_en, self.name) if prefer_english else (self.name, self.name_en)
        return first or second or self.external_id

    def as_record(self) -> dict[str, Any]:
        """Plain fields for export and comparison (no database ids or timestamps)."""
        return station_record(self.external_id, self)


# The fields a station file describes, in export column order (after "id").
RECORD_FIELDS: tuple[str, ...] = (
    "name",
    "name_en",
    "lat",
    "lon",
    "address",
    "phone",
    "amenities",
    "opening_hours",
    "status",
    "alert",
    "languages",
    "operator",
    "timezone",
    "step_free",
    "accessible_toilet",
    "last_verified",
)


def station_record(external_id: str, source: Any) -> dict[str, Any]:
    """A station as plain data (a row or an imported record alike), so "unchanged" is a dict comparison."""
    record: dict[str, Any] = {"id": external_id}
    for name in RECORD_FIELDS:
        value = getattr(source, name)
        if name in ("amenities", "languages"):
            value = list(value)
        elif name == "last_verified":
            value = value.isoformat() if value else None
        record[name] = value
    return record


async def get(session: AsyncSession, station_id: int) -> Station | None:
    return await session.get(Station, station_id)


async def get_by_external_id(session: AsyncSession, external_id: str) -> Station | None:
    return (await session.exec(select(Station).where(Station.external_id == external_id))).first()


async def set_status(
    session: AsyncSession,
    station_id: int,
    *,
    status: StationStatus,
    alert: str | None = None,
    alert_code: str | None = None,
) -> Station | None:
    """Staff changed the status or notice: the change is also a fresh verification of the station."""
    station = await session.get(Station, station_id)
    if station is None:
        return None
    station.status = status.value
    station.alert = alert
    station.alert_code = alert_code
    station.last_verified = utcnow().date()
    station.updated_at = utcnow()
    session.add(station)
    await session.commit()
    await session.refresh(station)
    _search_index_changed(session)
    return station


async def mark_verified(session: AsyncSession, station_id: int) -> Station | None:
    """ "✔ still correct": refresh last-verified without changing anything else."""
    station = await session.get(Station, station_id)
    if station is None:
        return None
    station.last_verified = utcnow().date()
    session.add(station)
    await session.commit()
    await session.refresh(station)
    return station


def _search_index_changed(session: AsyncSession) -> None:
    """Let the nearest-station index notice a status change at once (closed stations leave it)."""
    from models import station_search  # imported here: station_search imports this module

    station_search.invalidate(session.bind)
