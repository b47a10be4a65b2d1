"""Every hostile case against a real server on 127.0.0.1: each fetch ends with the right failure
class within its deadline, and a well-behaved fetch running alongside is unaffected."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

from aggregator.errors import FetchError
from aggregator.fetch import Fetcher, FetchResponse, FetchStatusError
from aggregator.model import FailureClass, FetchPolicy
from tests.hostile_server import HostileServer

TIMEOUT = 1.0
SLACK = 1.5  # scheduling slack on a loaded 2-core machine


def policy(**overrides: object) -> FetchPolicy:
    values: dict[str, object] = {
        "timeout_seconds": TIMEOUT,
        "connect_timeout_seconds": 0.5,
        "max_body_bytes": 256 * 1024,
        "max_redirects": 5,
        "retries": 0,
        "per_host_concurrency": 8,
        "min_host_interval_seconds": 0.0,
        "allow_networks": ("127.0.0.1/32",),
    }
    values.update(overrides)
    return FetchPolicy(**values)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def server() -> Iterator[HostileServer]:
    with HostileServer() as s:
        yield s


def fetch_with_neighbour(
    server: HostileServer, path: str, pol: FetchPolicy | None = None, scheme: str = "http"
) -> tuple[FetchError | FetchResponse, float, FetchResponse, float]:
    """Fetch ``path`` and, concurrently, a good feed; (outcome, seconds, good, good seconds)."""

    async def timed(coro: object) -> tuple[object, float]:
        start = time.monotonic()
        try:
            result = await coro  # type: ignore[misc]
        except FetchError as exc:
            result = exc
        return result, time.monotonic() - start

    async def go() -> tuple[FetchError | FetchResponse, float, FetchResponse, float]:
        async with Fetcher(pol or policy(), retry_wait_initial=0.01, retry_wait_max=0.05) as f:
            (bad, bad_s), (good, good_s) = await asyncio.gather(
                timed(f.fetch(server.url(path, scheme))),
                timed(f.fetch(server.url("/feed.xml"))),
            )
        assert isinstance(good, FetchResponse), good
        return bad, bad_s, good, good_s  # type: ignore[return-value]

    return asyncio.run(go())


CASES = [
    ("/slow", FailureClass.TIMEOUT),
    ("/slow-headers", FailureClass.TIMEOUT),
    ("/endless", FailureClass.TOO_LARGE),
    ("/bomb", FailureClass.TOO_LARGE),
    ("/big-declared", FailureClass.TOO_LARGE),
    ("/loop/a", FailureClass.TOO_MANY_REDIRECTS),
    ("/to-private", FailureClass.BLOCKED_BY_POLICY),
    ("/to-metadata", FailureClass.BLOCKED_BY_POLICY),
    ("/wrong-length", FailureClass.PROTOCOL),
    ("/garbage", FailureClass.PROTOCOL),
    ("/bad-gzip", FailureClass.PROTOCOL),
    ("/rate-limited", FailureClass.RATE_LIMITED),
    ("/error500", FailureClass.HTTP_5XX),
    ("/unavailable", FailureClass.HTTP_5XX),
    ("/forbidden", FailureClass.HTTP_4XX),
    ("/nowhere", FailureClass.HTTP_4XX),
]


@pytest.mark.parametrize(("path", "expected"), CASES)
def test_hostile_case_fails_with_its_class_within_the_deadline(
    server: HostileServer, path: str, expected: FailureClass
) -> None:
    bad, seconds, good, good_seconds = fetch_with_neighbour(server, path)
    assert isinstance(bad, FetchError), f"{path} did not fail: {bad}"
    assert bad.failure_class == expected, str(bad)
    assert seconds < TIMEOUT + SLACK
    assert good.status == 200 and b"Hostile test feed" in good.body
    assert good_seconds < TIMEOUT + SLACK


def test_tls_to_a_plain_http_port_is_a_tls_failure(server: HostileServer) -> None:
    bad, seconds, _, _ = fetch_with_neighbour(server, "/feed.xml", scheme="https")
    assert isinstance(bad, FetchError)
    assert bad.failure_class == FailureClass.TLS
    assert seconds < TIMEOUT + SLACK


def test_gzip_bomb_stops_at_the_cap_not_in_memory(server: HostileServer) -> None:
    import resource

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    bad, _, _, _ = fetch_with_neighbour(server, "/bomb", policy(max_body_bytes=1024 * 1024))
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert isinstance(bad, FetchError) and bad.failure_class == FailureClass.TOO_LARGE
    # The bomb inflates to 1 GiB; the peak may grow by the cap and buffers, never by hundreds
    # of MiB (ru_maxrss is in KiB on Linux).
    assert (after - before) < 100 * 1024


def test_slow_drip_is_cut_by_the_total_deadline_not_per_read_timeouts(
    server: HostileServer,
) -> None:
    # Each byte arrives well within the read timeout; only the total deadline can stop it.
    bad, seconds, _, _ = fetch_with_neighbour(server, "/slow", policy(timeout_seconds=0.8))
    assert isinstance(bad, FetchError) and bad.failure_class == FailureClass.TIMEOUT
    assert 0.7 < seconds < 0.8 + SLACK


def test_500_storm_is_retried_a_bounded_number_of_times(server: HostileServer) -> None:
    before = server.hits["/error500"]
    bad, _, _, _ = fetch_with_neighbour(server, "/error500", policy(retries=2))
    assert isinstance(bad, FetchError) and bad.failure_class == FailureClass.HTTP_5XX
    assert server.hits["/error500"] - before == 3


def test_transient_500_then_success(server: HostileServer) -> None:
    server.hits["/flaky"] = 0
    # Not a test of deadlines: a generous one, so a loaded machine cannot turn an attempt into
    # a timeout (and the count of attempts into something else).
    generous = policy(retries=2, timeout_seconds=10 * TIMEOUT, connect_timeout_seconds=5.0)
    ok, _, _, _ = fetch_with_neighbour(server, "/flaky", generous)
    assert isinstance(ok, FetchResponse) and ok.status == 200
    assert server.hits["/flaky"] == 3


def test_long_retry_after_is_not_slept_but_reported(server: HostileServer) -> None:
    before = server.hits["/rate-limited"]
    bad, seconds, _, _ = fetch_with_neighbour(server, "/rate-limited", policy(retries=3))
    assert isinstance(bad, FetchError) and bad.failure_class == FailureClass.RATE_LIMITED
    assert server.hits["/rate-limited"] - before == 1
    assert isinstance(bad, FetchStatusError) and bad.hints.retry_after == 3600
    assert seconds < TIMEOUT


def test_short_retry_after_is_retried(server: HostileServer) -> None:
    server.hits["/rate-limited-short"] = 0
    generous = policy(retries=1, timeout_seconds=10 * TIMEOUT, connect_timeout_seconds=5.0)
    ok, _, _, _ = fetch_with_neighbour(server, "/rate-limited-short", generous)
    assert isinstance(ok, FetchResponse) and ok.status == 200


def test_client_errors_are_not_retried(server: HostileServer) -> None:
    before = server.hits["/forbidden"]
    bad, _, _, _ = fetch_with_neighbour(server, "/forbidden", policy(retries=3))
    assert isinstance(bad, FetchError) and bad.failure_class == FailureClass.HTTP_4XX
    assert server.hits["/forbidden"] - before == 1


def test_redirect_hop_limit(server: HostileServer) -> None:
    before = server.hits["/loop/a"] + server.hits["/loop/b"]
    bad, _, _, _ = fetch_with_neighbour(server, "/loop/a", policy(max_redirects=3))
    assert isinstance(bad, FetchError) and bad.failure_class == FailureClass.TOO_MANY_REDIRECTS
    assert server.hits["/loop/a"] + server.hits["/loop/b"] - before == 4


def test_empty_body_and_challenge_page_are_fetched_for_the_parser_to_judge(
    server: HostileServer,
) -> None:
    # The fetch layer delivers them; feeds.parse_feed classes them not-a-feed (test_feeds.py,
    # and end to end in test_fetch_pipeline.py).
    for path in ("/empty", "/challenge"):
        ok, _, _, _ = fetch_with_neighbour(server, path)
        assert isinstance(ok, FetchResponse) and ok.status == 200


def test_conditional_get_and_gzip(server: HostileServer) -> None:
    async def go() -> tuple[FetchResponse, FetchResponse, FetchResponse, FetchResponse]:
        async with Fetcher(policy()) as f:
            first = await f.fetch(server.url("/feed.xml"))
            second = await f.fetch(server.url("/feed.xml"), etag=first.etag)
            gz = await f.fetch(server.url("/feed.gz"))
            moved = await f.fetch(server.url("/redirect-feed"))
            return first, second, gz, moved

    first, second, gz, moved = asyncio.run(go())
    assert first.status == 200 and first.etag == '"v1"'
    assert first.hints.max_age == 600
    assert second.status == 304 and second.body == b"" and second.not_modified
    assert gz.body == first.body
    assert moved.url.endswith("/feed.xml") and len(moved.redirects) == 1
    sent = [r for r in server.requests if r.path == "/feed.xml"]
    assert any(r.headers.get("if-none-match") == '"v1"' for r in sent)
    assert all("aggregator" in r.headers.get("user-agent", "") for r in sent)


def test_robots_txt_applies_to_pages_not_to_feeds(server: HostileServer) -> None:
    before = server.hits.get("/robots.txt", 0)  # other tests' fetchers read it too

    async def go() -> tuple[FetchError | None, int, int]:
        async with Fetcher(policy()) as f:
            ok = await f.fetch(server.url("/page.html"), purpose="page")
            error = None
            try:
                await f.fetch(server.url("/private/page.html"), purpose="page")
            except FetchError as exc:
                error = exc
            feed = await f.fetch(server.url("/private/page.html"), purpose="feed")
            return error, ok.status, feed.status

    error, ok_status, feed_status = asyncio.run(go())
    assert ok_status == 200 and feed_status == 200
    assert error is not None and error.failure_class == FailureClass.BLOCKED_BY_POLICY
    assert server.hits["/robots.txt"] == before + 1  # cached per origin


def test_per_host_min_interval_spaces_requests(server: HostileServer) -> None:
    async def go() -> float:
        async with Fetcher(policy(min_host_interval_seconds=0.2)) as f:
            start = time.monotonic()
            await asyncio.gather(*(f.fetch(server.url("/feed.xml")) for _ in range(4)))
            return time.monotonic() - start

    assert asyncio.run(go()) >= 0.6  # 4 starts, 0.2 s apart


def test_waiting_for_a_polite_turn_does_not_count_against_the_deadline(
    server: HostileServer,
) -> None:
    # One request at a time to this host, 0.3 s apart: the fourth waits ~0.9 s for its turn,
    # longer than the 0.5 s deadline of the exchange itself, and must still succeed.
    pol = policy(per_host_concurrency=1, min_host_interval_seconds=0.3, timeout_seconds=0.5)

    async def go() -> list[int]:
        async with Fetcher(pol) as f:
            responses = await asyncio.gather(*(f.fetch(server.url("/feed.xml")) for _ in range(4)))
            return [r.status for r in responses]

    assert asyncio.run(go()) == [200, 200, 200, 200]
