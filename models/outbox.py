"""The durable outbox: every message that is not a direct reply is written here first, then sent by a worker.

Staff alerts, card edits, status notifications, escalations and broadcasts are enqueued *in the same transaction* as
the change that causes them (`await enqueue_message(session, …)` then the caller's `commit()`): if the change is
rolled back nothing is sent, and once it is committed the message is sent even if the process dies right after.
`bot/outbox.py` (the worker) sends the items; this module holds the table and every statement on it, and never
imports Telegram.

Life of an item: ``pending`` → (claimed by a worker) ``sending`` → ``sent`` | ``failed``, or back to ``pending``
with a later ``next_attempt_at`` after a transient error. Older edits of a card that a newer edit replaces become
``superseded``. While an item is ``sending``, ``next_attempt_at`` is the claiming worker's lease deadline: a worker
that finds an expired lease (its owner crashed) puts the item back to ``pending``.

Order: items of one chat are sent in id order; an item that waits for a retry holds back the later items of its
chat (not other chats). Items scheduled for later (``not_before`` in the future) do not hold anything back.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Index,
    Integer,
    LargeBinary,
    String,
    bindparam,
    delete,
    exists,
    func,
    or_,
    update,
)
from sqlalchemy import select as sa_select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import configure_mappers
from sqlmodel import Field, SQLModel, select
from sqlmodel.ext.asyncio.session import AsyncSession
from sqlmodel.sql.sqltypes import UTCDateTime

from models.base import utcnow

# Bot API methods the worker knows how to send (see bot/outbox.py). The payload holds the method's parameters
# by their Bot API / python-telegram-bot names; photo bytes go in `attachment`.
SEND_MESSAGE = "sendMessage"
EDIT_MESSAGE_TEXT = "editMessageText"
SEND_LOCATION = "sendLocation"
SEND_VENUE = "sendVenue"
SEND_PHOTO = "sendPhoto"
METHODS = frozenset({SEND_MESSAGE, EDIT_MESSAGE_TEXT, SEND_LOCATION, SEND_VENUE, SEND_PHOTO})
# Methods whose success creates a message that may be recorded under a card key.
SENDING_METHODS = frozenset({SEND_MESSAGE, SEND_LOCATION, SEND_VENUE, SEND_PHOTO})

CARD_KEY_LENGTH = 128
DEDUPE_KEY_LENGTH = 200
ERROR_LENGTH = 64


class OutboxStatus(enum.StrEnum):
    PENDING = "pending"
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"
    SUPERSEDED = "superseded"


OUTSTANDING = (OutboxStatus.PENDING.value, OutboxStatus.SENDING.value)
FINISHED = (OutboxStatus.SENT.value, OutboxStatus.FAILED.value, OutboxStatus.SUPERSEDED.value)


class OutboxItem(SQLModel, table=True):
    """One Bot API call to make (a message to send or a card to edit)."""

    __tablename__ = "outbox"
    __table_args__ = (
        # "What is due?": pending items by time; also finds expired leases (status 'sending').
        Index("ix_outbox_status_next_attempt_at", "status", "next_attempt_at"),
        # Per-chat order: "is an earlier item of this chat still outstanding?"
        Index("ix_outbox_chat_id_status_id", "chat_id", "status", "id"),
        # Edits of a card: supersede older ones, find the card's send.
        Index("ix_outbox_card_key", "card_key"),
        # Enqueuing the same key twice keeps one item (NULLs are distinct on SQLite and PostgreSQL).
        Index("ux_outbox_dedupe_key", "dedupe_key", unique=True),
    )

    id: int | None = Field(default=None, sa_column=Column(Integer, primary_key=True, autoincrement=True))
    method: str = Field(sa_column=Column(String(32), nullable=False))
    chat_id: int = Field(sa_column=Column(BigInteger, nullable=False))
    # Parameters of the call except chat_id/message_id (text, parse_mode, reply_markup as Bot API JSON, …).
    payload: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    # File bytes for sendPhoto and the like (none for text messages).
    attachment: bytes | None = Field(default=None, sa_column=Column(LargeBinary, nullable=True))
    # sendMessage: the card this message becomes; editMessageText: the card it edits.
    card_key: str | None = Field(default=None, sa_column=Column(String(CARD_KEY_LENGTH), nullable=True))
    dedupe_key: str | None = Field(default=None, sa_column=Column(String(DEDUPE_KEY_LENGTH), nullable=True))
    status: str = Field(default=OutboxStatus.PENDING.value, sa_column=Column(String(16), nullable=False))
    # Telegram calls made for this item (a flood-control answer is not counted: it says exactly when to retry).
    attempts: int = Field(default=0, sa_column=Column(Integer, nullable=False))
    # Scheduled sending time given by the caller (None: as soon as possible).
    not_before: datetime | None = Field(default=None, sa_column=Column(UTCDateTime(), nullable=True))
    # pending: not before this time; sending: the claiming worker's lease deadline.
    next_attempt_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))
    # A short category ("network", "forbidden:blocked", "bad_request:html"…), never message text.
    last_error: str | None = Field(default=None, sa_column=Column(String(ERROR_LENGTH), nullable=True))
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))
    sent_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime(), nullable=True))
    telegram_message_id: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))


class OutboxCard(SQLModel, table=True):
    """Where a card was sent: card key → (chat id, message id), recorded when its sendMessage succeeds."""

    __tablename__ = "outbox_cards"

    card_key: str = Field(sa_column=Column(String(CARD_KEY_LENGTH), primary_key=True))
    chat_id: int = Field(sa_column=Column(BigInteger, nullable=False))
    message_id: int = Field(sa_column=Column(BigInteger, nullable=False))
    updated_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))


class UnknownCard(LookupError):
    """enqueue_edit() for a card key that was never enqueued with enqueue_message(card_key=…)."""


_outbox = OutboxItem.__table__  # type: ignore[attr-defined]
_cards = OutboxCard.__table__  # type: ignore[attr-defined]

# Set on a session that enqueued something: the worker (bot/outbox.py) wakes up when that session commits.
SESSION_FLAG = "outbox.enqueued"


# --- enqueuing (in the caller's transaction; never commits) ----------------------------------------------------


async def enqueue(
    session: AsyncSession,
    method: str,
    chat_id: int,
    payload: dict[str, Any],
    *,
    card_key: str | None = None,
    dedupe_key: str | None = None,
    not_before: datetime | None = None,
    attachment: bytes | None = None,
) -> OutboxItem:
    """Add one call to the outbox inside the caller's transaction (the caller commits or rolls back).

    With a `dedupe_key` already in the outbox (committed, or added earlier in this transaction) the existing item is
    returned and nothing is added. Two transactions racing with the same key are safe on both backends: the insert is
    ``INSERT … ON CONFLICT (dedupe_key) DO NOTHING``, so the loser waits for the winner's commit and then inserts
    nothing, without an error that would abort the caller's transaction.
    """
    if method not in METHODS:
        raise ValueError(f"unsupported outbox method {method!r}")
    _check_key("card_key", card_key, CARD_KEY_LENGTH)
    _check_key("dedupe_key", dedupe_key, DEDUPE_KEY_LENGTH)
    if not_before is not None and not_before.utcoffset() is None:
        raise ValueError("not_before must be an aware datetime")
    now = utcnow()
    values = {
        "method": method,
        "chat_id": chat_id,
        "payload": payload,
        "attachment": attachment,
        "card_key": card_key,
        "dedupe_key": dedupe_key,
        "status": OutboxStatus.PENDING.value,
        "attempts": 0,
        "not_before": not_before,
        "next_attempt_at": not_before if not_before is not None and not_before > now else now,
        "created_at": now,
    }
    connection = await session.connection()
    if dedupe_key is not None:
        existing = await _find_dedupe(session, dedupe_key)
        if existing is not None:
            return existing
        insert = pg_insert if connection.dialect.name == "postgresql" else sqlite_insert
        statement = insert(_outbox).values(**values).on_conflict_do_nothing(index_elements=["dedupe_key"])
    else:
        statement = _outbox.insert().values(**values)
    result = await connection.execute(statement.returning(_outbox.c.id))
    new_id = result.scalar_one_or_none()
    if new_id is None:  # another transaction committed the same dedupe key first
        existing = await _find_dedupe(session, dedupe_key or "")
        if existing is None:  # only under REPEATABLE READ/SERIALIZABLE, which the project does not use
            raise RuntimeError("outbox dedupe key taken by a transaction this one cannot see")
        return existing
    session.info[SESSION_FLAG] = True
    item = await session.get(OutboxItem, new_id)
    assert item is not None
    return item


async def enqueue_message(
    session: AsyncSession,
    chat_id: int,
    text: str,
    *,
    reply_markup: dict[str, Any] | None = None,
    card_key: str | None = None,
    dedupe_key: str | None = None,
    not_before: datetime | None = None,
    disable_notification: bool = False,
) -> OutboxItem:
    """A sendMessage (HTML parse mode) added to the caller's transaction; see `enqueue` for `dedupe_key`.

    `reply_markup` is Bot API JSON (``InlineKeyboardMarkup(...).to_dict()``). `card_key` names a message that will be
    edited later with `enqueue_edit` ("case:42:staff:-100123"); the worker records where it was sent.
    """
    if not text:
        raise ValueError("an outbox message needs text")
    payload: dict[str, Any] = {"text": text, "parse_mode": "HTML"}
    if reply_markup is not None:
        payload["reply_markup"] = reply_markup
    if disable_notification:
        payload["disable_notification"] = True
    return await enqueue(
        session,
        SEND_MESSAGE,
        chat_id,
        payload,
        card_key=card_key,
        dedupe_key=dedupe_key,
        not_before=not_before,
    )


async def enqueue_edit(
    session: AsyncSession, card_key: str, text: str, *, reply_markup: dict[str, Any] | None = None
) -> OutboxItem:
    """An editMessageText of the card sent under `card_key`, added to the caller's transaction.

    If the card has not been sent yet the edit waits for it (it is queued behind the card in the card's chat).
    Older pending edits of the same card are marked superseded: only the newest text needs sending. Raises
    `UnknownCard` if no message was ever enqueued under `card_key`.
    """
    if not text:
        raise ValueError("an outbox edit needs text")
    chat_id, not_before = await _card_destination(session, card_key)
    await session.connection()  # the caller's transaction, begun if it was not yet
    await _supersede_pending_edits(session, card_key)
    payload: dict[str, Any] = {"text": text, "parse_mode": "HTML"}
    if reply_markup is not None:
        payload["reply_markup"] = reply_markup
    return await enqueue(session, EDIT_MESSAGE_TEXT, chat_id, payload, card_key=card_key, not_before=not_before)


async def enqueue_location(
    session: AsyncSession,
    chat_id: int,
    latitude: float,
    longitude: float,
    *,
    dedupe_key: str | None = None,
    not_before: datetime | None = None,
) -> OutboxItem:
    payload = {"latitude": latitude, "longitude": longitude}
    return await enqueue(session, SEND_LOCATION, chat_id, payload, dedupe_key=dedupe_key, not_before=not_before)


async def enqueue_venue(
    session: AsyncSession,
    chat_id: int,
    latitude: float,
    longitude: float,
    title: str,
    address: str,
    *,
    dedupe_key: str | None = None,
    not_before: datetime | None = None,
) -> OutboxItem:
    payload = {"latitude": latitude, "longitude": longitude, "title": title, "address": address}
    return await enqueue(session, SEND_VENUE, chat_id, payload, dedupe_key=dedupe_key, not_before=not_before)


async def enqueue_photo(
    session: AsyncSession,
    chat_id: int,
    photo: bytes,
    *,
    caption: str | None = None,
    reply_markup: dict[str, Any] | None = None,
    dedupe_key: str | None = None,
    not_before: datetime | None = None,
) -> OutboxItem:
    """A sendPhoto of raw bytes (a chart, a map); the caption is HTML."""
    payload: dict[str, Any] = {}
    if caption:
        payload.update(caption=caption, parse_mode="HTML")
    if reply_markup is not None:
        payload["reply_markup"] = reply_markup
    return await enqueue(
        session, SEND_PHOTO, chat_id, payload, dedupe_key=dedupe_key, not_before=not_before, attachment=photo
    )


@dataclass(frozen=True)
class NewMessage:
    """One sendMessage for `enqueue_messages` (a broadcast's message to one recipient)."""

    chat_id: int
    text: str
    dedupe_key: str
    reply_markup: dict[str, Any] | None = None
    not_before: datetime | None = None
    disable_notification: bool = False
    # Further sendMessage parameters by their Bot API names, e.g. {"allow_paid_broadcast": True}.
    options: Mapping[str, Any] | None = None


async def enqueue_messages(session: AsyncSession, messages: Sequence[NewMessage]) -> dict[str, int]:
    """Many sendMessage items in one multi-row INSERT, inside the caller's transaction (the caller commits).

    For broadcasts: one item per recipient, each with its own `dedupe_key`, so enqueuing a batch again (a fan-out
    resumed after a crash) adds nothing twice. Keys already in the outbox are skipped (``ON CONFLICT DO NOTHING``,
    race-safe as in `enqueue`). Returns dedupe key → item id for the items inserted now."""
    if not messages:
        return {}
    now = utcnow()
    rows: list[dict[str, Any]] = []
    for message in messages:
        if not message.text:
            raise ValueError("an outbox message needs text")
        _check_key("dedupe_key", message.dedupe_key, DEDUPE_KEY_LENGTH)
        not_before = message.not_before
        if not_before is not None and not_before.utcoffset() is None:
            raise ValueError("not_before must be an aware datetime")
        payload: dict[str, Any] = {"text": message.text, "parse_mode": "HTML", **(message.options or {})}
        if message.reply_markup is not None:
            payload["reply_markup"] = message.reply_markup
        if message.disable_notification:
            payload["disable_notification"] = True
        rows.append(
            {
                "method": SEND_MESSAGE,
                "chat_id": message.chat_id,
                "payload": payload,
                "attachment": None,
                "card_key": None,
                "dedupe_key": message.dedupe_key,
                "status": OutboxStatus.PENDING.value,
                "attempts": 0,
                "not_before": not_before,
                "next_attempt_at": not_before if not_before is not None and not_before > now else now,
                "created_at": now,
            }
        )
    connection = await session.connection()
    insert = pg_insert if connection.dialect.name == "postgresql" else sqlite_insert
    statement = (
        insert(_outbox)
        .on_conflict_do_nothing(index_elements=["dedupe_key"])
        .returning(_outbox.c.id, _outbox.c.dedupe_key)
    )
    inserted = {str(key): int(item_id) for item_id, key in await connection.execute(statement, rows)}
    if inserted:
        session.info[SESSION_FLAG] = True
    return inserted


def _check_key(name: str, value: str | None, length: int) -> None:
    if value is not None and not 0 < len(value) <= length:
        raise ValueError(f"{name} must be 1–{length} characters")


async def _find_dedupe(session: AsyncSession, dedupe_key: str) -> OutboxItem | None:
    found = await session.exec(select(OutboxItem).where(OutboxItem.dedupe_key == dedupe_key))
    return found.first()


async def _card_destination(session: AsyncSession, card_key: str) -> tuple[int, datetime | None]:
    """The chat of a card (sent or still queued) and, if its send is scheduled for later, that time."""
    connection = await session.connection()
    sent = await connection.execute(sa_select(_cards.c.chat_id).where(_cards.c.card_key == card_key))
    chat_id = sent.scalar_one_or_none()
    if chat_id is not None:
        return int(chat_id), None
    queued = await connection.execute(
        sa_select(_outbox.c.chat_id, _outbox.c.status, _outbox.c.not_before)
        .where(_outbox.c.card_key == card_key, _outbox.c.method.in_(SENDING_METHODS))
        .order_by(_outbox.c.id.desc())
        .limit(1)
    )
    row = queued.first()
    if row is None:
        raise UnknownCard(card_key)
    not_before = row.not_before if row.status in OUTSTANDING else None
    return int(row.chat_id), not_before if not_before is not None and not_before > utcnow() else None


async def _supersede_pending_edits(session: AsyncSession, card_key: str, *, below_id: int | None = None) -> int:
    conditions = [
        _outbox.c.card_key == card_key,
        _outbox.c.method == EDIT_MESSAGE_TEXT,
        _outbox.c.status == OutboxStatus.PENDING.value,
    ]
    if below_id is not None:
        conditions.append(_outbox.c.id < below_id)
    connection = await session.connection()
    result = await connection.execute(update(_outbox).where(*conditions).values(status=OutboxStatus.SUPERSEDED.value))
    return int(result.rowcount or 0)


# --- reading --------------------------------------------------------------------------------------------------


async def card_message(session: AsyncSession, card_key: str) -> tuple[int, int] | None:
    """(chat_id, message_id) of the card once its message was sent, else None."""
    card = await session.get(OutboxCard, card_key)
    return (card.chat_id, card.message_id) if card is not None else None


async def latest_card_payload(session: AsyncSession, card_key: str) -> dict[str, Any] | None:
    """The payload of the newest send or edit of a card that is not superseded (what it shows, or will show soon):
    lets a caller skip an edit that would change nothing (Telegram answers those with 400 "not modified")."""
    connection = await session.connection()
    result = await connection.execute(
        sa_select(_outbox.c.payload)
        .where(_outbox.c.card_key == card_key, _outbox.c.status != OutboxStatus.SUPERSEDED.value)
        .order_by(_outbox.c.id.desc())
        .limit(1)
    )
    payload = result.scalar_one_or_none()
    return dict(payload) if isinstance(payload, dict) else None


async def stats(session: AsyncSession) -> dict[str, int]:
    """Item counts by status (every status present, zeros included) — for /healthz and tests."""
    connection = await session.connection()
    rows = await connection.execute(sa_select(_outbox.c.status, func.count()).group_by(_outbox.c.status))
    counts = {status.value: 0 for status in OutboxStatus}
    for status, count in rows:
        counts[str(status)] = int(count)
    return counts


async def get_item(session: AsyncSession, item_id: int) -> OutboxItem | None:
    return await session.get(OutboxItem, item_id)


async def outstanding(session: AsyncSession, now: datetime | None = None) -> int:
    """Items still to send now or after a retry (pending or sending), except ones scheduled for later."""
    now = now or utcnow()
    connection = await session.connection()
    result = await connection.execute(
        sa_select(func.count())
        .select_from(_outbox)
        .where(
            _outbox.c.status.in_(OUTSTANDING),
            or_(_outbox.c.not_before.is_(None), _outbox.c.not_before <= now),
        )
    )
    return int(result.scalar_one())


# --- the worker's side ----------------------------------------------------------------------------------------


def _heads(now: datetime, exclude_chats: Iterable[int]) -> tuple[Any, Any]:
    """(alias, conditions) selecting pending items that no earlier outstanding item of their chat holds back."""
    earlier = _outbox.alias("earlier")
    item = _outbox.alias("item")
    blocker = sa_select(earlier.c.id).where(
        earlier.c.chat_id == item.c.chat_id,
        earlier.c.id < item.c.id,
        earlier.c.status.in_(OUTSTANDING),
        or_(earlier.c.not_before.is_(None), earlier.c.not_before <= now),
    )
    conditions = [item.c.status == OutboxStatus.PENDING.value, ~exists(blocker)]
    excluded = list(exclude_chats)
    if excluded:
        conditions.append(item.c.chat_id.not_in(excluded))
    return item, conditions


async def due_items(
    session: AsyncSession, *, now: datetime | None = None, limit: int = 50, exclude_chats: Iterable[int] = ()
) -> list[int]:
    """Ids of items that may be sent now: due, and first among the outstanding items of their chat.

    An earlier item of the same chat that is pending (waiting for a retry too) or sending holds later ones back,
    unless it is scheduled for later (`not_before` in the future).
    """
    now = now or utcnow()
    item, conditions = _heads(now, exclude_chats)
    statement = sa_select(item.c.id).where(*conditions, item.c.next_attempt_at <= now).order_by(item.c.id).limit(limit)
    connection = await session.connection()
    ids = [int(row_id) for row_id in (await connection.execute(statement)).scalars()]
    await session.commit()  # end the read transaction (PostgreSQL would keep it open otherwise)
    return ids


async def next_due_at(
    session: AsyncSession, *, now: datetime | None = None, exclude_chats: Iterable[int] = ()
) -> datetime | None:
    """When the next item that nothing holds back becomes due (for the worker's sleep)."""
    item, conditions = _heads(now or utcnow(), exclude_chats)
    connection = await session.connection()
    result = await connection.execute(sa_select(func.min(item.c.next_attempt_at)).where(*conditions))
    value = result.scalar_one_or_none()
    await session.commit()
    # min() keeps the column's UTCDateTime type, so the value comes back aware (UTC).
    return value if isinstance(value, datetime) else None


async def claim(
    session: AsyncSession, item_id: int, *, lease: timedelta, now: datetime | None = None
) -> OutboxItem | None:
    """Take an item for sending: pending and due → sending, committed, before Telegram is called.

    Conditional (``WHERE status = 'pending'``): of several workers or processes claiming the same item exactly one
    gets it, the others get None. On PostgreSQL the row is first locked with ``FOR UPDATE SKIP LOCKED`` so a worker
    never waits behind a caller's open transaction that touches the row. `attempts` grows by one on every claim and
    serves as the claim's fencing token in the updates that follow.
    """
    now = now or utcnow()
    due = (
        _outbox.c.id == item_id,
        _outbox.c.status == OutboxStatus.PENDING.value,
        _outbox.c.next_attempt_at <= now,
    )
    connection = await session.connection()
    if connection.dialect.name == "postgresql":
        locked = await connection.execute(sa_select(_outbox.c.id).where(*due).with_for_update(skip_locked=True))
        if locked.first() is None:
            await session.rollback()
            return None
    result = await connection.execute(
        update(_outbox)
        .where(*due)
        .values(status=OutboxStatus.SENDING.value, attempts=_outbox.c.attempts + 1, next_attempt_at=now + lease)
    )
    if result.rowcount != 1:
        await session.rollback()
        return None
    await session.commit()
    item = await session.get(OutboxItem, item_id, populate_existing=True)
    session.expunge_all()  # a detached snapshot for the worker; every later change goes through conditional updates
    return item


async def claim_due(
    session: AsyncSession,
    *,
    limit: int,
    lease: timedelta,
    now: datetime | None = None,
    exclude_chats: Iterable[int] = (),
) -> list[OutboxItem]:
    """`due_items` and `claim` in one statement: up to `limit` due heads of their chats become this worker's, in id
    order (one round trip and one commit however many: a broadcast keeps every slot of the worker busy).

    ``UPDATE … WHERE id IN (SELECT … LIMIT n) AND status = 'pending' RETURNING …``; on PostgreSQL the inner select
    takes ``FOR UPDATE SKIP LOCKED``, so concurrent workers claim disjoint items without waiting on each other. The
    same guarantees as `claim`: each item goes to exactly one worker and `attempts` grows by one (the fencing token)."""
    now = now or utcnow()
    item, conditions = _heads(now, exclude_chats)
    # Oldest due first, in the order of the (status, next_attempt_at) index, so the scan stops after `limit` heads
    # instead of sorting every due item (a broadcast keeps thousands queued). Within a chat the order is by id anyway.
    due = (
        sa_select(item.c.id)
        .where(*conditions, item.c.next_attempt_at <= now)
        .order_by(item.c.next_attempt_at, item.c.id)
        .limit(limit)
    )
    connection = await session.connection()
    if connection.dialect.name == "postgresql":
        due = due.with_for_update(skip_locked=True, of=item)
    result = await connection.execute(
        update(_outbox)
        .where(_outbox.c.id.in_(due.scalar_subquery()), _outbox.c.status == OutboxStatus.PENDING.value)
        .values(status=OutboxStatus.SENDING.value, attempts=_outbox.c.attempts + 1, next_attempt_at=now + lease)
        .returning(*_outbox.c)
    )
    rows = result.mappings().all()
    await session.commit()
    # Detached snapshots for the worker, as `claim` returns (built without validation: the values come from the
    # table's own column types); every later change goes through conditional updates.
    configure_mappers()  # model_construct skips what first use of the class would otherwise set up
    items = [OutboxItem.model_construct(**row) for row in rows]
    return sorted(items, key=lambda claimed: claimed.id or 0)


def _claimed(item: OutboxItem) -> tuple[Any, ...]:
    return (
        _outbox.c.id == item.id,
        _outbox.c.status == OutboxStatus.SENDING.value,
        _outbox.c.attempts == item.attempts,
    )


async def mark_sent(
    session: AsyncSession, item: OutboxItem, message_id: int | None, *, now: datetime | None = None
) -> bool:
    """sending → sent with Telegram's message id; a sent card is recorded under its key. False if the claim was lost."""
    now = now or utcnow()
    connection = await session.connection()
    result = await connection.execute(
        update(_outbox)
        .where(*_claimed(item))
        .values(status=OutboxStatus.SENT.value, sent_at=now, telegram_message_id=message_id, last_error=None)
    )
    if result.rowcount != 1:
        await session.rollback()
        return False
    if item.method in SENDING_METHODS and item.card_key is not None and message_id is not None:
        insert = pg_insert if connection.dialect.name == "postgresql" else sqlite_insert
        values = {"card_key": item.card_key, "chat_id": item.chat_id, "message_id": message_id, "updated_at": now}
        statement = insert(_cards).values(**values)
        await connection.execute(
            statement.on_conflict_do_update(
                index_elements=["card_key"],
                set_={
                    "chat_id": statement.excluded.chat_id,
                    "message_id": statement.excluded.message_id,
                    "updated_at": statement.excluded.updated_at,
                },
            )
        )
    await session.commit()
    return True


async def mark_sent_many(
    session: AsyncSession, sent: Sequence[tuple[OutboxItem, int | None]], *, now: datetime | None = None
) -> set[int]:
    """`mark_sent` for a batch, in one transaction (the worker's group commit); returns the ids recorded as sent.

    Each item is matched on its claim (status sending and the same `attempts`), so an item whose claim was lost is
    left alone and missing from the result, exactly as `mark_sent` returning False. One prepared UPDATE run for every
    item (executemany), then one read of the batch's rows to tell which ones this claim finished."""
    if not sent:
        return set()
    now = now or utcnow()
    connection = await session.connection()
    await connection.execute(
        update(_outbox)
        .where(
            _outbox.c.id == bindparam("b_id"),
            _outbox.c.attempts == bindparam("b_attempts"),
            _outbox.c.status == OutboxStatus.SENDING.value,
        )
        .values(
            status=OutboxStatus.SENT.value, sent_at=now, last_error=None, telegram_message_id=bindparam("b_message")
        )
        .execution_options(synchronize_session=False),
        [{"b_id": item.id, "b_attempts": item.attempts, "b_message": message_id} for item, message_id in sent],
    )
    attempts = {item.id: item.attempts for item, _ in sent}
    rows = await connection.execute(
        sa_select(_outbox.c.id, _outbox.c.attempts).where(
            _outbox.c.id.in_(list(attempts)), _outbox.c.status == OutboxStatus.SENT.value
        )
    )
    done = {int(row_id) for row_id, row_attempts in rows if attempts.get(row_id) == row_attempts}
    cards = [
        {"card_key": item.card_key, "chat_id": item.chat_id, "message_id": message_id, "updated_at": now}
        for item, message_id in sent
        if item.id in done and item.method in SENDING_METHODS and item.card_key is not None and message_id is not None
    ]
    if cards:
        insert = pg_insert if connection.dialect.name == "postgresql" else sqlite_insert
        statement = insert(_cards)
        await connection.execute(
            statement.on_conflict_do_update(
                index_elements=["card_key"],
                set_={
                    "chat_id": statement.excluded.chat_id,
                    "message_id": statement.excluded.message_id,
                    "updated_at": statement.excluded.updated_at,
                },
            ),
            cards,
        )
    await session.commit()
    return done


async def mark_retry(
    session: AsyncSession, item: OutboxItem, *, at: datetime, error: str, count_attempt: bool = True
) -> bool:
    """sending → pending, due again at `at`. `count_attempt=False` gives the claim's attempt back (flood control)."""
    values: dict[str, Any] = {
        "status": OutboxStatus.PENDING.value,
        "next_attempt_at": at,
        "last_error": error[:ERROR_LENGTH],
    }
    if not count_attempt:
        values["attempts"] = _outbox.c.attempts - 1
    return await _finish(session, item, values)


async def mark_failed(session: AsyncSession, item: OutboxItem, *, error: str) -> bool:
    return await _finish(session, item, {"status": OutboxStatus.FAILED.value, "last_error": error[:ERROR_LENGTH]})


async def mark_superseded(session: AsyncSession, item: OutboxItem) -> bool:
    return await _finish(session, item, {"status": OutboxStatus.SUPERSEDED.value})


async def _finish(session: AsyncSession, item: OutboxItem, values: dict[str, Any]) -> bool:
    connection = await session.connection()
    result = await connection.execute(update(_outbox).where(*_claimed(item)).values(**values))
    if result.rowcount != 1:
        await session.rollback()
        return False
    await session.commit()
    return True


async def has_newer_edit(session: AsyncSession, item: OutboxItem) -> bool:
    """A pending edit of the same card enqueued after this one (this one then needs no sending)."""
    if item.card_key is None:
        return False
    connection = await session.connection()
    result = await connection.execute(
        sa_select(_outbox.c.id)
        .where(
            _outbox.c.card_key == item.card_key,
            _outbox.c.method == EDIT_MESSAGE_TEXT,
            _outbox.c.status == OutboxStatus.PENDING.value,
            _outbox.c.id > (item.id or 0),
        )
        .limit(1)
    )
    found = result.first() is not None
    await session.commit()
    return found


async def card_send_outstanding(session: AsyncSession, card_key: str) -> bool:
    """The card's own send is still pending or sending (an edit of it must wait)."""
    connection = await session.connection()
    result = await connection.execute(
        sa_select(_outbox.c.id)
        .where(
            _outbox.c.card_key == card_key,
            _outbox.c.method.in_(SENDING_METHODS),
            _outbox.c.status.in_(OUTSTANDING),
        )
        .limit(1)
    )
    found = result.first() is not None
    await session.commit()
    return found


async def expired_leases(
    session: AsyncSession, *, now: datetime | None = None, exclude: Iterable[int] = ()
) -> list[int]:
    """Items left `sending` past their lease (the claiming worker crashed or was killed)."""
    now = now or utcnow()
    statement = sa_select(_outbox.c.id).where(
        _outbox.c.status == OutboxStatus.SENDING.value, _outbox.c.next_attempt_at < now
    )
    excluded = list(exclude)
    if excluded:
        statement = statement.where(_outbox.c.id.not_in(excluded))
    connection = await session.connection()
    ids = [int(row_id) for row_id in (await connection.execute(statement)).scalars()]
    await session.commit()
    return ids


async def release(session: AsyncSession, item_ids: Iterable[int], *, now: datetime | None = None) -> int:
    """Put `sending` items back to pending, due now (after a crash: resend). Returns how many were released."""
    ids = list(item_ids)
    if not ids:
        return 0
    now = now or utcnow()
    connection = await session.connection()
    result = await connection.execute(
        update(_outbox)
        .where(_outbox.c.id.in_(ids), _outbox.c.status == OutboxStatus.SENDING.value)
        .values(status=OutboxStatus.PENDING.value, next_attempt_at=now, last_error="interrupted")
    )
    await session.commit()
    return int(result.rowcount or 0)


async def sending_items(session: AsyncSession) -> list[int]:
    connection = await session.connection()
    result = await connection.execute(sa_select(_outbox.c.id).where(_outbox.c.status == OutboxStatus.SENDING.value))
    ids = [int(row_id) for row_id in result.scalars()]
    await session.commit()
    return ids


async def prune(session: AsyncSession, older_than: timedelta, *, now: datetime | None = None) -> int:
    """Delete finished items (sent, failed, superseded) created more than `older_than` ago; returns the count.

    Their dedupe keys are forgotten with them: a key is unique for as long as its item is kept.
    """
    cutoff = (now or utcnow()) - older_than
    connection = await session.connection()
    result = await connection.execute(
        delete(_outbox).where(_outbox.c.status.in_(FINISHED), _outbox.c.created_at < cutoff)
    )
    await session.commit()
    return int(result.rowcount or 0)
