"""People who talked to the bot: only their Telegram id, language and when they were seen.

Names are not stored: the bot greets with the name Telegram sends in each update.
"""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Field, SQLModel
from sqlmodel.ext.asyncio.session import AsyncSession

from models.base import telegram_id_field, utcnow


class User(SQLModel, table=True):
    __tablename__ = "users"

    telegram_id: int = telegram_id_field(primary_key=True)
    # Effective language code of our catalogs ("en", "zh_Hans").
    language: str = Field(max_length=16)
    # True once the person picked a language with /language: the client's language no longer overrides it.
    language_chosen: bool = False
    first_seen: datetime = Field(default_factory=utcnow)
    last_seen: datetime = Field(default_factory=utcnow)


async def touch(session: AsyncSession, telegram_id: int, client_language: str) -> User:
    """Record that the user was seen; create them with the client's language on first contact."""
    user = await session.get(User, telegram_id)
    now = utcnow()
    if user is None:
        user = User(telegram_id=telegram_id, language=client_language, first_seen=now, last_seen=now)
    else:
        user.last_seen = now
        if not user.language_chosen:
            user.language = client_language
    session.add(user)
    await session.commit()
    await session.refresh(user)
    return user


async def choose_language(session: AsyncSession, telegram_id: int, language: str) -> User:
    """Store an explicit choice from /language; it wins over the Telegram client's setting from now on."""
    user = await session.get(User, telegram_id)
    if user is None:
        user = User(telegram_id=telegram_id, language=language)
    user.language = language
    user.language_chosen = True
    user.last_seen = utcnow()
    session.add(user)
    await session.commit()
    await session.refresh(user)
    return user


async def get(session: AsyncSession, telegram_id: int) -> User | None:
    return await session.get(User, telegram_id)
