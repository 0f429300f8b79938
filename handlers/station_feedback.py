""" "✏️ Report wrong info" on a station card: anyone says what is wrong; it is stored for staff to review."""

from __future__ import annotations

from telegram import Update
from telegram.ext import CallbackQueryHandler, CommandHandler, ConversationHandler, MessageHandler, filters

from handlers.common import Context, Handlers, parse_id, services, tr
from handlers.menu import main_menu
from handlers.station_views import FEEDBACK_PREFIX
from models import station_feedback, stations

AWAIT_TEXT = 0
STATION_KEY = "feedback_station"
DRAFT_KEY = "feedback_draft"


async def begin(update: Update, context: Context) -> int:
    query = update.callback_query
    assert query is not None and query.data is not None and context.user_data is not None
    t = tr(update, context)
    station_id = parse_id(query.data.removeprefix(f"{FEEDBACK_PREFIX}|"))
    station = None
    if station_id is not None:
        async with services(context).db.session() as session:
            station = await stations.get(session, station_id)
    if station is None:
        await query.answer(t.gettext("This button is no longer valid. Please search again."), show_alert=True)
        return ConversationHandler.END
    await query.answer()
    context.user_data[STATION_KEY] = station.id
    assert update.effective_chat is not None
    await context.bot.send_message(
        update.effective_chat.id,
        t.gettext(
            "What is wrong on this card? For example: the opening hours changed, the phone number is wrong, "
            "it has moved. Please write a few words, or send /cancel."
        ),
    )
    return AWAIT_TEXT


async def on_text(update: Update, context: Context) -> int:
    t = tr(update, context)
    message = update.effective_message
    assert message is not None and message.text is not None and context.user_data is not None
    text = message.text.strip()
    if len(text) > station_feedback.MAX_TEXT:
        context.user_data[DRAFT_KEY] = text  # kept, so nothing typed is lost if they give up shortening
        await message.reply_text(
            t.gettext("That is {length} characters; please shorten it to {n}.").format(
                length=len(text), n=station_feedback.MAX_TEXT
            )
        )
        return AWAIT_TEXT
    station_id = context.user_data.get(STATION_KEY)
    if not isinstance(station_id, int):
        return await cancel(update, context)
    reporter = update.effective_user.id if update.effective_user else None
    async with services(context).db.session() as session:
        await station_feedback.add(session, station_id, reporter, text)
    context.user_data.pop(STATION_KEY, None)
    context.user_data.pop(DRAFT_KEY, None)
    await message.reply_text(
        t.gettext("Thank you! The station's staff will check it and correct the card."), reply_markup=main_menu(t)
    )
    return ConversationHandler.END


async def reprompt(update: Update, context: Context) -> int:
    assert update.effective_message is not None
    await update.effective_message.reply_text(
        tr(update, context).gettext("Please describe what is wrong in words (text), or send /cancel.")
    )
    return AWAIT_TEXT


async def cancel(update: Update, context: Context) -> int:
    t = tr(update, context)
    assert update.effective_message is not None and context.user_data is not None
    context.user_data.pop(STATION_KEY, None)
    context.user_data.pop(DRAFT_KEY, None)
    await update.effective_message.reply_text(
        t.gettext("Cancelled. What would you like to do?"), reply_markup=main_menu(t)
    )
    return ConversationHandler.END


def handlers() -> Handlers:
    private = filters.ChatType.PRIVATE
    return [
        ConversationHandler(
            entry_points=[CallbackQueryHandler(begin, pattern=f"^{FEEDBACK_PREFIX}\\|")],
            states={AWAIT_TEXT: [MessageHandler(private & filters.TEXT & ~filters.COMMAND, on_text)]},
            fallbacks=[
                CommandHandler("cancel", cancel),
                MessageHandler(private & ~filters.COMMAND & ~filters.UpdateType.EDITED, reprompt),
            ],
            name="station_feedback",
            persistent=True,
            allow_reentry=True,
        )
    ]
