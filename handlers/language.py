"""/language: pick the bot's language with an inline keyboard; the choice is stored and wins over the client's."""

from __future__ import annotations

from telegram import InlineKeyboardButton, InlineKeyboardMarkup, Update
from telegram.ext import CallbackQueryHandler, CommandHandler, MessageHandler

from bot.i18n import available_languages, native_name, translator
from handlers.common import Context, Handlers, services, tr
from handlers.menu import LANGUAGE, main_menu, menu_button
from models import users

CALLBACK_PREFIX = "lang:"


def language_keyboard(current: str) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup(
        [
            [
                InlineKeyboardButton(
                    ("✓ " if code == current else "") + native_name(code),
                    callback_data=f"{CALLBACK_PREFIX}{code}",
                )
            ]
            for code in available_languages()
        ]
    )


async def ask_language(update: Update, context: Context) -> None:
    t = tr(update, context)
    assert update.effective_message is not None
    await update.effective_message.reply_text(
        t.gettext("Which language should I use?"), reply_markup=language_keyboard(t.language)
    )


async def choose_language(update: Update, context: Context) -> None:
    query = update.callback_query
    assert query is not None and query.data is not None and update.effective_user is not None
    code = query.data.removeprefix(CALLBACK_PREFIX)
    if code not in available_languages():
        # Forged or from an old version of the bot: change nothing, say so.
        await query.answer(tr(update, context).gettext("This choice is no longer available."), show_alert=True)
        return
    svc = services(context)
    async with svc.db.session() as session:
        await users.choose_language(session, update.effective_user.id, code)
    svc.remember_language(update.effective_user.id, code)
    t = translator(code)
    await query.answer()
    confirmation = t.gettext("Language set: {language}.").format(language=native_name(code))
    if query.message is not None and query.message.is_accessible:
        await query.edit_message_text(confirmation)
    # The reply keyboard's labels are in the old language: send the menu again in the new one.
    await context.bot.send_message(
        update.effective_user.id,
        t.gettext("Here is the menu in your language."),
        reply_markup=main_menu(t),
    )


def handlers() -> Handlers:
    return [
        CommandHandler("language", ask_language),
        MessageHandler(menu_button(LANGUAGE), ask_language),
        CallbackQueryHandler(choose_language, pattern=f"^{CALLBACK_PREFIX}"),
    ]
