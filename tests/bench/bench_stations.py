"""Benchmark of the nearest-station search (models.station_search) against a naive geodesic scan.

    .venv/bin/python tests/bench/bench_stations.py            # 10k, 100k, 1M uniform + 100k city cluster
    .venv/bin/python tests/bench/bench_stations.py --quick    # without the 1M data set (CI smoke)

Data sets: stations uniform over land-ish latitudes (−56…72), and a dense cluster of 100k stations within 30 km of
Changzhou. Each gets 1,000 random queries (inside the cluster for the cluster), timed through `nearest()` — index
search plus fetching the rows — with and without an amenity filter, on SQLite, and on PostgreSQL when
WAYSTATION_TEST_POSTGRES_URL is set (in a database of its own, `ws_bench`, created and dropped here). A naive scan
(geodesic distance to every station) runs on a sample of the queries, since it takes ~40 s per query at 1M; every
sampled answer must equal the index's, bit for bit.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import math
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import insert, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from bot.database import Database
from models.station_search import StationIndex, get_index, naive_nearest, nearest, refresh_index
from models.stations import AMENITIES, Station

CHANGZHOU = (31.78, 119.95)
K = 5
RADIUS_M = 50_000.0
FILTER = ("first_aid", "shower")
QUERIES = 1_000
BATCH = 20_000
# Share of stations having each amenity (same order as AMENITIES): common basics, rare services.
AMENITY_SHARE = (0.8, 0.85, 0.5, 0.4, 0.9, 0.6, 0.7, 0.15, 0.3, 0.5, 0.4, 0.08, 0.1, 0.03, 0.05, 0.02, 0.04, 0.02)
HOURS = (None, "24/7", "Mo-Fr 08:00-18:00", "Mo-Su 07:00-21:00", "Mo-Sa 09:00-17:00; PH off", "Mo-Fr 06:30-20:30")


@dataclass(slots=True)
class Record:
    """What naive_nearest reads (a StationLike), without ORM overhead for a million rows."""

    id: int
    lat: float
    lon: float
    amenity_bits: int
    status: str
    opening_hours: str | None
    timezone: str | None


@dataclass
class DataSet:
    name: str
    lat: np.ndarray
    lon: np.ndarray
    query_lat: np.ndarray
    query_lon: np.ndarray


def uniform_points(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Uniform by area between latitudes −56 and 72."""
    low, high = math.sin(math.radians(-56)), math.sin(math.radians(72))
    lat = np.degrees(np.arcsin(rng.uniform(low, high, n)))
    return lat, rng.uniform(-180.0, 180.0, n)


def disc_points(rng: np.random.Generator, n: int, radius_km: float) -> tuple[np.ndarray, np.ndarray]:
    """Uniform by area within `radius_km` of Changzhou (local flat approximation, well inside the radius)."""
    distance = radius_km * np.sqrt(rng.uniform(0, 1, n))
    bearing = rng.uniform(0, 2 * math.pi, n)
    lat = CHANGZHOU[0] + distance * np.cos(bearing) / 110.95
    lon = CHANGZHOU[1] + distance * np.sin(bearing) / (111.32 * math.cos(math.radians(CHANGZHOU[0])))
    return lat, lon


def data_sets(quick: bool, seed: int) -> list[DataSet]:
    rng = np.random.default_rng(seed)
    sets = []
    for n in (10_000, 100_000) if quick else (10_000, 100_000, 1_000_000):
        lat, lon = uniform_points(rng, n)
        qlat, qlon = uniform_points(rng, QUERIES)
        sets.append(DataSet(f"uniform {n // 1000}k", lat, lon, qlat, qlon))
    lat, lon = disc_points(rng, 100_000, 29.9)
    qlat, qlon = disc_points(rng, QUERIES, 35.0)
    sets.append(DataSet("city 100k", lat, lon, qlat, qlon))
    return sets


def records_for(data: DataSet, seed: int) -> list[Record]:
    rng = np.random.default_rng(seed + 1)
    n = len(data.lat)
    bits = np.zeros(n, dtype=np.int64)
    for position, share in enumerate(AMENITY_SHARE):
        bits |= (rng.uniform(0, 1, n) < share).astype(np.int64) << position
    status = rng.choice(np.array(["open", "temporarily_closed", "closed"]), n, p=[0.95, 0.03, 0.02])
    hours = rng.integers(0, len(HOURS), n)
    zones = rng.integers(0, 2, n)
    return [
        Record(i + 1, la, lo, b, s, HOURS[h], "Asia/Shanghai" if z else None)
        for i, (la, lo, b, s, h, z) in enumerate(
            zip(
                data.lat.tolist(),
                data.lon.tolist(),
                bits.tolist(),
                status.tolist(),
                hours.tolist(),
                zones.tolist(),
                strict=True,
            )
        )
    ]


