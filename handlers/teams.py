"""Teams from Telegram: invite links, linking a group to a team, the weekly on-call rota, out-of-hours notices.

* ``/teams`` (admins, private chat): each team's group, members, duty hours and who is on call; buttons make a
  one-time invite link ``t.me/<bot>?start=invite_<code>`` (responder or coordinator) or a group link code.
* The invite link: ``/start invite_<code>`` → :func:`accept_invite` makes the person a member (and staff) at once.
* ``/linkteam <code>`` sent *in a group* by a team admin makes that group the team's group, so ids are never typed.
* ``/rota`` (coordinators): who is on call on each weekday; the message is edited in place.
* :func:`out_of_hours_notice`: what a requester is told when their case arrives while every team of it is off duty.
* :func:`scope_guard`: refuses case-card buttons of another team's case (``case_staff.may_act``), before case_staff.

Every button re-reads the role from the database; codes are one-time (a conditional UPDATE) and expire.
"""

from __future__ import annotations

import logging
import re
from datetime import timedelta
from typing import Literal

from babel.dates import get_day_names
from sqlmodel.ext.asyncio.session import AsyncSession
from telegram import InlineKeyboardButton, InlineKeyboardMarkup, Update
from telegram.constants import ChatType
from telegram.ext import ApplicationHandlerStop, CallbackQueryHandler, CommandHandler, filters

from bot.i18n import N_, Translator, translator
from bot.services import Services
from handlers import case_staff
from handlers.common import Context, Handlers, esc, services, tr
from handlers.menu import main_menu
from handlers.station_views import _when as relative_time
from models import cases, teams
from models import staff as staff_model
from models.cases import Case
from models.staff import Role, Staff
from models.teams import CodeKind, Team

log = logging.getLogger("waystation.teams")

TEAMS_PREFIX = "tm"  # tm|l (list), tm|v|<team>, tm|i|<team>|<role> (invite), tm|g|<team> (group link code)
ROTA_PREFIX = "rt"  # rt|l (teams), rt|w|<team> (week), rt|d|<team>|<day> (pick), rt|s|<team>|<day>|<id or 0>
INVITE_PAYLOAD = "invite_"
MAX_NAME = 200

_TEAMS_DATA = re.compile(r"tm\|(?:(l)|(v|g)\|([0-9]{1,9})|(i)\|([0-9]{1,9})\|(responder|coordinator))")
_ROTA_DATA = re.compile(
    r"rt\|(?:(l)|(w)\|([0-9]{1,9})|(d)\|([0-9]{1,9})\|([0-6])|(s)\|([0-9]{1,9})\|([0-6])\|([0-9]{1,15}))"
)
_CARD_DATA = re.compile(r"cs\|(claim|info|refer|resolve|details)\|([0-9]{1,10})")
_CODE = re.compile(r"[A-Za-z0-9_-]{1,32}")

ROLE_LABELS = {
    Role.KEEPER.value: N_("station keeper"),
    Role.RESPONDER.value: N_("responder"),
    Role.COORDINATOR.value: N_("coordinator"),
    Role.ADMIN.value: N_("admin"),
}
NOT_VALID = N_("Sorry, this button is not valid any more.")
ONLY_ADMINS = N_("Sorry, only team admins can do this.")
ONLY_COORDINATORS = N_("Sorry, only coordinators can change the rota.")
USE_PRIVATE = N_("Please send this command in a private chat with me.")
NO_TEAMS = N_("There are no teams yet. An operator adds them with: waystation teams add NAME")
OTHER_TEAM = N_("This case belongs to another team: only that team or a coordinator can act on it.")


# -- helpers --------------------------------------------------------------------------------------------------------


async def _staff(context: Context, user_id: int) -> Staff | None:
    async with services(context).db.session() as session:
        return await staff_model.get(session, user_id)


def _private(update: Update) -> bool:
    return update.effective_chat is not None and update.effective_chat.type == ChatType.PRIVATE


async def _reply(update: Update, text: str, markup: InlineKeyboardMarkup | None = None) -> None:
    assert update.effective_message is not None
    await update.effective_message.reply_text(text, reply_markup=markup)


async def _refuse(update: Update, context: Context, msgid: str) -> None:
    query = update.callback_query
    assert query is not None
    await query.answer(tr(update, context).gettext(msgid), show_alert=True)


