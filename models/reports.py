"""Reports of a person in need (journey 5): a case with kind "report", plus the facts only a report has.

Why a case: a report needs what a request already has — a reference, an append-only history, a status that two staff
cannot both move, alert cards routed by area, escalation and the outbox path. ``report_details`` (one row per report
case, same id) adds when the person was seen, how many people, the photo, what the reporter agreed to, and the end of
the story: found or not found, and the outcome — the season statistics count reports found / not found from here.

The reporter of an anonymous report is not stored: only a keyed hash of their Telegram id (not reversible without the
bot's secret), so the per-hour limit still applies to them.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import BigInteger, Boolean, Column, ForeignKey, Index, Integer, String, func, update
from sqlmodel import Field, SQLModel, col, select
from sqlmodel.ext.asyncio.session import AsyncSession
from sqlmodel.sql.sqltypes import UTCDateTime

from models import cases
from models.base import utcnow
from models.cases import OPEN_STATUSES, Case, CaseKind, CaseStatus

# When the person was seen: the form's choices; "typed" keeps the reporter's own words in seen_text.
SEEN_CHOICES: tuple[str, ...] = ("now", "within_hour", "earlier_today", "last_night")
SEEN_TYPED = "typed"
MAX_SEEN_TEXT = 100
MAX_PEOPLE = 99

# How a report ends. Every outcome but "already_gone" means outreach found the person.
OUTCOMES: tuple[str, ...] = (
    "helped_on_the_spot",
    "taken_to_shelter",
    "refused_help",
    "emergency_services",
    "already_gone",
)
NOT_FOUND_OUTCOMES = frozenset({"already_gone"})

RATE_WINDOW = timedelta(hours=1)


class ReportDetails(SQLModel, table=True):
    __tablename__ = "report_details"
    __table_args__ = (
        # "How many reports did this reporter send in the last hour?"
        Index("ix_report_details_reporter_key_created_at", "reporter_key", "created_at"),
    )

    case_id: int | None = Field(
        default=None,
        sa_column=Column(Integer, ForeignKey("cases.id", ondelete="CASCADE"), primary_key=True, autoincrement=False),
    )
    # HMAC of the reporter's Telegram id (see reporter_key()): rate limiting without keeping who reported.
    reporter_key: str = Field(sa_column=Column(String(64), nullable=False))
    people: int = Field(default=1, sa_column=Column(Integer, nullable=False))
    seen: str = Field(default="now", sa_column=Column(String(16), nullable=False))
    seen_text: str | None = Field(default=None, sa_column=Column(String(MAX_SEEN_TEXT), nullable=True))
    # Telegram file id of the optional photo (sent again to staff who open the details).
    photo_file_id: str | None = Field(default=None, sa_column=Column(String(255), nullable=True))
    may_contact: bool = Field(default=False, sa_column=Column(Boolean, nullable=False))
    wants_outcome: bool = Field(default=False, sa_column=Column(Boolean, nullable=False))
    # The search: None until staff record Found / Not found (or an outcome that implies it).
    found: bool | None = Field(default=None, sa_column=Column(Boolean, nullable=True))
    searched_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime(), nullable=True))
    searched_by: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    searched_by_name: str | None = Field(default=None, sa_column=Column(String(200), nullable=True))
    outcome: str | None = Field(default=None, sa_column=Column(String(32), nullable=True))
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))


class Search(enum.StrEnum):
    """What record_search() did."""

    RECORDED = "recorded"
    UNCHANGED = "unchanged"  # the same result was already recorded (a second tap)
    CLOSED = "closed"  # the report is closed or gone


@dataclass(frozen=True)
class Limit:
    """The reporter's standing against the per-hour limit."""

    sent: int
    allowed: int
    # When the oldest report in the window leaves it (only when the limit is reached).
    retry_at: datetime | None

    @property
    def reached(self) -> bool:
        return self.sent >= self.allowed


@dataclass(frozen=True)
class FoundCounts:
    found: int
    not_found: int
    unknown: int  # still open, or closed without a search result

    @property
    def total(self) -> int:
        return self.found + self.not_found + self.unknown


def reporter_key(secret: str, telegram_id: int) -> str:
    """A stable pseudonym for the per-hour limit: HMAC-SHA256 of the Telegram id under the bot's secret."""
    return hmac.new(secret.encode(), f"report:{telegram_id}".encode(), hashlib.sha256).hexdigest()


async def limit(session: AsyncSession, key: str, *, now: datetime, max_per_hour: int) -> Limit:
    """How many reports this reporter sent in the last hour, counted in the database (restarts change nothing)."""
    since = now - RATE_WINDOW
    statement = select(func.count(), func.min(ReportDetails.created_at)).where(
        ReportDetails.reporter_key == key, col(ReportDetails.created_at) > since
    )
    sent, oldest = (await session.exec(statement)).one()
    retry_at = oldest + RATE_WINDOW if sent >= max_per_hour and oldest is not None else None
    return Limit(sent=int(sent), allowed=max_per_hour, retry_at=retry_at)


