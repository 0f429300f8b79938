"""Journey 6, coordinators' side: cold-alert approval cards, /broadcast, delivery reports; and every broadcast's text.

Rendering first (kept apart from what decides to send): the subscriber's message for a cold alert (CAP-like: headline,
valid period, figures, the warm stations open nearest to *them*, hotline, advice, two buttons), the stand-down and an
announcement, each in the subscriber's language; and the coordinators' card, one per broadcast and chat, edited in
place from draft (Approve / Edit / Dismiss) to the live delivery report (sent / pending / blocked / failed).

Then the handlers. Card buttons carry ``wb|<approve|edit|dismiss>|<broadcast id>``; the role (``can("broadcast")``)
is re-read from the database on every tap and typed step. Approve and Dismiss are one conditional UPDATE each (two
coordinators at once: exactly one decides). Edit asks for a note in the coordinator's private chat (a conversation
keyed per user, so a tap in a group and the text typed privately meet). /broadcast is a persistent conversation: text,
target areas, a preview exactly as subscribers will see it, then Send (idempotent on the draft id) — its card in the
coordinator's chat becomes the delivery report. Sending itself is bot/weather_jobs.py's job.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from babel.dates import format_skeleton, format_time
from sqlmodel.ext.asyncio.session import AsyncSession
from telegram import InlineKeyboardButton, InlineKeyboardMarkup, Update
from telegram.error import BadRequest, Forbidden
from telegram.ext import CallbackQueryHandler, CommandHandler, ConversationHandler, MessageHandler, filters

from bot.i18n import N_, Translator
from bot.services import Services
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
from handlers.menu import any_menu_button, main_menu
from handlers.station_views import distance_text, open_text, station_name
from models import staff as staff_model
from models import weather
from models.hours import OpenState
from models.stations import Station
from models.weather import Area, Broadcast, BroadcastStatus, ColdEvent, DeliveryCounts, Kind

log = logging.getLogger("waystation.broadcast")

CARD_PREFIX = "wb"  # wb|approve|<id>, wb|edit|<id>, wb|dismiss|<id>
FORM_PREFIX = "bc"  # the /broadcast conversation's buttons
NEAR_CALLBACK = "wx|near"  # "📍 Nearest warm station" under an alert (handled in handlers/subscribe.py)
REPORT_CALLBACK = "report|start"  # "👀 Report someone in the cold" (handled by the /report journey)
MAX_NOTE = 500
MAX_PREVIEW = 2500  # the draft inside an approval card; the card stays under Telegram's 4096 characters

NOT_COORDINATOR = N_("Sorry, only coordinators can send announcements.")
NOT_VALID = N_("Sorry, this button is not valid any more.")

_CARD_DATA = re.compile(r"wb\|(approve|edit|dismiss)\|([0-9]{1,10})")
EDIT_NOTE, FORM_TEXT, FORM_AREAS, FORM_PREVIEW = range(40, 44)
EDITING = "wx_note_for"  # user_data: the broadcast id whose note the coordinator is typing
DRAFT = "wx_broadcast_draft"  # user_data: the /broadcast draft


# --- rendering: what subscribers get ------------------------------------------------------------------------------


@dataclass(frozen=True)
class WarmStation:
    """A station in someone's alert: open (with heating) during the spell, its distance, its state when it starts."""

    station: Station
    distance_m: float
    state: OpenState


def moment_text(t: Translator, moment: datetime, zone: ZoneInfo) -> str:
    """ "Mon, Jan 12 22:00" in the reader's language and the area's local time."""
    local = moment.astimezone(zone)
    day = format_skeleton("MMMEd", local, locale=t.language)
    return f"{day} {format_time(local, 'HH:mm', locale=t.language)}"


def period_text(t: Translator, starts: datetime, ends: datetime, zone: ZoneInfo) -> str:
    return t.gettext("🕒 {start} – {end}").format(start=moment_text(t, starts, zone), end=moment_text(t, ends, zone))


