"""Station import/export: every source format, bad-row reporting, upserts, dry runs and lossless round trips."""

from __future__ import annotations

import json
import shutil
import zipfile
from collections.abc import AsyncIterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func
from sqlmodel import select

from bot.database import Database
from models.station_import import (
    CSV_COLUMNS,
    DATA_DIR,
    DEMO_FILE,
    EXPORT_COLUMNS,
    InvalidRow,
    StationData,
    StationFileError,
    export_stations,
    import_stations,
    read_stations,
    schedules_to_opening_hours,
    validate_record,
)
from models.stations import AMENITIES, Station

SAMPLES = DATA_DIR / "samples"
BAD_ROWS = SAMPLES / "stations_bad_rows.csv"
OSM = SAMPLES / "stations_osm.geojson"
HSDS = SAMPLES / "hsds"


async def _database(path: Path) -> Database:
    database = Database(f"sqlite+aiosqlite:///{path}")
    await database.upgrade()
    return database


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = await _database(tmp_path / "s.db")
    yield database
    await database.dispose()


async def _stations(db: Database) -> dict[str, Station]:
    async with db.session() as session:
        return {s.external_id: s for s in (await session.exec(select(Station))).all()}


async def _count(db: Database) -> int:
    async with db.session() as session:
        return (await session.exec(select(func.count()).select_from(Station))).one()


def _by_id(path: Path) -> dict[str, StationData]:
    records, errors = read_stations(path)
    assert errors == []
    return {record.id: record for record in records}


# ------------------------------------------------------------------------------------------------ CSV


async def test_bad_rows_are_named_and_the_rest_imported(db: Database) -> None:
    async with db.session() as session:
        report = await import_stations(session, BAD_ROWS)
    assert not report.ok
    assert (report.created, report.updated, report.unchanged) == (5, 0, 0)
    assert [error.where for error in report.errors] == ["line 5", "line 8", "line 10"]  # line 3's alert spans 2 lines
    reasons = [error.reason for error in report.errors]
    assert reasons[0].startswith("bad coordinates")
    assert reasons[1] == "unknown amenity: sauna"
    assert reasons[2].startswith("unparseable opening hours")
    assert set(await _stations(db)) == {"t-01", "t-02", "t-04", "t-06", "t-08"}


async def test_csv_fields_are_kept_verbatim(db: Database) -> None:
    async with db.session() as session:
        await import_stations(session, BAD_ROWS)
    station = (await _stations(db))["t-02"]
    assert station.name == "<b>骑手之家</b> 🛵 & Co"  # escaping is the renderer's job, not the importer's
    assert station.name_en == 'Riders\' "Home", Hutang'
    assert station.address == "常州市武进区湖塘镇花园街2号, 东门"
    assert station.alert == "热水器维修中\nwater heater under repair"
    assert station.status == "temporarily_closed"
    assert station.amenities == ["hot_water", "phone_charging"]
    assert station.languages == ["zh", "en"]
    assert (station.lat, station.lon) == (31.7201, 119.957)
    assert station.opening_hours == "Mo-Fr 08:00-20:00; Sa,Su 09:00-17:00"
    assert station.timezone is None and station.step_free is None
    assert (await _stations(db))["t-06"].opening_hours == "Oct 15-Apr 15: 00:00-24:00"


async def test_demo_file_imports_cleanly(db: Database) -> None:
    async with db.session() as session:
        report = await import_stations(session, DEMO_FILE)
    assert report.ok and report.created == 40
    stations = await _stations(db)
    daqing = [s for s in stations.values() if s.lat > 45]
    changzhou = [s for s in stations.values() if s.lat < 35]
    assert len(daqing) == 16 and len(changzhou) == 24
    assert all("heating" in s.amenities for s in daqing)
    assert all(s.timezone == "Asia/Shanghai" for s in stations.values())
    assert {s.status for s in stations.values()} == {"open", "temporarily_closed", "closed"}
    assert any(s.opening_hours is None for s in stations.values())
    assert all(s.amenity_bits and s.amenities for s in stations.values())
    assert all(s.alert for s in stations.values() if s.status != "open")


def test_csv_without_coordinate_columns_is_a_file_error(tmp_path: Path) -> None:
    path = tmp_path / "s.csv"
    path.write_text("id,name\nx,y\n", encoding="utf-8")
    with pytest.raises(StationFileError, match="lat, lon"):
        read_stations(path)


