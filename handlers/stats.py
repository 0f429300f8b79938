"""Journey 7: the season report for coordinators — /stats: pick the period (this week, this month, this season, or
dates typed) and optionally a team; get the figures as text in your language, the chart, and a CSV file on request.

Buttons carry the whole choice (``st|p|<period>|<team>``, ``st|t|<team>``, ``st|c|<team>``, ``st|csv|<period>|<team>``;
team 0 = all), so they keep working after a restart. The role (``can("stats")``: coordinators and admins) is re-read
from the database on the command, on every button and on the typed dates. The figures come from models/stats.py;
rendering the text is here (the CLI uses it too), the chart is bot/charts.py, drawn in a worker thread.
"""

from __future__ import annotations

import asyncio
import html
import logging
import re
from datetime import date

from babel.dates import format_date
from babel.numbers import format_currency
from telegram import InlineKeyboardButton, InlineKeyboardMarkup, InputFile, Update
from telegram.constants import ChatAction
from telegram.ext import CallbackQueryHandler, CommandHandler, ConversationHandler, MessageHandler, filters

from bot import charts
from bot.config import Settings
from bot.i18n import N_, Translator
from handlers.aid_views import given_label, items_text
from handlers.case_views import CLOSING_LABELS, HELP_KIND_LABELS
from handlers.common import Context, Handlers, esc, services, tr
from handlers.menu import any_menu_button, main_menu
from handlers.report_staff import OUTCOME_LABELS
from models import staff as staff_model
from models import stats, teams
from models.stats import Durations, Period, Report

log = logging.getLogger("waystation.stats")

PREFIX = "st"
ASK_DATES = 0
TEAM_KEY = "stats_team"  # user_data: the team chosen before typing custom dates (0: all)
TOP_STATIONS = 5

NOT_ALLOWED = N_("Sorry, only coordinators and admins can see the season report.")
NOT_VALID = N_("Sorry, this button is not valid any more.")
PERIOD_NAMES: dict[str, str] = {
    "week": N_("this week"),
    "month": N_("this month"),
    "season": N_("this season"),
    "custom": N_("chosen dates"),
}
BROADCAST_KINDS: dict[str, str] = {
    "alert": N_("cold alerts"),
    "standdown": N_("stand-downs"),
    "manual": N_("announcements"),
}
_BUTTON = re.compile(r"st\|(?:(p|csv)\|([a-z0-9-]{4,17})\|([0-9]{1,10})|(t|c)\|([0-9]{1,10}))")
_ICON = re.compile(r"^[^\w(]+", re.UNICODE)


# -- rendering ------------------------------------------------------------------------------------------------------


def period_text(t: Translator, period: Period) -> str:
    """ "1 Dec 2026 – 31 Dec 2026 (this month)" in the reader's language."""
    first = format_date(period.first_day, "medium", locale=t.language)
    last = format_date(period.last_day, "medium", locale=t.language)
    span = first if period.first_day == period.last_day else f"{first} – {last}"
    return f"{span} ({t.gettext(PERIOD_NAMES[period.kind])})"


def duration_text(t: Translator, minutes: float) -> str:
    total = round(minutes)
    if total < 60:
        return t.gettext("{m} min").format(m=total)
    hours, rest = divmod(total, 60)
    if hours < 48:
        return t.gettext("{h} h {m} min").format(h=hours, m=rest) if rest else t.gettext("{h} h").format(h=hours)
    days, hours = divmod(hours, 24)
    return t.gettext("{d} d {h} h").format(d=days, h=hours)


def _times_line(t: Translator, label: str, figures: Durations) -> str:
    if figures.median is None or figures.p90 is None:
        return t.gettext("{label}: —").format(label=label)
    return t.ngettext(
        "{label}: median {median} · 90% within {p90} ({n} case)",
        "{label}: median {median} · 90% within {p90} ({n} cases)",
        figures.count,
    ).format(label=label, median=duration_text(t, figures.median), p90=duration_text(t, figures.p90), n=figures.count)


