"""Chaos run: the bot is SIGKILLed at random moments while people use it, and restarted, again and again.

The test process runs the fake Bot API (with random 429s, 5xx and dropped connections) and a scripted population:
people asking for help through every step of the form, people reporting someone in the cold, responders claiming
and resolving cards in the staff group, a coordinator who gets escalations, and a few hundred subscribers who get
a cold-weather broadcast. The bot is a child process (the real Application via `BotRunner`, polling the fake) on
a file SQLite database or PostgreSQL. A killer SIGKILLs it every 0.5–2 s (seeded) and starts the next one at once:
a fork server has imported everything once and forks each new bot process, so a restart takes a fraction of a
second.

Realism: Telegram keeps every update until a getUpdates offset confirms it, and redelivers the unconfirmed ones to
the next poll; the fake does the same. People wait for the bot's answer before their next step (as people do) and
never retry by hand: with at-least-once delivery of updates and the outbox, nothing should need it. Escalation
runs on a clock 30 times faster than real time (the child's `services.clock`), so its chain fires within seconds.

At the end (a final clean restart, a quiet period): every request/report a person completed exists exactly once,
its card is in the staff group exactly once; every claim and resolution reached the requester; every escalation
and broadcast message went out; every outbox item was sent; and no chat holds two identical bot messages (each
person and responder goes through one journey, so no text repeats legitimately), nor an error apology.

    python -m tests.chaos_driver [--kills 200] [--postgres URL] [--seed 1]     (standalone; or tests/e2e/test_chaos.py)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlmodel import select as sqlmodel_select

from bot.database import Database
from bot.sandbox.fake_telegram import BotMessage, FakeGroup, FakeTelegram, FakeUser
from models import staff, weather
from models.cases import Case
from models.outbox import OutboxItem
from models.staff import Role

ROOT = Path(__file__).resolve().parents[1]
SPEED = 30.0  # the child's escalation clock runs this many times faster than real time
CITY = (31.78, 119.95)
AREA = {"key": "city", "name": "Changzhou", "names": {"zh_Hans": "常州"}, "lat": CITY[0], "lon": CITY[1]}
# A duplicate whose first copy went out less than this before a SIGKILL (and the second after it) is counted as the
# documented at-least-once window (see bot/outbox.py, bot/replay.py): the record of a call Telegram accepted was not
# committed yet. Mostly milliseconds to a few hundred; on SQLite a record can wait for the single writer's lock up to
# its busy_timeout (5 s), and 2.4 s was seen on a loaded 2-core machine. The run prints the distribution.
WINDOW = 5.0
STEP_TIMEOUT = 60.0  # a person waits this long for the bot's answer (restarts included) before calling it lost
APOLOGY = "Sorry, something went wrong on our side"
CLOSED = "This case is already closed."
EXPIRED = "This step has expired."


# --- the child: the bot ----------------------------------------------------------------------------------------------


def child_settings(config: dict[str, Any]) -> Any:
    from bot.config import load_settings

    return load_settings(
        None,
        telegram={
            "token": config["token"],
            "api_base_url": config["base_url"],
            "api_base_file_url": config["base_file_url"],
            # Telegram's group and overall limits are not what this run is about (the fake enforces none): with them
            # a broadcast or the staff group's backlog would hold replies back longer than a person waits here.
            "overall_max_rate": 300.0,
            "group_max_per_minute": 600,
        },
        database={"url": config["database"]},
        staff={"alert_chat_ids": [config["group"]]},
        help={"hotline": "0519-12345"},
        escalation={
            # At SPEED 30: the group after 4 s, the coordinator after 8 s, then every 6 s until claimed.
            "chain": [{"after_minutes": 2, "notify": ["group"]}, {"after_minutes": 4, "notify": ["coordinators"]}],
            "repeat_every_minutes": 3,
            "out_of_hours": "continue",
            "check_every_seconds": 0.3,
            "remind_claimer_after_hours": 100.0,
            "release_claim_after_hours": 200.0,
        },
        weather={"areas": [AREA], "mode": "auto", "report_interval_seconds": 1.0},
        logging={"level": "WARNING"},
    )


def run_zygote(raw: str) -> None:
    """A fork server: import everything once, then fork a fresh bot process for each "go" on stdin.

    Importing the bot costs seconds of CPU; 200 restarts on a 2-core machine cannot pay that each time. A forked
    process starts with the modules already loaded (and nothing else: no event loop, connection or thread exists in
    this process), so a restart costs only what `BotRunner.start()` does — as a real restart would, minus imports."""
    from bot import logs, weather_jobs
    from bot.application import WaystationApplication
    from bot.runner import BotRunner

    config = json.loads(raw)
    epoch = float(config["epoch"])

    def fast_clock() -> datetime:
        return datetime.fromtimestamp(epoch + (time.time() - epoch) * SPEED, UTC)

    def configure(app: WaystationApplication) -> None:
        app.services.clock = fast_clock  # before any update or escalation pass can read the clock

    logs.configure(config.get("level", "WARNING"))
    weather_jobs.STARTUP_DELAY = 10**6  # no forecast fetches: the broadcast is made by the parent
    settings = child_settings(config)

    async def bot() -> None:
        runner = BotRunner(settings, poll_timeout=1, configure=configure)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await runner.start()
        print(f"ready {os.getpid()}", flush=True)
        await stop.wait()
        await runner.stop()

    def reap(_signum: int, _frame: Any) -> None:
        with contextlib.suppress(ChildProcessError):
            while os.waitpid(-1, os.WNOHANG)[0] > 0:
                pass

    signal.signal(signal.SIGCHLD, reap)
    print("loaded", flush=True)
    for line in sys.stdin:
        if line.strip() != "go":
            continue
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            code = 0
            try:
                asyncio.run(bot())
            except BaseException:
                traceback.print_exc()
                code = 1
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        print(f"forked {pid}", flush=True)


class Zygote:
    """The fork server process, and the bot process it forked last."""

    def __init__(self, config: dict[str, Any], log: Any) -> None:
        env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}  # no threads before fork()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.chaos_driver", "--child", json.dumps(config)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            cwd=ROOT,
            env=env,
        )
        self.pid: int | None = None

    async def line(self, timeout: float = 60.0) -> str:
        assert self.process.stdout is not None
        async with asyncio.timeout(timeout):
            return (await asyncio.to_thread(self.process.stdout.readline)).strip()

    async def loaded(self) -> None:
        if (line := await self.line()) != "loaded":
            raise RuntimeError(f"the bot did not load: {line!r} (exit {self.process.poll()})")

    async def go(self) -> None:
        """Fork a bot and wait until it polls."""
        assert self.process.stdin is not None
        self.process.stdin.write("go\n")
        self.process.stdin.flush()
        while True:
            line = await self.line()
            if line.startswith("forked "):
                self.pid = int(line.split()[1])
            elif line.startswith("ready "):
                return
            elif not line and not self.alive:
                raise RuntimeError(f"the bot did not start (its process {self.pid} ended)")
            elif not line:
                raise RuntimeError("the fork server ended")

    @property
    def alive(self) -> bool:
        """The last forked bot is running (not exited, not a zombie)."""
        if self.pid is None:
            return False
        try:
            state = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):  # gone (reading /proc of a process that just ended can fail either way)
            return False
        return state not in ("Z", "X")

    async def kill(self, sig: int = signal.SIGKILL, timeout: float = 30.0) -> None:
        """Signal the bot process (by its id: it is ours) and wait until it is gone."""
        if self.pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, sig)
        deadline = time.monotonic() + timeout
        while self.alive and time.monotonic() < deadline:  # noqa: ASYNC110 - a process, not an event: poll /proc
            await asyncio.sleep(0.01)

    async def close(self) -> None:
        if self.alive:
            await self.kill()
        if self.process.poll() is None:
            assert self.process.stdin is not None
            self.process.stdin.close()
            await asyncio.to_thread(self.process.wait, 30)


# --- the parent: people, the killer, the checks ----------------------------------------------------------------------


class Lost(AssertionError):
    """A person waited STEP_TIMEOUT for an answer that never came."""


def bot_messages(reader: FakeUser | FakeGroup) -> list[BotMessage]:
    return [m for m in reader.chat.messages if m.from_bot]


async def answer(
    reader: FakeUser | FakeGroup,
    since: int,
    want: Callable[[BotMessage], bool],
    what: str,
    timeout: float = STEP_TIMEOUT,
) -> BotMessage:
    """The first bot message from index `since` on (of the chat's bot messages) that `want` accepts."""
    deadline = time.monotonic() + timeout
    while True:
        found = next((m for m in bot_messages(reader)[since:] if want(m)), None)
        if found is not None:
            return found
        if time.monotonic() > deadline:
            shown = [m.content[:60] for m in bot_messages(reader)[since:]]
            raise Lost(f"{reader!r}: no answer {what!r} after {timeout:.0f} s; got {shown}")
        await asyncio.sleep(0.05)


def containing(part: str) -> Callable[[BotMessage], bool]:
    return lambda m: part in m.content


async def step(
    user: FakeUser, act: Callable[[], Awaitable[Any]], part: str, *, reader: FakeUser | FakeGroup | None = None
) -> BotMessage:
    """Do something and wait for the bot message containing `part`."""
    reader = reader or user
    since = len(bot_messages(reader))
    await act()
    return await answer(reader, since, containing(part), part)


async def edited(message: BotMessage, want: Callable[[BotMessage], bool], what: str) -> None:
    deadline = time.monotonic() + STEP_TIMEOUT
    while not want(message):
        if time.monotonic() > deadline:
            raise Lost(f"message {message.message_id}: never became {what!r}; it is {message.content[:80]!r}")
        await asyncio.sleep(0.05)


@dataclass
class World:
    fake: FakeTelegram
    group: FakeGroup
    coordinator: FakeUser
    rng: random.Random
    url: str
    requests: dict[int, str] = field(default_factory=dict)  # requester id → reference the person was given
    reports: dict[int, str] = field(default_factory=dict)  # reporter id → reference
    claimed: dict[str, int] = field(default_factory=dict)  # reference → responder id
    resolved: set[str] = field(default_factory=set)
    going: set[str] = field(default_factory=set)
    handled: set[str] = field(default_factory=set)  # references a responder took
    responders: list[FakeUser] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    journeys: Counter[str] = field(default_factory=Counter)
    delivered_at: dict[tuple[int, int], float] = field(default_factory=dict)  # (chat, message id) → monotonic time
    kill_times: list[float] = field(default_factory=list)

    def responder(self) -> FakeUser:
        """A fresh responder for each case: one journey per chat, so no text repeats there legitimately."""
        user = self.fake.user(f"Responder {len(self.responders)}")
        self.group.add_member(user)
        self.responders.append(user)
        return user


REFERENCE = re.compile(r"(WS-\d{4}-\d{6})")


async def ask_for_help(world: World, user: FakeUser) -> None:
    """Journey 2, every step, with a unique description (so duplicates are recognisable)."""
    await step(user, lambda: user.send_command("/request"), "is anyone in danger")
    await step(user, lambda: user.tap_inline("No"), "Are you under 18?")
    kinds = await step(user, lambda: user.tap_inline("No"), "What help do you need?")
    await user.tap_inline("🍲 Food", message=kinds)
    await edited(kinds, lambda m: "✅ 🍲 Food" in m.button_texts, "food ticked")
    await step(user, lambda: user.tap_inline("Next ▶", message=kinds), "In a few words")
    await step(user, lambda: user.send_text(f"Cold and hungry, person {user.id}"), "Where are you?")
    await step(user, lambda: user.tap_reply_button("⏭ Skip"), "How can staff reach you?")
    await step(user, lambda: user.tap_reply_button("💬 Telegram is enough"), "Optional: photos or files")
    await step(user, lambda: user.tap_inline("⏭ Skip"), "Before you send")
    await step(user, lambda: user.tap_inline("✅ I agree"), "Please check your request")
    done = await step(user, lambda: user.tap_inline("📨 Submit"), "Reference: ")
    match = REFERENCE.search(done.content)
    assert match, done.content
    world.requests[user.id] = match.group(1)


async def report_someone(world: World, user: FakeUser) -> None:
    """Journey 5 with a location pin and the fewest optional steps."""
    triage = await step(user, lambda: user.send_command("/report"), "is this an emergency")
    await step(user, lambda: user.tap_inline("No, not an emergency", message=triage), "Where is the person?")
    lat, lon = CITY[0] + world.rng.uniform(-0.05, 0.05), CITY[1] + world.rng.uniform(-0.05, 0.05)
    await step(user, lambda: user.send_location(lat, lon), "Now describe the spot")
    await step(user, lambda: user.send_text(f"Under the bridge, east side, {user.id}"), "When did you see them?")
    await step(user, lambda: user.tap_inline("Within the last hour"), "How many people?")
    await step(user, lambda: user.tap_inline("1"), "Describe them briefly")
    await step(user, lambda: user.send_text(f"Grey coat, shaking, report {user.id}"), "respect their dignity")
    await step(user, lambda: user.tap_inline("⏭ Skip"), "May outreach staff contact you")
    await step(user, lambda: user.tap_inline("🙈 No, keep me anonymous"), "Do you want to hear how it ends?")
    await step(user, lambda: user.tap_inline("No, thanks"), "Please check your report")
    done = await step(user, lambda: user.tap_inline("📨 Send the report"), "Reference: ")
    match = REFERENCE.search(done.content)
    assert match, done.content
    world.reports[user.id] = match.group(1)


async def handle_card(world: World, card: BotMessage, reference: str) -> None:
    """A responder takes a new card after a while (long enough, sometimes, for escalations), claims and resolves it
    (a help request) or says they are going (a report)."""
    await asyncio.sleep(world.rng.uniform(1.0, 20.0))
    responder = world.responder()
    db = Database(world.url)  # made staff first, as `waystation staff add` would
    try:
        async with db.session() as session:
            await staff.add(session, responder.id, responder.first_name, Role.RESPONDER)
    finally:
        await db.dispose()
    if "🚶 Going" in card.button_texts:
        await responder.tap_inline("🚶 Going", message=card, chat=world.group)
        await card_becomes(world, reference, lambda m: "🚶 Going" not in m.button_texts, "someone going")
        world.going.add(reference)
        return
    await responder.tap_inline("✋ Claim", message=card, chat=world.group)
    card = await card_becomes(world, reference, lambda m: "✋ Claim" not in m.button_texts, "claimed")
    world.claimed[reference] = responder.id
    reasons = await step(
        responder,
        lambda: responder.tap_inline("✅ Resolve", message=card, chat=world.group),
        "closing reason",
    )
    label = next(b for b in reasons.button_texts if b.lower() == "no help wanted")
    await step(responder, lambda: responder.tap_inline(label, message=reasons), "Add a closing note")
    await step(responder, lambda: responder.tap_inline("⏭ Skip"), "is resolved")
    world.resolved.add(reference)


async def card_becomes(world: World, reference: str, want: Callable[[BotMessage], bool], what: str) -> BotMessage:
    """The card of `reference` once it shows `what`. A card sent again after a kill (the at-least-once window) is a
    second copy, and the bot edits the copy it recorded: the one the responder tapped may stay as it was."""
    deadline = time.monotonic() + STEP_TIMEOUT
    while True:
        found = next((m for m in bot_messages(world.group) if is_card_of(m, reference) and want(m)), None)
        if found is not None:
            return found
        if time.monotonic() > deadline:
            raise Lost(f"the card of {reference} never became {what!r}")
        await asyncio.sleep(0.05)


def is_card(message: BotMessage) -> str | None:
    """The reference of a new-case card in the staff group (not an escalation reminder)."""
    if "has waited" in message.content:
        return None
    match = REFERENCE.search(message.content.split("\n", 1)[0])
    return (
        match.group(1) if match and ("✋ Claim" in message.button_texts or "🚶 Going" in message.button_texts) else None
    )


async def dispatcher(world: World, tasks: set[asyncio.Task[None]], stop: asyncio.Event) -> None:
    """Responders watch the staff group: each new card is taken by one of them."""
    while not stop.is_set():
        for message in bot_messages(world.group):
            reference = is_card(message)
            if reference is not None and reference not in world.handled:  # a card sent twice is taken once
                world.handled.add(reference)
                spawn(world, tasks, f"card {reference}", handle_card(world, message, reference))
        await asyncio.sleep(0.1)


def spawn(world: World, tasks: set[asyncio.Task[None]], name: str, work: Awaitable[None]) -> None:
    async def guarded() -> None:
        try:
            await work
            world.journeys[name.split()[0]] += 1
        except Exception as exc:  # a lost answer, an unexpected screen: the run fails with it
            world.failures.append(f"{name}: {type(exc).__name__}: {exc}")
        except asyncio.CancelledError:
            world.failures.append(f"{name}: still under way at the end")
            raise

    task = asyncio.create_task(guarded(), name=name)
    tasks.add(task)
    task.add_done_callback(tasks.discard)


async def population(world: World, tasks: set[asyncio.Task[None]], stop: asyncio.Event) -> None:
    """Keep a few people asking for help and reporting at any moment, each a new person with one journey."""
    index = 0
    while not stop.is_set():
        running = Counter(t.get_name().split()[0] for t in tasks)
        if running["request"] < 6:
            index += 1
            user = world.fake.user(f"Person {index}")
            spawn(world, tasks, f"request {user.id}", ask_for_help(world, user))
        elif running["report"] < 2:
            index += 1
            user = world.fake.user(f"Reporter {index}")
            spawn(world, tasks, f"report {user.id}", report_someone(world, user))
        else:
            await asyncio.sleep(0.2)
            continue
        await asyncio.sleep(world.rng.uniform(0.0, 0.5))


async def prepare(url: str, world: World, subscribers: list[FakeUser]) -> None:
    """Schema, the coordinator, and the cold-weather subscribers (written directly, as the bench does)."""
    db = Database(url)
    await db.upgrade()
    async with db.session() as session:
        await staff.add(session, world.coordinator.id, "Coordinator", Role.COORDINATOR)
        for i, user in enumerate(subscribers):
            session.add(
                weather.Subscription(
                    chat_id=user.id,
                    language="en",
                    area_key="city",
                    lat=CITY[0] + (i % 17) * 0.003,
                    lon=CITY[1] + (i % 13) * 0.003,
                    cold_alerts=True,
                    announcements=False,
                    active=True,
                )
            )
        await session.commit()
    await db.dispose()


async def start_broadcast(url: str, marker: str) -> None:
    """A cold night ahead and its alert, ready to send (what auto mode makes of a forecast)."""
    db = Database(url)
    starts = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(hours=2)
    async with db.session() as session:
        event = weather.ColdEvent(
            area_key="city",
            open_key=None,
            starts_at=starts,
            ends_at=starts + timedelta(hours=9),
            reasons=["temperature"],
            min_temperature_c=-18.0,
            min_apparent_c=-24.0,
            max_wind_kmh=20.0,
        )
        session.add(event)
        await session.flush()
        await weather.create_broadcast(
            session,
            weather.Broadcast(
                kind="alert", event_id=event.id, area_keys=["city"], text=marker, urgent=True, status="sending"
            ),
        )
        await session.commit()
    await db.dispose()


@dataclass
class Result:
    kills: int = 0
    crashes: int = 0  # children that died without being killed
    updates: int = 0
    messages: int = 0
    duplicates: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0
    journeys: Counter[str] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)  # ERROR lines of the bot's logs
    restart_seconds: list[float] = field(default_factory=list)  # from a kill to the next bot polling
    duplicate_gaps: list[float] = field(default_factory=list)  # for each duplicate: its first copy → the next kill

    def summary(self) -> str:
        return f"chaos: {self.kills} kills survived, {self.updates} updates, {self.messages} messages checked"


