"""Journey 4, staff side: Claim / Need info / Refer / Resolve / Details on a case card in a staff group.

The card buttons carry ``cs|<action>|<case id>``. The staff role is re-read from the database on every button and on
every typed step: a card drawn while someone was staff does nothing once they are not, and forged data is refused
politely. Every change is one conditional UPDATE in ``models.cases`` (two people pressing Claim at once: exactly one
wins); the card edit in every staff chat and the requester's notification are put in the outbox in the same
transaction, then the outbox worker is woken.

Need info, Refer and Resolve continue in the staff member's private chat: one conversation keyed per *user*
(``per_chat=False``), so the tap in the group and the text typed in the private chat meet. The requester answers a
question with the "✍️ Answer" button on their notification (``ca|<case id>``); the answer lands on the card (last note)
and goes to the claimer. Details (full description, phone, place, location pin, documents) are sent as direct replies.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from sqlmodel.ext.asyncio.session import AsyncSession
from telegram import InlineKeyboardButton, InlineKeyboardMarkup, Update
from telegram.error import BadRequest, Forbidden
from telegram.ext import CallbackQueryHandler, CommandHandler, ConversationHandler, MessageHandler, filters

from bot.i18n import N_, Translator, translator
from bot.services import Services
from handlers.aid_views import counter_rows, given_label, given_rows, items_text
from handlers.case_alerts import enqueue_cards, enqueue_notification
from handlers.case_views import CASE_PREFIX, CLOSING_LABELS, kinds_text, status_text, urgency_line, when
from handlers.common import Context, Handlers, esc, parse_id, replace_buttons, services, tr
from handlers.menu import any_menu_button, main_menu
from models import aid, cases, outbox, users
from models import staff as staff_model
from models.cases import CLOSING_REASONS, HELP_GIVEN, Case, CaseEvent, CaseStatus
from models.staff import Staff

log = logging.getLogger("waystation.cases")

ANSWER_PREFIX = "ca"  # the requester's "✍️ Answer" button: ca|<case id>
REASON_PREFIX = (
    "cr"  # the closing-reason keyboard in the staff member's private chat: cr|<case id>|<reason|skip|cancel>
)

# States of the staff conversation (private chat), and of the requester's answer.
ASK_QUESTION, ASK_REFERRAL, PICK_REASON, ASK_AMOUNT, ASK_NOTE = range(5)
ASK_GIVEN = 5  # what was given (kinds of help, items handed out): after a "help_*" closing reason
AWAIT_ANSWER = 0
GIVEN_PREFIX = "cg"  # the resolve step "what was given": cg|<case id>|k|<kind>, cg|<case id>|i|<item>, reset, done

MAX_TEXT = 1000  # the model keeps notes, questions and answers up to this length
MAX_AMOUNT = 1_000_000.0
MAX_DESCRIPTION_IN_DETAILS = 1500  # with the notes and the rest, the details stay under 4096 characters
MAX_LAST_NOTE_IN_DETAILS = 500
PENDING = "case_staff"  # user_data: {"case": id, "action": "info" | "refer" | "resolve", "reason", "given", "items",
# "amount"}
ANSWERING = "case_answer"  # user_data of a requester: the case id they are answering

_CARD_DATA = re.compile(r"cs\|(claim|info|refer|resolve|details)\|([0-9]{1,10})")
_REASON_DATA = re.compile(r"cr\|([0-9]{1,10})\|([a-z_]{1,20})")
_ANSWER_DATA = re.compile(r"ca\|([0-9]{1,10})")
_GIVEN_DATA = re.compile(r"cg\|([0-9]{1,10})\|(?:(k|i)\|([a-z_]{1,20})|(reset|done))")
_AMOUNT = re.compile(r"[¥￥$]?\s*([0-9]{1,7}(?:[.,][0-9]{1,2})?)\s*(?:元|yuan|rmb|cny)?", re.IGNORECASE)
_SKIP_WORDS = {"skip", "-", "—", "跳过"}

NOT_STAFF = N_("Sorry, only staff can act on cases.")
NOT_VALID = N_("Sorry, this button is not valid any more.")
CLOSED = N_("This case is already closed.")
EXPIRED = N_("This step has expired. Tap the button on the case card again.")
OTHER_TEAM = N_("This case belongs to another team: only that team or a coordinator can act on it.")


# -- small helpers --------------------------------------------------------------------------------------------------


def _parse_card(data: str | None) -> tuple[str, int] | None:
    match = _CARD_DATA.fullmatch(data or "")
    case_id = parse_id(match.group(2)) if match else None  # ten digits can still be beyond the id column's range
    return (match.group(1), case_id) if match and case_id is not None else None


def _short(text: str, limit: int = 60) -> str:
    """Names inside callback answers (plain text, at most 200 characters)."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _pending(context: Context, action: str | tuple[str, ...]) -> dict[str, Any] | None:
    assert context.user_data is not None
    pending = context.user_data.get(PENDING)
    wanted = (action,) if isinstance(action, str) else action
    if not isinstance(pending, dict) or pending.get("action") not in wanted or not isinstance(pending.get("case"), int):
        return None
    return pending


def _clear_pending(context: Context) -> None:
    assert context.user_data is not None
    context.user_data.pop(PENDING, None)


