"""Fetcher behaviour with respx (httpx mocked at the transport): headers, conditional GET,
redirects, retries, classification, caps, charset, robots."""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import httpx
import pytest
import respx

from aggregator.errors import FetchError
from aggregator.fetch import Fetcher, FetchStatusError
from aggregator.fetch.client import classify
from aggregator.model import FailureClass, FetchPolicy

T = TypeVar("T")
POLICY = FetchPolicy(
    user_agent="testbot/1.0 (+https://example.org/contact)",
    timeout_seconds=2.0,
    retries=2,
    min_host_interval_seconds=0.0,
    max_body_bytes=64 * 1024,
)


def run(make: Callable[[Fetcher], Coroutine[Any, Any, T]], policy: FetchPolicy = POLICY) -> T:
    async def go() -> T:
        async with Fetcher(policy, retry_wait_initial=0.001, retry_wait_max=0.01) as fetcher:
            return await make(fetcher)

    return asyncio.run(go())


@respx.mock
def test_user_agent_accept_and_conditional_headers_are_sent() -> None:
    route = respx.get("https://feeds.example.org/rss").mock(
        return_value=httpx.Response(304, headers={"ETag": '"abc"'})
    )
    response = run(
        lambda f: f.fetch(
            "https://feeds.example.org/rss",
            etag='"abc"',
            last_modified="Mon, 23 Nov 2026 08:00:00 GMT",
        )
    )
    sent = route.calls.last.request
    assert sent.headers["User-Agent"] == POLICY.user_agent
    assert sent.headers["If-None-Match"] == '"abc"'
    assert sent.headers["If-Modified-Since"] == "Mon, 23 Nov 2026 08:00:00 GMT"
    assert "application/rss+xml" in sent.headers["Accept"]
    assert sent.headers["Accept-Encoding"] == "gzip, deflate"
    assert response.not_modified and response.body == b"" and response.text == ""


@respx.mock
def test_cache_headers_become_hints() -> None:
    respx.get("https://feeds.example.org/rss").mock(
        return_value=httpx.Response(
            200,
            content=b"<rss/>",
            headers={
                "Cache-Control": "public, max-age=1800",
                "ETag": '"v2"',
                "Last-Modified": "Mon, 23 Nov 2026 08:00:00 GMT",
            },
        )
    )
    response = run(lambda f: f.fetch("https://feeds.example.org/rss"))
    assert response.hints.max_age == 1800
    assert response.next_fetch_hint == 1800
    assert response.etag == '"v2"' and response.last_modified == "Mon, 23 Nov 2026 08:00:00 GMT"


@respx.mock
def test_redirects_are_followed_by_our_loop_and_relative_locations_resolved() -> None:
    respx.get("http://old.example.org/feed").mock(
        return_value=httpx.Response(301, headers={"Location": "https://new.example.org/feed"})
    )
    respx.get("https://new.example.org/feed").mock(
        return_value=httpx.Response(302, headers={"Location": "/v2/feed"})
    )
    respx.get("https://new.example.org/v2/feed").mock(
        return_value=httpx.Response(200, content=b"<rss/>")
    )
    response = run(lambda f: f.fetch("http://old.example.org/feed"))
    assert response.url == "https://new.example.org/v2/feed"
    assert response.redirects == ("http://old.example.org/feed", "https://new.example.org/feed")
    assert not response.moved_permanently  # one hop was temporary (302)


@respx.mock
@pytest.mark.parametrize(
    ("statuses", "permanent"),
    [((301,), True), ((308, 301), True), ((301, 307), False), ((), False)],
)
def test_moved_permanently_only_when_every_hop_is_permanent(
    statuses: tuple[int, ...], permanent: bool
) -> None:
    for i, status in enumerate(statuses):
        respx.get(f"https://example.org/{i}").mock(
            return_value=httpx.Response(status, headers={"Location": f"/{i + 1}"})
        )
    respx.get(f"https://example.org/{len(statuses)}").mock(
        return_value=httpx.Response(200, content=b"<rss/>")
    )
    response = run(lambda f: f.fetch("https://example.org/0"))
    assert response.url == f"https://example.org/{len(statuses)}"
    assert response.moved_permanently is permanent


