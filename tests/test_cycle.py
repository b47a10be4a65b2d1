"""The fetch cycle driver: the next-fetch policy (pure, with an injected clock), the same
developments whatever order fetches finish in, and one big feed beside small ones."""

from __future__ import annotations

import asyncio
import http.server
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import pytest

from aggregator import feeds
from aggregator.cycle import (
    SourceReport,
    fetch_source,
    order_key,
    run_cycle,
)
from aggregator.fetch import Fetcher, FetchStatusError
from aggregator.fetch.backoff import CacheHints
from aggregator.fetch.client import FetchResponse
from aggregator.fetch.schedule import interval_seconds, next_fetch, skip_to_allowed
from aggregator.model import (
    DEFAULT_INTERVAL_SECONDS,
    FailureClass,
    FetchPolicy,
    FetchState,
    Schedule,
)
from aggregator.service.scheduler import trigger_for
from aggregator.store import Store, open_store
from aggregator.watchlist import DEFAULT_SCHEDULE, Watchlist, load_watchlist_text

ROOT = Path(__file__).resolve().parent.parent
NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)  # a Monday


# --- the next-fetch policy: pure ------------------------------------------------------------


def test_one_default_interval_everywhere() -> None:
    assert DEFAULT_SCHEDULE.interval_seconds == DEFAULT_INTERVAL_SECONDS
    assert interval_seconds(Schedule(), NOW) == DEFAULT_INTERVAL_SECONDS
    trigger = trigger_for(Schedule())
    assert trigger.interval.total_seconds() == DEFAULT_INTERVAL_SECONDS  # type: ignore[attr-defined]


def test_cron_interval_is_the_gap_to_the_next_time() -> None:
    assert interval_seconds(Schedule(cron="30 12 * * *"), NOW) == 30 * 60
    assert interval_seconds(Schedule(cron="0 12 * * *"), NOW) == 24 * 3600


def test_skip_hours_and_days_move_the_next_fetch_to_the_first_allowed_hour() -> None:
    hints = CacheHints(skip_hours=frozenset({12, 13, 14}))
    got = next_fetch(NOW - timedelta(minutes=30), interval=3600, ok=True, hints=hints)
    assert got == datetime(2026, 11, 23, 15, 0, tzinfo=UTC)
    # Saturday and Sunday skipped: a Friday-evening fetch waits for Monday 00:00.
    friday = datetime(2026, 11, 27, 23, 30, tzinfo=UTC)
    hints = CacheHints(skip_days=frozenset({5, 6}))
    got = next_fetch(friday, interval=3600, ok=True, hints=hints)
    assert got == datetime(2026, 11, 30, 0, 0, tzinfo=UTC)
    # Hours and days together; an allowed time stays as it is.
    assert skip_to_allowed(NOW, frozenset({0}), frozenset({6})) == NOW
    # A feed that skips every hour is taken to mean nothing (it would never be fetched).
    assert skip_to_allowed(NOW, frozenset(range(24)), frozenset()) == NOW
    # Failures and Retry-After are moved too: skip hours are the publisher's wish, whatever.
    hints = CacheHints(retry_after=600, skip_hours=frozenset({12}))
    got = next_fetch(NOW, interval=60, ok=False, consecutive_failures=1, hints=hints)
    assert got == datetime(2026, 11, 23, 13, 0, tzinfo=UTC)


def test_floor_and_backlog_never_make_a_fetch_sooner_than_the_server_asked() -> None:
    floor = NOW + timedelta(hours=2)
    assert next_fetch(NOW, interval=600, ok=True, not_before=floor) == floor
    assert next_fetch(NOW, interval=600, ok=True, backlog_seconds=60) == NOW + timedelta(seconds=60)
    hints = CacheHints(max_age=300)
    got = next_fetch(NOW, interval=600, ok=True, hints=hints, backlog_seconds=60)
    assert got == NOW + timedelta(seconds=300)
    hints = CacheHints(retry_after=150)
    for jitter in (0.0, 0.5, 1.0):
        got = next_fetch(
            NOW, interval=60, ok=False, consecutive_failures=1, hints=hints, jitter=jitter
        )
        assert got >= NOW + timedelta(seconds=150)


