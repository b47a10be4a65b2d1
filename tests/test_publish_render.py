"""publish.render: golden files, feedparser round trip, and what must never reach a feed.

Golden files live in tests/golden/; regenerate them deliberately with
``AGGREGATOR_REGEN_GOLDEN=1 pytest tests/test_publish_render.py`` and review the diff.
"""

from __future__ import annotations

import json
import os
import re
import xml.etree.ElementTree as ET
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import feedparser
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aggregator.model import Development, SourceRef
from aggregator.publish.pages import render_site
from aggregator.publish.render import (
    Entry,
    FeedSet,
    Site,
    entry_id,
    render_atom,
    render_json_feed,
    render_rss,
)
from aggregator.publish.site import collect_feeds, make_site
from tests.publish_samples import NOW, T0, MemoryStore, SampleWatchlist

GOLDEN = Path(__file__).parent / "golden"
ATOM = "{http://www.w3.org/2005/Atom}"
FORBIDDEN_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


@pytest.fixture
def site() -> Site:
    return make_site(SampleWatchlist(), "http://unused.invalid")


@pytest.fixture
def feeds(site: Site) -> FeedSet:
    return collect_feeds(MemoryStore(), site.topics, 10)


@pytest.fixture
def files(site: Site, feeds: FeedSet) -> dict[str, bytes]:
    return {f.path: f.body for f in render_site(site, feeds, SampleWatchlist().sources, NOW)}


def test_site_has_every_file(files: dict[str, bytes]) -> None:
    expected = {
        f"feeds/{key}.{fmt}"
        for key in ("all", "lithuania", "belarus")
        for fmt in ("atom", "rss", "json")
    } | {"index.html", "sources.opml"}
    assert set(files) == expected


@pytest.mark.parametrize(
    "path",
    [
        "feeds/all.atom",
        "feeds/all.rss",
        "feeds/all.json",
        "feeds/belarus.atom",
        "index.html",
        "sources.opml",
    ],
)
def test_golden(files: dict[str, bytes], path: str) -> None:
    golden = GOLDEN / path
    if os.environ.get("AGGREGATOR_REGEN_GOLDEN"):
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_bytes(files[path])
    assert golden.exists(), f"missing golden file {golden}; run with AGGREGATOR_REGEN_GOLDEN=1"
    assert files[path] == golden.read_bytes(), f"{path} differs from its golden file"


def test_output_is_deterministic(site: Site, feeds: FeedSet) -> None:
    one = render_site(site, feeds, SampleWatchlist().sources, NOW)
    two = render_site(site, feeds, SampleWatchlist().sources, NOW + timedelta(days=3))
    # Feed times come from the data, not the clock: replicas render identical bytes.
    assert [f.body for f in one if f.path.startswith("feeds/")] == [
        f.body for f in two if f.path.startswith("feeds/")
    ]


def test_only_developments_with_topics_are_published(feeds: FeedSet) -> None:
    assert [e.development.id for e in feeds.all] == ["dev0001", "dev0002", "dev0003"]
    assert [e.development.id for e in feeds.by_topic["belarus"]] == ["dev0001", "dev0002"]
    assert [e.development.id for e in feeds.by_topic["lithuania"]] == ["dev0001", "dev0003"]


def test_feed_size_bounds_every_feed(site: Site) -> None:
    store = MemoryStore()
    base = store.devs[1]
    store.devs = [
        Development(
            id=f"d{i:03}",
            title=f"Item {i}",
            summary="s",
            topics=("lithuania",),
            first_seen=T0 + timedelta(minutes=i),
            updated=T0 + timedelta(minutes=i),
            record_ids=(),
            sources=base.sources[:1],
        )
        for i in range(30)
    ]
    feeds = collect_feeds(store, site.topics, 7)
    assert len(feeds.all) == 7
    assert feeds.all[0].development.id == "d029"
    assert len(feeds.by_topic["lithuania"]) == 7
    parsed = feedparser.parse(render_atom(site, "all", feeds.all, NOW))
    assert len(parsed.entries) == 7


