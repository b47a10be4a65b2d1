"""web.feeds over HTTP: content types, ETag/Last-Modified/304, gzip, render-once caching."""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import Sequence
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import parse_qsl

import feedparser
import httpx
import pytest
import respx
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from aggregator.model import Development
from aggregator.settings import Settings
from aggregator.web import create_app
from aggregator.web.feeds import (
    FeedCache,
    accepts_gzip,
    etag_matches,
    feed_routes,
    hub_pinger,
    websub_ping,
)
from tests.publish_samples import NOW, MemoryStore, SampleWatchlist


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def cache(store: MemoryStore, clock: FakeClock) -> FeedCache:
    watchlist = SampleWatchlist()
    return FeedCache(
        store, lambda: watchlist, "http://127.0.0.1:8080", clock=clock, now=lambda: NOW
    )


@pytest.fixture
def client(cache: FeedCache) -> TestClient:
    return TestClient(Starlette(routes=feed_routes(cache)))


@pytest.mark.parametrize(
    ("path", "ctype"),
    [
        ("/feeds/all.atom", "application/atom+xml; charset=utf-8"),
        ("/feeds/all.rss", "application/rss+xml; charset=utf-8"),
        ("/feeds/all.json", "application/feed+json; charset=utf-8"),
        ("/feeds/lithuania.atom", "application/atom+xml; charset=utf-8"),
        ("/feeds/belarus.json", "application/feed+json; charset=utf-8"),
        ("/", "text/html; charset=utf-8"),
        ("/sources.opml", "text/x-opml; charset=utf-8"),
    ],
)
def test_files_are_served_with_their_types(client: TestClient, path: str, ctype: str) -> None:
    response = client.get(path, headers={"Accept-Encoding": "identity"})
    assert response.status_code == 200
    assert response.headers["content-type"] == ctype
    assert response.headers["etag"].startswith('"')
    assert response.headers["last-modified"].endswith(" GMT")
    assert response.headers["vary"] == "Accept-Encoding"
    assert int(response.headers["content-length"]) == len(response.content)


def test_feed_over_http_parses(client: TestClient) -> None:
    response = client.get("/feeds/belarus.atom")
    parsed = feedparser.parse(response.content)
    assert not parsed.bozo
    assert [e.title for e in parsed.entries] == [
        "Lithuania declares emergency over balloons from Belarus",
        "Лукашенко предложил Литве переговоры о границе",
    ]
    assert 'rel="hub"' in response.headers["link"] and 'rel="self"' in response.headers["link"]


def test_unknown_feed_is_404_and_post_is_405(client: TestClient) -> None:
    assert client.get("/feeds/nosuchtopic.atom").status_code == 404
    assert client.get("/feeds/all.xml").status_code == 404
    assert client.get("/feeds/all").status_code == 404
    assert client.post("/feeds/all.atom").status_code == 405


def test_if_none_match_gives_304(client: TestClient) -> None:
    first = client.get("/feeds/all.atom", headers={"Accept-Encoding": "identity"})
    etag = first.headers["etag"]
    again = client.get(
        "/feeds/all.atom", headers={"If-None-Match": etag, "Accept-Encoding": "identity"}
    )
    assert again.status_code == 304
    assert again.content == b""
    assert again.headers["etag"] == etag
    weak = client.get("/feeds/all.atom", headers={"If-None-Match": f'"x", W/{etag}'})
    assert weak.status_code == 304
    other = client.get("/feeds/all.atom", headers={"If-None-Match": '"nope"'})
    assert other.status_code == 200


def test_if_modified_since_gives_304(client: TestClient) -> None:
    first = client.get("/feeds/all.rss")
    last_modified = first.headers["last-modified"]
    assert last_modified == "Fri, 20 Nov 2026 11:15:30 GMT"  # the newest change shown
    assert (
        client.get("/feeds/all.rss", headers={"If-Modified-Since": last_modified}).status_code
        == 304
    )
    older = "Fri, 20 Nov 2026 11:15:29 GMT"
    assert client.get("/feeds/all.rss", headers={"If-Modified-Since": older}).status_code == 200
    garbage = client.get("/feeds/all.rss", headers={"If-Modified-Since": "yesterday"})
    assert garbage.status_code == 200
    # If-None-Match wins over If-Modified-Since (RFC 9110 13.2.2).
    both = client.get(
        "/feeds/all.rss", headers={"If-Modified-Since": last_modified, "If-None-Match": '"x"'}
    )
    assert both.status_code == 200