def test_scan_skip_reads_the_channel() -> None:
    text = (
        "<rss><channel><title>x</title><skipHours><hour>0</hour><hour> 23 </hour>"
        "<hour>24</hour><hour>99</hour></skipHours><skipDays><day>Saturday</day>"
        "<day>sunday</day><day>Someday</day></skipDays><item><title>a</title></item>"
        "</channel></rss>"
    )
    hours, days = feeds.scan_skip(text)
    assert hours == frozenset({0, 23})
    assert days == frozenset({5, 6})
    assert feeds.scan_skip("<rss><channel></channel></rss>") == (frozenset(), frozenset())


# --- fetch_source with an injected clock ----------------------------------------------------


class FakeFetcher:
    """Answers every fetch with ``answer`` after moving the injected clock ``seconds`` on."""

    def __init__(self, clock: list[float], seconds: float, answer: Any) -> None:
        self.clock = clock
        self.seconds = seconds
        self.answer = answer

    async def fetch(self, url: str, **kwargs: Any) -> FetchResponse:
        self.clock[0] += self.seconds
        if isinstance(self.answer, Exception):
            raise self.answer
        assert isinstance(self.answer, FetchResponse)
        return self.answer


def _one_source_watchlist(extra: str = "") -> Watchlist:
    return load_watchlist_text(
        "version: 1\n"
        "fetch:\n  max_backoff_seconds: 86400\n" + extra + "topics:\n"
        "  - {id: t, title: T, rules: {any: [border]}}\n"
        "sources:\n"
        "  - {id: s, kind: feed, url: 'https://example.org/feed.xml', schedule: {every: 1m}}\n"
    )


def _fetch_with(store: Store, fetcher: Any, clock: list[float]) -> SourceReport:
    watchlist = _one_source_watchlist()
    store.sync_sources(watchlist.sources, NOW)
    from aggregator.match import TopicMatcher

    return asyncio.run(
        fetch_source(
            store,
            fetcher,
            watchlist.sources[0],
            matcher=TopicMatcher(watchlist.topics),
            watchlist=watchlist,
            now=NOW,
            clock=lambda: clock[0],
        )
    )


def test_retry_after_counts_from_the_answer_not_the_start(db_url: str) -> None:
    clock = [1000.0]
    error = FetchStatusError(
        FailureClass.RATE_LIMITED, "HTTP 429", 429, CacheHints(retry_after=150)
    )
    with open_store(db_url) as store:
        report = _fetch_with(store, FakeFetcher(clock, 6.0, error), clock)
        state = store.get_fetch_state("s")
    assert report.failure_class is FailureClass.RATE_LIMITED
    assert report.next_fetch is not None
    # The answer came 6 s after the start: 150 s from then, never 144.
    assert report.next_fetch >= NOW + timedelta(seconds=156)
    assert state.next_fetch == report.next_fetch
    assert state.last_attempt == NOW


G = "https://example.org/guid/"


def _feed(items: int, *, skip_hours: str = "", start: datetime = NOW, prefix: str = "i") -> bytes:
    parts = [
        '<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel>',
        "<title>t</title><link>https://example.org/</link>",
        skip_hours,
    ]
    for i in range(items):
        when = format_datetime(start - timedelta(minutes=items - i), usegmt=True)
        parts.append(
            f"<item><title>Item {prefix}{i} border news {i * 7919 % 10007}</title>"
            f"<link>https://example.org/{prefix}/{i}</link><guid>{G}{prefix}-{i}</guid>"
            f"<pubDate>{when}</pubDate><description>Story {i} about the border crossing "
            f"number {i} and lorry queue {i * 31 % 977}.</description></item>"
        )
    parts.append("</channel></rss>")
    return "".join(parts).encode()


