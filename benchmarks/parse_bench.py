"""Feed parsing speed: feedparser vs the expat fast path, on the feed server's feeds.

    python benchmarks/parse_bench.py [--feeds 300] [--seed 1] [--repeat 3]

Renders ``--feeds`` feeds with the feed server's generator (in process, no sockets: RSS 2.0
and Atom, mixed encodings, median ≈ 54 KB) and parses each one through ``parse_feed`` twice:
with the fast path switched off (feedparser, today's baseline) and on. Prints feeds/s of one
core (process CPU time, best of ``--repeat`` interleaved runs), MB/s, how many feeds the fast
path took, and the ratio. The fast path's output is checked equal to feedparser's in
tests/test_feeds_fast.py; here it is only timed.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import feedserver

from aggregator import feeds
from aggregator.fetch import charset

Doc = tuple[bytes, dict[str, str], str | None]


def documents(n: int, seed: int) -> list[Doc]:
    epoch = datetime(2026, 1, 1, tzinfo=UTC)
    docs: list[Doc] = []
    for i in range(n):
        doc = feedserver.render_feed(seed, feedserver.feed_spec(seed, i), 0, epoch)
        _, encoding = charset.decode(doc.body, doc.content_type)
        docs.append((doc.body, {"Content-Type": doc.content_type}, encoding))
    return docs


def _run(docs: list[Doc]) -> float:
    start = time.process_time()
    for body, headers, encoding in docs:
        feeds.parse_feed(body, headers, "http://127.0.0.1/feed.xml", encoding=encoding)
    return time.process_time() - start


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--feeds", type=int, default=300)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    docs = documents(args.feeds, args.seed)
    megabytes = sum(len(body) for body, _, _ in docs) / 1e6
    real = feeds.fast_parse_feed
    taken = sum(real(*_prepared(body, headers, enc)) is not None for body, headers, enc in docs)
    off: Callable[[bytes, object], None] = lambda body, headers: None  # noqa: E731
    slow = fast = float("inf")
    for _ in range(args.repeat):
        feeds.fast_parse_feed = off  # type: ignore[assignment]
        slow = min(slow, _run(docs))
        feeds.fast_parse_feed = real
        fast = min(fast, _run(docs))
    n = len(docs)
    print(f"{n} feeds, {megabytes:.1f} MB; fast path took {taken}/{n}")
    print(f"{'parser':<12} {'feeds/s':>9} {'MB/s':>7} {'ms/feed':>8}")
    for name, secs in (("feedparser", slow), ("fast path", fast)):
        print(f"{name:<12} {n / secs:>9.0f} {megabytes / secs:>7.1f} {1000 * secs / n:>8.2f}")
    print(f"ratio fast/feedparser: {slow / fast:.1f}x")
    return 0


def _prepared(body: bytes, headers: dict[str, str], encoding: str | None) -> tuple[bytes, dict]:
    lowered = {k.lower(): v for k, v in headers.items()}
    if encoding and encoding.lower().replace("_", "-") not in ("utf-8", "utf8"):
        body, lowered = feeds._as_utf8(body, lowered, encoding)
    return body, lowered


if __name__ == "__main__":
    raise SystemExit(main())