async def _acting_staff(context: Context, user_id: int) -> Staff | None:
    """The staff member as stored *now*, if they may act on cases."""
    async with services(context).db.session() as session:
        member = await staff_model.get(session, user_id)
    return member if member is not None and member.can("case.act") else None


async def may_act(context: Context, user_id: int, case: Case | None) -> Staff | None:
    """The one authorisation check for staff actions on a case (requests and reports alike), run on every callback.

    A staff member whose role may act on cases, scoped by team (``models.teams.may_act_on``): a responder of team A
    cannot act on team B's case; coordinators and admins of any team can; a case that went to no team, anyone."""
    from models import teams  # (kept inside: this function is the one place case_staff knows about teams)

    if case is None:
        return None
    member = await _acting_staff(context, user_id)
    if member is None or case.id is None:
        return member
    svc = services(context)
    async with svc.db.session() as session:
        allowed = await teams.may_act_on(session, member, case.id, svc.settings.teams.default_team)
    return member if allowed else None


async def _authorised(context: Context, user_id: int, case_id: int) -> tuple[Staff | None, str]:
    """May this person act on this case *now* (role and team, re-read on every tap and typed step)? The staff member,
    or None and what to tell them: not staff, or a case of another team."""
    from models import teams

    member = await _acting_staff(context, user_id)
    if member is None:
        return None, NOT_STAFF
    svc = services(context)
    async with svc.db.session() as session:
        allowed = await teams.may_act_on(session, member, case_id, svc.settings.teams.default_team)
    return (member, NOT_STAFF) if allowed else (None, OTHER_TEAM)


async def _load_case(context: Context, case_id: int) -> Case | None:
    async with services(context).db.session() as session:
        return await cases.get(session, case_id)


async def _resolved_by(svc: Services, case: Case, staff_id: int, reason: str) -> bool:
    """The case was closed as resolved, for this reason, by this staff member (their own action, seen again)."""
    if case.id is None or case.status != CaseStatus.RESOLVED or case.closing_reason != reason:
        return False
    async with svc.db.session() as session:
        event = await _latest_event(session, case.id, "resolved")
    return event is not None and event.actor_id == staff_id


async def _latest_event(session: AsyncSession, case_id: int, action: str) -> CaseEvent | None:
    """The event a transition just added (the query flushes it, so it has its id for the notification's dedupe key)."""
    return next((e for e in reversed(await cases.events(session, case_id)) if e.action == action), None)


async def _refuse(update: Update, context: Context, message: str) -> None:
    query = update.callback_query
    assert query is not None
    await query.answer(tr(update, context).gettext(message), show_alert=True)


def _reason_label(t: Translator, reason: str) -> str:
    label = t.gettext(CLOSING_LABELS[reason])
    return label[:1].upper() + label[1:]


def _answer_markup(case: Case) -> dict[str, Any]:
    """The requester's "✍️ Answer" button, in their language."""
    t = translator(case.language)
    button = InlineKeyboardButton(t.gettext("✍️ Answer"), callback_data=f"{ANSWER_PREFIX}|{case.id}")
    return InlineKeyboardMarkup([[button]]).to_dict()


async def _transition(
    svc: Services,
    case_id: int,
    action: str,
    change: Callable[[AsyncSession], Awaitable[bool]],
    *,
    requester_markup: Callable[[Case], dict[str, Any]] | None = None,
) -> tuple[bool, Case | None]:
    """Run one state change; when it wins, edit the cards and tell the requester in the same transaction.

    Returns (won, the case as it is now) — on a loss the case shows why (claimed by someone else, closed, gone)."""
    async with svc.db.session() as session:
        won = await change(session)
        if not won:
            await session.rollback()
            return False, await session.get(Case, case_id, populate_existing=True)
        case = await session.get(Case, case_id, populate_existing=True)
        assert case is not None
        event = await _latest_event(session, case_id, action)
        await enqueue_cards(session, svc, case, new=False)
        if event is not None:
            markup = requester_markup(case) if requester_markup is not None else None
            await enqueue_notification(session, case, event, reply_markup=markup)
        await session.commit()
    svc.wake_outbox()
    log.info("case %s: %s", case_id, action)
    return True, case


async def _why_not(update: Update, context: Context, case: Case | None) -> None:
    """Explain a lost transition on a callback: gone, closed, or taken by someone else."""
    query, user = update.callback_query, update.effective_user
    assert query is not None and user is not None
    t = tr(update, context)
    if case is None:
        await query.answer(t.gettext(NOT_VALID), show_alert=True)
    elif not case.is_open:
        await query.answer(t.gettext(CLOSED), show_alert=True)
    elif case.claimed_by == user.id:
        await query.answer(t.gettext("You have already claimed {reference}.").format(reference=case.reference))
    elif case.claimed_by_name:
        await query.answer(
            t.gettext("Already claimed by {name}.").format(name=_short(case.claimed_by_name)), show_alert=True
        )
    else:
        await query.answer(t.gettext("This case cannot be claimed right now."), show_alert=True)


def _cannot_write(exc: Exception) -> bool:
    """The staff member never opened a private chat with the bot (or blocked it): 403, or "chat not found"."""
    return isinstance(exc, Forbidden) or "chat not found" in str(exc).lower()


async def _tell_to_open_chat(update: Update, context: Context) -> None:
    query = update.callback_query
    assert query is not None
    await query.answer(
        tr(update, context)
        .gettext("Please open a private chat with @{bot} and press Start first, then tap the button again.")
        .format(bot=context.bot.username),
        show_alert=True,
    )


