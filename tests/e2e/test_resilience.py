"""Restarts, redelivered updates and handler errors: nothing lost, nothing done twice, nothing private logged."""

from __future__ import annotations

import logging

import pytest
from telegram import Update
from telegram.ext import CommandHandler, ConversationHandler, MessageHandler, filters

from bot import logs
from bot.application import WaystationApplication
from bot.config import Settings
from bot.sandbox.fake_telegram import FakeTelegram
from handlers.common import Context
from tests.harness import BotHarness

ASK_COLOUR, ASK_SIZE = range(2)


def add_probe_conversation(application: WaystationApplication) -> None:
    """A two-step persistent conversation, to check the persistence mechanism every journey relies on."""

    async def begin(update: Update, context: Context) -> int:
        assert update.effective_message is not None
        await update.effective_message.reply_text("colour?")
        return ASK_COLOUR

    async def colour(update: Update, context: Context) -> int:
        assert update.effective_message is not None and context.user_data is not None
        context.user_data["colour"] = update.effective_message.text
        await update.effective_message.reply_text("size?")
        return ASK_SIZE

    async def size(update: Update, context: Context) -> int:
        assert update.effective_message is not None and context.user_data is not None
        await update.effective_message.reply_text(f"{context.user_data['colour']} {update.effective_message.text}")
        return ConversationHandler.END

    application.add_handler(
        ConversationHandler(
            entry_points=[CommandHandler("probe", begin)],
            states={
                ASK_COLOUR: [MessageHandler(filters.TEXT & ~filters.COMMAND, colour)],
                ASK_SIZE: [MessageHandler(filters.TEXT & ~filters.COMMAND, size)],
            },
            fallbacks=[],
            name="probe",
            persistent=True,
        )
    )


async def test_conversation_step_survives_restart(settings: Settings, fake_telegram: FakeTelegram) -> None:
    harness = BotHarness(settings, fake_telegram, configure=add_probe_conversation)
    await harness.start()
    try:
        ann = fake_telegram.user("Ann")
        await ann.send_command("/probe")
        assert (await ann.receive()).text == "colour?"
        await ann.send_text("blue")
        assert (await ann.receive()).text == "size?"
        await harness.restart()  # a new Application on the same database
        await ann.send_text("large")
        assert (await ann.receive()).text == "blue large"
    finally:
        await harness.stop()
    harness.assert_clean()


async def test_handler_error_is_logged_without_personal_data(
    settings: Settings, fake_telegram: FakeTelegram, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken(update: Update, context: Context) -> None:
        assert update.effective_message is not None
        raise ValueError(f"cannot handle {update.effective_message.text}")

    def add_broken(application: WaystationApplication) -> None:
        application.add_handler(CommandHandler("broken", broken))

    caplog.set_level(logging.DEBUG)
    harness = BotHarness(settings, fake_telegram, configure=add_broken)
    await harness.start()
    try:
        secret_name = "Zhang Sensitive"
        user = fake_telegram.user(secret_name, language_code="zh")
        await user.send_command("/broken", args="my phone is 13800138000")
        reply = await user.receive()
        assert reply.text.startswith("抱歉，我们这边出了点问题。")
    finally:
        await harness.stop()
    assert len(harness.errors) == 1
    harness.errors.clear()
    harness.assert_clean()
    failure = [r for r in caplog.records if r.name == "waystation.errors"]
    assert failure and "tests/e2e/test_resilience.py" in failure[0].getMessage()
    assert "broken" in failure[0].getMessage()
    logged = "\n".join(r.getMessage() for r in caplog.records)
    for private in ("13800138000", "Sensitive", "my phone"):
        assert private not in logged


async def test_token_and_messages_never_logged(
    settings: Settings, fake_telegram: FakeTelegram, caplog: pytest.LogCaptureFixture
) -> None:
    token = settings.require_token()
    logs.configure("DEBUG", secrets=[token])
    caplog.set_level(logging.DEBUG)
    harness = BotHarness(settings, fake_telegram)
    await harness.start()
    ann = fake_telegram.user("Annabelle Private")
    await ann.send_text("my address is 12 Secret Road")
    await ann.receive()
    await harness.stop()
    harness.assert_clean()
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert logged, "nothing was captured: the check would prove nothing"
    for private in (token, "Secret Road", "Annabelle"):
        assert private not in logged