@respx.mock
def test_redirect_to_another_scheme_is_refused() -> None:
    respx.get("https://a.example.org/feed").mock(
        return_value=httpx.Response(302, headers={"Location": "file:///etc/passwd"})
    )
    with pytest.raises(FetchError) as info:
        run(lambda f: f.fetch("https://a.example.org/feed"))
    assert info.value.failure_class == FailureClass.BLOCKED_BY_POLICY


@respx.mock
def test_503_is_retried_then_succeeds() -> None:
    route = respx.get("https://flaky.example.org/feed").mock(
        side_effect=[httpx.Response(503), httpx.Response(502), httpx.Response(200, content=b"ok")]
    )
    response = run(lambda f: f.fetch("https://flaky.example.org/feed"))
    assert response.body == b"ok" and route.call_count == 3


@respx.mock
def test_retries_are_bounded() -> None:
    route = respx.get("https://down.example.org/feed").mock(return_value=httpx.Response(500))
    with pytest.raises(FetchStatusError) as info:
        run(lambda f: f.fetch("https://down.example.org/feed"))
    assert route.call_count == POLICY.retries + 1
    assert info.value.failure_class == FailureClass.HTTP_5XX and info.value.status == 500


@respx.mock
def test_connect_errors_and_timeouts_are_transient() -> None:
    route = respx.get("https://net.example.org/feed").mock(
        side_effect=[
            httpx.ConnectError("refused"),
            httpx.ReadTimeout("slow"),
            httpx.Response(200, content=b"ok"),
        ]
    )
    assert run(lambda f: f.fetch("https://net.example.org/feed")).body == b"ok"
    assert route.call_count == 3


@respx.mock
def test_connect_error_after_retries_is_classified_connect() -> None:
    respx.get("https://net.example.org/feed").mock(side_effect=httpx.ConnectError("refused"))
    with pytest.raises(FetchError) as info:
        run(lambda f: f.fetch("https://net.example.org/feed"))
    assert info.value.failure_class == FailureClass.CONNECT


@pytest.mark.parametrize(
    ("status", "expected"),
    [(404, FailureClass.HTTP_4XX), (410, FailureClass.HTTP_4XX), (401, FailureClass.HTTP_4XX)],
)
@respx.mock
def test_client_errors_are_permanent(status: int, expected: FailureClass) -> None:
    route = respx.get("https://gone.example.org/feed").mock(return_value=httpx.Response(status))
    with pytest.raises(FetchError) as info:
        run(lambda f: f.fetch("https://gone.example.org/feed"))
    assert info.value.failure_class == expected and route.call_count == 1


@respx.mock
def test_retry_after_on_429_is_reported_in_hints() -> None:
    respx.get("https://busy.example.org/feed").mock(
        return_value=httpx.Response(429, headers={"Retry-After": "7200"})
    )
    with pytest.raises(FetchStatusError) as info:
        run(lambda f: f.fetch("https://busy.example.org/feed"))
    assert info.value.failure_class == FailureClass.RATE_LIMITED
    assert info.value.hints.retry_after == 7200
    assert "Retry-After: 7200" in str(info.value)


@respx.mock
def test_declared_length_over_the_cap_is_refused_before_reading() -> None:
    respx.get("https://big.example.org/feed").mock(
        return_value=httpx.Response(200, content=b"x" * (POLICY.max_body_bytes + 1))
    )
    with pytest.raises(FetchError) as info:
        run(lambda f: f.fetch("https://big.example.org/feed"))
    assert info.value.failure_class == FailureClass.TOO_LARGE