@pytest.mark.parametrize("fmt", ["atom", "rss"])
def test_feedparser_round_trip(site: Site, feeds: FeedSet, fmt: str) -> None:
    render = render_atom if fmt == "atom" else render_rss
    parsed = feedparser.parse(render(site, "all", feeds.all, NOW))
    assert not parsed.bozo, parsed.get("bozo_exception")
    assert parsed.version == ("atom10" if fmt == "atom" else "rss20")
    got = [(e.id, e.title, e.link) for e in parsed.entries]
    assert got == [
        (
            "tag:news.example.org,2026:development/dev0001",
            "Lithuania declares emergency over balloons from Belarus",
            "https://news.example.org/developments/dev0001.html",
        ),
        (
            "tag:news.example.org,2026:development/dev0002",
            "Лукашенко предложил Литве переговоры о границе",
            "https://news.example.org/developments/dev0002.html",
        ),
        (
            "tag:news.example.org,2026:development/dev0003",
            "Kiaušinių kainos Lietuvoje šoktelėjo",
            "https://news.example.org/developments/dev0003.html",
        ),
    ]
    first = parsed.entries[0]
    assert first.published_parsed[:6] == (2026, 11, 20, 8, 15, 30)
    if fmt == "atom":
        assert first.updated_parsed[:6] == (2026, 11, 20, 11, 15, 30)
        related = [link.href for link in first.links if link.rel == "related"]
        assert related == ["https://www.lrt.lt/naujienos/1?utm=a&b=2"]  # relative: left out
        assert {t.term for t in first.tags} == {"lithuania", "belarus"}
        assert parsed.feed.links[0].rel == "self"
        assert any(link.rel == "hub" for link in parsed.feed.links)
    else:
        assert first.guidislink is False
        assert {t.term for t in first.tags} == {"Lithuania", "Belarus / Беларусь"}
    html = first.content[0].value
    assert "<strong>meteorological balloons</strong>" in html
    assert "<table>" in html and "<th>Measure</th>" in html and "<li>" in html
    assert "Ruginienė: „Turime imtis griežčiausių priemonių“" in html


def test_json_feed(site: Site, feeds: FeedSet) -> None:
    doc = json.loads(render_json_feed(site, "belarus", feeds.by_topic["belarus"], NOW))
    assert doc["version"] == "https://jsonfeed.org/version/1.1"
    assert doc["feed_url"] == "https://news.example.org/feeds/belarus.json"
    assert doc["hubs"] == [{"type": "WebSub", "url": "https://hub.example.org/"}]
    first = doc["items"][0]
    assert first["id"] == entry_id(site, "dev0001")
    assert first["date_published"] == "2026-11-20T08:15:30Z"
    assert first["date_modified"] == "2026-11-20T11:15:30Z"
    assert first["tags"] == ["Lithuania", "Belarus / Беларусь"]
    sources = first["_aggregator"]["sources"]
    assert [s["source_title"] for s in sources] == ["LRT", "Белсат", "Evil source"]
    assert sources[1]["url"] is None  # relative, its base unknown
    assert sources[2]["url"] is None  # javascript: never passes
    assert doc["items"][1]["title"] == "Лукашенко предложил Литве переговоры о границе"


def test_atom_has_what_validators_require(files: dict[str, bytes]) -> None:
    root = ET.fromstring(files["feeds/all.atom"])
    for tag in ("id", "title", "updated", "author/" + ATOM + "name"):
        assert root.find(ATOM + tag) is not None, tag
    selfs = [ln for ln in root.findall(ATOM + "link") if ln.get("rel") == "self"]
    assert selfs[0].get("href") == "https://news.example.org/feeds/all.atom"
    for entry in root.findall(ATOM + "entry"):
        for tag in ("id", "title", "updated", "published", "summary", "content"):
            assert entry.find(ATOM + tag) is not None, tag
        assert entry.find(ATOM + "content").get("type") == "html"
        alternates = [ln for ln in entry.findall(ATOM + "link") if ln.get("rel") == "alternate"]
        assert len(alternates) == 1


def test_rss_has_what_validators_require(files: dict[str, bytes]) -> None:
    channel = ET.fromstring(files["feeds/all.rss"]).find("channel")
    assert channel is not None
    for tag in ("title", "link", "description", "lastBuildDate"):
        assert channel.find(tag) is not None, tag
    self_link = channel.find(ATOM + "link")
    assert self_link is not None and self_link.get("rel") == "self"
    assert self_link.get("type") == "application/rss+xml"
    date = re.compile(r"^(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d\d (\w{3}) \d{4} \d\d:\d\d:\d\d GMT$")
    assert date.match(channel.findtext("lastBuildDate") or "")
    for item in channel.findall("item"):
        guid = item.find("guid")
        assert guid is not None and guid.get("isPermaLink") == "false"
        assert (guid.text or "").startswith("tag:")
        assert date.match(item.findtext("pubDate") or "")
        assert (item.findtext("link") or "").startswith("https://")


