"""What the bot keeps about a person, /forgetme, and the retention purge of closed cases.

What a Telegram user leaves behind, table by table: ``users`` (language, first/last seen), their help requests and
identified reports (``cases`` + ``case_events`` + ``report_details``), anonymous reports (only a keyed hash of their
id in ``report_details.reporter_key``), a cold-weather subscription (``weather_subscriptions`` + deliveries), "report
wrong info" notes (``station_feedback``), unfinished forms (``persistence_data``, ``conversation_states``) and
messages to them in the ``outbox``. Staff records (``staff``, ``team_members``) are not touched: an admin manages them.

:func:`forget` removes all of it in the caller's transaction (it never commits). Cases are not deleted: they stay as
anonymous statistics — kind, categories, urgency flags, status, closing reason, amount, timestamps, the teams and the
staff side of the history — with every personal field blanked, the location rounded to about a kilometre
(``ROUND_DECIMALS``) and the free text of the history removed. Decisions:

* An **open request** is cancelled (status ``cancelled``, a "cancelled" event) and then anonymised: the person asked
  for their data to go, and staff cannot help someone they can no longer reach. The caller edits the staff cards and
  tells staff through the outbox (see ``handlers/forgetme.py``).
* An **open report** stays open with its content: the location and description are about someone out in the cold,
  whom outreach still has to find. Only the reporter is unlinked (no Telegram id, no phone, no outcome message). The
  retention purge anonymises it once it is closed.
* The keyed hash of a report sent in the last hour is kept until the hour is over, so /forgetme cannot reset the
  per-hour report limit.

:func:`purge` (the daily retention job and ``waystation privacy purge``) anonymises cases closed (resolved or
cancelled) more than N days ago the same way, and deletes what no longer serves anyone: unfinished forms and
``users`` rows not touched for N days, and geocoder answers (the landmarks people typed) older than the cache's age.
An ``anonymised`` case event marks a case as done, so every run only touches new cases.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, delete, exists, func, not_, or_, update
from sqlalchemy import select as sa_select
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from models import cases
from models.base import utcnow
from models.cases import OPEN_STATUSES, Case, CaseEvent, CaseKind, CaseStatus
from models.conversation_store import ConversationState, DataBlob, decode_key
from models.geocode_cache import GeocodeEntry
from models.outbox import FINISHED, OUTSTANDING, OutboxCard, OutboxItem
from models.reports import RATE_WINDOW, ReportDetails
from models.staff import Staff
from models.station_feedback import StationFeedback
from models.users import User
from models.weather import Delivery, Subscription

# Two decimals of a degree: about 1.1 km north-south — enough for "which area", not for "which doorway".
ROUND_DECIMALS = 2
ANONYMISED = "anonymised"  # the case event that marks a case as anonymised (detail: {"why": "forgetme"|"retention"})
CLOSED_STATUSES = (CaseStatus.RESOLVED.value, CaseStatus.CANCELLED.value)
# Case event details that are not free text (everything else is dropped when a case is anonymised).
KEPT_DETAIL = frozenset(
    {"reason", "amount", "outcome", "staff_id", "hours", "step", "notify", "repeat", "by", "why", "teams"}
)
BATCH = 200

_outbox = OutboxItem.__table__  # type: ignore[attr-defined]
_cards = OutboxCard.__table__  # type: ignore[attr-defined]
_events = CaseEvent.__table__  # type: ignore[attr-defined]
_cases = Case.__table__  # type: ignore[attr-defined]


# --- what is stored -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StoredCase:
    """One of the person's cases, as the summary lists it (what is kept, not the values themselves)."""

    id: int
    reference: str
    kind: str
    status: str
    description: bool
    place: bool
    location: bool
    phone: bool
    documents: int

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES


