"""The fake Bot API, driven by python-telegram-bot's real ``Bot`` over HTTP.

Two things are proven here: PTB parses every response into its objects without leftovers (no unknown
fields in ``api_kwargs``, no missing required ones), and rule violations come back as the exceptions PTB
raises for real Telegram errors, with Telegram's descriptions.
"""

from __future__ import annotations

import asyncio
import datetime as dtm
import struct
import warnings
import zlib
from collections.abc import AsyncIterator
from html import escape
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from telegram import (
    Bot,
    BotCommand,
    BotCommandScopeAllPrivateChats,
    BotCommandScopeChat,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    KeyboardButton,
    MenuButtonCommands,
    Message,
    ReplyKeyboardMarkup,
    ReplyKeyboardRemove,
    TelegramObject,
    Update,
)
from telegram.constants import ChatAction, ParseMode
from telegram.error import BadRequest, Conflict, Forbidden, InvalidToken, NetworkError, RetryAfter, TelegramError

from bot.sandbox.fake_telegram import TINY_JPEG, BotMessage, FakeTelegram


def assert_genuine(obj: object) -> None:
    """Every field the fake sent is known to PTB 22: nothing landed in ``api_kwargs``."""
    if isinstance(obj, TelegramObject):
        assert not obj.api_kwargs, f"{type(obj).__name__} got unknown fields {obj.api_kwargs}"
        for value in obj._get_attrs(remove_bot=True).values():
            assert_genuine(value)
    elif isinstance(obj, (list, tuple)):
        for item in obj:
            assert_genuine(item)


def make_png(width: int, height: int) -> bytes:
    rows = b"".join(b"\x00" + b"\x10\x80\xf0" * width for _ in range(height))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def inline(*buttons: tuple[str, str]) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup([[InlineKeyboardButton(text, callback_data=data) for text, data in buttons]])


async def drain(tg: Bot) -> tuple[Update, ...]:
    updates = await tg.get_updates(timeout=0)
    if updates:
        await tg.get_updates(offset=updates[-1].update_id + 1, timeout=0)
    assert_genuine(list(updates))
    return updates


# -- basics ---------------------------------------------------------------------------------------------


async def test_get_me(fake: FakeTelegram, tg: Bot) -> None:
    me = await tg.get_me()
    assert_genuine(me)
    assert (me.id, me.username, me.first_name, me.is_bot) == (123456, "waystation_test_bot", "Waystation", True)
    assert fake.calls[0].method == "getMe"
    assert fake.rejections == []


async def test_wrong_token_is_unauthorized(fake: FakeTelegram) -> None:
    stranger = Bot("999:WRONG", base_url=fake.base_url)
    try:
        with pytest.raises(InvalidToken):
            await stranger.initialize()
    finally:
        await stranger.shutdown()
    assert fake.rejections[-1].status == 401


async def test_raw_http_encodings_and_case_insensitive_methods(fake: FakeTelegram) -> None:
    ann = fake.user()
    url = f"{fake.base_url}{fake.token}"
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{url}/GETME") as response:
            assert (await response.json())["result"]["username"] == "waystation_test_bot"
        async with http.get(f"{url}/sendMessage", params={"chat_id": ann.id, "text": "query"}) as response:
            assert (await response.json())["ok"] is True
        markup = '{"inline_keyboard": [[{"text": "A", "callback_data": "a"}]]}'
        form = {"chat_id": str(ann.id), "text": "form", "reply_markup": markup}
        async with http.post(f"{url}/sendmessage", data=form) as response:
            assert (await response.json())["result"]["reply_markup"]["inline_keyboard"][0][0]["text"] == "A"
        body = {"chat_id": ann.id, "text": "<b>json</b>", "parse_mode": "HTML"}
        async with http.post(f"{url}/sendMessage", json=body) as response:
            assert (await response.json())["result"]["entities"] == [{"type": "bold", "offset": 0, "length": 4}]
        async with http.post(f"{url}/noSuchMethod", json={}) as response:
            assert response.status == 404
            assert await response.json() == {"ok": False, "error_code": 404, "description": "Not Found"}
    assert [m.text for m in ann.messages] == ["query", "form", "json"]


# -- text and HTML --------------------------------------------------------------------------------------

