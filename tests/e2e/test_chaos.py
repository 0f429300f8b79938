"""Chaos: the bot SIGKILLed 200 times at random moments during help requests, reports, claims, escalations and two
cold-weather broadcasts, restarted each time, with the fake Bot API injecting 429s, 5xx and dropped connections.

Nothing may be lost: every request and report a person completed exists once, with its card in the staff group;
every claim, resolution, escalation and broadcast message arrived; the outbox ends with every item sent. No
duplicate may reach anyone, except the documented at-least-once window: Telegram accepted a message in the last
moments before the SIGKILL, before its record was committed, and it went again after the restart (bot/outbox.py,
bot/replay.py). Those are counted and printed, and each must be proven to be that (first copy less than WINDOW
before a kill, second copy after it); any other duplicate fails the test. See tests/chaos_driver.py.

Runs with WAYSTATION_CHAOS=1; CHAOS_KILLS (default 200) sets the number of kills, e.g. for a quick local run.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import pytest
from telegram import InlineKeyboardButton, InlineKeyboardMarkup, Update
from telegram.ext import CallbackQueryHandler, CommandHandler, TypeHandler

from bot import replay
from bot.application import WaystationApplication
from bot.config import Settings
from bot.sandbox.fake_telegram import FakeTelegram
from handlers.case_alerts import enqueue_cards
from handlers.common import Context
from models import cases, conversation_store, staff
from models.cases import Case
from models.staff import Role
from tests.chaos_driver import WINDOW, run_chaos
from tests.conftest import make_settings, summary_lines
from tests.harness import BotHarness

KILLS = int(os.environ.get("CHAOS_KILLS", "200"))


@pytest.mark.timeout(900)
@pytest.mark.skipif(
    not os.environ.get("WAYSTATION_CHAOS"), reason="chaos run (6+ min per backend): set WAYSTATION_CHAOS=1"
)
async def test_chaos_kills_lose_nothing_and_duplicate_nothing(database_url: str) -> None:
    result = await run_chaos(database_url, kills=KILLS, seed=20261125)
    backend = database_url.split("+", 1)[0]
    print(result.summary())
    for line in [*result.problems, *result.errors][:40]:
        print("chaos problem:", line)
    gaps = sorted(result.duplicate_gaps)
    window = (
        f"{len(gaps)} duplicate(s) from the at-least-once window (first copy {gaps[0] * 1000:.0f}–"
        f"{gaps[-1] * 1000:.0f} ms before a kill)"
        if gaps
        else "no duplicate"
    )
    restarts = sorted(result.restart_seconds)
    summary_lines[f"chaos {backend}"] = (
        f"{result.summary()} ({backend}, {result.seconds:.0f} s, restart median "
        f"{restarts[len(restarts) // 2]:.2f} s; {window}; journeys {dict(result.journeys)}; "
        f"faults {sum(result.faults.values())})"
    )
    assert not result.problems, "\n".join(result.problems[:30])
    assert result.kills == KILLS
    assert result.crashes == 0, "a bot process died on its own"
    assert not result.errors, "\n".join(result.errors[:30])
    assert all(gap < WINDOW for gap in gaps)
    assert result.journeys["request"] >= 10 and result.journeys["report"] >= 3 and result.journeys["card"] >= 5
    assert sum(result.faults.values()) >= 20, "the fake injected (almost) no faults: the run proves less than it says"


# --- regression tests for the defects the chaos run found --------------------------------------------------------


async def test_server_errors_and_dropped_connections_are_retried_at_start_and_for_replies(
    settings: Settings, fake_telegram: FakeTelegram
) -> None:
    """Defect: one 5xx or dropped connection on getMe stopped the bot from starting; on a direct reply or a
    callback answer it failed the handler (an apology, and the step not done)."""
    fake_telegram.inject_faults(1, "502", methods={"getMe"})
    fake_telegram.inject_faults(1, "drop", methods={"setMyCommands"})
    harness = BotHarness(settings, fake_telegram, configure=add_probe)
    await harness.start()
    try:
        ann = fake_telegram.user("Ann")
        fake_telegram.inject_faults(1, "500", methods={"sendMessage"})
        fake_telegram.inject_faults(1, "drop", methods={"answerCallbackQuery"})
        await ann.send_command("/probe")
        assert (await ann.receive()).text == "one"
        query = await ann.tap_inline("Tap")
        assert await ann.callback_answer(query) == ("tapped", False)
        assert (await ann.receive()).text == "two"
    finally:
        await harness.stop()
    assert fake_telegram.faults.pending == 0 and len([c for c in fake_telegram.calls if c.injected]) == 4
    harness.assert_clean()


async def test_an_update_is_confirmed_to_telegram_only_once_handled(
    settings: Settings, fake_telegram: FakeTelegram
) -> None:
    """Defect: PTB's Updater confirmed each batch (the next getUpdates offset) as soon as it was queued, so a crash
    lost every update waiting or being handled; Telegram never delivered them again."""
    entered, release = asyncio.Event(), asyncio.Event()

    async def slow(update: Update, _context: Context) -> None:
        entered.set()
        await release.wait()
        assert update.effective_message is not None
        await update.effective_message.reply_text("done")

    def add_slow(application: WaystationApplication) -> None:
        application.add_handler(CommandHandler("slow", slow))

    harness = BotHarness(settings, fake_telegram, configure=add_slow)
    await harness.start()
    try:
        ann = fake_telegram.user("Ann")
        await ann.send_command("/slow")
        await asyncio.wait_for(entered.wait(), 5)
        await ann.send_text("meanwhile")
        await asyncio.sleep(2.5)  # two long polls (timeout 1 s) would have confirmed both before the fix
        pending = [u["message"]["text"] for u in fake_telegram.pending_updates]
        assert pending == ["/slow", "meanwhile"]  # a crash now: Telegram delivers both again
        release.set()
        assert (await ann.receive()).text == "done"
        await fake_telegram.wait_updates_consumed()
    finally:
        release.set()
        await harness.stop()
    harness.assert_clean()


async def test_an_update_handled_again_after_a_crash_does_not_repeat_its_replies(
    settings: Settings, fake_telegram: FakeTelegram, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Defect: a crash after a handler replied but before its update was marked processed made the redelivered
    update repeat every reply ("Are you under 18?" twice), and answering its callback query again failed the
    handler ("query is too old": an apology, the step not done)."""
    seen: list[Update] = []

    def configure(application: WaystationApplication) -> None:
        add_probe(application)

        async def keep(update: Update, _context: Context) -> None:
            seen.append(update)

        application.add_handler(TypeHandler(Update, keep), group=-3)

    real_mark = conversation_store.mark_processed
    crashed: list[int] = []

    async def crash_before_mark(session: Any, update_id: int, **kwargs: Any) -> None:
        crashed.append(update_id)  # the process "dies" here: no mark, the journal of its calls stays

    harness = BotHarness(settings, fake_telegram, configure=configure)
    await harness.start()
    try:
        ann = fake_telegram.user("Ann")
        monkeypatch.setattr(conversation_store, "mark_processed", crash_before_mark)
        await ann.send_command("/probe")
        assert (await ann.receive()).text == "one"
        query = await ann.tap_inline("Tap")
        assert await ann.callback_answer(query) == ("tapped", False)
        assert (await ann.receive()).text == "two"
        await fake_telegram.wait_updates_consumed()  # both handled (confirmed once handled)
        monkeypatch.setattr(conversation_store, "mark_processed", real_mark)
        assert len(crashed) == 2 and len(seen) == 2
        for update in seen:  # Telegram delivers both again after the restart
            await harness.runner.app.process_update(update)  # type: ignore[union-attr]
        await asyncio.sleep(0.5)
        assert [m.text for m in ann.messages if m.from_bot] == ["one", "two"]
        async with harness.services.db.session() as session:
            assert await conversation_store.get_blob(session, replay.KIND, seen[0].update_id) is None
            assert await conversation_store.was_processed(session, seen[1].update_id)
    finally:
        await harness.stop()
    harness.assert_clean()


