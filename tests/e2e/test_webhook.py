"""Webhook mode: Telegram (the fake) posts updates with the secret header; /healthz; duplicates acted on once."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest

from bot.sandbox.fake_telegram import FakeTelegram
from tests.conftest import make_settings
from tests.harness import BotHarness

SECRET = "s3cret-Token_1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
async def webhook_bot(database_url: str, fake_telegram: FakeTelegram) -> AsyncIterator[tuple[BotHarness, str]]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    settings = make_settings(
        fake_telegram,
        database_url,
        mode="webhook",
        webhook={"listen": "127.0.0.1", "port": port, "url": f"{base}/telegram", "secret_token": SECRET},
    )
    harness = BotHarness(settings, fake_telegram)
    await harness.start()
    try:
        yield harness, base
    finally:
        await harness.stop()
    harness.assert_clean()


def start_update(update_id: int, user_id: int) -> dict[str, object]:
    return {
        "update_id": update_id,
        "message": {
            "message_id": 1,
            "date": int(time.time()),
            "chat": {"id": user_id, "type": "private", "first_name": "Ann"},
            "from": {"id": user_id, "is_bot": False, "first_name": "Ann", "language_code": "en"},
            "text": "/start",
            "entities": [{"type": "bot_command", "offset": 0, "length": 6}],
        },
    }


async def test_updates_arrive_by_webhook(webhook_bot: tuple[BotHarness, str], fake_telegram: FakeTelegram) -> None:
    ann = fake_telegram.user("Ann")
    await ann.send_command("/start")
    assert (await ann.receive()).text.startswith("Hello, Ann!")
    async with aiohttp.ClientSession() as http, http.get(f"{webhook_bot[1]}/healthz") as response:
        assert response.status == 200
        assert await response.json() == {"status": "ok"}


async def test_requests_without_the_secret_are_rejected(
    webhook_bot: tuple[BotHarness, str], fake_telegram: FakeTelegram
) -> None:
    ann = fake_telegram.user("Ann")
    url = f"{webhook_bot[1]}/telegram"
    async with aiohttp.ClientSession() as http:
        for headers in ({}, {"X-Telegram-Bot-Api-Secret-Token": "wrong"}):
            async with http.post(url, json=start_update(900_001, ann.id), headers=headers) as response:
                assert response.status == 403
        async with http.post(url, data=b"not json", headers={"X-Telegram-Bot-Api-Secret-Token": SECRET}) as response:
            assert response.status == 400
    await asyncio.sleep(0.3)
    assert ann.messages == []


async def test_same_update_twice_is_answered_once(
    webhook_bot: tuple[BotHarness, str], fake_telegram: FakeTelegram
) -> None:
    ann = fake_telegram.user("Ann")
    url = f"{webhook_bot[1]}/telegram"
    headers = {"X-Telegram-Bot-Api-Secret-Token": SECRET}
    async with aiohttp.ClientSession() as http:
        for _ in range(2):
            async with http.post(url, json=start_update(900_002, ann.id), headers=headers) as response:
                assert response.status == 200
    await ann.receive()
    await ann.send_command("/help")  # a later update is processed after both copies
    assert "/language" in (await ann.receive()).text
    assert sum(1 for m in ann.messages if m.text.startswith("Hello")) == 1