ROUND_TRIP = (
    "<b>bold <i>both <u>all three</u></i></b> plain <s>gone</s> "
    '<span class="tg-spoiler">secret</span> <a href="https://example.org/x">link</a> '
    "<code>x &lt; y</code>\n<blockquote>quoted <b>bold</b></blockquote>\n"
    '<blockquote expandable>long</blockquote> 😀 <tg-emoji emoji-id="5368324170671202286">👍</tg-emoji> '
    "<pre>block</pre>"
)


async def test_html_round_trips_into_ptb_entities(fake: FakeTelegram, tg: Bot) -> None:
    ann = fake.user()
    sent = await tg.send_message(ann.id, ROUND_TRIP, parse_mode=ParseMode.HTML)
    assert_genuine(sent)
    assert sent.text_html == ROUND_TRIP
    assert sent.text is not None
    bold = [e for e in sent.entities if e.type == "bold"]
    assert [(e.offset, e.length) for e in bold] == [(0, 19), (sent.text.index("quoted bold") + 7, 4)]
    emoji = next(e for e in sent.entities if e.type == "custom_emoji")
    assert emoji.custom_emoji_id == "5368324170671202286"
    assert emoji.offset == sent.text.index("👍") + 1  # 😀 before it takes two UTF-16 units
    record = await ann.receive()
    assert record.html == ROUND_TRIP
    assert record.parse_mode == "HTML"
    assert record.text == sent.text


async def test_unescaped_user_text_is_rejected_escaped_is_accepted(fake: FakeTelegram, tg: Bot) -> None:
    ann = fake.user()
    hostile = '</b>Tom <3 & "Jerry"'
    with pytest.raises(BadRequest, match=r"^Can't parse entities: unexpected end tag at byte offset 0$"):
        await tg.send_message(ann.id, hostile, parse_mode=ParseMode.HTML)
    assert fake.rejections[-1].description == "Bad Request: can't parse entities: Unexpected end tag at byte offset 0"
    sent = await tg.send_message(ann.id, escape(hostile), parse_mode=ParseMode.HTML)
    assert sent.text == hostile
    assert sent.entities == ()


async def test_text_limits_count_utf16_units(fake: FakeTelegram, tg: Bot) -> None:
    ann = fake.user()
    await tg.send_message(ann.id, "x" * 4096)
    with pytest.raises(BadRequest, match="Message is too long"):
        await tg.send_message(ann.id, "x" * 4097)
    await tg.send_message(ann.id, "😀" * 2048)  # 4096 UTF-16 code units
    with pytest.raises(BadRequest, match="Message is too long"):
        await tg.send_message(ann.id, "😀" * 2049)
    # Markup does not count: the limit applies to the parsed text.
    await tg.send_message(ann.id, "<b>" + "x" * 4096 + "</b>", parse_mode=ParseMode.HTML)
    with pytest.raises(BadRequest, match="Message text is empty"):
        await tg.send_message(ann.id, " \n <b></b> ", parse_mode=ParseMode.HTML)


async def test_surrounding_whitespace_is_trimmed_like_telegram(fake: FakeTelegram, tg: Bot) -> None:
    ann = fake.user()
    sent = await tg.send_message(ann.id, "\n  <b>hi</b> there \n", parse_mode=ParseMode.HTML)
    assert sent.text == "hi there"
    assert [(e.type, e.offset, e.length) for e in sent.entities] == [("bold", 0, 2)]


async def test_caption_limit(fake: FakeTelegram, tg: Bot) -> None:
    ann = fake.user()
    await tg.send_photo(ann.id, TINY_JPEG, caption="c" * 1024)
    with pytest.raises(BadRequest, match="Message caption is too long"):
        await tg.send_photo(ann.id, TINY_JPEG, caption="c" * 1025)


async def test_unsupported_parse_mode_and_markdown_pass_through(fake: FakeTelegram, tg: Bot) -> None:
    ann = fake.user()
    sent = await tg.send_message(ann.id, "*as is*", parse_mode=ParseMode.MARKDOWN_V2)
    assert sent.text == "*as is*"
    with pytest.raises(BadRequest, match="Unsupported parse_mode"):
        await tg.send_message(ann.id, "x", parse_mode="BBCode")


# -- keyboards ------------------------------------------------------------------------------------------


async def test_callback_data_is_limited_to_64_bytes(fake: FakeTelegram, tg: Bot) -> None:
    ann = fake.user()
    await tg.send_message(ann.id, "ok", reply_markup=inline(("A", "é" * 32)))
    with pytest.raises(BadRequest, match=r"^Button_data_invalid$"):
        await tg.send_message(ann.id, "too long", reply_markup=inline(("A", "x" * 65)))
    assert fake.rejections[-1].description == "Bad Request: BUTTON_DATA_INVALID"