def _response(body: bytes) -> FetchResponse:
    return FetchResponse(
        url="https://example.org/feed.xml",
        status=200,
        body=body,
        text=body.decode(),
        encoding="utf-8",
        headers={"content-type": "application/rss+xml"},
        etag='"v1"',
        last_modified=None,
    )


def test_skip_hours_of_a_feed_move_its_next_fetch(db_url: str) -> None:
    clock = [0.0]
    skip = "<skipHours><hour>12</hour><hour>13</hour></skipHours>"
    with open_store(db_url) as store:
        report = _fetch_with(
            store, FakeFetcher(clock, 0.5, _response(_feed(3, skip_hours=skip))), clock
        )
    assert report.status == "ok" and report.new_records == 3
    assert report.next_fetch == datetime(2026, 11, 23, 14, 0, tzinfo=UTC)
    # Kept with the fetch state: a later 304 (no body to read them from) still honours them.
    with open_store(db_url) as store:
        state = store.get_fetch_state("s")
        assert state.skip_hours == frozenset({12, 13}) and state.skip_days == frozenset()
        not_modified = replace(_response(b""), status=304, text="")
        report = _fetch_with(store, FakeFetcher(clock, 0.5, not_modified), clock)
    assert report.status == "not-modified"
    assert report.next_fetch == datetime(2026, 11, 23, 14, 0, tzinfo=UTC)


# --- determinism: the same developments whatever order the fetches end in --------------------


class _Feeds(http.server.ThreadingHTTPServer):
    daemon_threads = True
    bodies: dict[str, bytes]
    delays: dict[str, float]
    served: list[str]  # paths in the order their answers were sent


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Feeds

    def do_GET(self) -> None:
        body = self.server.bodies.get(self.path)
        time.sleep(self.server.delays.get(self.path, 0.0))
        if body is None:
            self.send_response(404)
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/rss+xml; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.server.served.append(self.path)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def feed_server() -> Iterator[_Feeds]:
    server = _Feeds(("127.0.0.1", 0), _Handler)
    server.bodies, server.delays, server.served = {}, {}, []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def _story_feed(outlet: str, order: list[int]) -> bytes:
    """Three outlets report the same three events (the same wire story under one link, and a
    rewrite under each outlet's own link), so exact duplicates and joins both happen."""
    events = [
        (
            "Balloons from Belarus close Vilnius airport again",
            "Vilnius airport closed its airspace overnight after smuggling balloons from Belarus "
            "crossed the border, the airport operator said, the fourth closure this month.",
        ),
        (
            "Lithuania keeps two Belarus border checkpoints shut",
            "The government decided to keep the Medininkai and Šalčininkai border checkpoints "
            "with Belarus closed until December, the interior minister told reporters.",
        ),
        (
            "EU widens sanctions over border balloon smuggling",
            "European Union ministers agreed to widen sanctions against Belarusian networks that "
            "send smuggling balloons across the Lithuanian border, diplomats said.",
        ),
    ]
    items = []
    for i in order:
        title, text = events[i]
        when = format_datetime(NOW - timedelta(hours=3 - i), usegmt=True)
        items.append(
            f"<item><title>{title}</title><link>https://wire.example/{i}</link>"
            f"<guid>wire-{i}</guid><pubDate>{when}</pubDate><description>{text}</description>"
            "</item>"
        )
        items.append(
            f"<item><title>{outlet}: {title.lower()}</title>"
            f"<link>https://{outlet}.example/{i}</link><guid>{outlet}-{i}</guid>"
            f"<pubDate>{when}</pubDate><description>{outlet} reports: {text} More details "
            f"followed later in the day, {outlet} added.</description></item>"
        )
    return (
        '<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>'
        + outlet
        + "</title>"
        + "".join(items)
        + "</channel></rss>"
    ).encode()


