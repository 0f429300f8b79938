"""Journey 2: a person in difficulty asks for help, step by step, with one form and one set of documents.

Triage first (danger → emergency numbers; under 18 → child protection line), then what help, a few words, where,
how to reach them, optional documents, consent, and a review with Edit / Submit. Every step has Back and Cancel.
The draft lives in user_data, which the persistence writes after every update: a restart or an hour away resumes
the same step with everything kept. The draft id is the case's idempotency key: a second Submit makes no second case.
"""

from __future__ import annotations

import logging
import re
import uuid
from typing import Any

from telegram import (
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    KeyboardButton,
    ReplyKeyboardMarkup,
    ReplyKeyboardRemove,
    Update,
)
from telegram.ext import CallbackQueryHandler, CommandHandler, ConversationHandler, MessageHandler, filters

from bot.i18n import N_, Translator, all_translators
from handlers import case_alerts, teams
from handlers.case_views import HELP_KIND_LABELS, kinds_text
from handlers.common import Context, Handlers, esc, replace_buttons, services, step_tracker, strip_buttons, tr
from handlers.menu import ASK_HELP, any_menu_button, main_menu, menu_button
from models import cases
from models.base import utcnow
from models.cases import HELP_KINDS, Case

log = logging.getLogger("waystation.request")

DANGER, MINOR, KINDS, DESCRIBE, WHERE, CONTACT, DOCS, CONSENT, REVIEW = range(10, 19)
ORDER = (DANGER, MINOR, KINDS, DESCRIBE, WHERE, CONTACT, DOCS, CONSENT, REVIEW)
DRAFT = "request_draft"
SENT = "requests_sent"  # draft id -> reference, to answer a late second Submit
PREFIX = "rq"
MAX_TEXT = 1000
MAX_PLACE = 300
PHONE = re.compile(r"^\+?[0-9][0-9 \-]{4,19}$")

SERVICE_LABELS = {"police": N_("Police"), "ambulance": N_("Ambulance"), "fire": N_("Fire")}
BACK, SKIP, CANCEL = N_("◀ Back"), N_("⏭ Skip"), N_("✖ Cancel")
SHARE_LOCATION, SHARE_PHONE, TELEGRAM_ONLY = (
    N_("📍 Share my location"),
    N_("📱 Share my phone number"),
    N_("💬 Telegram is enough"),
)


def _labels(msgid: str) -> list[str]:
    return sorted({t.gettext(msgid) for t in all_translators()})


def draft_of(context: Context) -> dict[str, Any]:
    assert context.user_data is not None
    draft = context.user_data.get(DRAFT)
    if not isinstance(draft, dict):
        draft = context.user_data[DRAFT] = new_draft()
    return draft


def new_draft() -> dict[str, Any]:
    return {
        "id": uuid.uuid4().hex,
        "danger": None,
        "minor": None,
        "kinds": [],
        "text": None,
        "lat": None,
        "lon": None,
        "place": None,
        "phone": None,
        "contact_chosen": False,
        "docs": [],
        "consent": False,
        "review": False,
    }


def _button(label: str, action: str) -> InlineKeyboardButton:
    return InlineKeyboardButton(label, callback_data=f"{PREFIX}|{action}")


def _nav(t: Translator, *, back: bool = True) -> list[InlineKeyboardButton]:
    row = [_button(t.gettext(BACK), "back")] if back else []
    return [*row, _button(t.gettext(CANCEL), "cancel")]


def _reply_keyboard(t: Translator, first: KeyboardButton, second: str) -> ReplyKeyboardMarkup:
    return ReplyKeyboardMarkup(
        [[first], [second], [t.gettext(BACK), t.gettext(CANCEL)]], resize_keyboard=True, one_time_keyboard=False
    )


def emergency_text(t: Translator, context: Context) -> str:
    settings = services(context).settings.help
    numbers = [
        f"☎️ <b>{esc(number)}</b> — {esc(t.gettext(SERVICE_LABELS[name]) if name in SERVICE_LABELS else name)}"
        for name, number in settings.emergency_numbers.items()
    ]
    lines = [t.gettext("<b>If anyone is in danger, call now:</b>"), *numbers]
    if settings.hotline:
        lines.append(t.gettext("24-hour help hotline: <b>{number}</b>").format(number=esc(settings.hotline)))
    return "\n".join(lines)


