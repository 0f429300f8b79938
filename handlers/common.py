"""Helpers every handler uses: the services, the user's language, HTML escaping."""

from __future__ import annotations

import html
from typing import Any, cast

from telegram import Update
from telegram.ext import BaseHandler, ContextTypes

from bot.i18n import Translator, translator
from bot.services import Services
from models import users

Context = ContextTypes.DEFAULT_TYPE
Handlers = list[BaseHandler[Any, Any, Any]]


def services(context: Context) -> Services:
    return cast(Services, context.bot_data["services"])


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
