"""A seeded random driver that fuzzes the bot through the fake Bot API (used by tests/e2e/test_fuzz.py).

Many users act at once, one update at a time each. At every step a user either follows a real path — taps an inline
button or a reply-keyboard button the bot actually showed them, sends a command — so conversations reach their deep
states, or sends junk: texts of 0–10,000 characters (emoji, RTL, zero-width, HTML-like, numbers), commands with junk
arguments, stickers, photos, voice, documents, other people's contacts, locations at extreme coordinates, forwarded
and edited messages, messages in groups, stale and forged callback data, and redeliveries of an update already
handled. Staff of every role take part (and tap the case cards in their team's group).

Every update is traced: the Application's ``process_update`` is wrapped so the Bot API calls made while handling it
(the fake logs every call) and the handler errors it raised are known, and the driver checks at once that a private
message got a reply in that chat, a callback query was answered, a redelivered update did nothing. Each user's texts,
name, contacts and file names carry a token of their own, so a token of one person in another person's chat is a leak.
"""

from __future__ import annotations

import asyncio
import random
import re
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from telegram import Update
from telegram.ext import ConversationHandler

from bot.application import WaystationApplication
from bot.sandbox.fake_telegram import TINY_JPEG, ApiCall, BotMessage, FakeGroup, FakeTelegram, FakeUser
from handlers.errors import failing_handler
from tests.harness import BotHarness

# Methods that put something in front of the person: any of them in their chat answers their message.
REPLY_METHODS = frozenset(
    {
        "sendMessage",
        "sendPhoto",
        "sendDocument",
        "sendLocation",
        "sendVenue",
        "editMessageText",
        "editMessageCaption",
        "editMessageReplyMarkup",
    }
)
MEDIA_KEYS = ("sticker", "photo", "voice", "document", "contact", "location", "forward_origin")
USER_COMMANDS = (
    "start",
    "find",
    "request",
    "status",
    "report",
    "help",
    "subscribe",
    "unsubscribe",
    "language",
    "cancel",
    "forgetme",
)
STAFF_COMMANDS = ("station", "queue", "rota", "teams", "broadcast", "patrol", "stats", "linkteam")
UNKNOWN_COMMANDS = ("foo", "START", "start@other_bot", "a" * 32, "settings", "menu")
EMOJI = ("😀", "🧊", "❄️", "🆘", "👍🏽", "👨‍👩‍👧‍👦", "🇨🇳", "🏳️‍🌈", "🤷‍♀️")
RTL = ("مرحبا بالعالم", "שלום עולם", "\u202eevil\u202c", "\u200fRTL\u200f")
ZERO_WIDTH = ("\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u00ad")
HTML_LIKE = (
    "<b>bold",
    "</i>",
    "<a href='javascript:alert(1)'>x</a>",
    "&amp;",
    "&",
    "<",
    ">",
    "<script>alert(1)</script>",
    "<tg-spoiler>",
    "&#0;",
    "]]>",
    '"quoted"',
    "{name}",
    "%s",
    "{0}",
)
WORDS = (
    "help",
    "food",
    "bed",
    "cold",
    "bridge",
    "Hutang",
    "hutang",
    "湖塘镇",
    "常州火车站",
    "饿了",
    "需要帮助",
    "yes",
    "no",
)
NUMBERS = ("0", "1", "2", "3", "12", "200", "-1", "1e309", "NaN", "٣", "99999999999999999999", "3.5", "２")
LENGTHS = (0, 1, 2, 5, 20, 60, 200, 1000, 4095, 4096, 4097, 10_000)
LENGTH_WEIGHTS = (2, 3, 4, 14, 20, 20, 8, 4, 1, 1, 1, 2)
HUTANG = (31.7035, 119.9719)  # inside the staff team's area
# Coordinates at the edges of the valid range, plus some inside the staff team's area (cards go to its group).
EXTREME_PLACES = (
    (90.0, 180.0),
    (-90.0, -180.0),
    (0.0, 0.0),
    (89.999999, -179.999999),
    (-89.9, 179.9),
    (1e-7, -1e-7),
    (46.61, 125.1),
)
DEEP_LINK_ARGS = (
    "station_1",
    "station_0",
    "station_-1",
    "station_99999999999999999999",
    "station_",
    "station_abc",
    "invite_",
    "invite_deadbeef",
    "invite_" + "x" * 60,
    "report",
    "request",
    "%00",
    "'; DROP TABLE cases; --",
)
FORGED_NUMBERS = ("0", "1", "2", "-1", "99999999999999999999", "2147483648", "²", "٣", "1.5", "", "0x10", " 1")
SWEEP_NUMBERS = ("99999999999999999999", "2147483648", "0", "٣", "-1")
GARBAGE_DATA = (
    "|",
    "||||",
    "cs|claim|",
    "cs|claim|-1",
    "cs|claim|99999999999999999999",
    "cs|claim|abc",
    "cs||1",
    "rs|out|1|",
    "x" * 64,
    "ё" * 32,
    "\x00",
    " ",
    "🆘" * 16,
)


