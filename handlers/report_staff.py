"""Journey 5, staff side: the report card — Going / Found / Not found / Resolve / Details — and the reporter's outcome.

A report is a case, so its card is posted and edited by ``handlers.case_alerts`` (routed by area, through the outbox);
``render_card()`` is the one dispatch on ``case.kind`` that case_alerts calls for every card. Every button re-checks
the role with ``case_staff.may_act`` on every tap (forged data and old buttons are answered, never acted on twice).
Going is a claim, so escalation treats reports like requests; Found / Not found record the search (the season
statistics count them); Resolve asks for the outcome in the staff member's private chat with stateless buttons, so a
restart in between loses nothing. The reporter is told the outcome only if they asked, in their language.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from sqlmodel.ext.asyncio.session import AsyncSession
from telegram import CallbackQuery, InlineKeyboardButton, InlineKeyboardMarkup, Message, Update
from telegram.error import BadRequest, Forbidden
from telegram.ext import CallbackQueryHandler

from bot.i18n import N_, Translator, translator
from bot.services import Services
from handlers import case_alerts
from handlers.case_views import age_text, card_keyboard, card_text, status_text, when
from handlers.common import Context, Handlers, esc, services, tr
from models import cases, outbox, reports
from models import staff as staff_model
from models.cases import Case, CaseKind, CaseStatus
from models.reports import ReportDetails, Search
from models.staff import Staff

log = logging.getLogger("waystation.reports")

STAFF_PREFIX = "rs"  # rs|<action>|<case id>, and rs|out|<case id>|<outcome> in the staff member's private chat
_CARD_DATA = re.compile(r"rs\|(going|found|notfound|resolve|details|keep)\|([0-9]{1,10})")
_OUTCOME_DATA = re.compile(r"rs\|out\|([0-9]{1,10})\|([a-z_]{1,24})")

MAX_ON_CARD = 300  # landmark and description on the group card; Details has them in full

# When the person was seen (the form's buttons, the card, the review).
SEEN_LABELS: dict[str, str] = {
    "now": N_("Right now"),
    "within_hour": N_("Within the last hour"),
    "earlier_today": N_("Earlier today"),
    "last_night": N_("Last night"),
}

OUTCOME_LABELS: dict[str, str] = {
    "helped_on_the_spot": N_("helped on the spot"),
    "taken_to_shelter": N_("taken to a station or shelter"),
    "refused_help": N_("refused help"),
    "emergency_services": N_("emergency services called"),
    "already_gone": N_("already gone"),
}

# What the reporter reads when the report closes (no details about the person beyond the outcome).
OUTCOME_MESSAGES: dict[str, str] = {
    "helped_on_the_spot": N_(
        "Thank you for your report {reference}. The outreach team found the person and helped them on the spot."
    ),
    "taken_to_shelter": N_(
        "Thank you for your report {reference}. The outreach team found the person and took them to a warm care "
        "station or shelter."
    ),
    "refused_help": N_(
        "Thank you for your report {reference}. The outreach team found the person; they did not want help this "
        "time. The team knows the place now and may go back."
    ),
    "emergency_services": N_(
        "Thank you for your report {reference}. The outreach team found the person and called the emergency "
        "services for them."
    ),
    "already_gone": N_(
        "Thank you for your report {reference}. The outreach team went to the place, but the person had already "
        "gone. Reports like yours still help the team know where to look."
    ),
}

NOT_STAFF = N_("Sorry, only staff can act on reports.")
NOT_VALID = N_("Sorry, this button is not valid any more.")
CLOSED = N_("This report is already closed.")
OTHER_TEAM = N_("This report belongs to another team: only that team or a coordinator can act on it.")


# -- rendering ------------------------------------------------------------------------------------------------------


def _short(text: str, limit: int = MAX_ON_CARD) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


def seen_text(t: Translator, seen: str | None, typed: str | None) -> str:
    """When the person was seen: a choice's label, or the reporter's own words (escaped)."""
    if seen in SEEN_LABELS:
        return t.gettext(SEEN_LABELS[seen])
    return esc(typed) if typed else "—"


def outcome_label(t: Translator, outcome: str) -> str:
    return t.gettext(OUTCOME_LABELS[outcome]) if outcome in OUTCOME_LABELS else outcome


def _urgent_line(t: Translator, case: Case) -> str | None:
    flags = []
    if case.danger:
        flags.append(t.gettext("🚨 hurt or unconscious"))
    if case.minor:
        flags.append(t.gettext("🧒 a child"))
    return t.gettext("⚠️ Urgent: {flags}").format(flags=", ".join(flags)) if flags else None


def _facts(t: Translator, case: Case, details: ReportDetails | None, *, full: bool) -> list[str]:
    """The lines the card and the details share: urgency, people, when, where, what."""
    lines = [t.gettext("👀 Report: someone out in the cold")]
    urgent = _urgent_line(t, case)
    if urgent:
        lines.append(urgent)
    if details is not None:
        lines.append(t.ngettext("👥 {n} person", "👥 {n} people", details.people).format(n=details.people))
        lines.append(t.gettext("🕒 Seen: {when}").format(when=seen_text(t, details.seen, details.seen_text)))
    if case.place_text:
        place = case.place_text if full else _short(case.place_text)
        lines.append(t.gettext("🏷 Landmark: {place}").format(place=esc(place)))
    if case.description:
        text = case.description if full else _short(case.description)
        lines.append(t.gettext("📝 {text}").format(text=esc(text)))
    return lines


def _progress(t: Translator, case: Case, details: ReportDetails | None, tz: str) -> list[str]:
    """Who is going, what the search found, how it ended."""
    lines = []
    if case.claimed_by_name and case.status in (CaseStatus.CLAIMED, CaseStatus.NEED_INFO):
        lines.append(
            t.gettext("🚶 On the way: {name} ({time})").format(
                name=esc(case.claimed_by_name), time=when(t, case.claimed_at, tz)
            )
        )
    if details is not None and details.found is not None:
        name = esc(details.searched_by_name or t.gettext("staff"))
        moment = when(t, details.searched_at, tz)
        if details.found:
            lines.append(t.gettext("👀 Found by {name} at {time}").format(name=name, time=moment))
        else:
            lines.append(t.gettext("❌ Not found by {name} at {time}").format(name=name, time=moment))
    if case.status == CaseStatus.RESOLVED and details is not None and details.outcome:
        lines.append(t.gettext("✅ Outcome: {outcome}").format(outcome=outcome_label(t, details.outcome)))
    if case.last_note:  # e.g. what the reporter added later through /status
        lines.append(t.gettext("💬 Last note: {note}").format(note=esc(_short(case.last_note))))
    return lines


def report_card_text(
    t: Translator, case: Case, details: ReportDetails | None, *, now: datetime, tz: str, area: str | None
) -> str:
    """The card in the staff group: enough to decide and go; the pin, the photo and the reporter are in Details."""
    lines = [f"{status_text(t, case)} · <b>{esc(case.reference)}</b>"]
    lines += _facts(t, case, details, full=False)
    lines.append(t.gettext("📍 Area: {area}").format(area=esc(area) if area else t.gettext("not given")))
    extras = []
    if case.lat is not None and case.lon is not None:
        extras.append(t.gettext("🗺 pin"))
    if details is not None and details.photo_file_id:
        extras.append(t.gettext("📷 photo"))
    if extras:
        lines.append(t.gettext("📂 In the details: {items}").format(items=", ".join(extras)))
    if details is not None and details.may_contact:
        lines.append(t.gettext("☎️ The reporter may be contacted"))
    else:
        lines.append(t.gettext("🙈 Anonymous reporter"))
    lines.append(
        t.gettext("🕒 Received {time} ({age})").format(
            time=when(t, case.created_at, tz), age=age_text(t, case.created_at, now)
        )
    )
    lines += _progress(t, case, details, tz)
    return "\n".join(lines)


def report_card_keyboard(t: Translator, case: Case, details: ReportDetails | None) -> InlineKeyboardMarkup | None:
    if not case.is_open:
        return None

    def button(label: str, action: str) -> InlineKeyboardButton:
        return InlineKeyboardButton(label, callback_data=f"{STAFF_PREFIX}|{action}|{case.id}")

    first = []
    if case.status in (CaseStatus.NEW, CaseStatus.REFERRED):
        first.append(button(t.gettext("🚶 Going"), "going"))
    found = details.found if details is not None else None
    if found is not True:
        first.append(button(t.gettext("👀 Found"), "found"))
    if found is not False:
        first.append(button(t.gettext("❌ Not found"), "notfound"))
    second = [button(t.gettext("✅ Resolve"), "resolve"), button(t.gettext("📂 Details"), "details")]
    return InlineKeyboardMarkup([first, second])


async def render_card(
    session: AsyncSession, svc: Services, t: Translator, case: Case, *, area: str | None
) -> tuple[str, InlineKeyboardMarkup | None]:
    """The staff card of any case: reports get the report card, every other case the request card."""
    now, tz = svc.clock(), svc.settings.timezone
    if case.kind != CaseKind.REPORT or case.id is None:
        return card_text(t, case, now=now, tz=tz, area=area), card_keyboard(t, case)
    details = await reports.get(session, case.id)
    return report_card_text(t, case, details, now=now, tz=tz, area=area), report_card_keyboard(t, case, details)


def outcome_notification(t: Translator, case: Case, outcome: str) -> str:
    template = OUTCOME_MESSAGES.get(outcome)
    reference = f"<b>{esc(case.reference)}</b>"
    if template is None:
        return t.gettext("Your report {reference} is closed.").format(reference=reference)
    return t.gettext(template).format(reference=reference)


# -- changing a report ----------------------------------------------------------------------------------------------


async def _change(
    svc: Services, case_id: int, change: Callable[[AsyncSession], Awaitable[bool]], *, notify: str | None = None
) -> tuple[bool, Case | None, bool]:
    """Run one change; when it took effect, edit the cards (and tell the reporter) in the same transaction.

    Returns (changed, the case as it is now, whether the reporter is told)."""
    told = False
    async with svc.db.session() as session:
        if not await change(session):
            await session.rollback()
            return False, await session.get(Case, case_id, populate_existing=True), False
        case = await session.get(Case, case_id, populate_existing=True)
        assert case is not None
        await case_alerts.enqueue_cards(session, svc, case, new=False)
        details = await reports.get(session, case_id)
        if notify is not None and details is not None and details.wants_outcome and case.requester_id is not None:
            event = next((e for e in reversed(await cases.events(session, case_id)) if e.action == "resolved"), None)
            await outbox.enqueue_message(
                session,
                case.requester_id,
                outcome_notification(translator(case.language), case, notify),
                dedupe_key=f"case:{case_id}:event:{event.id if event else 'resolved'}",
            )
            told = True
        await session.commit()
    svc.wake_outbox()
    return True, case, told


async def _load(context: Context, case_id: int) -> tuple[Case | None, ReportDetails | None]:
    async with services(context).db.session() as session:
        case = await cases.get(session, case_id)
        if case is None or case.kind != CaseKind.REPORT:
            return None, None
        return case, await reports.get(session, case_id)


async def _may_act(context: Context, user_id: int, case: Case) -> Staff | None:
    """The shared authorisation check (handlers.case_staff.may_act), on every tap.

    Imported at call time: case_alerts imports this module (render_card) and case_staff imports case_alerts."""
    from handlers import case_staff

    return await case_staff.may_act(context, user_id, case)


async def _refuse(update: Update, context: Context) -> None:
    """Not allowed: say whether it is the role or the team (a responder of another team)."""
    assert update.effective_user is not None
    async with services(context).db.session() as session:
        member = await staff_model.get(session, update.effective_user.id)
    await _alert(update, context, OTHER_TEAM if member is not None and member.can("case.act") else NOT_STAFF)


def _cannot_write(exc: Exception) -> bool:
    """The staff member never opened a private chat with the bot (or blocked it)."""
    return isinstance(exc, Forbidden) or "chat not found" in str(exc).lower()


async def _alert(update: Update, context: Context, msgid: str, **values: Any) -> None:
    query = update.callback_query
    assert query is not None
    await query.answer(tr(update, context).gettext(msgid).format(**values), show_alert=True)


async def on_card_button(update: Update, context: Context) -> None:
    """Every button of a report card (and the Keep-open button of the outcome question)."""
    query, user = update.callback_query, update.effective_user
    assert query is not None and user is not None
    match = _CARD_DATA.fullmatch(query.data or "")
    case, details = await _load(context, int(match.group(2))) if match else (None, None)
    if match is None or case is None or case.id is None:
        await _alert(update, context, NOT_VALID)
        return
    member = await _may_act(context, user.id, case)
    if member is None:
        await _refuse(update, context)
        return
    action, t = match.group(1), tr(update, context)
    if action == "details":
        await send_details(update, context, case, details)
        return
    if action == "keep":
        await query.answer(t.gettext("OK, the report stays open.") if case.is_open else t.gettext(CLOSED))
        await _strip(query)
        return
    if not case.is_open:
        await _alert(update, context, CLOSED)
        return
    svc = services(context)
    case_id, staff_id, name = case.id, member.telegram_id, member.name
    if action == "going":
        won, now_case, _told = await _change(svc, case_id, lambda s: cases.claim(s, case_id, staff_id, name))
        if won:
            log.info("report %s: going", case_id)
            await query.answer(t.gettext("Thank you. The card shows you are on the way."))
        elif now_case is not None and now_case.claimed_by == user.id:
            await query.answer(t.gettext("You are already on the way to {reference}.").format(reference=case.reference))
        elif now_case is not None and now_case.is_open and now_case.claimed_by_name:
            await _alert(update, context, N_("{name} is already on the way."), name=now_case.claimed_by_name[:60])
        else:
            await _alert(update, context, CLOSED)
    elif action in ("found", "notfound"):
        found = action == "found"
        result: list[Search] = []

        async def search(session: AsyncSession) -> bool:
            result.append(await reports.record_search(session, case_id, staff_id, name, found))
            return result[0] == Search.RECORDED

        await _change(svc, case_id, search)
        if result[0] == Search.RECORDED:
            log.info("report %s: %s", case_id, "found" if found else "not found")
            await query.answer(
                t.gettext("Recorded: found. Tap Resolve when you are done.")
                if found
                else t.gettext("Recorded: not found. Tap Resolve to close the report, or go back later.")
            )
        elif result[0] == Search.UNCHANGED:
            await query.answer(t.gettext("That is already recorded."))
        else:
            await _alert(update, context, CLOSED)
    elif action == "resolve":
        await ask_outcome(update, context, case)


async def _strip(query: CallbackQuery) -> None:
    """Remove the buttons of an answered step, so an old button can't be tapped again by mistake."""
    message = query.message
    if not isinstance(message, Message) or message.reply_markup is None:
        return  # already without buttons (a second tap)
    with contextlib.suppress(BadRequest):  # too old to edit, or edited meanwhile
        await query.edit_message_reply_markup(None)


