"""An in-process fake of the Telegram Bot API, plus a client API that lets tests act as Telegram users.

Why a fake server rather than mocks: end-to-end tests run the real python-telegram-bot ``Application``
(polling and webhook mode) over real HTTP on 127.0.0.1. That exercises PTB's request encoding, its JSON
parsing of every response and its error mapping, and the fake enforces Telegram's rules (HTML markup,
length limits, keyboard shapes, "message is not modified", blocked users, flood control...) with
Telegram's own error descriptions, so a bot bug fails a test here instead of failing in production.

Layout of this module, from the bottom up:

* records (``BotMessage``, ``ApiCall``, ``StoredFile``...) and the shared in-memory ``World``;
* rule checkers (reply markup, text formatting), ``FloodControl`` and ``FaultInjector``;
* ``UpdateQueue`` (getUpdates semantics) and ``WebhookSender`` (webhook delivery);
* ``BotApi``: one handler per Bot API method;
* ``FakeTelegram``: the aiohttp server, request log and factory for ``FakeUser`` / ``FakeGroup``.

Everything runs on the event loop of the test, next to the bot under test; no threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import itertools
import json
import logging
import mimetypes
import random
import re
import struct
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from enum import Enum
from types import TracebackType
from typing import Any, Final, Literal, TypeVar

import aiohttp
from aiohttp import web

from bot.sandbox.telegram_html import HtmlParseError, parse_html, to_html, utf16_len

__all__ = [
    "TINY_JPEG",
    "ApiCall",
    "ApiError",
    "BotMessage",
    "CallbackQueryRecord",
    "ChatState",
    "FakeGroup",
    "FakeTelegram",
    "FakeUser",
    "StoredFile",
    "UploadedFile",
    "UserInfo",
    "WebhookDelivery",
]

log = logging.getLogger(__name__)

# Every personal value a test user sends (names, usernames, phone numbers, typed texts and captions, locations) is
# passed to these listeners as (kind, value): tests/log_scan.py checks that none of them reaches a log line.
personal_data_listeners: list[Callable[[str, object], None]] = []


def _note_personal(kind: str, value: object) -> None:
    if value is None or value == "":
        return
    for listener in personal_data_listeners:
        listener(kind, value)


JsonDict = dict[str, Any]
T = TypeVar("T")

MAX_TEXT_LENGTH: Final = 4096
MAX_CAPTION_LENGTH: Final = 1024
MAX_CALLBACK_DATA_BYTES: Final = 64
MAX_INLINE_BUTTONS: Final = 100
MAX_CALLBACK_ANSWER_LENGTH: Final = 200
MAX_DOWNLOAD_BYTES: Final = 20 * 1024 * 1024
MESSAGE_EDIT_WINDOW: Final = 48 * 3600

NOT_MODIFIED: Final = (
    "message is not modified: specified new message content and reply markup are exactly the same as a "
    "current content and reply markup of the message"
)
QUERY_TOO_OLD: Final = "query is too old and response timeout expired or query ID is invalid"
MARKUP_ERROR: Final = "can't parse reply keyboard markup JSON object"
WEBHOOK_CONFLICT: Final = (
    "Conflict: can't use getUpdates method while webhook is active; use deleteWebhook to delete the webhook first"
)
POLL_CONFLICT: Final = (
    "Conflict: terminated by other getUpdates request; make sure that only one bot instance is running"
)

# Update types delivered when allowed_updates is empty or was never given (Telegram's default set).
DEFAULT_UPDATE_TYPES: Final = frozenset(
    {
        "message",
        "edited_message",
        "channel_post",
        "edited_channel_post",
        "business_connection",
        "business_message",
        "edited_business_message",
        "deleted_business_messages",
        "inline_query",
        "chosen_inline_result",
        "callback_query",
        "shipping_query",
        "pre_checkout_query",
        "purchased_paid_media",
        "poll",
        "poll_answer",
        "my_chat_member",
        "chat_join_request",
        "chat_boost",
        "removed_chat_boost",
    }
)
# Form fields that PTB sends as JSON-encoded strings.
JSON_FIELDS: Final = frozenset(
    {
        "reply_markup",
        "entities",
        "caption_entities",
        "commands",
        "scope",
        "allowed_updates",
        "menu_button",
        "link_preview_options",
        "reply_parameters",
        "media",
        "results",
        "permissions",
    }
)
CHAT_ACTIONS: Final = frozenset(
    {
        "typing",
        "upload_photo",
        "record_video",
        "upload_video",
        "record_voice",
        "upload_voice",
        "upload_document",
        "choose_sticker",
        "find_location",
        "record_video_note",
        "upload_video_note",
    }
)
# Methods that count towards flood limits: the ones that put or change content in a chat.
FLOOD_METHODS: Final = frozenset(
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
INLINE_BUTTON_ACTIONS: Final = (
    "callback_data",
    "url",
    "login_url",
    "switch_inline_query",
    "switch_inline_query_current_chat",
    "switch_inline_query_chosen_chat",
    "copy_text",
    "callback_game",
    "pay",
    "web_app",
)
KEYBOARD_BUTTON_REQUESTS: Final = (
    "request_contact",
    "request_location",
    "request_poll",
    "request_users",
    "request_chat",
    "web_app",
)

# A valid 2x2 JPEG: the default picture a fake user sends.
TINY_JPEG: Final = bytes.fromhex(
    "ffd8ffe000104a46494600010100000100010000ffdb004300100b0c0e0c0a100e0d0e1211101318281a181616183123251d"
    "283a333d3c3933383740485c4e404457453738506d51575f626768673e4d71797064785c656763ffdb004301111212181518"
    "2f1a1a2f63423842636363636363636363636363636363636363636363636363636363636363636363636363636363636363"
    "6363636363636363ffc00011080002000203012200021101031101ffc4001f00000105010101010101000000000000000001"
    "02030405060708090a0bffc400b5100002010303020403050504040000017d01020300041105122131410613516107227114"
    "328191a1082342b1c11552d1f02433627282090a161718191a25262728292a3435363738393a434445464748494a53545556"
    "5758595a636465666768696a737475767778797a838485868788898a92939495969798999aa2a3a4a5a6a7a8a9aab2b3b4b5"
    "b6b7b8b9bac2c3c4c5c6c7c8c9cad2d3d4d5d6d7d8d9dae1e2e3e4e5e6e7e8e9eaf1f2f3f4f5f6f7f8f9faffc4001f010003"
    "0101010101010101010000000000000102030405060708090a0bffc400b51100020102040403040705040400010277000102"
    "031104052131061241510761711322328108144291a1b1c109233352f0156272d10a162434e125f11718191a262728292a35"
    "363738393a434445464748494a535455565758595a636465666768696a737475767778797a82838485868788898a92939495"
    "969798999aa2a3a4a5a6a7a8a9aab2b3b4b5b6b7b8b9bac2c3c4c5c6c7c8c9cad2d3d4d5d6d7d8d9dae2e3e4e5e6e7e8e9ea"
    "f2f3f4f5f6f7f8f9faffda000c03010002110311003f00c7a28a2b84fa83ffd9"
)


# =====================================================================================================
# Errors and records
# =====================================================================================================


class ApiError(Exception):
    """A Bot API error response. Handlers raise it; the HTTP layer turns it into Telegram's JSON."""

    def __init__(self, status: int, description: str, parameters: JsonDict | None = None) -> None:
        super().__init__(description)
        self.status = status
        self.description = description
        self.parameters = parameters

    def to_json(self) -> JsonDict:
        body: JsonDict = {"ok": False, "error_code": self.status, "description": self.description}
        if self.parameters:
            body["parameters"] = self.parameters
        return body


def bad_request(reason: str) -> ApiError:
    return ApiError(400, f"Bad Request: {reason}")


def forbidden(reason: str) -> ApiError:
    return ApiError(403, f"Forbidden: {reason}")


@dataclass(frozen=True)
class ApiCall:
    """One request the bot made, kept so tests can assert what the bot did (and that nothing failed)."""

    method: str
    params: JsonDict
    status: int
    description: str | None
    at: float
    injected: bool = False

    @property
    def ok(self) -> bool:
        return self.status == 200


@dataclass
class UploadedFile:
    """A file part of a multipart request."""

    data: bytes
    filename: str | None
    content_type: str | None

    def __repr__(self) -> str:
        return f"UploadedFile({self.filename!r}, {len(self.data)} bytes)"


@dataclass
class StoredFile:
    """A file Telegram "has": uploaded by the bot or sent by a fake user; downloadable via getFile."""

    file_id: str
    file_unique_id: str
    data: bytes
    file_path: str
    file_name: str | None = None
    mime_type: str | None = None
    width: int | None = None
    height: int | None = None
    source_url: str | None = None

    @property
    def size(self) -> int:
        return len(self.data)


@dataclass(frozen=True)
class UserInfo:
    """A Telegram account: a fake user or the bot itself."""

    id: int
    first_name: str
    last_name: str | None = None
    username: str | None = None
    language_code: str | None = None
    is_bot: bool = False
    phone_number: str | None = None

    def to_json(self) -> JsonDict:
        out: JsonDict = {"id": self.id, "is_bot": self.is_bot, "first_name": self.first_name}
        if self.last_name:
            out["last_name"] = self.last_name
        if self.username:
            out["username"] = self.username
        if self.language_code and not self.is_bot:
            out["language_code"] = self.language_code
        return out


@dataclass(eq=False)
class BotMessage:
    """A message in a chat, as the fake stores it (bot messages and, with ``from_bot=False``, user ones).

    ``text``/``caption`` are the plain strings after entity parsing; ``html`` re-renders them with their
    entities so assertions and the demo can see formatting. ``media`` holds the kind-specific Bot API
    fields (``photo``, ``document``, ``location``, ``venue``, ``contact``...) exactly as sent in JSON.
    """

    message_id: int
    chat_id: int
    kind: str
    date: int
    from_bot: bool = True
    sender_id: int | None = None
    text: str | None = None
    caption: str | None = None
    entities: list[JsonDict] = field(default_factory=list)
    html: str = ""
    parse_mode: str | None = None
    reply_markup: JsonDict | None = None
    reply_to_message_id: int | None = None
    latitude: float | None = None
    longitude: float | None = None
    title: str | None = None
    address: str | None = None
    file_id: str | None = None
    file: StoredFile | None = None
    media: JsonDict = field(default_factory=dict)
    edits: int = 0
    edit_date: int | None = None
    history: list[str | None] = field(default_factory=list)
    deleted: bool = False

    @property
    def content(self) -> str:
        """Text or caption, whichever the message has ("" for neither)."""
        return self.text if self.text is not None else (self.caption or "")

    @property
    def data(self) -> bytes | None:
        """Bytes of the photo/document, if any."""
        return self.file.data if self.file else None

    @property
    def inline_keyboard(self) -> list[list[JsonDict]]:
        markup = self.reply_markup or {}
        rows = markup.get("inline_keyboard")
        return rows if isinstance(rows, list) else []

    @property
    def button_texts(self) -> list[str]:
        """Texts of the inline buttons, row by row: handy in assertions."""
        return [str(button.get("text")) for row in self.inline_keyboard for button in row]

    def summary(self) -> str:
        who = "bot" if self.from_bot else f"user {self.sender_id}"
        flags = "".join([" [deleted]" if self.deleted else "", f" [edited x{self.edits}]" if self.edits else ""])
        buttons = f" buttons={self.button_texts}" if self.inline_keyboard else ""
        return f"#{self.message_id} {self.kind} from {who}{flags}: {self.content[:120]!r}{buttons}"


