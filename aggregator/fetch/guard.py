"""SSRF guard: every address we actually connect to is checked, at connect time, on every hop.

Checking the URL's host string is not enough: a public-looking name can resolve to 127.0.0.1,
numeric forms (``http://2130706433/``, ``http://0x7f.1/``) hide loopback, and every redirect hop
is a new chance. So the guard sits in the httpcore *network backend*: it resolves the host
itself, refuses the whole host if any resolved address is forbidden, and connects to the checked
IP (not the name), so a second DNS answer (rebinding) cannot slip in between check and connect.
TLS still verifies against the host name because httpcore passes the origin host as SNI.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import re
import socket
import ssl
from collections.abc import Iterable, Sequence
from typing import Any

import httpcore
import httpx

from aggregator.fetch.netio import AsyncioBackend

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Named explicitly on top of ``is_global``: the cloud metadata endpoint is the classic SSRF
# target and must stay refused even if a future Python changes what "global" means.
_ALWAYS_REFUSED = (
    ipaddress.ip_network("169.254.169.254/32"),
    ipaddress.ip_network("fd00:ec2::254/128"),
    ipaddress.ip_network("100.64.0.0/10"),  # CGNAT
    ipaddress.ip_network("0.0.0.0/8"),
    ipaddress.ip_network("64:ff9b:1::/48"),  # local-use NAT64
)


_HOST_CHARS = re.compile(r"^[A-Za-z0-9._\-:\[\]%]+$")


class BlockedAddressError(Exception):
    """The guard refused to connect (a forbidden address, or a URL we never fetch)."""


class DNSResolutionError(Exception):
    """The host name did not resolve."""


def parse_networks(cidrs: Iterable[str]) -> tuple[IPNetwork, ...]:
    """The admin's allow-list as networks; raises ValueError on a malformed CIDR."""
    return tuple(ipaddress.ip_network(c.strip(), strict=False) for c in cidrs)


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries (mapped, 6to4, Teredo, NAT64), if any."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if ip in ipaddress.ip_network("64:ff9b::/96"):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def refusal_reason(ip: IPAddress, allowed: Sequence[IPNetwork] = ()) -> str | None:
    """Why connecting to ``ip`` is refused, or None when it is allowed."""
    if any(ip.version == net.version and ip in net for net in allowed):
        return None
    if isinstance(ip, ipaddress.IPv6Address):
        inner = _embedded_ipv4(ip)
        if inner is not None:
            reason = refusal_reason(inner, allowed)
            return f"embeds {inner}: {reason}" if reason else None
    if any(ip.version == net.version and ip in net for net in _ALWAYS_REFUSED):
        return "reserved or metadata address"
    for attr, label in (
        ("is_loopback", "loopback"),
        ("is_private", "private"),
        ("is_link_local", "link-local"),
        ("is_multicast", "multicast"),
        ("is_unspecified", "unspecified"),
        ("is_reserved", "reserved"),
    ):
        if getattr(ip, attr):
            return f"{label} address"
    if not ip.is_global:
        return "not a global address"
    return None


def refused_message(what: str, reason: str) -> str:
    """The guard's refusal, naming the setting that lifts it."""
    return (
        f"refused by the private-address guard: {what} ({reason}); to fetch from it, add its "
        "network to fetch.allow_networks in the watchlist"
    )


def numeric_host(host: str) -> IPAddress | None:
    """The address a numeric host denotes, in every form the C resolver accepts
    (``2130706433``, ``0x7f.1``, ``017700000001``, ``[::1]``); None for a name."""
    host = host.strip("[]")
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except (OSError, ValueError):
        return None