# -- the card buttons -----------------------------------------------------------------------------------------------


async def on_card_button(update: Update, context: Context) -> None:
    """Claim and Details (and anything forged that the conversation did not take)."""
    query, user = update.callback_query, update.effective_user
    assert query is not None and user is not None
    member = await _acting_staff(context, user.id)
    if member is None:
        await _refuse(update, context, NOT_STAFF)
        return
    parsed = _parse_card(query.data)
    if parsed is None or parsed[0] not in ("claim", "details"):
        await _refuse(update, context, NOT_VALID)
        return
    action, case_id = parsed
    member, refusal = await _authorised(context, user.id, case_id)
    if member is None:
        await _refuse(update, context, refusal)
        return
    if action == "claim":
        await claim(update, context, member, case_id)
    else:
        await send_details(update, context, case_id)


async def claim(update: Update, context: Context, member: Staff, case_id: int) -> None:
    query = update.callback_query
    assert query is not None
    svc = services(context)
    won, case = await _transition(
        svc, case_id, "claimed", lambda s: cases.claim(s, case_id, member.telegram_id, member.name)
    )
    if not won or case is None:
        await _why_not(update, context, case)
        return
    await query.answer(tr(update, context).gettext("You claimed {reference}.").format(reference=case.reference))


def _details_text(t: Translator, case: Case, tz: str) -> str:
    lines = [
        t.gettext("📂 <b>{reference}</b> · {status}").format(reference=esc(case.reference), status=status_text(t, case))
    ]
    lines.append(t.gettext("🙋 Needs: {kinds}").format(kinds=kinds_text(t, case.categories)))
    urgency = urgency_line(t, case)
    if urgency:
        lines.append(urgency)
    if case.description:
        description = case.description
        if len(description) > MAX_DESCRIPTION_IN_DETAILS:
            description = description[:MAX_DESCRIPTION_IN_DETAILS] + "…"
        lines.append(t.gettext("📝 {text}").format(text=esc(description)))
    if case.place_text:
        lines.append(t.gettext("📍 Place: {place}").format(place=esc(case.place_text)))
    if case.lat is not None and case.lon is not None:
        lines.append(
            t.gettext("🗺 Location: {lat}, {lon} (pin below)").format(lat=f"{case.lat:.5f}", lon=f"{case.lon:.5f}")
        )
    if case.phone:
        lines.append(t.gettext("📞 Phone: {phone}").format(phone=esc(case.phone)))
    if case.requester_id is not None:
        label = t.gettext("open a chat")
        link = f'<a href="tg://user?id={int(case.requester_id)}">{label}</a>'
        lines.append(t.gettext("💬 Telegram: {link}").format(link=link))
    lines.append(t.gettext("🕒 Received {time}").format(time=when(t, case.created_at, tz)))
    if case.claimed_by_name:
        lines.append(
            t.gettext("✋ Claimed by {name} at {time}").format(
                name=esc(case.claimed_by_name), time=when(t, case.claimed_at, tz)
            )
        )
    if case.closing_reason in CLOSING_LABELS:
        lines.append(t.gettext("✅ Closed: {reason}").format(reason=t.gettext(CLOSING_LABELS[case.closing_reason])))
        if case.aid_amount is not None:
            lines.append(t.gettext("💴 Amount: {amount}").format(amount=t.number(case.aid_amount)))
        if case.closing_note:
            lines.append(t.gettext("💬 {note}").format(note=esc(case.closing_note)))
    if case.last_note:
        lines.append(t.gettext("💬 Last note: {note}").format(note=esc(case.last_note[:MAX_LAST_NOTE_IN_DETAILS])))
    if case.documents:
        lines.append(
            t.ngettext("📎 {n} document (below)", "📎 {n} documents (below)", len(case.documents)).format(
                n=len(case.documents)
            )
        )
    return "\n".join(lines)


async def send_details(update: Update, context: Context, case_id: int) -> None:
    """The whole case, privately to the staff member (direct replies, not outbox items)."""
    query, user = update.callback_query, update.effective_user
    assert query is not None and user is not None
    t = tr(update, context)
    case = await _load_case(context, case_id)
    if case is None:
        await _refuse(update, context, NOT_VALID)
        return
    bot = context.bot
    try:
        await bot.send_message(user.id, _details_text(t, case, services(context).settings.timezone))
    except (Forbidden, BadRequest) as exc:
        if not _cannot_write(exc):
            raise
        await _tell_to_open_chat(update, context)
        return
    await query.answer(t.gettext("I have sent you the details privately."))
    if case.lat is not None and case.lon is not None:
        await bot.send_location(user.id, latitude=case.lat, longitude=case.lon)
    total = len(case.documents)
    for number, file_id in enumerate(case.documents, 1):
        caption = t.gettext("{reference} · document {number} of {total}").format(
            reference=esc(case.reference), number=number, total=total
        )
        # Stored ids are Telegram file ids of photos or files: try a photo first, then a document.
        try:
            await bot.send_photo(user.id, file_id, caption=caption)
        except BadRequest:
            try:
                await bot.send_document(user.id, file_id, caption=caption)
            except BadRequest as exc:
                log.warning("case %s: document %s could not be re-sent (%s)", case_id, number, type(exc).__name__)


# -- the staff conversation in the private chat: Need info, Refer, Resolve ------------------------------------------