async def _send(update: Update, context: Context, text: str, markup: Any = None) -> None:
    assert update.effective_chat is not None
    await context.bot.send_message(update.effective_chat.id, text, reply_markup=markup)


async def prompt(update: Update, context: Context, state: int) -> int:
    """Ask the question of `state` (with its keyboard) and return it as the conversation's new state."""
    t = tr(update, context)
    draft = draft_of(context)
    _ = t.gettext
    if state == DANGER:
        await _send(
            update,
            context,
            _("<b>Ask for help</b>\n\nFirst: is anyone in danger or hurt right now?"),
            InlineKeyboardMarkup(
                [
                    [_button(_("🚨 Yes, someone is in danger"), "danger|yes")],
                    [_button(_("No"), "danger|no")],
                    _nav(t, back=False),
                ]
            ),
        )
    elif state == MINOR:
        await _send(
            update,
            context,
            _("Are you under 18?"),
            InlineKeyboardMarkup([[_button(_("Yes"), "minor|yes"), _button(_("No"), "minor|no")], _nav(t)]),
        )
    elif state == KINDS:
        await _send(update, context, _kinds_prompt(t), _kinds_keyboard(t, draft["kinds"]))
    elif state == DESCRIBE:
        await _send(
            update,
            context,
            _("In a few words, what is happening and what do you need? (up to {n} characters)").format(n=MAX_TEXT),
            InlineKeyboardMarkup([_nav(t)]),
        )
    elif state == WHERE:
        await _send(
            update,
            context,
            _("Where are you? Share your location, type the place (a street, a landmark), or skip."),
            _reply_keyboard(t, KeyboardButton(_(SHARE_LOCATION), request_location=True), _(SKIP)),
        )
    elif state == CONTACT:
        await _send(
            update,
            context,
            _(
                "How can staff reach you? A message here on Telegram is enough. You can also share your phone "
                "number with the button, or type it."
            ),
            _reply_keyboard(t, KeyboardButton(_(SHARE_PHONE), request_contact=True), _(TELEGRAM_ONLY)),
        )
    elif state == DOCS:
        await _docs_prompt(update, context, t, draft)
    elif state == CONSENT:
        await _send(update, context, _consent_text(t, context), _consent_keyboard(t))
    elif state == REVIEW:
        draft["review"] = True
        await _send(update, context, review_text(t, draft), _review_keyboard(t, draft))
    return state


def _kinds_prompt(t: Translator) -> str:
    return t.gettext("What help do you need? Tap all that apply, then <b>Next</b>.")


def _kinds_keyboard(t: Translator, chosen: list[str]) -> InlineKeyboardMarkup:
    rows = [
        [_button(("✅ " if kind in chosen else "") + t.gettext(HELP_KIND_LABELS[kind]), f"kind|{kind}")]
        for kind in HELP_KINDS
    ]
    rows.append([_button(t.gettext("Next ▶"), "next")])
    rows.append(_nav(t))
    return InlineKeyboardMarkup(rows)


async def _docs_prompt(update: Update, context: Context, t: Translator, draft: dict[str, Any]) -> None:
    limit = services(context).settings.help.max_documents
    rows = []
    user = update.effective_user
    previous: list[str] = []
    if user is not None and not draft["docs"]:
        async with services(context).db.session() as session:
            previous = await cases.last_documents(session, user.id)
    if previous:
        label = t.ngettext(
            "📎 Use the document you gave before", "📎 Use the {n} documents you gave before", len(previous)
        )
        rows.append([_button(label.format(n=len(previous)), "docs_reuse")])
    rows.append([_button(t.gettext("Done ▶") if draft["docs"] else t.gettext("⏭ Skip"), "docs_done")])
    rows.append(_nav(t))
    text = t.gettext(
        "Optional: photos or files of your ID or papers (up to {n}), so you don't have to show them again. "
        "Send them now, or skip."
    ).format(n=limit)
    if draft["docs"]:
        text += "\n" + t.gettext("Received: {count} of {n}.").format(count=len(draft["docs"]), n=limit)
    await _send(update, context, text, InlineKeyboardMarkup(rows))


def _consent_text(t: Translator, context: Context) -> str:
    return t.gettext(
        "<b>Before you send</b>\n"
        "• We keep what you entered so staff can help you: your answers, your Telegram account, and the phone, "
        "place and documents if you gave them.\n"
        "• Only staff of the care stations and partner services see it.\n"
        "• Personal details are deleted after the request is closed and the retention period ends; you can see "
        "and delete your data at any time with /forgetme.\n\n"
        "Do you agree?"
    )


