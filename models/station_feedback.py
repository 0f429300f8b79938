""" "Report wrong info" on a station card: stored for staff to review."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Column, ForeignKey, Integer
from sqlmodel import Field, SQLModel, select
from sqlmodel.ext.asyncio.session import AsyncSession

from models.base import utcnow

MAX_TEXT = 1000


class StationFeedback(SQLModel, table=True):
    __tablename__ = "station_feedback"

    id: int | None = Field(default=None, primary_key=True)
    station_id: int = Field(sa_column=Column(Integer, ForeignKey("stations.id", ondelete="CASCADE"), index=True))
    # Who said it, so staff can ask back; removed with /forgetme.
    reporter_id: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    text: str = Field(max_length=MAX_TEXT)
    created_at: datetime = Field(default_factory=utcnow)
    reviewed: bool = False


async def add(session: AsyncSession, station_id: int, reporter_id: int | None, text: str) -> StationFeedback:
    item = StationFeedback(station_id=station_id, reporter_id=reporter_id, text=text[:MAX_TEXT])
    session.add(item)
    await session.commit()
    await session.refresh(item)
    return item


async def open_items(session: AsyncSession, station_id: int | None = None) -> list[StationFeedback]:
    query = select(StationFeedback).where(StationFeedback.reviewed == False)  # noqa: E712
    if station_id is not None:
        query = query.where(StationFeedback.station_id == station_id)
    return list(await session.exec(query.order_by(StationFeedback.created_at)))  # type: ignore[arg-type]


async def mark_reviewed(session: AsyncSession, station_id: int) -> int:
    """Mark every open item of a station reviewed; returns how many."""
    items = await open_items(session, station_id)
    for item in items:
        item.reviewed = True
        session.add(item)
    await session.commit()
    return len(items)
