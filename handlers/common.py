"""Helpers every handler uses: the services, the user's language, HTML escaping."""

from __future__ import annotations

import contextlib
import html
import re
from collections.abc import Callable, Collection, Coroutine
from typing import Any, cast

from telegram import CallbackQuery, InlineKeyboardMarkup, Message, Update
from telegram.error import BadRequest
from telegram.ext import BaseHandler, ContextTypes

from bot.i18n import Translator, translator
from bot.services import Services
from bot.weather_areas import configured_areas
from models import users
from models.weather import Area

Context = ContextTypes.DEFAULT_TYPE
Handlers = list[BaseHandler[Any, Any, Any]]


def services(context: Context) -> Services:
    return cast(Services, context.bot_data["services"])


def weather_areas(context: Context) -> dict[str, Area]:
    """The configured cold-weather areas, by key."""
    return configured_areas(services(context).settings)


Step = Callable[[Update, Context], Coroutine[Any, Any, int | None]]


def step_tracker(key: str, steps: Collection[int]) -> Callable[[int | None, Step], Step]:
    """Wraps a conversation's callbacks so the current step is kept in ``user_data[key]`` (PTB does not pass the state
    to callbacks; Back and re-prompts need it): set to the step a callback belongs to, then to the step it returns."""

    def track(state: int | None, callback: Step) -> Step:
        async def wrapped(update: Update, context: Context) -> int | None:
            assert context.user_data is not None
            if state is not None:  # None: a callback shared by several steps keeps the one recorded
                context.user_data[key] = state
            result = await callback(update, context)
            if result in steps:
                context.user_data[key] = result
            return result

        return wrapped

    return track


def esc(value: Any) -> str:
    """Escape a user-supplied value for Telegram's HTML parse mode (every name, every free text)."""
    return html.escape(str(value), quote=False)


def tr(update: Update | None, context: Context) -> Translator:
    """The translator for whoever sent this update (their stored choice, else their Telegram client)."""
    svc = services(context)
    user = update.effective_user if update else None
    if user is None:
        return translator(svc.settings.i18n.default_language)
    return translator(svc.cached_language(user.id) or svc.language_for_client(user.language_code))


async def remember_user(update: object, context: Context) -> None:
    """Group -1, before any handler: record the user (throttled) so their language is known everywhere."""
    if not isinstance(update, Update) or update.effective_user is None or update.effective_user.is_bot:
        return
    svc = services(context)
    user = update.effective_user
    if not svc.needs_touch(user.id):
        return
    async with svc.db.session() as session:
        stored = await users.touch(session, user.id, svc.language_for_client(user.language_code))
    svc.remember_language(user.id, stored.language)


MAX_ID = 2**31 - 1  # ids are 32-bit integers on PostgreSQL; SQLite rejects anything above 64 bits


def parse_id(raw: str | None) -> int | None:
    """A database id from callback data or a deep link: ASCII digits in range, else None (stale or forged input).

    ``str.isdigit`` alone lets through "²" (int() fails) and 30-digit numbers (the database driver fails)."""
    if raw is None or not (raw.isascii() and raw.isdigit()) or len(raw) > 10:
        return None
    value = int(raw)
    return value if 0 < value <= MAX_ID else None


async def strip_buttons(query: CallbackQuery) -> None:
    """Remove the inline buttons of the tapped message, if it still has some.

    A forged tap (on a message without buttons) or a second tap after the first removed them finds none, and Telegram
    answers an edit that changes nothing with 400 "message is not modified"."""
    message = query.message
    if not isinstance(message, Message) or message.reply_markup is None or not message.reply_markup.inline_keyboard:
        return
    with contextlib.suppress(BadRequest):  # too old to edit, or edited meanwhile
        await query.edit_message_reply_markup(None)


async def replace_buttons(query: CallbackQuery, markup: InlineKeyboardMarkup) -> None:
    """Show `markup` on the tapped message, unless it shows exactly that already.

    A tap on an older copy of a toggle keyboard, or a second Reset in a row, would ask Telegram for an edit that
    changes nothing, and it answers 400 "message is not modified"."""
    message = query.message
    if isinstance(message, Message) and message.reply_markup == markup:
        return
    with contextlib.suppress(BadRequest):  # too old to edit, or edited meanwhile
        await query.edit_message_reply_markup(markup)


def shown_text(html_text: str) -> str:
    """The plain text Telegram shows for our HTML: tags dropped, entities decoded, the ends trimmed."""
    return html.unescape(re.sub(r"<[^>]*>", "", html_text)).strip()


async def edit_in_place(query: CallbackQuery, text: str, markup: InlineKeyboardMarkup | None) -> None:
    """Edit the tapped message to `text` and `markup`, unless it shows exactly that already.

    A 🔄 Refresh with nothing new, or the same button twice, would ask Telegram for an edit that changes nothing, and
    it answers 400 "message is not modified"."""
    message = query.message
    if isinstance(message, Message) and message.text == shown_text(text) and message.reply_markup == markup:
        return
    try:
        await query.edit_message_text(text, reply_markup=markup)
    except BadRequest as exc:
        if "not modified" not in str(exc).lower():  # formatting alone changed, which the check above cannot see
            raise
