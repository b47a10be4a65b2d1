"""Hostile sources through ``aggregator fetch-once`` (issue 22): a malformed item costs that item,
not its feed; listing pages and heavy entry HTML are parsed in the extraction workers; page
sources follow a bounded number of links on their own site; a listing whose selector matches
nothing is a failure, not ``ok``; titles and summaries are capped in every output."""

from __future__ import annotations

import json
import sqlite3
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aggregator.cli import main as cli_main
from aggregator.publish.sanitize import MAX_SUMMARY_CHARS, MAX_TITLE_CHARS
from tests.hostile_server import HostileServer

ARTICLE = (
    "<html><head><title>Story {n}</title></head><body><article><h1>Story {n}</h1>"
    + "<p>The border checkpoint at Medininkai was closed again on Monday night, officials "
    "said, after a week of incidents along the frontier.</p>" * 4 + "</article></body></html>"
)


def rss(items: list[tuple[str, str, str]]) -> bytes:
    body = "".join(
        f"<item><title>{t}</title><link>{link}</link><guid>{link}</guid>"
        f"<description>{d}</description></item>"
        for t, link, d in items
    )
    return (
        '<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>t</title>'
        f"<link>http://example.org/</link>{body}</channel></rss>"
    ).encode()


@pytest.fixture(scope="module")
def server() -> Iterator[HostileServer]:
    with HostileServer() as s:
        base = s.url("")

        def route(body: bytes, ctype: str) -> Any:
            async def handler(req: object, w: object) -> None:
                await s._send(w, 200, body, ctype)  # type: ignore[arg-type]

            return handler

        deep_json = (
            '{"version": "https://jsonfeed.org/version/1.1", "title": "j", "items": ['
            '{"id": "j1", "title": "Clean border story", "content_text": "Border news."},'
            '{"id": "j2", "title": "Bad \\ud800 border story", "content_text": "x \\udc00"},'
            '{"id": "j3", "title": "Deep", "extra": ' + "[" * 100_000 + "]" * 100_000 + "},"
            '{"id": "j4", "title": "Clean border story two", "content_text": "More."}'
            "]}"
        ).encode()
        nested_entry = "&lt;div&gt;" * 60_000 + "deep" + "&lt;/div&gt;" * 60_000
        wide = "".join(
            f"<li><a href='{base}/w/{i}.html'>Story {i}</a></li>"
            if i % 2
            else f"<li><a href='http://elsewhere.example/w/{i}.html'>Story {i}</a></li>"
            for i in range(2000)
        )
        s.routes.update(
            {
                "/surrogate.xml": route(
                    rss(
                        [
                            ("Clean border one", f"{base}/s/1", "The checkpoint closed."),
                            ("Bad &#xD800; border", f"{base}/s/2", "Text &#xD800; &#1; here."),
                            ("Clean border two", f"{base}/s/3", "The checkpoint reopened."),
                        ]
                    ),
                    "application/rss+xml",
                ),
                "/surrogate.json": route(deep_json, "application/feed+json"),
                "/nested-entry.xml": route(
                    rss(
                        [
                            ("Nested border entry", f"{base}/n/1", nested_entry),
                            ("Clean border entry", f"{base}/n/2", "The crossing reopened."),
                        ]
                    ),
                    "application/rss+xml",
                ),
                "/nested-listing.html": route(
                    (
                        "<html><body>"
                        + "<div>" * 300_000
                        + f"<ul><li><a href='{base}/w/1.html'>One</a></li></ul>"
                        + "</div>" * 300_000
                        + "</body></html>"
                    ).encode(),
                    "text/html",
                ),
                "/wide.html": route(
                    f"<html><body><ul class='news'>{wide}</ul></body></html>".encode(),
                    "text/html",
                ),
                "/huge-title.xml": route(
                    rss([("border " + "x" * 259_993, f"{base}/t/1", "border " * 5000)]),
                    "application/rss+xml",
                ),
            }
        )

        async def article(req: Any, w: object) -> None:
            n = req.path.rsplit("/", 1)[-1].split(".")[0]
            await s._send(w, 200, ARTICLE.format(n=n).encode(), "text/html")  # type: ignore[arg-type]

        for i in range(2000):
            s.routes[f"/w/{i}.html"] = article
        yield s


