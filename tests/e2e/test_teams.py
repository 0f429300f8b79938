"""Teams end to end: routing by area and kinds (inside, outside, overlap, no location, the real form), invite links
that make a responder who can then claim, /linkteam binding a group, team scoping of the card buttons, the rota,
/queue per role, and the out-of-hours notice. The clock is frozen through services.clock."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func
from sqlmodel import col, select

from bot import escalation
from bot.application import WaystationApplication
from bot.escalation import EscalationRunner
from bot.sandbox.fake_telegram import BotMessage, FakeGroup, FakeTelegram, FakeUser
from handlers import queue as queue_handlers
from handlers import teams as team_handlers
from handlers.case_alerts import enqueue_cards
from models import cases, staff, teams
from models.cases import Case
from models.outbox import OutboxItem
from models.staff import Role
from models.teams import Team
from tests.conftest import make_settings
from tests.e2e.test_request_form import fill_until_review
from tests.harness import BotHarness

# Areas around Changzhou: North is a circle, South a polygon; they overlap in a band around 31.755 N.
NORTH_CENTER, NORTH_RADIUS_KM = (31.80, 119.95), 6.0
SOUTH_POLYGON = {
    "type": "Polygon",
    "coordinates": [[[119.90, 31.68], [120.00, 31.68], [120.00, 31.76], [119.90, 31.76], [119.90, 31.68]]],
}
IN_NORTH, IN_SOUTH, IN_BOTH, OUTSIDE = (31.82, 119.95), (31.70, 119.95), (31.755, 119.95), (32.50, 120.50)
OTHER_TEAM = "This case belongs to another team: only that team or a coordinator can act on it."


class Clock:
    """services.clock, frozen and moved by the test."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> datetime:
        self.now += timedelta(**delta)
        return self.now


def wiring(clock: Clock) -> Any:
    """What bot/application.py and bot/runner.py will wire, for these tests (plus the frozen clock)."""

    def configure(app: WaystationApplication) -> None:
        app.bot_data["services"].clock = clock  # before start-up, so the first escalation pass sees it too
        app.add_handlers(team_handlers.handlers())
        app.add_handlers(queue_handlers.handlers())
        app.handlers[0].insert(0, team_handlers.invite_start_handler())  # before /start's own handler
        app.add_handler(team_handlers.scope_guard_handler(), group=-2)  # before case_staff's card buttons

    return configure


@dataclass
class Ops:
    """The bot, three team groups, the staff and the teams: North (circle, all kinds), South (polygon, food and
    bed), Desk (the default team, no area)."""

    bot: BotHarness
    fake: FakeTelegram
    clock: Clock
    north_group: FakeGroup
    south_group: FakeGroup
    desk_group: FakeGroup
    ada: FakeUser  # staff admin
    cora: FakeUser  # North coordinator
    alice: FakeUser  # North responder
    bob: FakeUser  # South responder
    dan: FakeUser  # Desk responder
    north: int
    south: int
    desk: int

    @property
    def runner(self) -> EscalationRunner:
        assert self.bot.runner is not None
        found = escalation.runner_of(self.bot.runner.app)
        assert found is not None
        return found

    async def start(self) -> None:
        await self.bot.start()
        assert self.bot.runner is not None
        await escalation.start(self.bot.runner.app)  # idempotent: bot/runner.py may start it already

    async def stop(self) -> None:
        if self.bot.runner is not None:
            await escalation.stop(self.bot.runner.app)
        await self.bot.stop()

    async def restart(self) -> None:
        await self.stop()
        await self.start()

    async def tick(self) -> int:
        fired = await self.runner.tick()
        self.bot.services.wake_outbox()
        return fired

    async def new_case(self, requester: FakeUser | None = None, **fields: Any) -> Case:
        """A case made through the domain and routed exactly as the form's Submit does (enqueue_cards new=True)."""
        svc = self.bot.services
        values: dict[str, Any] = {"categories": ["food"], "description": "Cold <and> hungry", **fields}
        async with svc.db.session() as session:
            case, created = await cases.create(
                session,
                Case(requester_id=requester.id if requester else None, idempotency_key=uuid.uuid4().hex, **values),
            )
            assert created
            await enqueue_cards(session, svc, case, new=True)
            await session.commit()
        svc.wake_outbox()
        return case

    async def case(self, case_id: int | None) -> Case:
        assert case_id is not None
        async with self.bot.services.db.session() as session:
            found = await cases.get(session, case_id)
        assert found is not None
        return found

    async def actions(self, case_id: int | None) -> list[str]:
        assert case_id is not None
        async with self.bot.services.db.session() as session:
            return [e.action for e in await cases.events(session, case_id)]

    async def team_names(self, case_id: int | None) -> list[str]:
        assert case_id is not None
        async with self.bot.services.db.session() as session:
            return [t.name for t in await teams.teams_of(session, case_id)]

    async def escalation_messages(self) -> int:
        async with self.bot.services.db.session() as session:
            statement = select(func.count()).select_from(OutboxItem).where(col(OutboxItem.dedupe_key).like("esc:%"))
            return int((await session.exec(statement)).one())