def _cycle_watchlist(server: _Feeds, ids: list[str], extra: str = "") -> Watchlist:
    port = server.server_address[1]
    lines = [
        "version: 1",
        "fetch:",
        "  per_host_concurrency: 16",
        "  min_host_interval_seconds: 0",
        "  retries: 0",
        '  allow_networks: ["127.0.0.1/32"]',
        *extra.splitlines(),
        "topics:",
        "  - {id: border, title: Border, rules: {any: [border, balloon*, airport, sanction*]}}",
        "sources:",
    ]
    lines += [
        f"  - {{id: {sid}, kind: feed, url: 'http://127.0.0.1:{port}/{sid}.xml'}}" for sid in ids
    ]
    return load_watchlist_text("\n".join(lines) + "\n")


def _grouping(store: Store) -> list[tuple[str, tuple[tuple[str, str, str | None], ...]]]:
    """Every development with its members (decision) and each record's stored source."""
    out = []
    for dev in store.list_developments(limit=0):
        members = []
        for m in store.get_memberships(dev.id):
            record = store.get_record(m.record_id)
            members.append((m.record_id, str(m.reason), record.source_id if record else None))
        out.append((dev.id, tuple(sorted(members))))
    return sorted(out)


def test_records_of_one_cycle_group_the_same_whatever_order_fetches_end(
    feed_server: _Feeds, tmp_path: Path
) -> None:
    outlets = ["alpha", "bravo", "charlie"]
    for n, outlet in enumerate(outlets):
        feed_server.bodies[f"/{outlet}.xml"] = _story_feed(
            outlet, [n % 3, (n + 1) % 3, (n + 2) % 3]
        )
    watchlist = _cycle_watchlist(feed_server, outlets)
    results = []
    for run, delays in enumerate(([0.0, 0.3, 0.6], [0.6, 0.3, 0.0], [0.3, 0.0, 0.6])):
        feed_server.delays = {f"/{o}.xml": d for o, d in zip(outlets, delays, strict=True)}

        async def cycle(store: Store) -> list[SourceReport]:
            async with Fetcher(watchlist.fetch) as fetcher:
                return await run_cycle(store, fetcher, watchlist, now=NOW)

        with open_store(f"sqlite:///{tmp_path / f'run{run}.db'}") as store:
            feed_server.served = []
            reports = asyncio.run(cycle(store))
            assert all(r.status == "ok" for r in reports)
            results.append((list(feed_server.served), _grouping(store)))
    orders = {tuple(f) for f, _ in results}
    assert len(orders) > 1, "the fetches should have ended in different orders"
    groupings = [g for _, g in results]
    assert groupings[0] == groupings[1] == groupings[2]
    # Copies of the wire story were stored once, from the same outlet each time.
    assert any(len(members) > 1 for _, members in groupings[0])


def test_order_key_puts_undated_records_last_and_breaks_ties_stably() -> None:
    from aggregator import pipeline
    from aggregator.match import TopicMatcher
    from aggregator.model import Record

    def rec(rid: str, source: str, published: datetime | None) -> Any:
        r = Record(
            id=rid,
            title="t",
            text="x",
            content_hash=rid,
            source_id=source,
            guid=rid + source,
            published=published,
        )
        return pipeline.prepare(r, TopicMatcher(()), NOW)

    a = rec("b" * 16, "s2", NOW)
    b = rec("b" * 16, "s1", NOW)
    c = rec("a" * 16, "s9", None)
    d = rec("c" * 16, "s0", NOW - timedelta(hours=1))
    assert [p.record.source_id for p in sorted([c, a, b, d], key=order_key)] == [
        "s0",
        "s1",
        "s2",
        "s9",
    ]


