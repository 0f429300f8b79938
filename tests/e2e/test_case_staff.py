"""Journey 4 end to end: staff act on a case card in the staff group — Claim (and the claim race), Need info relayed
both ways, Refer, Resolve (money with an amount, a plain reason), Details by private message — and every refusal:
non-staff, forged data, closed cases, staff removed after the card was drawn."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from telegram.ext import CommandHandler, ConversationHandler

from bot.application import WaystationApplication
from bot.sandbox.fake_telegram import TINY_JPEG, BotMessage, FakeGroup, FakeTelegram, FakeUser
from handlers import case_staff
from handlers.case_alerts import enqueue_cards
from models import cases, staff
from models.cases import Case
from models.staff import Role
from tests.conftest import make_settings
from tests.harness import BotHarness

BLOCKED = "Forbidden: bot was blocked by the user"


def wire(app: WaystationApplication) -> None:
    """Register the case handlers as bot/application.py will: before the stateless /cancel answer.

    Does nothing once bot/application.py registers them itself."""
    if any(isinstance(h, ConversationHandler) and h.name == "case_staff" for h in app.handlers[0]):
        return
    mine = case_staff.handlers()
    app.add_handlers(mine)
    group = app.handlers[0]
    for handler in mine:
        group.remove(handler)
    at = next(i for i, h in enumerate(group) if isinstance(h, CommandHandler) and "cancel" in h.commands)
    group[at:at] = mine


@dataclass
class Desk:
    """The bot, the staff group and the people around it."""

    bot: BotHarness
    fake: FakeTelegram
    group: FakeGroup
    alice: FakeUser  # responder
    bob: FakeUser  # coordinator
    stranger: FakeUser  # in the group, not staff

    async def restart(self) -> None:
        await self.bot.restart()

    async def new_case(self, requester: FakeUser | None = None, **fields: Any) -> tuple[Case, BotMessage]:
        """A case made through the domain, its card posted through the outbox; returns (case, card)."""
        svc = self.bot.services
        values: dict[str, Any] = {
            "categories": ["food", "bed"],
            "description": "Lost my wallet <and> my phone & it is cold",
            "language": "zh_Hans" if requester is not None and requester.language_code == "zh" else "en",
            **fields,
        }
        async with svc.db.session() as session:
            case, created = await cases.create(
                session,
                Case(requester_id=requester.id if requester else None, idempotency_key=uuid.uuid4().hex, **values),
            )
            assert created
            await enqueue_cards(session, svc, case, new=True)
            await session.commit()
        svc.wake_outbox()
        card = await self.group.receive()
        assert f"· {case.reference}" in card.text
        return case, card

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

    async def card_until(self, card: BotMessage, check: Callable[[BotMessage], bool]) -> BotMessage:
        """The card once an edit makes `check` true (the outbox may already have edited it, or not yet)."""
        return await self.group.wait_until(lambda _messages: card if check(card) else None)


@pytest.fixture
async def desk(database_url: str, fake_telegram: FakeTelegram) -> AsyncIterator[Desk]:
    alice = fake_telegram.user("Alice")
    bob = fake_telegram.user("Bob")
    stranger = fake_telegram.user("Stranger")
    group = fake_telegram.group("Staff", members=[alice, bob, stranger])
    settings = make_settings(
        fake_telegram,
        database_url,
        sections={"staff": {"alert_chat_ids": [group.id]}},
        group_max_per_minute=100_000,  # the claim race posts and edits ~100 cards
        overall_max_rate=1000,
    )
    harness = BotHarness(settings, fake_telegram, configure=wire)
    await harness.start()
    async with harness.services.db.session() as session:
        await staff.add(session, alice.id, "Alice", Role.RESPONDER)
        await staff.add(session, bob.id, "Bob <Wujin team>", Role.COORDINATOR)
    try:
        yield Desk(harness, fake_telegram, group, alice, bob, stranger)
    finally:
        await harness.stop()
    harness.assert_clean()


async def tap(user: FakeUser, label: str, card: BotMessage, group: FakeGroup) -> tuple[str | None, bool]:
    return await user.callback_answer(await user.tap_inline(label, message=card, chat=group))


async def test_card_appears_and_claim_edits_it_and_tells_requester_in_their_language(desk: Desk) -> None:
    li = desk.fake.user("李", language_code="zh")
    case, card = await desk.new_case(li)
    assert card.text.startswith(f"🆕 New · {case.reference}")
    assert "📝 Lost my wallet <and> my phone & it is cold" in card.text
    assert card.button_texts == ["✋ Claim", "❓ Need info", "↪️ Refer", "✅ Resolve", "📂 Details"]

    assert await tap(desk.alice, "✋ Claim", card, desk.group) == (f"You claimed {case.reference}.", False)
    claimed = await desk.card_until(card, lambda m: "Being handled" in m.text)
    assert claimed.text.startswith(f"🟡 Being handled · {case.reference}")
    assert "✋ Claimed by Alice at " in claimed.text
    assert "✋ Claim" not in claimed.button_texts and "✅ Resolve" in claimed.button_texts

    note = await li.receive()
    assert note.text == f"您的求助 {case.reference} 已由 Alice 接手，他们会在这里联系您。"
    stored = await desk.case(case.id)
    assert (stored.status, stored.claimed_by, stored.claimed_by_name) == ("claimed", desk.alice.id, "Alice")
    assert await desk.actions(case.id) == ["submitted", "claimed"]

    # Bob is too late; Alice tapping again is told she has it already. Nothing changes.
    query = await desk.bob.send_callback(card.message_id, f"cs|claim|{case.id}", chat=desk.group)
    assert await desk.bob.callback_answer(query) == ("Already claimed by Alice.", True)
    query = await desk.alice.send_callback(card.message_id, f"cs|claim|{case.id}", chat=desk.group)
    assert await desk.alice.callback_answer(query) == (f"You have already claimed {case.reference}.", False)
    assert await desk.actions(case.id) == ["submitted", "claimed"]


async def test_claim_race_has_exactly_one_winner(desk: Desk) -> None:
    made = [await desk.new_case() for _ in range(50)]
    for i, (case, card) in enumerate(made):
        first, second = (desk.alice, desk.bob) if i % 2 else (desk.bob, desk.alice)
        queries = await asyncio.gather(
            first.tap_inline("✋ Claim", message=card, chat=desk.group),
            second.tap_inline("✋ Claim", message=card, chat=desk.group),
        )
        answers = [await user.callback_answer(q) for user, q in zip((first, second), queries, strict=True)]
        won = [a for a in answers if a == (f"You claimed {case.reference}.", False)]
        lost = [a for a in answers if a[1] and a[0] is not None and a[0].startswith("Already claimed by ")]
        assert len(won) == 1 and len(lost) == 1, answers
        stored = await desk.case(case.id)
        winner = first if answers[0] == won[0] else second
        assert stored.claimed_by == winner.id
        assert (await desk.actions(case.id)).count("claimed") == 1
    _last_case, last_card = made[-1]
    await desk.card_until(last_card, lambda m: "Being handled" in m.text)


async def test_claim_is_atomic_in_the_database(desk: Desk) -> None:
    """Two transactions claiming at the same moment (no Telegram in between): exactly one wins, 50 times."""
    db = desk.bot.services.db
    for _ in range(50):
        async with db.session() as session:
            case, _created = await cases.create(session, Case(idempotency_key=uuid.uuid4().hex, categories=["food"]))
            await session.commit()
        assert case.id is not None
        case_id = case.id

        async def claim(staff_id: int, name: str, case_id: int = case_id) -> bool:
            async with db.session() as session:
                won = await cases.claim(session, case_id, staff_id, name)
                await session.commit()
                return won

        results = await asyncio.gather(claim(1, "One"), claim(2, "Two"))
        assert sorted(results) == [False, True]
        assert (await desk.actions(case_id)).count("claimed") == 1


async def test_need_info_is_relayed_both_ways(desk: Desk) -> None:
    ann = desk.fake.user("Ann")
    case, card = await desk.new_case(ann)
    await tap(desk.alice, "✋ Claim", card, desk.group)
    await desk.card_until(card, lambda m: "Being handled" in m.text)
    await ann.receive()  # "picked up by Alice"

    assert await tap(desk.alice, "❓ Need info", card, desk.group) == (
        "I have written to you privately: continue there.",
        False,
    )
    prompt = await desk.alice.receive()
    assert f"Type your question for the requester of {case.reference}" in prompt.text
    await desk.alice.send_text("chatting with colleagues", chat=desk.group)  # not the question: it is in the group
    await desk.alice.send_sticker()
    assert "Please type your question as text" in (await desk.alice.receive()).text
    await desk.alice.send_text("x" * 1001)
    assert (await desk.alice.receive()).text == "That is 1001 characters; please shorten it to 1000."
    await desk.alice.send_text("Where exactly are you? <near the bridge?> & since when")
    done = await desk.alice.receive()
    assert done.text.startswith(f"✅ Your question was sent to the requester of {case.reference}")

    waiting = await desk.card_until(card, lambda m: "Waiting for more information" in m.text)
    assert "💬 Last note: Where exactly are you? <near the bridge?> & since when" in waiting.text
    question = await ann.receive()
    assert question.text == (
        f"Staff need more information about {case.reference}: Where exactly are you? <near the bridge?> & since when"
    )
    assert question.button_texts == ["✍️ Answer"]

    # The requester answers: bad input first, then /cancel, then the answer.
    await ann.tap_inline("✍️ Answer", message=question)
    assert f"Type your answer or what you want to add to {case.reference}" in (await ann.receive()).text
    await ann.send_sticker()
    assert (await ann.receive()).text == "Please type your answer as text, or send /cancel."
    await ann.send_text("y" * 1500)
    assert (await ann.receive()).text == "That is 1500 characters; please shorten it to 1000."
    await ann.send_command("/cancel")
    assert (await ann.receive()).text == "Cancelled. What would you like to do?"
    assert await desk.actions(case.id) == ["submitted", "claimed", "need_info"]

    await ann.tap_inline("✍️ Answer", message=question)
    await ann.receive()
    await ann.send_text("Under the Hutang bridge, north side <by the 3rd pillar>")
    assert (await ann.receive()).text == f"✅ Thank you. Your answer was added to {case.reference}."

    answered = await desk.card_until(card, lambda m: "Hutang bridge" in m.text)
    assert answered.text.startswith(f"🟡 Being handled · {case.reference}")
    assert "💬 Last note: Under the Hutang bridge, north side <by the 3rd pillar>" in answered.text
    relayed = await desk.alice.receive()
    assert relayed.text == (
        f"{case.reference}: the requester answered: Under the Hutang bridge, north side <by the 3rd pillar>"
    )
    assert await desk.actions(case.id) == ["submitted", "claimed", "need_info", "info_added"]


async def test_forged_answer_button_and_stale_reason_buttons(desk: Desk) -> None:
    ann = desk.fake.user("Ann")
    case, _card = await desk.new_case(ann)
    await desk.stranger.send_command("/help")
    help_message = await desk.stranger.receive()
    for data, expected in (
        (f"ca|{case.id}", "This request is not available."),
        ("ca|nope", "This request is not available."),
        (f"cr|{case.id}|help_food", "This step has expired. Tap the button on the case card again."),
        (f"cr|{case.id}|skip", "This step has expired. Tap the button on the case card again."),
    ):
        query = await desk.stranger.send_callback(help_message.message_id, data)
        assert await desk.stranger.callback_answer(query) == (expected, True), data
    stored = await desk.case(case.id)
    assert stored.status == "new" and await desk.actions(case.id) == ["submitted"]


async def test_refer(desk: Desk) -> None:
    ann = desk.fake.user("Ann")
    case, card = await desk.new_case(ann)
    await tap(desk.bob, "↪️ Refer", card, desk.group)
    assert f"Refer {case.reference} to whom, and why?" in (await desk.bob.receive()).text
    await desk.bob.send_photo()
    assert "Please type who you refer to and why" in (await desk.bob.receive()).text
    await desk.bob.send_text("Wujin outreach team: they run the night shelter")
    assert (await desk.bob.receive()).text == f"↪️ {case.reference} is referred; the requester was told."

    referred = await desk.card_until(card, lambda m: "Referred" in m.text)
    assert referred.text.startswith(f"↪️ Referred · {case.reference}")
    assert "💬 Last note: Wujin outreach team: they run the night shelter" in referred.text
    assert "✋ Claim" in referred.button_texts  # the receiving team claims it again
    assert (await ann.receive()).text == (
        f"Your request {case.reference} was passed on: Wujin outreach team: they run the night shelter"
    )
    stored = await desk.case(case.id)
    assert stored.status == "referred" and await desk.actions(case.id) == ["submitted", "referred"]


async def test_resolve_with_money_and_amount(desk: Desk) -> None:
    li = desk.fake.user("李", language_code="zh")
    case, card = await desk.new_case(li, categories=["money"])
    await tap(desk.alice, "✋ Claim", card, desk.group)
    await li.receive()
    await tap(desk.alice, "✅ Resolve", card, desk.group)
    reasons = await desk.alice.receive()
    assert f"How did {case.reference} end?" in reasons.text
    assert reasons.button_texts[:2] == ["Food given", "Lodging arranged"]
    assert "Emergency money paid" in reasons.button_texts and "✖ Cancel" in reasons.button_texts

    await desk.alice.send_text("done")
    assert "Please choose a closing reason with the buttons above" in (await desk.alice.receive()).text
    await desk.alice.tap_inline("Emergency money paid", message=reasons)
    chosen = await desk.alice.wait_edit(reasons.message_id)
    assert chosen.text == f"{case.reference} · closing reason: emergency money paid" and not chosen.button_texts
    given = await desk.alice.receive()  # what was given: the closing reason's kind is ticked already
    assert f"What was given for {case.reference}?" in given.text and "✔️ Emergency money paid" in given.button_texts
    await desk.alice.tap_inline("✅ Done", message=given)
    assert (await desk.alice.wait_edit(given.message_id)).text == (
        f"{case.reference} · given: Emergency money paid · items: —"
    )
    assert "How much was paid?" in (await desk.alice.receive()).text
    for bad in ("lots", "-5", "0", "12345678"):
        await desk.alice.send_text(bad)
        assert "Please type the amount as a number" in (await desk.alice.receive()).text, bad
    await desk.alice.send_text("¥ 200")
    assert "Add a closing note for the requester" in (await desk.alice.receive()).text
    await desk.alice.send_text("Paid at the station desk <cash>")
    done = await desk.alice.receive()
    assert done.text == (
        f"✅ {case.reference} is resolved: emergency money paid. The requester was told.\n💴 Amount: 200"
    )

    resolved = await desk.card_until(card, lambda m: "Resolved" in m.text)
    assert resolved.text.startswith(f"✅ Resolved · {case.reference}")
    assert "✅ Closed: emergency money paid" in resolved.text and not resolved.button_texts
    told = await li.receive()
    assert (
        told.text
        == f"您的求助 {case.reference} 已解决：{_zh('emergency money paid')}。\n💬 Paid at the station desk <cash>"
    )
    stored = await desk.case(case.id)
    assert (stored.status, stored.closing_reason, stored.aid_amount, stored.closing_note) == (
        "resolved",
        "help_money",
        200.0,
        "Paid at the station desk <cash>",
    )

    # The old card buttons now say the case is closed, and change nothing.
    for data in (f"cs|claim|{case.id}", f"cs|resolve|{case.id}", f"cs|info|{case.id}"):
        query = await desk.bob.send_callback(card.message_id, data, chat=desk.group)
        assert await desk.bob.callback_answer(query) == ("This case is already closed.", True), data
    assert await desk.actions(case.id) == ["submitted", "claimed", "resolved"]


def _zh(msgid: str) -> str:
    from bot.i18n import translator

    return translator("zh_Hans").gettext(msgid)


async def test_resolve_with_plain_reason_and_skipped_note(desk: Desk) -> None:
    ann = desk.fake.user("Ann")
    case, card = await desk.new_case(ann)
    await tap(desk.bob, "✅ Resolve", card, desk.group)
    reasons = await desk.bob.receive()
    await desk.bob.tap_inline("No help wanted", message=reasons)
    note_prompt = await desk.bob.receive()
    assert "Add a closing note for the requester" in note_prompt.text
    await desk.bob.send_voice()
    assert (await desk.bob.receive()).text == "Please type the note as text, or tap Skip."
    await desk.bob.tap_inline("⏭ Skip", message=note_prompt)
    assert (
        await desk.bob.receive()
    ).text == f"✅ {case.reference} is resolved: no help wanted. The requester was told."
    assert (await ann.receive()).text == f"Your request {case.reference} is resolved: no help wanted."
    resolved = await desk.card_until(card, lambda m: "Resolved" in m.text)
    assert "✅ Closed: no help wanted" in resolved.text
    stored = await desk.case(case.id)
    assert (stored.closing_reason, stored.closing_note, stored.aid_amount) == ("no_help_wanted", None, None)

    # A Skip tapped again after the step ended changes nothing.
    assert not note_prompt.button_texts
    query = await desk.bob.send_callback(note_prompt.message_id, f"cr|{case.id}|skip")
    assert await desk.bob.callback_answer(query) == (
        "This step has expired. Tap the button on the case card again.",
        True,
    )
    assert await desk.actions(case.id) == ["submitted", "resolved"]


async def test_resolve_can_be_cancelled(desk: Desk) -> None:
    case, card = await desk.new_case(desk.fake.user("Ann"))
    await tap(desk.alice, "✅ Resolve", card, desk.group)
    reasons = await desk.alice.receive()
    await desk.alice.tap_inline("✖ Cancel", message=reasons)
    assert (await desk.alice.receive()).text == "Cancelled. What would you like to do?"
    await tap(desk.alice, "↪️ Refer", card, desk.group)
    await desk.alice.receive()
    await desk.alice.send_command("/cancel")
    assert (await desk.alice.receive()).text == "Cancelled. What would you like to do?"
    assert (await desk.case(case.id)).status == "new" and await desk.actions(case.id) == ["submitted"]


async def test_details_by_private_message_with_location_and_documents(desk: Desk) -> None:
    files = desk.fake.world.files
    photo = files.add(TINY_JPEG, "photo", extension=".jpg", width=2, height=2)
    document = files.add(b"%PDF-1.4 permit", "document", file_name="permit.pdf", mime_type="application/pdf")
    ann = desk.fake.user("Ann")
    case, card = await desk.new_case(
        ann,
        lat=31.716,
        lon=119.959,
        place_text="Hutang bridge <north>",
        phone="+8613800138000",
        documents=[photo.file_id, document.file_id],
    )
    assert "📎 2 documents" in card.text and "+8613800138000" not in card.text  # the card stays minimal
    assert await tap(desk.alice, "📂 Details", card, desk.group) == ("I have sent you the details privately.", False)
    details = await desk.alice.receive()
    assert details.text.startswith(f"📂 {case.reference} · 🆕 New")
    for part in (
        "📝 Lost my wallet <and> my phone & it is cold",
        "📍 Place: Hutang bridge <north>",
        "🗺 Location: 31.71600, 119.95900 (pin below)",
        "📞 Phone: +8613800138000",
        "💬 Telegram: open a chat",
        "📎 2 documents (below)",
    ):
        assert part in details.text, part
    pin = await desk.alice.receive(kind="location")
    assert (pin.latitude, pin.longitude) == pytest.approx((31.716, 119.959))
    sent = [await desk.alice.receive(), await desk.alice.receive()]
    assert [m.file_id for m in sent] == [photo.file_id, document.file_id]
    assert sent[1].caption == f"{case.reference} · document 2 of 2"
    assert (await desk.case(case.id)).status == "new"  # looking is not acting


async def test_staff_who_never_opened_the_bot_is_told_to(desk: Desk) -> None:
    case, card = await desk.new_case(desk.fake.user("Ann"))
    desk.bot.expected_rejections.add(BLOCKED)
    desk.fake.block(desk.alice)
    expected = (
        "Please open a private chat with @waystation_test_bot and press Start first, then tap the button again.",
        True,
    )
    assert await tap(desk.alice, "📂 Details", card, desk.group) == expected
    assert await tap(desk.alice, "❓ Need info", card, desk.group) == expected
    desk.fake.unblock(desk.alice)
    await desk.alice.send_text("hello")  # not taken as a question: the step never started
    assert "Sorry, I did not understand that" in (await desk.alice.receive()).text
    assert await desk.actions(case.id) == ["submitted"]


async def test_non_staff_and_forged_callbacks_are_refused(desk: Desk) -> None:
    case, card = await desk.new_case(desk.fake.user("Ann"))
    other, _other_card = await desk.new_case(desk.fake.user("Ben"))
    not_staff = ("Sorry, only staff can act on cases.", True)
    for label in ("✋ Claim", "❓ Need info", "↪️ Refer", "✅ Resolve", "📂 Details"):
        assert await tap(desk.stranger, label, card, desk.group) == not_staff, label
    for data in (f"cs|claim|{other.id}", f"cs|resolve|{other.id}", "cs|claim|abc", f"cs|drop|{case.id}"):
        query = await desk.stranger.send_callback(card.message_id, data, chat=desk.group)
        assert await desk.stranger.callback_answer(query) == not_staff, data
    not_valid = ("Sorry, this button is not valid any more.", True)
    for data in (
        f"cs|drop|{case.id}",
        "cs|claim|abc",
        "cs|claim|999999",
        "cs|info|999999",
        f"cs|claim|{case.id}|x",
        f"cs|claim|-{case.id}",
        "cs|claim|",
        "cs|",
    ):
        query = await desk.alice.send_callback(card.message_id, data, chat=desk.group)
        assert await desk.alice.callback_answer(query) == not_valid, data
    for found in (case, other):
        stored = await desk.case(found.id)
        assert stored.status == "new" and stored.claimed_by is None
        assert await desk.actions(found.id) == ["submitted"]
    assert card.edits == 0
    assert not desk.stranger.messages  # nothing was sent to the stranger privately


async def test_staff_removed_after_the_card_was_drawn_is_refused(desk: Desk) -> None:
    ann = desk.fake.user("Ann")
    case, card = await desk.new_case(ann)
    # Bob starts a step, then loses his role before typing: the typed step is refused too.
    await tap(desk.bob, "❓ Need info", card, desk.group)
    await desk.bob.receive()
    async with desk.bot.services.db.session() as session:
        await staff.remove(session, desk.alice.id)
        await staff.add(session, desk.bob.id, "Bob", Role.KEEPER)  # keepers do not act on cases
    assert await tap(desk.alice, "✋ Claim", card, desk.group) == ("Sorry, only staff can act on cases.", True)
    await desk.bob.send_text("Are you safe?")
    assert (await desk.bob.receive()).text == "Sorry, only staff can act on cases."
    stored = await desk.case(case.id)
    assert stored.status == "new" and await desk.actions(case.id) == ["submitted"]
    assert card.edits == 0 and not ann.messages


async def test_a_step_survives_a_restart(desk: Desk) -> None:
    ann = desk.fake.user("Ann")
    case, card = await desk.new_case(ann)
    await tap(desk.alice, "❓ Need info", card, desk.group)
    await desk.alice.receive()
    await desk.restart()
    await desk.alice.send_text("Do you need a bed tonight?")
    assert "Your question was sent" in (await desk.alice.receive()).text
    question = await ann.receive()
    await desk.restart()
    await ann.tap_inline("✍️ Answer", message=question)
    await ann.receive()
    await desk.restart()
    await ann.send_text("Yes please")
    assert "Your answer was added" in (await ann.receive()).text
    assert "💬 Last note: Yes please" in (await desk.card_until(card, lambda m: "Yes please" in m.text)).text
    assert await desk.actions(case.id) == ["submitted", "need_info", "info_added"]
    # Nobody claimed it: the staff member who asked hears the answer.
    assert (await desk.alice.receive()).text == f"{case.reference}: the requester answered: Yes please"