async def becomes(reader: FakeUser | FakeGroup, message: BotMessage, check: Any) -> BotMessage:
    """The message once an edit makes `check(message)` true (it may have happened already)."""
    return await reader.wait_until(lambda _messages: message if check(message) else None)


async def card_for(group: FakeGroup, case: Case) -> BotMessage:
    return await group.wait_until(lambda ms: next((m for m in ms if f"· {case.reference}" in m.content), None))


def ops_settings(fake: FakeTelegram, database_url: str, **sections: Any) -> Any:
    base: dict[str, Any] = {
        "teams": {"default_team": "Desk"},
        "help": {"hotline": "0519-12345"},
        "escalation": {"check_every_seconds": 3600},
    }
    for name, values in sections.items():
        base[name] = {**base.get(name, {}), **values}
    return make_settings(fake, database_url, sections=base, group_max_per_minute=100_000, overall_max_rate=1000)


async def make_teams(svc: Any, ops_people: dict[str, FakeUser], groups: dict[str, FakeGroup]) -> dict[str, int]:
    """The teams as an operator would set them up with `waystation teams …` (same model functions)."""
    async with svc.db.session() as session:
        north, _ = await teams.save(session, "North")
        await teams.set_area(session, north, center=NORTH_CENTER, radius_m=NORTH_RADIUS_KM * 1000)
        south, _ = await teams.save(session, "South", kinds=["food", "bed"])
        await teams.set_area(session, south, geojson=SOUTH_POLYGON)
        desk, _ = await teams.save(session, "Desk")
        for team, group in ((north, "north"), (south, "south"), (desk, "desk")):
            assert team.id is not None
            await teams.link_chat(session, team.id, groups[group].id)
        await teams.add_member(session, north, ops_people["cora"].id, "Cora", Role.COORDINATOR)
        await teams.add_member(session, north, ops_people["alice"].id, "Alice", Role.RESPONDER)
        await teams.add_member(session, south, ops_people["bob"].id, "Bob", Role.RESPONDER)
        await teams.add_member(session, desk, ops_people["dan"].id, "Dan", Role.RESPONDER)
        await session.commit()
        assert north.id is not None and south.id is not None and desk.id is not None
        ids = {"north": north.id, "south": south.id, "desk": desk.id}
    async with svc.db.session() as session:
        await staff.add(session, ops_people["ada"].id, "Ada", Role.ADMIN)
    return ids


@pytest.fixture
def clock() -> Clock:
    # Near the real time (case events are stamped with it), on a whole minute.
    return Clock(datetime.now(UTC).replace(second=0, microsecond=0))


@pytest.fixture
async def ops(database_url: str, fake_telegram: FakeTelegram, clock: Clock) -> AsyncIterator[Ops]:
    async for desk in start_ops(database_url, fake_telegram, clock):
        yield desk


