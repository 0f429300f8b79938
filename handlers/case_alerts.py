"""Putting case messages in the outbox: the staff alert cards and the requester's notifications.

Called inside the transaction that changes the case, so the change and its messages commit together (or not at all).
"""

from __future__ import annotations

from typing import Any

from sqlmodel.ext.asyncio.session import AsyncSession

from bot.i18n import translator
from bot.services import Services
from handlers.case_views import card_keyboard, card_text, notification_text
from handlers.station_views import distance_text
from models import outbox, station_search
from models.cases import Case, CaseEvent

# Beyond this, "near <station>" says nothing useful about where the person is.
AREA_STATION_RADIUS_M = 5_000


def card_key(case: Case, chat_id: int) -> str:
    return f"case:{case.id}:chat:{chat_id}"


async def area_of(session: AsyncSession, svc: Services, case: Case) -> str | None:
    """A staff-readable area: the nearest station to the shared location, else the typed place."""
    t = translator(svc.settings.i18n.default_language)
    if case.lat is not None and case.lon is not None:
        index = await station_search.get_index(session)
        found = await station_search.nearest(
            session, index, case.lat, case.lon, k=1, max_radius_m=AREA_STATION_RADIUS_M
        )
        if found.hits and not found.beyond_radius:
            hit = found.hits[0]
            name = hit.station.display_name(prefer_english=t.language == "en")
            return t.gettext("near {station} ({distance})").format(
                station=name, distance=distance_text(t, hit.distance_m)
            )
        return t.gettext("{lat}, {lon} (no station nearby)").format(lat=f"{case.lat:.3f}", lon=f"{case.lon:.3f}")
    return case.place_text


async def enqueue_cards(session: AsyncSession, svc: Services, case: Case, *, new: bool) -> None:
    """Post (new=True) or edit in place the case's card in every staff alert chat."""
    t = translator(svc.settings.i18n.default_language)
    text = card_text(t, case, now=svc.clock(), tz=svc.settings.timezone, area=await area_of(session, svc, case))
    keyboard = card_keyboard(t, case)
    markup = keyboard.to_dict() if keyboard is not None else None
    for chat_id in svc.settings.staff.alert_chat_ids:
        key = card_key(case, chat_id)
        if not new:
            try:
                await outbox.enqueue_edit(session, key, text, reply_markup=markup)
                continue
            except outbox.UnknownCard:
                pass  # a chat added to the config after the case came in: post the card there now
        await outbox.enqueue_message(session, chat_id, text, reply_markup=markup, card_key=key)


async def enqueue_notification(
    session: AsyncSession, case: Case, event: CaseEvent, *, reply_markup: dict[str, Any] | None = None
) -> None:
    """Tell the requester, in their language, that their case changed (once per event)."""
    if case.requester_id is None or event.id is None:
        return
    t = translator(case.language)
    await outbox.enqueue_message(
        session,
        case.requester_id,
        notification_text(t, case, event),
        reply_markup=reply_markup,
        dedupe_key=f"case:{case.id}:event:{event.id}",
    )
