"""Journey 7 end to end: a season played through the real flows on a frozen clock — help requests filled in by people,
claimed and resolved by staff with what was given (kinds of help, items, money), escalations fired by the runner,
reports found / not found, outreach patrols (/patrol), station lists shown and cards opened — then /stats: every
figure checked against the test's own ledger, per team too; the chart (PNG, size); the CSV (no personal data); an
empty period; typed dates; roles refused on every button; and `waystation stats` on the command line."""

from __future__ import annotations

import asyncio
import csv
import io
import re
import struct
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy
import pytest
from telegram.ext import CommandHandler, ConversationHandler

from bot import charts, cli, escalation
from bot.application import WaystationApplication
from bot.i18n import translator
from bot.sandbox.fake_telegram import BotMessage, FakeGroup, FakeTelegram, FakeUser
from handlers import patrol as patrol_handlers
from handlers import stats as stats_handlers
from models import aid, cases, reports, staff, station_import, stats, teams
from models.staff import Role
from models.weather import Broadcast, BroadcastStatus
from tests.conftest import make_settings
from tests.e2e.test_reports import quick_report
from tests.harness import BotHarness

TZ = ZoneInfo("Asia/Shanghai")
PIN = (31.7160, 119.9590)  # Hutang, inside North's circle
NORTH_CENTER, NORTH_RADIUS_M = (31.716, 119.959), 5000.0
SEASON = {"start": "2026-11-16", "end": "2026-12-13", "item_kinds": ["blanket", "coat", "food_box"], "currency": "CNY"}
WEEK1 = datetime(2026, 11, 16, 9, 0, tzinfo=TZ)  # a Monday
WEEK2 = datetime(2026, 11, 23, 9, 0, tzinfo=TZ)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class Clock:
    """services.clock (and the case timestamps), frozen and moved by the test."""

    def __init__(self, now: datetime) -> None:
        self.now = now.astimezone(UTC)

    def __call__(self) -> datetime:
        return self.now

    def set(self, moment: datetime, **delta: float) -> None:
        self.now = (moment + timedelta(**delta)).astimezone(UTC)

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


def wiring(clock: Clock) -> Any:
    def configure(app: WaystationApplication) -> None:
        """The frozen clock, and the stats and patrol handlers as bot/application.py will register them: before
        the stateless /cancel answer. Does nothing more once bot/application.py registers them itself."""
        app.bot_data["services"].clock = clock
        if any(isinstance(h, ConversationHandler) and h.name == "patrol" for h in app.handlers[0]):
            return
        mine = [*stats_handlers.handlers(), *patrol_handlers.handlers()]
        app.add_handlers(mine)
        group = app.handlers[0]
        for handler in mine:
            group.remove(handler)
        at = next(i for i, h in enumerate(group) if isinstance(h, CommandHandler) and "cancel" in h.commands)
        group[at:at] = mine

    return configure


@pytest.fixture(autouse=True)
def case_times_follow_the_clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[Clock]:
    """Case, report and aid timestamps come from models.base.utcnow (real time): here they follow the frozen clock,
    so a whole season can be played in a minute."""
    clock = Clock(WEEK1)
    for module in (cases, reports, aid):
        monkeypatch.setattr(module, "utcnow", clock)
    yield clock


@dataclass
class Ledger:
    """What the test did, counted by the test itself."""

    requests: int = 0
    reports: int = 0
    claimed: list[float] = field(default_factory=list)  # minutes to claim, every case (requests and reports)
    resolved: list[float] = field(default_factory=list)  # minutes to resolve
    closing: dict[str, int] = field(default_factory=dict)
    outcomes: dict[str, int] = field(default_factory=dict)
    helped_requesters: list[int] = field(default_factory=list)
    helped_report_people: int = 0
    kinds: dict[str, int] = field(default_factory=dict)
    escorts: int = 0
    items: dict[str, int] = field(default_factory=dict)
    items_on_patrols: int = 0
    aid: list[float] = field(default_factory=list)
    escalations: int = 0
    escalated_cases: int = 0
    found: int = 0
    not_found: int = 0
    patrols: int = 0
    patrol_minutes: float = 0
    people_met: int = 0
    shown: dict[int, int] = field(default_factory=dict)
    opened: dict[int, int] = field(default_factory=dict)
    requests_open: int = 0
    requests_claimed: int = 0
    reports_claimed: int = 0
    typed: list[str] = field(default_factory=list)  # every free text people typed (must never reach the CSV)

    def add_items(self, items: dict[str, int], *, patrol: bool = False) -> None:
        for kind, n in items.items():
            self.items[kind] = self.items.get(kind, 0) + n
        if patrol:
            self.items_on_patrols += sum(items.values())


@dataclass
class City:
    bot: BotHarness
    fake: FakeTelegram
    clock: Clock
    north_group: FakeGroup
    desk_group: FakeGroup
    cora: FakeUser  # coordinator
    rita: FakeUser  # responder, in both teams
    nina: FakeUser  # not staff
    north: int
    desk: int

    async def tick(self) -> int:
        assert self.bot.runner is not None
        runner = escalation.runner_of(self.bot.runner.app)
        assert runner is not None
        fired = await runner.tick()
        self.bot.services.wake_outbox()
        return fired


