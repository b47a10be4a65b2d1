"""Feed routes: ``/feeds/<all|topic>.<atom|rss|json>``, ``/`` and ``/sources.opml``.

Every file is rendered once per change and served from memory. ``FeedCache`` asks the store for
its ``feed_version()`` at most once per ``check_interval`` (a cheap query) and re-renders only
when the version or the watchlist changed, so several replicas serving one database converge
within about a second. Each file is gzip-compressed once per render; ETags are derived from the
bytes, so replicas holding the same data answer with the same ETag, and conditional requests
(If-None-Match, If-Modified-Since) get a 304 without touching the body.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime, parsedate_to_datetime
from typing import Protocol, TypeGuard
from urllib.parse import parse_qs, quote

from starlette.concurrency import run_in_threadpool
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from aggregator.model import FetchPolicy
from aggregator.publish.render import CONTENT_TYPES, INDEX_FILE, OPML_FILE, RenderedFile
from aggregator.publish.sanitize import safe_url
from aggregator.publish.site import (
    FeedStore,
    PageStore,
    PublishedWatchlist,
    SearchStore,
    build_page,
    build_search,
    build_site,
    public_base_url,
)
from aggregator.publish.static import gzip_bytes

log = logging.getLogger(__name__)


class ServedWatchlist(PublishedWatchlist, Protocol):
    """What the service's web app reads of the watchlist: publishing, and the fetch policy's
    User-Agent for the requests it makes itself (WebSub pings)."""

    @property
    def fetch(self) -> FetchPolicy: ...


WatchlistProvider = Callable[[], ServedWatchlist]
ChangeHook = Callable[[Sequence[str]], Awaitable[None]]

CACHE_CONTROL = b"public, max-age=60"
HTML_TYPE = CONTENT_TYPES[".html"]
# Below this size gzip saves too little to be worth a second variant.
MIN_GZIP_BYTES = 512


@dataclass(frozen=True, slots=True)
class CachedFile:
    """One published file, ready to send: bodies and header lists built once per render."""

    path: str
    body: bytes
    gzip_body: bytes | None
    etag: str  # strong, quoted; the gzip variant's ends in -gz"
    last_modified: datetime
    headers_200: list[tuple[bytes, bytes]]
    headers_200_gzip: list[tuple[bytes, bytes]]
    headers_304: list[tuple[bytes, bytes]]
    headers_304_gzip: list[tuple[bytes, bytes]]
    location: str | None = None  # a moved page: answered with a redirect there

    @classmethod
    def build(cls, item: RenderedFile, extra: Sequence[tuple[bytes, bytes]] = ()) -> CachedFile:
        digest = hashlib.sha256(item.body).hexdigest()[:32]
        etag = f'"{digest}"'
        gz_etag = f'"{digest}-gz"'
        last_modified = item.updated.astimezone(UTC).replace(microsecond=0)
        http_date = format_datetime(last_modified, usegmt=True).encode()
        gz = gzip_bytes(item.body) if len(item.body) >= MIN_GZIP_BYTES else None
        if gz is not None and len(gz) >= len(item.body):
            gz = None
        common = [
            (b"last-modified", http_date),
            (b"cache-control", CACHE_CONTROL),
            (b"vary", b"Accept-Encoding"),
            *extra,
        ]
        typed = [
            (b"content-type", item.content_type.encode()),
            (b"x-content-type-options", b"nosniff"),
        ]
        return cls(
            path=item.path,
            body=item.body,
            gzip_body=gz,
            etag=etag,
            last_modified=last_modified,
            headers_200=[
                *typed,
                (b"content-length", str(len(item.body)).encode()),
                (b"etag", etag.encode()),
                *common,
            ],
            headers_200_gzip=[
                *typed,
                (b"content-encoding", b"gzip"),
                (b"content-length", str(len(gz or b"")).encode()),
                (b"etag", gz_etag.encode()),
                *common,
            ],
            headers_304=[(b"etag", etag.encode()), *common],
            headers_304_gzip=[(b"etag", gz_etag.encode()), *common],
            location=item.location,
        )


@dataclass(frozen=True, slots=True)
class Snapshot:
    version: str
    watchlist: object
    files: dict[str, CachedFile]
    built_at: datetime


class FeedCache:
    """Rendered files for the current feed version, refreshed at most once per check interval.

    While a refresh runs, other requests are served the previous snapshot; only the very first
    request of a process waits for a render. A failing store keeps the last good snapshot.
    """

    def __init__(
        self,
        store: FeedStore,
        watchlist_provider: WatchlistProvider,
        base_url: str,
        *,
        check_interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        on_change: ChangeHook | None = None,
        search: bool = False,
    ) -> None:
        self._store = store
        self.search = search  # the pages carry a search box (the service has /search)
        self._watchlist_provider = watchlist_provider
        self._base_url = base_url
        self._interval = check_interval
        self._clock = clock
        self._now = now
        self._on_change = on_change
        self._snapshot: Snapshot | None = None
        self._next_check = 0.0
        self._lock = asyncio.Lock()
        # The store's feed version when the process started (set by the service before it
        # fetches): a first render at another version pings the hub for every feed.
        self.start_version: str | None = None
        self.renders = 0  # how many times the files were rendered (for tests and metrics)
        self.checks = 0
        self.last_error: str | None = None  # the refresh's current fault, None when healthy

    @property
    def base_url(self) -> str:
        return self._base_url

    @property
    def current(self) -> Snapshot | None:
        return self._snapshot

    async def snapshot(self) -> Snapshot | None:
        """The current snapshot, checking the store's version when the interval has passed."""
        snap = self._snapshot
        if snap is not None and self._clock() < self._next_check:
            return snap
        if snap is not None and self._lock.locked():
            return snap  # someone is refreshing; serve what we have meanwhile
        async with self._lock:
            if self._snapshot is not None and self._clock() < self._next_check:
                return self._snapshot
            try:
                changed = await run_in_threadpool(self._refresh)
                if changed and self._on_change is not None:
                    _spawn(self._on_change(changed))
            except Exception as exc:
                self._report_failure(exc)
            else:
                if self.last_error is not None:
                    log.info("feeds: refresh works again")
                self.last_error = None
            self._next_check = self._clock() + self._interval
        return self._snapshot

    def _report_failure(self, exc: Exception) -> None:
        # Checked every second: a lasting fault is logged when it starts or changes, not each time.
        message = f"{type(exc).__name__}: {exc}"
        if message != self.last_error:
            log.error(
                "feeds: refresh failed (%s); %s",
                message,
                "serving the last good version" if self._snapshot else "nothing to serve yet",
                exc_info=exc,
            )
        self.last_error = message

    async def refresh_now(self) -> Snapshot | None:
        """Check the store right away (e.g. after an ingest in this process)."""
        self._next_check = 0.0
        return await self.snapshot()

    async def watch(self) -> None:
        """While a WebSub hub is configured, check the store every ``check_interval`` seconds
        and re-render when it changed, so the hub is pinged right after the ingest that
        changed a feed, not when some client next asks for it. Runs until cancelled (the
        service runs it beside the HTTP server). The first pass renders the baseline that
        later changes are compared with."""
        while True:
            if self._watchlist_provider().publish.websub_hub:
                await self.refresh_now()
            await asyncio.sleep(self._interval)

    def _refresh(self) -> list[str]:
        """Re-render when the version or watchlist changed; the URLs of feeds that changed."""
        self.checks += 1
        version = self._store.feed_version()
        watchlist = self._watchlist_provider()
        old = self._snapshot
        if old is not None and old.version == version and old.watchlist is watchlist:
            return []
        now = self._now()
        base = public_base_url(watchlist.publish, self._base_url)
        extra = _link_header(watchlist.publish.websub_hub)
        rendered = build_site(self._store, watchlist, base, now, search=self.search)
        files = {f.path: CachedFile.build(f, _self_link(base, f.path) + extra) for f in rendered}
        self.renders += 1
        self._snapshot = Snapshot(version, watchlist, files, now)
        if old is None:
            if self.start_version is not None and version != self.start_version:
                # Changed since the process started, before anything was rendered: which
                # feeds is not known, so every feed is announced.
                return [f"{base}/{path}" for path in files if path.startswith("feeds/")]
            return []  # first render of this process: nothing is known to have changed
        return [
            f"{base}/{path}"
            for path, cached in files.items()
            if path.startswith("feeds/") and _etag(old.files.get(path)) != cached.etag
        ]


