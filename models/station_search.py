"""Nearest-station search: the exact k nearest stations by WGS-84 geodesic distance, from an in-memory index.

Why an in-memory index: a million stations must answer in about a millisecond on SQLite, which has no spatial
index; the rows themselves are fetched afterwards with one `WHERE id IN (…)`.

How it stays exact without special cases for the antimeridian or the poles: stations are 3-D unit vectors (geodetic
latitude and longitude used as spherical coordinates) in a k-d tree, so "near" is a chord on the unit sphere. The
WGS-84 geodesic distance s between two points and their central angle θ on that sphere satisfy

    M_MIN · θ  ≤  s  ≤  N_MAX · θ

where M_MIN = a(1−e²) is the smallest radius of curvature of the ellipsoid (meridional, at the equator) and
N_MAX = a/√(1−e²) the largest (at the poles): the two metrics differ by a factor within [M_MIN, N_MAX] in every
direction, so path lengths — and therefore shortest paths — do too. A search therefore (1) finds k candidates that pass
the filters, nearest by chord first, (2) takes the largest geodesic distance s_k among them, (3) collects every station
within the angle s_k / M_MIN (plus a rounding margin) and ranks all of those by geodesic distance. No station outside
that ball can beat the k-th candidate, so the answer equals a geodesic scan of every station (see `naive_nearest`),
ties broken by station id. The two radii differ by 1%, so the ball holds barely more than k stations.

Filters: closed stations are not indexed at all ("temporarily_closed" ones are, because the card shows their alert);
amenities are a bitmask, and each amenity held by at most a quarter of the stations gets its own small tree, so a rare
filter does not wade through the whole world; "open at" is a predicate on (opening_hours, timezone, moment), evaluated
once per distinct pair per search (the index interns those pairs), so no opening-hours code is imported here.

Freshness: see `get_index` and `invalidate`.
"""

from __future__ import annotations

import asyncio
import logging
import math
import numbers
import time
import weakref
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple, Protocol

import numpy as np
import numpy.typing as npt
from geographiclib.geodesic import Geodesic
from scipy.spatial import cKDTree
from sqlalchemy import Dialect, Engine, case, func
from sqlalchemy import inspect as sa_inspect
from sqlalchemy import select as sa_select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.orm import make_transient_to_detached
from sqlalchemy.orm.attributes import set_committed_value
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from models.stations import AMENITY_BIT, Station, StationStatus

__all__ = [
    "DEFAULT_MAX_RADIUS_M",
    "M_MIN",
    "N_MAX",
    "Hit",
    "OpenPredicate",
    "SearchResult",
    "StationIndex",
    "StationLike",
    "fetch_stations",
    "geodesic_m",
    "get_index",
    "invalidate",
    "naive_nearest",
    "nearest",
    "refresh_index",
]

_WGS84 = Geodesic.WGS84
_E2 = _WGS84.f * (2 - _WGS84.f)
M_MIN: float = _WGS84.a * (1 - _E2)  # 6 335 439.3 m
N_MAX: float = _WGS84.a / math.sqrt(1 - _E2)  # 6 399 593.6 m
DEFAULT_MAX_RADIUS_M = 50_000.0
# A per-amenity tree pays off only when the amenity is rare enough that scanning the full tree would over-fetch a lot.
AMENITY_TREE_MAX_SHARE = 0.25
# Past this share of a tree, growing the k-NN query costs more than one vectorised pass over every point.
_BRUTE_FORCE_SHARE = 1 / 16
_LOAD_CHUNK = 20_000
_FETCH_CHUNK = 5_000

OpenPredicate = Callable[[str | None, str | None, datetime], bool | None]
"""`is_open(opening_hours, timezone, at)`: True when open. None (unknown) and False both fail the "open at" filter.

The timezone is the station's own (None: the caller's default zone), e.g.
`lambda hours, tz, at: hours_module.open_state(hours, tz or default_tz, at).is_open`."""

