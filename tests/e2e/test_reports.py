"""Journey 5 end to end: /report — triage and the emergency branch, pin and/or landmark, when, how many, description,
photo with the dignity reminder, contact and outcome choices, review with Edit / Send — the report card in the staff
group (Going / Found / Not found / Resolve / Details), the outcome sent to the reporter who asked for it, anonymous
reports, the per-hour limit, bad input at every step, restarts, and the broadcast button / menu / deep-link entries."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlmodel import select
from telegram.ext import ConversationHandler

from bot.application import WaystationApplication
from bot.i18n import translator
from bot.sandbox.fake_telegram import BotMessage, FakeGroup, FakeTelegram, FakeUser
from handlers import case_alerts, report_form, report_staff
from models import cases, reports, staff
from models.cases import Case, CaseKind
from models.outbox import OutboxItem
from models.reports import ReportDetails
from models.staff import Role
from tests.conftest import make_settings
from tests.harness import BotHarness

PIN = (31.7160, 119.9590)
LANDMARK = "Under the east side of the Huaihai bridge, by the stairs <north> & cold"


def wire(app: WaystationApplication) -> None:
    """Register the report handlers as bot/application.py will: right after the request form, before /find (which
    answers any location) and before /start and /cancel. Does nothing once bot/application.py registers them."""
    if any(isinstance(h, ConversationHandler) and h.name == "report" for h in app.handlers[0]):
        return
    mine = report_form.handlers() + report_staff.handlers()
    app.add_handlers(mine)
    group = app.handlers[0]
    for handler in mine:
        group.remove(handler)
    at = next(i for i, h in enumerate(group) if isinstance(h, ConversationHandler) and h.name == "find")
    group[at:at] = mine


@pytest.fixture(autouse=True)
def report_cards(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Until handlers/case_alerts.py dispatches to report_staff.render_card itself, do it here (same routing)."""
    if "report_staff" in vars(case_alerts):
        yield
        return
    original = case_alerts.enqueue_cards

    async def enqueue_cards(session: Any, svc: Any, case: Case, *, new: bool) -> None:
        if case.kind != CaseKind.REPORT:
            await original(session, svc, case, new=new)
            return
        t = translator(svc.settings.i18n.default_language)
        area = await case_alerts.area_of(session, svc, case)
        text, keyboard = await report_staff.render_card(session, svc, t, case, area=area)
        with monkeypatch.context() as patch:
            patch.setattr(case_alerts, "card_text", lambda *_a, **_k: text)
            patch.setattr(case_alerts, "card_keyboard", lambda *_a, **_k: keyboard)
            await original(session, svc, case, new=new)

    monkeypatch.setattr(case_alerts, "enqueue_cards", enqueue_cards)
    yield


@dataclass
class Desk:
    bot: BotHarness
    fake: FakeTelegram
    group: FakeGroup
    alice: FakeUser  # responder
    stranger: FakeUser  # in the group, not staff

    async def case(self, reference: str) -> tuple[Case, ReportDetails]:
        async with self.bot.services.db.session() as session:
            case = await cases.by_reference(session, reference)
            assert case is not None and case.id is not None
            details = await reports.get(session, case.id)
        assert details is not None
        return case, details

    async def actions(self, case_id: int | None) -> list[str]:
        assert case_id is not None
        async with self.bot.services.db.session() as session:
            return [e.action for e in await cases.events(session, case_id)]

    async def card_until(self, card: BotMessage, text: str) -> BotMessage:
        return await self.group.wait_until(lambda _messages: card if text in card.text else None)


async def _desk(database_url: str, fake: FakeTelegram, **reports_settings: Any) -> AsyncIterator[Desk]:
    alice = fake.user("Alice")
    stranger = fake.user("Stranger")
    group = fake.group("Outreach team", members=[alice, stranger])
    settings = make_settings(
        fake,
        database_url,
        sections={"staff": {"alert_chat_ids": [group.id]}, "reports": reports_settings},
    )
    harness = BotHarness(settings, fake, configure=wire)
    await harness.start()
    async with harness.services.db.session() as session:
        await staff.add(session, alice.id, "Alice <outreach>", Role.RESPONDER)
    try:
        yield Desk(harness, fake, group, alice, stranger)
    finally:
        await harness.stop()
    harness.assert_clean()


@pytest.fixture
async def desk(database_url: str, fake_telegram: FakeTelegram) -> AsyncIterator[Desk]:
    async for made in _desk(database_url, fake_telegram):
        yield made