def figures_text(t: Translator, event: ColdEvent) -> str:
    parts = []
    if event.min_temperature_c is not None:
        parts.append(t.gettext("🌡 down to {value} °C").format(value=t.number(round(event.min_temperature_c))))
    if event.min_apparent_c is not None:
        parts.append(t.gettext("🥶 feels like {value} °C").format(value=t.number(round(event.min_apparent_c))))
    if event.max_wind_kmh is not None and event.max_wind_kmh >= 20:
        parts.append(t.gettext("💨 wind up to {value} km/h").format(value=t.number(round(event.max_wind_kmh))))
    if event.snowfall_cm:
        parts.append(t.gettext("🌨 snow {value} cm").format(value=t.number(event.snowfall_cm, "#,##0.#")))
    return " · ".join(parts)


@dataclass(frozen=True)
class AlertParts:
    """An alert in the pieces that are the same for every subscriber of one language (a broadcast renders them once
    per language and only the station lines per subscriber: composing must keep up with 1,000 messages a second)."""

    head: str  # headline, valid period, figures, note, the heading of the station list
    empty: str  # the line shown when no warm station is near
    tail: str  # hotline, what to do on seeing someone in the cold, advice

    def text(self, entries: Sequence[str]) -> str:
        return "\n".join([self.head, *(entries or [self.empty]), "", self.tail])


def alert_parts(
    t: Translator,
    *,
    area: Area,
    event: ColdEvent,
    note: str | None,
    own_location: bool,
    hotline: str,
    emergency_numbers: Mapping[str, str],
) -> AlertParts:
    name = esc(area.display_name(t.language))
    head = [
        t.gettext("❄️ <b>Cold-weather alert · {area}</b>").format(area=name),
        period_text(t, event.starts_at, event.ends_at, area.zone),
    ]
    figures = figures_text(t, event)
    if figures:
        head.append(figures)
    if note:
        head += ["", t.gettext("📝 {note}").format(note=esc(note))]
    head.append("")
    if own_location:
        head.append(t.gettext("<b>Warm stations open near you</b>"))
    else:
        head.append(t.gettext("<b>Warm stations open in {area}</b>").format(area=name))
    empty = t.gettext(
        "No station with heating is listed as open nearby for these hours. "
        "Tap “📍 Nearest warm station” to see every station near you."
    )
    tail = []
    if hotline:
        tail.append(t.gettext("☎️ 24-hour hotline: <b>{number}</b>").format(number=esc(hotline)))
    numbers = " / ".join(esc(number) for number in emergency_numbers.values())
    tail.append(
        t.gettext(
            "👀 If you see someone out in the cold, tap “Report someone in the cold”. "
            "If they are in danger, call {numbers} now."
        ).format(numbers=numbers or "110")
    )
    tail.append(
        t.gettext("Stay warm: wear layers and a hat, keep dry, drink something hot, and check on older neighbours.")
    )
    return AlertParts("\n".join(head), empty, "\n".join(tail))


def station_entry(t: Translator, number: int, warm: WarmStation, starts: datetime, distance: str | None = None) -> str:
    """One line of the station list: name, distance, and whether it is open when the cold spell starts."""
    distance = distance if distance is not None else distance_text(t, warm.distance_m)
    return (
        f"{number}. <b>{station_name(t, warm.station)}</b> — {distance}\n"
        f"    {open_text(t, warm.station, warm.state, starts)}"
    )


def alert_text(
    t: Translator,
    *,
    area: Area,
    event: ColdEvent,
    note: str | None,
    stations: Sequence[WarmStation],
    own_location: bool,
    hotline: str,
    emergency_numbers: Mapping[str, str],
) -> str:
    """The cold alert for one subscriber, in their language (CAP-like: headline, period, figures, what to do)."""
    parts = alert_parts(
        t,
        area=area,
        event=event,
        note=note,
        own_location=own_location,
        hotline=hotline,
        emergency_numbers=emergency_numbers,
    )
    entries = [station_entry(t, n, warm, event.starts_at) for n, warm in enumerate(stations, start=1)]
    return parts.text(entries)


def standdown_text(t: Translator, area: Area) -> str:
    return "\n".join(
        [
            t.gettext("☀️ <b>Cold-weather alert over · {area}</b>").format(area=esc(area.display_name(t.language))),
            t.gettext(
                "The cold spell has eased. Care stations keep their usual hours: send your location at any time to "
                "find the nearest one."
            ),
            t.gettext("If you see someone who needs help, you can still report it."),
        ]
    )


