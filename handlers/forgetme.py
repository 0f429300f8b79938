"""/forgetme: show what the bot keeps about the person, and delete it after a confirmation.

Stateless buttons (``pv|ask``, ``pv|yes``, ``pv|keep``): nothing to resume after a restart, and a second tap on
"Yes, delete" finds nothing left and says so. The deletion is one transaction (models/privacy.py): the person's
rows go, their cases stay as anonymous statistics; in the same transaction the staff cards of those cases are edited
to drop the personal details, and the groups of cancelled open requests are told why. Afterwards the Application's
memory (form drafts, conversation steps, the language cache) is cleared too, or the next update would write it back.
"""

from __future__ import annotations

import contextlib
import logging

from sqlmodel.ext.asyncio.session import AsyncSession
from telegram import InlineKeyboardButton, InlineKeyboardMarkup, Message, Update
from telegram.error import BadRequest
from telegram.ext import CallbackQueryHandler, CommandHandler, ConversationHandler, filters

from bot.i18n import N_, Translator, translator
from bot.services import Services
from handlers import case_alerts, report_staff
from handlers.case_views import STATUS_LABELS
from handlers.common import Context, Handlers, esc, services, tr
from handlers.menu import main_menu
from models import outbox, privacy, reports, teams
from models.cases import Case

log = logging.getLogger("waystation.privacy")

PREFIX = "pv"
DONE_MESSAGES = "privacy_done"  # bot_data: (chat id, message id) of confirmations already carried out (memory only)
MAX_LISTED = 10  # cases listed by reference; more are counted

KEEP = N_("✋ Keep my data")


def _keyboard(t: Translator, *, confirm: bool) -> InlineKeyboardMarkup:
    delete = (
        InlineKeyboardButton(t.gettext("🗑 Yes, delete everything"), callback_data=f"{PREFIX}|yes")
        if confirm
        else InlineKeyboardButton(t.gettext("🗑 Delete everything"), callback_data=f"{PREFIX}|ask")
    )
    return InlineKeyboardMarkup([[delete], [InlineKeyboardButton(t.gettext(KEEP), callback_data=f"{PREFIX}|keep")]])


def _kept_fields(t: Translator, case: privacy.StoredCase) -> str:
    parts = []
    if case.description:
        parts.append(t.gettext("your words"))
    if case.place:
        parts.append(t.gettext("a place"))
    if case.location:
        parts.append(t.gettext("a location"))
    if case.phone:
        parts.append(t.gettext("a phone number"))
    if case.documents:
        parts.append(t.ngettext("{n} document", "{n} documents", case.documents).format(n=case.documents))
    return ", ".join(parts)


def _case_line(t: Translator, case: privacy.StoredCase) -> str:
    status = t.gettext(STATUS_LABELS.get(case.status, case.status))
    kept = _kept_fields(t, case)
    line = f"   {esc(case.reference)} · {status}"
    return f"{line} — {kept}" if kept else line


