"""Journey 2 end to end: the help-request form, its triage branches, bad input at every step, Back/Edit/Cancel,
restarts, double Submit, document reuse, the staff alert card, and /status."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import pytest

from bot.sandbox.fake_telegram import BotMessage, FakeGroup, FakeTelegram, FakeUser
from models import cases
from tests.conftest import make_settings
from tests.harness import BotHarness


@pytest.fixture
def staff_group(fake_telegram: FakeTelegram) -> FakeGroup:
    return fake_telegram.group("Hutang care station staff")


@pytest.fixture
async def bot_with_staff(
    database_url: str, fake_telegram: FakeTelegram, staff_group: FakeGroup
) -> AsyncIterator[BotHarness]:
    settings = make_settings(
        fake_telegram,
        database_url,
        sections={"staff": {"alert_chat_ids": [staff_group.id]}, "help": {"hotline": "0519-12345"}},
    )
    harness = BotHarness(settings, fake_telegram)
    await harness.start()
    try:
        yield harness
    finally:
        await harness.stop()
    harness.assert_clean()


async def tap(user: FakeUser, label: str) -> BotMessage:
    """Tap an inline button on the newest message that has it, and return the bot's next message."""
    await user.tap_inline(label)
    return await user.receive()


async def fill_until_review(user: FakeUser, *, text: str = "I lost my wallet and have nowhere to sleep") -> BotMessage:
    await user.send_command("/request")
    assert "is anyone in danger" in (await user.receive()).text
    assert (await tap(user, "No")).text == "Are you under 18?"
    kinds = await tap(user, "No")
    assert "What help do you need?" in kinds.text
    await user.tap_inline("🍲 Food", message=kinds)
    await user.wait_edit(kinds.message_id)
    await user.tap_inline("🛏️ A bed tonight", message=kinds)
    await user.wait_edit(kinds.message_id)
    assert "In a few words" in (await tap(user, "Next ▶")).text
    await user.send_text(text)
    assert "Where are you?" in (await user.receive()).text
    await user.tap_reply_button("📍 Share my location", location=(31.7160, 119.9590))
    assert (await user.receive()).text == "📍 Location saved."
    assert "How can staff reach you?" in (await user.receive()).text
    await user.tap_reply_button("📱 Share my phone number")
    assert (await user.receive()).text == "📞 Contact saved."
    assert "Optional: photos or files" in (await user.receive()).text
    consent = await tap(user, "⏭ Skip")
    assert "Before you send" in consent.text
    review = await tap(user, "✅ I agree")
    assert "Please check your request" in review.text
    return review


async def test_whole_form_creates_one_case_and_alerts_staff(
    bot_with_staff: BotHarness, fake_telegram: FakeTelegram, staff_group: FakeGroup
) -> None:
    ann = fake_telegram.user('Ann <b>"Li"</b>', phone_number="+8613800138000")
    review = await fill_until_review(ann, text="Lost <wallet> & cold")
    assert "🙋 Help needed: 🍲 Food, 🛏️ A bed tonight" in review.text
    assert "📝 Your words: Lost <wallet> & cold" in review.text
    assert "📍 Where: location shared" in review.text
    submit_data = next(b["callback_data"] for row in review.inline_keyboard for b in row if b["text"] == "📨 Submit")
    done = await tap(ann, "📨 Submit")
    match = re.search(r"Reference: (WS-\d{4}-\d{6})", done.text)
    assert match, done.text
    reference = match.group(1)

    card = await staff_group.receive()
    assert card.text.startswith(f"🆕 New · {reference}")
    assert "🙋 Needs: 🍲 Food, 🛏️ A bed tonight" in card.text
    assert "📝 Lost <wallet> & cold" in card.text
    assert "📞 Contact: Telegram and phone" in card.text
    assert {"✋ Claim", "❓ Need info", "↪️ Refer", "✅ Resolve", "📂 Details"} <= set(card.button_texts)
    assert "13800138000" not in card.text  # personal details go to staff privately, not to the group

    # A second tap on Submit (the old review message) creates nothing new.
    query = await ann.send_callback(review.message_id, submit_data)
    text, _alert = await ann.callback_answer(query)
    assert text == f"Already sent as {reference}."
    async with bot_with_staff.services.db.session() as session:
        mine = await cases.for_requester(session, ann.id)
    assert [c.reference for c in mine] == [reference]
    assert mine[0].phone == "+8613800138000" and mine[0].lat == pytest.approx(31.7160)

    await ann.send_command("/status")
    listing = await ann.receive()
    assert f"{reference} · 🆕 New" in listing.button_texts
    timeline = await tap(ann, f"{reference} · 🆕 New")
    assert "Request received" in timeline.text and "🗑 Cancel my request" in timeline.button_texts


