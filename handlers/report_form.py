"""Journey 5: anyone reports a person out in the cold, so outreach can go there (/report, the menu, a broadcast button).

Triage first (hurt, unconscious or a child → emergency numbers at once; the report can still follow, marked urgent),
then where (a location pin and/or a written landmark — the landmark is required without a pin), when they were seen,
how many people and a short description, an optional photo (with a word on dignity), whether staff may contact the
reporter and whether they want the outcome, then a review with Edit / Send. Every step has Back and Cancel.
The draft lives in user_data, which the persistence writes after every update: a restart resumes the same step. The
draft id is the case's idempotency key, so a second Send makes no second report. The per-hour limit is counted in
the database (``models.reports.limit``) at the start and again on Send; a limited draft is kept, not lost.
"""

from __future__ import annotations

import contextlib
import logging
import re
import uuid
from typing import Any

from telegram import (
    CallbackQuery,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    KeyboardButton,
    Message,
    ReplyKeyboardMarkup,
    ReplyKeyboardRemove,
    Update,
)
from telegram.error import BadRequest
from telegram.ext import CallbackQueryHandler, CommandHandler, ConversationHandler, MessageHandler, filters

from bot.i18n import N_, Translator, all_translators
from handlers import case_alerts
from handlers.case_views import when
from handlers.common import Context, Handlers, esc, services, step_tracker, tr
from handlers.menu import REPORT, any_menu_button, main_menu, menu_button
from handlers.report_staff import SEEN_LABELS, seen_text
from handlers.request_form import BACK, CANCEL, SKIP, emergency_text
from models import cases, reports
from models.base import utcnow
from models.cases import Case
from models.reports import MAX_PEOPLE, MAX_SEEN_TEXT, SEEN_CHOICES, SEEN_TYPED, ReportDetails

log = logging.getLogger("waystation.reports")

TRIAGE, PIN, LANDMARK, WHEN, PEOPLE, DESCRIBE, PHOTO, CONTACT, OUTCOME, REVIEW = range(40, 50)
ORDER = (TRIAGE, PIN, LANDMARK, WHEN, PEOPLE, DESCRIBE, PHOTO, CONTACT, OUTCOME, REVIEW)
DRAFT = "report_draft"
STATE = "_report_state"
SENT = "reports_sent"  # draft id -> reference, to answer a late second Send
PREFIX = "rp"
BROADCAST_DATA = "report|start"  # the button under every cold-weather broadcast
DEEP_LINK = "report"  # t.me/<bot>?start=report
MAX_LANDMARK = 300  # cases.place_text
MAX_DESCRIPTION = 500

REPORT_MENU = REPORT  # the main-menu entry
SHARE_PIN, NO_PIN = N_("📍 Share the location"), N_("✍️ Describe the place instead")
EDIT_TARGETS = {"place": PIN, "when": WHEN, "people": PEOPLE, "text": DESCRIBE, "photo": PHOTO, "contact": CONTACT}
# Which step may answer which button (an old button of another step is refused, never acted on).
STEP_OF_ACTION = {
    "triage": TRIAGE,
    "continue": TRIAGE,
    "skip_landmark": LANDMARK,
    "seen": WHEN,
    "people": PEOPLE,
    "photo_done": PHOTO,
    "photo_remove": PHOTO,
    "contact": CONTACT,
    "outcome": OUTCOME,
    "edit": REVIEW,
}


def _labels(msgid: str) -> list[str]:
    return sorted({t.gettext(msgid) for t in all_translators()})


def new_draft() -> dict[str, Any]:
    return {
        "id": uuid.uuid4().hex,
        "emergency": None,  # "hurt", "child" or "no"
        "lat": None,
        "lon": None,
        "landmark": None,
        "seen": None,
        "seen_text": None,
        "people": None,
        "text": None,
        "photo": None,
        "may_contact": None,
        "wants_outcome": None,
        "review": False,
    }


def draft_of(context: Context) -> dict[str, Any]:
    assert context.user_data is not None
    draft = context.user_data.get(DRAFT)
    if not isinstance(draft, dict):
        draft = context.user_data[DRAFT] = new_draft()
    return draft