@respx.mock
def test_gzip_is_decoded_and_counted_after_decoding() -> None:
    small = gzip.compress(b"a" * 1000)
    bomb = gzip.compress(b"\0" * (POLICY.max_body_bytes * 4))
    respx.get("https://gz.example.org/small").mock(
        return_value=httpx.Response(200, content=small, headers={"Content-Encoding": "gzip"})
    )
    respx.get("https://gz.example.org/bomb").mock(
        return_value=httpx.Response(200, content=bomb, headers={"Content-Encoding": "gzip"})
    )
    assert run(lambda f: f.fetch("https://gz.example.org/small")).body == b"a" * 1000
    with pytest.raises(FetchError) as info:
        run(lambda f: f.fetch("https://gz.example.org/bomb"))
    assert info.value.failure_class == FailureClass.TOO_LARGE


@respx.mock
def test_charset_is_decoded_with_the_source_language() -> None:
    text = "Вільня: аэрапорт зноў зачынены"
    respx.get("https://by.example.org/page").mock(
        return_value=httpx.Response(
            200, content=text.encode("cp1251"), headers={"Content-Type": "text/html"}
        )
    )
    response = run(lambda f: f.fetch("https://by.example.org/page", language="be"))
    assert response.text == text and response.encoding == "windows-1251"


@respx.mock
def test_robots_disallow_blocks_pages_and_is_cached() -> None:
    robots = respx.get("https://site.example.org/robots.txt").mock(
        return_value=httpx.Response(200, text="User-agent: testbot\nDisallow: /news/\n")
    )
    respx.get("https://site.example.org/news/1").mock(return_value=httpx.Response(200))
    respx.get("https://site.example.org/other").mock(return_value=httpx.Response(200, text="ok"))

    async def go(f: Fetcher) -> FetchError:
        assert (await f.fetch("https://site.example.org/other", purpose="page")).text == "ok"
        with pytest.raises(FetchError) as info:
            await f.fetch("https://site.example.org/news/1", purpose="page")
        # A listed feed under the same path is not subject to robots.txt.
        await f.fetch("https://site.example.org/news/1", purpose="feed")
        return info.value

    error = run(go)
    assert error.failure_class == FailureClass.BLOCKED_BY_POLICY
    assert robots.call_count == 1


@respx.mock
def test_missing_robots_allows_and_failing_robots_disallows() -> None:
    respx.get("https://a.example.org/robots.txt").mock(return_value=httpx.Response(404))
    respx.get("https://a.example.org/x").mock(return_value=httpx.Response(200))
    respx.get("https://b.example.org/robots.txt").mock(return_value=httpx.Response(503))
    respx.get("https://b.example.org/x").mock(return_value=httpx.Response(200))

    async def go(f: Fetcher) -> FetchError:
        await f.fetch("https://a.example.org/x", purpose="page")
        with pytest.raises(FetchError) as info:
            await f.fetch("https://b.example.org/x", purpose="page")
        return info.value

    assert run(go).failure_class == FailureClass.BLOCKED_BY_POLICY


def test_robots_can_be_switched_off() -> None:
    with respx.mock:
        respx.get("https://c.example.org/x").mock(return_value=httpx.Response(200))
        policy = FetchPolicy(respect_robots=False, min_host_interval_seconds=0.0)
        assert (
            run(lambda f: f.fetch("https://c.example.org/x", purpose="page"), policy).status == 200
        )


def test_invalid_urls_and_purposes() -> None:
    with pytest.raises(FetchError) as info:
        run(lambda f: f.fetch("http://exa mple.org:99999/"))
    assert info.value.failure_class == FailureClass.BLOCKED_BY_POLICY
    with pytest.raises(ValueError):
        run(lambda f: f.fetch("https://example.org/", purpose="bogus"))


def test_classify_covers_timeouts_and_protocol_errors() -> None:
    assert classify(TimeoutError()) == (FailureClass.TIMEOUT, True)
    assert classify(httpx.PoolTimeout("x")) == (FailureClass.TIMEOUT, True)
    assert classify(httpx.RemoteProtocolError("x")) == (FailureClass.PROTOCOL, False)
    assert classify(RuntimeError("x")) == (FailureClass.INTERNAL, False)
