"""The season report's pure parts and small models: periods (week, month, the season across New Year, typed dates,
button codes), the median / 90th percentile against numpy, what counts as given on resolve, the [season] settings,
the station-usage upsert and patrols on the database (SQLite and PostgreSQL), and the chart (PNG, size, Chinese)."""

from __future__ import annotations

import random
import struct
import uuid
import warnings
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy
import pytest

from bot import charts
from bot.config import ConfigError, load_settings
from bot.database import Database
from bot.i18n import translator
from handlers.stats import chart, duration_text, kind_labels, plain, report_text
from models import aid, cases, patrols, station_import, station_usage, stats
from models.cases import Case
from models.stats import Durations, Flow, Period, Report, Week

TZ = ZoneInfo("Asia/Shanghai")
RECURRING = ("11-15", "03-15")


@pytest.mark.parametrize(
    ("today", "expected"),
    [
        (date(2026, 12, 1), (date(2026, 11, 15), date(2027, 3, 15))),
        (date(2027, 2, 1), (date(2026, 11, 15), date(2027, 3, 15))),
        (date(2026, 11, 15), (date(2026, 11, 15), date(2027, 3, 15))),
        (date(2027, 6, 1), (date(2026, 11, 15), date(2027, 3, 15))),  # off season: the last one
        (date(2026, 11, 14), (date(2025, 11, 15), date(2026, 3, 15))),
    ],
)
def test_recurring_season_is_the_one_that_started_last(today: date, expected: tuple[date, date]) -> None:
    assert stats.season_range(*RECURRING, today) == expected


def test_fixed_season_leap_day_week_and_month() -> None:
    assert stats.season_range("2026-11-01", "2027-02-28", date(2030, 1, 1)) == (date(2026, 11, 1), date(2027, 2, 28))
    assert stats.season_range("12-01", "02-29", date(2026, 12, 5)) == (date(2026, 12, 1), date(2027, 2, 28))
    assert stats.season_range("12-01", "02-29", date(2027, 12, 5)) == (date(2027, 12, 1), date(2028, 2, 29))
    wednesday = date(2026, 12, 2)
    week = stats.period_of("week", wednesday, RECURRING)
    assert (week.first_day, week.last_day, week.code) == (date(2026, 11, 30), wednesday, "week")
    month = stats.period_of("month", wednesday, RECURRING)
    assert (month.first_day, month.last_day) == (date(2026, 12, 1), wednesday)
    with pytest.raises(ValueError):
        stats.period_of("year", wednesday, RECURRING)


def test_period_bounds_are_local_midnights() -> None:
    since, until = Period("custom", date(2026, 12, 1), date(2026, 12, 1)).bounds(TZ)
    assert (since, until) == (datetime(2026, 11, 30, 16, tzinfo=UTC), datetime(2026, 12, 1, 16, tzinfo=UTC))


@pytest.mark.parametrize(
    "text",
    ["2026-12-01 2026-12-31", "2026-12-01:2026-12-31", "2026-12-01 – 2026-12-31", " 2026-12-1 to 2026-12-31 "],
)
def test_typed_dates(text: str) -> None:
    period = stats.parse_dates(text)
    assert period is not None and (period.first_day, period.last_day) == (date(2026, 12, 1), date(2026, 12, 31))
    assert period.code == "20261201-20261231"
    assert stats.decode(period.code, date(2027, 1, 1), RECURRING) == period


@pytest.mark.parametrize(
    "text",
    [
        "",
        "soon",
        "2026-12-01",
        "2026-12-31 2026-12-01",  # backwards
        "2026-02-30 2026-03-01",  # no such day
        "2026-12-01 2026-12-31 2027-01-01",
        "2026-12-01 and 2026-12-31 please",
        "2020-01-01 2026-01-01",  # longer than MAX_DAYS
    ],
)
def test_bad_typed_dates(text: str) -> None:
    assert stats.parse_dates(text) is None


@pytest.mark.parametrize("code", ["year", "2026120120261231", "20261301-20261231", "20261231-20261201", ""])
def test_bad_codes(code: str) -> None:
    assert stats.decode(code, date(2026, 12, 1), RECURRING) is None