@dataclass(frozen=True)
class Summary:
    """Everything stored about one Telegram user (counts and kinds, for /forgetme to show)."""

    profile: User | None
    requests: list[StoredCase]
    reports: list[StoredCase]  # reports that carry their Telegram id (they agreed to be contacted)
    anonymous_reports: int  # reports linked to them only by the keyed hash
    limit_codes: int  # reports of the last hour that keep only the keyed hash, for the per-hour limit (not deleted)
    subscription: Subscription | None
    feedback: int
    forms: int  # unfinished forms and conversation steps
    messages: int  # messages to them still in the outbox (sent ones are kept a week, then pruned)
    staff_role: str | None  # not deleted by /forgetme

    @property
    def open_requests(self) -> list[StoredCase]:
        return [c for c in self.requests if c.is_open]

    @property
    def is_empty(self) -> bool:
        """Nothing /forgetme would delete (a staff record is not part of it)."""
        return not (
            self.profile
            or self.requests
            or self.reports
            or self.anonymous_reports
            or self.subscription
            or self.feedback
            or self.forms
            or self.messages
        )


def _stored(case: Case) -> StoredCase:
    assert case.id is not None
    return StoredCase(
        id=case.id,
        reference=case.reference or "",
        kind=case.kind,
        status=case.status,
        description=bool(case.description),
        place=bool(case.place_text),
        location=case.lat is not None,
        phone=bool(case.phone),
        documents=len(case.documents or []),
    )


def _not_anonymised() -> Any:
    return not_(exists().where(_events.c.case_id == _cases.c.id, _events.c.action == ANONYMISED))


async def _user_cases(session: AsyncSession, user_id: int) -> list[Case]:
    statement = select(Case).where(Case.requester_id == user_id).order_by(col(Case.created_at), col(Case.id))
    return list((await session.exec(statement)).all())


async def _keyed_reports(session: AsyncSession, reporter_key: str | None, now: datetime) -> tuple[list[Case], int]:
    """Reports sent under this keyed hash that forget() would change, and how many only keep the hash for the
    per-hour limit (open, sent in the last hour, no contact left: nothing else of the reporter in them)."""
    if not reporter_key:
        return [], 0
    statement = (
        select(Case, ReportDetails)
        .join(ReportDetails, col(ReportDetails.case_id) == col(Case.id))
        .where(ReportDetails.reporter_key == reporter_key, _not_anonymised())
        .order_by(col(Case.id))
    )
    found: list[Case] = []
    limit_only = 0
    for case, details in (await session.exec(statement)).all():
        contact = case.requester_id is not None or case.phone or details.may_contact or details.wants_outcome
        if case.is_open and details.created_at >= now - RATE_WINDOW and not contact:
            limit_only += 1
        else:
            found.append(case)
    return found, limit_only


async def _conversation_rows(session: AsyncSession, user_id: int) -> list[ConversationState]:
    """Conversation states whose key mentions the user (keys are (chat, user) or (user,) tuples)."""
    rows = await session.exec(select(ConversationState))
    return [row for row in rows if user_id in decode_key(row.key)]


async def summary(
    session: AsyncSession, user_id: int, *, reporter_key: str | None = None, now: datetime | None = None
) -> Summary:
    """What is stored about this Telegram user (``reporter_key``: reports.reporter_key() of their id)."""
    mine = await _user_cases(session, user_id)
    keyed, limit_only = await _keyed_reports(session, reporter_key, now or utcnow())
    anonymous = sum(1 for case in keyed if case.requester_id is None)
    blobs = await session.exec(
        select(func.count())
        .select_from(DataBlob)
        .where(DataBlob.owner_id == user_id, col(DataBlob.kind).in_(["user", "chat"]))
    )
    outbox_count = await session.exec(
        select(func.count())
        .select_from(OutboxItem)
        .where(OutboxItem.chat_id == user_id, col(OutboxItem.status).in_(OUTSTANDING))
    )
    feedback = await session.exec(
        select(func.count()).select_from(StationFeedback).where(StationFeedback.reporter_id == user_id)
    )
    member = await session.get(Staff, user_id)
    return Summary(
        profile=await session.get(User, user_id),
        requests=[_stored(c) for c in mine if c.kind == CaseKind.REQUEST.value],
        reports=[_stored(c) for c in mine if c.kind == CaseKind.REPORT.value],
        anonymous_reports=anonymous,
        limit_codes=limit_only,
        subscription=(await session.exec(select(Subscription).where(Subscription.chat_id == user_id))).first(),
        feedback=int(feedback.one()),
        forms=int(blobs.one()) + len(await _conversation_rows(session, user_id)),
        messages=int(outbox_count.one()),
        staff_role=member.role if member is not None else None,
    )


