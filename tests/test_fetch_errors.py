"""Errors an admin reads (issue 20): each fetch failure is logged once, with its class, and the
message says the cause: a DNS failure is a DNS failure (not "disallowed by robots.txt"), and
the private-address guard names the setting that lifts it. No network: the resolver is
replaced, and the refused addresses are refused before any connection."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from aggregator.cycle import fetch_source
from aggregator.errors import FetchError
from aggregator.fetch import Fetcher
from aggregator.fetch.guard import (
    BlockedAddressError,
    DNSResolutionError,
    GuardedBackend,
    check_url,
)
from aggregator.fetch.politeness import RobotsCache
from aggregator.model import FailureClass, FetchPolicy, FetchState, Schedule, Source, SourceKind
from aggregator.service import Service, ServiceOptions
from aggregator.settings import load_settings
from aggregator.store import open_store
from aggregator.watchlist import load_watchlist_text

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
UA = "aggregator/0.1 (+https://example.org)"


def test_unreadable_robots_txt_says_why_not_disallowed() -> None:
    async def loader(origin: str) -> tuple[int, str]:
        if origin == "https://gone.example":
            raise FetchError(FailureClass.DNS, "cannot resolve gone.example: Name not known")
        return 503, ""

    async def go() -> list[tuple[FailureClass, str] | None]:
        cache = RobotsCache(loader)
        return [
            await cache.refusal("https://gone.example", "https://gone.example/a", UA),
            await cache.refusal("https://busy.example", "https://busy.example/a", UA),
        ]

    dns, busy = asyncio.run(go())
    assert dns is not None and dns[0] is FailureClass.DNS
    assert "cannot resolve gone.example" in dns[1] and "disallowed" not in dns[1]
    assert busy is not None and busy[0] is FailureClass.BLOCKED_BY_POLICY
    assert "HTTP 503" in busy[1] and "disallowed" not in busy[1]


def test_a_page_on_a_host_that_does_not_resolve_is_a_dns_failure(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def no_such_host(self: GuardedBackend, host: str, port: int, timeout: object) -> None:
        raise DNSResolutionError(f"cannot resolve {host}: Name or service not known")

    monkeypatch.setattr(GuardedBackend, "resolve", no_such_host)

    async def go() -> FetchError:
        async with Fetcher(FetchPolicy(retries=0), retry_wait_initial=0.01) as fetcher:
            with pytest.raises(FetchError) as info:
                await fetcher.fetch("https://news.invalid/article", purpose="page")
            return info.value

    error = asyncio.run(go())
    assert error.failure_class is FailureClass.DNS
    assert "cannot resolve news.invalid" in str(error)
    assert "disallowed by robots.txt" not in str(error)


@pytest.mark.parametrize("url", ["http://10.1.2.3/feed", "http://127.0.0.1:8080/feed"])
def test_the_guards_refusal_names_the_setting_that_allows_it(url: str) -> None:
    with pytest.raises(BlockedAddressError) as info:
        check_url(httpx.URL(url))
    assert "private-address guard" in str(info.value)
    assert "fetch.allow_networks" in str(info.value)


def test_a_refused_robots_txt_says_it_was_the_guard() -> None:
    # robots.txt of a private address: the guard refuses it, and the page's error says so.
    async def go() -> FetchError:
        async with Fetcher(FetchPolicy(retries=0), retry_wait_initial=0.01) as fetcher:
            with pytest.raises(FetchError) as info:
                await fetcher.fetch("http://10.9.8.7/article", purpose="page")
            return info.value

    error = asyncio.run(go())
    assert error.failure_class is FailureClass.BLOCKED_BY_POLICY
    assert "fetch.allow_networks" in str(error)


def test_each_failure_is_logged_once_with_its_class(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def no_such_host(self: GuardedBackend, host: str, port: int, timeout: object) -> None:
        raise DNSResolutionError(f"cannot resolve {host}: Name or service not known")

    monkeypatch.setattr(GuardedBackend, "resolve", no_such_host)
    watchlist = load_watchlist_text(
        "version: 1\nfetch: {retries: 0}\n"
        "topics: [{id: t, title: T, rules: {any: [border]}}]\n"
        "sources: [{id: gone, url: 'https://news.invalid/feed'}]\n"
    )
    source = Source("gone", SourceKind.FEED, "https://news.invalid/feed", Schedule(600))

    async def go() -> object:
        async with Fetcher(watchlist.fetch, retry_wait_initial=0.01) as fetcher:
            with open_store(f"sqlite:///{tmp_path / 'a.db'}") as store:
                return await fetch_source(
                    store,
                    fetcher,
                    source,
                    matcher=_matcher(watchlist),
                    watchlist=watchlist,
                    now=NOW,
                    state=FetchState("gone"),
                )

    caplog.set_level(logging.DEBUG)
    report = asyncio.run(go())
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    caplog.clear()
    service = Service(load_settings(db_url="sqlite://"), ServiceOptions.from_env())
    service._record_report(source, report, 0.1)
    lines = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(lines) == 1
    assert getattr(lines[0], "failure_class", None) == "dns"
    assert "cannot resolve news.invalid" in lines[0].getMessage()


def _matcher(watchlist: object) -> object:
    from aggregator.match import TopicMatcher

    return TopicMatcher(watchlist.topics)  # type: ignore[attr-defined]
