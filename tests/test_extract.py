"""Extraction: feed HTML -> blocks, article pages -> record text, metadata, listings."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from aggregator.errors import ExtractionError
from aggregator.extract import (
    extract_article,
    extract_text,
    html_to_blocks,
    parse_date,
    parse_loose_date,
    scrape_listing,
)
from aggregator.model import Block, BlockKind, PageSelectors
from aggregator.records import parse

P = BlockKind.PARAGRAPH
H = BlockKind.HEADING
LI = BlockKind.LIST_ITEM
T = BlockKind.TABLE


# --- html_to_blocks ------------------------------------------------------------------------


def test_html_to_blocks_paragraphs_headings_lists_bold() -> None:
    blocks = html_to_blocks(
        "<p>First   <b>bold</b> para.</p><h2>A heading</h2>"
        "<ul><li>one</li><li>two <strong> strong </strong>end</li></ul>"
    )
    assert blocks == (
        Block(P, text="First **bold** para."),
        Block(H, text="A heading"),
        Block(LI, text="one"),
        Block(LI, text="two **strong** end"),
    )


def test_html_to_blocks_table_header_first_and_padded() -> None:
    blocks = html_to_blocks(
        "<table><tr><th>Country</th><th>Position</th></tr>"
        "<tr><td>Lithuania</td><td>Rejected | firmly</td></tr><tr><td>Belarus</td></tr></table>"
    )
    assert blocks == (
        Block(
            T,
            rows=(("Country", "Position"), ("Lithuania", "Rejected | firmly"), ("Belarus", "")),
        ),
    )


def test_html_to_blocks_br_splits_lines_and_drops_scripts() -> None:
    blocks = html_to_blocks("<div>line one<br>line two<script>x()</script></div>")
    assert [b.text for b in blocks] == ["line one", "line two"]


def test_html_to_blocks_plain_text_and_empty() -> None:
    assert html_to_blocks("") == ()
    assert html_to_blocks("   ") == ()
    assert html_to_blocks("Just text\nand more") == (
        Block(P, text="Just text"),
        Block(P, text="and more"),
    )


def test_html_to_blocks_layout_table_is_walked_as_text() -> None:
    long = "word " * 80
    blocks = html_to_blocks(f"<table><tr><td><p>{long}</p></td><td>x</td></tr></table>")
    assert blocks[0].kind is P and blocks[0].text == long.strip()


def test_html_to_blocks_bold_heading_is_plain() -> None:
    assert html_to_blocks("<h3><strong>Title</strong></h3>") == (Block(H, text="Title"),)


# --- extract_article -------------------------------------------------------------------------

PARAS = [
    "Lithuania's government on Tuesday declared a national emergency over security risks "
    "posed by balloons sent from Belarus that have violated its airspace in recent weeks.",
    "The balloons forced Lithuania to repeatedly shut down its main airport, stranding "
    "thousands of people, as Europe remains on alert over previous intrusions.",
    "The national emergency means the army will be able to patrol the border area together "
    "with other uniformed services and receive extra rights from parliament.",
]


def _page(body: str, head: str = "") -> str:
    return f"""<!doctype html><html lang="en-GB"><head><title>Headline here | The Daily</title>
{head}</head><body>
<header><nav><ul><li><a href="/">Home</a></li><li><a href="/world">World</a></li>
<li><a href="/sport">Sport</a></li></ul></nav></header>
<div class="cookie-banner"><p>We use cookies to improve your experience on our site.
By continuing you accept our use of cookies.</p><button>OK</button></div>
<main><article>{body}</article></main>
<aside><h3>Most read</h3><ul><li><a href="/a">Another story about something</a></li></ul></aside>
<footer><p>Copyright 2026 The Daily. All rights reserved. Contact us at the address.</p></footer>
</body></html>"""


def test_extract_article_basic_layout_and_metadata() -> None:
    head = (
        '<meta property="og:title" content="Headline here">'
        '<link rel="canonical" href="/news/headline?x=1">'
        '<meta name="author" content="By Jane Roe">'
        '<meta property="article:published_time" content="2026-11-20T10:00:00+01:00">'
    )
    body = (
        "<h1>Headline here</h1><p class='byline'>By Jane Roe</p>"
        + "".join(f"<p>{p}</p>" for p in PARAS)
        + "<div class='share-tools'><a href='#'>Share on Facebook</a></div>"
    )
    art = extract_article(_page(body, head), "https://example.org/news/headline")
    assert art.title == "Headline here"
    assert art.lead == PARAS[0]
    assert [b.text for b in art.blocks] == PARAS[1:]
    assert art.text == "\n".join([PARAS[0], "Headline here", *PARAS[1:]]) + "\n"
    assert art.canonical_url == "https://example.org/news/headline?x=1"
    assert art.author == "Jane Roe"
    assert art.published == datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
    assert art.language == "en"


def test_extract_text_round_trips_through_records() -> None:
    body = "<h1>Headline here</h1>" + "".join(f"<p>{p}</p>" for p in PARAS)
    text = extract_text(_page(body))
    doc = parse(text)
    assert doc.blocks[1].text == "Headline here"
    assert text.endswith("\n")


def test_related_link_list_inside_article_is_dropped() -> None:
    related = "".join(
        f"<li><a href='/s{i}'>Some other headline number {i} about the news</a></li>"
        for i in range(8)
    )
    body = (
        "<h1>Headline here</h1>"
        + "".join(f"<p>{p}</p>" for p in PARAS)
        + f"<h3>Related headlines</h3><ul>{related}</ul>"
    )
    text = extract_text(_page(body))
    assert "Some other headline" not in text
    assert "Related headlines" not in text
    assert PARAS[-1] in text


def test_title_falls_back_to_html_title_without_site_name() -> None:
    body = "".join(f"<p>{p}</p>" for p in PARAS)
    assert extract_article(_page(body)).title == "Headline here"


def test_title_is_the_post_heading_that_the_html_title_holds_beside_the_blog_name() -> None:
    # A blog: its name in <h1>, the post's headline in <h2>; <title> is "Blog: Headline".
    page = (
        "<!doctype html><html><head><title>Field Notes Weekly: Balloons close the airport again"
        "</title></head><body><div id='header'><h1>Field Notes Weekly</h1></div>"
        "<div class='post'><h2>Balloons close the airport again</h2>"
        + "".join(f"<p>{p}</p>" for p in PARAS)
        + "</div><div class='post'><h2>An older post</h2><p>Short.</p></div></body></html>"
    )
    art = extract_article(page)
    assert art.title == "Balloons close the airport again"
    assert "Field Notes Weekly" not in art.text
    # A short section heading inside <title> ("Headline - World - Site") is not the headline.
    page = (
        "<!doctype html><html><head><title>Balloons close the airport again - World news - "
        "The Daily</title></head><body><h2>World news</h2>"
        + "".join(f"<p>{p}</p>" for p in PARAS)
        + "</body></html>"
    )
    assert extract_article(page).title != "World news"


def test_json_ld_metadata() -> None:
    head = """<script type="application/ld+json">{"@context": "https://schema.org",
    "@graph": [{"@type": "WebSite", "name": "x"}, {"@type": "NewsArticle",
    "headline": "Headline here", "datePublished": "2026-11-19T08:30:00Z",
    "author": [{"@type": "Person", "name": "Ann One"}, {"@type": "Person", "name": "Bo Two"}]}]}
    </script>"""
    art = extract_article(_page("".join(f"<p>{p}</p>" for p in PARAS), head))
    assert art.author == "Ann One, Bo Two"
    assert art.published == datetime(2026, 11, 19, 8, 30, tzinfo=UTC)


def test_page_without_body_text_gives_empty_body() -> None:
    art = extract_article("<html><head><title>Only a title</title></head><body></body></html>")
    assert art.title == "Only a title"
    assert art.blocks == ()


def test_non_string_input_is_an_extraction_error() -> None:
    with pytest.raises(ExtractionError):
        extract_article(b"<html></html>")  # type: ignore[arg-type]


def test_deep_nesting_does_not_overflow_the_stack() -> None:
    html = "<div>" * 3000 + "<p>" + PARAS[0] + "</p>" + "</div>" * 3000
    assert PARAS[0] in extract_text(html)


# --- dates ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2026-11-19T08:30:00Z", datetime(2026, 11, 19, 8, 30, tzinfo=UTC)),
        ("2026-11-19T08:30:00+0200", datetime(2026, 11, 19, 6, 30, tzinfo=UTC)),
        ("2026-11-19", datetime(2026, 11, 19, tzinfo=UTC)),
        ("Thu, 19 Nov 2026 08:30:00 GMT", datetime(2026, 11, 19, 8, 30, tzinfo=UTC)),
        ("not a date", None),
        ("", None),
    ],
)
def test_parse_date(raw: str, expected: datetime | None) -> None:
    assert parse_date(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Nov 19, 2026", datetime(2026, 11, 19, tzinfo=UTC)),
        ("Published: Thursday, 19th November 2026", datetime(2026, 11, 19, tzinfo=UTC)),
        ("19.11.2026 14:05", datetime(2026, 11, 19, 14, 5, tzinfo=UTC)),
        ("1795429800", datetime(2026, 11, 23, 10, 30, tzinfo=UTC)),
        ("yesterday", None),
    ],
)
def test_parse_loose_date(raw: str, expected: datetime | None) -> None:
    assert parse_loose_date(raw) == expected


# --- scrape_listing ------------------------------------------------------------------------


def test_scrape_listing_absolute_dedup_dates() -> None:
    html = """<html><body><ul class="news">
    <li class="item"><a href="/a/1#top"><img src="x.jpg"></a>
        <h2><a href="/a/1">First story</a></h2><time datetime="2026-11-19T08:00:00Z">x</time></li>
    <li class="item"><h2><a href="https://other.example/b?x=1">Second story</a></h2>
        <span class="date">Nov 18, 2026</span></li>
    <li class="item"><h2><a href="javascript:void(0)">Bad</a></h2></li>
    <li class="item"><h2><a href="/a/1">First story again</a></h2></li>
    </ul></body></html>"""
    items = scrape_listing(
        html,
        "https://news.example/list/",
        PageSelectors(item="li.item", link="h2 a", title="h2", date="time, .date"),
    )
    assert [(i.url, i.title) for i in items] == [
        ("https://news.example/a/1", "First story"),
        ("https://other.example/b?x=1", "Second story"),
    ]
    assert items[0].published == datetime(2026, 11, 19, 8, 0, tzinfo=UTC)
    assert items[1].published == datetime(2026, 11, 18, tzinfo=UTC)


def test_scrape_listing_item_is_the_link_and_base_href() -> None:
    html = """<html><head><base href="https://cdn.example/news/"></head><body>
    <a class="story" href="one.html" title="One">One headline</a>
    <a class="story" href="two.html"> </a></body></html>"""
    items = scrape_listing(html, "https://news.example/", PageSelectors(item="a.story", link=""))
    assert [(i.url, i.title) for i in items] == [
        ("https://cdn.example/news/one.html", "One headline"),
        ("https://cdn.example/news/two.html", ""),
    ]


def test_scrape_listing_bad_selector_is_a_clear_error() -> None:
    with pytest.raises(ExtractionError, match="item selector"):
        scrape_listing("<a href=x>x</a>", "https://e.example/", PageSelectors(item="li[[["))


# --- body selector (page sources' selectors.body) ----------------------------------------


def test_body_selector_picks_the_article_text() -> None:
    teaser = "A teaser paragraph about another story that is long enough to look like text."
    html = _page(
        "<h1>Headline here</h1>"
        + "".join(f"<div class='txt'><p>{p}</p></div>" for p in PARAS[:2])
        + f"<div class='promo-box'><p>{teaser}</p></div>"
        + f"<div class='txt'><p>{PARAS[2]}</p><div class='txt'><p>nested</p></div></div>"
    )
    art = extract_article(html, body_selector="div.txt")
    assert art.lead == PARAS[0]
    assert [b.text for b in art.blocks] == [PARAS[1], PARAS[2], "nested"]
    # Without the selector the extractor decides alone (the promo box is furniture).
    assert teaser not in extract_text(html)


def test_body_selector_matching_nothing_falls_back() -> None:
    html = _page("<h1>Headline here</h1>" + "".join(f"<p>{p}</p>" for p in PARAS))
    assert extract_text(html, body_selector=".no-such-class") == extract_text(html)


def test_invalid_body_selector_is_an_extraction_error() -> None:
    with pytest.raises(ExtractionError, match="body selector"):
        extract_article(_page("<p>x</p>"), body_selector="div[[[")


# --- furniture inside the article container ---------------------------------------------


def test_small_forms_captions_and_labels_are_dropped() -> None:
    body = (
        "<h1>Headline here</h1>"
        + f"<p>{PARAS[0]}</p>"
        + "<p>The protesters marched to the square on Sunday. (Image: GETTY )</p>"
        + "<p>Anzeige</p>"
        + f"<p>{PARAS[1]}</p>"
        + "<form><p>E-mail:</p><p>Password:</p><p>I agree to the processing of my personal "
        "data for the purpose of creating a personal account on this site.</p></form>"
        + f"<p>{PARAS[2]}</p><p>Updated at 1:23 p.m.</p>"
    )
    art = extract_article(_page(body))
    assert [art.lead, *(b.text for b in art.blocks)] == PARAS


def test_page_wrapped_in_a_form_still_extracts() -> None:
    paras = [p + " " + p for p in PARAS] * 2  # more text than a sign-up form holds
    html = _page("<h1>Headline here</h1>" + "".join(f"<p>{p}</p>" for p in paras))
    html = html.replace("<body>", "<body><form id='aspnetForm'>").replace(
        "</body>", "</form></body>"
    )
    assert extract_article(html).lead == paras[0]


def test_heading_of_a_dropped_block_goes_with_it() -> None:
    links = "".join(f"<p><a href='/x{i}'>Another story headline {i}</a></p>" for i in range(3))
    body = (
        "<h1>Headline here</h1>"
        + "".join(f"<p>{p}</p>" for p in PARAS[:2])
        + f"<h3>Don't miss</h3>{links}"
        + "<h3>What happens next</h3>"
        + f"<p>{PARAS[2]}</p>"
    )
    art = extract_article(_page(body))
    assert [b.text for b in art.blocks] == [PARAS[1], "What happens next", PARAS[2]]


def test_page_with_nothing_at_all_is_an_extraction_error() -> None:
    with pytest.raises(ExtractionError, match="no article found"):
        extract_article("<html><body><nav><a href='/'>Home</a></nav></body></html>")


def test_html_to_blocks_drops_feed_footers() -> None:
    html = (
        "<p>Lithuania closed the border on Tuesday.</p>"
        "<p>Officials said the decision was final. Read more about it below.</p>"
        "<p>The post <a href='https://x.example/a'>Border closed</a> appeared first on "
        "<a href='https://x.example'>X News</a>.</p>"
    )
    assert [b.text for b in html_to_blocks(html)] == [
        "Lithuania closed the border on Tuesday.",
        "Officials said the decision was final. Read more about it below.",
    ]
    assert html_to_blocks("<p>Short teaser of the story […]</p><p>Continue reading →</p>") == (
        Block(P, text="Short teaser of the story […]"),
    )


def test_json_ld_article_body_stands_in_for_a_script_rendered_page() -> None:
    body_text = "\n".join(PARAS * 2)
    ld = json.dumps({"@type": "NewsArticle", "headline": "Headline here", "articleBody": body_text})
    head = f'<script type="application/ld+json">{ld}</script>'
    app = _page("<h1>Headline here</h1><div id='app'>Loading…</div>", head)
    art = extract_article(app)
    assert art.lead == PARAS[0]
    assert [b.text for b in art.blocks] == [*PARAS[1:], *PARAS]
    # When the page has its text, a short or partial articleBody changes nothing.
    full = _page("<h1>Headline here</h1>" + "".join(f"<p>{p}</p>" for p in PARAS * 2), head)
    assert (
        extract_article(full).text
        == extract_article(
            _page("<h1>Headline here</h1>" + "".join(f"<p>{p}</p>" for p in PARAS * 2))
        ).text
    )


def test_page_of_short_lines_still_has_its_text() -> None:
    verse = [f"Line {i} of the poem about the river Neris" for i in range(12)]
    body = "<h1>Headline here</h1><div class='poem'>" + "<br>".join(verse) + "</div>"
    art = extract_article(_page(body))
    assert [art.lead, *(b.text for b in art.blocks)] == verse


def test_byline_after_the_lead_is_dropped() -> None:
    body = (
        f"<h1>Headline here</h1><p>{PARAS[0]}</p><p>By Jane Roe and John Doe</p>"
        + "".join(f"<p>{p}</p>" for p in PARAS[1:])
        + "<p>By the end of the day the border was closed again, officials said.</p>"
    )
    art = extract_article(_page(body))
    assert [b.text for b in art.blocks] == [
        *PARAS[1:],
        "By the end of the day the border was closed again, officials said.",
    ]


@pytest.mark.parametrize(
    ("key", "hint"),
    [
        ("entry-content", 1),
        ("theiaStickySidebar", -1),  # camelCase words
        ("sd-sharing-enabled sharedaddy", -1),  # glued furniture stems
        ("article-body pagination-first", 1),  # more content words than furniture words
        ("article-comments", 0),  # undecided: the nearest decided ancestor holds
        ("commentary-body", 1),  # commentary is not comments
        ("col-md-6 d-flex", 0),
        ("adSlot", -1),
        ("header", 0),  # "ad" only as a whole word
    ],
)
def test_class_and_id_words(key: str, hint: int) -> None:
    from aggregator.extract.article import _hint_of_words

    assert _hint_of_words(key) == hint


def test_class_words_cannot_condemn_the_whole_article() -> None:
    body = "<h1>Headline here</h1>" + "".join(f"<p>{p}</p>" for p in PARAS)
    html = _page(body).replace("<main>", "<main><div class='layout-with-sidebar'>")
    art = extract_article(html.replace("</main>", "</div></main>"))
    assert [art.lead, *(b.text for b in art.blocks)] == PARAS


def test_article_behind_an_aria_hidden_wrapper_is_found() -> None:
    body = "<h1>Headline here</h1>" + "".join(f"<p>{p}</p>" for p in PARAS)
    html = _page(body).replace("<main>", "<main aria-hidden='true'>")
    assert extract_article(html).lead == PARAS[0]


def test_the_collector_pause_ends_with_the_call() -> None:
    """extract_article pauses the cyclic garbage collector for the call only: it is on again
    after a page and after an error, and a caller that had turned it off finds it off."""
    import gc

    assert gc.isenabled()
    extract_article(_page(f"<article><p>{PARAS[0]}</p></article>"))
    assert gc.isenabled()
    with pytest.raises(ExtractionError):
        extract_article(b"not text")  # type: ignore[arg-type]
    assert gc.isenabled()
    gc.disable()
    try:
        extract_article(_page(f"<article><p>{PARAS[0]}</p></article>"))
        assert not gc.isenabled()
    finally:
        gc.enable()
