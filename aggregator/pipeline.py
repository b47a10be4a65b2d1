"""The one place that knows the order of the stages.

``ingest`` takes one record (imported, fetched from a feed or scraped from a page) through topic
matching, the dedup decision and the store, in one transaction. The fetch cycle functions
(``fetch_source``, ``run_cycle``) feed it.
"""

from __future__ import annotations

import logging
import random
import time as _time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from aggregator import dedup, records
from aggregator.errors import RecordFormatError
from aggregator.match import TopicMatcher
from aggregator.model import DedupOptions, DedupReason, Record, TopicMatch
from aggregator.store import Store, StoreConflict, WriteTx, record_time
from aggregator.store.transfer import read_import

log = logging.getLogger(__name__)

# ------------------------------------------------------------------------------------------
# ingest (owner: store part)
# ------------------------------------------------------------------------------------------

# Candidates read per ingest: enough for the busiest story in a window, bounded for speed.
CANDIDATE_CAP = 200
# Attempts of one ingest transaction that lost a race (unique key, deadlock, SQLite busy).
INGEST_ATTEMPTS = 5


@dataclass(frozen=True, slots=True)
class IngestResult:
    """What ``ingest`` did with one record."""

    record_id: str  # for an exact duplicate: the id of the record already stored
    stored: bool  # False: an exact duplicate of a stored record, nothing written
    development_id: str | None
    reason: DedupReason
    score: float
    topics: tuple[str, ...]
    matched_record_id: str | None = None


@dataclass(frozen=True, slots=True)
class _Prepared:
    """The pure work done before the transaction opens (matching, fingerprinting)."""

    record: Record
    matches: tuple[TopicMatch, ...]
    fingerprint: dedup.Fingerprint
    fingerprint_json: str
    time: datetime


def ingest(
    store: Store,
    record: Record,
    *,
    matcher: TopicMatcher,
    options: DedupOptions,
    allowed_topics: Sequence[str] = (),
    now: datetime,
) -> IngestResult:
    """Store ``record`` unless it is an exact duplicate, with its topic matches and dedup
    fingerprint, and put it in a development (an existing one, or a new one it starts).

    Everything happens in one transaction, retried when it loses a race with another writer,
    so two replicas ingesting copies of one story at once make one record and one development.
    """
    prepared = _prepare(record, matcher, allowed_topics, now)
    for attempt in range(1, INGEST_ATTEMPTS + 1):
        try:
            with store.write() as tx:
                return _ingest_in(tx, prepared, options, now)
        except StoreConflict as exc:
            if attempt == INGEST_ATTEMPTS:
                raise
            log.debug("ingest of %s lost a race (%s); retrying", record.id, exc)
            _time.sleep(random.uniform(0.005, 0.05) * attempt)
    raise AssertionError("unreachable")  # pragma: no cover


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


def _prepare(
    record: Record, matcher: TopicMatcher, allowed_topics: Sequence[str], now: datetime
) -> _Prepared:
    matches = tuple(matcher.match(record, allowed_topics))
    fp = dedup.fingerprint(record.title, dedup_text(record), record.language)
    return _Prepared(
        record=record,
        matches=matches,
        fingerprint=fp,
        fingerprint_json=dedup.fingerprint_to_json(fp),
        time=record_time(record, now),
    )


def _lock_keys(p: _Prepared) -> list[str]:
    """The keys two copies of one story share: what concurrent ingests serialize on."""
    r = p.record
    keys = [f"id:{r.id}", f"hash:{r.content_hash}"]
    if r.canonical_url:
        keys.append(f"url:{r.canonical_url}")
    if r.guid and r.source_id:
        keys.append(f"guid:{r.source_id}\0{r.guid}")
    keys.extend(f"band:{b}" for b in p.fingerprint.bands)
    keys.extend(f"term:{k}" for k in p.fingerprint.key_terms)
    return keys


