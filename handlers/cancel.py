"""/cancel outside any conversation (each conversation has its own /cancel fallback that ends it)."""

from __future__ import annotations

from telegram import Update
from telegram.ext import CommandHandler

from handlers.common import Context, Handlers, tr
from handlers.menu import main_menu


async def nothing_to_cancel(update: Update, context: Context) -> None:
    t = tr(update, context)
    assert update.effective_message is not None
    await update.effective_message.reply_text(
        t.gettext("There is nothing to cancel. What would you like to do?"), reply_markup=main_menu(t)
    )


def handlers() -> Handlers:
    return [CommandHandler("cancel", nothing_to_cancel)]
