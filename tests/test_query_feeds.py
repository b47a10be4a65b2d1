"""News search feeds (Google News, Bing News) and FeedBurner: records credited to the real
outlet, the outlet's URL where it can be resolved, and the relayed copy deduplicated against
the outlet's own feed item (by URL, or by outlet and headline when the link stays wrapped).

Fixtures: fixtures/feeds/gnews_search.rss, bing_news.rss, reuters_own.rss, feedburner.rss,
borderwatch_own.rss (see fixtures/feeds/README.md)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from aggregator import feeds, normalize
from aggregator.cycle import run_cycle
from aggregator.fetch import Fetcher
from aggregator.identity import canonical_url, headline_key
from aggregator.match import TopicMatcher
from aggregator.model import (
    DedupOptions,
    DedupReason,
    Record,
    Schedule,
    Source,
    SourceKind,
    Topic,
    TopicRules,
)
from aggregator.pipeline import IngestResult, ingest_many
from aggregator.store import Store, open_store
from aggregator.watchlist import load_watchlist_text

FEEDS = Path(__file__).resolve().parent.parent / "fixtures" / "feeds"
NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
REUTERS_URL = (
    "https://www.reuters.com/world/europe/"
    "lithuanias-vilnius-airport-shut-again-balloons-belarus-2026-11-19/"
)
AIRPORT = "Lithuania's main airport shut again as balloons drift in from Belarus"
MATCHER = TopicMatcher(
    (Topic("border", "Border", TopicRules(any=("border*", "balloon*", "airport*"))),)
)
OPTIONS = DedupOptions()


def source(sid: str, kind: SourceKind, title: str = "") -> Source:
    return Source(
        id=sid,
        kind=kind,
        url=f"https://feeds.example.org/{sid}",
        schedule=Schedule(interval_seconds=600),
        title=title or sid,
        language="en",
    )


GNEWS = source("gnews-border", SourceKind.QUERY, "Google News: Lithuania Belarus border")
BING = source("bing-border", SourceKind.QUERY, "Bing News: Lithuania Belarus border")
REUTERS = source("reuters-europe", SourceKind.FEED, "Reuters Europe")
FEEDBURNER = source("bordernotes-fb", SourceKind.FEED, "Notes from the Border (FeedBurner)")
BORDERWATCH = source("bordernotes", SourceKind.FEED, "Notes from the Border")


def entries(name: str) -> tuple[feeds.FeedEntry, ...]:
    body = (FEEDS / name).read_bytes()
    return feeds.parse_feed(body, {}, "https://feeds.example.org/x").entries


def recs(name: str, src: Source) -> list[Record]:
    return [normalize.record_from_entry(e, src, NOW) for e in entries(name)]


# --- parsing and normalizing -------------------------------------------------------------


def test_google_news_items_are_credited_to_the_outlet_with_the_suffix_removed() -> None:
    got = recs("gnews_search.rss", GNEWS)
    assert [r.outlet for r in got] == ["Reuters", "AP News", "The Baltic Times", "Euroradio"]
    assert [r.title for r in got] == [
        AIRPORT,
        "Lithuania extends closure of two Belarus border crossings until Dec. 20",
        # Only the suffix Google appended goes: the outlet's own " - Baltic Times" stays.
        "Border guards: smugglers switch from balloons to drones - Baltic Times",
        "Minsk summons Lithuanian envoy over border fence",  # suffix only, no <source>
    ]
    first = got[0]
    assert first.outlet_url == "https://www.reuters.com"
    # The link stays wrapped: Google's feed names no target.
    assert first.url is not None and first.url.startswith("https://news.google.com/rss/articles/")
    # The description (headline, then the outlet's name) does not leave the name in the text.
    assert first.text.splitlines()[0] == AIRPORT
    assert first.headline_key == headline_key("https://www.reuters.com", AIRPORT)
    # No <source>: no site to key the headline on.
    assert got[3].outlet_url is None and got[3].headline_key is None


def test_a_plain_feed_keeps_a_dash_in_its_headline() -> None:
    plain = normalize.record_from_entry(entries("gnews_search.rss")[0], REUTERS, NOW)
    assert plain.title == AIRPORT + " - Reuters"
    assert plain.outlet == "Reuters"  # <source> credits the outlet in any feed


def test_bing_news_links_are_unwrapped_to_the_article() -> None:
    got = recs("bing_news.rss", BING)
    assert [r.outlet for r in got] == ["Reuters", "LRT"]
    assert got[0].url == REUTERS_URL
    assert got[0].outlet_url == "https://www.reuters.com"
    assert got[1].outlet_url == "https://www.lrt.lt"
    own = recs("reuters_own.rss", REUTERS)[0]
    assert got[0].canonical_url == own.canonical_url and got[0].id == own.id
    assert got[0].headline_key == own.headline_key


def test_unwrap_link_leaves_other_links_alone() -> None:
    assert normalize.unwrap_link("https://example.org/a?url=https://b.example", None) == (
        "https://example.org/a?url=https://b.example"
    )
    bing_search = "https://www.bing.com/news/search?q=x&url=https%3a%2f%2fa.example%2f"
    assert normalize.unwrap_link(bing_search, None) == bing_search
    # A FeedBurner link whose guid is not a URL stays (nothing better is known).
    fb = "http://feeds.feedburner.com/~r/X/~3/abc/"
    assert normalize.unwrap_link(fb, "tag:blogger.com,1999:post-1") == fb
    assert normalize.unwrap_link(fb, "https://o.example/p/1") == "https://o.example/p/1"
    assert normalize.unwrap_link(fb, "x", "https://o.example/p/2") == "https://o.example/p/2"


def test_feedburner_items_get_the_outlets_url() -> None:
    relayed = recs("feedburner.rss", FEEDBURNER)
    own = recs("borderwatch_own.rss", BORDERWATCH)
    assert [r.url for r in relayed] == [
        "https://borderwatch.example.org/2026/11/21/checkpoints-closed-into-december/"
        "?utm_source=feedburner&utm_medium=feed",  # feedburner:origLink
        "https://borderwatch.example.org/2026/11/19/vilnius-airport-halts-flights-again/",  # guid
    ]
    assert [r.canonical_url for r in relayed] == [r.canonical_url for r in own]
    assert [r.id for r in relayed] == [r.id for r in own]
    assert all(r.outlet is None for r in relayed)


# --- deduplication against the outlet's own copy -----------------------------------------


def ingest(store: Store, name: str, src: Source) -> list[IngestResult]:
    return ingest_many(
        store, recs(name, src), matcher=MATCHER, options=OPTIONS, allowed_topics=(), now=NOW
    )


def sources_of(store: Store, result: IngestResult) -> list[tuple[str, str | None]]:
    """The source lines of the result's record in its development (name, link)."""
    assert result.development_id is not None
    dev = store.get_development(result.development_id)
    assert dev is not None
    return [(s.source_title, s.url) for s in dev.sources if s.record_id == result.record_id]


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    with open_store(db_url) as s:
        s.sync_sources([GNEWS, BING, REUTERS, FEEDBURNER, BORDERWATCH], NOW)
        yield s