def announcement_text(t: Translator, text: str) -> str:
    return t.gettext("📣 <b>Announcement from the care stations</b>") + "\n\n" + esc(text)


def message_keyboard(t: Translator, kind: str) -> InlineKeyboardMarkup | None:
    """The buttons under a broadcast message."""
    if kind == Kind.ALERT:
        return InlineKeyboardMarkup(
            [
                [InlineKeyboardButton(t.gettext("📍 Nearest warm station"), callback_data=NEAR_CALLBACK)],
                [InlineKeyboardButton(t.gettext("👀 Report someone in the cold"), callback_data=REPORT_CALLBACK)],
            ]
        )
    if kind == Kind.STANDDOWN:
        return InlineKeyboardMarkup(
            [[InlineKeyboardButton(t.gettext("👀 Report someone in the cold"), callback_data=REPORT_CALLBACK)]]
        )
    return None


# --- rendering: the coordinators' card ---------------------------------------------------------------------------


def card_key(broadcast_id: int, chat_id: int) -> str:
    return f"wx:broadcast:{broadcast_id}:chat:{chat_id}"


def _areas_label(t: Translator, broadcast: Broadcast, areas: Mapping[str, Area]) -> str:
    if not broadcast.area_keys:
        return t.gettext("all areas")
    return ", ".join(esc(areas[k].display_name(t.language)) if k in areas else esc(k) for k in broadcast.area_keys)


def _count(t: Translator, value: int) -> str:
    return t.number(value, "#,##0")


def counts_text(t: Translator, counts: DeliveryCounts) -> str:
    parts = [
        t.gettext("📬 sent {sent} of {total}").format(sent=_count(t, counts.sent), total=_count(t, counts.recipients))
    ]
    if counts.pending:
        parts.append(t.gettext("⏳ pending {n}").format(n=_count(t, counts.pending)))
    if counts.scheduled:
        parts.append(t.gettext("🌙 waiting for quiet hours {n}").format(n=_count(t, counts.scheduled)))
    if counts.blocked:
        parts.append(t.gettext("⛔ blocked {n}").format(n=_count(t, counts.blocked)))
    if counts.failed:
        parts.append(t.gettext("❌ failed {n}").format(n=_count(t, counts.failed)))
    return " · ".join(parts)


def card_text(
    t: Translator,
    broadcast: Broadcast,
    *,
    areas: Mapping[str, Area],
    event: ColdEvent | None,
    audience: int,
    counts: DeliveryCounts | None,
    preview: str | None,
    zone: ZoneInfo,
) -> str:
    """The card for coordinators: what, when, and where it stands (draft with its preview, sending, done…)."""
    area = areas.get(broadcast.area_keys[0]) if broadcast.area_keys else None
    area_name = esc(area.display_name(t.language)) if area else _areas_label(t, broadcast, areas)
    if broadcast.kind == Kind.ALERT:
        lines = [t.gettext("❄️ <b>Cold-weather alert · {area}</b>").format(area=area_name)]
    elif broadcast.kind == Kind.STANDDOWN:
        lines = [t.gettext("☀️ <b>Stand-down · {area}</b>").format(area=area_name)]
    else:
        lines = [t.gettext("📣 <b>Announcement</b> · {areas}").format(areas=_areas_label(t, broadcast, areas))]
    if event is not None and broadcast.kind == Kind.ALERT:
        lines.append(period_text(t, event.starts_at, event.ends_at, zone))
        figures = figures_text(t, event)
        if figures:
            lines.append(figures)
    if broadcast.kind == Kind.MANUAL and broadcast.urgent:
        lines.append(t.gettext("🔔 Urgent: sent during quiet hours too (silently)."))
    who = esc(broadcast.decided_by_name) if broadcast.decided_by_name else None
    status = broadcast.status
    if status == BroadcastStatus.DRAFT:
        lines.append(
            t.ngettext(
                "⏳ Waiting for approval. It will go to {n} subscriber.",
                "⏳ Waiting for approval. It will go to {n} subscribers.",
                audience,
            ).format(n=_count(t, audience))
        )
        if preview:
            if len(preview) > MAX_PREVIEW:
                preview = preview[:MAX_PREVIEW].rsplit("\n", 1)[0] + "\n…"
            lines += ["", t.gettext("<b>Draft</b>, as a subscriber at the centre of the area sees it:")]
            lines.append(f"<blockquote expandable>{preview}</blockquote>")
    elif status == BroadcastStatus.DISMISSED:
        if who:
            lines.append(t.gettext("🗑 Dismissed by {name}.").format(name=who))
        else:
            lines.append(t.gettext("⌛ Not sent: the cold spell ended before anyone approved it."))
    else:
        if who and broadcast.kind == Kind.ALERT:
            lines.append(t.gettext("✅ Approved by {name}.").format(name=who))
        lines.append(t.gettext("✅ Finished.") if status == BroadcastStatus.DONE else t.gettext("📤 Sending…"))
        if counts is not None:
            lines.append(counts_text(t, counts))
    return "\n".join(lines)