def _etag(cached: CachedFile | None) -> str | None:
    return cached.etag if cached else None


_background: set[asyncio.Future[None]] = set()


def _spawn(coro: Awaitable[None]) -> None:
    # Keep a reference so the task is not garbage-collected before it finishes.
    task = asyncio.ensure_future(coro)
    _background.add(task)
    task.add_done_callback(_background.discard)


def _link_header(hub: str | None) -> list[tuple[bytes, bytes]]:
    url = safe_url(hub)
    return [(b"link", f'<{url}>; rel="hub"'.encode())] if url else []


def _self_link(base: str, path: str) -> list[tuple[bytes, bytes]]:
    if not path.startswith("feeds/"):
        return []
    return [(b"link", f'<{base}/{path}>; rel="self"'.encode())]


# ---------------------------------------------------------------------------------------------
# HTTP


def accepts_gzip(header: str) -> bool:
    """Whether an Accept-Encoding value allows gzip (``gzip``/``x-gzip``/``*`` with q > 0)."""
    gzip_q: float | None = None
    star_q: float | None = None
    for part in header.split(","):
        name, _, params = part.strip().partition(";")
        name = name.strip().lower()
        q = 1.0
        for param in params.split(";"):
            key, _, value = param.strip().partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        if name in ("gzip", "x-gzip"):
            gzip_q = q
        elif name == "*":
            star_q = q
    if gzip_q is not None:
        return gzip_q > 0
    return star_q is not None and star_q > 0