IntArray = npt.NDArray[np.intp]
BoolArray = npt.NDArray[np.bool_]
FloatArray = npt.NDArray[np.float64]


class StationLike(Protocol):
    """The fields the search reads: a `Station` row, or any record with these attributes (tests, benchmark)."""

    @property
    def id(self) -> int | None: ...
    @property
    def lat(self) -> float: ...
    @property
    def lon(self) -> float: ...
    @property
    def amenity_bits(self) -> int: ...
    @property
    def status(self) -> str: ...
    @property
    def opening_hours(self) -> str | None: ...
    @property
    def timezone(self) -> str | None: ...


def geodesic_m(lat: float, lon: float, station_lat: float, station_lon: float) -> float:
    """WGS-84 geodesic distance in metres (Karney's algorithm: what geopy.distance.geodesic computes, 2× faster).

    Index and reference both call this with the query point first, so equal answers are bit-for-bit equal."""
    return float(_WGS84.Inverse(lat, lon, station_lat, station_lon, Geodesic.DISTANCE)["s12"])


def _unit_vectors(lat_deg: FloatArray, lon_deg: FloatArray) -> FloatArray:
    lat = np.radians(lat_deg)
    lon = np.radians(lon_deg)
    cos_lat = np.cos(lat)
    return np.column_stack((cos_lat * np.cos(lon), cos_lat * np.sin(lon), np.sin(lat)))


def _chord_bound(distance_m: float) -> float:
    """A unit-sphere chord that certainly reaches every station within `distance_m` of geodesic distance.

    The margins (1e-9 relative, ~6 mm absolute) only cover floating-point rounding; the geometry is in M_MIN."""
    theta = distance_m / M_MIN * (1 + 1e-9) + 1e-12
    if theta >= math.pi:
        return math.inf
    return 2 * math.sin(theta / 2) * (1 + 1e-9) + 1e-9


def _check_point(lat: float, lon: float) -> None:
    if not (math.isfinite(lat) and math.isfinite(lon)):
        raise ValueError(f"coordinates must be finite numbers, got lat={lat!r}, lon={lon!r}")
    if not -90.0 <= lat <= 90.0:
        raise ValueError(f"latitude must be within [-90, 90], got {lat!r}")
    if not -180.0 <= lon <= 180.0:
        raise ValueError(f"longitude must be within [-180, 180], got {lon!r}")


def _check_args(k: int, max_radius_m: float | None, open_at: datetime | None, is_open: OpenPredicate | None) -> None:
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    if max_radius_m is not None and not (math.isfinite(max_radius_m) and max_radius_m >= 0):
        raise ValueError(f"max_radius_m must be a finite non-negative number or None, got {max_radius_m!r}")
    if (open_at is None) != (is_open is None):
        raise ValueError("open_at and is_open go together: the moment, and the predicate that evaluates it")


def _mask_of(amenities: Iterable[str]) -> int:
    """Bitmask of the requested amenities; unknown names are an error (ignoring one would widen the filter)."""
    mask = 0
    for name in amenities:
        bit = AMENITY_BIT.get(name)
        if bit is None:
            raise ValueError(f"unknown amenity {name!r}")
        mask |= bit
    return mask


class _Tree:
    """A k-d tree over some of the index's stations; `members[i]` is the index position of the tree's point i."""

    __slots__ = ("kd", "members", "vectors")

    def __init__(self, vectors: FloatArray, members: IntArray) -> None:
        self.vectors = vectors
        self.members = members
        self.kd = cKDTree(vectors, leafsize=16, balanced_tree=False, compact_nodes=False)

    def __len__(self) -> int:
        return len(self.members)


