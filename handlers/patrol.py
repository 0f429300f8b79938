"""Outreach patrols (/patrol), for responders, coordinators and admins: start one in an area; when back, /patrol
again ends it with the number of people met and the items handed out, counted with buttons.

The running patrol lives in the database (models/patrols.py), so it survives restarts and days; the conversation only
carries the end-of-patrol answers (persistent, by name). Buttons: ``pt|area|<team id>`` (0: no particular area),
``pt|stop|<patrol id>``, ``pt|i|<item>``, ``pt|reset``, ``pt|done``, ``pt|cancel``. The role is re-read on every
button and typed step.
"""

from __future__ import annotations

import logging
import re
from datetime import datetime
from typing import Any

from babel.dates import format_datetime
from telegram import InlineKeyboardButton, InlineKeyboardMarkup, Update
from telegram.ext import CallbackQueryHandler, CommandHandler, ConversationHandler, MessageHandler, filters

from bot.i18n import N_, Translator
from handlers.aid_views import counter_rows, items_text
from handlers.common import Context, Handlers, esc, replace_buttons, services, tr
from handlers.menu import any_menu_button, main_menu
from handlers.stats import duration_text
from models import patrols, teams
from models import staff as staff_model
from models.aid import MAX_ITEMS_PER_KIND, clean_items
from models.patrols import MAX_PEOPLE, Patrol

log = logging.getLogger("waystation.patrol")

PREFIX = "pt"
PICK_AREA, RUNNING, ASK_PEOPLE, ASK_ITEMS = range(4)
PENDING = "patrol_end"  # user_data: {"patrol": id, "people": n, "items": {kind: n}}

NOT_ALLOWED = N_("Sorry, only outreach staff (responders, coordinators and admins) can log patrols.")
EXPIRED = N_("This step has expired. Send /patrol again.")
_DATA = re.compile(r"pt\|(?:(area|stop)\|([0-9]{1,10})|i\|([a-z_]{1,20})|(reset|done|cancel))")
_NUMBER = re.compile(r"[0-9]{1,4}")


async def _member_can_patrol(context: Context, user_id: int) -> bool:
    async with services(context).db.session() as session:
        member = await staff_model.get(session, user_id)
    return member is not None and member.can("patrol")


def _when(context: Context, t: Translator, moment: datetime) -> str:
    local = moment.astimezone(services(context).settings.tz)
    return format_datetime(local, "d MMM HH:mm", locale=t.language)


async def _area_name(context: Context, t: Translator, team_id: int | None) -> str:
    if team_id is not None:
        async with services(context).db.session() as session:
            team = await teams.get(session, team_id)
        if team is not None:
            return esc(team.name)
    return t.gettext("no particular area")


def _items_keyboard(context: Context, t: Translator, items: dict[str, int]) -> InlineKeyboardMarkup:
    rows = counter_rows(t, PREFIX, items, services(context).settings.season.item_kinds)
    rows.append(
        [
            InlineKeyboardButton(t.gettext("✅ Done"), callback_data=f"{PREFIX}|done"),
            InlineKeyboardButton(t.gettext("✖ Cancel"), callback_data=f"{PREFIX}|cancel"),
        ]
    )
    return InlineKeyboardMarkup(rows)


def _pending(context: Context) -> dict[str, Any] | None:
    assert context.user_data is not None
    pending = context.user_data.get(PENDING)
    return pending if isinstance(pending, dict) and isinstance(pending.get("patrol"), int) else None


# -- /patrol --------------------------------------------------------------------------------------------------------


async def on_command(update: Update, context: Context) -> int:
    message, user = update.effective_message, update.effective_user
    assert message is not None and user is not None and context.user_data is not None
    t = tr(update, context)
    if not await _member_can_patrol(context, user.id):
        await message.reply_text(t.gettext(NOT_ALLOWED))
        return ConversationHandler.END
    context.user_data.pop(PENDING, None)
    svc = services(context)
    async with svc.db.session() as session:
        current = await patrols.running(session, user.id)
        mine = await teams.memberships(session, user.id)
        all_teams = await teams.list_all(session)
    if current is not None:
        minutes = (svc.clock() - current.started_at).total_seconds() / 60
        text = t.gettext("🚶 Your patrol in <b>{area}</b> is running since {time} ({duration}).").format(
            area=await _area_name(context, t, current.team_id),
            time=_when(context, t, current.started_at),
            duration=duration_text(t, max(0.0, minutes)),
        )
        keyboard = InlineKeyboardMarkup(
            [
                [InlineKeyboardButton(t.gettext("⏹ End the patrol"), callback_data=f"{PREFIX}|stop|{current.id}")],
                [InlineKeyboardButton(t.gettext("↩️ Keep it running"), callback_data=f"{PREFIX}|cancel")],
            ]
        )
        await message.reply_text(text, reply_markup=keyboard)
        return RUNNING
    # The staff member's own teams first: that is where they usually go.
    ordered = sorted(all_teams, key=lambda team: (team.id not in mine, team.name.lower()))
    buttons = [
        InlineKeyboardButton(team.name[:40], callback_data=f"{PREFIX}|area|{team.id}")
        for team in ordered
        if team.id is not None
    ][:20]
    rows = [buttons[i : i + 2] for i in range(0, len(buttons), 2)]
    rows.append([InlineKeyboardButton(t.gettext("🌐 No particular area"), callback_data=f"{PREFIX}|area|0")])
    rows.append([InlineKeyboardButton(t.gettext("✖ Cancel"), callback_data=f"{PREFIX}|cancel")])
    await message.reply_text(
        t.gettext("🚶 Start an outreach patrol: which area are you going to?"), reply_markup=InlineKeyboardMarkup(rows)
    )
    return PICK_AREA


