"""/station for staff: set a station's status or notice in two taps, confirm it is still correct, review reports.

The staff role is re-read from the database on every command and every button: a button drawn for staff and tapped
later (or forged by anyone) does nothing unless the person may update that station now.
"""

from __future__ import annotations

from telegram import InlineKeyboardButton, InlineKeyboardMarkup, Update
from telegram.ext import CallbackQueryHandler, CommandHandler, ConversationHandler, MessageHandler, filters

from bot.i18n import N_, Translator
from handlers.common import Context, Handlers, edit_in_place, esc, parse_id, services, tr
from handlers.menu import main_menu
from handlers.station_views import open_text, station_name
from models import staff as staff_model
from models import station_feedback, stations
from models.hours import open_state
from models.staff import Staff
from models.stations import Station, StationStatus

PANEL, ACTION = "sp", "sa"
AWAIT_NOTICE = 0
MAX_NOTICE = 200
NOTICE_KEY = "notice_station"
NOT_THIS_STATION = N_("Sorry, only this station's staff can do that.")
ONLY_REVIEWERS = N_("Sorry, only coordinators can read these reports.")

# action -> (new status, preset notice code or None); "normal" clears the notice.
PRESETS: dict[str, tuple[StationStatus, str | None]] = {
    "food": (StationStatus.OPEN, "food_box_empty"),
    "closed": (StationStatus.TEMPORARILY_CLOSED, "closed_today"),
    "normal": (StationStatus.OPEN, None),
}


async def _staff_for(context: Context, user_id: int, station_id: int) -> tuple[Staff | None, Station | None]:
    async with services(context).db.session() as session:
        return await staff_model.get(session, user_id), await stations.get(session, station_id)


def panel_text(t: Translator, context: Context, station: Station, open_reports: int, note: str | None = None) -> str:
    svc = services(context)
    now = svc.clock()
    state = open_state(station.opening_hours, station.timezone or svc.settings.timezone, now)
    lines = [f"<b>{station_name(t, station)}</b>", open_text(t, station, state, now)]
    if station.alert and station.status != StationStatus.TEMPORARILY_CLOSED:
        lines.append(t.gettext("⚠️ Notice: {notice}").format(notice=esc(station.alert)))
    verified = station.last_verified.isoformat() if station.last_verified else t.gettext("not yet")
    lines.append(t.gettext("✔ Last verified: {date}").format(date=verified))
    if open_reports:
        lines.append(
            t.ngettext("📝 {n} report of wrong info", "📝 {n} reports of wrong info", open_reports).format(
                n=open_reports
            )
        )
    lines += ["", note or t.gettext("What has changed?")]
    return "\n".join(lines)


def panel_keyboard(t: Translator, station_id: int, open_reports: int, can_review: bool) -> InlineKeyboardMarkup:
    def act(label: str, action: str) -> InlineKeyboardButton:
        return InlineKeyboardButton(label, callback_data=f"{ACTION}|{station_id}|{action}")

    rows = [
        [act(t.gettext("🍱 Food box empty"), "food"), act(t.gettext("⛔ Closed today"), "closed")],
        [act(t.gettext("✅ Back to normal"), "normal"), act(t.gettext("✔ Still correct"), "verify")],
        [act(t.gettext("✏️ Write a notice"), "text")],
    ]
    if open_reports and can_review:
        rows.append([act(t.gettext("📝 Read reports"), "reports")])
    return InlineKeyboardMarkup(rows)


async def _open_reports(context: Context, station_id: int) -> int:
    async with services(context).db.session() as session:
        return len(await station_feedback.open_items(session, station_id))


async def send_panel(update: Update, context: Context, station: Station, member: Staff) -> None:
    t = tr(update, context)
    assert update.effective_chat is not None and station.id is not None
    reports = await _open_reports(context, station.id)
    await context.bot.send_message(
        update.effective_chat.id,
        panel_text(t, context, station, reports),
        reply_markup=panel_keyboard(t, station.id, reports, member.can("station.review")),
    )


async def station_command(update: Update, context: Context) -> None:
    t = tr(update, context)
    message, user = update.effective_message, update.effective_user
    assert message is not None and user is not None
    async with services(context).db.session() as session:
        member = await staff_model.get(session, user.id)
        station = None
        if member is not None and context.args:
            station = await stations.get_by_external_id(session, context.args[0][:128])
        elif member is not None and member.station_id is not None:
            station = await stations.get(session, member.station_id)
    if member is None or not member.can("station.update"):
        await message.reply_text(t.gettext("This command is for station staff."), reply_markup=main_menu(t))
        return
    if station is not None and station.id is not None and not member.may_update_station(station.id):
        await message.reply_text(t.gettext(NOT_THIS_STATION))  # (a keeper naming another station)
        return
    if station is None or station.id is None:
        await message.reply_text(
            t.gettext(
                "Which station? Send /station followed by its id, or open the station's card "
                "(📍 Nearest stations) and tap 🛠 Update status."
            )
        )
        return
    await send_panel(update, context, station, member)


async def refuse(update: Update, context: Context) -> None:
    query = update.callback_query
    assert query is not None
    await query.answer(tr(update, context).gettext(NOT_THIS_STATION), show_alert=True)


def _parse(data: str, prefix: str) -> tuple[int, str] | None:
    parts = data.split("|")
    station_id = parse_id(parts[1]) if len(parts) >= 2 and parts[0] == prefix else None
    if station_id is None:
        return None
    return station_id, parts[2] if len(parts) > 2 else ""


