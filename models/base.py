"""Shared column helpers for every table."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import BigInteger, Column
from sqlmodel import Field


def utcnow() -> datetime:
    """Aware UTC 'now' (sqlmodel stores aware datetimes and returns them in UTC on every backend)."""
    return datetime.now(UTC)


def telegram_id_field(*, primary_key: bool = False, index: bool = False, nullable: bool = False) -> int:
    """Telegram ids exceed 32 bits (groups are -100…): always a BIGINT column."""
    column = Column(BigInteger, primary_key=primary_key, index=index, nullable=nullable, autoincrement=False)
    return Field(sa_column=column)
