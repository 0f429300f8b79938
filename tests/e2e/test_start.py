"""First contact: greeting and menu in the client's language, /help, /language, escaping, dead-end answers."""

from __future__ import annotations

from bot.sandbox.fake_telegram import BotMessage, FakeTelegram
from tests.harness import BotHarness


def keyboard_labels(message: BotMessage) -> list[str]:
    markup = message.reply_markup or {}
    rows = markup.get("keyboard") or markup.get("inline_keyboard") or []
    return [button["text"] if isinstance(button, dict) else button for row in rows for button in row]


async def test_english_client_gets_english_greeting_and_menu(bot: BotHarness, fake_telegram: FakeTelegram) -> None:
    ann = fake_telegram.user("Ann", language_code="en")
    await ann.send_command("/start")
    reply = await ann.receive()
    assert reply.text.startswith("Hello, Ann! I am Waystation.")
    assert "Choose from the menu below" in reply.text
    assert {"🌐 Language", "❓ Help"} <= set(keyboard_labels(reply))
    assert {"type": "bold", "offset": 7, "length": 3} in [
        {k: e[k] for k in ("type", "offset", "length")} for e in reply.entities
    ]


async def test_chinese_client_gets_chinese_greeting_and_menu(bot: BotHarness, fake_telegram: FakeTelegram) -> None:
    li = fake_telegram.user("李雷", language_code="zh-hans")
    await li.send_command("/start")
    reply = await li.receive()
    assert reply.text.startswith("您好，李雷！我是暖心驿站助手。")
    assert {"🌐 语言", "❓ 帮助"} <= set(keyboard_labels(reply))


async def test_html_looking_name_is_greeted_exactly(bot: BotHarness, fake_telegram: FakeTelegram) -> None:
    # The fake rejects unescaped HTML with "can't parse entities", so this fails if escaping is missing.
    tom = fake_telegram.user('</b>Tom <3 & "Jerry"')
    await tom.send_command("/start")
    reply = await tom.receive()
    assert reply.text.startswith('Hello, </b>Tom <3 & "Jerry"! I am Waystation.')


async def test_command_menus_are_set_per_language(bot: BotHarness, fake_telegram: FakeTelegram) -> None:
    zh = {c["command"]: c["description"] for c in fake_telegram.commands("zh")}
    en = {c["command"]: c["description"] for c in fake_telegram.commands("en")}
    default = {c["command"]: c["description"] for c in fake_telegram.commands(None)}
    assert zh["language"] == "切换语言"
    assert en["language"] == "Change the language"
    assert default == en
    assert set(zh) == set(en) >= {"start", "help", "language", "cancel"}


async def test_help_lists_commands(bot: BotHarness, fake_telegram: FakeTelegram) -> None:
    ann = fake_telegram.user("Ann")
    await ann.send_command("/help")
    reply = await ann.receive()
    for command in ("/start", "/help", "/language", "/cancel"):
        assert command in reply.text
    await ann.tap_reply_button("❓ Help")
    assert "/language" in (await ann.receive()).text


async def test_language_switch_is_stored_and_survives_restart(bot: BotHarness, fake_telegram: FakeTelegram) -> None:
    li = fake_telegram.user("Li", language_code="zh-CN")
    await li.send_command("/language")
    choice = await li.receive()
    assert choice.text == "您希望我使用哪种语言？"
    assert keyboard_labels(choice) == ["English", "✓ 中文 (简体)"]
    await li.tap_inline("English", message=choice)
    confirmed = await li.wait_edit(choice.message_id)
    assert confirmed.text == "Language set: English."
    menu = await li.receive()
    assert "🌐 Language" in keyboard_labels(menu)

    await bot.restart()
    await li.send_command("/start")
    assert (await li.receive()).text.startswith("Hello, Li!")  # still English, though the client says zh


async def test_language_menu_button_in_either_language(bot: BotHarness, fake_telegram: FakeTelegram) -> None:
    li = fake_telegram.user("Li", language_code="zh")
    await li.send_command("/start")
    await li.receive()
    await li.tap_reply_button("🌐 语言")
    assert (await li.receive()).text == "您希望我使用哪种语言？"


async def test_forged_language_callback_changes_nothing(bot: BotHarness, fake_telegram: FakeTelegram) -> None:
    ann = fake_telegram.user("Ann")
    await ann.send_command("/language")
    choice = await ann.receive()
    query_id = await ann.send_callback(choice.message_id, "lang:../../etc")
    text, alert = await ann.callback_answer(query_id)
    assert text == "This choice is no longer available." and alert
    await ann.send_command("/start")
    assert (await ann.receive()).text.startswith("Hello, Ann!")


async def test_unexpected_input_gets_a_reprompt(bot: BotHarness, fake_telegram: FakeTelegram) -> None:
    ann = fake_telegram.user("Ann")
    await ann.send_sticker()
    assert "did not understand" in (await ann.receive()).text
    await ann.send_text("x" * 10_000)
    assert "did not understand" in (await ann.receive()).text
    await ann.send_voice()
    reply = await ann.receive()
    assert "did not understand" in reply.text and "🌐 Language" in keyboard_labels(reply)
    await ann.send_command("/cancel")
    assert "nothing to cancel" in (await ann.receive()).text
