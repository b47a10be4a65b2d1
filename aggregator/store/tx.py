"""``WriteTx``: the operations ``pipeline.ingest`` and the admin actions run inside one write
transaction (see core.py for the concurrency design)."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from aggregator import dedup
from aggregator.errors import StoreError
from aggregator.model import DedupReason, Record, TopicMatch
from aggregator.store import driver
from aggregator.store import schema as t
from aggregator.store.common import chunks, development_id_for, lock_key
from aggregator.store.engine import is_postgres
from aggregator.store.queries import find_duplicate_row, refresh_development, resolve_development

MAX_KEY_CHARS = 100  # the width of lsh_bands.band; key_terms.term is wider


def index_keys(keys: Sequence[str]) -> list[str]:
    """Distinct band/term keys, in order, cut to the indexed column width (keys are short
    stems and hashes; a freak long one must not fail the insert, and cutting it the same way
    on insert and on lookup keeps it findable)."""
    return list(dict.fromkeys(k[:MAX_KEY_CHARS] for k in keys if k))


@dataclass(frozen=True, slots=True)
class StoredCandidate:
    """A stored record found by the candidate query (its fingerprint: ``fingerprint_data``)."""

    record_id: str
    development_id: str
    time: datetime
    shared_keys: int
    seq: int  # the record's insertion number: with the record id, names this stored row

    def cache_key(self, instance: str) -> str:
        """A key no other stored row shares, in this database or another (a record pruned and
        stored again gets a new seq), for caching what is derived from the row."""
        return f"{instance}:{self.record_id}:{self.seq}"


def _newest_hits(table: sa.Table, column: sa.Column[Any], i: int) -> sa.Select[Any]:
    """The newest ``per_key`` index hits of one key within the window: a backward range scan
    of the (key, time) index that stops after ``per_key`` rows, however common the key."""
    lo, hi = sa.bindparam("lo", type_=t.UTCDateTime()), sa.bindparam("hi", type_=t.UTCDateTime())
    newest = (
        sa.select(table.c.record_id, table.c.time)
        .where(column == sa.bindparam(f"{column.name}{i}"), table.c.time.between(lo, hi))
        .order_by(table.c.time.desc(), table.c.record_id.desc())
        .limit(sa.bindparam("per_key"))
        .subquery()
    )
    return sa.select(newest.c.record_id, newest.c.time)


@functools.cache
def _candidates_statement(n_bands: int, n_terms: int) -> sa.Select[Any]:
    """The candidate query for a record with ``n_bands`` bands and ``n_terms`` key terms, built
    once per shape (at most 17 x 13 of them). Each key contributes its newest
    ``dedup.CANDIDATE_ROWS_PER_KEY`` hits only, so the rows read are bounded by the number of
    keys, not by the store: a key in hundreds of records of the window (a capital's name) is a
    stop word of the moment, and its older hits would add cost, not candidates that matter."""
    b, k, m, r = t.lsh_bands, t.key_terms, t.memberships, t.records
    parts = [_newest_hits(b, b.c.band, i) for i in range(n_bands)]
    parts += [_newest_hits(k, k.c.term, i) for i in range(n_terms)]
    hits = sa.union_all(*parts).subquery("hits")
    ranked = (
        sa.select(
            hits.c.record_id,
            sa.func.count().label("shared"),
            sa.func.max(hits.c.time).label("time"),
        )
        .group_by(hits.c.record_id)
        .subquery("ranked")
    )
    best_first = (ranked.c.shared.desc(), ranked.c.time.desc(), ranked.c.record_id)
    placed = (
        sa.select(
            ranked.c.record_id,
            ranked.c.shared,
            m.c.development_id,
            ranked.c.time,
            # The hit's place among its development's hits: dedup.select_candidates in SQL.
            sa.func.row_number()
            .over(partition_by=m.c.development_id, order_by=best_first)
            .label("place"),
        )
        .join(m, m.c.record_id == ranked.c.record_id)
        .where(ranked.c.record_id != sa.bindparam("exclude"))
        .subquery("placed")
    )
    p = placed.c
    chosen = (
        sa.select(p.record_id, p.shared, p.development_id, p.time)
        .where(p.place <= sa.bindparam("per_development"))
        .order_by(p.shared.desc(), p.time.desc(), p.record_id)
        .limit(sa.bindparam("cap"))
        .subquery("chosen")
    )
    c = chosen.c
    # The records table (wide: it holds the texts) is read for the chosen few only, not for
    # every hit: up to 28 keys x 64 hits would be as many random lookups.
    return (
        sa.select(c.record_id, c.shared, c.development_id, c.time, r.c.seq)
        .join(r, r.c.id == c.record_id)
        .order_by(c.shared.desc(), c.time.desc(), c.record_id)
    )


_INSERT_RECORDS = sa.insert(t.records)
_INSERT_FINGERPRINTS = sa.insert(t.fingerprints)
_INSERT_BANDS = sa.insert(t.lsh_bands)
_INSERT_TERMS = sa.insert(t.key_terms)
_INSERT_DEVELOPMENTS = sa.insert(t.developments)
_INSERT_MEMBERSHIPS = sa.insert(t.memberships)
_INSERT_DEVELOPMENT_TOPICS = sa.insert(t.development_topics)
_INSERT_TOPIC_MATCHES = sa.insert(t.topic_matches)


@dataclass(frozen=True, slots=True)
class NewDevelopment:
    """A development started in a batch, written with its final title and summary at once."""

    id: str
    title: str
    summary: str
    first_seen: datetime
    updated: datetime
    representative_id: str
    topics: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class NewMember:
    """A record and everything stored with it when a batch is written (see ``add_batch``)."""

    record: Record
    time: datetime
    matches: tuple[TopicMatch, ...]
    fingerprint_json: str
    bands: tuple[str, ...]
    key_terms: tuple[str, ...]
    development_id: str
    reason: DedupReason
    score: float
    matched_record_id: str | None


# --------------------------------------------------------------------------------------------
# one write transaction
# --------------------------------------------------------------------------------------------


class WriteTx:
    """The operations ``pipeline.ingest`` runs inside one write transaction."""

    def __init__(self, conn: sa.Connection, instance: str = "") -> None:
        self.conn = conn
        self.instance = instance  # Store.instance

    @property
    def is_postgres(self) -> bool:
        return is_postgres(self.conn)

    def lock(self, keys: Iterable[str]) -> None:
        """Serialize with every other transaction touching any of ``keys`` (PostgreSQL
        advisory locks, released at commit; SQLite already serializes writers)."""
        if not self.is_postgres:
            return
        ordered = sorted({lock_key(k) for k in keys})
        if ordered:
            # One round trip; a function scan of unnest() yields the array in order, so the
            # locks are taken in sorted order.
            self.conn.execute(
                sa.text("SELECT count(pg_advisory_xact_lock(k)) FROM unnest(:keys) AS k"),
                {"keys": ordered},
            )

    def duplicate_of(
        self,
        record: Record,
        *,
        time: datetime | None = None,
        headline_within: timedelta | None = None,
    ) -> tuple[str, DedupReason] | None:
        return find_duplicate_row(self.conn, record, time=time, headline_within=headline_within)

    def add_alias(self, stored_id: str, record: Record, *, seen: datetime) -> bool:
        """Remember that ``record``, an exact duplicate of ``stored_id``, was also published by
        its source at its URL; False when that place is known already (a refetch), or is the
        stored record's own page linked from another feed, or the same outlet's same headline
        (``headline_key``) relayed by a news search feed. Such a link is remembered with its
        GUID all the same (so ``Store.known_guids`` knows the entry and the feed's next change
        does not process it again) but is not another place the story was published:
        ``queries.developments_of`` leaves it out of the sources (and shows the outlet's own
        URL instead of a stored wrapped one: then this returns True, the feeds change)."""
        r, a = t.records, t.record_aliases
        place = (record.source_id, record.url or record.canonical_url, record.guid)
        stored = self.conn.execute(
            sa.select(
                r.c.source_id,
                r.c.url,
                r.c.canonical_url,
                r.c.guid,
                r.c.headline_key,
                r.c.outlet_url,
            ).where(r.c.id == stored_id)
        ).first()
        if stored is None:
            return False
        same_page = place[1] is not None and place[1] in (stored.url, stored.canonical_url)
        if record.headline_key and record.headline_key == stored.headline_key and not same_page:
            # The outlet's own copy and a news search feed's relay of it: one place. Shown
            # only when it replaces the stored record's wrapped link with the outlet's own.
            same_page = not (
                dedup.wrapped_link(stored.url, stored.outlet_url)
                and not dedup.wrapped_link(record.url, record.outlet_url)
            )
        if stored.source_id == place[0] and (place[1] is None or place[2] == stored.guid):
            return False  # the same entry of the same source
        if place[0] is None and (place[1] is None or same_page):
            return False  # nothing to show or know: an anonymous re-import of the same text
        if same_page and not place[2]:
            return False  # the same page, and no GUID to know the feed's entry by
        known = self.conn.execute(
            sa.select(a.c.source_id, a.c.url, a.c.guid).where(a.c.record_id == stored_id)
        ).all()
        for row in known:
            if row.source_id == place[0] and (
                row.url == place[1] or (place[2] and row.guid == place[2])
            ):
                return False
        self.conn.execute(
            sa.insert(a).values(
                record_id=stored_id,
                source_id=place[0],
                url=place[1],
                guid=place[2],
                published=record.published,
                seen=seen,
                outlet=record.outlet,
                headline_key=record.headline_key,
            )
        )
        return not same_page

    def development_of(self, record_id: str) -> str | None:
        return self.conn.execute(
            sa.select(t.memberships.c.development_id).where(t.memberships.c.record_id == record_id)
        ).scalar_one_or_none()

    def topics_of(self, record_id: str) -> tuple[str, ...]:
        return tuple(
            self.conn.execute(
                sa.select(t.topic_matches.c.topic_id)
                .where(t.topic_matches.c.record_id == record_id)
                .order_by(t.topic_matches.c.topic_id)
            ).scalars()
        )

    def add_record(self, record: Record, *, time: datetime, ingested: datetime) -> None:
        values: dict[str, Any] = {
            "id": record.id,
            "text": record.text,
            "title": record.title,
            "url": record.url,
            "canonical_url": record.canonical_url,
            "guid": record.guid,
            "source_id": record.source_id,
            "published": record.published,
            "fetched": record.fetched,
            "ingested": ingested,
            "time": time,
            "language": record.language,
            "author": record.author,
            "content_hash": record.content_hash,
            "outlet": record.outlet,
            "outlet_url": record.outlet_url,
            "headline_key": record.headline_key,
        }
        if not self.is_postgres:
            # SQLite ignores identity columns; writers are serialized, so max+1 is safe.
            values["seq"] = (
                sa.select(sa.func.coalesce(sa.func.max(t.records.c.seq), 0) + 1)
            ).scalar_subquery()
        self.conn.execute(sa.insert(t.records).values(**values))

    def add_topic_matches(self, matches: Sequence[TopicMatch]) -> None:
        if matches:
            self.conn.execute(
                sa.insert(t.topic_matches),
                [
                    {"record_id": m.record_id, "topic_id": m.topic_id, "terms": list(m.terms)}
                    for m in matches
                ],
            )

    def add_fingerprint(
        self,
        record_id: str,
        data: str,
        *,
        bands: Sequence[str],
        key_terms: Sequence[str],
        time: datetime,
    ) -> None:
        """Store a record's fingerprint and index its LSH bands and key terms."""
        self.conn.execute(sa.insert(t.fingerprints).values(record_id=record_id, data=data))
        if bands:
            self.conn.execute(
                sa.insert(t.lsh_bands),
                [{"band": b, "record_id": record_id, "time": time} for b in index_keys(bands)],
            )
        if key_terms:
            self.conn.execute(
                sa.insert(t.key_terms),
                [{"term": k, "record_id": record_id, "time": time} for k in index_keys(key_terms)],
            )

    def candidates(
        self,
        *,
        bands: Sequence[str],
        key_terms: Sequence[str],
        time: datetime,
        window: timedelta,
        cap: int,
        exclude: str | None = None,
        per_key: int | None = None,
        per_development: int | None = None,
    ) -> list[StoredCandidate]:
        """Stored records sharing an LSH band or a key term with a record filed at ``time``,
        within ``window`` either side: those sharing the most keys first, then the most recent,
        at most ``per_development`` of one development (default
        ``dedup.MAX_CANDIDATES_PER_DEVELOPMENT``), at most ``cap``. Per key, only its newest
        ``per_key`` hits within the window count (default ``dedup.CANDIDATE_ROWS_PER_KEY``): a
        bounded index range scan per key, never a scan, and no cost that grows with the store."""
        band_keys, term_keys = index_keys(bands), index_keys(key_terms)
        if not band_keys and not term_keys:
            return []
        params: dict[str, Any] = {f"band{i}": key for i, key in enumerate(band_keys)}
        params.update((f"term{i}", key) for i, key in enumerate(term_keys))
        params |= {
            "per_key": dedup.CANDIDATE_ROWS_PER_KEY if per_key is None else per_key,
            "lo": time - window,
            "hi": time + window,
            # No record id is empty: "" excludes nothing.
            "exclude": exclude if exclude is not None else "",
            "cap": cap,
            "per_development": (
                dedup.MAX_CANDIDATES_PER_DEVELOPMENT if per_development is None else per_development
            ),
        }
        out = []
        statement = _candidates_statement(len(band_keys), len(term_keys))
        for record_id, shared, dev_id, when, seq in driver.execute(self.conn, statement, params):
            if isinstance(when, str):  # SQLite's driver returns timestamps as text
                when = datetime.fromisoformat(when)
            if when is None:
                when = time
            elif when.tzinfo is None:  # as schema.UTCDateTime reads it, without its overhead
                when = when.replace(tzinfo=UTC)
            else:
                when = when.astimezone(UTC)
            out.append(StoredCandidate(record_id, dev_id, when, int(shared), int(seq)))
        return out

    def fingerprint_data(self, record_ids: Sequence[str]) -> dict[str, str]:
        """The stored fingerprints (JSON) of ``record_ids``."""
        f = t.fingerprints
        out: dict[str, str] = {}
        for chunk in chunks(list(record_ids)):
            query = sa.select(f.c.record_id, f.c.data).where(f.c.record_id.in_(chunk))
            out.update((row.record_id, row.data) for row in self.conn.execute(query))
        return out

    # --- batches (pipeline.ingest_many) ---------------------------------------------------

    def possible_duplicates(self, batch: Sequence[Record]) -> set[str]:
        """Ids of the records of ``batch`` that a stored record or alias may duplicate (same
        id, content hash, canonical URL, source and GUID, or headline key): a few indexed
        lookups for the whole batch. Records not named here have no exact duplicate in the
        store."""
        r, a = t.records, t.record_aliases
        ids = {x.id for x in batch}
        hashes = {x.content_hash for x in batch}
        urls = {x.canonical_url for x in batch if x.canonical_url}
        guids = {(x.source_id, x.guid) for x in batch if x.guid and x.source_id}
        hit_ids: set[str] = set()
        hit_hashes: set[str] = set()
        hit_urls: set[str] = set()
        hit_guids: set[tuple[str | None, str | None]] = set()
        for column, values in (
            (r.c.id, ids),
            (r.c.content_hash, hashes),
            (r.c.canonical_url, urls),
            (r.c.guid, {g for _, g in guids}),
        ):
            for chunk in chunks(sorted(v for v in values if v is not None)):
                query = sa.select(
                    r.c.id, r.c.content_hash, r.c.canonical_url, r.c.source_id, r.c.guid
                )
                for row in self.conn.execute(query.where(column.in_(chunk))):
                    hit_ids.add(row.id)
                    hit_hashes.add(row.content_hash)
                    if row.canonical_url:
                        hit_urls.add(row.canonical_url)
                    hit_guids.add((row.source_id, row.guid))
        for chunk in chunks(sorted({g for _, g in guids if g is not None})):
            query = sa.select(a.c.source_id, a.c.guid).where(a.c.guid.in_(chunk))
            hit_guids.update((row.source_id, row.guid) for row in self.conn.execute(query))
        # A headline key counts only where find_duplicate_row can use it: one of the two links
        # is wrapped. Two pages of one site with one headline are not suspects.
        headlines = sorted({x.headline_key for x in batch if x.headline_key})
        hit_headlines: dict[str, bool] = {}  # key -> some stored record with it is wrapped
        for chunk in chunks(headlines):
            by_key = sa.select(r.c.headline_key, r.c.url, r.c.outlet_url).where(
                r.c.headline_key.in_(chunk)
            )
            for key, url, outlet_url in self.conn.execute(by_key):
                wrapped = dedup.wrapped_link(url, outlet_url)
                hit_headlines[key] = hit_headlines.get(key, False) or wrapped
        return {
            x.id
            for x in batch
            if x.id in hit_ids
            or x.content_hash in hit_hashes
            or (x.canonical_url and x.canonical_url in hit_urls)
            or (x.guid and x.source_id and (x.source_id, x.guid) in hit_guids)
            or (
                x.headline_key in hit_headlines
                and (hit_headlines[x.headline_key] or dedup.wrapped_link(x.url, x.outlet_url))
            )
        }

    def existing_developments(self, dev_ids: Sequence[str]) -> set[str]:
        """The development ids among ``dev_ids`` that are taken."""
        d = t.developments
        found: set[str] = set()
        for chunk in chunks(sorted(set(dev_ids))):
            found.update(self.conn.execute(sa.select(d.c.id).where(d.c.id.in_(chunk))).scalars())
        return found

    def add_batch(
        self,
        members: Sequence[NewMember],
        developments: Sequence[NewDevelopment],
        *,
        ingested: datetime,
    ) -> dict[str, int]:
        """Write decided records with everything that goes with them, a statement per table
        (executemany), in insertion order: records, topic matches, fingerprints and their
        index rows, the developments they start (complete), memberships. Returns each record's
        insertion number where the database told it (SQLite; {} on PostgreSQL)."""
        if not members:
            return {}
        rows: list[dict[str, Any]] = [
            {
                "id": m.record.id,
                "text": m.record.text,
                "title": m.record.title,
                "url": m.record.url,
                "canonical_url": m.record.canonical_url,
                "guid": m.record.guid,
                "source_id": m.record.source_id,
                "published": m.record.published,
                "fetched": m.record.fetched,
                "ingested": ingested,
                "time": m.time,
                "language": m.record.language,
                "author": m.record.author,
                "content_hash": m.record.content_hash,
                "outlet": m.record.outlet,
                "outlet_url": m.record.outlet_url,
                "headline_key": m.record.headline_key,
            }
            for m in members
        ]
        seqs: dict[str, int] = {}
        if not self.is_postgres:
            # SQLite ignores identity columns; writers are serialized, so max+1 is safe.
            last = self.conn.execute(
                sa.select(sa.func.coalesce(sa.func.max(t.records.c.seq), 0))
            ).scalar_one()
            for i, row in enumerate(rows, start=int(last) + 1):
                row["seq"] = i
                seqs[row["id"]] = i
        driver.insert_many(self.conn, _INSERT_RECORDS, rows)
        matches = [
            {"record_id": x.record_id, "topic_id": x.topic_id, "terms": list(x.terms)}
            for m in members
            for x in m.matches
        ]
        driver.insert_many(self.conn, _INSERT_TOPIC_MATCHES, matches)
        driver.insert_many(
            self.conn,
            _INSERT_FINGERPRINTS,
            [{"record_id": m.record.id, "data": m.fingerprint_json} for m in members],
        )
        bands = [
            {"band": b, "record_id": m.record.id, "time": m.time}
            for m in members
            for b in index_keys(m.bands)
        ]
        driver.insert_many(self.conn, _INSERT_BANDS, bands)
        terms = [
            {"term": k, "record_id": m.record.id, "time": m.time}
            for m in members
            for k in index_keys(m.key_terms)
        ]
        driver.insert_many(self.conn, _INSERT_TERMS, terms)
        if developments:
            driver.insert_many(
                self.conn,
                _INSERT_DEVELOPMENTS,
                [
                    {
                        "id": d.id,
                        "title": d.title,
                        "summary": d.summary,
                        "first_seen": d.first_seen,
                        "updated": d.updated,
                        "representative_id": d.representative_id,
                    }
                    for d in developments
                ],
            )
            topics = [
                {"development_id": d.id, "topic_id": topic}
                for d in developments
                for topic in d.topics
            ]
            driver.insert_many(self.conn, _INSERT_DEVELOPMENT_TOPICS, topics)
        driver.insert_many(
            self.conn,
            _INSERT_MEMBERSHIPS,
            [
                {
                    "record_id": m.record.id,
                    "development_id": m.development_id,
                    "reason": str(m.reason),
                    "score": float(m.score),
                    "matched_record_id": m.matched_record_id,
                    "manual": False,
                    "joined": ingested,
                }
                for m in members
            ],
        )
        return seqs

    def create_development(self, record_id: str, *, first_seen: datetime) -> str:
        """A new development started by ``record_id`` (title and summary filled by refresh)."""
        for attempt in range(100):
            dev_id = development_id_for(record_id, "" if attempt == 0 else str(attempt))
            exists = self.conn.execute(
                sa.select(t.developments.c.id).where(t.developments.c.id == dev_id)
            ).first()
            if exists is None:
                break
        else:  # pragma: no cover - needs 100 sha256 collisions
            raise StoreError(f"cannot derive a free development id for record {record_id}")
        self.conn.execute(
            sa.insert(t.developments).values(
                id=dev_id,
                title="",
                summary="",
                first_seen=first_seen,
                updated=first_seen,
                representative_id=record_id,
            )
        )
        return dev_id

    def add_membership(
        self,
        record_id: str,
        dev_id: str,
        *,
        reason: DedupReason,
        score: float,
        matched_record_id: str | None,
        joined: datetime,
        manual: bool = False,
    ) -> None:
        self.conn.execute(
            sa.insert(t.memberships).values(
                record_id=record_id,
                development_id=dev_id,
                reason=str(reason),
                score=float(score),
                matched_record_id=matched_record_id,
                manual=manual,
                joined=joined,
            )
        )

    def refresh_development(
        self,
        dev_id: str,
        *,
        updated: datetime,
        known: Mapping[str, dedup.Fingerprint] | None = None,
    ) -> None:
        """Recompute a development's title, summary, representative and topics from its members
        and move ``updated`` forward to ``updated``; a development left empty is deleted.
        ``known`` holds fingerprints the caller parsed already (saves parsing them again)."""
        refresh_development(self.conn, dev_id, updated, known)

    def bump_feed_version(self) -> None:
        self.conn.execute(
            sa.update(t.store_meta)
            .where(t.store_meta.c.id == 1)
            .values(feed_version=t.store_meta.c.feed_version + 1)
        )

    # --- admin decisions ----------------------------------------------------------------

    def split_record(self, record_id: str, now: datetime) -> str:
        m = t.memberships
        old_dev = self.development_of(record_id)
        if old_dev is None:
            if self.conn.execute(
                sa.select(t.records.c.id).where(t.records.c.id == record_id)
            ).first():
                raise StoreError(f"record {record_id} belongs to no development")
            raise StoreError(f"no record {record_id}")
        members = self.conn.execute(
            sa.select(sa.func.count()).select_from(m).where(m.c.development_id == old_dev)
        ).scalar_one()
        if members <= 1:
            raise StoreError(
                f"record {record_id} is the only member of development {old_dev}: nothing to split"
            )
        record_at = self.conn.execute(
            sa.select(t.records.c.time).where(t.records.c.id == record_id)
        ).scalar_one()
        new_dev = self._new_development_id(record_id, f"split:{now.isoformat()}")
        self.conn.execute(
            sa.insert(t.developments).values(
                id=new_dev,
                title="",
                summary="",
                first_seen=min(record_at, now),
                updated=now,
                representative_id=record_id,
            )
        )
        self.conn.execute(
            sa.update(m)
            .where(m.c.record_id == record_id)
            .values(
                development_id=new_dev,
                reason=str(DedupReason.MANUAL),
                score=1.0,
                matched_record_id=None,
                manual=True,
                joined=now,
            )
        )
        refresh_development(self.conn, old_dev, now)
        refresh_development(self.conn, new_dev, now)
        self.bump_feed_version()
        return new_dev

    def merge_developments(self, keep_id: str, other_id: str, now: datetime) -> None:
        d, m = t.developments, t.memberships
        keep = resolve_development(self.conn, keep_id)
        other = resolve_development(self.conn, other_id)
        if keep is None:
            raise StoreError(f"no development {keep_id}")
        if other is None:
            raise StoreError(f"no development {other_id}")
        if keep == other:
            raise StoreError(f"{keep_id} and {other_id} are the same development")
        rows = self.conn.execute(sa.select(d).where(d.c.id.in_([keep, other]))).all()
        by_id = {row.id: row for row in rows}
        self.conn.execute(
            sa.update(m)
            .where(m.c.development_id == other)
            .values(
                development_id=keep,
                reason=str(DedupReason.MANUAL),
                score=1.0,
                matched_record_id=by_id[keep].representative_id,
                manual=True,
                joined=now,
            )
        )
        self.conn.execute(
            sa.update(d)
            .where(sa.or_(d.c.id == other, d.c.merged_into == other))
            .values(merged_into=keep, updated=now)
        )
        self.conn.execute(
            sa.delete(t.development_topics).where(t.development_topics.c.development_id == other)
        )
        first_seen = min(by_id[keep].first_seen, by_id[other].first_seen)
        self.conn.execute(sa.update(d).where(d.c.id == keep).values(first_seen=first_seen))
        refresh_development(self.conn, keep, now)
        self.bump_feed_version()

    def _new_development_id(self, record_id: str, salt: str) -> str:
        for attempt in range(100):
            dev_id = development_id_for(record_id, f"{salt}:{attempt}")
            if (
                self.conn.execute(
                    sa.select(t.developments.c.id).where(t.developments.c.id == dev_id)
                ).first()
                is None
            ):
                return dev_id
        raise StoreError(f"cannot derive a free development id for record {record_id}")
