"""Journey 6, subscriber's side: /subscribe, /unsubscribe, and the buttons under a cold alert.

/subscribe asks three things — where (a shared location, kept to about 100 m, or a configured area), which messages
(cold-weather alerts, all announcements) and quiet hours — and stores them with the person's language. Run again, it
shows the subscription with a button per setting to change, and Unsubscribe. /unsubscribe deletes it in one step.
Every step has Back and Cancel; anything else (a sticker, a voice note, a 10,000-character text, an old button) gets
a short re-prompt; the draft lives in user_data, which is persisted after every update, so a restart loses nothing.

Under an alert, "📍 Nearest warm station" (``wx|near``) lists the stations with heating nearest to the place the person
subscribed with; "👀 Report someone in the cold" is the /report journey's own button (``report|start``).
"""

from __future__ import annotations

import logging
import re
from typing import Any

from telegram import (
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    KeyboardButton,
    ReplyKeyboardMarkup,
    ReplyKeyboardRemove,
    Update,
)
from telegram.ext import CallbackQueryHandler, CommandHandler, ConversationHandler, MessageHandler, filters

from bot.i18n import N_, Translator, all_translators
from handlers import find
from handlers.common import (
    Context,
    Handlers,
    esc,
    replace_buttons,
    services,
    step_tracker,
    strip_buttons,
    tr,
    weather_areas,
)
from handlers.menu import COLD_ALERTS, any_menu_button, main_menu, menu_button
from handlers.station_views import ListView
from models import weather
from models.stations import AMENITY_BIT
from models.weather import Area, Subscription

log = logging.getLogger("waystation.subscribe")

PREFIX = "ws"  # the conversation's buttons: ws|<action>[|arg]
NEAR_CALLBACK = "wx|near"  # under an alert: the warm stations near the subscriber
OFFER_CALLBACK = "wx|sub"  # the one-time offer after /start
PLACE, KINDS, QUIET, MENU = range(50, 54)
STEPS = (PLACE, KINDS, QUIET, MENU)
DRAFT = "wx_subscription"
OFFERED = "wx_offered"  # user_data flag: the /start offer was shown
MAX_TEXT = 200  # a typed area name or quiet-hours range longer than this is not one

SHARE, BACK, CANCEL = N_("📍 Share my location"), N_("◀ Back"), N_("✖ Cancel")
QUIET_PRESETS: tuple[tuple[int, int], ...] = ((22 * 60, 7 * 60), (23 * 60, 7 * 60), (21 * 60, 6 * 60))
_RANGE = re.compile(r"^\s*(\d{1,2}[:.：]\d{2})\s*[-–—~至到]\s*(\d{1,2}[:.：]\d{2})\s*$")


def _labels(msgid: str) -> set[str]:
    return {t.gettext(msgid) for t in all_translators()}


def _draft(context: Context) -> dict[str, Any]:
    assert context.user_data is not None
    draft = context.user_data.get(DRAFT)
    if not isinstance(draft, dict):
        draft = context.user_data[DRAFT] = _new_draft()
    return draft


def _new_draft() -> dict[str, Any]:
    return {"area": None, "lat": None, "lon": None, "cold": True, "all": False, "quiet": None, "editing": False}


def _from_subscription(subscription: Subscription) -> dict[str, Any]:
    quiet = [subscription.quiet_start, subscription.quiet_end] if subscription.has_quiet_hours else None
    return {
        "area": subscription.area_key,
        "lat": subscription.lat,
        "lon": subscription.lon,
        "cold": subscription.cold_alerts,
        "all": subscription.announcements,
        "quiet": quiet,
        "editing": True,
    }


def _button(label: str, action: str) -> InlineKeyboardButton:
    return InlineKeyboardButton(label, callback_data=f"{PREFIX}|{action}")


def _nav(t: Translator, *, back: bool = True) -> list[InlineKeyboardButton]:
    row = [_button(t.gettext(BACK), "back")] if back else []
    return [*row, _button(t.gettext(CANCEL), "cancel")]