def _counted(t: Translator, labels: dict[str, str], counts: dict[str, int]) -> str:
    return ", ".join(f"{t.gettext(labels[k]) if k in labels else esc(k)} {t.number(n)}" for k, n in counts.items())


def money_text(t: Translator, amount: float, currency: str) -> str:
    return format_currency(amount, currency, locale=t.language)


def report_text(t: Translator, report: Report, settings: Settings) -> str:
    """The whole report as HTML (under Telegram's 4096 characters), or the "nothing in this period" line."""
    n = t.number
    head = t.gettext("📊 <b>Season report</b> · {period}").format(period=period_text(t, report.period))
    lines = [head]
    if report.team_name:
        lines.append(t.gettext("👥 Team: {team}").format(team=esc(report.team_name)))
    if report.empty:
        lines.append(t.gettext("Nothing in this period: no requests, reports, patrols, broadcasts or station use."))
        return "\n".join(lines)

    lines.append("")
    lines.append(
        t.ngettext(
            "🙋 <b>Helped</b>: {n} person-time ({distinct} different people)",
            "🙋 <b>Helped</b>: {n} person-times ({distinct} different people)",
            report.helped_total,
        ).format(n=n(report.helped_total), distinct=n(report.helped_distinct))
    )
    if report.helped_by_kind:
        lines.append("   " + ", ".join(f"{given_label(t, k)} {n(v)}" for k, v in report.helped_by_kind.items()))
    lines.append(t.gettext("🚆 Escorts: {n}").format(n=n(report.escorts)))
    lines.append(
        t.gettext("🎒 Items handed out: {n} ({on_patrols} on patrols)").format(
            n=n(report.items_total), on_patrols=n(report.items_on_patrols)
        )
    )
    if report.items:
        lines.append("   " + items_text(t, report.items))
    lines.append(
        t.ngettext(
            "💴 Aid paid: {amount} ({n} payment)",
            "💴 Aid paid: {amount} ({n} payments)",
            report.aid_count,
        ).format(amount=money_text(t, report.aid_total, settings.season.currency), n=n(report.aid_count))
    )

    requests, found_reports = report.requests, report.reports
    lines.append("")
    lines.append(
        t.gettext(
            "📨 <b>Requests</b>: {received} received · {claimed} claimed · {resolved} resolved · "
            "{cancelled} cancelled · {open} open"
        ).format(
            received=n(requests.received),
            claimed=n(requests.claimed),
            resolved=n(requests.resolved),
            cancelled=n(requests.cancelled),
            open=n(requests.open),
        )
    )
    if requests.by_closing:
        lines.append("   " + t.gettext("Closed: {list}").format(list=_counted(t, CLOSING_LABELS, requests.by_closing)))
    lines.append(
        t.gettext(
            "👀 <b>Reports</b>: {received} received · {claimed} claimed · {resolved} resolved · {open} open"
        ).format(
            received=n(found_reports.received),
            claimed=n(found_reports.claimed),
            resolved=n(found_reports.resolved),
            open=n(found_reports.open),
        )
    )
    if found_reports.received:
        lines.append(
            "   "
            + t.gettext("Found {found} · not found {not_found} · not known {unknown}").format(
                found=n(report.found), not_found=n(report.not_found), unknown=n(report.search_unknown)
            )
        )
    if found_reports.by_closing:
        lines.append(
            "   " + t.gettext("Outcomes: {list}").format(list=_counted(t, OUTCOME_LABELS, found_reports.by_closing))
        )
    lines.append(_times_line(t, t.gettext("⏱ Time to claim"), report.claim))
    lines.append(_times_line(t, t.gettext("⏱ Time to resolve"), report.resolve))
    lines.append(
        t.ngettext(
            "⏰ Escalations: {n} ({cases} case)", "⏰ Escalations: {n} ({cases} cases)", report.escalated_cases
        ).format(n=n(report.escalations), cases=n(report.escalated_cases))
    )

    lines.append("")
    patrol_line = t.ngettext(
        "🚶 <b>Patrols</b>: {n} ({time}) · {people} people met",
        "🚶 <b>Patrols</b>: {n} ({time}) · {people} people met",
        report.patrols,
    ).format(n=n(report.patrols), time=duration_text(t, report.patrol_minutes), people=n(report.people_met))
    if report.patrols_running:
        patrol_line += " · " + t.gettext("{n} still running").format(n=n(report.patrols_running))
    lines.append(patrol_line)
    broadcasts = ", ".join(
        f"{t.gettext(BROADCAST_KINDS.get(k, k))} {n(v)}" for k, v in sorted(report.broadcasts_by_kind.items())
    )
    lines.append(
        t.gettext(
            "📢 <b>Broadcasts</b>: {n} ({kinds}) · {recipients} recipients · {reach} delivered · {blocked} blocked "
            "the bot"
        ).format(
            n=n(report.broadcasts),
            kinds=broadcasts or "—",
            recipients=n(report.recipients),
            reach=n(report.reach),
            blocked=n(report.blocked),
        )
    )
    lines.append(
        t.gettext("📍 <b>Stations</b>: shown {shown} times · opened {opened} times").format(
            shown=n(report.shown_total), opened=n(report.opened_total)
        )
    )
    prefer_english = t.language == "en"
    for rank, use in enumerate(report.stations[:TOP_STATIONS], 1):
        lines.append(
            t.gettext("   {rank}. {name}: shown {shown} · opened {opened}").format(
                rank=rank, name=esc(use.display_name(prefer_english)), shown=n(use.shown), opened=n(use.opened)
            )
        )
    return "\n".join(lines)