async def test_danger_and_minor_branches(
    bot_with_staff: BotHarness, fake_telegram: FakeTelegram, staff_group: FakeGroup
) -> None:
    kid = fake_telegram.user("Xiao", language_code="zh")
    await kid.send_command("/request")
    await kid.receive()
    numbers = await tap(kid, "🚨 是的，有人有危险")
    assert "☎️ 110 — 报警" in numbers.text and "☎️ 120 — 急救" in numbers.text
    assert "24 小时求助热线：0519-12345" in numbers.text
    assert (await tap(kid, "继续 ▶")).text == "您未满 18 岁吗？"
    await kid.tap_inline("是")
    assert "12355" in (await kid.receive()).text
    assert "您需要什么帮助" in (await kid.receive()).text
    await kid.tap_inline("🍲 食物")
    await kid.wait_edit(kid.messages[-1].message_id)
    await tap(kid, "下一步 ▶")
    await kid.send_text("我找不到家了")
    await kid.receive()
    await kid.tap_reply_button("⏭ 跳过")
    assert (await kid.receive()).text == "好的，不填写地点。"
    await kid.receive()
    await kid.tap_reply_button("💬 通过 Telegram 联系即可")
    await kid.receive()
    await kid.receive()
    await tap(kid, "⏭ 跳过")
    await tap(kid, "✅ 我同意")
    await tap(kid, "📨 提交")
    card = await staff_group.receive()
    assert "⚠️ Urgent: 🚨 someone in danger, 🧒 under 18" in card.text
    assert "📍 Area: not given" in card.text


async def test_bad_input_at_every_step_reprompts_and_keeps_answers(
    bot_with_staff: BotHarness, fake_telegram: FakeTelegram
) -> None:
    bob = fake_telegram.user("Bob")
    await bob.send_command("/request")
    await bob.receive()
    await bob.send_sticker()  # a button step
    assert "Please use the buttons below." in (await bob.receive()).text
    assert "is anyone in danger" in (await bob.receive()).text
    await tap(bob, "No")
    kinds = await tap(bob, "No")
    await bob.send_text("food please")
    assert "Please use the buttons below." in (await bob.receive()).text
    await bob.receive()
    query = await bob.tap_inline("Next ▶")  # nothing chosen yet
    assert await bob.callback_answer(query) == ("Please choose at least one kind of help.", True)
    await bob.tap_inline("🧤 Warm clothes or supplies")
    await bob.wait_until(lambda ms: any("✅ 🧤" in b for m in ms for b in m.button_texts))
    del kinds
    assert "In a few words" in (await tap(bob, "Next ▶")).text
    await bob.send_voice()
    assert "Voice messages, stickers and photos" in (await bob.receive()).text
    await bob.receive()
    await bob.send_text("y" * 1200)
    long_reply = await bob.receive()
    assert "That is 1200 characters" in long_reply.text
    await bob.tap_inline("✂️ Use the first 1000 characters", message=long_reply)
    assert "Where are you?" in (await bob.receive()).text
    await bob.send_photo()
    assert "Please share your location, type the place" in (await bob.receive()).text
    await bob.receive()
    await bob.send_text("Under the Huaihai bridge, east side")
    await bob.receive()
    await bob.receive()
    await bob.send_contact("+8613900000000", user_id=424242)  # someone else's contact
    assert "your own number" in (await bob.receive()).text
    await bob.send_text("call me maybe")
    assert "does not look like a phone number" in (await bob.receive()).text
    await bob.send_text("139 0000 0000")
    await bob.receive()
    docs = await bob.receive()
    await bob.send_text("here are my papers")
    assert "Please send photos or files" in (await bob.receive()).text
    await bob.receive()
    await bob.send_photo()
    assert "Received: 1 of 5." in (await bob.receive()).text
    await tap(bob, "Done ▶")
    review = await tap(bob, "✅ I agree")
    assert "📝 Your words: " + "y" * 1000 + "\n" in review.text
    assert "📍 Where: Under the Huaihai bridge, east side" in review.text
    assert "📞 Contact: 139 0000 0000" in review.text
    assert "📎 1 document" in review.text
    del docs