def test_replay_demo_twice_gives_the_same_feeds(tmp_path: Path) -> None:
    """``aggregator run --replay fixtures/ --once``, twice on fresh stores: the same
    developments (ids, records, sources) and the same feed entries."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGGREGATOR_")}
    outputs = []
    for run in (1, 2):
        db = f"sqlite:///{tmp_path / f'demo{run}.db'}"
        base = [sys.executable, "-m", "aggregator", "--db", db]
        subprocess.run(
            [*base, "run", "--replay", "fixtures/", "--once", "--log-format", "json"],
            cwd=ROOT,
            env=env,
            check=True,
            capture_output=True,
            timeout=180,
        )
        devs = subprocess.run(
            [*base, "developments", "--json"],
            cwd=ROOT,
            env=env,
            check=True,
            capture_output=True,
            timeout=120,
        )
        site = tmp_path / f"site{run}"
        subprocess.run(
            [*base, "publish", str(site)],
            cwd=ROOT,
            env=env,
            check=True,
            capture_output=True,
            timeout=120,
        )
        grouping = sorted(
            (d["id"], sorted((s["record_id"], s["source_id"]) for s in d["sources"]))
            for d in json.loads(devs.stdout)
        )
        feed = json.loads((site / "feeds" / "all.json").read_text())
        entries = sorted((e["id"], e.get("title"), e.get("url")) for e in feed["items"])
        outputs.append((grouping, entries))
    assert outputs[0][0], "the demo should have made developments"
    assert outputs[0] == outputs[1]


# --- fairness: one big feed beside small ones -------------------------------------------------


def test_a_20000_item_feed_takes_its_cap_and_does_not_hold_up_small_sources(
    feed_server: _Feeds, tmp_path: Path
) -> None:
    small = [f"small{i}" for i in range(5)]
    feed_server.bodies["/big.xml"] = _feed(20_000, prefix="big")
    for i, sid in enumerate(small):
        feed_server.bodies[f"/{sid}.xml"] = _feed(3, prefix=sid, start=NOW - timedelta(days=i))
    extra = "  max_items_per_fetch: 300\n  ingest_hold_seconds: 1\n  timeout_seconds: 60\n"
    extra += "  max_body_bytes: 50000000"
    watchlist = _cycle_watchlist(feed_server, ["big", *small], extra)
    saved: list[str] = []
    with open_store(f"sqlite:///{tmp_path / 'fair.db'}") as store:
        original = store.save_fetch_states

        def recording(states: Any, **kwargs: Any) -> Any:
            saved.extend(s.source_id for s in states)
            return original(states, **kwargs)

        store.save_fetch_states = recording  # type: ignore[method-assign]

        async def cycle(now: datetime) -> list[SourceReport]:
            async with Fetcher(watchlist.fetch) as fetcher:
                return await run_cycle(store, fetcher, watchlist, now=now)

        reports = {r.source_id: r for r in asyncio.run(cycle(NOW))}
        big = reports["big"]
        assert big.status == "ok" and big.new_records == 300 and big.backlog == 19_700
        # Taken oldest first; no ETag kept while entries wait; back in backlog_seconds.
        got = store.known_guids("big", [G + "big-0", G + "big-299", G + "big-300"])
        assert got == {G + "big-0", G + "big-299"}
        state: FetchState = store.get_fetch_state("big")
        assert state.etag is None and state.last_modified is None
        assert big.next_fetch is not None
        assert big.next_fetch <= NOW + timedelta(seconds=big.elapsed + 60 * 1.1 + 1)
        for sid in small:
            assert reports[sid].status == "ok" and reports[sid].new_records == 3
        # The small sources were done (state committed) before the big one's ingest ended.
        assert saved.index("big") == len(saved) - 1
        assert all(reports[sid].elapsed < big.elapsed for sid in small)
        # The next fetch takes the next 300, in order.
        reports = {r.source_id: r for r in asyncio.run(cycle(NOW + timedelta(minutes=2)))}
        assert reports["big"].new_records == 300
        assert store.known_guids("big", [G + "big-599", G + "big-600"]) == {G + "big-599"}


# --- politeness: robots.txt Crawl-delay -------------------------------------------------------


def test_host_limiter_spaces_a_host_by_its_crawl_delay_with_an_injected_clock() -> None:
    from aggregator.fetch.politeness import HostLimiter

    now = [100.0]
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)
        now[0] += seconds

    limiter = HostLimiter(2, 1.0, clock=lambda: now[0], sleep=sleep)

    async def three(host: str) -> None:
        for _ in range(3):
            async with limiter.slot(host):
                now[0] += 0.25  # the request itself

    limiter.set_delay("slow.example", 7.0)
    asyncio.run(three("slow.example"))
    assert waits == [6.75, 6.75]  # each start 7 s after the one before
    waits.clear()
    asyncio.run(three("other.example"))
    assert waits == [0.75, 0.75]  # the policy's 1 s elsewhere
    limiter.set_delay("slow.example", None)
    assert limiter.interval("slow.example") == 1.0


def test_fetcher_reads_crawl_delay_for_feeds_and_caps_it(feed_server: _Feeds) -> None:
    port = feed_server.server_address[1]
    feed_server.bodies["/robots.txt"] = b"User-agent: *\nCrawl-delay: 7\nDisallow: /private\n"
    feed_server.bodies["/f.xml"] = _feed(2)
    policy = FetchPolicy(
        allow_networks=("127.0.0.1/32",), min_host_interval_seconds=0.0, max_crawl_delay_seconds=5
    )

    async def go() -> float:
        async with Fetcher(policy) as fetcher:
            response = await fetcher.fetch(f"http://127.0.0.1:{port}/f.xml")
            assert response.status == 200
            return fetcher._hosts.interval("127.0.0.1")

    assert asyncio.run(go()) == 5.0  # 7 asked, capped at max_crawl_delay_seconds
    assert feed_server.served.count("/robots.txt") == 1


# --- the service: the same driver, and no store work on the event loop --------------------------


class _LoopGuardedStore:
    """A store whose every method call notes whether it ran on an event loop's thread."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self.on_loop: list[str] = []
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._store, name)
        if not callable(value):
            return value

        def guarded(*args: Any, **kwargs: Any) -> Any:
            self.calls.append(name)
            try:
                asyncio.get_running_loop()
            except RuntimeError:
                pass
            else:
                self.on_loop.append(name)
            return value(*args, **kwargs)

        return guarded


