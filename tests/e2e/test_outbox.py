"""The outbox worker against the fake Bot API over HTTP, on SQLite and PostgreSQL.

Per-chat order, edits of cards not yet sent, 429/500/502/dropped connections, blocked users, a worker stopped
mid-send, and two workers on one database: every message arrives exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import pytest
from telegram import Bot

from bot.database import Database
from bot.outbox import OutboxWorker
from bot.sandbox.fake_telegram import TINY_JPEG, FakeTelegram, _ChatReader
from models import outbox
from models.outbox import OutboxItem

# PTB's RetryAfter reads its own deprecated int-valued attribute when a 429 arrives (python-telegram-bot 22).
pytestmark = pytest.mark.filterwarnings("ignore::telegram.warnings.PTBDeprecationWarning")

FAST = {"poll_interval": 0.05, "base_backoff": 0.02, "max_backoff": 0.2, "lease": 5.0}


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = Database(database_url)
    await database.upgrade()
    yield database
    await database.dispose()


def new_bot(fake: FakeTelegram) -> Bot:
    return Bot(token=fake.token, base_url=fake.base_url)


@asynccontextmanager
async def running(
    fake: FakeTelegram, db: Database, bot: Bot | None = None, **options: Any
) -> AsyncIterator[OutboxWorker]:
    async with bot or new_bot(fake) as telegram_bot:  # initialize() (getMe) … shutdown()
        worker = OutboxWorker(telegram_bot, db, **(FAST | options))
        await worker.start()
        try:
            yield worker
        finally:
            await worker.stop()


async def enqueue(db: Database, *messages: tuple[int, str], **options: Any) -> list[OutboxItem]:
    async with db.session() as session:
        items = [await outbox.enqueue_message(session, chat_id, text, **options) for chat_id, text in messages]
        await session.commit()
    return items


async def item(db: Database, item_id: int | None) -> OutboxItem:
    assert item_id is not None
    async with db.session() as session:
        found = await outbox.get_item(session, item_id)
    assert found is not None
    return found


async def worker_stats(db: Database) -> dict[str, int]:
    async with db.session() as session:
        return await outbox.stats(session)


def texts(chat: _ChatReader) -> list[str | None]:
    return [m.text for m in chat.messages]


async def test_messages_arrive_once_and_in_order_per_chat(db: Database, fake_telegram: FakeTelegram) -> None:
    ann, bob, staff = fake_telegram.user("Ann"), fake_telegram.user("Bob"), fake_telegram.group("Staff")
    chats = {"ann": ann, "bob": bob, "staff": staff}
    await enqueue(db, *[(chat.chat_id, f"{name} {n}") for n in range(4) for name, chat in chats.items()])
    async with running(fake_telegram, db, concurrency=3) as worker:
        await worker.drain(10)
    for name, chat in chats.items():
        assert texts(chat) == [f"{name} {n}" for n in range(4)]
        assert all(m.parse_mode == "HTML" for m in chat.messages)
    async with db.session() as session:
        assert (await outbox.stats(session))["sent"] == 12
    assert not fake_telegram.rejections


async def test_commit_wakes_the_worker(db: Database, fake_telegram: FakeTelegram) -> None:
    ann = fake_telegram.user("Ann")
    async with running(fake_telegram, db, poll_interval=60.0):
        await asyncio.sleep(0.1)  # the worker's first look found nothing; its next poll is a minute away
        await enqueue(db, (ann.chat_id, "<b>Case 42</b> was claimed"))
        message = await ann.receive(timeout=5)
    assert message.text == "Case 42 was claimed" and message.html == "<b>Case 42</b> was claimed"


async def test_edits_wait_for_their_card_and_only_the_newest_is_sent(db: Database, fake_telegram: FakeTelegram) -> None:
    staff = fake_telegram.group("Staff")
    claim = {"inline_keyboard": [[{"text": "Claim", "callback_data": "case:42:claim"}]]}
    async with db.session() as session:
        await outbox.enqueue_message(session, staff.chat_id, "Case 42: new", reply_markup=claim, card_key="case:42")
        await outbox.enqueue_edit(session, "case:42", "Case 42: claimed by Ann")
        await session.commit()
    async with db.session() as session:
        await outbox.enqueue_edit(session, "case:42", "Case 42: claimed by Bob")
        newest = await outbox.enqueue_edit(session, "case:42", "Case 42: resolved", reply_markup=None)
        await session.commit()
    async with running(fake_telegram, db) as worker:
        await worker.drain(10)
        card = staff.messages[0]
        assert len(staff.messages) == 1 and card.text == "Case 42: resolved" and card.inline_keyboard == []
        assert card.edits == 1 and card.history == ["Case 42: new"]
        assert [c.method for c in fake_telegram.calls if c.method != "getMe"] == ["sendMessage", "editMessageText"]
        async with db.session() as session:
            assert await outbox.card_message(session, "case:42") == (staff.chat_id, card.message_id)
            assert (await outbox.stats(session)) | {"sending": 0} == {
                "pending": 0,
                "sending": 0,
                "sent": 2,
                "failed": 0,
                "superseded": 2,
            }
        assert (await item(db, newest.id)).telegram_message_id == card.message_id

        # The same text again: Telegram answers "message is not modified", which counts as done.
        async with db.session() as session:
            same = await outbox.enqueue_edit(session, "case:42", "Case 42: resolved")
            await session.commit()
        await worker.drain(10)
        assert (await item(db, same.id)).status == "sent"

        # The card was deleted meanwhile: the edit fails, without retries.
        await worker.bot.delete_message(staff.chat_id, card.message_id)
        async with db.session() as session:
            gone = await outbox.enqueue_edit(session, "case:42", "Case 42: reopened")
            await session.commit()
        await worker.drain(10)
    failed = await item(db, gone.id)
    assert (failed.status, failed.last_error, failed.attempts) == ("failed", "bad_request:edit_target_missing", 1)


async def test_server_errors_and_dropped_connections_are_retried(db: Database, fake_telegram: FakeTelegram) -> None:
    ann, staff = fake_telegram.user("Ann"), fake_telegram.group("Staff")
    for kind in ("500", "502", "drop"):
        fake_telegram.inject_faults(2, kind, methods={"sendMessage", "editMessageText"})  # type: ignore[arg-type]
    async with db.session() as session:
        await outbox.enqueue_message(session, staff.chat_id, "card v1", card_key="card")
        await outbox.enqueue_edit(session, "card", "card v2")
        for n in range(4):
            await outbox.enqueue_message(session, ann.chat_id, f"ann {n}")
        await session.commit()
    async with running(fake_telegram, db) as worker:
        await worker.drain(10)
    assert fake_telegram.faults.pending == 0
    assert texts(ann) == [f"ann {n}" for n in range(4)]
    assert texts(staff) == ["card v2"] and staff.messages[0].edits == 1
    injected = [c for c in fake_telegram.calls if c.injected]
    assert len(injected) == 6
    async with db.session() as session:
        assert (await outbox.stats(session))["sent"] == 6


async def test_flood_control_is_respected(db: Database, fake_telegram: FakeTelegram) -> None:
    chats = [fake_telegram.user("Ann"), fake_telegram.user("Bob"), fake_telegram.group("Staff")]
    fake_telegram.set_flood_limits(global_per_second=4, retry_after=1)
    await enqueue(db, *[(chat.chat_id, f"{chat.chat_id}:{n}") for n in range(2) for chat in chats])
    async with running(fake_telegram, db) as worker:
        await worker.drain(10)
    for chat in chats:
        assert texts(chat) == [f"{chat.chat_id}:{n}" for n in range(2)]
    assert any(c.status == 429 for c in fake_telegram.calls)
    async with db.session() as session:
        assert (await outbox.stats(session))["sent"] == 6


async def test_blocked_user_fails_at_once_and_the_queue_moves_on(
    db: Database, fake_telegram: FakeTelegram, caplog: pytest.LogCaptureFixture
) -> None:
    ann, bob, staff = fake_telegram.user("Ann"), fake_telegram.user("Bob"), fake_telegram.group("Staff")
    fake_telegram.block(ann)
    items = await enqueue(
        db,
        (ann.chat_id, "Your request 42 was claimed"),
        (ann.chat_id, "Your request 42 was resolved"),
        (staff.chat_id, "Case 43: new"),
        (bob.chat_id, "Your request 43 was claimed"),
    )
    with caplog.at_level(logging.DEBUG, logger="waystation.outbox"):
        async with running(fake_telegram, db) as worker:
            await worker.drain(10)
    assert texts(staff) == ["Case 43: new"] and texts(bob) == ["Your request 43 was claimed"]
    for blocked in items[:2]:
        found = await item(db, blocked.id)
        assert (found.status, found.last_error, found.attempts) == ("failed", "forbidden:blocked", 1)
    assert len([c for c in fake_telegram.calls_to("sendMessage") if c.status == 403]) == 2
    logged = "\n".join(r.getMessage() for r in caplog.records if r.name == "waystation.outbox")
    assert "forbidden:blocked" in logged and str(ann.chat_id) in logged
    assert "request" not in logged  # ids and categories only: no message text in the logs


async def test_bad_html_fails_without_logging_the_text(
    db: Database, fake_telegram: FakeTelegram, caplog: pytest.LogCaptureFixture
) -> None:
    ann = fake_telegram.user("Ann")
    bad, good = await enqueue(db, (ann.chat_id, "Mrs Secretname <b>unclosed"), (ann.chat_id, "fine"))
    with caplog.at_level(logging.DEBUG, logger="waystation.outbox"):
        async with running(fake_telegram, db) as worker:
            await worker.drain(10)
    assert texts(ann) == ["fine"]
    assert (await item(db, bad.id)).last_error == "bad_request:html"
    outbox_logs = [r for r in caplog.records if r.name.startswith("waystation")]
    assert outbox_logs and not any("Secretname" in r.getMessage() for r in outbox_logs)
    assert good.id is not None


async def test_location_venue_and_photo(db: Database, fake_telegram: FakeTelegram) -> None:
    ann = fake_telegram.user("Ann")
    async with db.session() as session:
        await outbox.enqueue_location(session, ann.chat_id, 31.717, 119.958)
        await outbox.enqueue_venue(session, ann.chat_id, 31.717, 119.958, "Hutang station", "1 Hutang Rd")
        await outbox.enqueue_photo(session, ann.chat_id, TINY_JPEG, caption="<i>Today</i>")
        await session.commit()
    async with running(fake_telegram, db) as worker:
        await worker.drain(10)
    location, venue, photo = ann.messages
    assert (location.kind, location.latitude, location.longitude) == ("location", 31.717, 119.958)
    assert (venue.kind, venue.title, venue.address) == ("venue", "Hutang station", "1 Hutang Rd")
    assert (photo.kind, photo.caption, photo.data) == ("photo", "Today", TINY_JPEG)


async def test_worker_stopped_mid_send_and_a_crashed_claim_lose_and_duplicate_nothing(
    db: Database, fake_telegram: FakeTelegram
) -> None:
    ann, bob, staff = fake_telegram.user("Ann"), fake_telegram.user("Bob"), fake_telegram.group("Staff")
    items = await enqueue(
        db, *[(chat.chat_id, f"{name} {n}") for n in range(3) for name, chat in (("ann", ann), ("bob", bob))]
    )
    (orphan,) = await enqueue(db, (staff.chat_id, "staff alert"))
    # A process that died mid-send: its claim (sending) outlived its lease.
    async with db.session() as session:
        assert await outbox.claim(session, orphan.id, lease=timedelta(seconds=-1))  # type: ignore[arg-type]

    class StuckBot(Bot):
        """Telegram never answers for Ann's chat (the call hangs before reaching the server)."""

        async def send_message(self, chat_id: int | str, text: str, **kwargs: Any) -> Any:  # type: ignore[override]
            if chat_id == ann.chat_id:
                await asyncio.Event().wait()
            return await super().send_message(chat_id, text, **kwargs)

    async with StuckBot(token=fake_telegram.token, base_url=fake_telegram.base_url) as stuck_bot:
        first = OutboxWorker(stuck_bot, db, **FAST)
        await first.start()
        await bob.wait_until(lambda messages: len(messages) == 3)
        await staff.wait_until(lambda messages: len(messages) == 1)
        # Stop once Bob's and the staff messages are recorded as sent (stopping while Telegram's answer is on its
        # way back is the documented at-least-once window: such an item is sent again).
        for _ in range(500):
            if (await worker_stats(db))["sent"] == 4:
                break
            await asyncio.sleep(0.01)
        assert (await item(db, items[0].id)).status == "sending"  # Ann's first message is in flight
        # Abrupt stop: the worker's task is cancelled, not stopped.
        assert first._task is not None
        first._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await first._task
    assert (await item(db, items[0].id)).status == "pending"  # the interrupted item was handed back

    restarted = Database(db.url)
    try:
        async with running(fake_telegram, restarted) as worker:
            await worker.drain(10)
    finally:
        await restarted.dispose()
    assert texts(ann) == ["ann 0", "ann 1", "ann 2"]
    assert texts(bob) == ["bob 0", "bob 1", "bob 2"]
    assert texts(staff) == ["staff alert"]
    assert (await item(db, orphan.id)).attempts == 2  # claimed by the dead process, then resent once