async def tap(user: FakeUser, label: str, message: BotMessage | None = None) -> BotMessage:
    """Tap an inline button (on `message`, else the newest message that has it) and return the bot's next message."""
    await user.tap_inline(label, message=message)
    return await user.receive()


async def staff_tap(user: FakeUser, label: str, card: BotMessage, group: FakeGroup) -> tuple[str | None, bool]:
    return await user.callback_answer(await user.tap_inline(label, message=card, chat=group))


async def until_where(user: FakeUser) -> BotMessage:
    await user.send_command("/report")
    triage = await user.receive()
    assert "is this an emergency" in triage.text
    where = await tap(user, "No, not an emergency", triage)
    assert where.text.startswith("Where is the person?")
    return where


async def from_when(
    user: FakeUser, *, contact: bool, outcome: bool, photo: bool = False, people: str = "2", typed_time: str = ""
) -> BotMessage:
    """From the "when" question to the review."""
    if typed_time:
        await user.send_text(typed_time)
        assert "How many people?" in (await user.receive()).text
    else:
        assert "How many people?" in (await tap(user, "Within the last hour")).text
    if people.isdigit() and int(people) <= 5:
        describe = await tap(user, people)
    else:
        await user.send_text(people)
        describe = await user.receive()
    assert describe.text.startswith("Describe them briefly")
    await user.send_text("Man, about 50, grey coat <no blanket> & shaking")
    photo_step = await user.receive()
    assert "respect their dignity" in photo_step.text
    if photo:
        await user.send_photo()
        assert (await user.receive()).text == "📷 Photo saved."
        contact_step = await user.receive()
    else:
        contact_step = await tap(user, "⏭ Skip", photo_step)
    assert contact_step.text.startswith("May outreach staff contact you")
    outcome_step = await tap(user, "✅ Yes, you may contact me" if contact else "🙈 No, keep me anonymous")
    assert outcome_step.text.startswith("Do you want to hear how it ends?")
    review = await tap(user, "🔔 Yes, tell me" if outcome else "No, thanks")
    assert review.text.startswith("Please check your report")
    return review


async def send_report(user: FakeUser, review: BotMessage) -> str:
    done = await tap(user, "📨 Send the report", review)
    match = re.search(r"Reference: (WS-\d{4}-\d{6})", done.text)
    assert match, done.text
    assert "What happens next" in done.text
    return match.group(1)


async def quick_report(user: FakeUser) -> str:
    """A whole report with a typed landmark and no pin (the fewest steps)."""
    await until_where(user)
    await user.send_text("Corner of Renmin Road and Huaihai Road")
    assert (await user.receive()).text == "🏷 Place saved."
    assert (await user.receive()).text.startswith("When did you see them?")
    return await send_report(user, await from_when(user, contact=False, outcome=False))


# -- the whole journey -------------------------------------------------------------------------------------------