def add_probe(application: WaystationApplication) -> None:
    """/probe answers "one" with a button; the button's answer is "tapped", then "two"."""

    async def probe(update: Update, _context: Context) -> None:
        assert update.effective_message is not None
        keyboard = InlineKeyboardMarkup([[InlineKeyboardButton("Tap", callback_data="chaos|tap")]])
        await update.effective_message.reply_text("one", reply_markup=keyboard)

    async def tapped(update: Update, _context: Context) -> None:
        query = update.callback_query
        assert query is not None and update.effective_chat is not None
        await query.answer("tapped")
        await _context.bot.send_message(update.effective_chat.id, "two")

    application.add_handler(CommandHandler("probe", probe))
    application.add_handler(CallbackQueryHandler(tapped, pattern="^chaos\\|tap$"))


async def test_a_resolve_handled_again_after_a_crash_confirms_instead_of_saying_closed(
    database_url: str, fake_telegram: FakeTelegram, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Defect: when a crash came after the resolve was committed but before its confirmation was sent (and
    recorded), the redelivered tap told the responder "This case is already closed." about their own resolve."""
    group = fake_telegram.group("Staff")
    settings = make_settings(fake_telegram, database_url, sections={"staff": {"alert_chat_ids": [group.id]}})
    seen: list[Update] = []

    def configure(application: WaystationApplication) -> None:
        async def keep(update: Update, _context: Context) -> None:
            seen.append(update)

        application.add_handler(TypeHandler(Update, keep), group=-3)

    harness = BotHarness(settings, fake_telegram, configure=configure)
    await harness.start()
    try:
        wu = fake_telegram.user("Wu")
        group.add_member(wu)
        svc = harness.services
        async with svc.db.session() as session:
            await staff.add(session, wu.id, "Wu", Role.RESPONDER)
            case, _ = await cases.create(session, Case(categories=["food"], idempotency_key="chaos-resolve"))
            await enqueue_cards(session, svc, case, new=True)
            await session.commit()
        svc.wake_outbox()
        card = await group.receive()
        await wu.tap_inline("✅ Resolve", message=card, chat=group)
        reasons = await wu.receive()
        label = next(b for b in reasons.button_texts if b.lower() == "no help wanted")
        await wu.tap_inline(label, message=reasons)
        assert "Add a closing note" in (await wu.receive()).content
        await fake_telegram.wait_updates_consumed()  # the reason step handled and saved
        # The process dies after the resolve and its confirmation: no conversation state, no mark written…
        monkeypatch.setattr(conversation_store, "mark_processed", _no_mark)
        monkeypatch.setattr(WaystationApplication, "update_persistence", _no_mark)
        await wu.tap_inline("⏭ Skip")
        done = await wu.receive()
        assert "is resolved" in done.content
        await fake_telegram.wait_updates_consumed()
        await harness.stop()
        monkeypatch.undo()
        # …and before the confirmation's journal row (the callback answer's and the edit's were written).
        async with svc.db.session() as session:
            journal = await conversation_store.get_blob(session, replay.KIND, seen[-1].update_id)
            assert isinstance(journal, dict)
            assert [c["method"] for c in journal["calls"]] == [
                "answercallbackquery",
                "editmessagereplymarkup",
                "sendmessage",
            ]
            await conversation_store.save_blob(
                session, replay.KIND, seen[-1].update_id, {"calls": journal["calls"][:2]}
            )
        await harness.start()
        app = harness.runner.app  # type: ignore[union-attr]
        await app.process_update(Update.de_json(seen[-1].to_dict(), app.bot))  # Telegram delivers it again
        again = await wu.receive()
        assert again.text == done.text  # the at-least-once window: the confirmation again, never "already closed"
    finally:
        await harness.stop()
    harness.assert_clean()


async def _no_mark(*_args: Any, **_kwargs: Any) -> None:
    """A write that a crash keeps from happening."""


async def test_a_step_is_saved_in_the_transaction_that_marks_its_update_processed(
    settings: Settings, fake_telegram: FakeTelegram, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Defect: the conversation step (user_data, states) was committed before the update's processed mark, in
    another transaction; a crash in between left the step saved and the update handled again on top of it — a
    ticked option unticked by its own redelivery, so "✅ Food" showed while the form had no kind of help."""
    seen: list[Update] = []

    async def tick(update: Update, context: Context) -> None:
        assert context.user_data is not None and update.effective_message is not None
        context.user_data["ticked"] = not context.user_data.get("ticked", False)
        await update.effective_message.reply_text(f"ticked: {context.user_data['ticked']}")

    def configure(application: WaystationApplication) -> None:
        async def keep(update: Update, _context: Context) -> None:
            seen.append(update)

        application.add_handler(TypeHandler(Update, keep), group=-3)
        application.add_handler(CommandHandler("tick", tick))

    async def crash(*_args: Any, **_kwargs: Any) -> None:
        raise RuntimeError("the process died before this commit")

    harness = BotHarness(settings, fake_telegram, configure=configure)
    await harness.start()
    try:
        ann = fake_telegram.user("Ann")
        await ann.send_command("/tick")
        assert (await ann.receive()).text == "ticked: True"
        await fake_telegram.wait_updates_consumed()
        app = harness.runner.app  # type: ignore[union-attr]
        data = seen[0].to_dict()
        data["update_id"] += 1000  # the next tap
        second = Update.de_json(data, app.bot)
        monkeypatch.setattr(conversation_store, "mark_processed", crash)
        with pytest.raises(RuntimeError):
            await app.process_update(second)
        monkeypatch.undo()
        async with harness.services.db.session() as session:
            saved = await conversation_store.get_blob(session, "user", ann.id)
        assert saved == {"ticked": True}  # not the half-done second tap's state
    finally:
        await harness.stop()
    harness.assert_clean()
