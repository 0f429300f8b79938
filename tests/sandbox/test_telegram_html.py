"""The HTML parse-mode parser must accept exactly what Telegram accepts, with Telegram's offsets and errors."""

from __future__ import annotations

import html
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.sandbox.telegram_html import HtmlParseError, parse_html, to_html, utf16_len


def spans(entities: list[dict[str, Any]]) -> list[tuple[str, int, int]]:
    return [(e["type"], e["offset"], e["length"]) for e in entities]


def test_plain_text_has_no_entities() -> None:
    assert parse_html("just text, 100% > 99%") == ("just text, 100% > 99%", [])


def test_nested_tags_give_sorted_entities() -> None:
    text, entities = parse_html("<b>bold <i>both</i></b> <u>under</u> <s>gone</s>")
    assert text == "bold both under gone"
    assert spans(entities) == [
        ("bold", 0, 9),
        ("italic", 5, 4),
        ("underline", 10, 5),
        ("strikethrough", 16, 4),
    ]


@pytest.mark.parametrize(
    ("markup", "kind"),
    [
        ("<strong>x</strong>", "bold"),
        ("<em>x</em>", "italic"),
        ("<ins>x</ins>", "underline"),
        ("<strike>x</strike>", "strikethrough"),
        ("<del>x</del>", "strikethrough"),
        ("<tg-spoiler>x</tg-spoiler>", "spoiler"),
        ('<span class="tg-spoiler">x</span>', "spoiler"),
        ("<B>x</B>", "bold"),
    ],
)
def test_tag_aliases(markup: str, kind: str) -> None:
    assert spans(parse_html(markup)[1]) == [(kind, 0, 1)]


def test_offsets_are_utf16_code_units() -> None:
    # 😀 and 𝄞 are astral characters: two UTF-16 code units each; é is one.
    text, entities = parse_html("😀é<b>𝄞x</b> <i>y</i>")
    assert text == "😀é𝄞x y"
    assert spans(entities) == [("bold", 3, 3), ("italic", 7, 1)]
    assert utf16_len(text) == 8


def test_character_references() -> None:
    text, _ = parse_html("&lt;b&gt; &amp; &quot;q&quot; &#65;&#x42; &#x1F600; &lt")
    assert text == '<b> & "q" AB 😀 <'


def test_numeric_reference_to_astral_char_counts_two_units() -> None:
    _, entities = parse_html("&#128512;<b>x</b>")
    assert spans(entities) == [("bold", 2, 1)]


@pytest.mark.parametrize("markup", ["AT&T", "a & b", "&", "&;", "&#;", "&#0;", "&#xZZ;", "tom&jerry"])
def test_bare_ampersands_are_kept(markup: str) -> None:
    assert parse_html(markup) == (markup, [])


def test_unknown_named_entity_is_rejected() -> None:
    with pytest.raises(HtmlParseError) as caught:
        parse_html("a&nbsp;b")
    assert str(caught.value) == 'Unsupported HTML entity "&nbsp;" at byte offset 1'


def test_lone_surrogate_reference_is_rejected() -> None:
    with pytest.raises(HtmlParseError, match="invalid Unicode characters"):
        parse_html("&#xD800;")


@pytest.mark.parametrize(
    ("markup", "description"),
    [
        ("Tom <3 you", 'Unsupported start tag "3" at byte offset 4'),
        ("Tom <3", "Unclosed start tag at byte offset 4"),
        ("a < b", 'Unsupported start tag "" at byte offset 2'),
        ("<br>", 'Unsupported start tag "br" at byte offset 0'),
        ("<b/>x", 'Unsupported start tag "b/" at byte offset 0'),
        ("é<p>", 'Unsupported start tag "p" at byte offset 2'),  # byte offsets count UTF-8 bytes
        ("</b>Tom", "Unexpected end tag at byte offset 0"),
        ("<b>x</i>", 'Unmatched end tag at byte offset 4, expected "</b>", found "</i>"'),
        ("<b>x", 'Can\'t find end tag corresponding to start tag "b"'),
        ("<b><i>x</i>", 'Can\'t find end tag corresponding to start tag "b"'),
        ("x <b", "Unclosed start tag at byte offset 2"),
        ("<b>x</b", "Unclosed end tag at byte offset 4"),
        ("<span>x</span>", 'Tag "span" must have class "tg-spoiler" at byte offset 0'),
        (
            '<a href="x" title>y</a>',
            'Expected equal sign in declaration of an attribute of the tag "a" at byte offset 0',
        ),
        ("<a href=x/y>z</a>", "Unexpected end of name token at byte offset 9"),
        ('<tg-emoji emoji-id="abc">👍</tg-emoji>', "Invalid custom emoji identifier specified"),
    ],
)
def test_rejections_match_telegram(markup: str, description: str) -> None:
    with pytest.raises(HtmlParseError) as caught:
        parse_html(markup)
    assert caught.value.description == description


def test_links_and_attribute_quoting() -> None:
    markup = (
        "<a href=\"https://example.org/?a=1&amp;b='2'\">one</a> "
        '<a href=\'https://example.org/"q"\' target="_blank">two</a> '
        "<a href = 'tg://resolve?domain=x'>three</a> "
        "<a>https://example.org/inner</a> "
        '<a href="javascript:alert(1)">four</a> '
        '<a href="example.org">five</a>'
    )
    text, entities = parse_html(markup)
    assert text == "one two three https://example.org/inner four five"
    assert [(e["offset"], e["url"]) for e in entities] == [
        (0, "https://example.org/?a=1&b='2'"),
        (4, 'https://example.org/"q"'),
        (8, "tg://resolve?domain=x"),
        (14, "https://example.org/inner"),
        (45, "http://example.org"),
    ]