async def start_ops(database_url: str, fake: FakeTelegram, clock: Clock, **sections: Any) -> AsyncIterator[Ops]:
    """The Ops desk, started (shared with test_escalation); `sections` override settings."""
    people = {name: fake.user(name.capitalize()) for name in ("ada", "cora", "alice", "bob", "dan")}
    groups = {
        "north": fake.group("North team", members=[people["cora"], people["alice"]]),
        "south": fake.group("South team", members=[people["bob"]]),
        "desk": fake.group("Hotline desk", members=[people["dan"]]),
    }
    harness = BotHarness(ops_settings(fake, database_url, **sections), fake, configure=wiring(clock))
    desk = Ops(
        harness, fake, clock, groups["north"], groups["south"], groups["desk"], **people, north=0, south=0, desk=0
    )
    await desk.start()
    ids = await make_teams(harness.services, people, groups)
    desk.north, desk.south, desk.desk = ids["north"], ids["south"], ids["desk"]
    for person in people.values():  # everyone has started the bot (so nobody is "unreachable")
        await person.send_command("/help")
        await person.receive()
    try:
        yield desk
    finally:
        await desk.stop()
    harness.assert_clean()


# -- routing --------------------------------------------------------------------------------------------------------


async def test_routing_by_area_inside_outside_overlap_and_no_location(ops: Ops) -> None:
    north = await ops.new_case(lat=IN_NORTH[0], lon=IN_NORTH[1], categories=["medical"])
    south = await ops.new_case(lat=IN_SOUTH[0], lon=IN_SOUTH[1], categories=["food", "bed"])
    both = await ops.new_case(lat=IN_BOTH[0], lon=IN_BOTH[1], categories=["bed"])
    outside = await ops.new_case(lat=OUTSIDE[0], lon=OUTSIDE[1])
    nowhere = await ops.new_case(place_text="near the old bridge <east side>")
    wrong_kind = await ops.new_case(lat=IN_SOUTH[0], lon=IN_SOUTH[1], categories=["medical"])  # South: food, bed

    expected = {
        north.id: ["North"],
        south.id: ["South"],
        both.id: ["North", "South"],
        outside.id: ["Desk"],
        nowhere.id: ["Desk"],
        wrong_kind.id: ["Desk"],
    }
    for case_id, names in expected.items():
        assert await ops.team_names(case_id) == names, case_id

    groups = {"North": ops.north_group, "South": ops.south_group, "Desk": ops.desk_group}
    for case in (north, south, both, outside, nowhere, wrong_kind):
        names = expected[case.id]
        for name in names:
            card = await card_for(groups[name], case)
            assert f"👥 Team: {', '.join(names)}" in card.text
            assert "✋ Claim" in card.button_texts
        for name in set(groups) - set(names):
            assert not any(f"· {case.reference}" in m.content for m in groups[name].messages), (case.id, name)
    nowhere_card = await card_for(ops.desk_group, nowhere)
    assert "📍 Area: near the old bridge <east side>" in nowhere_card.text


async def test_the_real_form_routes_by_the_shared_location(ops: Ops) -> None:
    ann = ops.fake.user("Ann")
    review = await fill_until_review(ann)  # shares 31.7160, 119.9590: inside South only; food and a bed
    await ann.tap_inline("📨 Submit", message=review)
    done = await ann.receive()
    reference = re.search(r"WS-\d{4}-\d{6}", done.text)
    assert reference is not None
    card = await ops.south_group.wait_until(lambda ms: next((m for m in ms if reference.group(0) in m.content), None))
    assert "👥 Team: South" in card.text
    assert not any(reference.group(0) in m.content for m in ops.north_group.messages + ops.desk_group.messages)


# -- invites and groups ---------------------------------------------------------------------------------------------


async def open_team(ops: Ops, admin: FakeUser, name: str) -> BotMessage:
    await admin.send_command("/teams")
    listing = await admin.receive()
    assert listing.text.startswith("Teams — tap one to invite staff or link its group.")
    await admin.tap_inline(f"👥 {name}", message=listing)
    return await admin.wait_until(lambda ms: next((m for m in ms if m.content.startswith(name + "\n")), None))