async def test_report_with_pin_photo_and_contact_then_staff_act_and_reporter_hears_the_outcome(
    desk: Desk, caplog_all: pytest.LogCaptureFixture
) -> None:
    ann = desk.fake.user("Ann")
    await until_where(ann)
    await ann.tap_reply_button("📍 Share the location", location=PIN)
    assert (await ann.receive()).text == "📍 Pin saved."
    landmark = await ann.receive()
    assert landmark.text.startswith("Now describe the spot") and "⏭ Skip" in landmark.button_texts
    await ann.send_text(LANDMARK)
    assert (await ann.receive()).text.startswith("When did you see them?")
    review = await from_when(ann, contact=True, outcome=True, photo=True)
    assert "🚨 Emergency: no" in review.text
    assert "📍 Pin: shared" in review.text
    assert f"🏷 Landmark: {LANDMARK}" in review.text
    assert "🕒 Seen: Within the last hour" in review.text
    assert "👥 2 people" in review.text
    assert "📝 Man, about 50, grey coat <no blanket> & shaking" in review.text
    assert "📷 Photo: attached" in review.text
    assert "👤 You: staff may contact you on Telegram" in review.text
    assert "🔔 Outcome: you will be told" in review.text
    send_data = next(b["callback_data"] for row in review.inline_keyboard for b in row if "Send" in b["text"])
    reference = await send_report(ann, review)

    card = await desk.group.receive()
    assert card.text.startswith(f"🆕 New · {reference}")
    assert "👀 Report: someone out in the cold" in card.text
    assert "👥 2 people" in card.text and "🕒 Seen: Within the last hour" in card.text
    assert f"🏷 Landmark: {LANDMARK}" in card.text
    assert "📂 In the details: 🗺 pin, 📷 photo" in card.text
    assert "☎️ The reporter may be contacted" in card.text
    assert "Urgent" not in card.text
    assert card.button_texts == ["🚶 Going", "👀 Found", "❌ Not found", "✅ Resolve", "📂 Details"]
    assert str(ann.id) not in card.text  # who reported is in the details only

    # A second Send (the old review) makes nothing new.
    query = await ann.send_callback(review.message_id, send_data)
    assert await ann.callback_answer(query) == (f"Already sent as {reference}.", True)
    case, details = await desk.case(reference)
    assert (case.kind, case.requester_id, case.lat, case.place_text) == ("report", ann.id, PIN[0], LANDMARK)
    assert (details.people, details.seen, details.may_contact, details.wants_outcome) == (2, "within_hour", True, True)
    assert details.photo_file_id and details.found is None and ann.id not in (details.reporter_key,)

    # Somebody who is not staff, and forged data, are refused.
    assert await staff_tap(desk.stranger, "🚶 Going", card, desk.group) == (
        "Sorry, only staff can act on reports.",
        True,
    )
    query = await desk.alice.send_callback(card.message_id, "rs|going|999999", chat=desk.group)
    assert await desk.alice.callback_answer(query) == ("Sorry, this button is not valid any more.", True)
    query = await desk.alice.send_callback(card.message_id, f"rs|fly|{case.id}", chat=desk.group)
    assert await desk.alice.callback_answer(query) == ("Sorry, this button is not valid any more.", True)

    assert await staff_tap(desk.alice, "🚶 Going", card, desk.group) == (
        "Thank you. The card shows you are on the way.",
        False,
    )
    going = await desk.card_until(card, "🚶 On the way: Alice <outreach>")
    assert going.text.startswith(f"🟡 Being handled · {reference}")
    assert going.button_texts == ["👀 Found", "❌ Not found", "✅ Resolve", "📂 Details"]
    query = await desk.alice.send_callback(card.message_id, f"rs|going|{case.id}", chat=desk.group)
    assert await desk.alice.callback_answer(query) == (f"You are already on the way to {reference}.", False)

    assert await staff_tap(desk.alice, "📂 Details", card, desk.group) == (
        "I have sent you the details privately.",
        False,
    )
    private = await desk.alice.receive()
    assert private.text.startswith(f"📂 {reference}")
    assert f"🏷 Landmark: {LANDMARK}" in private.text and "☎️ Reporter: open a chat" in private.text
    assert any(e.get("url") == f"tg://user?id={ann.id}" for e in private.entities)
    pin = await desk.alice.receive(kind="location")
    assert (pin.latitude, pin.longitude) == pytest.approx(PIN)
    photo = await desk.alice.receive(kind="photo")
    assert "respect the person's dignity" in (photo.caption or "")

    assert await staff_tap(desk.alice, "👀 Found", card, desk.group) == (
        "Recorded: found. Tap Resolve when you are done.",
        False,
    )
    found = await desk.card_until(card, "👀 Found by Alice <outreach>")
    assert found.button_texts == ["❌ Not found", "✅ Resolve", "📂 Details"]
    query = await desk.alice.send_callback(card.message_id, f"rs|found|{case.id}", chat=desk.group)
    assert await desk.alice.callback_answer(query) == ("That is already recorded.", False)

    assert await staff_tap(desk.alice, "✅ Resolve", card, desk.group) == (
        "I have written to you privately: continue there.",
        False,
    )
    question = await desk.alice.receive()
    assert question.text == f"How did report {reference} end?"
    assert question.button_texts == [
        "Helped on the spot",
        "Taken to a station or shelter",
        "Refused help",
        "Emergency services called",
        "Already gone",
        "↩️ Keep it open",
    ]
    # The role is re-checked on the outcome button too.
    query = await desk.stranger.send_callback(card.message_id, f"rs|out|{case.id}|refused_help", chat=desk.group)
    assert await desk.stranger.callback_answer(query) == ("Sorry, only staff can act on reports.", True)
    await desk.alice.tap_inline("Taken to a station or shelter", message=question)
    closed = await desk.alice.wait_edit(question.message_id)
    assert closed.text == f"✅ Report {reference} is closed: taken to a station or shelter.\nThe reporter will be told."
    final = await desk.card_until(card, "✅ Outcome: taken to a station or shelter")
    assert final.text.startswith(f"✅ Resolved · {reference}") and final.button_texts == []

    told = await ann.receive()
    assert told.text == (
        f"Thank you for your report {reference}. The outreach team found the person and took them to a warm care "
        "station or shelter."
    )
    # A second tap on the (old) outcome button changes nothing.
    query = await desk.alice.send_callback(question.message_id, f"rs|out|{case.id}|already_gone")
    assert await desk.alice.callback_answer(query) == ("This report is already closed.", True)
    case, details = await desk.case(reference)
    assert (case.status, details.found, details.outcome) == ("resolved", True, "taken_to_shelter")
    assert await desk.actions(case.id) == ["submitted", "claimed", "found", "resolved"]
    async with desk.bot.services.db.session() as session:
        counts = await reports.found_counts(session)
    assert (counts.found, counts.not_found, counts.unknown) == (1, 0, 0)
    # Nothing the reporter wrote, and not where the person is, ever reaches the logs.
    for private in ("Huaihai", "grey coat", f"{PIN[0]}", f"{PIN[1]}", "Ann"):
        assert private not in caplog_all.text, private


