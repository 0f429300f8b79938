"""`waystation demo` without a browser: the page's JSON API and WebSocket, driven over HTTP against the running demo.

The demo is the real bot on the fake Bot API; these tests act through the same endpoints the page uses and check what
the page would show (rendered HTML, keyboards, venues, photos), the clock control, and every refusal.
"""

from __future__ import annotations

import asyncio
import re
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from telegram.ext import CallbackContext

from bot.sandbox.demo import Demo, DemoError
from bot.sandbox.fake_telegram import BotMessage
from handlers.common import Context

ROOT = Path(__file__).resolve().parents[2]


class Page:
    """What the demo page does: read chats, act as a persona, listen on the WebSocket."""

    def __init__(self, demo: Demo, http: aiohttp.ClientSession) -> None:
        self.demo = demo
        self.http = http

    def chat_of(self, persona: str, group: bool = False) -> int:
        found = self.demo.personas[persona]
        if group:
            assert self.demo.group is not None
            return self.demo.group.id
        return found.user.id

    async def get(self, path: str) -> Any:
        async with self.http.get(path) as response:
            assert response.status == 200, await response.text()
            return await response.json()

    async def chat(self, chat_id: int) -> dict[str, Any]:
        data: dict[str, Any] = await self.get(f"/api/chats/{chat_id}")
        return data

    async def act(self, persona: str, chat_id: int, expect: int = 200, **action: Any) -> dict[str, Any]:
        async with self.http.post(f"/api/chats/{chat_id}/actions", json={"persona": persona, **action}) as response:
            body: dict[str, Any] = await response.json()
            assert response.status == expect, body
            return body

    async def tap(self, persona: str, chat_id: int, label: str) -> dict[str, Any]:
        """Tap the inline button labelled `label` on the newest message that shows it, by its row and column."""
        messages = (await self.chat(chat_id))["messages"]
        for message in reversed(messages):
            for row, buttons in enumerate(message["buttons"]):
                for col, button in enumerate(buttons):
                    if button["text"] == label:
                        return await self.act(
                            persona, chat_id, type="inline", message_id=message["id"], row=row, col=col
                        )
        raise AssertionError(f"no button {label!r} in chat {chat_id}")

    async def next_bot(self, persona: str, group: bool = False) -> BotMessage:
        """The bot's next message in that chat (waits on the fake, no sleeping)."""
        found = self.demo.personas[persona]
        if group:
            assert self.demo.group is not None
            return await self.demo.group.receive(timeout=10)
        return await found.user.receive(timeout=10)


@pytest.fixture
async def demo(database_url: str) -> AsyncIterator[Demo]:
    running = Demo(0, database_url=database_url)
    await running.start()
    errors: list[BaseException] = []

    async def record(_update: object, context: Context) -> None:
        if context.error is not None:
            errors.append(context.error)

    assert running.runner is not None
    running.runner.app.add_error_handler(record)
    try:
        yield running
    finally:
        rejected = list(running.fake.rejections)
        await running.stop()
    assert not errors, f"handler errors: {errors!r}"
    assert not rejected, f"the fake Bot API rejected calls: {rejected}"


@pytest.fixture
async def page(demo: Demo) -> AsyncIterator[Page]:
    async with aiohttp.ClientSession(base_url=demo.url) as http:
        yield Page(demo, http)


async def test_page_state_and_starting_chats(page: Page, demo: Demo) -> None:
    async with page.http.get("/") as response:
        assert response.status == 200
        html = await response.text()
    assert "/static/demo.js" in html and "/static/demo.css" in html
    for asset in ("demo.js", "demo.css", "sample-document.png"):
        async with page.http.get(f"/static/{asset}") as response:
            assert response.status == 200, asset

    state = await page.get("/api/state")
    assert [p["key"] for p in state["panes"]] == ["courier", "person", "citizen", "staff"]
    personas = {p["key"]: p for p in state["personas"]}
    assert demo.group is not None
    assert personas["responder"]["chats"] == [demo.group.id, personas["responder"]["private_chat"]]
    assert personas["courier"]["chats"] == [personas["courier"]["private_chat"]]
    regions = {r["key"]: r for r in state["regions"]}
    assert len(regions["changzhou"]["stations"]) > 20 and regions["changzhou"]["places"]
    assert all(regions["daqing"]["bounds"]["south"] <= s["lat"] for s in regions["daqing"]["stations"])
    assert state["weather"]["available"] is True
    assert state["clock"]["offset_minutes"] == 0

    # Everyone has opened the bot: each chat shows the greeting (formatted), the main menu and the offer of alerts.
    chat = await page.chat(page.chat_of("courier"))
    greeting, offer = chat["messages"][-2:]
    assert greeting["from_bot"] and greeting["html"].startswith("Hello, <b>Wang Lei</b>!")
    assert "cold night" in offer["html"] and offer["buttons"][0][0]["text"] == "🔔 Get cold-weather alerts"
    first_row = chat["keyboard"]["rows"][0]
    assert first_row[0] == {"text": "📍 Nearest stations", "request_location": True, "request_contact": False}

    # Demo staff: the group is the alert chat, responder and coordinator are in the staff table.
    assert demo.settings.staff.alert_chat_ids == [demo.group.id]