class StationIndex:
    """Immutable snapshot of the searchable (not closed) stations: ids, positions, amenity bits, opening hours.

    Build it with `await get_index(session)` (cached, kept fresh), `await StationIndex.load(session)` or
    `StationIndex.from_records(rows)`. Searching is pure CPU and thread-safe."""

    def __init__(
        self,
        ids: Sequence[int] | IntArray,
        lat: Sequence[float] | FloatArray,
        lon: Sequence[float] | FloatArray,
        amenity_bits: Sequence[int] | npt.NDArray[np.int64],
        hours_code: Sequence[int] | npt.NDArray[np.int32] | None = None,
        hours_table: Sequence[tuple[str | None, str | None]] = ((None, None),),
    ) -> None:
        """Column arrays of equal length; `hours_code[i]` indexes `hours_table` (opening_hours, timezone) pairs."""
        self.ids: npt.NDArray[np.int64] = np.asarray(ids, dtype=np.int64)
        self.lat: FloatArray = np.asarray(lat, dtype=np.float64)
        self.lon: FloatArray = np.asarray(lon, dtype=np.float64)
        self.bits: npt.NDArray[np.int64] = np.asarray(amenity_bits, dtype=np.int64)
        n = len(self.ids)
        codes = np.zeros(n, dtype=np.int32) if hours_code is None else np.asarray(hours_code, dtype=np.int32)
        self.hours_code: npt.NDArray[np.int32] = codes
        self.hours_table: list[tuple[str | None, str | None]] = list(hours_table)
        if not (len(self.lat) == len(self.lon) == len(self.bits) == len(self.hours_code) == n):
            raise ValueError("index columns differ in length")
        if n and (not np.isfinite(self.lat).all() or not np.isfinite(self.lon).all()):
            raise ValueError("station coordinates must be finite")
        self.stale = False  # set by invalidate() or when a search meets a row that changed; get_index rebuilds
        self.built_at = time.monotonic()
        self._full: _Tree | None = None
        self._by_amenity: dict[int, _Tree] = {}
        if n:
            vectors = _unit_vectors(self.lat, self.lon)
            self._full = _Tree(vectors, np.arange(n, dtype=np.intp))
            for bit in AMENITY_BIT.values():
                members = np.flatnonzero(self.bits & bit)
                if 0 < len(members) <= AMENITY_TREE_MAX_SHARE * n:
                    self._by_amenity[bit] = _Tree(vectors[members], members.astype(np.intp))
        # A filter on an amenity nobody has answers at once (instead of scanning the whole tree for nothing).
        self._amenity_count = {bit: int(np.count_nonzero(self.bits & bit)) for bit in AMENITY_BIT.values()}

    def __len__(self) -> int:
        return len(self.ids)

    @classmethod
    def from_records(cls, records: Iterable[StationLike]) -> StationIndex:
        """Index in-memory rows (closed ones are skipped), e.g. for tests or the benchmark."""
        ids: list[int] = []
        lat: list[float] = []
        lon: list[float] = []
        bits: list[int] = []
        hours: list[tuple[str | None, str | None]] = []
        for record in records:
            if record.status == StationStatus.CLOSED.value:
                continue
            if record.id is None:
                raise ValueError("records need an id")
            ids.append(record.id)
            lat.append(record.lat)
            lon.append(record.lon)
            bits.append(record.amenity_bits)
            hours.append((record.opening_hours, record.timezone))
        codes, table = _intern(hours)
        return cls(ids, lat, lon, bits, codes, table)

    @classmethod
    async def load(cls, session: AsyncSession) -> StationIndex:
        """Read the searchable stations (only the columns the index needs) and build the trees off the event loop."""
        statement = sa_select(
            col(Station.id),
            col(Station.lat),
            col(Station.lon),
            col(Station.amenity_bits),
            col(Station.opening_hours),
            col(Station.timezone),
        ).where(col(Station.status) != StationStatus.CLOSED.value)
        connection = await session.connection()
        raw_fetch = await _aiosqlite_fetchall(connection)
        if raw_fetch is not None:  # rows built in the driver's thread, not in SQLAlchemy's on the event loop
            compiled = statement.compile(dialect=connection.dialect)
            params = [compiled.params[name] for name in compiled.positiontup or ()]
            rows: Sequence[Any] = await raw_fetch(str(compiled), params)
        else:  # Core rows: no ORM objects for a million stations
            rows = (await connection.execute(statement)).all()
        return await asyncio.to_thread(cls._from_rows, rows)

    @classmethod
    def _from_rows(cls, rows: Sequence[Any]) -> StationIndex:
        """Rows to columns a chunk at a time: a single zip(*rows) over a million rows would hold the GIL for half a
        second and stall the event loop; between chunks it runs."""
        columns: tuple[list[Any], ...] = ([], [], [], [], [], [])
        for start in range(0, len(rows), _LOAD_CHUNK):
            for column, values in zip(columns, zip(*rows[start : start + _LOAD_CHUNK], strict=True), strict=True):
                column.extend(values)
        ids, lat, lon, bits, hours, zones = columns
        codes, table = _intern(zip(hours, zones, strict=True))
        return cls(ids, lat, lon, bits, codes, table)

    def memory_bytes(self) -> int:
        """Approximate size of the arrays and trees (k-d tree nodes estimated), for the benchmark and ops."""
        total = self.ids.nbytes + self.lat.nbytes + self.lon.nbytes + self.bits.nbytes + self.hours_code.nbytes
        total += sum(64 + len(h or "") + len(z or "") for h, z in self.hours_table)
        for tree in self.trees():
            # the tree shares our vectors; it adds an index permutation and ~2n/leafsize nodes of ~72 bytes
            total += tree.vectors.nbytes + tree.members.nbytes + len(tree) * 8 + tree.kd.size * 72
        return total

    def trees(self) -> list[_Tree]:
        return ([self._full] if self._full is not None else []) + list(self._by_amenity.values())

    def nearest_ids(
        self,
        lat: float,
        lon: float,
        k: int = 5,
        *,
        amenities: Iterable[str] = (),
        max_radius_m: float | None = DEFAULT_MAX_RADIUS_M,
        open_at: datetime | None = None,
        is_open: OpenPredicate | None = None,
        accept: Callable[[int], bool] | None = None,
        fallback: bool = False,
    ) -> list[tuple[int, float]]:
        """The k nearest matching stations as (station id, geodesic metres), nearest first, ties by id.

        Matching: every amenity in `amenities`, `is_open(hours, tz, open_at)` is True (when given), `accept(id)`
        (when given). Only stations within `max_radius_m` (None: anywhere) count; with `fallback`, when none does,
        the single nearest matching station anywhere is returned instead (its distance exceeds the radius)."""
        _check_point(lat, lon)
        _check_args(k, max_radius_m, open_at, is_open)
        mask = _mask_of(amenities)
        if self._full is None or any(mask & bit and not count for bit, count in self._amenity_count.items()):
            return []
        passes = self._filter(mask, open_at, is_open, accept)
        query = _unit_vectors(np.array([lat]), np.array([lon]))[0]
        tree = self._tree_for(mask)
        hits = self._search(tree, query, lat, lon, k, max_radius_m, passes)
        if not hits and fallback and max_radius_m is not None:
            hits = self._search(tree, query, lat, lon, 1, None, passes)
        return hits

    def _tree_for(self, mask: int) -> _Tree:
        assert self._full is not None
        best = self._full
        for bit in AMENITY_BIT.values():
            if mask & bit and bit in self._by_amenity and len(self._by_amenity[bit]) < len(best):
                best = self._by_amenity[bit]
        return best

    def _filter(
        self,
        mask: int,
        open_at: datetime | None,
        is_open: OpenPredicate | None,
        accept: Callable[[int], bool] | None,
    ) -> Callable[[IntArray], BoolArray]:
        """A vectorised test of index positions; predicate answers are memoised for the duration of one search."""
        open_by_code: dict[int, bool] = {}
        accepted: dict[int, bool] = {}
        bits, codes, ids, table = self.bits, self.hours_code, self.ids, self.hours_table

        def passes(positions: IntArray) -> BoolArray:
            ok: BoolArray = (bits[positions] & mask) == mask if mask else np.ones(len(positions), dtype=np.bool_)
            if is_open is not None and open_at is not None and ok.any():
                chosen = np.flatnonzero(ok)
                unique, inverse = np.unique(codes[positions[chosen]], return_inverse=True)
                answers = np.empty(len(unique), dtype=np.bool_)
                for j, code in enumerate(unique.tolist()):
                    if code not in open_by_code:
                        hours, zone = table[code]
                        open_by_code[code] = is_open(hours, zone, open_at) is True
                    answers[j] = open_by_code[code]
                ok[chosen] = answers[inverse]
            if accept is not None and ok.any():
                chosen = np.flatnonzero(ok)
                for j, station_id in zip(chosen.tolist(), ids[positions[chosen]].tolist(), strict=True):
                    if station_id not in accepted:
                        accepted[station_id] = bool(accept(station_id))
                    ok[j] = accepted[station_id]
            return ok

        return passes

    def _search(
        self,
        tree: _Tree,
        query: FloatArray,
        lat: float,
        lon: float,
        k: int,
        max_radius_m: float | None,
        passes: Callable[[IntArray], BoolArray],
    ) -> list[tuple[int, float]]:
        size = len(tree)
        reach = math.inf if max_radius_m is None else _chord_bound(max_radius_m)
        # 1. At least k matching candidates, chord-nearest first (growing the query while filters reject too many),
        #    or all matching stations within reach when there are fewer.
        want = min(size, max(k, 8))
        while True:
            if want > size * _BRUTE_FORCE_SHARE and want > 64:
                candidates = self._scan(tree, query, reach, passes)
                break
            _, found = tree.kd.query(query, k=want, distance_upper_bound=reach)
            found = np.atleast_1d(found)
            found = found[found < size]
            positions = tree.members[found]
            candidates = positions[passes(positions)]
            if len(candidates) >= k or len(found) < want or want == size:  # enough, or all within reach seen
                break
            want = min(size, want * 4)

        distances: dict[int, float] = {}

        def distance(position: int) -> float:
            known = distances.get(position)
            if known is None:
                known = distances[position] = geodesic_m(lat, lon, float(self.lat[position]), float(self.lon[position]))
            return known

        if len(candidates) >= k:
            # 2. No station farther than M_MIN·θ from the k-th candidate's geodesic distance can be closer: collect
            #    the ball of that angle (never wider than the radius) and rank it exactly.
            bound = max(distance(p) for p in candidates[:k].tolist())
            if max_radius_m is not None:
                bound = min(bound, max_radius_m)
            reach = _chord_bound(bound)
            if math.isfinite(reach):
                inside = np.asarray(tree.kd.query_ball_point(query, reach), dtype=np.intp)
            else:  # the k-th candidate is nearly antipodal: everything is in reach
                inside = np.arange(size, dtype=np.intp)
            positions = tree.members[inside]
            candidates = positions[passes(positions)]
        ranked = sorted((distance(p), int(self.ids[p])) for p in candidates.tolist())
        if max_radius_m is not None:
            ranked = [pair for pair in ranked if pair[0] <= max_radius_m]
        return [(station_id, d) for d, station_id in ranked[:k]]

    @staticmethod
    def _scan(tree: _Tree, query: FloatArray, reach: float, passes: Callable[[IntArray], BoolArray]) -> IntArray:
        """Every matching station within `reach`, chord-nearest first: one vectorised pass for very selective
        filters, where growing a k-NN query towards the whole tree would cost more."""
        delta = tree.vectors - query
        squared = np.einsum("ij,ij->i", delta, delta)
        inside = np.flatnonzero(squared <= reach * reach) if math.isfinite(reach) else np.arange(len(tree))
        positions = tree.members[inside]
        keep = passes(positions)
        order = np.argsort(squared[inside][keep], kind="stable")
        result: IntArray = positions[keep][order]
        return result