async def test_back_edit_and_cancel(bot_with_staff: BotHarness, fake_telegram: FakeTelegram) -> None:
    cai = fake_telegram.user("Cai")
    review = await fill_until_review(cai)
    words = await tap(cai, "✏️ Words")
    assert "In a few words" in words.text
    await cai.send_text("Actually I only need food")
    again = await cai.receive()
    assert "📝 Your words: Actually I only need food" in again.text  # straight back to the review
    await cai.tap_inline("✏️ Help needed", message=again)
    kinds = await cai.receive()
    await cai.tap_inline("✅ 🛏️ A bed tonight", message=kinds)
    await cai.wait_edit(kinds.message_id)
    assert "🙋 Help needed: 🍲 Food\n" in (await tap(cai, "Next ▶")).text
    consent = await tap(cai, "◀ Back")  # Back from the review goes to consent
    assert "Before you send" in consent.text
    assert "Optional: photos" in (await tap(cai, "◀ Back")).text
    cancelled = await tap(cai, "✖ Cancel")
    assert cancelled.text == "Your request was not sent, and what you typed was deleted."
    await cai.send_command("/status")
    assert "You have no requests yet" in (await cai.receive()).text
    del review


async def test_restart_mid_form_resumes_the_same_step(
    bot_with_staff: BotHarness, fake_telegram: FakeTelegram, staff_group: FakeGroup
) -> None:
    dai = fake_telegram.user("Dai")
    await dai.send_command("/request")
    await dai.receive()
    await tap(dai, "No")
    kinds = await tap(dai, "No")
    await dai.tap_inline("💼 A short-term job", message=kinds)
    await dai.wait_edit(kinds.message_id)
    await tap(dai, "Next ▶")
    await bot_with_staff.restart()
    await dai.send_text("I can work as a porter")  # the same step, after the restart
    assert "Where are you?" in (await dai.receive()).text
    await dai.tap_reply_button("⏭ Skip")
    await dai.receive()
    await dai.receive()
    await dai.tap_reply_button("💬 Telegram is enough")
    await dai.receive()
    await dai.receive()
    await tap(dai, "⏭ Skip")
    review = await tap(dai, "✅ I agree")
    assert "💼 A short-term job" in review.text and "I can work as a porter" in review.text
    await tap(dai, "📨 Submit")
    assert "💼 A short-term job" in (await staff_group.receive()).text


async def test_documents_are_offered_again(bot_with_staff: BotHarness, fake_telegram: FakeTelegram) -> None:
    eve = fake_telegram.user("Eve")
    await eve.send_command("/request")
    await eve.receive()
    await tap(eve, "No")
    kinds = await tap(eve, "No")
    await eve.tap_inline("🪪 Paperwork (residence permit, lost ID)", message=kinds)
    await eve.wait_edit(kinds.message_id)
    await tap(eve, "Next ▶")
    await eve.send_text("I need a residence permit")
    await eve.receive()
    await eve.tap_reply_button("⏭ Skip")
    await eve.receive()
    await eve.receive()
    await eve.tap_reply_button("💬 Telegram is enough")
    await eve.receive()
    await eve.receive()
    await eve.send_photo()
    await eve.receive()
    await eve.send_document(b"%PDF-1.4 fake", "hukou.pdf", "application/pdf")
    assert "Received: 2 of 5." in (await eve.receive()).text
    await tap(eve, "Done ▶")
    await tap(eve, "✅ I agree")
    await tap(eve, "📨 Submit")

    review = await fill_until_review_with_reuse(eve)
    assert "📎 2 documents" in review.text


