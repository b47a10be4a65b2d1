"""publish.static and ``aggregator publish DIR``: atomic files, same bytes as HTTP, real store."""

from __future__ import annotations

import gzip
import os
import re
import stat
from dataclasses import replace
from pathlib import Path

import feedparser
import pytest
from starlette.testclient import TestClient

from aggregator.cli import main
from aggregator.publish.pages import render_site
from aggregator.publish.site import collect_feeds, make_site
from aggregator.publish.static import publish_dir, write_atomic
from aggregator.settings import Settings
from aggregator.web import create_app
from tests.publish_samples import NOW, MemoryStore, SampleWatchlist

SEEDS = Path(__file__).resolve().parent.parent / "seeds"

WATCHLIST_YAML = """\
version: 1
publish:
  title: "Baltic watch"
  base_url: "https://news.example.org/"
  tag_authority: "news.example.org,2026"
  feed_size: 20
topics:
  - id: lithuania
    title: Lithuania
    rules:
      any: ["Lithuania", "Lithuanian"]
  - id: belarus
    title: Belarus
    rules:
      any: ["Belarus", "Belarusian"]
sources:
  - id: lrt
    title: LRT English
    url: https://www.lrt.lt/en/news-in-english?rss
    topics: [lithuania]
"""


def test_write_atomic_replaces_and_leaves_no_temp_files(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "all.atom"
    assert write_atomic(target, b"one") is True
    assert target.read_bytes() == b"one"
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    inode = target.stat().st_ino
    assert write_atomic(target, b"one", mtime=1_700_000_000) is False  # unchanged: not rewritten
    assert target.stat().st_ino == inode and target.stat().st_mtime == 1_700_000_000
    assert write_atomic(target, b"two") is True
    assert target.read_bytes() == b"two"
    assert target.stat().st_ino != inode  # a new file renamed over the old one
    assert sorted(p.name for p in target.parent.iterdir()) == ["all.atom"]


def test_write_atomic_failure_keeps_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "all.rss"
    write_atomic(target, b"good")

    def fail(*args: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError):
        write_atomic(target, b"new")
    assert target.read_bytes() == b"good"
    assert [p.name for p in tmp_path.iterdir()] == ["all.rss"]


def test_publish_dir_writes_the_served_layout(tmp_path: Path) -> None:
    store, watchlist = MemoryStore(), SampleWatchlist()
    paths = publish_dir(store, watchlist, tmp_path, "http://ignored", now=NOW, precompress=True)
    names = sorted(str(p.relative_to(tmp_path)) for p in paths)
    assert names == sorted(
        [f"feeds/{k}.{f}" for k in ("all", "lithuania", "belarus") for f in ("atom", "rss", "json")]
        + ["index.html", "sources.opml"]
        + ["topics/lithuania/index.html", "topics/belarus/index.html"]
        + [f"developments/dev000{i}.html" for i in (1, 2, 3)]
    )
    expected = {
        f.path: f
        for f in render_site(
            make_site(watchlist, "http://ignored"),
            collect_feeds(store, watchlist.topics, watchlist.publish.feed_size),
            watchlist.sources,
            NOW,
        )
    }
    for path, item in expected.items():
        assert (tmp_path / path).read_bytes() == item.body
        assert gzip.decompress((tmp_path / (path + ".gz")).read_bytes()) == item.body
        assert (tmp_path / path).stat().st_mtime == item.updated.timestamp()


def test_publish_dir_removes_feeds_of_dropped_topics(tmp_path: Path) -> None:
    store, watchlist = MemoryStore(), SampleWatchlist()
    publish_dir(store, watchlist, tmp_path, "http://x", now=NOW, precompress=True)
    smaller = replace(watchlist, topics=watchlist.topics[:1])
    publish_dir(store, smaller, tmp_path, "http://x", now=NOW)
    feeds = sorted(p.name for p in (tmp_path / "feeds").iterdir())
    assert feeds == sorted(
        f"{k}.{f}" for k in ("all", "lithuania") for f in ("atom", "rss", "json")
    )


def _setup(tmp_path: Path, db_url: str) -> tuple[list[str], Path]:
    config = tmp_path / "watchlist.yaml"
    config.write_text(WATCHLIST_YAML, encoding="utf-8")
    base = ["--db", db_url, "--config", str(config)]
    assert main([*base, "import", str(SEEDS)]) == 0
    return base, config


def test_cli_publish_end_to_end_and_same_bytes_as_http(
    db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base, config = _setup(tmp_path, db_url)
    out = tmp_path / "site"
    assert main([*base, "publish", str(out)]) == 0
    printed = capsys.readouterr().out
    assert (
        "published 16 files (9 feeds, index.html, sources.opml, 2 topic pages, "
        "3 development pages)" in printed
    )
    assert "https://news.example.org/" in printed

    from aggregator.store import open_store
    from aggregator.watchlist import load_watchlist

    watchlist = load_watchlist(config)
    with open_store(db_url) as store:
        devs = [d for d in store.list_developments(None, 100) if d.topics]
        assert devs, "the seeds match the topics"
        atom = feedparser.parse((out / "feeds/all.atom").read_bytes())
        assert not atom.bozo
        assert [e.id for e in atom.entries] == [
            f"tag:news.example.org,2026:development/{d.id}" for d in devs
        ]
        assert atom.entries[0].title == devs[0].title
        # The service serves exactly the bytes the command wrote.
        settings = Settings(data_dir=tmp_path, db_url=db_url, config_path=config)
        client = TestClient(create_app(store, lambda: watchlist, settings))
        for path in ("feeds/all.atom", "feeds/lithuania.rss", "feeds/belarus.json"):
            served = client.get("/" + path, headers={"Accept-Encoding": "identity"})
            assert served.status_code == 200
            assert served.content == (out / path).read_bytes(), path
        # The pages are the same but for the search box, which only the service can answer.
        for path in ("index.html", f"developments/{devs[0].id}.html", "topics/lithuania/"):
            served = client.get("/" + path).text
            written = (out / path.replace("lithuania/", "lithuania/index.html")).read_text()
            assert 'role="search"' in served and 'role="search"' not in written
            form = re.compile(r'<form class="search".*?</form>\n', re.S)
            assert form.sub("", served) == written, path
        index = (out / "index.html").read_text(encoding="utf-8")
        assert devs[0].title.split()[0] in index

    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    assert main([*base, "publish", str(out)]) == 0  # nothing changed: files left alone
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == mtimes


def test_cli_publish_reports_a_bad_base_url(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db_url = f"sqlite:///{tmp_path / 'a.db'}"
    base, _config = _setup(tmp_path, db_url)
    assert main([*base, "publish", str(tmp_path / "o"), "--base-url", "ftp://x"]) == 2
    assert "absolute http(s) URL" in capsys.readouterr().err


def test_service_follows_the_real_store_feed_version(db_url: str, tmp_path: Path) -> None:
    """An ingest changes feed_version; the served feed follows, with a new ETag and entry."""
    from datetime import UTC, datetime

    from aggregator import records
    from aggregator.match import TopicMatcher
    from aggregator.model import Block, BlockKind, Record
    from aggregator.pipeline import ingest
    from aggregator.store import open_store
    from aggregator.watchlist import load_watchlist

    _base, config = _setup(tmp_path, db_url)
    watchlist = load_watchlist(config)
    settings = Settings(data_dir=tmp_path, db_url=db_url, config_path=config)
    with open_store(db_url) as store:
        app = create_app(store, lambda: watchlist, settings, check_interval=0.0)
        client = TestClient(app)
        before = client.get("/feeds/lithuania.atom")
        assert before.status_code == 200
        count = len(feedparser.parse(before.content).entries)

        title = "Klaipėda port opens a new LNG terminal for Lithuania"
        text = records.compose(
            title,
            "Lithuania's Klaipėda port opened a second LNG terminal on Monday, officials said.",
            (Block(BlockKind.PARAGRAPH, "The terminal doubles import capacity. Ąžuolynas."),),
        )
        url = "https://www.lrt.lt/en/news-in-english/19/lng-terminal"
        record = Record(
            id=records.record_id(url, text),
            text=text,
            title=title,
            content_hash=records.content_hash(text),
            url=url,
            canonical_url=url,
            source_id="lrt",
            published=datetime.now(UTC),
        )
        result = ingest(
            store,
            record,
            matcher=TopicMatcher(watchlist.topics),
            options=watchlist.dedup,
            now=datetime.now(UTC),
        )
        assert result.stored and "lithuania" in result.topics

        after = client.get("/feeds/lithuania.atom")
        assert after.headers["etag"] != before.headers["etag"]
        entries = feedparser.parse(after.content).entries
        assert len(entries) == count + 1
        assert entries[0].title == title
        assert entries[0].link.startswith("https://news.example.org/developments/")
        assert url in [link.href for link in entries[0].links]
        stale = client.get(
            "/feeds/lithuania.atom", headers={"If-None-Match": before.headers["etag"]}
        )
        assert stale.status_code == 200
        assert (
            client.get(
                "/feeds/lithuania.atom", headers={"If-None-Match": after.headers["etag"]}
            ).status_code
            == 304
        )