def test_google_item_after_the_outlets_own_is_a_duplicate_by_headline(store: Store) -> None:
    own = ingest(store, "reuters_own.rss", REUTERS)
    relayed = ingest(store, "gnews_search.rss", GNEWS)
    assert relayed[0].stored is False and relayed[0].reason is DedupReason.SAME_HEADLINE
    assert relayed[0].record_id == own[0].record_id
    assert sources_of(store, relayed[0]) == [("Reuters Europe", REUTERS_URL)]
    assert all(r.stored for r in relayed[1:])
    # The other items are credited to their outlets, not to the search feed.
    assert sources_of(store, relayed[1])[0][0] == "AP News"
    # A second fetch of the search feed adds nothing.
    again = ingest(store, "gnews_search.rss", GNEWS)
    assert [r.stored for r in again] == [False] * 4


def test_google_item_before_the_outlets_own_shows_the_outlets_url(store: Store) -> None:
    relayed = ingest(store, "gnews_search.rss", GNEWS)
    own = ingest(store, "reuters_own.rss", REUTERS)
    assert own[0].stored is False and own[0].reason is DedupReason.SAME_HEADLINE
    assert own[0].record_id == relayed[0].record_id
    # One line for the outlet, with its own URL instead of Google's wrapped one.
    assert sources_of(store, own[0]) == [("Reuters", REUTERS_URL)]


def test_bing_item_is_a_duplicate_by_url(store: Store) -> None:
    own = ingest(store, "reuters_own.rss", REUTERS)
    relayed = ingest(store, "bing_news.rss", BING)
    assert relayed[0].stored is False and relayed[0].reason is DedupReason.SAME_URL
    assert relayed[0].record_id == own[0].record_id
    assert sources_of(store, relayed[0]) == [("Reuters Europe", REUTERS_URL)]
    assert relayed[1].stored and sources_of(store, relayed[1])[0][0] == "LRT"