@pytest.fixture
async def city(
    database_url: str, fake_telegram: FakeTelegram, case_times_follow_the_clock: Clock
) -> AsyncIterator[City]:
    clock = case_times_follow_the_clock
    cora, rita, nina = (fake_telegram.user(name) for name in ("Cora", "Rita", "Nina"))
    north_group = fake_telegram.group("North team", members=[cora, rita])
    desk_group = fake_telegram.group("Hotline desk", members=[cora, rita])
    settings = make_settings(
        fake_telegram,
        database_url,
        sections={
            "teams": {"default_team": "Desk"},
            "escalation": {"check_every_seconds": 3600},
            "season": SEASON,
        },
        group_max_per_minute=100_000,
        overall_max_rate=1000,
    )
    harness = BotHarness(settings, fake_telegram, configure=wiring(clock))
    await harness.start()
    svc = harness.services
    async with svc.db.session() as session:
        await station_import.import_stations(session, station_import.DEMO_FILE)
    async with svc.db.session() as session:
        north, _ = await teams.save(session, "North")
        await teams.set_area(session, north, center=NORTH_CENTER, radius_m=NORTH_RADIUS_M)
        desk, _ = await teams.save(session, "Desk")
        assert north.id is not None and desk.id is not None
        await teams.link_chat(session, north.id, north_group.id)
        await teams.link_chat(session, desk.id, desk_group.id)
        for team in (north, desk):
            await teams.add_member(session, team, rita.id, "Rita", Role.RESPONDER)
            await teams.add_member(session, team, cora.id, "Cora", Role.COORDINATOR)
        await session.commit()
        ids = (north.id, desk.id)
    async with svc.db.session() as session:
        await staff.add(session, cora.id, "Cora", Role.COORDINATOR)
        await staff.add(session, rita.id, "Rita", Role.RESPONDER)
    for person in (cora, rita, nina):
        await person.send_command("/help")
        await person.receive()
    try:
        yield City(harness, fake_telegram, clock, north_group, desk_group, cora, rita, nina, *ids)
    finally:
        await harness.stop()
    harness.assert_clean()


# -- acting as people and staff -------------------------------------------------------------------------------------


async def expect(user: FakeUser, part: str, *, kind: str | None = None) -> BotMessage:
    """The next bot message containing `part`, skipping others (escalation notices, the daily check)."""
    for _ in range(20):
        message = await user.receive(kind=kind)
        if part in message.content:
            return message
    raise AssertionError(f"no message with {part!r}")


def drain(user: FakeUser) -> None:
    """Count every message so far as read."""
    user.chat.received.update(m.message_id for m in user.chat.messages)


async def tap(user: FakeUser, label: str, message: BotMessage | None = None) -> BotMessage:
    await user.tap_inline(label, message=message)
    return await user.receive()


async def request(user: FakeUser, kinds: list[str], text: str, pin: tuple[float, float] | None) -> str:
    """The help-request form, as a person fills it in; returns the reference."""
    drain(user)  # status notifications of an earlier request are not part of the form
    await user.send_command("/request")
    await user.receive()
    await tap(user, "No")
    choice = await tap(user, "No")
    for kind in kinds:
        await user.tap_inline(kind, message=choice)
        await user.wait_edit(choice.message_id)
    await tap(user, "Next ▶")
    await user.send_text(text)
    assert "Where are you?" in (await user.receive()).text
    if pin is not None:
        await user.tap_reply_button("📍 Share my location", location=pin)
    else:
        await user.tap_reply_button("⏭ Skip")
    await user.receive_all(2)
    await user.tap_reply_button("💬 Telegram is enough")
    await user.receive_all(2)
    await tap(user, "⏭ Skip")
    await tap(user, "✅ I agree")
    done = await tap(user, "📨 Submit")
    match = re.search(r"Reference: (WS-\d{4}-\d{6})", done.text or "")
    assert match, done.text
    return match.group(1)


async def card(group: FakeGroup, reference: str) -> BotMessage:
    return await group.wait_until(lambda ms: next((m for m in ms if f"· {reference}" in m.content), None))


async def card_tap(user: FakeUser, label: str, message: BotMessage, group: FakeGroup) -> tuple[str | None, bool]:
    return await user.callback_answer(await user.tap_inline(label, message=message, chat=group))


async def count_items(user: FakeUser, message: BotMessage, labels: dict[str, int]) -> None:
    """Tap each item button once per piece (its label shows the count so far)."""
    for label, n in labels.items():
        for done in range(n):
            await user.tap_inline(f"➕ {label}" if done == 0 else f"{label} ({done})", message=message)
            await user.wait_edit(message.message_id)


async def resolve(
    user: FakeUser,
    group: FakeGroup,
    reference: str,
    reason: str,
    *,
    also: tuple[str, ...] = (),
    items: dict[str, int] | None = None,
    amount: str | None = None,
) -> None:
    """✅ Resolve on the card, the closing reason, what was given, the amount, no note."""
    assert await card_tap(user, "✅ Resolve", await card(group, reference), group) == (
        "I have written to you privately: continue there.",
        False,
    )
    reasons = await expect(user, f"How did {reference} end?")
    await user.tap_inline(reason, message=reasons)
    if reason in ("No help wanted", "Could not reach the person"):
        prompt = await expect(user, "Add a closing note")
    else:
        given = await expect(user, f"What was given for {reference}?")
        for label in also:
            await user.tap_inline(label, message=given)
            await user.wait_edit(given.message_id)
            assert f"✔️ {label}" in given.button_texts
        await count_items(user, given, items or {})
        await user.tap_inline("✅ Done", message=given)
        await user.wait_edit(given.message_id)
        if amount is not None:
            await expect(user, "How much was paid?")
            await user.send_text(amount)
        prompt = await expect(user, "Add a closing note")
    await user.tap_inline("⏭ Skip", message=prompt)
    await expect(user, f"✅ {reference} is resolved")


