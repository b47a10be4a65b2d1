"""publish.sanitize: XML-legal text, safe URLs, HTML only from safe tags."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aggregator.model import Block, BlockKind
from aggregator.publish.sanitize import (
    blocks_html,
    escape_attr,
    escape_text,
    inline_html,
    safe_url,
    xml_text,
)


@given(st.text())
def test_any_text_becomes_well_formed_xml(value: str) -> None:
    doc = f'<a b="{escape_attr(value)}">{escape_text(value)}</a>'
    ET.fromstring(doc.encode("utf-8", "surrogatepass"))


@pytest.mark.parametrize(
    "bad", ["\x00", "\x08", "\x0b", "\x0c", "\x1f", "\x7f", "\x9f", "\ufffe", "\uffff", "\ud800"]
)
def test_forbidden_characters_are_dropped(bad: str) -> None:
    assert xml_text(f"a{bad}b") == "ab"


def test_legal_text_is_kept() -> None:
    text = "ąčęėįšųūž Ąžuolas — Беларусь «мир» 😀 \t\n\r end"
    assert xml_text(text) == text


@pytest.mark.parametrize(
    "url",
    [
        "javascript:alert(1)",
        "JaVaScRiPt:alert(1)",
        " javascript:alert(1)",
        "java\tscript:alert(1)",
        "java\nscript:alert(1)",
        "\x00javascript:alert(1)",
        "data:text/html;base64,PHNjcmlwdD4=",
        "vbscript:msgbox",
        "file:///etc/passwd",
        "ftp://example.org/x",
        "mailto:a@b.c",
        "//example.org/x",
        "/relative/path",
        "http://",
        "",
        None,
    ],
)
def test_unsafe_or_relative_urls_are_refused(url: str | None) -> None:
    assert safe_url(url) is None


def test_relative_urls_resolve_against_a_base() -> None:
    assert safe_url("/a/b?c=1", "https://example.org/x/") == "https://example.org/a/b?c=1"
    assert safe_url("javascript:alert(1)", "https://example.org/") is None


def test_urls_are_percent_encoded_and_hosts_idna() -> None:
    assert safe_url("https://lrv.lt/kiaušiniai?q=a b") == ("https://lrv.lt/kiau%C5%A1iniai?q=a%20b")
    assert safe_url("https://lrv.lt/kiau%C5%A1iniai") == "https://lrv.lt/kiau%C5%A1iniai"
    assert safe_url("HTTPS://žinios.lt/") == "https://xn--inios-tib.lt/"
    assert safe_url("https://example.org") == "https://example.org/"


def test_inline_html_escapes_and_bolds() -> None:
    assert inline_html("a **b** <i>c</i> & d") == (
        "a <strong>b</strong> &lt;i&gt;c&lt;/i&gt; &amp; d"
    )


def test_blocks_html_emits_only_safe_tags() -> None:
    blocks = (
        Block(BlockKind.PARAGRAPH, "<script>alert(1)</script> para"),
        Block(BlockKind.HEADING, "Head <b onclick=x>"),
        Block(BlockKind.LIST_ITEM, "one"),
        Block(BlockKind.LIST_ITEM, "**two**"),
        Block(BlockKind.TABLE, rows=(("H1", "H2"), ("<iframe>", "v"))),
        Block(BlockKind.PARAGRAPH, "after"),
    )
    html = blocks_html(blocks)
    assert html == (
        "<p>&lt;script&gt;alert(1)&lt;/script&gt; para</p>\n"
        "<h3>Head &lt;b onclick=x&gt;</h3>\n"
        "<ul>\n<li>one</li>\n<li><strong>two</strong></li>\n</ul>\n"
        "<table><thead><tr><th>H1</th><th>H2</th></tr></thead>"
        "<tbody><tr><td>&lt;iframe&gt;</td><td>v</td></tr></tbody></table>\n"
        "<p>after</p>"
    )