def test_median_and_p90_agree_with_numpy() -> None:
    rng = random.Random(8)
    assert stats.durations([]) == Durations()
    assert stats.durations([7.0]) == Durations(1, 7.0, 7.0)
    for size in (2, 3, 10, 11, 97):
        values = [rng.uniform(0, 600) for _ in range(size)]
        figures = stats.durations(values)
        assert figures.count == size
        assert figures.median == pytest.approx(numpy.median(values))
        assert figures.p90 == pytest.approx(numpy.percentile(values, 90))


def test_what_counts_as_given() -> None:
    assert aid.clean_kinds("help_food", ["escort", "food", "nonsense", "escort"]) == ["food", "escort"]
    assert aid.clean_kinds("help_money", []) == ["money"]
    assert aid.clean_kinds("no_help_wanted", ["food"]) == ["food"]
    assert aid.kind_of("help_escort") == "escort" and aid.kind_of("duplicate") is None
    allowed = ["blanket", "coat"]
    assert aid.clean_items({"coat": 2, "blanket": 0, "tent": 3, "x": -1}, allowed) == {"coat": 2}
    assert aid.clean_items({"blanket": 10**9}, allowed) == {"blanket": aid.MAX_ITEMS_PER_KIND}


def test_season_settings() -> None:
    settings = load_settings(None, season={"start": "2026-11-01", "end": "2027-03-01", "currency": "EUR"})
    assert (settings.season.start, settings.season.currency) == ("2026-11-01", "EUR")
    for bad, key in (
        ({"start": "11-31"}, "season.start"),
        ({"start": "2026-11-01"}, "season"),  # a full date with a month-day end
        ({"start": "2027-01-01", "end": "2026-01-01"}, "season"),
        ({"item_kinds": ["Blanket"]}, "season.item_kinds"),
        ({"item_kinds": ["coat", "coat"]}, "season.item_kinds"),
        ({"item_kinds": []}, "season.item_kinds"),
        ({"currency": "yuan"}, "season.currency"),
    ):
        with pytest.raises(ConfigError) as raised:
            load_settings(None, season=bad)
        assert str(raised.value).startswith(f"{key}: "), (bad, str(raised.value))


def test_durations_are_worded_compactly() -> None:
    t = translator("en")
    assert [duration_text(t, m) for m in (0, 59.4, 60, 61, 150, 47 * 60 + 59, 49 * 60)] == [
        "0 min",
        "59 min",
        "1 h",
        "1 h 1 min",
        "2 h 30 min",
        "47 h 59 min",
        "2 d 1 h",
    ]


# -- the chart -----------------------------------------------------------------------------------------------------


def sample_report(weeks: int = 17) -> Report:
    rng = random.Random(3)
    first = date(2026, 11, 16)
    report = Report(Period("season", first, first + timedelta(days=7 * weeks - 1)))
    report.requests = Flow(received=40)
    kinds = ["food", "bed", "medical", "supplies", "escort", "job", "paperwork", "money", "other", "report"]
    report.weeks = [
        Week(
            first + timedelta(days=7 * i),
            {k: rng.randint(0, 5) for k in rng.sample(kinds, 6)},
            None if i % 5 == 3 else rng.uniform(5, 90),
        )
        for i in range(weeks)
    ]
    return report


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


@pytest.mark.parametrize("language", ["en", "zh_Hans"])
def test_chart_is_a_png_of_the_promised_size_with_every_glyph(language: str) -> None:
    t = translator(language)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a missing glyph (Chinese labels without a CJK font) is a warning
        data = chart(t, sample_report())
    assert png_size(data) == (charts.WIDTH, charts.HEIGHT) and len(data) > 20_000
    one_week = chart(t, sample_report(weeks=1))
    assert png_size(one_week) == (charts.WIDTH, charts.HEIGHT)
    assert all(not label[:1].isspace() and "🍲" not in label for label in kind_labels(t).values())