def test_forbidden_characters_never_reach_the_output(files: dict[str, bytes]) -> None:
    for path, body in files.items():
        text = body.decode("utf-8")
        assert not FORBIDDEN_XML.search(text), path
        if path.endswith((".atom", ".rss", ".opml")):
            ET.fromstring(body)  # well-formed XML, every file


def _all_markup(body: bytes) -> str:
    """The file's text with one level of XML escaping undone: the HTML a reader renders."""
    return body.decode().replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", '"')


@pytest.mark.parametrize("path", ["feeds/all.atom", "feeds/all.rss", "index.html"])
def test_no_script_no_unsafe_links(files: dict[str, bytes], path: str) -> None:
    html = _all_markup(files[path])
    assert "javascript:" not in files[path].decode()
    assert "<script" not in html and "<img" not in html
    assert not re.search(r"<[a-z]+[^>]*\son\w+=", html), "event handler attribute"
    for href in re.findall(r'(?:href|src)="([^"]*)"', html):
        # Absolute http(s) links, and the index's "skip to the content" link to its own <main>.
        assert href.startswith(("https://", "http://")) or href == "#main", href


def test_json_feed_contains_no_unsafe_markup(files: dict[str, bytes]) -> None:
    doc = json.loads(files["feeds/all.json"])
    for item in doc["items"]:
        html = item["content_html"]
        assert "<script" not in html and "<img" not in html and "javascript:" not in html
        assert not FORBIDDEN_XML.search(item["title"])


def test_opml_lists_safe_sources(files: dict[str, bytes]) -> None:
    root = ET.fromstring(files["sources.opml"])
    outlines = root.findall("body/outline")
    assert [o.get("text") for o in outlines] == ["LRT", "Белсат", "Vyriausybė"]
    assert outlines[0].get("xmlUrl") == "https://www.lrt.lt/?rss"
    assert outlines[0].get("category") == "/Lithuania"
    assert outlines[2].get("type") == "link"


def test_empty_feed_is_valid(site: Site) -> None:
    parsed = feedparser.parse(render_atom(site, "all", [], NOW))
    assert not parsed.bozo and parsed.entries == []
    assert parsed.feed.updated_parsed[:6] == (2026, 11, 23, 12, 0, 0)


def test_entry_ids_are_stable_across_updates(site: Site, feeds: FeedSet) -> None:
    entry = feeds.all[0]
    grown = Development(
        **{
            **{f: getattr(entry.development, f) for f in entry.development.__slots__},
            "updated": entry.development.updated + timedelta(days=1),
            "sources": entry.development.sources[:1],
        }
    )
    before = feedparser.parse(render_atom(site, "all", [entry], NOW)).entries[0]
    after = feedparser.parse(
        render_atom(site, "all", [type(entry)(grown, entry.body)], NOW)
    ).entries[0]
    assert before.id == after.id
    assert before.published == after.published
    assert after.updated_parsed > before.updated_parsed


def test_titles_and_summaries_carry_no_markup(site: Site, feeds: FeedSet) -> None:
    entry = feeds.all[1]
    marked = replace(
        entry.development,
        title="Vilnius <b>airport</b> closed <script>x</script> again",
        summary='Lead with <a href="javascript:x">link</a>.',
    )
    parsed = feedparser.parse(render_atom(site, "all", [Entry(marked, entry.body)], NOW))
    assert parsed.entries[0].title == "Vilnius airport closed x again"
    assert parsed.entries[0].summary == "Lead with link ."


@pytest.mark.parametrize("authority", ["example.org", "example.org,26", "ex ample.org,2026", ","])
def test_a_malformed_tag_authority_is_refused(authority: str) -> None:
    watchlist = SampleWatchlist()
    bad = replace(watchlist, publish=replace(watchlist.publish, tag_authority=authority))
    with pytest.raises(ValueError, match="tag_authority"):
        make_site(bad, "https://x.example")


def test_tag_authority_defaults_to_the_base_url_host() -> None:
    watchlist = SampleWatchlist()
    plain = replace(watchlist, publish=replace(watchlist.publish, tag_authority=None))
    assert entry_id(make_site(plain, "https://x"), "d1") == (
        "tag:news.example.org,2026:development/d1"
    )