@pytest.mark.parametrize(
    ("markup", "description"),
    [
        ({"inline_keyboard": [[{"text": "only text"}]]}, "Text buttons are unallowed in the inline keyboard"),
        ({"inline_keyboard": [[{"text": "", "callback_data": "x"}]]}, "Text must be non-empty"),
        ({"inline_keyboard": [[{"callback_data": "x"}]]}, 'Can\'t find field "text"'),
        ({"inline_keyboard": [[{"text": "two", "callback_data": "x", "url": "https://e.org"}]]}, "Exactly one"),
        ({"inline_keyboard": [[{"text": "bad", "url": "ftp://e.org"}]]}, "BUTTON_URL_INVALID"),
        (
            {"inline_keyboard": [[{"text": "b", "callback_data": str(i)} for i in range(101)]]},
            "reply markup is too long",
        ),
        ({"inline_keyboard": {"text": "x"}}, "must be an Array"),
        ({"keyboard": [["A"]], "input_field_placeholder": "p" * 65}, "can't parse reply keyboard markup"),
        ({"keyboard": [[{"text": ""}]]}, "Text must be non-empty"),
        ({"keyboard": []}, "can't parse reply keyboard markup"),
        ({"remove_keyboard": False}, "can't parse reply keyboard markup"),
        ({"hide": True}, "can't parse reply keyboard markup"),
    ],
)
async def test_malformed_reply_markup_is_rejected(fake: FakeTelegram, markup: dict[str, Any], description: str) -> None:
    ann = fake.user()
    async with aiohttp.ClientSession() as http:
        body = {"chat_id": ann.id, "text": "x", "reply_markup": markup}
        async with http.post(f"{fake.base_url}{fake.token}/sendMessage", json=body) as response:
            assert response.status == 400
            assert description in (await response.json())["description"]
    assert ann.messages == []


async def test_tap_reply_button_sends_text_location_or_contact(fake: FakeTelegram, tg: Bot) -> None:
    ann = fake.user("Ann", last_name="Lee")
    keyboard = ReplyKeyboardMarkup(
        [
            [KeyboardButton("📍 Share location", request_location=True)],
            [KeyboardButton("📞 Share phone", request_contact=True), "Help"],
        ],
        resize_keyboard=True,
        input_field_placeholder="Pick one",
    )
    sent = await tg.send_message(ann.id, "Choose", reply_markup=keyboard)
    assert sent.reply_markup is None  # reply keyboards are not part of a Message
    await ann.tap_reply_button("📍 Share location", location=(51.5, -0.12))
    await ann.tap_reply_button("📞 Share phone")
    await ann.tap_reply_button("Help")
    with pytest.raises(AssertionError, match="requests a location"):
        await ann.tap_reply_button("📍 Share location")
    with pytest.raises(AssertionError, match="no reply button 'Nope'"):
        await ann.tap_reply_button("Nope")
    location, contact, text = await drain(tg)
    assert location.message is not None and location.message.location is not None
    assert (location.message.location.latitude, location.message.location.longitude) == (51.5, -0.12)
    assert contact.message is not None and contact.message.contact is not None
    assert contact.message.contact.user_id == ann.id
    assert contact.message.contact.last_name == "Lee"
    assert text.message is not None and text.message.text == "Help"
    await tg.send_message(ann.id, "Bye", reply_markup=ReplyKeyboardRemove())
    with pytest.raises(AssertionError, match="no reply keyboard is shown"):
        await ann.tap_reply_button("Help")


async def test_tap_inline_sends_callback_query_and_sees_the_answer(fake: FakeTelegram, tg: Bot) -> None:
    ann = fake.user()
    first = await tg.send_message(ann.id, "Old", reply_markup=inline(("Yes", "old-yes")))
    await tg.send_message(ann.id, "Pick", reply_markup=inline(("Yes", "yes"), ("No", "no")))
    query_id = await ann.tap_inline("Yes")
    (update,) = await drain(tg)
    query = update.callback_query
    assert query is not None
    assert (query.id, query.data, query.from_user.id) == (query_id, "yes", ann.id)
    assert isinstance(query.message, Message) and query.message.text == "Pick"
    await query.answer("Saved", show_alert=True)
    assert await ann.callback_answer(query_id) == ("Saved", True)
    with pytest.raises(BadRequest, match="Query is too old and response timeout expired or query id is invalid"):
        await query.answer()

    older = await ann.tap_inline("Yes", message=first.message_id)
    forged = await ann.send_callback(first.message_id, "admin:delete-everything")
    updates = await drain(tg)
    assert [u.callback_query.data for u in updates if u.callback_query] == ["old-yes", "admin:delete-everything"]
    with pytest.raises(BadRequest, match="Message_too_long"):
        await tg.answer_callback_query(older, text="x" * 201)
    await tg.answer_callback_query(forged)
    assert await ann.callback_answer(forged) == (None, False)
    with pytest.raises(AssertionError, match="no inline button 'Maybe'"):
        await ann.tap_inline("Maybe")


