"""Real feed readers from Debian's packages read what we publish, exactly.

The feeds are served over HTTP on 127.0.0.1 by the real app (uvicorn); ``newsboat -x reload``
fetches them into its SQLite cache, which is then read back; ``sfeed`` parses the same bytes
into its TSV format. Titles, links, dates and ids must come out as published, with Lithuanian
and Cyrillic text intact. A missing reader skips its test with the reason (CI's ``.ci/run``
installs both).
"""

from __future__ import annotations

import shutil
import socket
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn

from aggregator.settings import Settings
from aggregator.web import create_app
from tests.publish_samples import T0, MemoryStore, SampleWatchlist

pytestmark = pytest.mark.slow

# What every reader must see, newest change first (as the feeds list them).
EXPECTED = [
    (
        "tag:news.example.org,2026:development/dev0001",
        "Lithuania declares emergency over balloons from Belarus",
        "https://news.example.org/developments/dev0001.html",
        int(T0.timestamp()),
    ),
    (
        "tag:news.example.org,2026:development/dev0002",
        "Лукашенко предложил Литве переговоры о границе",
        "https://news.example.org/developments/dev0002.html",
        int(T0.timestamp()) + 3600,
    ),
    (
        "tag:news.example.org,2026:development/dev0003",
        "Kiaušinių kainos Lietuvoje šoktelėjo",
        "https://news.example.org/developments/dev0003.html",
        int(T0.timestamp()) + 1800,
    ),
]
LITHUANIAN = "Ruginienė: „Turime imtis griežčiausių priemonių“"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("readers")
    settings = Settings(data_dir=tmp, db_url="sqlite://", config_path=tmp / "w.yaml")
    app = create_app(MemoryStore(), SampleWatchlist, settings)
    port = _free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            if httpx.get(base + "/feeds/all.atom", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.05)
    else:
        pytest.fail("the feed server did not start")
    yield base
    srv.should_exit = True
    thread.join(timeout=10)


def _need(program: str) -> str:
    path = shutil.which(program)
    if path is None:
        pytest.skip(f"{program} is not installed (Debian package {program}; .ci/run installs it)")
    return path


@pytest.mark.parametrize("fmt", ["atom", "rss"])
def test_newsboat_reads_titles_links_dates(server: str, tmp_path: Path, fmt: str) -> None:
    newsboat = _need("newsboat")
    url = f"{server}/feeds/all.{fmt}"
    (tmp_path / "urls").write_text(url + "\n", encoding="utf-8")
    (tmp_path / "config").write_text("", encoding="utf-8")
    cache = tmp_path / "cache.db"
    result = subprocess.run(
        [newsboat, "-x", "reload", "-u", "urls", "-c", str(cache), "-C", "config"],
        cwd=tmp_path,
        capture_output=True,
        timeout=60,
        env={"HOME": str(tmp_path), "LANG": "C.UTF-8", "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    with sqlite3.connect(cache) as db:
        rows = db.execute(
            "SELECT guid, title, url, pubDate, content FROM rss_item WHERE feedurl = ?", (url,)
        ).fetchall()
        feed_title = db.execute("SELECT title FROM rss_feed WHERE rssurl = ?", (url,)).fetchone()
    got = sorted((guid, title, link, date) for guid, title, link, date, _ in rows)
    assert got == sorted(EXPECTED)
    assert feed_title == ("Baltic news: new developments",)
    contents = {guid: content for guid, _, _, _, content in rows}
    assert LITHUANIAN in contents[EXPECTED[0][0]]
    assert "<script" not in contents[EXPECTED[0][0]]


@pytest.mark.parametrize("fmt", ["atom", "rss"])
def test_sfeed_reads_titles_links_dates(server: str, fmt: str) -> None:
    sfeed = _need("sfeed")
    body = httpx.get(f"{server}/feeds/all.{fmt}", headers={"Accept-Encoding": "identity"}).content
    result = subprocess.run([sfeed], input=body, capture_output=True, timeout=30)
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    # sfeed's TSV: timestamp, title, link, content, content-type, id, author, enclosure, category
    lines = result.stdout.decode("utf-8").splitlines()
    rows = [line.split("\t") for line in lines]
    got = [(r[5], r[1], r[2], int(r[0])) for r in rows]
    assert got == EXPECTED
    assert rows[0][4] == "html"
    assert LITHUANIAN in rows[0][3]
    assert "Belarus / Беларусь" in rows[0][8] or fmt == "atom"