def test_entries_updated_in_the_same_instant_get_distinct_times(site: Site, feeds: FeedSet) -> None:
    first = feeds.all[0]
    twin = Entry(replace(first.development, id="dev-twin"), first.body)
    root = ET.fromstring(render_atom(site, "all", [first, twin], NOW))
    times = [e.findtext(ATOM + "updated") for e in root.findall(ATOM + "entry")]
    assert times == ["2026-11-20T11:15:30Z", "2026-11-20T11:15:30.000001Z"]
    assert root.findtext(ATOM + "updated") == "2026-11-20T11:15:30.000001Z"


def test_rss_description_is_html_escaped_plain_text(site: Site, feeds: FeedSet) -> None:
    entry = feeds.all[0]
    odd = Entry(replace(entry.development, summary="Q&A: 2 < 3 &amp; AT&T"), entry.body)
    parsed = feedparser.parse(render_rss(site, "all", [odd], NOW))
    assert (
        parsed.entries[0].summary == "Q&amp;A: 2 &lt; 3 &amp; AT&amp;T"
    )  # HTML for "Q&A: 2 < 3 & AT&T"


def test_index_lists_each_development_once_with_its_topics(files: dict[str, bytes]) -> None:
    page = files["index.html"].decode()
    ids = re.findall(r' id="([^"]+)"', page)
    assert len(ids) == len(set(ids))
    for dev_id in ("dev0001", "dev0002", "dev0003"):
        link = f'href="https://news.example.org/developments/{dev_id}.html"'
        assert page.count(link) == 1, dev_id
    # dev0001 is in both topics: listed once, labelled with both, each linking its page.
    card = page[page.index("developments/dev0001.html") :].split("</article>")[0]
    assert '<a href="https://news.example.org/topics/lithuania/">Lithuania</a>' in card
    assert '<a href="https://news.example.org/topics/belarus/">Belarus / Беларусь</a>' in card
    assert "Kiaušinių kainos Lietuvoje šoktelėjo" in page
    assert "20 Nov 2026, 08:15 UTC" in page  # the watchlist's time zone (UTC by default)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    title=st.text(max_size=80),
    summary=st.text(max_size=200),
    source=st.text(max_size=30),
    url=st.one_of(st.none(), st.text(max_size=60), st.just("javascript:alert(1)")),
    body=st.text(max_size=300),
)
def test_any_stored_text_gives_well_formed_safe_feeds(
    site: Site, title: str, summary: str, source: str, url: str | None, body: str
) -> None:
    from aggregator import records

    dev = Development(
        id="fuzz",
        title=title,
        summary=summary,
        topics=("lithuania",),
        first_seen=T0,
        updated=T0,
        record_ids=("r",),
        sources=(SourceRef("r", "s", source, url, title, T0),),
    )
    entry = Entry(dev, records.parse(body).blocks if body.strip() else ())
    for render in (render_atom, render_rss):
        data = render(site, "all", [entry], NOW)
        ET.fromstring(data)  # well-formed whatever the store held
        parsed = feedparser.parse(data)
        assert not parsed.bozo, parsed.get("bozo_exception")
        assert parsed.entries[0].id == "tag:news.example.org,2026:development/fuzz"
        for href in re.findall(r'href="([^"]*)"', _all_markup(data)):
            assert href.startswith(("https://", "http://")), href
    doc = json.loads(render_json_feed(site, "all", [entry], NOW))
    assert doc["items"][0]["url"].startswith("https://")


def test_lone_surrogates_anywhere_cannot_break_the_json_feed(site: Site, feeds: FeedSet) -> None:
    entry = feeds.all[0]
    bad = replace(
        entry.development,
        id="dev\ud800x",
        topics=("lithuania", "gone\udfff"),
        title="A\ud800B",
        sources=(SourceRef("r", "s\ud800", "S\udc00", None, "T\ud800", None),),
    )
    data = render_json_feed(site, "all", [Entry(bad, entry.body)], NOW)
    item = json.loads(data)["items"][0]
    assert item["title"] == "AB"
    assert item["_aggregator"]["topics"] == ["lithuania", "gone"]
    assert item["_aggregator"]["development_id"] == "devx"
    for render in (render_atom, render_rss):
        ET.fromstring(render(site, "all", [Entry(bad, entry.body)], NOW))


