"""What cold-weather delivery stands on: the forecast provider against the fake Open-Meteo (and the fake itself), the
even-paced rate limiter, and the aiohttp client python-telegram-bot sends through."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from aiohttp import web
from telegram import Bot, InlineKeyboardButton, InlineKeyboardMarkup
from telegram.error import NetworkError, RetryAfter, TimedOut

from bot.forecast import HOURLY_VARIABLES, ForecastUnavailable, OpenMeteo
from bot.rate_limit import RateLimiter
from bot.sandbox.fake_open_meteo import FakeOpenMeteo
from bot.sandbox.fake_telegram import TINY_JPEG, FakeTelegram
from bot.telegram_http import AiohttpRequest

pytestmark = pytest.mark.filterwarnings("ignore::telegram.warnings.PTBDeprecationWarning")

NOW = datetime(2027, 1, 14, 7, 30, tzinfo=UTC)


@pytest.fixture
async def meteo() -> AsyncIterator[FakeOpenMeteo]:
    async with FakeOpenMeteo() as server:
        server.clock = lambda: NOW
        yield server


class Sleeps:
    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


# --- the provider ------------------------------------------------------------------------------------------------


async def test_hourly_forecast_from_the_next_hour_on(meteo: FakeOpenMeteo) -> None:
    meteo.set_weather(31.7, 119.94, NOW + timedelta(hours=3), 2, temperature=-18, apparent=-25, wind=35, snowfall=1.5)
    provider = OpenMeteo(meteo.url, retries=0)
    try:
        hours = await provider.hourly(31.7, 119.94, 6)
    finally:
        await provider.close()
    assert [h.time for h in hours] == [NOW.replace(minute=0) + timedelta(hours=n) for n in range(6)]
    assert [(h.temperature_c, h.apparent_c) for h in hours[2:6]] == [(5.0, 3.0), (-18.0, -25.0), (-18.0, -25.0), (5, 3)]
    assert (hours[3].wind_kmh, hours[3].snowfall_cm) == (35.0, 1.5)
    params = meteo.requests[-1].params
    assert params["hourly"].split(",") == list(HOURLY_VARIABLES)
    assert (params["forecast_hours"], params["timezone"], params["timeformat"]) == ("6", "UTC", "unixtime")


@pytest.mark.parametrize("kind", ["500", "503", "drop", "garbage", "429"])
async def test_transient_failures_are_retried_with_back_off(meteo: FakeOpenMeteo, kind: Any) -> None:
    sleeps = Sleeps()
    provider = OpenMeteo(meteo.url, retries=3, backoff=2.0, sleep=sleeps)
    meteo.fail(2, kind)
    try:
        hours = await provider.hourly(31.7, 119.94, 4)
    finally:
        await provider.close()
    assert len(hours) == 4 and len(meteo.requests) == 3
    assert sleeps.waits == ([0.0, 0.0] if kind == "429" else [2.0, 4.0])  # Retry-After: 0 is honoured


async def test_an_outage_ends_in_one_short_category(meteo: FakeOpenMeteo) -> None:
    provider = OpenMeteo(meteo.url, retries=2, backoff=0.0)
    meteo.fail(3, "503")
    try:
        with pytest.raises(ForecastUnavailable) as raised:
            await provider.hourly(31.7, 119.94, 4)
    finally:
        await provider.close()
    assert raised.value.category == "server_error:503" and len(meteo.requests) == 3


async def test_a_rejected_request_is_not_retried(meteo: FakeOpenMeteo) -> None:
    provider = OpenMeteo(meteo.url, retries=5, backoff=0.0)
    try:
        with pytest.raises(ForecastUnavailable) as raised:
            await provider.hourly(95.0, 119.94, 4)  # no such latitude
    finally:
        await provider.close()
    assert raised.value.category == "rejected:400" and len(meteo.requests) == 1


async def test_timeouts_and_unreachable_servers(meteo: FakeOpenMeteo) -> None:
    meteo.timeout_seconds = 2.0
    meteo.fail(1, "timeout")
    provider = OpenMeteo(meteo.url, timeout=0.2, retries=1, backoff=0.0)
    try:
        hours = await provider.hourly(31.7, 119.94, 2)  # the second attempt answers
    finally:
        await provider.close()
    assert len(hours) == 2
    nowhere = OpenMeteo("http://127.0.0.1:9/v1/forecast", timeout=0.5, retries=1, backoff=0.0)
    try:
        with pytest.raises(ForecastUnavailable) as raised:
            await nowhere.hourly(31.7, 119.94, 2)
    finally:
        await nowhere.close()
    assert raised.value.category == "network"


async def test_the_fake_answers_like_open_meteo(meteo: FakeOpenMeteo) -> None:
    async with httpx.AsyncClient() as client:
        week = (await client.get(meteo.url, params={"latitude": 1, "longitude": 2, "hourly": "temperature_2m"})).json()
        assert len(week["hourly"]["time"]) == 7 * 24 and week["hourly"]["time"][0] == "2027-01-14T00:00"
        assert week["hourly_units"] == {"time": "iso8601", "temperature_2m": "°C"}
        bad = await client.get(meteo.url, params={"latitude": 1, "longitude": 2, "hourly": "temperature_3m"})
        assert bad.status_code == 400 and bad.json()["error"] is True
        assert (await client.get(meteo.url, params={"hourly": "snowfall"})).status_code == 400
        # Controlled over HTTP too (the demo page does this).
        control = meteo.url.replace("/v1/forecast", "/control")
        cold = {"lat": 1, "lon": 2, "start": "2027-01-14T07:00:00+00:00", "hours": 2, "temperature": -20}
        assert (await client.post(f"{control}/weather", json=cold)).json() == {"ok": True}
        assert (await client.post(f"{control}/weather", json={"lat": "x"})).status_code == 400
        assert (await client.post(f"{control}/fail", json={"count": 1, "kind": "500"})).json() == {"ok": True}
        assert (await client.get(meteo.url, params={"latitude": 1, "longitude": 2})).status_code == 500
        query = {
            "latitude": 1,
            "longitude": 2,
            "hourly": "temperature_2m",
            "forecast_hours": 3,
            "timeformat": "unixtime",
        }
        hourly = (await client.get(meteo.url, params=query)).json()["hourly"]
        assert hourly["temperature_2m"] == [-20.0, -20.0, 5.0]
        state = (await client.get(control)).json()
        assert state["points"] and state["faults"] == []
        await client.post(f"{control}/reset")
        assert (await client.get(meteo.url, params=query)).json()["hourly"]["temperature_2m"] == [5.0, 5.0, 5.0]


# --- the rate limiter --------------------------------------------------------------------------------------------


async def test_messages_are_evenly_spaced_never_a_burst() -> None:
    limiter = RateLimiter(20.0, 20)
    times: list[float] = []

    async def call() -> dict[str, Any]:
        times.append(time.monotonic())
        return {}

    await asyncio.gather(
        *(limiter.process_request(call, (), {}, "sendMessage", {"chat_id": n}, None) for n in range(12))
    )
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert min(gaps) >= 0.9 * 0.05 - 0.002  # ~1/20 s apart (a tenth of catch-up at most)
    assert times[-1] - times[0] >= 11 * 0.05 * 0.9


async def test_unlimited_and_unmetered_calls_go_at_once() -> None:
    limiter = RateLimiter(1_000_000.0, 20)

    async def call() -> dict[str, Any]:
        return {}

    started = time.monotonic()
    await asyncio.gather(*(limiter.process_request(call, (), {}, "x", {"chat_id": n}, None) for n in range(200)))
    slow = RateLimiter(1.0, 20)
    await asyncio.gather(*(slow.process_request(call, (), {}, "getMe", {}, None) for _ in range(20)))  # no chat
    assert time.monotonic() - started < 1.0


async def test_groups_have_their_own_per_minute_limit() -> None:
    limiter = RateLimiter(1000.0, 2)

    async def call() -> dict[str, Any]:
        return {}

    for _ in range(2):
        await limiter.process_request(call, (), {}, "sendMessage", {"chat_id": -100123}, None)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.3):
            await limiter.process_request(call, (), {}, "sendMessage", {"chat_id": -100123}, None)
    await limiter.process_request(call, (), {}, "sendMessage", {"chat_id": 42}, None)  # a person is not held back


async def test_paid_broadcasts_use_their_own_rate() -> None:
    limiter = RateLimiter(1.0, 20, paid_max_rate=1000.0)

    async def call() -> dict[str, Any]:
        return {}

    started = time.monotonic()
    data = {"chat_id": 7, "allow_paid_broadcast": True}
    await asyncio.gather(*(limiter.process_request(call, (), {}, "sendMessage", data, None) for _ in range(100)))
    assert time.monotonic() - started < 0.5  # 100 at 1000/s, not at the free 1/s


async def test_flood_control_pauses_everything_and_retries() -> None:
    limiter = RateLimiter(1000.0, 20, max_retries=2)
    calls: list[float] = []

    async def flaky() -> dict[str, Any]:
        calls.append(time.monotonic())
        if len(calls) == 1:
            raise RetryAfter(0)
        return {"ok": True}

    assert await limiter.process_request(flaky, (), {}, "sendMessage", {"chat_id": 1}, None) == {"ok": True}
    assert len(calls) == 2 and calls[1] - calls[0] >= 0.1

    async def always() -> dict[str, Any]:
        raise RetryAfter(0)

    with pytest.raises(RetryAfter):
        await limiter.process_request(always, (), {}, "sendMessage", {"chat_id": 1}, None)


# --- the aiohttp client -----------------------------------------------------------------------------------------


async def test_python_telegram_bot_over_aiohttp(fake_telegram: FakeTelegram) -> None:
    ann = fake_telegram.user("Ann")
    markup = InlineKeyboardMarkup([[InlineKeyboardButton("📍 Nearest warm station", callback_data="wx|near")]])
    async with Bot(
        fake_telegram.token,
        base_url=fake_telegram.base_url,
        base_file_url=fake_telegram.base_file_url,
        request=AiohttpRequest(),
    ) as bot:
        assert bot.username == fake_telegram.bot.username  # getMe at initialize
        sent = await bot.send_message(ann.id, "<b>Cold</b> & <i>dark</i>", parse_mode="HTML", reply_markup=markup)
        photo = await bot.send_photo(ann.id, TINY_JPEG, caption="<i>map</i>", parse_mode="HTML")  # multipart
        raw = await bot.do_api_request("sendmessage", api_kwargs={"chat_id": ann.id, "text": "raw"})
        file = await bot.get_file(photo.photo[-1].file_id)
        downloaded = await file.download_as_bytearray()
    message, picture, plain = ann.messages
    assert (message.text, message.html, message.button_texts) == (
        "Cold & dark",
        sent.text_html,
        ["📍 Nearest warm station"],
    )
    assert picture.data == TINY_JPEG and picture.caption == "map" and bytes(downloaded) == TINY_JPEG
    assert plain.text == "raw" and isinstance(raw, dict) and raw["message_id"] == plain.message_id
    assert not fake_telegram.rejections


async def test_aiohttp_errors_become_telegram_errors(fake_telegram: FakeTelegram) -> None:
    fake_telegram.inject_faults(1, "drop", methods={"sendMessage"})
    ann = fake_telegram.user("Ann")
    async with Bot(fake_telegram.token, base_url=fake_telegram.base_url, request=AiohttpRequest()) as bot:
        with pytest.raises(NetworkError):
            await bot.send_message(ann.id, "dropped")

    async def slow(_request: web.Request) -> web.Response:
        await asyncio.sleep(2)
        return web.json_response({"ok": True, "result": True})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", slow)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    request = AiohttpRequest(read_timeout=0.2)
    await request.initialize()
    try:
        with pytest.raises(TimedOut):
            await request.post(f"http://127.0.0.1:{port}/bot1:x/getMe")
        with pytest.raises(NetworkError):
            await request.post("http://127.0.0.1:9/bot1:x/getMe")
    finally:
        await request.shutdown()
        await runner.cleanup()
    with pytest.raises(RuntimeError):
        await AiohttpRequest().do_request("http://127.0.0.1:9/x", "GET")