async def create(
    session: AsyncSession,
    case: Case,
    details: ReportDetails,
    *,
    now: datetime,
    reference_prefix: str = "WS",
) -> tuple[Case, bool]:
    """Insert the report's case and details (flushed, not committed: the caller enqueues the cards and commits).

    Returns (case, created); the same idempotency key again returns the existing case and False."""
    case.kind = CaseKind.REPORT.value
    stored, created = await cases.create(session, case, reference_prefix=reference_prefix)
    if created:
        assert stored.id is not None
        details.case_id = stored.id
        details.created_at = now
        if details.seen != SEEN_TYPED:
            details.seen_text = None
        details.people = max(1, min(MAX_PEOPLE, details.people))
        session.add(details)
        await session.flush()
    return stored, created


async def get(session: AsyncSession, case_id: int) -> ReportDetails | None:
    return await session.get(ReportDetails, case_id)


async def _touch_open_case(session: AsyncSession, case_id: int) -> bool:
    """True when the case is an open report (and marks it updated): the gate for every staff change."""
    statement = (
        update(Case)
        .where(
            col(Case.id) == case_id,
            col(Case.kind) == CaseKind.REPORT.value,
            col(Case.status).in_([s.value for s in OPEN_STATUSES]),
        )
        .values(updated_at=utcnow())
    )
    result = await session.exec(statement)
    return bool(result.rowcount == 1)


async def record_search(session: AsyncSession, case_id: int, staff_id: int, staff_name: str, found: bool) -> Search:
    """Staff went and found the person (or not). An unclaimed report becomes theirs, so it stops escalating."""
    if not await _touch_open_case(session, case_id):
        return Search.CLOSED
    now = utcnow()
    statement = (
        update(ReportDetails)
        .where(
            col(ReportDetails.case_id) == case_id,
            col(ReportDetails.found).is_(None) | (col(ReportDetails.found) != found),
        )
        .values(found=found, searched_at=now, searched_by=staff_id, searched_by_name=staff_name[:200])
    )
    result = await session.exec(statement)
    if result.rowcount != 1:
        return Search.UNCHANGED
    case = await session.get(Case, case_id, populate_existing=True)
    if case is not None and case.status in (CaseStatus.NEW, CaseStatus.REFERRED):
        await cases.claim(session, case_id, staff_id, staff_name)
    cases.add_event(session, case_id, "found" if found else "not_found", actor_id=staff_id, actor_name=staff_name)
    await session.flush()
    return Search.RECORDED


async def resolve(session: AsyncSession, case_id: int, staff_id: int, staff_name: str, outcome: str) -> bool:
    """Close the report with its outcome; the search result follows from it when staff did not record one."""
    if outcome not in OUTCOMES:
        raise ValueError(f"unknown report outcome {outcome!r}")
    now = utcnow()
    statement = (
        update(Case)
        .where(
            col(Case.id) == case_id,
            col(Case.kind) == CaseKind.REPORT.value,
            col(Case.status).in_([s.value for s in OPEN_STATUSES]),
        )
        .values(status=CaseStatus.RESOLVED.value, resolved_at=now, updated_at=now)
    )
    if (await session.exec(statement)).rowcount != 1:
        return False
    details = await session.get(ReportDetails, case_id, populate_existing=True)
    if details is not None:
        details.outcome = outcome
        if details.found is None:
            details.found = outcome not in NOT_FOUND_OUTCOMES
            details.searched_at, details.searched_by, details.searched_by_name = now, staff_id, staff_name[:200]
        session.add(details)
    cases.add_event(session, case_id, "resolved", actor_id=staff_id, actor_name=staff_name, outcome=outcome)
    await session.flush()
    return True


async def found_counts(
    session: AsyncSession, *, since: datetime | None = None, until: datetime | None = None
) -> FoundCounts:
    """Reports found / not found / not (yet) known, by when they came in: for the season report."""
    statement = select(ReportDetails.found, func.count()).join(Case, col(Case.id) == col(ReportDetails.case_id))
    if since is not None:
        statement = statement.where(col(Case.created_at) >= since)
    if until is not None:
        statement = statement.where(col(Case.created_at) < until)
    counts: dict[bool | None, int] = {}
    for found, count in (await session.exec(statement.group_by(col(ReportDetails.found)))).all():
        counts[found] = int(count)
    return FoundCounts(found=counts.get(True, 0), not_found=counts.get(False, 0), unknown=counts.get(None, 0))