async def run_patrol(city: City, user: FakeUser, area: str, minutes: int, people: str, items: dict[str, int]) -> None:
    await user.send_command("/patrol")
    start = await expect(user, "Start an outreach patrol")
    await user.tap_inline(area, message=start)
    started = await user.wait_edit(start.message_id)
    assert started.text.startswith("🚶 Patrol started in")
    city.clock.advance(minutes=minutes)
    await user.send_command("/patrol")
    running = await expect(user, "Your patrol in")
    await user.tap_inline("⏹ End the patrol", message=running)
    await expect(user, "How many people did you meet")
    await user.send_text(people)
    counter = await expect(user, "What did you hand out?")
    await count_items(user, counter, items)
    await user.tap_inline("✅ Done", message=counter)
    await expect(user, "✅ Patrol ended")


async def find_nearby(user: FakeUser, ledger: Ledger, *, open_first: bool) -> None:
    """Share a location (outside any form): the list is shown; optionally open the first station."""
    await user.send_location(*PIN)
    listing = await user.receive()
    ids = [
        int(b["callback_data"].split("|")[1])
        for row in listing.inline_keyboard
        for b in row
        if str(b.get("callback_data", "")).startswith("sc|")
    ]
    assert ids, listing.summary()
    for station_id in ids:
        ledger.shown[station_id] = ledger.shown.get(station_id, 0) + 1
    if open_first:
        first = next(b["text"] for row in listing.inline_keyboard for b in row if b["callback_data"] == f"sc|{ids[0]}")
        await user.tap_inline(first, message=listing)
        await user.receive()  # the card
        await user.receive(kind="venue")
        ledger.opened[ids[0]] = ledger.opened.get(ids[0], 0) + 1


# -- the season ----------------------------------------------------------------------------------------------------


