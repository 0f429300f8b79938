"""The nearest-station search must give exactly the brute-force answer (geodesic distance to every station).

Property tests compare `StationIndex.nearest_ids` with `naive_nearest` on generated station sets built to stress the
places a spatial index goes wrong: the antimeridian, the poles, dense clusters, rings where chord order and geodesic
order disagree, exact ties, sparse areas with a radius cut-off, selective filters. Database tests cover loading,
fetching rows, the beyond-radius fallback and index freshness.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from geographiclib.geodesic import Geodesic
from geopy.distance import geodesic
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import inspect as sa_inspect
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from bot.database import Database
from models import station_search
from models.station_search import (
    M_MIN,
    N_MAX,
    StationIndex,
    fetch_stations,
    geodesic_m,
    get_index,
    invalidate,
    naive_nearest,
    nearest,
    refresh_index,
)
from models.stations import AMENITY_BIT, Station

AT = datetime(2026, 1, 5, 3, 0, tzinfo=UTC)
FEW_AMENITIES = ("hot_water", "toilet", "shower", "lodging")
HOURS = (None, "open", "shut", "unknown")


def fake_is_open(hours: str | None, timezone: str | None, at: datetime) -> bool | None:
    """Stands in for models.hours: 'open' is open, 'shut' is not, anything else is unknown."""
    assert at == AT
    return {"open": True, "shut": False}.get(hours or "")


@dataclass
class Rec:
    id: int
    lat: float
    lon: float
    amenity_bits: int = 0
    status: str = "open"
    opening_hours: str | None = None
    timezone: str | None = None


# --- strategies ----------------------------------------------------------------------------------------------------

lats = st.floats(-90, 90, allow_nan=False)
lons = st.floats(-180, 180, allow_nan=False)
near_antimeridian = st.one_of(st.floats(179.9, 180), st.floats(-180, -179.9))
near_north_pole = st.floats(89.9, 90)
near_south_pole = st.floats(-90, -89.9)
extras = st.tuples(
    st.integers(0, 15),  # bits over FEW_AMENITIES
    st.sampled_from(["open", "open", "temporarily_closed", "closed"]),
    st.sampled_from(HOURS),
)


def build(points: Sequence[tuple[float, float]], extra: Sequence[tuple[int, str, str | None]]) -> list[Rec]:
    records = []
    for i, ((lat, lon), (bits, status, hours)) in enumerate(zip(points, extra, strict=False)):
        mask = sum(AMENITY_BIT[name] for j, name in enumerate(FEW_AMENITIES) if bits >> j & 1)
        records.append(Rec(i * 7 + 3, lat, lon, mask, status, hours))
    return records


@st.composite
def station_sets(draw: st.DrawFn, lat: st.SearchStrategy[float], lon: st.SearchStrategy[float]) -> list[Rec]:
    points = draw(st.lists(st.tuples(lat, lon), min_size=0, max_size=60))
    # Duplicated coordinates give exact ties, broken by id.
    points += draw(st.lists(st.sampled_from(points), max_size=5)) if points else []
    return build(points, draw(st.lists(extras, min_size=len(points), max_size=len(points))))


@st.composite
def searches(draw: st.DrawFn) -> dict[str, object]:
    """Search options: k, radius (None or 1 m … 20 000 km), fallback, filters."""
    radius = draw(st.one_of(st.none(), st.floats(1, 2e7), st.sampled_from([0.0, 5_000.0, 50_000.0])))
    options: dict[str, object] = {
        "k": draw(st.integers(1, 8)),
        "max_radius_m": radius,
        "fallback": draw(st.booleans()),
        "amenities": tuple(draw(st.sets(st.sampled_from(FEW_AMENITIES), max_size=2))),
    }
    if draw(st.booleans()):
        options.update(open_at=AT, is_open=fake_is_open)
    return options


def assert_same(records: list[Rec], lat: float, lon: float, options: dict[str, object]) -> list[tuple[int, float]]:
    index = StationIndex.from_records(records)
    got = index.nearest_ids(lat, lon, **options)  # type: ignore[arg-type]
    expected = naive_nearest(records, lat, lon, **options)  # type: ignore[arg-type]
    assert got == expected
    return got


PROPERTY = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# --- exactness against the brute force ------------------------------------------------------------------------------


@PROPERTY
@given(station_sets(lats, lons), lats, lons, searches())
def test_uniform_world(records: list[Rec], lat: float, lon: float, options: dict[str, object]) -> None:
    assert_same(records, lat, lon, options)


@PROPERTY
@given(
    station_sets(st.floats(31.6, 32.0), st.floats(119.8, 120.1)),
    st.floats(31.5, 32.1),
    st.floats(119.7, 120.2),
    searches(),
)
def test_dense_cluster(records: list[Rec], lat: float, lon: float, options: dict[str, object]) -> None:
    assert_same(records, lat, lon, options)


@PROPERTY
@given(station_sets(st.floats(-60, 60), near_antimeridian), st.floats(-60, 60), near_antimeridian, searches())
def test_antimeridian(records: list[Rec], lat: float, lon: float, options: dict[str, object]) -> None:
    assert_same(records, lat, lon, options)


@PROPERTY
@given(
    st.one_of(station_sets(near_north_pole, lons), station_sets(near_south_pole, lons)),
    st.one_of(near_north_pole, near_south_pole),
    lons,
    searches(),
)
def test_poles(records: list[Rec], lat: float, lon: float, options: dict[str, object]) -> None:
    assert_same(records, lat, lon, options)


@st.composite
def rings(draw: st.DrawFn) -> tuple[list[Rec], float, float]:
    """Stations at almost the same central angle from the query in every direction.

    On the ellipsoid, north-south and east-west metres per radian differ by up to 1%, so chord order and geodesic
    order disagree here: the case the safety margin exists for."""
    lat0, lon0 = draw(lats), draw(lons)
    theta = draw(st.floats(1e-6, 1.0))
    n = draw(st.integers(1, 40))
    points = []
    for _ in range(n):
        azimuth = draw(st.floats(0, 2 * math.pi))
        angle = theta * (1 + draw(st.floats(-0.012, 0.012)))
        lat1, lon1 = math.radians(lat0), math.radians(lon0)
        lat2 = math.asin(math.sin(lat1) * math.cos(angle) + math.cos(lat1) * math.sin(angle) * math.cos(azimuth))
        lon2 = lon1 + math.atan2(
            math.sin(azimuth) * math.sin(angle) * math.cos(lat1), math.cos(angle) - math.sin(lat1) * math.sin(lat2)
        )
        lon_deg = (math.degrees(lon2) + 180) % 360 - 180
        points.append((max(-90.0, min(90.0, math.degrees(lat2))), lon_deg))
    extra = draw(st.lists(extras, min_size=n, max_size=n))
    return build(points, extra), lat0, lon0


@PROPERTY
@given(rings(), searches())
def test_rings_where_chord_order_is_wrong(ring: tuple[list[Rec], float, float], options: dict[str, object]) -> None:
    records, lat, lon = ring
    assert_same(records, lat, lon, options)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1), st.sampled_from([1, 5, 10]), st.sampled_from([None, 50_000.0, 500_000.0]))
def test_larger_random_sets(seed: int, k: int, radius: float | None) -> None:
    """Hundreds of stations, so the trees have depth and the growth and ball steps do real work."""
    rng = np.random.default_rng(seed)
    n = 600
    lat = np.degrees(np.arcsin(rng.uniform(-1, 1, n)))
    lon = rng.uniform(-180, 180, n)
    # Half of them in one city, to mix dense and sparse.
    lat[: n // 2] = 31.78 + rng.normal(0, 0.2, n // 2)
    lon[: n // 2] = 119.95 + rng.normal(0, 0.2, n // 2)
    bits = rng.integers(0, 16, n).tolist()
    statuses = rng.choice(["open", "temporarily_closed", "closed"], n).tolist()
    hours = rng.choice(["open", "shut", "unknown"], n).tolist()
    points = list(zip(lat.tolist(), lon.tolist(), strict=True))
    records = build(points, list(zip(bits, statuses, hours, strict=True)))
    index = StationIndex.from_records(records)
    for qlat, qlon in [(31.78, 119.95), (float(rng.uniform(-90, 90)), float(rng.uniform(-180, 180)))]:
        for options in (
            {},
            {"amenities": ("shower",)},
            {"amenities": ("shower", "lodging")},
            {"open_at": AT, "is_open": fake_is_open},
        ):
            kwargs: dict[str, object] = {"k": k, "max_radius_m": radius, "fallback": True, **options}
            got = index.nearest_ids(qlat, qlon, **kwargs)  # type: ignore[arg-type]
            assert got == naive_nearest(records, qlat, qlon, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("radius", [None, 50_000.0, 3_000_000.0])
def test_very_selective_filter_scans_and_stays_exact(radius: float | None, monkeypatch: pytest.MonkeyPatch) -> None:
    """Only a handful of 3,000 stations are open: the k-NN query grows until a vectorised scan takes over."""
    rng = np.random.default_rng(3)
    lat = np.degrees(np.arcsin(rng.uniform(-1, 1, 3000)))
    lon = rng.uniform(-180, 180, 3000)
    records = [
        Rec(i + 1, la, lo, opening_hours="open" if i % 700 == 0 else "shut")
        for i, (la, lo) in enumerate(zip(lat.tolist(), lon.tolist(), strict=True))
    ]
    index = StationIndex.from_records(records)
    scans = []
    original = StationIndex._scan

    def counting_scan(*args: Any) -> Any:
        scans.append(1)
        return original(*args)

    monkeypatch.setattr(StationIndex, "_scan", staticmethod(counting_scan))
    for qlat, qlon in [(0.0, 0.0), (float(lat[5]), float(lon[5])), (-89.0, 179.9)]:
        options: dict[str, object] = {"max_radius_m": radius, "open_at": AT, "is_open": fake_is_open, "fallback": True}
        got = index.nearest_ids(qlat, qlon, 3, **options)  # type: ignore[arg-type]
        assert got == naive_nearest(records, qlat, qlon, 3, **options)  # type: ignore[arg-type]
    assert scans or radius is not None  # k=3 anywhere needs more than the grown k-NN queries reach


def test_chord_nearest_is_not_geodesic_nearest() -> None:
    """East of the equator a radian is 6 378 km, north of it 6 335 km: B is farther on the sphere but nearer."""
    a = Rec(1, 0.0, 1.0)  # 1° east
    b = Rec(2, 1.004, 0.0)  # 1.004° north
    index = StationIndex.from_records([a, b])
    assert index.nearest_ids(0.0, 0.0, 1, max_radius_m=None) == [(2, geodesic_m(0.0, 0.0, 1.004, 0.0))]
    assert geodesic_m(0, 0, 1.004, 0) < geodesic_m(0, 0, 0, 1)


def test_ties_are_broken_by_id() -> None:
    records = [Rec(9, 0.0, 1.0), Rec(4, 0.0, -1.0), Rec(7, 0.0, 1.0), Rec(5, 10.0, 10.0)]
    hits = StationIndex.from_records(records).nearest_ids(0.0, 0.0, 3, max_radius_m=None)
    assert [station_id for station_id, _ in hits] == [4, 7, 9]
    assert hits[0][1] == hits[1][1] == hits[2][1]


def unit(lat: float, lon: float) -> np.ndarray:
    phi, lam = math.radians(lat), math.radians(lon)
    return np.array([math.cos(phi) * math.cos(lam), math.cos(phi) * math.sin(lam), math.sin(phi)])


@settings(max_examples=300, deadline=None)
@given(lats, lons, lats, lons)
def test_geodesic_is_within_the_proved_bounds(lat1: float, lon1: float, lat2: float, lon2: float) -> None:
    """M_MIN·θ ≤ s ≤ N_MAX·θ: the inequality the exactness proof stands on (θ: central angle on the unit sphere)."""
    theta = 2 * math.asin(min(1.0, float(np.linalg.norm(unit(lat1, lon1) - unit(lat2, lon2))) / 2))
    s = geodesic_m(lat1, lon1, lat2, lon2)
    assert M_MIN * theta * (1 - 1e-9) - 1e-6 <= s <= N_MAX * theta * (1 + 1e-9) + 1e-6


def test_distance_is_geopys_geodesic() -> None:
    for a, b in [((31.78, 119.95), (31.8, 120.0)), ((0, 179.99), (0.5, -179.99)), ((89.99, 0), (89.99, 180))]:
        assert geodesic_m(*a, *b) == pytest.approx(geodesic(a, b).meters, abs=1e-6)
    assert geodesic_m(10, 20, 11, 21) == Geodesic.WGS84.Inverse(10, 20, 11, 21)["s12"]


# --- filters and edge cases -----------------------------------------------------------------------------------------


def test_closed_excluded_temporarily_closed_included() -> None:
    records = [Rec(1, 0, 0.01, status="closed"), Rec(2, 0, 0.02, status="temporarily_closed"), Rec(3, 0, 0.03)]
    index = StationIndex.from_records(records)
    assert len(index) == 2
    assert [i for i, _ in index.nearest_ids(0, 0, 5)] == [2, 3]


def test_amenity_filter_needs_every_amenity() -> None:
    both = AMENITY_BIT["shower"] | AMENITY_BIT["toilet"]
    records = [Rec(1, 0, 0.01, AMENITY_BIT["shower"]), Rec(2, 0, 0.02, both), Rec(3, 0, 0.03, AMENITY_BIT["toilet"])]
    index = StationIndex.from_records(records)
    assert [i for i, _ in index.nearest_ids(0, 0, 5, amenities=["shower", "toilet"])] == [2]
    assert [i for i, _ in index.nearest_ids(0, 0, 5, amenities=["shower"])] == [1, 2]
    assert index.nearest_ids(0, 0, 5, amenities=["lodging"]) == []  # nobody has it


def test_radius_and_fallback() -> None:
    records = [Rec(1, 0, 1.0), Rec(2, 0, 2.0)]  # 111 km and 223 km east
    index = StationIndex.from_records(records)
    assert index.nearest_ids(0, 0, 5, max_radius_m=50_000) == []
    far = index.nearest_ids(0, 0, 5, max_radius_m=50_000, fallback=True)
    assert [i for i, _ in far] == [1] and far[0][1] > 50_000
    assert [i for i, _ in index.nearest_ids(0, 0, 5, max_radius_m=150_000)] == [1]
    assert StationIndex.from_records([]).nearest_ids(0, 0, 5, fallback=True) == []


def test_open_filter_uses_the_predicate_once_per_schedule() -> None:
    calls: list[tuple[str | None, str | None]] = []

    def is_open(hours: str | None, tz: str | None, at: datetime) -> bool | None:
        calls.append((hours, tz))
        return fake_is_open(hours, tz, at)

    records = [Rec(i, 0, 0.001 * i, opening_hours=HOURS[i % 4], timezone="Asia/Shanghai") for i in range(1, 41)]
    hits = StationIndex.from_records(records).nearest_ids(0, 0, 5, open_at=AT, is_open=is_open)
    assert [i for i, _ in hits] == [1, 5, 9, 13, 17]  # only 'open' passes; unknown (None) does not
    assert len(calls) == len(set(calls))


@pytest.mark.parametrize(
    ("lat", "lon", "k", "extra"),
    [
        (math.nan, 0.0, 5, {}),
        (0.0, math.inf, 5, {}),
        (90.0001, 0.0, 5, {}),
        (0.0, -180.0001, 5, {}),
        (0.0, 0.0, 0, {}),
        (0.0, 0.0, 5, {"amenities": ["jacuzzi"]}),
        (0.0, 0.0, 5, {"open_at": AT}),
        (0.0, 0.0, 5, {"max_radius_m": -1.0}),
        (0.0, 0.0, 5, {"max_radius_m": math.nan}),
    ],
)
def test_invalid_input(lat: float, lon: float, k: int, extra: dict[str, object]) -> None:
    index = StationIndex.from_records([Rec(1, 0, 0)])
    with pytest.raises(ValueError):
        index.nearest_ids(lat, lon, k, **extra)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        naive_nearest([Rec(1, 0, 0)], lat, lon, k, **extra)  # type: ignore[arg-type]


def test_extreme_coordinates_are_accepted() -> None:
    records = [Rec(1, 90, 0), Rec(2, -90, 180), Rec(3, 0, -180), Rec(4, 0, 180)]
    index = StationIndex.from_records(records)
    for lat, lon in [(90, -180), (-90, 0), (0, 180), (0, -180)]:
        assert index.nearest_ids(lat, lon, 4, max_radius_m=None) == naive_nearest(
            records, lat, lon, 4, max_radius_m=None
        )


# --- with a database ------------------------------------------------------------------------------------------------


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = Database(f"sqlite+aiosqlite:///{tmp_path}/s.db")
    await database.upgrade()
    yield database
    await database.dispose()


def station(external_id: str, lat: float, lon: float, amenities: Sequence[str] = (), **fields: Any) -> Station:
    row = Station(external_id=external_id, lat=lat, lon=lon, **fields)
    row.set_amenities(list(amenities))
    return row


async def add(db: Database, *rows: Station) -> None:
    async with db.session() as session:
        session.add_all(rows)
        await session.commit()


@pytest.mark.parametrize("driver_fast_path", [True, False], ids=["aiosqlite-fast-path", "sqlalchemy"])
async def test_nearest_fetches_rows_and_matches_naive(
    db: Database, driver_fast_path: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not driver_fast_path:  # the path every other driver takes

        async def no_fast_path(connection: object) -> None:
            return None

        monkeypatch.setattr(station_search, "_aiosqlite_fetchall", no_fast_path)
    rng = np.random.default_rng(7)
    rows = [
        station(
            f"s{i}",
            float(31.78 + rng.normal(0, 0.3)),
            float(119.95 + rng.normal(0, 0.3)),
            [name for name in FEW_AMENITIES if rng.uniform() < 0.4],
            status=str(rng.choice(["open", "open", "temporarily_closed", "closed"])),
        )
        for i in range(300)
    ]
    await add(db, *rows)
    async with db.session() as session:
        index = await get_index(session)
        stored = (await session.exec(select(Station))).all()
        for lat, lon, amenities in [(31.78, 119.95, ()), (31.5, 120.2, ("shower",)), (40.0, 116.4, ("lodging",))]:
            result = await nearest(session, index, lat, lon, 5, amenities=amenities)
            expected = naive_nearest(stored, lat, lon, 5, amenities=amenities, fallback=True)
            assert [(hit.station.id, hit.distance_m) for hit in result.hits] == expected
            assert result.beyond_radius == (lat == 40.0)  # Beijing is 900 km from the cluster
            for hit in result.hits:
                assert hit.station.status != "closed"
                assert hit.temporarily_closed == (hit.station.status == "temporarily_closed")
                assert set(amenities) <= set(hit.station.amenities)


@pytest.mark.parametrize("driver_fast_path", [True, False], ids=["aiosqlite-fast-path", "sqlalchemy"])
async def test_fetching_many_rows_is_chunked(
    db: Database, driver_fast_path: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """More ids than one statement may bind on some builds and drivers (SQLite default 32,766; asyncpg 32,767)."""
    if not driver_fast_path:

        async def no_fast_path(connection: object) -> None:
            return None

        monkeypatch.setattr(station_search, "_aiosqlite_fetchall", no_fast_path)
    await add(db, *(station(f"s{i}", 0.0, i * 0.001) for i in range(20)))
    async with db.session() as session:
        fetched = await station_search.fetch_stations(session, list(range(1, 40_000)))
    assert sorted(fetched) == list(range(1, 21))


async def test_beyond_radius_gives_the_single_nearest(db: Database) -> None:
    await add(
        db, station("far", 40.0, 116.4), station("farther", 45.0, 126.6), station("gone", 31.8, 119.9, status="closed")
    )
    async with db.session() as session:
        result = await nearest(session, await get_index(session), 31.78, 119.95, 5, max_radius_m=50_000)
    assert result.beyond_radius
    assert [hit.station.external_id for hit in result.hits] == ["far"]
    assert result.hits[0].distance_m > 50_000


async def test_empty_table(db: Database) -> None:
    async with db.session() as session:
        index = await get_index(session)
        result = await nearest(session, index, 31.78, 119.95)
    assert len(index) == 0
    assert result.hits == [] and not result.beyond_radius


async def test_open_filter_through_nearest(db: Database) -> None:
    await add(
        db,
        station("shut", 31.78, 119.951, opening_hours="shut"),
        station("open", 31.78, 119.952, opening_hours="open", status="temporarily_closed"),
        station("unknown", 31.78, 119.953),
    )
    async with db.session() as session:
        index = await get_index(session)
        result = await nearest(session, index, 31.78, 119.95, open_at=AT, is_open=fake_is_open)
    assert [(hit.station.external_id, hit.temporarily_closed) for hit in result.hits] == [("open", True)]


async def test_invalidate_after_insert(db: Database) -> None:
    await add(db, station("a", 31.8, 120.0))
    async with db.session() as session:
        first = await get_index(session)
        assert await get_index(session) is first  # cached
    await add(db, station("b", 31.78, 119.95))
    invalidate(db.engine)
    async with db.session() as session:
        second = await get_index(session)
        assert second is not first and len(second) == 2
        result = await nearest(session, second, 31.78, 119.95, 1)
    assert result.hits[0].station.external_id == "b"


async def test_changes_by_another_process_are_noticed(db: Database) -> None:
    """No invalidate(): the periodic fingerprint check, run in the background, finds the status change."""
    await add(db, station("a", 31.8, 120.0), station("b", 31.9, 120.0, status="closed"))
    async with db.session() as session:
        first = await get_index(session)
        assert await refresh_index(session) is first  # unchanged fingerprint: no rebuild
    async with db.session() as session:
        b = (await session.exec(select(Station).where(col(Station.external_id) == "b"))).one()
        b.status = "open"  # updated_at deliberately not bumped
        await session.commit()
    async with db.session() as session:
        assert await get_index(session, check_interval_s=3600) is first  # not due yet
        assert await get_index(session, check_interval_s=0) is first  # due: checked in the background, no waiting
        for _ in range(500):
            second = await get_index(session, check_interval_s=3600)
            if second is not first:
                break
            await asyncio.sleep(0.01)
    assert second is not first and len(second) == 2


async def test_stale_index_never_shows_a_closed_station(db: Database) -> None:
    await add(db, station("a", 31.78, 119.951), station("b", 31.78, 119.952), station("c", 31.78, 119.953))
    async with db.session() as session:
        index = await get_index(session, check_interval_s=3600)
    async with db.session() as session:
        a = (await session.exec(select(Station).where(col(Station.external_id) == "a"))).one()
        a.status = "closed"
        await session.commit()
    async with db.session() as session:
        result = await nearest(session, index, 31.78, 119.95, 2)
        assert [hit.station.external_id for hit in result.hits] == ["b", "c"]
        assert index.stale  # so the next get_index rebuilds
        fresh = await get_index(session, check_interval_s=3600)
    assert fresh is not index and len(fresh) == 2


async def test_concurrent_first_use_builds_once(db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    await add(db, station("a", 0, 0))
    loads = []
    original = StationIndex.load.__func__  # type: ignore[attr-defined]

    async def counting_load(cls: type[StationIndex], session: AsyncSession) -> StationIndex:
        loads.append(1)
        return await original(cls, session)

    monkeypatch.setattr(StationIndex, "load", classmethod(counting_load))

    async def one() -> StationIndex:
        async with db.session() as session:
            return await get_index(session)

    indexes = await asyncio.gather(*(one() for _ in range(5)))
    assert len(loads) == 1 and all(index is indexes[0] for index in indexes)
    invalidate()  # every database
    assert await one() is not indexes[0] and len(loads) == 2


async def test_one_index_per_database(db: Database, tmp_path: Path) -> None:
    other = Database(f"sqlite+aiosqlite:///{tmp_path}/other.db")
    await other.upgrade()
    try:
        await add(db, station("a", 0, 0))
        async with db.session() as session, other.session() as other_session:
            assert len(await get_index(session)) == 1
            assert len(await get_index(other_session)) == 0
    finally:
        await other.dispose()


async def test_fetched_rows_equal_orm_rows_and_belong_to_the_session(db: Database) -> None:
    """The aiosqlite fast path must build exactly what an ORM select builds, attached to the session."""
    full = station(
        "full",
        31.78,
        119.95,
        ["toilet", "hot_water"],
        name="驿站",
        name_en="Station",
        address="1 Road",
        phone="+86 519 0000",
        operator="Union",
        opening_hours="Mo-Fr 08:00-18:00",
        timezone="Asia/Shanghai",
        status="temporarily_closed",
        alert="Closed for repairs",
        languages=["zh", "en"],
        step_free=True,
        accessible_toilet=False,
        last_verified=date(2026, 11, 1),
    )
    await add(db, full, station("bare", 31.7, 119.9))
    columns = [c.key for c in sa_inspect(Station).column_attrs]
    async with db.session() as session:
        orm = {row.id: row for row in (await session.exec(select(Station))).all() if row.id is not None}
        expected = {i: {c: getattr(row, c) for c in columns} for i, row in orm.items()}
    async with db.session() as session:
        fetched = await fetch_stations(session, [*orm, 999])
        assert set(fetched) == set(orm)
        for station_id, row in fetched.items():
            assert {c: getattr(row, c) for c in columns} == expected[station_id]
            assert sa_inspect(row).persistent and not session.dirty
        assert await fetch_stations(session, list(orm)) == fetched  # the session's objects again
        assert fetched[1].updated_at.tzinfo is not None
        fetched[1].alert = "Open again"
        await session.commit()
    async with db.session() as session:
        assert (await session.get(Station, 1)) is not None
        assert (await session.exec(select(Station.alert).where(Station.id == 1))).one() == "Open again"
