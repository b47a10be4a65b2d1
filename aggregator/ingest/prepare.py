"""Stage 1 of ingest (pure): a record -> its topic matches, fingerprint and filing time."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from aggregator import dedup, records
from aggregator.errors import RecordFormatError
from aggregator.ingest.types import Prepared
from aggregator.match import TopicMatcher
from aggregator.model import Record


def record_time(record: Record, now: datetime) -> datetime:
    """The time a record is filed under: published, else fetched, else now; never in the future
    (a feed with a wrong clock must not pin its entries to the top)."""
    when = record.published or record.fetched or now
    return min(when, now)


def dedup_text(record: Record) -> str:
    """The text a record is fingerprinted by: lead and body as plain text (no title, which
    ``dedup.fingerprint`` takes separately)."""
    try:
        doc = records.parse(record.text)
    except RecordFormatError:
        return record.text
    parts = [records.lead_of(doc), records.body_text(doc)]
    text = "\n".join(p for p in parts if p.strip())
    return text or records.plain_text(doc)


def prepare(
    record: Record,
    matcher: TopicMatcher,
    now: datetime,
    *,
    allowed_topics: Sequence[str] = (),
) -> Prepared:
    """Match ``record`` against the topics (``allowed_topics``: only those, when given) and
    fingerprint it. A record that matches no topic is not fingerprinted: no feed can show it,
    so it joins no development."""
    from aggregator import profile

    with profile.stage("match"):
        matches = tuple(matcher.match(record, allowed_topics))
    fp: dedup.Fingerprint | None = None
    data = ""
    if matches:
        with profile.stage("dedup"):
            fp = dedup.fingerprint(record.title, dedup_text(record), record.language)
            data = dedup.fingerprint_to_json(fp)
    return Prepared(
        record=record,
        matches=matches,
        time=record_time(record, now),
        fingerprint=fp,
        fingerprint_json=data,
    )