def _intern(
    pairs: Iterable[tuple[str | None, str | None]],
) -> tuple[list[int], list[tuple[str | None, str | None]]]:
    """(opening_hours, timezone) pairs as codes into a table of distinct pairs: few distinct schedules exist, and the
    open filter then evaluates each once per search."""
    table: dict[tuple[str | None, str | None], int] = {(None, None): 0}
    codes = [table.setdefault(pair, len(table)) for pair in pairs]
    return codes, list(table)


def naive_nearest(
    stations: Iterable[StationLike],
    lat: float,
    lon: float,
    k: int = 5,
    *,
    amenities: Iterable[str] = (),
    max_radius_m: float | None = DEFAULT_MAX_RADIUS_M,
    open_at: datetime | None = None,
    is_open: OpenPredicate | None = None,
    fallback: bool = False,
) -> list[tuple[int, float]]:
    """The brute-force reference for `StationIndex.nearest_ids`: geodesic distance to every matching station."""
    _check_point(lat, lon)
    _check_args(k, max_radius_m, open_at, is_open)
    mask = _mask_of(amenities)
    ranked: list[tuple[float, int]] = []
    for station in stations:
        if station.status == StationStatus.CLOSED.value or station.amenity_bits & mask != mask:
            continue
        if (
            is_open is not None
            and open_at is not None
            and is_open(station.opening_hours, station.timezone, open_at) is not True
        ):
            continue
        assert station.id is not None
        ranked.append((geodesic_m(lat, lon, station.lat, station.lon), station.id))
    ranked.sort()
    within = ranked if max_radius_m is None else [pair for pair in ranked if pair[0] <= max_radius_m]
    if not within and fallback:
        within = ranked[:1]
    return [(station_id, d) for d, station_id in within[:k]]