# -- edits and deletes ----------------------------------------------------------------------------------


async def test_edits_follow_telegram_rules(fake: FakeTelegram, tg: Bot) -> None:
    ann = fake.user()
    sent = await tg.send_message(ann.id, "<b>Step 1</b>", parse_mode=ParseMode.HTML, reply_markup=inline(("Go", "go")))
    with pytest.raises(BadRequest, match="Message is not modified: specified new message content"):
        await tg.edit_message_text(
            "<b>Step 1</b>", ann.id, sent.message_id, parse_mode=ParseMode.HTML, reply_markup=inline(("Go", "go"))
        )
    waiter = asyncio.create_task(ann.wait_edit(sent.message_id))
    edited = await tg.edit_message_text("Step 2", ann.id, sent.message_id)  # no markup: keyboard removed
    assert isinstance(edited, type(sent))
    assert_genuine(edited)
    assert edited.reply_markup is None and edited.edit_date is not None
    record = await waiter
    assert (record.text, record.edits, record.history, record.reply_markup) == ("Step 2", 1, ["Step 1"], None)
    await tg.edit_message_reply_markup(ann.id, sent.message_id, reply_markup=inline(("Again", "again")))
    with pytest.raises(BadRequest, match="Message is not modified"):
        await tg.edit_message_reply_markup(ann.id, sent.message_id, reply_markup=inline(("Again", "again")))
    with pytest.raises(BadRequest, match="Message to edit not found"):
        await tg.edit_message_text("x", ann.id, 999)
    with pytest.raises(BadRequest, match="There is no caption in the message to edit"):
        await tg.edit_message_caption(ann.id, sent.message_id, caption="c")

    photo = await tg.send_photo(ann.id, TINY_JPEG, caption="<i>before</i>", parse_mode=ParseMode.HTML)
    after = await tg.edit_message_caption(ann.id, photo.message_id, caption="after")
    assert isinstance(after, type(sent)) and after.caption == "after"
    with pytest.raises(BadRequest, match="There is no text in the message to edit"):
        await tg.edit_message_text("x", ann.id, photo.message_id)

    assert await tg.delete_message(ann.id, sent.message_id)
    with pytest.raises(BadRequest, match="Message to delete not found"):
        await tg.delete_message(ann.id, sent.message_id)
    with pytest.raises(BadRequest, match="Message to edit not found"):
        await tg.edit_message_text("gone", ann.id, sent.message_id)
    assert ann.messages[0].deleted


async def test_user_messages_cannot_be_edited_by_the_bot(fake: FakeTelegram, tg: Bot) -> None:
    ann = fake.user()
    await ann.send_text("mine")
    (update,) = await drain(tg)
    assert update.message is not None
    with pytest.raises(BadRequest, match="Message can't be edited"):
        await tg.edit_message_text("yours", ann.id, update.message.message_id)


async def test_replies_reference_existing_messages(fake: FakeTelegram, tg: Bot) -> None:
    ann = fake.user()
    question = await tg.send_message(ann.id, "Question")
    answer = await tg.send_message(ann.id, "Answer", reply_to_message_id=question.message_id)
    assert answer.reply_to_message is not None and answer.reply_to_message.text == "Question"
    with pytest.raises(BadRequest, match="Message to be replied not found"):
        await tg.send_message(ann.id, "Lost", reply_to_message_id=999)
    await ann.send_text("re", reply_to=answer.message_id)
    (update,) = await drain(tg)
    assert update.message is not None and update.message.reply_to_message is not None
    assert update.message.reply_to_message.message_id == answer.message_id


# -- chats ----------------------------------------------------------------------------------------------


