"""Politeness: at most N requests to one host at a time, a minimum gap between their starts
(longer where the host's robots.txt asks for a ``Crawl-delay``), and a robots.txt cache: its
rules for pages (feeds the admin listed are fetched regardless, like every reader), its
``Crawl-delay`` for every request to the host.
"""

from __future__ import annotations

import asyncio
import time
import urllib.robotparser
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from aggregator.model import FailureClass


class _Host:
    __slots__ = ("last_start", "lock", "semaphore", "users")

    def __init__(self, concurrency: int) -> None:
        self.semaphore = asyncio.Semaphore(concurrency)
        self.lock = asyncio.Lock()
        self.last_start = float("-inf")
        self.users = 0


class HostLimiter:
    """Per-host concurrency and spacing. Entries are dropped when no request uses them, so
    10,000 sources cost nothing while idle. ``set_delay`` makes one host's spacing longer (its
    robots.txt ``Crawl-delay``). ``clock`` and ``sleep`` are injectable for tests."""

    def __init__(
        self,
        concurrency: int,
        min_interval: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.concurrency = max(1, concurrency)
        self.min_interval = max(0.0, min_interval)
        self._clock = clock
        self._sleep = sleep
        self._hosts: dict[str, _Host] = {}
        # Keep the last start time of hosts that went idle, so spacing survives the drop.
        self._last_start: dict[str, float] = {}
        self._delays: dict[str, float] = {}  # hosts whose robots.txt asks for more spacing

    def set_delay(self, host: str, seconds: float | None) -> None:
        """The spacing ``host`` asked for (``Crawl-delay``); None or less than the policy's
        minimum: the minimum."""
        if seconds is None or seconds <= self.min_interval:
            self._delays.pop(host, None)
        else:
            self._delays[host] = seconds

    def interval(self, host: str) -> float:
        return self._delays.get(host, self.min_interval)

    @asynccontextmanager
    async def slot(self, host: str) -> AsyncIterator[None]:
        entry = self._hosts.get(host)
        if entry is None:
            entry = self._hosts[host] = _Host(self.concurrency)
            entry.last_start = self._last_start.pop(host, float("-inf"))
        entry.users += 1
        try:
            async with entry.semaphore:
                async with entry.lock:
                    wait = entry.last_start + self.interval(host) - self._clock()
                    if wait > 0:
                        await self._sleep(wait)
                    entry.last_start = self._clock()
                yield
        finally:
            entry.users -= 1
            if entry.users == 0:
                del self._hosts[host]
                if self.interval(host) > 0:
                    self._last_start[host] = entry.last_start
                    self._forget_old(self._clock())

    def _forget_old(self, now: float) -> None:
        if len(self._last_start) > 1024:
            cutoff = now - max(self.min_interval, *self._delays.values(), 0.0)
            for host in [h for h, t in self._last_start.items() if t < cutoff]:
                del self._last_start[host]


@dataclass(frozen=True, slots=True)
class RobotsAnswer:
    """robots.txt of one origin, or the rule for when it could not be read."""

    parser: urllib.robotparser.RobotFileParser | None
    allow_all: bool
    expires: float
    # Why it could not be read (then nothing is allowed): the class and the cause, so the
    # refusal says "DNS failure" or "refused by the guard", never a made-up robots.txt rule.
    unreadable: tuple[FailureClass, str] | None = None

    def allows(self, user_agent: str, url: str) -> bool:
        if self.parser is None:
            return self.allow_all
        return self.parser.can_fetch(user_agent, url)

    def refusal(self, user_agent: str, url: str) -> tuple[FailureClass, str] | None:
        """Why ``url`` may not be fetched, as ``(class, message)``; None when it may."""
        if self.allows(user_agent, url):
            return None
        if self.unreadable is not None:
            failure, cause = self.unreadable
            return failure, (
                f"{url}: the site's robots.txt could not be read ({cause}); as RFC 9309 asks, "
                "no page of the site is fetched until it can be"
            )
        return FailureClass.BLOCKED_BY_POLICY, f"{url}: disallowed by robots.txt"


# Fetches robots.txt for an origin: returns (status, text); raises on network failure.
RobotsLoader = Callable[[str], Awaitable[tuple[int, str]]]


class RobotsCache:
    """robots.txt per origin, following RFC 9309: a 4xx means no rules; a 5xx or an unreachable
    server means "disallow everything" for a while (the site may be in trouble)."""

    def __init__(self, loader: RobotsLoader, ttl: float = 24 * 3600, error_ttl: float = 600):
        self._loader = loader
        self._ttl = ttl
        self._error_ttl = error_ttl
        self._cache: dict[str, RobotsAnswer] = {}
        self._pending: dict[str, asyncio.Future[RobotsAnswer]] = {}

    async def allows(self, origin: str, url: str, user_agent: str) -> bool:
        answer = await self._answer(origin)
        return answer.allows(_agent_token(user_agent), url)

    async def refusal(
        self, origin: str, url: str, user_agent: str
    ) -> tuple[FailureClass, str] | None:
        """``(failure class, message)`` when ``url`` may not be fetched, else None."""
        answer = await self._answer(origin)
        return answer.refusal(_agent_token(user_agent), url)

    async def crawl_delay(self, origin: str, user_agent: str) -> float | None:
        """The ``Crawl-delay`` (seconds) the origin's robots.txt asks of ``user_agent``."""
        answer = await self._answer(origin)
        if answer.parser is None:
            return None
        try:
            delay = answer.parser.crawl_delay(_agent_token(user_agent))
        except (TypeError, ValueError):
            return None
        return float(delay) if delay is not None and float(delay) > 0 else None

    async def _answer(self, origin: str) -> RobotsAnswer:
        now = time.monotonic()
        cached = self._cache.get(origin)
        if cached is not None and cached.expires > now:
            return cached
        pending = self._pending.get(origin)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[RobotsAnswer] = asyncio.get_running_loop().create_future()
        self._pending[origin] = future
        try:
            answer = await self._load(origin, now)
            self._cache[origin] = answer
            future.set_result(answer)
            return answer
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved: waiters re-raise it themselves
            raise
        finally:
            del self._pending[origin]

    async def _load(self, origin: str, now: float) -> RobotsAnswer:
        try:
            status, text = await self._loader(origin)
        except Exception as exc:
            failure = getattr(exc, "failure_class", None)
            unreadable = (
                FailureClass(failure) if failure else FailureClass.CONNECT,
                str(exc) or type(exc).__name__,
            )
            return RobotsAnswer(
                None, allow_all=False, expires=now + self._error_ttl, unreadable=unreadable
            )
        if 400 <= status < 500:
            return RobotsAnswer(None, allow_all=True, expires=now + self._ttl)
        if status >= 500 or status < 200 or status >= 300:
            unreadable = (FailureClass.BLOCKED_BY_POLICY, f"{origin}/robots.txt: HTTP {status}")
            return RobotsAnswer(
                None, allow_all=False, expires=now + self._error_ttl, unreadable=unreadable
            )
        parser = urllib.robotparser.RobotFileParser()
        parser.parse(text.splitlines())
        return RobotsAnswer(parser, allow_all=True, expires=now + self._ttl)


def _agent_token(user_agent: str) -> str:
    """The product token robots.txt groups match against ("aggregator" of "aggregator/0.1 ...")."""
    return user_agent.split("/", 1)[0].split()[0] if user_agent.strip() else "*"
