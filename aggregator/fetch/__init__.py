"""The one guarded HTTP path: SSRF guard, size caps, deadlines, redirects, retries, conditional
GET, politeness, robots.txt and charset decoding. See docs/fetching.md."""

from aggregator.fetch.backoff import CacheHints, hints_from_headers
from aggregator.fetch.client import Fetcher, FetchResponse, FetchStatusError, classify
from aggregator.fetch.schedule import next_fetch

__all__ = [
    "CacheHints",
    "FetchResponse",
    "FetchStatusError",
    "Fetcher",
    "classify",
    "hints_from_headers",
    "next_fetch",
]