def card_keyboard(t: Translator, broadcast: Broadcast) -> InlineKeyboardMarkup | None:
    if broadcast.status != BroadcastStatus.DRAFT:
        return None
    data = f"{CARD_PREFIX}|{{}}|{broadcast.id}"
    return InlineKeyboardMarkup(
        [
            [InlineKeyboardButton(t.gettext("✅ Approve and send"), callback_data=data.format("approve"))],
            [
                InlineKeyboardButton(t.gettext("✏️ Edit note"), callback_data=data.format("edit")),
                InlineKeyboardButton(t.gettext("🗑 Dismiss"), callback_data=data.format("dismiss")),
            ],
        ]
    )


# --- handlers: the approval card ---------------------------------------------------------------------------------


async def _coordinator(context: Context, user_id: int) -> staff_model.Staff | None:
    """The staff member as stored *now*, if they may broadcast (checked on every tap and typed step)."""
    async with services(context).db.session() as session:
        member = await staff_model.get(session, user_id)
    return member if member is not None and member.can("broadcast") else None


async def refresh_cards(session: AsyncSession, svc: Services, broadcast: Broadcast) -> None:
    """Edit the broadcast's card in every chat that has it (in the caller's transaction)."""
    from bot import weather_jobs  # the jobs render cards with the same data; imported here to avoid a cycle

    await weather_jobs.enqueue_cards(session, svc, broadcast)


async def on_card(update: Update, context: Context) -> int:
    """Approve / Edit / Dismiss on an approval card (in a group or a private chat)."""
    query, user = update.callback_query, update.effective_user
    assert query is not None and user is not None
    t = tr(update, context)
    match = _CARD_DATA.fullmatch(query.data or "")
    if match is None:
        await query.answer(t.gettext(NOT_VALID), show_alert=True)
        return ConversationHandler.END
    action, broadcast_id = match.group(1), int(match.group(2))
    member = await _coordinator(context, user.id)
    if member is None:
        await query.answer(t.gettext(NOT_COORDINATOR), show_alert=True)
        return ConversationHandler.END
    svc = services(context)
    if action == "edit":
        return await _ask_note(update, context, broadcast_id)
    async with svc.db.session() as session:
        decided = await weather.decide(
            session, broadcast_id, approve=action == "approve", by=user.id, by_name=member.name
        )
        if decided is None:
            await session.rollback()
            current = await weather.get_broadcast(session, broadcast_id)
            await query.answer(_why_not(t, current), show_alert=True)
            return ConversationHandler.END
        await refresh_cards(session, svc, decided)
        await session.commit()
    svc.wake_outbox()
    log.info("broadcast %s %s by staff %s", broadcast_id, "approved" if action == "approve" else "dismissed", user.id)
    if action == "approve":
        await query.answer(t.gettext("Approved: sending now. This card shows the progress."))
    else:
        await query.answer(t.gettext("Dismissed: nothing will be sent."))
    return ConversationHandler.END


def _why_not(t: Translator, broadcast: Broadcast | None) -> str:
    if broadcast is None:
        return t.gettext(NOT_VALID)
    if broadcast.status == BroadcastStatus.DISMISSED:
        return t.gettext("This alert was dismissed.")
    return t.gettext("This alert was already approved.")


