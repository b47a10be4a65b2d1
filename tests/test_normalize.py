"""normalize: feed entries and articles into records in the record text format."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from aggregator import feeds, normalize, records
from aggregator.fetch import charset
from aggregator.identity import canonical_url
from aggregator.model import Article, Block, BlockKind, Schedule, Source, SourceKind

FEEDS = Path(__file__).resolve().parent.parent / "fixtures" / "feeds"
NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
SOURCE = Source(
    id="wire",
    kind=SourceKind.FEED,
    url="https://news.example.org/feed",
    schedule=Schedule(interval_seconds=600),
    language="en",
)


def entries(name: str) -> tuple[feeds.FeedEntry, ...]:
    body = (FEEDS / name).read_bytes()
    _, encoding = charset.decode(body, None)
    return feeds.parse_feed(body, {}, "https://news.example.org/feed", encoding=encoding).entries


def test_entry_with_content_becomes_lead_title_body() -> None:
    record = normalize.record_from_entry(entries("rss_utf8.xml")[0], SOURCE, NOW)
    lines = record.text.splitlines()
    assert lines[0].startswith("Vilnius airport suspended flights")
    assert lines[1] == "Lithuania closes Vilnius airport again after balloon incursions"
    assert "- Flights diverted to Kaunas" in lines
    assert "alert" not in record.text
    assert record.text.endswith("\n")
    doc = records.parse(record.text)
    assert records.render(doc) == record.text


def test_ids_hashes_and_urls() -> None:
    entry = entries("rss_utf8.xml")[0]
    record = normalize.record_from_entry(entry, SOURCE, NOW)
    assert record.url == entry.link
    assert record.canonical_url == canonical_url(entry.link or "")
    assert "utm_" not in (record.canonical_url or "")
    assert record.id == records.record_id(record.canonical_url, record.text)
    assert len(record.id) == 16
    assert record.content_hash == records.content_hash(record.text)
    assert record.guid == "bw-1001" and record.source_id == "wire"
    assert record.fetched == NOW and record.published == entry.published
    assert record.author == "Rūta Petraitytė" and record.language == "en"


def test_tracking_variants_of_one_link_are_one_record_id() -> None:
    entry = entries("rss_utf8.xml")[0]
    plain = entry.link.split("?")[0] if entry.link else ""
    from dataclasses import replace

    a = normalize.record_from_entry(entry, SOURCE, NOW)
    b = normalize.record_from_entry(replace(entry, link=plain), SOURCE, NOW)
    assert a.id == b.id


def test_summary_only_entry_uses_first_paragraph_as_lead() -> None:
    record = normalize.record_from_entry(entries("rss_utf8.xml")[1], SOURCE, NOW)
    assert record.text.splitlines() == [
        "Belarus said it was ready to discuss the situation on the border with Lithuania.",
        "Minsk says it is ready for talks on border tensions",
        "Second paragraph & more.",
    ]


def test_distinct_summary_and_content() -> None:
    entry = feeds.FeedEntry(
        guid="x",
        link="https://a.example/x",
        title="Title",
        summary_html="<p>A teaser that differs.</p>",
        content_html="<p>Body one.</p><p>Body two.</p>",
    )
    record = normalize.record_from_entry(entry, SOURCE, NOW)
    assert record.text.splitlines() == ["A teaser that differs.", "Title", "Body one.", "Body two."]


def test_html_title_and_missing_title() -> None:
    record = normalize.record_from_entry(entries("atom.xml")[0], SOURCE, NOW)
    assert record.title == "Army to patrol the border area"
    untitled = feeds.FeedEntry(
        guid="y",
        link=None,
        title="",
        summary_html="<p>Police closed the road. Traffic was diverted.</p>",
    )
    record = normalize.record_from_entry(untitled, SOURCE, NOW)
    assert record.title == "Police closed the road."
    assert record.url is None and record.canonical_url is None
    assert record.id == records.record_id(None, record.text)


def test_legacy_charset_entries_are_clean_text() -> None:
    record = normalize.record_from_entry(entries("rss_mislabelled_1251.xml")[0], SOURCE, NOW)
    assert record.title == "Лукашенко пообещал остановить метеозонды"
    assert "Президент Беларуси" in record.text
    lt = normalize.record_from_entry(entries("rss_windows1257.xml")[0], SOURCE, NOW)
    assert "ekstremaliąją" in lt.text and "„" in lt.text


def test_non_http_links_are_dropped() -> None:
    entry = feeds.FeedEntry(guid="z", link="javascript:alert(1)", title="T", summary_html="x")
    record = normalize.record_from_entry(entry, SOURCE, NOW)
    assert record.url is None


def test_record_from_article() -> None:
    article = Article(
        title="Army patrols the border",
        lead="The army began patrols on Tuesday.",
        blocks=(Block(BlockKind.PARAGRAPH, text="Parliament approved the extra rights."),),
        text="",
        author="J. K.",
        published=datetime(2026, 11, 23, 7, 0, tzinfo=UTC),
        canonical_url="https://border.example.net/articles/army-patrol?utm_source=x",
        language="en",
    )
    record = normalize.record_from_article(
        article, SOURCE, "https://m.border.example.net/articles/army-patrol", NOW
    )
    assert record.text.splitlines() == [
        "The army began patrols on Tuesday.",
        "Army patrols the border",
        "Parliament approved the extra rights.",
    ]
    assert record.canonical_url == canonical_url("https://border.example.net/articles/army-patrol")
    assert record.guid == "https://m.border.example.net/articles/army-patrol"
    assert record.published == article.published
    # A canonical link to the home page is ignored.
    from dataclasses import replace

    home = replace(article, canonical_url="https://border.example.net/")
    record = normalize.record_from_article(home, SOURCE, "https://border.example.net/a/1", NOW)
    assert record.canonical_url == canonical_url("https://border.example.net/a/1")