async def test_blocked_user_is_forbidden(fake: FakeTelegram, tg: Bot) -> None:
    ann = fake.user()
    fake.block(ann)
    with pytest.raises(Forbidden, match=r"^Forbidden: bot was blocked by the user$"):
        await tg.send_message(ann.id, "hello?")
    (update,) = await drain(tg)
    assert update.my_chat_member is not None
    assert update.my_chat_member.new_chat_member.status == "kicked"
    fake.unblock(ann)
    await tg.send_message(ann.id, "welcome back")
    assert [m.text for m in ann.messages] == ["welcome back"]


async def test_unknown_chat_is_not_found(fake: FakeTelegram, tg: Bot) -> None:
    with pytest.raises(BadRequest, match=r"^Chat not found$"):
        await tg.send_message(424242, "anyone?")
    assert fake.rejections[-1].description == "Bad Request: chat not found"


async def test_groups_chat_info_and_members(fake: FakeTelegram, tg: Bot) -> None:
    ann, bob = fake.user("Ann"), fake.user("Bob")
    staff = fake.group("Staff", members=[ann])
    staff.add_member(bob, "administrator")
    assert staff.id < -1_000_000_000_000
    await bob.send_command("/claim", "42", chat=staff)
    (update,) = await drain(tg)
    assert update.message is not None and update.message.chat.type == "supergroup"
    assert update.message.text == "/claim@waystation_test_bot 42"
    assert update.message.parse_entities(["bot_command"])  # PTB sees the command entity
    chat = await tg.get_chat(staff.id)
    assert_genuine(chat)
    assert chat.title == "Staff"
    member = await tg.get_chat_member(staff.id, ann.id)
    admin = await tg.get_chat_member(staff.id, bob.id)
    me = await tg.get_chat_member(staff.id, tg.id)
    assert_genuine([member, admin, me])
    assert (member.status, admin.status, me.status) == ("member", "administrator", "administrator")
    await tg.send_chat_action(staff.id, ChatAction.TYPING)
    assert staff.chat.actions == ["typing"]
    staff.bot_is_member = False
    with pytest.raises(Forbidden, match="bot is not a member of the supergroup chat"):
        await tg.send_message(staff.id, "hi")


async def test_location_venue_and_document(fake: FakeTelegram, tg: Bot) -> None:
    ann = fake.user()
    location = await tg.send_location(ann.id, latitude=51.5, longitude=-0.12)
    venue = await tg.send_venue(ann.id, latitude=51.51, longitude=-0.13, title="Shelter", address="1 High St")
    document = await tg.send_document(ann.id, b"a,b\n1,2\n", filename="report.csv", caption="CSV")
    assert_genuine([location, venue, document])
    assert venue.venue is not None and venue.venue.title == "Shelter" and venue.location is not None
    assert document.document is not None and document.document.file_name == "report.csv"
    records = await ann.receive_all(3)
    assert [r.kind for r in records] == ["location", "venue", "document"]
    assert (records[0].latitude, records[1].address, records[2].data) == (51.5, "1 High St", b"a,b\n1,2\n")
    with pytest.raises(BadRequest, match="Wrong latitude"):
        await tg.send_location(ann.id, latitude=91, longitude=0)


async def test_photo_upload_get_file_and_download(fake: FakeTelegram, tg: Bot) -> None:
    ann = fake.user()
    png = make_png(640, 320)
    sent = await tg.send_photo(ann.id, png, caption="chart")
    assert_genuine(sent)
    assert [(p.width, p.height) for p in sent.photo] == [(320, 160), (640, 320)]
    record = await ann.receive(kind="photo")
    assert record.data == png and record.file_id == sent.photo[-1].file_id
    file = await tg.get_file(sent.photo[-1].file_id)
    assert_genuine(file)
    assert file.file_path is not None and file.file_path.startswith(fake.base_file_url)
    assert bytes(await file.download_as_bytearray()) == png
    again = await tg.send_photo(ann.id, sent.photo[-1].file_id)  # re-send by file_id
    assert again.photo[-1].file_id == sent.photo[-1].file_id
    with pytest.raises(BadRequest, match="Image_process_failed"):
        await tg.send_photo(ann.id, b"not an image")
    with pytest.raises(BadRequest, match="Invalid file_id"):
        await tg.get_file("nope")