async def run_chaos(
    url: str, *, kills: int = 200, seed: int = 1, subscribers: int = 300, fault_rate: float = 0.02
) -> Result:
    rng = random.Random(seed)
    result = Result()
    started = time.monotonic()
    async with FakeTelegram() as fake:
        world = World(fake, fake.group("Care station staff"), fake.user("Cora Coordinator"), rng, url)
        subs = [fake.user(f"Subscriber {i}") for i in range(subscribers)]
        await prepare(url, world, subs)
        config = {
            "token": fake.token,
            "base_url": fake.base_url,
            "base_file_url": fake.base_file_url,
            "database": url,
            "group": world.group.id,
            "epoch": time.time(),
            "level": os.environ.get("CHAOS_LEVEL", "WARNING"),
        }
        fake.set_fault_rate(fault_rate, seed=seed)
        counted: dict[int, int] = {}

        def on_change(chat_id: int) -> None:  # when each bot message appeared, to relate duplicates to the kills
            messages = fake.chat(chat_id).messages
            for message in messages[counted.get(chat_id, 0) :]:
                if message.from_bot:
                    world.delivered_at[(chat_id, message.message_id)] = time.monotonic()
            counted[chat_id] = len(messages)

        fake.add_listener(on_change)
        markers = [f"Cold alert chaos-{seed}-{n}" for n in (1, 2)]
        tasks: set[asyncio.Task[None]] = set()
        stop = asyncio.Event()
        keep = os.environ.get("CHAOS_LOG")  # a path: keep the bot's log there (for debugging a failed run)
        opened = open(keep, "w+") if keep else tempfile.NamedTemporaryFile("w+", prefix="chaos-bot-", suffix=".log")  # noqa: ASYNC230,SIM115
        with opened as log:
            bots = Zygote(config, log)
            await bots.loaded()
            await bots.go()
            background = [
                asyncio.create_task(population(world, tasks, stop)),
                asyncio.create_task(dispatcher(world, tasks, stop)),
            ]
            try:
                while result.kills < kills:
                    await asyncio.sleep(rng.uniform(0.5, 1.5))
                    if not bots.alive:
                        result.crashes += 1
                    await bots.kill()
                    world.kill_times.append(time.monotonic())
                    result.kills += 1
                    if result.kills in (kills // 4, kills * 2 // 3):
                        await start_broadcast(url, markers[0 if result.kills == kills // 4 else 1])
                    down = time.monotonic()
                    await bots.go()
                    result.restart_seconds.append(time.monotonic() - down)
                    if world.failures:
                        break
                # The end: no new journeys; those under way finish with the bot up (faults continue), then a clean
                # stop, a final restart and a quiet period for late duplicates.
                stop.set()
                deadline = time.monotonic() + 120
                while tasks and time.monotonic() < deadline:  # noqa: ASYNC110
                    await asyncio.sleep(0.2)
                for task in list(tasks):  # still waiting after two minutes: lost (their failure is recorded)
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                fake.set_fault_rate(0.0)
                await bots.kill(signal.SIGTERM)
                await bots.go()
                await settle(url, world)
                await bots.kill(signal.SIGTERM)
            finally:
                stop.set()
                for task in [*background, *tasks]:
                    task.cancel()
                for outcome in await asyncio.gather(*background, *tasks, return_exceptions=True):
                    if isinstance(outcome, Exception):
                        world.failures.append(f"the scenario itself failed: {outcome!r}")
                await bots.close()
                log.seek(0)
                # PTB's Updater logs a failed getUpdates (an injected fault) at ERROR and polls again: not ours.
                result.errors = [
                    line.rstrip() for line in log if " ERROR " in line and "telegram.ext.Updater" not in line
                ]
        result.problems += world.failures
        await check(url, world, subs, markers, result)
        result.journeys = world.journeys
        # Every update people caused: their messages (texts, locations, commands) and button taps.
        chats = fake.world.chats.values()
        result.updates = sum(not m.from_bot for c in chats for m in c.messages) + len(fake.world.callbacks)
        result.faults = Counter(c.description or "" for c in fake.calls if c.injected)
    result.seconds = time.monotonic() - started
    return result


async def settle(url: str, world: World, timeout: float = 60.0) -> None:
    """Wait until the outbox has nothing left to send, then a little longer for anything late."""
    db = Database(url)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            async with db.session() as session:
                connection = await session.connection()
                table = OutboxItem.__table__  # type: ignore[attr-defined]
                left = (
                    await connection.execute(
                        select(func.count()).select_from(table).where(table.c.status.in_(("pending", "sending")))
                    )
                ).scalar_one()
                running = (
                    await connection.execute(
                        select(func.count()).select_from(weather.Broadcast).where(weather.Broadcast.status == "sending")  # type: ignore[arg-type]
                    )
                ).scalar_one()
            if left == 0 and running == 0:
                break
            await asyncio.sleep(0.5)
        await asyncio.sleep(3.0)
    finally:
        await db.dispose()


async def check(url: str, world: World, subs: list[FakeUser], markers: list[str], result: Result) -> None:
    fake = world.fake
    problems = result.problems
    db = Database(url)
    try:
        async with db.session() as session:
            all_cases = list((await session.exec(sqlmodel_select(Case))).all())
            items = list((await session.exec(sqlmodel_select(OutboxItem))).all())
    finally:
        await db.dispose()
    by_reference = Counter(c.reference for c in all_cases)
    given = {**{u: r for u, r in world.requests.items()}, **{u: r for u, r in world.reports.items()}}
    for user_id, reference in given.items():
        if by_reference[reference] != 1:
            problems.append(f"{reference} (given to {user_id}) is in the database {by_reference[reference]} times")
    extra = set(by_reference) - set(given.values())
    if extra:
        problems.append(f"{len(extra)} case(s) nobody was given a reference for: {sorted(str(r) for r in extra)[:5]}")
    if len(all_cases) != len(by_reference):
        problems.append(f"{len(all_cases) - len(by_reference)} duplicate case row(s)")
    requesters = Counter(c.requester_id for c in all_cases if c.requester_id in world.requests)
    for user_id, count in requesters.items():
        if count != 1:
            problems.append(f"requester {user_id} has {count} cases")

    # Copies of one message are counted (and judged) as duplicates below; here: is each thing there at all.
    group = bot_messages(world.group)
    for reference in given.values():
        if not any(is_card_of(m, reference) for m in group):
            problems.append(f"{reference}: no card in the staff group")

    for user_id, reference in world.requests.items():
        chat = fake.chat(user_id)
        texts = {m.content for m in chat.messages if m.from_bot and reference in m.content}
        wanted = 1 + (reference in world.claimed) + (reference in world.resolved)  # confirmation, claimed, resolved
        if len(texts) != wanted:
            problems.append(f"requester of {reference}: {len(texts)} message(s) about it, expected {wanted}")

    for marker in markers:
        missing = [u.id for u in subs if sum(marker in m.content for m in bot_messages(u)) == 0]
        if missing:
            problems.append(f"broadcast {marker!r}: {len(missing)} subscriber(s) never got it")

    for item in items:
        if item.status not in ("sent", "superseded"):
            problems.append(
                f"outbox item {item.id} {item.method} to {item.chat_id} ({item.dedupe_key}) not sent: {item.status}, "
                f"{item.attempts} attempt(s), {item.last_error}, next at {item.next_attempt_at}"
            )
    for item in items:
        if item.status == "sent" and item.method == "sendMessage" and item.telegram_message_id is not None:
            message = fake.chat(item.chat_id).find(item.telegram_message_id)
            if message is None or not message.from_bot:
                problems.append(
                    f"outbox item {item.id} recorded sent as message {item.telegram_message_id}: not in the chat"
                )

    for chat in fake.world.chats.values():
        contents = Counter(m.content for m in chat.messages if m.from_bot)
        result.messages += sum(contents.values())
        for text, count in contents.items():
            if count > 1:
                copies = [m for m in chat.messages if m.from_bot and m.content == text]
                times = [world.delivered_at.get((chat.id, m.message_id), 0.0) for m in copies]
                kill = next((k for k in world.kill_times if k >= times[0]), None)
                gap = f"{(kill - times[0]) * 1000:.0f} ms before a kill" if kill is not None else "no kill after it"
                line = f"chat {chat.id}: {count}× {text[:60]!r} (first sent {gap})"
                # The at-least-once window: Telegram accepted the first copy in the last moments before a SIGKILL,
                # which came before its record was committed; the copy after the restart is the resend. Anything
                # else (two copies within one run, or long before the kill) is a bug.
                if kill is not None and all(explained_by_kill(world.kill_times, a, b) for a, b in pairwise(times)):
                    result.duplicates.append(line)
                    result.duplicate_gaps.append(kill - times[0])
                else:
                    problems.append(f"duplicate not explained by a kill: {line}")
            if APOLOGY in text or text.startswith(CLOSED) or text.startswith(EXPIRED):
                problems.append(f"chat {chat.id}: {count}× {text[:80]!r}")


def explained_by_kill(kills: list[float], first: float, second: float) -> bool:
    """A copy sent less than WINDOW before a kill, and the next copy after that kill."""
    kill = next((k for k in kills if k >= first), None)
    return kill is not None and kill - first < WINDOW and second > kill


def is_card_of(message: BotMessage, reference: str) -> bool:
    first = message.content.split("\n", 1)[0]
    return reference in first and "has waited" not in message.content


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--postgres", default="")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        run_zygote(args.child)
        return
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite+aiosqlite:///{tmp}/chaos.db"
        if args.postgres:
            url = args.postgres.replace("postgresql://", "postgresql+asyncpg://", 1)
        result = asyncio.run(run_chaos(url, kills=args.kills, seed=args.seed))
    print(f"{result.seconds:.0f} s; journeys {dict(result.journeys)}; faults {dict(result.faults)}")
    restarts = sorted(result.restart_seconds) or [0.0]
    print(f"crashes: {result.crashes}; restart median {restarts[len(restarts) // 2]:.2f} s, max {restarts[-1]:.2f} s")
    for line in result.errors[:40]:
        print("bot log:", line)
    for line in result.problems[:40]:
        print("PROBLEM:", line)
    for line in result.duplicates[:40]:
        print("window duplicate:", line)
    print(result.summary())
    print(f"{len(result.duplicates)} duplicate(s), all from the at-least-once window" if not result.problems else "")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
