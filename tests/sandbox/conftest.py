"""Fixtures for the sandbox's own tests: a fresh fake Bot API and a real PTB ``Bot`` talking to it over HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from telegram import Bot

from bot.sandbox.fake_telegram import FakeTelegram


@pytest.fixture
async def fake() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram() as server:
        yield server


@pytest.fixture
async def tg(fake: FakeTelegram) -> AsyncIterator[Bot]:
    """PTB's real Bot: every response goes through PTB's own JSON parsing and error mapping."""
    bot = Bot(fake.token, base_url=fake.base_url, base_file_url=fake.base_file_url)
    async with bot:
        yield bot
