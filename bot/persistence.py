"""python-telegram-bot persistence stored in Waystation's own database (not a pickle file).

Conversation states and user/chat data are JSON. The application flushes after every update
(see `bot.application.WaystationApplication`), so a crash or restart loses no conversation step.
"""

from __future__ import annotations

import contextlib
import copy
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from sqlmodel.ext.asyncio.session import AsyncSession
from telegram.ext import BasePersistence, PersistenceInput
from telegram.ext._utils.types import CDCData, ConversationDict, ConversationKey

from bot.database import Database
from models import conversation_store as store

USER, CHAT = "user", "chat"
Write = Callable[[AsyncSession], Awaitable[None]]


def _fingerprint(data: Any) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)


class DatabasePersistence(BasePersistence[dict[str, Any], dict[str, Any], dict[str, Any]]):
    """Conversations, user_data and chat_data in SQL. bot_data holds live services and is never stored."""

    def __init__(self, database: Database) -> None:
        super().__init__(
            store_data=PersistenceInput(bot_data=False, chat_data=True, user_data=True, callback_data=False),
            # The application flushes after each update; this interval is only a safety net.
            update_interval=5,
        )
        self.database = database
        # What was last written, to skip writes of unchanged data (most updates change nothing).
        self._written: dict[tuple[str, int], str] = {}
        self._collecting: list[Write] | None = None  # see collected()

    async def get_user_data(self) -> dict[int, dict[str, Any]]:
        return await self._load(USER)

    async def get_chat_data(self) -> dict[int, dict[str, Any]]:
        return await self._load(CHAT)

    async def _load(self, kind: str) -> dict[int, dict[str, Any]]:
        async with self.database.session() as session:
            blobs = await store.load_blobs(session, kind)
        for owner_id, data in blobs.items():
            self._written[(kind, owner_id)] = _fingerprint(data)
        return {owner_id: dict(data) for owner_id, data in blobs.items()}

    async def get_bot_data(self) -> dict[str, Any]:
        return {}

    async def get_callback_data(self) -> CDCData | None:
        return None

    async def get_conversations(self, name: str) -> ConversationDict:
        async with self.database.session() as session:
            loaded = await store.load_conversations(session, name)
        return dict(loaded.items())

    @contextlib.asynccontextmanager
    async def collected(self) -> AsyncIterator[list[Write]]:
        """Within this block, writes are collected instead of committed: the caller runs them in its own
        transaction (the application commits them with the update's processed mark, so a crash leaves either both
        or neither — never a saved step whose update is then handled again)."""
        writes: list[Write] = []
        self._collecting = writes
        try:
            yield writes
        finally:
            self._collecting = None

    def forget_written(self) -> None:
        """Collected writes were not committed: write everything again next time."""
        self._written.clear()

    async def _write(self, write: Write) -> None:
        if self._collecting is not None:
            self._collecting.append(write)
            return
        async with self.database.session() as session:
            await write(session)
            await session.commit()

    async def update_conversation(self, name: str, key: ConversationKey, new_state: object | None) -> None:
        await self._write(lambda s: store.save_conversation(s, name, tuple(key), new_state, commit=False))

    async def update_user_data(self, user_id: int, data: dict[str, Any]) -> None:
        await self._save(USER, user_id, data)

    async def update_chat_data(self, chat_id: int, data: dict[str, Any]) -> None:
        await self._save(CHAT, chat_id, data)

    async def _save(self, kind: str, owner_id: int, data: dict[str, Any]) -> None:
        fingerprint = _fingerprint(data)
        if self._written.get((kind, owner_id), _fingerprint({})) == fingerprint:
            return
        snapshot = copy.deepcopy(data)
        await self._write(lambda s: store.save_blob(s, kind, owner_id, snapshot, commit=False))
        self._written[(kind, owner_id)] = fingerprint

    async def update_bot_data(self, data: dict[str, Any]) -> None:
        return None

    async def update_callback_data(self, data: CDCData) -> None:
        return None

    async def drop_user_data(self, user_id: int) -> None:
        await self._drop(USER, user_id)

    async def drop_chat_data(self, chat_id: int) -> None:
        await self._drop(CHAT, chat_id)

    async def _drop(self, kind: str, owner_id: int) -> None:
        await self._write(lambda s: store.save_blob(s, kind, owner_id, None, commit=False))
        self._written.pop((kind, owner_id), None)

    async def refresh_user_data(self, user_id: int, user_data: dict[str, Any]) -> None:
        return None

    async def refresh_chat_data(self, chat_id: int, chat_data: dict[str, Any]) -> None:
        return None

    async def refresh_bot_data(self, bot_data: dict[str, Any]) -> None:
        return None

    async def flush(self) -> None:
        return None