async def _manages(session: AsyncSession, member: Staff | None, team_id: int) -> bool:
    """Invites and group links: staff admins, and admins of that team."""
    if member is None:
        return False
    if member.role == Role.ADMIN:
        return True
    return (await teams.memberships(session, member.telegram_id)).get(team_id) == Role.ADMIN


async def _managed_teams(session: AsyncSession, member: Staff | None) -> list[Team]:
    if member is None:
        return []
    everything = await teams.list_all(session)
    if member.role == Role.ADMIN:
        return everything
    roles = await teams.memberships(session, member.telegram_id)
    return [team for team in everything if roles.get(team.id or 0) == Role.ADMIN]


async def _led_teams(session: AsyncSession, member: Staff | None) -> list[Team]:
    """The teams whose rota someone may set: all for staff coordinators and admins, else the teams they lead."""
    if member is None:
        return []
    everything = await teams.list_all(session)
    if member.role in teams.LEADING_ROLES:
        return everything
    roles = await teams.memberships(session, member.telegram_id)
    return [team for team in everything if roles.get(team.id or 0) in teams.LEADING_ROLES]


def _day_names(t: Translator, width: Literal["abbreviated", "wide"] = "abbreviated") -> list[str]:
    """Monday first, in the reader's language."""
    names = get_day_names(width, locale=t.language)
    return [str(names[day]) for day in range(7)]


def _duty_line(t: Translator, svc: Services, team: Team) -> str:
    state = teams.duty(team, svc.settings.timezone, svc.clock())
    now_text = t.gettext("on duty now") if state.is_open else t.gettext("off duty now")
    return t.gettext("🕒 Duty hours: {hours} ({now})").format(hours=esc(team.duty_hours), now=now_text)


# -- /teams: invites and group link codes ---------------------------------------------------------------------------


async def teams_command(update: Update, context: Context) -> None:
    t = tr(update, context)
    if not _private(update):
        await _reply(update, t.gettext(USE_PRIVATE))
        return
    assert update.effective_user is not None
    member = await _staff(context, update.effective_user.id)
    async with services(context).db.session() as session:
        managed = await _managed_teams(session, member)
    if member is None or (not managed and member.role != Role.ADMIN):
        await _reply(update, t.gettext(ONLY_ADMINS))
        return
    text, markup = await _team_list(context, t)
    await _reply(update, text, markup)


async def _team_list(context: Context, t: Translator) -> tuple[str, InlineKeyboardMarkup | None]:
    svc = services(context)
    async with svc.db.session() as session:
        everything = await teams.list_all(session)
        counts = {team.id: len(await teams.members(session, team.id or 0)) for team in everything}
    if not everything:
        return t.gettext(NO_TEAMS), None
    lines = [t.gettext("<b>Teams</b> — tap one to invite staff or link its group.")]
    for team in everything:
        group = t.gettext("group linked") if team.chat_id is not None else t.gettext("no group yet")
        count = counts.get(team.id, 0)
        members = t.ngettext("{n} member", "{n} members", count).format(n=count)
        lines.append(f"• <b>{esc(team.name)}</b> — {members} · {group}")
    rows = [
        [InlineKeyboardButton(f"👥 {team.name}"[:60], callback_data=f"{TEAMS_PREFIX}|v|{team.id}")]
        for team in everything
    ]
    return "\n".join(lines), InlineKeyboardMarkup(rows)


async def _team_view(context: Context, t: Translator, team: Team) -> tuple[str, InlineKeyboardMarkup]:
    svc = services(context)
    assert team.id is not None
    async with svc.db.session() as session:
        people = await teams.members(session, team.id)
        on_call = await teams.on_call(session, team.id, svc.clock(), svc.settings.timezone)
    names = {m.telegram_id: m.name for m in people}
    lines = [f"<b>{esc(team.name)}</b>"]
    lines.append(t.gettext("💬 Group: linked") if team.chat_id is not None else t.gettext("💬 Group: not linked yet"))
    lines.append(_duty_line(t, svc, team))
    on_call_name = esc(names[on_call]) if on_call in names else t.gettext("nobody")
    lines.append(t.gettext("📟 On call today: {name}").format(name=on_call_name))
    listed = ", ".join(f"{esc(m.name)} ({t.gettext(ROLE_LABELS.get(m.role, m.role))})" for m in people)
    lines.append(t.gettext("👤 Members: {names}").format(names=listed or t.gettext("none yet")))
    rows = [
        [
            InlineKeyboardButton(
                t.gettext("➕ Invite a responder"), callback_data=f"{TEAMS_PREFIX}|i|{team.id}|responder"
            ),
            InlineKeyboardButton(
                t.gettext("➕ Invite a coordinator"), callback_data=f"{TEAMS_PREFIX}|i|{team.id}|coordinator"
            ),
        ],
        [InlineKeyboardButton(t.gettext("🔗 Link a group"), callback_data=f"{TEAMS_PREFIX}|g|{team.id}")],
        [InlineKeyboardButton(t.gettext("◀ All teams"), callback_data=f"{TEAMS_PREFIX}|l")],
    ]
    return "\n".join(lines), InlineKeyboardMarkup(rows)