def _outcome_keyboard(t: Translator, case_id: int) -> InlineKeyboardMarkup:
    rows = [
        [InlineKeyboardButton(outcome_label(t, o).capitalize(), callback_data=f"{STAFF_PREFIX}|out|{case_id}|{o}")]
        for o in reports.OUTCOMES
    ]
    rows.append([InlineKeyboardButton(t.gettext("↩️ Keep it open"), callback_data=f"{STAFF_PREFIX}|keep|{case_id}")])
    return InlineKeyboardMarkup(rows)


async def ask_outcome(update: Update, context: Context, case: Case) -> None:
    """Resolve on the card: the outcome is chosen in the staff member's private chat."""
    query, user = update.callback_query, update.effective_user
    assert query is not None and user is not None and case.id is not None
    t = tr(update, context)
    text = t.gettext("How did report <b>{reference}</b> end?").format(reference=esc(case.reference))
    try:
        await context.bot.send_message(user.id, text, reply_markup=_outcome_keyboard(t, case.id))
    except (Forbidden, BadRequest) as exc:
        if not _cannot_write(exc):
            raise
        await _alert(
            update,
            context,
            N_("Please open a private chat with @{bot} and press Start first, then tap the button again."),
            bot=context.bot.username,
        )
        return
    await query.answer(t.gettext("I have written to you privately: continue there."))