async def play_season(city: City) -> Ledger:
    """Two weeks of work through the real flows; returns the test's own count of everything."""
    ledger = Ledger()
    clock, rita, cora = city.clock, city.rita, city.cora
    ann, bo, cy, dee, eve, fay, gus = (city.fake.user(n) for n in ("Ann", "Bo", "Cy", "Dee", "Eve", "Fay", "Gus"))

    # Week 1, Monday 09:00 — Ann (North): food and a bed; claimed after 30 min, resolved 90 min later with food and
    # lodging, 2 blankets and a coat.
    clock.set(WEEK1)
    ledger.typed.append("Lost my wallet <near> the station, 13800138000")
    first = await request(ann, ["🍲 Food", "🛏️ A bed tonight"], ledger.typed[-1], PIN)
    clock.advance(minutes=30)
    assert await card_tap(rita, "✋ Claim", await card(city.north_group, first), city.north_group) == (
        f"You claimed {first}.",
        False,
    )
    clock.advance(minutes=90)
    await resolve(
        rita, city.north_group, first, "Food given", also=("Lodging arranged",), items={"🛌 Blanket": 2, "🧥 Coat": 1}
    )
    ledger.requests += 1
    ledger.requests_claimed += 1
    ledger.claimed.append(30)
    ledger.resolved.append(120)
    ledger.closing["help_food"] = ledger.closing.get("help_food", 0) + 1
    ledger.helped_requesters.append(ann.id)
    for kind in ("food", "lodging"):
        ledger.kinds[kind] = ledger.kinds.get(kind, 0) + 1
    ledger.add_items({"blanket": 2, "coat": 1})

    # 11:00 — Bo (no location: the Desk team) wants an escort home; nobody claims: two escalation steps fire
    # (10 and 20 minutes); Cora claims after 30 min; resolved after 3 h.
    clock.set(WEEK1, hours=2)
    ledger.typed.append("Need to get home to Anhui, phone 13900139000")
    second = await request(bo, ["🚆 An escort or ticket home"], ledger.typed[-1], None)
    desk_card = await card(city.desk_group, second)
    clock.set(WEEK1, hours=2, minutes=12)  # step 1 (10 min): a reminder in the group
    await city.tick()
    await city.desk_group.wait_until(lambda ms: any(f"{second} has waited 10 min" in m.content for m in ms))
    clock.set(WEEK1, hours=2, minutes=22)  # step 2 (20 min): the coordinators, directly
    await city.tick()
    await expect(cora, f"⏰ Escalation: {second}")
    ledger.escalations += 2
    ledger.escalated_cases += 1
    clock.set(WEEK1, hours=2, minutes=30)
    assert await card_tap(cora, "✋ Claim", desk_card, city.desk_group) == (f"You claimed {second}.", False)
    clock.set(WEEK1, hours=5)
    await resolve(cora, city.desk_group, second, "Escort or ticket home arranged")
    ledger.requests += 1
    ledger.requests_claimed += 1
    ledger.claimed.append(30)
    ledger.resolved.append(180)
    ledger.closing["help_escort"] = 1
    ledger.helped_requesters.append(bo.id)
    ledger.kinds["escort"] = ledger.kinds.get("escort", 0) + 1
    ledger.escorts += 1

    # 14:00 — Ann again (North): emergency money, ¥200, claimed after 10 min, resolved 50 min later.
    clock.set(WEEK1, hours=5)
    ledger.typed.append("Rent is due tomorrow")
    third = await request(ann, ["💴 Money for an emergency"], ledger.typed[-1], PIN)
    clock.advance(minutes=10)
    await card_tap(rita, "✋ Claim", await card(city.north_group, third), city.north_group)
    clock.advance(minutes=50)
    await resolve(rita, city.north_group, third, "Emergency money paid", items={"🍱 Food box": 1}, amount="¥ 200")
    ledger.requests += 1
    ledger.requests_claimed += 1
    ledger.claimed.append(10)
    ledger.resolved.append(60)
    ledger.closing["help_money"] = 1
    ledger.helped_requesters.append(ann.id)
    ledger.kinds["money"] = ledger.kinds.get("money", 0) + 1
    ledger.add_items({"food_box": 1})
    ledger.aid.append(200.0)

    # 15:00 — Cy (Desk): closed after an hour without a claim, "no help wanted".
    clock.set(WEEK1, hours=6)
    ledger.typed.append("Just looking for information")
    fourth = await request(cy, ["🍲 Food"], ledger.typed[-1], None)
    clock.advance(minutes=60)
    await resolve(cora, city.desk_group, fourth, "No help wanted")
    ledger.requests += 1
    ledger.resolved.append(60)
    ledger.closing["no_help_wanted"] = 1

    # 20:00 — Dee reports two people in the cold (no pin: Desk); found after 15 min, taken to a shelter 30 min later.
    clock.set(WEEK1, hours=11)
    report_one = await quick_report(dee)
    ledger.typed += ["Corner of Renmin Road and Huaihai Road", "Man, about 50, grey coat <no blanket> & shaking"]
    report_card = await card(city.desk_group, report_one)
    clock.advance(minutes=15)
    assert (await card_tap(rita, "👀 Found", report_card, city.desk_group))[0] == (
        "Recorded: found. Tap Resolve when you are done."
    )
    clock.advance(minutes=30)
    await card_tap(rita, "✅ Resolve", report_card, city.desk_group)
    question = await expect(rita, f"How did report {report_one} end?")
    await rita.tap_inline("Taken to a station or shelter", message=question)
    await rita.wait_edit(question.message_id)
    ledger.reports += 1
    ledger.reports_claimed += 1
    ledger.claimed.append(15)
    ledger.resolved.append(45)
    ledger.outcomes["taken_to_shelter"] = 1
    ledger.helped_report_people += 2
    ledger.found += 1

    # 21:00 — Rita patrols North for 2 h 30: 7 people met, 3 blankets and a food box handed out.
    clock.set(WEEK1, hours=12)
    await run_patrol(city, rita, "North", 150, "7", {"🛌 Blanket": 3, "🍱 Food box": 1})
    ledger.patrols += 1
    ledger.patrol_minutes += 150
    ledger.people_met += 7
    ledger.add_items({"blanket": 3, "food_box": 1}, patrol=True)

    # A courier looks for stations twice and opens one card.
    await find_nearby(city.fake.user("Courier"), ledger, open_first=True)
    await find_nearby(city.fake.user("Driver"), ledger, open_first=False)

    # Week 2, Monday 10:00 — Eve (North): claimed after 45 min, still being handled.
    clock.set(WEEK2, hours=1)
    ledger.typed.append("Nowhere to sleep tonight")
    fifth = await request(eve, ["🛏️ A bed tonight"], ledger.typed[-1], PIN)
    clock.advance(minutes=45)
    await card_tap(rita, "✋ Claim", await card(city.north_group, fifth), city.north_group)
    ledger.requests += 1
    ledger.requests_claimed += 1
    ledger.requests_open += 1
    ledger.claimed.append(45)

    # 12:00 — Fay's report (Desk): not found after 20 min, closed "already gone" 20 min later.
    clock.set(WEEK2, hours=3)
    report_two = await quick_report(fay)
    report_card = await card(city.desk_group, report_two)
    clock.advance(minutes=20)
    await card_tap(rita, "❌ Not found", report_card, city.desk_group)
    clock.advance(minutes=20)
    await card_tap(rita, "✅ Resolve", report_card, city.desk_group)
    question = await expect(rita, f"How did report {report_two} end?")
    await rita.tap_inline("Already gone", message=question)
    await rita.wait_edit(question.message_id)
    ledger.reports += 1
    ledger.reports_claimed += 1
    ledger.claimed.append(20)
    ledger.resolved.append(40)
    ledger.outcomes["already_gone"] = 1
    ledger.not_found += 1

    # 13:00 — Gus (Desk) asks for food; nobody has claimed it yet (no escalation pass runs).
    clock.set(WEEK2, hours=4)
    ledger.typed.append("Hungry since yesterday")
    await request(gus, ["🍲 Food"], ledger.typed[-1], None)
    ledger.requests += 1
    ledger.requests_open += 1

    # 18:00 — Cora patrols with no particular area for an hour: nobody met, nothing handed out.
    clock.set(WEEK2, hours=9)
    await run_patrol(city, cora, "🌐 No particular area", 60, "0", {})
    ledger.patrols += 1
    ledger.patrol_minutes += 60
    await find_nearby(city.fake.user("Walker"), ledger, open_first=True)
    await usage_counted(city, ledger)
    return ledger


