"""Handling an update again after a crash, without the person seeing its replies twice.

Telegram redelivers an update until the bot confirms it, and the bot confirms it only once it is handled (see
`AcknowledgingQueue` in bot/application.py); an update whose handling a crash cut short is handled again from the
start after the restart. Its database writes are safe to repeat (idempotency keys, conditional transitions), but its
direct replies are not: the person would see "Are you under 18?" twice, and answering a button's callback query a
second time is an error.

So while an update is handled, each visible Bot API call it makes (messages, edits, deletions, callback answers) is
recorded right after Telegram answers it, in order, as a `persistence_data` row of kind "replies" for that update.
Handling the update again replays the recorded answers instead of calling Telegram, call by call, as long as the
handler makes the same calls in the same order (a handler that takes another branch the second time makes the rest
of its calls for real). The row is deleted in the transaction that marks the update processed, so it exists only
while an update is in hand. What remains is the at-least-once window of any Bot API call: a crash between
Telegram's answer and that row's commit (milliseconds) repeats that one call.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import Any

from telegram.error import BadRequest

from bot.database import Database
from models import conversation_store as store

log = logging.getLogger("waystation.replay")

KIND = "replies"
# Calls a person would see twice (or that fail the second time), lower-case: Bot API method names are case-insensitive.
RECORDED = frozenset(
    {
        "sendmessage",
        "sendphoto",
        "senddocument",
        "sendlocation",
        "sendvenue",
        "sendmediagroup",
        "editmessagetext",
        "editmessagecaption",
        "editmessagereplymarkup",
        "deletemessage",
        "answercallbackquery",
    }
)

Result = bool | dict[str, Any] | list[dict[str, Any]]


class Journal:
    """The visible calls of one update being handled: those made before a crash, and those made now."""

    def __init__(self, database: Database, update_id: int, earlier: list[dict[str, Any]]) -> None:
        self.database = database
        self.update_id = update_id
        self.calls = list(earlier)
        self.rerun = bool(earlier)  # handled before, and cut short by a crash
        self.replayable = len(earlier)
        self.index = 0
        self.written = bool(earlier)

    async def call(self, endpoint: str, send: Callable[[], Awaitable[Result]]) -> Result:
        method = endpoint.lower()
        if method not in RECORDED:
            return await send()
        index, self.index = self.index, self.index + 1
        if index < self.replayable:
            earlier = self.calls[index]
            if earlier.get("method") == method:
                log.info(
                    "update %s: call %d (%s) was made before the restart; not repeated", self.update_id, index, method
                )
                result: Result = earlier["result"]
                return result
            self.replayable = index  # another branch this time: from here on, every call is made for real
        result = await send()
        del self.calls[index:]
        self.calls.append({"method": method, "result": result})
        self.replayable = min(self.replayable, index)
        async with self.database.session() as session:
            await store.save_blob(session, KIND, self.update_id, {"calls": list(self.calls)})
        self.written = True
        return result


_current: ContextVar[Journal | None] = ContextVar("waystation_replay_journal", default=None)


async def begin(database: Database, update_id: int) -> Journal:
    """Start journaling the calls of this update (in the current task and those it starts)."""
    async with database.session() as session:
        stored = await store.get_blob(session, KIND, update_id)
    earlier = stored.get("calls", []) if isinstance(stored, dict) else []
    if earlier:
        log.info("update %s: handled again after a restart; %d call(s) made before", update_id, len(earlier))
    journal = Journal(database, update_id, earlier)
    _current.set(journal)
    return journal


def end() -> None:
    _current.set(None)


async def call(endpoint: str, send: Callable[[], Awaitable[Result]]) -> Result:
    """Make a Bot API call, or replay it when the update being handled made it before a crash."""
    journal = _current.get()
    if journal is None:  # not within an update: the outbox, jobs, start-up
        return await send()
    try:
        return await journal.call(endpoint, send)
    except BadRequest as exc:
        if journal.rerun and endpoint.lower().startswith("edit") and "message is not modified" in exc.message:
            # Handled again after a crash that came right after this edit, before its record: it is done already.
            log.info("update %s: %s was made before the restart; not repeated", journal.update_id, endpoint)
            return True
        if endpoint.lower() == "answercallbackquery" and "query is too old" in exc.message.lower():
            # Answered before a crash (in the milliseconds before the journal row), or redelivered after more than
            # Telegram's ~15 s to answer: the answer only stops a spinner, and the tap itself must still be handled.
            log.info(
                "update %s: the callback query could not be answered any more; handling it anyway", journal.update_id
            )
            return True
        raise