async def on_teams_button(update: Update, context: Context) -> None:
    query, user = update.callback_query, update.effective_user
    assert query is not None and user is not None
    t = tr(update, context)
    match = _TEAMS_DATA.fullmatch(query.data or "")
    if match is None:
        await _refuse(update, context, NOT_VALID)
        return
    svc = services(context)
    member = await _staff(context, user.id)
    if match.group(1):  # the list
        async with svc.db.session() as session:
            allowed = member is not None and (member.role == Role.ADMIN or bool(await _managed_teams(session, member)))
        if not allowed:
            await _refuse(update, context, ONLY_ADMINS)
            return
        await query.answer()
        text, markup = await _team_list(context, t)
        await query.edit_message_text(text, reply_markup=markup)
        return
    team_id = int(match.group(3) or match.group(5))
    async with svc.db.session() as session:
        team = await teams.get(session, team_id)
        allowed = team is not None and await _manages(session, member, team_id)
    if team is None:
        await _refuse(update, context, NOT_VALID)
        return
    if not allowed or member is None:
        await _refuse(update, context, ONLY_ADMINS)
        return
    action = match.group(2) or match.group(4)
    if action == "v":
        await query.answer()
        text, view_markup = await _team_view(context, t, team)
        await query.edit_message_text(text, reply_markup=view_markup)
    elif action == "i":
        await _send_invite(update, context, team, Role(match.group(6)), member)
    else:
        await _send_link_code(update, context, team, member)


async def _send_invite(update: Update, context: Context, team: Team, role: Role, member: Staff) -> None:
    query = update.callback_query
    assert query is not None and team.id is not None and update.effective_chat is not None
    svc, t = services(context), tr(update, context)
    now = svc.clock()
    async with svc.db.session() as session:
        code = await teams.create_code(
            session,
            CodeKind.INVITE,
            team.id,
            now=now,
            valid_for=timedelta(hours=svc.settings.teams.invite_valid_hours),
            role=role,
            created_by=member.telegram_id,
        )
        await session.commit()
    link = f"https://t.me/{context.bot.username}?start={INVITE_PAYLOAD}{code.code}"
    text = t.gettext(
        "Invite link for a new <b>{role}</b> of <b>{team}</b>. It works once, until {time}:\n{link}\n\n"
        "Send it to the person privately. When they open it and press Start, they join the team."
    ).format(
        role=t.gettext(ROLE_LABELS[role.value]),
        team=esc(team.name),
        time=relative_time(t, code.expires_at.astimezone(svc.settings.tz), now),
        link=link,
    )
    await query.answer()
    await context.bot.send_message(update.effective_chat.id, text)
    log.info("team %s: invite created (role %s)", team.id, role.value)


async def _send_link_code(update: Update, context: Context, team: Team, member: Staff) -> None:
    query = update.callback_query
    assert query is not None and team.id is not None and update.effective_chat is not None
    svc, t = services(context), tr(update, context)
    now = svc.clock()
    async with svc.db.session() as session:
        code = await teams.create_code(
            session,
            CodeKind.LINK,
            team.id,
            now=now,
            valid_for=timedelta(hours=svc.settings.teams.link_code_valid_hours),
            created_by=member.telegram_id,
        )
        await session.commit()
    text = t.gettext(
        "To make a group the group of <b>{team}</b>: add @{bot} to the group, then send this there:\n"
        "<code>/linkteam {code}</code>\nThe code works once, until {time}."
    ).format(
        team=esc(team.name),
        bot=context.bot.username,
        code=code.code,
        time=relative_time(t, code.expires_at.astimezone(svc.settings.tz), now),
    )
    await query.answer()
    await context.bot.send_message(update.effective_chat.id, text)


