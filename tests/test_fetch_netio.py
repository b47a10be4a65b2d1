"""The Fetcher's network layer (``fetch.netio``, asyncio streams under httpcore): keep-alive (a
304 leaves its connection open for the next request), TLS, a connection the server closed while
idle, timeouts and refused connections."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable

import httpcore
import pytest
import trustme

from aggregator.fetch import Fetcher
from aggregator.fetch.netio import AsyncioBackend
from aggregator.model import FailureClass, FetchPolicy

FEED = b"<rss version='2.0'><channel><title>t</title></channel></rss>"
POLICY = FetchPolicy(
    min_host_interval_seconds=0.0,
    retries=0,
    timeout_seconds=5.0,
    allow_networks=("127.0.0.1/32",),
    respect_robots=False,  # these tests count connections: no robots.txt request first
)


class _Server:
    """HTTP/1.1 on 127.0.0.1 (TLS when given a context): 200 with an ETag, 304 when it is
    sent back; ``close_after`` answers per connection, then the server closes it."""

    def __init__(self, close_after: int | None = None) -> None:
        self.connections = 0
        self.statuses: list[int] = []
        self.close_after = close_after

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        answered = 0
        try:
            while head := await reader.readuntil(b"\r\n\r\n"):
                status = 304 if b'if-none-match: "v1"' in head.lower() else 200
                self.statuses.append(status)
                if status == 304:
                    writer.write(b'HTTP/1.1 304 Not Modified\r\nETag: "v1"\r\n\r\n')
                else:
                    writer.write(
                        b"HTTP/1.1 200 OK\r\nContent-Type: application/rss+xml\r\n"
                        + b'ETag: "v1"\r\nContent-Length: %d\r\n\r\n' % len(FEED)
                        + FEED
                    )
                await writer.drain()
                answered += 1
                if self.close_after is not None and answered >= self.close_after:
                    break
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()


def _run(
    body: Callable[[Fetcher, str], Awaitable[None]],
    *,
    server: _Server,
    tls: ssl.SSLContext | None = None,
    verify: bool = True,
) -> None:
    async def go() -> None:
        listener = await asyncio.start_server(server.handle, "127.0.0.1", 0, ssl=tls)
        port = listener.sockets[0].getsockname()[1]
        scheme = "https" if tls else "http"
        async with listener, Fetcher(POLICY, verify=verify) as fetcher:
            await body(fetcher, f"{scheme}://127.0.0.1:{port}/feed.xml")

    asyncio.run(go())


@pytest.fixture(scope="module")
def server_tls() -> ssl.SSLContext:
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    return context


def test_304_answers_keep_their_connection() -> None:
    server = _Server()

    async def body(fetcher: Fetcher, url: str) -> None:
        first = await fetcher.fetch(url)
        assert first.status == 200 and first.etag == '"v1"'
        for _ in range(3):
            assert (await fetcher.fetch(url, etag=first.etag)).status == 304

    _run(body, server=server)
    assert server.statuses == [200, 304, 304, 304]
    assert server.connections == 1  # a 304 closed unread would cost a new connection each time


def test_https_fetch_and_304_share_one_tls_connection(server_tls: ssl.SSLContext) -> None:
    server = _Server()

    async def body(fetcher: Fetcher, url: str) -> None:
        first = await fetcher.fetch(url)
        assert first.status == 200 and first.body == FEED and first.etag == '"v1"'
        for _ in range(3):
            assert (await fetcher.fetch(url, etag=first.etag)).status == 304

    # verify=False: the test CA is not in the bundle; the handshake and the stream are real.
    _run(body, server=server, tls=server_tls, verify=False)
    assert server.statuses == [200, 304, 304, 304]
    assert server.connections == 1


def test_an_untrusted_certificate_is_a_tls_failure(server_tls: ssl.SSLContext) -> None:
    async def body(fetcher: Fetcher, url: str) -> None:
        with pytest.raises(Exception) as caught:
            await fetcher.fetch(url)
        assert getattr(caught.value, "failure_class", None) == FailureClass.TLS

    _run(body, server=_Server(), tls=server_tls, verify=True)


def test_a_connection_the_server_closed_while_idle_is_not_reused() -> None:
    server = _Server(close_after=1)

    async def body(fetcher: Fetcher, url: str) -> None:
        for _ in range(3):
            assert (await fetcher.fetch(url)).status == 200
            await asyncio.sleep(0.05)  # the server's close reaches us while the connection idles

    _run(body, server=server)
    assert server.statuses == [200, 200, 200]
    assert server.connections == 3


def test_refused_and_timed_out_connections_raise_httpcore_errors() -> None:
    async def go() -> None:
        backend = AsyncioBackend()
        # A port nobody listens on: bind one, note it, close it.
        probe = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = probe.sockets[0].getsockname()[1]
        probe.close()
        await probe.wait_closed()
        with pytest.raises(httpcore.ConnectError):
            await backend.connect_tcp("127.0.0.1", port, timeout=2.0)

        accepted: list[asyncio.StreamWriter] = []
        silent = await asyncio.start_server(lambda r, w: accepted.append(w), "127.0.0.1", 0)
        port = silent.sockets[0].getsockname()[1]
        async with silent:
            stream = await backend.connect_tcp("127.0.0.1", port, timeout=2.0)
            with pytest.raises(httpcore.ReadTimeout):
                await stream.read(100, timeout=0.05)
            assert stream.get_extra_info("server_addr")[1] == port
            assert stream.get_extra_info("is_readable") is False
            await stream.aclose()
            assert stream.get_extra_info("is_readable") is True  # closing: not reusable
            for writer in accepted:
                writer.close()

    asyncio.run(go())
