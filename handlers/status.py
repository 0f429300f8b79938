"""/status: the requester's own requests, newest first, each with its timeline; add information or cancel."""

from __future__ import annotations

from telegram import InlineKeyboardButton, InlineKeyboardMarkup, Update
from telegram.constants import ChatType
from telegram.ext import CallbackQueryHandler, CommandHandler, MessageHandler

from handlers import case_alerts
from handlers.case_views import status_text, timeline_text
from handlers.common import Context, Handlers, esc, parse_id, services, tr
from handlers.menu import MY_REQUESTS, main_menu, menu_button
from models import cases

PREFIX = "my"  # my|show|<id>, my|cancel|<id>, my|confirm|<id>
ANSWER_PREFIX = "ca"  # the "add information" conversation (handlers.case_staff) starts from ca|<id>


async def list_requests(update: Update, context: Context) -> None:
    t = tr(update, context)
    message, user = update.effective_message, update.effective_user
    assert message is not None and user is not None
    if message.chat.type != ChatType.PRIVATE:
        # Someone's requests for help are theirs alone: never listed in a group.
        await message.reply_text(t.gettext("Please send this command in a private chat with me."))
        return
    async with services(context).db.session() as session:
        mine = await cases.for_requester(session, user.id)
    if not mine:
        await message.reply_text(
            t.gettext("You have no requests yet. To ask for help, send /request."), reply_markup=main_menu(t)
        )
        return
    rows = [
        [InlineKeyboardButton(f"{c.reference} · {status_text(t, c)}", callback_data=f"{PREFIX}|show|{c.id}")]
        for c in mine
    ]
    await message.reply_text(
        t.gettext("<b>Your requests</b> (newest first). Tap one to see its history."),
        reply_markup=InlineKeyboardMarkup(rows),
    )


async def _own_case(update: Update, context: Context, case_id: int) -> cases.Case | None:
    user = update.effective_user
    assert user is not None
    async with services(context).db.session() as session:
        case = await cases.get(session, case_id)
    return case if case is not None and case.requester_id == user.id else None


async def on_button(update: Update, context: Context) -> None:
    query = update.callback_query
    assert query is not None and query.data is not None and update.effective_chat is not None
    t = tr(update, context)
    parts = query.data.split("|")
    case_id = parse_id(parts[2]) if len(parts) == 3 else None
    case = await _own_case(update, context, case_id) if case_id is not None else None
    if case is None or case.id is None:
        # Someone else's case id (forged) or a deleted one: say nothing about it.
        await query.answer(t.gettext("This request is not available."), show_alert=True)
        return
    action = parts[1]
    svc = services(context)
    if action == "show":
        await query.answer()
        async with svc.db.session() as session:
            history = await cases.events(session, case.id)
        buttons = []
        if case.is_open:
            buttons = [
                [InlineKeyboardButton(t.gettext("➕ Add information"), callback_data=f"{ANSWER_PREFIX}|{case.id}")],
                [InlineKeyboardButton(t.gettext("🗑 Cancel my request"), callback_data=f"{PREFIX}|cancel|{case.id}")],
            ]
        await context.bot.send_message(
            update.effective_chat.id,
            timeline_text(t, case, history, svc.settings.timezone),
            reply_markup=InlineKeyboardMarkup(buttons) if buttons else None,
        )
    elif action == "cancel" and case.is_open:
        await query.answer()
        await context.bot.send_message(
            update.effective_chat.id,
            t.gettext("Cancel request {reference}? Staff will stop working on it.").format(
                reference=f"<b>{esc(case.reference)}</b>"
            ),
            reply_markup=InlineKeyboardMarkup(
                [[InlineKeyboardButton(t.gettext("Yes, cancel it"), callback_data=f"{PREFIX}|confirm|{case.id}")]]
            ),
        )
    elif action == "confirm":
        assert update.effective_user is not None
        async with svc.db.session() as session:
            cancelled = await cases.cancel_by_requester(session, case.id, update.effective_user.id)
            if cancelled:
                await session.refresh(case)
                await case_alerts.enqueue_cards(session, svc, case, new=False)
            await session.commit()
        svc.wake_outbox()
        await query.answer()
        text = (
            t.gettext("Request {reference} is cancelled.")
            if cancelled
            else t.gettext("Request {reference} is already closed.")
        )
        await query.edit_message_text(text.format(reference=f"<b>{esc(case.reference)}</b>"))
    else:
        await query.answer(t.gettext("This request is already closed."), show_alert=True)


def handlers() -> Handlers:
    return [
        CommandHandler("status", list_requests),
        MessageHandler(menu_button(MY_REQUESTS), list_requests),
        CallbackQueryHandler(on_button, pattern=f"^{PREFIX}\\|"),
    ]