@dataclass(frozen=True)
class WebhookDelivery:
    """One attempt to POST an update to the webhook; status is None when the connection failed."""

    update_id: int
    url: str
    status: int | None
    error: str | None
    at: float

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


@dataclass
class CallbackQueryRecord:
    """A callback query a fake user sent, and the bot's answer once it arrives."""

    query_id: str
    user_id: int
    chat_id: int
    message_id: int
    data: str
    answered: bool = False
    text: str | None = None
    show_alert: bool = False
    url: str | None = None


class _Pulse:
    """A broadcast "something changed" signal: waiters grab ``event`` before checking their condition.

    ``fire`` sets the current event and replaces it, so every waiter wakes once and re-checks; nobody can
    miss a change between checking and waiting because everything runs on one event loop.
    """

    def __init__(self) -> None:
        self.event = asyncio.Event()

    def fire(self) -> None:
        self.event.set()
        self.event = asyncio.Event()


async def _wait_for_pulse(pulse: _Pulse, check: Callable[[], T | None], within: float) -> T | None:
    """Re-evaluate ``check`` whenever ``pulse`` fires; return its first truthy result or None on timeout."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        event = pulse.event
        result = check()
        if result:
            return result
        remaining = deadline - loop.time()
        if remaining <= 0:
            return None
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(remaining):
                await event.wait()


@dataclass(eq=False)
class ChatState:
    """A chat and its history. Private chats have the user's id; supergroups a -100... id."""

    id: int
    type: Literal["private", "supergroup"]
    title: str | None = None
    username: str | None = None
    user: UserInfo | None = None
    messages: list[BotMessage] = field(default_factory=list)
    members: dict[int, str] = field(default_factory=dict)  # user id -> ChatMember status
    bot_is_member: bool = True
    bot_is_admin: bool = True
    blocked: bool = False
    actions: list[str] = field(default_factory=list)
    menu_button: JsonDict | None = None
    received: set[int] = field(default_factory=set)  # message ids already returned by receive()
    changes: _Pulse = field(default_factory=_Pulse)
    _by_id: dict[int, BotMessage] = field(default_factory=dict)
    _next_message_id: int = 1

    def add(self, message: BotMessage) -> None:
        self.messages.append(message)
        self._by_id[message.message_id] = message

    def next_message_id(self) -> int:
        message_id = self._next_message_id
        self._next_message_id += 1
        return message_id

    def find(self, message_id: int) -> BotMessage | None:
        return self._by_id.get(message_id)

    def to_json(self) -> JsonDict:
        if self.type == "private":
            assert self.user is not None
            out: JsonDict = {"id": self.id, "type": "private", "first_name": self.user.first_name}
            if self.user.last_name:
                out["last_name"] = self.user.last_name
            if self.user.username:
                out["username"] = self.user.username
            return out
        out = {"id": self.id, "type": self.type, "title": self.title or ""}
        if self.username:
            out["username"] = self.username
        return out

    def describe(self) -> str:
        lines = [m.summary() + (" (received)" if m.message_id in self.received else "") for m in self.messages]
        return "\n  ".join(lines) if lines else "(no messages)"


# =====================================================================================================
# Shared state
# =====================================================================================================


class FileStore:
    """Files by file_id and by file_path, with Telegram-looking identifiers."""

    _PREFIXES: Final = {
        "photo": "AgACAgIAAxkBAA",
        "document": "BQACAgIAAxkBAA",
        "voice": "AwACAgIAAxkBAA",
        "sticker": "CAACAgIAAxkBAA",
    }
    _FOLDERS: Final = {"photo": "photos", "document": "documents", "voice": "voice", "sticker": "stickers"}

    def __init__(self) -> None:
        self._by_id: dict[str, StoredFile] = {}
        self._by_path: dict[str, StoredFile] = {}
        self._counter = itertools.count(1)

    def add(
        self,
        data: bytes,
        kind: str,
        *,
        file_name: str | None = None,
        mime_type: str | None = None,
        extension: str = "",
        width: int | None = None,
        height: int | None = None,
        source_url: str | None = None,
    ) -> StoredFile:
        number = next(self._counter)
        prefix = self._PREFIXES.get(kind, "BQACAgIAAxkBAA")
        if not extension and file_name and "." in file_name:
            extension = "." + file_name.rsplit(".", 1)[1]
        stored = StoredFile(
            file_id=f"{prefix}{number:06d}",
            file_unique_id=f"AQAD{number:06d}",
            data=data,
            file_path=f"{self._FOLDERS.get(kind, 'documents')}/file_{number}{extension}",
            file_name=file_name,
            mime_type=mime_type,
            width=width,
            height=height,
            source_url=source_url,
        )
        self._by_id[stored.file_id] = stored
        self._by_path[stored.file_path] = stored
        return stored

    def get(self, file_id: str) -> StoredFile | None:
        return self._by_id.get(file_id)

    def by_path(self, file_path: str) -> StoredFile | None:
        return self._by_path.get(file_path)


class UpdateQueue:
    """Pending updates with getUpdates semantics: an update stays until an offset above it confirms it."""

    def __init__(self, first_update_id: int = 100_000_001) -> None:
        self._pending: deque[JsonDict] = deque()
        self._ids = itertools.count(first_update_id)
        self.changes = _Pulse()
        self.allowed: frozenset[str] = DEFAULT_UPDATE_TYPES
        self.allowed_explicitly: list[str] | None = None
        self.filtered_out: list[JsonDict] = []
        self._sent: dict[int, JsonDict] = {}  # every update ever queued, for redeliver()
        self.last_update_id: int | None = None  # the id of the newest update (e.g. the one a tap just queued)

    def __len__(self) -> int:
        return len(self._pending)

    def push(self, kind: str, payload: JsonDict) -> int:
        update_id = next(self._ids)
        update = {"update_id": update_id, kind: copy.deepcopy(payload)}
        if kind in self.allowed:
            self._sent[update_id] = update
            self.last_update_id = update_id
            self._pending.append(update)
            self.changes.fire()
        else:
            self.filtered_out.append(update)  # Telegram never creates updates the bot did not ask for
        return update_id

    def queued(self, update_id: int) -> JsonDict | None:
        """The update queued under this id (a copy), whether or not it was delivered since."""
        update = self._sent.get(update_id)
        return copy.deepcopy(update) if update is not None else None

    def redeliver(self, update_id: int) -> None:
        """Queue an already delivered update again, same id and content (at-least-once delivery)."""
        update = self._sent.get(update_id)
        if update is None:
            raise AssertionError(f"update {update_id} was never queued")
        if any(u["update_id"] == update_id for u in self._pending):
            raise AssertionError(f"update {update_id} is still pending: redeliver it once it was delivered")
        self._pending.append(copy.deepcopy(update))
        self.changes.fire()

    def set_allowed(self, types: Iterable[str]) -> None:
        wanted = [str(t) for t in types]
        self.allowed_explicitly = wanted or None
        self.allowed = frozenset(wanted) if wanted else DEFAULT_UPDATE_TYPES

    def confirm(self, offset: int) -> None:
        """Forget updates below ``offset``; a negative offset keeps only the last ``-offset`` updates."""
        before = len(self._pending)
        if offset < 0:
            while len(self._pending) > -offset:
                self._pending.popleft()
        else:
            while self._pending and self._pending[0]["update_id"] < offset:
                self._pending.popleft()
        if len(self._pending) != before:
            self.changes.fire()

    def peek(self, limit: int) -> list[JsonDict]:
        return list(itertools.islice(self._pending, limit))

    def remove(self, update_id: int) -> None:
        self._pending = deque(u for u in self._pending if u["update_id"] != update_id)
        self.changes.fire()

    def clear(self) -> None:
        self._pending.clear()
        self.changes.fire()

    def snapshot(self) -> list[JsonDict]:
        return copy.deepcopy(list(self._pending))


class World:
    """Everything Telegram knows: accounts, chats and their messages, files, updates, callback queries."""

    def __init__(self, bot: UserInfo) -> None:
        self.bot = bot
        self.now: Callable[[], float] = time.time
        self.users: dict[int, UserInfo] = {}
        self.chats: dict[int, ChatState] = {}
        self.files = FileStore()
        self.updates = UpdateQueue()
        self.callbacks: dict[str, CallbackQueryRecord] = {}
        self.callback_answers = _Pulse()
        self.listeners: list[Callable[[int], None]] = []
        self._callback_ids = itertools.count(4_511_000_000_000_000_001)

    def timestamp(self) -> int:
        return int(self.now())

    def resolve_chat(self, raw: str) -> ChatState | None:
        if raw.startswith("@"):
            name = raw[1:].lower()
            return next((c for c in self.chats.values() if (c.username or "").lower() == name), None)
        try:
            return self.chats.get(int(raw))
        except ValueError:
            return None

    def changed(self, chat: ChatState) -> None:
        chat.changes.fire()
        for listener in list(self.listeners):
            listener(chat.id)

    def add_message(self, chat: ChatState, message: BotMessage) -> BotMessage:
        chat.add(message)
        self.changed(chat)
        return message

    def new_message(self, chat: ChatState, kind: str, *, from_bot: bool, sender_id: int) -> BotMessage:
        return BotMessage(
            message_id=chat.next_message_id(),
            chat_id=chat.id,
            kind=kind,
            date=self.timestamp(),
            from_bot=from_bot,
            sender_id=sender_id,
        )

    def next_callback_id(self) -> str:
        return str(next(self._callback_ids))

    def message_json(self, message: BotMessage, *, with_reply: bool = True) -> JsonDict:
        chat = self.chats[message.chat_id]
        sender = self.bot if message.from_bot else self.users[message.sender_id or 0]
        out: JsonDict = {
            "message_id": message.message_id,
            "from": sender.to_json(),
            "chat": chat.to_json(),
            "date": message.date,
        }
        if message.edit_date is not None:
            out["edit_date"] = message.edit_date
        if with_reply and message.reply_to_message_id is not None:
            target = chat.find(message.reply_to_message_id)
            if target is not None and not target.deleted:
                out["reply_to_message"] = self.message_json(target, with_reply=False)
        out.update(copy.deepcopy(message.media))
        if message.text is not None:
            out["text"] = message.text
            if message.entities:
                out["entities"] = copy.deepcopy(message.entities)
        if message.caption is not None:
            out["caption"] = message.caption
            if message.entities:
                out["caption_entities"] = copy.deepcopy(message.entities)
        if message.inline_keyboard:
            # Only inline keyboards are part of a Message; reply keyboards live in the client.
            out["reply_markup"] = {"inline_keyboard": copy.deepcopy(message.inline_keyboard)}
        return out


# =====================================================================================================
# Rules: reply markup and text formatting
# =====================================================================================================


def _is_true(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.lower() == "true")