# -- the invite link -----------------------------------------------------------------------------------------------


async def accept_invite(update: Update, context: Context, code: str) -> None:
    """``/start invite_<code>``: join the team with the invite's role (the code is spent; a second use is refused)."""
    user = update.effective_user
    assert user is not None
    t = tr(update, context)
    joined = await _join(services(context), code, user.id, user.first_name, user.last_name)
    if isinstance(joined, str):
        await _reply(update, t.gettext("You are already a member of <b>{team}</b>.").format(team=esc(joined)))
        return
    if joined is None:
        await _reply(
            update,
            t.gettext(
                "This invite link is not valid any more: it was used already or it has expired. "
                "Please ask the person who sent it for a new one."
            ),
        )
        return
    team, role = joined
    log.info("team %s: invite used (role %s)", team.id, role.value)
    text = t.gettext("✅ Welcome to <b>{team}</b>! You are now a {role} of the team.").format(
        team=esc(team.name), role=t.gettext(ROLE_LABELS[role.value])
    )
    text += "\n\n" + t.gettext(
        "New cases for the team appear as cards in its group, with buttons to claim them. "
        "Send /queue to see the open cases, and keep this chat: escalations come here."
    )
    assert update.effective_message is not None
    await update.effective_message.reply_text(text, reply_markup=main_menu(t))


async def _join(
    svc: Services, code: str, user_id: int, first_name: str, last_name: str | None
) -> tuple[Team, Role] | str | None:
    """Spend the invite and add the member: (team, role); the team's name if they had used it already; else None."""
    if not _CODE.fullmatch(code):
        return None
    async with svc.db.session() as session:
        spent = await teams.use_code(session, code, CodeKind.INVITE, by=user_id, now=svc.clock())
        team = await teams.get(session, spent.team_id) if spent is not None else None
        if spent is None or team is None:
            await session.rollback()
            seen = await teams.peek_code(session, code, CodeKind.INVITE)
            if seen is not None and seen.used_by == user_id:
                mine = await teams.get(session, seen.team_id)
                return mine.name if mine is not None else None
            return None
        role = Role(spent.role or Role.RESPONDER.value)
        name = " ".join(part for part in (first_name, last_name) if part)[:MAX_NAME] or str(user_id)
        await teams.add_member(session, team, user_id, name, role)
        await session.commit()
    return team, role


async def _start_with_invite(update: Update, context: Context) -> None:
    payload = context.args[0] if context.args else ""
    await accept_invite(update, context, payload.removeprefix(INVITE_PAYLOAD))


def invite_start_handler() -> CommandHandler[Context, None]:
    """``/start invite_<code>`` on its own handler (an alternative to calling accept_invite from /start)."""
    deep_link = filters.Regex(rf"^/start(@\w+)? {INVITE_PAYLOAD}\S*$")
    return CommandHandler("start", _start_with_invite, filters=filters.ChatType.PRIVATE & deep_link)


# -- /linkteam in a group ------------------------------------------------------------------------------------------


async def link_team(update: Update, context: Context) -> None:
    t = tr(update, context)
    chat, user = update.effective_chat, update.effective_user
    assert chat is not None and user is not None
    if chat.type not in (ChatType.GROUP, ChatType.SUPERGROUP):
        await _reply(update, t.gettext("Send /linkteam CODE in the group that should receive the team's alerts."))
        return
    code = context.args[0] if context.args and len(context.args) == 1 else ""
    member = await _staff(context, user.id)
    if member is None:
        await _reply(update, t.gettext(ONLY_ADMINS))
        return
    if not _CODE.fullmatch(code):
        await _reply(
            update, t.gettext("Please send /linkteam CODE, with the code from /teams in a private chat with me.")
        )
        return
    svc = services(context)
    async with svc.db.session() as session:
        seen = await teams.peek_code(session, code, CodeKind.LINK)
        if seen is not None and not await _manages(session, member, seen.team_id):
            await _reply(update, t.gettext(ONLY_ADMINS))
            return
        spent = await teams.use_code(session, code, CodeKind.LINK, by=user.id, now=svc.clock())
        team = await teams.get(session, spent.team_id) if spent is not None else None
        if spent is None or team is None or team.id is None:
            await session.rollback()
            await _reply(update, t.gettext("This code is not valid: it was used already, has expired or is mistyped."))
            return
        await teams.link_chat(session, team.id, chat.id)
        await session.commit()
    log.info("team %s: group linked", team.id)
    await _reply(
        update,
        t.gettext("✅ This group now receives the alert cards of <b>{team}</b>.").format(team=esc(team.name)),
    )