# --- anonymising one case -------------------------------------------------------------------------------------------


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, ROUND_DECIMALS)


async def anonymise_case(
    session: AsyncSession,
    case: Case,
    *,
    why: str,
    keep_key_since: datetime | None = None,
    scrub_messages: bool = True,
) -> None:
    """Blank every personal field of a case and its history, keep what statistics need (see the module docstring).

    ``keep_key_since``: a report created after this keeps its keyed reporter hash (the per-hour limit).
    ``scrub_messages=False``: the caller calls scrub_case_messages() itself, after comparing and editing the cards."""
    assert case.id is not None
    requester = case.requester_id
    case.requester_id = None
    case.description = None
    case.place_text = None
    case.phone = None
    case.documents = []
    case.last_note = None
    case.closing_note = None  # written by staff about the person: may name them or where they stay
    case.lat, case.lon = _rounded(case.lat), _rounded(case.lon)
    session.add(case)
    for event in await cases.events(session, case.id):
        detail = {k: v for k, v in (event.detail or {}).items() if k in KEPT_DETAIL}
        actor = None if requester is not None and event.actor_id == requester else event.actor_id
        if detail != event.detail or actor != event.actor_id:
            event.detail, event.actor_id = detail, actor
            session.add(event)
    details = await session.get(ReportDetails, case.id)
    if details is not None:
        details.photo_file_id = None
        details.seen_text = None
        details.may_contact = details.wants_outcome = False
        if keep_key_since is None or details.created_at < keep_key_since:
            details.reporter_key = f"{ANONYMISED}:{case.id}"
        session.add(details)
    if scrub_messages:
        await scrub_case_messages(session, [case.id])
    cases.add_event(session, case.id, ANONYMISED, why=why)


async def scrub_case_messages(session: AsyncSession, case_ids: list[int]) -> None:
    """Outbox rows about the cases: sent ones lose their text; unsent notifications and relayed answers go.

    Unsent card sends and edits stay (the caller's card edit supersedes the edits; a send must still happen so the
    card can be edited)."""
    connection = await session.connection()
    for case_id in case_ids:
        about = or_(
            _outbox.c.card_key.like(f"case:{case_id}:%"),
            _outbox.c.dedupe_key.like(f"case:{case_id}:%"),
            _outbox.c.dedupe_key.like(f"esc:{case_id}:%"),
        )
        await connection.execute(
            update(_outbox).where(about, _outbox.c.status.in_(FINISHED)).values(payload={ANONYMISED: True})
        )
        await connection.execute(
            delete(_outbox).where(
                _outbox.c.dedupe_key.like(f"case:{case_id}:event:%"), _outbox.c.status.in_(OUTSTANDING)
            )
        )


# --- /forgetme ------------------------------------------------------------------------------------------------------


@dataclass
class Forgotten:
    """What forget() did; the case lists are for the caller's card edits and staff notes."""

    cancelled: list[Case] = field(default_factory=list)  # open requests cancelled, then anonymised
    anonymised: list[Case] = field(default_factory=list)  # every anonymised case (the cancelled ones included)
    unlinked: list[Case] = field(default_factory=list)  # open reports kept open without the reporter
    deleted: dict[str, int] = field(default_factory=dict)  # table -> rows deleted

    @property
    def changed_cases(self) -> list[Case]:
        return [*self.anonymised, *self.unlinked]