async def _ask_note(update: Update, context: Context, broadcast_id: int) -> int:
    query, user = update.callback_query, update.effective_user
    assert query is not None and user is not None and context.user_data is not None
    t = tr(update, context)
    async with services(context).db.session() as session:
        broadcast = await weather.get_broadcast(session, broadcast_id)
    if broadcast is None or broadcast.status != BroadcastStatus.DRAFT:
        await query.answer(_why_not(t, broadcast), show_alert=True)
        return ConversationHandler.END
    text = t.gettext(
        "Send the note to add to this alert (up to {n} characters), for example where extra beds are tonight. "
        "Send - to remove the note, or /cancel to leave it as it is."
    ).format(n=MAX_NOTE)
    try:
        await context.bot.send_message(user.id, text)
    except (Forbidden, BadRequest):
        await query.answer(
            t.gettext("Please open a private chat with me first (tap my name, then Start), then tap Edit again."),
            show_alert=True,
        )
        return ConversationHandler.END
    await query.answer()
    context.user_data[EDITING] = broadcast_id
    return EDIT_NOTE


async def on_note(update: Update, context: Context) -> int:
    message, user = update.effective_message, update.effective_user
    assert message is not None and user is not None and context.user_data is not None
    t = tr(update, context)
    broadcast_id = context.user_data.get(EDITING)
    if not isinstance(broadcast_id, int):
        return ConversationHandler.END
    if await _coordinator(context, user.id) is None:
        context.user_data.pop(EDITING, None)
        await message.reply_text(t.gettext(NOT_COORDINATOR))
        return ConversationHandler.END
    text = (message.text or "").strip()
    if len(text) > MAX_NOTE:
        await message.reply_text(
            t.gettext("That is {length} characters; please keep the note under {n}.").format(
                length=len(text), n=MAX_NOTE
            )
        )
        return EDIT_NOTE
    note = None if text in ("-", "—", "") else text
    svc = services(context)
    async with svc.db.session() as session:
        broadcast = await weather.set_note(session, broadcast_id, note)
        if broadcast is None:
            await session.rollback()
            current = await weather.get_broadcast(session, broadcast_id)
            context.user_data.pop(EDITING, None)
            await message.reply_text(_why_not(t, current))
            return ConversationHandler.END
        await refresh_cards(session, svc, broadcast)
        await session.commit()
    svc.wake_outbox()
    context.user_data.pop(EDITING, None)
    await message.reply_text(
        t.gettext("Note saved: the card shows the new draft. Approve it there when it is ready.")
        if note
        else t.gettext("Note removed: the card shows the new draft.")
    )
    return ConversationHandler.END


async def on_note_other(update: Update, context: Context) -> int:
    t = tr(update, context)
    assert update.effective_message is not None
    await update.effective_message.reply_text(t.gettext("Please type the note as text, or send /cancel."))
    return EDIT_NOTE


async def cancel_note(update: Update, context: Context) -> int:
    assert context.user_data is not None and update.effective_message is not None
    context.user_data.pop(EDITING, None)
    t = tr(update, context)
    await update.effective_message.reply_text(t.gettext("The note was not changed."), reply_markup=main_menu(t))
    return ConversationHandler.END


# --- handlers: /broadcast ----------------------------------------------------------------------------------------


def _draft(context: Context) -> dict[str, Any]:
    assert context.user_data is not None
    draft = context.user_data.get(DRAFT)
    if not isinstance(draft, dict):
        draft = context.user_data[DRAFT] = {"id": uuid.uuid4().hex, "text": None, "areas": [], "urgent": False}
    return draft


def _form_button(label: str, action: str) -> InlineKeyboardButton:
    return InlineKeyboardButton(label, callback_data=f"{FORM_PREFIX}|{action}")


def _nav(t: Translator) -> list[InlineKeyboardButton]:
    return [_form_button(t.gettext("◀ Back"), "back"), _form_button(t.gettext("✖ Cancel"), "cancel")]


async def _say(update: Update, context: Context, text: str, markup: Any = None) -> None:
    assert update.effective_chat is not None
    await context.bot.send_message(update.effective_chat.id, text, reply_markup=markup)


