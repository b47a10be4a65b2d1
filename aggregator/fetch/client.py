"""The Fetcher: the one guarded HTTP path for feeds, pages, full-text articles and robots.txt.

One per process, one shared ``httpx.AsyncClient``. Every request:

- waits for a per-host slot (concurrency + minimum gap) and a global in-flight slot;
- runs under one ``asyncio`` deadline around the whole exchange, redirects and body included
  (per-read timeouts alone let a server dripping a byte a second hold a request forever);
- follows redirects itself, up to ``max_redirects``, every hop through the SSRF-guarded backend;
- streams the body, decoding gzip/deflate itself with a cap on DECODED bytes;
- is retried (tenacity, exponential backoff with jitter, bounded) for transient faults only.

Failures are raised as ``errors.FetchError`` with a ``model.FailureClass`` value.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.cookiejar import CookieJar, DefaultCookiePolicy
from types import TracebackType
from typing import Any

import httpx
import sniffio
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
    wait_random,
)

from aggregator.errors import FetchError
from aggregator.fetch import charset
from aggregator.fetch.backoff import CacheHints, hints_from_headers
from aggregator.fetch.guard import (
    BlockedAddressError,
    DNSResolutionError,
    GuardedBackend,
    check_url,
    guarded_transport,
    parse_networks,
)
from aggregator.fetch.limits import (
    ACCEPT_ENCODING,
    BodyTooLargeError,
    ContentEncodingError,
    read_capped,
)
from aggregator.fetch.politeness import HostLimiter, RobotsCache
from aggregator.model import FailureClass, FetchPolicy

PURPOSES = ("feed", "page", "robots")
_REDIRECTS = (301, 302, 303, 307, 308)
_PERMANENT_REDIRECTS = (301, 308)
_ACCEPT = {
    "feed": (
        "application/rss+xml, application/atom+xml, application/feed+json, "
        "application/xml;q=0.9, text/xml;q=0.9, application/json;q=0.8, */*;q=0.5"
    ),
    "page": "text/html, application/xhtml+xml;q=0.9, */*;q=0.5",
    "robots": "text/plain, */*;q=0.5",
}


@dataclass(frozen=True, slots=True)
class FetchResponse:
    """A successful fetch: 200 with its decoded body, or 304 (nothing changed, empty body)."""

    url: str  # final URL, after redirects
    status: int
    body: bytes  # decoded Content-Encoding, raw charset
    text: str  # charset-correct text ("" for 304)
    encoding: str | None
    headers: Mapping[str, str]  # lower-case names
    etag: str | None
    last_modified: str | None
    hints: CacheHints = field(default_factory=CacheHints)
    redirects: tuple[str, ...] = ()
    elapsed: float = 0.0
    # Every redirect on the way was permanent (301/308): ``url`` is where the document lives now.
    moved_permanently: bool = False

    @property
    def not_modified(self) -> bool:
        return self.status == 304

    @property
    def next_fetch_hint(self) -> float | None:
        """Seconds the server asked us to wait before the next fetch, if it said."""
        values = [v for v in (self.hints.max_age, self.hints.retry_after) if v is not None]
        return max(values) if values else None


@dataclass(frozen=True, slots=True)
class _Redirect:
    url: httpx.URL
    status: int


class FetchStatusError(FetchError):
    """The server answered with an error status; ``hints`` carries its Retry-After."""

    def __init__(
        self, failure_class: str, message: str, status: int, hints: CacheHints | None = None
    ) -> None:
        super().__init__(failure_class, message)
        self.status = status
        self.hints = hints or CacheHints()


class _Transient(Exception):
    """Internal: a fault worth retrying; wraps the FetchError to raise when retries run out."""

    def __init__(self, error: FetchError) -> None:
        super().__init__(str(error))
        self.error = error


def _require_asyncio() -> None:
    # The deadlines use asyncio.timeout; under trio they would silently do nothing.
    library = sniffio.current_async_library()
    if library != "asyncio":
        raise RuntimeError(f"the Fetcher needs asyncio, not {library}")


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def classify(exc: BaseException) -> tuple[FailureClass, bool]:
    """``(failure class, transient?)`` for an exception raised while fetching."""
    chain = _chain(exc)
    if any(isinstance(e, BlockedAddressError) for e in chain):
        return FailureClass.BLOCKED_BY_POLICY, False
    if any(isinstance(e, DNSResolutionError) for e in chain):
        return FailureClass.DNS, False
    if any(isinstance(e, BodyTooLargeError) for e in chain):
        return FailureClass.TOO_LARGE, False
    if any(isinstance(e, ssl.SSLError | ssl.CertificateError) for e in chain):
        return FailureClass.TLS, False
    if isinstance(exc, TimeoutError | httpx.TimeoutException):
        return FailureClass.TIMEOUT, True
    if isinstance(exc, httpx.ConnectError | httpx.ReadError | httpx.WriteError):
        return FailureClass.CONNECT, True
    protocol = (httpx.RemoteProtocolError, httpx.LocalProtocolError, httpx.DecodingError)
    if isinstance(exc, (*protocol, ContentEncodingError)):
        return FailureClass.PROTOCOL, False
    if isinstance(exc, httpx.InvalidURL | httpx.UnsupportedProtocol):
        return FailureClass.BLOCKED_BY_POLICY, False
    return FailureClass.INTERNAL, False


def _headers_dict(headers: httpx.Headers) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in headers.multi_items():
        key = key.lower()
        out[key] = f"{out[key]}, {value}" if key in out else value
    return out


def _status_message(url: httpx.URL, response: httpx.Response) -> str:
    message = f"{url}: HTTP {response.status_code} {response.reason_phrase}".rstrip()
    retry_after = response.headers.get("retry-after")
    return f"{message} (Retry-After: {retry_after})" if retry_after else message


def _origin(url: httpx.URL) -> str:
    default = {"http": 80, "https": 443}.get(url.scheme)
    port = f":{url.port}" if url.port and url.port != default else ""
    return f"{url.scheme}://{url.host}{port}"


def _no_cookies() -> CookieJar:
    """A jar whose policy accepts no cookie, so nothing is ever stored or sent."""
    return CookieJar(policy=DefaultCookiePolicy(allowed_domains=[]))


class Fetcher:
    """One per process; ``async with Fetcher(policy) as fetcher: await fetcher.fetch(url)``."""

    def __init__(
        self,
        policy: FetchPolicy,
        *,
        retry_wait_initial: float = 1.0,
        retry_wait_max: float = 30.0,
        verify: bool = True,
    ) -> None:
        self.policy = policy
        self.retry_wait_initial = retry_wait_initial
        self.retry_wait_max = retry_wait_max
        # Exponential from retry_wait_initial, capped, plus up to one initial wait of jitter.
        self._backoff = wait_exponential(
            multiplier=retry_wait_initial, max=retry_wait_max
        ) + wait_random(0, retry_wait_initial)
        self.backend = GuardedBackend(parse_networks(policy.allow_networks))
        self._allowed = self.backend.allowed
        limits = httpx.Limits(
            max_connections=max(1, policy.max_in_flight),
            max_keepalive_connections=max(1, policy.max_in_flight),
            keepalive_expiry=30.0,
        )
        timeout = httpx.Timeout(
            policy.timeout_seconds,
            connect=policy.connect_timeout_seconds,
            pool=policy.timeout_seconds,
        )
        self.client = httpx.AsyncClient(
            transport=guarded_transport(self.backend, limits=limits, verify=verify),
            timeout=timeout,
            follow_redirects=False,
            trust_env=False,
            headers={"User-Agent": policy.user_agent, "Accept-Encoding": ACCEPT_ENCODING},
            # No cookie jar: the client is shared by every source, so a jar would carry one
            # source's cookies (up to a 40 KB Cookie header) into another's requests to the
            # same host. Feeds and articles are fetched as a first visit, every time.
            cookies=_no_cookies(),
        )
        self._in_flight = asyncio.Semaphore(max(1, policy.max_in_flight))
        self._hosts = HostLimiter(policy.per_host_concurrency, policy.min_host_interval_seconds)
        self.robots = RobotsCache(self._load_robots)

    async def __aenter__(self) -> Fetcher:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.client.aclose()

    async def fetch(
        self,
        url: str,
        *,
        etag: str | None = None,
        last_modified: str | None = None,
        purpose: str = "feed",
        language: str | None = None,
    ) -> FetchResponse:
        """Fetch ``url``; a 200 or 304 response, or ``FetchError(failure_class, message)``.

        ``language`` (the source's) helps pick a legacy charset when the labels are wrong.
        """
        _require_asyncio()
        if purpose not in PURPOSES:
            raise ValueError(f"purpose must be one of {PURPOSES}, not {purpose!r}")
        try:
            target = httpx.URL(url)
        except (httpx.InvalidURL, TypeError) as exc:
            raise FetchError(FailureClass.BLOCKED_BY_POLICY, f"invalid URL {url!r}: {exc}") from exc
        if purpose == "page" and self.policy.respect_robots:
            await self._check_robots(target)
        if purpose != "robots" and self.policy.respect_robots:
            await self._honour_crawl_delay(target)
        headers = {"Accept": _ACCEPT[purpose]}
        if etag:
            headers["If-None-Match"] = etag
        if last_modified:
            headers["If-Modified-Since"] = last_modified
        retrying = AsyncRetrying(
            stop=stop_after_attempt(max(0, self.policy.retries) + 1),
            wait=self._wait,
            retry=retry_if_exception(lambda e: isinstance(e, _Transient)),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    return await self._attempt(target, headers, language)
        except _Transient as exc:
            raise exc.error from exc.__cause__
        raise AssertionError("unreachable: tenacity either returns or raises")

    def _wait(self, state: RetryCallState) -> float:
        base = self._backoff(state)
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, _Transient) and isinstance(exc.error, FetchStatusError):
            retry_after = exc.error.hints.retry_after
            if retry_after is not None:
                return max(base, retry_after)
        return base

    async def _attempt(
        self, url: httpx.URL, headers: dict[str, str], language: str | None
    ) -> FetchResponse:
        started = time.monotonic()
        try:
            async with asyncio.timeout(self.policy.timeout_seconds) as deadline:
                return await self._follow(url, headers, language, started, deadline)
        except FetchStatusError as exc:
            if self._retry_status(exc):
                raise _Transient(exc) from exc
            raise
        except FetchError:
            raise
        except Exception as exc:
            failure, transient = classify(exc)
            if isinstance(exc, TimeoutError):
                message = f"no complete answer within {self.policy.timeout_seconds:g} s"
            else:
                message = f"{type(exc).__name__}: {exc}".strip().rstrip(":")
            error = FetchError(failure, f"{url}: {message}")
            if transient:
                raise _Transient(error) from exc
            raise error from exc

    def _retry_status(self, exc: FetchStatusError) -> bool:
        # 5xx and 429 are retried in this fetch only when the server asks for no pause or a
        # short one; a long Retry-After is honoured by scheduling the next fetch instead.
        if exc.failure_class not in (FailureClass.HTTP_5XX, FailureClass.RATE_LIMITED):
            return False
        retry_after = exc.hints.retry_after
        return retry_after is None or retry_after <= self.retry_wait_max

    async def _follow(
        self,
        url: httpx.URL,
        headers: dict[str, str],
        language: str | None,
        started: float,
        deadline: asyncio.Timeout,
    ) -> FetchResponse:
        hops: list[str] = []
        permanent = True
        current = url
        while True:
            check_url(current, self._allowed)
            outcome = await self._hop(current, headers, language, deadline)
            if isinstance(outcome, FetchResponse):
                return FetchResponse(
                    url=outcome.url,
                    status=outcome.status,
                    body=outcome.body,
                    text=outcome.text,
                    encoding=outcome.encoding,
                    headers=outcome.headers,
                    etag=outcome.etag,
                    last_modified=outcome.last_modified,
                    hints=outcome.hints,
                    redirects=tuple(hops),
                    elapsed=time.monotonic() - started,
                    moved_permanently=bool(hops) and permanent,
                )
            hops.append(str(current))
            permanent = permanent and outcome.status in _PERMANENT_REDIRECTS
            if len(hops) > self.policy.max_redirects:
                raise FetchError(
                    FailureClass.TOO_MANY_REDIRECTS,
                    f"{url}: more than {self.policy.max_redirects} redirects (last {outcome.url})",
                )
            current = outcome.url

    async def _hop(
        self,
        url: httpx.URL,
        headers: dict[str, str],
        language: str | None,
        deadline: asyncio.Timeout,
    ) -> FetchResponse | _Redirect:
        """One request: a final response, or where a redirect points to."""
        # Time spent queueing for politeness is not the server's: the deadline is paused while
        # waiting for a slot, or fifty sources on one host would time out waiting their turn.
        loop = asyncio.get_running_loop()
        when = deadline.when()
        remaining = None if when is None else when - loop.time()
        deadline.reschedule(None)
        async with self._hosts.slot(url.host), self._in_flight:
            if remaining is not None:
                deadline.reschedule(loop.time() + remaining)
            request = self.client.build_request("GET", url, headers=headers)
            response = await self.client.send(request, stream=True)
            try:
                return await self._handle(url, response, language)
            finally:
                await response.aclose()

    async def _handle(
        self, url: httpx.URL, response: httpx.Response, language: str | None
    ) -> FetchResponse | _Redirect:
        status = response.status_code
        headers = _headers_dict(response.headers)
        now = datetime.now(UTC)
        if status in _REDIRECTS:
            location = headers.get("location")
            if not location:
                raise FetchError(FailureClass.PROTOCOL, f"{url}: {status} without Location")
            try:
                return _Redirect(url.join(location.strip()), status)
            except httpx.InvalidURL as exc:
                raise FetchError(
                    FailureClass.PROTOCOL, f"{url}: bad Location {location!r}"
                ) from exc
        hints = hints_from_headers(headers, now)
        if status == 304:
            # A 304 has no body by definition; reading its end lets the connection go back to
            # the pool (closed unread, the response would take its connection with it).
            await response.aread()
            return FetchResponse(
                url=str(url),
                status=304,
                body=b"",
                text="",
                encoding=None,
                headers=headers,
                etag=headers.get("etag"),
                last_modified=headers.get("last-modified"),
                hints=hints,
            )
        if status == 429:
            raise FetchStatusError(
                FailureClass.RATE_LIMITED, _status_message(url, response), status, hints
            )
        if status >= 500:
            raise FetchStatusError(
                FailureClass.HTTP_5XX, _status_message(url, response), status, hints
            )
        if status >= 400:
            raise FetchStatusError(
                FailureClass.HTTP_4XX, _status_message(url, response), status, hints
            )
        if not 200 <= status < 300:
            raise FetchStatusError(FailureClass.PROTOCOL, f"{url}: status {status}", status, hints)
        cap = self.policy.max_body_bytes
        declared = headers.get("content-length", "").strip()
        if declared.isdigit() and "content-encoding" not in headers and int(declared) > cap:
            raise FetchError(
                FailureClass.TOO_LARGE, f"{url}: Content-Length {declared} exceeds {cap} bytes"
            )
        body = await read_capped(response.aiter_raw(), headers.get("content-encoding"), cap)
        text, encoding = charset.decode(body, headers.get("content-type"), language)
        return FetchResponse(
            url=str(url),
            status=status,
            body=body,
            text=text,
            encoding=encoding,
            headers=headers,
            etag=headers.get("etag"),
            last_modified=headers.get("last-modified"),
            hints=hints,
        )

    async def _check_robots(self, url: httpx.URL) -> None:
        origin = _origin(url)
        refusal = await self.robots.refusal(origin, str(url), self.policy.user_agent)
        if refusal is not None:
            raise FetchError(*refusal)

    async def _honour_crawl_delay(self, url: httpx.URL) -> None:
        """Space this host's requests as its robots.txt ``Crawl-delay`` asks (up to
        ``max_crawl_delay_seconds``). robots.txt is read once a day per origin; for a feed only
        its delay counts (a listed feed is fetched whatever its rules say)."""
        delay = await self.robots.crawl_delay(_origin(url), self.policy.user_agent)
        if delay is not None:
            delay = min(delay, float(self.policy.max_crawl_delay_seconds))
        self._hosts.set_delay(url.host, delay)

    async def _load_robots(self, origin: str) -> tuple[int, str]:
        try:
            response = await self.fetch(f"{origin}/robots.txt", purpose="robots")
        except FetchStatusError as exc:
            return exc.status, ""
        return response.status, response.text

    def stats(self) -> dict[str, Any]:
        """Counters for /metrics and tests."""
        return {"connect_attempts": self.backend.connect_attempts}