def watchlist(server: HostileServer, sources: str, fetch: str = "") -> str:
    return (
        "version: 1\nfetch:\n  min_host_interval_seconds: 0\n  per_host_concurrency: 16\n"
        "  respect_robots: false\n  allow_networks: ['127.0.0.1/32']\n"
        f"{fetch}"
        "topics:\n  - id: border\n    title: Border\n"
        "    rules: {any: [border*, checkpoint*, story]}\n"
        f"sources:\n{sources}"
    )


def fetch_once(
    tmp_path: Path, text: str, capsys: pytest.CaptureFixture[str], *ids: str
) -> dict[str, dict[str, Any]]:
    config = tmp_path / "watchlist.yaml"
    config.write_text(text, encoding="utf-8")
    args = ["--db", f"sqlite:///{tmp_path / 'a.db'}", "--config", str(config)]
    cli_main([*args, "fetch-once", *[a for i in ids for a in ("--source", i)], "--json"])
    lines = capsys.readouterr().out.splitlines()
    return {row["source"]: row for row in map(json.loads, lines)}


def titles(tmp_path: Path) -> list[str]:
    with sqlite3.connect(tmp_path / "a.db") as db:
        return sorted(row[0] for row in db.execute("SELECT title FROM records"))


def test_a_bad_character_costs_nothing_and_deep_json_costs_one_item(
    tmp_path: Path, server: HostileServer, capsys: pytest.CaptureFixture[str]
) -> None:
    sources = (
        f"  - {{id: xml, kind: feed, url: '{server.url('/surrogate.xml')}'}}\n"
        f"  - {{id: json, kind: feed, url: '{server.url('/surrogate.json')}'}}\n"
    )
    reports = fetch_once(tmp_path, watchlist(server, sources), capsys, "xml", "json")
    # &#xD800; (feedparser raised on it) and a lone surrogate (content_hash raised on it) are
    # replaced by U+FFFD: every entry is stored.
    assert reports["xml"]["status"] == "ok" and reports["xml"]["new_records"] == 3
    assert reports["xml"]["item_errors"] == 0
    # The item nested 100,000 deep is the only one lost, and counted.
    assert reports["json"]["status"] == "ok", reports["json"]
    assert reports["json"]["new_records"] == 3 and reports["json"]["item_errors"] == 1
    stored = titles(tmp_path)
    assert "Bad \ufffd border" in stored and "Bad \ufffd border story" in stored
    assert not any("\ud800" in t for t in stored)


def test_heavy_entry_html_is_parsed_in_a_worker_and_costs_only_its_entry(
    tmp_path: Path, server: HostileServer, capsys: pytest.CaptureFixture[str]
) -> None:
    sources = f"  - {{id: nested, kind: feed, url: '{server.url('/nested-entry.xml')}'}}\n"
    report = fetch_once(tmp_path, watchlist(server, sources), capsys, "nested")["nested"]
    assert report["status"] == "ok", report
    # The clean entry is stored whatever the nested one costs (stored, or stopped at the
    # worker's time limit and counted).
    assert "Clean border entry" in titles(tmp_path)
    assert report["new_records"] + report["item_errors"] == 2


def test_a_nested_listing_is_parsed_in_a_worker_within_its_limit(
    tmp_path: Path, server: HostileServer, capsys: pytest.CaptureFixture[str]
) -> None:
    sources = (
        f"  - {{id: listing, kind: page, url: '{server.url('/nested-listing.html')}',"
        " selectors: {item: li}}\n"
        f"  - {{id: clean, kind: feed, url: '{server.url('/surrogate.xml')}'}}\n"
    )
    reports = fetch_once(tmp_path, watchlist(server, sources), capsys, "listing", "clean")
    assert reports["clean"]["status"] == "ok"
    listing = reports["listing"]
    # Either lexbor reads it within the worker's limit, or the worker is stopped: a failure
    # (parse-error) of this source alone, in bounded time.
    if listing["status"] == "failed":
        assert listing["failure_class"] == "parse-error"
        assert "took longer than" in listing["error"]
    else:
        assert listing["status"] == "ok" and listing["new_records"] == 1