def test_gzip_when_accepted(client: TestClient) -> None:
    plain = client.get("/feeds/all.atom", headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers
    with client.stream("GET", "/feeds/all.atom", headers={"Accept-Encoding": "gzip"}) as zipped:
        raw = b"".join(zipped.iter_raw())
        assert zipped.headers["content-encoding"] == "gzip"
        assert int(zipped.headers["content-length"]) == len(raw) < len(plain.content)
        assert gzip.decompress(raw) == plain.content
        gz_etag = zipped.headers["etag"]
    assert gz_etag != plain.headers["etag"]
    revalidate = client.get(
        "/feeds/all.atom", headers={"Accept-Encoding": "gzip", "If-None-Match": gz_etag}
    )
    assert revalidate.status_code == 304
    refused = client.get("/feeds/all.atom", headers={"Accept-Encoding": "gzip;q=0, br"})
    assert "content-encoding" not in refused.headers


def test_head_sends_headers_only(client: TestClient) -> None:
    response = client.head("/feeds/all.json", headers={"Accept-Encoding": "identity"})
    assert response.status_code == 200
    assert response.content == b""
    assert int(response.headers["content-length"]) > 0


def test_rendered_once_and_version_checked_at_most_once_per_interval(
    client: TestClient, cache: FeedCache, store: MemoryStore, clock: FakeClock
) -> None:
    for _ in range(50):
        for path in ("/feeds/all.atom", "/feeds/all.rss", "/", "/sources.opml"):
            assert client.get(path).status_code == 200
    assert cache.renders == 1
    assert store.version_calls == 1
    clock.t += 1.5
    client.get("/feeds/all.atom")
    assert store.version_calls == 2 and cache.renders == 1  # same version: no re-render


def test_a_new_version_is_served_after_the_interval(
    client: TestClient, store: MemoryStore, clock: FakeClock
) -> None:
    before = client.get("/feeds/all.atom")
    dev = store.devs[1]
    store.devs[1] = replace(
        dev, title="Lithuania extends the emergency", updated=dev.updated + timedelta(hours=9)
    )
    store.version += 1
    clock.t += 0.5
    assert client.get("/feeds/all.atom").content == before.content  # not checked yet
    clock.t += 1.0
    after = client.get("/feeds/all.atom")
    assert after.headers["etag"] != before.headers["etag"]
    assert feedparser.parse(after.content).entries[0].title == "Lithuania extends the emergency"
    stale = client.get("/feeds/all.atom", headers={"If-None-Match": before.headers["etag"]})
    assert stale.status_code == 200


def test_a_failing_store_keeps_the_last_good_files(
    client: TestClient, store: MemoryStore, clock: FakeClock
) -> None:
    good = client.get("/feeds/all.atom").content

    def broken() -> str:
        raise RuntimeError("database is down")

    store.feed_version = broken  # type: ignore[method-assign]
    clock.t += 5
    response = client.get("/feeds/all.atom")
    assert response.status_code == 200 and response.content == good


def test_no_data_yet_is_503(clock: FakeClock) -> None:
    class DownStore(MemoryStore):
        def feed_version(self) -> str:
            raise RuntimeError("down")

    cache = FeedCache(DownStore(), SampleWatchlist, "http://127.0.0.1:8080", clock=clock)
    client = TestClient(Starlette(routes=feed_routes(cache)))
    assert client.get("/feeds/all.atom").status_code == 503


def test_websub_hook_hears_of_changed_feeds(store: MemoryStore, clock: FakeClock) -> None:
    heard: list[Sequence[str]] = []

    async def hook(urls: Sequence[str]) -> None:
        heard.append(urls)

    watchlist = SampleWatchlist()
    cache = FeedCache(
        store, lambda: watchlist, "http://x", clock=clock, now=lambda: NOW, on_change=hook
    )
    client = TestClient(Starlette(routes=feed_routes(cache)))
    client.get("/feeds/all.atom")
    assert heard == []  # the first render is not a change
    store.devs.append(
        Development(
            id="dev0009",
            title="Только Беларусь",
            summary="",
            topics=("belarus",),
            first_seen=NOW,
            updated=NOW,
            record_ids=(),
        )
    )
    store.version += 1
    clock.t += 2
    client.get("/feeds/all.atom")
    changed = sorted(heard[0])
    assert "https://news.example.org/feeds/belarus.atom" in changed
    assert "https://news.example.org/feeds/all.json" in changed
    assert not any("lithuania" in url for url in changed)


def test_create_app_includes_extra_routes(store: MemoryStore, tmp_path: Path) -> None:
    async def healthz(request: object) -> PlainTextResponse:
        return PlainTextResponse("ok")

    settings = Settings(data_dir=tmp_path, db_url="sqlite://", config_path=tmp_path / "w.yaml")
    app = create_app(store, SampleWatchlist, settings, extra_routes=[Route("/healthz", healthz)])
    client = TestClient(app)
    assert client.get("/healthz").text == "ok"
    response = client.get("/feeds/all.atom")
    assert response.status_code == 200
    # The watchlist's publish.base_url wins over the settings' host:port.
    assert b'href="https://news.example.org/feeds/all.atom"' in response.content


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("gzip", True),
        ("gzip, deflate, br", True),
        ("br;q=1.0, gzip;q=0.5", True),
        ("GZIP", True),
        ("x-gzip", True),
        ("*", True),
        ("gzip;q=0", False),
        ("*;q=0", False),
        ("identity", False),
        ("", False),
        ("*, gzip;q=0", False),
    ],
)
def test_accepts_gzip(header: str, expected: bool) -> None:
    assert accepts_gzip(header) is expected