class Hit(NamedTuple):
    station: Station
    distance_m: float

    @property
    def temporarily_closed(self) -> bool:
        """Shown with its alert rather than hidden (the product decision: people may still need to know it)."""
        return self.station.status == StationStatus.TEMPORARILY_CLOSED.value


@dataclass(frozen=True)
class SearchResult:
    """Nearest first. `beyond_radius`: nothing matched within `max_radius_m`, so `hits` is the single nearest
    matching station anywhere (empty when no station matches at all)."""

    hits: list[Hit]
    beyond_radius: bool
    max_radius_m: float | None


async def nearest(
    session: AsyncSession,
    index: StationIndex,
    lat: float,
    lon: float,
    k: int = 5,
    *,
    amenities: Iterable[str] = (),
    open_at: datetime | None = None,
    is_open: OpenPredicate | None = None,
    max_radius_m: float | None = DEFAULT_MAX_RADIUS_M,
) -> SearchResult:
    """The k nearest matching stations with their rows, falling back to the nearest one beyond the radius.

    Rows are re-checked: a station that has since been closed, deleted or lost a requested amenity is never shown
    (the search is repeated without it, and the index is marked stale so `get_index` rebuilds it)."""
    amenities = tuple(amenities)
    mask = _mask_of(amenities)
    excluded: set[int] = set()
    while True:
        pairs = index.nearest_ids(
            lat,
            lon,
            k,
            amenities=amenities,
            max_radius_m=max_radius_m,
            open_at=open_at,
            is_open=is_open,
            accept=(lambda station_id: station_id not in excluded) if excluded else None,
            fallback=True,
        )
        if not pairs:
            return SearchResult([], False, max_radius_m)
        rows = await fetch_stations(session, [station_id for station_id, _ in pairs])
        gone = [
            station_id
            for station_id, _ in pairs
            if (row := rows.get(station_id)) is None
            or row.status == StationStatus.CLOSED.value
            or row.amenity_bits & mask != mask
        ]
        if not gone:
            break
        index.stale = True
        excluded.update(gone)
    beyond = max_radius_m is not None and pairs[0][1] > max_radius_m
    return SearchResult([Hit(rows[station_id], d) for station_id, d in pairs], beyond, max_radius_m)