def test_unquoted_attribute_values_are_lowercased_name_tokens() -> None:
    _, entities = parse_html("<pre><code class=Language-Go>x</code></pre>")
    assert entities == [{"type": "pre", "offset": 0, "length": 1, "language": "go"}]


def test_pre_with_language_code_block() -> None:
    text, entities = parse_html('<pre><code class="language-python">print(1 &lt; 2)</code></pre> <code>x</code>')
    assert text == "print(1 < 2) x"
    assert entities == [
        {"type": "pre", "offset": 0, "length": 12, "language": "python"},
        {"type": "code", "offset": 13, "length": 1},
    ]


def test_formatting_inside_code_is_dropped() -> None:
    _, entities = parse_html("<code>a <b>b</b></code> <b>c <code>d</code></b>")
    assert spans(entities) == [("code", 0, 3), ("bold", 4, 3), ("code", 6, 1)]


def test_blockquotes_and_custom_emoji() -> None:
    markup = (
        '<blockquote>one</blockquote>\n<blockquote expandable>two</blockquote><tg-emoji emoji-id="5368">👍</tg-emoji>'
    )
    text, entities = parse_html(markup)
    assert text == "one\ntwo👍"
    assert entities == [
        {"type": "blockquote", "offset": 0, "length": 3},
        {"type": "expandable_blockquote", "offset": 4, "length": 3},
        {"type": "custom_emoji", "offset": 7, "length": 2, "custom_emoji_id": "5368"},
    ]


def test_empty_tags_make_no_entity_and_unknown_attributes_are_ignored() -> None:
    assert parse_html("<b></b>x<i class=\"whatever\" data-x='1'>y</i>") == (
        "xy",
        [{"type": "italic", "offset": 1, "length": 1}],
    )


def test_end_tag_may_omit_its_name_and_carry_spaces() -> None:
    assert spans(parse_html("<b>x</ ><i>y</i >")[1]) == [("bold", 0, 1), ("italic", 1, 1)]


def test_escaped_hostile_text_round_trips() -> None:
    hostile = '</b>Tom <3 & "Jerry" &amp; <script>'
    assert parse_html(html.escape(hostile)) == (hostile, [])


def test_to_html_renders_nested_and_overlapping_entities() -> None:
    text = "ab😀cd"
    nested = [{"type": "bold", "offset": 0, "length": 6}, {"type": "italic", "offset": 2, "length": 2}]
    assert to_html(text, nested) == "<b>ab<i>😀</i>cd</b>"
    overlapping = [{"type": "bold", "offset": 0, "length": 4}, {"type": "italic", "offset": 2, "length": 4}]
    assert to_html(text, overlapping) == "<b>ab<i>😀</i></b><i>cd</i>"
    link = [{"type": "text_link", "offset": 0, "length": 2, "url": 'https://x.org/?a="1"&b'}]
    assert to_html("a<", link) == '<a href="https://x.org/?a=&quot;1&quot;&amp;b">a&lt;</a>'
    pre = [{"type": "pre", "offset": 0, "length": 1, "language": "py"}]
    assert to_html("x", pre) == '<pre><code class="language-py">x</code></pre>'
    assert to_html("x", [{"type": "bot_command", "offset": 0, "length": 1}]) == "x"


SAMPLES = [
    "<b>bold <i>both <u>all</u></i></b> &lt;tail&gt;",
    '😀<a href="https://e.org/?q=1&amp;r=2">link</a> <tg-spoiler>s</tg-spoiler>',
    '<pre><code class="language-go">x := 1</code></pre>\n<blockquote expandable>q <b>b</b></blockquote>',
    '<tg-emoji emoji-id="42">👍</tg-emoji> <code>a &amp; b</code> <s>x</s>',
]


@pytest.mark.parametrize("markup", SAMPLES)
def test_to_html_output_parses_back_to_the_same_message(markup: str) -> None:
    text, entities = parse_html(markup)
    assert parse_html(to_html(text, entities)) == (text, entities)


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=60))
def test_any_escaped_text_parses_to_itself(text: str) -> None:
    assert parse_html(html.escape(text)) == (text, [])


def _coverage(text: str, entities: list[dict[str, Any]]) -> list[set[str]]:
    cover: list[set[str]] = [set() for _ in range(utf16_len(text))]
    for entity in entities:
        for unit in range(entity["offset"], min(entity["offset"] + entity["length"], len(cover))):
            cover[unit].add(entity["type"])
    return cover


@st.composite
def formatted_texts(draw: st.DrawFn) -> tuple[str, list[dict[str, Any]]]:
    text = draw(st.text(alphabet=st.sampled_from("ab <&>😀\n"), min_size=1, max_size=20))
    units = utf16_len(text)
    # Entity edges must not split a surrogate pair, as in anything Telegram sends.
    edges = [utf16_len(text[:i]) for i in range(len(text) + 1)]
    entities = []
    for _ in range(draw(st.integers(0, 4))):
        start, end = sorted(draw(st.lists(st.sampled_from(edges), min_size=2, max_size=2)))
        kind = draw(st.sampled_from(["bold", "italic", "underline", "strikethrough", "spoiler"]))
        if end > start and end <= units:
            entities.append({"type": kind, "offset": start, "length": end - start})
    return text, entities


@settings(max_examples=200, deadline=None)
@given(formatted_texts())
def test_to_html_keeps_every_character_formatted_the_same(sample: tuple[str, list[dict[str, Any]]]) -> None:
    text, entities = sample
    parsed_text, parsed_entities = parse_html(to_html(text, entities))
    assert parsed_text == text
    assert _coverage(parsed_text, parsed_entities) == _coverage(text, entities)
