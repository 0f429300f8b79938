"""Putting case messages in the outbox: the staff alert cards and the requester's notifications.

Called inside the transaction that changes the case, so the change and its messages commit together (or not at all).
"""

from __future__ import annotations

from typing import Any

from sqlmodel.ext.asyncio.session import AsyncSession

from bot import escalation
from bot.i18n import Translator, translator
from bot.services import Services
from handlers import report_staff
from handlers.case_views import notification_text
from handlers.common import esc
from handlers.station_views import distance_text
from models import outbox, station_search, teams
from models.cases import Case, CaseEvent
from models.teams import Team

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
    """Post (new=True) or edit in place the case's card in the group of every team the case went to.

    A new case is routed first (teams by area and kinds, else the default team) and its escalation is armed."""
    t = translator(svc.settings.i18n.default_language)
    if new:
        await route(session, svc, case)
    case_teams = await teams.teams_of(session, case.id) if case.id is not None else []
    text, keyboard = await report_staff.render_card(session, svc, t, case, area=await area_of(session, svc, case))
    text += await team_lines(session, t, case, case_teams)
    markup = keyboard.to_dict() if keyboard is not None else None
    for chat_id in await staff_chats(session, svc, case_teams):
        key = card_key(case, chat_id)
        if not new:
            try:
                await outbox.enqueue_edit(session, key, text, reply_markup=markup)
                continue
            except outbox.UnknownCard:
                pass  # a chat added to the config after the case came in: post the card there now
        await outbox.enqueue_message(session, chat_id, text, reply_markup=markup, card_key=key)


async def route(session: AsyncSession, svc: Services, case: Case) -> list[Team]:
    """Record which teams get a new case, and start watching it for escalation (same transaction as the card)."""
    if case.id is None:
        return []
    matched, reason = await teams.route(session, case, svc.settings.teams.default_team)
    await teams.assign(session, case.id, matched, reason)
    await escalation.arm(session, svc, case, matched)
    return matched


async def default_chats(session: AsyncSession, svc: Services) -> list[int]:
    """The default team's group; without one (or without a default team), staff.alert_chat_ids."""
    fallback = await teams.default_team(session, svc.settings.teams.default_team)
    if fallback is not None and fallback.chat_id is not None:
        return [fallback.chat_id]
    return list(svc.settings.staff.alert_chat_ids)


async def staff_chats(session: AsyncSession, svc: Services, case_teams: list[Team]) -> list[int]:
    """The groups that show a case's card: its teams' groups. A case that went to no team (or only to teams
    without a group) shows in the default team's group, so no alert ever goes nowhere."""
    default_name = svc.settings.teams.default_team.strip()
    chats: list[int] = []
    for team in case_teams:
        if team.chat_id is not None:
            chats.append(team.chat_id)
        elif team.name == default_name:
            chats += svc.settings.staff.alert_chat_ids
    if not chats:
        chats = await default_chats(session, svc)
    return list(dict.fromkeys(chats))


async def team_lines(session: AsyncSession, t: Translator, case: Case, case_teams: list[Team]) -> str:
    """Extra card lines: which team(s) the case is for, and that a stale claim was released back to the queue."""
    lines = []
    if case_teams:
        lines.append(t.gettext("👥 Team: {names}").format(names=", ".join(esc(team.name) for team in case_teams)))
    if case.id is not None and case.is_open and case.claimed_by is None:
        released = await teams.released_event(session, case.id)
        if released is not None:
            idle = round(float(released.detail.get("hours", 0)))
            lines.append(
                t.ngettext(
                    "↩️ Back in the queue: the claim had no update for {n} hour.",
                    "↩️ Back in the queue: the claim had no update for {n} hours.",
                    idle,
                ).format(n=idle)
            )
    return "".join("\n" + line for line in lines)


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
