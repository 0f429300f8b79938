"""Translations: gettext catalogs managed with Babel, one folder per language under bot/locales.

Adding a language is adding a catalog (`make i18n-init LANG=xx`): the languages offered by /language and the
command menus are discovered from the folders. Catalogs are compiled in memory from the .po files at start-up,
so a checkout never runs with stale .mo files.
"""

from __future__ import annotations

import gettext
import io
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from babel import Locale, numbers
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po

LOCALES_DIR = Path(__file__).with_name("locales")
DOMAIN = "messages"
SOURCE_LANGUAGE = "en"


def N_(message: str) -> str:
    """Mark a string for extraction without translating it now (translated later with the user's language)."""
    return message


@cache
def available_languages() -> tuple[str, ...]:
    """Catalog codes present on disk, e.g. ("en", "zh_Hans"); the source language first."""
    found = sorted(p.parent.parent.name for p in LOCALES_DIR.glob(f"*/LC_MESSAGES/{DOMAIN}.po"))
    if SOURCE_LANGUAGE in found:
        found.remove(SOURCE_LANGUAGE)
        found.insert(0, SOURCE_LANGUAGE)
    return tuple(found)


def native_name(language: str) -> str:
    """The language's name in itself ("简体中文", "English") for the /language keyboard."""
    locale = Locale.parse(language)
    name = locale.get_display_name(locale) or language
    return name[:1].upper() + name[1:]


def telegram_code(language: str) -> str:
    """Telegram's two-letter language_code for setMyCommands (ISO 639-1)."""
    return language.split("_")[0].lower()


def resolve_language(client_code: str | None, default: str) -> str:
    """Our catalog for a Telegram client's language_code ("zh-hans", "en-US", …), else the default."""
    if client_code:
        primary = client_code.replace("_", "-").split("-")[0].lower()
        for code in available_languages():
            if telegram_code(code) == primary:
                return code
    return default


@cache
def _catalog(language: str) -> gettext.NullTranslations:
    po_path = LOCALES_DIR / language / "LC_MESSAGES" / f"{DOMAIN}.po"
    if not po_path.exists():
        return gettext.NullTranslations()
    with po_path.open("rb") as fh:
        catalog = read_po(fh, locale=language)
    buffer = io.BytesIO()
    write_mo(buffer, catalog, use_fuzzy=False)
    buffer.seek(0)
    return gettext.GNUTranslations(buffer)


@dataclass(frozen=True)
class Translator:
    """Everything language-dependent for one reply: texts, plurals, numbers."""

    language: str

    def gettext(self, message: str) -> str:
        return _catalog(self.language).gettext(message)

    def ngettext(self, singular: str, plural: str, n: int) -> str:
        return _catalog(self.language).ngettext(singular, plural, n)

    def number(self, value: float, fmt: str | None = None) -> str:
        return numbers.format_decimal(value, format=fmt, locale=self.language)

    @property
    def telegram_code(self) -> str:
        return telegram_code(self.language)


@cache
def translator(language: str) -> Translator:
    return Translator(language if language in available_languages() else SOURCE_LANGUAGE)


def all_translators() -> Iterable[Translator]:
    return (translator(code) for code in available_languages())
