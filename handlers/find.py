"""Journey 1: a courier shares a location (or types a place) and gets the nearest care stations in one reply."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime

from sqlalchemy.exc import SQLAlchemyError
from telegram import Message, Update
from telegram.constants import ChatAction
from telegram.error import BadRequest
from telegram.ext import (
    CallbackQueryHandler,
    CommandHandler,
    ConversationHandler,
    MessageHandler,
    filters,
)

from bot.geocoding import GeocoderUnavailable
from bot.services import Services
from handlers.common import Context, Handlers, parse_id, services, tr
from handlers.menu import FIND, any_menu_button, main_menu, menu_button
from handlers.station_views import (
    CARD_PREFIX,
    LIST_PREFIX,
    PAGE_SIZE,
    ListView,
    StationLine,
    card_keyboard,
    card_text,
    list_keyboard,
    list_text,
)
from models import staff as staff_model
from models import station_search, station_usage, stations
from models.hours import open_state

ASK_PLACE = 0
MAX_PLACE_TEXT = 300

log = logging.getLogger("waystation.find")


async def count_usage(svc: Services, station_ids: Iterable[int | None], now: datetime, *, opened: bool) -> None:
    """Station use for the season report (one upsert); a failure here never costs anyone their answer."""
    try:
        async with svc.db.session() as session:
            day = now.astimezone(svc.settings.tz).date()
            await station_usage.count(session, [i for i in station_ids if i is not None], day, opened=opened)
    except SQLAlchemyError as exc:
        log.warning("station usage not counted: %s", type(exc).__name__)


def _zone(context: Context, station: stations.Station) -> str:
    return station.timezone or services(context).settings.timezone


async def search(context: Context, view: ListView) -> tuple[list[StationLine], bool, float | None, datetime]:
    """One page of results for a view: (lines, has_more, radius_km if nothing was within it, now)."""
    svc = services(context)
    now = svc.clock()
    radius_km = svc.settings.stations.search_radius_km
    wanted = (view.page + 1) * PAGE_SIZE + 1  # one extra tells whether "More" has anything behind it
    default_zone = svc.settings.timezone

    def is_open(hours: str | None, zone: str | None, at: datetime) -> bool | None:
        return open_state(hours, zone or default_zone, at).is_open

    if view.open_now:
        wanted += PAGE_SIZE  # temporarily closed stations are dropped below: ask for a few more
    async with svc.db.session() as session:
        index = await station_search.get_index(session)
        result = await station_search.nearest(
            session,
            index,
            view.lat,
            view.lon,
            k=wanted,
            amenities=view.amenities,
            open_at=now if view.open_now else None,
            is_open=is_open if view.open_now else None,
            max_radius_m=radius_km * 1000,
        )
    found = [(hit.station, hit.distance_m) for hit in result.hits]
    if view.open_now:
        found = [(s, d) for s, d in found if s.status == stations.StationStatus.OPEN]
    page = found[view.page * PAGE_SIZE : (view.page + 1) * PAGE_SIZE]
    lines = [StationLine(s, d, open_state(s.opening_hours, _zone(context, s), now)) for s, d in page]
    # Off the reply path (updates are handled one at a time): counted in the background, never awaited here.
    context.application.create_task(count_usage(svc, [s.id for s, _d in page], now, opened=False), name="usage")
    return lines, len(found) > (view.page + 1) * PAGE_SIZE, radius_km if result.beyond_radius else None, now


async def reply_with_stations(update: Update, context: Context, view: ListView, place_label: str | None = None) -> None:
    t = tr(update, context)
    assert update.effective_message is not None
    lines, has_more, beyond, now = await search(context, view)
    await update.effective_message.reply_text(
        list_text(t, view, lines, now, beyond_radius_km=beyond, place_label=place_label),
        reply_markup=list_keyboard(t, view, lines, has_more=has_more),
    )


async def on_location(update: Update, context: Context) -> int:
    """A location at any time outside a conversation (or as the answer to /find)."""
    message = update.effective_message
    assert message is not None and message.location is not None
    await reply_with_stations(update, context, ListView(message.location.latitude, message.location.longitude))
    return ConversationHandler.END


async def ask_place(update: Update, context: Context) -> int:
    t = tr(update, context)
    assert update.effective_message is not None
    await update.effective_message.reply_text(
        t.gettext(
            "Where are you? Tap <b>📍 Nearest stations</b> below to share your location, or type an address "
            "or landmark (for example: Hutang town, Changzhou railway station). Send /cancel to stop."
        ),
        reply_markup=main_menu(t),
    )
    return ASK_PLACE


async def on_place_text(update: Update, context: Context) -> int:
    t = tr(update, context)
    message = update.effective_message
    assert message is not None and message.text is not None
    text = message.text.strip()
    if len(text) > MAX_PLACE_TEXT:
        await message.reply_text(
            t.gettext("That is too long for an address. Please type just the place name, or share your location."),
            reply_markup=main_menu(t),
        )
        return ASK_PLACE
    geocoder = services(context).geocoder
    if geocoder is None:
        await message.reply_text(
            t.gettext("Looking up typed places is not available right now. Please share your location instead."),
            reply_markup=main_menu(t),
        )
        return ASK_PLACE
    await message.reply_chat_action(ChatAction.FIND_LOCATION)
    try:
        place = await geocoder.geocode(text, t.language)
    except GeocoderUnavailable:
        await message.reply_text(
            t.gettext("The map service is not answering right now. Please try again, or share your location."),
            reply_markup=main_menu(t),
        )
        return ASK_PLACE
    if place is None:
        await message.reply_text(
            t.gettext("I could not find that place. Try another name nearby, or share your location."),
            reply_markup=main_menu(t),
        )
        return ASK_PLACE
    await reply_with_stations(update, context, ListView(place.lat, place.lon), place_label=place.label)
    return ConversationHandler.END


async def reprompt_place(update: Update, context: Context) -> int:
    t = tr(update, context)
    assert update.effective_message is not None
    await update.effective_message.reply_text(
        t.gettext("Please share your location with the button below, or type an address or landmark."),
        reply_markup=main_menu(t),
    )
    return ASK_PLACE


async def cancel_find(update: Update, context: Context) -> int:
    t = tr(update, context)
    assert update.effective_message is not None
    await update.effective_message.reply_text(
        t.gettext("Cancelled. What would you like to do?"), reply_markup=main_menu(t)
    )
    return ConversationHandler.END


async def on_list_button(update: Update, context: Context) -> None:
    """A filter toggle, "More" or "Nearer": the same message is edited to the new view."""
    query = update.callback_query
    assert query is not None and query.data is not None
    t = tr(update, context)
    view = ListView.parse(query.data)
    if view is None:
        await query.answer(t.gettext("This button is no longer valid. Please search again."), show_alert=True)
        return
    lines, has_more, beyond, now = await search(context, view)
    await query.answer()
    keyboard = list_keyboard(t, view, lines, has_more=has_more)
    if query.message is not None and getattr(query.message, "reply_markup", None) == keyboard:
        return  # a second tap on an old button: the buttons encode the view, so the message already shows it
    text = list_text(t, view, lines, now, beyond_radius_km=beyond)
    if not isinstance(query.message, Message) or query.message.text is None:
        # Data forged onto a map pin or a photo: there is no text to edit, so the list comes as a new message.
        assert update.effective_chat is not None
        await context.bot.send_message(update.effective_chat.id, text, reply_markup=keyboard)
        return
    try:
        await query.edit_message_text(text, reply_markup=keyboard)
    except BadRequest as exc:
        if "not modified" not in str(exc):
            raise


async def show_card(update: Update, context: Context, station_id: int) -> None:
    """The station card, then its map pin (sendVenue)."""
    t = tr(update, context)
    svc = services(context)
    chat = update.effective_chat
    assert chat is not None and update.effective_user is not None
    async with svc.db.session() as session:
        station = await stations.get(session, station_id)
        member = await staff_model.get(session, update.effective_user.id)
    if station is None or (station.status == stations.StationStatus.CLOSED and member is None):
        await context.bot.send_message(chat.id, t.gettext("Sorry, this station is no longer listed."))
        return
    now = svc.clock()
    state = open_state(station.opening_hours, _zone(context, station), now)
    await context.bot.send_message(
        chat.id,
        card_text(t, station, state, now, bot_username=context.bot.username),
        reply_markup=card_keyboard(
            t,
            station,
            svc.settings.stations.directions,
            staff=member is not None and member.may_update_station(station.id or 0),
        ),
    )
    await context.bot.send_venue(
        chat.id,
        latitude=station.lat,
        longitude=station.lon,
        title=station.display_name(prefer_english=t.language == "en")[:128],
        address=(station.address or station.display_name(prefer_english=t.language != "en"))[:256],
    )
    context.application.create_task(count_usage(svc, [station.id], now, opened=True), name="usage")


async def on_card_button(update: Update, context: Context) -> None:
    query = update.callback_query
    assert query is not None and query.data is not None
    station_id = parse_id(query.data.removeprefix(f"{CARD_PREFIX}|"))
    if station_id is None:
        await query.answer(
            tr(update, context).gettext("This button is no longer valid. Please search again."), show_alert=True
        )
        return
    await query.answer()
    await show_card(update, context, station_id)


def handlers() -> Handlers:
    location_filter = filters.ChatType.PRIVATE & filters.LOCATION & ~filters.UpdateType.EDITED
    conversation = ConversationHandler(
        entry_points=[
            CommandHandler("find", ask_place, filters=filters.ChatType.PRIVATE),
            MessageHandler(menu_button(FIND), ask_place),
        ],
        states={
            ASK_PLACE: [
                MessageHandler(location_filter, on_location),
                MessageHandler(any_menu_button(), cancel_find),
                MessageHandler(filters.TEXT & ~filters.COMMAND, on_place_text),
            ],
        },
        fallbacks=[
            CommandHandler("cancel", cancel_find),
            MessageHandler(filters.ChatType.PRIVATE & ~filters.COMMAND & ~filters.UpdateType.EDITED, reprompt_place),
        ],
        name="find",
        persistent=True,
        allow_reentry=True,
    )
    return [
        conversation,
        MessageHandler(location_filter, on_location),
        CallbackQueryHandler(on_list_button, pattern=f"^{LIST_PREFIX}\\|"),
        CallbackQueryHandler(on_card_button, pattern=f"^{CARD_PREFIX}\\|"),
    ]