async def on_panel_button(update: Update, context: Context) -> None:
    """🛠 on a station card: open the panel (staff only, checked now)."""
    query = update.callback_query
    assert query is not None and query.data is not None and update.effective_user is not None
    parsed = _parse(query.data, PANEL)
    member, station = await _staff_for(context, update.effective_user.id, parsed[0]) if parsed else (None, None)
    if member is None or station is None or station.id is None or not member.may_update_station(station.id):
        await refuse(update, context)
        return
    await query.answer()
    await send_panel(update, context, station, member)


async def on_action(update: Update, context: Context) -> int | None:
    """A status button on the panel. Returns AWAIT_NOTICE when the staff member chose to write a notice."""
    query = update.callback_query
    user = update.effective_user
    assert query is not None and query.data is not None and user is not None
    t = tr(update, context)
    parsed = _parse(query.data, ACTION)
    member, station = await _staff_for(context, user.id, parsed[0]) if parsed else (None, None)
    if parsed is None or member is None or station is None or station.id is None:
        await refuse(update, context)
        return ConversationHandler.END
    if not member.may_update_station(station.id):
        await refuse(update, context)
        return ConversationHandler.END
    station_id, action = parsed
    db = services(context).db
    note = None
    if action in PRESETS:
        status, code = PRESETS[action]
        async with db.session() as session:
            station = await stations.set_status(session, station_id, status=status, alert_code=code) or station
        note = t.gettext("✅ Saved. Searches show it from now on.")
    elif action == "verify":
        async with db.session() as session:
            station = await stations.mark_verified(session, station_id) or station
        note = t.gettext("✅ Thank you: marked as checked today.")
    elif action == "text":
        await query.answer()
        assert context.user_data is not None
        context.user_data[NOTICE_KEY] = station_id
        await context.bot.send_message(
            user.id,
            t.gettext(
                "Type the notice (up to {n} characters). It is shown on the station card. /cancel to stop."
            ).format(n=MAX_NOTICE),
        )
        return AWAIT_NOTICE
    elif action == "reports" and member.can("station.review"):
        await query.answer()
        await send_reports(update, context, station)
        return ConversationHandler.END
    elif action == "reports":
        await query.answer(t.gettext(ONLY_REVIEWERS), show_alert=True)
        return ConversationHandler.END
    else:
        await refuse(update, context)
        return ConversationHandler.END
    await query.answer(note)
    reports = await _open_reports(context, station_id)
    await edit_in_place(  # the same button twice: the panel already says so
        query,
        panel_text(t, context, station, reports, note),
        panel_keyboard(t, station_id, reports, member.can("station.review")),
    )
    return ConversationHandler.END


async def send_reports(update: Update, context: Context, station: Station) -> None:
    t = tr(update, context)
    assert update.effective_chat is not None and station.id is not None
    async with services(context).db.session() as session:
        items = await station_feedback.open_items(session, station.id)
        await station_feedback.mark_reviewed(session, station.id)
    lines = [t.gettext("<b>Reports of wrong info: {station}</b>").format(station=station_name(t, station))]
    lines += [f"• {item.created_at:%Y-%m-%d}: {esc(item.text)}" for item in items]
    lines.append(t.gettext("They are now marked as read."))
    text = "\n".join(lines)
    await context.bot.send_message(update.effective_chat.id, text[:4000])


async def on_notice_text(update: Update, context: Context) -> int:
    t = tr(update, context)
    message, user = update.effective_message, update.effective_user
    assert message is not None and message.text is not None and user is not None and context.user_data is not None
    text = message.text.strip()
    if len(text) > MAX_NOTICE:
        await message.reply_text(
            t.gettext("That is {length} characters; please shorten it to {n}.").format(length=len(text), n=MAX_NOTICE)
        )
        return AWAIT_NOTICE
    station_id = int(context.user_data.get(NOTICE_KEY, 0))
    member, station = await _staff_for(context, user.id, station_id)
    if member is None or station is None or not member.may_update_station(station_id):
        context.user_data.pop(NOTICE_KEY, None)
        await message.reply_text(t.gettext(NOT_THIS_STATION))
        return ConversationHandler.END
    async with services(context).db.session() as session:
        status = StationStatus(station.status)
        await stations.set_status(session, station_id, status=status, alert=text)
    context.user_data.pop(NOTICE_KEY, None)
    await message.reply_text(t.gettext("✅ Saved. Searches show it from now on."), reply_markup=main_menu(t))
    return ConversationHandler.END


async def reprompt_notice(update: Update, context: Context) -> int:
    assert update.effective_message is not None
    await update.effective_message.reply_text(
        tr(update, context).gettext("Please type the notice as text, or send /cancel.")
    )
    return AWAIT_NOTICE


async def cancel_notice(update: Update, context: Context) -> int:
    t = tr(update, context)
    assert update.effective_message is not None and context.user_data is not None
    context.user_data.pop(NOTICE_KEY, None)
    await update.effective_message.reply_text(
        t.gettext("Cancelled. What would you like to do?"), reply_markup=main_menu(t)
    )
    return ConversationHandler.END


def handlers() -> Handlers:
    private = filters.ChatType.PRIVATE
    return [
        ConversationHandler(
            entry_points=[CallbackQueryHandler(on_action, pattern=f"^{ACTION}\\|")],
            states={
                AWAIT_NOTICE: [
                    MessageHandler(private & filters.TEXT & ~filters.COMMAND, on_notice_text),
                    CallbackQueryHandler(on_action, pattern=f"^{ACTION}\\|"),
                ]
            },
            fallbacks=[
                CommandHandler("cancel", cancel_notice),
                MessageHandler(private & ~filters.COMMAND & ~filters.UpdateType.EDITED, reprompt_notice),
            ],
            name="station_notice",
            persistent=True,
            allow_reentry=True,
        ),
        CommandHandler("station", station_command),
        CallbackQueryHandler(on_panel_button, pattern=f"^{PANEL}\\|"),
    ]
