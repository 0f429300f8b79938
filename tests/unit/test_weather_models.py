"""models/weather.py on the database (SQLite, and PostgreSQL when configured): one open event per area under a race,
one decision per draft, idempotent fan-out steps, audiences, delivery counts, blocked subscribers, /forgetme; and the
outbox's batch operations the broadcasts rely on."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import update

from bot.database import Database
from models import outbox, users, weather
from models.base import utcnow
from models.outbox import NewMessage, OutboxItem
from models.weather import Broadcast, Recipient, Spell

LEASE = timedelta(seconds=60)
NIGHT = datetime(2027, 1, 14, 14, 0, tzinfo=UTC)
SPELL = Spell(NIGHT, NIGHT + timedelta(hours=8), ("temperature",), -18.0, -26.0, 30.0, None)


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = Database(database_url)
    await database.upgrade()
    yield database
    await database.dispose()


async def subscribe(db: Database, chat_id: int, **options: Any) -> weather.Subscription:
    values: dict[str, Any] = {
        "language": "en",
        "area_key": "wujin",
        "lat": 31.71649,
        "lon": 119.95851,
        "cold_alerts": True,
        "announcements": False,
        "quiet_start": None,
        "quiet_end": None,
        **options,
    }
    async with db.session() as session:
        return await weather.save_subscription(session, chat_id, **values)


async def new_broadcast(db: Database, **fields: Any) -> Broadcast:
    async with db.session() as session:
        broadcast, created = await weather.create_broadcast(session, Broadcast(**{"kind": "manual", **fields}))
        await session.commit()
    assert created
    return broadcast


async def test_one_open_event_per_area_even_when_two_checks_race(db: Database) -> None:
    async def open_one() -> int | None:
        async with db.session() as session:
            event = await weather.start_event(session, "wujin", SPELL, NIGHT)
            await asyncio.sleep(0.05)  # both transactions open at once
            await session.commit()
            return event.id if event is not None else None

    results = await asyncio.gather(open_one(), open_one())
    assert len([r for r in results if r is not None]) == 1
    async with db.session() as session:
        event = await weather.open_event(session, "wujin")
        assert event is not None and event.reasons == ["temperature"] and event.starts_at == NIGHT
        assert await weather.start_event(session, "daqing", SPELL, NIGHT) is not None  # another area is separate
        assert await weather.close_event(session, event, NIGHT + timedelta(hours=9))
        assert not await weather.close_event(session, event, NIGHT + timedelta(hours=9))  # closed once
        await session.commit()
        assert await weather.open_event(session, "wujin") is None
        again = await weather.start_event(session, "wujin", SPELL, NIGHT + timedelta(days=2))
        await session.commit()
    assert again is not None and again.id != event.id  # the next spell is a new event


def test_extend_event_keeps_the_coldest_figures() -> None:
    event = weather.ColdEvent(area_key="a", starts_at=NIGHT, ends_at=NIGHT + timedelta(hours=8), min_temperature_c=-18)
    later = Spell(NIGHT, NIGHT + timedelta(hours=10), ("apparent",), -16.0, -30.0, 40.0, 2.0)
    assert weather.extend_event(event, later)
    assert (event.ends_at, event.min_temperature_c, event.min_apparent_c) == (later.ends_at, -18, -30)
    assert event.reasons == ["apparent"]
    assert not weather.extend_event(event, later)  # nothing new


async def test_one_decision_per_draft(db: Database) -> None:
    draft = await new_broadcast(db, kind="alert", status="draft", area_keys=["wujin"], urgent=True)
    assert draft.id is not None

    async def approve(by: int) -> Broadcast | None:
        async with db.session() as session:
            decided = await weather.decide(session, draft.id or 0, approve=True, by=by, by_name=f"staff {by}")
            await session.commit()
            return decided

    results = await asyncio.gather(*(approve(by) for by in (1, 2, 3)))
    winners = [r for r in results if r is not None]
    assert len(winners) == 1 and winners[0].status == "sending" and winners[0].started_at is not None
    async with db.session() as session:
        assert await weather.decide(session, draft.id, approve=False, by=4, by_name="late") is None
        assert await weather.set_note(session, draft.id, "too late") is None
        await session.rollback()
    other = await new_broadcast(db, kind="alert", status="draft")
    async with db.session() as session:
        noted = await weather.set_note(session, other.id or 0, "Beds at the railway station")
        assert noted is not None and noted.text == "Beds at the railway station"
        with pytest.raises(ValueError):
            await weather.set_note(session, other.id or 0, "x" * (weather.MAX_TEXT + 1))


async def test_a_second_send_of_the_same_draft_makes_no_second_broadcast(db: Database) -> None:
    first = await new_broadcast(db, text="Soup", status="sending", idempotency_key="draft-1")
    async with db.session() as session:
        again, created = await weather.create_broadcast(
            session, Broadcast(kind="manual", text="Soup", status="sending", idempotency_key="draft-1")
        )
    assert not created and again.id == first.id


async def test_audiences_follow_areas_kinds_urgency_and_the_current_language(db: Database) -> None:
    await subscribe(db, 1)  # Wujin, cold alerts
    await subscribe(db, 2, announcements=True, cold_alerts=False)  # Wujin, announcements only
    await subscribe(db, 3, area_key="daqing", announcements=True)
    await subscribe(db, 4)
    async with db.session() as session:
        await users.choose_language(session, 4, "zh_Hans")  # chose Chinese after subscribing in English
    blocked = await subscribe(db, 5)
    async with db.session() as session:
        connection = await session.connection()
        table = weather.Subscription.__table__  # type: ignore[attr-defined]
        await connection.execute(update(table).where(table.c.id == blocked.id).values(active=False))
        await session.commit()

    async def audience(**fields: Any) -> list[tuple[int, str]]:
        broadcast = Broadcast(**{"kind": "manual", "id": 0, **fields})
        async with db.session() as session:
            found = await weather.next_recipients(session, broadcast, 100)
            if not broadcast.cursor:
                assert await weather.count_audience(session, broadcast) == len(found)
        return [(r.chat_id, r.language) for r in found]

    assert await audience(kind="alert", area_keys=["wujin"]) == [(1, "en"), (4, "zh_Hans")]
    assert await audience(kind="manual", area_keys=[]) == [(2, "en"), (3, "en")]
    assert await audience(kind="manual", area_keys=["wujin"], urgent=True) == [(1, "en"), (2, "en"), (4, "zh_Hans")]
    assert await audience(kind="manual", area_keys=["wujin"], urgent=True, cursor=2) == [(4, "zh_Hans")]
    async with db.session() as session:
        assert await weather.count_subscribers(session) == {"wujin": 3, "daqing": 1}
        stored = await weather.get_subscription(session, 1)
    assert stored is not None and (stored.lat, stored.lon) == (31.716, 119.959)


def message(broadcast_id: int, chat_id: int) -> NewMessage:
    return NewMessage(chat_id, f"hello {chat_id}", weather.dedupe_key(broadcast_id, chat_id))


async def test_a_fan_out_step_is_all_or_nothing_and_a_resumed_one_adds_nobody_twice(db: Database) -> None:
    for chat in (11, 12, 13):
        await subscribe(db, chat)
    broadcast = await new_broadcast(db, status="sending", urgent=True)
    assert broadcast.id is not None
    async with db.session() as session:
        recipients = await weather.next_recipients(session, broadcast, 2)
        assert [r.chat_id for r in recipients] == [11, 12]
        await weather.add_deliveries(
            session,
            broadcast,
            [message(broadcast.id, r.chat_id) for r in recipients],
            cursor=recipients[-1].subscription_id,
        )
        await session.rollback()  # the process died before the commit: nothing of it stays
    async with db.session() as session:
        fresh = await weather.get_broadcast(session, broadcast.id)
        assert fresh is not None and (fresh.cursor, fresh.recipients) == (0, 0)
        recipients = await weather.next_recipients(session, fresh, 2)
        added = await weather.add_deliveries(
            session,
            fresh,
            [message(broadcast.id, r.chat_id) for r in recipients],
            cursor=recipients[-1].subscription_id,
        )
        await session.commit()
        assert added == 2
        # The same step again (as after a crash right after the commit, with a stale cursor): nothing new.
        again = await weather.add_deliveries(
            session,
            fresh,
            [message(broadcast.id, r.chat_id) for r in recipients],
            cursor=recipients[-1].subscription_id,
        )
        await session.commit()
        assert again == 0
        rest = await weather.next_recipients(session, fresh, 10)
        assert [r.chat_id for r in rest] == [13]
        assert (await outbox.stats(session))["pending"] == 2


async def test_delivery_counts_blocked_subscribers_and_forgetting(db: Database) -> None:
    for chat in (21, 22, 23, 24, 25):
        await subscribe(db, chat)
    broadcast = await new_broadcast(db, status="sending", urgent=True)
    assert broadcast.id is not None
    later = utcnow() + timedelta(hours=3)
    async with db.session() as session:
        messages = [message(broadcast.id, chat) for chat in (21, 22, 23, 24)]
        messages.append(NewMessage(25, "after quiet hours", weather.dedupe_key(broadcast.id, 25), not_before=later))
        await weather.add_deliveries(session, broadcast, messages, cursor=999)
        await session.commit()
    table = OutboxItem.__table__  # type: ignore[attr-defined]
    outcomes = {21: ("sent", None), 22: ("failed", "forbidden:blocked"), 23: ("failed", "bad_request:html")}
    async with db.session() as session:
        connection = await session.connection()
        for chat, (status, error) in outcomes.items():
            await connection.execute(
                update(table).where(table.c.chat_id == chat).values(status=status, last_error=error)
            )
        await session.commit()
        counts = await weather.delivery_counts(session, broadcast)
    assert counts == weather.DeliveryCounts(recipients=5, sent=1, failed=1, blocked=1, pending=1, scheduled=1)
    assert not counts.finished
    async with db.session() as session:
        assert await weather.deactivate_blocked(session, broadcast.id) == 1
        assert await weather.deactivate_blocked(session, broadcast.id) == 0  # idempotent
        stopped = await weather.get_subscription(session, 22)
        assert stopped is not None and (stopped.active, stopped.inactive_reason) == (False, "blocked")
        assert await weather.finish(session, broadcast, counts, utcnow())
        done = await weather.get_broadcast(session, broadcast.id)
        assert done is not None and (done.status, done.sent, done.blocked, done.failed) == ("done", 1, 1, 1)
        assert await weather.delivery_counts(session, done) == weather.DeliveryCounts(5, 1, 1, 1)
        # /forgetme: the subscription and every delivery record of the chat go.
        await weather.forget(session, 21)
        assert await weather.get_subscription(session, 21) is None
        assert await weather.unsubscribe(session, 24)
        assert not await weather.unsubscribe(session, 24)
    async with db.session() as session:
        connection = await session.connection()
        deliveries = weather.Delivery.__table__  # type: ignore[attr-defined]
        chats = sorted(row.chat_id for row in await connection.execute(deliveries.select()))
    assert chats == [22, 23, 24, 25]


async def test_forecast_failures_and_staleness(db: Database) -> None:
    now = NIGHT
    async with db.session() as session:
        assert weather.is_stale(None, now, timedelta(hours=12))
        row = await weather.record_failure(session, "wujin", "timeout", now)
        assert (row.failures, row.last_error, row.fetched_at) == (1, "timeout", None)
        assert weather.is_stale(row, now, timedelta(hours=12))
        hours = [weather.Hour(now + timedelta(hours=i), -1.0 * i, -2.0 * i, 5.0, 0.0) for i in range(3)]
        row = await weather.record_forecast(session, "wujin", hours, now)
        await session.commit()
        assert row.failures == 0 and row.parsed() == hours
        assert not weather.is_stale(row, now + timedelta(hours=11), timedelta(hours=12))
        assert weather.is_stale(row, now + timedelta(hours=13), timedelta(hours=12))
        assert set(await weather.forecasts(session)) == {"wujin"}


# --- the outbox's batch operations ------------------------------------------------------------------------------


async def test_enqueue_messages_skips_keys_already_there(db: Database) -> None:
    async with db.session() as session:
        first = await outbox.enqueue_messages(session, [message(1, c) for c in (1, 2)])
        await session.commit()
        second = await outbox.enqueue_messages(
            session,
            [message(1, 2), NewMessage(3, "x", "k3", reply_markup={"inline_keyboard": []}, options={"a": True})],
        )
        await session.commit()
        assert set(first) == {"broadcast:1:to:1", "broadcast:1:to:2"} and set(second) == {"k3"}
        item = await outbox.get_item(session, second["k3"])
        assert item is not None and item.payload == {
            "text": "x",
            "parse_mode": "HTML",
            "a": True,
            "reply_markup": {"inline_keyboard": []},
        }
        with pytest.raises(ValueError):
            await outbox.enqueue_messages(session, [NewMessage(1, "", "k")])
        assert await outbox.enqueue_messages(session, []) == {}


async def test_claim_due_keeps_chat_order_and_gives_each_item_to_one_worker(db: Database) -> None:
    async with db.session() as session:
        for chat, n in ((1, 1), (1, 2), (2, 1), (3, 1)):
            await outbox.enqueue_message(session, chat, f"{chat}:{n}")
        await session.commit()

    async def claim() -> list[OutboxItem]:
        async with db.session() as session:
            return await outbox.claim_due(session, limit=10, lease=LEASE)

    claimed = [item for batch in await asyncio.gather(claim(), claim(), claim()) for item in batch]
    assert sorted(item.payload["text"] for item in claimed) == ["1:1", "2:1", "3:1"]  # one head per chat, once
    assert all(item.status == "sending" and item.attempts == 1 for item in claimed)
    first = next(item for item in claimed if item.payload["text"] == "1:1")
    card_item = next(item for item in claimed if item.chat_id == 2)
    async with db.session() as session:
        assert await outbox.claim_due(session, limit=10, lease=LEASE) == []  # 1:2 waits behind 1:1
        stale = first.model_copy(update={"attempts": 0})
        done = await outbox.mark_sent_many(session, [(stale, 5), (card_item, 6)])
        assert done == {card_item.id}  # the stale claim is refused, as mark_sent would
        done = await outbox.mark_sent_many(session, [(first, 7)])
        assert done == {first.id}
        (nxt,) = await outbox.claim_due(session, limit=10, lease=LEASE)
        assert nxt.payload["text"] == "1:2"
        assert (await outbox.get_item(session, first.id or 0)).telegram_message_id == 7  # type: ignore[union-attr]


async def test_mark_sent_many_records_cards_and_latest_card_payload(db: Database) -> None:
    async with db.session() as session:
        await outbox.enqueue_message(session, -100, "card v1", card_key="card")
        await session.commit()
        assert (await outbox.latest_card_payload(session, "card")) == {"text": "card v1", "parse_mode": "HTML"}
        (item,) = await outbox.claim_due(session, limit=5, lease=LEASE)
        assert await outbox.mark_sent_many(session, [(item, 42)]) == {item.id}
        assert await outbox.card_message(session, "card") == (-100, 42)
        await outbox.enqueue_edit(session, "card", "card v2", reply_markup={"inline_keyboard": []})
        await session.commit()
        assert (await outbox.latest_card_payload(session, "card")) == {
            "text": "card v2",
            "parse_mode": "HTML",
            "reply_markup": {"inline_keyboard": []},
        }
        assert await outbox.latest_card_payload(session, "nothing") is None


def test_recipient_is_a_plain_record() -> None:
    recipient = Recipient(1, 2, "en", "wujin", None, None, None, None)
    assert recipient.chat_id == 2 and recipient.language == "en"
