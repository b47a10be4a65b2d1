"""The SSRF guard: address rules, numeric forms, and that it really sits in httpx's connect path.

If an httpx/httpcore upgrade stops routing connections through our network backend, the
"connects through the guard" tests fail instead of the guard silently falling away.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Iterator

import httpx
import pytest

from aggregator.errors import FetchError
from aggregator.fetch import Fetcher
from aggregator.fetch.guard import (
    BlockedAddressError,
    GuardedBackend,
    check_url,
    numeric_host,
    parse_networks,
    refusal_reason,
)
from aggregator.model import FailureClass, FetchPolicy
from tests.hostile_server import HostileServer

REFUSED = [
    "127.0.0.1",
    "127.1.2.3",
    "10.0.0.1",
    "172.16.5.4",
    "192.168.1.1",
    "169.254.169.254",  # cloud metadata
    "169.254.1.1",
    "100.64.0.1",  # CGNAT
    "100.127.255.254",
    "0.0.0.0",
    "224.0.0.1",  # multicast
    "239.255.255.250",
    "255.255.255.255",
    "::1",
    "::",
    "fe80::1",  # link-local
    "fc00::1",  # ULA
    "fd12:3456::1",
    "ff02::1",  # multicast
    "::ffff:127.0.0.1",  # IPv4-mapped
    "::ffff:10.0.0.1",
    "::ffff:169.254.169.254",
    "64:ff9b::a00:1",  # NAT64 of 10.0.0.1
    "2002:a00:1::1",  # 6to4 of 10.0.0.1
    "fd00:ec2::254",  # AWS IPv6 metadata
]
ALLOWED = ["93.184.216.34", "1.1.1.1", "8.8.8.8", "2606:4700:4700::1111", "151.101.1.69"]


@pytest.mark.parametrize("address", REFUSED)
def test_private_and_special_addresses_are_refused(address: str) -> None:
    assert refusal_reason(ipaddress.ip_address(address)) is not None


@pytest.mark.parametrize("address", ALLOWED)
def test_public_addresses_are_allowed(address: str) -> None:
    assert refusal_reason(ipaddress.ip_address(address)) is None


def test_allow_networks_exempts_exactly_the_listed_cidr() -> None:
    allowed = parse_networks(["127.0.0.1/32"])
    assert refusal_reason(ipaddress.ip_address("127.0.0.1"), allowed) is None
    assert refusal_reason(ipaddress.ip_address("127.0.0.2"), allowed) is not None
    assert refusal_reason(ipaddress.ip_address("::ffff:127.0.0.1"), allowed) is None
    assert refusal_reason(ipaddress.ip_address("10.0.0.1"), allowed) is not None


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("2130706433", "127.0.0.1"),
        ("0x7f.1", "127.0.0.1"),
        ("0x7f000001", "127.0.0.1"),
        ("017700000001", "127.0.0.1"),
        ("127.1", "127.0.0.1"),
        ("0251.0376.0251.0376", "169.254.169.254"),
        ("[::1]", "::1"),
        ("example.org", None),
    ],
)
def test_numeric_host_forms(host: str, expected: str | None) -> None:
    ip = numeric_host(host)
    assert (str(ip) if ip else None) == expected


@pytest.mark.parametrize(
    "url",
    [
        "http://2130706433/",
        "http://0x7f.1/",
        "http://[::1]/",
        "http://[::ffff:127.0.0.1]/",
        "http://169.254.169.254/latest/meta-data/",
        "http://0xa9fea9fe/",  # 169.254.169.254
        "ftp://example.org/",
        "file:///etc/passwd",
    ],
)
def test_check_url_refuses_numeric_private_hosts_and_other_schemes(url: str) -> None:
    with pytest.raises(BlockedAddressError):
        check_url(httpx.URL(url))


def test_backend_refuses_a_name_that_resolves_to_loopback() -> None:
    backend = GuardedBackend()

    async def go() -> None:
        with pytest.raises(BlockedAddressError):
            await backend.connect_tcp("localhost", 80, timeout=2)

    asyncio.run(go())
    assert backend.connect_attempts == 0


def _policy(**overrides: object) -> FetchPolicy:
    values: dict[str, object] = {
        "timeout_seconds": 2.0,
        "connect_timeout_seconds": 1.0,
        "retries": 0,
        "min_host_interval_seconds": 0.0,
        "allow_networks": ("127.0.0.1/32",),
        # These tests count connections: no robots.txt request for its Crawl-delay first.
        "respect_robots": False,
    }
    values.update(overrides)
    return FetchPolicy(**values)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def server() -> Iterator[HostileServer]:
    with HostileServer() as s:
        yield s


def test_fetcher_connects_through_the_guard(server: HostileServer) -> None:
    """A real fetch must pass through GuardedBackend (an httpx upgrade that bypasses it fails)."""

    async def go() -> int:
        async with Fetcher(_policy()) as fetcher:
            response = await fetcher.fetch(server.url("/feed.xml"))
            assert response.status == 200
            return fetcher.backend.connect_attempts

    assert asyncio.run(go()) >= 1


def test_name_resolving_to_loopback_is_refused_at_connect_time(server: HostileServer) -> None:
    """'localhost' passes the URL check (it is a name) and must be stopped by the backend."""
    before = server.hits["/feed.xml"]

    async def go() -> FetchError:
        async with Fetcher(_policy(allow_networks=())) as fetcher:
            with pytest.raises(FetchError) as info:
                await fetcher.fetch(f"http://localhost:{server.port}/feed.xml")
            assert fetcher.backend.connect_attempts == 0
            return info.value

    error = asyncio.run(go())
    assert error.failure_class == FailureClass.BLOCKED_BY_POLICY
    assert server.hits["/feed.xml"] == before


@pytest.mark.parametrize("path", ["/to-private", "/to-metadata", "/to-numeric", "/to-ipv6"])
def test_redirect_to_a_private_address_is_refused_without_connecting(
    server: HostileServer, path: str
) -> None:
    async def go() -> tuple[FetchError, int]:
        async with Fetcher(_policy()) as fetcher:
            with pytest.raises(FetchError) as info:
                await fetcher.fetch(server.url(path))
            return info.value, fetcher.backend.connect_attempts

    error, attempts = asyncio.run(go())
    assert error.failure_class == FailureClass.BLOCKED_BY_POLICY
    assert attempts == 1  # the first hop only: the private target was never dialled
    assert "refused" in str(error)


def test_the_guard_holds_when_the_pre_check_is_bypassed(server: HostileServer) -> None:
    """Even if the URL pre-check were skipped, the backend refuses 127.0.0.2 at connect time."""

    async def go() -> None:
        async with Fetcher(_policy()) as fetcher:
            request = fetcher.client.build_request("GET", f"http://127.0.0.2:{server.port}/")
            with pytest.raises(BlockedAddressError):
                await fetcher.client.send(request)
            assert fetcher.backend.connect_attempts == 0

    asyncio.run(go())


def test_fetchers_share_one_tls_context_per_verify_setting() -> None:
    """The CA bundle is loaded once per process, not twice per Fetcher; verify=False still
    turns certificate checks off."""
    import ssl

    def context(fetcher: Fetcher) -> ssl.SSLContext:
        pool = fetcher.client._transport._pool  # type: ignore[attr-defined]
        assert isinstance(pool._network_backend, GuardedBackend)
        return pool._ssl_context  # type: ignore[no-any-return]

    policy = FetchPolicy()
    one, two, insecure = Fetcher(policy), Fetcher(policy), Fetcher(policy, verify=False)
    assert context(one) is context(two)
    assert context(one).verify_mode == ssl.CERT_REQUIRED and context(one).check_hostname
    assert context(insecure).verify_mode == ssl.CERT_NONE