async def test_invite_link_makes_a_responder_who_can_then_claim(ops: Ops) -> None:
    view = await open_team(ops, ops.ada, "North")
    assert "💬 Group: linked" in view.text and "👤 Members: Alice (responder), Cora (coordinator)" in view.text
    await ops.ada.tap_inline("➕ Invite a responder", message=view)
    invite = await ops.ada.receive()
    assert invite.text.startswith("Invite link for a new responder of North. It works once, until ")
    match = re.search(r"https://t\.me/waystation_test_bot\?start=(invite_[A-Za-z0-9_-]+)", invite.text)
    assert match is not None
    payload = match.group(1)

    nina = ops.fake.user("Nina", last_name="Wu")
    await nina.send_command("/start", args=payload)
    welcome = await nina.receive()
    assert welcome.text.startswith("✅ Welcome to North! You are now a responder of the team.")
    async with ops.bot.services.db.session() as session:
        member = await staff.get(session, nina.id)
        assert member is not None and (member.name, member.role) == ("Nina Wu", "responder")
        assert await teams.memberships(session, nina.id) == {ops.north: "responder"}

    # Single use: a second person is refused, Nina again is told she is in already.
    mallory = ops.fake.user("Mallory")
    await mallory.send_command("/start", args=payload)
    assert "This invite link is not valid any more" in (await mallory.receive()).text
    await nina.send_command("/start", args=payload)
    assert (await nina.receive()).text == "You are already a member of North."
    async with ops.bot.services.db.session() as session:
        assert await staff.get(session, mallory.id) is None

    # Nina can claim a North case at once.
    case = await ops.new_case(lat=IN_NORTH[0], lon=IN_NORTH[1])
    card = await card_for(ops.north_group, case)
    query = await nina.tap_inline("✋ Claim", message=card, chat=ops.north_group)
    assert await nina.callback_answer(query) == (f"You claimed {case.reference}.", False)
    assert (await ops.case(case.id)).claimed_by == nina.id

    # An invite expires.
    await ops.ada.tap_inline("➕ Invite a coordinator", message=view)
    late = re.search(r"start=(invite_[A-Za-z0-9_-]+)", (await ops.ada.receive()).text)
    assert late is not None
    ops.clock.advance(hours=73)
    await mallory.send_command("/start", args=late.group(1))
    assert "This invite link is not valid any more" in (await mallory.receive()).text
    await mallory.send_command("/start", args="invite_<forged>")
    assert "This invite link is not valid any more" in (await mallory.receive()).text


async def test_teams_command_is_for_admins_only(ops: Ops) -> None:
    for person in (ops.alice, ops.cora):
        await person.send_command("/teams")
        assert (await person.receive()).text == "Sorry, only team admins can do this."
    await ops.ada.send_command("/teams", chat=ops.north_group)
    assert (await ops.north_group.receive()).text == "Please send this command in a private chat with me."
    own = ops.alice.messages[0].message_id  # forged buttons, on a message in Alice's own chat
    for data, expected in (
        (f"tm|v|{ops.south}", "Sorry, only team admins can do this."),
        (f"tm|g|{ops.north}", "Sorry, only team admins can do this."),
        (f"tm|i|{ops.north}|responder", "Sorry, only team admins can do this."),
        ("tm|l", "Sorry, only team admins can do this."),
        (f"tm|i|{ops.north}|admin", "Sorry, this button is not valid any more."),
        ("tm|x", "Sorry, this button is not valid any more."),
        ("tm|v|99999", "Sorry, this button is not valid any more."),
    ):
        query = await ops.alice.send_callback(own, data)
        assert await ops.alice.callback_answer(query) == (expected, True), data
    async with ops.bot.services.db.session() as session:
        assert (await session.exec(select(func.count()).select_from(teams.TeamCode))).one() == 0