async def start_broadcast(update: Update, context: Context) -> int:
    user = update.effective_user
    assert user is not None and context.user_data is not None
    t = tr(update, context)
    if await _coordinator(context, user.id) is None:
        await _say(update, context, t.gettext(NOT_COORDINATOR), main_menu(t))
        return ConversationHandler.END
    context.user_data[DRAFT] = None
    _draft(context)
    return await _ask_text(update, context)


async def _ask_text(update: Update, context: Context) -> int:
    t = tr(update, context)
    await _say(
        update,
        context,
        t.gettext(
            "<b>New announcement</b>\n\nType the message for subscribers (up to {n} characters). "
            "You will see a preview before anything is sent."
        ).format(n=weather.MAX_TEXT),
        InlineKeyboardMarkup([[_form_button(t.gettext("✖ Cancel"), "cancel")]]),
    )
    return FORM_TEXT


async def on_text(update: Update, context: Context) -> int:
    message, user = update.effective_message, update.effective_user
    assert message is not None and user is not None
    t = tr(update, context)
    if await _coordinator(context, user.id) is None:
        return await _drop(update, context)
    text = (message.text or "").strip()
    if not text:
        return await _ask_text(update, context)
    draft = _draft(context)
    if len(text) > weather.MAX_TEXT:
        await message.reply_text(
            t.gettext("That is {length} characters; please shorten it to {n}.").format(
                length=len(text), n=weather.MAX_TEXT
            )
        )
        return FORM_TEXT
    draft["text"] = text
    if draft.get("reviewing") or not weather_areas(context):
        return await _preview(update, context)
    return await _ask_areas(update, context)


def _areas_keyboard(t: Translator, draft: dict[str, Any], areas: Mapping[str, Area]) -> InlineKeyboardMarkup:
    chosen = set(draft.get("areas") or [])
    rows = [
        [_form_button(("✅ " if key in chosen else "") + area.display_name(t.language), f"area|{key}")]
        for key, area in areas.items()
    ]
    rows.append([_form_button(("✅ " if not chosen else "") + t.gettext("🌐 All areas"), "all")])
    rows.append([_form_button(t.gettext("Next ▶"), "next")])
    rows.append(_nav(t))
    return InlineKeyboardMarkup(rows)


async def _ask_areas(update: Update, context: Context) -> int:
    t = tr(update, context)
    await _say(
        update,
        context,
        t.gettext("Who should get it? Tap the areas (none chosen: all areas), then <b>Next</b>."),
        _areas_keyboard(t, _draft(context), weather_areas(context)),
    )
    return FORM_AREAS


async def _preview(update: Update, context: Context) -> int:
    t = tr(update, context)
    draft = _draft(context)
    draft["reviewing"] = True
    areas = weather_areas(context)
    probe = Broadcast(kind=Kind.MANUAL.value, area_keys=list(draft["areas"]), urgent=bool(draft["urgent"]))
    async with services(context).db.session() as session:
        audience = await weather.count_audience(session, probe)
    await _say(update, context, t.gettext("<b>Preview</b> — subscribers will get exactly this:"))
    await _say(update, context, announcement_text(t, draft["text"]))
    summary = [
        t.ngettext(
            "It will go to {n} subscriber in: {areas}.", "It will go to {n} subscribers in: {areas}.", audience
        ).format(n=_count(t, audience), areas=_areas_label(t, probe, areas)),
        t.gettext("🔔 Urgent: yes — also to people who only asked for cold alerts, and during quiet hours (silently).")
        if draft["urgent"]
        else t.gettext("🔕 Not urgent: to people who asked for all announcements, after their quiet hours."),
    ]
    rows = [
        [_form_button(t.gettext("✅ Send now"), f"send|{draft['id'][:16]}")],
        [
            _form_button(
                t.gettext("🔕 Make it not urgent") if draft["urgent"] else t.gettext("🔔 Make it urgent"), "urgent"
            ),
        ],
        [_form_button(t.gettext("✏️ Text"), "edit_text"), _form_button(t.gettext("🗺 Areas"), "edit_areas")],
        [_form_button(t.gettext("✖ Cancel"), "cancel")],
    ]
    await _say(update, context, "\n".join(summary), InlineKeyboardMarkup(rows))
    return FORM_PREVIEW