def _state(context: Context) -> int:
    state = (context.user_data or {}).get(STATE)
    return state if state in ORDER else TRIAGE


def _button(label: str, action: str) -> InlineKeyboardButton:
    return InlineKeyboardButton(label, callback_data=f"{PREFIX}|{action}")


def _nav(t: Translator, *, back: bool = True) -> list[InlineKeyboardButton]:
    row = [_button(t.gettext(BACK), "back")] if back else []
    return [*row, _button(t.gettext(CANCEL), "cancel")]


async def _send(update: Update, context: Context, text: str, markup: Any = None) -> None:
    assert update.effective_chat is not None
    await context.bot.send_message(update.effective_chat.id, text, reply_markup=markup)


# -- the questions --------------------------------------------------------------------------------------------------


async def prompt(update: Update, context: Context, state: int) -> int:
    """Ask the question of `state` (with its keyboard) and return it as the conversation's new state."""
    t = tr(update, context)
    _ = t.gettext
    draft = draft_of(context)
    if state == TRIAGE:
        text = _(
            "<b>Report someone in the cold</b>\n\nThank you for looking out for them. First: is this an "
            "emergency — is the person hurt, unconscious, or a child?"
        )
        markup: Any = InlineKeyboardMarkup(
            [
                [_button(_("🚨 Yes: hurt or unconscious"), "triage|hurt")],
                [_button(_("🧒 Yes: a child"), "triage|child")],
                [_button(_("No, not an emergency"), "triage|no")],
                _nav(t, back=False),
            ]
        )
    elif state == PIN:
        text = _(
            "<b>Where is the person?</b> Share the location pin with the button below, or use 📎 → Location to "
            "put the pin on the exact spot. No pin? Tap “{no_pin}” and write where it is."
        ).format(no_pin=_(NO_PIN))
        markup = ReplyKeyboardMarkup(
            [
                [KeyboardButton(_(SHARE_PIN), request_location=True)],
                [_(NO_PIN)],
                [_(BACK), _(CANCEL)],
            ],
            resize_keyboard=True,
        )
    elif state == LANDMARK:
        if draft["lat"] is not None:
            text = _(
                "Now describe the spot in a few words, so outreach can find the person in the dark — for example "
                "“under the east side of the Huaihai bridge, by the stairs”. Or tap Skip."
            )
        else:
            text = _(
                "Describe the place in words: the street, a landmark, which side — for example “under the east "
                "side of the Huaihai bridge, by the stairs”. Without a pin this is what outreach will go by."
            )
        rows = [_nav(t)]
        if draft["landmark"]:
            text += "\n" + _("Now: {place}").format(place=esc(draft["landmark"]))
        if draft["lat"] is not None or draft["landmark"]:
            rows.insert(0, [_button(_(SKIP), "skip_landmark")])
        markup = InlineKeyboardMarkup(rows)
    elif state == WHEN:
        text = _("When did you see them? Tap one, or type the time (for example “around 21:30”).")
        choices = [_button(_(SEEN_LABELS[c]), f"seen|{c}") for c in SEEN_CHOICES]
        markup = InlineKeyboardMarkup([choices[:2], choices[2:], _nav(t)])
    elif state == PEOPLE:
        text = _("How many people? Tap a number, or type it if there are more.")
        markup = InlineKeyboardMarkup([[_button(str(n), f"people|{n}") for n in range(1, 6)], _nav(t)])
    elif state == DESCRIBE:
        text = _(
            "Describe them briefly: appearance, condition, belongings — for example “man, about 50, grey coat, "
            "sleeping on cardboard, no blanket”. Up to {n} characters."
        ).format(n=MAX_DESCRIPTION)
        markup = InlineKeyboardMarkup([_nav(t)])
    elif state == PHOTO:
        text = _(
            "Optional: a photo of the place — or of the person, from a respectful distance — helps outreach find "
            "them.\n🤝 Please respect their dignity: don't wake or disturb them, avoid their face, and never share "
            "the photo anywhere else.\n\nSend one photo, or tap Skip."
        )
        if draft["photo"]:
            rows = [[_button(_("Done ▶"), "photo_done")], [_button(_("🗑 Remove the photo"), "photo_remove")]]
        else:
            rows = [[_button(_(SKIP), "photo_done")]]
        markup = InlineKeyboardMarkup([*rows, _nav(t)])
    elif state == CONTACT:
        text = _(
            "May outreach staff contact you here on Telegram about this report, for example to find the exact "
            "place? They would see your Telegram account."
        )
        markup = InlineKeyboardMarkup(
            [
                [_button(_("✅ Yes, you may contact me"), "contact|yes")],
                [_button(_("🙈 No, keep me anonymous"), "contact|no")],
                _nav(t),
            ]
        )
    elif state == OUTCOME:
        text = _("Do you want to hear how it ends? You would get one short message here.")
        markup = InlineKeyboardMarkup(
            [[_button(_("🔔 Yes, tell me"), "outcome|yes"), _button(_("No, thanks"), "outcome|no")], _nav(t)]
        )
    else:
        state = REVIEW
        draft["review"] = True
        text, markup = review_text(t, draft), _review_keyboard(t, draft)
    await _send(update, context, text, markup)
    return state


