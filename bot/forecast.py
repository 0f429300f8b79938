"""Weather forecasts for the cold-weather checks: a pluggable provider, Open-Meteo by default.

Open-Meteo's ``/v1/forecast`` needs no key. We ask for the next N hours at an area's centre: temperature, apparent
("feels like") temperature, wind speed and snowfall, hourly, in UTC as unix times. Any server speaking that API works
(a self-hosted Open-Meteo, or the sandbox's fake in tests and the demo).

Failures never escape as anything but `ForecastUnavailable`: network errors, timeouts, 429 and 5xx answers are retried
with exponential back-off (a 429's Retry-After is honoured), and so is an answer that is not the expected JSON (a
proxy's error page); a 4xx (our request is wrong) is not. The job records the short category and carries on with the
other areas; a forecast that stays stale is reported to coordinators (bot/weather_jobs.py). Nothing personal is ever
sent or logged here: only area coordinates.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Protocol

import httpx
from pydantic import BaseModel, ValidationError

from bot.config import WeatherSettings
from models.weather import Hour

log = logging.getLogger("waystation.forecast")

HOURLY_VARIABLES = ("temperature_2m", "apparent_temperature", "wind_speed_10m", "snowfall")
USER_AGENT = "waystation-bot (cold-weather alerts)"


class ForecastUnavailable(Exception):
    """The provider gave no usable forecast after its retries; `category` is short and safe to log and store."""

    def __init__(self, category: str) -> None:
        super().__init__(category)
        self.category = category


class ForecastProvider(Protocol):
    """What the weather job needs from a provider: the next `hours` hourly values at a point, oldest first."""

    async def hourly(self, lat: float, lon: float, hours: int) -> list[Hour]: ...

    async def close(self) -> None: ...


class _Hourly(BaseModel):
    time: list[int]
    temperature_2m: list[float | None]
    apparent_temperature: list[float | None]
    wind_speed_10m: list[float | None] = []
    snowfall: list[float | None] = []


class _Answer(BaseModel):
    hourly: _Hourly


class _Retry(Exception):
    def __init__(self, category: str, wait: float | None = None) -> None:
        super().__init__(category)
        self.category = category
        self.wait = wait


class OpenMeteo:
    """Open-Meteo's forecast API over httpx, with retries."""

    def __init__(
        self,
        url: str = "https://api.open-meteo.com/v1/forecast",
        *,
        timeout: float = 10.0,
        retries: int = 3,
        backoff: float = 2.0,
        client: httpx.AsyncClient | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.url = url
        self.retries = retries
        self.backoff = backoff
        self._sleep = sleep
        self._client = client or httpx.AsyncClient(timeout=timeout, headers={"User-Agent": USER_AGENT})

    async def close(self) -> None:
        await self._client.aclose()

    async def hourly(self, lat: float, lon: float, hours: int) -> list[Hour]:
        last = "unknown"
        for attempt in range(self.retries + 1):
            try:
                return await self._fetch(lat, lon, hours)
            except _Retry as retry:
                last = retry.category
                if attempt == self.retries:
                    break
                wait = retry.wait if retry.wait is not None else self.backoff * 2**attempt
                log.info(
                    "forecast: %s, attempt %d of %d; retrying in %.1f s", last, attempt + 1, self.retries + 1, wait
                )
                await self._sleep(wait)
        raise ForecastUnavailable(last)

    async def _fetch(self, lat: float, lon: float, hours: int) -> list[Hour]:
        params: dict[str, str | int | float] = {
            "latitude": round(lat, 4),
            "longitude": round(lon, 4),
            "hourly": ",".join(HOURLY_VARIABLES),
            "forecast_hours": hours,
            "timezone": "UTC",
            "timeformat": "unixtime",
            "wind_speed_unit": "kmh",
        }
        try:
            response = await self._client.get(self.url, params=params)
        except httpx.TimeoutException as exc:
            raise _Retry("timeout") from exc
        except httpx.HTTPError as exc:
            raise _Retry("network") from exc
        if response.status_code == 429:
            raise _Retry("rate_limited", _retry_after(response))
        if response.status_code >= 500:
            raise _Retry(f"server_error:{response.status_code}")
        if response.status_code >= 400:
            raise ForecastUnavailable(f"rejected:{response.status_code}")
        try:
            answer = _Answer.model_validate_json(response.content)
        except ValidationError as exc:  # a proxy's error page, a truncated answer: worth another try
            raise _Retry("bad_answer") from exc
        return _hours(answer.hourly)


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After", "")
    try:
        return max(0.0, min(float(value), 300.0))
    except ValueError:
        return None


def _hours(hourly: _Hourly) -> list[Hour]:
    n = len(hourly.time)
    columns = (hourly.temperature_2m, hourly.apparent_temperature, hourly.wind_speed_10m, hourly.snowfall)
    if any(column and len(column) != n for column in columns) or len(hourly.temperature_2m) != n:
        raise ForecastUnavailable("bad_answer")

    def at(column: list[float | None], i: int) -> float | None:
        return column[i] if column else None

    return [
        Hour(
            time=datetime.fromtimestamp(hourly.time[i], UTC),
            temperature_c=at(hourly.temperature_2m, i),
            apparent_c=at(hourly.apparent_temperature, i),
            wind_kmh=at(hourly.wind_speed_10m, i),
            snowfall_cm=at(hourly.snowfall, i),
        )
        for i in range(n)
    ]


def provider_from_settings(settings: WeatherSettings) -> ForecastProvider:
    """The configured provider (only Open-Meteo's API today; another is one class with `hourly` and `close`)."""
    return OpenMeteo(
        settings.forecast_url,
        timeout=settings.timeout_seconds,
        retries=settings.retries,
        backoff=settings.retry_backoff_seconds,
    )