def _consent_keyboard(t: Translator) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup([[_button(t.gettext("✅ I agree"), "agree")], _nav(t)])


def review_text(t: Translator, draft: dict[str, Any]) -> str:
    _ = t.gettext
    yes, no = _("yes"), _("no")
    place = _("not given")
    if draft["lat"] is not None:
        place = _("location shared")
    elif draft["place"]:
        place = esc(draft["place"])
    lines = [
        _("<b>Please check your request</b>"),
        _("🚨 Someone in danger: {answer}").format(answer=yes if draft["danger"] else no),
        _("🧒 Under 18: {answer}").format(answer=yes if draft["minor"] else no),
        _("🙋 Help needed: {kinds}").format(kinds=kinds_text(t, draft["kinds"])),
        _("📝 Your words: {text}").format(text=esc(draft["text"] or "—")),
        _("📍 Where: {place}").format(place=place),
        _("📞 Contact: {contact}").format(contact=esc(draft["phone"]) if draft["phone"] else _("Telegram only")),
        t.ngettext("📎 {n} document", "📎 {n} documents", len(draft["docs"])).format(n=len(draft["docs"])),
    ]
    return "\n".join(lines)


def _review_keyboard(t: Translator, draft: dict[str, Any]) -> InlineKeyboardMarkup:
    _ = t.gettext
    return InlineKeyboardMarkup(
        [
            [_button(_("✏️ Help needed"), "edit|kinds"), _button(_("✏️ Words"), "edit|text")],
            [_button(_("✏️ Where"), "edit|where"), _button(_("✏️ Contact"), "edit|contact")],
            [_button(_("✏️ Documents"), "edit|docs")],
            [InlineKeyboardButton(_("📨 Submit"), callback_data=f"{PREFIX}|submit|{draft['id'][:16]}")],
            [_button(_(CANCEL), "cancel")],
        ]
    )


async def _advance(update: Update, context: Context, current: int) -> int:
    """After a step is answered: back to the review when editing from it, else the next step."""
    draft = draft_of(context)
    if draft.get("review") and current not in (DANGER, MINOR):
        return await prompt(update, context, REVIEW)
    return await prompt(update, context, ORDER[ORDER.index(current) + 1])


# --- entry, triage --------------------------------------------------------------------------------------------


async def start_form(update: Update, context: Context) -> int:
    assert context.user_data is not None
    draft = context.user_data.get(DRAFT)
    if isinstance(draft, dict) and (draft.get("kinds") or draft.get("text")):
        # An unfinished request: carry on where they were rather than losing it.
        t = tr(update, context)
        await _send(update, context, t.gettext("You have an unfinished request; let's continue it."))
        return await prompt(update, context, REVIEW if draft.get("consent") else KINDS)
    context.user_data[DRAFT] = new_draft()
    return await prompt(update, context, DANGER)


