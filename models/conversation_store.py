"""Tables behind the bot's persistence: conversation states and per-user/per-chat data as JSON.

Kept in the project's own database (one store to back up), written after every update so a crash loses no step.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import JSON, BigInteger, Column, String, delete
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import Field, SQLModel, select
from sqlmodel.ext.asyncio.session import AsyncSession

from models.base import utcnow


class ConversationState(SQLModel, table=True):
    __tablename__ = "conversation_states"

    name: str = Field(sa_column=Column(String(64), primary_key=True))
    # The conversation key (chat id, user id, …) as a JSON array: keys are tuples of ints.
    key: str = Field(sa_column=Column(String(128), primary_key=True))
    state: Any = Field(sa_column=Column(JSON, nullable=False))
    updated_at: datetime = Field(default_factory=utcnow)


class DataBlob(SQLModel, table=True):
    """user_data / chat_data / bot_data / callback_data as one JSON document each."""

    __tablename__ = "persistence_data"

    kind: str = Field(sa_column=Column(String(16), primary_key=True))
    owner_id: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    data: Any = Field(sa_column=Column(JSON, nullable=False))
    updated_at: datetime = Field(default_factory=utcnow)


class ProcessedUpdate(SQLModel, table=True):
    """Update ids already handled: getUpdates and webhooks deliver at least once, we act once."""

    __tablename__ = "processed_updates"

    update_id: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    processed_at: datetime = Field(default_factory=utcnow)


def encode_key(key: tuple[int | str, ...]) -> str:
    return json.dumps(list(key), separators=(",", ":"))


def decode_key(raw: str) -> tuple[int | str, ...]:
    return tuple(json.loads(raw))


async def load_conversations(session: AsyncSession, name: str) -> dict[tuple[int | str, ...], Any]:
    rows = await session.exec(select(ConversationState).where(ConversationState.name == name))
    return {decode_key(row.key): row.state for row in rows}


async def save_conversation(
    session: AsyncSession, name: str, key: tuple[int | str, ...], state: Any | None, *, commit: bool = True
) -> None:
    """Store a conversation's state; None means the conversation ended and the row goes. `commit=False` leaves the
    change in the session's transaction (flushed), for the caller to commit with others."""
    row = await session.get(ConversationState, (name, encode_key(key)))
    if state is None:
        if row is not None:
            await session.delete(row)
    elif row is None:
        session.add(ConversationState(name=name, key=encode_key(key), state=state))
    else:
        row.state = state
        row.updated_at = utcnow()
        session.add(row)
    await (session.commit() if commit else session.flush())


async def load_blobs(session: AsyncSession, kind: str) -> dict[int, Any]:
    rows = await session.exec(select(DataBlob).where(DataBlob.kind == kind))
    return {row.owner_id: row.data for row in rows}


async def get_blob(session: AsyncSession, kind: str, owner_id: int) -> Any | None:
    row = await session.get(DataBlob, (kind, owner_id))
    return row.data if row is not None else None


async def save_blob(session: AsyncSession, kind: str, owner_id: int, data: Any | None, *, commit: bool = True) -> None:
    """Upsert one JSON document; None (or an empty dict) deletes it, so forgotten users leave no row."""
    row = await session.get(DataBlob, (kind, owner_id))
    if not data:
        if row is not None:
            await session.delete(row)
    elif row is None:
        session.add(DataBlob(kind=kind, owner_id=owner_id, data=data))
    else:
        row.data = data
        row.updated_at = utcnow()
        session.add(row)
    await (session.commit() if commit else session.flush())


async def delete_user_conversations(session: AsyncSession, user_id: int) -> None:
    """Drop every conversation whose key mentions this user (for /forgetme)."""
    rows = await session.exec(select(ConversationState))
    for row in rows:
        if user_id in decode_key(row.key):
            await session.delete(row)
    await session.commit()


_processed = ProcessedUpdate.__table__  # type: ignore[attr-defined]


async def was_processed(session: AsyncSession, update_id: int) -> bool:
    # Core statements: this runs for every update, the ORM's identity map would only add cost.
    connection = await session.connection()
    found = await connection.execute(select(_processed.c.update_id).where(_processed.c.update_id == update_id))
    return found.first() is not None


async def mark_processed(
    session: AsyncSession, update_id: int, *, keep: timedelta = timedelta(days=2), drop_blob: str | None = None
) -> None:
    """Remember an update id (idempotent); ids older than `keep` are pruned now and then (no more redeliveries).
    `drop_blob`: a data blob of that kind kept for this update while it was handled goes in the same transaction."""
    connection = await session.connection()
    insert = pg_insert if connection.dialect.name == "postgresql" else sqlite_insert
    await connection.execute(
        insert(_processed).values(update_id=update_id, processed_at=utcnow()).on_conflict_do_nothing()
    )
    if drop_blob is not None:
        blobs = DataBlob.__table__  # type: ignore[attr-defined]
        await connection.execute(delete(blobs).where(blobs.c.kind == drop_blob, blobs.c.owner_id == update_id))
    if update_id % 1000 == 0:
        await connection.execute(delete(_processed).where(_processed.c.processed_at < utcnow() - keep))
    await session.commit()