def test_gb18030_csv_from_chinese_excel(tmp_path: Path) -> None:
    path = tmp_path / "excel.csv"
    path.write_bytes("id,name,lat,lon\ng-1,湖塘驿站,31.72,119.95\n".encode("gb18030"))
    assert _by_id(path)["g-1"].name == "湖塘驿站"


def test_duplicate_ids_in_one_file(tmp_path: Path) -> None:
    path = tmp_path / "dup.csv"
    path.write_text("id,lat,lon\na,31.7,119.9\na,31.8,119.9\n", encoding="utf-8")
    records, errors = read_stations(path)
    assert [r.lat for r in records] == [31.7]
    assert [(e.where, e.reason) for e in errors] == [("line 3", "duplicate id 'a' (first at line 2)")]


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ({"lat": "31.7", "lon": "119.9"}, "missing id"),
        ({"id": " ", "lat": "31.7", "lon": "119.9"}, "missing id"),
        ({"id": "a", "lat": "nan", "lon": "119.9"}, "bad coordinates: lat is not finite"),
        ({"id": "a", "lat": "", "lon": "119.9"}, "bad coordinates: missing lat"),
        ({"id": "a", "lat": "北纬31", "lon": "119.9"}, "bad coordinates: lat '北纬31' is not a number"),
        ({"id": "a", "lat": "119.9", "lon": "31.7"}, "(lat and lon swapped?)"),
        ({"id": "a", "lat": "0", "lon": "0.0"}, "bad coordinates: 0, 0"),
        ({"id": "a", "lat": "31.7", "lon": "119.9", "status": "busy"}, "unknown status: 'busy'"),
        ({"id": "a", "lat": "31.7", "lon": "119.9", "timezone": "Asia/Beijing"}, "unknown time zone"),
        ({"id": "a", "lat": "31.7", "lon": "119.9", "languages": "zh;english!"}, "bad language code"),
        ({"id": "a", "lat": "31.7", "lon": "119.9", "step_free": "maybe"}, "step_free: expected yes or no"),
        ({"id": "a", "lat": "31.7", "lon": "119.9", "last_verified": "3 Dec"}, "last_verified: bad date"),
        ({"id": "a", "lat": "31.7", "lon": "119.9", "name": "x" * 201}, "name too long"),
    ],
)
def test_validation_reasons(raw: dict[str, Any], reason: str) -> None:
    with pytest.raises(InvalidRow) as caught:
        validate_record(raw)
    assert reason in caught.value.reason


def test_every_problem_of_a_row_is_reported_at_once() -> None:
    with pytest.raises(InvalidRow) as caught:
        validate_record({"id": "a", "lat": 95, "lon": 10, "amenities": "sauna", "opening_hours": "whenever"})
    assert caught.value.reason.count(";") == 2


def test_lenient_spellings_are_normalised() -> None:
    raw = {"id": 7, "lat": 31.7, "lon": "119.9", "status": "Temporarily closed", "amenities": "Toilet, hot_water"}
    data = validate_record({**raw, "step_free": "是", "last_verified": "2024-05", "opening_hours": " 24/7 "})
    assert (data.id, data.status, data.amenities) == ("7", "temporarily_closed", ("hot_water", "toilet"))
    assert (data.step_free, data.last_verified, data.opening_hours) == (True, date(2024, 5, 1), "24/7")


# ------------------------------------------------------------------------------------------------ GeoJSON / OSM


def test_osm_tags_map_to_station_fields() -> None:
    stations = _by_id(OSM)
    fountain = stations["node/1001"]
    assert (fountain.lat, fountain.lon) == (31.7243, 119.9571)  # GeoJSON stores [lon, lat]
    assert fountain.amenities == ("drinking_water",)
    assert (fountain.name, fountain.name_en) == ("湖塘公园直饮水点", "Hutang Park Drinking Fountain")
    assert (fountain.step_free, fountain.last_verified) == (True, date(2024, 9, 1))

    toilet = stations["way/2002"]
    assert toilet.amenities == ("toilet",) and toilet.accessible_toilet is True
    assert toilet.address == "常州市武进区人民中路200号"
    assert (toilet.operator, toilet.opening_hours) == ("武进区城市管理局", "Mo-Su 06:00-22:00")

    relief = stations["node/3003"]
    assert set(relief.amenities) == {"lodging", "heating", "shower"}
    assert (relief.phone, relief.address) == ("0459-63831103", "大庆市萨尔图区纬二路15号")

    clinic = stations["node/5005"]
    assert set(clinic.amenities) == {"medical_care", "first_aid", "wifi", "heating"}
    assert clinic.step_free is None  # wheelchair=limited is not a yes

    kiosk = stations["node/7007"]
    assert set(kiosk.amenities) == {"drinking_water", "phone_charging", "microwave", "air_conditioning", "first_aid"}
    assert kiosk.last_verified == date(2023, 6, 15)


