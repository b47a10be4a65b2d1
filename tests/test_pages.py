"""publish.pages and their routes: development pages, topic pages with paging, the index,
local times, highlighted terms, ETag/304, manual split/merge on a real store."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from starlette.testclient import TestClient

from aggregator.cli import main
from aggregator.ingest_driver import merge_developments, split_record
from aggregator.publish.pages import highlight, local_time
from aggregator.publish.site import build_page
from aggregator.settings import Settings
from aggregator.store import open_store
from aggregator.watchlist import check_watchlist, load_watchlist
from aggregator.web import create_app
from tests.publish_samples import MemoryStore, SampleWatchlist
from tests.test_publish_static import SEEDS, WATCHLIST_YAML

BASE = "https://news.example.org"


def vilnius(page_size: int = 20) -> SampleWatchlist:
    watchlist = SampleWatchlist()
    options = replace(watchlist.publish, timezone="Europe/Vilnius", page_size=page_size)
    return replace(watchlist, publish=options)


def text_of(html: bytes) -> str:
    """Roughly what a person reads: the tags removed, whitespace collapsed."""
    blocks = re.sub(
        r"<br>|</?(?:p|li|h\d|ul|ol|section|article|nav|main)\b[^>]*>", " ", html.decode()
    )
    return " ".join(re.sub(r"<[^>]+>", "", blocks).split())


def test_local_time_is_day_month_year_time_and_zone() -> None:
    when = datetime(2026, 11, 21, 10, 2, tzinfo=UTC)
    assert local_time(when, ZoneInfo("Europe/Vilnius")) == "21 Nov 2026, 12:02 EET"
    assert local_time(when, UTC) == "21 Nov 2026, 10:02 UTC"
    summer = datetime(2026, 7, 1, 21, 30, tzinfo=UTC)
    assert local_time(summer, ZoneInfo("Europe/Vilnius")) == "2 Jul 2026, 00:30 EEST"


def test_highlight_marks_terms_and_escapes_everything_else() -> None:
    out = str(highlight('1 < 2 "Lietuvoje" & Vilniaus oro uostas', ["Lietuva", '"oro uostas"']))
    assert out == (
        "1 &lt; 2 &#34;<mark>Lietuvoje</mark>&#34; &amp; Vilniaus <mark>oro uostas</mark>"
    )
    assert str(highlight("Kondratovič", ["kondratovic"])) == "<mark>Kondratovič</mark>"
    assert str(highlight("war in Warsaw", ["war"])) == "<mark>war</mark> in Warsaw"


def test_development_page_shows_every_report_with_why_it_joined() -> None:
    page = build_page(MemoryStore(), vilnius(), BASE, "developments/dev0001.html")
    assert page is not None and page.content_type.startswith("text/html")
    html = page.body.decode()
    text = text_of(page.body)
    assert "<h1><mark>Lithuania</mark> declares emergency over balloons from" in html
    # Every report, in time order, with outlet, language, local time and the decision.
    lrt, belsat, bad = (text.index(name) for name in ("LRT (en)", "Белсат", "Evil source"))
    assert lrt < belsat < bad
    assert "20 Nov 2026, 10:15 EET" in text and "20 Nov 2026, 11:15 EET" in text
    assert "Joined as: first report, score 1.00" in text
    assert "Joined as: same event, score 0.61, similar to “Ekstremali situacija" in text
    assert 'href="https://www.lrt.lt/naujienos/1?utm=a&amp;b=2"' in html
    assert "javascript:" not in html and "<script" not in html
    # Links to its topics.
    assert f'href="{BASE}/topics/lithuania/"' in html and f'href="{BASE}/topics/belarus/"' in html
    assert "Matched topic terms: Lithuania, Belarus." in text


def test_unpublished_and_unknown_pages_are_none() -> None:
    store, watchlist = MemoryStore(), vilnius()
    assert build_page(store, watchlist, BASE, "developments/dev0004.html") is None  # no topic
    assert build_page(store, watchlist, BASE, "developments/nope.html") is None
    assert build_page(store, watchlist, BASE, "topics/nope/index.html") is None
    assert build_page(store, watchlist, BASE, "topics/lithuania/page-1.html") is None
    assert build_page(store, watchlist, BASE, "topics/lithuania/page-x.html") is None
    assert build_page(store, watchlist, BASE, "../etc/passwd") is None


def test_topic_pages_page_back_through_older_developments() -> None:
    store, watchlist = MemoryStore(), vilnius(page_size=1)
    first = build_page(store, watchlist, BASE, "topics/lithuania/index.html")
    second = build_page(store, watchlist, BASE, "topics/lithuania/page-2.html")
    assert first is not None and second is not None
    assert build_page(store, watchlist, BASE, "topics/lithuania/page-3.html") is None
    one, two = first.body.decode(), second.body.decode()
    assert "developments/dev0001.html" in one and "dev0003" not in one  # newest first
    assert "developments/dev0003.html" in two and "dev0001" not in two
    assert f'href="{BASE}/topics/lithuania/page-2.html" rel="next"' in one
    assert f'href="{BASE}/topics/lithuania/" rel="prev"' in two
    assert 'rel="next"' not in two


def test_merged_development_page_points_to_the_one_that_holds_it() -> None:
    store = MemoryStore(merged={"old0001": "dev0001"})
    moved = build_page(store, vilnius(), BASE, "developments/old0001.html")
    assert moved is not None
    assert moved.location == f"{BASE}/developments/dev0001.html"
    assert f'href="{BASE}/developments/dev0001.html"' in moved.body.decode()


def test_pages_over_http_with_etag_304_and_redirects(tmp_path: Path) -> None:
    store = MemoryStore(merged={"old0001": "dev0001"})
    watchlist = vilnius(page_size=1)
    settings = Settings(data_dir=tmp_path, db_url="sqlite://", config_path=tmp_path / "w.yaml")
    app = create_app(store, lambda: watchlist, settings)
    client = TestClient(app)
    page = client.get("/developments/dev0001.html")
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    again = client.get(
        "/developments/dev0001.html", headers={"If-None-Match": page.headers["etag"]}
    )
    assert again.status_code == 304 and again.content == b""
    for path in ("/topics/lithuania", "/topics/lithuania/", "/topics/lithuania/page-2.html"):
        assert client.get(path).status_code == 200, path
    assert client.get("/topics/lithuania/page-9.html").status_code == 404
    assert client.get("/developments/dev0004.html").status_code == 404
    moved = client.get("/developments/old0001.html", follow_redirects=False)
    assert moved.status_code == 301
    assert moved.headers["location"] == f"{BASE}/developments/dev0001.html"
    assert client.post("/developments/dev0001.html").status_code == 405
    # Rendered once per feed version: the second request came from the page cache.
    assert app.state.page_cache.renders == 6
    store.version += 1
    app.state.feed_cache._next_check = 0.0
    assert client.get("/developments/dev0001.html").status_code == 200
    assert app.state.page_cache.renders == 7


def test_watchlist_timezone_is_checked_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "watchlist.yaml"
    path.write_text(
        WATCHLIST_YAML.replace("  feed_size: 20\n", "  feed_size: 20\n  timezone: Mars/Olympus\n"),
        encoding="utf-8",
    )
    problems = check_watchlist(path)
    assert [(p.line, "Mars/Olympus" in p.message) for p in problems] == [(7, True)]
    path.write_text(
        WATCHLIST_YAML.replace("  feed_size: 20\n", "  timezone: Europe/Vilnius\n"),
        encoding="utf-8",
    )
    assert load_watchlist(path).publish.timezone == "Europe/Vilnius"


def _cli(db_url: str, config: Path, *args: str) -> int:
    return main(["--db", db_url, "--config", str(config), *args])


def test_split_and_merge_show_on_the_development_pages(
    db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "watchlist.yaml"
    config.write_text(WATCHLIST_YAML, encoding="utf-8")
    assert _cli(db_url, config, "import", str(SEEDS)) == 0
    watchlist = load_watchlist(config)
    with open_store(db_url) as store:
        devs = [d for d in store.list_developments(None, 0) if d.topics]
        multi = next(d for d in devs if len(d.record_ids) > 1)
        moved_record = multi.record_ids[-1]
        new_id = split_record(store, moved_record, datetime.now(UTC))
        page = build_page(store, watchlist, BASE, f"developments/{new_id}.html")
        assert page is not None
        assert "Joined as: placed by an editor (split/merge)" in text_of(page.body)

        merge_developments(store, multi.id, new_id, datetime.now(UTC))
        moved = build_page(store, watchlist, BASE, f"developments/{new_id}.html")
        assert moved is not None and moved.location == f"{BASE}/developments/{multi.id}.html"
        kept = build_page(store, watchlist, BASE, f"developments/{multi.id}.html")
        assert kept is not None
        text = text_of(kept.body)
        assert "placed by an editor" in text
        assert f"{len(multi.record_ids)} reports" in text

        out = tmp_path / "site"
        assert _cli(db_url, config, "publish", str(out)) == 0
        assert (out / "developments" / f"{multi.id}.html").exists()
        refresh = (out / "developments" / f"{new_id}.html").read_text(encoding="utf-8")
        assert f'url={BASE}/developments/{multi.id}.html"' in refresh


def test_regex_terms_are_shown_as_the_words_they_matched() -> None:
    from aggregator.publish.pages import shown_terms

    texts = ["Lithuania keeps two Belarus border checkpoints closed", "Литва закрыла границу"]
    terms = ["border*", "/lithuan|lietuv|литв/", "/minsk/"]
    assert shown_terms(terms, texts) == ["border*", "Lithuan", "Литв"]