async def test_courier_location_lists_stations_and_card_shows_venue(page: Page, demo: Demo) -> None:
    courier = page.chat_of("courier")
    async with page.http.ws_connect("/ws") as ws:
        hello = await ws.receive_json(timeout=5)
        assert hello["type"] == "hello"
        place = next(p for r in (await page.get("/api/state"))["regions"] for p in r["places"] if p["key"] == "hutang")
        await page.act("courier", courier, type="location", lat=place["lat"], lon=place["lon"])
        event = await ws.receive_json(timeout=5)
        assert event == {"type": "chat", "chat_id": courier}
    await page.next_bot("courier")

    messages = (await page.chat(courier))["messages"]
    shared, listing = messages[-2], messages[-1]
    assert shared["kind"] == "location" and not shared["from_bot"]
    assert shared["location"] == {"lat": pytest.approx(31.717), "lon": pytest.approx(119.957)}
    assert listing["html"].startswith("<b>Nearest care stations</b>")
    assert "&lt;b&gt;" not in listing["html"]
    first = listing["buttons"][0][0]
    assert first["type"] == "callback" and first["text"].startswith("1. ")

    await page.act("courier", courier, type="inline", message_id=listing["id"], row=0, col=0)
    await page.next_bot("courier")
    await page.next_bot("courier")
    messages = (await page.chat(courier))["messages"]
    card, venue = messages[-2], messages[-1]
    assert card["html"].startswith("<b>") and any(b["type"] == "url" for row in card["buttons"] for b in row)
    assert venue["kind"] == "venue" and venue["venue"]["title"] and venue["location"]["lat"] > 31

    # A url button is not sent to the bot: the page opens it.
    row, col = next((r, c) for r, line in enumerate(card["buttons"]) for c, b in enumerate(line) if b["type"] == "url")
    opened = await page.act("courier", courier, type="inline", message_id=card["id"], row=row, col=col)
    assert opened["url"].startswith("https://")


async def test_typed_text_is_escaped_and_long_text_is_split_like_a_client(page: Page) -> None:
    citizen = page.chat_of("citizen")
    await page.act("citizen", citizen, type="text", text="<b>not bold</b> & co")
    await page.next_bot("citizen")
    messages = (await page.chat(citizen))["messages"]
    assert messages[-2]["html"] == "&lt;b&gt;not bold&lt;/b&gt; &amp; co"
    assert "did not understand" in messages[-1]["html"]

    sent = await page.act("citizen", citizen, type="text", text="x" * 5000)
    assert len(sent["updates"]) == 2
    await page.next_bot("citizen")
    await page.next_bot("citizen")
    typed = [m for m in (await page.chat(citizen))["messages"] if not m["from_bot"]]
    assert [len(m["html"]) for m in typed[-2:]] == [4096, 904]