@dataclass
class Window:
    """What happened while the bot handled one delivery of an update: slices of the fake's call log and errors."""

    calls: list[ApiCall]
    errors: list[BaseException]


class Tracer:
    """Wraps the Application's process_update to know, per update id and delivery, its calls and errors."""

    def __init__(self, fake: FakeTelegram, harness: BotHarness) -> None:
        self.fake = fake
        self.harness = harness
        self.runs: dict[int, list[Window]] = {}
        self.defined: set[tuple[str | None, object]] = set()  # (conversation, state) of every conversation
        self.reached: set[tuple[str | None, object]] = set()  # those someone was seen in
        self._changed = asyncio.Condition()

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        original = WaystationApplication.process_update
        tracer = self

        async def traced(app: WaystationApplication, update: object) -> None:
            calls, errors = len(tracer.fake.calls), len(tracer.harness.errors)
            try:
                await original(app, update)
            finally:
                if isinstance(update, Update):
                    window = Window(tracer.fake.calls[calls:], tracer.harness.errors[errors:])
                    tracer.runs.setdefault(update.update_id, []).append(window)
                    if len(tracer.runs) % 5 == 0:
                        tracer.sample_states(app)
                    async with tracer._changed:
                        tracer._changed.notify_all()

        monkeypatch.setattr(WaystationApplication, "process_update", traced)

    def sample_states(self, app: WaystationApplication) -> None:
        """Note the conversation states people are in now (coverage: which states the fuzz reached)."""
        for handlers in app.handlers.values():
            for handler in handlers:
                if isinstance(handler, ConversationHandler):
                    self.defined.update((handler.name, state) for state in handler.states)
                    conversations = handler._conversations  # read-only, for the coverage figure
                    self.reached.update((handler.name, s) for s in conversations.values() if isinstance(s, int))

    async def wait(self, update_id: int, delivery: int = 1, timeout: float = 60.0) -> Window | None:
        """The window of the `delivery`-th handling of the update (None if it did not happen within `timeout`)."""

        def ready() -> bool:
            return len(self.runs.get(update_id, ())) >= delivery

        try:
            async with asyncio.timeout(timeout), self._changed:
                await self._changed.wait_for(ready)
        except TimeoutError:
            return None
        return self.runs[update_id][delivery - 1]


@dataclass
class Actor:
    """A fuzzed person: their fake Telegram account, their marker token, their role and their own random stream."""

    user: FakeUser
    token: str
    role: str  # "none" or a staff role
    rng: random.Random
    groups: list[FakeGroup] = field(default_factory=list)
    updates: list[int] = field(default_factory=list)  # handled update ids this person sent (redelivery candidates)
    focus: int = 0  # steps left of following one journey through

    @property
    def staff(self) -> bool:
        return self.role != "none"


@dataclass
class Finding:
    kind: str  # unanswered, answered_duplicate, handler_error, rejection, lost, leak
    detail: str