async def fill_until_review_with_reuse(user: FakeUser) -> BotMessage:
    await user.send_command("/request")
    await user.receive()
    await tap(user, "No")
    kinds = await tap(user, "No")
    await user.tap_inline("❔ Something else", message=kinds)
    await user.wait_edit(kinds.message_id)
    await tap(user, "Next ▶")
    await user.send_text("Second request")
    await user.receive()
    await user.tap_reply_button("⏭ Skip")
    await user.receive()
    await user.receive()
    await user.tap_reply_button("💬 Telegram is enough")
    await user.receive()
    docs = await user.receive()
    assert "📎 Use the 2 documents you gave before" in docs.button_texts
    await user.tap_inline("📎 Use the 2 documents you gave before", message=docs)
    await user.receive()
    return await tap(user, "✅ I agree")


async def test_full_loop_requester_follows_every_change(
    bot_with_staff: BotHarness, fake_telegram: FakeTelegram, staff_group: FakeGroup
) -> None:
    """Form → card → claim → resolve: the requester is told each change in their own language."""
    from models import staff
    from models.staff import Role

    responder = fake_telegram.user("Wang Responder")
    staff_group.add_member(responder)
    async with bot_with_staff.services.db.session() as session:
        await staff.add(session, responder.id, "王师傅", Role.RESPONDER)
    li = fake_telegram.user("Li", language_code="zh")
    await li.send_command("/request")
    await li.receive()
    await tap(li, "否")
    kinds = await tap(li, "否")
    await li.tap_inline("🛏️ 今晚的床位", message=kinds)
    await li.wait_edit(kinds.message_id)
    await tap(li, "下一步 ▶")
    await li.send_text("火车站附近，没有地方住")
    await li.receive()
    await li.tap_reply_button("⏭ 跳过")
    await li.receive_all(2)
    await li.tap_reply_button("💬 通过 Telegram 联系即可")
    await li.receive_all(2)
    await tap(li, "⏭ 跳过")
    await tap(li, "✅ 我同意")
    confirmation = await tap(li, "📨 提交")
    reference = confirmation.text.split("编号：")[1].split()[0]

    card = await staff_group.receive()
    await responder.tap_inline("✋ Claim", message=card, chat=staff_group)
    claimed = await staff_group.wait_edit(card.message_id)
    assert "✋ Claimed by 王师傅" in claimed.text
    notice = await li.receive()
    assert notice.text == f"您的求助 {reference} 已由 王师傅 接手，他们会在这里联系您。"

    await responder.tap_inline("✅ Resolve", message=claimed, chat=staff_group)
    reasons = await responder.receive()
    await responder.tap_inline("Lodging arranged", message=reasons)
    await responder.tap_inline("✅ Done", message=await responder.receive())  # what was given: lodging is ticked
    await responder.receive()  # asks for an optional note
    await responder.send_text("Bed at the Hutang night warm station")
    await responder.receive()
    resolved = await li.receive()
    assert resolved.text.startswith(f"您的求助 {reference} 已解决：已安排住宿。")
    assert "Bed at the Hutang night warm station" in resolved.text
    await li.send_command("/status")
    assert f"{reference} · ✅ 已解决" in (await li.receive()).button_texts


async def test_menu_tap_mid_form_is_not_taken_as_an_answer(
    bot_with_staff: BotHarness, fake_telegram: FakeTelegram
) -> None:
    fay = fake_telegram.user("Fay")
    await fay.send_command("/request")
    await fay.receive()
    await tap(fay, "No")
    kinds = await tap(fay, "No")
    await fay.tap_inline("🍲 Food", message=kinds)
    await fay.wait_edit(kinds.message_id)
    await tap(fay, "Next ▶")
    await fay.send_text("📋 My requests")  # a main-menu button, not a description
    assert "Please write a few words as text" in (await fay.receive()).text
    assert "In a few words" in (await fay.receive()).text
    await fay.send_text("Hungry since yesterday")
    assert "Where are you?" in (await fay.receive()).text