def _check_inline_button(button: Any) -> None:
    prefix = "can't parse inline keyboard button: "
    if not isinstance(button, dict):
        raise bad_request(prefix + "InlineKeyboardButton must be an Object")
    if "text" not in button:
        raise bad_request(prefix + 'Can\'t find field "text"')
    if not isinstance(button["text"], str):
        raise bad_request(prefix + 'Field "text" must be of type String')
    if not button["text"].strip():
        raise bad_request(prefix + "Text must be non-empty")
    actions = [name for name in INLINE_BUTTON_ACTIONS if button.get(name) is not None]
    if not actions:
        raise bad_request(prefix + "Text buttons are unallowed in the inline keyboard")
    if len(actions) > 1:
        raise bad_request(prefix + f"Exactly one of the optional fields must be used, found {actions}")
    if "callback_data" in actions:
        data = button["callback_data"]
        if not isinstance(data, str) or not 1 <= len(data.encode("utf-8")) <= MAX_CALLBACK_DATA_BYTES:
            raise bad_request("BUTTON_DATA_INVALID")
    if "url" in actions:
        url = button["url"]
        if not isinstance(url, str) or not re.match(r"^(https?|tg)://\S+$", url, re.IGNORECASE):
            raise bad_request("BUTTON_URL_INVALID")


def _check_inline_keyboard(rows: Any) -> None:
    if not isinstance(rows, list) or not all(isinstance(row, list) for row in rows):
        raise bad_request('field "inline_keyboard" of the InlineKeyboardMarkup must be an Array of Arrays')
    total = 0
    for row in rows:
        for button in row:
            _check_inline_button(button)
            total += 1
    if total > MAX_INLINE_BUTTONS:
        raise bad_request("reply markup is too long")


def _check_keyboard_button(button: Any) -> None:
    if isinstance(button, str):
        text = button
    elif isinstance(button, dict) and isinstance(button.get("text"), str):
        text = button["text"]
        requests = [name for name in KEYBOARD_BUTTON_REQUESTS if button.get(name) not in (None, False)]
        if len(requests) > 1:
            raise bad_request(f"can't parse keyboard button: more than one request field: {requests}")
    else:
        raise bad_request(MARKUP_ERROR)
    if not text.strip():
        raise bad_request("can't parse keyboard button: Text must be non-empty")


def _check_reply_keyboard(markup: JsonDict) -> None:
    rows = markup["keyboard"]
    if not isinstance(rows, list) or not rows or not all(isinstance(row, list) for row in rows):
        raise bad_request(MARKUP_ERROR)
    if not any(rows):
        raise bad_request(MARKUP_ERROR)
    for row in rows:
        for button in row:
            _check_keyboard_button(button)
    for flag in ("resize_keyboard", "one_time_keyboard", "is_persistent", "selective"):
        if flag in markup and not isinstance(markup[flag], bool):
            raise bad_request(MARKUP_ERROR)
    _check_placeholder(markup)


def _check_placeholder(markup: JsonDict) -> None:
    placeholder = markup.get("input_field_placeholder")
    if placeholder is not None and (not isinstance(placeholder, str) or not 1 <= len(placeholder) <= 64):
        raise bad_request(MARKUP_ERROR)


def parse_reply_markup(value: Any, *, inline_only: bool = False) -> JsonDict | None:
    """Validate a reply_markup object like Telegram does; ``inline_only`` for the editMessage* methods."""
    if value is None or value == "":
        return None
    if not isinstance(value, dict):
        raise bad_request(MARKUP_ERROR)
    if "inline_keyboard" in value:
        _check_inline_keyboard(value["inline_keyboard"])
    elif inline_only:
        raise bad_request(MARKUP_ERROR)
    elif "keyboard" in value:
        _check_reply_keyboard(value)
    elif "remove_keyboard" in value:
        if value["remove_keyboard"] is not True:
            raise bad_request(MARKUP_ERROR)
    elif "force_reply" in value:
        if value["force_reply"] is not True:
            raise bad_request(MARKUP_ERROR)
        _check_placeholder(value)
    else:
        raise bad_request(MARKUP_ERROR)
    return value


def _inline_part(markup: JsonDict | None) -> list[Any] | None:
    rows = (markup or {}).get("inline_keyboard")
    return rows if rows else None


def _check_entities(entities: Any) -> list[JsonDict]:
    if not isinstance(entities, list):
        raise bad_request("can't parse entities JSON object")
    checked: list[JsonDict] = []
    for entity in entities:
        if not (
            isinstance(entity, dict)
            and isinstance(entity.get("type"), str)
            and isinstance(entity.get("offset"), int)
            and isinstance(entity.get("length"), int)
            and entity["offset"] >= 0
        ):
            raise bad_request("can't parse MessageEntity JSON object")
        if entity["length"] > 0:
            checked.append(dict(entity))
    checked.sort(key=lambda e: (e["offset"], -e["length"]))
    return checked


def _trim(text: str, entities: list[JsonDict]) -> tuple[str, list[JsonDict]]:
    """Telegram strips leading and trailing whitespace and shifts/clips entities accordingly."""
    spaces = " \t\n\r\f\v"
    stripped = text.strip(spaces)
    if stripped == text:
        return text, entities
    shift = utf16_len(text[: len(text) - len(text.lstrip(spaces))])
    total = utf16_len(stripped)
    kept: list[JsonDict] = []
    for entity in entities:
        start = max(0, entity["offset"] - shift)
        end = min(total, entity["offset"] + entity["length"] - shift)
        if end > start:
            kept.append({**entity, "offset": start, "length": end - start})
    return stripped, kept


def format_text(text: str, parse_mode: str | None, entities: Any) -> tuple[str, list[JsonDict]]:
    """Turn the text, parse_mode and entities parameters into Telegram's plain text + entities."""
    if entities is not None:
        plain, found = text, _check_entities(entities)
    elif parse_mode:
        mode = parse_mode.lower()
        if mode == "html":
            try:
                plain, found = parse_html(text)
            except HtmlParseError as err:
                raise bad_request(f"can't parse entities: {err.description}") from err
        elif mode in ("markdown", "markdownv2"):
            plain, found = text, []  # not modelled: passed through unchanged
        else:
            raise bad_request("unsupported parse_mode")
    else:
        plain, found = text, []
    return _trim(plain, found)


def _format_message_text(params: Params) -> tuple[str, list[JsonDict]]:
    text, entities = format_text(params.string("text") or "", params.string("parse_mode"), params.obj("entities"))
    if not text:
        raise bad_request("message text is empty")
    if utf16_len(text) > MAX_TEXT_LENGTH:
        raise bad_request("message is too long")
    return text, entities


def _format_caption(params: Params) -> tuple[str | None, list[JsonDict]]:
    raw = params.string("caption")
    if not raw:
        return None, []
    caption, entities = format_text(raw, params.string("parse_mode"), params.obj("caption_entities"))
    if utf16_len(caption) > MAX_CAPTION_LENGTH:
        raise bad_request("message caption is too long")
    return caption or None, entities


def image_size(data: bytes) -> tuple[int, int] | None:
    """Width and height of a PNG, JPEG, GIF or WebP image; None when the bytes are not an image."""
    if data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) >= 24:
        width, height = struct.unpack(">II", data[16:24])
        return int(width), int(height)
    if data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
        width, height = struct.unpack("<HH", data[6:10])
        return int(width), int(height)
    if data.startswith(b"RIFF") and data[8:12] == b"WEBP" and len(data) >= 30:
        chunk = data[12:16]
        if chunk == b"VP8X":
            return 1 + int.from_bytes(data[24:27], "little"), 1 + int.from_bytes(data[27:30], "little")
        if chunk == b"VP8 ":
            width, height = struct.unpack("<HH", data[26:30])
            return int(width) & 0x3FFF, int(height) & 0x3FFF
        if chunk == b"VP8L":
            bits = int.from_bytes(data[21:25], "little")
            return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
        return None
    if data.startswith(b"\xff\xd8"):
        return _jpeg_size(data)
    return None


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    index = 2
    while index + 9 < len(data):
        if data[index] != 0xFF:
            return None
        marker = data[index + 1]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7 or marker == 0xFF:
            index += 1 if marker == 0xFF else 2
            continue
        (length,) = struct.unpack(">H", data[index + 2 : index + 4])
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            height, width = struct.unpack(">HH", data[index + 5 : index + 9])
            return int(width), int(height)
        index += 2 + int(length)
    return None


# =====================================================================================================
# Request parameters
# =====================================================================================================


class Params:
    """Typed access to one request's parameters, with Telegram's lenient coercions (strings → numbers)."""

    def __init__(self, values: JsonDict, files: dict[str, UploadedFile]) -> None:
        self.values = values
        self.files = files

    @classmethod
    async def from_request(cls, request: web.Request) -> Params:
        values: JsonDict = dict(request.query)
        files: dict[str, UploadedFile] = {}
        if request.method == "POST" and request.can_read_body:
            if request.content_type == "application/json":
                try:
                    body = await request.json()
                except ValueError as err:
                    raise bad_request("can't parse JSON object") from err
                if not isinstance(body, dict):
                    raise bad_request("can't parse JSON object")
                values.update(body)
            elif request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
                form = await request.post()
                for name, value in form.items():
                    if isinstance(value, web.FileField):
                        files[name] = UploadedFile(value.file.read(), value.filename, value.content_type)
                    elif isinstance(value, bytes):
                        values[name] = value.decode("utf-8", "replace")
                    else:
                        values[name] = value
        return cls(_decode_json_fields(values), files)

    def logged(self) -> JsonDict:
        return {**self.values, **self.files}

    def has(self, name: str) -> bool:
        return self.values.get(name) not in (None, "") or name in self.files

    def obj(self, name: str) -> Any:
        return self.values.get(name)

    def string(self, name: str) -> str | None:
        value = self.values.get(name)
        if value is None:
            return None
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, (dict, list)):
            return json.dumps(value)
        return str(value)

    def integer(self, name: str) -> int | None:
        value = self.values.get(name)
        if value is None or value == "":
            return None
        try:
            return int(value)
        except (TypeError, ValueError) as err:
            raise bad_request(f"invalid {name} specified") from err

    def number(self, name: str) -> float | None:
        value = self.values.get(name)
        if value is None or value == "":
            return None
        try:
            return float(value)
        except (TypeError, ValueError) as err:
            raise bad_request(f"invalid {name} specified") from err

    def flag(self, name: str) -> bool:
        value = self.values.get(name)
        return value is True or (isinstance(value, str) and value.lower() in ("true", "1"))


def _decode_json_fields(values: JsonDict) -> JsonDict:
    decoded = dict(values)
    for name in JSON_FIELDS & decoded.keys():
        value = decoded[name]
        if isinstance(value, str) and value != "":
            try:
                decoded[name] = json.loads(value)
            except ValueError as err:
                if name == "reply_markup":
                    raise bad_request(MARKUP_ERROR) from err
                raise bad_request(f"can't parse {name} JSON object") from err
    return decoded


# =====================================================================================================
# Flood control and fault injection
# =====================================================================================================


@dataclass
class _Window:
    seconds: float
    limit: int
    hits: deque[float] = field(default_factory=deque)

    def full(self, now: float) -> bool:
        while self.hits and now - self.hits[0] >= self.seconds:
            self.hits.popleft()
        return len(self.hits) >= self.limit


