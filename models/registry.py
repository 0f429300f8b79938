"""Imports every table module so SQLModel.metadata is complete (for migrations and tests)."""

from models import (
    aid,
    cases,
    conversation_store,
    geocode_cache,
    outbox,
    patrols,
    reports,
    staff,
    station_feedback,
    station_usage,
    stations,
    teams,
    users,
    weather,
)

__all__ = [
    "aid",
    "cases",
    "conversation_store",
    "geocode_cache",
    "outbox",
    "patrols",
    "reports",
    "staff",
    "station_feedback",
    "station_usage",
    "stations",
    "teams",
    "users",
    "weather",
]
