"""What a server (and a feed) said about when to come back: ``CacheHints`` from response
headers (``Cache-Control``, ``Expires``, ``Retry-After``) and from the feed (RSS ``<ttl>``,
``<skipHours>``, ``<skipDays>``). Parsing only: ``fetch.schedule`` decides the next fetch."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

_MAX_AGE = re.compile(r"(?:^|[,\s])(?:s-)?max-age\s*=\s*\"?(\d+)", re.IGNORECASE)
_NO_CACHE = re.compile(r"(?:^|[,\s])(?:no-cache|no-store)(?:$|[,\s])", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class CacheHints:
    """What the server said about when to come back, in seconds from the response."""

    max_age: float | None = None  # Cache-Control max-age, or Expires - Date
    retry_after: float | None = None  # 429/503 Retry-After
    ttl: float | None = None  # RSS <ttl> (minutes in the feed; seconds here)
    skip_hours: frozenset[int] = frozenset()  # RSS <skipHours>: hours (0-23, GMT) to skip
    skip_days: frozenset[int] = frozenset()  # RSS <skipDays>: weekdays to skip (0 = Monday)

    def with_ttl(self, ttl_seconds: float | None) -> CacheHints:
        return replace(self, ttl=ttl_seconds)

    def with_skip(self, hours: frozenset[int], days: frozenset[int]) -> CacheHints:
        return replace(self, skip_hours=hours, skip_days=days)


def parse_http_date(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        parsed = parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError):
        return None
    if parsed is None:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    when = parse_http_date(value)
    if when is None:
        return None
    return max(0.0, (when - now).total_seconds())


def hints_from_headers(headers: Mapping[str, str], now: datetime) -> CacheHints:
    """Cache hints from response headers (case-insensitive mapping expected)."""
    max_age: float | None = None
    cache_control = headers.get("cache-control") or ""
    m = _MAX_AGE.search(cache_control)
    if m:
        max_age = float(m.group(1))
    elif _NO_CACHE.search(cache_control):
        max_age = 0.0
    else:
        expires = parse_http_date(headers.get("expires"))
        if expires is not None:
            base = parse_http_date(headers.get("date")) or now
            max_age = max(0.0, (expires - base).total_seconds())
    if max_age is not None:
        age = headers.get("age", "").strip()
        if age.isdigit():
            max_age = max(0.0, max_age - float(age))
    return CacheHints(
        max_age=max_age, retry_after=parse_retry_after(headers.get("retry-after"), now)
    )