async def test_linkteam_binds_a_group(ops: Ops) -> None:
    async with ops.bot.services.db.session() as session:
        west, _ = await teams.save(session, "West <river>")
        await teams.set_area(session, west, center=(31.78, 119.60), radius_m=5000)
        await session.commit()
    view = await open_team(ops, ops.ada, "West <river>")
    assert "💬 Group: not linked yet" in view.text
    await ops.ada.tap_inline("🔗 Link a group", message=view)
    instructions = await ops.ada.receive()
    code = re.search(r"/linkteam ([0-9A-F]{10})", instructions.text)
    assert code is not None and "add @waystation_test_bot to the group" in instructions.text

    west_group = ops.fake.group("West team")
    await ops.alice.send_command("/linkteam", args=code.group(1), chat=west_group)  # a responder, not an admin
    assert (await west_group.receive()).text == "Sorry, only team admins can do this."
    stranger = ops.fake.user("Stranger")
    await stranger.send_command("/linkteam", args=code.group(1), chat=west_group)
    assert (await west_group.receive()).text == "Sorry, only team admins can do this."
    await ops.ada.send_command("/linkteam", chat=west_group)
    assert "Please send /linkteam CODE" in (await west_group.receive()).text
    await ops.ada.send_command("/linkteam", args=code.group(1))
    assert "in the group that should receive" in (await ops.ada.receive()).text

    await ops.ada.send_command("/linkteam", args=code.group(1), chat=west_group)
    assert (await west_group.receive()).text == "✅ This group now receives the alert cards of West <river>."
    await ops.ada.send_command("/linkteam", args=code.group(1), chat=ops.desk_group)  # used already
    assert "This code is not valid" in (await ops.desk_group.receive()).text

    case = await ops.new_case(lat=31.78, lon=119.61)
    card = await card_for(west_group, case)
    assert "👥 Team: West <river>" in card.text


# -- team scoping ---------------------------------------------------------------------------------------------------


async def test_a_responder_of_team_a_cannot_act_on_team_b_case(ops: Ops) -> None:
    south_case = await ops.new_case(lat=IN_SOUTH[0], lon=IN_SOUTH[1])
    card = await card_for(ops.south_group, south_case)
    for data in ("claim", "info", "refer", "resolve", "details"):
        query = await ops.alice.send_callback(card.message_id, f"cs|{data}|{south_case.id}", chat=ops.south_group)
        assert await ops.alice.callback_answer(query) == (OTHER_TEAM, True), data
    query = await ops.dan.tap_inline("✋ Claim", message=card, chat=ops.south_group)  # Desk is not South either
    assert await ops.dan.callback_answer(query) == (OTHER_TEAM, True)
    assert await ops.actions(south_case.id) == ["submitted"] and card.edits == 0
    assert not ops.alice.messages[1:]  # nothing was sent to Alice privately (her first message is /help's)

    # A coordinator (of any team) can; the team's own responder can.
    query = await ops.cora.tap_inline("📂 Details", message=card, chat=ops.south_group)
    assert await ops.cora.callback_answer(query) == ("I have sent you the details privately.", False)
    query = await ops.bob.tap_inline("✋ Claim", message=card, chat=ops.south_group)
    assert await ops.bob.callback_answer(query) == (f"You claimed {south_case.reference}.", False)

    # Cases of the default team: its members, and staff who belong to no team.
    desk_case = await ops.new_case(lat=OUTSIDE[0], lon=OUTSIDE[1])
    desk_card = await card_for(ops.desk_group, desk_case)
    query = await ops.bob.send_callback(desk_card.message_id, f"cs|claim|{desk_case.id}", chat=ops.desk_group)
    assert await ops.bob.callback_answer(query) == (OTHER_TEAM, True)
    loner = ops.fake.user("Lu")
    async with ops.bot.services.db.session() as session:
        await staff.add(session, loner.id, "Lu", Role.RESPONDER)
    query = await loner.tap_inline("✋ Claim", message=desk_card, chat=ops.desk_group)
    assert await loner.callback_answer(query) == (f"You claimed {desk_case.reference}.", False)
    # Non-staff still get case_staff's own answer.
    passer_by = ops.fake.user("Passer-by")
    query = await passer_by.send_callback(card.message_id, f"cs|claim|{south_case.id}", chat=ops.south_group)
    assert await passer_by.callback_answer(query) == ("Sorry, only staff can act on cases.", True)