async def fetch_stations(session: AsyncSession, ids: Sequence[int]) -> dict[int, Station]:
    """The Station rows with these ids, attached to the session, by id (missing ids are simply absent).

    On aiosqlite this reads the rows in one round trip to the driver's thread and builds the objects the way an ORM
    load would (column types' result processors, committed state, the session's identity map): SQLAlchemy's adapter
    takes four thread hops per statement, which is half a millisecond, a third of the search's budget. Elsewhere it is
    the plain ORM select."""
    found: dict[int, Station] = {}
    connection = await session.connection()
    raw_fetch = await _aiosqlite_fetchall(connection)
    for start in range(0, len(ids), _FETCH_CHUNK):  # bound parameters per statement are limited (SQLite: 32,766)
        chunk = list(ids[start : start + _FETCH_CHUNK])
        if raw_fetch is not None:
            loader = _SqliteLoader.for_dialect(connection.dialect)
            found.update(loader.attach(session, await raw_fetch(loader.sql(len(chunk)), chunk)))
        else:
            statement = select(Station).where(col(Station.id).in_(chunk))
            found.update((row.id, row) for row in (await session.exec(statement)).all() if row.id is not None)
    return found


async def _aiosqlite_fetchall(
    connection: AsyncConnection,
) -> Callable[[str, list[Any]], Awaitable[Sequence[Any]]] | None:
    """aiosqlite's one-hop `execute_fetchall` on the session's own connection (same transaction), or None."""
    dialect = connection.dialect
    if dialect.name != "sqlite" or dialect.driver != "aiosqlite":
        return None
    raw = await connection.get_raw_connection()
    fetchall: Callable[[str, list[Any]], Awaitable[Sequence[Any]]] | None
    fetchall = getattr(raw.driver_connection, "execute_fetchall", None)
    return fetchall


