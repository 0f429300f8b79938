"""A local server speaking Open-Meteo's ``/v1/forecast`` JSON, for tests and the demo page.

It answers like the real API for the parameters the bot uses (latitude, longitude, hourly variables, forecast_hours
or forecast_days, timezone UTC/GMT, timeformat iso8601 or unixtime) and rejects what the real one rejects (missing
coordinates, unknown variables) with ``{"error": true, "reason": …}``. What it forecasts is set from the test:

    async with FakeOpenMeteo() as meteo:
        meteo.clock = lambda: frozen_now                       # the forecast starts at this hour
        meteo.set_weather(31.70, 119.94, start, hours=12, temperature=-18, apparent=-25)
        meteo.fail(3, "500")                                   # the next 3 requests fail
        ... settings: weather.forecast_url = meteo.url

The demo page can do the same over HTTP: ``POST /control/weather`` (the arguments of `set_weather` as JSON, times
in ISO 8601), ``POST /control/fail`` (``{"count": 3, "kind": "500"}``), ``POST /control/reset``, ``GET /control``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any, Literal

from aiohttp import web

FaultKind = Literal["500", "503", "429", "timeout", "drop", "garbage"]
VARIABLES = {"temperature_2m", "apparent_temperature", "wind_speed_10m", "snowfall", "wind_gusts_10m"}
UNITS = {
    "time": "unixtime",
    "temperature_2m": "°C",
    "apparent_temperature": "°C",
    "wind_speed_10m": "km/h",
    "wind_gusts_10m": "km/h",
    "snowfall": "cm",
}


@dataclass
class Weather:
    temperature: float = 5.0
    apparent: float = 3.0
    wind: float = 10.0
    snowfall: float = 0.0

    def value(self, variable: str) -> float:
        return {
            "temperature_2m": self.temperature,
            "apparent_temperature": self.apparent,
            "wind_speed_10m": self.wind,
            "wind_gusts_10m": self.wind * 1.5,
            "snowfall": self.snowfall,
        }[variable]


@dataclass
class Request:
    latitude: float
    longitude: float
    params: dict[str, str]
    status: int


@dataclass
class FakeOpenMeteo:
    """The fake forecast server. Weather is set per point (coordinates rounded to 2 decimals) and per UTC hour."""

    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    default: Weather = field(default_factory=Weather)
    # (lat, lon) rounded → UTC hour → weather
    points: dict[tuple[float, float], dict[datetime, Weather]] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    timeout_seconds: float = 30.0  # how long a "timeout" fault hangs before answering
    _faults: list[FaultKind] = field(default_factory=list)
    _runner: web.AppRunner | None = None
    host: str = "127.0.0.1"
    port: int = 0

    # -- lifecycle -------------------------------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        app = web.Application()
        app.router.add_get("/v1/forecast", self._forecast)
        app.router.add_get("/control", self._control_state)
        app.router.add_post("/control/weather", self._control_weather)
        app.router.add_post("/control/fail", self._control_fail)
        app.router.add_post("/control/reset", self._control_reset)
        self._runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=1.0, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        self.host, self.port = host, int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeOpenMeteo:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    @property
    def url(self) -> str:
        """The value for `weather.forecast_url`."""
        return f"http://{self.host}:{self.port}/v1/forecast"

    # -- control ---------------------------------------------------------------------------------------------

    def set_weather(
        self,
        lat: float,
        lon: float,
        start: datetime,
        hours: int,
        *,
        temperature: float,
        apparent: float | None = None,
        wind: float = 10.0,
        snowfall: float = 0.0,
    ) -> None:
        """The weather at (lat, lon) for `hours` hours from `start` (rounded down to the hour)."""
        series = self.points.setdefault(_key(lat, lon), {})
        first = _hour(start)
        for n in range(hours):
            series[first + timedelta(hours=n)] = Weather(
                temperature, apparent if apparent is not None else temperature - 2, wind, snowfall
            )

    def clear(self, lat: float | None = None, lon: float | None = None) -> None:
        """Back to the default weather (at one point, or everywhere)."""
        if lat is None or lon is None:
            self.points.clear()
        else:
            self.points.pop(_key(lat, lon), None)

    def fail(self, count: int, kind: FaultKind = "500") -> None:
        """The next `count` forecast requests fail this way."""
        self._faults.extend([kind] * count)

    @property
    def pending_faults(self) -> int:
        return len(self._faults)

    # -- the API ---------------------------------------------------------------------------------------------

    async def _forecast(self, request: web.Request) -> web.StreamResponse:
        query = dict(request.query)
        latitude, longitude = _number(query.get("latitude")), _number(query.get("longitude"))
        fault = self._faults.pop(0) if self._faults else None
        if fault is not None:
            self.requests.append(Request(latitude or 0.0, longitude or 0.0, query, 0 if fault == "drop" else 500))
            return await self._fault(request, fault)
        if latitude is None or longitude is None:
            return self._error(request, query, "Parameter 'latitude' and 'longitude' must be numbers")
        if not (-90 <= latitude <= 90 and -180 <= longitude <= 180):
            return self._error(request, query, "Latitude must be in range of -90 to 90°. Given: out of range.")
        variables = [v for v in query.get("hourly", "").split(",") if v]
        unknown = [v for v in variables if v not in VARIABLES]
        if unknown:
            return self._error(
                request, query, f"Cannot initialize WeatherVariable from invalid String value {unknown[0]}"
            )
        if query.get("timezone", "GMT").upper() not in ("GMT", "UTC"):
            return self._error(request, query, "Only GMT/UTC is supported by this fake")
        now = self.clock().astimezone(UTC)
        if "forecast_hours" in query:
            count = int(_number(query["forecast_hours"]) or 0)
            first = _hour(now)
        else:
            count = 24 * int(_number(query.get("forecast_days", "7")) or 7)
            first = now.replace(hour=0, minute=0, second=0, microsecond=0)
        if not 0 < count <= 16 * 24:
            return self._error(request, query, "Forecast hours is out of allowed range")
        times = [first + timedelta(hours=n) for n in range(count)]
        series = self.points.get(_key(latitude, longitude), {})
        unixtime = query.get("timeformat", "iso8601") == "unixtime"
        hourly: dict[str, list[Any]] = {
            "time": [int(t.timestamp()) if unixtime else t.strftime("%Y-%m-%dT%H:%M") for t in times]
        }
        for variable in variables:
            hourly[variable] = [series.get(t, self.default).value(variable) for t in times]
        self.requests.append(Request(latitude, longitude, query, 200))
        body = {
            "latitude": latitude,
            "longitude": longitude,
            "generationtime_ms": 0.1,
            "utc_offset_seconds": 0,
            "timezone": "GMT",
            "timezone_abbreviation": "GMT",
            "elevation": 10.0,
            "hourly_units": {v: UNITS[v] if v != "time" or unixtime else "iso8601" for v in ["time", *variables]},
            "hourly": hourly,
        }
        return web.json_response(body)

    def _error(self, request: web.Request, query: dict[str, str], reason: str) -> web.Response:
        self.requests.append(Request(0.0, 0.0, query, 400))
        return web.json_response({"error": True, "reason": reason}, status=400)

    async def _fault(self, request: web.Request, fault: FaultKind) -> web.StreamResponse:
        if fault == "drop":
            if request.transport is not None:
                request.transport.abort()
            return web.Response(status=500)
        if fault == "timeout":
            await asyncio.sleep(self.timeout_seconds)
            return web.json_response({"error": True, "reason": "late"}, status=504)
        if fault == "garbage":
            return web.Response(text="<html>maintenance</html>", content_type="text/html")
        if fault == "429":
            return web.json_response(
                {"error": True, "reason": "Too many concurrent requests"}, status=429, headers={"Retry-After": "0"}
            )
        return web.json_response({"error": True, "reason": "Internal Server Error"}, status=int(fault))

    # -- control over HTTP (the demo page) -------------------------------------------------------------------

    async def _control_state(self, _request: web.Request) -> web.Response:
        points = {
            f"{lat},{lon}": {t.isoformat(): asdict(w) for t, w in sorted(series.items())}
            for (lat, lon), series in self.points.items()
        }
        return web.json_response(
            {"now": self.clock().isoformat(), "default": asdict(self.default), "points": points, "faults": self._faults}
        )

    async def _control_weather(self, request: web.Request) -> web.Response:
        try:
            data = await request.json()
            start = datetime.fromisoformat(str(data.get("start") or self.clock().isoformat()))
            if start.tzinfo is None:
                start = start.replace(tzinfo=UTC)
            self.set_weather(
                float(data["lat"]),
                float(data["lon"]),
                start,
                int(data.get("hours", 24)),
                temperature=float(data["temperature"]),
                apparent=float(data["apparent"]) if data.get("apparent") is not None else None,
                wind=float(data.get("wind", 10.0)),
                snowfall=float(data.get("snowfall", 0.0)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            return web.json_response(
                {"error": True, "reason": f"bad control request: {type(exc).__name__}"}, status=400
            )
        return web.json_response({"ok": True})

    async def _control_fail(self, request: web.Request) -> web.Response:
        try:
            data = await request.json()
            kind = str(data.get("kind", "500"))
            if kind not in ("500", "503", "429", "timeout", "drop", "garbage"):
                raise ValueError(kind)
            self.fail(int(data.get("count", 1)), kind)  # type: ignore[arg-type]
        except (TypeError, ValueError) as exc:
            return web.json_response(
                {"error": True, "reason": f"bad control request: {type(exc).__name__}"}, status=400
            )
        return web.json_response({"ok": True})

    async def _control_reset(self, _request: web.Request) -> web.Response:
        self.points.clear()
        self._faults.clear()
        self.default = Weather()
        return web.json_response({"ok": True})


def _bad_control(exc: Exception) -> web.Response:
    return web.json_response({"error": True, "reason": f"bad control request: {type(exc).__name__}"}, status=400)


def _key(lat: float, lon: float) -> tuple[float, float]:
    return round(lat, 2), round(lon, 2)


def _hour(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def _number(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