async def test_landmark_only_anonymous_report_not_found(desk: Desk) -> None:
    bo = desk.fake.user("Bo")
    where = await until_where(bo)
    assert "✍️ Describe the place instead" in str(where.reply_markup)
    await bo.tap_reply_button("✍️ Describe the place instead")
    assert (await bo.receive()).text == "OK, no pin."
    landmark = await bo.receive()
    assert landmark.text.startswith("Describe the place in words")
    assert "⏭ Skip" not in landmark.button_texts  # without a pin the landmark is required
    await bo.send_text("Bus shelter opposite the Wujin library")
    assert (await bo.receive()).text.startswith("When did you see them?")
    review = await from_when(bo, contact=False, outcome=False, people="7", typed_time="around 21:30, near <the> kiosk")
    assert "📍 Pin: not shared" in review.text
    assert "🕒 Seen: around 21:30, near <the> kiosk" in review.text and "👥 7 people" in review.text
    assert "👤 You: anonymous: staff will not see who you are" in review.text
    assert "🔔 Outcome: you will not be told" in review.text
    reference = await send_report(bo, review)
    assert "We will tell you here how it ends." not in bo.messages[-1].text

    card = await desk.group.receive()
    assert "🙈 Anonymous reporter" in card.text and "In the details" not in card.text
    assert "📍 Area: Bus shelter opposite the Wujin library" not in card.text or "🏷 Landmark" in card.text
    case, details = await desk.case(reference)
    assert case.requester_id is None and case.lat is None
    assert (details.seen, details.seen_text, details.people) == ("typed", "around 21:30, near <the> kiosk", 7)

    assert await staff_tap(desk.alice, "❌ Not found", card, desk.group) == (
        "Recorded: not found. Tap Resolve to close the report, or go back later.",
        False,
    )
    not_found = await desk.card_until(card, "❌ Not found by Alice <outreach>")
    assert "🚶 On the way: Alice <outreach>" in not_found.text  # the finder holds the report: no more escalation
    assert not_found.button_texts == ["👀 Found", "✅ Resolve", "📂 Details"]
    await staff_tap(desk.alice, "📂 Details", card, desk.group)
    details_message = await desk.alice.receive()
    assert "🙈 Anonymous reporter" in details_message.text and "tg://user" not in str(details_message.entities)

    await staff_tap(desk.alice, "✅ Resolve", card, desk.group)
    question = await desk.alice.receive()
    await desk.alice.tap_inline("↩️ Keep it open", message=question)
    await desk.alice.wait_edit(question.message_id)
    assert question.button_texts == []
    await staff_tap(desk.alice, "✅ Resolve", card, desk.group)
    question = await desk.alice.receive()
    await desk.alice.tap_inline("Already gone", message=question)
    closed = await desk.alice.wait_edit(question.message_id)
    assert closed.text == f"✅ Report {reference} is closed: already gone."
    await desk.card_until(card, "✅ Outcome: already gone")
    case, details = await desk.case(reference)
    assert (details.found, details.outcome) == (False, "already_gone")
    async with desk.bot.services.db.session() as session:
        to_reporter = (await session.exec(select(OutboxItem).where(OutboxItem.chat_id == bo.id))).all()
        counts = await reports.found_counts(session)
    assert to_reporter == []  # anonymous: nothing is ever sent to the reporter
    assert (counts.found, counts.not_found) == (0, 1)