class _SqliteLoader:
    """Turns raw aiosqlite rows of `stations` into persistent Station objects, as the ORM's loading does."""

    _by_dialect: weakref.WeakKeyDictionary[Dialect, _SqliteLoader] = weakref.WeakKeyDictionary()

    def __init__(self, dialect: Dialect) -> None:
        self.mapper = sa_inspect(Station)
        props = list(self.mapper.column_attrs)
        self.keys = [prop.key for prop in props]
        self.processors = [prop.columns[0].type.dialect_impl(dialect).result_processor(dialect, None) for prop in props]
        quote = dialect.identifier_preparer.quote
        columns = ", ".join(quote(str(prop.columns[0].name)) for prop in props)
        self.select = f"SELECT {columns} FROM {quote(str(Station.__tablename__))} WHERE {quote('id')} IN "
        self.id_at = self.keys.index("id")

    @classmethod
    def for_dialect(cls, dialect: Dialect) -> _SqliteLoader:
        loader = cls._by_dialect.get(dialect)
        if loader is None:
            loader = cls._by_dialect[dialect] = cls(dialect)
        return loader

    def sql(self, count: int) -> str:
        return self.select + "(" + ", ".join("?" * count) + ")"

    def attach(self, session: AsyncSession, raw_rows: Iterable[Sequence[Any]]) -> dict[int, Station]:
        sync_session = session.sync_session
        found: dict[int, Station] = {}
        for raw in raw_rows:
            values = {
                key: processor(value) if processor is not None else value
                for key, processor, value in zip(self.keys, self.processors, raw, strict=True)
            }
            identity = self.mapper.identity_key_from_primary_key((raw[self.id_at],))
            existing = sync_session.identity_map.get(identity)
            if existing is not None:  # like an ORM load: keep the session's object, fill what it has not loaded
                for key in sa_inspect(existing).unloaded:
                    set_committed_value(existing, key, values[key])
                found[raw[self.id_at]] = existing
                continue
            station = self.mapper.class_manager.new_instance()
            for key, value in values.items():
                set_committed_value(station, key, value)
            make_transient_to_detached(station)
            sync_session.add(station)
            found[raw[self.id_at]] = station
        return found


# --- the cached index --------------------------------------------------------------------------------------------

logger = logging.getLogger(__name__)
CHECK_INTERVAL_S = 30.0