async def test_commands_and_menu_button_are_stored_per_scope_and_language(fake: FakeTelegram, tg: Bot) -> None:
    ann = fake.user()
    await tg.set_my_commands([BotCommand("start", "Start"), BotCommand("help", "Help")])
    await tg.set_my_commands([BotCommand("start", "开始")], language_code="zh", scope=BotCommandScopeAllPrivateChats())
    await tg.set_my_commands([BotCommand("claim", "Claim")], scope=BotCommandScopeChat(ann.id))
    assert [c["command"] for c in fake.commands()] == ["start", "help"]
    assert fake.commands("zh", "all_private_chats") == [{"command": "start", "description": "开始"}]
    assert fake.commands(scope_type="chat", chat_id=ann.id) == [{"command": "claim", "description": "Claim"}]
    assert fake.commands("zh") == []
    commands = await tg.get_my_commands(language_code="zh", scope=BotCommandScopeAllPrivateChats())
    assert_genuine(list(commands))
    assert [c.description for c in commands] == ["开始"]
    with pytest.raises(BadRequest, match="Bot_command_invalid"):
        await tg.set_my_commands([BotCommand("Bad-Name", "x")])
    await tg.delete_my_commands()
    assert fake.commands() == []
    await tg.set_chat_menu_button(ann.id, MenuButtonCommands())
    button = await tg.get_chat_menu_button(ann.id)
    assert isinstance(button, MenuButtonCommands)


# -- flood control and faults ---------------------------------------------------------------------------


async def test_flood_limit_raises_retry_after(fake: FakeTelegram, tg: Bot) -> None:
    ann, bob = fake.user("Ann"), fake.user("Bob")
    fake.set_flood_limits(per_chat_per_second=1, retry_after=3)
    await tg.send_message(ann.id, "one")
    with pytest.raises(RetryAfter) as caught:
        await tg.send_message(ann.id, "two")
    with warnings.catch_warnings():  # PTB 22 warns that retry_after becomes a timedelta
        warnings.simplefilter("ignore")
        retry_after = caught.value.retry_after
    seconds = retry_after.total_seconds() if isinstance(retry_after, dtm.timedelta) else retry_after
    assert seconds == 3
    assert fake.rejections[-1].description == "Too Many Requests: retry after 3"
    await tg.send_message(bob.id, "other chats are not limited")
    assert [m.text for m in ann.messages] == ["one"]


async def test_group_and_global_flood_limits(fake: FakeTelegram, tg: Bot) -> None:
    staff = fake.group()
    fake.set_flood_limits(per_group_per_minute=2)
    await tg.send_message(staff.id, "1")
    await tg.send_message(staff.id, "2")
    with pytest.raises(RetryAfter):
        await tg.send_message(staff.id, "3")
    users = [fake.user(f"U{i}") for i in range(3)]
    fake.set_flood_limits(global_per_second=2)
    await tg.send_message(users[0].id, "a")
    await tg.send_message(users[1].id, "b")
    with pytest.raises(RetryAfter):
        await tg.send_message(users[2].id, "c")


async def test_injected_faults_surface_as_network_errors(fake: FakeTelegram, tg: Bot) -> None:
    ann = fake.user()
    fake.inject_faults(1, "502", methods={"sendMessage"})
    await tg.get_me()  # other methods are unaffected
    with pytest.raises(NetworkError, match="Bad Gateway"):
        await tg.send_message(ann.id, "lost")
    fake.inject_faults(1, "500")
    with pytest.raises(TelegramError, match="Internal Server Error"):
        await tg.send_message(ann.id, "lost too")
    fake.inject_faults(1, "drop")
    with pytest.raises(NetworkError, match="disconnected"):
        await tg.send_message(ann.id, "dropped")
    await tg.send_message(ann.id, "delivered")
    assert [m.text for m in ann.messages] == ["delivered"]
    assert fake.rejections == []  # injected faults are not the bot's fault
    assert [c.status for c in fake.calls if c.injected] == [502, 500, 0]


# -- updates --------------------------------------------------------------------------------------------


async def test_long_poll_returns_as_soon_as_a_user_sends(fake: FakeTelegram, tg: Bot) -> None:
    ann = fake.user()
    loop = asyncio.get_running_loop()
    started = loop.time()
    poll = asyncio.create_task(tg.get_updates(timeout=5))
    await asyncio.sleep(0.2)  # let the request park on the server
    assert not poll.done()
    await ann.send_text("hello")
    (update,) = await poll
    assert loop.time() - started < 2
    assert update.message is not None and update.message.text == "hello"
    assert_genuine(update)


async def test_long_poll_times_out_empty(fake: FakeTelegram, tg: Bot) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await tg.get_updates(timeout=1) == ()
    assert 0.9 <= loop.time() - started < 2