@dataclass
class Fuzzer:
    fake: FakeTelegram
    tracer: Tracer
    actors: list[Actor]
    budget: int  # updates to deliver in all
    sent: int = 0
    findings: list[Finding] = field(default_factory=list)
    kinds: Counter[str] = field(default_factory=Counter)
    answered_edits: int = 0
    answered_in_groups: int = 0
    group_messages: int = 0
    callback_pool: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)

    # -- running ---------------------------------------------------------------------------------------------

    async def run(self) -> None:
        await asyncio.gather(*(self._live(actor) for actor in self.actors))
        await self.sweep()

    async def sweep(self) -> None:
        """Every shape of real callback data seen, with its numbers forged (out of range, not ASCII, negative),
        from a staff admin and from a person: each handler's parsing meets every bad id at least once."""
        shapes = sorted({re.sub(r"\d+", "#", data) for data in self.callback_pool if re.search(r"\d", data)})
        senders = [a for a in self.actors if a.role == "admin"][:1] + [a for a in self.actors if not a.staff][:1]
        for actor in senders:
            target = next((m for m in reversed(actor.user.messages) if not m.deleted), None)
            if target is None:
                continue
            for shape in shapes:
                for number in SWEEP_NUMBERS:
                    data = shape.replace("#", number)
                    while len(data.encode()) > 64:
                        data = data[:-1]
                    await self._callback(actor, target, data, None, "forged_sweep")

    async def _live(self, actor: Actor) -> None:
        while self.sent < self.budget:
            self.sent += 1
            if self.sent % 500 == 0:
                print(f"fuzz progress: {self.sent} at {time.monotonic() - self.started:.1f} s", flush=True)
            await self._step(actor)

    async def _step(self, actor: Actor) -> None:
        rng = actor.rng
        if actor.focus > 0:
            actor.focus -= 1
            await self._focused(actor)
            return
        if rng.random() < 0.1:
            actor.focus = rng.randint(10, 40)  # a stretch of following one journey through, to reach deep states
        actions: list[tuple[Callable[[Actor], Awaitable[None]], int]] = [
            (self._tap_inline, 34),
            (self._tap_reply, 12),
            (self._command, 10),
            (self._text, 14),
            (self._media, 12),
            (self._forged_callback, 5),
            (self._edit, 3),
            (self._duplicate, 3),
            (self._in_group, 7 if actor.groups else 0),
        ]
        chosen = rng.choices([a for a, _ in actions], weights=[w for _, w in actions])[0]
        await chosen(actor)

    # -- what a person does ----------------------------------------------------------------------------------

    async def _focused(self, actor: Actor) -> None:
        """Go forward in whatever journey is under way: the newest buttons (not Back or Cancel), plausible answers."""
        rng, user = actor.rng, actor.user
        if actor.staff and actor.groups and rng.random() < 0.3:
            cards = [m for m in actor.groups[0].messages[-6:] if not m.deleted and callback_data(m)]
            if cards:
                card = rng.choice(cards)
                await self._callback(actor, card, rng.choice(forward_data(card)), actor.groups[0], "tap")
                return
        newest = [m for m in user.messages[-2:] if not m.deleted and callback_data(m)]
        if newest and rng.random() < 0.75:
            message = newest[-1]
            self.callback_pool.extend(callback_data(message))
            await self._callback(actor, message, rng.choice(forward_data(message)), None, "tap")
            return
        keyboard = current_reply_keyboard(user.history)
        asks = [b for row in keyboard or [] for b in row if isinstance(b, dict) and len(b) > 1]
        roll = rng.random()
        if asks and roll < 0.4:
            place = (round(HUTANG[0] + rng.uniform(-0.02, 0.02), 6), round(HUTANG[1] + rng.uniform(-0.02, 0.02), 6))
            update_id = await user.tap_reply_button(str(rng.choice(asks)["text"]), location=place)
            await self._expect_reply(actor, update_id, "reply_button")
        elif roll < 0.75:
            answer = rng.choice((f"{actor.token} near the bridge, cold and hungry", "2", "200", "hutang", actor.token))
            update_id = await user.send_text(answer)
            await self._expect_reply(actor, update_id, "text")
        else:
            journeys = ("request", "report", "subscribe", "find", "status")
            staff_journeys = ("queue", "station", "broadcast", "rota", "teams", "patrol", "stats")
            name = rng.choice(journeys + staff_journeys if actor.staff else journeys)
            update_id = await user.send_command(f"/{name}")
            await self._expect_reply(actor, update_id, "command")

    def text(self, actor: Actor) -> str:
        """A junk text of 0–10,000 characters that carries the person's token (when it has room for it)."""
        rng = actor.rng
        length = rng.choices(LENGTHS, weights=LENGTH_WEIGHTS)[0]
        if length > 0 and rng.random() < 0.15:
            return rng.choice(NUMBERS)
        room = length - len(actor.token) if length >= len(actor.token) else length
        pieces: list[str] = []
        size = 0
        while size < room:
            piece = rng.choice(rng.choice((EMOJI, RTL, ZERO_WIDTH, HTML_LIKE, WORDS, NUMBERS, (" ", "\n", "\t"))))
            pieces.append(piece)
            size += len(piece)
        filler = "".join(pieces)[:room]
        if room == length:
            return filler
        at = rng.randint(0, len(filler))
        return filler[:at] + actor.token + filler[at:]

    async def _text(self, actor: Actor) -> None:
        update_id = await actor.user.send_text(self.text(actor))
        await self._expect_reply(actor, update_id, "text")

    async def _command(self, actor: Actor) -> None:
        rng = actor.rng
        pool = USER_COMMANDS + (STAFF_COMMANDS if actor.staff or rng.random() < 0.3 else ()) + UNKNOWN_COMMANDS
        name = rng.choice(pool)
        roll = rng.random()
        if name == "start" and roll < 0.4:
            args = rng.choice(DEEP_LINK_ARGS)
        elif roll < 0.3:
            args = self.text(actor)
        else:
            args = ""
        update_id = await actor.user.send_command(f"/{name}", args.replace("\n", " ").strip())
        await self._expect_reply(actor, update_id, "command")

    async def _media(self, actor: Actor) -> None:
        rng, user, token = actor.rng, actor.user, actor.token
        kind = rng.choice(("sticker", "photo", "voice", "document", "contact", "location", "forward"))
        if kind == "sticker":
            update_id = await user.send_sticker(rng.choice(EMOJI))
        elif kind == "photo":
            caption = self.text(actor)[:1024] if rng.random() < 0.5 else None
            update_id = await user.send_photo(TINY_JPEG, caption=caption or None)
        elif kind == "voice":
            update_id = await user.send_voice(duration=rng.choice((0, 1, 3600)))
        elif kind == "document":
            data, name, mime = rng.choice(
                (
                    (b"%PDF-1.4 fake", f"{token}<id>.pdf", "application/pdf"),
                    (b"not really a jpeg", f"{token}.jpg", "image/jpeg"),
                    (TINY_JPEG, f"{token} passport scan.jpeg", "image/jpeg"),
                    (b"\x00" * 10, f"{token}‮fdp.exe", "application/octet-stream"),
                )
            )
            update_id = await user.send_document(
                data, name, mime, caption=rng.choice((None, token, self.text(actor)[:1024] or None))
            )
        elif kind == "contact":
            other = rng.choice(self.actors)
            own = rng.random() < 0.4
            if own:
                update_id = await user.send_contact(user.info.phone_number or "+15550000000")
            else:
                phone = rng.choice(("+8613800138000", "12345", "+0", "phone", "+1" + "9" * 20))
                who = rng.choice((other.user.id, None, 1))
                update_id = await user.send_contact(phone, first_name=f"Friend {token}", user_id=who)
        elif kind == "location":
            if rng.random() < 0.5:
                lat, lon = rng.choice(EXTREME_PLACES)
            else:  # around the care stations, with six decimals
                lat, lon = round(31.70 + rng.uniform(-0.1, 0.1), 6), round(119.97 + rng.uniform(-0.1, 0.1), 6)
            update_id = await user.send_location(lat, lon)
        else:
            update_id = await user.forward_text(self.text(actor) or token, origin_name=f"Fwd {token}")
        await self._expect_reply(actor, update_id, kind)

    async def _tap_reply(self, actor: Actor) -> None:
        keyboard = current_reply_keyboard(actor.user.history)
        if not keyboard:
            await self._command(actor)
            return
        rng = actor.rng
        label = rng.choice([str(b.get("text")) if isinstance(b, dict) else str(b) for row in keyboard for b in row])
        if rng.random() < 0.5:
            place = (round(31.70 + rng.uniform(-0.05, 0.05), 6), round(119.97 + rng.uniform(-0.05, 0.05), 6))
        else:
            place = rng.choice(EXTREME_PLACES)
        update_id = await actor.user.tap_reply_button(label, location=place)
        await self._expect_reply(actor, update_id, "reply_button")

    async def _tap_inline(self, actor: Actor, chat: FakeGroup | None = None) -> None:
        """Tap a callback button the bot showed, mostly on the newest messages (older ones: stale taps)."""
        rng = actor.rng
        reader: FakeUser | FakeGroup = chat if chat is not None else actor.user
        shown = [m for m in reader.messages if not m.deleted and callback_data(m)]
        if not shown:
            await (self._group_text(actor, chat) if chat is not None else self._command(actor))
            return
        recent = shown[-3:]
        message = rng.choice(recent) if rng.random() < 0.85 else rng.choice(shown)
        data = rng.choice(callback_data(message))
        self.callback_pool.append(data)
        await self._callback(actor, message, data, chat, "tap" if message in recent else "stale_tap")

    async def _forged_callback(self, actor: Actor) -> None:
        rng = actor.rng
        messages = [m for m in actor.user.messages if not m.deleted]
        if not messages:
            await self._command(actor)
            return
        roll = rng.random()
        if self.callback_pool and roll < 0.25:
            real = rng.choice(self.callback_pool)
            data = real[: rng.randint(1, len(real))]  # a prefix of real data
        elif self.callback_pool and roll < 0.4:  # real data with other numbers: out of range, not ASCII, negative
            data = re.sub(r"\d+", lambda _m: rng.choice(FORGED_NUMBERS), rng.choice(self.callback_pool))
        elif self.callback_pool and roll < 0.7:
            data = rng.choice(self.callback_pool)  # someone's real button, maybe another person's
        elif roll < 0.85:
            data = rng.choice(GARBAGE_DATA)
        else:
            data = "".join(rng.choice("|:0123456789abcdefgz-_ä漢") for _ in range(rng.randint(1, 30)))
        while len(data.encode()) > 64:
            data = data[:-1]
        await self._callback(actor, rng.choice(messages), data or "x", None, "forged_callback")

    async def _callback(self, actor: Actor, message: BotMessage, data: str, chat: FakeGroup | None, kind: str) -> None:
        query_id = await actor.user.send_callback(message.message_id, data, chat=chat)
        update_id = self.fake.world.updates.last_update_id
        assert update_id is not None
        self.kinds[kind] += 1
        window = await self._handled(actor, update_id, kind)
        if window is None:
            return
        if not any(
            c.method == "answerCallbackQuery" and c.ok and str(c.params.get("callback_query_id")) == query_id
            for c in window.calls
        ):
            self._finding("unanswered", actor, kind, f"callback data {data!r} on {message.summary()[:160]}")

    async def _edit(self, actor: Actor) -> None:
        mine = [m for m in actor.user.history if not m.from_bot and m.text is not None and not m.deleted]
        if not mine:
            await self._text(actor)
            return
        message = actor.rng.choice(mine[-5:])
        update_id = await actor.user.edit_text(message.message_id, self.text(actor) or actor.token)
        self.kinds["edited"] += 1
        window = await self._handled(actor, update_id, "edited")
        if window is not None and self._replied(window, actor.user.id):
            self.answered_edits += 1  # an edit may be answered or ignored; it must never fail

    async def _duplicate(self, actor: Actor) -> None:
        if not actor.updates:
            await self._text(actor)
            return
        update_id = actor.rng.choice(actor.updates[-10:])
        actor.updates.remove(update_id)  # once: a third delivery adds nothing
        for _attempt in range(100):  # the webhook sender may not have seen the bot's 200 for it yet
            try:
                self.fake.redeliver(update_id)
                break
            except AssertionError:
                await asyncio.sleep(0.02)
        self.kinds["duplicate"] += 1
        window = await self.tracer.wait(update_id, delivery=2)
        if window is None:
            self._finding("lost", actor, "duplicate", f"redelivered update {update_id} was never handled")
            return
        self._errors(actor, "duplicate", window)
        touched = [c for c in window.calls if self._in_chat(c, actor.user.id) or c.method == "answerCallbackQuery"]
        if touched:
            self._finding("answered_duplicate", actor, "duplicate", f"update {update_id} acted on twice: {touched[:2]}")

    async def _in_group(self, actor: Actor) -> None:
        group = actor.rng.choice(actor.groups)
        if actor.rng.random() < 0.5:
            await self._tap_inline(actor, chat=group)
        else:
            await self._group_text(actor, group)

    async def _group_text(self, actor: Actor, group: FakeGroup) -> None:
        rng, user = actor.rng, actor.user
        roll = rng.random()
        if roll < 0.4:
            update_id = await user.send_text(self.text(actor) or actor.token, chat=group)
        elif roll < 0.7:
            name = rng.choice(USER_COMMANDS + STAFF_COMMANDS + UNKNOWN_COMMANDS)
            update_id = await user.send_command(f"/{name}", rng.choice(("", actor.token, "1")), chat=group)
        elif roll < 0.8:
            update_id = await user.send_sticker(chat=group)
        elif roll < 0.9:
            update_id = await user.send_location(*rng.choice(EXTREME_PLACES), chat=group)
        else:
            update_id = await user.forward_text(actor.token, origin_name=f"Fwd {actor.token}", chat=group)
        self.kinds["group_message"] += 1
        self.group_messages += 1
        window = await self._handled(actor, update_id, "group_message")
        if window is not None and any(self._in_chat(c, group.id) for c in window.calls):
            self.answered_in_groups += 1

    # -- checks ----------------------------------------------------------------------------------------------

    async def _expect_reply(self, actor: Actor, update_id: int, kind: str) -> None:
        self.kinds[kind] += 1
        window = await self._handled(actor, update_id, kind)
        if window is not None and not self._replied(window, actor.user.id):
            sent = next((m for m in reversed(actor.user.history) if not m.from_bot), None)
            last = next((m for m in reversed(actor.user.messages) if m.from_bot), None)
            self._finding(
                "unanswered",
                actor,
                kind,
                f"{sent.summary()[:160] if sent else update_id}; last bot message: "
                f"{last.summary()[:200] if last else None}",
            )

    async def _handled(self, actor: Actor, update_id: int, kind: str) -> Window | None:
        window = await self.tracer.wait(update_id)
        if window is None:
            self._finding("lost", actor, kind, f"update {update_id} was never handled")
            return None
        actor.updates.append(update_id)
        self._errors(actor, kind, window)
        for call in window.calls:
            if call.status >= 400 and not call.injected and call.status != 409:
                update = describe(self.fake.world.updates.queued(update_id))
                self._finding("rejection", actor, kind, f"{call.method} {call.description} after {update}")
        return window

    def _errors(self, actor: Actor, kind: str, window: Window) -> None:
        for error in window.errors:
            where = failing_handler(error)
            self._finding("handler_error", actor, kind, f"{where}: {type(error).__name__}: {str(error)[:200]}")

    @staticmethod
    def _in_chat(call: ApiCall, chat_id: int) -> bool:
        return call.ok and call.method in REPLY_METHODS and str(call.params.get("chat_id")) == str(chat_id)

    def _replied(self, window: Window, chat_id: int) -> bool:
        return any(self._in_chat(c, chat_id) for c in window.calls)

    def _finding(self, kind: str, actor: Actor, what: str, detail: str) -> None:
        self.findings.append(Finding(kind, f"{actor.role} {actor.token} {what}: {detail}"))

    def leaks(self) -> list[Finding]:
        """A token of one person in the private chat of another person who is not staff, or in a group without staff
        they are not in. Staff texts reach people legitimately (questions, broadcasts), and staff see cards."""
        people = [a for a in self.actors if not a.staff]
        tokens = {a.token: a for a in people}
        pattern = re.compile("|".join(re.escape(t) for t in tokens))
        found: list[Finding] = []
        for actor in people:
            for message in actor.user.messages:
                if not message.from_bot:
                    continue
                for text in seen_texts(message):
                    for token in set(pattern.findall(text)) - {actor.token}:
                        found.append(
                            Finding("leak", f"{tokens[token].token}'s text in {actor.token}'s chat: {text[:200]!r}")
                        )
        groups = {group.id: group for actor in self.actors for group in actor.groups}
        for group in groups.values():
            members = {a.token for a in self.actors if group in a.groups}
            if any(a.staff for a in self.actors if group in a.groups):
                continue  # a staff group: cards show requests to the staff there
            for message in group.messages:
                for text in seen_texts(message):
                    for token in set(pattern.findall(text)) - members:
                        found.append(Finding("leak", f"{token}'s text in group {group.title!r}: {text[:200]!r}"))
        return found

    def by_kind(self) -> Counter[str]:
        return Counter(f.kind for f in self.findings)