class FloodControl:
    """Optional Telegram-like rate limits (off by default) that answer 429 with retry_after.

    Sliding windows: per chat ``per_chat_per_second`` messages a second (0.5 means one per two seconds),
    per group ``per_group_per_minute`` a minute, and ``global_per_second`` across all chats.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.per_chat: float | None = None
        self.per_group_per_minute: int | None = None
        self.global_per_second: int | None = None
        self.retry_after = 1
        self._chat_windows: dict[int, _Window] = {}
        self._group_windows: dict[int, _Window] = {}
        self._global = _Window(1.0, 0)

    def configure(
        self,
        per_chat_per_second: float | None,
        per_group_per_minute: int | None,
        global_per_second: int | None,
        retry_after: int,
    ) -> None:
        self.per_chat = per_chat_per_second
        self.per_group_per_minute = per_group_per_minute
        self.global_per_second = global_per_second
        self.retry_after = retry_after
        self._chat_windows.clear()
        self._group_windows.clear()
        self._global = _Window(1.0, global_per_second or 0)

    def _windows(self, chat_id: int) -> list[_Window]:
        windows: list[_Window] = []
        if self.per_chat:
            seconds = max(1.0, 1.0 / self.per_chat)
            limit = max(1, round(self.per_chat * seconds))
            windows.append(self._chat_windows.setdefault(chat_id, _Window(seconds, limit)))
        if self.per_group_per_minute and chat_id < 0:
            windows.append(self._group_windows.setdefault(chat_id, _Window(60.0, self.per_group_per_minute)))
        if self.global_per_second:
            windows.append(self._global)
        return windows

    def check(self, chat_id: int) -> None:
        windows = self._windows(chat_id)
        now = self.clock()
        if any(window.full(now) for window in windows):
            raise ApiError(
                429,
                f"Too Many Requests: retry after {self.retry_after}",
                {"retry_after": self.retry_after},
            )
        for window in windows:
            window.hits.append(now)


FaultKind = Literal["500", "502", "drop", "429"]


@dataclass
class _FaultPlan:
    remaining: int
    kind: FaultKind
    methods: frozenset[str] | None


class FaultInjector:
    """Makes the next N matching requests fail, for chaos tests of the bot's retry logic."""

    def __init__(self) -> None:
        self._plans: list[_FaultPlan] = []
        # Random faults at a steady rate (chaos runs): (probability per request, kinds, methods or None for all).
        self._rate: tuple[float, tuple[FaultKind, ...], frozenset[str] | None] = (0.0, (), None)
        self._random = random.Random(0)

    def set_rate(
        self, rate: float, kinds: Iterable[FaultKind], methods: set[str] | None = None, seed: int | None = None
    ) -> None:
        """Fail each matching request with probability `rate`, with a kind drawn from `kinds` (0 turns it off)."""
        chosen = tuple(kinds)
        if any(kind not in ("500", "502", "drop", "429") for kind in chosen) or (rate > 0 and not chosen):
            raise ValueError(f"bad fault kinds {chosen!r}")
        lowered = frozenset(m.lower() for m in methods) if methods else None
        self._rate = (rate, chosen, lowered)
        if seed is not None:
            self._random.seed(seed)

    def add(self, count: int, kind: FaultKind, methods: set[str] | None) -> None:
        if kind not in ("500", "502", "drop", "429"):
            raise ValueError(f"unknown fault kind {kind!r}")
        lowered = frozenset(m.lower() for m in methods) if methods else None
        self._plans.append(_FaultPlan(count, kind, lowered))

    def take(self, method: str) -> FaultKind | None:
        for plan in self._plans:
            if plan.remaining > 0 and (plan.methods is None or method.lower() in plan.methods):
                plan.remaining -= 1
                return plan.kind
        rate, kinds, methods = self._rate
        if rate > 0 and (methods is None or method.lower() in methods) and self._random.random() < rate:
            return self._random.choice(kinds)
        return None

    @property
    def pending(self) -> int:
        return sum(plan.remaining for plan in self._plans)


# =====================================================================================================
# Webhook delivery
# =====================================================================================================


class WebhookSender:
    """POSTs pending updates, oldest first, to the webhook URL; failures keep the update and retry."""

    retry_interval = 0.5

    def __init__(self, queue: UpdateQueue, clock: Callable[[], float]) -> None:
        self._queue = queue
        self._clock = clock
        self.url = ""
        self.secret_token: str | None = None
        self.max_connections = 40
        self.last_error_date: int | None = None
        self.last_error_message: str | None = None
        self.deliveries: list[WebhookDelivery] = []
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None

    def configure(self, url: str, secret_token: str | None, max_connections: int) -> None:
        self.url = url
        self.secret_token = secret_token
        self.max_connections = max_connections
        self.last_error_date = None
        self.last_error_message = None
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="fake-telegram-webhook")
        self._queue.changes.fire()

    def disable(self) -> None:
        self.url = ""
        self.secret_token = None
        self._queue.changes.fire()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _run(self) -> None:
        while True:
            event = self._queue.changes.event
            pending = self._queue.peek(1)
            if not self.url or not pending:
                await event.wait()
                continue
            update = pending[0]
            if await self._deliver(self.url, update):
                self._queue.remove(int(update["update_id"]))
            else:
                await asyncio.sleep(self.retry_interval)

    async def _deliver(self, url: str, update: JsonDict) -> bool:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        headers = {"Content-Type": "application/json"}
        if self.secret_token:
            headers["X-Telegram-Bot-Api-Secret-Token"] = self.secret_token
        status: int | None = None
        error: str | None = None
        try:
            async with self._session.post(url, data=json.dumps(update), headers=headers) as response:
                status = response.status
                await response.read()
                if not 200 <= status < 300:
                    error = f"Wrong response from the webhook: {status} {response.reason}"
        except (aiohttp.ClientError, OSError, TimeoutError) as err:
            error = f"Connection error: {err.__class__.__name__}: {err}"
        self.deliveries.append(WebhookDelivery(int(update["update_id"]), url, status, error, self._clock()))
        if error is not None:
            self.last_error_date = int(self._clock())
            self.last_error_message = error
            return False
        return True


# =====================================================================================================
# Bot API methods
# =====================================================================================================

_Handler = Callable[["BotApi", Params], Awaitable[Any]]
_METHODS: dict[str, tuple[str, _Handler]] = {}


def api_method(name: str) -> Callable[[_Handler], _Handler]:
    """Register a handler under its Bot API name; lookups are case-insensitive like Telegram's."""

    def register(func: _Handler) -> _Handler:
        _METHODS[name.lower()] = (name, func)
        return func

    return register


def _require(value: T | None, reason: str) -> T:
    if value is None or value == "":
        raise bad_request(reason)
    return value


def _member_json(user: UserInfo, status: str) -> JsonDict:
    out: JsonDict = {"status": status, "user": user.to_json()}
    if status == "creator":
        out["is_anonymous"] = False
    elif status == "administrator":
        rights = ("can_manage_chat", "can_delete_messages", "can_restrict_members", "can_change_info")
        out.update({"can_be_edited": False, "is_anonymous": False, "can_manage_video_chats": False})
        out.update(dict.fromkeys(rights, True))
        out.update({"can_promote_members": False, "can_invite_users": True, "can_pin_messages": True})
        out.update({"can_post_stories": False, "can_edit_stories": False, "can_delete_stories": False})
    elif status == "kicked":
        out["until_date"] = 0
    return out


