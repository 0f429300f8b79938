"""What was given when a help request was resolved: the kinds of help, items handed out by kind, money paid.

One row per resolved case that ended with help given (``case_aid``), written in the same transaction as the
resolution, so the season report counts "20 escorts, 280 items handed out, ¥180,000 paid" from where the work
happened. The money amount stays on the case (``cases.aid_amount``), as before; this row adds the rest.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime

from sqlalchemy import JSON, BigInteger, Column, ForeignKey, Integer
from sqlmodel import Field, SQLModel
from sqlmodel.ext.asyncio.session import AsyncSession
from sqlmodel.sql.sqltypes import UTCDateTime

from models import cases
from models.base import utcnow
from models.cases import HELP_GIVEN

# Kinds of help given: the "help_*" closing reasons without their prefix (food, lodging, medical, escort, …).
GIVEN_KINDS: tuple[str, ...] = tuple(reason.removeprefix("help_") for reason in HELP_GIVEN)
MAX_ITEMS_PER_KIND = 9999


class CaseAid(SQLModel, table=True):
    __tablename__ = "case_aid"

    case_id: int = Field(
        sa_column=Column(Integer, ForeignKey("cases.id", ondelete="CASCADE"), primary_key=True, autoincrement=False)
    )
    # Every kind of help given (the closing reason's kind first); "escort" counts as an escort.
    kinds: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    # Items handed out: {"blanket": 2, "coat": 1}; only positive counts are kept.
    items: dict[str, int] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    given_by: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    given_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))


def kind_of(reason: str | None) -> str | None:
    """The kind of help a closing reason stands for ("help_escort" → "escort"), None for the others."""
    return reason.removeprefix("help_") if reason in HELP_GIVEN else None


def clean_kinds(reason: str, kinds: Iterable[str]) -> list[str]:
    """The reason's own kind first, then the other known kinds once each, in the usual order."""
    first = kind_of(reason)
    chosen = set(kinds) & set(GIVEN_KINDS)
    rest = [kind for kind in GIVEN_KINDS if kind in chosen and kind != first]
    return ([first] if first else []) + rest


def clean_items(items: Mapping[str, int], allowed: Sequence[str]) -> dict[str, int]:
    """Known item kinds with a positive count (capped), in the configured order."""
    out: dict[str, int] = {}
    for kind in allowed:
        count = items.get(kind, 0)
        if isinstance(count, int) and count > 0:
            out[kind] = min(count, MAX_ITEMS_PER_KIND)
    return out


async def resolve(
    session: AsyncSession,
    case_id: int,
    staff_id: int,
    staff_name: str,
    reason: str,
    note: str | None = None,
    *,
    kinds: Iterable[str] = (),
    items: Mapping[str, int] | None = None,
    item_kinds: Sequence[str] = (),
    amount: float | None = None,
) -> bool:
    """``cases.resolve`` plus what was given, in the caller's transaction; False when the case was already closed.

    The amount is kept only when money was among the kinds given."""
    given = clean_kinds(reason, kinds)
    paid = amount if "money" in given else None
    won = await cases.resolve(session, case_id, staff_id, staff_name, reason, note, paid)
    if won and given:
        session.add(
            CaseAid(
                case_id=case_id,
                kinds=given,
                items=clean_items(items or {}, item_kinds),
                given_by=staff_id,
                given_at=utcnow(),
            )
        )
        await session.flush()
    return won


async def get(session: AsyncSession, case_id: int) -> CaseAid | None:
    return await session.get(CaseAid, case_id)