def seen_texts(message: BotMessage) -> list[str]:
    """Everything a person could read on a bot message: its text now and before each edit, and its buttons."""
    return [message.content, *(h for h in message.history if h), *message.button_texts, *callback_data(message)]


def forward_data(message: BotMessage) -> list[str]:
    """The callback data of the buttons that go forward (not Back, Cancel or Edit), or all of them if none does."""
    backward = ("back", "cancel", "◀", "✖", "返回", "取消", "edit", "stop")
    buttons = [b for row in message.inline_keyboard for b in row if b.get("callback_data")]
    forward = [str(b["callback_data"]) for b in buttons if not any(w in str(b.get("text")).lower() for w in backward)]
    return forward or [str(b["callback_data"]) for b in buttons]


def callback_data(message: BotMessage) -> list[str]:
    return [str(b["callback_data"]) for row in message.inline_keyboard for b in row if b.get("callback_data")]


def current_reply_keyboard(messages: list[BotMessage]) -> list[list[Any]] | None:
    """The reply keyboard the client shows: the newest bot message that set or removed one decides."""
    for message in reversed(messages):
        markup = message.reply_markup if message.from_bot else None
        if not markup:
            continue
        if "keyboard" in markup:
            rows = markup["keyboard"]
            return rows if isinstance(rows, list) else None
        if "remove_keyboard" in markup:
            return None
    return None


def describe(update: dict[str, Any] | None) -> str:
    """One line about an update, for a finding: its kind and its text or callback data."""
    if update is None:
        return "?"
    kind = next((k for k in update if k != "update_id"), "?")
    body = update.get(kind) or {}
    if kind == "callback_query":
        return f"callback {body.get('data')!r} on {str((body.get('message') or {}).get('text'))[:80]!r}"
    content = body.get("text") or body.get("caption") or next((k for k in body if k in MEDIA_KEYS), "")
    return f"{kind} in {(body.get('chat') or {}).get('type')}: {str(content)[:80]!r}"