def test_service_fetches_through_the_driver_with_no_store_work_on_the_loop(
    feed_server: _Feeds, tmp_path: Path
) -> None:
    from aggregator.service import Service, ServiceOptions
    from aggregator.settings import Settings

    outlets = ["alpha", "bravo", "charlie"]
    for n, outlet in enumerate(outlets):
        feed_server.bodies[f"/{outlet}.xml"] = _story_feed(
            outlet, [n % 3, (n + 1) % 3, (n + 2) % 3]
        )
    watchlist = _cycle_watchlist(feed_server, outlets)
    config = tmp_path / "watchlist.yaml"
    config.write_text("# loaded by the test's loader\n")
    db_url = f"sqlite:///{tmp_path / 'svc.db'}"
    guarded: list[_LoopGuardedStore] = []

    def open_guarded(url: str) -> Any:
        guarded.append(_LoopGuardedStore(open_store(url)))
        return guarded[0]

    service = Service(
        Settings(data_dir=tmp_path, db_url=db_url, config_path=config),
        ServiceOptions(once=True, serve=False, seeds_dir=None),
        open_store=open_guarded,
        load_watchlist=lambda _path: watchlist,
    )
    assert asyncio.run(service.run()) == 0
    store = guarded[0]
    assert {"claim_due_states", "save_fetch_states", "sync_sources"} <= set(store.calls)
    assert [name for name in store.on_loop if name != "close"] == []
    with open_store(db_url) as check:
        # The same developments as fetch-once made of these feeds in the test above.
        assert any(len(members) > 1 for _, members in _grouping(check))
        assert all(check.get_fetch_state(o).fetch_count == 1 for o in outlets)
