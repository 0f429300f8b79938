"""/start, /help and the answer to anything unexpected outside a conversation."""

from __future__ import annotations

from telegram import Update
from telegram.ext import CallbackQueryHandler, CommandHandler, MessageHandler, filters

from handlers import find, subscribe, teams
from handlers.common import Context, Handlers, esc, parse_id, tr
from handlers.menu import HELP, USER_COMMANDS, main_menu, menu_button


async def start(update: Update, context: Context) -> None:
    t = tr(update, context)
    assert update.effective_user is not None and update.effective_message is not None
    payload = context.args[0] if context.args else ""
    if payload.startswith("invite_"):
        # t.me/<bot>?start=invite_<code>: a one-time staff invite.
        await teams.accept_invite(update, context, payload.removeprefix("invite_"))
        return
    station_id = parse_id(payload.removeprefix("station_")) if payload.startswith("station_") else None
    if station_id is not None:
        # Deep link t.me/<bot>?start=station_<id>: straight to the card.
        await find.show_card(update, context, station_id)
        return
    _ = t.gettext
    text = _("Hello, <b>{name}</b>! I am Waystation.").format(name=esc(update.effective_user.first_name))
    text += "\n\n" + _(
        "I help outdoor workers find a warm care station nearby, help people in difficulty ask for help, "
        "and let anyone tell outreach teams about someone out in the cold."
    )
    text += "\n\n" + _("Choose from the menu below, or send /help.")
    await update.effective_message.reply_text(text, reply_markup=main_menu(t))
    await subscribe.offer_subscribe_once(update, context)


async def help_command(update: Update, context: Context) -> None:
    t = tr(update, context)
    _ = t.gettext
    assert update.effective_message is not None
    lines = [_("<b>What I can do</b>")]
    lines += [f"/{c.name} — {esc(_(c.description))}" for c in USER_COMMANDS if not c.staff_only]
    lines += ["", _("Everything you type is kept until you finish or send /cancel.")]
    await update.effective_message.reply_text("\n".join(lines), reply_markup=main_menu(t))


async def unexpected(update: Update, context: Context) -> None:
    """Anything in a private chat that no handler took: a short re-prompt, never silence."""
    t = tr(update, context)
    assert update.effective_message is not None
    await update.effective_message.reply_text(
        t.gettext("Sorry, I did not understand that. Please choose from the menu below, or send /help."),
        reply_markup=main_menu(t),
    )


async def unknown_button(update: Update, context: Context) -> None:
    """A button no handler took (an old keyboard, forged data): answer it, or the client's spinner never stops."""
    assert update.callback_query is not None
    await update.callback_query.answer(tr(update, context).gettext("This button is no longer valid."), show_alert=True)


def handlers() -> Handlers:
    return [
        CommandHandler("start", start, filters=filters.ChatType.PRIVATE),
        CommandHandler("help", help_command),
        MessageHandler(menu_button(HELP), help_command),
    ]


def fallback_handler() -> MessageHandler[Context, None]:
    """Registered last in group 0, so it only answers what every other handler let through."""
    return MessageHandler(filters.ChatType.PRIVATE & ~filters.UpdateType.EDITED, unexpected)


def unknown_button_handler() -> CallbackQueryHandler[Context, None]:
    """Registered last in group 0, like fallback_handler, for callback queries."""
    return CallbackQueryHandler(unknown_button)
