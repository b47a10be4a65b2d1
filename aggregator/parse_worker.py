"""What the parse pool's processes run besides ``feeds.parse_feed``: record preparation.

A pool process imports this module when it unpickles its first such job, and with it only what
the jobs need: feeds (feedparser), normalize (selectolax), match, dedup (numpy) and the ingest
``prepare`` stage. It never imports the store (SQLAlchemy), the HTTP client, the scheduler or
the web layer (an import-linter contract keeps it so): the functions a pool runs used to live
in ``aggregator.cycle``, and unpickling them made every pool process import the whole
application (≈ 85 MB of RSS each before it parsed anything).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime

from aggregator import normalize
from aggregator.feeds import FeedEntry
from aggregator.ingest.prepare import prepare
from aggregator.ingest.types import Prepared
from aggregator.match import TopicMatcher
from aggregator.model import DedupOptions, Record, Source

log = logging.getLogger("aggregator.cycle")


def prepare_records(
    records: Sequence[Record],
    source: Source,
    now: datetime,
    matcher: TopicMatcher,
    options: DedupOptions,
) -> list[Prepared]:
    """Records matched (against the source's topics) and fingerprinted."""
    return [prepare(r, matcher, now, allowed_topics=source.topics) for r in records]


def prepare_entries(
    entries: Sequence[FeedEntry],
    source: Source,
    now: datetime,
    matcher: TopicMatcher,
    options: DedupOptions,
) -> list[Prepared]:
    """Records of new feed entries, matched and fingerprinted; an entry that cannot be made
    into a record is left out (it is logged).

    Each record is prepared as soon as it is made: making it parsed its text (for the content
    hash), and ``records.parse`` keeps only the last few documents, so preparing the records
    of a feed of more than a few entries after making them all parsed every text twice."""
    prepared = []
    for e in entries:
        try:
            record = normalize.record_from_entry(e, source, now)
        except Exception as exc:
            log.warning(
                "entry %s of %s skipped: %s: %s", e.guid, source.id, type(exc).__name__, exc
            )
            continue
        prepared.append(prepare(record, matcher, now, allowed_topics=source.topics))
    return prepared
