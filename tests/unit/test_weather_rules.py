"""The cold-weather rules as pure functions: triggers and hysteresis, the same spell vs a new one, quiet hours, areas,
and the configuration that feeds them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from bot.config import ConfigError, load_settings
from bot.weather_areas import configured_areas
from bot.weather_jobs import outbox_window
from models.weather import (
    Area,
    Hour,
    Trigger,
    cold_reasons,
    current_spell,
    find_spell,
    locate,
    parse_minutes,
    polygon_centre,
    quiet_until,
    round_location,
    spell_over,
)

T0 = datetime(2027, 1, 14, 7, 0, tzinfo=UTC)  # 15:00 in Shanghai
TRIGGER = Trigger(min_temperature_c=-15, apparent_temperature_c=-20, snowfall_cm=2, min_hours=3, hysteresis_c=2)


def series(*temperatures: float, apparent: float | None = None, start: datetime = T0) -> list[Hour]:
    """Hours from `start`, one per temperature; feels like 5 degrees colder unless given."""
    return [
        Hour(start + timedelta(hours=i), t, apparent if apparent is not None else t - 5, 10.0, 0.0)
        for i, t in enumerate(temperatures)
    ]


def test_each_condition_and_the_hysteresis() -> None:
    assert cold_reasons(Hour(T0, -15.0, -10.0), TRIGGER) == ("temperature",)
    assert cold_reasons(Hour(T0, -5.0, -20.0), TRIGGER) == ("apparent",)
    assert cold_reasons(Hour(T0, 0.0, -3.0, 5.0, 2.5), TRIGGER) == ("snowfall",)
    assert cold_reasons(Hour(T0, -14.0, -19.0), TRIGGER) == ()
    assert cold_reasons(Hour(T0, -14.0, -19.0), TRIGGER, slack_c=2) == ("temperature", "apparent")
    assert cold_reasons(Hour(T0, None, None, None, None), TRIGGER) == ()  # missing values are not cold
    only_snow = Trigger(min_temperature_c=None, apparent_temperature_c=None, snowfall_cm=1)
    assert cold_reasons(Hour(T0, -40.0, -50.0, 0.0, 0.0), only_snow) == ()


def test_a_spell_needs_min_hours_in_a_row_and_extends_within_the_hysteresis() -> None:
    assert find_spell(series(-16, -16, 0, -16, -16, 0), TRIGGER, T0) is None  # never three hours in a row
    hours = series(0, 0, -16, -17, -18, -14, -13.5, -12, -20)
    spell = find_spell(hours, TRIGGER, T0)
    assert spell is not None
    assert spell.starts_at == T0 + timedelta(hours=2)
    # -14 and -13.5 are within 2 degrees of -15: the spell goes on; -12 ends it (the -20 after is another spell).
    assert spell.ends_at == T0 + timedelta(hours=7)
    assert (spell.min_temperature_c, spell.min_apparent_c, spell.reasons) == (-18, -23, ("temperature", "apparent"))


def test_only_hours_from_now_on_count() -> None:
    hours = series(-20, -20, -20, 5, 5, 5)
    assert find_spell(hours, TRIGGER, T0 + timedelta(hours=1, minutes=30)) is None  # two cold hours left
    assert find_spell(hours, TRIGGER, T0 + timedelta(minutes=59)) is not None


def test_a_gap_in_the_forecast_breaks_the_run() -> None:
    hours = [h for h in series(-20, -20, -20, -20) if h.time != T0 + timedelta(hours=2)]
    assert find_spell(hours, TRIGGER, T0) is None


def test_the_same_spell_goes_on_through_a_milder_afternoon() -> None:
    night = T0 + timedelta(hours=7)  # 22:00 local
    planned_end = night + timedelta(hours=8)
    # At 15:00 the night ahead is cold: the event's spell is still there (it has not started yet).
    hours = series(*([0.0] * 7 + [-18.0] * 8 + [0.0] * 10))
    spell = current_spell(hours, TRIGGER, T0, planned_end)
    assert spell is not None and spell.starts_at == night
    assert not spell_over(hours, TRIGGER, T0, planned_end)
    # The next morning a second cold night follows four mild hours (fewer than clear_hours = 6): one spell.
    morning = night + timedelta(hours=8)
    hours = series(*([0.0] * 4 + [-19.0] * 8 + [0.0] * 8), start=morning)
    spell = current_spell(hours, TRIGGER, morning, planned_end)
    assert spell is not None and spell.ends_at == morning + timedelta(hours=12)
    # Six clear hours and then cold again: that is another spell; this one is over.
    hours = series(*([0.0] * 7 + [-19.0] * 8), start=morning)
    assert current_spell(hours, TRIGGER, morning, planned_end) is None
    assert spell_over(hours, TRIGGER, morning, planned_end)


def test_over_needs_enough_forecast_and_a_cancelled_spell_is_over() -> None:
    planned_end = T0 + timedelta(hours=15)
    assert not spell_over(series(0, 0, 0), TRIGGER, T0, planned_end)  # three hours of data say nothing
    assert spell_over(series(*[0.0] * 24), TRIGGER, T0, planned_end)  # the forecast dropped the cold night


@pytest.mark.parametrize(
    ("local", "quiet", "until"),
    [
        ("23:30", (22 * 60, 7 * 60), "07:00+1"),
        ("06:59", (22 * 60, 7 * 60), "07:00"),
        ("07:00", (22 * 60, 7 * 60), None),
        ("21:59", (22 * 60, 7 * 60), None),
        ("13:00", (12 * 60, 14 * 60), "14:00"),
        ("14:00", (12 * 60, 14 * 60), None),
        ("03:00", (None, None), None),
        ("03:00", (60, 60), None),
    ],
)
def test_quiet_hours(local: str, quiet: tuple[int | None, int | None], until: str | None) -> None:
    zone = ZoneInfo("Asia/Shanghai")
    hour, minute = map(int, local.split(":"))
    now = datetime(2027, 1, 14, hour, minute, tzinfo=zone)
    found = quiet_until(quiet[0], quiet[1], now, zone)
    if until is None:
        assert found is None
        return
    clock, _, plus = until.partition("+")
    h, m = map(int, clock.split(":"))
    expected = datetime(2027, 1, 14 + int(plus or 0), h, m, tzinfo=zone)
    assert found == expected and found.tzinfo is not None


def test_quiet_hours_follow_the_local_clock_across_a_dst_change() -> None:
    zone = ZoneInfo("Europe/London")
    night = datetime(2027, 3, 28, 0, 30, tzinfo=zone)  # clocks go forward at 01:00
    found = quiet_until(23 * 60, 7 * 60, night, zone)
    assert found == datetime(2027, 3, 28, 7, 0, tzinfo=zone)
    assert found - night == timedelta(hours=5, minutes=30)  # one hour less than the clock face suggests


def test_parse_minutes() -> None:
    assert parse_minutes("22:30") == 1350 and parse_minutes("07:05") == 425
    assert parse_minutes("24:00") is None and parse_minutes("soon") is None


def test_locate_by_polygon_then_nearest_centre() -> None:
    square = ((31.85, 119.80), (31.85, 120.10), (31.60, 120.10), (31.60, 119.80))
    wujin = Area("wujin", "Wujin", 31.74, 119.955, "Asia/Shanghai", polygon=square)
    daqing = Area("daqing", "Daqing", 46.59, 125.10, "Asia/Shanghai")
    areas = [wujin, daqing]
    assert locate(areas, 31.84, 119.81, radius_m=1) is wujin  # the corner: inside the polygon, far from the centre
    assert locate(areas, 46.60, 125.20, radius_m=30_000) is daqing  # 8 km from the centre
    assert locate(areas, 46.90, 125.60, radius_m=30_000) is None  # 50 km away
    assert locate(areas, 39.9, 116.4, radius_m=30_000) is None
    lat, lon = polygon_centre(square)
    assert (round(lat, 3), round(lon, 3)) == (31.725, 119.95)
    assert round_location(31.71649, 119.95851) == (31.716, 119.959)


def test_weather_settings_are_validated_with_one_line_errors() -> None:
    with pytest.raises(ConfigError, match=r"weather\.areas\.0: expected a centre"):
        load_settings(None, weather={"areas": [{"key": "x", "name": "X"}]})
    with pytest.raises(ConfigError, match=r"weather\.areas\.0\.key"):
        load_settings(None, weather={"areas": [{"key": "Bad Key!", "name": "X", "lat": 1, "lon": 1}]})
    with pytest.raises(ConfigError, match="distinct keys"):
        area = {"key": "a", "name": "A", "lat": 1, "lon": 1}
        load_settings(None, weather={"areas": [area, area]})
    with pytest.raises(ConfigError, match="at least one of"):
        load_settings(None, weather={"trigger": {"min_temperature_c": None, "apparent_temperature_c": None}})
    with pytest.raises(ConfigError, match="IANA time zone"):
        load_settings(None, weather={"areas": [{"key": "a", "name": "A", "lat": 1, "lon": 1, "timezone": "Mars/Base"}]})


def test_configured_areas_take_the_polygon_centre_and_their_own_trigger() -> None:
    settings = load_settings(
        None,
        timezone="Asia/Shanghai",
        weather={
            "trigger": {"min_temperature_c": -15},
            "areas": [
                {"key": "poly", "name": "P", "polygon": [[0, 0], [0, 2], [2, 2], [2, 0]]},
                {"key": "cold", "name": "C", "lat": 46.6, "lon": 125.1, "trigger": {"min_temperature_c": -25}},
            ],
        },
    )
    areas = configured_areas(settings)
    assert (areas["poly"].lat, areas["poly"].lon, areas["poly"].timezone) == (1.0, 1.0, "Asia/Shanghai")
    assert areas["poly"].trigger.min_temperature_c == -15 and areas["cold"].trigger.min_temperature_c == -25
    assert configured_areas(settings) is areas  # built once


@pytest.mark.parametrize(
    ("options", "window"),
    [({}, 100), ({"telegram": {"overall_max_rate": 300.0}}, 600), ({"weather": {"paid_broadcast": True}}, 2000)],
)
def test_the_fan_out_keeps_about_two_seconds_of_sending_in_the_outbox(options: dict[str, object], window: int) -> None:
    assert outbox_window(load_settings(None, **options)) == window  # type: ignore[arg-type]