async def on_form_button(update: Update, context: Context) -> int:
    query, user = update.callback_query, update.effective_user
    assert query is not None and user is not None and context.user_data is not None
    t = tr(update, context)
    parts = (query.data or "").split("|")
    action, arg = parts[1] if len(parts) > 1 else "", parts[2] if len(parts) > 2 else ""
    state = context.user_data.get("_broadcast_state", FORM_TEXT)
    if await _coordinator(context, user.id) is None:
        await query.answer(t.gettext(NOT_COORDINATOR), show_alert=True)
        return await _drop(update, context)
    draft = _draft(context)
    if action == "cancel":
        await query.answer()
        await _strip(query)
        return await cancel_broadcast(update, context)
    if action == "send":
        return await _send(update, context, arg)
    if state == FORM_AREAS and action in ("area", "all"):
        areas = weather_areas(context)
        chosen: list[str] = list(draft.get("areas") or [])
        if action == "all":
            chosen = []
        elif arg in areas:
            chosen = [k for k in chosen if k != arg] if arg in chosen else [*chosen, arg]
        else:
            await query.answer(t.gettext(NOT_VALID), show_alert=True)
            return FORM_AREAS
        draft["areas"] = [k for k in areas if k in chosen]
        await query.answer()
        await replace_buttons(query, _areas_keyboard(t, draft, areas))
        return FORM_AREAS
    if state == FORM_AREAS and action == "next":
        await query.answer()
        await _strip(query)
        return await _preview(update, context)
    if action == "back":
        await query.answer()
        await _strip(query)
        if state == FORM_AREAS and draft.get("text"):
            return await _ask_text(update, context)
        return await _ask_text(update, context)
    if state == FORM_PREVIEW and action == "urgent":
        await query.answer()
        await _strip(query)
        draft["urgent"] = not draft["urgent"]
        return await _preview(update, context)
    if state == FORM_PREVIEW and action == "edit_text":
        await query.answer()
        await _strip(query)
        return await _ask_text(update, context)
    if state == FORM_PREVIEW and action == "edit_areas" and weather_areas(context):
        await query.answer()
        await _strip(query)
        return await _ask_areas(update, context)
    await query.answer(t.gettext(NOT_VALID), show_alert=True)
    return state if state in (FORM_TEXT, FORM_AREAS, FORM_PREVIEW) else FORM_TEXT


async def _send(update: Update, context: Context, short_id: str) -> int:
    query, user, chat = update.callback_query, update.effective_user, update.effective_chat
    assert query is not None and user is not None and chat is not None and context.user_data is not None
    t = tr(update, context)
    draft = context.user_data.get(DRAFT)
    if not isinstance(draft, dict) or not draft.get("text") or not str(draft.get("id", "")).startswith(short_id):
        await query.answer(t.gettext("This announcement was already sent."), show_alert=True)
        return ConversationHandler.END
    member = await _coordinator(context, user.id)
    assert member is not None
    svc = services(context)
    async with svc.db.session() as session:
        broadcast, created = await weather.create_broadcast(
            session,
            Broadcast(
                kind=Kind.MANUAL.value,
                area_keys=list(draft["areas"]),
                text=draft["text"],
                urgent=bool(draft["urgent"]),
                status=BroadcastStatus.SENDING.value,
                language=t.language,
                created_by=user.id,
                decided_by=user.id,
                decided_by_name=member.name,
                idempotency_key=draft["id"],
                report_chats=[chat.id],
            ),
        )
        if created:
            from bot import weather_jobs

            await weather_jobs.post_cards(session, svc, broadcast)
        await session.commit()
    svc.wake_outbox()
    context.user_data.pop(DRAFT, None)
    await query.answer()
    await _strip(query)
    if created:
        log.info("broadcast %s (announcement) started by staff %s", broadcast.id, user.id)
    await _say(
        update,
        context,
        t.gettext("📤 Sending. The card below shows how many it has reached; it updates as it goes."),
        main_menu(t),
    )
    return ConversationHandler.END


async def _strip(query: Any) -> None:
    """Remove the buttons of an answered step, so an old button can't be tapped again by mistake."""
    await strip_buttons(query)