async def insert_stations(db: Database, records: Sequence[Record]) -> float:
    """Core executemany in batches (no ORM objects): ~10 s per million rows on SQLite."""
    started = time.perf_counter()
    now = datetime.now(UTC)
    table = Station.__table__  # type: ignore[attr-defined]
    for start in range(0, len(records), BATCH):
        rows: list[dict[str, Any]] = [
            {
                "id": r.id,
                "external_id": f"bench/{r.id}",
                "name": f"Station {r.id}",
                "lat": r.lat,
                "lon": r.lon,
                "amenities": [name for bit, name in enumerate(AMENITIES) if r.amenity_bits >> bit & 1],
                "amenity_bits": r.amenity_bits,
                "opening_hours": r.opening_hours,
                "timezone": r.timezone,
                "status": r.status,
                "languages": [],
                "updated_at": now,
            }
            for r in records[start : start + BATCH]
        ]
        async with db.engine.begin() as connection:
            await connection.execute(insert(table), rows)
    return time.perf_counter() - started


def rss_bytes() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1)]


@dataclass
class Row:
    backend: str
    data: str
    filtered: bool
    p50_ms: float
    p99_ms: float
    naive_ms: float
    naive_n: int
    beyond: float


@dataclass
class Naive:
    """The reference answers of the first `len(answers)` queries, per filter, and how long each scan took."""

    answers: dict[bool, list[list[tuple[int, float]]]]
    median_ms: dict[bool, float]


def run_naive(data: DataSet, records: list[Record], n: int) -> Naive:
    answers: dict[bool, list[list[tuple[int, float]]]] = {}
    median_ms: dict[bool, float] = {}
    for amenities in ((), FILTER):
        times = []
        answers[bool(amenities)] = []
        for i in range(n):
            lat, lon = float(data.query_lat[i]), float(data.query_lon[i])
            started = time.perf_counter()
            answers[bool(amenities)].append(
                naive_nearest(records, lat, lon, K, amenities=amenities, max_radius_m=RADIUS_M, fallback=True)
            )
            times.append(time.perf_counter() - started)
        median_ms[bool(amenities)] = statistics.median(times) * 1e3
    return Naive(answers, median_ms)


async def run_backend(backend: str, url: str, data: DataSet, records: list[Record], naive: Naive) -> list[Row]:
    db = Database(url)
    await db.upgrade()
    inserted = await insert_stations(db, records)
    rss_before = rss_bytes()
    started = time.perf_counter()
    async with db.session() as session:
        index = await get_index(session)
    load_s = time.perf_counter() - started
    rss_after = rss_bytes()
    started = time.perf_counter()
    StationIndex(index.ids, index.lat, index.lon, index.bits, index.hours_code, index.hours_table)
    trees_s = time.perf_counter() - started
    started = time.perf_counter()
    async with db.session() as session:
        assert await refresh_index(session) is index  # the periodic change check (in the background), no change
    check_ms = (time.perf_counter() - started) * 1e3
    print(
        f"{backend:10} {data.name:12} insert {inserted:5.1f} s | {len(index):>9,} indexed, load+build "
        f"{load_s:5.2f} s (trees alone {trees_s:4.2f} s), ~{index.memory_bytes() / 2**20:4.0f} MiB "
        f"(RSS +{(rss_after - rss_before) / 2**20:4.0f} MiB), change check {check_ms:5.1f} ms",
        flush=True,
    )
    gc.collect()
    gc.freeze()  # the benchmark's own million records would otherwise make GC pauses the p99
    results = []
    for amenities in ((), FILTER):
        times: list[float] = []
        beyond = 0
        for i, (lat, lon) in enumerate(zip(data.query_lat.tolist(), data.query_lon.tolist(), strict=True)):
            async with db.session() as session:
                started = time.perf_counter()
                result = await nearest(session, index, lat, lon, K, amenities=amenities, max_radius_m=RADIUS_M)
                times.append(time.perf_counter() - started)
            beyond += result.beyond_radius
            expected = naive.answers[bool(amenities)]
            if i < len(expected):
                got = [(hit.station.id or 0, hit.distance_m) for hit in result.hits]
                assert got == expected[i], f"{data.name} query {i} ({lat}, {lon}): {got} != {expected[i]}"
        results.append(
            Row(
                backend,
                data.name,
                bool(amenities),
                percentile(times, 50) * 1e3,
                percentile(times, 99) * 1e3,
                naive.median_ms[bool(amenities)],
                len(naive.answers[bool(amenities)]),
                beyond / len(times),
            )
        )
    gc.unfreeze()
    await db.dispose()
    return results