# -- /rota ---------------------------------------------------------------------------------------------------------


async def rota_command(update: Update, context: Context) -> None:
    t = tr(update, context)
    if not _private(update):
        await _reply(update, t.gettext(USE_PRIVATE))
        return
    assert update.effective_user is not None
    member = await _staff(context, update.effective_user.id)
    async with services(context).db.session() as session:
        led = await _led_teams(session, member)
    if member is None or (not led and member.role not in teams.LEADING_ROLES):
        await _reply(update, t.gettext(ONLY_COORDINATORS))
        return
    if not led:
        await _reply(update, t.gettext(NO_TEAMS))
        return
    if len(led) == 1:
        text, markup = await _week(context, t, led[0], back=False)
    else:
        text, markup = _rota_teams(t, led)
    await _reply(update, text, markup)


def _rota_teams(t: Translator, led: list[Team]) -> tuple[str, InlineKeyboardMarkup]:
    rows = [[InlineKeyboardButton(f"👥 {team.name}"[:60], callback_data=f"{ROTA_PREFIX}|w|{team.id}")] for team in led]
    return t.gettext("<b>On-call rota</b> — choose a team."), InlineKeyboardMarkup(rows)


async def _week(context: Context, t: Translator, team: Team, *, back: bool) -> tuple[str, InlineKeyboardMarkup]:
    svc = services(context)
    assert team.id is not None
    async with svc.db.session() as session:
        week = await teams.rota(session, team.id)
        names = {m.telegram_id: m.name for m in await teams.members(session, team.id)}
    days = _day_names(t)
    today = svc.clock().astimezone(svc.settings.tz).weekday()
    lines = [t.gettext("<b>On call — {team}</b>").format(team=esc(team.name)), _duty_line(t, svc, team), ""]
    buttons = []
    for day in range(7):
        person = names.get(week[day], "?") if day in week else None
        shown = esc(person) if person is not None else t.gettext("nobody")
        marker = " " + t.gettext("(today)") if day == today else ""
        lines.append(f"{days[day]}: {shown}{marker}")
        label = f"{days[day]} · {person if person is not None else '—'}"
        buttons.append(InlineKeyboardButton(label[:60], callback_data=f"{ROTA_PREFIX}|d|{team.id}|{day}"))
    lines += ["", t.gettext("Tap a day to choose who is on call.")]
    rows = [buttons[i : i + 2] for i in range(0, 7, 2)]
    if back:
        rows.append([InlineKeyboardButton(t.gettext("◀ All teams"), callback_data=f"{ROTA_PREFIX}|l")])
    return "\n".join(lines), InlineKeyboardMarkup(rows)


async def _day_picker(context: Context, t: Translator, team: Team, day: int) -> tuple[str, InlineKeyboardMarkup]:
    assert team.id is not None
    async with services(context).db.session() as session:
        people = [m for m in await teams.members(session, team.id) if m.role in teams.ACTING_ROLES]
    text = t.gettext("Who is on call for <b>{team}</b> on <b>{day}</b>?").format(
        team=esc(team.name), day=_day_names(t, "wide")[day]
    )
    if not people:
        text += "\n" + t.gettext("The team has no responders yet: invite them with /teams.")
    rows = [
        [InlineKeyboardButton(m.name[:60], callback_data=f"{ROTA_PREFIX}|s|{team.id}|{day}|{m.telegram_id}")]
        for m in people
    ]
    rows.append([InlineKeyboardButton(t.gettext("— Nobody"), callback_data=f"{ROTA_PREFIX}|s|{team.id}|{day}|0")])
    rows.append([InlineKeyboardButton(t.gettext("◀ Back"), callback_data=f"{ROTA_PREFIX}|w|{team.id}")])
    return text, InlineKeyboardMarkup(rows)