def _reason_keyboard(t: Translator, case_id: int) -> InlineKeyboardMarkup:
    buttons = [
        InlineKeyboardButton(_reason_label(t, reason), callback_data=f"{REASON_PREFIX}|{case_id}|{reason}")
        for reason in CLOSING_LABELS
        if reason in CLOSING_REASONS
    ]
    rows = [buttons[i : i + 2] for i in range(0, len(buttons), 2)]
    rows.append([InlineKeyboardButton(t.gettext("✖ Cancel"), callback_data=f"{REASON_PREFIX}|{case_id}|cancel")])
    return InlineKeyboardMarkup(rows)


def _skip_keyboard(t: Translator, case_id: int) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup(
        [
            [
                InlineKeyboardButton(t.gettext("⏭ Skip"), callback_data=f"{REASON_PREFIX}|{case_id}|skip"),
                InlineKeyboardButton(t.gettext("✖ Cancel"), callback_data=f"{REASON_PREFIX}|{case_id}|cancel"),
            ]
        ]
    )


async def start_step(update: Update, context: Context) -> int:
    """Need info / Refer / Resolve tapped on a card: continue in the staff member's private chat."""
    query, user = update.callback_query, update.effective_user
    assert query is not None and user is not None and context.user_data is not None
    member = await _acting_staff(context, user.id)
    if member is None:
        await _refuse(update, context, NOT_STAFF)
        return ConversationHandler.END
    parsed = _parse_card(query.data)
    case = await _load_case(context, parsed[1]) if parsed else None
    if parsed is None or case is None or case.id is None:
        await _refuse(update, context, NOT_VALID)
        return ConversationHandler.END
    member, refusal = await _authorised(context, user.id, case.id)
    if member is None:
        await _refuse(update, context, refusal)
        return ConversationHandler.END
    if not case.is_open:
        await _refuse(update, context, CLOSED)
        return ConversationHandler.END
    action = parsed[0]
    t = tr(update, context)
    reference = esc(case.reference)
    markup: InlineKeyboardMarkup | None = None
    if action == "info":
        if case.requester_id is None:
            await query.answer(
                t.gettext("Nobody can be asked: this case has no requester to write to."), show_alert=True
            )
            return ConversationHandler.END
        text = t.gettext(
            "Type your question for the requester of <b>{reference}</b> (up to {n} characters). "
            "It is sent to them as it is. /cancel to stop."
        ).format(reference=reference, n=MAX_TEXT)
        state = ASK_QUESTION
    elif action == "refer":
        text = t.gettext(
            "Refer <b>{reference}</b> to whom, and why? Type the organisation or team and a short note "
            "(up to {n} characters); the requester is told. /cancel to stop."
        ).format(reference=reference, n=MAX_TEXT)
        state = ASK_REFERRAL
    else:
        text = t.gettext("How did <b>{reference}</b> end? Choose the closing reason.").format(reference=reference)
        markup = _reason_keyboard(t, case.id)
        state = PICK_REASON
    try:
        await context.bot.send_message(user.id, text, reply_markup=markup)
    except (Forbidden, BadRequest) as exc:
        if not _cannot_write(exc):
            raise
        await _tell_to_open_chat(update, context)
        return ConversationHandler.END
    context.user_data[PENDING] = {"case": case.id, "action": action}
    await query.answer(t.gettext("I have written to you privately: continue there."))
    return state


async def _typed(update: Update, context: Context) -> str | None:
    """The typed text of a step, or None after asking to shorten it."""
    message = update.effective_message
    assert message is not None and message.text is not None
    text = message.text.strip()
    if len(text) > MAX_TEXT:
        await message.reply_text(
            tr(update, context)
            .gettext("That is {length} characters; please shorten it to {n}.")
            .format(length=len(text), n=MAX_TEXT)
        )
        return None
    return text


async def _still_staff(update: Update, context: Context) -> Staff | None:
    """Re-check the role and the team at a typed step; when either is gone, say so and drop the step."""
    assert update.effective_user is not None and update.effective_message is not None
    pending = _pending(context, ("info", "refer", "resolve"))
    case_id = int(pending["case"]) if pending is not None else 0
    member, refusal = await _authorised(context, update.effective_user.id, case_id)
    if member is None:
        _clear_pending(context)
        await update.effective_message.reply_text(tr(update, context).gettext(refusal))
    return member


async def _expired(update: Update, context: Context) -> int:
    assert update.effective_message is not None
    _clear_pending(context)
    await update.effective_message.reply_text(tr(update, context).gettext(EXPIRED))
    return ConversationHandler.END


async def _closed_reply(update: Update, context: Context) -> int:
    assert update.effective_message is not None
    _clear_pending(context)
    t = tr(update, context)
    await update.effective_message.reply_text(t.gettext(CLOSED), reply_markup=main_menu(t))
    return ConversationHandler.END


async def on_question(update: Update, context: Context) -> int:
    text = await _typed(update, context)
    if text is None:
        return ASK_QUESTION
    pending = _pending(context, "info")
    if pending is None:
        return await _expired(update, context)
    member = await _still_staff(update, context)
    if member is None:
        return ConversationHandler.END
    case_id = int(pending["case"])
    won, case = await _transition(
        services(context),
        case_id,
        "need_info",
        lambda s: cases.ask_info(s, case_id, member.telegram_id, member.name, text),
        requester_markup=_answer_markup,
    )
    if not won or case is None:
        return await _closed_reply(update, context)
    _clear_pending(context)
    t = tr(update, context)
    assert update.effective_message is not None
    await update.effective_message.reply_text(
        t.gettext(
            "✅ Your question was sent to the requester of <b>{reference}</b>. Their answer will reach you here."
        ).format(reference=esc(case.reference)),
        reply_markup=main_menu(t),
    )
    return ConversationHandler.END