def summary_text(t: Translator, found: privacy.Summary) -> str:
    lines = [t.gettext("<b>What I keep about you</b>")]
    if found.profile is not None:
        lines.append(t.gettext("• Your language setting and when you last wrote to me"))
    if found.requests:
        lines.append(
            t.ngettext("• {n} help request:", "• {n} help requests:", len(found.requests)).format(n=len(found.requests))
        )
        lines += [_case_line(t, case) for case in found.requests[-MAX_LISTED:]]
    if found.reports:
        lines.append(
            t.ngettext(
                "• {n} report with your contact:", "• {n} reports with your contact:", len(found.reports)
            ).format(n=len(found.reports))
        )
        lines += [_case_line(t, case) for case in found.reports[-MAX_LISTED:]]
    if found.anonymous_reports:
        lines.append(
            t.ngettext(
                "• {n} anonymous report (linked to you only by a code made from your account)",
                "• {n} anonymous reports (linked to you only by a code made from your account)",
                found.anonymous_reports,
            ).format(n=found.anonymous_reports)
        )
    if found.limit_codes:
        lines.append(
            t.ngettext(
                "• {n} report you sent in the last hour keeps a code made from your account, for the limit on "
                "reports: it can be deleted once the hour is over",
                "• {n} reports you sent in the last hour keep a code made from your account, for the limit on "
                "reports: they can be deleted once the hour is over",
                found.limit_codes,
            ).format(n=found.limit_codes)
        )
    if found.subscription is not None:
        where = (
            t.gettext("with your location")
            if found.subscription.lat is not None
            else t.gettext("for an area you chose")
        )
        lines.append(t.gettext("• Your cold-weather alert subscription ({where})").format(where=where))
    if found.feedback:
        lines.append(
            t.ngettext("• {n} note about a station", "• {n} notes about stations", found.feedback).format(
                n=found.feedback
            )
        )
    if found.forms:
        lines.append(t.gettext("• What you typed in a form you have not finished"))
    if found.messages:
        lines.append(
            t.ngettext(
                "• {n} message waiting to be sent to you", "• {n} messages waiting to be sent to you", found.messages
            ).format(n=found.messages)
        )
    if found.is_empty:
        lines.append(t.gettext("Nothing at the moment."))
        return "\n".join(lines)
    lines.append("")
    lines.append(
        t.gettext(
            "If you delete it, your requests are kept only as anonymous numbers (kind of help, dates, status) "
            "without your words, location, phone number or documents."
        )
    )
    if found.open_requests:
        lines.append(
            t.ngettext(
                "Your open request is cancelled: staff will no longer be able to reach you about it.",
                "Your {n} open requests are cancelled: staff will no longer be able to reach you about them.",
                len(found.open_requests),
            ).format(n=len(found.open_requests))
        )
    if any(case.is_open for case in found.reports) or found.anonymous_reports:
        lines.append(
            t.gettext(
                "Open reports of someone in the cold stay open for outreach, without your contact; "
                "they are anonymised when they close."
            )
        )
    if found.staff_role is not None:
        lines.append(t.gettext("Your staff account is not part of this: an administrator removes it."))
    return "\n".join(lines)


async def _summary(svc: Services, user_id: int) -> privacy.Summary:
    async with svc.db.session() as session:
        return await privacy.summary(session, user_id, reporter_key=_reporter_key(svc, user_id), now=svc.clock())


def _reporter_key(svc: Services, user_id: int) -> str:
    return reports.reporter_key(svc.settings.require_token(), user_id)


async def forgetme(update: Update, context: Context) -> None:
    message, user, chat = update.effective_message, update.effective_user, update.effective_chat
    assert message is not None and user is not None and chat is not None
    t = tr(update, context)
    if chat.type != "private":
        await message.reply_text(t.gettext("Please send /forgetme to me in a private chat."))
        return
    found = await _summary(services(context), user.id)
    markup = None if found.is_empty else _keyboard(t, confirm=False)
    await message.reply_text(summary_text(t, found), reply_markup=markup or main_menu(t))


async def on_button(update: Update, context: Context) -> None:
    query, user = update.callback_query, update.effective_user
    assert query is not None and user is not None
    t = tr(update, context)
    action = (query.data or "").partition("|")[2]
    if action == "keep":
        await query.answer()
        await _edit(query.message, t.gettext("OK, nothing was deleted."))
        return
    if action == "ask":
        await query.answer()
        text = t.gettext(
            "Delete everything I keep about you? This cannot be undone. Open requests are cancelled, and staff "
            "will no longer be able to contact you about them."
        )
        await _edit(query.message, text, _keyboard(t, confirm=True))
        return
    if action != "yes":
        await query.answer(t.gettext("Sorry, this button is not valid any more."), show_alert=True)
        return
    done = context.bot_data.setdefault(DONE_MESSAGES, set())
    marker = (query.message.chat.id, query.message.message_id) if query.message is not None else None
    forgotten = await erase(context, user.id)
    if marker in done:  # a second tap on the same confirmation: the deletion above found (almost) nothing
        await query.answer(t.gettext("Already done: nothing about you is stored any more."), show_alert=True)
        return
    if marker is not None:
        done.add(marker)
    await query.answer()
    text = t.gettext(
        "✅ Done. Everything I kept about you is deleted. If you write to me again, I keep only your language "
        "setting until you send /forgetme again."
    )
    if forgotten.cancelled:
        text += "\n" + t.ngettext(
            "Your open request was cancelled.", "Your {n} open requests were cancelled.", len(forgotten.cancelled)
        ).format(n=len(forgotten.cancelled))
    await _edit(query.message, text)
    log.info("forgetme: %s case(s) anonymised, %s cancelled", len(forgotten.anonymised), len(forgotten.cancelled))


