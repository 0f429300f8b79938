"""`waystation demo`: the whole product on one machine, before anyone creates a bot with BotFather.

One process runs a throw-away SQLite database (demo stations, a demo staff team), the in-repo fake Bot API and fake
geocoder, the *real* bot (``BotRunner``, long polling against the fake) and a small web server. The page it serves
shows one chat pane per role — a courier, a person in difficulty, a citizen, the staff — and acts through the fake's
client API exactly as the tests do, so everything on screen is what the bot really sent: ``BotMessage.html`` is the
fake's re-rendering of the message entities (formatting shown, never raw tags), edits replace the message in place,
venues, locations and photos keep their kind.

The page talks to a JSON API (``/api/...``) and a WebSocket (``/ws``) that only says "chat X changed" or carries a
button's callback answer; the page then re-reads that chat. A control strip moves the bot's clock forward (opening
hours, alert ages and escalation react) and runs the scheduled jobs that became due.

The server listens on 127.0.0.1 only, answers only requests addressed to it by name (no DNS rebinding) and takes only
JSON bodies on POST (no cross-site form posts), so another web page open in the same browser cannot drive the demo.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import contextlib
import importlib
import logging
import math
import re
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

from aiohttp import WSMsgType, web

from bot import logs, weather_jobs
from bot.config import Settings
from bot.database import Database
from bot.runner import BotRunner
from bot.sandbox.fake_nominatim import FakeNominatim
from bot.sandbox.fake_open_meteo import FakeOpenMeteo
from bot.sandbox.fake_telegram import BotMessage, ChatState, FakeGroup, FakeTelegram, FakeUser, image_size
from bot.sandbox.telegram_html import utf16_len
from models import staff, station_import
from models.staff import Role

log = logging.getLogger("waystation.demo")

STATIC_DIR: Final = Path(__file__).resolve().parent / "static"
SAMPLE_PHOTO: Final = STATIC_DIR / "sample-document.png"
DEMO_TOKEN: Final = "5550000001:DEMO-not-a-real-token"
DEMO_BOT_USERNAME: Final = "waystation_demo_bot"
MAX_TEXT: Final = 4096  # a Telegram client splits longer input into several messages
MAX_PHOTO_BYTES: Final = 10 * 1024 * 1024  # Telegram's limit for photos
MAX_CLOCK_STEP_MINUTES: Final = 7 * 24 * 60
_COMMAND: Final = re.compile(r"^/([A-Za-z0-9_]{1,32})(?:@[A-Za-z0-9_]{3,32})?(?:\s+(.*))?$", re.DOTALL)
_IMAGE_TYPES: Final = ((b"\x89PNG", "image/png"), (b"\xff\xd8", "image/jpeg"), (b"GIF8", "image/gif"))


class DemoError(Exception):
    """A problem starting the demo, worded for the person who typed `waystation demo`."""


@dataclass(frozen=True)
class Place:
    """A preset place the page offers when a location is asked for."""

    key: str
    title: str
    title_zh: str
    lat: float
    lon: float


@dataclass(frozen=True)
class Region:
    """A part of the map: the page draws its stations (no tiles) and turns clicks into coordinates."""

    key: str
    title: str
    title_zh: str
    south: float
    north: float
    west: float
    east: float
    places: tuple[Place, ...]

    def contains(self, lat: float, lon: float) -> bool:
        return self.south <= lat <= self.north and self.west <= lon <= self.east


# The demo stations are around Wujin/Changzhou and Daqing (bot/data/demo_stations.csv).
REGIONS: Final = (
    Region(
        "changzhou",
        "Changzhou · Wujin",
        "常州 · 武进",
        30.0,
        33.0,
        118.0,
        121.0,
        (
            Place("hutang", "Hutang, Renmin Rd", "湖塘 · 人民中路", 31.7170, 119.9570),
            Place("hitech", "Wujin Hi-Tech Zone", "武进高新区", 31.6700, 119.9650),
            Place("cz_station", "Changzhou Railway Station", "常州火车站", 31.7865, 119.9722),
            Place("xinbei", "Xinbei, Tongjiang Rd", "新北 · 通江路", 31.8180, 119.9700),
        ),
    ),
    Region(
        "daqing",
        "Daqing",
        "大庆",
        46.3,  # the Datong stations, 60 km further south, stay off the map: it would be mostly empty
        47.5,
        124.0,
        126.0,
        (
            Place("sartu", "Sartu, Dongfeng Rd", "萨尔图 · 东风路", 46.5960, 125.1100),
            Place("dq_station", "Daqing Railway Station", "大庆火车站", 46.6133, 125.0958),
            Place("ranghulu", "Ranghulu, Xibin Rd", "让胡路 · 西宾路", 46.6500, 124.8700),
        ),
    ),
)


@dataclass(frozen=True)
class PersonaSpec:
    key: str
    pane: str
    names: dict[str, str]  # client language -> display name
    phone: str
    role: Role | None = None


PERSONAS: Final = (
    PersonaSpec("courier", "courier", {"en": "Wang Lei", "zh": "王磊"}, "+8613800000101"),
    PersonaSpec("person", "person", {"en": "Chen Jing", "zh": "陈静"}, "+8613800000102"),
    PersonaSpec("citizen", "citizen", {"en": "Zhao Min", "zh": "赵敏"}, "+8613800000103"),
    PersonaSpec("responder", "staff", {"en": "Li Na", "zh": "李娜"}, "+8613800000104", Role.RESPONDER),
    PersonaSpec("coordinator", "staff", {"en": "Zhou Qiang", "zh": "周强"}, "+8613800000105", Role.COORDINATOR),
)

# Page chrome only (English and Chinese side by side); everything the bot says comes from the bot.
PANES: Final = (
    {"key": "courier", "title": "Courier", "title_zh": "快递骑手", "icon": "🛵"},
    {"key": "person", "title": "Person in difficulty", "title_zh": "求助者", "icon": "🧍"},
    {"key": "citizen", "title": "Citizen", "title_zh": "市民", "icon": "👀"},
    {"key": "staff", "title": "Staff", "title_zh": "工作人员", "icon": "🛠"},
)
ROLE_TITLES: Final = {
    "courier": ("courier", "骑手"),
    "person": ("person in difficulty", "求助者"),
    "citizen": ("citizen", "市民"),
    "responder": ("responder", "响应人员"),
    "coordinator": ("coordinator", "协调员"),
}


@dataclass
class Persona:
    spec: PersonaSpec
    user: FakeUser
    chats: list[int]  # chat ids this persona can write in: the private chat first

    @property
    def key(self) -> str:
        return self.spec.key


def _wake_escalation(app: Any) -> bool:
    """Escalation polls on its own timer; after a clock jump it should look for due watches at once."""
    try:  # by name: the demo also runs in a build without the escalation feature
        escalation = importlib.import_module("bot.escalation")
    except ImportError:
        return False
    runner = escalation.runner_of(app)
    if runner is None or not runner.running:
        return False
    runner.wake()
    return True


# The demo's weather areas: the two regions' centres (the fake forecast server answers for these points).
WEATHER_AREAS: Final[tuple[dict[str, Any], ...]] = (
    {
        "key": "wujin",
        "name": "Changzhou · Wujin",
        "names": {"zh_Hans": "常州 · 武进"},
        "lat": 31.74,
        "lon": 119.955,
        "timezone": "Asia/Shanghai",
    },
    {"key": "daqing", "name": "Daqing", "names": {"zh_Hans": "大庆"}, "lat": 46.59, "lon": 125.10},
)
COLD_NIGHT: Final = {"temperature": -25.0, "apparent": -32.0, "wind": 30.0}


class Demo:
    """The running demo: fake Telegram + fake geocoder + the real bot + the web page. Start, then stop."""

    def __init__(
        self,
        port: int = 8080,
        *,
        host: str = "127.0.0.1",
        language: str = "en",
        database_url: str | None = None,
        timezone: str = "Asia/Shanghai",
    ) -> None:
        if language not in ("en", "zh"):
            raise DemoError(f"language {language!r}: expected 'en' or 'zh'")
        self.requested_port = port
        self.host = host
        self.language = language
        self.database_url = database_url
        self.timezone = timezone
        self.port = 0
        self.fake = FakeTelegram(token=DEMO_TOKEN, bot_username=DEMO_BOT_USERNAME, bot_first_name="Waystation")
        self.nominatim = FakeNominatim()
        self.meteo = FakeOpenMeteo(clock=self.now)
        self.runner: BotRunner | None = None
        self.personas: dict[str, Persona] = {}
        self.group: FakeGroup | None = None
        self.clock_offset = timedelta(0)
        self._workdir: Path | None = None
        self._site: web.AppRunner | None = None
        self._sockets: set[web.WebSocketResponse] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._stack = contextlib.AsyncExitStack()
        self._ready = False

    # -- lifecycle --------------------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    @property
    def settings(self) -> Settings:
        return self._bot_runner.settings

    @property
    def _bot_runner(self) -> BotRunner:
        if self.runner is None:
            raise DemoError("the demo is not running")
        return self.runner

    async def start(self) -> None:
        """Everything up, in dependency order; a failure part-way undoes what was started."""
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise

    async def _start(self) -> None:
        await self._start_web()  # first: a port already in use fails at once, before anything else starts
        await self.fake.start()
        self._stack.push_async_callback(self.fake.stop)
        await self.nominatim.start()
        self._stack.push_async_callback(self.nominatim.stop)
        await self.meteo.start()
        self._stack.push_async_callback(self.meteo.stop)
        self._create_people()
        settings = self._settings()
        await self._prepare_database(settings)
        self.runner = BotRunner(settings, poll_timeout=2)
        await self.runner.start()
        self._stack.push_async_callback(self._stop_bot)
        self.fake.add_listener(self._on_chat_changed)
        await self._say_hello()
        self._ready = True

    async def stop(self) -> None:
        self._ready = False
        for task in list(self._tasks):
            task.cancel()
        for socket in list(self._sockets):
            with contextlib.suppress(Exception):
                await socket.close()
        if self._site is not None:
            await self._site.cleanup()
            self._site = None
        await self._stack.aclose()
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None

    async def _stop_bot(self) -> None:
        if self.runner is not None:
            await self.runner.stop()
            self.runner = None

    def _create_people(self) -> None:
        client = self.language
        for spec in PERSONAS:
            user = self.fake.user(spec.names[client], language_code=client, phone_number=spec.phone)
            self.personas[spec.key] = Persona(spec, user, [user.id])
        staff_users = [p.user for p in self.personas.values() if p.spec.role is not None]
        title = "Wujin care stations · staff" if client == "en" else "武进爱心驿站 · 工作群"
        self.group = self.fake.group(title, members=staff_users)
        for persona in self.personas.values():
            if persona.spec.role is not None:
                persona.chats.insert(0, self.group.id)  # staff act in the group first

    def _settings(self) -> Settings:
        """Demo settings from code only: a config.toml (a real token, a webhook) must not leak into the demo."""
        assert self.group is not None
        if self.database_url is None:
            self._workdir = Path(tempfile.mkdtemp(prefix="waystation-demo-"))
            self.database_url = f"sqlite+aiosqlite:///{self._workdir / 'demo.db'}"
        return Settings(
            timezone=self.timezone,
            telegram={
                "token": self.fake.token,
                "api_base_url": self.fake.base_url,
                "api_base_file_url": self.fake.base_file_url,
                "mode": "polling",
                # One person clicking through four panes: Telegram's 20 messages a minute per group would only
                # make the demo's staff group feel slow. The real limits stay the default everywhere else.
                "group_max_per_minute": 600,
                "overall_max_rate": 100.0,
            },
            database={"url": self.database_url, "upgrade_on_start": True, "echo": False},
            geocoding={
                "domain": self.nominatim.domain,
                "scheme": "http",
                "min_delay_seconds": 0,
                "user_agent": "waystation-demo",
            },
            help={"hotline": "0519-12345"},
            staff={"alert_chat_ids": [self.group.id]},
            # Forecasts from the fake server (mild until the page's ❄️ button makes a cold night); the approval
            # card goes to the staff group, where only the coordinator may approve it.
            weather={
                "forecast_url": self.meteo.url,
                "areas": list(WEATHER_AREAS),
                "mode": "approval",
                "coordinator_chat_ids": [self.group.id],
                "retry_backoff_seconds": 0,
                "report_interval_seconds": 1,
            },
        )

    async def _prepare_database(self, settings: Settings) -> None:
        database = Database(settings.database.url)
        try:
            await database.upgrade()
            async with database.session() as session:
                report = await station_import.import_stations(session, station_import.DEMO_FILE)
            if not report.ok:
                raise DemoError(f"demo stations: {len(report.errors)} row(s) failed to import")
            async with database.session() as session:
                for persona in self.personas.values():
                    if persona.spec.role is not None:
                        await staff.add(session, persona.user.id, persona.user.first_name, persona.spec.role)
        finally:
            await database.dispose()

    async def _say_hello(self) -> None:
        """Every persona has opened the bot already, so each pane starts at the main menu (and the offer to get
        cold-weather alerts)."""
        for persona in self.personas.values():
            await persona.user.send_command("/start")
        for persona in self.personas.values():
            await persona.user.receive_all(2, timeout=15)  # the greeting, then the one-time offer of cold alerts

    async def _start_web(self) -> None:
        app = web.Application(middlewares=[self._guard], client_max_size=MAX_PHOTO_BYTES * 2)
        app.router.add_get("/", self._index)
        app.router.add_static("/static/", STATIC_DIR, append_version=False)
        app.router.add_get("/ws", self._websocket)
        app.router.add_get("/api/state", self._state)
        app.router.add_get("/api/chats/{chat_id}", self._chat)
        app.router.add_post("/api/chats/{chat_id}/actions", self._action)
        app.router.add_get("/api/files/{file_id}", self._file)
        app.router.add_post("/api/clock", self._clock)
        app.router.add_post("/api/weather", self._weather)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        try:
            await web.TCPSite(runner, self.host, self.requested_port).start()
        except OSError as exc:
            await runner.cleanup()
            raise DemoError(
                f"cannot listen on {self.host}:{self.requested_port} ({exc.strerror or exc}); "
                "is another demo running? Try --port 8081"
            ) from None
        self._site = runner
        self.port = int(runner.addresses[0][1])

    async def run_until_signal(self) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        signals = (signal.SIGINT, signal.SIGTERM)

        def on_signal() -> None:
            stop.set()
            for sig in signals:  # a second Ctrl-C interrupts a stop that hangs
                loop.remove_signal_handler(sig)

        for sig in signals:
            loop.add_signal_handler(sig, on_signal)
        await self.start()
        try:
            print(f"Waystation demo: {self.url}", flush=True)
            print("Open it in a browser; press Ctrl-C to stop (the demo data is thrown away).", flush=True)
            await stop.wait()
            print("Stopping the demo…", flush=True)
        finally:
            await self.stop()

    # -- the bot's clock --------------------------------------------------------------------------------------

    def now(self) -> datetime:
        return datetime.now(UTC) + self.clock_offset

    def _apply_clock(self) -> None:
        offset = self.clock_offset
        self._bot_runner.app.services.clock = lambda: datetime.now(UTC) + offset
        self.fake.now = lambda: time.time() + offset.total_seconds()  # message dates follow the same clock

    async def move_clock(self, minutes: int) -> list[str]:
        """Move the bot's clock; run every scheduled job that has become due, so its effect shows at once."""
        self.clock_offset += timedelta(minutes=minutes)
        self._apply_clock()
        return await self._run_due_jobs()

    async def reset_clock(self) -> None:
        self.clock_offset = timedelta(0)
        self._apply_clock()

    async def _run_due_jobs(self) -> list[str]:
        app = self._bot_runner.app
        ran: list[str] = []
        if _wake_escalation(app):
            ran.append("escalation check")
        if app.job_queue is None:
            return ran
        shifted = self.now()
        for job in app.job_queue.jobs():
            due = job.next_t
            if due is not None and due <= shifted:
                await job.run(app)
                ran.append(job.name or "job")
        return ran

    def clock_state(self) -> dict[str, Any]:
        now = self.now().astimezone(self.settings.tz)
        return {
            "offset_minutes": int(self.clock_offset.total_seconds() // 60),
            "now": now.isoformat(timespec="minutes"),
            "label": now.strftime("%a %d %b %H:%M"),
            "timezone": self.settings.timezone,
        }

    # -- change notifications ---------------------------------------------------------------------------------

    def _on_chat_changed(self, chat_id: int) -> None:
        self._broadcast({"type": "chat", "chat_id": chat_id})

    def _broadcast(self, event: dict[str, Any]) -> None:
        for socket in list(self._sockets):
            if socket.closed:
                self._sockets.discard(socket)
                continue
            self._spawn(socket.send_json(event))

    def _spawn(self, work: Awaitable[Any]) -> None:
        async def run() -> None:
            with contextlib.suppress(ConnectionError, RuntimeError):
                await work

        task = asyncio.get_running_loop().create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _relay_answer(self, persona: Persona, chat_id: int, query_id: str) -> None:
        """A button's callback answer (the little toast or alert in Telegram) goes to the page."""
        try:
            text, show_alert = await persona.user.callback_answer(query_id, timeout=15)
        except AssertionError:
            return  # never answered: the page shows nothing, as Telegram would stop the spinner
        if text:
            self._broadcast(
                {"type": "toast", "chat_id": chat_id, "persona": persona.key, "text": text, "alert": show_alert}
            )

    # -- HTTP: the page and the guard -------------------------------------------------------------------------

    @web.middleware
    async def _guard(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        hosts = {f"{name}:{self.port}" for name in ("127.0.0.1", "localhost", "[::1]", self.host)}
        if request.host not in hosts:
            return web.json_response({"error": "unknown host"}, status=403)
        if request.method == "POST" and request.content_type != "application/json":
            return web.json_response({"error": "send JSON"}, status=415)
        origin = request.headers.get("Origin")
        if origin is not None and origin.split("://", 1)[-1] not in hosts:
            return web.json_response({"error": "cross-site request"}, status=403)
        if not self._ready:
            return web.json_response({"error": "the demo is starting or stopping"}, status=503)
        response = await handler(request)
        response.headers.setdefault("Cache-Control", "no-store")
        return response

    async def _index(self, _request: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC_DIR / "index.html")

    async def _websocket(self, request: web.Request) -> web.StreamResponse:
        socket = web.WebSocketResponse(heartbeat=20)
        await socket.prepare(request)
        self._sockets.add(socket)
        try:
            await socket.send_json({"type": "hello", "clock": self.clock_state()})
            async for message in socket:
                if message.type == WSMsgType.ERROR:
                    break  # the page only listens; anything it sends is ignored
        finally:
            self._sockets.discard(socket)
        return socket

    async def _state(self, _request: web.Request) -> web.StreamResponse:
        assert self.group is not None
        chats = {
            str(self.group.id): {"id": self.group.id, "type": "group", "title": self.group.title},
        }
        personas = []
        for persona in self.personas.values():
            role, role_zh = ROLE_TITLES[persona.key]
            chats[str(persona.user.id)] = {"id": persona.user.id, "type": "private", "title": persona.user.first_name}
            personas.append(
                {
                    "key": persona.key,
                    "pane": persona.spec.pane,
                    "name": persona.user.first_name,
                    "role": role,
                    "role_zh": role_zh,
                    "staff": persona.spec.role is not None,
                    "chats": persona.chats,
                    "private_chat": persona.user.id,
                }
            )
        return web.json_response(
            {
                "bot": {"name": self.fake.bot.first_name, "username": self.fake.bot.username},
                "language": self.language,
                "panes": list(PANES),
                "personas": personas,
                "chats": chats,
                "regions": self._regions(),
                "clock": self.clock_state(),
                "weather": {"available": True, "reason": ""},
            }
        )

    def _regions(self) -> list[dict[str, Any]]:
        records, _errors = station_import.read_stations(station_import.DEMO_FILE)
        out = []
        for region in REGIONS:
            inside = [r for r in records if region.contains(r.lat, r.lon)]
            lats = [r.lat for r in inside] + [p.lat for p in region.places]
            lons = [r.lon for r in inside] + [p.lon for p in region.places]
            out.append(
                {
                    "key": region.key,
                    "title": region.title,
                    "title_zh": region.title_zh,
                    "bounds": _map_bounds(lats, lons),
                    "places": [
                        {"key": p.key, "title": p.title, "title_zh": p.title_zh, "lat": p.lat, "lon": p.lon}
                        for p in region.places
                    ],
                    "stations": [
                        {"id": r.id, "name": r.name, "name_en": r.name_en, "lat": r.lat, "lon": r.lon} for r in inside
                    ],
                }
            )
        return out

    # -- HTTP: chats ------------------------------------------------------------------------------------------

    def _chat_state(self, request: web.Request) -> ChatState:
        raw = request.match_info["chat_id"]
        try:
            return self.fake.chat(int(raw))
        except (ValueError, KeyError):
            raise web.HTTPNotFound(text='{"error": "no such chat"}', content_type="application/json") from None

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        chat = self._chat_state(request)
        messages = [self._message_json(m) for m in chat.messages if not m.deleted]
        return web.json_response(
            {"chat_id": chat.id, "messages": messages, "keyboard": _reply_keyboard(chat), "clock": self.clock_state()}
        )

    def _message_json(self, message: BotMessage) -> dict[str, Any]:
        tz = self.settings.tz
        sender = self.fake.bot if message.from_bot else self.fake.world.users.get(message.sender_id or 0)
        out: dict[str, Any] = {
            "id": message.message_id,
            "from_bot": message.from_bot,
            "sender_id": message.sender_id,
            "sender": sender.first_name if sender else "",
            "kind": message.kind,
            "time": datetime.fromtimestamp(message.date, tz).strftime("%H:%M"),
            "html": message.html,
            "edited": message.edits > 0,
            "reply_to": message.reply_to_message_id,
            "buttons": [
                [_inline_button_json(button) for button in row if isinstance(button, dict)]
                for row in message.inline_keyboard
            ],
        }
        media = message.media
        if message.kind == "venue" and isinstance(media.get("venue"), dict):
            out["venue"] = {"title": message.title, "address": message.address}
        if message.latitude is not None and message.longitude is not None:
            out["location"] = {"lat": message.latitude, "lon": message.longitude}
        if message.kind == "photo" and isinstance(media.get("photo"), list) and media["photo"]:
            biggest = media["photo"][-1]
            stored = self.fake.file(str(biggest.get("file_id")))
            out["photo"] = {
                "url": f"/api/files/{biggest.get('file_id')}" if stored is not None and stored.data else None,
                "width": biggest.get("width"),
                "height": biggest.get("height"),
            }
        if message.kind == "document" and isinstance(media.get("document"), dict):
            document = media["document"]
            out["document"] = {"name": document.get("file_name") or "file", "url": f"/api/files/{document['file_id']}"}
        if isinstance(media.get("contact"), dict):
            contact = media["contact"]
            out["contact"] = {"name": contact.get("first_name", ""), "phone": contact.get("phone_number", "")}
        if isinstance(media.get("sticker"), dict):
            out["sticker"] = media["sticker"].get("emoji") or "🖼"
        if isinstance(media.get("voice"), dict):
            out["voice"] = {"duration": media["voice"].get("duration", 0)}
        return out

    async def _file(self, request: web.Request) -> web.StreamResponse:
        stored = self.fake.file(request.match_info["file_id"])
        if stored is None or not stored.data:
            raise web.HTTPNotFound(text='{"error": "no such file"}', content_type="application/json")
        mime = stored.mime_type or next(
            (kind for magic, kind in _IMAGE_TYPES if stored.data.startswith(magic)), "application/octet-stream"
        )
        return web.Response(body=stored.data, content_type=mime, headers={"X-Content-Type-Options": "nosniff"})

    async def _action(self, request: web.Request) -> web.StreamResponse:
        """Act as a persona in a chat: text, a reply-keyboard or inline button, a location, a contact, a photo."""
        chat = self._chat_state(request)
        try:
            body = await request.json()
        except ValueError:
            return _error("the body is not JSON")
        if not isinstance(body, dict):
            return _error("the body must be a JSON object")
        persona = self.personas.get(str(body.get("persona")))
        if persona is None:
            return _error("unknown persona")
        if chat.id not in persona.chats:
            return _error(f"{persona.key} is not in this chat", status=403)
        target = None if chat.id == persona.user.id else self.group
        handler = self._ACTIONS.get(str(body.get("type")))
        if handler is None:
            return _error("unknown action type")
        try:
            result = await handler(self, persona, chat, target, body)
        except (AssertionError, ValueError, KeyError, TypeError) as exc:
            return _error(str(exc).split("\n", 1)[0] or "that action is not possible here")
        return web.json_response({"ok": True, **result})

    async def _act_text(
        self, persona: Persona, _chat: ChatState, target: FakeGroup | None, body: dict[str, Any]
    ) -> dict[str, Any]:
        text = body.get("text")
        if not isinstance(text, str) or not text.strip():
            raise ValueError("type something first")
        sent = []
        for part in _split_like_a_client(text.strip()):
            command = _COMMAND.match(part)
            if command:
                sent.append(await persona.user.send_command(f"/{command.group(1)}", command.group(2) or "", target))
            else:
                sent.append(await persona.user.send_text(part, target))
        return {"updates": sent}

    async def _act_reply_button(
        self, persona: Persona, _chat: ChatState, target: FakeGroup | None, body: dict[str, Any]
    ) -> dict[str, Any]:
        location = _coordinates(body["location"]) if body.get("location") is not None else None
        update = await persona.user.tap_reply_button(str(body.get("text")), location=location, chat=target)
        return {"updates": [update]}

    async def _act_inline(
        self, persona: Persona, chat: ChatState, target: FakeGroup | None, body: dict[str, Any]
    ) -> dict[str, Any]:
        message = chat.find(int(body["message_id"]))
        if message is None or message.deleted or not message.from_bot:
            raise ValueError("that message is gone")
        try:
            button = message.inline_keyboard[int(body["row"])][int(body["col"])]
        except (IndexError, TypeError):
            raise ValueError("that button is gone (the message was edited)") from None
        if button.get("url"):
            return {"url": button["url"]}
        if button.get("callback_data") is None:
            raise ValueError("this kind of button is not supported by the demo")
        query_id = await persona.user.send_callback(message.message_id, str(button["callback_data"]), chat=target)
        self._spawn(self._relay_answer(persona, chat.id, query_id))
        return {"query_id": query_id}

    async def _act_location(
        self, persona: Persona, _chat: ChatState, target: FakeGroup | None, body: dict[str, Any]
    ) -> dict[str, Any]:
        lat, lon = _coordinates([body.get("lat"), body.get("lon")])
        return {"updates": [await persona.user.send_location(lat, lon, chat=target)]}

    async def _act_contact(
        self, persona: Persona, _chat: ChatState, target: FakeGroup | None, _body: dict[str, Any]
    ) -> dict[str, Any]:
        phone = persona.user.info.phone_number or persona.spec.phone
        return {"updates": [await persona.user.send_contact(phone, chat=target)]}

    async def _act_photo(
        self, persona: Persona, _chat: ChatState, target: FakeGroup | None, body: dict[str, Any]
    ) -> dict[str, Any]:
        raw = body.get("data")
        if raw is None:
            data = SAMPLE_PHOTO.read_bytes()
        else:
            try:
                data = base64.b64decode(str(raw).split(",", 1)[-1], validate=True)
            except (binascii.Error, ValueError):
                raise ValueError("the picture could not be read") from None
            if len(data) > MAX_PHOTO_BYTES:
                raise ValueError("the picture is larger than 10 MB")
            if image_size(data) is None:
                raise ValueError("only PNG, JPEG, GIF or WebP pictures can be sent as photos")
        caption = body.get("caption")
        caption = caption.strip()[:1024] if isinstance(caption, str) and caption.strip() else None
        return {"updates": [await persona.user.send_photo(data, caption=caption, chat=target)]}

    _ACTIONS: Final[dict[str, Callable[..., Awaitable[dict[str, Any]]]]] = {
        "text": _act_text,
        "reply_button": _act_reply_button,
        "inline": _act_inline,
        "location": _act_location,
        "contact": _act_contact,
        "photo": _act_photo,
    }

    # -- HTTP: controls ---------------------------------------------------------------------------------------

    async def _clock(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await request.json()
        except ValueError:
            return _error("the body is not JSON")
        if not isinstance(body, dict):
            return _error("the body must be a JSON object")
        ran: list[str] = []
        if body.get("reset"):
            await self.reset_clock()
        else:
            minutes = body.get("minutes")
            if not isinstance(minutes, int) or isinstance(minutes, bool) or not 0 < minutes <= MAX_CLOCK_STEP_MINUTES:
                return _error("minutes: a whole number of minutes, forward only, at most a week")
            ran = await self.move_clock(minutes)
        state = self.clock_state()
        self._broadcast({"type": "clock", "clock": state, "ran": ran})
        return web.json_response({"ok": True, "clock": state, "ran": ran})

    async def _weather(self, _request: web.Request) -> web.StreamResponse:
        ran = await self.cold_night()
        return web.json_response({"ok": True, "ran": ran})

    async def cold_night(self) -> list[str]:
        """A −25 °C night (feels like −32 °C) from 20:00 tonight in every area, then a forecast check at once: each
        area opens its cold-weather event and the coordinator gets the draft alert to approve."""
        zone = self.settings.tz
        tonight = self.now().astimezone(zone).replace(hour=20, minute=0, second=0, microsecond=0)
        for area in WEATHER_AREAS:
            self.meteo.set_weather(float(area["lat"]), float(area["lon"]), tonight, 12, **COLD_NIGHT)
        await weather_jobs.check_forecasts(self._bot_runner.app)
        return ["forecast check"]


# -- helpers ----------------------------------------------------------------------------------------------------


def _error(message: str, status: int = 400) -> web.Response:
    return web.json_response({"ok": False, "error": message}, status=status)


def _coordinates(value: Any) -> tuple[float, float]:
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise ValueError("a location is [latitude, longitude]")
    lat, lon = float(value[0]), float(value[1])
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        raise ValueError("latitude or longitude out of range")
    return lat, lon


def _map_bounds(lats: list[float], lons: list[float], aspect: float = 1.5) -> dict[str, float]:
    """A padded box around the points, widened (or heightened) so the drawn map is about `aspect` wide:high."""
    south, north, west, east = min(lats), max(lats), min(lons), max(lons)
    pad = max(north - south, east - west) * 0.06 + 0.002
    south, north, west, east = south - pad, north + pad, west - pad, east + pad
    shrink = math.cos(math.radians((north + south) / 2))  # a degree of longitude is shorter than one of latitude
    width, height = (east - west) * shrink, north - south
    if width < aspect * height:
        extra = (aspect * height / shrink - (east - west)) / 2
        west, east = west - extra, east + extra
    else:
        extra = (width / aspect - height) / 2
        south, north = south - extra, north + extra
    return {"south": south, "north": north, "west": west, "east": east}


def _inline_button_json(button: dict[str, Any]) -> dict[str, Any]:
    if button.get("url"):
        return {"text": button.get("text", ""), "type": "url", "url": button["url"]}
    return {"text": button.get("text", ""), "type": "callback" if "callback_data" in button else "other"}


def _reply_keyboard(chat: ChatState) -> dict[str, Any] | None:
    """The reply keyboard a Telegram client would show under the chat now (the newest one the bot sent)."""
    for message in reversed(chat.messages):
        markup = message.reply_markup if message.from_bot and not message.deleted else None
        if not markup:
            continue
        if "remove_keyboard" in markup:
            return None
        if "keyboard" in markup:
            rows = [
                [
                    {
                        "text": button if isinstance(button, str) else button.get("text", ""),
                        "request_location": isinstance(button, dict) and bool(button.get("request_location")),
                        "request_contact": isinstance(button, dict) and bool(button.get("request_contact")),
                    }
                    for button in row
                ]
                for row in markup["keyboard"]
            ]
            return {"rows": rows, "placeholder": markup.get("input_field_placeholder")}
    return None


def _split_like_a_client(text: str) -> list[str]:
    """Telegram clients send a text longer than 4096 (UTF-16) characters as several messages."""
    if utf16_len(text) <= MAX_TEXT:
        return [text]
    parts: list[str] = []
    current: list[str] = []
    size = 0
    for ch in text:
        width = utf16_len(ch)
        if size + width > MAX_TEXT:
            parts.append("".join(current))
            current, size = [], 0
        current.append(ch)
        size += width
    parts.append("".join(current))
    return parts


async def _serve(port: int, host: str, language: str) -> int:
    demo = Demo(port, host=host, language=language)
    try:
        await demo.run_until_signal()
    except DemoError as exc:
        print(f"waystation demo: {exc}", file=sys.stderr)
        return 1
    return 0


def run_demo(port: int = 8080, *, host: str = "127.0.0.1", language: str = "en") -> int:
    """`waystation demo`: blocks until Ctrl-C (or SIGTERM); returns the exit code."""
    logs.configure("WARNING")
    try:
        return asyncio.run(_serve(port, host, language))
    except KeyboardInterrupt:
        return 130


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bot.sandbox.demo", description="Waystation demo without Telegram")
    parser.add_argument("--port", type=int, default=8080, help="port of the demo page (0: any free port)")
    parser.add_argument("--language", choices=["en", "zh"], default="en", help="the demo people's client language")
    args = parser.parse_args(argv)
    return run_demo(args.port, language=args.language)


if __name__ == "__main__":
    sys.exit(main())