async def on_referral(update: Update, context: Context) -> int:
    text = await _typed(update, context)
    if text is None:
        return ASK_REFERRAL
    pending = _pending(context, "refer")
    if pending is None:
        return await _expired(update, context)
    member = await _still_staff(update, context)
    if member is None:
        return ConversationHandler.END
    case_id = int(pending["case"])
    won, case = await _transition(
        services(context),
        case_id,
        "referred",
        lambda s: cases.refer(s, case_id, member.telegram_id, member.name, text),
    )
    if not won or case is None:
        return await _closed_reply(update, context)
    _clear_pending(context)
    t = tr(update, context)
    assert update.effective_message is not None
    await update.effective_message.reply_text(
        t.gettext("↪️ <b>{reference}</b> is referred; the requester was told.").format(reference=esc(case.reference)),
        reply_markup=main_menu(t),
    )
    return ConversationHandler.END


def _reason_callback(update: Update, context: Context) -> tuple[int, str] | None:
    """(case id, choice) of a cr| button that belongs to the step in progress, else None."""
    query = update.callback_query
    assert query is not None
    match = _REASON_DATA.fullmatch(query.data or "")
    pending = _pending(context, "resolve")
    if match is None or pending is None or int(match.group(1)) != pending["case"]:
        return None
    return int(match.group(1)), match.group(2)


async def on_reason(update: Update, context: Context) -> int | None:
    query = update.callback_query
    assert query is not None and update.effective_user is not None
    t = tr(update, context)
    chosen = _reason_callback(update, context)
    if chosen is None:
        await query.answer(t.gettext(EXPIRED), show_alert=True)
        return None  # stay in the step: an old keyboard was tapped
    case_id, reason = chosen
    if reason == "cancel":
        return await cancel_button(update, context)
    if reason not in CLOSING_REASONS:
        await query.answer(t.gettext("Please choose a closing reason with the buttons."))
        return None
    member, refusal = await _authorised(context, update.effective_user.id, case_id)
    if member is None:
        _clear_pending(context)
        await _refuse(update, context, refusal)
        return ConversationHandler.END
    pending = _pending(context, "resolve")
    assert pending is not None
    pending["reason"] = reason
    await query.answer()
    case = await _load_case(context, case_id)
    reference = esc(case.reference if case else "")
    await query.edit_message_text(
        t.gettext("<b>{reference}</b> · closing reason: {reason}").format(
            reference=reference, reason=t.gettext(CLOSING_LABELS[reason])
        )
    )
    assert update.effective_chat is not None
    if reason in HELP_GIVEN:
        pending["given"], pending["items"] = aid.clean_kinds(reason, ()), {}
        await context.bot.send_message(
            update.effective_chat.id,
            t.gettext(
                "What was given for <b>{reference}</b>? Tick every kind of help and count the items handed out, "
                "then tap ✅ Done."
            ).format(reference=reference),
            reply_markup=_given_keyboard(context, t, case_id, pending),
        )
        return ASK_GIVEN
    await _ask_note(update, context, case_id)
    return ASK_NOTE


def _given_keyboard(context: Context, t: Translator, case_id: int, pending: dict[str, Any]) -> InlineKeyboardMarkup:
    prefix = f"{GIVEN_PREFIX}|{case_id}"
    item_kinds = services(context).settings.season.item_kinds
    rows = given_rows(t, prefix, pending.get("given") or [], aid.kind_of(pending.get("reason")))
    rows += counter_rows(t, prefix, pending.get("items") or {}, item_kinds)
    rows.append(
        [
            InlineKeyboardButton(t.gettext("✅ Done"), callback_data=f"{prefix}|done"),
            InlineKeyboardButton(t.gettext("✖ Cancel"), callback_data=f"{REASON_PREFIX}|{case_id}|cancel"),
        ]
    )
    return InlineKeyboardMarkup(rows)