async def test_help_request_then_claim_notifies_the_requester(page: Page, demo: Demo) -> None:
    person = page.chat_of("person")
    group = page.chat_of("responder", group=True)

    await page.act("person", person, type="reply_button", text="🆘 Ask for help")
    assert "is anyone in danger" in (await page.next_bot("person")).content
    await page.tap("person", person, "No")
    assert (await page.next_bot("person")).content == "Are you under 18?"
    await page.tap("person", person, "No")
    kinds = await page.next_bot("person")
    await page.tap("person", person, "🍲 Food")
    await demo.personas["person"].user.wait_edit(kinds.message_id, timeout=10)
    await page.tap("person", person, "Next ▶")
    assert "In a few words" in (await page.next_bot("person")).content
    await page.act("person", person, type="text", text="Lost my wallet <and> it is cold")
    assert "Where are you?" in (await page.next_bot("person")).content
    await page.act("person", person, type="reply_button", text="📍 Share my location", location=[31.7160, 119.9590])
    assert (await page.next_bot("person")).content == "📍 Location saved."
    assert "How can staff reach you?" in (await page.next_bot("person")).content
    await page.act("person", person, type="reply_button", text="📱 Share my phone number")
    assert (await page.next_bot("person")).content == "📞 Contact saved."
    assert "Optional: photos" in (await page.next_bot("person")).content
    await page.act("person", person, type="photo")
    assert "Received: 1 of 5." in (await page.next_bot("person")).content
    photo = next(m for m in (await page.chat(person))["messages"] if m["kind"] == "photo")
    assert photo["photo"]["width"] == 480
    async with page.http.get(photo["photo"]["url"]) as response:
        assert response.status == 200 and response.content_type == "image/png"
    await page.tap("person", person, "Done ▶")
    assert "Before you send" in (await page.next_bot("person")).content
    await page.tap("person", person, "✅ I agree")
    assert "Please check your request" in (await page.next_bot("person")).content
    await page.tap("person", person, "📨 Submit")
    match = re.search(r"WS-\d{4}-\d{6}", (await page.next_bot("person")).content)
    assert match
    reference = match.group()

    card = await page.next_bot("responder", group=True)
    assert card.content.startswith(f"🆕 New · {reference}")
    # The citizen is not in the staff group; the coordinator is, but Li Na acts here.
    await page.act("citizen", group, expect=403, type="text", text="hello")
    async with page.http.ws_connect("/ws") as ws:
        await ws.receive_json(timeout=5)
        await page.tap("responder", group, "✋ Claim")
        while (event := await ws.receive_json(timeout=10))["type"] != "toast":
            pass
    assert event == {
        "type": "toast",
        "chat_id": group,
        "persona": "responder",
        "text": f"You claimed {reference}.",
        "alert": False,
    }
    note = await page.next_bot("person")
    assert note.content == f"Your request {reference} was picked up by Li Na. They will contact you here."
    shown = (await page.chat(person))["messages"][-1]
    assert shown["html"] == f"Your request <b>{reference}</b> was picked up by Li Na. They will contact you here."
    assert demo.group is not None
    await demo.group.wait_until(lambda _messages: card.edits > 0, timeout=10)  # the outbox edits it
    edited = next(m for m in (await page.chat(group))["messages"] if m["id"] == card.message_id)
    assert edited["edited"] and "Being handled" in edited["html"] and reference in edited["html"]
    assert not any(b["text"] == "✋ Claim" for row in edited["buttons"] for b in row)


async def test_refusals(page: Page, demo: Demo) -> None:
    courier = page.chat_of("courier")
    greeting = (await page.chat(courier))["messages"][-1]
    bad = [
        ({"persona": "nobody", "type": "text", "text": "hi"}, 400, "unknown persona"),
        ({"persona": "person", "type": "text", "text": "hi"}, 403, "not in this chat"),
        ({"persona": "courier", "type": "teleport"}, 400, "unknown action type"),
        ({"persona": "courier", "type": "text", "text": "   "}, 400, "type something first"),
        ({"persona": "courier", "type": "inline", "message_id": 99999, "row": 0, "col": 0}, 400, "gone"),
        ({"persona": "courier", "type": "inline", "message_id": greeting["id"], "row": 5, "col": 0}, 400, "gone"),
        ({"persona": "courier", "type": "location", "lat": 123, "lon": 0}, 400, "out of range"),
        ({"persona": "courier", "type": "location", "lat": "north", "lon": 0}, 400, "could not convert"),
        ({"persona": "courier", "type": "reply_button", "text": "🚀 Launch"}, 400, "no reply button"),
        ({"persona": "courier", "type": "photo", "data": "bm90IGFuIGltYWdl"}, 400, "only PNG"),
        ({"persona": "courier", "type": "photo", "data": "%%%"}, 400, "could not be read"),
    ]
    for action, status, reason in bad:
        async with page.http.post(f"/api/chats/{courier}/actions", json=action) as response:
            body = await response.json()
            assert response.status == status, (action, body)
            assert reason in body["error"], (action, body)
    async with page.http.get("/api/chats/12345") as response:
        assert response.status == 404
    async with page.http.get("/api/files/nope") as response:
        assert response.status == 404
    # Only JSON bodies (no cross-site form posts), only our own host name (no DNS rebinding), no foreign origin.
    async with page.http.post(f"/api/chats/{courier}/actions", data="persona=courier") as response:
        assert response.status == 415
    async with page.http.get("/api/state", headers={"Host": "evil.example:80"}) as response:
        assert response.status == 403
    async with page.http.post(
        "/api/clock", json={"minutes": 30}, headers={"Origin": "http://evil.example"}
    ) as response:
        assert response.status == 403
    async with page.http.post("/api/weather", json={}, headers={"Origin": "http://evil.example"}) as response:
        assert response.status == 403
    assert demo.clock_offset == timedelta(0)
    # Nothing above reached the bot.
    assert (await page.chat(courier))["messages"][-1] == greeting