class BotApi:
    """The Bot API methods, each validating its parameters like Telegram and acting on the ``World``."""

    def __init__(self, world: World, webhook: WebhookSender, flood: FloodControl) -> None:
        self.world = world
        self.webhook = webhook
        self.flood = flood
        self.closing = False
        self.commands: dict[tuple[str, str], list[JsonDict]] = {}
        self.descriptions: dict[tuple[str, str], str] = {}
        self.default_menu_button: JsonDict = {"type": "default"}
        self._poll_generation = 0

    # -- helpers --------------------------------------------------------------------------------------

    def _chat(self, params: Params, *, writing: bool = True) -> ChatState:
        raw = params.string("chat_id")
        if not raw:
            raise bad_request("chat_id is empty")
        chat = self.world.resolve_chat(raw)
        if chat is None:
            raise bad_request("chat not found")
        if writing and chat.type == "private" and chat.blocked:
            raise forbidden("bot was blocked by the user")
        if writing and chat.type != "private" and not chat.bot_is_member:
            raise forbidden("bot is not a member of the supergroup chat")
        return chat

    def _reply_target(self, chat: ChatState, params: Params) -> int | None:
        reply = params.obj("reply_parameters")
        allow_missing = params.flag("allow_sending_without_reply")
        if isinstance(reply, dict):
            message_id = reply.get("message_id")
            allow_missing = bool(reply.get("allow_sending_without_reply", allow_missing))
        else:
            message_id = params.integer("reply_to_message_id")
        if message_id is None:
            return None
        target = chat.find(int(message_id))
        if target is None or target.deleted:
            if allow_missing:
                return None
            raise bad_request("message to be replied not found")
        return target.message_id

    def _send(self, chat: ChatState, message: BotMessage, params: Params, markup: JsonDict | None) -> JsonDict:
        message.reply_markup = markup
        message.reply_to_message_id = self._reply_target(chat, params)
        self.flood.check(chat.id)
        self.world.add_message(chat, message)
        return self.world.message_json(message)

    def _new_bot_message(self, chat: ChatState, kind: str) -> BotMessage:
        return self.world.new_message(chat, kind, from_bot=True, sender_id=self.world.bot.id)

    def _file_param(self, params: Params, name: str, kind: str) -> StoredFile:
        upload = params.files.get(name)
        reference = params.string(name)
        if upload is None and reference and reference.startswith("attach://"):
            upload = params.files.get(reference[len("attach://") :])
        if upload is not None:
            if not upload.data:
                raise bad_request("file must be non-empty")
            mime = upload.content_type or mimetypes.guess_type(upload.filename or "")[0]
            extension = mimetypes.guess_extension(mime or "") or ""
            size = image_size(upload.data) if kind == "photo" else None
            if kind == "photo":
                if size is None:
                    raise bad_request("IMAGE_PROCESS_FAILED")
                width, height = size
                if width + height > 10000 or max(width, height) > 20 * min(width, height):
                    raise bad_request("PHOTO_INVALID_DIMENSIONS")
            return self.world.files.add(
                upload.data,
                kind,
                file_name=upload.filename,
                mime_type=mime,
                extension=extension,
                width=size[0] if size else None,
                height=size[1] if size else None,
            )
        if not reference:
            raise bad_request(f"there is no {name} in the request")
        known = self.world.files.get(reference)
        if known is not None:
            return known
        if reference.startswith(("http://", "https://")):
            # No internet in the sandbox: remember the URL with placeholder content.
            return self.world.files.add(b"", kind, source_url=reference, width=1, height=1)
        raise bad_request("wrong file identifier/HTTP URL specified")

    def _editable(self, params: Params) -> tuple[ChatState, BotMessage]:
        if params.has("inline_message_id"):
            raise bad_request("MESSAGE_ID_INVALID")
        chat = self._chat(params)
        message_id = _require(params.integer("message_id"), "message identifier is not specified")
        message = chat.find(message_id)
        if message is None or message.deleted:
            raise bad_request("message to edit not found")
        if not message.from_bot:
            raise bad_request("message can't be edited")
        return chat, message

    def _commit_edit(self, chat: ChatState, message: BotMessage, markup: JsonDict | None) -> JsonDict:
        """Finish an edit whose content the caller has already applied (after the flood check)."""
        if markup is not None or _inline_part(message.reply_markup) is not None:
            message.reply_markup = markup  # omitting reply_markup removes the inline keyboard
        message.edits += 1
        message.edit_date = self.world.timestamp()
        self.world.changed(chat)
        return self.world.message_json(message)

    @staticmethod
    def _location(params: Params) -> JsonDict:
        latitude = _require(params.number("latitude"), "latitude is empty")
        longitude = _require(params.number("longitude"), "longitude is empty")
        if not -90 <= latitude <= 90:
            raise bad_request("wrong latitude specified")
        if not -180 <= longitude <= 180:
            raise bad_request("wrong longitude specified")
        location: JsonDict = {"latitude": latitude, "longitude": longitude}
        accuracy = params.number("horizontal_accuracy")
        if accuracy is not None:
            location["horizontal_accuracy"] = accuracy
        return location

    @staticmethod
    def _scope_key(params: Params) -> tuple[str, str]:
        scope = params.obj("scope") or {"type": "default"}
        if not isinstance(scope, dict) or not isinstance(scope.get("type"), str):
            raise bad_request("can't parse BotCommandScope JSON object")
        language = params.string("language_code") or ""
        if language and not re.fullmatch(r"[a-z]{2}", language):
            raise bad_request("invalid language code specified")
        return _scope_name(scope), language

    # -- updates and webhooks -------------------------------------------------------------------------

    @api_method("getMe")
    async def get_me(self, params: Params) -> Any:
        return {
            **self.world.bot.to_json(),
            "can_join_groups": True,
            "can_read_all_group_messages": False,
            "supports_inline_queries": False,
            "can_connect_to_business": False,
            "has_main_web_app": False,
        }

    @api_method("logOut")
    async def log_out(self, params: Params) -> Any:
        return True

    @api_method("close")
    async def close(self, params: Params) -> Any:
        return True

    @api_method("getUpdates")
    async def get_updates(self, params: Params) -> Any:
        if self.webhook.url:
            raise ApiError(409, WEBHOOK_CONFLICT)
        queue = self.world.updates
        allowed = params.obj("allowed_updates")
        if isinstance(allowed, list):
            queue.set_allowed(allowed)
        offset = params.integer("offset")
        if offset is not None:
            queue.confirm(offset)
        limit = min(max(params.integer("limit") or 100, 1), 100)
        timeout = max(params.number("timeout") or 0.0, 0.0)
        self._poll_generation += 1
        generation = self._poll_generation
        queue.changes.fire()  # wakes an older long poll, which now ends with a conflict

        def ready() -> tuple[list[JsonDict]] | None:
            # A 1-tuple keeps an empty batch truthy, so a closing server ends the long poll at once.
            if generation != self._poll_generation:
                raise ApiError(409, POLL_CONFLICT)
            if self.webhook.url:
                raise ApiError(409, WEBHOOK_CONFLICT)
            batch = queue.peek(limit)
            return (batch,) if batch or self.closing else None

        result = ready()
        if result is None and timeout > 0:
            result = await _wait_for_pulse(queue.changes, ready, timeout)
        return result[0] if result else []

    @api_method("setWebhook")
    async def set_webhook(self, params: Params) -> Any:
        url = params.string("url") or ""
        if not url:
            self.webhook.disable()
            return True
        if not re.match(r"^https?://[^/\s]+", url, re.IGNORECASE):
            raise bad_request("bad webhook: An HTTPS URL must be provided for webhook")
        secret = params.string("secret_token") or None
        if secret is not None and not re.fullmatch(r"[A-Za-z0-9_\-]{1,256}", secret):
            raise bad_request("bad webhook: Secret token contains unallowed characters")
        max_connections = params.integer("max_connections") or 40
        if not 1 <= max_connections <= 100:
            raise bad_request("bad webhook: max_connections must be between 1 and 100")
        if params.flag("drop_pending_updates"):
            self.world.updates.clear()
        allowed = params.obj("allowed_updates")
        if isinstance(allowed, list):
            self.world.updates.set_allowed(allowed)
        self.webhook.configure(url, secret, max_connections)
        return True

    @api_method("deleteWebhook")
    async def delete_webhook(self, params: Params) -> Any:
        if params.flag("drop_pending_updates"):
            self.world.updates.clear()
        self.webhook.disable()
        return True

    @api_method("getWebhookInfo")
    async def get_webhook_info(self, params: Params) -> Any:
        info: JsonDict = {
            "url": self.webhook.url,
            "has_custom_certificate": False,
            "pending_update_count": len(self.world.updates),
        }
        if self.webhook.url:
            info["max_connections"] = self.webhook.max_connections
            info["ip_address"] = "127.0.0.1"
        if self.world.updates.allowed_explicitly:
            info["allowed_updates"] = list(self.world.updates.allowed_explicitly)
        if self.webhook.last_error_date is not None:
            info["last_error_date"] = self.webhook.last_error_date
            info["last_error_message"] = self.webhook.last_error_message
        return info

    # -- sending --------------------------------------------------------------------------------------

    @api_method("sendMessage")
    async def send_message(self, params: Params) -> Any:
        chat = self._chat(params)
        text, entities = _format_message_text(params)
        markup = parse_reply_markup(params.obj("reply_markup"))
        message = self._new_bot_message(chat, "text")
        message.text, message.entities, message.html = text, entities, to_html(text, entities)
        message.parse_mode = params.string("parse_mode")
        return self._send(chat, message, params, markup)

    @api_method("sendPhoto")
    async def send_photo(self, params: Params) -> Any:
        chat = self._chat(params)
        caption, entities = _format_caption(params)
        markup = parse_reply_markup(params.obj("reply_markup"))
        stored = self._file_param(params, "photo", "photo")
        message = self._new_bot_message(chat, "photo")
        message.caption, message.entities = caption, entities
        message.html = to_html(caption or "", entities)
        message.parse_mode = params.string("parse_mode")
        message.file, message.file_id = stored, stored.file_id
        message.media = {"photo": _photo_sizes(self.world.files, stored)}
        return self._send(chat, message, params, markup)

    @api_method("sendDocument")
    async def send_document(self, params: Params) -> Any:
        chat = self._chat(params)
        caption, entities = _format_caption(params)
        markup = parse_reply_markup(params.obj("reply_markup"))
        stored = self._file_param(params, "document", "document")
        message = self._new_bot_message(chat, "document")
        message.caption, message.entities = caption, entities
        message.html = to_html(caption or "", entities)
        message.parse_mode = params.string("parse_mode")
        message.file, message.file_id = stored, stored.file_id
        message.media = {"document": _document_json(stored)}
        return self._send(chat, message, params, markup)

    @api_method("sendLocation")
    async def send_location(self, params: Params) -> Any:
        chat = self._chat(params)
        location = self._location(params)
        live_period = params.integer("live_period")
        if live_period is not None:
            location["live_period"] = live_period
        markup = parse_reply_markup(params.obj("reply_markup"))
        message = self._new_bot_message(chat, "location")
        message.latitude, message.longitude = location["latitude"], location["longitude"]
        message.media = {"location": location}
        return self._send(chat, message, params, markup)

    @api_method("sendVenue")
    async def send_venue(self, params: Params) -> Any:
        chat = self._chat(params)
        location = self._location(params)
        title = _require(params.string("title"), "venue title is empty")
        address = _require(params.string("address"), "venue address is empty")
        markup = parse_reply_markup(params.obj("reply_markup"))
        venue: JsonDict = {"location": location, "title": title, "address": address}
        for optional in ("foursquare_id", "foursquare_type", "google_place_id", "google_place_type"):
            if params.has(optional):
                venue[optional] = params.string(optional)
        message = self._new_bot_message(chat, "venue")
        message.latitude, message.longitude = location["latitude"], location["longitude"]
        message.title, message.address = title, address
        message.media = {"venue": venue, "location": dict(location)}
        return self._send(chat, message, params, markup)

    @api_method("sendChatAction")
    async def send_chat_action(self, params: Params) -> Any:
        chat = self._chat(params)
        action = params.string("action")
        if action not in CHAT_ACTIONS:
            raise bad_request("wrong parameter action in request")
        chat.actions.append(action)
        return True

    # -- editing and deleting -------------------------------------------------------------------------

    @api_method("editMessageText")
    async def edit_message_text(self, params: Params) -> Any:
        chat, message = self._editable(params)
        if message.text is None:
            raise bad_request("there is no text in the message to edit")
        text, entities = _format_message_text(params)
        markup = parse_reply_markup(params.obj("reply_markup"), inline_only=True)
        unchanged = (text, entities, _inline_part(markup)) == (
            message.text,
            message.entities,
            _inline_part(message.reply_markup),
        )
        if unchanged:
            raise bad_request(NOT_MODIFIED)
        self.flood.check(chat.id)
        message.history.append(message.text)
        message.text, message.entities, message.html = text, entities, to_html(text, entities)
        message.parse_mode = params.string("parse_mode")
        return self._commit_edit(chat, message, markup)

    @api_method("editMessageCaption")
    async def edit_message_caption(self, params: Params) -> Any:
        chat, message = self._editable(params)
        if message.kind not in ("photo", "document"):
            raise bad_request("there is no caption in the message to edit")
        caption, entities = _format_caption(params)
        markup = parse_reply_markup(params.obj("reply_markup"), inline_only=True)
        unchanged = (caption, entities, _inline_part(markup)) == (
            message.caption,
            message.entities,
            _inline_part(message.reply_markup),
        )
        if unchanged:
            raise bad_request(NOT_MODIFIED)
        self.flood.check(chat.id)
        message.history.append(message.caption)
        message.caption, message.entities = caption, entities
        message.html = to_html(caption or "", entities)
        message.parse_mode = params.string("parse_mode")
        return self._commit_edit(chat, message, markup)

    @api_method("editMessageReplyMarkup")
    async def edit_message_reply_markup(self, params: Params) -> Any:
        chat, message = self._editable(params)
        markup = parse_reply_markup(params.obj("reply_markup"), inline_only=True)
        if _inline_part(markup) == _inline_part(message.reply_markup):
            raise bad_request(NOT_MODIFIED)
        self.flood.check(chat.id)
        return self._commit_edit(chat, message, markup)

    @api_method("deleteMessage")
    async def delete_message(self, params: Params) -> Any:
        chat = self._chat(params)
        message_id = _require(params.integer("message_id"), "message identifier is not specified")
        message = chat.find(message_id)
        if message is None or message.deleted:
            raise bad_request("message to delete not found")
        if not message.from_bot and chat.type != "private" and not chat.bot_is_admin:
            raise bad_request("message can't be deleted")
        if self.world.now() - message.date > MESSAGE_EDIT_WINDOW:
            raise bad_request("message can't be deleted for everyone")
        message.deleted = True
        self.world.changed(chat)
        return True

    # -- callback queries -----------------------------------------------------------------------------

    @api_method("answerCallbackQuery")
    async def answer_callback_query(self, params: Params) -> Any:
        query_id = params.string("callback_query_id") or ""
        record = self.world.callbacks.get(query_id)
        if record is None or record.answered:
            raise bad_request(QUERY_TOO_OLD)
        text = params.string("text")
        if text is not None and utf16_len(text) > MAX_CALLBACK_ANSWER_LENGTH:
            raise bad_request("MESSAGE_TOO_LONG")
        record.answered = True
        record.text = text or None
        record.show_alert = params.flag("show_alert")
        record.url = params.string("url")
        self.world.callback_answers.fire()
        return True

    # -- commands, menu button, descriptions ----------------------------------------------------------

    @api_method("setMyCommands")
    async def set_my_commands(self, params: Params) -> Any:
        commands = params.obj("commands")
        if not isinstance(commands, list):
            raise bad_request("can't parse commands JSON object")
        if len(commands) > 100:
            raise bad_request("too many commands specified")
        checked: list[JsonDict] = []
        for command in commands:
            if not isinstance(command, dict):
                raise bad_request("can't parse BotCommand JSON object")
            name, description = command.get("command"), command.get("description")
            if not isinstance(name, str) or not re.fullmatch(r"[a-z0-9_]{1,32}", name):
                raise bad_request("BOT_COMMAND_INVALID")
            if not isinstance(description, str) or not 1 <= len(description.strip()) <= 256:
                raise bad_request("BOT_COMMAND_DESCRIPTION_INVALID")
            checked.append({"command": name, "description": description})
        self.commands[self._scope_key(params)] = checked
        return True

    @api_method("getMyCommands")
    async def get_my_commands(self, params: Params) -> Any:
        return copy.deepcopy(self.commands.get(self._scope_key(params), []))

    @api_method("deleteMyCommands")
    async def delete_my_commands(self, params: Params) -> Any:
        self.commands.pop(self._scope_key(params), None)
        return True

    @api_method("setChatMenuButton")
    async def set_chat_menu_button(self, params: Params) -> Any:
        button = params.obj("menu_button") or {"type": "default"}
        if not isinstance(button, dict) or button.get("type") not in ("default", "commands", "web_app"):
            raise bad_request("can't parse menu button JSON object")
        if button["type"] == "web_app" and not (isinstance(button.get("text"), str) and button.get("web_app")):
            raise bad_request("can't parse menu button JSON object")
        if params.has("chat_id"):
            self._chat(params, writing=False).menu_button = button
        else:
            self.default_menu_button = button
        return True

    @api_method("getChatMenuButton")
    async def get_chat_menu_button(self, params: Params) -> Any:
        if params.has("chat_id"):
            chat = self._chat(params, writing=False)
            return chat.menu_button or self.default_menu_button
        return self.default_menu_button

    @api_method("setMyDescription")
    async def set_my_description(self, params: Params) -> Any:
        self.descriptions[("description", params.string("language_code") or "")] = params.string("description") or ""
        return True

    @api_method("getMyDescription")
    async def get_my_description(self, params: Params) -> Any:
        return {"description": self.descriptions.get(("description", params.string("language_code") or ""), "")}

    @api_method("setMyShortDescription")
    async def set_my_short_description(self, params: Params) -> Any:
        key = ("short_description", params.string("language_code") or "")
        self.descriptions[key] = params.string("short_description") or ""
        return True

    @api_method("getMyShortDescription")
    async def get_my_short_description(self, params: Params) -> Any:
        key = ("short_description", params.string("language_code") or "")
        return {"short_description": self.descriptions.get(key, "")}

    # -- chats and files ------------------------------------------------------------------------------

    @api_method("getChat")
    async def get_chat(self, params: Params) -> Any:
        chat = self._chat(params, writing=False)
        gifts = ("unlimited_gifts", "limited_gifts", "unique_gifts", "premium_subscription", "gifts_from_channels")
        return {
            **chat.to_json(),
            "accent_color_id": 0,
            "max_reaction_count": 11,
            "accepted_gift_types": dict.fromkeys(gifts, False),
        }

    @api_method("getChatMember")
    async def get_chat_member(self, params: Params) -> Any:
        chat = self._chat(params, writing=False)
        user_id = _require(params.integer("user_id"), "user_id is empty")
        if user_id == self.world.bot.id:
            if chat.type == "private":
                status = "kicked" if chat.blocked else "member"
            elif not chat.bot_is_member:
                status = "left"
            else:
                status = "administrator" if chat.bot_is_admin else "member"
            return _member_json(self.world.bot, status)
        user = self.world.users.get(user_id)
        if user is None:
            raise bad_request("user not found")
        if chat.type == "private":
            return _member_json(user, "member" if user_id == chat.id else "left")
        return _member_json(user, chat.members.get(user_id, "left"))

    @api_method("getFile")
    async def get_file(self, params: Params) -> Any:
        file_id = params.string("file_id") or ""
        stored = self.world.files.get(file_id)
        if stored is None:
            raise bad_request("invalid file_id")
        if stored.size > MAX_DOWNLOAD_BYTES:
            raise bad_request("file is too big")
        return {
            "file_id": stored.file_id,
            "file_unique_id": stored.file_unique_id,
            "file_size": stored.size,
            "file_path": stored.file_path,
        }