def etag_matches(if_none_match: str, etag: str) -> bool:
    """Weak comparison (RFC 9110 13.1.2) of an If-None-Match list against our ETag."""
    if if_none_match.strip() == "*":
        return True
    ours = _opaque(etag)
    return any(_opaque(tag) == ours for tag in if_none_match.split(","))


def _opaque(tag: str) -> str:
    tag = tag.strip()
    if tag.startswith("W/"):
        tag = tag[2:]
    tag = tag.strip('"')
    # Both encodings of one file are the same representation for validation purposes; a
    # cache holding either may revalidate with it.
    return tag.removesuffix("-gz")


def not_modified_since(if_modified_since: str, last_modified: datetime) -> bool:
    try:
        since = parsedate_to_datetime(if_modified_since)
    except (TypeError, ValueError, IndexError):
        return False
    if since is None:
        return False
    if since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    return last_modified <= since


class PublishedFiles:
    """ASGI endpoint serving the cache's files; the path picks the file."""

    def __init__(self, cache: FeedCache, fixed_path: str | None = None) -> None:
        self.cache = cache
        self.fixed_path = fixed_path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        method = scope.get("method", "GET")
        if method not in ("GET", "HEAD"):
            await _plain(send, 405, b"method not allowed\n", [(b"allow", b"GET, HEAD")])
            return
        path = self.fixed_path or _feed_key(scope)
        snap = await self.cache.snapshot()
        if snap is None:
            await _plain(send, 503, b"feeds are not available yet\n", [(b"retry-after", b"5")])
            return
        cached = snap.files.get(path) if path else None
        if cached is None:
            await _plain(send, 404, b"no such feed\n")
            return
        await send_cached(scope, send, cached)


async def send_cached(scope: Scope, send: Send, cached: CachedFile) -> None:
    """Answer with ``cached``: 304 when the request's validators match, gzip when accepted."""
    method = scope.get("method", "GET")
    headers = _request_headers(scope)
    use_gzip = cached.gzip_body is not None and accepts_gzip(headers.get("accept-encoding", ""))
    inm = headers.get("if-none-match")
    ims = headers.get("if-modified-since")
    if (inm is not None and etag_matches(inm, cached.etag)) or (
        inm is None and ims is not None and not_modified_since(ims, cached.last_modified)
    ):
        hdrs = cached.headers_304_gzip if use_gzip else cached.headers_304
        await send({"type": "http.response.start", "status": 304, "headers": hdrs})
        await send({"type": "http.response.body", "body": b""})
        return
    body = cached.gzip_body if use_gzip and cached.gzip_body is not None else cached.body
    hdrs = cached.headers_200_gzip if use_gzip else cached.headers_200
    await send({"type": "http.response.start", "status": 200, "headers": hdrs})
    await send({"type": "http.response.body", "body": b"" if method == "HEAD" else body})