def check_url(url: httpx.URL, allowed: Sequence[IPNetwork] = ()) -> None:
    """Refuse before any I/O what can be refused from the URL alone.

    The backend checks again at connect time; this early check gives a clear message and
    refuses a numeric private address without even calling the resolver.
    """
    if url.scheme not in ("http", "https"):
        raise BlockedAddressError(f"scheme {url.scheme!r} is not fetched: {url}")
    if not url.host:
        raise BlockedAddressError(f"no host in URL: {url}")
    if not _HOST_CHARS.match(url.raw_host.decode("ascii", "replace")):  # IDNs are punycode here
        raise BlockedAddressError(f"malformed host {url.host!r} in URL: {url}")
    if url.port is not None and not 0 < url.port < 65536:
        raise BlockedAddressError(f"port {url.port} out of range in URL: {url}")
    ip = numeric_host(url.host)
    if ip is not None:
        reason = refusal_reason(ip, allowed)
        if reason:
            raise BlockedAddressError(refused_message(url.host, reason))


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """An httpcore network backend that resolves, checks, then connects to the checked IP."""

    def __init__(
        self,
        allowed: Sequence[IPNetwork] = (),
        inner: httpcore.AsyncNetworkBackend | None = None,
    ) -> None:
        self.allowed = tuple(allowed)
        self.inner = inner if inner is not None else AsyncioBackend()
        self.connect_attempts = 0  # addresses actually dialled; tests watch this

    async def resolve(self, host: str, port: int, timeout: float | None) -> list[IPAddress]:
        ip = numeric_host(host)
        if ip is not None:
            return [ip]
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise DNSResolutionError(f"cannot resolve {host}: {exc.strerror or exc}") from exc
        except TimeoutError as exc:
            raise DNSResolutionError(f"timed out resolving {host}") from exc
        addresses: list[IPAddress] = []
        for info in infos:
            addr = ipaddress.ip_address(str(info[4][0]).split("%")[0])
            if addr not in addresses:
                addresses.append(addr)
        if not addresses:
            raise DNSResolutionError(f"no address for {host}")
        return addresses

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        addresses = await self.resolve(host, port, timeout)
        for addr in addresses:
            # One forbidden answer refuses the host: a name that resolves to both public and
            # private addresses is how rebinding attacks start.
            reason = refusal_reason(addr, self.allowed)
            if reason:
                raise BlockedAddressError(refused_message(f"{host} -> {addr}", reason))
        last_error: Exception | None = None
        for addr in addresses:
            self.connect_attempts += 1
            try:
                return await self.inner.connect_tcp(
                    str(addr),
                    port,
                    timeout=timeout,
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last_error = exc
        assert last_error is not None
        raise last_error

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise BlockedAddressError("unix sockets are never fetched")

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


@functools.cache
def _ssl_context(verify: bool) -> ssl.SSLContext:
    """The TLS settings of every Fetcher, made once per process: loading the CA bundle takes
    ~24 ms of CPU here, and each Fetcher loaded it twice (httpx's transport made its own), so
    each ``fetch-once`` cycle and each policy reload paid it. Nothing changes a context after
    it is made, so Fetchers can share it."""
    return httpx.create_ssl_context(verify=verify, trust_env=False)


def guarded_transport(
    backend: GuardedBackend,
    *,
    limits: httpx.Limits,
    verify: bool = True,
) -> httpx.AsyncHTTPTransport:
    """An httpx transport whose every connection goes through ``backend``.

    httpx offers no public hook for the network backend, so the transport's pool is replaced
    with an identical one built on the guarded backend. tests/test_fetch_guard.py fails if an
    httpx upgrade changes this internal, rather than letting the guard silently fall away.
    """
    ssl_context = _ssl_context(verify)
    transport = httpx.AsyncHTTPTransport(limits=limits, trust_env=False, verify=ssl_context)
    if not isinstance(getattr(transport, "_pool", None), httpcore.AsyncConnectionPool):
        raise RuntimeError("httpx internals changed: cannot install the SSRF guard")
    transport._pool = httpcore.AsyncConnectionPool(
        ssl_context=ssl_context,
        max_connections=limits.max_connections,
        max_keepalive_connections=limits.max_keepalive_connections,
        keepalive_expiry=limits.keepalive_expiry,
        http1=True,
        http2=False,
        network_backend=backend,
    )
    return transport