def test_etag_matches() -> None:
    assert etag_matches('"abc"', '"abc"')
    assert etag_matches('W/"abc"', '"abc"')
    assert etag_matches('"abc-gz"', '"abc"')
    assert etag_matches("*", '"abc"')
    assert not etag_matches('"abd"', '"abc"')


@respx.mock
def test_websub_ping_posts_each_changed_feed() -> None:
    route = respx.post("https://hub.example.org/").mock(return_value=httpx.Response(204))
    urls = ["https://news.example.org/feeds/all.atom", "https://news.example.org/feeds/all.rss"]
    asyncio.run(websub_ping("https://hub.example.org/", urls, user_agent="aggregator-test"))
    assert route.call_count == 2
    sent = [dict(parse_qsl(call.request.content.decode())) for call in route.calls]
    assert sent == [{"hub.mode": "publish", "hub.url": url} for url in urls]
    assert route.calls[0].request.headers["user-agent"] == "aggregator-test"


@respx.mock
def test_hub_pinger_pings_the_watchlists_hub_as_its_user_agent() -> None:
    route = respx.post("https://hub.example.org/").mock(return_value=httpx.Response(204))
    watchlist = SimpleNamespace(
        publish=SimpleNamespace(websub_hub="https://hub.example.org/"),
        fetch=SimpleNamespace(user_agent="newsroom-bot/2.0"),
    )
    ping = hub_pinger(lambda: watchlist)  # type: ignore[arg-type,return-value]
    asyncio.run(ping(["https://news.example.org/feeds/all.atom"]))
    assert route.call_count == 1
    assert route.calls[0].request.headers["user-agent"] == "newsroom-bot/2.0"
    watchlist.publish.websub_hub = None  # no hub: nothing is sent
    asyncio.run(ping(["https://news.example.org/feeds/all.atom"]))
    assert route.call_count == 1


@respx.mock
def test_websub_ping_failures_are_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    respx.post("https://hub.example.org/").mock(side_effect=httpx.ConnectError("refused"))
    asyncio.run(websub_ping("https://hub.example.org/", ["https://news.example.org/feeds/x.atom"]))
    assert "could not ping hub" in caplog.text


def test_odd_feed_names_are_404(client: TestClient) -> None:
    for name in ("%ED%A0%80.atom", "..%2Fetc.atom", "all.atom.gz", "%00.rss", ".atom"):
        assert client.get(f"/feeds/{name}").status_code == 404, name


def test_a_lasting_fault_is_logged_once(
    client: TestClient,
    cache: FeedCache,
    store: MemoryStore,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    client.get("/feeds/all.atom")

    def broken() -> str:
        raise RuntimeError("database is down")

    store.feed_version = broken  # type: ignore[method-assign]
    for _ in range(5):
        clock.t += 2
        assert client.get("/feeds/all.atom").status_code == 200
    assert caplog.text.count("refresh failed") == 1
    assert cache.last_error == "RuntimeError: database is down"
    store.feed_version = lambda: "1"  # type: ignore[method-assign]
    clock.t += 2
    client.get("/feeds/all.atom")
    assert cache.last_error is None