async def usage_counted(city: City, ledger: Ledger) -> None:
    """Station use is counted in the background, after the reply: wait (briefly) until the last count is in."""
    period = stats.custom(date(2026, 11, 1), date(2026, 12, 31))
    assert period is not None
    for _ in range(100):
        async with city.bot.services.db.session() as session:
            report = await stats.compute(session, period, TZ)
        if (report.shown_total, report.opened_total) == (sum(ledger.shown.values()), sum(ledger.opened.values())):
            return
        await asyncio.sleep(0.05)
    raise AssertionError("station use was not counted")


async def add_broadcasts(city: City) -> tuple[int, int, int]:
    """A finished cold alert in week 1 (not part of this issue's flows: stored as the broadcast job leaves it), and a
    dismissed draft that must not count. Returns (recipients, delivered, blocked)."""
    async with city.bot.services.db.session() as session:
        session.add(
            Broadcast(
                kind="alert",
                status=BroadcastStatus.DONE.value,
                recipients=40,
                sent=37,
                failed=1,
                blocked=2,
                fanned_out=True,
                created_at=WEEK1.astimezone(UTC),
                started_at=(WEEK1 + timedelta(hours=8)).astimezone(UTC),
                finished_at=(WEEK1 + timedelta(hours=8, minutes=3)).astimezone(UTC),
            )
        )
        session.add(Broadcast(kind="manual", status=BroadcastStatus.DISMISSED.value, created_at=WEEK1.astimezone(UTC)))
        await session.commit()
    return 40, 37, 2


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def median_p90(values: list[float]) -> tuple[float, float]:
    return float(numpy.median(values)), float(numpy.percentile(values, 90))


def check_report(report: stats.Report, ledger: Ledger, broadcasts: tuple[int, int, int]) -> None:
    """Every figure of the model's report against the ledger."""
    assert report.requests.received == ledger.requests
    assert report.requests.claimed == ledger.requests_claimed
    assert report.requests.resolved == sum(ledger.closing.values())
    assert report.requests.open == ledger.requests_open
    assert report.requests.cancelled == 0
    assert report.requests.by_closing == ledger.closing
    assert report.reports.received == ledger.reports
    assert report.reports.claimed == ledger.reports_claimed
    assert report.reports.resolved == sum(ledger.outcomes.values())
    assert report.reports.by_closing == ledger.outcomes
    assert (report.found, report.not_found, report.search_unknown) == (ledger.found, ledger.not_found, 0)
    assert report.helped_total == len(ledger.helped_requesters) + ledger.helped_report_people
    assert report.helped_distinct == len(set(ledger.helped_requesters)) + ledger.helped_report_people
    assert report.helped_by_kind == ledger.kinds
    assert report.escorts == ledger.escorts
    assert report.items == ledger.items and report.items_on_patrols == ledger.items_on_patrols
    assert (report.aid_count, report.aid_total) == (len(ledger.aid), sum(ledger.aid))
    assert (report.escalations, report.escalated_cases) == (ledger.escalations, ledger.escalated_cases)
    assert (report.patrols, report.patrol_minutes, report.people_met) == (
        ledger.patrols,
        ledger.patrol_minutes,
        ledger.people_met,
    )
    claim_median, claim_p90 = median_p90(ledger.claimed)
    resolve_median, resolve_p90 = median_p90(ledger.resolved)
    assert report.claim.count == len(ledger.claimed) and report.resolve.count == len(ledger.resolved)
    assert (report.claim.median, report.claim.p90) == pytest.approx((claim_median, claim_p90))
    assert (report.resolve.median, report.resolve.p90) == pytest.approx((resolve_median, resolve_p90))
    assert (report.recipients, report.reach, report.blocked, report.broadcasts) == (*broadcasts, 1)
    assert {s.station_id: s.shown for s in report.stations if s.shown} == ledger.shown
    assert {s.station_id: s.opened for s in report.stations if s.opened} == ledger.opened


# -- the tests -----------------------------------------------------------------------------------------------------