def _scope_name(scope: JsonDict) -> str:
    kind = scope["type"]
    if kind in ("default", "all_private_chats", "all_group_chats", "all_chat_administrators"):
        return str(kind)
    if kind in ("chat", "chat_administrators"):
        return f"{kind}:{scope.get('chat_id')}"
    if kind == "chat_member":
        return f"{kind}:{scope.get('chat_id')}:{scope.get('user_id')}"
    raise bad_request("can't parse BotCommandScope JSON object")


def _photo_sizes(files: FileStore, stored: StoredFile) -> list[JsonDict]:
    width, height = stored.width or 1, stored.height or 1
    original = {
        "file_id": stored.file_id,
        "file_unique_id": stored.file_unique_id,
        "file_size": stored.size,
        "width": width,
        "height": height,
    }
    if max(width, height) <= 320:
        return [original]
    scale = 320 / max(width, height)
    # The thumbnail shares the original bytes: nothing here needs real resampling.
    thumb = files.add(stored.data, "photo", extension=".jpg", width=round(width * scale), height=round(height * scale))
    small = {
        "file_id": thumb.file_id,
        "file_unique_id": thumb.file_unique_id,
        "file_size": thumb.size,
        "width": thumb.width,
        "height": thumb.height,
    }
    return [small, original]


def _document_json(stored: StoredFile) -> JsonDict:
    document: JsonDict = {
        "file_id": stored.file_id,
        "file_unique_id": stored.file_unique_id,
        "file_size": stored.size,
    }
    if stored.file_name:
        document["file_name"] = stored.file_name
    if stored.mime_type:
        document["mime_type"] = stored.mime_type
    return document


# =====================================================================================================
# The server
# =====================================================================================================

_API_PATH = re.compile(r"^/bot(?P<token>[^/]+)/(?P<method>[^/]*)$")
_FILE_PATH = re.compile(r"^/file/bot(?P<token>[^/]+)/(?P<path>.+)$")


