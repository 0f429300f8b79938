"""python-telegram-bot's rate limiter: chats evenly spaced, Telegram's per-group limit, paid broadcasts.

Used by the Application's bot, so direct replies, the outbox and broadcasts share one budget.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from aiolimiter import AsyncLimiter
from telegram.error import BadRequest, NetworkError, RetryAfter, TimedOut
from telegram.ext import BaseRateLimiter

from bot import replay
from bot.config import Settings
from bot.outbox import retry_after_seconds

log = logging.getLogger("waystation.rate_limit")

# Waits before retrying a call that met a server error (5xx) or a dropped connection: three retries in 2.3 s.
TRANSIENT_BACKOFF = (0.3, 0.7, 1.3)


def _even(rate: float) -> AsyncLimiter:
    """`rate` calls a second, evenly spaced (aiolimiter's leaky bucket, sized 1.1 calls).

    A bucket the size of a whole second (PTB's AIORateLimiter) lets a second's worth out at once, which Telegram's
    per-second window answers with 429 — and a 429 stops every request for a second. A bucket of exactly one call
    loses the event loop's timer lateness (up to a millisecond) on every call, 3 % at 30/s; the extra tenth lets a late
    call catch up without ever putting more than `rate` + 1 calls in any one second. Above 100/s (paid broadcasts)
    the bucket holds 1/20 s worth: timers are not finer than that."""
    burst = max(1.1, rate / 20) if rate > 100 else 1.1
    return AsyncLimiter(max_rate=burst, time_period=burst / rate)


class RateLimiter(BaseRateLimiter[int]):
    """python-telegram-bot's rate limiter for Waystation, on aiolimiter (what PTB's own AIORateLimiter uses).

    * Messages to chats: `overall_max_rate` per second overall, *evenly spaced* (PTB's AIORateLimiter allows a burst
      of a whole second's worth, which a per-second window answers with 429: a broadcast then loses a second at every
      burst instead of running at the limit).
    * Groups: `group_max_per_minute` a minute each (Telegram's 20/min; bursts are fine there).
    * Paid broadcasts (``allow_paid_broadcast``): `paid_max_rate` per second, beside the free limit.
    * A 429 (RetryAfter) pauses every request for its ``retry_after`` and is retried up to `max_retries` times; after
      that the caller (the outbox worker) sees it and reschedules the item.
    * A 5xx or a dropped connection is retried after 0.3, 0.7 and 1.3 s (TRANSIENT_BACKOFF), then raised. A timeout
      is not retried: Telegram may have acted on the call.
    """

    def __init__(
        self,
        overall_max_rate: float = 25.0,
        group_max_per_minute: int = 20,
        *,
        paid_max_rate: float = 1000.0,
        max_retries: int = 3,
    ) -> None:
        # Very high rates mean "no limit" (benchmarks, a self-hosted Bot API server without limits).
        self._overall = _even(overall_max_rate) if overall_max_rate < 10_000 else None
        self._paid = _even(paid_max_rate)
        self._group_max = group_max_per_minute
        self._groups: dict[int | str, AsyncLimiter] = {}
        self._max_retries = max_retries
        self._unpaused = asyncio.Event()
        self._unpaused.set()

    async def initialize(self) -> None:
        """Nothing to set up."""

    async def shutdown(self) -> None:
        """Nothing to release."""

    def _group(self, chat: int | str) -> AsyncLimiter:
        if len(self._groups) > 512:  # forget idle groups
            for key, idle in list(self._groups.items()):
                if key != chat and idle.has_capacity(idle.max_rate):
                    del self._groups[key]
        if chat not in self._groups:
            self._groups[chat] = AsyncLimiter(self._group_max, 60)
        return self._groups[chat]

    async def process_request(
        self,
        callback: Callable[..., Coroutine[Any, Any, bool | dict[str, Any] | list[dict[str, Any]]]],
        args: Any,
        kwargs: dict[str, Any],
        endpoint: str,
        data: dict[str, Any],
        rate_limit_args: int | None,
    ) -> bool | dict[str, Any] | list[dict[str, Any]]:
        chat: int | str | None = data.get("chat_id")
        with contextlib.suppress(TypeError, ValueError):
            chat = int(chat)  # type: ignore[arg-type]
        group = chat if (isinstance(chat, int) and chat < 0) or isinstance(chat, str) else None
        paid = bool(data.get("allow_paid_broadcast"))
        retries = rate_limit_args if rate_limit_args is not None else self._max_retries
        limiter = (self._paid if paid else self._overall) if chat is not None else None
        # Within an update handled again after a crash, a call made before the crash is replayed (bot/replay.py).
        return await replay.call(
            endpoint,
            lambda: self._limited(callback, args, kwargs, endpoint, group, limiter, retries),
        )

    async def _limited(
        self,
        callback: Callable[..., Coroutine[Any, Any, bool | dict[str, Any] | list[dict[str, Any]]]],
        args: Any,
        kwargs: dict[str, Any],
        endpoint: str,
        group: int | str | None,
        limiter: AsyncLimiter | None,
        retries: int,
    ) -> bool | dict[str, Any] | list[dict[str, Any]]:
        floods = failures = 0
        while True:
            try:
                if group is not None and self._group_max:
                    await self._group(group).acquire()
                if limiter is not None:
                    await limiter.acquire()
                await self._unpaused.wait()
                return await callback(*args, **kwargs)
            except RetryAfter as exc:
                if floods >= retries:
                    raise
                floods += 1
                wait = retry_after_seconds(exc) + 0.1
                log.info("flood control (%s): every request waits %.1f s", endpoint, wait)
                self._unpaused.clear()
                try:
                    await asyncio.sleep(wait)
                finally:
                    self._unpaused.set()
            except (BadRequest, TimedOut):
                raise  # a refusal, or an answer that may still come: retrying would not help, or would duplicate
            except NetworkError:
                # A 5xx or a dropped connection: Telegram did not act on it (as far as it tells). Without this, a
                # direct reply or a callback answer hit by one would fail its handler (the person sees an apology
                # and the step is not done), and a getMe hit at start-up would stop the bot from starting.
                if failures >= len(TRANSIENT_BACKOFF):
                    raise
                wait = TRANSIENT_BACKOFF[failures]
                failures += 1
                log.info("server error or dropped connection (%s): retrying in %.1f s", endpoint, wait)
                await asyncio.sleep(wait)


def rate_limiter(settings: Settings) -> RateLimiter:
    """The rate limiter for the Application, from telegram.* and weather.paid_max_rate."""
    return RateLimiter(
        settings.telegram.overall_max_rate,
        settings.telegram.group_max_per_minute,
        paid_max_rate=settings.weather.paid_max_rate,
    )