def review_text(t: Translator, draft: dict[str, Any]) -> str:
    _ = t.gettext
    emergency = {
        "hurt": _("yes — hurt or unconscious"),
        "child": _("yes — a child"),
    }.get(draft["emergency"], _("no"))
    if draft["may_contact"]:
        you = _("staff may contact you on Telegram")
    else:
        you = _("anonymous: staff will not see who you are")
    lines = [
        _("<b>Please check your report</b>"),
        _("🚨 Emergency: {answer}").format(answer=emergency),
        _("📍 Pin: {answer}").format(answer=_("shared") if draft["lat"] is not None else _("not shared")),
        _("🏷 Landmark: {place}").format(place=esc(draft["landmark"]) if draft["landmark"] else "—"),
        _("🕒 Seen: {when}").format(when=seen_text(t, draft["seen"], draft["seen_text"])),
        t.ngettext("👥 {n} person", "👥 {n} people", int(draft["people"] or 1)).format(n=int(draft["people"] or 1)),
        _("📝 {text}").format(text=esc(draft["text"] or "—")),
        _("📷 Photo: {answer}").format(answer=_("attached") if draft["photo"] else _("none")),
        _("👤 You: {answer}").format(answer=you),
        _("🔔 Outcome: {answer}").format(
            answer=_("you will be told") if draft["wants_outcome"] else _("you will not be told")
        ),
    ]
    return "\n".join(lines)


def _review_keyboard(t: Translator, draft: dict[str, Any]) -> InlineKeyboardMarkup:
    _ = t.gettext
    return InlineKeyboardMarkup(
        [
            [_button(_("✏️ Place"), "edit|place"), _button(_("✏️ When"), "edit|when")],
            [_button(_("✏️ People"), "edit|people"), _button(_("✏️ Description"), "edit|text")],
            [_button(_("✏️ Photo"), "edit|photo"), _button(_("✏️ Contact"), "edit|contact")],
            [_button(_("📨 Send the report"), f"submit|{draft['id'][:16]}")],
            [_button(_(CANCEL), "cancel")],
        ]
    )


def _next_state(draft: dict[str, Any], current: int) -> int:
    """After a step is answered: the next step, or back to the review when editing from it.

    A pin always leads to the landmark question (on_pin); Contact always leads to Outcome (one edit covers both)."""
    if draft.get("review") and current not in (TRIAGE, CONTACT):
        return REVIEW
    if current == PIN:
        return WHEN  # a landmark typed instead of a pin answers both questions
    return ORDER[ORDER.index(current) + 1]


async def _advance(update: Update, context: Context, current: int) -> int:
    return await prompt(update, context, _next_state(draft_of(context), current))


def _complete(draft: dict[str, Any]) -> bool:
    """Everything the report needs is there (guards Send against a stale or tampered draft)."""
    where = draft["lat"] is not None or bool(draft["landmark"])
    answered = all(draft[k] is not None for k in ("emergency", "seen", "people", "text", "may_contact"))
    return where and answered and draft["wants_outcome"] is not None