async def test_cold_night_button_drafts_an_alert_the_coordinator_approves(page: Page, demo: Demo) -> None:
    courier = page.chat_of("courier")
    group = page.chat_of("coordinator", group=True)
    # The courier takes the offer shown after /start and subscribes with a location in Wujin.
    await page.tap("courier", courier, "🔔 Get cold-weather alerts")
    await demo.personas["courier"].user.receive_all(2, timeout=10)
    await page.act("courier", courier, type="reply_button", text="📍 Share my location", location=[31.7170, 119.9570])
    await demo.personas["courier"].user.receive_all(2, timeout=10)  # saved, then "what should I send you?"
    await page.tap("courier", courier, "Next ▶")
    await page.next_bot("courier")
    await page.tap("courier", courier, "🔔 No quiet hours")
    assert "subscribed" in (await page.next_bot("courier")).content

    async with page.http.post("/api/weather", json={}) as response:
        assert response.status == 200, await response.text()
    # Both areas open an event; their draft alerts wait for a coordinator in the staff group.
    cards = [await page.next_bot("coordinator", group=True) for _ in range(2)]
    wujin = next(c for c in cards if "Wujin" in c.content)
    assert "-25 °C" in wujin.content and "Approve" in str(wujin.reply_markup)
    # The responder may not approve; the coordinator may.
    shown = next(m for m in (await page.chat(group))["messages"] if m["id"] == wujin.message_id)
    (row, col) = next(
        (r, c)
        for r, line in enumerate(shown["buttons"])
        for c, b in enumerate(line)
        if b["text"] == "✅ Approve and send"
    )
    for persona in ("responder", "coordinator"):
        await page.act(persona, group, type="inline", message_id=wujin.message_id, row=row, col=col)
    alert = await page.next_bot("courier")
    assert "-25 °C" in alert.content and "Hutang" in alert.content, alert.content
    # A second press changes nothing: the same cold night is one event.
    async with page.http.post("/api/weather", json={}) as response:
        assert response.status == 200
    await asyncio.sleep(0.5)
    assert [m for m in (await page.chat(courier))["messages"] if "-25 °C" in m["html"]] == [
        m for m in (await page.chat(courier))["messages"] if m["id"] == alert.message_id
    ]


async def test_clock_moves_the_bot_and_runs_jobs_that_became_due(page: Page, demo: Demo) -> None:
    assert demo.runner is not None and demo.runner.app.job_queue is not None
    ran: list[str] = []

    async def soon(_context: CallbackContext[Any, Any, Any, Any]) -> None:
        ran.append("soon")

    async def later(_context: CallbackContext[Any, Any, Any, Any]) -> None:
        ran.append("later")

    demo.runner.app.job_queue.run_repeating(soon, interval=600, first=600, name="soon")
    demo.runner.app.job_queue.run_once(later, when=timedelta(days=2), name="later")

    async with page.http.post("/api/clock", json={"minutes": 30}) as response:
        body = await response.json()
    assert body["clock"]["offset_minutes"] == 30
    assert "soon" in body["ran"] and "later" not in body["ran"]
    assert ran == ["soon"]
    shifted = demo.runner.app.services.clock()
    assert abs(shifted - (datetime.now(UTC) + timedelta(minutes=30))) < timedelta(seconds=5)
    assert abs(demo.fake.now() - (datetime.now(UTC).timestamp() + 1800)) < 5

    for minutes in (-5, 0, "30", True, 100_000):
        async with page.http.post("/api/clock", json={"minutes": minutes}) as response:
            assert response.status == 400, minutes
    async with page.http.post("/api/clock", json={"reset": True}) as response:
        assert (await response.json())["clock"]["offset_minutes"] == 0
    assert abs(demo.runner.app.services.clock() - datetime.now(UTC)) < timedelta(seconds=5)


async def test_busy_port_is_reported_before_anything_starts(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        busy = Demo(port, database_url=f"sqlite+aiosqlite:///{tmp_path / 'x.db'}")
        with pytest.raises(DemoError, match=f"cannot listen on 127.0.0.1:{port}"):
            await busy.start()
    assert busy.runner is None and not (tmp_path / "x.db").exists()


async def test_command_prints_the_url_and_stops_cleanly_on_ctrl_c() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot.sandbox.demo",
        "--port",
        "0",
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None
    try:
        line = (await asyncio.wait_for(process.stdout.readline(), timeout=60)).decode()
        match = re.fullmatch(r"Waystation demo: (http://127\.0\.0\.1:\d+/)\n", line)
        assert match, line
        async with aiohttp.ClientSession() as http, http.get(match.group(1) + "api/state") as response:
            assert response.status == 200
        process.send_signal(signal.SIGINT)
        out, err = await asyncio.wait_for(process.communicate(), timeout=30)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0, err.decode()
    assert "Stopping the demo" in out.decode()
    assert "Traceback" not in err.decode()


async def test_chinese_clients() -> None:
    demo = Demo(0, language="zh")
    await demo.start()
    try:
        greeting, offer = demo.personas["courier"].user.history[-2:]
        assert greeting.content.startswith("您好，王磊！") and "寒" in offer.content
        assert demo.group is not None and demo.group.title == "武进爱心驿站 · 工作群"
    finally:
        await demo.stop()
