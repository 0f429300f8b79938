"""Escalation end to end, on a frozen clock: an unclaimed case escalates step by step at the configured times and
the chain stops on claim; timers survive a restart mid-chain (and a crash mid-firing, and two runners) without
firing twice; a stale claim is reminded, then released (the card says so); off duty the chain waits; waiting for
the requester pauses it; a team's own chain; the once-a-day warning about nobody on call and unreachable members."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func
from sqlmodel import col, select

from bot.escalation import EscalationRunner
from bot.sandbox.fake_telegram import BotMessage, FakeGroup, FakeTelegram, FakeUser
from models import cases, teams
from models.outbox import OutboxItem
from models.staff import Role
from models.teams import EscalationTimer
from tests.e2e.test_teams import IN_NORTH, IN_SOUTH, Clock, Ops, becomes, card_for, start_ops


@pytest.fixture
def clock() -> Clock:
    return Clock(datetime.now(UTC).replace(second=0, microsecond=0))


@pytest.fixture
async def ops(database_url: str, fake_telegram: FakeTelegram, clock: Clock) -> AsyncIterator[Ops]:
    async for desk in start_ops(database_url, fake_telegram, clock):
        yield desk


async def on_call_today(ops: Ops, team_id: int, person: FakeUser | None) -> None:
    async with ops.bot.services.db.session() as session:
        weekday = ops.clock().astimezone(ops.bot.settings.tz).weekday()
        await teams.set_on_call(session, team_id, weekday, person.id if person else None)
        await session.commit()


async def with_text(reader: FakeUser | FakeGroup, part: str) -> BotMessage:
    return await reader.wait_until(lambda ms: next((m for m in ms if part in m.content), None))


def count(reader: FakeUser | FakeGroup, part: str) -> int:
    return sum(part in m.content for m in reader.messages)


async def outbox_count(ops: Ops, prefix: str) -> int:
    async with ops.bot.services.db.session() as session:
        statement = select(func.count()).select_from(OutboxItem).where(col(OutboxItem.dedupe_key).like(f"{prefix}%"))
        return int((await session.exec(statement)).one())


async def timer(ops: Ops, case_id: int | None) -> EscalationTimer:
    assert case_id is not None
    async with ops.bot.services.db.session() as session:
        found = await teams.timer_of(session, case_id)
    assert found is not None
    return found


async def at(ops: Ops, minutes: float, start: datetime) -> int:
    """Move the clock to `minutes` after `start` and run one escalation pass."""
    ops.clock.now = start + timedelta(minutes=minutes)
    return await ops.tick()


async def test_unclaimed_case_escalates_step_by_step_and_the_chain_stops_on_claim(ops: Ops) -> None:
    await on_call_today(ops, ops.north, ops.alice)
    start = ops.clock()
    case = await ops.new_case(lat=IN_NORTH[0], lon=IN_NORTH[1])
    card = await card_for(ops.north_group, case)
    waited = f"{case.reference} has waited"

    await at(ops, 9, start)
    assert await outbox_count(ops, "esc:") == 0

    await at(ops, 10, start)  # step 1: the group and the on-call person
    reminder = await with_text(ops.north_group, f"⏰ {case.reference} has waited 10 min and nobody has claimed it.")
    assert reminder.button_texts == ["✋ Claim", "📂 Details"]
    assert (await with_text(ops.alice, "⏰ You are on call for North: ")).text == (
        f"⏰ You are on call for North: {case.reference} has waited 10 min and nobody has claimed it."
    )
    assert await outbox_count(ops, "esc:") == 2

    await at(ops, 19, start)
    assert await outbox_count(ops, "esc:") == 2
    await at(ops, 20, start)  # step 2: the coordinators
    assert (await with_text(ops.cora, "has waited 20 min")).text == (
        f"⏰ Escalation: {case.reference} (North) has waited 20 min and nobody has claimed it."
    )
    assert await outbox_count(ops, "esc:") == 3

    await at(ops, 40, start)  # step 3: the card goes to the default team too
    desk_card = await card_for(ops.desk_group, case)
    assert "👥 Team: North, Desk" in desk_card.text and "✋ Claim" in desk_card.button_texts
    await becomes(ops.north_group, card, lambda m: "👥 Team: North, Desk" in m.text)

    await at(ops, 69, start)
    assert await outbox_count(ops, "esc:") == 3
    await at(ops, 70, start)  # the last step repeats every 30 minutes: a reminder where the card is already
    await with_text(ops.desk_group, f"⏰ {case.reference} has waited 70 min")
    assert await ops.actions(case.id) == ["submitted", "escalated", "escalated", "escalated", "escalated"]

    # Dan of the default team may act now, and claims: the chain stops at once.
    query = await ops.dan.tap_inline("✋ Claim", message=desk_card, chat=ops.desk_group)
    assert await ops.dan.callback_answer(query) == (f"You claimed {case.reference}.", False)
    sent = await outbox_count(ops, "esc:")
    for minutes in (100, 130, 160, 190):
        await at(ops, minutes, start)
    assert await outbox_count(ops, "esc:") == sent
    assert (await timer(ops, case.id)).phase == "claimed"
    assert (await ops.actions(case.id))[-1] == "claimed"
    assert count(ops.north_group, waited) == 1 and count(ops.desk_group, waited) == 1
    assert count(ops.alice, "has waited") == 1 and count(ops.cora, "has waited") == 1


async def test_timers_survive_a_restart_mid_chain_without_firing_twice(
    ops: Ops, monkeypatch: pytest.MonkeyPatch
) -> None:
    start = ops.clock()
    case = await ops.new_case(lat=IN_NORTH[0], lon=IN_NORTH[1])
    await at(ops, 10, start)
    await with_text(ops.north_group, f"{case.reference} has waited 10 min")

    await ops.restart()  # same clock: the start-up pass finds nothing new to fire
    assert await ops.tick() == 0
    assert await outbox_count(ops, "esc:") == 1

    ops.clock.now = start + timedelta(minutes=25)  # overdue while the bot was down: fired right at start-up
    await ops.restart()
    await with_text(ops.cora, f"{case.reference} (North) has waited 20 min")
    assert await ops.tick() == 0
    assert await outbox_count(ops, "esc:") == 2

    # Two runners on the same database at the same moment: one firing.
    ops.clock.now = start + timedelta(minutes=40)
    assert ops.bot.runner is not None
    second = EscalationRunner(ops.bot.runner.app)
    assert sorted(await asyncio.gather(ops.runner.tick(), second.tick())) == [0, 1]
    ops.bot.services.wake_outbox()
    await card_for(ops.desk_group, case)

    # A crash in the middle of a firing: nothing of it is kept, and it fires once after the restart.
    ops.clock.now = start + timedelta(minutes=70)

    async def crash(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("power cut")

    monkeypatch.setattr(EscalationRunner, "_to_default_team", crash)
    with pytest.raises(RuntimeError):
        await ops.tick()
    assert (await ops.actions(case.id)).count("escalated") == 3
    monkeypatch.undo()
    await ops.restart()
    await with_text(ops.desk_group, f"{case.reference} has waited 70 min")
    assert await ops.tick() == 0
    assert (await ops.actions(case.id)).count("escalated") == 4
    assert count(ops.north_group, "has waited 10 min") == 1 and count(ops.cora, "has waited 20 min") == 1
    assert count(ops.desk_group, "has waited 70 min") == 1
    assert sum(f"· {case.reference}" in m.content for m in ops.desk_group.messages) == 1  # one card


async def test_a_stale_claim_is_reminded_then_released(ops: Ops) -> None:
    start = ops.clock()
    case = await ops.new_case(lat=IN_NORTH[0], lon=IN_NORTH[1])
    card = await card_for(ops.north_group, case)
    query = await ops.alice.tap_inline("✋ Claim", message=card, chat=ops.north_group)
    assert await ops.alice.callback_answer(query) == (f"You claimed {case.reference}.", False)
    await at(ops, 10, start)
    assert (await timer(ops, case.id)).phase == "claimed" and await outbox_count(ops, "esc:") == 0

    await at(ops, 3 * 60, start)
    assert await outbox_count(ops, "esc:") == 0
    await at(ops, 4 * 60 + 5, start)  # no update for 4 hours: the claimer is reminded
    reminder = await with_text(ops.alice, f"⏰ {case.reference} has had no update for 4 hours")
    assert "it goes back to the queue at " in reminder.text
    assert reminder.button_texts == ["❓ Need info", "↪️ Refer", "✅ Resolve", "📂 Details"]
    await at(ops, 6 * 60, start)
    assert await outbox_count(ops, "esc:") == 1

    await at(ops, 8 * 60 + 10, start)  # still nothing: released back to the queue, and the card says so
    released = await becomes(ops.north_group, card, lambda m: m.text.startswith("🆕 New"))
    assert "↩️ Back in the queue: the claim had no update for 8 hours." in released.text
    assert "✋ Claim" in released.button_texts and "Claimed by" not in released.text
    told = await with_text(ops.alice, f"↩️ {case.reference} is back in the queue")
    assert told.text.endswith("Claim it again on the card if you are still on it.")
    stored = await ops.case(case.id)
    assert (stored.status, stored.claimed_by) == ("new", None)
    assert await ops.actions(case.id) == ["submitted", "claimed", "claim_reminder", "released"]

    # A fresh chain starts; a new claim clears the "back in the queue" line.
    await at(ops, 8 * 60 + 20, start)
    await with_text(ops.north_group, f"⏰ {case.reference} has waited 10 min")
    query = await ops.cora.tap_inline("✋ Claim", message=card, chat=ops.north_group)
    assert await ops.cora.callback_answer(query) == (f"You claimed {case.reference}.", False)
    claimed = await becomes(ops.north_group, card, lambda m: "Being handled" in m.text)
    assert "Back in the queue" not in claimed.text


async def test_an_update_restarts_the_stale_claim_clock(ops: Ops) -> None:
    start = ops.clock()
    ann = ops.fake.user("Ann")
    case = await ops.new_case(ann, lat=IN_NORTH[0], lon=IN_NORTH[1])
    async with ops.bot.services.db.session() as session:
        assert await cases.claim(session, case.id or 0, ops.alice.id, "Alice")
        await session.commit()
    await at(ops, 10, start)
    ops.clock.now = start + timedelta(hours=3)
    async with ops.bot.services.db.session() as session:
        assert await cases.ask_info(session, case.id or 0, ops.alice.id, "Alice", "Where are you now?")
        await session.commit()
    await at(ops, 4 * 60 + 5, start)  # the question was an update: no reminder yet
    assert await outbox_count(ops, "esc:") == 0
    await at(ops, 8 * 60 + 10, start)
    await with_text(ops.alice, f"⏰ {case.reference} has had no update for 4 hours")
    assert (await ops.case(case.id)).claimed_by == ops.alice.id


async def test_waiting_for_the_requester_pauses_the_chain(ops: Ops) -> None:
    start = ops.clock()
    ann = ops.fake.user("Ann")
    case = await ops.new_case(ann, lat=IN_NORTH[0], lon=IN_NORTH[1])
    async with ops.bot.services.db.session() as session:  # a question without a claim
        assert await cases.ask_info(session, case.id or 0, ops.alice.id, "Alice", "Are you safe?")
        await session.commit()
    await at(ops, 10, start)
    assert await outbox_count(ops, "esc:") == 0
    async with ops.bot.services.db.session() as session:
        assert await cases.add_info(session, case.id or 0, ann.id, "Yes, at the bridge") is not None
        await session.commit()
    await at(ops, 24, start)
    assert await outbox_count(ops, "esc:") == 0
    await at(ops, 25, start)  # the chain resumes where it paused: 10 minutes of waiting with nobody on it
    await with_text(ops.north_group, f"⏰ {case.reference} has waited 10 min")


async def test_a_team_can_have_its_own_chain(ops: Ops) -> None:
    async with ops.bot.services.db.session() as session:
        await teams.save(session, "South", escalation=[{"after_minutes": 5, "notify": ["team"]}])
        await session.commit()
    start = ops.clock()
    case = await ops.new_case(lat=IN_SOUTH[0], lon=IN_SOUTH[1])
    await at(ops, 5, start)
    assert (await with_text(ops.bob, "has waited 5 min")).text == (
        f"⏰ Escalation: {case.reference} (South) has waited 5 min and nobody has claimed it."
    )
    await at(ops, 35, start)  # its only step repeats every 30 minutes (escalation.repeat_every_minutes)
    await with_text(ops.bob, "has waited 35 min")
    assert await outbox_count(ops, "esc:") == 2


async def test_off_duty_the_chain_waits_for_duty_to_start(ops: Ops) -> None:
    tz = ops.bot.settings.tz
    async with ops.bot.services.db.session() as session:
        await teams.save(session, "North", duty_hours="Mo-Fr 08:00-20:00")
        await session.commit()
    friday = datetime(2026, 12, 4, 19, 55, tzinfo=tz).astimezone(UTC)
    ops.clock.now = friday
    case = await ops.new_case(lat=IN_NORTH[0], lon=IN_NORTH[1])
    await card_for(ops.north_group, case)  # the alert itself is posted at once
    await at(ops, 10, friday)  # 20:05: off duty, the chain waits
    ops.clock.now = datetime(2026, 12, 7, 7, 59, tzinfo=tz).astimezone(UTC)  # Monday, just before duty
    await ops.tick()
    assert await outbox_count(ops, "esc:") == 0
    monday = datetime(2026, 12, 7, 8, 0, tzinfo=tz).astimezone(UTC)
    await at(ops, 0, monday)  # the step that came due off duty fires when duty starts; the next keep their spacing
    await with_text(ops.north_group, f"⏰ {case.reference} has waited 10 min")
    await at(ops, 9, monday)
    assert await outbox_count(ops, "esc:") == 1
    await at(ops, 10, monday)
    await with_text(ops.cora, f"{case.reference} (North) has waited 20 min")


async def test_coordinators_are_warned_once_a_day_about_nobody_on_call_and_unreachable_members(
    ops: Ops,
) -> None:
    tz = ops.bot.settings.tz
    async with ops.bot.services.db.session() as session:
        for day in range(7):  # South and Desk are covered every day; North never
            await teams.set_on_call(session, ops.south, day, ops.bob.id)
            await teams.set_on_call(session, ops.desk, day, ops.dan.id)
        north = await teams.get(session, ops.north)
        assert north is not None
        ghost = ops.fake.user("Ghost")  # never started the bot
        await teams.add_member(session, north, ghost.id, "Ghost <night shift>", Role.RESPONDER)
        await session.commit()
    tomorrow = ops.clock().astimezone(tz).date() + timedelta(days=1)
    ops.clock.now = datetime.combine(tomorrow, datetime.min.time(), tzinfo=tz).replace(hour=7).astimezone(UTC)
    await ops.tick()
    assert await outbox_count(ops, "warn:") == 0

    ops.clock.now += timedelta(hours=1, minutes=30)  # 08:30
    await ops.tick()
    assert await outbox_count(ops, "warn:") == 2
    assert (await with_text(ops.cora, "Nobody is on call today")).text == (
        "⚠️ Nobody is on call today for North: escalations cannot reach an on-call person. Set the rota with /rota."
    )
    assert (await with_text(ops.cora, "I cannot write directly")).text == (
        "⚠️ I cannot write directly to these members of North: Ghost <night shift>. They need to open "
        "@waystation_test_bot and press Start, or they will miss escalations."
    )
    ops.clock.now += timedelta(hours=2)
    await ops.tick()
    await ops.restart()
    await ops.tick()
    assert await outbox_count(ops, "warn:") == 2  # once per day, restart or not
    assert count(ops.cora, "Nobody is on call today") == 1
    assert not any("Nobody is on call" in m.content for m in ops.alice.messages + ops.bob.messages)

    ops.clock.now += timedelta(days=1)  # the next day: told again
    await ops.tick()
    assert await outbox_count(ops, "warn:") == 4

    # The rota filled and Ghost pressed Start: nothing to say the day after.
    async with ops.bot.services.db.session() as session:
        for day in range(7):
            await teams.set_on_call(session, ops.north, day, ops.alice.id)
        await session.commit()
    await ghost.send_command("/start")
    await ghost.receive()
    ops.clock.now += timedelta(days=1)
    await ops.tick()
    assert await outbox_count(ops, "warn:") == 4