async def on_button(update: Update, context: Context) -> int:
    """Every inline button of the form: rq|<action>[|arg]."""
    query = update.callback_query
    assert query is not None and query.data is not None
    t = tr(update, context)
    parts = query.data.split("|")
    action, arg = parts[1] if len(parts) > 1 else "", parts[2] if len(parts) > 2 else ""
    state = context.user_data.get("_request_state") if context.user_data else None
    draft = draft_of(context)
    if action == "cancel":
        await query.answer()
        return await cancel(update, context)
    if action == "danger":
        await query.answer()
        draft["danger"] = arg == "yes"
        await _strip(query)
        if draft["danger"]:
            await _send(
                update,
                context,
                emergency_text(t, context) + "\n\n" + t.gettext("When you are safe, you can continue your request."),
                InlineKeyboardMarkup([[_button(t.gettext("Continue ▶"), "continue")], _nav(t, back=False)]),
            )
            return DANGER
        return await prompt(update, context, MINOR)
    if action == "continue":
        await query.answer()
        await _strip(query)
        return await prompt(update, context, MINOR)
    if action == "minor":
        await query.answer()
        draft["minor"] = arg == "yes"
        await _strip(query)
        if draft["minor"]:
            line = services(context).settings.help.child_protection_line
            await _send(
                update,
                context,
                t.gettext(
                    "Thank you for telling us. Your request will be treated as a priority. You can also call the "
                    "child protection line <b>{number}</b> at any time."
                ).format(number=esc(line)),
            )
        return await _advance(update, context, MINOR)
    if action == "kind":
        if arg not in HELP_KINDS:
            await query.answer(t.gettext("This button is no longer valid."), show_alert=True)
            return KINDS
        kinds: list[str] = draft["kinds"]
        kinds.remove(arg) if arg in kinds else kinds.append(arg)
        await query.answer()
        await replace_buttons(query, _kinds_keyboard(t, kinds))
        return KINDS
    if action == "next":
        if not draft["kinds"]:
            await query.answer(t.gettext("Please choose at least one kind of help."), show_alert=True)
            return KINDS
        await query.answer()
        await _strip(query)
        return await _advance(update, context, KINDS)
    if action == "back":
        await query.answer()
        await _strip(query)
        return await back(update, context, state)
    if action == "docs_reuse":
        await query.answer()
        assert update.effective_user is not None
        async with services(context).db.session() as session:
            draft["docs"] = (await cases.last_documents(session, update.effective_user.id))[
                : services(context).settings.help.max_documents
            ]
        await _strip(query)
        return await _advance(update, context, DOCS)
    if action == "docs_done":
        await query.answer()
        await _strip(query)
        return await _advance(update, context, DOCS)
    if action == "agree":
        await query.answer()
        draft["consent"] = True
        await _strip(query)
        return await prompt(update, context, REVIEW)
    if action == "edit" and draft.get("review"):
        await query.answer()
        await _strip(query)
        target = {"kinds": KINDS, "text": DESCRIBE, "where": WHERE, "contact": CONTACT, "docs": DOCS}.get(arg)
        return await prompt(update, context, target if target is not None else REVIEW)
    if action == "submit":
        return await submit(update, context, arg)
    if action == "shorten" and isinstance(draft.get("long_text"), str):
        await query.answer()
        draft["text"] = draft.pop("long_text")[:MAX_TEXT]
        await _strip(query)
        return await _advance(update, context, DESCRIBE)
    await query.answer(t.gettext("This button is no longer valid."), show_alert=True)
    return state if isinstance(state, int) else DANGER


async def _strip(query: Any) -> None:
    """Remove the buttons of an answered step, so an old button can't be tapped again by mistake."""
    await strip_buttons(query)  # already without buttons (a second tap) or too old to edit


async def back(update: Update, context: Context, state: Any) -> int:
    current = state if state in ORDER else DANGER
    draft = draft_of(context)
    if draft.get("review") and current != REVIEW:
        return await prompt(update, context, REVIEW)  # Back from an edit returns to the review
    draft["review"] = False
    index = max(0, ORDER.index(current) - 1)
    if current == REVIEW:
        index = ORDER.index(CONSENT)
    return await prompt(update, context, ORDER[index])


# --- typed answers ---------------------------------------------------------------------------------------------


async def on_description(update: Update, context: Context) -> int:
    t = tr(update, context)
    message = update.effective_message
    assert message is not None and message.text is not None
    text = message.text.strip()
    draft = draft_of(context)
    if len(text) > MAX_TEXT:
        draft["long_text"] = text  # kept: they can shorten it, or use the first part
        await message.reply_text(
            t.gettext(
                "That is {length} characters; please shorten it to {n}. Your text is kept: send a shorter "
                "version, or use the beginning of it."
            ).format(length=len(text), n=MAX_TEXT),
            reply_markup=InlineKeyboardMarkup(
                [[_button(t.gettext("✂️ Use the first {n} characters").format(n=MAX_TEXT), "shorten")], _nav(t)]
            ),
        )
        return DESCRIBE
    if not text:
        return await prompt(update, context, DESCRIBE)
    draft["text"] = text
    draft.pop("long_text", None)
    return await _advance(update, context, DESCRIBE)


