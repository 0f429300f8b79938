"""/queue for staff: the open cases of their team(s), unclaimed first and oldest first, with age and flags.

Coordinators and admins see every team. A tap on a case opens it with its full timeline (escalations included) and
the buttons of its card, which ``handlers.case_staff`` handles as if tapped on the card. The role and the team are
re-read from the database on every command and every tap.
"""

from __future__ import annotations

import re
from datetime import datetime

from telegram import InlineKeyboardButton, InlineKeyboardMarkup, Update
from telegram.constants import ChatType
from telegram.ext import CallbackQueryHandler, CommandHandler

from bot.i18n import N_, Translator
from bot.services import Services
from handlers import case_staff
from handlers.case_alerts import area_of
from handlers.case_views import CLOSING_LABELS, age_text, card_keyboard, kinds_text, status_text, urgency_line, when
from handlers.common import Context, Handlers, edit_in_place, esc, services, tr
from models import cases, teams
from models import staff as staff_model
from models.cases import Case, CaseEvent, CaseKind
from models.staff import Staff
from models.teams import Team

PREFIX = "qu"  # qu|p|<page> (a page of the queue), qu|o|<case id> (open a case)
PAGE_SIZE = 8
MAX_EVENTS = 25  # the newest events of a long timeline (the rest is summarised)
MAX_DETAIL = 200  # characters of a note or question inside the timeline
MAX_DESCRIPTION = 600

_DATA = re.compile(r"qu\|(?:(p)\|([0-9]{1,4})|(o)\|([0-9]{1,10}))")

NOT_STAFF = N_("Sorry, /queue is for staff who handle cases.")
NOT_VALID = N_("Sorry, this button is not valid any more.")

TIMELINE_LABELS: dict[str, str] = {
    "submitted": N_("received"),
    "claimed": N_("claimed by {name}"),
    "need_info": N_("{name} asked: {question}"),
    "info_added": N_("the requester added: {text}"),
    "referred": N_("{name} referred it: {note}"),
    "resolved": N_("{name} resolved it: {reason}"),
    "cancelled": N_("cancelled by the requester"),
    "escalated": N_("⏰ escalation step {step}: {targets}"),
    "claim_reminder": N_("⏰ the claimer was reminded: no update for {hours} h"),
    "released": N_("↩️ back in the queue: no update for {hours} h"),
}
TARGET_LABELS: dict[str, str] = {
    "group": N_("reminder in the group"),
    "on_call": N_("the on-call person"),
    "coordinators": N_("the coordinators"),
    "team": N_("the whole team"),
    "default_team": N_("the default team"),
}


async def _acting(context: Context, user_id: int) -> Staff | None:
    async with services(context).db.session() as session:
        member = await staff_model.get(session, user_id)
    return member if member is not None and member.can("case.act") else None


async def queue_command(update: Update, context: Context) -> None:
    t = tr(update, context)
    message, user, chat = update.effective_message, update.effective_user, update.effective_chat
    assert message is not None and user is not None and chat is not None
    if chat.type != ChatType.PRIVATE:
        await message.reply_text(t.gettext("Please send this command in a private chat with me."))
        return
    member = await _acting(context, user.id)
    if member is None:
        await message.reply_text(t.gettext(NOT_STAFF))
        return
    text, markup = await render_queue(services(context), t, member, page=0)
    await message.reply_text(text, reply_markup=markup)


