"""The expat fast path reads feeds exactly as feedparser does, or declines.

"Exactly" means: every ParsedFeed/FeedEntry field equal, except the HTML of summaries and
content, which feedparser sanitizes; for those the records the pipeline builds from the entries
(normalize.record_from_entry, which reads the HTML through the block extractor) must be equal.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from email.utils import format_datetime
from html import escape
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aggregator import feeds, normalize
from aggregator.fetch import charset
from aggregator.model import Schedule, Source, SourceKind

ROOT = Path(__file__).resolve().parent.parent
FEEDS = ROOT / "fixtures" / "feeds"
URL = "https://news.example.org/feed"
NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
SOURCE = Source(
    id="wire",
    kind=SourceKind.FEED,
    url=URL,
    schedule=Schedule(interval_seconds=600),
    language="en",
)
sys.path.insert(0, str(ROOT / "benchmarks"))
import feedserver  # noqa: E402


class _Spy:
    def __init__(self) -> None:
        self.taken = 0
        self.declined = 0
        self.real = feeds.fast_parse_feed

    def __call__(self, body: bytes, headers: Mapping[str, str]) -> feeds.ParsedFeed | None:
        result = self.real(body, headers)
        if result is None:
            self.declined += 1
        else:
            self.taken += 1
        return result


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch) -> Iterator[_Spy]:
    s = _Spy()
    monkeypatch.setattr(feeds, "fast_parse_feed", s)
    yield s


def _never(body: bytes, headers: Mapping[str, str]) -> feeds.ParsedFeed | None:
    return None


def _slow(body: bytes, headers: dict[str, str], encoding: str | None) -> feeds.ParsedFeed:
    real = feeds.fast_parse_feed
    feeds.fast_parse_feed = _never
    try:
        return feeds.parse_feed(body, headers, URL, encoding=encoding)
    finally:
        feeds.fast_parse_feed = real


def assert_same(fast: feeds.ParsedFeed, slow: feeds.ParsedFeed) -> None:
    for name in ("kind", "title", "link", "language", "ttl_seconds"):
        assert getattr(fast, name) == getattr(slow, name), name
    assert len(fast.entries) == len(slow.entries)
    for a, b in zip(fast.entries, slow.entries, strict=True):
        for field in dataclasses.fields(a):
            if field.name not in ("summary_html", "content_html"):
                assert getattr(a, field.name) == getattr(b, field.name), field.name
        ra = normalize.record_from_entry(a, SOURCE, NOW)
        rb = normalize.record_from_entry(b, SOURCE, NOW)
        assert ra == rb


def check(spy: _Spy, body: bytes, headers: dict[str, str], encoding: str | None = None) -> bool:
    """Parse both ways; True when the fast path took the document."""
    before = spy.taken
    try:
        slow = _slow(body, headers, encoding)
    except feeds.FeedParseError:
        with pytest.raises(feeds.FeedParseError):
            feeds.parse_feed(body, headers, URL, encoding=encoding)
        return spy.taken > before
    fast = feeds.parse_feed(body, headers, URL, encoding=encoding)
    assert_same(fast, slow)
    return spy.taken > before


@pytest.mark.parametrize("path", sorted(FEEDS.iterdir()), ids=lambda p: p.name)
def test_fixtures_fast_equals_feedparser(spy: _Spy, path: Path) -> None:
    body = path.read_bytes()
    for content_type in ("application/xml", "application/rss+xml", "text/xml"):
        _, encoding = charset.decode(body, content_type)
        check(spy, body, {"Content-Type": content_type}, encoding)
        check(spy, body, {"Content-Type": content_type}, None)


def test_feedserver_feeds_fast_equals_feedparser(spy: _Spy) -> None:
    epoch = datetime(2026, 1, 1, tzinfo=UTC)
    taken = 0
    n = 300
    for i in range(n):
        spec = feedserver.feed_spec(11, i)
        doc = feedserver.render_feed(11, spec, i % 3, epoch)
        headers = {"Content-Type": doc.content_type}
        _, encoding = charset.decode(doc.body, doc.content_type)
        taken += check(spy, doc.body, headers, encoding)
    # The fast path must actually be used on these plain feeds, not decline its way to safety.
    assert taken == n


def test_malformed_xml_falls_back(spy: _Spy) -> None:
    body = (FEEDS / "malformed.xml").read_bytes()
    parsed = feeds.parse_feed(body, {}, URL)
    assert spy.declined >= 1 and spy.taken == 0
    assert parsed.entries  # feedparser read it leniently
    truncated = _rss_doc([_item("Title", "https://x.example/1", "Mon, 23 Nov 2026 10:00:00 GMT")])
    assert not check(spy, truncated[:-40], {})


def test_fast_path_declines_what_it_cannot_vouch_for(spy: _Spy) -> None:
    cases = [
        _item("T", "/relative", "Mon, 23 Nov 2026 10:00:00 GMT"),  # needs the base URL
        _item("T", "https://x.example/1", "23 Nov 2026 10:00 EST"),  # odd date
        _item("T", "https://x.example/1", "Mon, 23 Nov 2026 10:00:00 GMT", extra="<x:y/>"),
        _item("T", "https://x.example/1", "Mon, 23 Nov 2026 10:00:00 GMT", desc="<script>a"),
    ]
    for item in cases:
        body = _rss_doc([item]).replace(b"<rss ", b'<rss xmlns:x="urn:x" ')
        assert not check(spy, body, {})
    assert not check(spy, _rss_doc([]).replace(b'version="2.0"', b'version="0.91"'), {})


def _item(title: str, link: str, date: str, *, desc: str = "<p>x</p>", extra: str = "") -> str:
    return (
        f"<item><title>{escape(title)}</title><link>{escape(link)}</link>"
        f"<pubDate>{date}</pubDate><description><![CDATA[{desc}]]></description>{extra}</item>"
    )


def _rss_doc(items: list[str], encoding: str = "utf-8") -> bytes:
    text = (
        f'<?xml version="1.0" encoding="{encoding}"?>\n<rss version="2.0" '
        'xmlns:dc="http://purl.org/dc/elements/1.1/"><channel><title>T</title>'
        "<link>https://x.example/</link><ttl>30</ttl>" + "".join(items) + "</channel></rss>\n"
    )
    return text.encode(encoding, errors="xmlcharrefreplace")


_WORDS = st.sampled_from(
    [
        "Vilnius",
        "Šiauliai",
        "ąčęėįšųūž",
        "Москва",
        "новости",
        "Tom & Jerry",
        "a < b",
        "x > y",
        "&amp;",
        "&lt;b&gt;",
        "AT&T",
        "“quoted”",
        "  spaced  ",
        "]]>",
        "'apos'",
        '"q"',
        "&#8594;",
    ]
)
_TEXT = st.lists(_WORDS, min_size=0, max_size=6).map(" ".join)
_DATES = st.one_of(
    st.datetimes(
        min_value=datetime(1990, 1, 1), max_value=datetime(2035, 1, 1), timezones=st.just(UTC)
    ).map(lambda d: format_datetime(d, usegmt=True)),
    st.sampled_from(
        [
            "Mon, 23 Nov 2026 10:00:00 +0200",
            "23 Nov 2026 10:00:00 -0530",
            "Mon, 23 Nov 2026 10:00 GMT",
            "Mon, 23 Nov 26 10:00:00 GMT",
            "Mon, 31 Feb 2026 10:00:00 GMT",
            "2026-11-23T10:00:00Z",
            "yesterday",
            "",
        ]
    ),
)


@st.composite
def _rss_items(draw: st.DrawFn) -> str:
    title = draw(_TEXT)
    cdata = draw(st.booleans())
    body = draw(_TEXT)
    desc_html = draw(
        st.sampled_from(
            [
                f"<p>{escape(body)}</p>",
                body,
                f"<p><b>{escape(body)}</b>&nbsp;&hellip;&copy;&#8594;&#x41;</p><br/><p>x</p>",
                f'<p><a href="/rel">{escape(body)}</a><img src="i.jpg" alt="{escape(body)}"/></p>',
            ]
        )
    )
    if cdata:
        desc = "<![CDATA[" + desc_html.replace("]]>", "]]]]><![CDATA[>") + "]]>"
    else:
        desc = escape(desc_html)
    title_xml = (
        "<![CDATA[" + title.replace("]]>", "]]]]><![CDATA[>") + "]]>"
        if draw(st.booleans())
        else escape(title)
    )
    n = draw(st.integers(0, 10_000))
    guid = draw(
        st.sampled_from(
            [
                "",
                f"<guid>https://x.example/a/{n}</guid>",
                f'<guid isPermaLink="false">x.example:{n}</guid>',
                f"<guid>x.example:{n}</guid>",
            ]
        )
    )
    author = draw(
        st.sampled_from(
            [
                "",
                "<dc:creator>Jonas Jonaitis</dc:creator>",
                "<dc:creator>Иван Петров</dc:creator>",
                "<dc:creator>a@b.lt (A)</dc:creator>",
            ]
        )
    )
    return (
        f"<item><title>{title_xml}</title><link>https://x.example/a/{n}</link>{guid}"
        f"<pubDate>{draw(_DATES)}</pubDate>{author}<description>{desc}</description></item>"
    )


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    items=st.lists(_rss_items(), min_size=1, max_size=4),
    encoding=st.sampled_from(["utf-8", "windows-1251", "windows-1257"]),
)
def test_generated_rss_fast_equals_feedparser_or_declines(items: list[str], encoding: str) -> None:
    s = _Spy()
    real = feeds.fast_parse_feed
    feeds.fast_parse_feed = s
    try:
        body = _rss_doc(items, encoding)
        for headers in ({}, {"Content-Type": f"application/rss+xml; charset={encoding}"}):
            _, detected = charset.decode(body, headers.get("Content-Type"))
            check(s, body, headers, detected)
    finally:
        feeds.fast_parse_feed = real


def _rss_channel(items: str, channel: str = "") -> bytes:
    return (
        '<?xml version="1.0" encoding="utf-8"?><rss version="2.0" '
        'xmlns:content="http://purl.org/rss/1.0/modules/content/"><channel><title>T</title>'
        f"<link>https://x.example/</link>{channel}{items}</channel></rss>"
    ).encode()


def _atom_feed(entries: str, lang: str = ' xml:lang="lt"') -> bytes:
    return (
        f'<feed xmlns="http://www.w3.org/2005/Atom"{lang}><title>T</title>'
        f'<link href="https://x.example/"/>{entries}</feed>'
    ).encode()


_L = "<link>https://x.example/1</link>"
_AL = '<link href="https://x.example/1"/>'
EDGE_CASES = {
    "whitespace": _rss_channel(
        "<item><title>\n  A\n  B </title><link>\n https://x.example/1 \n</link><guid>\n"
        " https://x.example/1 </guid><pubDate>  Mon, 23 Nov 2026 10:00:00 +0000 </pubDate>"
        "<description>plain text</description></item>"
    ),
    "ttl zero": _rss_channel(f"<item>{_L}</item>", "<ttl>0</ttl>"),
    "ttl text": _rss_channel(f"<item>{_L}</item>", "<ttl>abc</ttl>"),
    "channel language": _rss_channel(f"<item>{_L}</item>", "<language>lt-LT</language>"),
    "content only": _rss_channel(
        f"<item>{_L}<content:encoded><![CDATA[<p>a</p><p>b</p>]]></content:encoded></item>"
    ),
    "description and content": _rss_channel(
        f"<item>{_L}<description>lead text</description>"
        "<content:encoded><![CDATA[<p>a</p><p>b</p>]]></content:encoded></item>"
    ),
    "equal description and content": _rss_channel(
        f"<item>{_L}<description><![CDATA[<p>a</p>]]></description>"
        "<content:encoded><![CDATA[<p>a</p>]]></content:encoded></item>"
    ),
    "atom offset and fraction": _atom_feed(
        f"<entry><title>A</title>{_AL}<id>urn:x:1</id>"
        "<updated>2026-11-23T10:00:00.123+02:00</updated>"
        '<content type="html">&lt;p&gt;x&lt;/p&gt;</content></entry>'
    ),
    "atom text constructs": _atom_feed(
        f"<entry><title>A</title>{_AL}<id>urn:x:1</id>"
        "<published>2026-11-23T10:00:00-05:30</published><updated>2026-11-24T10:00:00Z</updated>"
        '<summary>plain</summary><content type="text">body text</content></entry>',
        "",
    ),
    "atom without id": _atom_feed(
        f"<entry><title>A</title>{_AL}<updated>2026-11-23T10:00:00Z</updated></entry>"
    ),
}


@pytest.mark.parametrize("name", sorted(EDGE_CASES))
def test_edge_cases_fast_equals_feedparser(spy: _Spy, name: str) -> None:
    for headers in ({}, {"Content-Type": "application/xml"}):
        assert check(spy, EDGE_CASES[name], headers)  # taken, and equal to feedparser
