"""The command list (for setMyCommands and /help) and the main-menu reply keyboard.

Each journey module adds its command and menu entry here, so /help, the command menus and the keyboard stay in step.
"""

from __future__ import annotations

from dataclasses import dataclass

from telegram import BotCommand, KeyboardButton, ReplyKeyboardMarkup
from telegram.ext import filters

from bot.i18n import N_, Translator, all_translators


@dataclass(frozen=True)
class Command:
    name: str
    description: str  # an N_() marked msgid
    staff_only: bool = False


USER_COMMANDS: tuple[Command, ...] = (
    Command("start", N_("Main menu")),
    Command("find", N_("Find the nearest care stations")),
    Command("request", N_("Ask for help")),
    Command("status", N_("Follow your requests")),
    Command("report", N_("Report someone out in the cold")),
    Command("help", N_("What this bot can do")),
    Command("subscribe", N_("Cold-weather alerts: subscribe or change")),
    Command("unsubscribe", N_("Stop cold-weather alerts")),
    Command("language", N_("Change the language")),
    Command("cancel", N_("Stop what you are doing")),
    Command("forgetme", N_("See and delete what I keep about you")),
    Command("station", N_("Staff: update a station's status"), staff_only=True),
    Command("queue", N_("Staff: open cases of your team"), staff_only=True),
    Command("rota", N_("Coordinators: who is on call"), staff_only=True),
    Command("teams", N_("Admins: invite staff, link a team's group"), staff_only=True),
    Command("broadcast", N_("Staff: send an announcement to subscribers"), staff_only=True),
    Command("patrol", N_("Staff: start or end an outreach patrol"), staff_only=True),
    Command("stats", N_("Coordinators: season report (text, chart, CSV)"), staff_only=True),
)


@dataclass(frozen=True)
class MenuEntry:
    label: str  # an N_() marked msgid, shown on the reply keyboard
    request_location: bool = False


NEAREST = MenuEntry(N_("📍 Nearest stations"), request_location=True)
ASK_HELP = MenuEntry(N_("🆘 Ask for help"))
MY_REQUESTS = MenuEntry(N_("📋 My requests"))
REPORT = MenuEntry(N_("👀 Report someone in the cold"))
COLD_ALERTS = MenuEntry(N_("❄️ Cold alerts"))
FIND = MenuEntry(N_("🔎 Find by address"))
LANGUAGE = MenuEntry(N_("🌐 Language"))
HELP = MenuEntry(N_("❓ Help"))

# Rows of the main menu, top to bottom: the most urgent journeys first as they are added.
MAIN_MENU: tuple[tuple[MenuEntry, ...], ...] = (
    (NEAREST, FIND),
    (ASK_HELP, MY_REQUESTS),
    (REPORT, COLD_ALERTS),
    (LANGUAGE, HELP),
)


def bot_commands(t: Translator) -> list[BotCommand]:
    return [BotCommand(c.name, t.gettext(c.description)) for c in USER_COMMANDS if not c.staff_only]


def main_menu(t: Translator) -> ReplyKeyboardMarkup:
    rows = [
        [KeyboardButton(t.gettext(entry.label), request_location=entry.request_location or None) for entry in row]
        for row in MAIN_MENU
    ]
    return ReplyKeyboardMarkup(rows, resize_keyboard=True, is_persistent=True)


def menu_button(*entries: MenuEntry) -> filters.BaseFilter:
    """Matches a tap on these menu entries in any language (the keyboard may predate a language switch)."""
    labels = {t.gettext(entry.label) for entry in entries for t in all_translators()}
    return filters.ChatType.PRIVATE & filters.Text(sorted(labels))


def any_menu_button() -> filters.BaseFilter:
    """A tap on any main-menu entry: inside a conversation it means the person wants to do something else."""
    return menu_button(*(entry for row in MAIN_MENU for entry in row))
