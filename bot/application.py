"""The one place that knows every handler and job: builds the python-telegram-bot Application.

Read top to bottom: services, the application builder chain, then the handlers by group.
"""

from __future__ import annotations

import asyncio
import logging
import warnings
from collections.abc import Callable
from typing import Any

from telegram import LinkPreviewOptions, Update
from telegram.constants import ParseMode
from telegram.ext import Application, ApplicationBuilder, Defaults, TypeHandler
from telegram.warnings import PTBUserWarning

from bot import replay
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
    forgetme,
    language,
    patrol,
    queue,
    report_form,
    report_staff,
    request_form,
    start,
    station_feedback,
    station_staff,
    stats,
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


class AcknowledgingQueue(asyncio.Queue[object]):
    """The Application's update queue, whose put() returns only once the update has been handled and recorded.

    PTB's Updater confirms a batch to Telegram (the next getUpdates offset) as soon as it has put it in the queue, so
    a crash (SIGKILL, power loss) lost every update still waiting or being handled: Telegram had been told it was
    delivered. Putting an update now waits for it to be handled, so the offset confirms handled updates only and
    Telegram redelivers the rest after a restart (a webhook likewise answers 200 only once its update is handled)."""

    def __init__(self) -> None:
        super().__init__()
        self._waiting: dict[int, asyncio.Future[None]] = {}

    async def put(self, item: object) -> None:
        if not isinstance(item, Update):  # PTB's stop signal and the like
            await super().put(item)
            return
        handled = asyncio.get_running_loop().create_future()
        self._waiting[id(item)] = handled
        try:
            await super().put(item)
            await handled
        finally:
            self._waiting.pop(id(item), None)

    def handled(self, item: object) -> None:
        waiting = self._waiting.get(id(item))
        if waiting is not None and not waiting.done():
            waiting.set_result(None)


class WaystationApplication(Application):
    """PTB's Application, plus: each update is acted on once, and persisted as soon as it is handled."""

    @property
    def services(self) -> Services:
        return self.bot_data["services"]

    async def process_update(self, update: object) -> None:
        try:
            await self._process_once(update)
        finally:
            if isinstance(self.update_queue, AcknowledgingQueue):
                self.update_queue.handled(update)

    async def _process_once(self, update: object) -> None:
        update_id = update.update_id if isinstance(update, Update) else None
        journal = None
        if update_id is not None:
            async with self.services.db.session() as session:
                if await conversation_store.was_processed(session, update_id):
                    log.info("update %s was already handled; skipping the redelivery", update_id)
                    return
            # Handled again after a crash cut it short: its replies are not sent twice (bot/replay.py).
            journal = await replay.begin(self.services.db, update_id)
        try:
            await super().process_update(update)
        finally:
            replay.end()
        persistence = self.persistence
        if update_id is None or not isinstance(persistence, DatabasePersistence):
            if persistence is not None:
                await self.update_persistence()
            return
        # PTB would write on a timer; writing now means a crash right after this loses no step. The step is saved in
        # the transaction that marks the update processed: a crash in between would otherwise leave the step saved
        # and the update handled again on top of it (a ticked option unticked by its own redelivery).
        async with persistence.collected() as writes:
            await self.update_persistence()
        try:
            async with self.services.db.session() as session:
                for write in writes:
                    await write(session)
                drop = replay.KIND if journal is not None and journal.written else None
                await conversation_store.mark_processed(session, update_id, drop_blob=drop)
        except BaseException:
            persistence.forget_written()
            raise


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
        .update_queue(AcknowledgingQueue())  # Telegram is told an update arrived only once it is handled
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
    application.add_handlers(stats.handlers())
    application.add_handlers(patrol.handlers())
    application.add_handlers(teams.handlers())
    application.add_handlers(queue.handlers())
    application.add_handlers(start.handlers())
    application.add_handlers(language.handlers())
    application.add_handlers(status.handlers())
    application.add_handlers(forgetme.handlers())
    application.add_handlers(cancel.handlers())
    if configure is not None:
        configure(application)
    application.add_handler(start.fallback_handler())
    application.add_handler(start.unknown_button_handler())

    application.add_error_handler(errors.on_error)
    return application
