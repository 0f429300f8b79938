"""The outbox worker: sends what `models/outbox.py` queued, within Telegram's limits, and marks each item done once.

Every message that is not a direct reply (staff alerts, card edits, status notifications, escalations, broadcasts)
is written to the outbox in the same transaction as the change that causes it; this worker sends it.

How an item is sent
  1. *Claim*: one conditional ``UPDATE … SET status='sending' WHERE id IN (the due heads of their chats) AND
     status='pending' RETURNING …`` (the inner select takes ``FOR UPDATE SKIP LOCKED`` on PostgreSQL), committed before
     Telegram is called: up to as many items as there are free slots, each won by exactly one worker or process. The
     claim carries a lease (``lease`` seconds).
  2. *Call* Telegram through the given bot (the Application's ExtBot, whose `RateLimiter` below paces messages
     evenly at telegram.overall_max_rate, 20/min per group), under a timeout shorter than the lease. A plain
     sendMessage goes out as the Bot API JSON it is stored as (no PTB objects built and parsed back).
  3. *Record* the outcome right away: ``sent`` with the message id (a card's chat and message id go to
     ``outbox_cards``), ``pending`` again with a back-off, or ``failed``. Sent items are written by a group commit:
     whatever Telegram accepted while the previous batch was being written goes into the next transaction.

Order: the items of one chat go one at a time, in id order; an item waiting for a retry holds back the later items
of its chat, never other chats. Up to ``concurrency`` chats are served at once.

Errors (only the item id, method, chat id and a short category are logged — never message text):
  * ``RetryAfter`` (429): retried after ``retry_after`` (not counted as an attempt). Flood answers for two different
    chats within that time mean a global flood: the worker pauses every chat until it ends.
  * ``NetworkError`` / ``TimedOut`` / 5xx: exponential back-off with jitter (``base_backoff`` · 2ⁿ, capped at
    ``max_backoff``); ``failed`` after ``max_attempts``.
  * ``Forbidden`` (blocked by the user, removed from the group): ``failed`` at once, never retried.
  * ``BadRequest``: "message is not modified" counts as sent; anything else (message to edit not found, bad HTML,
    text too long…) is ``failed`` with its category.

Exactly once, as far as Telegram allows — the at-least-once window
  Telegram has no idempotency key for sendMessage. An item is marked ``sent`` in the next group commit after
  Telegram answers (at once when nothing else is being written), so a duplicate is possible only if the process dies
  (or the database is unreachable, after three quick retries of that write) in the few milliseconds between
  Telegram's answer and that commit, or if the
  answer itself is lost on the network after Telegram delivered the message (a timeout or dropped connection is
  retried, like any network error). In those cases the item stays ``sending``; once its lease expires (``lease``
  seconds, 60 by default) any worker puts it back to ``pending`` and it is sent again: at-least-once, because a lost
  staff alert is worse than a rare duplicate. Edits are idempotent ("message is not modified" counts as sent).
  Items that were merely ``pending`` at a crash are sent exactly once. With ``takeover_on_start=True`` (a single
  bot process, e.g. polling mode) items left ``sending`` are taken back at start-up instead of after the lease.

Waking up: handlers need not do anything after committing — when a session that enqueued something commits on
this worker's engine, the worker wakes at once; `wake()` does the same explicitly. The worker also polls every
``poll_interval`` seconds, so items written by another process or before a crash are sent too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import re
import warnings
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal, TypeVar

from sqlalchemy import event
from sqlalchemy.orm import Session
from telegram import Bot, ForceReply, InlineKeyboardMarkup, ReplyKeyboardMarkup, ReplyKeyboardRemove
from telegram.error import (
    BadRequest,
    ChatMigrated,
    Forbidden,
    InvalidToken,
    NetworkError,
    RetryAfter,
    TelegramError,
    TimedOut,
)
from telegram.ext import ExtBot

from bot.database import Database
from models import outbox
from models.base import utcnow
from models.outbox import OutboxItem

log = logging.getLogger("waystation.outbox")

T = TypeVar("T")
Action = Literal["sent", "retry", "flood", "fail"]
ReplyMarkupType = InlineKeyboardMarkup | ReplyKeyboardMarkup | ReplyKeyboardRemove | ForceReply

# BadRequest descriptions → categories (lower-case substrings, first match wins). Descriptions can quote the text
# ("can't parse entities: … at byte offset 12"), so only the category is ever stored or logged.
_BAD_REQUESTS: tuple[tuple[str, str], ...] = (
    ("message to edit not found", "bad_request:edit_target_missing"),
    ("message can't be edited", "bad_request:not_editable"),
    ("chat not found", "bad_request:chat_not_found"),
    ("can't parse entities", "bad_request:html"),
    ("too long", "bad_request:too_long"),
    ("text is empty", "bad_request:empty"),
    ("markup", "bad_request:markup"),
    ("button", "bad_request:markup"),
    ("wrong file", "bad_request:file"),
    ("image_process_failed", "bad_request:file"),
    ("photo_invalid", "bad_request:file"),
)
_FORBIDDEN: tuple[tuple[str, str], ...] = (
    ("blocked", "forbidden:blocked"),
    ("kicked", "forbidden:kicked"),
    ("not a member", "forbidden:not_member"),
    ("deactivated", "forbidden:deactivated"),
)
_SERVER_ERROR = re.compile(
    r"internal server error|bad gateway|service unavailable|gateway timeout|\(5\d\d\)", re.IGNORECASE
)


@dataclass(frozen=True)
class Outcome:
    action: Action
    category: str
    retry_after: float = 0.0


def classify(exc: BaseException) -> Outcome:
    """What to do after a failed call, and the short category to record (never the description itself)."""
    if isinstance(exc, RetryAfter):
        return Outcome("flood", "flood_control", retry_after_seconds(exc))
    if isinstance(exc, Forbidden):
        return Outcome("fail", _category(exc.message, _FORBIDDEN, "forbidden"))
    if isinstance(exc, ChatMigrated):
        return Outcome("fail", "chat_migrated")
    if isinstance(exc, BadRequest):  # before NetworkError: BadRequest subclasses it
        if "message is not modified" in exc.message.lower():
            return Outcome("sent", "not_modified")
        return Outcome("fail", _category(exc.message, _BAD_REQUESTS, "bad_request"))
    if isinstance(exc, TimedOut | TimeoutError):
        return Outcome("retry", "timeout")
    if isinstance(exc, NetworkError):
        return Outcome("retry", "server_error" if _SERVER_ERROR.search(exc.message) else "network")
    if isinstance(exc, InvalidToken):  # the whole bot is misconfigured: keep the items for after the fix
        return Outcome("retry", "invalid_token")
    if isinstance(exc, TelegramError):
        return Outcome("retry", "telegram_error")
    return Outcome("fail", f"internal:{type(exc).__name__}"[: outbox.ERROR_LENGTH])  # a bug: e.g. a bad payload


def _category(description: str, table: tuple[tuple[str, str], ...], default: str) -> str:
    lowered = description.lower()
    return next((category for needle, category in table if needle in lowered), default)


def retry_after_seconds(exc: RetryAfter) -> float:
    with warnings.catch_warnings():  # PTB 22 warns that the int form is deprecated; we accept both forms
        warnings.simplefilter("ignore")
        value: Any = exc.retry_after
    seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
    return max(seconds, 0.0)


def reply_markup_from_json(data: dict[str, Any] | None) -> ReplyMarkupType | None:
    """Bot API JSON (as stored in the payload) → python-telegram-bot's markup object."""
    if data is None:
        return None
    if "inline_keyboard" in data:
        return InlineKeyboardMarkup.de_json(data)
    if "keyboard" in data:
        return ReplyKeyboardMarkup.de_json(data)
    if "remove_keyboard" in data:
        return ReplyKeyboardRemove.de_json(data)
    if "force_reply" in data:
        return ForceReply.de_json(data)
    raise ValueError("unknown reply_markup shape")