async def forget(
    session: AsyncSession,
    user_id: int,
    *,
    reporter_key: str | None = None,
    now: datetime | None = None,
    scrub_messages: bool = True,
) -> Forgotten:
    """Delete or anonymise everything stored about a Telegram user, in the caller's transaction (never commits).

    Idempotent: a second call finds nothing left and changes nothing. ``scrub_messages``: see anonymise_case()."""
    now = now or utcnow()
    keep_key_since = now - RATE_WINDOW
    done = Forgotten()
    mine = {c.id: c for c in await _user_cases(session, user_id)}
    for case in (await _keyed_reports(session, reporter_key, now))[0]:
        mine.setdefault(case.id, case)
    for case in sorted(mine.values(), key=lambda c: c.id or 0):
        assert case.id is not None
        if case.kind == CaseKind.REPORT.value and case.is_open:
            await _unlink_reporter(session, case, keep_key_since)
            done.unlinked.append(case)
            continue
        if case.is_open and await cases.cancel_by_requester(session, case.id, user_id):
            await session.refresh(case)
            done.cancelled.append(case)
        await anonymise_case(
            session, case, why="forgetme", keep_key_since=keep_key_since, scrub_messages=scrub_messages
        )
        done.anonymised.append(case)
    connection = await session.connection()
    statements = {
        "users": delete(User.__table__).where(User.__table__.c.telegram_id == user_id),  # type: ignore[attr-defined]
        "weather_subscriptions": delete(Subscription.__table__).where(  # type: ignore[attr-defined]
            Subscription.__table__.c.chat_id == user_id  # type: ignore[attr-defined]
        ),
        # (models.weather.forget does these two deletes too, but commits: here they share the transaction)
        "weather_deliveries": delete(Delivery.__table__).where(  # type: ignore[attr-defined]
            Delivery.__table__.c.chat_id == user_id  # type: ignore[attr-defined]
        ),
        "station_feedback": delete(StationFeedback.__table__).where(  # type: ignore[attr-defined]
            StationFeedback.__table__.c.reporter_id == user_id  # type: ignore[attr-defined]
        ),
        "persistence_data": delete(DataBlob.__table__).where(  # type: ignore[attr-defined]
            DataBlob.__table__.c.owner_id == user_id,  # type: ignore[attr-defined]
            DataBlob.__table__.c.kind.in_(["user", "chat"]),  # type: ignore[attr-defined]
        ),
        "outbox": delete(_outbox).where(_outbox.c.chat_id == user_id),
        "outbox_cards": delete(_cards).where(_cards.c.chat_id == user_id),
    }
    for table, statement in statements.items():
        result = await connection.execute(statement)
        done.deleted[table] = int(result.rowcount or 0)
    conversations = await _conversation_rows(session, user_id)
    for row in conversations:
        await session.delete(row)
    done.deleted["conversation_states"] = len(conversations)
    await session.flush()
    return done


async def _unlink_reporter(session: AsyncSession, case: Case, keep_key_since: datetime) -> None:
    assert case.id is not None
    reporter = case.requester_id
    case.requester_id = None
    case.phone = None
    session.add(case)
    if reporter is not None:
        for event in await cases.events(session, case.id):
            if event.actor_id == reporter:
                event.actor_id = None
                session.add(event)
    details = await session.get(ReportDetails, case.id)
    if details is not None:
        details.may_contact = details.wants_outcome = False
        if details.created_at < keep_key_since:
            details.reporter_key = f"unlinked:{case.id}"
        session.add(details)
    connection = await session.connection()
    await connection.execute(
        delete(_outbox).where(_outbox.c.dedupe_key.like(f"case:{case.id}:event:%"), _outbox.c.status.in_(OUTSTANDING))
    )


# --- retention ------------------------------------------------------------------------------------------------------


@dataclass
class Purged:
    cases: int = 0  # closed cases anonymised
    forms: int = 0  # unfinished forms / conversation steps deleted
    users: int = 0  # users rows deleted (not seen for the period, nothing open)
    geocode: int = 0  # geocoder answers (typed landmarks) deleted
    case_ids: list[int] = field(default_factory=list)
    form_owners: set[int] = field(default_factory=set)  # user ids whose stored forms went (to drop in memory too)
    conversation_keys: list[tuple[str, tuple[int | str, ...]]] = field(default_factory=list)

    @property
    def total(self) -> int:
        return self.cases + self.forms + self.users + self.geocode