def test_empty_report_says_so_in_each_language() -> None:
    settings = load_settings(None)
    report = Report(Period("week", date(2026, 11, 30), date(2026, 12, 2)))
    assert report.empty
    english = report_text(translator("en"), report, settings)
    assert english == (
        "📊 <b>Season report</b> · Nov 30, 2026 – Dec 2, 2026 (this week)\n"
        "Nothing in this period: no requests, reports, patrols, broadcasts or station use."
    )
    assert plain(english).startswith("📊 Season report · ")
    chinese = report_text(translator("zh_Hans"), report, settings)
    assert "本周" in chinese and "Nothing" not in chinese


# -- on the database -----------------------------------------------------------------------------------------------


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = Database(database_url)
    await database.upgrade()
    yield database
    await database.dispose()


async def test_station_usage_upserts_per_day(db: Database) -> None:
    async with db.session() as session:
        await station_import.import_stations(session, station_import.DEMO_FILE)
    async with db.session() as session:
        await station_usage.count(session, [1, 2, 2, 3], date(2026, 12, 1))
        await station_usage.count(session, [2, 3], date(2026, 12, 1))
        await station_usage.count(session, [2], date(2026, 12, 1), opened=True)
        await station_usage.count(session, [1], date(2026, 12, 2))
        await station_usage.count(session, [], date(2026, 12, 2))
    async with db.session() as session:
        day = await stats.compute(session, Period("custom", date(2026, 12, 1), date(2026, 12, 1)), TZ)
        both = await stats.compute(session, Period("custom", date(2026, 12, 1), date(2026, 12, 2)), TZ)
    assert [(s.station_id, s.shown, s.opened) for s in day.stations] == [(2, 2, 1), (3, 2, 0), (1, 1, 0)]
    assert (both.shown_total, both.opened_total) == (6, 1) and not both.empty


async def test_one_running_patrol_per_person_and_one_stop(db: Database) -> None:
    start = datetime(2026, 12, 1, 12, tzinfo=UTC)
    async with db.session() as session:
        first_id = (await patrols.start(session, 42, None, start))[0].id
    async with db.session() as session:
        again, created_again = await patrols.start(session, 42, None, start + timedelta(minutes=5))
    async with db.session() as session:
        other, created = await patrols.start(session, 43, None, start)
    assert first_id is not None and created and not created_again and again.id == first_id and other.id != first_id
    async with db.session() as session:
        assert await patrols.stop(session, first_id, 43, start, people_met=1, items={}, item_kinds=[]) is None
    async with db.session() as session:
        stopped = await patrols.stop(
            session,
            first_id,
            42,
            start + timedelta(hours=2),
            people_met=5000,
            items={"coat": 2, "tent": 1},
            item_kinds=["coat"],
        )
        assert stopped is not None
        assert (stopped.people_met, stopped.items, stopped.open_key) == (patrols.MAX_PEOPLE, {"coat": 2}, None)
    async with db.session() as session:
        assert await patrols.stop(session, first_id, 42, start, people_met=1, items={}, item_kinds=[]) is None
    async with db.session() as session:
        assert await patrols.running(session, 42) is None
        fresh, created = await patrols.start(session, 42, None, start + timedelta(hours=3))
    assert created and fresh.id != first_id


async def test_resolve_with_aid_records_once(db: Database) -> None:
    async with db.session() as session:
        case, _ = await cases.create(session, Case(categories=["food"], idempotency_key=uuid.uuid4().hex))
        assert case.id is not None
        won = await aid.resolve(
            session,
            case.id,
            7,
            "Staff",
            "help_food",
            kinds=["escort", "money"],
            items={"coat": 1},
            item_kinds=["coat"],
            amount=50.0,
        )
        again = await aid.resolve(session, case.id, 7, "Staff", "help_food", kinds=["escort"])
        await session.commit()
    async with db.session() as session:
        stored, given = await cases.get(session, case.id), await aid.get(session, case.id)
    assert won and not again
    assert stored is not None and stored.aid_amount == 50.0
    assert given is not None and (given.kinds, given.items) == (["food", "escort", "money"], {"coat": 1})
