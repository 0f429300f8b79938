"""The live objects handlers and jobs need, kept in `application.bot_data["services"]` (never persisted)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from bot.config import Settings
from bot.database import Database
from bot.i18n import resolve_language

if TYPE_CHECKING:
    from bot.geocoding import Geocoder
    from bot.outbox import OutboxWorker

# Don't rewrite users.last_seen more often than this per person: it is for retention, not analytics.
TOUCH_EVERY_SECONDS = 300.0


@dataclass
class Services:
    settings: Settings
    db: Database
    geocoder: Geocoder | None = None
    outbox: OutboxWorker | None = None
    # Injected so tests can freeze time (opening hours, ages of alerts).
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    # user id -> (language, monotonic time of the last users.touch)
    _languages: dict[int, tuple[str, float]] = field(default_factory=dict)

    def wake_outbox(self) -> None:
        """Call after committing outbox items: the worker sends them now instead of at its next poll."""
        if self.outbox is not None:
            self.outbox.wake()

    def cached_language(self, user_id: int) -> str | None:
        cached = self._languages.get(user_id)
        return cached[0] if cached else None

    def needs_touch(self, user_id: int) -> bool:
        cached = self._languages.get(user_id)
        return cached is None or time.monotonic() - cached[1] > TOUCH_EVERY_SECONDS

    def remember_language(self, user_id: int, language: str) -> None:
        self._languages[user_id] = (language, time.monotonic())

    def forget_user(self, user_id: int) -> None:
        self._languages.pop(user_id, None)

    def language_for_client(self, client_code: str | None) -> str:
        return resolve_language(client_code, self.settings.i18n.default_language)