async def on_given(update: Update, context: Context) -> int | None:
    """A tap on the "what was given" step: toggle a kind of help, count an item, reset the items, or Done."""
    query, user = update.callback_query, update.effective_user
    assert query is not None and user is not None and update.effective_chat is not None
    t = tr(update, context)
    match = _GIVEN_DATA.fullmatch(query.data or "")
    pending = _pending(context, "resolve")
    if (
        match is None
        or pending is None
        or int(match.group(1)) != pending["case"]
        or pending.get("reason") not in HELP_GIVEN
    ):
        await query.answer(t.gettext(EXPIRED), show_alert=True)
        return None
    member, refusal = await _authorised(context, user.id, int(match.group(1)))
    if member is None:
        _clear_pending(context)
        await _refuse(update, context, refusal)
        return ConversationHandler.END
    case_id, reason = int(match.group(1)), str(pending["reason"])
    item_kinds = services(context).settings.season.item_kinds
    chosen, items = list(pending.get("given") or []), dict(pending.get("items") or {})
    kind, value, command = match.group(2), match.group(3), match.group(4)
    if command == "done":
        pending["given"] = given = aid.clean_kinds(reason, chosen)
        pending["items"] = aid.clean_items(items, item_kinds)
        await query.answer()
        case = await _load_case(context, case_id)
        await query.edit_message_text(
            t.gettext("<b>{reference}</b> · given: {kinds} · items: {items}").format(
                reference=esc(case.reference if case else ""),
                kinds=", ".join(given_label(t, k) for k in given),
                items=items_text(t, pending["items"]),
            )
        )
        if "money" in given:
            await context.bot.send_message(
                update.effective_chat.id,
                t.gettext("How much was paid? Type the amount as a number (for example 200), or tap Skip."),
                reply_markup=_skip_keyboard(t, case_id),
            )
            return ASK_AMOUNT
        await _ask_note(update, context, case_id)
        return ASK_NOTE
    if command == "reset":
        items = {}
    elif kind == "i" and value in item_kinds:
        items[value] = min(items.get(value, 0) + 1, aid.MAX_ITEMS_PER_KIND)
    elif kind == "k" and value in aid.GIVEN_KINDS and value != aid.kind_of(reason):
        chosen = [k for k in chosen if k != value] if value in chosen else [*chosen, value]
    else:
        await query.answer(t.gettext("That is the closing reason: it stays ticked."))
        return None
    pending["given"], pending["items"] = aid.clean_kinds(reason, chosen), items
    await query.answer()
    await replace_buttons(query, _given_keyboard(context, t, case_id, pending))  # a second Reset changes nothing
    return None


async def _ask_note(update: Update, context: Context, case_id: int) -> None:
    t = tr(update, context)
    assert update.effective_chat is not None
    await context.bot.send_message(
        update.effective_chat.id,
        t.gettext(
            "Add a closing note for the requester (up to {n} characters; they will read it), or tap Skip."
        ).format(n=MAX_TEXT),
        reply_markup=_skip_keyboard(t, case_id),
    )


def _is_skip(t: Translator, text: str) -> bool:
    return text.lower() in _SKIP_WORDS or text.lower() == t.gettext("skip").lower()


def parse_amount(text: str) -> float | None:
    """ "200", "¥ 150.50", "80元" → the amount; None for anything else, zero, negative or absurd."""
    match = _AMOUNT.fullmatch(text.strip())
    if match is None:
        return None
    value = float(match.group(1).replace(",", "."))
    if not math.isfinite(value) or value <= 0 or value > MAX_AMOUNT:
        return None
    return value


async def on_amount(update: Update, context: Context) -> int:
    message = update.effective_message
    assert message is not None and message.text is not None
    t = tr(update, context)
    pending = _pending(context, "resolve")
    if pending is None or "reason" not in pending:
        return await _expired(update, context)
    text = message.text.strip()
    if not _is_skip(t, text):
        amount = parse_amount(text)
        if amount is None:
            await message.reply_text(
                t.gettext("Please type the amount as a number (for example 200), or tap Skip."),
                reply_markup=_skip_keyboard(t, int(pending["case"])),
            )
            return ASK_AMOUNT
        pending["amount"] = amount
    await _ask_note(update, context, int(pending["case"]))
    return ASK_NOTE


async def _skip_callback(update: Update, context: Context) -> dict[str, Any] | None:
    """The step in progress for a ⏭ Skip tap, or None (answered) when the button is stale."""
    query = update.callback_query
    assert query is not None
    pending = _pending(context, "resolve")
    if _reason_callback(update, context) is None or pending is None or "reason" not in pending:
        await query.answer(tr(update, context).gettext(EXPIRED), show_alert=True)
        return None
    await query.answer()
    await query.edit_message_reply_markup(None)
    return pending


async def on_skip_amount(update: Update, context: Context) -> int | None:
    pending = await _skip_callback(update, context)
    if pending is None:
        return None
    pending.pop("amount", None)
    await _ask_note(update, context, int(pending["case"]))
    return ASK_NOTE


async def on_skip_note(update: Update, context: Context) -> int | None:
    if await _skip_callback(update, context) is None:
        return None
    return await _finish_resolve(update, context, None)


async def on_note(update: Update, context: Context) -> int:
    text = await _typed(update, context)
    if text is None:
        return ASK_NOTE
    t = tr(update, context)
    return await _finish_resolve(update, context, None if _is_skip(t, text) else text)


async def _finish_resolve(update: Update, context: Context, note: str | None) -> int:
    assert update.effective_user is not None and update.effective_chat is not None
    pending = _pending(context, "resolve")
    if pending is None or pending.get("reason") not in CLOSING_REASONS:
        return await _expired(update, context)
    t = tr(update, context)
    member, refusal = await _authorised(context, update.effective_user.id, int(pending["case"]))
    if member is None:
        _clear_pending(context)
        await context.bot.send_message(update.effective_chat.id, t.gettext(refusal))
        return ConversationHandler.END
    case_id, reason = int(pending["case"]), str(pending["reason"])
    given = aid.clean_kinds(reason, pending.get("given") or ())
    amount = pending.get("amount") if "money" in given else None
    items = dict(pending.get("items") or {})
    item_kinds = services(context).settings.season.item_kinds
    won, case = await _transition(
        services(context),
        case_id,
        "resolved",
        lambda s: aid.resolve(
            s,
            case_id,
            member.telegram_id,
            member.name,
            reason,
            note,
            kinds=given,
            items=items,
            item_kinds=item_kinds,
            amount=amount,
        ),
    )
    _clear_pending(context)
    if not won and case is not None and await _resolved_by(services(context), case, member.telegram_id, reason):
        won = True  # this very resolve, handled again after a crash cut it short: confirm it, not "already closed"
    if not won or case is None:
        await context.bot.send_message(update.effective_chat.id, t.gettext(CLOSED), reply_markup=main_menu(t))
        return ConversationHandler.END
    text = t.gettext("✅ <b>{reference}</b> is resolved: {reason}. The requester was told.").format(
        reference=esc(case.reference), reason=t.gettext(CLOSING_LABELS[reason])
    )
    if amount is not None:
        text += "\n" + t.gettext("💴 Amount: {amount}").format(amount=t.number(amount))
    await context.bot.send_message(update.effective_chat.id, text, reply_markup=main_menu(t))
    return ConversationHandler.END


