"""Station data in and out: CSV, GeoJSON (our own columns or OpenStreetMap tags) and Open Referral HSDS packages.

Every source is turned into plain field dicts and goes through one validator (`validate_record`), so a station means
the same thing whichever format it came from. A bad row never stops an import: it is reported with its line or
feature number and skipped, and the good rows are still written. Re-imports upsert by the source id.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
import zipfile
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path, PurePosixPath
from typing import Any, Literal, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from opening_hours import OpeningHours
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from models.base import utcnow
from models.stations import AMENITIES, Station, StationStatus, station_record

# models/ must not import bot/, so the data directory is located from this file (both packages are siblings, in a
# checkout and in site-packages alike).
DATA_DIR = Path(__file__).resolve().parent.parent / "bot" / "data"
DEMO_FILE = DATA_DIR / "demo_stations.csv"

CSV_COLUMNS: tuple[str, ...] = (
    "id",
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
)
EXTRA_COLUMNS: tuple[str, ...] = ("timezone", "step_free", "accessible_toilet", "last_verified")
EXPORT_COLUMNS: tuple[str, ...] = CSV_COLUMNS + EXTRA_COLUMNS
ExportFormat = Literal["csv", "geojson"]

# Column widths of the stations table: PostgreSQL enforces them, SQLite does not, so check here for both.
_MAX_LENGTH = {
    "id": 128,
    "name": 200,
    "name_en": 200,
    "address": 500,
    "phone": 64,
    "operator": 200,
    "opening_hours": 500,
    "alert": 500,
    "timezone": 64,
    "status": 32,
    "last_verified": 32,
}
_STATUSES = frozenset(s.value for s in StationStatus)
_LANGUAGE_TAG = re.compile(r"^[a-z]{2,3}(-[a-z0-9]{2,8})*$", re.IGNORECASE)
_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")
_YES = frozenset({"yes", "true", "1", "y", "是"})
_NO = frozenset({"no", "false", "0", "n", "否"})
_MAX_FILE_BYTES = 50 * 1024 * 1024  # a care-station list is kilobytes; refuse zip bombs and wrong files early
_QUERY_CHUNK = 500  # keeps IN (...) lists under every backend's bound-parameter limit

T = TypeVar("T")


class StationFileError(ValueError):
    """The file as a whole cannot be read (wrong format, missing columns or tables): nothing was imported."""


class InvalidRow(ValueError):
    """One row is unusable; `reason` is shown to the operator next to the row's position."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class RowError:
    where: str  # "line 7", "feature 3", "locations.csv line 4"
    reason: str

    def __str__(self) -> str:
        return f"{self.where}: {self.reason}"


@dataclass(slots=True)
class ImportReport:
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    errors: list[RowError] = field(default_factory=list)
    dry_run: bool = False

    @property
    def ok(self) -> bool:
        """False when any row was skipped: the CLI exits non-zero so scripted imports notice."""
        return not self.errors

    @property
    def total(self) -> int:
        return self.created + self.updated + self.unchanged


@dataclass(frozen=True, slots=True)
class StationData:
    """One validated station, independent of the database (build it with `validate_record`)."""

    id: str
    lat: float
    lon: float
    name: str | None = None
    name_en: str | None = None
    address: str | None = None
    phone: str | None = None
    amenities: tuple[str, ...] = ()
    opening_hours: str | None = None
    status: str = StationStatus.OPEN.value
    alert: str | None = None
    languages: tuple[str, ...] = ()
    operator: str | None = None
    timezone: str | None = None
    step_free: bool | None = None
    accessible_toilet: bool | None = None
    last_verified: date | None = None

    def as_record(self) -> dict[str, Any]:
        """Same shape as Station.as_record(), so "unchanged" is a plain dict comparison."""
        return station_record(self.id, self)

    def apply_to(self, station: Station) -> None:
        station.external_id = self.id
        station.name, station.name_en, station.address = self.name, self.name_en, self.address
        station.lat, station.lon = self.lat, self.lon
        station.phone, station.operator = self.phone, self.operator
        station.set_amenities(list(self.amenities))
        station.opening_hours, station.timezone = self.opening_hours, self.timezone
        station.status, station.alert = self.status, self.alert
        station.languages = list(self.languages)
        station.step_free, station.accessible_toilet = self.step_free, self.accessible_toilet
        station.last_verified = self.last_verified


# --------------------------------------------------------------------------------------------------- validation


def validate_record(raw: Mapping[str, Any]) -> StationData:
    """Check and normalise one source row; raises InvalidRow naming every problem, so one pass fixes a row."""
    problems: list[str] = []

    def check(parse: Callable[[], T], fallback: T) -> T:
        try:
            return parse()
        except InvalidRow as exc:
            problems.append(exc.reason)
            return fallback

    def text(key: str) -> str | None:
        return check(lambda: _text(raw.get(key), key), None)

    station_id = check(lambda: _station_id(raw.get("id")), "")
    lat, lon = check(lambda: _coordinates(raw.get("lat"), raw.get("lon")), (0.0, 0.0))
    data = StationData(
        id=station_id,
        lat=lat,
        lon=lon,
        name=text("name"),
        name_en=text("name_en"),
        address=text("address"),
        phone=text("phone"),
        alert=text("alert"),
        operator=text("operator"),
        amenities=check(lambda: _amenities(raw.get("amenities")), ()),
        opening_hours=check(lambda: _opening_hours(raw.get("opening_hours")), None),
        status=check(lambda: _status(raw.get("status")), StationStatus.OPEN.value),
        languages=check(lambda: _languages(raw.get("languages")), ()),
        timezone=check(lambda: _timezone(raw.get("timezone")), None),
        step_free=check(lambda: _flag(raw.get("step_free"), "step_free"), None),
        accessible_toilet=check(lambda: _flag(raw.get("accessible_toilet"), "accessible_toilet"), None),
        last_verified=check(lambda: _date(raw.get("last_verified")), None),
    )
    if problems:
        raise InvalidRow("; ".join(problems))
    return data