async def test_a_season_through_the_real_flows_then_stats_text_chart_and_csv(city: City) -> None:
    ledger = await play_season(city)
    broadcasts = await add_broadcasts(city)
    svc = city.bot.services
    city.clock.set(datetime(2026, 12, 2, 10, 0, tzinfo=TZ))  # week 3: the season is still on

    # The domain report: every figure against the ledger.
    season = stats.period_of("season", city.clock().astimezone(TZ).date(), (SEASON["start"], SEASON["end"]))
    assert (season.first_day, season.last_day) == (date(2026, 11, 16), date(2026, 12, 13))
    async with svc.db.session() as session:
        report = await stats.compute(session, season, TZ)
    check_report(report, ledger, broadcasts)
    assert [w.start for w in report.weeks] == [date(2026, 11, 16) + timedelta(days=7 * i) for i in range(4)]
    assert report.weeks[0].by_kind == {"food": 2, "bed": 1, "escort": 1, "money": 1, "report": 1}
    assert report.weeks[1].by_kind == {"bed": 1, "report": 1, "food": 1}
    assert report.weeks[0].claim_median == pytest.approx(numpy.median([30, 30, 10, 15]))
    assert report.weeks[2].by_kind == {} and report.weeks[2].claim_median is None

    # /stats in Telegram: the picker, then "This season".
    cora = city.cora
    await cora.send_command("/stats")
    picker = await expect(cora, "Season report")
    assert picker.button_texts == [
        "This week",
        "This month",
        "This season",
        "📅 Other dates",
        "✔️ All teams",
        "North",
        "Desk",
    ]
    await cora.tap_inline("This season", message=picker)
    text = await expect(cora, "Season report ·")
    helped = len(ledger.helped_requesters) + ledger.helped_report_people
    distinct = len(set(ledger.helped_requesters)) + ledger.helped_report_people
    claim_median, claim_p90 = median_p90(ledger.claimed)
    for line in (
        "📊 Season report · Nov 16, 2026 – Dec 13, 2026 (this season)",
        f"🙋 Helped: {helped} person-times ({distinct} different people)",
        "Food given 1, Lodging arranged 1, Escort or ticket home arranged 1, Emergency money paid 1",
        f"🚆 Escorts: {ledger.escorts}",
        f"🎒 Items handed out: {sum(ledger.items.values())} ({ledger.items_on_patrols} on patrols)",
        "🛌 Blanket × 5, 🍱 Food box × 2, 🧥 Coat × 1",
        "💴 Aid paid: CN¥200.00 (1 payment)",
        f"📨 Requests: {ledger.requests} received · {ledger.requests_claimed} claimed · "
        f"{sum(ledger.closing.values())} resolved · 0 cancelled · {ledger.requests_open} open",
        "Closed: food given 1, escort or ticket home arranged 1, emergency money paid 1, no help wanted 1",
        f"👀 Reports: {ledger.reports} received · 2 claimed · 2 resolved · 0 open",
        "Found 1 · not found 1 · not known 0",
        "Outcomes: taken to a station or shelter 1, already gone 1",
        f"⏱ Time to claim: median {round(claim_median)} min · 90% within {round(claim_p90)} min "
        f"({len(ledger.claimed)} cases)",
        "⏰ Escalations: 2 (1 case)",
        f"🚶 Patrols: 2 (3 h 30 min) · {ledger.people_met} people met",
        "📢 Broadcasts: 1 (cold alerts 1) · 40 recipients · 37 delivered · 2 blocked the bot",
        f"📍 Stations: shown {sum(ledger.shown.values())} times · opened {sum(ledger.opened.values())} times",
    ):
        assert line in text.text, f"{line!r} not in:\n{text.text}"
    assert median_p90(ledger.resolved) == (60, 150)  # shown in hours
    assert "⏱ Time to resolve: median 1 h · 90% within 2 h 30 min (6 cases)" in text.text
    assert text.button_texts == ["📄 CSV file"]

    # The chart: a PNG of the promised size.
    photo = await cora.receive(kind="photo")
    assert photo.data is not None and png_size(photo.data) == (charts.WIDTH, charts.HEIGHT)
    assert photo.file is not None and (photo.file.width, photo.file.height) == (charts.WIDTH, charts.HEIGHT)
    assert "Nov 16, 2026 – Dec 13, 2026" in (photo.caption or "")

    # The CSV: one row per case, patrol, broadcast and station used; nothing personal.
    await cora.tap_inline("📄 CSV file", message=text)
    document = await cora.receive(kind="document")
    assert document.data is not None and "anonymised rows" in (document.caption or "")
    content = document.data.decode("utf-8")
    rows = list(csv.DictReader(io.StringIO(content)))
    kinds = [row["record"] for row in rows]
    assert kinds.count("request") == ledger.requests and kinds.count("report") == ledger.reports
    assert kinds.count("patrol") == ledger.patrols and kinds.count("broadcast") == 1
    assert kinds.count("station") == len(set(ledger.shown) | set(ledger.opened))
    requests = [row for row in rows if row["record"] == "request"]
    assert sorted(float(r["claim_minutes"]) for r in requests if r["claim_minutes"]) == [10, 30, 30, 45]
    assert sum(float(r["aid_amount"] or 0) for r in requests) == 200
    assert [r["help_given"] for r in requests if r["help_given"]] == ["food+lodging", "escort", "money"]
    assert {r["lat_1km"] for r in requests if r["lat_1km"]} == {"31.72"}
    assert_no_personal_data(content, city, ledger)

    # Only coordinators and admins: a responder is refused on the command and on every (forged) button.
    await city.rita.send_command("/stats")
    refusal = await expect(city.rita, "Sorry")
    assert refusal.text == "Sorry, only coordinators and admins can see the season report."
    for data in ("st|p|season|0", f"st|csv|season|{city.north}", "st|t|0", "st|c|0"):
        query = await city.rita.send_callback(refusal.message_id, data)
        assert await city.rita.callback_answer(query) == (
            "Sorry, only coordinators and admins can see the season report.",
            True,
        )
    forged = await cora.send_callback(picker.message_id, "st|p|season|999")
    assert await cora.callback_answer(forged) == ("Sorry, this button is not valid any more.", True)