async def render_queue(svc: Services, t: Translator, member: Staff, *, page: int) -> tuple[str, InlineKeyboardMarkup]:
    """One page of the queue as this staff member may see it."""
    now = svc.clock()
    async with svc.db.session() as session:
        scope = await teams.visible_team_ids(session, member, svc.settings.teams.default_team)
        open_cases = await teams.queue(session, scope)
        ids = [c.id for c in open_cases if c.id is not None]
        by_case = await teams.teams_of_cases(session, ids)
        escalated = await teams.escalation_counts(session, ids)
        scope_teams = [team for team in await teams.list_all(session) if scope is None or team.id in scope]
    pages = max(1, -(-len(open_cases) // PAGE_SIZE))
    page = min(max(page, 0), pages - 1)
    if scope is None:
        whose = t.gettext("all teams")
    else:
        whose = ", ".join(esc(team.name) for team in scope_teams) or t.gettext("your team")
    if not open_cases:
        header = t.gettext("<b>Open cases</b> ({teams}): none right now.").format(teams=whose)
        return header, InlineKeyboardMarkup([[_button(t.gettext("🔄 Refresh"), "p", 0)]])
    lines = [
        t.gettext("<b>Open cases</b> ({teams}): {n} — unclaimed first, oldest first.").format(
            teams=whose, n=len(open_cases)
        )
    ]
    rows: list[list[InlineKeyboardButton]] = []
    first = page * PAGE_SIZE
    for number, case in enumerate(open_cases[first : first + PAGE_SIZE], start=first + 1):
        lines.append(_line(t, case, number, now, by_case.get(case.id or 0, []), escalated.get(case.id or 0, 0)))
        rows.append([_button(f"{number}. {case.reference}", "o", case.id or 0)])
    navigation = []
    if page > 0:
        navigation.append(_button(t.gettext("◀ Previous page"), "p", page - 1))
    navigation.append(_button(t.gettext("🔄 Refresh"), "p", page))
    if page < pages - 1:
        navigation.append(_button(t.gettext("Next page ▶"), "p", page + 1))
    rows.append(navigation)
    if pages > 1:
        lines.append(t.gettext("Page {page} of {pages}.").format(page=page + 1, pages=pages))
    return "\n".join(lines), InlineKeyboardMarkup(rows)


def _button(label: str, action: str, value: int) -> InlineKeyboardButton:
    return InlineKeyboardButton(label, callback_data=f"{PREFIX}|{action}|{value}")


def _line(t: Translator, case: Case, number: int, now: datetime, case_teams: list[Team], escalations: int) -> str:
    parts = [
        f"{number}. {status_text(t, case)} <b>{esc(case.reference)}</b>",
        kinds_text(t, case.categories) if case.kind != CaseKind.REPORT.value else t.gettext("🧊 report"),
        age_text(t, case.created_at, now),
    ]
    flags = ""
    if case.danger:
        flags += "🚨"
    if case.minor:
        flags += "🧒"
    if escalations:
        flags += f"⏰{escalations}"
    if flags:
        parts.append(flags)
    if case.claimed_by_name:
        parts.append(t.gettext("✋ {name}").format(name=esc(case.claimed_by_name)))
    if case_teams:
        parts.append("👥 " + ", ".join(esc(team.name) for team in case_teams))
    return " · ".join(parts)


async def on_button(update: Update, context: Context) -> None:
    query, user = update.callback_query, update.effective_user
    assert query is not None and user is not None
    t = tr(update, context)
    match = _DATA.fullmatch(query.data or "")
    member = await _acting(context, user.id)
    if member is None:
        await query.answer(t.gettext(NOT_STAFF), show_alert=True)
        return
    if match is None:
        await query.answer(t.gettext(NOT_VALID), show_alert=True)
        return
    svc = services(context)
    if match.group(1):
        await query.answer()
        text, markup = await render_queue(svc, t, member, page=int(match.group(2)))
        await edit_in_place(query, text, markup)  # a refresh with nothing new leaves the list as it is
        return
    async with svc.db.session() as session:
        case = await cases.get(session, int(match.group(4)))
    if case is None:
        await query.answer(t.gettext(NOT_VALID), show_alert=True)
        return
    if await case_staff.may_act(context, user.id, case) is None:
        await query.answer(
            t.gettext("This case belongs to another team: only that team or a coordinator can act on it."),
            show_alert=True,
        )
        return
    await query.answer()
    case_text, case_markup = await render_case(svc, t, case)
    assert update.effective_chat is not None
    await context.bot.send_message(update.effective_chat.id, case_text, reply_markup=case_markup)


async def render_case(svc: Services, t: Translator, case: Case) -> tuple[str, InlineKeyboardMarkup | None]:
    """The case for staff: what the card says, with its whole timeline, and the card's buttons."""
    tz = svc.settings.timezone
    assert case.id is not None
    async with svc.db.session() as session:
        history = await cases.events(session, case.id)
        case_teams = await teams.teams_of(session, case.id)
        area = await area_of(session, svc, case)
    lines = [
        t.gettext("📂 <b>{reference}</b> · {status}").format(reference=esc(case.reference), status=status_text(t, case))
    ]
    lines.append(t.gettext("🙋 Needs: {kinds}").format(kinds=kinds_text(t, case.categories)))
    urgency = urgency_line(t, case)
    if urgency:
        lines.append(urgency)
    if case_teams:
        lines.append(t.gettext("👥 Team: {names}").format(names=", ".join(esc(team.name) for team in case_teams)))
    lines.append(t.gettext("📍 Area: {area}").format(area=esc(area) if area else t.gettext("not given")))
    if case.description:
        short = case.description[:MAX_DESCRIPTION] + ("…" if len(case.description) > MAX_DESCRIPTION else "")
        lines.append(t.gettext("📝 {text}").format(text=esc(short)))
    lines.append(
        t.gettext("🕒 Received {time} ({age})").format(
            time=when(t, case.created_at, tz), age=age_text(t, case.created_at, svc.clock())
        )
    )
    lines += ["", t.gettext("<b>Timeline</b>")]
    shown = history[-MAX_EVENTS:]
    if len(history) > len(shown):
        hidden = len(history) - len(shown)
        lines.append(t.ngettext("… {n} earlier event", "… {n} earlier events", hidden).format(n=hidden))
    lines += [f"• {when(t, event.at, tz)} — {timeline_text(t, event)}" for event in shown]
    markup = card_keyboard(t, case) if case.kind == CaseKind.REQUEST.value else None
    return "\n".join(lines), markup


def _short(value: object) -> str:
    text = str(value or "")
    return esc(text if len(text) <= MAX_DETAIL else text[:MAX_DETAIL] + "…")


def timeline_text(t: Translator, event: CaseEvent) -> str:
    """One event for staff (the requester's /status wording is written for the requester)."""
    template = TIMELINE_LABELS.get(event.action)
    if template is None:
        return esc(event.action)
    detail = dict(event.detail)
    reason = detail.get("reason")
    notify = detail.get("notify")
    targets: list[object] = notify if isinstance(notify, list) else []
    return t.gettext(template).format(
        name=esc(event.actor_name or t.gettext("staff")),
        question=_short(detail.get("question")),
        text=_short(detail.get("text")),
        note=_short(detail.get("note")),
        reason=t.gettext(CLOSING_LABELS[reason]) if reason in CLOSING_LABELS else "",
        step=esc(detail.get("step", "")),
        hours=esc(detail.get("hours", "")),
        targets=", ".join(t.gettext(TARGET_LABELS[str(x)]) if str(x) in TARGET_LABELS else esc(x) for x in targets),
    )


def handlers() -> Handlers:
    return [
        CommandHandler("queue", queue_command),
        CallbackQueryHandler(on_button, pattern=f"^{PREFIX}\\|"),
    ]
