"""Cases: help requests (and, later, reports of someone in the cold) and every action taken on them.

A case has a human reference (WS-2026-000123), a status, and an append-only list of events (who, what, when).
State changes are single conditional UPDATEs, so two staff pressing Claim at once cannot both win.
Rendering and sending are not here: callers put the resulting notifications in the outbox in the same transaction.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Column, ForeignKey, Integer, String, Text, update
from sqlmodel import Field, SQLModel, col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from models.base import utcnow


class CaseKind(enum.StrEnum):
    REQUEST = "request"
    REPORT = "report"


class CaseStatus(enum.StrEnum):
    NEW = "new"
    CLAIMED = "claimed"
    NEED_INFO = "need_info"
    REFERRED = "referred"
    RESOLVED = "resolved"
    CANCELLED = "cancelled"


OPEN_STATUSES = frozenset({CaseStatus.NEW, CaseStatus.CLAIMED, CaseStatus.NEED_INFO, CaseStatus.REFERRED})

# Kinds of help a person can ask for (multi-select on the form).
HELP_KINDS: tuple[str, ...] = (
    "food",
    "bed",
    "medical",
    "supplies",
    "escort",
    "job",
    "paperwork",
    "money",
    "other",
)

# Closing reasons (Crisis Cleanup's lesson: say *why* a case closed). "help_*" count as help given.
HELP_GIVEN: tuple[str, ...] = (
    "help_food",
    "help_lodging",
    "help_medical",
    "help_escort",
    "help_job",
    "help_paperwork",
    "help_supplies",
    "help_money",
)
CLOSING_REASONS: tuple[str, ...] = (*HELP_GIVEN, "no_help_wanted", "unreachable", "duplicate", "out_of_scope")


class Case(SQLModel, table=True):
    __tablename__ = "cases"

    id: int | None = Field(default=None, primary_key=True)
    reference: str | None = Field(default=None, sa_column=Column(String(32), unique=True, nullable=True))
    kind: str = Field(default=CaseKind.REQUEST.value, max_length=16)
    # Who asked; None for anonymous reports and after /forgetme (the case stays as anonymous statistics).
    requester_id: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True, index=True))
    language: str = Field(default="en", max_length=16)
    categories: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    description: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    lat: float | None = None
    lon: float | None = None
    place_text: str | None = Field(default=None, max_length=300)
    phone: str | None = Field(default=None, max_length=32)
    documents: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    danger: bool = False
    minor: bool = False
    urgent: bool = False
    status: str = Field(default=CaseStatus.NEW.value, max_length=16, index=True)
    claimed_by: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    claimed_by_name: str | None = Field(default=None, max_length=200)
    claimed_at: datetime | None = None
    resolved_at: datetime | None = None
    closing_reason: str | None = Field(default=None, max_length=32)
    closing_note: str | None = Field(default=None, max_length=1000)
    aid_amount: float | None = None
    last_note: str | None = Field(default=None, max_length=1000)
    # The form's draft id: a second Submit (or a redelivered update) finds the case instead of making another.
    idempotency_key: str = Field(sa_column=Column(String(64), unique=True, nullable=False))
    consent_at: datetime | None = None
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES


class CaseEvent(SQLModel, table=True):
    """Append-only history of a case: never updated, never deleted except with the case."""

    __tablename__ = "case_events"

    id: int | None = Field(default=None, primary_key=True)
    case_id: int = Field(sa_column=Column(Integer, ForeignKey("cases.id", ondelete="CASCADE"), index=True))
    at: datetime = Field(default_factory=utcnow)
    actor_id: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    actor_name: str | None = Field(default=None, max_length=200)
    action: str = Field(max_length=32)
    detail: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))


def format_reference(prefix: str, year: int, case_id: int) -> str:
    return f"{prefix}-{year}-{case_id:06d}"


def add_event(
    session: AsyncSession,
    case_id: int,
    action: str,
    *,
    actor_id: int | None = None,
    actor_name: str | None = None,
    **detail: Any,
) -> CaseEvent:
    event = CaseEvent(case_id=case_id, action=action, actor_id=actor_id, actor_name=actor_name, detail=detail)
    session.add(event)
    return event


async def by_idempotency_key(session: AsyncSession, key: str) -> Case | None:
    return (await session.exec(select(Case).where(Case.idempotency_key == key))).first()


async def create(session: AsyncSession, case: Case, *, reference_prefix: str = "WS") -> tuple[Case, bool]:
    """Insert a case (flushed, not committed: the caller adds its outbox messages and commits).

    Returns (case, created); when a case with the same idempotency key exists, that one and False."""
    existing = await by_idempotency_key(session, case.idempotency_key)
    if existing is not None:
        return existing, False
    now = utcnow()
    case.created_at = case.updated_at = now
    case.urgent = case.urgent or case.danger or case.minor
    session.add(case)
    await session.flush()
    assert case.id is not None
    case.reference = format_reference(reference_prefix, now.year, case.id)
    add_event(session, case.id, "submitted", actor_id=case.requester_id)
    await session.flush()
    return case, True


MAX_CASE_ID = 2**31 - 1  # the id column is a 32-bit integer on PostgreSQL


async def get(session: AsyncSession, case_id: int) -> Case | None:
    """The case, or None — also for an id no case can have (forged callback data), which the driver would refuse."""
    if not 0 < case_id <= MAX_CASE_ID:
        return None
    return await session.get(Case, case_id)


async def by_reference(session: AsyncSession, reference: str) -> Case | None:
    return (await session.exec(select(Case).where(Case.reference == reference))).first()


async def _transition(
    session: AsyncSession, case_id: int, allowed_from: frozenset[CaseStatus] | set[CaseStatus], **values: Any
) -> bool:
    """One conditional UPDATE: True when this call moved the case (the database arbitrates races)."""
    if not 0 < case_id <= MAX_CASE_ID:
        return False  # no such case (forged callback data)
    statement = (
        update(Case)
        .where(col(Case.id) == case_id, col(Case.status).in_([s.value for s in allowed_from]))
        .values(updated_at=utcnow(), **values)
    )
    result = await session.exec(statement)
    return bool(result.rowcount == 1)


async def claim(session: AsyncSession, case_id: int, staff_id: int, staff_name: str) -> bool:
    """Claim an unclaimed open case; False when somebody else was first (or it is closed)."""
    now = utcnow()
    won = await _transition(
        session,
        case_id,
        {CaseStatus.NEW, CaseStatus.REFERRED},
        status=CaseStatus.CLAIMED.value,
        claimed_by=staff_id,
        claimed_by_name=staff_name,
        claimed_at=now,
    )
    if won:
        add_event(session, case_id, "claimed", actor_id=staff_id, actor_name=staff_name)
    return won


async def ask_info(session: AsyncSession, case_id: int, staff_id: int, staff_name: str, question: str) -> bool:
    won = await _transition(
        session, case_id, set(OPEN_STATUSES), status=CaseStatus.NEED_INFO.value, last_note=question[:1000]
    )
    if won:
        add_event(session, case_id, "need_info", actor_id=staff_id, actor_name=staff_name, question=question[:1000])
    return won


async def add_info(session: AsyncSession, case_id: int, requester_id: int, text: str) -> Case | None:
    """The requester answers (or adds information): back to claimed (or new when nobody claimed it)."""
    case = await session.get(Case, case_id)
    if case is None or case.requester_id != requester_id or not case.is_open:
        return None
    back_to = CaseStatus.CLAIMED if case.claimed_by is not None else CaseStatus.NEW
    await _transition(session, case_id, set(OPEN_STATUSES), status=back_to.value, last_note=text[:1000])
    add_event(session, case_id, "info_added", actor_id=requester_id, text=text[:1000])
    await session.refresh(case)
    return case


async def refer(session: AsyncSession, case_id: int, staff_id: int, staff_name: str, note: str) -> bool:
    won = await _transition(
        session,
        case_id,
        set(OPEN_STATUSES),
        status=CaseStatus.REFERRED.value,
        last_note=note[:1000],
        claimed_by=None,
        claimed_by_name=None,
    )
    if won:
        add_event(session, case_id, "referred", actor_id=staff_id, actor_name=staff_name, note=note[:1000])
    return won


async def resolve(
    session: AsyncSession,
    case_id: int,
    staff_id: int,
    staff_name: str,
    reason: str,
    note: str | None = None,
    amount: float | None = None,
) -> bool:
    if reason not in CLOSING_REASONS:
        raise ValueError(f"unknown closing reason {reason!r}")
    now = utcnow()
    won = await _transition(
        session,
        case_id,
        set(OPEN_STATUSES),
        status=CaseStatus.RESOLVED.value,
        resolved_at=now,
        closing_reason=reason,
        closing_note=(note or None) and note[:1000],
        aid_amount=amount,
    )
    if won:
        add_event(
            session,
            case_id,
            "resolved",
            actor_id=staff_id,
            actor_name=staff_name,
            reason=reason,
            note=note,
            amount=amount,
        )
    return won


async def cancel_by_requester(session: AsyncSession, case_id: int, requester_id: int) -> bool:
    case = await session.get(Case, case_id)
    if case is None or case.requester_id != requester_id:
        return False
    won = await _transition(session, case_id, set(OPEN_STATUSES), status=CaseStatus.CANCELLED.value)
    if won:
        add_event(session, case_id, "cancelled", actor_id=requester_id)
    return won


async def for_requester(session: AsyncSession, requester_id: int, limit: int = 10) -> list[Case]:
    statement = (
        select(Case)
        .where(Case.requester_id == requester_id)
        .order_by(col(Case.created_at).desc(), col(Case.id).desc())
        .limit(limit)
    )
    return list((await session.exec(statement)).all())


async def events(session: AsyncSession, case_id: int) -> list[CaseEvent]:
    statement = select(CaseEvent).where(CaseEvent.case_id == case_id).order_by(col(CaseEvent.at), col(CaseEvent.id))
    return list((await session.exec(statement)).all())


async def last_documents(session: AsyncSession, requester_id: int) -> list[str]:
    """Documents from the person's latest request that had any: offered again ("one set of documents")."""
    statement = (
        select(Case)
        .where(Case.requester_id == requester_id, Case.kind == CaseKind.REQUEST.value)
        .order_by(col(Case.created_at).desc())
        .limit(20)
    )
    for case in (await session.exec(statement)).all():
        if case.documents:
            return list(case.documents)
    return []
