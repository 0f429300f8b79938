"""Imports every table module so SQLModel.metadata is complete (for migrations and tests)."""

from models import conversation_store, geocode_cache, staff, station_feedback, stations, users

__all__ = ["conversation_store", "geocode_cache", "staff", "station_feedback", "stations", "users"]
