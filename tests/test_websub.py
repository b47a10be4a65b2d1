"""WebSub (issue 20): the hub is pinged after an ingest changes a feed, not when a client next
requests it. A local hub on loopback records the pings."""

from __future__ import annotations

import asyncio
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from aggregator.model import Development, FetchPolicy
from aggregator.web.feeds import FeedCache, hub_pinger
from tests.publish_samples import NOW, MemoryStore, SampleWatchlist


class LocalHub:
    """A WebSub hub on 127.0.0.1 that records each ``hub.mode=publish`` ping."""

    def __init__(self) -> None:
        self.pings: list[dict[str, str]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                form = urllib.parse.parse_qs(self.rfile.read(length).decode())
                outer.pings.append({k: v[0] for k, v in form.items()})
                self.send_response(204)
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def topics(self) -> set[str]:
        return {p.get("hub.url", "") for p in self.pings if p.get("hub.mode") == "publish"}

    def __enter__(self) -> LocalHub:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hub() -> Iterator[LocalHub]:
    with LocalHub() as h:
        yield h


@dataclass(frozen=True)
class HubWatchlist(SampleWatchlist):
    fetch: FetchPolicy = field(default_factory=FetchPolicy)


def _watchlist(hub: LocalHub) -> HubWatchlist:
    base = HubWatchlist()
    return replace(base, publish=replace(base.publish, websub_hub=hub.url))


def _new_development() -> Development:
    return Development(
        id="dev0042",
        title="Только Беларусь",
        summary="",
        topics=("belarus",),
        first_seen=NOW,
        updated=NOW,
        record_ids=(),
    )


async def _until(check: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        await asyncio.sleep(0.02)


def test_the_hub_hears_of_a_change_without_any_request(hub: LocalHub) -> None:
    store = MemoryStore()
    watchlist = _watchlist(hub)
    cache = FeedCache(
        store,
        lambda: watchlist,
        "http://x",
        check_interval=0.05,
        now=lambda: NOW,
        on_change=hub_pinger(lambda: watchlist),
    )

    async def go() -> None:
        watch = asyncio.create_task(cache.watch())
        await _until(lambda: cache.renders == 1)  # the baseline: nothing is announced
        await asyncio.sleep(0.2)
        assert hub.pings == []
        store.devs.append(_new_development())  # an ingest elsewhere in the process
        store.version += 1
        await _until(lambda: len(hub.topics()) >= 6)  # all and belarus, three formats each
        await asyncio.sleep(0.2)
        watch.cancel()

    asyncio.run(go())
    topics = hub.topics()
    assert "https://news.example.org/feeds/belarus.atom" in topics
    assert "https://news.example.org/feeds/all.json" in topics
    assert not any("lithuania" in url for url in topics)


def test_a_change_before_the_first_render_announces_every_feed(hub: LocalHub) -> None:
    store = MemoryStore()
    watchlist = _watchlist(hub)
    cache = FeedCache(
        store,
        lambda: watchlist,
        "http://x",
        check_interval=0.05,
        now=lambda: NOW,
        on_change=hub_pinger(lambda: watchlist),
    )
    cache.start_version = "0"  # the service started at version 0; an ingest came first

    async def go() -> None:
        watch = asyncio.create_task(cache.watch())
        await _until(lambda: len(hub.topics()) >= 9)
        watch.cancel()

    asyncio.run(go())
    assert len(hub.topics()) == 9  # all, lithuania, belarus x atom, rss, json


def test_without_a_hub_nothing_is_rendered_ahead(tmp_path: Path) -> None:
    store = MemoryStore()
    watchlist = HubWatchlist()
    watchlist = replace(watchlist, publish=replace(watchlist.publish, websub_hub=None))
    cache = FeedCache(store, lambda: watchlist, "http://x", check_interval=0.02)

    async def go() -> None:
        watch = asyncio.create_task(cache.watch())
        await asyncio.sleep(0.2)
        watch.cancel()

    asyncio.run(go())
    assert cache.renders == 0


@pytest.mark.slow
def test_the_service_pings_the_hub_after_its_first_ingest(tmp_path: Path, hub: LocalHub) -> None:
    """The real service (replayed recordings): nothing asks for a feed, yet the hub hears."""
    from tests.test_service_e2e import cycle_done, service, write_watchlist

    config = tmp_path / "watchlist.yaml"
    write_watchlist(config, ["lrt-english"])
    config.write_text(config.read_text() + f"publish:\n  websub_hub: {hub.url}\n")
    with service(tmp_path, tmp_path / "a.db", config) as run:
        run.wait(cycle_done(run, 1), what="the first cycle")  # /healthz only
        run.wait(lambda: any(t.endswith("/feeds/all.atom") for t in hub.topics()), what="a ping")
        assert any(t.endswith("/feeds/border.atom") for t in hub.topics())
