"""A real, deliberately hostile HTTP server on 127.0.0.1 for the fetch tests.

It speaks raw HTTP/1.1 over asyncio streams (in its own thread and event loop) so it can do what
a well-behaved framework would refuse to: drip bytes, lie about Content-Length, send gzip bombs,
loop redirects, redirect to private addresses. Each path is one behaviour; ``hits`` counts
requests per path so tests can check retries and "refused without connecting".

    with HostileServer() as server:
        url = server.url("/slow")
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "feeds"

RSS = b"""<?xml version="1.0" encoding="utf-8"?>
<rss version="2.0"><channel><title>Hostile test feed</title><link>http://example.org/</link>
<ttl>90</ttl>
<item><title>First item</title><link>http://example.org/a/1</link><guid>urn:test:1</guid>
<description>&lt;p&gt;First paragraph of the first item.&lt;/p&gt;</description>
<pubDate>Mon, 23 Nov 2026 08:00:00 GMT</pubDate></item>
<item><title>Second item</title><link>http://example.org/a/2</link><guid>urn:test:2</guid>
<description>Second item text.</description></item>
</channel></rss>
"""

CHALLENGE = b"""<!DOCTYPE html><html><head><title>Just a moment...</title></head>
<body><h1>Checking your browser before accessing the site.</h1>
<noscript>Enable JavaScript and cookies to continue</noscript></body></html>
"""

ENTITY_BOMB = b"""<?xml version="1.0"?>
<!DOCTYPE rss [
 <!ENTITY a "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa">
 <!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">
 <!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">
]>
<rss version="2.0"><channel><title>&c;</title>
<item><title>&c;</title><guid>x</guid></item></channel></rss>
"""

_bomb_cache: list[bytes] = []


def gzip_bomb() -> bytes:
    """About 1 MiB of gzip that inflates to 1 GiB of zeros (64 gzip members of 16 MiB each)."""
    if not _bomb_cache:
        member = gzip.compress(b"\0" * (16 * 1024 * 1024), compresslevel=9)
        _bomb_cache.append(member * 64)
    return _bomb_cache[0]


Handler = Callable[["Request", asyncio.StreamWriter], Any]


class Request:
    def __init__(self, method: str, path: str, headers: dict[str, str]) -> None:
        self.method = method
        self.path = path
        self.headers = headers


def _head(status: int, reason: str, headers: dict[str, str]) -> bytes:
    lines = [f"HTTP/1.1 {status} {reason}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


class HostileServer:
    """Start with ``with HostileServer() as s:`` (or ``start()``/``stop()``)."""

    def __init__(self) -> None:
        self.port = 0
        self.hits: Counter[str] = Counter()
        self.requests: list[Request] = []
        self.flaky_failures = 2  # /flaky answers 500 this many times, then the feed
        self.etag = '"v1"'
        self.last_modified = "Mon, 23 Nov 2026 08:00:00 GMT"
        self.feed_body = RSS
        self.routes: dict[str, Handler] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None

    # -- lifecycle ------------------------------------------------------------------------

    def __enter__(self) -> HostileServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="hostile-server", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("hostile server did not start")

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(10)

    def url(self, path: str, scheme: str = "http") -> str:
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._serve())
        finally:
            loop.close()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        self._server = await asyncio.start_server(self._connection, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        await self._stop.wait()
        self._server.close()
        for task in asyncio.all_tasks():
            if task is not asyncio.current_task():
                task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._server.wait_closed(), 2)

    # -- protocol -------------------------------------------------------------------------

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            first = await asyncio.wait_for(reader.readexactly(1), 10)
            if first == b"\x16":  # a TLS ClientHello on this plain-HTTP port
                self.hits["<tls>"] += 1
                writer.write(b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n")
                await writer.drain()
                return
            raw = first + await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            lines = raw.decode("latin-1").split("\r\n")
            method, target, _ = lines[0].split(" ", 2)
            headers = {}
            for line in lines[1:]:
                if ":" in line:
                    k, v = line.split(":", 1)
                    headers[k.strip().lower()] = v.strip()
            request = Request(method, target, headers)
            path = target.split("?", 1)[0]
            self.hits[path] += 1
            self.requests.append(request)
            handler = self.routes.get(path) or getattr(
                self,
                "h_" + path.strip("/").replace("/", "_").replace("-", "_").replace(".", "_"),
                None,
            )
            if handler is None:
                await self._send(writer, 404, b"not found", "text/plain")
            else:
                await handler(request, writer)
        except (asyncio.CancelledError, ConnectionError, asyncio.IncompleteReadError):
            pass
        except Exception:  # a broken handler must not kill the server
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    async def _send(
        self,
        writer: asyncio.StreamWriter,
        status: int,
        body: bytes,
        content_type: str,
        extra: dict[str, str] | None = None,
        reason: str = "OK",
    ) -> None:
        headers = {
            "Content-Type": content_type,
            "Content-Length": str(len(body)),
            "Connection": "close",
            **(extra or {}),
        }
        writer.write(_head(status, reason, headers) + body)
        await writer.drain()

    # -- well-behaved ---------------------------------------------------------------------

    async def h_feed_xml(self, req: Request, w: asyncio.StreamWriter) -> None:
        cache = {"ETag": self.etag, "Last-Modified": self.last_modified}
        if req.headers.get("if-none-match") == self.etag:
            await self._send(w, 304, b"", "application/rss+xml", cache, "Not Modified")
            return
        cache["Cache-Control"] = "max-age=600"
        await self._send(w, 200, self.feed_body, "application/rss+xml; charset=utf-8", cache)

    async def h_feed_gz(self, req: Request, w: asyncio.StreamWriter) -> None:
        body = gzip.compress(self.feed_body)
        await self._send(w, 200, body, "application/rss+xml", {"Content-Encoding": "gzip"})

    async def h_redirect_feed(self, req: Request, w: asyncio.StreamWriter) -> None:
        await self._send(w, 301, b"", "text/plain", {"Location": "/feed.xml"}, "Moved")

    async def h_page_html(self, req: Request, w: asyncio.StreamWriter) -> None:
        await self._send(w, 200, b"<html><body><p>page</p></body></html>", "text/html")

    async def h_private_page_html(self, req: Request, w: asyncio.StreamWriter) -> None:
        await self._send(w, 200, b"<html><body><p>secret</p></body></html>", "text/html")

    async def h_robots_txt(self, req: Request, w: asyncio.StreamWriter) -> None:
        body = b"User-agent: *\nDisallow: /private/\n"
        await self._send(w, 200, body, "text/plain")

    async def h_fixture(self, req: Request, w: asyncio.StreamWriter) -> None:
        """``/fixture?name=X&type=Y``: a recorded feed with a chosen Content-Type."""
        from urllib.parse import parse_qs, urlsplit

        query = parse_qs(urlsplit(req.path).query)
        body = (FIXTURES / query["name"][0]).read_bytes()
        await self._send(w, 200, body, query.get("type", ["application/xml"])[0])

    # -- hostile --------------------------------------------------------------------------

    async def h_slow(self, req: Request, w: asyncio.StreamWriter) -> None:
        """Headers at once, then one byte every 0.1 s of a long body (a slow drip)."""
        w.write(
            _head(200, "OK", {"Content-Type": "application/rss+xml", "Content-Length": "100000"})
        )
        await w.drain()
        for _ in range(100000):
            w.write(b" ")
            await w.drain()
            await asyncio.sleep(0.1)

    async def h_slow_headers(self, req: Request, w: asyncio.StreamWriter) -> None:
        """The status line one byte at a time: a drip before any header arrives."""
        for byte in b"HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\n" * 1000:
            w.write(bytes([byte]))
            await w.drain()
            await asyncio.sleep(0.05)

    async def h_endless(self, req: Request, w: asyncio.StreamWriter) -> None:
        """A chunked body that never ends."""
        head = {"Content-Type": "application/rss+xml", "Transfer-Encoding": "chunked"}
        w.write(_head(200, "OK", head))
        chunk = b"<item>" + b"x" * 65536 + b"</item>"
        while True:
            w.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            await w.drain()

    async def h_bomb(self, req: Request, w: asyncio.StreamWriter) -> None:
        await self._send(w, 200, gzip_bomb(), "application/rss+xml", {"Content-Encoding": "gzip"})

    async def h_big_declared(self, req: Request, w: asyncio.StreamWriter) -> None:
        head = {"Content-Type": "application/rss+xml", "Content-Length": str(10**12)}
        w.write(_head(200, "OK", head) + b"<rss>")
        await w.drain()
        await asyncio.sleep(30)

    async def h_loop_a(self, req: Request, w: asyncio.StreamWriter) -> None:
        await self._send(w, 302, b"", "text/plain", {"Location": "/loop/b"}, "Found")

    async def h_loop_b(self, req: Request, w: asyncio.StreamWriter) -> None:
        await self._send(w, 302, b"", "text/plain", {"Location": "/loop/a"}, "Found")

    async def h_to_private(self, req: Request, w: asyncio.StreamWriter) -> None:
        await self._send(w, 302, b"", "text/plain", {"Location": "http://10.0.0.1/feed"}, "Found")

    async def h_to_metadata(self, req: Request, w: asyncio.StreamWriter) -> None:
        loc = {"Location": "http://169.254.169.254/latest/meta-data/"}
        await self._send(w, 302, b"", "text/plain", loc, "Found")

    async def h_to_numeric(self, req: Request, w: asyncio.StreamWriter) -> None:
        # 0x7f.2 is 127.0.0.2: loopback, but outside the tests' allowed 127.0.0.1/32.
        loc = {"Location": f"http://0x7f.2:{self.port}/feed.xml"}
        await self._send(w, 302, b"", "text/plain", loc, "Found")

    async def h_to_ipv6(self, req: Request, w: asyncio.StreamWriter) -> None:
        loc = {"Location": f"http://[::ffff:10.0.0.1]:{self.port}/feed.xml"}
        await self._send(w, 302, b"", "text/plain", loc, "Found")

    async def h_wrong_length(self, req: Request, w: asyncio.StreamWriter) -> None:
        head = {"Content-Type": "application/rss+xml", "Content-Length": "5000"}
        w.write(_head(200, "OK", head) + RSS[:200])
        await w.drain()

    async def h_rate_limited(self, req: Request, w: asyncio.StreamWriter) -> None:
        await self._send(w, 429, b"slow down", "text/plain", {"Retry-After": "3600"}, "Too Many")

    async def h_rate_limited_short(self, req: Request, w: asyncio.StreamWriter) -> None:
        if self.hits["/rate-limited-short"] == 1:
            await self._send(w, 429, b"slow down", "text/plain", {"Retry-After": "0"}, "Too Many")
        else:
            await self.h_feed_xml(req, w)

    async def h_error500(self, req: Request, w: asyncio.StreamWriter) -> None:
        await self._send(w, 500, b"boom", "text/plain", reason="Internal Server Error")

    async def h_unavailable(self, req: Request, w: asyncio.StreamWriter) -> None:
        extra = {"Retry-After": "7200"}
        await self._send(w, 503, b"down", "text/plain", extra, "Service Unavailable")

    async def h_flaky(self, req: Request, w: asyncio.StreamWriter) -> None:
        if self.hits["/flaky"] <= self.flaky_failures:
            await self._send(w, 500, b"boom", "text/plain", reason="Internal Server Error")
        else:
            await self.h_feed_xml(req, w)

    async def h_forbidden(self, req: Request, w: asyncio.StreamWriter) -> None:
        await self._send(w, 403, b"no", "text/plain", reason="Forbidden")

    async def h_challenge(self, req: Request, w: asyncio.StreamWriter) -> None:
        await self._send(w, 200, CHALLENGE, "text/html; charset=utf-8")

    async def h_empty(self, req: Request, w: asyncio.StreamWriter) -> None:
        await self._send(w, 200, b"", "application/rss+xml")

    async def h_entities(self, req: Request, w: asyncio.StreamWriter) -> None:
        await self._send(w, 200, ENTITY_BOMB, "application/rss+xml")

    async def h_garbage(self, req: Request, w: asyncio.StreamWriter) -> None:
        w.write(b"SSH-2.0-OpenSSH_9.6\r\nthis is not http\r\n\r\n")
        await w.drain()

    async def h_bad_gzip(self, req: Request, w: asyncio.StreamWriter) -> None:
        await self._send(w, 200, b"not gzip at all", "text/xml", {"Content-Encoding": "gzip"})