async def test_emergency_branches_show_numbers_first_and_mark_the_report_urgent(desk: Desk) -> None:
    cai = desk.fake.user("Cai")
    await cai.send_command("/report")
    await cai.receive()
    advice = await tap(cai, "🚨 Yes: hurt or unconscious")
    assert "☎️ 110 — Police" in advice.text and "☎️ 120 — Ambulance" in advice.text
    assert "it will be marked urgent" in advice.text
    where = await tap(cai, "Continue the report ▶", advice)
    assert where.text.startswith("Where is the person?")
    await cai.tap_reply_button("📍 Share the location", location=PIN)
    await cai.receive()
    await tap(cai, "⏭ Skip", await cai.receive())  # a pin is enough
    review = await from_when(cai, contact=False, outcome=True)
    assert "🚨 Emergency: yes — hurt or unconscious" in review.text
    reference = await send_report(cai, review)
    card = await desk.group.receive()
    assert "⚠️ Urgent: 🚨 hurt or unconscious" in card.text and "🏷 Landmark" not in card.text
    case, _details = await desk.case(reference)
    assert case.urgent and case.danger and not case.minor

    # A child: the child protection line too; Cancel from the advice drops everything.
    await cai.send_command("/report")
    await cai.receive()
    child = await tap(cai, "🧒 Yes: a child")
    assert "Child protection line: 12355" in child.text and "☎️ 110 — Police" in child.text
    cancelled = await tap(cai, "✖ Cancel", child)
    assert cancelled.text == "Your report was not sent, and what you typed was deleted."


# -- entries ----------------------------------------------------------------------------------------------------


async def test_broadcast_button_menu_label_and_deep_link_start_the_form(desk: Desk) -> None:
    dan = desk.fake.user("Dan")
    await dan.send_command("/start")
    hello = await dan.receive()
    query = await dan.send_callback(hello.message_id, "report|start")  # the button under a cold-weather broadcast
    assert await dan.callback_answer(query) == (None, False)
    assert "is this an emergency" in (await dan.receive()).text
    await dan.send_command("/cancel")
    assert (await dan.receive()).text.startswith("Your report was not sent")

    # Tapped in a group: Telegram opens the private chat through the deep link, which starts the form there.
    broadcast = desk.fake.world.new_message(desk.group.chat, "text", from_bot=True, sender_id=desk.fake.bot.id)
    broadcast.text = "Cold night ahead"
    broadcast.reply_markup = {"inline_keyboard": [[{"text": "👀", "callback_data": "report|start"}]]}
    desk.fake.world.add_message(desk.group.chat, broadcast)
    query = await dan.tap_inline("👀", message=broadcast, chat=desk.group)
    await dan.callback_answer(query)
    assert desk.fake.world.callbacks[query].url == "https://t.me/waystation_test_bot?start=report"
    await dan.send_command("/start", "report")
    assert "is this an emergency" in (await dan.receive()).text
    await dan.send_command("/cancel")
    await dan.receive()

    await dan.send_text("👀 Report someone in the cold")  # the main-menu button
    assert "is this an emergency" in (await dan.receive()).text


# -- the per-hour limit -------------------------------------------------------------------------------------------


@pytest.fixture
async def strict_desk(database_url: str, fake_telegram: FakeTelegram) -> AsyncIterator[Desk]:
    async for made in _desk(database_url, fake_telegram, max_per_hour=2):
        yield made