class NotReady(Exception):
    """The service has not rendered anything yet (its first render is running or failed)."""


class PageCache:
    """Topic and development pages, rendered on first request for the current feed version.

    A service holds months of developments: rendering every page on each change would cost
    more than the feeds. Pages are rendered when asked for, kept for the snapshot's version
    (bounded, least recently used out), and served with the same ETag/304 and gzip handling
    as the feeds.
    """

    def __init__(self, cache: FeedCache, store: PageStore, max_pages: int = 512) -> None:
        self.cache = cache
        self.store = store
        self.max_pages = max_pages
        self._pages: OrderedDict[tuple[str, int, str], CachedFile | None] = OrderedDict()
        self.renders = 0

    async def get(self, path: str) -> CachedFile | None:
        """The page at ``path``, None when there is none; raises ``NotReady`` while the
        service has nothing to serve yet."""
        snap = await self.cache.snapshot()
        if snap is None:
            raise NotReady("pages are not available yet")
        key = (snap.version, id(snap.watchlist), path)
        if key in self._pages:
            self._pages.move_to_end(key)
            return self._pages[key]
        watchlist = snap.watchlist
        assert _is_watchlist(watchlist)
        base = public_base_url(watchlist.publish, self.cache.base_url)
        rendered = await run_in_threadpool(
            build_page, self.store, watchlist, base, path, search=self.cache.search
        )
        self.renders += 1
        cached = None if rendered is None else CachedFile.build(rendered)
        self._pages[key] = cached
        while len(self._pages) > self.max_pages:
            self._pages.popitem(last=False)
        return cached


class SearchEndpoint:
    """``/search?q=words&page=n``: the stored reports that hold every word, grouped by their
    published development (see store.search), rendered per query and feed version (bounded
    LRU), with ETag/304 and gzip as the other pages."""

    def __init__(self, pages: PageCache, store: SearchStore, max_entries: int = 128) -> None:
        self.pages = pages
        self.store = store
        self.max_entries = max_entries
        self._cache: OrderedDict[tuple[str, int, str, int], CachedFile] = OrderedDict()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        method = scope.get("method", "GET")
        if method not in ("GET", "HEAD"):
            await _plain(send, 405, b"method not allowed\n", [(b"allow", b"GET, HEAD")])
            return
        snap = await self.pages.cache.snapshot()
        if snap is None:
            await _plain(send, 503, b"pages are not available yet\n", [(b"retry-after", b"5")])
            return
        params = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        query = " ".join((params.get("q") or [""])[0].split())[:200]
        try:
            page = min(max(1, int((params.get("page") or ["1"])[0])), 1000)
        except ValueError:
            page = 1
        key = (snap.version, id(snap.watchlist), query, page)
        cached = self._cache.get(key)
        if cached is None:
            watchlist = snap.watchlist
            assert _is_watchlist(watchlist)
            base = public_base_url(watchlist.publish, self.pages.cache.base_url)
            body = await run_in_threadpool(build_search, self.store, watchlist, base, query, page)
            cached = CachedFile.build(RenderedFile("search", body, HTML_TYPE, snap.built_at))
            self._cache[key] = cached
            while len(self._cache) > self.max_entries:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(key)
        await send_cached(scope, send, cached)


def _is_watchlist(value: object) -> TypeGuard[ServedWatchlist]:
    return hasattr(value, "publish") and hasattr(value, "topics")


class PagesEndpoint:
    """ASGI endpoint for ``/developments/<id>.html`` and ``/topics/<id>/...``."""

    def __init__(self, pages: PageCache, kind: str) -> None:
        self.pages = pages
        self.kind = kind

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        method = scope.get("method", "GET")
        if method not in ("GET", "HEAD"):
            await _plain(send, 405, b"method not allowed\n", [(b"allow", b"GET, HEAD")])
            return
        params = scope.get("path_params", {})
        name = quote(str(params.get("name", "")), safe="", errors="replace")
        if self.kind == "development":
            path = f"developments/{name}"
        else:
            file = str(params.get("file", "") or "index.html")
            path = f"topics/{name}/{quote(file, safe='', errors='replace')}"
        try:
            found = await self.pages.get(path)
        except NotReady:
            await _plain(send, 503, b"pages are not available yet\n", [(b"retry-after", b"5")])
            return
        if found is None:
            await _plain(send, 404, b"no such page\n")
            return
        if found.location:
            await _plain(send, 301, b"moved\n", [(b"location", found.location.encode())])
            return
        await send_cached(scope, send, found)


