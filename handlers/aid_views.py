"""Rendering of what staff hand out: item labels, the item counter keyboard (on resolve and at the end of a patrol),
and the "kinds of help given" toggles of the resolve step. Texts and keyboards only; the handlers decide."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from telegram import InlineKeyboardButton

from bot.i18n import N_, Translator
from handlers.case_views import CLOSING_LABELS
from models.aid import GIVEN_KINDS

# Item kinds with a translated label; config [season] item_kinds picks among these (others are shown as their key).
ITEM_LABELS: dict[str, str] = {
    "blanket": N_("🛌 Blanket"),
    "coat": N_("🧥 Coat"),
    "gloves": N_("🧤 Gloves"),
    "hat": N_("🧢 Hat"),
    "socks": N_("🧦 Socks"),
    "food_box": N_("🍱 Food box"),
    "hot_meal": N_("🍲 Hot meal"),
    "hot_drink": N_("☕ Hot drink"),
    "water": N_("💧 Water"),
    "hygiene_kit": N_("🧼 Hygiene kit"),
    "sleeping_bag": N_("🛏️ Sleeping bag"),
    "medicine": N_("💊 Medicine"),
}
ROW = 2  # buttons per row


def item_label(t: Translator, kind: str) -> str:
    return t.gettext(ITEM_LABELS[kind]) if kind in ITEM_LABELS else kind.replace("_", " ")


def given_label(t: Translator, kind: str) -> str:
    """ "Food given", "Escort or ticket home arranged", … (the closing reason's label, capitalised)."""
    label = t.gettext(CLOSING_LABELS.get(f"help_{kind}", kind))
    return label[:1].upper() + label[1:]


def items_text(t: Translator, items: Mapping[str, int]) -> str:
    """ "🛌 Blanket × 2, 🧥 Coat × 1", or "—"."""
    parts = [f"{item_label(t, kind)} × {t.number(n)}" for kind, n in items.items() if n > 0]
    return ", ".join(parts) or "—"


def _rows(buttons: list[InlineKeyboardButton]) -> list[list[InlineKeyboardButton]]:
    return [buttons[i : i + ROW] for i in range(0, len(buttons), ROW)]


def counter_rows(
    t: Translator, prefix: str, items: Mapping[str, int], item_kinds: Sequence[str]
) -> list[list[InlineKeyboardButton]]:
    """One "+1" button per item kind (``<prefix>|i|<kind>``), showing the count so far, and ↺ Reset."""
    buttons = []
    for kind in item_kinds:
        count = items.get(kind, 0)
        text = f"{item_label(t, kind)} ({t.number(count)})" if count else f"➕ {item_label(t, kind)}"
        buttons.append(InlineKeyboardButton(text, callback_data=f"{prefix}|i|{kind}"))
    rows = _rows(buttons)
    if any(items.get(kind, 0) for kind in item_kinds):
        rows.append([InlineKeyboardButton(t.gettext("↺ Reset the items"), callback_data=f"{prefix}|reset")])
    return rows


def given_rows(
    t: Translator, prefix: str, chosen: Sequence[str], fixed: str | None
) -> list[list[InlineKeyboardButton]]:
    """Toggles for the kinds of help given (``<prefix>|k|<kind>``); the closing reason's own kind stays ticked."""
    buttons = []
    for kind in GIVEN_KINDS:
        ticked = kind in chosen or kind == fixed
        text = ("✔️ " if ticked else "") + given_label(t, kind)
        buttons.append(InlineKeyboardButton(text, callback_data=f"{prefix}|k|{kind}"))
    return _rows(buttons)