async def on_outcome(update: Update, context: Context) -> None:
    """An outcome tapped in the private chat: close the report, edit the cards, tell the reporter if they asked."""
    query, user = update.callback_query, update.effective_user
    assert query is not None and user is not None
    match = _OUTCOME_DATA.fullmatch(query.data or "")
    case, _details = await _load(context, int(match.group(1))) if match else (None, None)
    if match is None or case is None or case.id is None or match.group(2) not in reports.OUTCOMES:
        await _alert(update, context, NOT_VALID)
        return
    member = await _may_act(context, user.id, case)
    if member is None:
        await _refuse(update, context)
        return
    t, outcome, case_id = tr(update, context), match.group(2), case.id
    if not case.is_open:
        await _alert(update, context, CLOSED)
        await _strip(query)
        return
    won, now_case, told = await _change(
        services(context),
        case_id,
        lambda s: reports.resolve(s, case_id, member.telegram_id, member.name, outcome),
        notify=outcome,
    )
    if not won or now_case is None:
        await _alert(update, context, CLOSED)
        await _strip(query)
        return
    log.info("report %s: resolved (%s)", case_id, outcome)
    await query.answer()
    text = t.gettext("✅ Report <b>{reference}</b> is closed: {outcome}.").format(
        reference=esc(now_case.reference), outcome=outcome_label(t, outcome)
    )
    if told:
        text += "\n" + t.gettext("The reporter will be told.")
    try:
        await query.edit_message_text(text)
    except BadRequest:
        assert update.effective_chat is not None
        await context.bot.send_message(update.effective_chat.id, text)