def assert_no_personal_data(content: str, city: City, ledger: Ledger) -> None:
    names = ["Ann", "Bo", "Cy", "Dee", "Eve", "Fay", "Gus", "Cora", "Rita", "Courier", "Walker"]
    header, *lines = content.splitlines()
    for line in lines:
        cells = line.split(",")
        for name in names:
            assert name not in cells, name
    # The CSV's own vocabulary (column names, record types, statuses, reasons, kinds) is not what people typed.
    vocabulary = " ".join(
        [
            *stats.CSV_COLUMNS,
            "request report patrol broadcast station running done alert",
            *cases.CLOSING_REASONS,
            *cases.HELP_KINDS,
            *reports.OUTCOMES,
            *[status.value for status in cases.CaseStatus],
            *SEASON["item_kinds"],
        ]
    )
    for typed in ledger.typed:
        for word in re.findall(r"[A-Za-z]{4,}|\d{6,}", typed):
            if word.lower() not in vocabulary:
                assert word not in content, word
    assert "WS-" not in content  # no reference numbers
    assert re.search(r"\d{3,}\d{8}", content) is None  # no phone numbers
    assert f"{PIN[0]}" not in content and f"{PIN[1]}" not in content  # no exact locations
    for value in re.findall(r"\d+\.\d+", content):
        assert len(value.split(".")[1]) <= 2, value
    for person in (city.cora, city.rita, city.nina):
        assert str(person.id) not in content
    assert header.split(",") == list(stats.CSV_COLUMNS)


async def test_per_team_empty_period_typed_dates_and_this_week(city: City) -> None:
    ledger = await play_season(city)
    city.clock.set(datetime(2026, 11, 24, 20, 0, tzinfo=TZ))  # week 2, Tuesday evening
    cora = city.cora

    # North only: Ann's two requests and Eve's, and Rita's patrol there.
    await cora.send_command("/stats")
    picker = await expect(cora, "Season report")
    await cora.tap_inline("North", message=picker)
    chosen = await cora.wait_edit(picker.message_id)
    assert "👥 Team: North" in chosen.text and "✔️ North" in chosen.button_texts
    await cora.tap_inline("This season", message=chosen)
    north = await expect(cora, "Season report ·")
    assert "👥 Team: North" in north.text
    assert "🙋 Helped: 2 person-times (1 different people)" in north.text
    assert "📨 Requests: 3 received · 3 claimed · 2 resolved · 0 cancelled · 1 open" in north.text
    assert "👀 Reports: 0 received" in north.text
    assert "🚶 Patrols: 1 (2 h 30 min) · 7 people met" in north.text
    assert "⏰ Escalations: 0 (0 cases)" in north.text
    await cora.receive(kind="photo")
    async with city.bot.services.db.session() as session:
        season = stats.period_of("season", date(2026, 11, 24), (SEASON["start"], SEASON["end"]))
        desk = await stats.compute(session, season, TZ, team_id=city.desk)
    assert desk.requests.received == ledger.requests - 3 and desk.reports.received == ledger.reports
    assert (desk.escalations, desk.patrols) == (ledger.escalations, 0)

    # This week: week 2 only.
    await cora.tap_inline("This week", message=chosen)
    week = await expect(cora, "Season report ·")
    assert "Nov 23, 2026 – Nov 24, 2026 (this week)" in week.text
    assert "📨 Requests: 1 received · 1 claimed · 0 resolved · 0 cancelled · 1 open" in week.text
    await cora.receive(kind="photo")

    # Dates typed (for the team chosen, North): first wrong ones, then a period with nothing in it.
    await cora.tap_inline("📅 Other dates", message=chosen)
    await expect(cora, "Type the first and the last day")
    for bad in ("soon", "2026-12-13 2026-12-07", "2026-02-30 2026-03-01"):
        await cora.send_text(bad)
        assert "Please type two dates" in (await cora.receive()).text, bad
    await cora.send_sticker()
    assert (await cora.receive()).text == "Please type the two dates as text, or send /cancel."
    await cora.send_text("2026-12-07 – 2026-12-13")
    empty = await expect(cora, "Season report ·")
    assert empty.text == (
        "📊 Season report · Dec 7, 2026 – Dec 13, 2026 (chosen dates)\n"
        "👥 Team: North\n"
        "Nothing in this period: no requests, reports, patrols, broadcasts or station use."
    )
    assert not empty.button_texts
    await cora.send_text("hello")  # the dates step is over: this is not taken as dates
    assert "Please type two dates" not in (await cora.receive()).content
    assert not [m for m in cora.messages if m.kind == "photo" and m.message_id > empty.message_id]

    # Typed dates keep the chosen team: Desk, the first week.
    await cora.tap_inline("Desk", message=chosen)
    desk_picker = await cora.wait_edit(chosen.message_id)
    await cora.tap_inline("📅 Other dates", message=desk_picker)
    await expect(cora, "Type the first and the last day")
    await cora.send_text("2026-11-16:2026-11-22")
    first_week = await expect(cora, "Season report ·")
    assert "👥 Team: Desk" in first_week.text and "⏰ Escalations: 2 (1 case)" in first_week.text
    assert "📨 Requests: 2 received · 1 claimed · 2 resolved" in first_week.text
    await cora.receive(kind="photo")


