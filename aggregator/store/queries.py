"""Queries shared by ``Store`` (reads, admin actions) and ``WriteTx`` (ingest), and the
conversions of rows to model types."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from aggregator import identity
from aggregator.errors import StoreError
from aggregator.model import (
    DedupReason,
    Development,
    FailureClass,
    FetchState,
    Membership,
    Record,
    SourceRef,
    TopicMatch,
)
from aggregator.store import schema as t
from aggregator.store.common import chunks

# --------------------------------------------------------------------------------------------
# rows to model types
# --------------------------------------------------------------------------------------------

RECORD_COLUMNS = (
    t.records.c.id,
    t.records.c.text,
    t.records.c.title,
    t.records.c.content_hash,
    t.records.c.url,
    t.records.c.canonical_url,
    t.records.c.guid,
    t.records.c.source_id,
    t.records.c.published,
    t.records.c.fetched,
    t.records.c.language,
    t.records.c.author,
    t.records.c.outlet,
    t.records.c.outlet_url,
    t.records.c.headline_key,
)


def record_of(row: Any) -> Record:
    return Record(
        id=row.id,
        text=row.text,
        title=row.title,
        content_hash=row.content_hash,
        url=row.url,
        canonical_url=row.canonical_url,
        guid=row.guid,
        source_id=row.source_id,
        published=row.published,
        fetched=row.fetched,
        language=row.language,
        author=row.author,
        outlet=row.outlet,
        outlet_url=row.outlet_url,
        headline_key=row.headline_key,
    )


def fetch_state_of(row: Any) -> FetchState:
    failure_class = None
    if row.failure_class:
        try:
            failure_class = FailureClass(row.failure_class)
        except ValueError:
            failure_class = FailureClass.INTERNAL
    return FetchState(
        source_id=row.source_id,
        etag=row.etag,
        last_modified=row.last_modified,
        next_fetch=row.next_fetch,
        last_attempt=row.last_attempt,
        last_success=row.last_success,
        consecutive_failures=row.consecutive_failures,
        failure_class=failure_class,
        last_error=row.last_error,
        failure_counts={str(k): int(v) for k, v in (row.failure_counts or {}).items()},
        fetch_count=row.fetch_count,
        moved_from=row.moved_from,
        moved_to=row.moved_to,
        skip_hours=_bits_set(row.skip_hours),
        skip_days=_bits_set(row.skip_days),
    )


def _bits_set(value: int | None) -> frozenset[int]:
    """The set bits of ``value`` (a column of bit sets); empty for NULL."""
    return frozenset(i for i in range(32) if value and value >> i & 1)


def membership_of(row: Any) -> Membership:
    try:
        reason = DedupReason(row.reason)
    except ValueError:
        reason = DedupReason.MANUAL
    return Membership(
        record_id=row.record_id,
        development_id=row.development_id,
        reason=reason,
        score=float(row.score),
        matched_record_id=row.matched_record_id,
    )


# --------------------------------------------------------------------------------------------
# queries shared by Store and WriteTx
# --------------------------------------------------------------------------------------------


def resolve_development(conn: sa.Connection, dev_id: str) -> str | None:
    """Follow ``merged_into`` links to the development that holds the records now."""
    d = t.developments
    current = dev_id
    for _ in range(20):
        row = conn.execute(sa.select(d.c.id, d.c.merged_into).where(d.c.id == current)).first()
        if row is None:
            return None
        if row.merged_into is None:
            return str(row.id)
        current = row.merged_into
    raise StoreError(f"development {dev_id}: merge chain too long or circular")


def record_topic_matches(
    conn: sa.Connection, record_ids: Sequence[str]
) -> dict[str, tuple[TopicMatch, ...]]:
    out: dict[str, list[TopicMatch]] = {}
    tm = t.topic_matches
    for chunk in chunks(list(record_ids)):
        query = sa.select(tm).where(tm.c.record_id.in_(chunk)).order_by(tm.c.topic_id)
        for row in conn.execute(query):
            out.setdefault(row.record_id, []).append(
                TopicMatch(topic_id=row.topic_id, record_id=row.record_id, terms=tuple(row.terms))
            )
    return {k: tuple(v) for k, v in out.items()}


def developments_of(conn: sa.Connection, rows: Sequence[Any]) -> list[Development]:
    """Model developments for ``rows`` of the developments table, in the same order."""
    if not rows:
        return []
    ids = [row.id for row in rows]
    m, r, s = t.memberships, t.records, t.sources
    members: dict[str, list[Any]] = {i: [] for i in ids}
    for chunk in chunks(ids):
        query = (
            sa.select(
                m.c.development_id,
                r.c.id,
                r.c.source_id,
                r.c.url,
                r.c.title,
                r.c.published,
                r.c.canonical_url,
                r.c.outlet,
                r.c.outlet_url,
                r.c.headline_key,
                s.c.title.label("source_title"),
            )
            .join(r, r.c.id == m.c.record_id)
            .outerjoin(s, s.c.id == r.c.source_id)
            .where(m.c.development_id.in_(chunk))
            .order_by(r.c.time, r.c.seq)
        )
        for row in conn.execute(query):
            members[row.development_id].append(row)
    aliases: dict[str, list[Any]] = {i: [] for i in ids}
    own_url: dict[str, str] = {}  # record id -> the outlet's own URL of a wrapped link
    a = t.record_aliases
    for chunk in chunks(ids):
        alias_query = (
            sa.select(
                m.c.development_id,
                a.c.record_id,
                a.c.source_id,
                a.c.url,
                a.c.published,
                a.c.outlet,
                a.c.headline_key,
                r.c.title,
                s.c.title.label("source_title"),
                r.c.url.label("record_url"),
                r.c.canonical_url.label("record_canonical_url"),
                r.c.outlet_url.label("record_outlet_url"),
                r.c.headline_key.label("record_headline_key"),
            )
            .join(m, m.c.record_id == a.c.record_id)
            .join(r, r.c.id == a.c.record_id)
            .outerjoin(s, s.c.id == a.c.source_id)
            .where(m.c.development_id.in_(chunk))
            .order_by(a.c.seen, a.c.id)
        )
        for alias in conn.execute(alias_query):
            # The record's own page linked from another feed (kept for its GUID): the same
            # place, not another outlet.
            if alias.url is not None and alias.url in (
                alias.record_url,
                alias.record_canonical_url,
            ):
                continue
            if alias.headline_key and alias.headline_key == alias.record_headline_key:
                # The same outlet's same headline: one place. When the record's link is a
                # news search feed's wrapped one and this is the outlet's own, show this one.
                if identity.wrapped_link(alias.record_url, alias.record_outlet_url) and not (
                    identity.wrapped_link(alias.url, alias.record_outlet_url)
                ):
                    own_url.setdefault(alias.record_id, alias.url)
                continue
            aliases[alias.development_id].append(alias)
    topics: dict[str, list[str]] = {i: [] for i in ids}
    dt = t.development_topics
    for chunk in chunks(ids):
        query = sa.select(dt).where(dt.c.development_id.in_(chunk)).order_by(dt.c.topic_id)
        for row in conn.execute(query):
            topics[row.development_id].append(row.topic_id)
    all_records = [row.id for rows_ in members.values() for row in rows_]
    matches = record_topic_matches(conn, all_records)
    out = []
    for row in rows:
        mem = members[row.id]
        terms: dict[str, None] = {}
        for rec in mem:
            for match in matches.get(rec.id, ()):
                terms.update(dict.fromkeys(match.terms))
        out.append(
            Development(
                id=row.id,
                title=row.title,
                summary=row.summary,
                topics=tuple(topics[row.id]),
                first_seen=row.first_seen,
                updated=row.updated,
                record_ids=tuple(rec.id for rec in mem),
                sources=tuple(
                    SourceRef(
                        record_id=rec.id,
                        source_id=rec.source_id,
                        source_title=rec.outlet or rec.source_title or rec.source_id or "",
                        url=own_url.get(rec.id, rec.url),
                        title=rec.title,
                        published=rec.published,
                        canonical_url=rec.canonical_url,
                    )
                    for rec in mem
                )
                + tuple(
                    SourceRef(
                        record_id=alias.record_id,
                        source_id=alias.source_id,
                        source_title=alias.outlet or alias.source_title or alias.source_id or "",
                        url=alias.url,
                        title=alias.title,
                        published=alias.published,
                    )
                    for alias in aliases[row.id]
                ),
                terms=tuple(terms),
            )
        )
    return out