def test_the_entry_text_is_the_representative_record_whose_title_the_development_has() -> None:
    store = MemoryStore()
    dev = store.devs[1]
    # The store took the title from the second member (r3's text here): its text is shown.
    store.devs = [
        replace(
            dev,
            title="Kiaušinių kainos",
            record_ids=("r1", "r3"),
            sources=(
                dev.sources[0],
                replace(dev.sources[0], record_id="r3", title="Kiaušinių kainos"),
            ),
        )
    ]
    feeds = collect_feeds(store, (), 10)
    texts = [b.text for b in feeds.all[0].body]
    assert "Ūkininkai sako, kad šalčiai sumažino produkciją." in texts


# --- what subscribers read about who reported it (issue 20) -------------------------------


def _dev(*refs: SourceRef, terms: tuple[str, ...] = ()) -> Development:
    return Development(
        id="d" * 32,
        title="Checkpoints stay closed",
        summary="The two checkpoints stay closed until December.",
        topics=("lithuania",),
        first_seen=T0,
        updated=T0,
        record_ids=tuple(r.record_id for r in refs),
        sources=refs,
        terms=terms,
    )


def _ref(rid: str, source: str | None, url: str | None, **kw: object) -> SourceRef:
    title = str(kw.pop("source_title", source or ""))
    return SourceRef(rid, source, title, url, "Checkpoints stay closed", T0, **kw)  # type: ignore[arg-type]


def _entry_html(site: Site, dev: Development) -> str:
    from aggregator.publish.render import entry_html

    return entry_html(site, Entry(development=dev, body=()))


def test_seeds_are_not_listed_as_unknown_sources(site: Site) -> None:
    seed = _ref("s1", None, None)
    html = _entry_html(site, _dev(seed, seed))
    assert "unknown" not in html and "Reported by" not in html
    html = _entry_html(site, _dev(seed, _ref("r1", "lrt", "https://www.lrt.lt/a")))
    assert "Reported by 1 source:" in html and html.count("<li>") == 1


def test_the_count_equals_the_lines_listed(site: Site) -> None:
    refs = (
        _ref("r1", "lrt", "https://www.lrt.lt/a"),
        _ref("r2", "lrt", "https://www.lrt.lt/b"),
        _ref("r3", "belsat", "https://belsat.eu/c"),
    )
    html = _entry_html(site, _dev(*refs))
    assert "3 reports from 2 sources:" in html and html.count("<li>") == 3
    html = _entry_html(site, _dev(*refs[1:]))
    assert "Reported by 2 sources:" in html and html.count("<li>") == 2


def test_no_loopback_or_private_link_is_published(site: Site) -> None:
    replayed = _ref(
        "p1",
        "vrm",
        "http://127.0.0.1:8765/pages/vrm-lrv-lt/articles/a.html",
        canonical_url="https://vrm.lrv.lt/lt/naujienos/a",
    )
    local = _ref("p2", "test", "http://localhost:8000/b", canonical_url="http://10.0.0.7/b")
    dev = _dev(replayed, local)
    html = _entry_html(site, dev)
    assert 'href="https://vrm.lrv.lt/lt/naujienos/a"' in html
    assert "127.0.0.1" not in html and "localhost" not in html and "10.0.0.7" not in html
    for body in (
        render_atom(site, "all", [Entry(dev, ())], NOW),
        render_rss(site, "all", [Entry(dev, ())], NOW),
        render_json_feed(site, "all", [Entry(dev, ())], NOW),
    ):
        text = body.decode()
        assert "127.0.0.1" not in text and "localhost" not in text and "10.0.0.7" not in text


def test_matched_terms_are_shown(site: Site) -> None:
    dev = _dev(_ref("r1", "lrt", "https://www.lrt.lt/a"), terms=("checkpoint*", "Šalčininkai"))
    assert "<strong>Matched terms:</strong> checkpoint*, Šalčininkai" in _entry_html(site, dev)
    item = json.loads(render_json_feed(site, "all", [Entry(dev, ())], NOW))["items"][0]
    assert item["_aggregator"]["terms"] == ["checkpoint*", "Šalčininkai"]


def test_the_outlet_a_search_feed_credits_is_the_name_shown(site: Site) -> None:
    ref = _ref("g1", "gnews-border", "https://www.reuters.com/x", source_title="Reuters")
    html = _entry_html(site, _dev(ref))
    assert ">Reuters: Checkpoints stay closed</a>" in html