def test_osm_bus_shelter_is_not_lodging() -> None:
    shelter = _by_id(OSM)["node/4004"]
    assert shelter.amenities == ()
    assert validate_record({"id": "s", "lat": 31.7, "lon": 119.9}).amenities == ()


def test_geojson_own_properties_and_id_property_win() -> None:
    own = _by_id(OSM)["rider-home-6"]  # "id" property beats the feature id node/6006
    assert own.name == "<i>骑手之家</i> 🛵" and own.name_en == "Riders' Home <3"
    assert own.amenities == ("hot_water", "rest_area", "phone_charging")
    assert (own.status, own.alert) == ("temporarily_closed", "食品箱今日已空 / food box empty today")
    assert (own.languages, own.timezone, own.step_free) == (("zh", "en"), "Asia/Shanghai", True)


def test_geojson_bad_features_are_numbered(tmp_path: Path) -> None:
    def feature(geometry: Any, **properties: Any) -> dict[str, Any]:
        return {"type": "Feature", "geometry": geometry, "properties": properties}

    features = [
        feature({"type": "Point", "coordinates": [119.95, 31.7]}, id="ok"),
        feature({"type": "Point", "coordinates": [31.7, 119.95]}, id="lat-first"),
        feature({"type": "LineString", "coordinates": [[119.9, 31.7], [119.95, 31.7]]}, id="line"),
        feature({"type": "Point", "coordinates": [119.95, 31.7]}, name="no id"),
        feature({"type": "Point", "coordinates": [119.95, 31.7]}, id="x", amenities=["spa"]),
    ]
    path = tmp_path / "s.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}), encoding="utf-8")
    records, errors = read_stations(path)
    assert [r.id for r in records] == ["ok"]
    assert [e.where for e in errors] == ["feature 2", "feature 3", "feature 4", "feature 5"]
    assert "swapped" in errors[0].reason
    assert errors[1].reason == "bad coordinates: geometry must be a Point, got LineString"
    assert errors[2].reason == "missing id"
    assert errors[3].reason == "unknown amenity: spa"