async def test_two_workers_on_one_database_send_each_item_once(db: Database, fake_telegram: FakeTelegram) -> None:
    chats = [fake_telegram.user("Ann"), fake_telegram.user("Bob"), fake_telegram.group("Staff")]
    fake_telegram.inject_faults(3, "502", methods={"sendMessage"})
    await enqueue(db, *[(chat.chat_id, f"{chat.chat_id}:{n}") for n in range(5) for chat in chats])
    second_db = Database(db.url)  # another process: its own engine and connection pool
    try:
        async with running(fake_telegram, db) as one, running(fake_telegram, second_db) as two:
            await one.drain(10)
            await two.drain(10)
    finally:
        await second_db.dispose()
    for chat in chats:
        assert texts(chat) == [f"{chat.chat_id}:{n}" for n in range(5)]
    assert len([c for c in fake_telegram.calls_to("sendMessage") if c.ok]) == 15


async def test_dedupe_and_claims_hold_under_concurrency(db: Database) -> None:
    async with db.session() as winner, db.session() as loser:
        mine = await outbox.enqueue_message(winner, 1, "claimed", dedupe_key="case:42:notify:claimed")
        racing = asyncio.create_task(outbox.enqueue_message(loser, 1, "claimed", dedupe_key="case:42:notify:claimed"))
        await asyncio.sleep(0.1)  # the loser waits on the winner's uncommitted row
        await winner.commit()
        theirs = await racing
        await outbox.enqueue_message(loser, 2, "the loser's transaction still works")
        await loser.commit()
    assert theirs.id == mine.id

    async def claim() -> OutboxItem | None:
        async with db.session() as session:
            return await outbox.claim(session, mine.id, lease=timedelta(seconds=60))  # type: ignore[arg-type]

    claims = await asyncio.gather(*(claim() for _ in range(6)))
    assert len([c for c in claims if c is not None]) == 1
    async with db.session() as session:
        assert await outbox.stats(session) == {"pending": 1, "sending": 1, "sent": 0, "failed": 0, "superseded": 0}