def _details_text(t: Translator, case: Case, details: ReportDetails | None, tz: str) -> str:
    lines = [
        t.gettext("📂 <b>{reference}</b> · {status}").format(reference=esc(case.reference), status=status_text(t, case))
    ]
    lines += _facts(t, case, details, full=True)
    if case.lat is not None and case.lon is not None:
        lines.append(
            t.gettext("🗺 Location: {lat}, {lon} (pin below)").format(lat=f"{case.lat:.5f}", lon=f"{case.lon:.5f}")
        )
    if details is not None and details.may_contact and case.requester_id is not None:
        link = f'<a href="tg://user?id={int(case.requester_id)}">{t.gettext("open a chat")}</a>'
        lines.append(t.gettext("☎️ Reporter: {link}").format(link=link))
    else:
        lines.append(t.gettext("🙈 Anonymous reporter"))
    lines.append(t.gettext("🕒 Received {time}").format(time=when(t, case.created_at, tz)))
    lines += _progress(t, case, details, tz)
    return "\n".join(lines)


async def send_details(update: Update, context: Context, case: Case, details: ReportDetails | None) -> None:
    """The whole report, the pin and the photo, privately to the staff member (direct replies)."""
    query, user = update.callback_query, update.effective_user
    assert query is not None and user is not None
    t, bot = tr(update, context), context.bot
    try:
        await bot.send_message(user.id, _details_text(t, case, details, services(context).settings.timezone))
    except (Forbidden, BadRequest) as exc:
        if not _cannot_write(exc):
            raise
        await _alert(
            update,
            context,
            N_("Please open a private chat with @{bot} and press Start first, then tap the button again."),
            bot=bot.username,
        )
        return
    await query.answer(t.gettext("I have sent you the details privately."))
    if case.lat is not None and case.lon is not None:
        await bot.send_location(user.id, latitude=case.lat, longitude=case.lon)
    if details is not None and details.photo_file_id:
        caption = t.gettext(
            "{reference} · photo from the reporter. Please respect the person's dignity: keep it within the team."
        ).format(reference=esc(case.reference))
        try:
            await bot.send_photo(user.id, details.photo_file_id, caption=caption)
        except BadRequest as exc:
            log.warning("report %s: the photo could not be re-sent (%s)", case.id, type(exc).__name__)


def handlers() -> Handlers:
    return [
        CallbackQueryHandler(on_outcome, pattern=f"^{STAFF_PREFIX}\\|out\\|"),
        CallbackQueryHandler(on_card_button, pattern=f"^{STAFF_PREFIX}\\|"),
    ]