class FakeTelegram:
    """The fake Bot API server and the entry point of the client API.

    Use as ``async with FakeTelegram() as fake:`` and point PTB at ``fake.base_url`` /
    ``fake.base_file_url``. ``fake.calls`` logs every request; ``fake.rejections`` the failed ones, so a
    fixture can assert that the bot never triggered an error.
    """

    def __init__(
        self,
        token: str = "123456:TEST-TOKEN",
        bot_username: str = "waystation_test_bot",
        bot_first_name: str = "Waystation",
    ) -> None:
        self.token = token
        head = token.split(":", 1)[0]
        self.bot = UserInfo(
            id=int(head) if head.isdigit() else 123456, first_name=bot_first_name, username=bot_username, is_bot=True
        )
        self.world = World(self.bot)
        self.flood = FloodControl()
        self.faults = FaultInjector()
        self.webhook = WebhookSender(self.world.updates, clock=lambda: self.world.now())
        self.api = BotApi(self.world, self.webhook, self.flood)
        self.calls: list[ApiCall] = []
        self.host = "127.0.0.1"
        self.port = 0
        self._runner: web.AppRunner | None = None
        self._user_ids = itertools.count(700_000_001)
        self._group_ids = itertools.count(1)

    # -- lifecycle ------------------------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=1.0, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        await site.start()
        self._runner = runner
        self.host = host
        self.port = int(runner.addresses[0][1])
        self.api.closing = False

    async def stop(self) -> None:
        self.api.closing = True
        self.world.updates.changes.fire()
        await self.webhook.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeTelegram:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/bot"

    @property
    def base_file_url(self) -> str:
        return f"http://{self.host}:{self.port}/file/bot"

    @property
    def now(self) -> Callable[[], float]:
        """Clock for message dates (seconds since the epoch); assign another callable to move time."""
        return self.world.now

    @now.setter
    def now(self, clock: Callable[[], float]) -> None:
        self.world.now = clock

    # -- HTTP -----------------------------------------------------------------------------------------

    def _record(self, method: str, params: JsonDict, status: int, description: str | None, injected: bool) -> None:
        self.calls.append(ApiCall(method, params, status, description, self.world.now(), injected))
        if status >= 400 and not injected and status != 409:
            log.info("fake telegram rejected %s: %s %s", method, status, description)

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        file_match = _FILE_PATH.match(request.path)
        if file_match is not None and request.method in ("GET", "HEAD"):
            return self._serve_file(file_match["token"], file_match["path"])
        match = _API_PATH.match(request.path)
        if match is None:
            return web.json_response(ApiError(404, "Not Found").to_json(), status=404)
        method = match["method"]
        if match["token"] != self.token:
            self._record(method, {}, 401, "Unauthorized", False)
            return web.json_response(ApiError(401, "Unauthorized").to_json(), status=401)
        entry = _METHODS.get(method.lower())
        if entry is None:
            self._record(method, {}, 404, "Not Found", False)
            return web.json_response(ApiError(404, "Not Found").to_json(), status=404)
        method, handler = entry
        params: Params | None = None
        try:
            params = await Params.from_request(request)
            fault = self.faults.take(method)
            if fault is not None:
                return self._inject(request, method, params, fault)
            result = await handler(self.api, params)
        except ApiError as err:
            self._record(method, params.logged() if params else {}, err.status, err.description, False)
            return web.json_response(err.to_json(), status=err.status)
        except Exception as exc:
            log.exception("fake telegram crashed in %s", method)
            crash = ApiError(500, f"Internal Server Error: fake telegram crashed: {exc!r}")
            self._record(method, params.logged() if params else {}, 500, crash.description, False)
            return web.json_response(crash.to_json(), status=500)
        self._record(method, params.logged(), 200, None, False)
        return web.json_response({"ok": True, "result": result})

    def _inject(self, request: web.Request, method: str, params: Params, fault: FaultKind) -> web.StreamResponse:
        self._record(method, params.logged(), 0 if fault == "drop" else int(fault), f"injected {fault}", True)
        if fault == "drop":
            if request.transport is not None:
                request.transport.abort()
            return web.Response(status=500)
        status = int(fault)
        if status == 429:  # what Telegram's flood control answers, nothing done
            retry = max(self.flood.retry_after, 1)
            error = ApiError(429, f"Too Many Requests: retry after {retry}", {"retry_after": retry})
            return web.json_response(error.to_json(), status=429)
        description = "Internal Server Error" if status == 500 else "Bad Gateway"
        return web.json_response(ApiError(status, description).to_json(), status=status)

    def _serve_file(self, token: str, path: str) -> web.StreamResponse:
        stored = self.world.files.by_path(path) if token == self.token else None
        if stored is None:
            return web.json_response(ApiError(404, "Not Found").to_json(), status=404)
        return web.Response(body=stored.data, content_type=stored.mime_type or "application/octet-stream")

    # -- control and inspection -----------------------------------------------------------------------

    @property
    def rejections(self) -> list[ApiCall]:
        """Failed requests, minus getUpdates conflicts (long-poll noise) and injected faults."""
        return [c for c in self.calls if c.status >= 400 and not c.injected and c.status != 409]

    def calls_to(self, method: str) -> list[ApiCall]:
        return [c for c in self.calls if c.method.lower() == method.lower()]

    def set_flood_limits(
        self,
        per_chat_per_second: float | None = None,
        per_group_per_minute: int | None = None,
        global_per_second: int | None = None,
        retry_after: int = 1,
    ) -> None:
        self.flood.configure(per_chat_per_second, per_group_per_minute, global_per_second, retry_after)

    def inject_faults(self, count: int, kind: FaultKind = "500", methods: set[str] | None = None) -> None:
        self.faults.add(count, kind, methods)

    def set_fault_rate(
        self,
        rate: float,
        kinds: Iterable[FaultKind] = ("429", "500", "502", "drop"),
        methods: set[str] | None = None,
        seed: int | None = None,
    ) -> None:
        """From now on fail each matching request with probability `rate` (0 stops): a 429 with retry_after, a 500,
        a 502, or a dropped connection — each before the request is acted on, so nothing is done twice."""
        self.faults.set_rate(rate, kinds, methods, seed)

    def commands(
        self,
        language_code: str | None = None,
        scope_type: str = "default",
        *,
        chat_id: int | None = None,
        user_id: int | None = None,
    ) -> list[JsonDict]:
        scope: JsonDict = {"type": scope_type, "chat_id": chat_id, "user_id": user_id}
        return copy.deepcopy(self.api.commands.get((_scope_name(scope), language_code or ""), []))

    @property
    def webhook_url(self) -> str:
        return self.webhook.url

    @property
    def webhook_deliveries(self) -> list[WebhookDelivery]:
        return list(self.webhook.deliveries)

    @property
    def pending_updates(self) -> list[JsonDict]:
        return self.world.updates.snapshot()

    def redeliver(self, update_id: int) -> None:
        """Deliver update ``update_id`` a second time, as Telegram does when a webhook's answer got lost.

        Webhook mode only: in polling mode the bot's offset has already confirmed the update, so Telegram (and
        this fake) would drop the copy unseen; there a duplicate comes from a restart before the offset moved.
        """
        if not self.webhook.url:
            raise AssertionError("redeliver() needs webhook mode (a polling bot's offset already confirmed the update)")
        self.world.updates.redeliver(update_id)

    async def wait_updates_consumed(self, timeout: float = 5.0) -> None:
        """Wait until the bot has taken every queued update (confirmed by offset or delivered by webhook)."""
        queue = self.world.updates
        if await _wait_for_pulse(queue.changes, lambda: len(queue) == 0, timeout) is None:
            pending = [next(k for k in u if k != "update_id") for u in queue.snapshot()]
            raise AssertionError(f"{len(pending)} update(s) still pending after {timeout}s: {pending}")

    def chat(self, chat_id: int) -> ChatState:
        return self.world.chats[chat_id]

    def file(self, file_id: str) -> StoredFile | None:
        return self.world.files.get(file_id)

    def add_listener(self, listener: Callable[[int], None]) -> None:
        """Call ``listener(chat_id)`` whenever a chat changes (the demo page pushes updates this way)."""
        self.world.listeners.append(listener)

    # -- actors ---------------------------------------------------------------------------------------

    def user(
        self,
        first_name: str = "Ann",
        *,
        last_name: str | None = None,
        username: str | None = None,
        language_code: str | None = "en",
        user_id: int | None = None,
        phone_number: str | None = None,
    ) -> FakeUser:
        """Create a user who has started a private chat with the bot."""
        uid = user_id if user_id is not None else next(self._user_ids)
        if uid in self.world.users:
            raise ValueError(f"user {uid} already exists")
        info = UserInfo(
            id=uid,
            first_name=first_name,
            last_name=last_name,
            username=username,
            language_code=language_code,
            phone_number=phone_number or f"+1555{uid % 10_000_000:07d}",
        )
        self.world.users[uid] = info
        for kind, value in (
            ("name", first_name),
            ("name", last_name),
            ("name", username),
            ("phone", info.phone_number),
        ):
            _note_personal(kind, value)
        chat = ChatState(id=uid, type="private", user=info, username=username)
        self.world.chats[uid] = chat
        return FakeUser(self, info, chat)

    def group(
        self,
        title: str = "Staff",
        *,
        chat_id: int | None = None,
        members: Iterable[FakeUser] = (),
        username: str | None = None,
    ) -> FakeGroup:
        """Create a supergroup the bot is an administrator of."""
        gid = chat_id if chat_id is not None else -1_001_000_000_000 - next(self._group_ids)
        if gid in self.world.chats:
            raise ValueError(f"chat {gid} already exists")
        chat = ChatState(id=gid, type="supergroup", title=title, username=username)
        for member in members:
            chat.members[member.id] = "member"
        self.world.chats[gid] = chat
        return FakeGroup(self, chat)

    def block(self, user: FakeUser) -> None:
        """The user blocks the bot: sends fail with 403 and the bot gets a my_chat_member update."""
        self._set_blocked(user, True)

    def unblock(self, user: FakeUser) -> None:
        self._set_blocked(user, False)

    def _set_blocked(self, user: FakeUser, blocked: bool) -> None:
        chat = user.chat
        if chat.blocked == blocked:
            return
        chat.blocked = blocked
        old, new = ("member", "kicked") if blocked else ("kicked", "member")
        self.world.updates.push(
            "my_chat_member",
            {
                "chat": chat.to_json(),
                "from": user.info.to_json(),
                "date": self.world.timestamp(),
                "old_chat_member": _member_json(self.bot, old),
                "new_chat_member": _member_json(self.bot, new),
            },
        )


# =====================================================================================================
# Client API: what tests do as Telegram users
# =====================================================================================================