async def _edit(message: object, text: str, markup: InlineKeyboardMarkup | None = None) -> None:
    if not isinstance(message, Message):
        return
    with contextlib.suppress(BadRequest):  # an old message (or one edited meanwhile): the answer above is enough
        await message.edit_text(text, reply_markup=markup)


async def erase(context: Context, user_id: int) -> privacy.Forgotten:
    """Forget the user in one transaction (with the staff cards and notes), then clear the Application's memory."""
    svc = services(context)
    async with svc.db.session() as session:
        forgotten = await privacy.forget(
            session, user_id, reporter_key=_reporter_key(svc, user_id), now=svc.clock(), scrub_messages=False
        )
        for case in forgotten.changed_cases:
            await _edit_cards(session, svc, case)
        for case in forgotten.cancelled:
            await _tell_staff(session, svc, case)
        await privacy.scrub_case_messages(session, [c.id for c in forgotten.changed_cases if c.id is not None])
        await session.commit()
    svc.wake_outbox()
    _forget_in_memory(context, user_id)
    return forgotten


async def _edit_cards(session: AsyncSession, svc: Services, case: Case) -> None:
    """Edit the case's existing staff cards to what the case holds now (no new card is posted for an old case)."""
    t = translator(svc.settings.i18n.default_language)
    case_teams = await teams.teams_of(session, case.id) if case.id is not None else []
    text, keyboard = await report_staff.render_card(
        session, svc, t, case, area=await case_alerts.area_of(session, svc, case)
    )
    text += await case_alerts.team_lines(session, t, case, case_teams)
    for chat_id in await case_alerts.staff_chats(session, svc, case_teams):
        key = case_alerts.card_key(case, chat_id)
        shown = await outbox.latest_card_payload(session, key)
        if shown is None or shown.get("text") == text:
            continue  # never posted there, or already showing this (Telegram refuses an edit that changes nothing)
        await outbox.enqueue_edit(session, key, text, reply_markup=keyboard.to_dict() if keyboard is not None else None)


async def _tell_staff(session: AsyncSession, svc: Services, case: Case) -> None:
    """A note in the case's groups: the requester withdrew it (and why the card lost its details)."""
    t = translator(svc.settings.i18n.default_language)
    text = t.gettext(
        "⚪ <b>{reference}</b> was withdrawn: the person asked for their data to be deleted. The card keeps only "
        "anonymous details; there is nobody to contact about it any more."
    ).format(reference=esc(case.reference))
    case_teams = await teams.teams_of(session, case.id) if case.id is not None else []
    for chat_id in await case_alerts.staff_chats(session, svc, case_teams):
        await outbox.enqueue_message(session, chat_id, text, dedupe_key=f"forgetme:{case.id}:{chat_id}")


def _forget_in_memory(context: Context, user_id: int) -> None:
    application = context.application
    application.drop_user_data(user_id)
    application.drop_chat_data(user_id)  # the private chat has the user's id
    for group in application.handlers.values():
        for handler in group:
            if isinstance(handler, ConversationHandler):
                # PTB has no public API to end one conversation; popping the tracked key also deletes it from the
                # persistence on the next write.
                for key in [k for k in handler._conversations if user_id in k]:
                    handler._conversations.pop(key, None)
    services(context).forget_user(user_id)


def handlers() -> Handlers:
    return [
        CommandHandler("forgetme", forgetme, filters=~filters.UpdateType.EDITED),
        CallbackQueryHandler(on_button, pattern=f"^{PREFIX}\\|"),
    ]