def _text(value: Any, key: str) -> str | None:
    """Free text is kept verbatim (HTML-looking or emoji names included); only surrounding blanks go."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise InvalidRow(f"{key}: expected text")
    text = str(value).strip()
    if len(text) > _MAX_LENGTH[key]:
        raise InvalidRow(f"{key} too long ({len(text)} > {_MAX_LENGTH[key]} characters)")
    return text or None


def _station_id(value: Any) -> str:
    text = None if isinstance(value, bool) else _text(value, "id")
    if not text:
        raise InvalidRow("missing id")
    return text


def _number(value: Any, axis: str) -> float:
    if value is None or (isinstance(value, str) and not value.strip()):
        raise InvalidRow(f"bad coordinates: missing {axis}")
    if isinstance(value, bool):
        raise InvalidRow(f"bad coordinates: {axis} is not a number")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InvalidRow(f"bad coordinates: {axis} {value!r} is not a number") from None
    if not math.isfinite(number):
        raise InvalidRow(f"bad coordinates: {axis} is not finite")
    return number


def _coordinates(lat_value: Any, lon_value: Any) -> tuple[float, float]:
    lat, lon = _number(lat_value, "lat"), _number(lon_value, "lon")
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        swapped = -90 <= lon <= 90 and -180 <= lat <= 180
        hint = " (lat and lon swapped?)" if swapped else ""
        raise InvalidRow(f"bad coordinates: lat {lat}, lon {lon} out of range{hint}")
    if lat == 0 and lon == 0:
        raise InvalidRow("bad coordinates: 0, 0 is a placeholder, not a place")
    return lat, lon


def _items(value: Any, key: str) -> list[str]:
    """A list field: a JSON array, or text separated by ';' (',' is accepted too: names never contain it)."""
    if value is None:
        return []
    if isinstance(value, list | tuple):
        if not all(isinstance(item, str) for item in value):
            raise InvalidRow(f"{key}: expected a list of names")
        parts: Iterable[str] = value
    elif isinstance(value, str):
        parts = re.split(r"[;,]", value)
    else:
        raise InvalidRow(f"{key}: expected a list of names")
    return [part.strip() for part in parts if part.strip()]


def _amenities(value: Any) -> tuple[str, ...]:
    names = {name.lower() for name in _items(value, "amenities")}
    unknown = sorted(names.difference(AMENITIES))
    if unknown:
        raise InvalidRow(f"unknown amenity: {', '.join(unknown)}")
    return tuple(name for name in AMENITIES if name in names)  # vocabulary order, as Station.set_amenities keeps it


def _languages(value: Any) -> tuple[str, ...]:
    codes: list[str] = []
    for code in _items(value, "languages"):
        if not _LANGUAGE_TAG.match(code):
            raise InvalidRow(f"bad language code: {code!r}")
        if code not in codes:
            codes.append(code)
    return tuple(codes)


def _opening_hours(value: Any) -> str | None:
    text = _text(value, "opening_hours")
    if text is None:
        return None  # unknown hours are allowed: the bot says "hours unknown"
    try:
        OpeningHours(text)
    except Exception:  # ParserError for bad syntax; the binding may raise others on odd input, same meaning here
        raise InvalidRow(f"unparseable opening hours: {text!r}") from None
    return text


def _status(value: Any) -> str:
    text = _text(value, "status")
    if not text:
        return StationStatus.OPEN.value
    status = re.sub(r"[\s-]+", "_", text.lower())
    if status not in _STATUSES:
        raise InvalidRow(f"unknown status: {text!r} (use open, temporarily_closed or closed)")
    return status


def _timezone(value: Any) -> str | None:
    text = _text(value, "timezone")
    if text is None:
        return None
    try:
        ZoneInfo(text)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidRow(f"unknown time zone: {text!r}") from None
    return text


def _flag(value: Any, key: str) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if not text:
        return None
    if text in _YES:
        return True
    if text in _NO:
        return False
    raise InvalidRow(f"{key}: expected yes or no, got {value!r}")


def _date(value: Any) -> date | None:
    if value is None or isinstance(value, date):
        return value
    text = str(value).strip()
    if not text:
        return None
    if re.fullmatch(r"\d{4}-\d{2}", text):  # OSM check_date is sometimes only year-month
        text += "-01"
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise InvalidRow(f"last_verified: bad date {text!r} (use YYYY-MM-DD)") from None


# --------------------------------------------------------------------------------------------------- reading

RawRow = dict[str, Any] | InvalidRow  # a source row's fields, or why the row could not even be turned into fields


def read_stations(path: Path | str) -> tuple[list[StationData], list[RowError]]:
    """Read and validate a CSV, GeoJSON or HSDS file (format from the name, else the content).

    Raises StationFileError when the file as a whole is unusable, OSError when it cannot be opened.
    """
    return _collect(_source_rows(Path(path)))


def _source_rows(path: Path) -> Iterable[tuple[str, RawRow]]:
    if path.is_dir() or path.suffix.lower() == ".zip" or path.name.lower() == "datapackage.json":
        return _hsds_rows(_load_hsds(path))
    text = _decode(_read_bytes(path), path.name)
    if path.suffix.lower() in (".geojson", ".json") or text.lstrip().startswith("{"):
        document = _parse_json(text, path.name)
        if isinstance(document, dict) and "resources" in document:  # a datapackage.json under another name
            return _hsds_rows(_load_hsds(path))
        return _geojson_rows(document)
    return _csv_station_rows(text)


def _collect(rows: Iterable[tuple[str, RawRow]]) -> tuple[list[StationData], list[RowError]]:
    """Validate every row; a second row with an id already seen is an error (it would silently overwrite)."""
    records: list[StationData] = []
    errors: list[RowError] = []
    first_seen: dict[str, str] = {}
    for where, raw in rows:
        if isinstance(raw, InvalidRow):
            errors.append(RowError(where, raw.reason))
            continue
        try:
            data = validate_record(raw)
        except InvalidRow as exc:
            errors.append(RowError(where, exc.reason))
            continue
        if data.id in first_seen:
            errors.append(RowError(where, f"duplicate id {data.id!r} (first at {first_seen[data.id]})"))
            continue
        first_seen[data.id] = where
        records.append(data)
    return records, errors


def _read_bytes(path: Path) -> bytes:
    if path.stat().st_size > _MAX_FILE_BYTES:
        raise StationFileError(f"{path.name}: larger than {_MAX_FILE_BYTES // 2**20} MB")
    return path.read_bytes()


def _decode(data: bytes, name: str) -> str:
    """UTF-8 (with or without Excel's BOM); Chinese Excel saves GB18030/GBK, so that is the fallback."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        pass
    try:
        return data.decode("gb18030")
    except UnicodeDecodeError:
        raise StationFileError(f"{name}: not UTF-8 or GB18030 text") from None


def _parse_json(text: str, name: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise StationFileError(f"{name}: not valid JSON ({exc.msg} at line {exc.lineno})") from None


def _csv_lines(text: str) -> Iterator[tuple[int, list[str]]]:
    """Rows with the physical line they start on (quoted fields may span lines); blank lines are skipped."""
    reader = csv.reader(io.StringIO(text, newline=""))
    while True:
        start = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise StationFileError(f"line {start}: {exc}") from None
        if any(cell.strip() for cell in row):
            yield start, row


def _csv_table(text: str, name: str) -> tuple[list[str], Iterator[tuple[int, list[str]]]]:
    lines = _csv_lines(text)
    try:
        _line, header = next(lines)
    except StopIteration:
        raise StationFileError(f"{name}: empty file") from None
    return [column.strip().lower() for column in header], lines


def _csv_dicts(text: str, name: str) -> Iterator[tuple[int, dict[str, str]]]:
    header, lines = _csv_table(text, name)
    for line, row in lines:
        yield line, dict(zip(header, row, strict=False))


def _csv_station_rows(text: str) -> Iterator[tuple[str, RawRow]]:
    header, lines = _csv_table(text, "CSV")
    missing = [column for column in ("id", "lat", "lon") if column not in header]
    if missing:
        raise StationFileError(f"CSV header lacks column(s): {', '.join(missing)} (expected {','.join(CSV_COLUMNS)})")
    for line, row in lines:
        where = f"line {line}"
        if len(row) > len(header):
            yield where, InvalidRow(f"{len(row)} fields but the header has {len(header)} (unquoted comma?)")
            continue
        yield where, {column: value for column, value in zip(header, row, strict=False) if column in EXPORT_COLUMNS}


# --------------------------------------------------------------------------------------------------- GeoJSON / OSM

# Our own property names that override what OSM tags would give. "name" is left out: OSM's name:zh beats it, and for
# our own exports there is no name:zh, so the plain name is used either way.
_OWN_PROPERTIES = tuple(column for column in EXPORT_COLUMNS if column not in ("id", "name", "lat", "lon"))

# OSM amenity=* values with an obvious counterpart. amenity=shelter is deliberately absent: in OSM it is a bus stop or
# weather shelter, not a place to sleep.
_OSM_AMENITY = {
    "drinking_water": "drinking_water",
    "toilets": "toilet",
    "shower": "shower",
    "clinic": "medical_care",
    "doctors": "medical_care",
}
# key=yes tags (the value may be a ';' list) and what they offer.
_OSM_YES_TAGS = (
    ("drinking_water", "drinking_water"),
    ("toilets", "toilet"),
    ("toilets:wheelchair", "toilet"),
    ("shower", "shower"),
    ("charging", "phone_charging"),
    ("device_charging", "phone_charging"),
    ("first_aid", "first_aid"),
    ("microwave", "microwave"),
    ("heating", "heating"),
    ("air_conditioning", "air_conditioning"),
)
_OSM_WIFI = frozenset({"wlan", "wifi", "yes"})


def _geojson_rows(document: Any) -> Iterator[tuple[str, RawRow]]:
    if isinstance(document, dict) and document.get("type") == "Feature":
        features: Any = [document]
    elif isinstance(document, dict) and document.get("type") == "FeatureCollection":
        features = document.get("features")
    else:
        raise StationFileError("JSON is neither a GeoJSON FeatureCollection nor an HSDS datapackage.json")
    if not isinstance(features, list):
        raise StationFileError("GeoJSON FeatureCollection without a features list")
    for number, feature in enumerate(features, start=1):
        try:
            yield f"feature {number}", _feature_fields(feature)
        except InvalidRow as exc:
            yield f"feature {number}", exc


def _feature_fields(feature: Any) -> dict[str, Any]:
    if not isinstance(feature, dict) or feature.get("type") != "Feature":
        raise InvalidRow("not a GeoJSON Feature")
    properties = feature.get("properties") or {}
    if not isinstance(properties, dict):
        raise InvalidRow("properties is not an object")
    lat, lon = _point(feature.get("geometry"))
    fields = _osm_fields(properties)
    fields.update({key: properties[key] for key in _OWN_PROPERTIES if properties.get(key) is not None})
    ids = (properties.get("id"), properties.get("@id"), feature.get("id"))
    fields["id"] = next((value for value in ids if value not in (None, "")), None)
    fields["lat"], fields["lon"] = lat, lon
    return fields


def _point(geometry: Any) -> tuple[Any, Any]:
    """(lat, lon) from a Point; GeoJSON stores [lon, lat], the opposite of how people write coordinates."""
    if not isinstance(geometry, dict) or geometry.get("type") != "Point":
        kind = geometry.get("type") if isinstance(geometry, dict) else None
        raise InvalidRow(f"bad coordinates: geometry must be a Point, got {kind or 'none'}")
    coordinates = geometry.get("coordinates")
    if not isinstance(coordinates, list) or len(coordinates) < 2:
        raise InvalidRow("bad coordinates: a Point needs [lon, lat]")
    return coordinates[1], coordinates[0]


def _osm_fields(properties: Mapping[str, Any]) -> dict[str, Any]:
    """Station fields from OpenStreetMap tags (only the ones present; OSM tag values are always strings)."""
    tags = {str(key): value.strip() for key, value in properties.items() if isinstance(value, str)}
    fields = {
        "name": tags.get("name:zh-Hans") or tags.get("name:zh") or tags.get("name"),
        "name_en": tags.get("name:en"),
        "address": _osm_address(tags),
        "phone": tags.get("phone") or tags.get("contact:phone"),
        "operator": tags.get("operator"),
        "opening_hours": tags.get("opening_hours"),
        "amenities": [name for name in AMENITIES if name in _osm_amenities(tags)],
        "step_free": _osm_flag(tags.get("wheelchair")),
        "accessible_toilet": _osm_flag(tags.get("toilets:wheelchair")),
        "last_verified": tags.get("check_date") or tags.get("survey:date"),
    }
    return {key: value for key, value in fields.items() if value not in (None, "")}


def _osm_values(tags: Mapping[str, str], key: str) -> set[str]:
    return {part.strip().lower() for part in tags.get(key, "").split(";") if part.strip()}


def _osm_amenities(tags: Mapping[str, str]) -> set[str]:
    kinds = _osm_values(tags, "amenity")
    found = {_OSM_AMENITY[kind] for kind in kinds if kind in _OSM_AMENITY}
    found.update(name for key, name in _OSM_YES_TAGS if "yes" in _osm_values(tags, key))
    if _osm_values(tags, "internet_access") & _OSM_WIFI:
        found.add("wifi")
    if _osm_values(tags, "healthcare") - {"no"}:
        found.add("medical_care")
    if "first_aid_kit" in _osm_values(tags, "emergency"):
        found.add("first_aid")
    if "social_facility" in kinds and "homeless" in _osm_values(tags, "social_facility:for"):
        found.update(_homeless_facility(_osm_values(tags, "social_facility")))
    return found


def _homeless_facility(kinds: set[str]) -> set[str]:
    """A facility for homeless people is lodging when it is a shelter (or unspecified); soup kitchens feed."""
    if kinds & {"food_bank", "soup_kitchen"}:
        return {"food_box"}
    if not kinds or "shelter" in kinds:
        return {"lodging"}
    return set()  # outreach, day centres…: nothing from the vocabulary can be claimed


def _osm_flag(value: str | None) -> bool | None:
    if value in ("yes", "designated"):
        return True
    return False if value == "no" else None  # "limited" stays unknown rather than guessed


def _osm_address(tags: Mapping[str, str]) -> str | None:
    if tags.get("addr:full"):
        return tags["addr:full"]
    keys = ("addr:city", "addr:district", "addr:street", "addr:housenumber")
    city, district, street, number = (tags.get(key, "") for key in keys)
    if not any((city, district, street, number)):
        return None
    if _CJK.search(city + district + street):  # Chinese addresses run from the city down, without separators
        return city + district + street + (f"{number}号" if number.isdigit() else number)
    return ", ".join(part for part in (f"{number} {street}".strip(), district, city) if part)


# --------------------------------------------------------------------------------------------------- HSDS

# Table → file names seen in HSDS 1.x/2.x (plural) and 3.x (singular) tabular packages; datapackage.json paths win.
_HSDS_FILES: dict[str, tuple[str, ...]] = {
    "location": ("locations.csv", "location.csv"),
    "organization": ("organizations.csv", "organization.csv"),
    "service": ("services.csv", "service.csv"),
    "service_at_location": ("service_at_location.csv", "services_at_location.csv", "service_at_locations.csv"),
    "phone": ("phones.csv", "phone.csv"),
    "physical_address": ("physical_addresses.csv", "physical_address.csv", "addresses.csv", "address.csv"),
    "schedule": ("schedules.csv", "schedule.csv"),
    "regular_schedule": ("regular_schedules.csv", "regular_schedule.csv"),
    "service_taxonomy": ("services_taxonomy.csv", "service_taxonomy.csv"),
    "taxonomy": ("taxonomy.csv", "taxonomies.csv"),
    "attribute": ("attributes.csv", "attribute.csv"),
    "taxonomy_term": ("taxonomy_terms.csv", "taxonomy_term.csv"),
}
_HSDS_RESOURCE_ALIASES = {"address": "physical_address", "services_at_location": "service_at_location"}

# Service names or categories → amenity. Small and explicit on purpose: anything not listed is ignored, and only
# names (not descriptions) are matched, so a "legal advice about food stamps" description cannot add food.
_SERVICE_AMENITIES: dict[str, tuple[str, ...]] = {
    "food_box": ("food", "meal", "meals", "soup kitchen", "食品", "爱心冰箱", "送餐", "餐食"),
    "shower": ("shower", "showers", "淋浴", "洗澡"),
    "medical_care": ("medical", "clinic", "health care", "healthcare", "doctor", "医疗", "诊所", "义诊"),
    "first_aid": ("first aid", "急救"),
    "lodging": ("shelter", "lodging", "overnight stay", "emergency housing", "住宿", "庇护", "临时安置"),
    "legal_aid": ("legal", "法律援助", "法律咨询"),
    "job_referral": ("employment", "job", "jobs", "就业", "职业介绍"),
    "drinking_water": ("drinking water", "饮用水"),
    "hot_water": ("hot water", "热水", "开水"),
    "toilet": ("toilet", "toilets", "restroom", "restrooms", "厕所", "卫生间"),
    "phone_charging": ("phone charging", "device charging", "充电"),
    "wifi": ("wifi", "wi-fi", "无线网络"),
    "heating": ("heating", "warming centre", "warming center", "取暖", "暖房"),
    "air_conditioning": ("air conditioning", "cooling centre", "cooling center", "空调", "纳凉"),
    "rest_area": ("rest area", "day centre", "day center", "休息"),
    "lockers": ("lockers", "luggage storage", "寄存"),
    "residence_permit": ("residence permit", "居住证"),
    "microwave": ("microwave", "微波炉"),
}
_SERVICE_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (
        amenity,
        re.compile("|".join(re.escape(k) if _CJK.search(k) else rf"\b{re.escape(k)}\b" for k in keywords), re.I),
    )
    for amenity, keywords in _SERVICE_AMENITIES.items()
)
_HSDS_STATUS = {
    "active": StationStatus.OPEN.value,
    "temporarily closed": StationStatus.TEMPORARILY_CLOSED.value,
    "temporarily_closed": StationStatus.TEMPORARILY_CLOSED.value,
    "inactive": StationStatus.CLOSED.value,
    "defunct": StationStatus.CLOSED.value,
}
_OSM_DAYS = ("Mo", "Tu", "We", "Th", "Fr", "Sa", "Su")
_ICAL_DAYS = {day.upper(): index for index, day in enumerate(_OSM_DAYS)}
_DAY_NAMES = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_TIME = re.compile(r"^(\d{1,2}):(\d{2})(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?$", re.IGNORECASE)


@dataclass
class _Table:
    file: str
    rows: list[tuple[int, dict[str, str]]]

    def dicts(self) -> Iterator[dict[str, str]]:
        return (row for _line, row in self.rows)


def _load_hsds(path: Path) -> dict[str, _Table]:
    """The CSV tables of an HSDS package given as a directory, a .zip or its datapackage.json."""
    if path.is_dir():
        return _hsds_tables(lambda name: _dir_member(path, name), "datapackage.json")
    if path.suffix.lower() != ".zip":
        return _hsds_tables(lambda name: _dir_member(path.parent, name), path.name)
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        raise StationFileError(f"{path.name}: not a zip archive") from None
    with archive:
        prefix = _zip_prefix(archive.namelist())
        return _hsds_tables(lambda name: _zip_member(archive, prefix + name), "datapackage.json")


def _dir_member(base: Path, name: str) -> bytes | None:
    candidate = base / name
    return _read_bytes(candidate) if candidate.is_file() else None


def _zip_prefix(names: list[str]) -> str:
    """The folder inside the zip holding the package (zips made by "compress folder" nest everything in one)."""
    markers = ["datapackage.json", *_HSDS_FILES["location"]]
    found = sorted((name for name in names if name.rsplit("/", 1)[-1].lower() in markers), key=len)
    if not found:
        raise StationFileError("zip holds no datapackage.json or locations.csv")
    return found[0][: found[0].rfind("/") + 1]


def _zip_member(archive: zipfile.ZipFile, name: str) -> bytes | None:
    try:
        info = archive.getinfo(name)
    except KeyError:
        return None
    if info.file_size > _MAX_FILE_BYTES:
        raise StationFileError(f"{name}: larger than {_MAX_FILE_BYTES // 2**20} MB")
    return archive.read(info)


def _hsds_tables(read: Callable[[str], bytes | None], descriptor: str) -> dict[str, _Table]:
    paths = _datapackage_paths(read, descriptor)
    tables: dict[str, _Table] = {}
    for key, candidates in _HSDS_FILES.items():
        for name in ([paths[key]] if key in paths else []) + list(candidates):
            data = read(name)
            if data is not None:
                tables[key] = _Table(name, list(_csv_dicts(_decode(data, name), name)))
                break
    if "location" not in tables:
        raise StationFileError("HSDS package without a locations table (locations.csv)")
    return tables


def _datapackage_paths(read: Callable[[str], bytes | None], descriptor: str) -> dict[str, str]:
    """Table → path from datapackage.json resources (matched by resource name), kept inside the package folder."""
    data = read(descriptor)
    if data is None:
        return {}
    package = _parse_json(_decode(data, descriptor), descriptor)
    resources = package.get("resources") if isinstance(package, dict) else None
    paths: dict[str, str] = {}
    for resource in resources if isinstance(resources, list) else []:
        if not isinstance(resource, dict) or not isinstance(resource.get("path"), str):
            continue
        name = str(resource.get("name", "")).lower()
        key = _HSDS_RESOURCE_ALIASES.get(name, name)
        relative = PurePosixPath(resource["path"])
        if key in _HSDS_FILES and not relative.is_absolute() and ".." not in relative.parts:
            paths.setdefault(key, str(relative))
    return paths


def _hsds_rows(tables: dict[str, _Table]) -> Iterator[tuple[str, RawRow]]:
    package = _HsdsPackage(tables)
    locations = tables["location"]
    for line, location in locations.rows:
        if location.get("location_type", "").strip().lower() == "virtual":
            continue  # online-only services: nowhere to walk to
        where = f"{locations.file} line {line}"
        try:
            yield where, package.fields(location)
        except InvalidRow as exc:
            yield where, exc


class _HsdsPackage:
    """Lookups across the package's tables, indexed once, to assemble one station per HSDS location."""

    def __init__(self, tables: dict[str, _Table]) -> None:
        def rows(key: str) -> list[dict[str, str]]:
            return list(tables[key].dicts()) if key in tables else []

        self.organizations = {row.get("id", ""): row.get("name", "").strip() for row in rows("organization")}
        self.services = {row.get("id", ""): row for row in rows("service")}
        self.categories = _hsds_categories(rows)
        links = rows("service_at_location")
        self.links_at = _index(links, "location_id")
        self.service_ids_at: dict[str, list[str]] = defaultdict(list)
        for link in links:
            self.service_ids_at[link.get("location_id", "")].append(link.get("service_id", ""))
        for service in self.services.values():  # HSDS 1.0 put location_id on the service itself
            if service.get("location_id"):
                self.service_ids_at[service["location_id"]].append(service.get("id", ""))
        addresses = [r for r in rows("physical_address") if r.get("address_type", "physical") != "postal"]
        self.addresses_at = _index(addresses, "location_id")
        self.phones = {column: _index(rows("phone"), column) for column in _OWNER_COLUMNS}
        schedules = rows("schedule") + rows("regular_schedule")
        self.schedules = {column: _index(schedules, column) for column in _OWNER_COLUMNS}

    def fields(self, location: dict[str, str]) -> dict[str, Any]:
        location_id = location.get("id", "").strip()
        service_ids = dict.fromkeys(self.service_ids_at.get(location_id, []))
        services = [self.services[sid] for sid in service_ids if sid in self.services]
        owners = _Owners(
            location_id,
            [link.get("id", "") for link in self.links_at.get(location_id, [])],
            [service.get("id", "") for service in services],
            [service.get("organization_id", "") for service in services],
        )
        name, name_en = _split_names(location.get("name", ""), location.get("alternate_name", ""))
        return {
            "id": location_id,
            "name": name,
            "name_en": name_en,
            "lat": location.get("latitude"),
            "lon": location.get("longitude"),
            "address": _hsds_address(self.addresses_at.get(location_id, [])),
            "phone": self._phone(owners),
            "operator": self._operator(location, services),
            "amenities": sorted(self._amenities(services)),
            "opening_hours": self._hours(owners),
            "status": _hsds_status(services),
            "alert": next((s["alert"].strip() for s in services if s.get("alert", "").strip()), None),
        }

    def _phone(self, owners: _Owners) -> str | None:
        """The location's own number first, then a service's there, then the organisation's."""
        for column, ids in owners.by_priority():
            for phone in _rows_for(self.phones[column], ids):
                number = phone.get("number", "").strip().strip('"')  # HSDS 3 examples quote the number
                if number:
                    return number
        return None

    def _operator(self, location: dict[str, str], services: list[dict[str, str]]) -> str | None:
        org_ids = [location.get("organization_id", "")] + [s.get("organization_id", "") for s in services]
        return next((self.organizations[o] for o in org_ids if self.organizations.get(o)), None)

    def _amenities(self, services: list[dict[str, str]]) -> set[str]:
        found: set[str] = set()
        for service in services:
            labels = [service.get("name", ""), service.get("alternate_name", "")]
            labels += self.categories.get(service.get("id", ""), [])
            text = " / ".join(labels)
            found.update(amenity for amenity, pattern in _SERVICE_PATTERNS if pattern.search(text))
        return found

    def _hours(self, owners: _Owners) -> str | None:
        """Schedules for this location (or its service-at-location links) win; else the services' general ones."""
        here = _rows_for(self.schedules["location_id"], [owners.location_id])
        here += _rows_for(self.schedules["service_at_location_id"], owners.link_ids)
        general = [
            row
            for row in _rows_for(self.schedules["service_id"], owners.service_ids)
            if not row.get("location_id") and not row.get("service_at_location_id")
        ]
        unique = list({id(row): row for row in here}.values())  # a row may name both the location and its link
        return schedules_to_opening_hours(unique or general)


# Columns through which HSDS phones and schedules hang off a location, most specific first.
_OWNER_COLUMNS = ("location_id", "service_at_location_id", "service_id", "organization_id")


@dataclass(frozen=True, slots=True)
class _Owners:
    location_id: str
    link_ids: list[str]
    service_ids: list[str]
    organization_ids: list[str]

    def by_priority(self) -> Iterator[tuple[str, list[str]]]:
        ids = ([self.location_id], self.link_ids, self.service_ids, self.organization_ids)
        return zip(_OWNER_COLUMNS, ids, strict=True)


def _index(rows: list[dict[str, str]], column: str) -> dict[str, list[dict[str, str]]]:
    index: dict[str, list[dict[str, str]]] = defaultdict(list)
    for row in rows:
        key = row.get(column, "").strip()
        if key:
            index[key].append(row)
    return index


def _rows_for(index: Mapping[str, list[dict[str, str]]], ids: Iterable[str]) -> list[dict[str, str]]:
    return [row for key in dict.fromkeys(ids) if key for row in index.get(key, [])]


def _hsds_address(rows: list[dict[str, str]]) -> str | None:
    if not rows:
        return None
    row = rows[0]
    street = ", ".join(filter(None, (row.get(f"address_{n}", "").strip() for n in (1, 2, 3, 4))))
    city, region = row.get("city", "").strip(), row.get("region", "").strip()
    if _CJK.search(street + city):  # 常州市 + 武进区 + 湖塘镇…, without repeating what the street line holds
        prefix = "".join(part for part in (city, region) if part not in street)
        return (prefix + street) or None
    return ", ".join(filter(None, (street, city, row.get("state_province", "").strip()))) or None


def _hsds_categories(rows: Callable[[str], list[dict[str, str]]]) -> dict[str, list[str]]:
    """Service id → category names, from HSDS 2 (services_taxonomy + taxonomy) or HSDS 3 (attribute + term)."""
    names = {r.get("id", ""): r.get("name", "") for r in rows("taxonomy") + rows("taxonomy_term")}
    categories: dict[str, list[str]] = defaultdict(list)
    for link in rows("service_taxonomy"):
        categories[link.get("service_id", "")].append(names.get(link.get("taxonomy_id", ""), ""))
    for link in rows("attribute"):  # link_id may name other entities too; only service ids are ever looked up
        categories[link.get("link_id", "")].append(names.get(link.get("taxonomy_term_id", ""), ""))
    return categories


def _split_names(name: str, alternate: str) -> tuple[str | None, str | None]:
    """Chinese text goes to `name`, Latin to `name_en`; with no Chinese at all, keep HSDS's own order."""
    name, alternate = name.strip(), alternate.strip()
    if _CJK.search(alternate) and not _CJK.search(name):
        name, alternate = alternate, name
    return name or None, alternate or None


def _hsds_status(services: list[dict[str, str]]) -> str | None:
    """Open if any service there is active; temporarily closed if one is paused; closed when all have ended."""
    statuses: set[str] = set()
    for service in services:
        value = service.get("status", "").strip()
        if not value:
            continue
        if value.lower() not in _HSDS_STATUS:
            raise InvalidRow(f"unknown status: {value!r} (service {service.get('id', '?')})")
        statuses.add(_HSDS_STATUS[value.lower()])
    for status in (StationStatus.OPEN, StationStatus.TEMPORARILY_CLOSED, StationStatus.CLOSED):
        if status.value in statuses:
            return status.value
    return None


def schedules_to_opening_hours(rows: Sequence[Mapping[str, str]]) -> str | None:
    """HSDS schedule rows (RRULE-style `freq`/`byday`, or 1.x/2.x `weekday`) → an OSM opening_hours string.

    Times are taken as the station's local wall-clock time (a 'Z' or offset suffix is dropped): HSDS publishers
    routinely label local times as UTC. Validity dates are ignored, so the result does not depend on today.
    """
    week: list[set[tuple[str, str]]] = [set() for _ in _OSM_DAYS]
    monthly: list[str] = []
    for row in rows:
        span = _schedule_span(row)
        if span is None:
            continue
        freq = row.get("freq", "").strip().upper() or "WEEKLY"
        if freq == "MONTHLY":
            monthly.extend(f"{day} {span[0]}-{span[1]}" for day in _monthly_days(row.get("byday", "")))
            continue
        for day in _schedule_days(row, freq):
            week[day].add(span)
    rules = _week_rules(week)
    if not rules and not monthly:
        return None
    weekly = "; ".join(rules)
    return ", ".join(filter(None, [weekly, *monthly]))  # "," adds to earlier rules instead of replacing them


def _schedule_span(row: Mapping[str, str]) -> tuple[str, str] | None:
    opens, closes = row.get("opens_at", "").strip(), row.get("closes_at", "").strip()
    if not opens and not closes:
        return None  # a schedule without times (only a description): nothing to convert
    if not (opens and closes):
        raise InvalidRow(f"unparseable opening hours: schedule {row.get('id', '?')} lacks opens_at or closes_at")
    start, end = _clock(opens), _clock(closes)
    if end in ("00:00", "23:59"):  # HSDS's way of writing "until midnight" / 24 h
        end = "24:00"
    return start, end


def _clock(value: str) -> str:
    match = _TIME.match(value)
    if not match or int(match[1]) > 24 or int(match[2]) > 59:
        raise InvalidRow(f"unparseable opening hours: bad time {value!r}")
    return f"{int(match[1]):02d}:{match[2]}"


def _schedule_days(row: Mapping[str, str], freq: str) -> list[int]:
    if freq not in ("WEEKLY", "DAILY"):
        raise InvalidRow(f"unparseable opening hours: schedule freq {freq} is not supported")
    if row.get("interval", "").strip() not in ("", "1"):
        raise InvalidRow("unparseable opening hours: schedules repeating every few weeks are not supported")
    weekday = row.get("weekday", "").strip().lower()
    if weekday:
        return [_weekday(weekday)]
    byday = row.get("byday", "").strip().upper()
    if freq == "DAILY" or not byday:
        return list(range(7))
    days = []
    for part in byday.split(","):
        if part.strip() not in _ICAL_DAYS:
            raise InvalidRow(f"unparseable opening hours: byday {byday!r}")
        days.append(_ICAL_DAYS[part.strip()])
    return days


def _weekday(value: str) -> int:
    """HSDS 1.x/2.x `weekday`: a name, an iCal code, or 1-7 counting from Monday (ISO 8601)."""
    if value.isdigit() and 1 <= int(value) <= 7:
        return int(value) - 1
    if value.upper() in _ICAL_DAYS:
        return _ICAL_DAYS[value.upper()]
    for index, name in enumerate(_DAY_NAMES):
        if len(value) >= 3 and name.startswith(value):
            return index
    raise InvalidRow(f"unparseable opening hours: weekday {value!r}")


def _monthly_days(byday: str) -> list[str]:
    """'1SA,-1FR' → ['Sa[1]', 'Fr[-1]'] (the nth weekday of the month)."""
    days = []
    for part in byday.upper().split(","):
        match = re.fullmatch(r"\s*([+-]?[1-5])(MO|TU|WE|TH|FR|SA|SU)\s*", part)
        if not match:
            raise InvalidRow(f"unparseable opening hours: monthly byday {byday!r}")
        days.append(f"{_OSM_DAYS[_ICAL_DAYS[match[2]]]}[{int(match[1])}]")
    return days


def _week_rules(week: list[set[tuple[str, str]]]) -> list[str]:
    """Group days with identical hours: 'Mo-Fr 08:00-20:00', 'Sa,Su 09:00-17:00'; seven full days → '24/7'."""
    merged = [_merge_spans(spans) for spans in week]
    if all(spans == (("00:00", "24:00"),) for spans in merged):
        return ["24/7"]
    groups: dict[tuple[tuple[str, str], ...], list[int]] = {}
    for day, spans in enumerate(merged):
        if spans:
            groups.setdefault(spans, []).append(day)
    return [f"{_day_list(days)} {','.join(f'{a}-{b}' for a, b in spans)}" for spans, days in groups.items()]


def _merge_spans(spans: set[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    """Join overlapping same-day spans (two services 08-22 and 13-17 → 08-22); overnight spans stay as they are."""
    merged: list[tuple[str, str]] = []
    for start, end in sorted(spans):
        last = merged[-1] if merged else None
        if last and last[0] < last[1] and start < end and start <= last[1]:
            merged[-1] = (last[0], max(last[1], end))
        else:
            merged.append((start, end))
    return tuple(merged)


def _day_list(days: list[int]) -> str:
    runs: list[list[int]] = []
    for day in days:
        if runs and runs[-1][-1] == day - 1:
            runs[-1].append(day)
        else:
            runs.append([day])
    parts = []
    for run in runs:
        if len(run) >= 3:
            parts.append(f"{_OSM_DAYS[run[0]]}-{_OSM_DAYS[run[-1]]}")
        else:
            parts.extend(_OSM_DAYS[day] for day in run)
    return ",".join(parts)


# --------------------------------------------------------------------------------------------------- database


async def import_stations(session: AsyncSession, path: Path | str, *, dry_run: bool = False) -> ImportReport:
    """Read, validate and upsert a file; StationFileError when the file as a whole is unusable."""
    records, errors = read_stations(path)
    return await import_records(session, records, dry_run=dry_run, errors=errors)


async def import_records(
    session: AsyncSession,
    records: Sequence[StationData],
    *,
    dry_run: bool = False,
    errors: Sequence[RowError] = (),
) -> ImportReport:
    """Upsert by external id and commit (a dry run counts the same way but writes nothing)."""
    report = ImportReport(errors=list(errors), dry_run=dry_run)
    existing = await _stations_by_id(session, [record.id for record in records])
    for record in records:
        station = existing.get(record.id)
        if station is not None and station.as_record() == record.as_record():
            report.unchanged += 1
            continue
        if station is None:
            report.created += 1
            station = Station(external_id=record.id, lat=record.lat, lon=record.lon)
            existing[record.id] = station
        else:
            report.updated += 1
        if not dry_run:
            record.apply_to(station)
            station.updated_at = utcnow()
            session.add(station)
    if not dry_run:
        await session.commit()
        from models import station_search  # imported here: the search module is heavy (numpy, scipy)

        station_search.invalidate(session.bind)
    return report


async def _stations_by_id(session: AsyncSession, ids: list[str]) -> dict[str, Station]:
    found: dict[str, Station] = {}
    for start in range(0, len(ids), _QUERY_CHUNK):
        chunk = ids[start : start + _QUERY_CHUNK]
        result = await session.exec(select(Station).where(col(Station.external_id).in_(chunk)))
        found.update((station.external_id, station) for station in result.all())
    return found


async def export_stations(session: AsyncSession, fmt: ExportFormat) -> str:
    """All stations, sorted by id so exports diff cleanly; importing the output gives the same stations back."""
    result = await session.exec(select(Station).order_by(col(Station.external_id)))
    records = [station.as_record() for station in result.all()]
    if fmt == "csv":
        return records_to_csv(records)
    if fmt == "geojson":
        return records_to_geojson(records)
    raise ValueError(f"unknown export format {fmt!r} (csv or geojson)")


def records_to_csv(records: Iterable[Mapping[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(EXPORT_COLUMNS)
    for record in records:
        writer.writerow([_csv_cell(record.get(column)) for column in EXPORT_COLUMNS])
    return buffer.getvalue()


def _csv_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | tuple):
        return ";".join(str(item) for item in value)
    return repr(value) if isinstance(value, float) else str(value)  # repr: the shortest text that reads back equal


def records_to_geojson(records: Iterable[Mapping[str, Any]]) -> str:
    """Properties use the CSV column names; lat/lon live only in the geometry, so the two cannot disagree."""
    features = [
        {
            "type": "Feature",
            "id": record["id"],
            "geometry": {"type": "Point", "coordinates": [record["lon"], record["lat"]]},
            "properties": {column: record.get(column) for column in EXPORT_COLUMNS if column not in ("lat", "lon")},
        }
        for record in records
    ]
    collection = {"type": "FeatureCollection", "features": features}
    return json.dumps(collection, ensure_ascii=False, indent=2) + "\n"