def test_page_sources_follow_a_bounded_number_of_links_on_their_own_site(
    tmp_path: Path, server: HostileServer, capsys: pytest.CaptureFixture[str]
) -> None:
    sources = (
        f"  - {{id: wide, kind: page, url: '{server.url('/wide.html')}',"
        " selectors: {item: 'ul.news li'}}\n"
    )
    fetch = "  max_links_per_fetch: 12\n  max_links_per_origin: 10\n"
    before = sum(n for path, n in server.hits.items() if path.startswith("/w/"))
    report = fetch_once(tmp_path, watchlist(server, sources, fetch), capsys, "wide")["wide"]
    followed = sum(n for path, n in server.hits.items() if path.startswith("/w/")) - before
    assert report["status"] == "ok", report
    assert followed == 10  # one origin: its cap, not the fetch's
    assert report["new_records"] == 10
    assert report["links_skipped"] == 1990  # 1,000 off-site refused, 990 left for later
    # The next fetch takes the next ten.
    report = fetch_once(tmp_path, watchlist(server, sources, fetch), capsys, "wide")["wide"]
    assert report["new_records"] == 10


def test_offsite_links_need_the_sources_permission(
    tmp_path: Path, server: HostileServer, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "w.yaml"
    config.write_text(
        watchlist(
            server, f"  - {{id: f, kind: feed, offsite_links: true, url: '{server.url('/x')}'}}\n"
        )
    )
    assert cli_main(["check-config", str(config)]) == 2
    assert "'offsite_links' is only for kind: page sources" in capsys.readouterr().err


def test_a_listing_whose_selector_matches_nothing_is_a_failure(
    tmp_path: Path, server: HostileServer, capsys: pytest.CaptureFixture[str]
) -> None:
    sources = (
        f"  - {{id: changed, kind: page, url: '{server.url('/wide.html')}',"
        " selectors: {item: 'article.teaser'}}\n"
    )
    report = fetch_once(tmp_path, watchlist(server, sources), capsys, "changed")["changed"]
    assert report["status"] == "failed" and report["failure_class"] == "parse-error"
    assert "matched no article link" in report["error"]


def test_titles_and_summaries_are_capped_in_every_output(
    tmp_path: Path, server: HostileServer, capsys: pytest.CaptureFixture[str]
) -> None:
    sources = f"  - {{id: huge, kind: feed, url: '{server.url('/huge-title.xml')}'}}\n"
    report = fetch_once(tmp_path, watchlist(server, sources), capsys, "huge")["huge"]
    assert report["new_records"] == 1
    config = tmp_path / "watchlist.yaml"
    out = tmp_path / "site"
    args = ["--db", f"sqlite:///{tmp_path / 'a.db'}", "--config", str(config)]
    assert cli_main([*args, "publish", str(out)]) == 0
    capsys.readouterr()
    atom = ET.parse(out / "feeds" / "all.atom").getroot()
    ns = {"a": "http://www.w3.org/2005/Atom"}
    entry = atom.find("a:entry", ns)
    assert entry is not None
    title = entry.findtext("a:title", namespaces=ns) or ""
    assert title.startswith("border") and title.endswith("…")
    assert len(title) <= MAX_TITLE_CHARS
    summary = entry.findtext("a:summary", namespaces=ns) or ""
    assert len(summary) <= MAX_SUMMARY_CHARS
    feed = json.loads((out / "feeds" / "all.json").read_text())
    assert len(feed["items"][0]["title"]) <= MAX_TITLE_CHARS
    rss_item = ET.parse(out / "feeds" / "all.rss").getroot().find("channel/item")
    assert rss_item is not None and len(rss_item.findtext("title") or "") <= MAX_TITLE_CHARS
    page = (out / "index.html").read_text()
    assert "x" * (MAX_TITLE_CHARS + 1) not in page
    assert cli_main([*args, "developments", "--json"]) == 0
    shown = capsys.readouterr().out
    assert "x" * (MAX_TITLE_CHARS + 1) not in shown
