"""The one place that knows every handler and job: builds the python-telegram-bot Application.

Read top to bottom: services, the application builder chain, then the handlers by group.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from typing import Any

from telegram import LinkPreviewOptions, Update
from telegram.constants import ParseMode
from telegram.ext import Application, ApplicationBuilder, Defaults, TypeHandler
from telegram.warnings import PTBUserWarning

from bot.config import Settings
from bot.database import Database
from bot.i18n import all_translators, translator
from bot.persistence import DatabasePersistence
from bot.rate_limit import rate_limiter
from bot.services import Services
from bot.telegram_http import AiohttpRequest
from handlers import (
    broadcast,
    cancel,
    case_staff,
    errors,
    find,
    language,
    queue,
    report_form,
    report_staff,
    request_form,
    start,
    station_feedback,
    station_staff,
    status,
    subscribe,
    teams,
)
from handlers.common import remember_user
from handlers.menu import bot_commands
from models import conversation_store

log = logging.getLogger("waystation")

# Conversations entered from an inline button are keyed per chat and user on purpose (one form at a time per person);
# PTB warns that such handlers are not tracked per message, which is what we want.
warnings.filterwarnings("ignore", message=".*per_message=False.*", category=PTBUserWarning)


class WaystationApplication(Application):
    """PTB's Application, plus: each update is acted on once, and persisted as soon as it is handled."""

    @property
    def services(self) -> Services:
        return self.bot_data["services"]

    async def process_update(self, update: object) -> None:
        update_id = update.update_id if isinstance(update, Update) else None
        if update_id is not None:
            async with self.services.db.session() as session:
                if await conversation_store.was_processed(session, update_id):
                    log.info("update %s was already handled; skipping the redelivery", update_id)
                    return
        await super().process_update(update)
        if self.persistence is not None:
            # PTB would write on a timer; writing now means a crash right after this loses no step.
            await self.update_persistence()
        if update_id is not None:
            async with self.services.db.session() as session:
                await conversation_store.mark_processed(session, update_id)


async def post_init(application: Application) -> None:
    """Command menus per language (and the default for every other client language)."""
    settings: Settings = application.bot_data["services"].settings
    for t in all_translators():
        await application.bot.set_my_commands(bot_commands(t), language_code=t.telegram_code)
    await application.bot.set_my_commands(bot_commands(translator(settings.i18n.default_language)))


def build_application(
    settings: Settings,
    database: Database,
    *,
    configure: Callable[[WaystationApplication], None] | None = None,
    **builder_options: Any,
) -> WaystationApplication:
    """The wired Application. `configure` may add handlers (plugins, tests) before the catch-all answer."""
    token = settings.require_token()
    services = Services(settings=settings, db=database)
    builder = (
        ApplicationBuilder()
        .application_class(WaystationApplication)
        .token(token)
        .base_url(settings.telegram.api_base_url)
        .base_file_url(settings.telegram.api_base_file_url)
        .defaults(
            Defaults(
                parse_mode=ParseMode.HTML,
                tzinfo=settings.tz,
                link_preview_options=LinkPreviewOptions(is_disabled=True),
            )
        )
        .persistence(DatabasePersistence(database))
        # One rate limiter for every call (replies, outbox, broadcasts): chats evenly spaced, 20/min per group.
        .rate_limiter(rate_limiter(settings))
        # aiohttp rather than httpx for the Bot API calls: a fifth of the CPU per call (bot/telegram_http.py).
        .request(AiohttpRequest())
        .post_init(post_init)
        .concurrent_updates(False)  # conversations rely on one update at a time per user
    )
    for name, value in builder_options.items():
        builder = getattr(builder, name)(value)
    application: WaystationApplication = builder.build()  # type: ignore[assignment]
    application.bot_data["services"] = services

    # Group -2: team scoping of case-card buttons, before any card handler sees them (a responder of team A cannot
    # act on team B's case, whichever module drew the button).
    application.add_handler(teams.scope_guard_handler(), group=-2)

    # Group -1: bookkeeping that must see every update before any journey handles it.
    application.add_handler(TypeHandler(Update, remember_user), group=-1)

    # Group 0: the journeys. Within a group the first matching handler wins, so conversations come first,
    # then stateless commands and buttons, and last the catch-all that answers anything unexpected.
    # Cold-weather subscriptions first: a location shared at their "where" step is theirs, not find's or a form's.
    application.add_handlers(subscribe.handlers())
    application.add_handlers(broadcast.handlers())
    application.add_handlers(request_form.handlers())
    # Reports before find (which answers any location: the report's pin) and before start (/start report).
    application.add_handlers(report_form.handlers())
    application.add_handlers(report_staff.handlers())
    application.add_handlers(find.handlers())
    application.add_handlers(station_feedback.handlers())
    application.add_handlers(station_staff.handlers())
    application.add_handlers(case_staff.handlers())  # before /cancel: its steps have their own /cancel
    application.add_handlers(teams.handlers())
    application.add_handlers(queue.handlers())
    application.add_handlers(start.handlers())
    application.add_handlers(language.handlers())
    application.add_handlers(status.handlers())
    application.add_handlers(cancel.handlers())
    if configure is not None:
        configure(application)
    application.add_handler(start.fallback_handler())

    application.add_error_handler(errors.on_error)
    return application