async def test_rate_limit_per_reporter_per_hour(strict_desk: Desk) -> None:
    desk = strict_desk
    now = datetime(2026, 1, 20, 13, 0, tzinfo=UTC)
    desk.bot.services.clock = lambda: now
    eve = desk.fake.user("Eve")
    await quick_report(eve)  # anonymous reports count too
    await quick_report(eve)
    await eve.send_command("/report")
    refused = await eve.receive()
    assert refused.text.startswith("You have sent 2 reports in the last hour, the most we can take for now.")
    assert "You can send another from 20 Jan 22:00." in refused.text  # 13:00 UTC is 21:00 in Shanghai; + 1 h
    assert "☎️ 110 — Police" in refused.text  # the emergency numbers are always there
    other = desk.fake.user("Fang")  # the limit is per person
    await other.send_command("/report")
    assert "is this an emergency" in (await other.receive()).text

    # On Send, too: a draft finished while the limit is reached is kept, and goes once the hour has passed.
    desk.bot.services.clock = lambda: now + timedelta(minutes=61)
    await until_where(eve)
    await eve.send_text("Under the Wujin overpass")
    await eve.receive_all(2)
    review = await from_when(eve, contact=True, outcome=False)
    desk.bot.services.clock = lambda: now + timedelta(minutes=62)
    await quick_report(desk.fake.user("Gao"))  # unrelated
    async with desk.bot.services.db.session() as session:  # two more from Eve in the meantime (another device)
        key = reports.reporter_key(desk.bot.settings.require_token(), eve.id)
        for n in range(2):
            await reports.create(
                session,
                Case(idempotency_key=f"other-device-{n}", description="x"),
                ReportDetails(reporter_key=key),
                now=now + timedelta(minutes=61),
            )
        await session.commit()
    await eve.tap_inline("📨 Send the report", message=review)
    limited = await eve.receive()
    assert limited.text.startswith("You have sent 2 reports in the last hour")
    assert (await eve.receive()).text == "Your report is kept: tap Send again later."
    desk.bot.services.clock = lambda: now + timedelta(minutes=122)
    reference = await send_report(eve, review)
    case, details = await desk.case(reference)
    assert case.place_text == "Under the Wujin overpass" and details.may_contact


# -- bad input, Back / Edit / Cancel, restarts ----------------------------------------------------------------------


async def test_bad_input_at_every_step_reprompts_and_keeps_answers(desk: Desk) -> None:
    gu = desk.fake.user("Gu")
    await gu.send_command("/report")
    triage = await gu.receive()
    await gu.send_sticker()
    assert (await gu.receive()).text == "Please use the buttons below."
    assert "is this an emergency" in (await gu.receive()).text
    query = await gu.send_callback(triage.message_id, "rp|people|3")  # forged: not this step's button
    assert await gu.callback_answer(query) == ("This button is no longer valid.", True)
    await tap(gu, "No, not an emergency")
    query = await gu.send_callback(triage.message_id, "rp|triage|no")  # a second tap on the old button
    assert await gu.callback_answer(query) == ("This button is no longer valid.", True)

    await gu.send_photo()  # the place step
    assert (await gu.receive()).text == "Please share the location pin, or write where the person is."
    assert (await gu.receive()).text.startswith("Where is the person?")
    await gu.send_text("b" * 10_000)
    too_long = await gu.receive()
    assert "That is 10000 characters; please shorten it to 300." in too_long.text
    await gu.tap_inline("✂️ Use the first 300 characters", message=too_long)
    assert (await gu.receive()).text == "🏷 Place saved."
    when = await gu.receive()
    assert when.text.startswith("When did you see them?")

    await gu.send_voice()
    assert (await gu.receive()).text == "Please tap a button, or type the time as text."
    await gu.receive()
    await gu.send_text("t" * 101)
    assert (await gu.receive()).text == "Please type just the time, in up to 100 characters, or tap a button."
    await gu.receive()
    assert "How many people?" in (await tap(gu, "Last night")).text
    for wrong in ("lots", "0", "100", "٣"):
        await gu.send_text(wrong)
        assert (await gu.receive()).text == "Please tap a number, or type one from 1 to 99 (for example 6)."
        await gu.receive()
    await gu.send_text("12")
    assert (await gu.receive()).text.startswith("Describe them briefly")
    await gu.send_sticker()
    assert "Please describe them as text" in (await gu.receive()).text
    await gu.receive()
    await gu.send_text("d" * 10_000)
    assert "That is 10000 characters; please shorten it to 500." in (await gu.receive()).text
    await gu.send_text("Two men sharing one sleeping bag")  # a shorter version instead
    photo = await gu.receive()
    assert "respect their dignity" in photo.text
    await gu.send_document(b"%PDF-1.4", "photo.pdf", "application/pdf")
    assert (await gu.receive()).text == "Please send one photo (not a file or a sticker), or tap Skip."
    await gu.receive()
    await gu.send_text("here")
    assert (await gu.receive()).text == "Please send one photo (not a file or a sticker), or tap Skip."
    await gu.receive()
    await tap(gu, "⏭ Skip")
    await gu.send_text("yes")  # a button step
    assert (await gu.receive()).text == "Please use the buttons below."
    await gu.receive()
    await tap(gu, "🙈 No, keep me anonymous")
    review = await tap(gu, "🔔 Yes, tell me")
    assert f"🏷 Landmark: {'b' * 300}\n" in review.text
    assert "🕒 Seen: Last night" in review.text and "👥 12 people" in review.text
    assert "📝 Two men sharing one sleeping bag" in review.text
    # Asked for the outcome but not to be contacted: reachable for the outcome, yet anonymous to staff.
    assert "👤 You: anonymous" in review.text and "🔔 Outcome: you will be told" in review.text

    # Edit the place from the review: add a pin, keep the landmark with Skip, and be back at the review.
    place = await tap(gu, "✏️ Place", review)
    assert place.text.startswith("Where is the person?")
    await gu.tap_reply_button("📍 Share the location", location=PIN)
    await gu.receive()
    landmark = await gu.receive()
    assert "Now: " + "b" * 300 in landmark.text
    again = await tap(gu, "⏭ Skip", landmark)
    assert "📍 Pin: shared" in again.text and "b" * 300 in again.text
    people = await tap(gu, "✏️ People", again)
    assert "How many people?" in people.text
    edited = await tap(gu, "3", people)
    assert "👥 3 people" in edited.text
    photo_step = await tap(gu, "✏️ Photo", edited)
    await gu.send_photo()
    assert (await gu.receive()).text == "📷 Photo saved."
    with_photo = await gu.receive()
    assert "📷 Photo: attached" in with_photo.text
    photo_step = await tap(gu, "✏️ Photo", with_photo)  # thought better of it: the photo can be taken back
    assert photo_step.button_texts[:2] == ["Done ▶", "🗑 Remove the photo"]
    removed = await tap(gu, "🗑 Remove the photo", photo_step)
    assert removed.button_texts[0] == "⏭ Skip"
    final = await tap(gu, "⏭ Skip", removed)
    assert "📷 Photo: none" in final.text
    reference = await send_report(gu, final)
    case, details = await desk.case(reference)
    assert case.requester_id == gu.id and not details.may_contact and details.wants_outcome
    card = await desk.group.receive()
    assert "🙈 Anonymous reporter" in card.text
    await staff_tap(desk.alice, "📂 Details", card, desk.group)
    assert "tg://user" not in str((await desk.alice.receive()).entities)


