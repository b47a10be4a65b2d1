"""Stage 1 of ingest (pure): a record -> its topic matches, fingerprint and filing time."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from aggregator import dedup, records
from aggregator.errors import RecordFormatError
from aggregator.ingest.types import Prepared
from aggregator.match import FieldTexts, TopicMatcher
from aggregator.model import Document, Record


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
    return _dedup_text(doc, records.lead_of(doc), records.body_text(doc))


def _dedup_text(doc: Document, lead: str, body: str) -> str:
    text = "\n".join(p for p in (lead, body) if p.strip())
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

    try:
        doc: Document | None = records.parse(record.text)
    except RecordFormatError:
        doc = None
    with profile.stage("match"):
        if doc is None:
            matches = tuple(matcher.match(record, allowed_topics))
        else:  # the layout found once, for matching and the fingerprint's text alike
            title, lead, body = records.sections(doc)
            texts = FieldTexts(title=record.title or title, lead=lead, body=body)
            matches = matcher.match_fields(record.id, texts, allowed_topics)
    fp: dedup.Fingerprint | None = None
    data = ""
    if matches:
        with profile.stage("dedup"):
            text = record.text if doc is None else _dedup_text(doc, lead, body)
            fp = dedup.fingerprint(record.title, text, record.language)
            data = dedup.fingerprint_to_json(fp)
    return Prepared(
        record=record,
        matches=matches,
        time=record_time(record, now),
        fingerprint=fp,
        fingerprint_json=data,
    )