def _ingest_in(tx: WriteTx, p: _Prepared, options: DedupOptions, now: datetime) -> IngestResult:
    r = p.record
    tx.lock(_lock_keys(p))
    duplicate = tx.duplicate_of(r)
    if duplicate is not None:
        dup_id, reason = duplicate
        # Another outlet's copy still reports the development: keep its source and URL.
        dev_id = tx.development_of(dup_id)
        if tx.add_alias(dup_id, r, seen=now):
            if dev_id is not None:
                tx.refresh_development(dev_id, updated=p.time)
            tx.bump_feed_version()
        return IngestResult(
            record_id=dup_id,
            stored=False,
            development_id=dev_id,
            reason=reason,
            score=1.0,
            topics=tx.topics_of(dup_id),
            matched_record_id=dup_id,
        )
    stored = tx.candidates(
        bands=p.fingerprint.bands,
        key_terms=p.fingerprint.key_terms,
        time=p.time,
        window=timedelta(days=options.window_days),
        cap=CANDIDATE_CAP,
    )
    candidates = [
        dedup.Candidate(
            record_id=c.record_id,
            development_id=c.development_id,
            fingerprint=dedup.fingerprint_from_json(c.fingerprint_json),
            time=c.time,
        )
        for c in stored
    ]
    decision = dedup.decide(p.fingerprint, p.time, candidates, options)
    tx.add_record(r, time=p.time, ingested=now)
    tx.add_topic_matches(p.matches)
    tx.add_fingerprint(
        r.id,
        p.fingerprint_json,
        bands=p.fingerprint.bands,
        key_terms=p.fingerprint.key_terms,
        time=p.time,
    )
    dev_id = decision.development_id
    if dev_id is None:
        dev_id = tx.create_development(r.id, first_seen=p.time)
    tx.add_membership(
        r.id,
        dev_id,
        reason=decision.reason,
        score=decision.score,
        matched_record_id=decision.matched_record_id,
        joined=now,
    )
    known = {c.record_id: c.fingerprint for c in candidates}
    known[r.id] = p.fingerprint
    tx.refresh_development(dev_id, updated=p.time, known=known)
    tx.bump_feed_version()
    return IngestResult(
        record_id=r.id,
        stored=True,
        development_id=dev_id,
        reason=decision.reason,
        score=decision.score,
        topics=tuple(sorted({m.topic_id for m in p.matches})),
        matched_record_id=decision.matched_record_id,
    )


@dataclass(slots=True)
class ImportSummary:
    """What ``import_records`` did."""

    files: int = 0
    imported: int = 0  # records stored
    duplicates: int = 0  # exact duplicates of stored records, not stored again
    new_developments: int = 0  # developments the imported records started
    joined: int = 0  # records that joined an existing development
    skipped: list[str] = field(default_factory=list)  # files in folders that are not records
    warnings: list[str] = field(default_factory=list)
    results: list[IngestResult] = field(default_factory=list)


def import_records(
    store: Store,
    paths: Sequence[Path],
    *,
    matcher: TopicMatcher,
    options: DedupOptions,
    source_topics: Mapping[str, Sequence[str]] | None = None,
    now: datetime,
) -> ImportSummary:
    """Import record files or folders (seed format, optional index.jsonl): every record goes
    through ``ingest`` like a fetched one, so importing twice adds nothing.

    ``source_topics`` maps a watchlist source id to its topics: a record from that source is
    matched against those only, as when fetched. All files are read and checked first; a bad
    file stops the import before anything is stored (``transfer.ImportProblems``).
    """
    batch = read_import(paths, now=now)
    summary = ImportSummary(files=len(batch.items), skipped=batch.skipped, warnings=batch.warnings)
    topics_of = source_topics or {}
    for item in batch.items:
        record = item.record
        allowed = topics_of.get(record.source_id, ()) if record.source_id else ()
        result = ingest(
            store, record, matcher=matcher, options=options, allowed_topics=allowed, now=now
        )
        summary.results.append(result)
        if not result.stored:
            summary.duplicates += 1
            continue
        summary.imported += 1
        if result.reason is DedupReason.NEW:
            summary.new_developments += 1
        else:
            summary.joined += 1
    return summary
