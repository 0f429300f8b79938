"""Outreach patrols logged by staff (/patrol): started in an area, stopped with the people met and items handed out.

A staff member has at most one patrol running: ``open_key`` holds their id while it runs (a unique column; NULL once
stopped), so a second start — a double tap, a redelivered update — finds the running patrol instead of making
another. Stopping is one conditional UPDATE, so a patrol is stopped once. Times come from the caller (the bot's
clock), so tests can play a whole season.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

from sqlalchemy import JSON, BigInteger, Column, ForeignKey, Integer, String, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Field, SQLModel, col, select
from sqlmodel.ext.asyncio.session import AsyncSession
from sqlmodel.sql.sqltypes import UTCDateTime

from models.aid import clean_items

MAX_PEOPLE = 999


class Patrol(SQLModel, table=True):
    __tablename__ = "patrols"

    id: int | None = Field(default=None, primary_key=True)
    staff_id: int = Field(sa_column=Column(BigInteger, nullable=False, index=True))
    # The team whose area was patrolled; None: no particular area (or the team was deleted since).
    team_id: int | None = Field(
        default=None, sa_column=Column(Integer, ForeignKey("teams.id", ondelete="SET NULL"), nullable=True)
    )
    open_key: str | None = Field(default=None, sa_column=Column(String(32), nullable=True, unique=True))
    started_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False, index=True))
    ended_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime(), nullable=True))
    people_met: int | None = Field(default=None, sa_column=Column(Integer, nullable=True))
    items: dict[str, int] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))

    @property
    def is_open(self) -> bool:
        return self.ended_at is None


def _open_key(staff_id: int) -> str:
    return str(staff_id)


async def running(session: AsyncSession, staff_id: int) -> Patrol | None:
    """The staff member's patrol in progress, if any."""
    statement = select(Patrol).where(Patrol.open_key == _open_key(staff_id))
    return (await session.exec(statement)).first()


async def start(session: AsyncSession, staff_id: int, team_id: int | None, now: datetime) -> tuple[Patrol, bool]:
    """Start a patrol (committed); (the running one, False) when one is already running."""
    current = await running(session, staff_id)
    if current is not None:
        return current, False
    patrol = Patrol(staff_id=staff_id, team_id=team_id, open_key=_open_key(staff_id), started_at=now)
    session.add(patrol)
    try:
        await session.commit()
    except IntegrityError:
        # The unique open_key: another start won the race; that patrol is the running one.
        await session.rollback()
        current = await running(session, staff_id)
        if current is None:
            raise
        return current, False
    await session.refresh(patrol)
    return patrol, True


async def stop(
    session: AsyncSession,
    patrol_id: int,
    staff_id: int,
    now: datetime,
    *,
    people_met: int,
    items: Mapping[str, int],
    item_kinds: Sequence[str],
) -> Patrol | None:
    """Stop a running patrol of this staff member (committed); None when it was already stopped (or is not theirs)."""
    statement = (
        update(Patrol)
        .where(col(Patrol.id) == patrol_id, col(Patrol.staff_id) == staff_id, col(Patrol.ended_at).is_(None))
        .values(
            ended_at=max(now, await _started(session, patrol_id) or now),
            open_key=None,
            people_met=max(0, min(MAX_PEOPLE, people_met)),
            items=clean_items(items, item_kinds),
        )
    )
    result = await session.exec(statement)
    if result.rowcount != 1:
        await session.rollback()
        return None
    await session.commit()
    return await session.get(Patrol, patrol_id, populate_existing=True)


async def _started(session: AsyncSession, patrol_id: int) -> datetime | None:
    patrol = await session.get(Patrol, patrol_id)
    return patrol.started_at if patrol is not None else None


async def get(session: AsyncSession, patrol_id: int) -> Patrol | None:
    return await session.get(Patrol, patrol_id)