def test_feedburner_copy_is_a_duplicate_of_the_outlets_own(store: Store) -> None:
    ingest(store, "borderwatch_own.rss", BORDERWATCH)
    relayed = ingest(store, "feedburner.rss", FEEDBURNER)
    assert [r.stored for r in relayed] == [False, False]
    assert {r.reason for r in relayed} == {DedupReason.SAME_URL}


def test_same_headline_days_apart_is_not_one_article(store: Store) -> None:
    from dataclasses import replace

    own = recs("reuters_own.rss", REUTERS)[0]
    ingest_many(store, [own], matcher=MATCHER, options=OPTIONS, allowed_topics=(), now=NOW)
    later = replace(recs("gnews_search.rss", GNEWS)[0], published=datetime(2026, 12, 1, tzinfo=UTC))
    [result] = ingest_many(
        store, [later], matcher=MATCHER, options=OPTIONS, allowed_topics=(), now=NOW
    )
    assert result.stored is True


# --- full text: Google's wrapped link followed, within the fetch guard ------------------

ARTICLE = """<!doctype html><html lang="en"><head><title>{title}</title>
<link rel="canonical" href="{canonical}"></head><body><article><h1>{title}</h1>
<p>VILNIUS, Nov 19 - Vilnius airport suspended flights for nearly four hours on Thursday after
balloons carrying smuggled cigarettes from Belarus entered its airspace, diverting eleven
flights to Kaunas and Riga, Lithuanian Airports said in a statement on its website.</p>
<p>It was the fifteenth such closure since early October. Border guards recovered three of the
balloons near Salcininkai, the State Border Guard Service said, and the government said it
would ask the European Union for more money for radar and for the border guards.</p>
<p>Officials in Minsk did not answer requests for comment on Thursday evening.</p>
</article></body></html>"""


class _Site:
    """Two loopback hosts: 127.0.0.1 plays news.google.com, 127.0.0.2 the outlet."""

    def __init__(self, consent: bool = False) -> None:
        self.requests: list[str] = []
        self.consent = consent  # the search site answers with a page of its own
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                host = self.server.server_address[0]
                outer.requests.append(f"{host}{self.path}")
                if host == "127.0.0.1" and self.path.startswith("/rss/search"):
                    self._send(200, "application/rss+xml", outer.search_feed())
                elif outer.consent and self.path.startswith("/rss/articles/"):
                    page = ARTICLE.format(title="Before you continue", canonical=outer.base)
                    self._send(200, "text/html; charset=utf-8", page.replace("VILNIUS", "CONSENT"))
                elif host == "127.0.0.1" and self.path.startswith("/rss/articles/"):
                    self.send_response(302)
                    self.send_header("Location", f"{outer.outlet}/world/airport-balloons/")
                    self.end_headers()
                elif host == "127.0.0.2" and self.path == "/world/airport-balloons/":
                    page = ARTICLE.format(
                        title=AIRPORT, canonical=f"{outer.outlet}/world/airport-balloons/"
                    )
                    self._send(200, "text/html; charset=utf-8", page)
                else:
                    self._send(404, "text/plain", "not found")

            def _send(self, status: int, ctype: str, body: str) -> None:
                data = body.encode()
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.google = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.outlet_server = ThreadingHTTPServer(("127.0.0.2", 0), Handler)
        self.base = f"http://127.0.0.1:{self.google.server_address[1]}"
        self.outlet = f"http://127.0.0.2:{self.outlet_server.server_address[1]}"
        self.threads = [
            threading.Thread(target=s.serve_forever, daemon=True)
            for s in (self.google, self.outlet_server)
        ]

    def search_feed(self) -> str:
        link = f"{self.base}/rss/articles/CBMiAirportBalloons?oc=5"
        return (
            '<?xml version="1.0" encoding="UTF-8"?><rss version="2.0"><channel>'
            f"<title>search</title><link>{self.base}/</link><item>"
            f"<title>{AIRPORT.replace(chr(39), '&apos;')} - Example Wire</title>"
            f'<link>{link}</link><guid isPermaLink="false">CBMiAirportBalloons</guid>'
            "<pubDate>Thu, 19 Nov 2026 21:48:00 GMT</pubDate>"
            f"<description>{AIRPORT.replace(chr(39), '&apos;')}</description>"
            f'<source url="{self.outlet}">Example Wire</source></item></channel></rss>'
        )

    def __enter__(self) -> _Site:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        for s in (self.google, self.outlet_server):
            s.shutdown()
            s.server_close()