async def test_patrol_roles_double_start_and_cancel(city: City) -> None:
    await city.nina.send_command("/patrol")
    not_staff = await city.nina.receive()
    assert not_staff.text == "Sorry, only outreach staff (responders, coordinators and admins) can log patrols."
    rita = city.rita
    await rita.send_command("/patrol")
    start = await expect(rita, "Start an outreach patrol")
    assert start.button_texts == ["Desk", "North", "🌐 No particular area", "✖ Cancel"]
    # An old (or forged) area button for a team that does not exist, and a non-staff tap, change nothing.
    query = await rita.send_callback(start.message_id, "pt|area|999")
    assert await rita.callback_answer(query) == ("This step has expired. Send /patrol again.", True)
    query = await city.nina.send_callback(not_staff.message_id, f"pt|area|{city.north}")
    assert (await city.nina.callback_answer(query))[0] == (
        "Sorry, only outreach staff (responders, coordinators and admins) can log patrols."
    )
    await rita.tap_inline("North", message=start)
    await rita.wait_edit(start.message_id)
    # The same button again (a double tap, a redelivered update): still one patrol.
    query = await rita.send_callback(start.message_id, f"pt|area|{city.north}")
    assert await rita.callback_answer(query) == ("This step has expired. Send /patrol again.", True)
    await rita.send_command("/patrol")
    running = await expect(rita, "Your patrol in")
    assert "North" in running.text and "(0 min)" in running.text
    await rita.tap_inline("↩️ Keep it running", message=running)
    assert "still running" in (await rita.receive()).text
    city.clock.advance(hours=1, minutes=5)
    await rita.send_command("/patrol")
    running = await expect(rita, "Your patrol in")
    assert "(1 h 5 min)" in running.text
    await rita.tap_inline("⏹ End the patrol", message=running)
    await expect(rita, "How many people")
    for bad in ("many", "-1", "1000"):
        await rita.send_text(bad)
        assert "Please type the number of people as digits" in (await rita.receive()).text
    await rita.send_text("3")
    counter = await expect(rita, "What did you hand out?")
    await count_items(rita, counter, {"🧥 Coat": 2})
    await rita.tap_inline("↺ Reset the items", message=counter)
    await rita.wait_edit(counter.message_id)
    await count_items(rita, counter, {"🛌 Blanket": 1})
    # Rita stops being staff mid-step: the next tap is refused.
    async with city.bot.services.db.session() as session:
        await staff.remove(session, rita.id)
    query = await rita.tap_inline("✅ Done", message=counter)
    assert (await rita.callback_answer(query))[0] == (
        "Sorry, only outreach staff (responders, coordinators and admins) can log patrols."
    )
    async with city.bot.services.db.session() as session:
        await staff.add(session, rita.id, "Rita", Role.RESPONDER)
    await rita.send_command("/patrol")
    running = await expect(rita, "Your patrol in")
    await rita.tap_inline("⏹ End the patrol", message=running)
    await expect(rita, "How many people")
    await rita.send_text("3")
    counter = await expect(rita, "What did you hand out?")
    await count_items(rita, counter, {"🛌 Blanket": 1})
    await rita.tap_inline("✅ Done", message=counter)
    ended = await expect(rita, "✅ Patrol ended")
    assert ended.text == "✅ Patrol ended: 1 h 5 min in North · 3 people met · handed out: 🛌 Blanket × 1. Thank you."
    query = await rita.send_callback(counter.message_id, "pt|done")  # the old Done again
    assert await rita.callback_answer(query) == ("This step has expired. Send /patrol again.", True)
    monday = stats.custom(date(2026, 11, 16), date(2026, 11, 16))
    assert monday is not None
    async with city.bot.services.db.session() as session:
        report = await stats.compute(session, monday, TZ)
    assert (report.patrols, report.people_met, report.items, report.patrol_minutes) == (1, 3, {"blanket": 1}, 65)


async def test_command_line_report_and_csv(city: City, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ledger = await play_season(city)
    await city.bot.stop()  # the operator runs the CLI against the same database
    config = tmp_path / "stats.toml"
    season = ", ".join(f'"{k}"' for k in SEASON["item_kinds"])
    config.write_text(
        f'[database]\nurl = "{city.bot.settings.database.url}"\n'
        f'[season]\nstart = "{SEASON["start"]}"\nend = "{SEASON["end"]}"\nitem_kinds = [{season}]\n',
        encoding="utf-8",
    )
    out_file = tmp_path / "rows.csv"
    code = await asyncio.to_thread(
        cli.main, ["--config", str(config), "stats", "--period", "2026-11-16:2026-12-13", "--csv", str(out_file)]
    )
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "📊 Season report · Nov 16, 2026 – Dec 13, 2026 (chosen dates)" in printed
    assert f"📨 Requests: {ledger.requests} received" in printed and "<b>" not in printed
    rows = ledger.requests + ledger.reports + ledger.patrols + len(set(ledger.shown) | set(ledger.opened))
    assert f"wrote {rows} anonymised row(s) to {out_file}" in printed
    content = out_file.read_text(encoding="utf-8")
    assert_no_personal_data(content, city, ledger)

    # Only the CSV, to standard output; a team; the text in Chinese.
    code = await asyncio.to_thread(cli.main, ["--config", str(config), "stats", "--period", "season", "--csv", "-"])
    assert code == 0 and capsys.readouterr().out == content
    code = await asyncio.to_thread(
        cli.main, ["--config", str(config), "stats", "--period", "season", "--team", "North", "--language", "zh_Hans"]
    )
    printed = capsys.readouterr().out
    zh = translator("zh_Hans")
    assert code == 0 and zh.gettext("👥 Team: {team}").format(team="North") in printed
    assert zh.gettext("👥 Team: {team}") != "👥 Team: {team}"  # the text really is in Chinese
    code = await asyncio.to_thread(cli.main, ["--config", str(config), "stats", "--period", "soon"])
    assert code == 1 and "expected week, month, season or FROM:TO" in capsys.readouterr().err
