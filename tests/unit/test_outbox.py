"""The outbox table and its rules: transactional enqueue, dedupe keys, superseded edits, per-chat order, claims."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import update
from telegram.error import BadRequest, Forbidden, NetworkError, RetryAfter, TimedOut

from bot.database import Database
from bot.outbox import OutboxWorker, classify, reply_markup_from_json
from models import outbox
from models.base import utcnow
from models.outbox import OutboxItem, OutboxStatus, UnknownCard

LEASE = timedelta(seconds=60)

# RetryAfter's constructor reads its own deprecated int-valued attribute (python-telegram-bot 22).
pytestmark = pytest.mark.filterwarnings("ignore::telegram.warnings.PTBDeprecationWarning")


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = Database(f"sqlite+aiosqlite:///{tmp_path}/o.db")
    await database.upgrade()
    yield database
    await database.dispose()


async def statuses(db: Database) -> dict[int, str]:
    async with db.session() as session:
        connection = await session.connection()
        rows = await connection.execute(OutboxItem.__table__.select())  # type: ignore[attr-defined]
        return {row.id: row.status for row in rows}


async def set_status(db: Database, item_id: int, **values: Any) -> None:
    async with db.session() as session:
        connection = await session.connection()
        await connection.execute(
            update(OutboxItem.__table__).where(OutboxItem.__table__.c.id == item_id).values(**values)
        )  # type: ignore[attr-defined]
        await session.commit()


class StubBot:
    """Records calls like the Bot API would receive them; optionally fails the first calls."""

    def __init__(self, failures: list[BaseException] | None = None, delay: float = 0.0) -> None:
        self.sent: list[tuple[int, str]] = []
        self.edits: list[tuple[int, int, str]] = []
        self.failures = list(failures or [])
        self.delay = delay
        self._ids = itertools.count(1)

    async def send_message(self, chat_id: int, text: str, **_: Any) -> SimpleNamespace:
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.failures:
            raise self.failures.pop(0)
        self.sent.append((chat_id, text))
        return SimpleNamespace(message_id=next(self._ids))

    async def edit_message_text(self, text: str, chat_id: int, message_id: int, **_: Any) -> SimpleNamespace:
        self.edits.append((chat_id, message_id, text))
        return SimpleNamespace(message_id=message_id)


def worker(bot: StubBot, db: Database, **options: Any) -> OutboxWorker:
    defaults: dict[str, Any] = {"poll_interval": 0.05, "base_backoff": 0.01, "max_backoff": 0.05, "lease": 5.0}
    return OutboxWorker(bot, db, **(defaults | options))  # type: ignore[arg-type]


# --- enqueueing -------------------------------------------------------------------------------------------------


async def test_enqueue_is_part_of_the_callers_transaction(db: Database) -> None:
    async with db.session() as session:
        item = await outbox.enqueue_message(session, 1, "rolled back")
        assert item.id is not None and item.status == OutboxStatus.PENDING
        await session.rollback()
    async with db.session() as session:
        await outbox.enqueue_message(session, 1, "kept")
        await session.commit()
    async with db.session() as session:
        counts = await outbox.stats(session)
    assert counts == {"pending": 1, "sending": 0, "sent": 0, "failed": 0, "superseded": 0}


async def test_enqueue_stores_html_payload_and_markup(db: Database) -> None:
    markup = {"inline_keyboard": [[{"text": "Claim", "callback_data": "case:42:claim"}]]}
    async with db.session() as session:
        item = await outbox.enqueue_message(session, -100123, "<b>new</b>", reply_markup=markup, card_key="c")
        await session.commit()
    assert item.payload == {"text": "<b>new</b>", "parse_mode": "HTML", "reply_markup": markup}
    assert item.method == "sendMessage" and item.chat_id == -100123 and item.attempts == 0
    assert item.next_attempt_at.tzinfo is not None and item.created_at.tzinfo is not None


async def test_dedupe_key_keeps_one_item(db: Database) -> None:
    async with db.session() as session:
        first = await outbox.enqueue_message(session, 1, "claimed", dedupe_key="case:42:notify:claimed")
        again = await outbox.enqueue_message(session, 1, "claimed", dedupe_key="case:42:notify:claimed")
        assert again.id == first.id  # within one transaction
        await session.commit()
    async with db.session() as session:
        later = await outbox.enqueue_message(session, 1, "claimed (2)", dedupe_key="case:42:notify:claimed")
        other = await outbox.enqueue_message(session, 1, "resolved", dedupe_key="case:42:notify:resolved")
        await session.commit()
    assert later.id == first.id and other.id != first.id
    assert len(await statuses(db)) == 2


async def test_dedupe_race_between_transactions_does_not_break_the_loser(db: Database) -> None:
    async with db.session() as winner, db.session() as loser:
        mine = await outbox.enqueue_message(winner, 1, "from A", dedupe_key="k")
        # The loser inserts while the winner's transaction is open: it waits for the lock, then inserts nothing.
        racing = asyncio.create_task(outbox.enqueue_message(loser, 1, "from B", dedupe_key="k"))
        await asyncio.sleep(0.1)
        await winner.commit()
        theirs = await racing
        await outbox.enqueue_message(loser, 2, "unrelated")  # the loser's transaction is intact
        await loser.commit()
    assert theirs.id == mine.id
    assert len(await statuses(db)) == 2


async def test_enqueue_validates_its_arguments(db: Database) -> None:
    async with db.session() as session:
        with pytest.raises(ValueError):
            await outbox.enqueue_message(session, 1, "")
        with pytest.raises(ValueError):
            await outbox.enqueue_message(session, 1, "x", card_key="k" * 129)
        with pytest.raises(ValueError):
            await outbox.enqueue(session, "deleteMessage", 1, {})
        with pytest.raises(UnknownCard):
            await outbox.enqueue_edit(session, "case:404:staff", "edit of nothing")


async def test_newer_edit_supersedes_pending_ones(db: Database) -> None:
    async with db.session() as session:
        card = await outbox.enqueue_message(session, -100, "case 42: new", card_key="case:42")
        first = await outbox.enqueue_edit(session, "case:42", "case 42: claimed")
        await session.commit()
    async with db.session() as session:
        second = await outbox.enqueue_edit(session, "case:42", "case 42: resolved")
        await session.commit()
    assert first.chat_id == second.chat_id == -100  # edits go to the card's chat, behind the card
    assert await statuses(db) == {card.id: "pending", first.id: "superseded", second.id: "pending"}

    bot = StubBot()
    w = worker(bot, db)
    await w.start()
    try:
        await w.drain(5)
    finally:
        await w.stop()
    assert bot.sent == [(-100, "case 42: new")]
    assert bot.edits == [(-100, 1, "case 42: resolved")]
    async with db.session() as session:
        assert await outbox.card_message(session, "case:42") == (-100, 1)
        assert (await outbox.stats(session))["superseded"] == 1


async def test_edit_of_a_card_whose_send_failed_fails(db: Database) -> None:
    async with db.session() as session:
        await outbox.enqueue_message(session, 5, "card", card_key="card")
        await outbox.enqueue_edit(session, "card", "edited")
        await session.commit()
    bot = StubBot(failures=[Forbidden("Forbidden: bot was blocked by the user")])
    w = worker(bot, db)
    await w.start()
    try:
        await w.drain(5)
    finally:
        await w.stop()
    async with db.session() as session:
        items = [await outbox.get_item(session, i) for i in (1, 2)]
    assert [(i.status, i.last_error) for i in items if i] == [
        ("failed", "forbidden:blocked"),
        ("failed", "card_not_sent"),
    ]
    assert bot.edits == []


# --- order and claims -------------------------------------------------------------------------------------------


async def test_due_items_keep_per_chat_order(db: Database) -> None:
    now = utcnow()
    async with db.session() as session:
        a1 = await outbox.enqueue_message(session, 1, "a1")
        a2 = await outbox.enqueue_message(session, 1, "a2")
        b1 = await outbox.enqueue_message(session, 2, "b1")
        later = await outbox.enqueue_message(session, 3, "tomorrow", not_before=now + timedelta(days=1))
        c1 = await outbox.enqueue_message(session, 3, "c1")
        await session.commit()
    async with db.session() as session:
        # One head per chat; a message scheduled for later holds nothing back.
        assert await outbox.due_items(session) == [a1.id, b1.id, c1.id]
    # a1 waits for a retry: it still holds a2 back, chat 2 is unaffected.
    await set_status(db, a1.id, attempts=1, next_attempt_at=now + timedelta(minutes=5), last_error="network")  # type: ignore[arg-type]
    async with db.session() as session:
        assert await outbox.due_items(session) == [b1.id, c1.id]
        assert await outbox.outstanding(session) == 4  # the scheduled one does not count yet
    await set_status(db, a1.id, status="failed")  # type: ignore[arg-type]
    async with db.session() as session:
        assert await outbox.due_items(session) == [a2.id, b1.id, c1.id]
    assert later.next_attempt_at > now


async def test_concurrent_claims_have_one_winner(db: Database) -> None:
    async with db.session() as session:
        item = await outbox.enqueue_message(session, 1, "once")
        await session.commit()
    assert item.id is not None

    async def claim() -> OutboxItem | None:
        async with db.session() as session:
            return await outbox.claim(session, item.id, lease=LEASE)  # type: ignore[arg-type]

    results = await asyncio.gather(*(claim() for _ in range(8)))
    winners = [r for r in results if r is not None]
    assert len(winners) == 1 and winners[0].status == "sending" and winners[0].attempts == 1
    async with db.session() as session:
        # The winner's fencing token: a stale copy (older attempt count) cannot finish the item.
        stale = winners[0].model_copy(update={"attempts": 0})
        assert not await outbox.mark_sent(session, stale, 7)
        assert await outbox.mark_sent(session, winners[0], 7)


async def test_two_workers_send_each_item_once(db: Database, tmp_path: Path) -> None:
    async with db.session() as session:
        for n in range(40):
            await outbox.enqueue_message(session, n % 5, f"m{n}")
        await session.commit()
    other_db = Database(db.url)  # a second process: its own engine and pool
    bot_a, bot_b = StubBot(delay=0.002), StubBot(delay=0.002)
    workers = [worker(bot_a, db), worker(bot_b, other_db)]
    for w in workers:
        await w.start()
    try:
        for w in workers:
            await w.drain(10)
    finally:
        for w in workers:
            await w.stop()
        await other_db.dispose()
    sent = bot_a.sent + bot_b.sent
    assert sorted(text for _, text in sent) == sorted(f"m{n}" for n in range(40))
    for chat in range(5):  # each chat's messages in order, whichever worker sent them
        texts = [t for c, t in sorted(sent, key=lambda s: int(s[1][1:])) if c == chat]
        assert texts == [f"m{n}" for n in range(chat, 40, 5)]


async def test_expired_lease_is_released_and_live_lease_is_not(db: Database) -> None:
    async with db.session() as session:
        crashed = await outbox.enqueue_message(session, 1, "claimed by a dead worker")
        alive = await outbox.enqueue_message(session, 2, "claimed by a live worker")
        await session.commit()
    async with db.session() as session:
        assert await outbox.claim(session, crashed.id, lease=timedelta(seconds=-1))  # type: ignore[arg-type]
    async with db.session() as session:
        assert await outbox.claim(session, alive.id, lease=timedelta(minutes=5))  # type: ignore[arg-type]
    bot = StubBot()
    w = worker(bot, db)
    await w.start()
    try:
        for _ in range(200):
            if bot.sent:
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)
    finally:
        await w.stop()
    assert bot.sent == [(1, "claimed by a dead worker")]
    assert (await statuses(db))[alive.id] == "sending"  # another process is sending it: hands off


async def test_takeover_on_start_resends_items_left_sending(db: Database) -> None:
    async with db.session() as session:
        item = await outbox.enqueue_message(session, 1, "interrupted")
        await session.commit()
    async with db.session() as session:
        assert await outbox.claim(session, item.id, lease=timedelta(minutes=5))  # type: ignore[arg-type]
    bot = StubBot()
    w = worker(bot, db, takeover_on_start=True)
    await w.start()
    try:
        await w.drain(5)
    finally:
        await w.stop()
    assert bot.sent == [(1, "interrupted")]
    async with db.session() as session:
        done = await outbox.get_item(session, item.id)  # type: ignore[arg-type]
    assert done is not None and done.status == "sent" and done.attempts == 2


async def test_retries_then_gives_up(db: Database) -> None:
    async with db.session() as session:
        flaky = await outbox.enqueue_message(session, 1, "flaky")
        await session.commit()
    bot = StubBot(failures=[NetworkError("Bad Gateway"), TimedOut(), RetryAfter(0)])
    w = worker(bot, db, max_attempts=3)
    await w.start()
    try:
        await w.drain(5)
        assert bot.sent == [(1, "flaky")]
        async with db.session() as session:
            sent = await outbox.get_item(session, flaky.id)  # type: ignore[arg-type]
        assert sent is not None and sent.status == "sent"
        assert sent.attempts == 3  # two failures and the success; the flood-control answer is not counted

        bot.failures = [NetworkError("Internal Server Error")] * 5
        async with db.session() as session:
            doomed = await outbox.enqueue_message(session, 3, "never")
            await session.commit()
        await w.drain(5)
    finally:
        await w.stop()
    async with db.session() as session:
        failed = await outbox.get_item(session, doomed.id)  # type: ignore[arg-type]
    assert failed is not None and failed.status == "failed" and failed.last_error == "server_error"
    assert failed.attempts == 3 and len(bot.failures) == 2


async def test_prune_forgets_old_finished_items(db: Database) -> None:
    async with db.session() as session:
        old = await outbox.enqueue_message(session, 1, "old", dedupe_key="k")
        await outbox.enqueue_message(session, 1, "still pending")
        await session.commit()
    await set_status(db, old.id, status="sent", created_at=utcnow() - timedelta(days=30))  # type: ignore[arg-type]
    async with db.session() as session:
        assert await outbox.prune(session, timedelta(days=7)) == 1
        assert (await outbox.stats(session))["pending"] == 1


# --- error classification ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "action", "category"),
    [
        (lambda: RetryAfter(3), "flood", "flood_control"),
        (Forbidden("Forbidden: bot was blocked by the user"), "fail", "forbidden:blocked"),
        (Forbidden("Forbidden: bot was kicked from the supergroup chat"), "fail", "forbidden:kicked"),
        (BadRequest("Message is not modified: specified new message content …"), "sent", "not_modified"),
        (BadRequest("Message to edit not found"), "fail", "bad_request:edit_target_missing"),
        (
            BadRequest('Can\'t parse entities: unsupported start tag "secret" at byte offset 3'),
            "fail",
            "bad_request:html",
        ),
        (BadRequest("Something new"), "fail", "bad_request"),
        (TimedOut(), "retry", "timeout"),
        (NetworkError("Bad Gateway"), "retry", "server_error"),
        (NetworkError("httpx.ConnectError: connection refused"), "retry", "network"),
        (ValueError("bug"), "fail", "internal:ValueError"),
    ],
)
def test_classify(error: BaseException | Callable[[], BaseException], action: str, category: str) -> None:
    outcome = classify(error() if callable(error) else error)
    assert (outcome.action, outcome.category) == (action, category)
    if action == "flood":
        assert outcome.retry_after == 3


def test_backoff_doubles_with_jitter_and_is_capped() -> None:
    w = OutboxWorker(None, None, base_backoff=1.0, max_backoff=300.0)  # type: ignore[arg-type]
    for attempts, nominal in ((1, 1), (2, 2), (3, 4), (5, 16)):
        assert 0.8 * nominal <= w.backoff(attempts) <= 1.2 * nominal
    assert w.backoff(30) <= 300.0


def test_reply_markup_from_json() -> None:
    inline = reply_markup_from_json({"inline_keyboard": [[{"text": "A", "callback_data": "a"}]]})
    assert inline is not None and inline.to_dict()["inline_keyboard"][0][0]["callback_data"] == "a"
    assert reply_markup_from_json({"remove_keyboard": True}) is not None
    assert reply_markup_from_json(None) is None