def _feed_key(scope: Scope) -> str | None:
    name = scope.get("path_params", {}).get("filename")
    if not isinstance(name, str) or "." not in name:
        return None
    stem, _, fmt = name.rpartition(".")
    return f"feeds/{quote(stem, safe='', errors='replace')}.{fmt}"


_WANTED = {
    b"accept-encoding": "accept-encoding",
    b"if-none-match": "if-none-match",
    b"if-modified-since": "if-modified-since",
}


def _request_headers(scope: Scope) -> dict[str, str]:
    """The few request headers the file endpoint reads (ASGI names are already lower-case)."""
    out: dict[str, str] = {}
    for key, value in scope.get("headers", ()):
        name = _WANTED.get(key)
        if name is None:
            continue
        text = value.decode("latin-1")
        # Repeated list headers combine into one comma-separated value (RFC 9110 5.3).
        out[name] = f"{out[name]}, {text}" if name in out else text
    return out


async def _plain(
    send: Send, status: int, body: bytes, extra: Sequence[tuple[bytes, bytes]] = ()
) -> None:
    headers = [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(body)).encode()),
        *extra,
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def feed_routes(
    cache: FeedCache, pages: PageCache | None = None, search: SearchEndpoint | None = None
) -> list[Route]:
    """``/``, ``/index.html``, ``/sources.opml``, ``/feeds/{name}.{format}``, and with a page
    cache ``/developments/{id}.html``, ``/topics/{id}/`` and its older pages."""
    index = PublishedFiles(cache, INDEX_FILE)
    routes = [
        Route("/", index, methods=["GET", "HEAD"]),
        Route("/index.html", index, methods=["GET", "HEAD"]),
        Route("/sources.opml", PublishedFiles(cache, OPML_FILE), methods=["GET", "HEAD"]),
        Route("/feeds/{filename}", PublishedFiles(cache), methods=["GET", "HEAD"]),
    ]
    if pages is not None:
        development = PagesEndpoint(pages, "development")
        topic = PagesEndpoint(pages, "topic")
        routes += [
            Route("/developments/{name}", development, methods=["GET", "HEAD"]),
            Route("/topics/{name}", topic, methods=["GET", "HEAD"]),
            Route("/topics/{name}/", topic, methods=["GET", "HEAD"]),
            Route("/topics/{name}/{file}", topic, methods=["GET", "HEAD"]),
        ]
    if search is not None:
        routes.append(Route("/search", search, methods=["GET", "HEAD"]))
    return routes


def hub_pinger(watchlist_provider: WatchlistProvider) -> ChangeHook:
    """The change hook that tells the watchlist's WebSub hub (if any) which feeds changed, as
    the watchlist's User-Agent: every request the service makes says who it is the same way."""

    async def ping(urls: Sequence[str]) -> None:
        watchlist = watchlist_provider()
        hub = watchlist.publish.websub_hub
        if hub:
            await websub_ping(hub, urls, user_agent=watchlist.fetch.user_agent)

    return ping


async def websub_ping(
    hub: str, topic_urls: Sequence[str], *, user_agent: str | None = None, timeout: float = 10.0
) -> None:
    """Tell a WebSub hub that these feeds changed (``hub.mode=publish``); failures are logged.

    The hub is the admin's own configuration, not fetched content, so this plain POST does not
    go through the fetch layer's guard (which only GETs).
    """
    import httpx

    headers = {"User-Agent": user_agent} if user_agent else {}
    async with httpx.AsyncClient(
        timeout=timeout, follow_redirects=False, headers=headers
    ) as client:
        for url in topic_urls:
            try:
                response = await client.post(hub, data={"hub.mode": "publish", "hub.url": url})
                if response.status_code >= 400:
                    log.warning("websub: hub %s answered %s for %s", hub, response.status_code, url)
            except httpx.HTTPError as exc:
                log.warning("websub: could not ping hub %s for %s: %s", hub, url, exc)
