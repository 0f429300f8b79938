"""Staff: the people allowed to act on stations and cases, by Telegram id and role.

Roles are checked on every staff action (command or button), never only when a button was drawn.
"""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import BigInteger, Column, ForeignKey, Integer
from sqlmodel import Field, SQLModel, select
from sqlmodel.ext.asyncio.session import AsyncSession

from models.base import utcnow


class Role(enum.StrEnum):
    KEEPER = "keeper"  # keeps one station's status current
    RESPONDER = "responder"  # claims and resolves cases
    COORDINATOR = "coordinator"  # everything a responder does, plus broadcasts, rota and reports
    ADMIN = "admin"  # everything, plus managing staff and teams


# What each role may do; a role includes the abilities listed for it only (no implicit hierarchy surprises).
ABILITIES: dict[Role, frozenset[str]] = {
    Role.KEEPER: frozenset({"station.update"}),
    Role.RESPONDER: frozenset({"station.update", "case.act", "patrol"}),
    Role.COORDINATOR: frozenset({"station.update", "case.act", "patrol", "broadcast", "stats", "station.review"}),
    Role.ADMIN: frozenset(
        {"station.update", "case.act", "patrol", "broadcast", "stats", "station.review", "staff.manage"}
    ),
}


class Staff(SQLModel, table=True):
    __tablename__ = "staff"

    telegram_id: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    name: str = Field(max_length=200)
    role: str = Field(max_length=32)
    # A keeper keeps one station; other roles may act on every station.
    station_id: int | None = Field(
        default=None, sa_column=Column(Integer, ForeignKey("stations.id", ondelete="SET NULL"), nullable=True)
    )
    created_at: datetime = Field(default_factory=utcnow)

    def can(self, ability: str) -> bool:
        return ability in ABILITIES.get(Role(self.role), frozenset())

    def may_update_station(self, station_id: int) -> bool:
        if not self.can("station.update"):
            return False
        return self.role != Role.KEEPER or self.station_id == station_id


async def get(session: AsyncSession, telegram_id: int) -> Staff | None:
    return await session.get(Staff, telegram_id)


async def add(session: AsyncSession, telegram_id: int, name: str, role: Role, station_id: int | None = None) -> Staff:
    """Add or update a staff member (idempotent: the CLI can be re-run)."""
    member = await session.get(Staff, telegram_id) or Staff(telegram_id=telegram_id, name=name, role=role.value)
    member.name, member.role, member.station_id = name, role.value, station_id
    session.add(member)
    await session.commit()
    await session.refresh(member)
    return member


async def remove(session: AsyncSession, telegram_id: int) -> bool:
    member = await session.get(Staff, telegram_id)
    if member is None:
        return False
    await session.delete(member)
    await session.commit()
    return True


async def list_all(session: AsyncSession) -> list[Staff]:
    return list(await session.exec(select(Staff).order_by(Staff.role, Staff.name)))