async def on_rota_button(update: Update, context: Context) -> None:
    query, user = update.callback_query, update.effective_user
    assert query is not None and user is not None
    t = tr(update, context)
    match = _ROTA_DATA.fullmatch(query.data or "")
    if match is None:
        await _refuse(update, context, NOT_VALID)
        return
    svc = services(context)
    member = await _staff(context, user.id)
    async with svc.db.session() as session:
        led = await _led_teams(session, member)
    if not led:
        await _refuse(update, context, ONLY_COORDINATORS)
        return
    if match.group(1):
        await query.answer()
        text, markup = _rota_teams(t, led)
        await query.edit_message_text(text, reply_markup=markup)
        return
    team_id = int(match.group(3) or match.group(5) or match.group(8))
    team = next((team for team in led if team.id == team_id), None)
    if team is None:
        await _refuse(update, context, ONLY_COORDINATORS)
        return
    if match.group(2):
        await query.answer()
        text, markup = await _week(context, t, team, back=len(led) > 1)
    elif match.group(4):
        await query.answer()
        text, markup = await _day_picker(context, t, team, int(match.group(6)))
    else:
        day, person = int(match.group(9)), int(match.group(10))
        async with svc.db.session() as session:
            roles = {m.telegram_id: m.role for m in await teams.members(session, team_id)}
            if person and roles.get(person) not in teams.ACTING_ROLES:
                await session.rollback()
                await _refuse(update, context, NOT_VALID)
                return
            await teams.set_on_call(session, team_id, day, person or None)
            await session.commit()
        log.info("team %s: rota changed for weekday %s", team_id, day)
        await query.answer(t.gettext("Saved."))
        text, markup = await _week(context, t, team, back=len(led) > 1)
    await query.edit_message_text(text, reply_markup=markup)


# -- out of hours --------------------------------------------------------------------------------------------------


async def out_of_hours_notice(session: AsyncSession, svc: Services, case: Case) -> str | None:
    """The lines to add to the requester's confirmation when every team of the case is off duty: when staff will
    see it, and the hotline. None while any of its teams is on duty (or when no team has duty hours)."""
    case_teams = await teams.teams_of(session, case.id) if case.id is not None else []
    if not case_teams:
        case_teams, _reason = await teams.route(session, case, svc.settings.teams.default_team)
    if not case_teams:
        return None
    now = svc.clock()
    states = [teams.duty(team, svc.settings.timezone, now) for team in case_teams]
    if any(state.is_open for state in states):
        return None
    t = translator(case.language)
    starts = sorted(state.changes_at for state in states if state.changes_at is not None)
    if starts:
        text = t.gettext("🌙 Our staff are off duty right now. They will see your request from {time}.").format(
            time=relative_time(t, starts[0], now)
        )
    else:
        text = t.gettext("🌙 Our staff are off duty right now.")
    hotline = svc.settings.help.hotline
    if hotline:
        text += "\n" + t.gettext("If you need help sooner, call the 24-hour hotline: <b>{number}</b>").format(
            number=esc(hotline)
        )
    return text


# -- team scoping on the case cards ------------------------------------------------------------------------------


async def scope_guard(update: Update, context: Context) -> None:
    """Before case_staff (a lower handler group): a card button of another team's case is refused here.

    Everything else passes on untouched, so case_staff keeps answering non-staff, forged data and closed cases."""
    query, user = update.callback_query, update.effective_user
    if query is None or user is None:
        return
    match = _CARD_DATA.fullmatch(query.data or "")
    if match is None:
        return
    async with services(context).db.session() as session:
        case = await cases.get(session, int(match.group(2)))
        member = await staff_model.get(session, user.id)
    if case is None or member is None or not member.can("case.act"):
        return
    if await case_staff.may_act(context, user.id, case) is not None:
        return
    await query.answer(tr(update, context).gettext(OTHER_TEAM), show_alert=True)
    raise ApplicationHandlerStop


def scope_guard_handler() -> CallbackQueryHandler[Context, None]:
    return CallbackQueryHandler(scope_guard, pattern=r"^cs\|")


def handlers() -> Handlers:
    return [
        CommandHandler("teams", teams_command),
        CommandHandler("linkteam", link_team),
        CommandHandler("rota", rota_command),
        CallbackQueryHandler(on_teams_button, pattern=f"^{TEAMS_PREFIX}\\|"),
        CallbackQueryHandler(on_rota_button, pattern=f"^{ROTA_PREFIX}\\|"),
    ]