# -- entry ----------------------------------------------------------------------------------------------------------


async def _limited(update: Update, context: Context) -> bool:
    """True (after saying so, with the emergency numbers) when the reporter reached the per-hour limit."""
    user = update.effective_user
    assert user is not None
    svc = services(context)
    allowed = svc.settings.reports.max_per_hour
    async with svc.db.session() as session:
        standing = await reports.limit(
            session, reports.reporter_key(svc.settings.require_token(), user.id), now=svc.clock(), max_per_hour=allowed
        )
    if not standing.reached:
        return False
    t = tr(update, context)
    text = t.ngettext(
        "You have sent {n} report in the last hour, the most we can take for now.",
        "You have sent {n} reports in the last hour, the most we can take for now.",
        allowed,
    ).format(n=allowed)
    if standing.retry_at is not None:
        text += " " + t.gettext("You can send another from {time}.").format(
            time=when(t, standing.retry_at, svc.settings.timezone)
        )
    text += "\n\n" + emergency_text(t, context)
    log.info("report refused: the per-hour limit is reached")
    await _send(update, context, text)
    return True


async def start_form(update: Update, context: Context) -> int:
    assert context.user_data is not None
    draft = context.user_data.get(DRAFT)
    if isinstance(draft, dict) and draft.get("emergency") is not None:
        # An unfinished report: carry on where they were rather than losing it.
        t = tr(update, context)
        await _send(update, context, t.gettext("You have an unfinished report; let's continue it. (/cancel drops it.)"))
        return await prompt(update, context, REVIEW if draft.get("review") else _state(context))
    if await _limited(update, context):
        return ConversationHandler.END
    context.user_data[DRAFT] = new_draft()
    return await prompt(update, context, TRIAGE)


async def start_from_button(update: Update, context: Context) -> int:
    """The "report someone in the cold" button under a cold-weather broadcast (callback data exactly report|start)."""
    query = update.callback_query
    assert query is not None and update.effective_chat is not None
    if update.effective_chat.type != "private":
        # Forms run in the private chat: open it with the deep link, which starts the form there.
        await query.answer(url=f"https://t.me/{context.bot.username}?start={DEEP_LINK}")
        return ConversationHandler.END
    await query.answer()
    return await start_form(update, context)


# -- buttons --------------------------------------------------------------------------------------------------------


async def on_button(update: Update, context: Context) -> int:
    """Every inline button of the form: rp|<action>[|arg]."""
    query = update.callback_query
    assert query is not None and query.data is not None
    t = tr(update, context)
    parts = query.data.split("|")
    action, arg = parts[1] if len(parts) > 1 else "", parts[2] if len(parts) > 2 else ""
    state = _state(context)
    draft = draft_of(context)
    if action == "cancel":
        await query.answer()
        await _strip(query)
        return await cancel(update, context)
    if action == "submit":
        return await submit(update, context, arg)
    if action == "back" and state != TRIAGE:
        await query.answer()
        await _strip(query)
        return await back(update, context, state)
    if action == "shorten" and isinstance(draft.get("long_text"), str) and state in (PIN, LANDMARK, DESCRIBE):
        await query.answer()
        await _strip(query)
        limit = MAX_DESCRIPTION if state == DESCRIBE else MAX_LANDMARK
        return await _take_text(update, context, state, draft.pop("long_text")[:limit].strip())
    if STEP_OF_ACTION.get(action) != state:
        await query.answer(t.gettext("This button is no longer valid."), show_alert=True)
        return state
    if action == "triage" and arg in ("hurt", "child", "no"):
        await query.answer()
        await _strip(query)
        draft["emergency"] = arg
        if arg == "no":
            return await _advance(update, context, TRIAGE)
        await _send(update, context, _emergency_advice(t, context, child=arg == "child"), _continue_keyboard(t))
        return TRIAGE
    if action == "continue" and draft["emergency"] in ("hurt", "child"):
        await query.answer()
        await _strip(query)
        return await _advance(update, context, TRIAGE)
    if action == "skip_landmark" and (draft["lat"] is not None or draft["landmark"]):
        await query.answer()
        await _strip(query)  # Skip keeps what is there: a pin, or the landmark written before
        return await _advance(update, context, LANDMARK)
    if action == "seen" and arg in SEEN_CHOICES:
        await query.answer()
        await _strip(query)
        draft["seen"], draft["seen_text"] = arg, None
        return await _advance(update, context, WHEN)
    if action == "people" and arg.isdigit() and 1 <= int(arg) <= 5:
        await query.answer()
        await _strip(query)
        draft["people"] = int(arg)
        return await _advance(update, context, PEOPLE)
    if action == "photo_done":
        await query.answer()
        await _strip(query)
        return await _advance(update, context, PHOTO)
    if action == "photo_remove":
        await query.answer(t.gettext("The photo is removed."))
        await _strip(query)
        draft["photo"] = None
        return await prompt(update, context, PHOTO)
    if action in ("contact", "outcome") and arg in ("yes", "no"):
        await query.answer()
        await _strip(query)
        draft["may_contact" if action == "contact" else "wants_outcome"] = arg == "yes"
        return await _advance(update, context, CONTACT if action == "contact" else OUTCOME)
    if action == "edit" and arg in EDIT_TARGETS:
        await query.answer()
        await _strip(query)
        return await prompt(update, context, EDIT_TARGETS[arg])
    await query.answer(t.gettext("This button is no longer valid."), show_alert=True)
    return state