def test_json_that_is_not_geojson(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    path.write_text('{"hello": 1}', encoding="utf-8")
    with pytest.raises(StationFileError):
        read_stations(path)


# ------------------------------------------------------------------------------------------------ HSDS


def _assert_hsds(stations: dict[str, StationData]) -> None:
    assert set(stations) == {"loc-hutang", "loc-daqing-relief", "loc-sartu-winter"}  # the virtual location is skipped
    hutang = stations["loc-hutang"]
    assert (hutang.name, hutang.name_en) == ("湖塘镇职工服务站", "Hutang Workers' Service Station")
    assert (hutang.lat, hutang.lon) == (31.7201, 119.9544)
    assert hutang.address == "常州市武进区湖塘镇人民中路128号"
    assert (hutang.phone, hutang.operator) == ("0519-86301234", "湖塘镇总工会")
    assert hutang.amenities == ("phone_charging", "food_box", "legal_aid")  # bicycle repair is ignored
    assert hutang.opening_hours == "Mo-Fr 08:00-22:00; Sa,Su 09:00-17:00"
    assert hutang.status == "open"

    relief = stations["loc-daqing-relief"]
    assert (relief.name, relief.name_en) == ("大庆市救助管理站", "Daqing Relief Station")  # Chinese name goes first
    assert set(relief.amenities) == {"lodging", "shower", "medical_care"}
    assert relief.opening_hours == "24/7"
    assert relief.phone == "0459-63831103"  # the organisation's number
    assert relief.address == "大庆市萨尔图区纬二路15号"

    winter = stations["loc-sartu-winter"]
    assert (winter.status, winter.alert) == ("temporarily_closed", "供暖管道检修 / heating pipes under repair")
    assert winter.opening_hours == "Mo-Su 18:00-08:00"
    assert winter.phone == "0459-63691202"  # the service's number beats the organisation's
    assert winter.amenities == ("heating",)


def test_hsds_directory_and_datapackage() -> None:
    _assert_hsds(_by_id(HSDS))
    _assert_hsds(_by_id(HSDS / "datapackage.json"))


def test_hsds_zip_with_a_nested_folder(tmp_path: Path) -> None:
    path = tmp_path / "export.zip"
    with zipfile.ZipFile(path, "w") as archive:
        for file in HSDS.iterdir():
            archive.write(file, f"hsds-export/{file.name}")
    _assert_hsds(_by_id(path))


def test_hsds_singular_file_names_without_datapackage(tmp_path: Path) -> None:
    """HSDS 3 names its tables in the singular (location.csv…)."""
    for file in HSDS.glob("*.csv"):
        singular = {"physical_addresses.csv": "address.csv", "service_at_location.csv": "service_at_location.csv"}
        shutil.copy(file, tmp_path / singular.get(file.name, file.name.replace("s.csv", ".csv")))
    _assert_hsds(_by_id(tmp_path))


async def test_hsds_bad_service_status_is_a_row_error(tmp_path: Path, db: Database) -> None:
    shutil.copytree(HSDS, tmp_path / "p")
    services = tmp_path / "p" / "services.csv"
    text = services.read_text(encoding="utf-8")
    services.write_text(text.replace(",Showers,淋浴,,,,active", ",Showers,淋浴,,,,paused"), encoding="utf-8")
    async with db.session() as session:
        report = await import_stations(session, tmp_path / "p")
    assert report.created == 2
    assert [(e.where, e.reason) for e in report.errors] == [
        ("locations.csv line 3", "unknown status: 'paused' (service svc-shower)")
    ]


def test_hsds_categories_and_regular_schedules(tmp_path: Path) -> None:
    """Older packages: regular_schedules.csv with numeric weekdays; categories via HSDS 3 attributes."""
    files = {
        "locations.csv": "id,name,latitude,longitude\nL1,Riverside Day Centre,31.78,119.95\n",
        "services.csv": "id,name,status\nS1,Drop-in,active\nS2,Counselling,inactive\n",
        "services_at_location.csv": "id,service_id,location_id\nSL1,S1,L1\nSL2,S2,L1\n",
        "attributes.csv": "id,link_id,taxonomy_term_id\nA1,S1,T1\nA2,S1,T2\n",
        "taxonomy_terms.csv": "id,name\nT1,Showers\nT2,Food Pantry\n",
        "regular_schedules.csv": "id,service_at_location_id,weekday,opens_at,closes_at\n"
        "R1,SL1,1,09:00:00,17:00:00\nR2,SL1,2,09:00:00,17:00:00\nR3,SL1,3,09:00:00,17:00:00\n",
    }
    for name, text in files.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    station = _by_id(tmp_path)["L1"]
    assert station.amenities == ("food_box", "shower")  # from categories; the location name is not matched
    assert station.opening_hours == "Mo-We 09:00-17:00"
    assert station.status == "open"  # one service still active
    assert (station.name, station.name_en) == ("Riverside Day Centre", None)


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        ([{"byday": "MO,TU", "opens_at": "08:00", "closes_at": "22:00"}], "Mo,Tu 08:00-22:00"),
        ([{"freq": "DAILY", "opens_at": "00:00", "closes_at": "23:59"}], "24/7"),
        ([{"byday": "SA,SU,MO", "opens_at": "09:00:00Z", "closes_at": "12:00:00+08:00"}], "Mo,Sa,Su 09:00-12:00"),
        (
            [
                {"byday": "MO,TU,WE,TH", "opens_at": "09:00", "closes_at": "12:00"},
                {"byday": "MO,TU,WE,TH", "opens_at": "15:00", "closes_at": "17:00"},
            ],
            "Mo-Th 09:00-12:00,15:00-17:00",
        ),
        ([{"weekday": "1", "opens_at": "9:00", "closes_at": "17:00"}], "Mo 09:00-17:00"),
        ([{"weekday": "Sunday", "opens_at": "10:00", "closes_at": "14:00"}], "Su 10:00-14:00"),
        ([{"freq": "MONTHLY", "byday": "1SA", "opens_at": "09:00", "closes_at": "17:00"}], "Sa[1] 09:00-17:00"),
        ([{"opens_at": "", "closes_at": "", "description": "call us"}], None),
    ],
)
def test_schedules_to_opening_hours(rows: list[dict[str, str]], expected: str | None) -> None:
    assert schedules_to_opening_hours(rows) == expected