def watchlist_text(site: _Site, allow: Sequence[str]) -> str:
    return "\n".join(
        [
            "version: 1",
            "defaults:",
            "  schedule: {every: 10m}",
            f'  url_template: "{site.base}/rss/search?q={{query}}"',
            "fetch:",
            "  timeout_seconds: 5",
            "  min_host_interval_seconds: 0",
            f"  allow_networks: [{', '.join(repr(a) for a in allow)}]",
            "topics:",
            "  - id: border",
            "    title: Border",
            "    rules: {any: [balloon*, airport*]}",
            "sources:",
            "  - {id: gnews, kind: query, query: 'Lithuania balloons', full_text: true}",
            "",
        ]
    )


def run(store: Store, text: str) -> None:
    watchlist = load_watchlist_text(text)

    async def go() -> None:
        async with Fetcher(watchlist.fetch, retry_wait_initial=0.01, retry_wait_max=0.05) as f:
            await run_cycle(store, f, watchlist, now=NOW)

    asyncio.run(go())


def test_full_text_follows_googles_link_to_the_outlet(tmp_path: Path) -> None:
    with _Site() as site, open_store(f"sqlite:///{tmp_path / 'a.db'}") as store:
        run(store, watchlist_text(site, ["127.0.0.0/8"]))
        [record] = list(store.iter_records())
        assert record.url == f"{site.outlet}/world/airport-balloons/"
        assert record.canonical_url == canonical_url(record.url)
        assert record.outlet == "Example Wire" and record.outlet_url == site.outlet
        assert "fifteenth such closure" in record.text
        assert record.headline_key == headline_key(site.outlet, AIRPORT)


def test_full_text_redirect_stays_within_the_guard(tmp_path: Path) -> None:
    # Only the search host is allowed: the redirect to the outlet (another private address)
    # is refused, and the entry's own record (wrapped link) is kept.
    with _Site() as site, open_store(f"sqlite:///{tmp_path / 'a.db'}") as store:
        run(store, watchlist_text(site, ["127.0.0.1/32"]))
        [record] = list(store.iter_records())
        assert record.url is not None and record.url.startswith(f"{site.base}/rss/articles/")
        assert not any(r.startswith("127.0.0.2") for r in site.requests)
        assert record.outlet == "Example Wire"


def test_a_wrapped_link_that_does_not_reach_the_outlet_keeps_the_entry(tmp_path: Path) -> None:
    # Google answering with a page of its own (consent, script): its text is not the article.
    with _Site(consent=True) as site, open_store(f"sqlite:///{tmp_path / 'a.db'}") as store:
        run(store, watchlist_text(site, ["127.0.0.0/8"]))
        [record] = list(store.iter_records())
        assert record.url is not None and record.url.startswith(f"{site.base}/rss/articles/")
        assert "CONSENT" not in record.text and record.title == AIRPORT


def test_one_sites_pages_with_one_headline_stay_two(store: Store) -> None:
    from dataclasses import replace

    own = recs("reuters_own.rss", REUTERS)[0]
    other_url = REUTERS_URL.replace("2026-11-19", "2026-11-20")
    other = normalize.make_record(
        title=own.title,
        lead="A different article under the same headline, about another closure.",
        body=(),
        url=other_url,
        guid="other",
        source=REUTERS,
        published=own.published,
        fetched=NOW,
    )
    assert other.headline_key == own.headline_key
    # Across two ingests (the store's check), then within one batch.
    first = ingest_many(store, [own], matcher=MATCHER, options=OPTIONS, allowed_topics=(), now=NOW)
    second = ingest_many(
        store, [other], matcher=MATCHER, options=OPTIONS, allowed_topics=(), now=NOW
    )
    assert first[0].stored and second[0].stored
    third = replace(
        other, id="0" * 16, url=other_url + "x", canonical_url=other_url + "x", guid="3"
    )
    third = replace(third, text=third.text + "\nMore.\n", content_hash="f" * 64)
    fourth = replace(
        third, id="1" * 16, url=other_url + "y", canonical_url=other_url + "y", guid="4"
    )
    fourth = replace(fourth, text=fourth.text + "\nEven more.\n", content_hash="e" * 64)
    results = ingest_many(
        store, [third, fourth], matcher=MATCHER, options=OPTIONS, allowed_topics=(), now=NOW
    )
    assert [r.stored for r in results] == [True, True]


def test_a_relayed_copy_in_the_same_batch_is_a_duplicate(store: Store) -> None:
    own = recs("reuters_own.rss", REUTERS)[0]
    relayed = recs("gnews_search.rss", GNEWS)[0]
    results = ingest_many(
        store, [own, relayed], matcher=MATCHER, options=OPTIONS, allowed_topics=(), now=NOW
    )
    assert [r.stored for r in results] == [True, False]
    assert results[1].reason is DedupReason.SAME_HEADLINE