def clock_text(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def quiet_text(t: Translator, quiet: list[int] | None) -> str:
    if not quiet:
        return t.gettext("🔔 No quiet hours")
    return t.gettext("🌙 Quiet hours: {start}–{end}").format(start=clock_text(quiet[0]), end=clock_text(quiet[1]))


def summary_text(t: Translator, draft: dict[str, Any], areas: dict[str, Area]) -> str:
    area = areas.get(draft.get("area") or "")
    name = esc(area.display_name(t.language)) if area is not None else t.gettext("no area")
    if draft.get("lat") is not None:
        place = t.gettext("📍 {area}, near the location you shared").format(area=name)
    else:
        place = t.gettext("📍 {area}").format(area=name)
    kinds = []
    if draft.get("cold"):
        kinds.append(t.gettext("cold-weather alerts"))
    if draft.get("all"):
        kinds.append(t.gettext("all announcements"))
    return "\n".join(
        [place, t.gettext("🔔 You get: {kinds}").format(kinds=", ".join(kinds)), quiet_text(t, draft.get("quiet"))]
    )


async def _say(update: Update, context: Context, text: str, markup: Any = None) -> None:
    assert update.effective_chat is not None
    await context.bot.send_message(update.effective_chat.id, text, reply_markup=markup)


async def _strip(query: Any) -> None:
    await strip_buttons(query)  # a second tap, or a message too old to edit


# --- the prompts ---------------------------------------------------------------------------------------------------


async def prompt(update: Update, context: Context, state: int) -> int:
    t = tr(update, context)
    draft = _draft(context)
    areas = weather_areas(context)
    _ = t.gettext
    if state == PLACE:
        keyboard = ReplyKeyboardMarkup(
            [[KeyboardButton(_(SHARE), request_location=True)], [_(BACK), _(CANCEL)]],
            resize_keyboard=True,
        )
        await _say(
            update,
            context,
            _(
                "📍 <b>Where should I watch the weather for you?</b>\n"
                "Share your location with the button below: I use it only to find the warm stations nearest to you "
                "(it is kept to about 100 m). Or pick your area."
            ),
            keyboard,
        )
        rows = [[_button(area.display_name(t.language), f"area|{key}")] for key, area in areas.items()]
        await _say(update, context, _("Or pick your area:"), InlineKeyboardMarkup([*rows, _nav(t)]))
    elif state == KINDS:
        await _say(
            update, context, _("🔔 <b>What should I send you?</b> Tap to choose, then Next."), _kinds_keyboard(t, draft)
        )
    elif state == QUIET:
        rows = [
            [_button(t.gettext("🌙 {start}–{end}").format(start=clock_text(a), end=clock_text(b)), f"quiet|{a}-{b}")]
            for a, b in QUIET_PRESETS
        ]
        rows.append([_button(_("🔔 No quiet hours"), "quiet|none")])
        await _say(
            update,
            context,
            _(
                "🌙 <b>Quiet hours?</b> Announcements that are not urgent wait until they end; cold-weather alerts "
                "still arrive, silently. Pick one, or type your own (for example 22:30-06:30)."
            ),
            InlineKeyboardMarkup([*rows, _nav(t)]),
        )
    elif state == MENU:
        rows = [
            [_button(_("📍 Place"), "edit|place"), _button(_("🔔 Messages"), "edit|kinds")],
            [_button(_("🌙 Quiet hours"), "edit|quiet")],
            [_button(_("🔕 Unsubscribe"), "stop")],
            [_button(_("✅ Done"), "done")],
        ]
        await _say(
            update,
            context,
            _("<b>Your cold-weather alerts</b>")
            + "\n"
            + summary_text(t, draft, areas)
            + "\n\n"
            + _("Change something?"),
            InlineKeyboardMarkup(rows),
        )
    return state


def _kinds_keyboard(t: Translator, draft: dict[str, Any]) -> InlineKeyboardMarkup:
    def tick(on: bool) -> str:
        return "✅ " if on else "▫️ "

    return InlineKeyboardMarkup(
        [
            [_button(tick(draft["cold"]) + t.gettext("❄️ Cold-weather alerts"), "kind|cold")],
            [_button(tick(draft["all"]) + t.gettext("📣 All announcements"), "kind|all")],
            [_button(t.gettext("Next ▶"), "next")],
            _nav(t),
        ]
    )


# --- entry, steps -------------------------------------------------------------------------------------------------


async def start(update: Update, context: Context) -> int:
    """/subscribe, the menu entry, or the offer's button: the settings of an existing subscription, else step one."""
    user = update.effective_user
    assert user is not None and context.user_data is not None
    t = tr(update, context)
    if update.callback_query is not None:
        await update.callback_query.answer()
    if not weather_areas(context):
        await _say(update, context, t.gettext("Cold-weather alerts are not set up here yet."), main_menu(t))
        return ConversationHandler.END
    async with services(context).db.session() as session:
        subscription = await weather.get_subscription(session, user.id)
    if subscription is not None and subscription.active:
        context.user_data[DRAFT] = _from_subscription(subscription)
        return await prompt(update, context, MENU)
    context.user_data[DRAFT] = _new_draft()
    return await prompt(update, context, PLACE)


async def on_place(update: Update, context: Context) -> int:
    """A shared location, or a typed area name, at the PLACE step."""
    message = update.effective_message
    assert message is not None
    t = tr(update, context)
    draft = _draft(context)
    areas = weather_areas(context)
    if message.location is not None:
        radius = services(context).settings.weather.area_radius_km * 1000
        area = weather.locate(areas.values(), message.location.latitude, message.location.longitude, radius)
        if area is None:
            names = ", ".join(esc(a.display_name(t.language)) for a in areas.values())
            await message.reply_text(
                t.gettext(
                    "That place is outside the areas I check ({areas}). Pick an area below, or share another location."
                ).format(areas=names)
            )
            return PLACE
        draft["area"] = area.key
        draft["lat"], draft["lon"] = weather.round_location(message.location.latitude, message.location.longitude)
    else:
        text = (message.text or "").strip()
        if text in _labels(CANCEL):
            return await cancel(update, context)
        if text in _labels(BACK):
            return await _back(update, context, PLACE)
        wanted = text.casefold()
        area = next(
            (a for a in areas.values() if len(text) <= MAX_TEXT and wanted in {n.casefold() for n in _names(a)}), None
        )
        if area is None:
            await message.reply_text(t.gettext("Please share your location with the button, or tap your area."))
            return PLACE
        draft["area"], draft["lat"], draft["lon"] = area.key, None, None
    name = esc(areas[draft["area"]].display_name(t.language))
    await message.reply_text(t.gettext("📍 Saved: {area}.").format(area=name), reply_markup=ReplyKeyboardRemove())
    return await _after(update, context, PLACE)


def _names(area: Area) -> set[str]:
    return {area.name, area.key, *area.names.values()}


async def _after(update: Update, context: Context, step: int) -> int:
    """After a step is answered: back to the settings when editing, else the next step (the last one saves)."""
    draft = _draft(context)
    if draft.get("editing"):
        await _save(update, context)
        return await prompt(update, context, MENU)
    if step == QUIET:
        await _save(update, context)
        t = tr(update, context)
        await _say(
            update,
            context,
            t.gettext("✅ <b>You are subscribed to cold-weather alerts.</b>")
            + "\n"
            + summary_text(t, draft, weather_areas(context))
            + "\n\n"
            + t.gettext("Change it with /subscribe; stop with /unsubscribe."),
            main_menu(t),
        )
        assert context.user_data is not None
        context.user_data.pop(DRAFT, None)
        return ConversationHandler.END
    return await prompt(update, context, STEPS[STEPS.index(step) + 1])


async def _save(update: Update, context: Context) -> None:
    user = update.effective_user
    assert user is not None
    t = tr(update, context)
    draft = _draft(context)
    quiet = draft.get("quiet") or [None, None]
    async with services(context).db.session() as session:
        await weather.save_subscription(
            session,
            user.id,
            language=t.language,
            area_key=draft.get("area"),
            lat=draft.get("lat"),
            lon=draft.get("lon"),
            cold_alerts=bool(draft.get("cold")),
            announcements=bool(draft.get("all")),
            quiet_start=quiet[0],
            quiet_end=quiet[1],
        )


async def on_button(update: Update, context: Context) -> int:
    """Every button of the conversation: ws|<action>[|arg]."""
    query = update.callback_query
    assert query is not None and context.user_data is not None
    t = tr(update, context)
    parts = (query.data or "").split("|")
    action, arg = parts[1] if len(parts) > 1 else "", parts[2] if len(parts) > 2 else ""
    state = context.user_data.get("_subscribe_state")
    draft = _draft(context)
    if action == "cancel":
        await query.answer()
        await _strip(query)
        return await cancel(update, context)
    if action == "back":
        await query.answer()
        await _strip(query)
        return await _back(update, context, state)
    if action == "area" and state == PLACE:
        areas = weather_areas(context)
        if arg not in areas:
            await query.answer(t.gettext("This button is no longer valid."), show_alert=True)
            return PLACE
        await query.answer()
        await _strip(query)
        draft["area"], draft["lat"], draft["lon"] = arg, None, None
        await _say(
            update,
            context,
            t.gettext("📍 Saved: {area}.").format(area=esc(areas[arg].display_name(t.language))),
            ReplyKeyboardRemove(),
        )
        return await _after(update, context, PLACE)
    if action == "kind" and state == KINDS and arg in ("cold", "all"):
        draft[arg] = not draft[arg]
        await query.answer()
        await replace_buttons(query, _kinds_keyboard(t, draft))
        return KINDS
    if action == "next" and state == KINDS:
        if not (draft["cold"] or draft["all"]):
            await query.answer(t.gettext("Please choose at least one."), show_alert=True)
            return KINDS
        await query.answer()
        await _strip(query)
        return await _after(update, context, KINDS)
    if action == "quiet" and state == QUIET:
        quiet = _parse_preset(arg)
        if quiet is False:
            await query.answer(t.gettext("This button is no longer valid."), show_alert=True)
            return QUIET
        draft["quiet"] = quiet
        await query.answer()
        await _strip(query)
        return await _after(update, context, QUIET)
    if state == MENU and action == "edit" and arg in ("place", "kinds", "quiet"):
        await query.answer()
        await _strip(query)
        return await prompt(update, context, {"place": PLACE, "kinds": KINDS, "quiet": QUIET}[arg])
    if state == MENU and action == "done":
        await query.answer()
        await _strip(query)
        context.user_data.pop(DRAFT, None)
        await _say(update, context, t.gettext("👍 Your cold-weather alerts stay as they are."), main_menu(t))
        return ConversationHandler.END
    if action == "stop":
        await query.answer()
        await _strip(query)
        return await unsubscribe(update, context)
    await query.answer(t.gettext("This button is no longer valid."), show_alert=True)
    return state if state in STEPS else ConversationHandler.END


def _parse_preset(arg: str) -> list[int] | bool | None:
    """ "1320-420" → [1320, 420]; "none" → None; anything else (forged) → False."""
    if arg == "none":
        return None
    start, _, end = arg.partition("-")
    if not (start.isdigit() and end.isdigit()):
        return False
    a, b = int(start), int(end)
    if not (0 <= a < 1440 and 0 <= b < 1440) or a == b:
        return False
    return [a, b]


async def on_quiet_text(update: Update, context: Context) -> int:
    """Quiet hours typed as a range ("22:30-06:30")."""
    message = update.effective_message
    assert message is not None and message.text is not None
    t = tr(update, context)
    text = message.text.strip()
    if text in _labels(CANCEL):
        return await cancel(update, context)
    match = _RANGE.match(text) if len(text) <= MAX_TEXT else None
    start = weather.parse_minutes(match.group(1).replace(".", ":").replace("：", ":").zfill(5)) if match else None
    end = weather.parse_minutes(match.group(2).replace(".", ":").replace("：", ":").zfill(5)) if match else None
    if start is None or end is None or start == end:
        await message.reply_text(t.gettext("Please tap a choice, or type the quiet hours like 22:30-06:30."))
        return QUIET
    _draft(context)["quiet"] = [start, end]
    return await _after(update, context, QUIET)


async def _back(update: Update, context: Context, state: Any) -> int:
    draft = _draft(context)
    if draft.get("editing"):
        await _say(update, context, "↩", ReplyKeyboardRemove())
        return await prompt(update, context, MENU)
    if state == PLACE or state not in STEPS:
        return await cancel(update, context)
    return await prompt(update, context, STEPS[STEPS.index(state) - 1])


async def reprompt(update: Update, context: Context) -> int:
    """Anything the current step can't use: a sticker, a voice note, a photo, text where a button is expected."""
    assert context.user_data is not None and update.effective_message is not None
    t = tr(update, context)
    state = context.user_data.get("_subscribe_state")
    state = state if state in STEPS else PLACE
    hints = {
        PLACE: t.gettext("Please share your location with the button, or tap your area."),
        KINDS: t.gettext("Please tap what you want to get, then Next."),
        QUIET: t.gettext("Please tap a choice, or type the quiet hours like 22:30-06:30."),
        MENU: t.gettext("Please use the buttons below."),
    }
    await update.effective_message.reply_text(hints[state])
    return await prompt(update, context, state)


async def cancel(update: Update, context: Context) -> int:
    assert context.user_data is not None
    t = tr(update, context)
    editing = bool(_draft(context).get("editing"))
    context.user_data.pop(DRAFT, None)
    text = (
        t.gettext("Nothing changed: your cold-weather alerts stay as they were.")
        if editing
        else t.gettext("Cancelled: you are not subscribed. Send /subscribe any time.")
    )
    await _say(update, context, text, main_menu(t))
    return ConversationHandler.END


async def leave_for_menu(update: Update, context: Context) -> int:
    """A main-menu button in the middle of the form: stop here (nothing saved) and say so."""
    return await cancel(update, context)


# --- /unsubscribe, the alert's button, the /start offer -----------------------------------------------------------


async def unsubscribe(update: Update, context: Context) -> int:
    """Delete the subscription (its place and settings) in one step."""
    user = update.effective_user
    assert user is not None and context.user_data is not None
    t = tr(update, context)
    async with services(context).db.session() as session:
        removed = await weather.unsubscribe(session, user.id)
    context.user_data.pop(DRAFT, None)
    if removed:
        text = t.gettext(
            "🔕 You are unsubscribed: no more cold-weather alerts, and the place you gave is deleted. "
            "Send /subscribe to start again."
        )
    else:
        text = t.gettext("You are not subscribed. Send /subscribe to get cold-weather alerts.")
    await _say(update, context, text, main_menu(t))
    return ConversationHandler.END


async def nearest_warm(update: Update, context: Context) -> None:
    """ "📍 Nearest warm station" under an alert: stations with heating near where the person subscribed."""
    query, user = update.callback_query, update.effective_user
    assert query is not None and user is not None
    t = tr(update, context)
    async with services(context).db.session() as session:
        subscription = await weather.get_subscription(session, user.id)
    place: tuple[float, float] | None = None
    if subscription is not None and subscription.lat is not None and subscription.lon is not None:
        place = (subscription.lat, subscription.lon)
    elif subscription is not None and subscription.area_key in weather_areas(context):
        area = weather_areas(context)[subscription.area_key or ""]
        place = (area.lat, area.lon)
    await query.answer()
    if place is None:
        await _say(
            update,
            context,
            t.gettext("Share your location with the 📍 button below to see the warm stations nearest to you."),
            main_menu(t),
        )
        return
    await find.reply_with_stations(update, context, ListView(place[0], place[1], mask=AMENITY_BIT["heating"]))


async def offer_subscribe_once(update: Update, context: Context) -> None:
    """For /start: offer cold-weather alerts to a newcomer, once (call it after the greeting)."""
    user = update.effective_user
    if user is None or context.user_data is None or context.user_data.get(OFFERED) or not weather_areas(context):
        return
    context.user_data[OFFERED] = True
    async with services(context).db.session() as session:
        if await weather.get_subscription(session, user.id) is not None:
            return
    t = tr(update, context)
    await _say(
        update,
        context,
        t.gettext("❄️ Want a message when a cold night is coming, with the warm stations open nearest to you?"),
        InlineKeyboardMarkup(
            [[InlineKeyboardButton(t.gettext("🔔 Get cold-weather alerts"), callback_data=OFFER_CALLBACK)]]
        ),
    )


_track = step_tracker("_subscribe_state", STEPS)


def handlers() -> Handlers:
    """Register before handlers/find.py: a location shared at the PLACE step belongs to this conversation."""
    private = filters.ChatType.PRIVATE & ~filters.UpdateType.EDITED
    text = private & filters.TEXT & ~filters.COMMAND
    buttons = f"^{PREFIX}\\|"

    def on(state: int, *extra: Any) -> list[Any]:
        return [CallbackQueryHandler(_track(state, on_button), pattern=buttons), *extra]

    menu = any_menu_button()
    conversation = ConversationHandler(
        entry_points=[
            CommandHandler("subscribe", _track(PLACE, start), filters=filters.ChatType.PRIVATE),
            MessageHandler(menu_button(COLD_ALERTS), _track(PLACE, start)),
            CallbackQueryHandler(_track(PLACE, start), pattern=f"^{re.escape(OFFER_CALLBACK)}$"),
        ],
        states={
            PLACE: on(
                PLACE,
                MessageHandler(private & filters.LOCATION, _track(PLACE, on_place)),
                MessageHandler(text & ~menu, _track(PLACE, on_place)),
            ),
            KINDS: on(KINDS),
            QUIET: on(QUIET, MessageHandler(text & ~menu, _track(QUIET, on_quiet_text))),
            MENU: on(MENU),
        },
        fallbacks=[
            CommandHandler("cancel", cancel),
            CommandHandler("unsubscribe", unsubscribe),
            MessageHandler(menu, leave_for_menu),
            MessageHandler(private & ~filters.COMMAND, reprompt),
        ],
        name="subscribe",
        persistent=True,
        allow_reentry=True,
    )
    return [
        conversation,
        CommandHandler("unsubscribe", unsubscribe, filters=filters.ChatType.PRIVATE),
        CallbackQueryHandler(nearest_warm, pattern=f"^{re.escape(NEAR_CALLBACK)}$"),
        CallbackQueryHandler(_expired_button, pattern=buttons),
    ]


async def _expired_button(update: Update, context: Context) -> None:
    """A button of a /subscribe conversation that has ended (or from before a restart of the form)."""
    query = update.callback_query
    assert query is not None
    await query.answer(tr(update, context).gettext("This button is no longer valid. Send /subscribe."), show_alert=True)
