"""When to fetch a source next: pure computation from the schedule, the server's hints and the
source's failure history. No clock: ``now`` is passed in; no randomness: ``jitter`` is too.

- Success: the schedule's interval, stretched (never shortened) by what the server asked for
  (``Cache-Control: max-age``, ``Expires``, RSS ``<ttl>``), all capped at ``cap_seconds`` so a
  far-future ``Expires`` cannot silence a source for a year.
- Failure: the interval doubled per consecutive failure up to the cap, and never less than a
  ``Retry-After``. It never gives up: the next fetch is always a finite time away, and the first
  success resets the count.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime

_MAX_AGE = re.compile(r"(?:^|[,\s])(?:s-)?max-age\s*=\s*\"?(\d+)", re.IGNORECASE)
_NO_CACHE = re.compile(r"(?:^|[,\s])(?:no-cache|no-store)(?:$|[,\s])", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class CacheHints:
    """What the server said about when to come back, in seconds from the response."""

    max_age: float | None = None  # Cache-Control max-age, or Expires - Date
    retry_after: float | None = None  # 429/503 Retry-After
    ttl: float | None = None  # RSS <ttl> (minutes in the feed; seconds here)

    def with_ttl(self, ttl_seconds: float | None) -> CacheHints:
        return CacheHints(self.max_age, self.retry_after, ttl_seconds)


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


def success_delay(interval: float, hints: CacheHints, cap_seconds: float) -> float:
    """Seconds until the next fetch after a successful (200 or 304) fetch."""
    delay = interval
    for hint in (hints.max_age, hints.ttl, hints.retry_after):
        if hint is not None and hint > delay:
            delay = hint
    return min(delay, max(interval, cap_seconds))


def failure_delay(
    interval: float, consecutive_failures: int, hints: CacheHints, cap_seconds: float
) -> float:
    """Seconds until the next attempt after ``consecutive_failures`` failures in a row (>= 1)."""
    exponent = max(0, consecutive_failures - 1)
    # Bound the exponent before computing: 2**10000 would overflow a float.
    delay = interval * (2 ** min(exponent, 40))
    delay = min(delay, cap_seconds)
    if hints.retry_after is not None:
        delay = max(delay, min(hints.retry_after, cap_seconds))
    return max(delay, 1.0)


def next_fetch(
    now: datetime,
    *,
    interval: float,
    ok: bool,
    consecutive_failures: int = 0,
    hints: CacheHints | None = None,
    cap_seconds: float = 24 * 3600,
    jitter: float = 0.0,
) -> datetime:
    """The time of the next fetch. ``jitter`` (0..1, from the caller's RNG) spreads up to 10 %
    of the delay so sources that fail together do not retry together."""
    hints = hints or CacheHints()
    if ok:
        delay = success_delay(interval, hints, cap_seconds)
    else:
        delay = failure_delay(interval, consecutive_failures, hints, cap_seconds)
    delay += delay * 0.1 * min(max(jitter, 0.0), 1.0)
    return now + timedelta(seconds=delay)