@pytest.mark.parametrize(
    "row",
    [
        {"byday": "MO", "opens_at": "8am", "closes_at": "17:00"},
        {"byday": "MO", "opens_at": "08:00", "closes_at": ""},
        {"byday": "XX", "opens_at": "08:00", "closes_at": "17:00"},
        {"freq": "YEARLY", "opens_at": "08:00", "closes_at": "17:00"},
        {"byday": "MO", "interval": "2", "opens_at": "08:00", "closes_at": "17:00"},
    ],
)
def test_unconvertible_schedules(row: dict[str, str]) -> None:
    with pytest.raises(InvalidRow, match="unparseable opening hours"):
        schedules_to_opening_hours([row])


# ------------------------------------------------------------------------------------------------ database


async def test_reimport_updates_in_place(db: Database, tmp_path: Path) -> None:
    async with db.session() as session:
        await import_stations(session, DEMO_FILE)
    edited = tmp_path / "edited.csv"
    text = DEMO_FILE.read_text(encoding="utf-8")
    assert text.count("0519-86301128") == 1
    edited.write_text(text.replace("0519-86301128", "0519-86309999"), encoding="utf-8")
    async with db.session() as session:
        report = await import_stations(session, edited)
    assert (report.created, report.updated, report.unchanged) == (0, 1, 39)
    assert await _count(db) == 40
    assert (await _stations(db))["cz-001"].phone == "0519-86309999"


async def test_amenity_bits_follow_updates(db: Database, tmp_path: Path) -> None:
    path = tmp_path / "s.csv"
    path.write_text("id,lat,lon,amenities\na,31.7,119.9,toilet\n", encoding="utf-8")
    async with db.session() as session:
        await import_stations(session, path)
    path.write_text("id,lat,lon,amenities\na,31.7,119.9,lodging;toilet\n", encoding="utf-8")
    async with db.session() as session:
        await import_stations(session, path)
    station = (await _stations(db))["a"]
    assert station.amenities == ["toilet", "lodging"]
    assert station.amenity_bits == (1 << AMENITIES.index("toilet")) | (1 << AMENITIES.index("lodging"))


async def test_dry_run_writes_nothing(db: Database, tmp_path: Path) -> None:
    async with db.session() as session:
        report = await import_stations(session, BAD_ROWS, dry_run=True)
    assert report.dry_run and report.created == 5 and len(report.errors) == 3
    assert await _count(db) == 0

    async with db.session() as session:
        await import_stations(session, BAD_ROWS)
    edited = tmp_path / "edited.csv"
    edited.write_text(BAD_ROWS.read_text(encoding="utf-8").replace("湖塘测试驿站", "改名"), encoding="utf-8")
    async with db.session() as session:
        report = await import_stations(session, edited, dry_run=True)
    assert (report.created, report.updated, report.unchanged) == (0, 1, 4)
    assert (await _stations(db))["t-01"].name == "湖塘测试驿站"


@pytest.mark.parametrize(("fmt", "suffix"), [("csv", ".csv"), ("geojson", ".geojson")])
async def test_export_import_round_trip(db: Database, tmp_path: Path, fmt: Any, suffix: str) -> None:
    async with db.session() as session:
        for source in (DEMO_FILE, OSM, HSDS, BAD_ROWS):
            await import_stations(session, source)
        first = await export_stations(session, fmt)
    exported = tmp_path / f"export{suffix}"
    exported.write_text(first, encoding="utf-8")

    fresh = await _database(tmp_path / "fresh.db")
    try:
        async with fresh.session() as session:
            report = await import_stations(session, exported)
            second = await export_stations(session, fmt)
    finally:
        await fresh.dispose()
    assert report.ok and report.created == 40 + 7 + 3 + 5
    assert second == first
    assert "<b>骑手之家</b> 🛵 & Co" in first  # not escaped, not \u-encoded


async def test_export_formats(db: Database) -> None:
    async with db.session() as session:
        await import_stations(session, OSM)
        text = await export_stations(session, "csv")
        collection = json.loads(await export_stations(session, "geojson"))
    assert text.splitlines()[0] == ",".join(EXPORT_COLUMNS)
    assert EXPORT_COLUMNS[: len(CSV_COLUMNS)] == CSV_COLUMNS
    feature = next(f for f in collection["features"] if f["id"] == "rider-home-6")
    assert feature["geometry"] == {"type": "Point", "coordinates": [119.9656, 31.7168]}
    assert feature["properties"]["amenities"] == ["hot_water", "rest_area", "phone_charging"]
    assert feature["properties"]["languages"] == ["zh", "en"]
    assert set(feature["properties"]) == set(EXPORT_COLUMNS) - {"lat", "lon"}