def _emergency_advice(t: Translator, context: Context, *, child: bool) -> str:
    text = emergency_text(t, context)
    if child:
        line = services(context).settings.help.child_protection_line
        text += "\n" + t.gettext("Child protection line: <b>{number}</b>").format(number=esc(line))
    return (
        text
        + "\n\n"
        + t.gettext("Call first. Then you can still send this report: it will be marked urgent, so outreach goes too.")
    )


def _continue_keyboard(t: Translator) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup([[_button(t.gettext("Continue the report ▶"), "continue")], _nav(t, back=False)])


async def _strip(query: CallbackQuery) -> None:
    """Remove the buttons of an answered step, so an old button can't be tapped again by mistake."""
    message = query.message
    if not isinstance(message, Message) or message.reply_markup is None:
        return  # already without buttons (a second tap)
    with contextlib.suppress(BadRequest):  # too old to edit, or edited meanwhile
        await query.edit_message_reply_markup(None)


async def back(update: Update, context: Context, state: int) -> int:
    draft = draft_of(context)
    if draft.get("review") and state != REVIEW:
        return await prompt(update, context, REVIEW)  # Back from an edit returns to the review
    draft["review"] = False
    previous = ORDER[max(0, ORDER.index(state) - 1)]
    return await prompt(update, context, previous)


# -- typed answers --------------------------------------------------------------------------------------------------


async def _take_text(update: Update, context: Context, state: int, text: str) -> int:
    """A landmark or description within its limit: keep it and move on."""
    t = tr(update, context)
    draft = draft_of(context)
    if state == DESCRIBE:
        draft["text"] = text
        return await _advance(update, context, DESCRIBE)
    draft["landmark"] = text
    if state == PIN:
        draft["lat"] = draft["lon"] = None
        await _send(update, context, t.gettext("🏷 Place saved."), ReplyKeyboardRemove())
    return await _advance(update, context, state)


async def _too_long(update: Update, context: Context, state: int, text: str, limit: int) -> int:
    """Keep an over-long text: the person can send a shorter one, or use its beginning."""
    t = tr(update, context)
    draft_of(context)["long_text"] = text
    assert update.effective_message is not None
    await update.effective_message.reply_text(
        t.gettext(
            "That is {length} characters; please shorten it to {n}. Your text is kept: send a shorter version, "
            "or use the beginning of it."
        ).format(length=len(text), n=limit),
        reply_markup=InlineKeyboardMarkup(
            [[_button(t.gettext("✂️ Use the first {n} characters").format(n=limit), "shorten")], _nav(t)]
        ),
    )
    return state


