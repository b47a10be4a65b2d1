"""Connection reuse: a conditional GET answered 304 leaves its connection open for the next."""

from __future__ import annotations

import asyncio

from aggregator.fetch import Fetcher
from aggregator.model import FetchPolicy

FEED = b"<rss version='2.0'><channel><title>t</title></channel></rss>"


class _KeepAliveServer:
    """HTTP/1.1 with keep-alive on 127.0.0.1: 200 with an ETag, 304 when it is sent back."""

    def __init__(self) -> None:
        self.connections = 0
        self.statuses: list[int] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while head := await reader.readuntil(b"\r\n\r\n"):
                conditional = b'if-none-match: "v1"' in head.lower()
                status = 304 if conditional else 200
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
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


def test_304_answers_keep_their_connection() -> None:
    async def go() -> _KeepAliveServer:
        state = _KeepAliveServer()
        server = await asyncio.start_server(state.handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        policy = FetchPolicy(
            min_host_interval_seconds=0.0, retries=0, allow_networks=("127.0.0.1/32",)
        )
        async with server, Fetcher(policy) as fetcher:
            url = f"http://127.0.0.1:{port}/feed.xml"
            first = await fetcher.fetch(url)
            assert first.status == 200 and first.etag == '"v1"'
            for _ in range(3):
                again = await fetcher.fetch(url, etag=first.etag)
                assert again.status == 304
        return state

    state = asyncio.run(go())
    assert state.statuses == [200, 304, 304, 304]
    assert state.connections == 1  # a 304 closed unread would cost a new connection each time