async def closed_before(session: AsyncSession, cutoff: datetime, *, limit: int = BATCH) -> list[Case]:
    """Closed cases last changed before `cutoff` that are not anonymised yet, oldest first."""
    statement = (
        select(Case)
        .where(col(Case.status).in_(CLOSED_STATUSES), col(Case.updated_at) < cutoff, _not_anonymised())
        .order_by(col(Case.updated_at), col(Case.id))
        .limit(limit)
    )
    return list((await session.exec(statement)).all())


async def purge(
    session: AsyncSession,
    older_than: timedelta,
    *,
    now: datetime | None = None,
    geocode_max_age: timedelta | None = None,
    forms: bool = True,
    dry_run: bool = False,
) -> Purged:
    """The retention purge; commits after each batch (a large backlog is not one long transaction).

    ``forms``: also delete stale form drafts and conversation steps (the running bot holds them in memory too, so
    only its own job should: see bot/retention.py). ``dry_run``: count what would go and change nothing."""
    now = now or utcnow()
    cutoff = now - older_than
    result = Purged()
    if dry_run:
        statement = select(col(Case.id)).where(
            col(Case.status).in_(CLOSED_STATUSES), col(Case.updated_at) < cutoff, _not_anonymised()
        )
        result.case_ids = [int(i) for i in (await session.exec(statement)).all() if i is not None]
        result.cases = len(result.case_ids)
    else:
        while batch := await closed_before(session, cutoff):
            for case in batch:
                assert case.id is not None
                await anonymise_case(session, case, why="retention")
                result.case_ids.append(case.id)
            result.cases += len(batch)
            await session.commit()  # the anonymised event takes them out of the next batch
    if forms:
        await _purge_forms(session, cutoff, result, dry_run=dry_run)
    result.users = await _purge_users(session, cutoff, dry_run=dry_run)
    if geocode_max_age is not None:
        stale = col(GeocodeEntry.created_at) < now - geocode_max_age
        if dry_run:
            result.geocode = int(
                (await session.exec(select(func.count()).select_from(GeocodeEntry).where(stale))).one()
            )
        else:
            deleted = await (await session.connection()).execute(delete(GeocodeEntry.__table__).where(stale))  # type: ignore[attr-defined]
            result.geocode = int(deleted.rowcount or 0)
    if dry_run:
        await session.rollback()
    else:
        await session.commit()
    return result


async def _purge_forms(session: AsyncSession, cutoff: datetime, result: Purged, *, dry_run: bool) -> None:
    """Per-user data (form drafts) and conversation steps nobody touched since `cutoff`; private chats only."""
    blobs = (
        await session.exec(
            select(DataBlob).where(
                col(DataBlob.updated_at) < cutoff,
                or_(col(DataBlob.kind) == "user", and_(col(DataBlob.kind) == "chat", col(DataBlob.owner_id) > 0)),
            )
        )
    ).all()
    states = (await session.exec(select(ConversationState).where(col(ConversationState.updated_at) < cutoff))).all()
    for blob in blobs:
        result.form_owners.add(blob.owner_id)
    for state in states:
        key = decode_key(state.key)
        result.conversation_keys.append((state.name, key))
    result.forms = len(blobs) + len(states)
    if not dry_run:
        for row in [*blobs, *states]:
            await session.delete(row)
        await session.flush()


async def _purge_users(session: AsyncSession, cutoff: datetime, *, dry_run: bool) -> int:
    """users rows not seen since `cutoff`, unless staff, subscribed, or waiting on an open case."""
    users = User.__table__  # type: ignore[attr-defined]
    staff = Staff.__table__  # type: ignore[attr-defined]
    subscriptions = Subscription.__table__  # type: ignore[attr-defined]
    condition = and_(
        users.c.last_seen < cutoff,
        not_(exists().where(staff.c.telegram_id == users.c.telegram_id)),
        not_(exists().where(subscriptions.c.chat_id == users.c.telegram_id)),
        not_(
            exists().where(
                _cases.c.requester_id == users.c.telegram_id,
                _cases.c.status.in_([s.value for s in OPEN_STATUSES]),
            )
        ),
    )
    connection = await session.connection()
    if dry_run:
        return int((await connection.execute(sa_select(func.count()).select_from(users).where(condition))).scalar_one())
    return int((await connection.execute(delete(users).where(condition))).rowcount or 0)