async def _checked(update: Update, context: Context) -> re.Match[str] | None:
    """The button's parsed data after the role check; None (answered) when refused or malformed."""
    query, user = update.callback_query, update.effective_user
    assert query is not None and user is not None
    t = tr(update, context)
    if not await _member_can_patrol(context, user.id):
        await query.answer(t.gettext(NOT_ALLOWED), show_alert=True)
        return None
    match = _DATA.fullmatch(query.data or "")
    if match is None:
        await query.answer(t.gettext(EXPIRED), show_alert=True)
    return match


async def on_area(update: Update, context: Context) -> int | None:
    query, user = update.callback_query, update.effective_user
    assert query is not None and user is not None
    match = await _checked(update, context)
    if match is None:
        return ConversationHandler.END
    if match.group(4) == "cancel":
        return await _cancel_button(update, context)
    if match.group(1) != "area":
        await query.answer(tr(update, context).gettext(EXPIRED), show_alert=True)
        return None
    t = tr(update, context)
    svc = services(context)
    team_id: int | None = int(match.group(2)) or None
    async with svc.db.session() as session:
        if team_id is not None and await teams.get(session, team_id) is None:
            await query.answer(t.gettext(EXPIRED), show_alert=True)
            return None
        patrol, created = await patrols.start(session, user.id, team_id, svc.clock())
    await query.answer()
    area = await _area_name(context, t, patrol.team_id)
    if created:
        log.info("patrol %s started", patrol.id)
        text = t.gettext(
            "🚶 Patrol started in <b>{area}</b> at {time}. Stay safe. When you are back, send /patrol to end it "
            "and count the people you met and the items you handed out."
        )
    else:
        text = t.gettext("🚶 You already have a patrol running in <b>{area}</b> since {time}. Send /patrol to end it.")
    await query.edit_message_text(text.format(area=area, time=_when(context, t, patrol.started_at)))
    return ConversationHandler.END


async def on_stop(update: Update, context: Context) -> int | None:
    query, user = update.callback_query, update.effective_user
    assert query is not None and user is not None and context.user_data is not None
    assert update.effective_chat is not None
    match = await _checked(update, context)
    if match is None:
        return ConversationHandler.END
    if match.group(4) == "cancel":
        return await _cancel_button(update, context)
    t = tr(update, context)
    async with services(context).db.session() as session:
        current = await patrols.running(session, user.id)
    if match.group(1) != "stop" or current is None or current.id != int(match.group(2)):
        await query.answer(t.gettext(EXPIRED), show_alert=True)
        return ConversationHandler.END
    context.user_data[PENDING] = {"patrol": current.id, "items": {}}
    await query.answer()
    await query.edit_message_reply_markup(None)
    await context.bot.send_message(
        update.effective_chat.id,
        t.gettext("How many people did you meet on the patrol? Type a number (0 if nobody). /cancel to stop."),
    )
    return ASK_PEOPLE


async def on_people(update: Update, context: Context) -> int:
    message, user = update.effective_message, update.effective_user
    assert message is not None and message.text is not None and user is not None
    t = tr(update, context)
    pending = _pending(context)
    if pending is None:
        await message.reply_text(t.gettext(EXPIRED), reply_markup=main_menu(t))
        return ConversationHandler.END
    if not await _member_can_patrol(context, user.id):
        assert context.user_data is not None
        context.user_data.pop(PENDING, None)
        await message.reply_text(t.gettext(NOT_ALLOWED))
        return ConversationHandler.END
    text = message.text.strip()
    if _NUMBER.fullmatch(text) is None or int(text) > MAX_PEOPLE:
        await message.reply_text(
            t.gettext("Please type the number of people as digits, from 0 to {max}.").format(max=MAX_PEOPLE)
        )
        return ASK_PEOPLE
    pending["people"] = int(text)
    await message.reply_text(
        t.gettext("What did you hand out? Tap an item once for each piece, then ✅ Done."),
        reply_markup=_items_keyboard(context, t, {}),
    )
    return ASK_ITEMS


