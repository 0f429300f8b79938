"""Imports every table module so SQLModel.metadata is complete (for migrations and tests)."""

from models import (
    cases,
    conversation_store,
    geocode_cache,
    outbox,
    reports,
    staff,
    station_feedback,
    stations,
    teams,
    users,
    weather,
)

__all__ = [
    "cases",
    "conversation_store",
    "geocode_cache",
    "outbox",
    "reports",
    "staff",
    "station_feedback",
    "stations",
    "teams",
    "users",
    "weather",
]