async def on_where(update: Update, context: Context) -> int:
    t = tr(update, context)
    message = update.effective_message
    assert message is not None
    draft = draft_of(context)
    if message.location is not None:
        draft["lat"], draft["lon"], draft["place"] = message.location.latitude, message.location.longitude, None
        ack = t.gettext("📍 Location saved.")
    else:
        text = (message.text or "").strip()
        if text in _labels(SKIP):
            draft["lat"] = draft["lon"] = draft["place"] = None
            ack = t.gettext("OK, no place.")
        elif len(text) > MAX_PLACE:
            await message.reply_text(
                t.gettext("That is too long for a place. Please type just the street or landmark.")
            )
            return WHERE
        else:
            draft["lat"] = draft["lon"] = None
            draft["place"] = text
            ack = t.gettext("📍 Place saved.")
    await message.reply_text(ack, reply_markup=ReplyKeyboardRemove())
    return await _advance(update, context, WHERE)


async def on_contact(update: Update, context: Context) -> int:
    t = tr(update, context)
    message, user = update.effective_message, update.effective_user
    assert message is not None and user is not None
    draft = draft_of(context)
    if message.contact is not None:
        if message.contact.user_id != user.id:
            await message.reply_text(
                t.gettext("Please share your own number with the button below (not someone else's contact).")
            )
            return CONTACT
        draft["phone"] = message.contact.phone_number
    else:
        text = (message.text or "").strip()
        if text in _labels(TELEGRAM_ONLY):
            draft["phone"] = None
        elif PHONE.match(text):
            draft["phone"] = text
        else:
            await message.reply_text(
                t.gettext(
                    "That does not look like a phone number. Type digits only (e.g. 13800138000), or tap a button."
                )
            )
            return CONTACT
    draft["contact_chosen"] = True
    await message.reply_text(t.gettext("📞 Contact saved."), reply_markup=ReplyKeyboardRemove())
    return await _advance(update, context, CONTACT)


async def on_document(update: Update, context: Context) -> int:
    t = tr(update, context)
    message = update.effective_message
    assert message is not None
    draft = draft_of(context)
    limit = services(context).settings.help.max_documents
    file_id = None
    if message.photo:
        file_id = message.photo[-1].file_id  # the largest size
    elif message.document is not None:
        file_id = message.document.file_id
    if file_id is None:
        return DOCS
    if len(draft["docs"]) >= limit:
        await message.reply_text(t.gettext("You have already sent {n}, the most we can take.").format(n=limit))
    elif file_id not in draft["docs"]:
        draft["docs"].append(file_id)
    await _docs_prompt(update, context, t, draft)
    return DOCS


async def on_text_in_reply_step(update: Update, context: Context) -> int | None:
    """Back / Cancel typed or tapped on a reply keyboard (WHERE and CONTACT steps)."""
    message = update.effective_message
    assert message is not None and message.text is not None
    state = context.user_data.get("_request_state") if context.user_data else None
    if message.text in _labels(CANCEL):
        return await cancel(update, context)
    await message.reply_text("↩", reply_markup=ReplyKeyboardRemove())
    return await back(update, context, state)


async def reprompt(update: Update, context: Context) -> int:
    """Anything the current step can't use (a sticker, a voice note, text where a button is expected)."""
    t = tr(update, context)
    state = context.user_data.get("_request_state") if context.user_data else DANGER
    state = state if state in ORDER else DANGER
    hints = {
        DESCRIBE: t.gettext(
            "Please write a few words as text. Voice messages, stickers and photos can't be used here."
        ),
        WHERE: t.gettext("Please share your location, type the place, or tap Skip."),
        CONTACT: t.gettext("Please tap a button, or type your phone number."),
        DOCS: t.gettext("Please send photos or files of your documents, or tap Skip / Done."),
    }
    assert update.effective_message is not None
    await update.effective_message.reply_text(hints.get(state, t.gettext("Please use the buttons below.")))
    return await prompt(update, context, state)


# --- submit and cancel -----------------------------------------------------------------------------------------