async def on_item(update: Update, context: Context) -> int | None:
    query, user = update.callback_query, update.effective_user
    assert query is not None and user is not None and context.user_data is not None
    match = await _checked(update, context)
    if match is None:
        return ConversationHandler.END
    t = tr(update, context)
    command, item = match.group(4), match.group(3)
    if command == "cancel":
        return await _cancel_button(update, context)
    pending = _pending(context)
    if pending is None or "people" not in pending:
        await query.answer(t.gettext(EXPIRED), show_alert=True)
        return ConversationHandler.END
    svc = services(context)
    kinds = svc.settings.season.item_kinds
    items = dict(pending.get("items") or {})
    if command == "done":
        return await _finish(update, context, pending)
    if command == "reset":
        items = {}
    elif item in kinds:
        items[item] = min(items.get(item, 0) + 1, MAX_ITEMS_PER_KIND)
    else:
        await query.answer(t.gettext(EXPIRED), show_alert=True)
        return None
    pending["items"] = items
    await query.answer()
    await replace_buttons(query, _items_keyboard(context, t, items))  # a second Reset changes nothing
    return None


async def _finish(update: Update, context: Context, pending: dict[str, Any]) -> int:
    query, user = update.callback_query, update.effective_user
    assert query is not None and user is not None and update.effective_chat is not None
    assert context.user_data is not None
    t = tr(update, context)
    svc = services(context)
    kinds = svc.settings.season.item_kinds
    async with svc.db.session() as session:
        stopped: Patrol | None = await patrols.stop(
            session,
            int(pending["patrol"]),
            user.id,
            svc.clock(),
            people_met=int(pending.get("people", 0)),
            items=dict(pending.get("items") or {}),
            item_kinds=kinds,
        )
    context.user_data.pop(PENDING, None)
    await query.answer()
    await query.edit_message_reply_markup(None)
    if stopped is None or stopped.ended_at is None:
        await context.bot.send_message(update.effective_chat.id, t.gettext(EXPIRED), reply_markup=main_menu(t))
        return ConversationHandler.END
    log.info("patrol %s ended", stopped.id)
    minutes = (stopped.ended_at - stopped.started_at).total_seconds() / 60
    await context.bot.send_message(
        update.effective_chat.id,
        t.gettext(
            "✅ Patrol ended: {duration} in <b>{area}</b> · {people} people met · handed out: {items}. Thank you."
        ).format(
            duration=duration_text(t, minutes),
            area=await _area_name(context, t, stopped.team_id),
            people=t.number(stopped.people_met or 0),
            items=items_text(t, clean_items(stopped.items, kinds)),
        ),
        reply_markup=main_menu(t),
    )
    return ConversationHandler.END


async def reprompt(update: Update, context: Context) -> int:
    """Anything but a number at the people step (a sticker, a photo, a menu tap)."""
    assert update.effective_message is not None
    t = tr(update, context)
    await update.effective_message.reply_text(
        t.gettext("Please type the number of people as digits, from 0 to {max}.").format(max=MAX_PEOPLE)
    )
    return ASK_PEOPLE


async def _cancel_button(update: Update, context: Context) -> int:
    query = update.callback_query
    assert query is not None
    await query.answer()
    await query.edit_message_reply_markup(None)
    return await _cancelled(update, context)


async def _cancelled(update: Update, context: Context) -> int:
    assert context.user_data is not None and update.effective_chat is not None and update.effective_user is not None
    context.user_data.pop(PENDING, None)
    t = tr(update, context)
    async with services(context).db.session() as session:
        running = await patrols.running(session, update.effective_user.id)
    text = t.gettext("OK. Your patrol is still running: send /patrol to end it.") if running else t.gettext("OK.")
    await context.bot.send_message(update.effective_chat.id, text, reply_markup=main_menu(t))
    return ConversationHandler.END


async def stale_button(update: Update, context: Context) -> None:
    """A pt| button tapped after its step ended (or forged): the role first, then "expired"."""
    query, user = update.callback_query, update.effective_user
    assert query is not None and user is not None
    allowed = await _member_can_patrol(context, user.id)
    await query.answer(tr(update, context).gettext(EXPIRED if allowed else NOT_ALLOWED), show_alert=True)


# -- wiring --------------------------------------------------------------------------------------------------------


def handlers() -> Handlers:
    private = filters.ChatType.PRIVATE
    typed = private & filters.TEXT & ~filters.COMMAND & ~filters.UpdateType.EDITED & ~any_menu_button()
    anything = private & ~filters.COMMAND & ~filters.UpdateType.EDITED
    buttons = f"^{PREFIX}\\|"
    conversation = ConversationHandler(
        entry_points=[CommandHandler("patrol", on_command, filters=private)],
        states={
            # Button steps take only their buttons: anything else the person does meanwhile goes to its own journey.
            PICK_AREA: [CallbackQueryHandler(on_area, pattern=buttons)],
            RUNNING: [CallbackQueryHandler(on_stop, pattern=buttons)],
            ASK_PEOPLE: [MessageHandler(typed, on_people), MessageHandler(anything, reprompt)],
            ASK_ITEMS: [CallbackQueryHandler(on_item, pattern=buttons)],
        },
        fallbacks=[CommandHandler("cancel", _cancelled, filters=private)],
        name="patrol",
        persistent=True,
        allow_reentry=True,
    )
    return [conversation, CallbackQueryHandler(stale_button, pattern=buttons)]