def plain(text: str) -> str:
    """The HTML report as plain text (the command line)."""
    return html.unescape(re.sub(r"<[^>]+>", "", text))


def kind_labels(t: Translator) -> dict[str, str]:
    """Legend labels for the chart: kinds of help asked, without their icons (chart fonts have no emoji)."""
    labels = {kind: _ICON.sub("", t.gettext(label)) for kind, label in HELP_KIND_LABELS.items()}
    labels["report"] = t.gettext("Reports of someone in the cold")
    return labels


def chart(t: Translator, report: Report) -> bytes:
    title = t.gettext("Season report · {period}").format(period=period_text(t, report.period))
    if report.team_name:
        title += " · " + report.team_name
    return charts.render(report, t, title=title, kind_labels=kind_labels(t))


# -- the picker -----------------------------------------------------------------------------------------------------


def _picker(t: Translator, team_list: list[tuple[int, str]], team_id: int) -> tuple[str, InlineKeyboardMarkup]:
    chosen = next((name for tid, name in team_list if tid == team_id), None)
    text = t.gettext("📊 <b>Season report</b>: choose the period.")
    text += "\n" + t.gettext("👥 Team: {team}").format(team=esc(chosen) if chosen else t.gettext("all teams"))
    rows = [
        [
            InlineKeyboardButton(t.gettext("This week"), callback_data=f"{PREFIX}|p|week|{team_id}"),
            InlineKeyboardButton(t.gettext("This month"), callback_data=f"{PREFIX}|p|month|{team_id}"),
        ],
        [
            InlineKeyboardButton(t.gettext("This season"), callback_data=f"{PREFIX}|p|season|{team_id}"),
            InlineKeyboardButton(t.gettext("📅 Other dates"), callback_data=f"{PREFIX}|c|{team_id}"),
        ],
    ]
    if team_list:
        choices = [(0, t.gettext("All teams")), *team_list]
        buttons = [
            InlineKeyboardButton(("✔️ " if tid == team_id else "") + name[:40], callback_data=f"{PREFIX}|t|{tid}")
            for tid, name in choices
        ]
        rows += [buttons[i : i + 3] for i in range(0, len(buttons), 3)]
    return text, InlineKeyboardMarkup(rows)


async def _allowed(context: Context, user_id: int) -> bool:
    async with services(context).db.session() as session:
        member = await staff_model.get(session, user_id)
    return member is not None and member.can("stats")


