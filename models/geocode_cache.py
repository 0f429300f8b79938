"""Geocoder answers kept in the database: the same landmark typed twice costs one request to the provider."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import Column, String
from sqlmodel import Field, SQLModel
from sqlmodel.ext.asyncio.session import AsyncSession

from models.base import utcnow


class GeocodeEntry(SQLModel, table=True):
    __tablename__ = "geocode_cache"

    # Normalised query + language, e.g. "zh_Hans|武进区湖塘镇".
    key: str = Field(sa_column=Column(String(600), primary_key=True))
    found: bool
    lat: float | None = None
    lon: float | None = None
    label: str | None = Field(default=None, max_length=500)
    created_at: datetime = Field(default_factory=utcnow)


def cache_key(query: str, language: str) -> str:
    return f"{language}|{' '.join(query.casefold().split())}"[:600]


async def lookup(session: AsyncSession, key: str, max_age: timedelta) -> GeocodeEntry | None:
    entry = await session.get(GeocodeEntry, key)
    if entry is None or utcnow() - entry.created_at > max_age:
        return None
    return entry


async def store(session: AsyncSession, entry: GeocodeEntry) -> None:
    await session.merge(entry)
    await session.commit()