def _reprompt(msgid: str, state: int, *, skip: bool = False) -> Callable[[Update, Context], Coroutine[Any, Any, int]]:
    """Anything but the expected input (a sticker, a photo, a voice note): say what the step needs."""

    async def reprompt(update: Update, context: Context) -> int:
        assert update.effective_message is not None
        t = tr(update, context)
        pending = _pending(context, ("info", "refer", "resolve"))
        markup = _skip_keyboard(t, int(pending["case"])) if skip and pending else None
        await update.effective_message.reply_text(t.gettext(msgid), reply_markup=markup)
        return state

    return reprompt


async def cancel_step(update: Update, context: Context) -> int:
    t = tr(update, context)
    assert update.effective_message is not None
    _clear_pending(context)
    await update.effective_message.reply_text(
        t.gettext("Cancelled. What would you like to do?"), reply_markup=main_menu(t)
    )
    return ConversationHandler.END


async def cancel_button(update: Update, context: Context) -> int:
    query = update.callback_query
    assert query is not None and update.effective_chat is not None
    t = tr(update, context)
    _clear_pending(context)
    await query.answer()
    await query.edit_message_reply_markup(None)
    await context.bot.send_message(
        update.effective_chat.id, t.gettext("Cancelled. What would you like to do?"), reply_markup=main_menu(t)
    )
    return ConversationHandler.END


async def on_cancel_callback(update: Update, context: Context) -> int | None:
    """✖ Cancel under a step of the conversation in progress."""
    if _reason_callback(update, context) is None:
        query = update.callback_query
        assert query is not None
        await query.answer(tr(update, context).gettext(EXPIRED), show_alert=True)
        return None
    return await cancel_button(update, context)


async def stale_reason_button(update: Update, context: Context) -> None:
    """A closing-reason, Skip or Cancel button tapped after its step ended (or forged)."""
    query = update.callback_query
    assert query is not None
    await query.answer(tr(update, context).gettext(EXPIRED), show_alert=True)


# -- the requester answers a question ------------------------------------------------------------------------------


async def on_answer_button(update: Update, context: Context) -> int:
    query, user = update.callback_query, update.effective_user
    assert query is not None and user is not None and context.user_data is not None
    t = tr(update, context)
    match = _ANSWER_DATA.fullmatch(query.data or "")
    case = await _load_case(context, int(match.group(1))) if match else None
    if case is None or case.id is None or case.requester_id != user.id:
        # Someone else's case id (forged) or a deleted one: say nothing about it.
        await query.answer(t.gettext("This request is not available."), show_alert=True)
        return ConversationHandler.END
    if not case.is_open:
        await query.answer(t.gettext("This request is already closed."), show_alert=True)
        return ConversationHandler.END
    await query.answer()
    context.user_data[ANSWERING] = case.id
    await context.bot.send_message(
        user.id,
        t.gettext(
            "Type your answer or what you want to add to <b>{reference}</b> (up to {n} characters). "
            "Send /cancel to stop."
        ).format(reference=esc(case.reference), n=MAX_TEXT),
    )
    return AWAIT_ANSWER


async def _staff_to_tell(session: AsyncSession, case: Case) -> int | None:
    """Who hears the answer: the claimer, else the staff member who asked the latest question."""
    if case.claimed_by is not None:
        return case.claimed_by
    asked = await _latest_event(session, case.id or 0, "need_info")
    return asked.actor_id if asked is not None else None


