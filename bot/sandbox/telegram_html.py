"""Telegram's HTML parse mode: a strict parser and a renderer.

The bot formats nearly every message with ``parse_mode=HTML``. Telegram rejects the whole message when the
markup is not exactly what its own parser accepts (an unescaped ``<``, an unsupported tag, a tag left
open...). A lenient parser in the fake would let such bugs reach production, so this module follows the
rules of Telegram's parser (TDLib's ``parse_html``) closely, including its error messages and its UTF-16
based entity offsets.

Deliberate differences from Telegram:

* an unknown *named* entity followed by ``;`` (``&nbsp;``) is rejected; Telegram would keep it literally,
  which shows up as garbage in the chat and is almost always a bug in the sender;
* links are not normalised (Telegram may add a trailing ``/`` to ``https://example.com``) and
  ``tg://user?id=`` links stay ``text_link`` entities instead of becoming ``text_mention``.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field
from typing import Any

__all__ = ["HtmlParseError", "parse_html", "to_html", "utf16_len"]

_SUPPORTED_TAGS = frozenset(
    {
        "a",
        "b",
        "strong",
        "i",
        "em",
        "u",
        "ins",
        "s",
        "strike",
        "del",
        "span",
        "tg-spoiler",
        "tg-emoji",
        "code",
        "pre",
        "blockquote",
    }
)
_SIMPLE_TAG_TYPES = {
    "b": "bold",
    "strong": "bold",
    "i": "italic",
    "em": "italic",
    "u": "underline",
    "ins": "underline",
    "s": "strikethrough",
    "strike": "strikethrough",
    "del": "strikethrough",
    "span": "spoiler",
    "tg-spoiler": "spoiler",
}
_NAMED_ENTITIES = {"lt": "<", "gt": ">", "amp": "&", "quot": '"'}
# TDLib sorts entities sharing an offset and length by this priority (lower first).
_TYPE_PRIORITY = {
    "blockquote": 0,
    "expandable_blockquote": 0,
    "pre": 11,
    "code": 20,
    "text_link": 49,
    "text_mention": 49,
    "bold": 90,
    "italic": 91,
    "underline": 92,
    "strikethrough": 93,
    "spoiler": 94,
    "custom_emoji": 99,
}
_LINK_SCHEMES = ("http://", "https://", "tg://", "ton://", "ftp://", "mailto:")
_SPECIAL = re.compile(r"[<&]")
_NAME_TOKEN = re.compile(r"[A-Za-z0-9.\-]*")
_UNKNOWN_NAMED_ENTITY = re.compile(r"&([A-Za-z][A-Za-z0-9]*);")
_SURROGATE_ERROR = (
    "Text contains invalid Unicode characters after decoding HTML entities, check for unmatched surrogate code units"
)


class HtmlParseError(ValueError):
    """Telegram refused the markup; ``str(error)`` is the text after "can't parse entities: "."""

    def __init__(self, reason: str, byte_offset: int | None, detail: str = "") -> None:
        self.reason = reason
        self.byte_offset = byte_offset
        where = f" at byte offset {byte_offset}" if byte_offset is not None else ""
        self.description = f"{reason}{where}{detail}"
        super().__init__(self.description)


def utf16_len(text: str) -> int:
    """Length in UTF-16 code units, the unit of every Telegram entity offset and length limit."""
    return len(text) + sum(1 for ch in text if ord(ch) > 0xFFFF)


def _is_space(ch: str) -> bool:
    return ch in " \t\n\r\f\v"


@dataclass
class _OpenTag:
    name: str
    argument: str
    utf16_start: int
    text_start: int  # index into the produced plain text, for <a> without href
    byte_offset: int


@dataclass
class _Parser:
    """One pass over the markup, mirroring TDLib's ``do_parse_html`` state machine."""

    src: str
    pos: int = 0
    out: list[str] = field(default_factory=list)
    out_len: int = 0
    utf16: int = 0
    stack: list[_OpenTag] = field(default_factory=list)
    entities: list[dict[str, Any]] = field(default_factory=list)

    def byte_offset(self, index: int) -> int:
        return len(self.src[:index].encode("utf-8", "surrogatepass"))

    def error(self, reason: str, index: int | None, detail: str = "") -> HtmlParseError:
        return HtmlParseError(reason, None if index is None else self.byte_offset(index), detail)

    def emit(self, chunk: str) -> None:
        self.out.append(chunk)
        self.out_len += len(chunk)
        self.utf16 += utf16_len(chunk)

    def run(self) -> tuple[str, list[dict[str, Any]]]:
        src = self.src
        while self.pos < len(src):
            match = _SPECIAL.search(src, self.pos)
            if match is None:
                self.emit(src[self.pos :])
                break
            if match.start() > self.pos:
                self.emit(src[self.pos : match.start()])
            self.pos = match.start()
            if src[self.pos] == "&":
                self.entity()
            else:
                self.tag()
        if self.stack:
            raise HtmlParseError(f'Can\'t find end tag corresponding to start tag "{self.stack[-1].name}"', None)
        return "".join(self.out), _finish_entities(self.entities)

    # -- character references -------------------------------------------------------------------------

    def decode_entity(self, start: int) -> tuple[str, int] | None:
        """Decode the reference at ``start`` (an ``&``); None means "a literal ampersand"."""
        src = self.src
        end = start + 1
        if src.startswith("#", end):
            end += 1
            if src.startswith(("x", "X"), end):
                end += 1
                digits_start = end
                while end < len(src) and src[end] in "0123456789abcdefABCDEF":
                    end += 1
                value = int(src[digits_start:end], 16) if end > digits_start else 0
            else:
                digits_start = end
                while end < len(src) and src[end].isascii() and src[end].isdigit():
                    end += 1
                value = int(src[digits_start:end]) if end > digits_start else 0
            if value == 0 or value >= 0x10FFFF or end - start >= 10:
                return None
            if 0xD800 <= value <= 0xDFFF:
                raise HtmlParseError(_SURROGATE_ERROR, None)
            char = chr(value)
        else:
            while end < len(src) and src[end].isascii() and src[end].isalpha():
                end += 1
            named = _NAMED_ENTITIES.get(src[start + 1 : end])
            if named is None:
                return None
            char = named
        if src.startswith(";", end):
            end += 1
        return char, end

    def entity(self) -> None:
        decoded = self.decode_entity(self.pos)
        if decoded is not None:
            char, self.pos = decoded
            self.emit(char)
            return
        unknown = _UNKNOWN_NAMED_ENTITY.match(self.src, self.pos)
        if unknown is not None:
            raise self.error(f'Unsupported HTML entity "&{unknown.group(1)};"', self.pos)
        self.emit("&")
        self.pos += 1

    # -- tags -----------------------------------------------------------------------------------------

    def read_until_space_or_gt(self, index: int) -> int:
        src = self.src
        while index < len(src) and not _is_space(src[index]) and src[index] != ">":
            index += 1
        return index

    def skip_spaces(self, index: int) -> int:
        while index < len(self.src) and _is_space(self.src[index]):
            index += 1
        return index

    def tag(self) -> None:
        if self.src.startswith("/", self.pos + 1):
            self.end_tag()
        else:
            self.start_tag()

    def start_tag(self) -> None:
        src = self.src
        begin = self.pos
        i = self.read_until_space_or_gt(begin + 1)
        if i >= len(src):
            raise self.error("Unclosed start tag", begin)
        name = src[begin + 1 : i].lower()
        if name not in _SUPPORTED_TAGS:
            raise self.error(f'Unsupported start tag "{name}"', begin)
        argument = ""
        expandable = False
        while i < len(src) and src[i] != ">":
            i = self.skip_spaces(i)
            if i >= len(src):
                break
            if src[i] == ">":
                break
            attr_start = i
            while i < len(src) and not _is_space(src[i]) and src[i] not in "=>":
                i += 1
            attr_name = src[attr_start:i].lower()
            if not attr_name:
                raise self.error(f'Empty attribute name in the tag "{name}"', begin)
            i = self.skip_spaces(i)
            if i >= len(src) or src[i] != "=":
                if name == "blockquote" and attr_name == "expandable":
                    expandable = True
                    continue
                raise self.error(f'Expected equal sign in declaration of an attribute of the tag "{name}"', begin)
            i = self.skip_spaces(i + 1)
            if i >= len(src):
                raise self.error(f'Unclosed start tag "{name}"', begin)
            value, i = self.attribute_value(i)
            if i >= len(src):
                raise self.error("Unclosed start tag", begin)
            argument = _tag_argument(name, attr_name, value, argument)
        if i >= len(src):
            raise self.error("Unclosed start tag", begin)
        if name == "span" and argument != "spoiler":
            raise self.error('Tag "span" must have class "tg-spoiler"', begin)
        if name == "blockquote" and expandable:
            argument = "expandable"
        self.stack.append(_OpenTag(name, argument, self.utf16, self.out_len, self.byte_offset(begin)))
        self.pos = i + 1

    def attribute_value(self, i: int) -> tuple[str, int]:
        src = self.src
        if src[i] not in "'\"":
            # An unquoted value is an SGML name token: letters, digits, periods and hyphens.
            token = _NAME_TOKEN.match(src, i)
            end = token.end() if token else i
            if end < len(src) and not _is_space(src[end]) and src[end] != ">":
                raise self.error("Unexpected end of name token", end)
            return src[i:end].lower(), end
        quote = src[i]
        i += 1
        chars: list[str] = []
        while i < len(src) and src[i] != quote:
            if src[i] == "&":
                decoded = self.decode_entity(i)
                if decoded is not None:
                    chars.append(decoded[0])
                    i = decoded[1]
                    continue
            chars.append(src[i])
            i += 1
        if i < len(src):
            i += 1  # the closing quote
        return "".join(chars), i

    def end_tag(self) -> None:
        src = self.src
        begin = self.pos
        if not self.stack:
            raise self.error("Unexpected end tag", begin)
        i = self.read_until_space_or_gt(begin + 2)
        end_name = src[begin + 2 : i]
        i = self.skip_spaces(i)
        if i >= len(src) or src[i] != ">":
            raise self.error("Unclosed end tag", begin)
        open_tag = self.stack[-1]
        if end_name and end_name.lower() != open_tag.name:
            raise self.error("Unmatched end tag", begin, f', expected "</{open_tag.name}>", found "</{end_name}>"')
        self.stack.pop()
        self.pos = i + 1
        if self.utf16 > open_tag.utf16_start:
            self.close_entity(open_tag)

    def close_entity(self, tag: _OpenTag) -> None:
        offset = tag.utf16_start
        length = self.utf16 - offset
        span: dict[str, Any] = {"offset": offset, "length": length}
        last = self.entities[-1] if self.entities else None
        same_span = last is not None and last["offset"] == offset and last["length"] == length
        if tag.name in _SIMPLE_TAG_TYPES:
            self.entities.append({"type": _SIMPLE_TAG_TYPES[tag.name], **span})
        elif tag.name == "tg-emoji":
            if not tag.argument.isdigit() or int(tag.argument) == 0:
                raise HtmlParseError("Invalid custom emoji identifier specified", None)
            self.entities.append({"type": "custom_emoji", **span, "custom_emoji_id": tag.argument})
        elif tag.name == "a":
            url = _check_url(tag.argument or "".join(self.out)[tag.text_start :])
            if url is not None:
                self.entities.append({"type": "text_link", **span, "url": url})
        elif tag.name == "blockquote":
            kind = "expandable_blockquote" if tag.argument == "expandable" else "blockquote"
            self.entities.append({"type": kind, **span})
        elif tag.name == "pre":
            if same_span and last is not None and last["type"] == "code" and last.get("language"):
                last["type"] = "pre"
            else:
                self.entities.append({"type": "pre", **span})
        elif tag.name == "code":
            if same_span and last is not None and last["type"] == "pre" and tag.argument:
                last["language"] = tag.argument
            else:
                self.entities.append({"type": "code", **span, "language": tag.argument})


