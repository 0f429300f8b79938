"""Every message in the code is translated in every catalog, with the same placeholders and HTML tags."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from babel.messages.extract import DEFAULT_KEYWORDS, extract_from_dir
from babel.messages.pofile import read_po

from bot.i18n import LOCALES_DIR, available_languages, resolve_language, translator

ROOT = Path(__file__).resolve().parents[2]
KEYWORDS = {**DEFAULT_KEYWORDS, "N_": None}
PLACEHOLDER = re.compile(r"\{[a-z_]+\}")
TAG = re.compile(r"</?[a-z]+[^>]*>")


def _messages_in_code() -> set[str]:
    found: set[str] = set()
    for package in ("bot", "handlers", "models"):
        method_map = [("**.py", "python")]
        for _file, _line, message, _comments, _context in extract_from_dir(
            ROOT / package, method_map=method_map, keywords=KEYWORDS
        ):
            found.add(message if isinstance(message, str) else message[0])
    return found


def _catalog(language: str) -> dict[str, object]:
    with (LOCALES_DIR / language / "LC_MESSAGES" / "messages.po").open("rb") as fh:
        catalog = read_po(fh, locale=language)
    return {
        (m.id if isinstance(m.id, str) else m.id[0]): m
        for m in catalog
        if m.id and not m.fuzzy  # fuzzy entries are not used at run time
    }


def test_both_languages_ship() -> None:
    assert {"en", "zh_Hans"} <= set(available_languages())


@pytest.mark.parametrize("language", available_languages())
def test_every_message_is_translated(language: str) -> None:
    catalog = _catalog(language)
    in_code = _messages_in_code()
    assert in_code, "extraction found no messages: the keyword setup is broken"
    missing = sorted(m for m in in_code if m not in catalog or not _strings(catalog[m]))
    assert not missing, f"{language}: {len(missing)} message(s) without translation: {missing}"


@pytest.mark.parametrize("language", available_languages())
def test_translations_keep_placeholders_and_tags(language: str) -> None:
    for msgid, message in _catalog(language).items():
        source = message.id  # type: ignore[attr-defined]
        # A plural's forms may each use the count: compare with the plural source, which always has it.
        reference = source[-1] if isinstance(source, tuple) else msgid
        for translated in _strings(message):
            assert set(PLACEHOLDER.findall(translated)) <= set(PLACEHOLDER.findall(reference)), msgid
            assert set(PLACEHOLDER.findall(reference)) - {"{n}"} <= set(PLACEHOLDER.findall(translated)), msgid
            tags = [t.split()[0] for t in TAG.findall(translated)]
            assert tags == [t.split()[0] for t in TAG.findall(reference)], msgid


def _strings(message: object) -> list[str]:
    value = message.string  # type: ignore[attr-defined]
    values = list(value) if isinstance(value, tuple) else [value]
    return [v for v in values if v]


@pytest.mark.parametrize(
    ("client", "expected"),
    [
        ("zh-hans", "zh_Hans"),
        ("zh", "zh_Hans"),
        ("zh-CN", "zh_Hans"),
        ("en-GB", "en"),
        ("fr", "en"),
        (None, "en"),
    ],
)
def test_client_language_resolution(client: str | None, expected: str) -> None:
    assert resolve_language(client, "en") == expected


def test_translator_translates() -> None:
    assert translator("zh_Hans").gettext("🌐 Language") == "🌐 语言"
    assert translator("en").gettext("🌐 Language") == "🌐 Language"
    assert translator("xx").language == "en"