async def _drop(update: Update, context: Context) -> int:
    """The person is no longer a coordinator: the draft goes, with a short explanation."""
    assert context.user_data is not None
    context.user_data.pop(DRAFT, None)
    t = tr(update, context)
    await _say(update, context, t.gettext(NOT_COORDINATOR), main_menu(t))
    return ConversationHandler.END


async def cancel_broadcast(update: Update, context: Context) -> int:
    assert context.user_data is not None
    context.user_data.pop(DRAFT, None)
    t = tr(update, context)
    await _say(update, context, t.gettext("Cancelled: nothing was sent."), main_menu(t))
    return ConversationHandler.END


async def form_reprompt(update: Update, context: Context) -> int:
    """Anything the current step can't use (a sticker, a photo, text where a button is expected)."""
    assert context.user_data is not None and update.effective_message is not None
    t = tr(update, context)
    state = context.user_data.get("_broadcast_state", FORM_TEXT)
    if state == FORM_TEXT:
        await update.effective_message.reply_text(
            t.gettext("Please type the announcement as text (photos and stickers can't be broadcast).")
        )
        return await _ask_text(update, context)
    await update.effective_message.reply_text(t.gettext("Please use the buttons below."))
    if state == FORM_AREAS:
        return await _ask_areas(update, context)
    return await _preview(update, context)


async def late_button(update: Update, context: Context) -> None:
    """A /broadcast button after the conversation ended (sent, cancelled, restarted from elsewhere)."""
    query = update.callback_query
    assert query is not None
    t = tr(update, context)
    if await _coordinator(context, query.from_user.id) is None:  # forged or stale: say who may, not what happened
        await query.answer(t.gettext(NOT_COORDINATOR), show_alert=True)
    elif (query.data or "").startswith(f"{FORM_PREFIX}|send|"):
        await query.answer(t.gettext("This announcement was already sent."), show_alert=True)
    else:
        await query.answer(t.gettext(NOT_VALID), show_alert=True)


_track = step_tracker("_broadcast_state", (FORM_TEXT, FORM_AREAS, FORM_PREVIEW))


def handlers() -> Handlers:
    private = filters.ChatType.PRIVATE & ~filters.UpdateType.EDITED
    text = private & filters.TEXT & ~filters.COMMAND
    buttons = f"^{FORM_PREFIX}\\|"
    form = ConversationHandler(
        entry_points=[
            CommandHandler("broadcast", _track(FORM_TEXT, start_broadcast), filters=filters.ChatType.PRIVATE)
        ],
        states={
            FORM_TEXT: [
                CallbackQueryHandler(_track(FORM_TEXT, on_form_button), pattern=buttons),
                MessageHandler(text & ~any_menu_button(), _track(FORM_TEXT, on_text)),
            ],
            FORM_AREAS: [CallbackQueryHandler(_track(FORM_AREAS, on_form_button), pattern=buttons)],
            FORM_PREVIEW: [CallbackQueryHandler(_track(FORM_PREVIEW, on_form_button), pattern=buttons)],
        },
        fallbacks=[
            CommandHandler("cancel", cancel_broadcast),
            MessageHandler(any_menu_button(), cancel_broadcast),
            MessageHandler(private & ~filters.COMMAND, form_reprompt),
        ],
        name="broadcast",
        persistent=True,
        allow_reentry=True,
    )
    note = ConversationHandler(
        entry_points=[CallbackQueryHandler(on_card, pattern=f"^{CARD_PREFIX}\\|")],
        states={
            EDIT_NOTE: [
                MessageHandler(private & filters.TEXT & ~filters.COMMAND, on_note),
                CallbackQueryHandler(on_card, pattern=f"^{CARD_PREFIX}\\|"),
                CommandHandler("cancel", cancel_note),
                MessageHandler(private & ~filters.COMMAND, on_note_other),
            ],
        },
        fallbacks=[CommandHandler("cancel", cancel_note)],
        per_chat=False,  # the tap may be in a group, the note typed in the private chat: one conversation per user
        name="broadcast_note",
        persistent=True,
        allow_reentry=True,
    )
    return [form, note, CallbackQueryHandler(late_button, pattern=buttons)]
