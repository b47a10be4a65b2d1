"""Property tests: any HTML gives a well-formed record or an ExtractionError, never a crash."""

from __future__ import annotations

import contextlib

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from aggregator.errors import ExtractionError
from aggregator.extract import extract_article, html_to_blocks
from aggregator.model import BlockKind, Document
from aggregator.records import render

TAGS = ["p", "div", "span", "b", "strong", "a", "ul", "li", "table", "tr", "td", "th", "h1"]
TAGS += ["h2", "br", "nav", "footer", "article", "section", "script", "form", "pre", "em"]
WORDS = ["Vilnius", "border", "talks", "**", "|", "- ", "  ", "\n", "&amp;", "<", ">", "é", "—"]


@st.composite
def html_soup(draw: st.DrawFn) -> str:
    parts = []
    for _ in range(draw(st.integers(0, 60))):
        kind = draw(st.integers(0, 3))
        tag = draw(st.sampled_from(TAGS))
        if kind == 0:
            cls = draw(st.sampled_from(["", " class='share'", " class='article-body'", " hidden"]))
            parts.append(f"<{tag}{cls}>")
        elif kind == 1:
            parts.append(f"</{tag}>")
        else:
            parts.append(" ".join(draw(st.lists(st.sampled_from(WORDS), max_size=12))))
    return "".join(parts)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(html_soup())
@example("<b>**")  # a paragraph of bold markers only, found by this test in CI
def test_extract_article_never_crashes(html: str) -> None:
    try:
        article = extract_article(html, "https://example.org/a")
    except ExtractionError:
        return
    assert article.text.endswith("\n")
    lines = article.text.split("\n")[:-1]
    assert all(line == line.strip() or line.startswith("|") for line in lines)
    assert article.title == " ".join(article.title.split())


@settings(max_examples=150, deadline=None)
@given(html_soup())
@example("<h1>** **")  # a heading of bold markers only once gave an empty block
def test_html_to_blocks_gives_one_line_blocks(html: str) -> None:
    blocks = html_to_blocks(html)
    for block in blocks:
        if block.kind is BlockKind.TABLE:
            assert block.rows and all(len(r) == len(block.rows[0]) for r in block.rows)
        else:
            assert block.text and "\n" not in block.text and block.text == block.text.strip()
    render(Document(blocks=blocks))  # renders without error


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=300))
def test_arbitrary_text_is_safe(text: str) -> None:
    html_to_blocks(text)
    with contextlib.suppress(ExtractionError):
        extract_article(text)