# -- the rota -------------------------------------------------------------------------------------------------------


async def test_rota_is_set_by_coordinators(ops: Ops) -> None:
    await ops.alice.send_command("/rota")
    assert (await ops.alice.receive()).text == "Sorry, only coordinators can change the rota."
    await ops.cora.send_command("/rota")  # a coordinator by staff role: every team
    teams_message = await ops.cora.receive()
    assert teams_message.text == "On-call rota — choose a team." and "👥 North" in teams_message.button_texts
    await ops.cora.tap_inline("👥 North", message=teams_message)
    week = await becomes(ops.cora, teams_message, lambda m: m.text.startswith("On call — North"))
    assert week.text.startswith("On call — North\n🕒 Duty hours: 24/7 (on duty now)")
    today = ops.clock().astimezone(ops.bot.settings.tz).strftime("%a")
    assert f"{today}: nobody (today)" in week.text
    await ops.cora.tap_inline(f"{today} · —", message=week)
    picker = await becomes(ops.cora, week, lambda m: m.text.startswith("Who is on call"))
    assert picker.button_texts == ["Alice", "Cora", "— Nobody", "◀ Back"]
    # Someone who is not a coordinator taps the picker: refused, nothing changes.
    query = await ops.alice.send_callback(
        ops.alice.messages[0].message_id, picker.inline_keyboard[0][0]["callback_data"]
    )
    assert await ops.alice.callback_answer(query) == ("Sorry, only coordinators can change the rota.", True)
    # Forged: a person who is not in the team.
    day = ops.clock().astimezone(ops.bot.settings.tz).weekday()
    query = await ops.cora.send_callback(picker.message_id, f"rt|s|{ops.north}|{day}|{ops.bob.id}")
    assert await ops.cora.callback_answer(query) == ("Sorry, this button is not valid any more.", True)
    query = await ops.cora.tap_inline("Alice", message=picker)
    assert await ops.cora.callback_answer(query) == ("Saved.", False)
    saved = await becomes(ops.cora, picker, lambda m: m.text.startswith("On call — North"))
    assert f"{today}: Alice (today)" in saved.text
    async with ops.bot.services.db.session() as session:
        assert await teams.on_call(session, ops.north, ops.clock(), ops.bot.settings.timezone) == ops.alice.id


# -- the queue ------------------------------------------------------------------------------------------------------