async def on_pin(update: Update, context: Context) -> int:
    """A location (the button, the paperclip, a venue) at the place step or the landmark step."""
    t = tr(update, context)
    message = update.effective_message
    assert message is not None and message.location is not None
    draft = draft_of(context)
    draft["lat"], draft["lon"] = message.location.latitude, message.location.longitude
    await message.reply_text(t.gettext("📍 Pin saved."), reply_markup=ReplyKeyboardRemove())
    return await prompt(update, context, LANDMARK)


async def on_place_text(update: Update, context: Context) -> int:
    """Text at the place step: Back / Cancel / "no pin" from the reply keyboard, or the landmark itself."""
    message = update.effective_message
    assert message is not None and message.text is not None
    t = tr(update, context)
    text = message.text.strip()
    if text in _labels(CANCEL):
        return await cancel(update, context)
    if text in _labels(BACK):
        await message.reply_text("↩", reply_markup=ReplyKeyboardRemove())
        return await back(update, context, PIN)
    if text in _labels(NO_PIN):
        draft = draft_of(context)
        draft["lat"] = draft["lon"] = None
        await message.reply_text(t.gettext("OK, no pin."), reply_markup=ReplyKeyboardRemove())
        return await prompt(update, context, LANDMARK)
    if not text:
        return await prompt(update, context, PIN)
    if len(text) > MAX_LANDMARK:
        return await _too_long(update, context, PIN, text, MAX_LANDMARK)
    return await _take_text(update, context, PIN, text)


async def on_nav_text(update: Update, context: Context) -> int:
    """ "◀ Back" or "✖ Cancel" typed (or left on an old reply keyboard) at a step that expects text."""
    message = update.effective_message
    assert message is not None and message.text is not None
    if message.text in _labels(CANCEL):
        return await cancel(update, context)
    return await back(update, context, _state(context))


async def on_landmark(update: Update, context: Context) -> int:
    message = update.effective_message
    assert message is not None and message.text is not None
    text = message.text.strip()
    if not text:
        return await prompt(update, context, LANDMARK)
    if len(text) > MAX_LANDMARK:
        return await _too_long(update, context, LANDMARK, text, MAX_LANDMARK)
    draft_of(context).pop("long_text", None)
    return await _take_text(update, context, LANDMARK, text)


async def on_when(update: Update, context: Context) -> int:
    message = update.effective_message
    assert message is not None and message.text is not None
    t = tr(update, context)
    text = message.text.strip()
    if not text or len(text) > MAX_SEEN_TEXT:
        await message.reply_text(
            t.gettext("Please type just the time, in up to {n} characters, or tap a button.").format(n=MAX_SEEN_TEXT)
        )
        return await prompt(update, context, WHEN)
    draft = draft_of(context)
    draft["seen"], draft["seen_text"] = SEEN_TYPED, text
    return await _advance(update, context, WHEN)


async def on_people(update: Update, context: Context) -> int:
    message = update.effective_message
    assert message is not None and message.text is not None
    t = tr(update, context)
    text = message.text.strip()
    if not (text.isascii() and text.isdigit() and 1 <= int(text) <= MAX_PEOPLE):
        await message.reply_text(
            t.gettext("Please tap a number, or type one from 1 to {n} (for example 6).").format(n=MAX_PEOPLE)
        )
        return await prompt(update, context, PEOPLE)
    draft_of(context)["people"] = int(text)
    return await _advance(update, context, PEOPLE)


async def on_description(update: Update, context: Context) -> int:
    message = update.effective_message
    assert message is not None and message.text is not None
    text = message.text.strip()
    if not text:
        return await prompt(update, context, DESCRIBE)
    if len(text) > MAX_DESCRIPTION:
        return await _too_long(update, context, DESCRIBE, text, MAX_DESCRIPTION)
    draft_of(context).pop("long_text", None)
    return await _take_text(update, context, DESCRIBE, text)


async def on_photo(update: Update, context: Context) -> int:
    t = tr(update, context)
    message = update.effective_message
    assert message is not None and message.photo
    draft = draft_of(context)
    draft["photo"] = message.photo[-1].file_id  # the largest size
    await message.reply_text(t.gettext("📷 Photo saved."))
    return await _advance(update, context, PHOTO)