async def test_back_and_cancel(desk: Desk) -> None:
    hu = desk.fake.user("Hu")
    await until_where(hu)
    await hu.send_text("Behind the Hutang market")
    await hu.receive_all(2)
    back = await tap(hu, "◀ Back")  # from "when" to the landmark, which is kept
    assert back.text.startswith("Describe the place in words") and "Now: Behind the Hutang market" in back.text
    await hu.send_text("◀ Back")  # typed, at a text step
    where = await hu.receive()
    assert where.text.startswith("Where is the person?")
    await hu.tap_reply_button("◀ Back")
    assert (await hu.receive()).text == "↩"
    assert "is this an emergency" in (await hu.receive()).text
    await tap(hu, "No, not an emergency")
    await hu.tap_reply_button("✖ Cancel")
    assert (await hu.receive()).text == "Your report was not sent, and what you typed was deleted."
    async with desk.bot.services.db.session() as session:
        assert await cases.for_requester(session, hu.id) == []


async def test_restart_mid_form_resumes_the_same_step(desk: Desk) -> None:
    jin = desk.fake.user("Jin")
    await until_where(jin)
    await jin.send_text("Gate 3 of the railway station")
    await jin.receive_all(2)
    await tap(jin, "Right now")
    await tap(jin, "1")
    await desk.bot.restart()
    await jin.send_text("Woman with a red suitcase, sitting on the steps")  # the same step, after the restart
    assert "respect their dignity" in (await jin.receive()).text
    await desk.bot.restart()
    await jin.send_command("/report")  # coming back later with /report: the unfinished report continues
    assert (await jin.receive()).text.startswith("You have an unfinished report")
    assert "respect their dignity" in (await jin.receive()).text
    await tap(jin, "⏭ Skip")
    await tap(jin, "✅ Yes, you may contact me")
    review = await tap(jin, "No, thanks")
    assert "Gate 3 of the railway station" in review.text and "red suitcase" in review.text
    reference = await send_report(jin, review)
    assert reference in (await desk.group.receive()).text