async def test_queue_order_and_contents_per_role(ops: Ops) -> None:
    claimed = await ops.new_case(lat=IN_NORTH[0], lon=IN_NORTH[1], categories=["bed"])
    older = await ops.new_case(lat=IN_NORTH[0], lon=IN_NORTH[1], categories=["food"])
    urgent = await ops.new_case(lat=IN_NORTH[0], lon=IN_NORTH[1], categories=["medical"], danger=True)
    south = await ops.new_case(lat=IN_SOUTH[0], lon=IN_SOUTH[1])
    closed = await ops.new_case(lat=IN_NORTH[0], lon=IN_NORTH[1])
    async with ops.bot.services.db.session() as session:
        assert await cases.claim(session, claimed.id or 0, ops.alice.id, "Alice")
        assert await cases.resolve(session, closed.id or 0, ops.alice.id, "Alice", "duplicate")
        await session.commit()
    ops.clock.advance(minutes=12)
    await ops.tick()  # the first escalation step for the unclaimed ones

    await ops.alice.send_command("/queue")
    mine = await ops.alice.receive()
    lines = mine.text.splitlines()
    assert lines[0] == "Open cases (North): 3 — unclaimed first, oldest first."
    assert [re.search(r"WS-\d{4}-\d{6}", line).group(0) for line in lines[1:]] == [  # type: ignore[union-attr]
        older.reference,
        urgent.reference,
        claimed.reference,
    ]
    assert (
        lines[2].startswith(f"2. 🆕 New {urgent.reference} · 🩺 Medical help · ") and " · 🚨⏰1 · 👥 North" in lines[2]
    )
    assert "✋ Alice" in lines[3] and "⏰" not in lines[3]
    assert mine.button_texts[:3] == [f"1. {older.reference}", f"2. {urgent.reference}", f"3. {claimed.reference}"]

    await ops.cora.send_command("/queue")  # a coordinator: every team
    everything = await ops.cora.receive()
    assert everything.text.startswith("Open cases (all teams): 4 — unclaimed first, oldest first.")
    assert south.reference in everything.text and closed.reference not in everything.text

    await ops.bob.send_command("/queue")
    assert (await ops.bob.receive()).text.startswith("Open cases (South): 1")

    # A tap opens the case: its timeline (escalation included) and the card's buttons.
    await ops.alice.tap_inline(f"2. {urgent.reference}", message=mine)
    opened = await ops.alice.receive()
    assert opened.text.startswith(f"📂 {urgent.reference} · 🆕 New")
    assert "⚠️ Urgent: 🚨 someone in danger" in opened.text and "👥 Team: North" in opened.text
    assert (
        "— received" in opened.text
        and "— ⏰ escalation step 1: reminder in the group, the on-call person" in opened.text
    )
    assert opened.button_texts == ["✋ Claim", "❓ Need info", "↪️ Refer", "✅ Resolve", "📂 Details"]
    query = await ops.alice.tap_inline("✋ Claim", message=opened)
    assert await ops.alice.callback_answer(query) == (f"You claimed {urgent.reference}.", False)

    # Another team's case, forged: refused. Keepers and strangers have no queue.
    query = await ops.alice.send_callback(mine.message_id, f"qu|o|{south.id}")
    assert await ops.alice.callback_answer(query) == (OTHER_TEAM, True)
    keeper = ops.fake.user("Kim")
    async with ops.bot.services.db.session() as session:
        await staff.add(session, keeper.id, "Kim", Role.KEEPER)
    for person in (keeper, ops.fake.user("Stranger")):
        await person.send_command("/queue")
        assert (await person.receive()).text == "Sorry, /queue is for staff who handle cases."
    await ops.alice.tap_inline("🔄 Refresh", message=mine)
    refreshed = await becomes(ops.alice, mine, lambda m: "✋ Alice" in m.text.splitlines()[2])
    assert refreshed.text.splitlines()[1].startswith(f"1. 🆕 New {older.reference}")


# -- out of hours ---------------------------------------------------------------------------------------------------


async def test_out_of_hours_requester_message(ops: Ops) -> None:
    async with ops.bot.services.db.session() as session:
        for team_id in (ops.north, ops.south, ops.desk):
            team = await session.get(Team, team_id)
            assert team is not None
            await teams.save(session, team.name, duty_hours="Mo-Fr 08:00-20:00")
        await session.commit()
    tz = ops.bot.settings.tz
    ops.clock.now = datetime(2026, 12, 5, 22, 0, tzinfo=tz).astimezone(UTC)  # a Saturday night
    svc = ops.bot.services
    english = await ops.new_case(lat=IN_SOUTH[0], lon=IN_SOUTH[1], language="en")
    chinese = await ops.new_case(language="zh_Hans")
    async with svc.db.session() as session:
        notice = await team_handlers.out_of_hours_notice(session, svc, english)
        notice_zh = await team_handlers.out_of_hours_notice(session, svc, chinese)
    assert notice == (
        "🌙 Our staff are off duty right now. They will see your request from Mon 08:00.\n"
        "If you need help sooner, call the 24-hour hotline: <b>0519-12345</b>"
    )
    assert notice_zh is not None and "0519-12345" in notice_zh and "08:00" in notice_zh
    # The alert itself was posted at once.
    await card_for(ops.south_group, english)

    ops.clock.now = datetime(2026, 12, 7, 9, 0, tzinfo=tz).astimezone(UTC)  # Monday morning: on duty
    async with svc.db.session() as session:
        assert await team_handlers.out_of_hours_notice(session, svc, english) is None