async def reprompt(update: Update, context: Context) -> int:
    """Anything the current step can't use (a sticker, a voice note, a file, text where a button is expected)."""
    t = tr(update, context)
    state = _state(context)
    hints = {
        PIN: t.gettext("Please share the location pin, or write where the person is."),
        LANDMARK: t.gettext("Please describe the place in words (text)."),
        WHEN: t.gettext("Please tap a button, or type the time as text."),
        PEOPLE: t.gettext("Please tap a number, or type one from 1 to {n} (for example 6).").format(n=MAX_PEOPLE),
        DESCRIBE: t.gettext("Please describe them as text. Voice messages, stickers and photos can't be used here."),
        PHOTO: t.gettext("Please send one photo (not a file or a sticker), or tap Skip."),
    }
    assert update.effective_message is not None
    await update.effective_message.reply_text(hints.get(state, t.gettext("Please use the buttons below.")))
    return await prompt(update, context, state)


# -- send and cancel ------------------------------------------------------------------------------------------------


async def submit(update: Update, context: Context, short_id: str) -> int:
    query, user = update.callback_query, update.effective_user
    assert query is not None and user is not None and context.user_data is not None
    t = tr(update, context)
    draft = context.user_data.get(DRAFT)
    if (
        not isinstance(draft, dict)
        or not short_id
        or not draft["id"].startswith(short_id)
        or not draft.get("review")
        or not _complete(draft)
    ):
        await late_submit(update, context)
        return _state(context) if isinstance(draft, dict) else ConversationHandler.END
    svc = services(context)
    key = reports.reporter_key(svc.settings.require_token(), user.id)
    now = svc.clock()
    async with svc.db.session() as session:
        standing = await reports.limit(session, key, now=now, max_per_hour=svc.settings.reports.max_per_hour)
        if standing.reached and await cases.by_idempotency_key(session, draft["id"]) is None:
            await session.rollback()
            await query.answer()
            await _limited(update, context)
            await _send(update, context, t.gettext("Your report is kept: tap Send again later."))
            return REVIEW
        identified = bool(draft["may_contact"] or draft["wants_outcome"])
        case, created = await reports.create(
            session,
            Case(
                requester_id=user.id if identified else None,  # anonymous: nobody to write to, nothing to show
                language=t.language,
                categories=[],
                description=draft["text"],
                lat=draft["lat"],
                lon=draft["lon"],
                place_text=draft["landmark"],
                danger=draft["emergency"] == "hurt",
                minor=draft["emergency"] == "child",
                idempotency_key=draft["id"],
                consent_at=utcnow(),
            ),
            ReportDetails(
                reporter_key=key,
                people=int(draft["people"]),
                seen=draft["seen"],
                seen_text=draft["seen_text"],
                photo_file_id=draft["photo"],
                may_contact=bool(draft["may_contact"]),
                wants_outcome=bool(draft["wants_outcome"]),
            ),
            now=now,
            reference_prefix=svc.settings.help.reference_prefix,
        )
        if created:
            await case_alerts.enqueue_cards(session, svc, case, new=True)
        await session.commit()
    svc.wake_outbox()
    if created:
        log.info("report %s submitted (urgent: %s)", case.id, case.urgent)
        if not svc.settings.staff.alert_chat_ids:
            log.warning("report %s stored but no staff alert chat is configured (staff.alert_chat_ids)", case.id)
    context.user_data.setdefault(SENT, {})[draft["id"][:16]] = case.reference
    context.user_data.pop(DRAFT, None)
    context.user_data.pop(STATE, None)
    await query.answer()
    await _strip(query)
    await _send(update, context, _sent_text(t, case.reference or "", bool(draft["wants_outcome"])), main_menu(t))
    return ConversationHandler.END


def _sent_text(t: Translator, reference: str, wants_outcome: bool) -> str:
    text = t.gettext(
        "✅ Thank you. Your report was sent. Reference: <b>{reference}</b>\n\n"
        "What happens next: the outreach team for that area sees it now and goes out as soon as they can — at "
        "night this can take a while. They look for the person at the place you described; the landmark and the "
        "time you gave matter most. If the person's condition gets worse, call the emergency numbers."
    ).format(reference=esc(reference))
    if wants_outcome:
        return text + "\n" + t.gettext("We will tell you here how it ends.")
    return text