async def _teams(context: Context) -> list[tuple[int, str]]:
    async with services(context).db.session() as session:
        return [(team.id, team.name) for team in await teams.list_all(session) if team.id is not None]


def _today(context: Context) -> date:
    svc = services(context)
    return svc.clock().astimezone(svc.settings.tz).date()


def _season(settings: Settings) -> tuple[str, str]:
    return settings.season.start, settings.season.end


async def on_command(update: Update, context: Context) -> None:
    message, user = update.effective_message, update.effective_user
    assert message is not None and user is not None
    t = tr(update, context)
    if not await _allowed(context, user.id):
        await message.reply_text(t.gettext(NOT_ALLOWED))
        return
    text, keyboard = _picker(t, await _teams(context), 0)
    await message.reply_text(text, reply_markup=keyboard)


async def _refuse(update: Update, context: Context, message: str) -> None:
    query = update.callback_query
    assert query is not None
    await query.answer(tr(update, context).gettext(message), show_alert=True)


async def on_button(update: Update, context: Context) -> int | None:
    """Every st| button outside the typed-dates step (and inside it, where a tap ends the step)."""
    query, user = update.callback_query, update.effective_user
    assert query is not None and user is not None
    if not await _allowed(context, user.id):
        await _refuse(update, context, NOT_ALLOWED)
        return ConversationHandler.END
    match = _BUTTON.fullmatch(query.data or "")
    team_list = await _teams(context)
    team_ids = {tid for tid, _name in team_list} | {0}
    team_raw = (match.group(3) or match.group(5)) if match else None
    if match is None or team_raw is None or int(team_raw) not in team_ids:
        await _refuse(update, context, NOT_VALID)
        return ConversationHandler.END
    team_id = int(team_raw)
    t = tr(update, context)
    action = match.group(1) or match.group(4)
    if action == "t":
        await query.answer()
        text, keyboard = _picker(t, team_list, team_id)
        if query.message is not None and getattr(query.message, "reply_markup", None) != keyboard:
            await query.edit_message_text(text, reply_markup=keyboard)
        return None
    if action == "c":
        return await ask_dates(update, context, team_id)
    period = stats.decode(match.group(2), _today(context), _season(services(context).settings))
    if period is None:
        await _refuse(update, context, NOT_VALID)
        return ConversationHandler.END
    await query.answer()
    if action == "csv":
        await send_csv(update, context, period, team_id or None)
    else:
        await send_report(update, context, period, team_id or None)
    return ConversationHandler.END


async def ask_dates(update: Update, context: Context, team_id: int) -> int:
    query = update.callback_query
    assert query is not None and update.effective_chat is not None and context.user_data is not None
    t = tr(update, context)
    await query.answer()
    context.user_data[TEAM_KEY] = team_id
    await context.bot.send_message(
        update.effective_chat.id,
        t.gettext(
            "Type the first and the last day of the period, for example <code>2026-12-01 2026-12-31</code>. "
            "Send /cancel to stop."
        ),
    )
    return ASK_DATES


async def on_dates(update: Update, context: Context) -> int:
    message, user = update.effective_message, update.effective_user
    assert message is not None and message.text is not None and user is not None and context.user_data is not None
    t = tr(update, context)
    if not await _allowed(context, user.id):
        context.user_data.pop(TEAM_KEY, None)
        await message.reply_text(t.gettext(NOT_ALLOWED))
        return ConversationHandler.END
    period = stats.parse_dates(message.text[:100])
    if period is None:
        await message.reply_text(
            t.gettext(
                "Please type two dates, the first one first, at most {days} days apart: for example "
                "<code>2026-12-01 2026-12-31</code>. Send /cancel to stop."
            ).format(days=stats.MAX_DAYS)
        )
        return ASK_DATES
    team_id = context.user_data.pop(TEAM_KEY, 0)
    valid_teams = {tid for tid, _name in await _teams(context)}
    await send_report(update, context, period, team_id if team_id in valid_teams else None)
    return ConversationHandler.END


