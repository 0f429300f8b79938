"""Typed addresses and landmarks to coordinates: geopy's Nominatim client, rate limited, cached in the database."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta

from geopy.adapters import AioHTTPAdapter
from geopy.exc import GeopyError
from geopy.extra.rate_limiter import AsyncRateLimiter
from geopy.geocoders import Nominatim

from bot.config import GeocodingSettings
from bot.database import Database
from bot.i18n import telegram_code
from models import geocode_cache

log = logging.getLogger("waystation.geocoding")


@dataclass(frozen=True)
class Place:
    lat: float
    lon: float
    label: str


class GeocoderUnavailable(Exception):
    """The provider did not answer (network, 5xx, timeout): say so to the user, don't cache it."""


class Geocoder:
    def __init__(self, settings: GeocodingSettings, database: Database) -> None:
        self.settings = settings
        self.database = database
        self._client = Nominatim(
            user_agent=settings.user_agent,
            domain=settings.domain,
            scheme=settings.scheme,
            timeout=settings.timeout_seconds,
            adapter_factory=AioHTTPAdapter,
        )
        # geopy's limiter spaces calls (Nominatim: 1/s) and retries transient errors.
        self._geocode = AsyncRateLimiter(
            self._client.geocode,
            min_delay_seconds=settings.min_delay_seconds,
            max_retries=1,
            error_wait_seconds=min(2.0, settings.min_delay_seconds * 2),
            swallow_exceptions=False,
        )

    async def close(self) -> None:
        await self._client.adapter.__aexit__(None, None, None)

    async def geocode(self, query: str, language: str) -> Place | None:
        """The best match for `query`, or None when nothing matches; raises GeocoderUnavailable on errors."""
        query = " ".join(query.split())[:300]
        key = geocode_cache.cache_key(query, language)
        async with self.database.session() as session:
            cached = await geocode_cache.lookup(session, key, timedelta(days=self.settings.cache_days))
        if cached is not None:
            if not cached.found or cached.lat is None or cached.lon is None:
                return None
            return Place(cached.lat, cached.lon, cached.label or query)
        try:
            location = await self._geocode(
                query,
                exactly_one=True,
                language=telegram_code(language),
                country_codes=self.settings.country_codes or None,
            )
        except GeopyError as exc:
            log.warning("geocoder unavailable: %s", type(exc).__name__)
            raise GeocoderUnavailable from exc
        place = Place(location.latitude, location.longitude, location.address) if location else None
        entry = geocode_cache.GeocodeEntry(
            key=key,
            found=place is not None,
            lat=place.lat if place else None,
            lon=place.lon if place else None,
            label=place.label[:500] if place else None,
        )
        async with self.database.session() as session:
            await geocode_cache.store(session, entry)
        return place