async def submit(update: Update, context: Context, short_id: str) -> int:
    query = update.callback_query
    user = update.effective_user
    assert query is not None and user is not None and context.user_data is not None
    t = tr(update, context)
    draft = context.user_data.get(DRAFT)
    if not isinstance(draft, dict) or not draft["id"].startswith(short_id) or not draft.get("consent"):
        await late_submit(update, context)
        return ConversationHandler.END
    svc = services(context)
    async with svc.db.session() as session:
        case, created = await cases.create(
            session,
            Case(
                requester_id=user.id,
                language=t.language,
                categories=list(draft["kinds"]),
                description=draft["text"],
                lat=draft["lat"],
                lon=draft["lon"],
                place_text=draft["place"],
                phone=draft["phone"],
                documents=list(draft["docs"]),
                danger=bool(draft["danger"]),
                minor=bool(draft["minor"]),
                idempotency_key=draft["id"],
                consent_at=utcnow(),
            ),
            reference_prefix=svc.settings.help.reference_prefix,
        )
        notice = None
        if created:
            await case_alerts.enqueue_cards(session, svc, case, new=True)
            # Out of the team's duty hours: say when staff will see it, and give the hotline.
            notice = await teams.out_of_hours_notice(session, svc, case)
        await session.commit()
    svc.wake_outbox()
    sent = context.user_data.setdefault(SENT, {})
    sent[draft["id"][:16]] = case.reference
    context.user_data.pop(DRAFT, None)
    await query.answer()
    await _strip(query)
    confirmation = t.gettext(
        "✅ Your request has been sent. Reference: <b>{reference}</b>\n\n"
        "What happens next: staff of the nearest care station and partner services see it now. Someone will "
        "message you here; every change is sent to you. You can follow it with /status."
    ).format(reference=esc(case.reference))
    if notice:
        confirmation += "\n\n" + notice
    await _send(update, context, confirmation, main_menu(t))
    return ConversationHandler.END


async def late_submit(update: Update, context: Context) -> None:
    """Submit tapped again after the request went (or on a stale review): say which reference it became."""
    query = update.callback_query
    assert query is not None and query.data is not None
    t = tr(update, context)
    short_id = query.data.split("|")[2] if query.data.count("|") >= 2 else ""
    sent = (context.user_data or {}).get(SENT, {})
    reference = sent.get(short_id) if isinstance(sent, dict) else None
    if reference:
        await query.answer(t.gettext("Already sent as {reference}.").format(reference=reference), show_alert=True)
    else:
        await query.answer(t.gettext("This button is no longer valid."), show_alert=True)


async def cancel(update: Update, context: Context) -> int:
    t = tr(update, context)
    assert context.user_data is not None
    context.user_data.pop(DRAFT, None)
    await _send(update, context, t.gettext("Your request was not sent, and what you typed was deleted."), main_menu(t))
    return ConversationHandler.END


_track = step_tracker("_request_state", ORDER)


def handlers() -> Handlers:
    private = filters.ChatType.PRIVATE & ~filters.UpdateType.EDITED
    # A main-menu tap is not an answer: it falls through to the re-prompt, and the draft stays as it is.
    text = private & filters.TEXT & ~filters.COMMAND & ~any_menu_button()
    nav = private & filters.Text(_labels(BACK) + _labels(CANCEL))
    buttons = CallbackQueryHandler

    def on(state: int, *extra: Any) -> list[Any]:
        return [buttons(_track(state, on_button), pattern=f"^{PREFIX}\\|"), *extra]

    states: dict[object, list[Any]] = {
        DANGER: on(DANGER),
        MINOR: on(MINOR),
        KINDS: on(KINDS),
        DESCRIBE: on(DESCRIBE, MessageHandler(text, _track(DESCRIBE, on_description))),
        WHERE: on(
            WHERE,
            MessageHandler(nav, _track(WHERE, on_text_in_reply_step)),
            MessageHandler(private & (filters.LOCATION | text), _track(WHERE, on_where)),
        ),
        CONTACT: on(
            CONTACT,
            MessageHandler(nav, _track(CONTACT, on_text_in_reply_step)),
            MessageHandler(private & (filters.CONTACT | text), _track(CONTACT, on_contact)),
        ),
        DOCS: on(DOCS, MessageHandler(private & (filters.PHOTO | filters.Document.ALL), _track(DOCS, on_document))),
        CONSENT: on(CONSENT),
        REVIEW: on(REVIEW),
    }
    return [
        ConversationHandler(
            entry_points=[
                CommandHandler("request", _track(DANGER, start_form), filters=filters.ChatType.PRIVATE),
                MessageHandler(menu_button(ASK_HELP), _track(DANGER, start_form)),
            ],
            states=states,
            fallbacks=[
                CommandHandler("cancel", cancel),
                MessageHandler(private & ~filters.COMMAND, reprompt),
            ],
            name="request",
            persistent=True,
            allow_reentry=True,
        ),
        # A Submit (or any form button) after the form ended: explain instead of silence.
        CallbackQueryHandler(late_submit, pattern=f"^{PREFIX}\\|"),
    ]