async def reprompt_dates(update: Update, context: Context) -> int:
    assert update.effective_message is not None
    await update.effective_message.reply_text(
        tr(update, context).gettext("Please type the two dates as text, or send /cancel.")
    )
    return ASK_DATES


async def cancel_dates(update: Update, context: Context) -> int:
    assert update.effective_message is not None and context.user_data is not None
    context.user_data.pop(TEAM_KEY, None)
    t = tr(update, context)
    await update.effective_message.reply_text(
        t.gettext("Cancelled. What would you like to do?"), reply_markup=main_menu(t)
    )
    return ConversationHandler.END


# -- the report ----------------------------------------------------------------------------------------------------


async def build(context: Context, period: Period, team_id: int | None) -> Report:
    svc = services(context)
    async with svc.db.session() as session:
        return await stats.compute(session, period, svc.settings.tz, team_id=team_id)


async def send_report(update: Update, context: Context, period: Period, team_id: int | None) -> None:
    chat = update.effective_chat
    assert chat is not None
    t = tr(update, context)
    svc = services(context)
    report = await build(context, period, team_id)
    markup = None
    if not report.empty:
        markup = InlineKeyboardMarkup(
            [
                [
                    InlineKeyboardButton(
                        t.gettext("📄 CSV file"), callback_data=f"{PREFIX}|csv|{period.code}|{team_id or 0}"
                    )
                ]
            ]
        )
    await context.bot.send_message(chat.id, report_text(t, report, svc.settings), reply_markup=markup)
    if report.empty:
        return
    await context.bot.send_chat_action(chat.id, ChatAction.UPLOAD_PHOTO)
    png = await asyncio.to_thread(chart, t, report)
    await context.bot.send_photo(
        chat.id,
        InputFile(png, filename=f"waystation-{period.code}.png"),
        caption=t.gettext("📈 Requests per week by kind, and the time to claim · {period}").format(
            period=period_text(t, period)
        ),
    )
    log.info("stats sent: %s, team %s", period.code, team_id or "all")


async def send_csv(update: Update, context: Context, period: Period, team_id: int | None) -> None:
    chat = update.effective_chat
    assert chat is not None
    t = tr(update, context)
    svc = services(context)
    async with svc.db.session() as session:
        rows = await stats.csv_rows(session, period, svc.settings.tz, team_id=team_id)
    if not rows:
        await context.bot.send_message(
            chat.id, t.gettext("Nothing in this period: {period}.").format(period=period_text(t, period))
        )
        return
    await context.bot.send_chat_action(chat.id, ChatAction.UPLOAD_DOCUMENT)
    data = stats.csv_text(rows).encode("utf-8")
    await context.bot.send_document(
        chat.id,
        InputFile(data, filename=f"waystation-{period.code}{f'-team{team_id}' if team_id else ''}.csv"),
        caption=t.gettext(
            "📄 {n} anonymised rows · {period}. No names, phone numbers, free text or exact places "
            "(locations rounded to about 1 km)."
        ).format(n=t.number(len(rows)), period=period_text(t, period)),
    )


# -- wiring --------------------------------------------------------------------------------------------------------


def handlers() -> Handlers:
    private = filters.ChatType.PRIVATE
    typed = private & filters.TEXT & ~filters.COMMAND & ~filters.UpdateType.EDITED & ~any_menu_button()
    other = private & ~filters.TEXT & ~filters.COMMAND & ~filters.UpdateType.EDITED
    dates = ConversationHandler(
        entry_points=[CallbackQueryHandler(on_button, pattern=f"^{PREFIX}\\|c\\|")],
        states={
            ASK_DATES: [
                MessageHandler(typed, on_dates),
                MessageHandler(other, reprompt_dates),
                CallbackQueryHandler(on_button, pattern=f"^{PREFIX}\\|"),
            ],
        },
        fallbacks=[CommandHandler("cancel", cancel_dates, filters=private)],
        name="stats",
        persistent=True,
        allow_reentry=True,
    )
    return [
        dates,
        CommandHandler("stats", on_command, filters=private),
        CallbackQueryHandler(on_button, pattern=f"^{PREFIX}\\|"),
    ]