async def late_submit(update: Update, context: Context) -> None:
    """Send tapped again after the report went (or on a stale review): say which reference it became."""
    query = update.callback_query
    assert query is not None and query.data is not None
    t = tr(update, context)
    parts = query.data.split("|")
    short_id = parts[2] if len(parts) > 2 and parts[1] == "submit" else ""
    sent = (context.user_data or {}).get(SENT, {})
    reference = sent.get(short_id) if isinstance(sent, dict) and short_id else None
    if reference:
        await query.answer(t.gettext("Already sent as {reference}.").format(reference=reference), show_alert=True)
    else:
        await query.answer(t.gettext("This button is no longer valid."), show_alert=True)


async def cancel(update: Update, context: Context) -> int:
    t = tr(update, context)
    assert context.user_data is not None
    context.user_data.pop(DRAFT, None)
    context.user_data.pop(STATE, None)
    await _send(update, context, t.gettext("Your report was not sent, and what you typed was deleted."), main_menu(t))
    return ConversationHandler.END


_track = step_tracker(STATE, ORDER)


def handlers() -> Handlers:
    private = filters.ChatType.PRIVATE & ~filters.UpdateType.EDITED
    menu = any_menu_button()
    nav = private & filters.Text(_labels(BACK) + _labels(CANCEL))
    text = private & filters.TEXT & ~filters.COMMAND & ~menu & ~nav
    location = private & filters.LOCATION
    buttons = CallbackQueryHandler(_track(None, on_button), pattern=f"^{PREFIX}\\|")

    states: dict[object, list[Any]] = {
        TRIAGE: [buttons],
        PIN: [
            buttons,
            MessageHandler(location, _track(PIN, on_pin)),
            MessageHandler(private & filters.TEXT & ~filters.COMMAND & ~menu, _track(PIN, on_place_text)),
        ],
        LANDMARK: [
            buttons,
            MessageHandler(nav, _track(LANDMARK, on_nav_text)),
            MessageHandler(location, _track(LANDMARK, on_pin)),
            MessageHandler(text, _track(LANDMARK, on_landmark)),
        ],
        WHEN: [buttons, MessageHandler(nav, _track(WHEN, on_nav_text)), MessageHandler(text, _track(WHEN, on_when))],
        PEOPLE: [
            buttons,
            MessageHandler(nav, _track(PEOPLE, on_nav_text)),
            MessageHandler(text, _track(PEOPLE, on_people)),
        ],
        DESCRIBE: [
            buttons,
            MessageHandler(nav, _track(DESCRIBE, on_nav_text)),
            MessageHandler(text, _track(DESCRIBE, on_description)),
        ],
        PHOTO: [buttons, MessageHandler(private & filters.PHOTO, _track(PHOTO, on_photo))],
        CONTACT: [buttons],
        OUTCOME: [buttons],
        REVIEW: [buttons],
    }
    start_link = private & filters.Regex(rf"^/start(@\w+)?\s+{DEEP_LINK}$")
    return [
        ConversationHandler(
            entry_points=[
                CommandHandler("report", _track(None, start_form), filters=filters.ChatType.PRIVATE),
                MessageHandler(menu_button(REPORT_MENU), _track(None, start_form)),
                CommandHandler("start", _track(None, start_form), filters=start_link),
                CallbackQueryHandler(_track(None, start_from_button), pattern=f"^{re.escape(BROADCAST_DATA)}$"),
            ],
            states=states,
            fallbacks=[
                CommandHandler("cancel", cancel),
                MessageHandler(private & ~filters.COMMAND & ~menu, reprompt),
            ],
            name="report",
            persistent=True,
            allow_reentry=True,
        ),
        # A Send (or any form button) after the form ended: explain instead of silence.
        CallbackQueryHandler(late_submit, pattern=f"^{PREFIX}\\|"),
    ]