@dataclass
class _Cache:
    index: StationIndex | None = None
    fingerprint: tuple[Any, ...] | None = None
    checked_at: float = -math.inf
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    checking: asyncio.Task[None] | None = None
    generation: int = 0  # bumped by invalidate(): an index loaded while it changed is born stale


_caches: weakref.WeakKeyDictionary[Engine, _Cache] = weakref.WeakKeyDictionary()


def _cache_of(session: AsyncSession) -> _Cache:
    bind = session.sync_session.get_bind()
    engine = bind if isinstance(bind, Engine) else bind.engine
    cache = _caches.get(engine)
    if cache is None:
        cache = _caches.setdefault(engine, _Cache())
    return cache


async def _fingerprint(session: AsyncSession) -> tuple[Any, ...]:
    """One scan of `stations` summarising what the index depends on: rows, closures, amenities, coordinates.

    `updated_at` alone would do if every writer bumped it (the column has no ON UPDATE); the sums catch the rest."""
    statement = sa_select(
        func.count(),
        func.max(Station.id),
        func.max(Station.updated_at),
        func.sum(case((col(Station.status) == StationStatus.CLOSED.value, 1), else_=0)),
        func.sum(Station.amenity_bits),
        func.sum(Station.lat),
        func.sum(Station.lon),
    )
    connection = await session.connection()
    row = (await connection.execute(statement)).one()
    return tuple(row)


async def get_index(session: AsyncSession, *, check_interval_s: float = CHECK_INTERVAL_S) -> StationIndex:
    """The station index of the session's database (one per engine), built on first use, rebuilt when stations change.

    Freshness without cost on the hot path: a search runs no extra query. In-process writers call `invalidate()`
    after committing, and the next call rebuilds before answering. Changes by other processes (the import CLI, another
    bot process) are found by a fingerprint query — one scan of the table, ~0.3 s at a million stations — run in the
    background at most every `check_interval_s` seconds while searches go on with the current index. Meanwhile
    `nearest` still never shows a station that has been closed, deleted or lost an amenity: it re-checks the rows."""
    cache = _cache_of(session)
    index = cache.index
    if index is None or index.stale:
        return await refresh_index(session)
    if time.monotonic() - cache.checked_at >= check_interval_s and cache.checking is None:
        cache.checked_at = time.monotonic()  # also rate-limits retries when checks fail
        engine = session.bind
        if not isinstance(engine, AsyncEngine):  # bound to a connection: no second session possible, check inline
            return await refresh_index(session)
        cache.checking = asyncio.create_task(_check_in_background(cache, engine))
    return index


async def refresh_index(session: AsyncSession) -> StationIndex:
    """Check now: run the fingerprint query and rebuild if stations changed or the index was invalidated."""
    cache = _cache_of(session)
    requested = time.monotonic()
    async with cache.lock:
        index = cache.index
        if index is not None and not index.stale and cache.checked_at >= requested:
            return index  # another task checked while we waited for the lock
        generation = cache.generation
        fingerprint = await _fingerprint(session)
        if index is None or index.stale or fingerprint != cache.fingerprint:
            index = cache.index = await StationIndex.load(session)
            index.stale = cache.generation != generation
            cache.fingerprint = fingerprint
        cache.checked_at = time.monotonic()
        return index


async def _check_in_background(cache: _Cache, engine: AsyncEngine) -> None:
    try:
        async with AsyncSession(engine, expire_on_commit=False) as session:
            await refresh_index(session)
    except Exception:
        logger.exception("station index: the periodic change check failed")
    finally:
        cache.checking = None


def invalidate(engine: Any = None) -> None:
    """Mark the cached index of `engine` (an Engine or AsyncEngine; None: every database) stale.

    Writers call it after committing an import or a station change, so the very next search sees the change."""
    sync_engine = getattr(engine, "sync_engine", engine)
    for key, cache in list(_caches.items()):
        if sync_engine is None or key is sync_engine:
            cache.generation += 1
            if cache.index is not None:
                cache.index.stale = True