class _CardNotReady(Exception):
    """An edit whose card's sendMessage has not been sent yet."""


class _CardMissing(Exception):
    """An edit whose card was never sent (its send failed)."""


class OutboxWorker:
    """Sends outbox items; one per bot process (several processes on one database are safe)."""

    def __init__(
        self,
        bot: Bot,
        database: Database,
        *,
        poll_interval: float = 1.0,
        max_attempts: int = 12,
        concurrency: int = 64,
        base_backoff: float = 1.0,
        max_backoff: float = 300.0,
        lease: float = 60.0,
        send_timeout: float | None = None,
        takeover_on_start: bool = False,
        retention: timedelta | None = timedelta(days=7),
        stop_timeout: float = 5.0,
    ) -> None:
        if concurrency < 1 or max_attempts < 1:
            raise ValueError("concurrency and max_attempts must be at least 1")
        self.bot = bot
        self.database = database
        self.poll_interval = poll_interval
        self.max_attempts = max_attempts
        self.concurrency = concurrency
        self.base_backoff = base_backoff
        self.max_backoff = max_backoff
        self.lease = lease
        # The call must end well before the lease does, or another worker could take the item over mid-call.
        self.send_timeout = send_timeout if send_timeout is not None else lease / 2
        if self.send_timeout >= lease:
            raise ValueError("send_timeout must be shorter than the lease")
        self.takeover_on_start = takeover_on_start
        self.retention = retention
        self.stop_timeout = stop_timeout
        self._task: asyncio.Task[None] | None = None
        self._wakeup = asyncio.Event()
        self._stopping = False
        self._in_flight: dict[int, asyncio.Task[None]] = {}  # item id → its task
        self._busy_chats: set[int] = set()
        self._paused_until = 0.0  # loop time: a global flood pauses every chat
        self._floods: dict[int, float] = {}  # chat id → loop time its flood-control wait ends
        self._next_prune = 0.0
        self._next_lease_check = 0.0
        self._random = random.Random()
        self._listener = self._after_commit  # one bound method object, so event.remove finds it
        self._sent = _GroupCommit(self)
        self._write_turn = asyncio.Lock()
        self._preview: dict[str, Any] | None = None  # the bot's default link_preview_options, as Bot API JSON

    # --- lifecycle ------------------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def start(self) -> None:
        """Start sending in the background (the bot must be initialized)."""
        if self.running:
            return
        self._stopping = False
        self._wakeup = asyncio.Event()
        event.listen(Session, "after_commit", self._listener)
        self._task = asyncio.create_task(self._run(), name="outbox-worker")

    async def stop(self) -> None:
        """Stop: in-flight calls get `stop_timeout` seconds to finish and be recorded; any still running then are
        cancelled and their items put back to pending (they will be sent again — see the module docstring)."""
        task = self._task
        if task is None:
            return
        self._stopping = True
        self._wakeup.set()
        try:
            await task
        finally:
            self._task = None
            with contextlib.suppress(Exception):
                event.remove(Session, "after_commit", self._listener)

    def wake(self) -> None:
        """Look for due items now (call after committing outbox items; harmless at any time)."""
        self._wakeup.set()

    async def drain(self, timeout: float = 10.0) -> None:
        """Wait until nothing is left to send: every item sent, failed or superseded, except items scheduled for
        later (`not_before` in the future). Items waiting for a retry count as not drained. For tests."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        self.wake()
        while True:
            async with self.database.session() as session:
                left = await outbox.outstanding(session)
            if left == 0 and not self._in_flight:
                return
            if loop.time() >= deadline:
                raise TimeoutError(f"outbox not drained after {timeout}s: {left} item(s) outstanding")
            await asyncio.sleep(0.02)

    def _after_commit(self, session: Session) -> None:
        # Runs inside AsyncSession.commit() on the event loop's thread: waking is just setting the event.
        if session.bind is self.database.engine.sync_engine and session.info.pop(outbox.SESSION_FLAG, False):
            self._wakeup.set()

    # --- the loop ------------------------------------------------------------------------------------------

    async def _run(self) -> None:
        try:
            if self.takeover_on_start:
                await self._takeover()
            while not self._stopping:
                self._wakeup.clear()
                try:
                    delay = await self._tick()
                except Exception as exc:  # database unreachable, …: keep going, items are safe in the table
                    log.warning("outbox: poll failed (%s); retrying in %.1f s", _error_name(exc), self.poll_interval)
                    delay = self.poll_interval
                if self._stopping:
                    break
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._wakeup.wait()
            if self._in_flight:
                await asyncio.wait(list(self._in_flight.values()), timeout=self.stop_timeout)
        finally:
            tasks = list(self._in_flight.values())
            for task in tasks:
                task.cancel()
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)

    async def _takeover(self) -> None:
        async with self.database.session() as session:
            ids = await outbox.sending_items(session)
            released = await outbox.release(session, ids)
        if released:
            log.warning("outbox: %d item(s) left sending by the previous run will be sent again", released)

    async def _tick(self) -> float:
        """Claim and start what is due; returns how long to sleep if nothing wakes the worker earlier."""
        loop = asyncio.get_running_loop()
        now = utcnow()
        if loop.time() >= self._next_lease_check:
            self._next_lease_check = loop.time() + min(self.lease / 4, 5.0)
            async with self.database.session() as session:
                expired = await outbox.expired_leases(session, now=now, exclude=self._in_flight)
                if expired:
                    released = await outbox.release(session, expired, now=now)
                    if released:
                        log.warning("outbox: %d item(s) whose sender stopped mid-send will be sent again", released)
        if self.retention is not None and loop.time() >= self._next_prune:
            self._next_prune = loop.time() + 3600
            async with self.database.session() as session:
                pruned = await outbox.prune(session, self.retention)
            if pruned:
                log.info("outbox: pruned %d finished item(s)", pruned)

        paused = self._paused_until - loop.time()
        if paused > 0:
            return paused
        capacity = self.concurrency - len(self._in_flight)
        if capacity <= 0:
            return self.poll_interval  # a finishing item wakes the loop
        if self._in_flight and capacity < self.concurrency // 4:
            return self.poll_interval  # nearly full: claim when a few more slots are free (each finish wakes us)
        async with self._writing(), self.database.session() as session:
            # One statement finds and claims the due items (a broadcast keeps every slot busy: a query and a claim
            # per message would cost more than sending it).
            # No need to exclude the chats being sent to: their items in flight are "sending", which holds back the
            # rest of their chat (and a statement without a list of chats is compiled once and cached).
            items = await outbox.claim_due(session, limit=capacity, lease=timedelta(seconds=self.lease), now=now)
            for item in items:
                self._launch(item)
            claimed = len(items)
            if claimed == capacity:
                return 0.0  # there may be more due right now
            if claimed:
                return self.poll_interval  # each finishing item wakes the loop, which then looks again
            next_due = await outbox.next_due_at(session, exclude_chats=self._busy_chats)
        if next_due is None:
            return self.poll_interval
        until = (next_due - utcnow()).total_seconds()
        if until <= 0:  # due but not claimable now (claimed elsewhere or row locked): don't spin
            return self.poll_interval / 4
        return min(self.poll_interval, until)

    def _writing(self) -> contextlib.AbstractAsyncContextManager[Any]:
        """SQLite has one writer at a time and makes a second one sleep in its busy handler (1 ms, 2 ms, 5 ms …): the
        worker's own writes (claims, outcomes) take turns here instead. PostgreSQL locks rows and needs no turns."""
        return self._write_turn if self.database.is_sqlite else contextlib.nullcontext()

    def _launch(self, item: OutboxItem) -> None:
        assert item.id is not None
        item_id, chat_id = item.id, item.chat_id
        task = asyncio.create_task(self._process(item), name=f"outbox-item-{item_id}")
        self._in_flight[item_id] = task
        self._busy_chats.add(chat_id)

        def done(_task: asyncio.Task[None]) -> None:
            self._in_flight.pop(item_id, None)
            self._busy_chats.discard(chat_id)
            self._wakeup.set()

        task.add_done_callback(done)

    # --- one item ------------------------------------------------------------------------------------------

    async def _process(self, item: OutboxItem) -> None:
        answered = asyncio.Event()  # set once Telegram has answered: from then on the outcome must be recorded
        try:
            await self._deliver(item, answered)
        except asyncio.CancelledError:
            if not answered.is_set():
                # Stopped before Telegram answered: give the item back so it is sent again (at-least-once; the call
                # may have reached Telegram) at once rather than after the lease.
                with contextlib.suppress(Exception):
                    await asyncio.shield(self._record(outbox.release, [item.id]))
            raise
        except Exception as exc:  # bookkeeping failed (database down): the lease expiry will bring the item back
            log.error(
                "outbox item %s (%s to chat %s): %s; left for retry",
                item.id,
                item.method,
                item.chat_id,
                _error_name(exc),
            )

    async def _deliver(self, item: OutboxItem, answered: asyncio.Event) -> None:
        target: tuple[int, int] | None = None
        if item.method == outbox.EDIT_MESSAGE_TEXT:
            try:
                target = await self._edit_target(item)
            except _CardNotReady:
                # Not counted as an attempt; the item keeps its place at the head of its chat.
                retry_at = utcnow() + timedelta(seconds=self.poll_interval)
                await self._record(outbox.mark_retry, item, at=retry_at, error="card_not_sent_yet", count_attempt=False)
                return
            except _CardMissing:
                await self._fail(item, "card_not_sent")
                return
            if target is None:  # superseded
                return
        message_id: int | None = None
        try:
            async with asyncio.timeout(self.send_timeout):
                message_id = await self._call(item, target)
        except Exception as exc:
            outcome = classify(exc)
        else:
            outcome = Outcome("sent", "ok")
        answered.set()
        # Recording what Telegram did is shielded from a stop: a cancelled `mark_sent` would mean a duplicate.
        conclusion = asyncio.ensure_future(self._conclude(item, outcome, message_id, target))
        try:
            await asyncio.shield(conclusion)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await asyncio.shield(conclusion)
            raise

    async def _conclude(
        self, item: OutboxItem, outcome: Outcome, message_id: int | None, target: tuple[int, int] | None
    ) -> None:
        if outcome.action == "sent":
            if message_id is None and target is not None:
                message_id = target[1]
            if await self._sent.record(item, message_id):
                log.debug("outbox item %s sent (%s to chat %s)", item.id, item.method, item.chat_id)
            else:
                log.warning("outbox item %s sent but its claim was lost (lease expired?)", item.id)
        elif outcome.action == "flood":
            await self._flood(item, outcome)
        elif outcome.action == "retry":
            await self._retry(item, outcome)
        else:
            await self._fail(item, outcome.category)

    async def _edit_target(self, item: OutboxItem) -> tuple[int, int] | None:
        """The card's (chat id, message id); None when a newer edit supersedes this one."""
        assert item.card_key is not None
        async with self.database.session() as session:
            if await outbox.has_newer_edit(session, item):
                if await outbox.mark_superseded(session, item):
                    log.debug("outbox item %s superseded by a newer edit", item.id)
                return None
            card = await outbox.card_message(session, item.card_key)
            if card is not None:
                return card
            if await outbox.card_send_outstanding(session, item.card_key):
                raise _CardNotReady
        raise _CardMissing

    async def _call(self, item: OutboxItem, target: tuple[int, int] | None) -> int | None:
        """One Bot API call; returns the message id (None for an edit answered with True)."""
        if item.method == outbox.SEND_MESSAGE and _plain_send_message(self.bot):
            # The payload already is Bot API JSON: sent as it is, and the answer read as JSON. Building PTB's objects
            # for the markup and the returned Message costs more CPU than the HTTP call at broadcast rates.
            # Bot API method names are case-insensitive; the lower-case spelling keeps PTB from suggesting its typed
            # method (which is what we are avoiding here).
            result = await self.bot.do_api_request("sendmessage", api_kwargs=self._raw_message(item))
            if not isinstance(result, dict) or not isinstance(result.get("message_id"), int):
                raise TelegramError("unexpected answer to sendMessage")
            return int(result["message_id"])
        kwargs = dict(item.payload)
        markup = reply_markup_from_json(kwargs.pop("reply_markup", None))
        if markup is not None:
            kwargs["reply_markup"] = markup
        bot = self.bot
        if item.method == outbox.SEND_MESSAGE:
            return (await bot.send_message(chat_id=item.chat_id, **kwargs)).message_id
        if item.method == outbox.EDIT_MESSAGE_TEXT:
            assert target is not None
            edited = await bot.edit_message_text(chat_id=target[0], message_id=target[1], **kwargs)
            return edited.message_id if not isinstance(edited, bool) else None
        if item.method == outbox.SEND_LOCATION:
            return (await bot.send_location(chat_id=item.chat_id, **kwargs)).message_id
        if item.method == outbox.SEND_VENUE:
            return (await bot.send_venue(chat_id=item.chat_id, **kwargs)).message_id
        if item.method == outbox.SEND_PHOTO:
            photo = item.attachment if item.attachment is not None else kwargs.pop("photo")
            return (await bot.send_photo(chat_id=item.chat_id, photo=photo, **kwargs)).message_id
        raise ValueError("unsupported outbox method")

    def _raw_message(self, item: OutboxItem) -> dict[str, Any]:
        """The sendMessage parameters of an item, with the bot's default link preview setting (PTB's Defaults are
        applied by its typed methods only)."""
        params: dict[str, Any] = {"chat_id": item.chat_id, **item.payload}
        if "link_preview_options" not in params:
            if self._preview is None:
                defaults = getattr(self.bot, "defaults", None)
                preview = getattr(defaults, "link_preview_options", None) if defaults is not None else None
                self._preview = preview.to_dict() if preview is not None else {}
            if self._preview:
                params["link_preview_options"] = self._preview
        return params

    async def _retry(self, item: OutboxItem, outcome: Outcome) -> None:
        if item.attempts >= self.max_attempts:
            log.warning(
                "outbox item %s (%s to chat %s): giving up after %d attempts (%s)",
                item.id,
                item.method,
                item.chat_id,
                item.attempts,
                outcome.category,
            )
            await self._record(outbox.mark_failed, item, error=outcome.category)
            return
        delay = self.backoff(item.attempts)
        log.info(
            "outbox item %s (%s to chat %s): %s, attempt %d; retrying in %.1f s",
            item.id,
            item.method,
            item.chat_id,
            outcome.category,
            item.attempts,
            delay,
        )
        await self._record(outbox.mark_retry, item, at=utcnow() + timedelta(seconds=delay), error=outcome.category)

    async def _flood(self, item: OutboxItem, outcome: Outcome) -> None:
        wait = outcome.retry_after
        loop = asyncio.get_running_loop()
        now = loop.time()
        until = now + wait
        self._floods = {chat: end for chat, end in self._floods.items() if end > now}
        if any(chat != item.chat_id for chat in self._floods):
            # Flood control in two chats at once: a global limit. Stop hammering every chat until it has passed.
            self._paused_until = max(self._paused_until, until, *self._floods.values())
            log.warning(
                "outbox: flood control in several chats; pausing all sends for %.1f s", self._paused_until - now
            )
        self._floods[item.chat_id] = until
        log.info(
            "outbox item %s (%s to chat %s): flood control, retrying in %.1f s",
            item.id,
            item.method,
            item.chat_id,
            wait,
        )
        at = utcnow() + timedelta(seconds=wait)
        await self._record(outbox.mark_retry, item, at=at, error=outcome.category, count_attempt=False)

    async def _fail(self, item: OutboxItem, category: str) -> None:
        level = logging.ERROR if category.startswith("internal") else logging.WARNING
        log.log(level, "outbox item %s (%s to chat %s) failed: %s", item.id, item.method, item.chat_id, category)
        await self._record(outbox.mark_failed, item, error=category)

    def backoff(self, attempts: int) -> float:
        """Seconds to wait after the `attempts`-th failed call: base · 2^(n-1), ±20 % jitter, capped."""
        delay = min(self.max_backoff, self.base_backoff * 2 ** max(attempts - 1, 0))
        return min(self.max_backoff, delay * self._random.uniform(0.8, 1.2))

    async def _record(self, write: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
        """Run one bookkeeping write in its own session, retried briefly: losing it would mean a resend."""
        for pause in (0.2, 0.5, 1.0, None):
            try:
                async with self._writing(), self.database.session() as session:
                    return await write(session, *args, **kwargs)
            except Exception:
                if pause is None:
                    raise
                await asyncio.sleep(pause)
        raise AssertionError("unreachable")


class _GroupCommit:
    """Marks items sent in batches: every item Telegram accepted while the previous batch was being written goes into
    the next one (one UPDATE and one commit for all of them). Nothing waits on purpose: an item alone is written at
    once, so the window between Telegram's answer and its record stays one transaction long, as per item."""

    MAX_BATCH = 500

    def __init__(self, worker: OutboxWorker) -> None:
        self.worker = worker
        self._queue: list[tuple[OutboxItem, int | None, asyncio.Future[bool]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def record(self, item: OutboxItem, message_id: int | None) -> bool:
        """True once the item is recorded as sent; False if its claim was lost (another worker took it over)."""
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._queue.append((item, message_id, future))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write(), name="outbox-sent-writer")
        return await future

    async def _write(self) -> None:
        while self._queue:
            batch, self._queue = self._queue[: self.MAX_BATCH], self._queue[self.MAX_BATCH :]
            try:
                done = await self.worker._record(outbox.mark_sent_many, [(item, mid) for item, mid, _ in batch])
            except Exception as exc:  # the database stayed unreachable: each item's lease will bring it back
                for _, _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for item, _, future in batch:
                if not future.done():
                    future.set_result(item.id in done)


def _plain_send_message(bot: Bot) -> bool:
    """The bot is python-telegram-bot's own (not a stub, nor a subclass that changes send_message)."""
    return isinstance(bot, Bot) and type(bot).send_message in (Bot.send_message, ExtBot.send_message)


def _error_name(exc: BaseException) -> str:
    """The exception's type (and its driver error's), never its message: SQL errors carry parameter values."""
    original = getattr(exc, "orig", None)
    name = type(exc).__name__
    return f"{name}/{type(original).__name__}" if original is not None else name


# --- the HTTP side: Telegram's limits, and a client fast enough for paid broadcasts --------------------------------