async def test_offset_confirms_updates(fake: FakeTelegram, tg: Bot) -> None:
    ann = fake.user()
    ids = [await ann.send_text(str(i)) for i in range(3)]
    assert [u.update_id for u in await tg.get_updates()] == ids
    assert [u.update_id for u in await tg.get_updates(limit=1)] == ids[:1]
    assert [u.update_id for u in await tg.get_updates(offset=ids[1])] == ids[1:]
    assert await tg.get_updates(offset=ids[2] + 1) == ()
    assert fake.pending_updates == []
    more = [await ann.send_text(str(i)) for i in range(3)]
    assert [u.update_id for u in await tg.get_updates(offset=-1)] == more[-1:]


async def test_allowed_updates_are_honoured(fake: FakeTelegram, tg: Bot) -> None:
    ann = fake.user()
    sent = await tg.send_message(ann.id, "Pick", reply_markup=inline(("A", "a")))
    await tg.get_updates(allowed_updates=["message"])
    await ann.tap_inline("A", message=sent.message_id)
    await ann.send_text("text")
    updates = await drain(tg)
    assert [u.message.text for u in updates if u.message] == ["text"]
    assert len(updates) == 1


async def test_a_second_poller_terminates_the_first(fake: FakeTelegram, tg: Bot) -> None:
    async with aiohttp.ClientSession() as http:
        # Another bot instance, long-polling with the same token.
        first = asyncio.create_task(http.get(f"{fake.base_url}{fake.token}/getUpdates", params={"timeout": "5"}))
        await asyncio.sleep(0.2)
        assert await tg.get_updates(timeout=0) == ()
        response = await first
        assert response.status == 409
        assert "terminated by other getUpdates request" in (await response.json())["description"]
        response.release()
    assert fake.rejections == []  # 409s are long-poll noise


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[str, list[tuple[dict[str, Any], str | None]], list[int]]]:
    """A tiny webhook endpoint: records (update, secret header) and answers with queued statuses."""
    received: list[tuple[dict[str, Any], str | None]] = []
    statuses: list[int] = []

    async def handle(request: web.Request) -> web.Response:
        received.append((await request.json(), request.headers.get("X-Telegram-Bot-Api-Secret-Token")))
        return web.Response(status=statuses.pop(0) if statuses else 200)

    app = web.Application()
    app.router.add_post("/hook", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield f"http://127.0.0.1:{port}/hook", received, statuses
    await runner.cleanup()


async def test_webhook_delivery_retries_and_blocks_get_updates(
    fake: FakeTelegram,
    tg: Bot,
    receiver: tuple[str, list[tuple[dict[str, Any], str | None]], list[int]],
) -> None:
    url, received, statuses = receiver
    ann = fake.user()
    early = await ann.send_text("queued before the webhook")
    statuses.append(500)  # the first delivery fails and is retried
    await tg.set_webhook(url, secret_token="s3cret_token", allowed_updates=["message", "callback_query"])
    late = await ann.send_text("after")
    await fake.wait_updates_consumed()
    assert [d.status for d in fake.webhook_deliveries] == [500, 200, 200]
    assert [(u["update_id"], secret) for u, secret in received] == [(early, "s3cret_token")] * 2 + [
        (late, "s3cret_token")
    ]
    assert_genuine(Update.de_json(received[-1][0], tg))
    with pytest.raises(Conflict, match="can't use getUpdates method while webhook is active"):
        await tg.get_updates()
    info = await tg.get_webhook_info()
    assert_genuine(info)
    assert (info.url, info.pending_update_count, info.allowed_updates) == (url, 0, ("message", "callback_query"))
    assert info.last_error_message is not None and "500" in info.last_error_message
    await tg.delete_webhook()
    assert await tg.get_updates() == ()
    assert fake.rejections == []


# -- the client API ---------------------------------------------------------------------------------------


async def test_every_kind_of_user_update_parses_cleanly(fake: FakeTelegram, tg: Bot) -> None:
    ann, bob = fake.user("Ann", username="ann"), fake.user("Bob")
    staff = fake.group(members=[ann])
    await ann.send_command("start", "ref-7")
    await ann.send_text("/help me", chat=staff)
    await ann.send_location(51.5, -0.1)
    await ann.send_contact("+441234", user_id=bob.id, first_name="Bob")
    await ann.send_contact("+449999", user_id=None)
    await ann.send_photo(caption="look")
    await ann.send_document(b"%PDF-1.4", "a.pdf", "application/pdf")
    await ann.send_sticker()
    await ann.send_voice()
    await ann.forward_text("fwd")
    first = ann.history[0].message_id
    await ann.edit_text(first, "/start ref-8")
    updates = await drain(tg)
    messages = [u.effective_message for u in updates]
    assert all(m is not None for m in messages)
    start, group, location, contact, stranger, photo, document, sticker, voice, forward, edit = messages
    assert start is not None and start.text == "/start ref-7" and start.entities[0].type == "bot_command"
    assert group is not None and group.chat.id == staff.id and group.entities[0].length == 5
    assert location is not None and location.location is not None
    assert contact is not None and contact.contact is not None and contact.contact.user_id == bob.id
    assert stranger is not None and stranger.contact is not None and stranger.contact.user_id is None
    assert photo is not None and photo.photo and photo.caption == "look"
    assert document is not None and document.document is not None and document.document.mime_type == "application/pdf"
    assert sticker is not None and sticker.sticker is not None
    assert voice is not None and voice.voice is not None
    assert forward is not None and forward.forward_origin is not None
    assert edit is not None and updates[-1].edited_message is not None and edit.text == "/start ref-8"
    downloaded = await (await tg.get_file(photo.photo[-1].file_id)).download_as_bytearray()
    assert bytes(downloaded) == TINY_JPEG


async def test_receive_cursor_kind_filter_and_timeouts(fake: FakeTelegram, tg: Bot) -> None:
    ann = fake.user()
    await tg.send_message(ann.id, "one")
    await tg.send_location(ann.id, 1.0, 2.0)
    await tg.send_message(ann.id, "two")
    location = await ann.receive(kind="location")
    assert (location.latitude, location.longitude) == (1.0, 2.0)
    assert [m.text for m in await ann.receive_all(2)] == ["one", "two"]
    with pytest.raises(AssertionError, match=r"(?s)no new bot message within 0.1s.*'one' \(received\)"):
        await ann.receive(timeout=0.1)

    async def later() -> None:
        await tg.send_message(ann.id, "three")

    task = asyncio.create_task(later())
    assert (await ann.receive()).text == "three"
    await task


async def test_wait_until_wakes_on_changes(fake: FakeTelegram, tg: Bot) -> None:
    ann = fake.user()
    staff = fake.group()

    def has_alert(messages: list[BotMessage]) -> BotMessage | None:
        return next((m for m in messages if "ALERT" in m.content and not m.deleted), None)

    waiter = asyncio.create_task(ann.wait_until(has_alert, chat=staff))
    await tg.send_message(staff.id, "noise")
    assert not waiter.done()
    await tg.send_message(staff.id, "ALERT: cold night")
    found = await waiter
    assert found.chat_id == staff.id
    deleted = asyncio.create_task(staff.wait_until(lambda ms: all(m.deleted for m in ms)))
    await tg.delete_message(staff.id, ms_id := found.message_id)
    await tg.delete_message(staff.id, ms_id - 1)
    assert await deleted
    with pytest.raises(AssertionError, match="condition not met"):
        await staff.wait_until(lambda ms: len(ms) > 5, timeout=0.05)


async def test_message_dates_follow_the_fake_clock(fake: FakeTelegram, tg: Bot) -> None:
    ann = fake.user()
    fake.now = lambda: 1_700_000_000.0
    sent = await tg.send_message(ann.id, "then")
    assert sent.date == dtm.datetime.fromtimestamp(1_700_000_000, tz=dtm.UTC)
    fake.now = lambda: 1_700_000_000.0 + 49 * 3600
    with pytest.raises(BadRequest, match="Message can't be deleted for everyone"):
        await tg.delete_message(ann.id, sent.message_id)


async def test_call_log_records_params_and_outcomes(fake: FakeTelegram, tg: Bot) -> None:
    ann = fake.user()
    await tg.send_message(ann.id, "hi", reply_markup=inline(("A", "a")))
    call = fake.calls_to("sendMessage")[-1]
    assert call.ok and call.params["reply_markup"] == {"inline_keyboard": [[{"text": "A", "callback_data": "a"}]]}
    with pytest.raises(BadRequest):
        await tg.send_message(ann.id, "")
    assert fake.rejections[-1].params["chat_id"] == str(ann.id)
    assert fake.rejections[-1].description == "Bad Request: message text is empty"