async def on_answer_text(update: Update, context: Context) -> int:
    message, user = update.effective_message, update.effective_user
    assert message is not None and message.text is not None and user is not None and context.user_data is not None
    t = tr(update, context)
    text = message.text.strip()
    if len(text) > MAX_TEXT:
        await message.reply_text(
            t.gettext("That is {length} characters; please shorten it to {n}.").format(length=len(text), n=MAX_TEXT)
        )
        return AWAIT_ANSWER
    if not text:
        return await reprompt_answer(update, context)
    case_id = context.user_data.get(ANSWERING)
    if not isinstance(case_id, int):
        await message.reply_text(
            t.gettext("This step has expired. Please tap ✍️ Answer again."), reply_markup=main_menu(t)
        )
        return ConversationHandler.END
    svc = services(context)
    async with svc.db.session() as session:
        case = await cases.add_info(session, case_id, user.id, text)
        if case is None:
            await session.rollback()
        else:
            event = await _latest_event(session, case_id, "info_added")
            await enqueue_cards(session, svc, case, new=False)
            staff_id = await _staff_to_tell(session, case)
            if staff_id is not None and event is not None:
                stored = await users.get(session, staff_id)
                st = translator(stored.language if stored else svc.settings.i18n.default_language)
                await outbox.enqueue_message(
                    session,
                    staff_id,
                    st.gettext("<b>{reference}</b>: the requester answered: {text}").format(
                        reference=esc(case.reference), text=esc(text)
                    ),
                    dedupe_key=f"case:{case_id}:event:{event.id}:staff",
                )
            await session.commit()
    context.user_data.pop(ANSWERING, None)
    if case is None:
        await message.reply_text(t.gettext("This request is already closed."), reply_markup=main_menu(t))
        return ConversationHandler.END
    svc.wake_outbox()
    log.info("case %s: info_added", case_id)
    await message.reply_text(
        t.gettext("✅ Thank you. Your answer was added to <b>{reference}</b>.").format(reference=esc(case.reference)),
        reply_markup=main_menu(t),
    )
    return ConversationHandler.END


async def reprompt_answer(update: Update, context: Context) -> int:
    assert update.effective_message is not None
    await update.effective_message.reply_text(
        tr(update, context).gettext("Please type your answer as text, or send /cancel.")
    )
    return AWAIT_ANSWER


async def cancel_answer(update: Update, context: Context) -> int:
    assert context.user_data is not None and update.effective_message is not None
    t = tr(update, context)
    context.user_data.pop(ANSWERING, None)
    await update.effective_message.reply_text(
        t.gettext("Cancelled. What would you like to do?"), reply_markup=main_menu(t)
    )
    return ConversationHandler.END


# -- wiring --------------------------------------------------------------------------------------------------------


def handlers() -> Handlers:
    private = filters.ChatType.PRIVATE
    typed = private & filters.TEXT & ~filters.COMMAND & ~filters.UpdateType.EDITED & ~any_menu_button()
    other = private & ~filters.TEXT & ~filters.COMMAND & ~filters.UpdateType.EDITED
    reason = f"^{REASON_PREFIX}\\|"
    skip = f"^{REASON_PREFIX}\\|[0-9]+\\|skip$"
    cancel = f"^{REASON_PREFIX}\\|[0-9]+\\|cancel$"
    staff_steps = ConversationHandler(
        entry_points=[CallbackQueryHandler(start_step, pattern=f"^{CASE_PREFIX}\\|(info|refer|resolve)\\|")],
        states={
            ASK_QUESTION: [
                MessageHandler(typed, on_question),
                MessageHandler(
                    other, _reprompt(N_("Please type your question as text, or send /cancel."), ASK_QUESTION)
                ),
            ],
            ASK_REFERRAL: [
                MessageHandler(typed, on_referral),
                MessageHandler(
                    other,
                    _reprompt(N_("Please type who you refer to and why, as text, or send /cancel."), ASK_REFERRAL),
                ),
            ],
            PICK_REASON: [
                CallbackQueryHandler(on_reason, pattern=reason),
                MessageHandler(
                    typed | other,
                    _reprompt(
                        N_("Please choose a closing reason with the buttons above, or send /cancel."), PICK_REASON
                    ),
                ),
            ],
            ASK_GIVEN: [
                CallbackQueryHandler(on_given, pattern=f"^{GIVEN_PREFIX}\\|"),
                MessageHandler(
                    typed | other,
                    _reprompt(N_("Please tap what was given with the buttons above, then ✅ Done."), ASK_GIVEN),
                ),
            ],
            ASK_AMOUNT: [
                MessageHandler(typed, on_amount),
                CallbackQueryHandler(on_skip_amount, pattern=skip),
                MessageHandler(
                    other,
                    _reprompt(
                        N_("Please type the amount as a number (for example 200), or tap Skip."), ASK_AMOUNT, skip=True
                    ),
                ),
            ],
            ASK_NOTE: [
                MessageHandler(typed, on_note),
                CallbackQueryHandler(on_skip_note, pattern=skip),
                MessageHandler(other, _reprompt(N_("Please type the note as text, or tap Skip."), ASK_NOTE, skip=True)),
            ],
        },
        fallbacks=[
            CommandHandler("cancel", cancel_step, filters=private),
            CallbackQueryHandler(on_cancel_callback, pattern=cancel),
        ],
        # Keyed per user, not per chat: the tap comes from the staff group, the typing happens in the private chat.
        per_chat=False,
        name="case_staff",
        persistent=True,
        allow_reentry=True,
    )
    requester_answer = ConversationHandler(
        entry_points=[CallbackQueryHandler(on_answer_button, pattern=f"^{ANSWER_PREFIX}\\|")],
        states={
            AWAIT_ANSWER: [
                MessageHandler(typed, on_answer_text),
                MessageHandler(other, reprompt_answer),
            ]
        },
        fallbacks=[CommandHandler("cancel", cancel_answer, filters=private)],
        name="case_answer",
        persistent=True,
        allow_reentry=True,
    )
    return [
        staff_steps,
        requester_answer,
        CallbackQueryHandler(on_card_button, pattern=f"^{CASE_PREFIX}\\|"),
        CallbackQueryHandler(stale_reason_button, pattern=reason),
        CallbackQueryHandler(stale_reason_button, pattern=f"^{GIVEN_PREFIX}\\|"),
    ]
