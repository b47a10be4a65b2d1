"""feeds.parse_feed on recorded feeds, refusals, JSON Feed, and the id pre-pass."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from pathlib import Path
from unittest import mock

import feedparser
import pytest

from aggregator import feeds
from aggregator.errors import FeedParseError
from aggregator.fetch import charset
from aggregator.model import FailureClass

FEEDS = Path(__file__).resolve().parent.parent / "fixtures" / "feeds"
URL = "https://news.example.org/feed"


def parse(name: str, content_type: str = "application/xml") -> feeds.ParsedFeed:
    body = (FEEDS / name).read_bytes()
    _, encoding = charset.decode(body, content_type)
    return feeds.parse_feed(body, {"Content-Type": content_type}, URL, encoding=encoding)


def test_rss() -> None:
    feed = parse("rss_utf8.xml", "application/rss+xml")
    assert feed.kind == "rss" and feed.title == "Baltic Wire" and feed.language == "en"
    assert feed.ttl_seconds == 45 * 60
    first, second, third = feed.entries
    assert first.guid == "bw-1001"
    assert first.author == "Rūta Petraitytė"
    assert first.published == datetime(2026, 11, 23, 5, 30, tzinfo=UTC)
    assert "<script" not in first.content_html  # sanitized by feedparser
    assert "weather balloons" in first.content_html
    assert second.guid == "https://news.example.org/2026/11/23/minsk-talks"
    assert second.link == "https://news.example.org/2026/11/23/minsk-talks"  # relative resolved
    assert third.guid == third.link == "https://news.example.org/2026/11/22/no-guid"


def test_atom() -> None:
    feed = parse("atom.xml", "application/atom+xml")
    assert feed.kind == "atom" and len(feed.entries) == 2
    entry = feed.entries[0]
    assert entry.guid == "tag:border.example.net,2026:army-patrol"
    assert entry.published == datetime(2026, 11, 23, 6, 0, tzinfo=UTC)
    assert entry.author == "Jonas Kazlauskas"
    assert entry.summary_html and entry.content_html
    assert "XHTML content paragraph" in feed.entries[1].content_html


def test_json_feed() -> None:
    feed = parse("jsonfeed.json", "application/feed+json")
    assert feed.kind == "json" and feed.title == "JSON Desk"
    first, second = feed.entries
    assert first.guid == "jd-1" and first.author == "Ona Jonaitė"
    assert first.published == datetime(2026, 11, 23, 5, 0, tzinfo=UTC)
    assert second.guid == "2"
    assert second.link == "https://news.example.org/a/2"
    assert second.content_html == "<p>First paragraph.</p><p>Second paragraph.</p>"


def test_json_that_is_not_a_json_feed() -> None:
    with pytest.raises(feeds.NotAFeedError):
        feeds.parse_feed(b'{"hello": "world"}', {"content-type": "application/json"}, URL)
    with pytest.raises(feeds.BrokenFeedError):
        feeds.parse_feed(b'{"version": ', {"content-type": "application/feed+json"}, URL)


@pytest.mark.parametrize(
    ("name", "title"),
    [
        ("rss_windows1251.xml", "Лукашенко пообещал остановить метеозонды"),
        ("rss_mislabelled_1251.xml", "Лукашенко пообещал остановить метеозонды"),
        ("rss_windows1257.xml", "Vyriausybė paskelbė ekstremaliąją situaciją dėl balionų"),
        ("atom_iso8859_13.xml", "Į Vilniaus oro uostą vėl įskrido balionai"),
    ],
)
def test_legacy_charsets_give_clean_text(name: str, title: str) -> None:
    feed = parse(name, "text/xml; charset=iso-8859-1")
    assert feed.entries[0].title == title


def test_mislabelled_feed_without_our_encoding_shows_why_it_is_needed() -> None:
    # Left to its own devices feedparser believes the declaration and yields mojibake.
    body = (FEEDS / "rss_mislabelled_1251.xml").read_bytes()
    feed = feeds.parse_feed(body, {"content-type": "text/xml"}, URL)
    assert feed.entries[0].title != "Лукашенко пообещал остановить метеозонды"


def test_malformed_xml_is_read_leniently() -> None:
    feed = parse("malformed.xml")
    assert [e.guid for e in feed.entries][:1] == ["https://news.example.org/br-1"]
    assert len(feed.entries) == 2


def test_entity_declarations_are_refused_before_feedparser_runs() -> None:
    body = (FEEDS / "entities.xml").read_bytes()
    with mock.patch.object(feedparser, "parse") as parser:
        with pytest.raises(feeds.BrokenFeedError) as info:
            feeds.parse_feed(body, {}, URL)
        parser.assert_not_called()
    assert feeds.failure_class_of(info.value) == FailureClass.PARSE_ERROR


def test_doctype_without_entities_and_entity_text_in_content_are_fine() -> None:
    plain_doctype = (
        b'<?xml version="1.0"?>\n<!DOCTYPE rss SYSTEM "rss.dtd">\n<rss version="2.0"><channel>'
        b"<title>t</title><item><guid>urn:g</guid><title>x</title></item></channel></rss>"
    )
    assert feeds.parse_feed(plain_doctype, {}, URL).entries[0].guid == "urn:g"
    in_content = (
        b'<?xml version="1.0"?><rss version="2.0"><channel><title>t</title><item><guid>g</guid>'
        b'<description><![CDATA[<!DOCTYPE x [ <!ENTITY a "b"> ]>]]></description></item>'
        b"</channel></rss>"
    )
    assert not feeds.declares_entities(in_content)


@pytest.mark.parametrize(
    ("body", "content_type", "expected"),
    [
        (b"", "application/rss+xml", FailureClass.NOT_A_FEED),
        (b"   \n ", "application/rss+xml", FailureClass.NOT_A_FEED),
        ((FEEDS / "challenge.html").read_bytes(), "text/html", FailureClass.NOT_A_FEED),
        (b"just some text, not markup at all", "text/plain", FailureClass.NOT_A_FEED),
    ],
)
def test_not_a_feed(body: bytes, content_type: str, expected: FailureClass) -> None:
    with pytest.raises(FeedParseError) as info:
        feeds.parse_feed(body, {"content-type": content_type}, URL)
    assert feeds.failure_class_of(info.value) == expected


def test_challenge_page_message_names_the_page() -> None:
    body = (FEEDS / "challenge.html").read_bytes()
    with pytest.raises(feeds.NotAFeedError, match="Just a moment"):
        feeds.parse_feed(body, {"content-type": "text/html"}, URL)


def test_feedparser_is_given_bytes_through_bytesio_with_headers() -> None:
    body = (FEEDS / "rss_utf8.xml").read_bytes()
    real = feedparser.parse
    with mock.patch.object(feedparser, "parse", side_effect=real) as parser:
        feeds.parse_feed(body, {"Content-Type": "application/rss+xml"}, URL)
    (source,), kwargs = parser.call_args
    assert isinstance(source, io.BytesIO)
    assert kwargs["response_headers"]["content-type"] == "application/rss+xml"
    assert kwargs["response_headers"]["content-location"] == URL


@pytest.mark.parametrize(
    "name",
    [
        "rss_utf8.xml",
        "atom.xml",
        "rss_windows1251.xml",
        "rss_windows1257.xml",
        "atom_iso8859_13.xml",
        "malformed.xml",
        "entities.xml",
    ],
)
def test_prepass_ids_match_the_parsed_guids_or_abstain(name: str) -> None:
    body = (FEEDS / name).read_bytes()
    text, encoding = charset.decode(body, None)
    ids = feeds.scan_entry_ids(text)
    if ids is None:
        return  # abstaining is always safe: the caller parses
    parsed = feeds.parse_feed(body, {}, URL, encoding=encoding)
    assert ids == [e.guid for e in parsed.entries]


def test_prepass_abstains_on_truncated_and_tricky_documents() -> None:
    assert feeds.scan_entry_ids((FEEDS / "malformed.xml").read_text()) is None
    two_guids = "<rss><channel><item><guid>https://a/1</guid><guid>https://a/2</guid></item></channel></rss>"
    assert feeds.scan_entry_ids(two_guids) is None
    relative = "<rss><channel><item><guid>1</guid></item></channel></rss>"
    assert feeds.scan_entry_ids(relative) is None
    not_permalink = '<rss><channel><item><guid isPermaLink="false">1</guid></item></channel></rss>'
    assert feeds.scan_entry_ids(not_permalink) == ["1"]
    hidden = (
        "<rss><channel><item><guid>https://a/1</guid><description><![CDATA[<item><guid>"
        "https://a/9</guid></item>]]></description></item></channel></rss>"
    )
    assert feeds.scan_entry_ids(hidden) == ["https://a/1"]
    assert feeds.scan_entry_ids("<html><body>no feed</body></html>") is None