def _tag_argument(tag: str, attr: str, value: str, current: str) -> str:
    """Return the one attribute each tag cares about; Telegram silently ignores all other attributes."""
    if tag == "a" and attr == "href":
        return value
    if tag == "code" and attr == "class" and value.startswith("language-"):
        return value[len("language-") :]
    if tag == "span" and attr == "class" and value.startswith("tg-"):
        return value[len("tg-") :]
    if tag == "tg-emoji" and attr == "emoji-id":
        return value
    return current


def _check_url(url: str) -> str | None:
    """Approximate Telegram's link check: invalid links silently lose their entity."""
    url = url.strip()
    if not url or any(_is_space(ch) for ch in url):
        return None
    if url.lower().startswith(_LINK_SCHEMES):
        return url
    if re.match(r"^[A-Za-z][A-Za-z0-9+.\-]*:", url) and not re.match(r"^[^:/]+:\d", url):
        return None  # javascript:, data:, ... are not links Telegram accepts
    if "." in url.split("/", 1)[0]:
        return f"http://{url}"
    return None


def _finish_entities(entities: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Drop ``code`` languages, remove formatting inside code/pre (Telegram does) and sort like TDLib."""
    for entity in entities:
        if entity["type"] == "code":
            entity.pop("language", None)
    code_spans = [(e["offset"], e["offset"] + e["length"]) for e in entities if e["type"] in ("code", "pre")]

    def inside_code(entity: dict[str, Any]) -> bool:
        if entity["type"] in ("code", "pre", "blockquote", "expandable_blockquote"):
            return False
        start, end = entity["offset"], entity["offset"] + entity["length"]
        return any(c_start <= start and end <= c_end for c_start, c_end in code_spans)

    kept = [e for e in entities if not inside_code(e)]
    kept.sort(key=lambda e: (e["offset"], -e["length"], _TYPE_PRIORITY.get(e["type"], 50)))
    return kept


def parse_html(text: str) -> tuple[str, list[dict[str, Any]]]:
    """Parse ``text`` like Telegram does for ``parse_mode=HTML``.

    Returns the plain text and a list of Bot API ``MessageEntity`` dicts whose offsets and lengths are in
    UTF-16 code units. Raises ``HtmlParseError`` with Telegram's reason for markup Telegram would refuse.
    """
    return _Parser(text).run()


# -- rendering ----------------------------------------------------------------------------------------


def _tags_for(entity: dict[str, Any]) -> tuple[str, str] | None:
    kind = entity.get("type")
    simple = {
        "bold": "b",
        "italic": "i",
        "underline": "u",
        "strikethrough": "s",
        "code": "code",
        "blockquote": "blockquote",
    }
    if kind in simple:
        tag = simple[str(kind)]
        return f"<{tag}>", f"</{tag}>"
    if kind == "spoiler":
        return '<span class="tg-spoiler">', "</span>"  # the spelling PTB's text_html uses
    if kind == "expandable_blockquote":
        return "<blockquote expandable>", "</blockquote>"
    if kind == "text_link":
        return f'<a href="{html.escape(str(entity.get("url", "")))}">', "</a>"
    if kind == "text_mention":
        user_id = (entity.get("user") or {}).get("id", 0)
        return f'<a href="tg://user?id={int(user_id)}">', "</a>"
    if kind == "custom_emoji":
        return f'<tg-emoji emoji-id="{html.escape(str(entity.get("custom_emoji_id", "")))}">', "</tg-emoji>"
    if kind == "pre":
        language = entity.get("language")
        if language:
            return f'<pre><code class="language-{html.escape(str(language))}">', "</code></pre>"
        return "<pre>", "</pre>"
    return None  # mention, hashtag, url, bot_command...: plain text in HTML


def _utf16_index(text: str) -> list[int]:
    """Map every UTF-16 offset that starts a code point to the matching index in ``text``."""
    index = [0] * (utf16_len(text) + 1)
    unit = 0
    for position, ch in enumerate(text):
        index[unit] = position
        unit += 2 if ord(ch) > 0xFFFF else 1
        index[unit - 1] = position  # the second half of a surrogate pair points at its character
    index[unit] = len(text)
    return index


def to_html(text: str, entities: list[dict[str, Any]] | None) -> str:
    """Render plain text and entities back to escaped Telegram HTML.

    The result parses back to the same text and entities, so the demo page and test failure messages can
    show formatting. Overlapping (not nested) entities are closed and re-opened around each other.
    """
    renderable: list[tuple[int, int, int, tuple[str, str]]] = []
    for order, entity in enumerate(entities or []):
        tags = _tags_for(entity)
        start = int(entity.get("offset", 0))
        end = start + int(entity.get("length", 0))
        if tags is not None and end > start:
            renderable.append((start, end, order, tags))
    if not renderable:
        return html.escape(text, quote=False)
    renderable.sort(key=lambda item: (item[0], -item[1], item[2]))
    index = _utf16_index(text)
    limit = len(index) - 1
    boundaries = sorted(
        {0, limit} | {min(s, limit) for s, *_ in renderable} | {min(e, limit) for _, e, *_ in renderable}
    )
    parts: list[str] = []
    stack: list[tuple[int, int, int, tuple[str, str]]] = []
    pending = list(reversed(renderable))
    previous = 0
    for boundary in boundaries:
        parts.append(html.escape(text[index[previous] : index[boundary]], quote=False))
        previous = boundary
        ending = [depth for depth, item in enumerate(stack) if min(item[1], limit) <= boundary]
        if ending:
            reopen = [item for item in stack[ending[0] :] if min(item[1], limit) > boundary]
            for item in reversed(stack[ending[0] :]):
                parts.append(item[3][1])
            del stack[ending[0] :]
            for item in reopen:
                parts.append(item[3][0])
                stack.append(item)
        while pending and min(pending[-1][0], limit) == boundary:
            item = pending.pop()
            parts.append(item[3][0])
            stack.append(item)
    for item in reversed(stack):
        parts.append(item[3][1])
    return "".join(parts)