class _ChatReader:
    """Reading helpers over one chat, shared by users (their private chat) and groups."""

    def __init__(self, fake: FakeTelegram, chat: ChatState) -> None:
        self.fake = fake
        self.chat = chat

    @property
    def chat_id(self) -> int:
        return self.chat.id

    @property
    def messages(self) -> list[BotMessage]:
        """All bot messages in the chat, oldest first (deleted ones included, flagged)."""
        return [m for m in self.chat.messages if m.from_bot]

    @property
    def history(self) -> list[BotMessage]:
        """Every message in the chat, the user's included."""
        return list(self.chat.messages)

    @property
    def last(self) -> BotMessage | None:
        """The newest bot message that is not deleted."""
        return next((m for m in reversed(self.chat.messages) if m.from_bot and not m.deleted), None)

    def _fail(self, what: str, timeout: float, chat: ChatState | None = None) -> AssertionError:
        chat = chat or self.chat
        return AssertionError(f"{what} within {timeout}s in chat {chat.id}; the chat contains:\n  {chat.describe()}")

    async def receive(self, timeout: float = 5.0, *, kind: str | None = None) -> BotMessage:
        """Wait for the next bot message (of ``kind``, if given) that receive() has not returned yet."""
        chat = self.chat

        def unread() -> BotMessage | None:
            for message in chat.messages:
                fresh = message.from_bot and message.message_id not in chat.received
                if fresh and (kind is None or message.kind == kind):
                    return message
            return None

        message = await _wait_for_pulse(chat.changes, unread, timeout)
        if message is None:
            raise self._fail(f"no new bot message{f' of kind {kind!r}' if kind else ''}", timeout)
        chat.received.add(message.message_id)
        return message

    async def receive_all(self, n: int, timeout: float = 5.0) -> list[BotMessage]:
        """Receive ``n`` messages, all within ``timeout`` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        received = []
        for _ in range(n):
            received.append(await self.receive(max(deadline - loop.time(), 0.0)))
        return received

    async def wait_until(
        self,
        predicate: Callable[[list[BotMessage]], T | None],
        timeout: float = 5.0,
        chat: _ChatReader | None = None,
    ) -> T:
        """Re-check ``predicate(bot messages)`` on every change in the chat; return its truthy result."""
        state = chat.chat if chat is not None else self.chat

        def check() -> T | None:
            result = predicate([m for m in state.messages if m.from_bot])
            return result or None

        result = await _wait_for_pulse(state.changes, check, timeout)
        if result is None:
            raise self._fail("condition not met", timeout, state)
        return result

    async def wait_edit(self, message_id: int, timeout: float = 5.0) -> BotMessage:
        """Wait for the next edit of a message and return its record."""
        message = self.chat.find(message_id)
        if message is None:
            raise AssertionError(f"no message {message_id} in chat {self.chat.id}:\n  {self.chat.describe()}")
        edits_before = message.edits
        edited = await _wait_for_pulse(
            self.chat.changes, lambda: message if message.edits > edits_before else None, timeout
        )
        if edited is None:
            raise self._fail(f"message {message_id} was not edited", timeout)
        return edited


class _OwnContact(Enum):
    """Sentinel: "the sender's own user id" for send_contact."""

    OWN = "own"


class FakeUser(_ChatReader):
    """A Telegram user in a private chat with the bot; every send queues one genuine Update."""

    def __init__(self, fake: FakeTelegram, info: UserInfo, chat: ChatState) -> None:
        super().__init__(fake, chat)
        self.info = info

    def __repr__(self) -> str:
        return f"FakeUser({self.info.first_name!r}, id={self.info.id})"

    @property
    def id(self) -> int:
        return self.info.id

    @property
    def first_name(self) -> str:
        return self.info.first_name

    @property
    def username(self) -> str | None:
        return self.info.username

    @property
    def language_code(self) -> str | None:
        return self.info.language_code

    @property
    def blocked(self) -> bool:
        return self.chat.blocked

    # -- sending --------------------------------------------------------------------------------------

    def _target(self, chat: _ChatReader | None) -> ChatState:
        if chat is None or chat.chat is self.chat:
            return self.chat
        if isinstance(chat, FakeUser):
            raise AssertionError("a user can only write to their own private chat with the bot or to a group")
        chat.chat.members.setdefault(self.id, "member")
        return chat.chat

    def _post(
        self,
        chat: _ChatReader | None,
        kind: str,
        *,
        text: str | None = None,
        caption: str | None = None,
        entities: list[JsonDict] | None = None,
        media: JsonDict | None = None,
        reply_to: int | None = None,
    ) -> int:
        world = self.fake.world
        target = self._target(chat)
        message = world.new_message(target, kind, from_bot=False, sender_id=self.id)
        message.text, message.caption = text, caption
        message.entities = entities if entities is not None else _auto_entities(text or caption or "")
        message.html = to_html(message.content, message.entities)
        message.media = media or {}
        if reply_to is not None:
            if target.find(reply_to) is None:
                raise AssertionError(f"cannot reply to missing message {reply_to} in chat {target.id}")
            message.reply_to_message_id = reply_to
        location = (media or {}).get("location")
        if isinstance(location, dict):
            message.latitude, message.longitude = location["latitude"], location["longitude"]
            _note_personal("location", (message.latitude, message.longitude))
        contact = (media or {}).get("contact")
        if isinstance(contact, dict):
            _note_personal("phone", contact.get("phone_number"))
            _note_personal("name", contact.get("first_name"))
        origin = (media or {}).get("forward_origin")
        if isinstance(origin, dict):
            _note_personal("name", origin.get("sender_user_name"))
        _note_personal("text", text)
        _note_personal("text", caption)
        world.add_message(target, message)
        return world.updates.push("message", world.message_json(message))

    async def send_text(self, text: str, chat: _ChatReader | None = None, *, reply_to: int | None = None) -> int:
        return self._post(chat, "text", text=text, reply_to=reply_to)

    async def send_command(self, command: str = "/start", args: str = "", chat: _ChatReader | None = None) -> int:
        """Send ``/command args``; in groups the command carries ``@bot_username`` like clients add it."""
        name = command if command.startswith("/") else f"/{command}"
        if chat is not None and chat.chat.type != "private" and "@" not in name:
            name = f"{name}@{self.fake.bot.username}"
        text = f"{name} {args}" if args else name
        entity = {"type": "bot_command", "offset": 0, "length": utf16_len(name)}
        return self._post(chat, "text", text=text, entities=[entity])

    async def send_location(self, latitude: float, longitude: float, chat: _ChatReader | None = None) -> int:
        return self._post(chat, "location", media={"location": {"latitude": latitude, "longitude": longitude}})

    async def send_contact(
        self,
        phone: str,
        first_name: str | None = None,
        user_id: int | _OwnContact | None = _OwnContact.OWN,
        chat: _ChatReader | None = None,
    ) -> int:
        """Share a contact: by default the user's own (``user_id`` = their id), else someone else's."""
        contact_user = self.id if user_id is _OwnContact.OWN else user_id
        contact: JsonDict = {
            "phone_number": phone,
            "first_name": first_name or (self.first_name if contact_user == self.id else "Contact"),
        }
        if contact_user == self.id and self.info.last_name:
            contact["last_name"] = self.info.last_name
        if isinstance(contact_user, int):
            contact["user_id"] = contact_user
        return self._post(chat, "contact", media={"contact": contact})

    async def send_photo(
        self, data: bytes = TINY_JPEG, caption: str | None = None, chat: _ChatReader | None = None
    ) -> int:
        size = image_size(data)
        if size is None:
            raise AssertionError("send_photo needs PNG/JPEG/GIF/WebP bytes")
        stored = self.fake.world.files.add(data, "photo", extension=".jpg", width=size[0], height=size[1])
        sizes = _photo_sizes(self.fake.world.files, stored)
        return self._post(chat, "photo", caption=caption, media={"photo": sizes})

    async def send_document(
        self,
        data: bytes,
        file_name: str,
        mime_type: str,
        caption: str | None = None,
        chat: _ChatReader | None = None,
    ) -> int:
        stored = self.fake.world.files.add(data, "document", file_name=file_name, mime_type=mime_type)
        return self._post(chat, "document", caption=caption, media={"document": _document_json(stored)})

    async def send_sticker(self, emoji: str = "👍", chat: _ChatReader | None = None) -> int:
        stored = self.fake.world.files.add(b"RIFF\x00\x00\x00\x00WEBP", "sticker", extension=".webp")
        sticker = {
            "file_id": stored.file_id,
            "file_unique_id": stored.file_unique_id,
            "type": "regular",
            "width": 512,
            "height": 512,
            "is_animated": False,
            "is_video": False,
            "emoji": emoji,
            "file_size": stored.size,
        }
        return self._post(chat, "sticker", media={"sticker": sticker})

    async def send_voice(self, duration: int = 2, chat: _ChatReader | None = None) -> int:
        stored = self.fake.world.files.add(b"OggS\x00fake-voice", "voice", extension=".oga", mime_type="audio/ogg")
        voice = {
            "file_id": stored.file_id,
            "file_unique_id": stored.file_unique_id,
            "duration": duration,
            "mime_type": "audio/ogg",
            "file_size": stored.size,
        }
        return self._post(chat, "voice", media={"voice": voice})

    async def forward_text(self, text: str, origin_name: str = "Someone", chat: _ChatReader | None = None) -> int:
        """Forward a text message from a user with hidden forwards (a ``hidden_user`` forward_origin)."""
        origin = {"type": "hidden_user", "sender_user_name": origin_name, "date": self.fake.world.timestamp() - 60}
        return self._post(chat, "text", text=text, media={"forward_origin": origin})

    async def edit_text(self, message_id: int, new_text: str, chat: _ChatReader | None = None) -> int:
        """Edit one of the user's own text messages: queues an edited_message update."""
        world = self.fake.world
        target = self._target(chat)
        message = target.find(message_id)
        if message is None or message.from_bot or message.sender_id != self.id or message.text is None:
            raise AssertionError(f"message {message_id} is not a text message of user {self.id}")
        message.history.append(message.text)
        _note_personal("text", new_text)
        message.text = new_text
        message.entities = _auto_entities(new_text)
        message.html = to_html(new_text, message.entities)
        message.edits += 1
        message.edit_date = world.timestamp()
        world.changed(target)
        return world.updates.push("edited_message", world.message_json(message))

    # -- keyboards ------------------------------------------------------------------------------------

    async def tap_reply_button(
        self, text: str, location: tuple[float, float] | None = None, chat: _ChatReader | None = None
    ) -> int:
        """Tap a button of the reply keyboard the bot currently shows in the chat.

        Sends what Telegram would: the button text, a location (``request_location``; coordinates from
        ``location``) or the user's own contact (``request_contact``).
        """
        target = self._target(chat)
        keyboard = _current_reply_keyboard(target)
        if keyboard is None:
            raise AssertionError(f"no reply keyboard is shown in chat {target.id}:\n  {target.describe()}")
        buttons = [b if isinstance(b, dict) else {"text": b} for row in keyboard["keyboard"] for b in row]
        button = next((b for b in buttons if b.get("text") == text), None)
        if button is None:
            raise AssertionError(f"no reply button {text!r}; the keyboard has {[b.get('text') for b in buttons]}")
        if button.get("request_location"):
            if location is None:
                raise AssertionError(f"button {text!r} requests a location: pass location=(lat, lon)")
            return await self.send_location(location[0], location[1], chat=chat)
        if button.get("request_contact"):
            return await self.send_contact(self.info.phone_number or "+15550000000", chat=chat)
        return await self.send_text(text, chat=chat)

    async def tap_inline(
        self, text: str, *, message: BotMessage | int | None = None, chat: _ChatReader | None = None
    ) -> str:
        """Tap the inline button labelled ``text``; returns the callback query id.

        Looks on ``message`` if given, else on the newest message in the chat that has such a button.
        """
        target = self._target(chat)
        candidates = _inline_candidates(target, message)
        for candidate in candidates:
            for row in candidate.inline_keyboard:
                for button in row:
                    if button.get("text") != text:
                        continue
                    if button.get("callback_data") is None:
                        action = {k: v for k, v in button.items() if k != "text"}
                        raise AssertionError(f"inline button {text!r} is not a callback button: {action}")
                    return self._callback(target, candidate, str(button["callback_data"]))
        shown = [(m.message_id, m.button_texts) for m in candidates if m.inline_keyboard]
        raise AssertionError(f"no inline button {text!r} in chat {target.id}; buttons shown: {shown}")

    async def send_callback(self, message_id: int, data: str, chat: _ChatReader | None = None) -> str:
        """Send a callback query with arbitrary (possibly forged) data for a message; returns its id."""
        target = self._target(chat)
        message = target.find(message_id)
        if message is None or message.deleted:
            raise AssertionError(f"no message {message_id} in chat {target.id}")
        return self._callback(target, message, data)

    def _callback(self, chat: ChatState, message: BotMessage, data: str) -> str:
        world = self.fake.world
        query_id = world.next_callback_id()
        world.callbacks[query_id] = CallbackQueryRecord(query_id, self.id, chat.id, message.message_id, data)
        world.updates.push(
            "callback_query",
            {
                "id": query_id,
                "from": self.info.to_json(),
                "message": world.message_json(message),
                "chat_instance": str(abs(chat.id) * 31 + 7),
                "data": data,
            },
        )
        return query_id

    async def callback_answer(self, query_id: str, timeout: float = 5.0) -> tuple[str | None, bool]:
        """Wait for answerCallbackQuery on a query; returns (text, show_alert)."""
        world = self.fake.world
        record = world.callbacks.get(query_id)
        if record is None:
            raise AssertionError(f"unknown callback query {query_id}")
        answered = await _wait_for_pulse(world.callback_answers, lambda: record if record.answered else None, timeout)
        if answered is None:
            raise AssertionError(f"callback query {query_id} (data={record.data!r}) was not answered in {timeout}s")
        return answered.text, answered.show_alert


class FakeGroup(_ChatReader):
    """A supergroup (e.g. the staff group) with the bot as administrator."""

    def __repr__(self) -> str:
        return f"FakeGroup({self.title!r}, id={self.id})"

    @property
    def id(self) -> int:
        return self.chat.id

    @property
    def title(self) -> str:
        return self.chat.title or ""

    def add_member(self, user: FakeUser, status: str = "member") -> None:
        """Add a user; ``status`` is a ChatMember status such as "member", "administrator" or "creator"."""
        self.chat.members[user.id] = status

    @property
    def bot_is_member(self) -> bool:
        return self.chat.bot_is_member

    @bot_is_member.setter
    def bot_is_member(self, value: bool) -> None:
        self.chat.bot_is_member = value

    @property
    def bot_is_admin(self) -> bool:
        return self.chat.bot_is_admin

    @bot_is_admin.setter
    def bot_is_admin(self, value: bool) -> None:
        self.chat.bot_is_admin = value


_COMMAND = re.compile(r"(?<![\w/])/[A-Za-z0-9_]{1,32}(?:@[A-Za-z0-9_]{3,32})?")


def _auto_entities(text: str) -> list[JsonDict]:
    """Entities Telegram derives from user text; only bot commands matter to handlers here."""
    entities = []
    for match in _COMMAND.finditer(text):
        offset = utf16_len(text[: match.start()])
        entities.append({"type": "bot_command", "offset": offset, "length": utf16_len(match.group())})
    return entities


def _current_reply_keyboard(chat: ChatState) -> JsonDict | None:
    for message in reversed(chat.messages):
        markup = message.reply_markup if message.from_bot else None
        if not markup:
            continue
        if "keyboard" in markup:
            return markup
        if "remove_keyboard" in markup:
            return None
    return None


def _inline_candidates(chat: ChatState, message: BotMessage | int | None) -> list[BotMessage]:
    if message is None:
        return [m for m in reversed(chat.messages) if m.from_bot and not m.deleted]
    message_id = message if isinstance(message, int) else message.message_id
    found = chat.find(message_id)
    if found is None or found.deleted:
        raise AssertionError(f"message {message_id} does not exist (or was deleted) in chat {chat.id}")
    return [found]