def naive_samples(n: int, override: int | None) -> int:
    """A naive scan costs ~40 µs per station: keep each data set's naive part to a minute or so."""
    if override is not None:
        return override
    return max(10, min(100, 2_000_000 // n))


def postgres_admin_url() -> str | None:
    raw = os.environ.get("WAYSTATION_TEST_POSTGRES_URL", "").strip()
    return raw.replace("postgresql://", "postgresql+asyncpg://", 1) if raw else None


async def recreate_bench_database(admin_url: str, *, drop_only: bool = False) -> str:
    """A database of our own (ws_bench) beside the test database, so nobody else's data is touched."""
    engine = create_async_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as connection:
            await connection.execute(text("DROP DATABASE IF EXISTS ws_bench WITH (FORCE)"))
            if not drop_only:
                await connection.execute(text("CREATE DATABASE ws_bench"))
    finally:
        await engine.dispose()
    return make_url(admin_url).set(database="ws_bench").render_as_string(hide_password=False)


async def run(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="skip the 1M data set")
    parser.add_argument("--naive", type=int, default=None, help="naive queries per data set (default: by size)")
    parser.add_argument("--only", action="append", default=[], help="data sets whose name contains this (repeatable)")
    parser.add_argument("--seed", type=int, default=20261125)
    parser.add_argument("--no-postgres", action="store_true", help="SQLite only, even with a PostgreSQL URL set")
    args = parser.parse_args(argv)

    pg_admin = None if args.no_postgres else postgres_admin_url()
    pg_url = None
    if pg_admin:
        try:
            pg_url = await recreate_bench_database(pg_admin)
        except Exception as error:
            print(f"PostgreSQL skipped: cannot create database ws_bench ({error})", file=sys.stderr)
    rows: list[Row] = []
    try:
        with tempfile.TemporaryDirectory(prefix="ws-bench-") as tmp:
            for number, data in enumerate(data_sets(args.quick, args.seed)):
                if args.only and not any(part in data.name for part in args.only):
                    continue
                records = records_for(data, args.seed + number)
                started = time.perf_counter()
                naive = run_naive(data, records, naive_samples(len(records), args.naive))
                print(f"{data.name}: naive reference computed in {time.perf_counter() - started:.0f} s", flush=True)
                backends = [("sqlite", f"sqlite+aiosqlite:///{tmp}/{number}.db")]
                if pg_url:
                    backends.append(("postgresql", pg_url))
                for backend, url in backends:
                    if backend == "postgresql" and number and pg_admin:
                        await recreate_bench_database(pg_admin)
                    rows += await run_backend(backend, url, data, records, naive)
                del records, naive
    finally:
        if pg_url and pg_admin:
            await recreate_bench_database(pg_admin, drop_only=True)

    print(f"nearest-{K}, radius {RADIUS_M / 1000:.0f} km, {QUERIES} queries per row; filter = {' + '.join(FILTER)}")
    header = (
        f"{'backend':10} {'data set':12} {'filter':6} {'p50 ms':>7} {'p99 ms':>7} {'beyond':>6} "
        f"{'naive ms':>10} {'naive n':>7} {'naive/index':>11}"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        print(
            f"{row.backend:10} {row.data:12} {'yes' if row.filtered else 'no':6} {row.p50_ms:7.3f} {row.p99_ms:7.3f} "
            f"{row.beyond:6.0%} {row.naive_ms:10.1f} {row.naive_n:7d} {row.naive_ms / row.p50_ms:11.0f}"
        )
    print("naive: median over the first 'naive n' queries (all checked equal to the index's answers)")
    print("beyond: share of queries with nothing within the radius (answered with the nearest station beyond it)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return asyncio.run(run(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    raise SystemExit(main())
