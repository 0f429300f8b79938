"""Starting and stopping the bot: long polling or a webhook server with /healthz; clean stop on SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import signal
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web
from telegram import Update

from bot import escalation, weather_jobs
from bot.application import WaystationApplication, build_application
from bot.config import ConfigError, Settings
from bot.database import Database, ping
from bot.geocoding import Geocoder
from bot.outbox import OutboxWorker

log = logging.getLogger("waystation")

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"


class BotRunner:
    """Owns the database, the Application and (in webhook mode) the HTTP server; tests start and stop it too."""

    def __init__(
        self,
        settings: Settings,
        *,
        poll_timeout: int = 10,
        configure: Callable[[WaystationApplication], None] | None = None,
        **builder_options: Any,
    ) -> None:
        self.settings = settings
        self.poll_timeout = poll_timeout
        self.configure = configure
        self.builder_options = builder_options
        self.database = Database(settings.database.url, echo=settings.database.echo)
        self.application: WaystationApplication | None = None
        self.outbox: OutboxWorker | None = None
        self._site_runner: web.AppRunner | None = None
        self.webhook_port: int | None = None

    @property
    def app(self) -> WaystationApplication:
        assert self.application is not None, "the bot is not started"
        return self.application

    async def start(self) -> None:
        if self.settings.database.upgrade_on_start:
            await self.database.upgrade()
        webhook = self.settings.telegram.mode == "webhook"
        options = dict(self.builder_options)
        if webhook:
            options["updater"] = None
        self.application = build_application(self.settings, self.database, configure=self.configure, **options)
        app = self.application
        app.services.geocoder = Geocoder(self.settings.geocoding, self.database)
        await app.initialize()
        if app.post_init is not None:
            await app.post_init(app)  # only run_polling/run_webhook would call it otherwise
        await app.start()
        # One process per bot is the supported deployment, so items a crashed run left "sending" are ours to resend.
        self.outbox = OutboxWorker(app.bot, self.database, takeover_on_start=True)
        app.services.outbox = self.outbox
        await self.outbox.start()
        await escalation.start(app)  # also fires what came due while the bot was down
        weather_jobs.schedule(app)  # forecast checks re-armed; a broadcast cut short resumes from its cursor
        if webhook:
            await self._start_webhook()
        else:
            assert app.updater is not None
            await app.updater.start_polling(timeout=self.poll_timeout, allowed_updates=Update.ALL_TYPES)
        log.info("Waystation is running (%s mode)", self.settings.telegram.mode)

    async def stop(self) -> None:
        app = self.application
        if app is None:
            return
        if self._site_runner is not None:
            await self._site_runner.cleanup()
            self._site_runner = None
        if app.updater is not None and app.updater.running:
            await app.updater.stop()
        await escalation.stop(app)
        await weather_jobs.stop(app)
        if self.outbox is not None:
            await self.outbox.stop()
            self.outbox = None
        if app.running:
            await app.stop()
        await app.shutdown()
        if app.services.geocoder is not None:
            await app.services.geocoder.close()
        await self.database.dispose()
        self.application = None
        log.info("Waystation stopped")

    async def run_until_signal(self) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await self.start()
        try:
            await stop.wait()
        finally:
            await self.stop()

    # --- webhook mode -------------------------------------------------------------------------------------

    async def _start_webhook(self) -> None:
        hook = self.settings.telegram.webhook
        if not hook.url:
            raise ConfigError("telegram.webhook.url: missing — the public HTTPS URL Telegram should call")
        server = web.Application(client_max_size=2 * 1024 * 1024)
        # Telegram calls the public URL; the reverse proxy (or nothing) forwards the same path to us.
        server.router.add_post(urlsplit(hook.url).path or "/", self._receive_update)
        server.router.add_get("/healthz", self._healthz)
        self._site_runner = web.AppRunner(server, access_log=None)  # access logs would show client addresses
        await self._site_runner.setup()
        site = web.TCPSite(self._site_runner, hook.listen, hook.port)
        await site.start()
        self.webhook_port = int(self._site_runner.addresses[0][1])
        secret = hook.secret_token.get_secret_value() if hook.secret_token else None
        await self.app.bot.set_webhook(
            url=hook.url,
            secret_token=secret,
            allowed_updates=Update.ALL_TYPES,
        )

    async def _receive_update(self, request: web.Request) -> web.Response:
        hook = self.settings.telegram.webhook
        if hook.secret_token is not None:
            sent = request.headers.get(SECRET_HEADER, "")
            if not hmac.compare_digest(sent.encode(), hook.secret_token.get_secret_value().encode()):
                return web.Response(status=403, text="forbidden")
        try:
            payload = await request.json()
            update = Update.de_json(payload, self.app.bot)
        except (json.JSONDecodeError, ValueError, KeyError, TypeError):
            return web.Response(status=400, text="bad update")
        if update is None:
            return web.Response(status=400, text="bad update")
        await self.app.update_queue.put(update)
        return web.Response(status=200)

    async def _healthz(self, _request: web.Request) -> web.Response:
        healthy = self.application is not None and self.application.running and await ping(self.database)
        body = {"status": "ok" if healthy else "unavailable"}
        return web.json_response(body, status=200 if healthy else 503)
