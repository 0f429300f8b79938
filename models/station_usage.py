"""How often each station was shown in a result list and opened (its card), per local day: for the season report.

One row per station and day, bumped with a single INSERT … ON CONFLICT DO UPDATE for every station of a result page:
one round trip, no read first, so counting never slows a search down noticeably. Nothing about who searched is kept.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date

from sqlalchemy import Column, Date, ForeignKey, Integer
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import Field, SQLModel
from sqlmodel.ext.asyncio.session import AsyncSession


class StationUsage(SQLModel, table=True):
    __tablename__ = "station_usage"

    station_id: int = Field(
        sa_column=Column(Integer, ForeignKey("stations.id", ondelete="CASCADE"), primary_key=True, autoincrement=False)
    )
    day: date = Field(sa_column=Column(Date, primary_key=True))
    shown: int = Field(default=0, sa_column=Column(Integer, nullable=False))
    opened: int = Field(default=0, sa_column=Column(Integer, nullable=False))


_usage = StationUsage.__table__  # type: ignore[attr-defined]


async def count(session: AsyncSession, station_ids: Iterable[int], day: date, *, opened: bool = False) -> None:
    """Add one "shown" (or "opened") to each station for the day, and commit."""
    ids = sorted(set(station_ids))
    if not ids:
        return
    column = "opened" if opened else "shown"
    connection = await session.connection()
    insert = pg_insert if connection.dialect.name == "postgresql" else sqlite_insert
    statement = insert(_usage).values(
        [{"station_id": station_id, "day": day, "shown": int(not opened), "opened": int(opened)} for station_id in ids]
    )
    statement = statement.on_conflict_do_update(
        index_elements=[_usage.c.station_id, _usage.c.day],
        set_={column: _usage.c[column] + 1},
    )
    await connection.execute(statement)
    await session.commit()
