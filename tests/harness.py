"""The bot under test: the real Application, started against the fake Bot API, with its errors collected."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bot.application import WaystationApplication
from bot.config import Settings
from bot.runner import BotRunner
from bot.sandbox.fake_telegram import FakeTelegram
from handlers.common import Context


class BotHarness:
    def __init__(
        self,
        settings: Settings,
        fake: FakeTelegram,
        configure: Callable[[WaystationApplication], None] | None = None,
    ) -> None:
        self.settings = settings
        self.configure = configure
        self.fake = fake
        self.errors: list[BaseException] = []
        self.runner: BotRunner | None = None
        # Rejections a test provoked on purpose (e.g. a blocked user) are listed here and excused.
        self.expected_rejections: set[str] = set()

    async def start(self) -> None:
        self.runner = BotRunner(self.settings, poll_timeout=1, configure=self.configure)
        await self.runner.start()
        self.runner.app.add_error_handler(self._record_error)

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.stop()
            self.runner = None

    async def restart(self) -> None:
        """Stop the Application and start a new one on the same database, as after a crash or deploy."""
        await self.stop()
        await self.start()

    @property
    def services(self) -> Any:
        assert self.runner is not None
        return self.runner.app.bot_data["services"]

    async def _record_error(self, _update: object, context: Context) -> None:
        if context.error is not None:
            self.errors.append(context.error)

    def assert_clean(self) -> None:
        if self.errors:
            raise AssertionError(f"handler errors: {self.errors!r}") from self.errors[0]
        unexpected = [r for r in self.fake.rejections if r.description not in self.expected_rejections]
        assert not unexpected, f"the fake Bot API rejected calls: {unexpected}"
