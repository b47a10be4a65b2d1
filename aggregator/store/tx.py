"""``WriteTx``: the operations ``pipeline.ingest`` and the admin actions run inside one write
transaction (see core.py for the concurrency design)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from aggregator.errors import StoreError
from aggregator.ingest.types import (
    DevelopmentWrite,
    Plan,
    StoredDevelopment,
    StoredExact,
    StoredRecord,
    StoredRow,
    development_id_for,
)
from aggregator.model import DedupReason, Record
from aggregator.store import driver
from aggregator.store import schema as t
from aggregator.store.common import CHUNK, chunks, lock_key
from aggregator.store.engine import is_postgres
from aggregator.store.queries import resolve_development

_INSERT_RECORDS = sa.insert(t.records)
_INSERT_FINGERPRINTS = sa.insert(t.fingerprints)
_INSERT_DEVELOPMENTS = sa.insert(t.developments)
_INSERT_MEMBERSHIPS = sa.insert(t.memberships)
_INSERT_DEVELOPMENT_TOPICS = sa.insert(t.development_topics)
_INSERT_TOPIC_MATCHES = sa.insert(t.topic_matches)
_INSERT_ALIASES = sa.insert(t.record_aliases)
_MAX_SEQ = sa.select(sa.func.coalesce(sa.func.max(t.records.c.seq), 0))
_WINDOW_MARKS = sa.select(
    sa.select(sa.func.coalesce(sa.func.max(t.records.c.seq), 0)).scalar_subquery(),
    t.store_meta.c.layout_version,
).where(t.store_meta.c.id == 1)
_BUMP_FEED_VERSION = (
    sa.update(t.store_meta)
    .where(t.store_meta.c.id == 1)
    .values(feed_version=t.store_meta.c.feed_version + 1)
)
_LATER = sa.case(
    (
        t.developments.c.updated < sa.bindparam("new_updated", type_=t.UTCDateTime()),
        sa.bindparam("new_updated", type_=t.UTCDateTime()),
    ),
    else_=t.developments.c.updated,
)
_TOUCH_DEVELOPMENTS = (
    sa.update(t.developments)
    .where(t.developments.c.id == sa.bindparam("dev_id"))
    .values(updated=_LATER)
)
_REFRESH_DEVELOPMENTS = (
    sa.update(t.developments)
    .where(t.developments.c.id == sa.bindparam("dev_id"))
    .values(
        updated=_LATER,
        title=sa.bindparam("new_title"),
        summary=sa.bindparam("new_summary"),
        representative_id=sa.bindparam("new_representative"),
    )
)


def _many(name: str) -> sa.BindParameter[Any]:
    return sa.bindparam(name, expanding=True)


_r, _a, _m = t.records, t.record_aliases, t.memberships
_ALIASES_BY_GUID = (
    sa.select(_a.c.source_id, _a.c.guid, _a.c.record_id)
    .where(_a.c.guid.in_(_many("guids")))
    .order_by(_a.c.id)
)
_EXACT_ROWS = (
    sa.select(
        _r.c.id,
        _r.c.seq,
        _r.c.content_hash,
        _r.c.canonical_url,
        _r.c.source_id,
        _r.c.url,
        _r.c.guid,
        _m.c.development_id,
        _r.c.time,
        _r.c.outlet_url,
        _r.c.headline_key,
    )
    .outerjoin(_m, _m.c.record_id == _r.c.id)
    .where(
        sa.or_(
            _r.c.id.in_(_many("ids")),
            _r.c.content_hash.in_(_many("hashes")),
            _r.c.canonical_url.in_(_many("urls")),
            _r.c.guid.in_(_many("guids")),
            _r.c.headline_key.in_(_many("headlines")),
        )
    )
)
_TOPICS_OF = sa.select(t.topic_matches.c.record_id, t.topic_matches.c.topic_id).where(
    t.topic_matches.c.record_id.in_(_many("ids"))
)
_ALIASES_OF = (
    sa.select(_a.c.record_id, _a.c.source_id, _a.c.url, _a.c.guid)
    .where(_a.c.record_id.in_(_many("ids")))
    .order_by(_a.c.id)
)
_TAKEN = sa.select(t.developments.c.id).where(t.developments.c.id.in_(_many("ids")))
_SEQS = sa.select(_r.c.id, _r.c.seq).where(_r.c.id.in_(_many("ids")))
_TEXTS = sa.select(_r.c.id, _r.c.text).where(_r.c.id.in_(_many("ids")))
# The global ingest lock: one ingest transaction at a time across replicas, so each decides on
# a window caught up with every record stored before it (pipeline.ingest_many).
INGEST_LOCK = "ingest"


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

    def development_of(self, record_id: str) -> str | None:
        return self.conn.execute(
            sa.select(t.memberships.c.development_id).where(t.memberships.c.record_id == record_id)
        ).scalar_one_or_none()

    # --- ingest (pipeline.ingest_many): reads before the decision, one write after ----------

    def lock_ingest(self) -> None:
        """Hold the ingest lock until commit (PostgreSQL: an advisory lock; SQLite already
        serializes writers): the window is caught up and the plan written under it."""
        self.lock([INGEST_LOCK])

    def max_seq(self) -> int:
        """The highest record insertion number (0: no records)."""
        return int(driver.execute(self.conn, _MAX_SEQ).scalar_one())

    def window_marks(self) -> tuple[int, int]:
        """(the highest record insertion number, ``store_meta.layout_version``): what an
        ingesting process compares with what its window saw."""
        top, layout = tuple(driver.execute(self.conn, _WINDOW_MARKS).one())
        return int(top), int(layout)

    def window_cut(self, *, since: datetime, newest: int) -> datetime | None:
        """The filing time of the ``newest``-th newest stored record with a development filed
        from ``since`` on (None: there are fewer): where a window bounded to ``newest`` records
        starts."""
        r, m = t.records, t.memberships
        if newest <= 0:
            return None
        query = (
            sa.select(r.c.time)
            .join(m, m.c.record_id == r.c.id)
            .where(r.c.time >= since)
            .order_by(r.c.time.desc())
            .limit(1)
            .offset(newest - 1)
        )
        found: datetime | None = self.conn.execute(query).scalar()
        return found

    def window_records(
        self, *, after_seq: int, since: datetime, before: datetime | None = None
    ) -> Iterator[StoredRecord]:
        """Stored records with a development, inserted after ``after_seq`` and filed from
        ``since`` on (before ``before``, when given), with their fingerprints: streamed (a
        window rebuild reads 100,000 of them), to be consumed before the next statement."""
        r, m, f = t.records, t.memberships, t.fingerprints
        query = (
            sa.select(r.c.id, m.c.development_id, r.c.time, r.c.seq, r.c.title, f.c.data)
            .join(m, m.c.record_id == r.c.id)
            .outerjoin(f, f.c.record_id == r.c.id)
            .where(r.c.seq > after_seq, r.c.time >= since)
            .order_by(r.c.seq)
        )
        if before is not None:
            query = query.where(r.c.time < before)
        # Per statement: Connection.execution_options would stream every later query too.
        rows = self.conn.execute(query, execution_options={"yield_per": 1000})
        for row in rows:
            yield StoredRecord(*row)

    def window_developments(
        self, dev_ids: Iterable[str], members: int, *, fingerprints: bool = True
    ) -> list[StoredDevelopment]:
        """The developments ``dev_ids`` with their topics and ``members`` latest members
        (with their fingerprints unless ``fingerprints`` is false)."""
        d, dt, m, r, f = (
            t.developments,
            t.development_topics,
            t.memberships,
            t.records,
            t.fingerprints,
        )
        out = []
        for chunk in chunks(sorted(set(dev_ids))):
            topics: dict[str, list[str]] = {}
            for dev_id, topic in self.conn.execute(
                sa.select(dt.c.development_id, dt.c.topic_id).where(dt.c.development_id.in_(chunk))
            ):
                topics.setdefault(dev_id, []).append(topic)
            place = (
                sa.func.row_number()
                .over(partition_by=m.c.development_id, order_by=(r.c.time.desc(), r.c.seq.desc()))
                .label("place")
            )
            latest = (
                sa.select(m.c.development_id, r.c.id, r.c.time, r.c.seq, r.c.title, place)
                .join(r, r.c.id == m.c.record_id)
                .where(m.c.development_id.in_(chunk))
                .subquery()
            )
            held: dict[str, list[StoredRecord]] = {}
            rows = self.conn.execute(
                sa.select(
                    latest.c.development_id,
                    latest.c.id,
                    latest.c.time,
                    latest.c.seq,
                    latest.c.title,
                    f.c.data if fingerprints else sa.null(),
                )
                .outerjoin(f, f.c.record_id == latest.c.id)
                .where(latest.c.place <= members)
            )
            for dev_id, rid, when, seq, title, data in rows:
                held.setdefault(dev_id, []).append(
                    StoredRecord(rid, dev_id, when, seq, title, data)
                )
            for row in self.conn.execute(
                sa.select(d.c.id, d.c.representative_id, d.c.title).where(d.c.id.in_(chunk))
            ):
                out.append(
                    StoredDevelopment(
                        row.id,
                        row.representative_id,
                        row.title,
                        tuple(sorted(topics.get(row.id, ()))),
                        tuple(held.get(row.id, ())),
                    )
                )
        return out

    def fingerprints(self, record_ids: Iterable[str]) -> dict[str, str]:
        """The stored fingerprints (JSON) of ``record_ids``, of those that have one."""
        f = t.fingerprints
        out: dict[str, str] = {}
        for chunk in chunks(sorted(set(record_ids))):
            for rid, data in self.conn.execute(
                sa.select(f.c.record_id, f.c.data).where(f.c.record_id.in_(chunk))
            ):
                out[rid] = data
        return out

    def exact_keys(self, batch: Sequence[Record], dev_ids: Sequence[str]) -> StoredExact:
        """The stored records sharing an exact key with a record of ``batch`` (same id,
        content hash, canonical URL, GUID or headline key), the aliases with a batch record's
        source and GUID, and which of ``dev_ids`` are taken: what ``ingest.decide`` needs to
        find exact duplicates and choose new development ids."""
        guids = {(x.source_id, x.guid) for x in batch if x.guid and x.source_id}
        alias_guids: list[tuple[str, str, str]] = []
        for chunk in chunks(sorted({g for _, g in guids if g is not None})):
            for row in self.conn.execute(_ALIASES_BY_GUID, {"guids": list(chunk)}):
                if (row.source_id, row.guid) in guids:
                    alias_guids.append((row.source_id, row.guid, row.record_id))
        wanted = {
            "ids": {x.id for x in batch} | {rid for _, _, rid in alias_guids},
            "hashes": {x.content_hash for x in batch},
            "urls": {x.canonical_url for x in batch if x.canonical_url},
            "guids": {g for _, g in guids if g is not None},
            "headlines": {x.headline_key for x in batch if x.headline_key},
        }
        # One statement for every key (each IN list uses its column's index: SQLite's
        # multi-index OR, PostgreSQL's bitmap OR), at most CHUNK values per list.
        lists = {name: sorted(values) for name, values in wanted.items()}
        found: dict[str, Any] = {}
        for start in range(0, max(len(v) for v in lists.values()), CHUNK):
            params = {name: v[start : start + CHUNK] for name, v in lists.items()}
            for hit in self.conn.execute(_EXACT_ROWS, params):
                found[hit.id] = hit
        ids = sorted(found)
        topics: dict[str, list[str]] = {}
        places: dict[str, list[tuple[str | None, str | None, str | None]]] = {}
        for chunk in chunks(ids):
            for rid, topic in self.conn.execute(_TOPICS_OF, {"ids": list(chunk)}):
                topics.setdefault(rid, []).append(topic)
            for rid, source_id, url, guid in self.conn.execute(_ALIASES_OF, {"ids": list(chunk)}):
                places.setdefault(rid, []).append((source_id, url, guid))
        taken: set[str] = set()
        for chunk in chunks(sorted(set(dev_ids))):
            taken.update(self.conn.execute(_TAKEN, {"ids": list(chunk)}).scalars())
        return StoredExact(
            rows=tuple(
                StoredRow(
                    id=row.id,
                    seq=int(row.seq),
                    content_hash=row.content_hash,
                    canonical_url=row.canonical_url,
                    source_id=row.source_id,
                    url=row.url,
                    guid=row.guid,
                    development_id=row.development_id,
                    time=row.time,
                    outlet_url=row.outlet_url,
                    headline_key=row.headline_key,
                    topics=tuple(sorted(topics.get(row.id, ()))),
                    aliases=tuple(places.get(row.id, ())),
                )
                for row in found.values()
            ),
            alias_guids=tuple(alias_guids),
            taken_development_ids=frozenset(taken),
        )

    def record_texts(self, record_ids: Iterable[str]) -> dict[str, str]:
        out: dict[str, str] = {}
        for chunk in chunks(sorted(set(record_ids))):
            out.update((rid, text) for rid, text in self.conn.execute(_TEXTS, {"ids": list(chunk)}))
        return out

    def apply(self, plan: Plan, *, ingested: datetime) -> dict[str, int]:
        """Write ``plan`` as decided, a statement per table (executemany): records, their topic
        matches and fingerprints, the developments they start, memberships, aliases, updates
        of the developments they join, the feed version. Returns each new record's insertion
        number."""
        rows: list[dict[str, Any]] = []
        for n in plan.records:
            rec = n.prepared.record
            rows.append(
                {
                    "id": rec.id,
                    "text": rec.text,
                    "title": rec.title,
                    "url": rec.url,
                    "canonical_url": rec.canonical_url,
                    "guid": rec.guid,
                    "source_id": rec.source_id,
                    "published": rec.published,
                    "fetched": rec.fetched,
                    "ingested": ingested,
                    "time": n.prepared.time,
                    "language": rec.language,
                    "author": rec.author,
                    "content_hash": rec.content_hash,
                    "outlet": rec.outlet,
                    "outlet_url": rec.outlet_url,
                    "headline_key": rec.headline_key,
                }
            )
        seqs: dict[str, int] = {}
        if rows:
            if not self.is_postgres:
                # SQLite ignores identity columns; writers are serialized, so max+1 is safe.
                for i, row in enumerate(rows, start=self.max_seq() + 1):
                    row["seq"] = seqs[row["id"]] = i
            driver.insert_many(self.conn, _INSERT_RECORDS, rows)
            if self.is_postgres:
                ids = [row["id"] for row in rows]
                for chunk in chunks(ids):
                    found = self.conn.execute(_SEQS, {"ids": list(chunk)})
                    seqs.update((rid, int(seq)) for rid, seq in found)
        driver.insert_many(
            self.conn,
            _INSERT_TOPIC_MATCHES,
            [
                {"record_id": x.record_id, "topic_id": x.topic_id, "terms": list(x.terms)}
                for n in plan.records
                for x in n.prepared.matches
            ],
        )
        driver.insert_many(
            self.conn,
            _INSERT_FINGERPRINTS,
            [
                {"record_id": n.prepared.record.id, "data": n.prepared.fingerprint_json}
                for n in plan.records
                if n.prepared.fingerprint_json
            ],
        )
        created = [w for w in plan.developments if w.created]
        driver.insert_many(
            self.conn,
            _INSERT_DEVELOPMENTS,
            [
                {
                    "id": w.id,
                    "title": w.title or "",
                    "summary": w.summary or "",
                    "first_seen": w.first_seen,
                    "updated": w.updated,
                    "representative_id": w.representative_id,
                }
                for w in created
            ],
        )
        driver.insert_many(
            self.conn,
            _INSERT_MEMBERSHIPS,
            [
                {
                    "record_id": n.prepared.record.id,
                    "development_id": n.development_id,
                    "reason": str(n.reason),
                    "score": float(n.score),
                    "matched_record_id": n.matched_record_id,
                    "manual": False,
                    "joined": ingested,
                }
                for n in plan.records
                if n.development_id is not None
            ],
        )
        driver.insert_many(
            self.conn,
            _INSERT_ALIASES,
            [
                {
                    "record_id": x.record_id,
                    "source_id": x.source_id,
                    "url": x.url,
                    "guid": x.guid,
                    "published": x.published,
                    "seen": ingested,
                    "outlet": x.outlet,
                    "headline_key": x.headline_key,
                }
                for x in plan.aliases
            ],
        )
        self._update_developments([w for w in plan.developments if not w.created])
        driver.insert_many(
            self.conn,
            _INSERT_DEVELOPMENT_TOPICS,
            [{"development_id": w.id, "topic_id": x} for w in plan.developments for x in w.topics],
        )
        if plan.feed_changed:
            self.bump_feed_version()
        return seqs

    def delete_empty_developments(self, dev_ids: Sequence[str]) -> None:
        """Delete those of ``dev_ids`` left without members."""
        d, m = t.developments, t.memberships
        for chunk in chunks(sorted(set(dev_ids))):
            self.conn.execute(
                sa.delete(d).where(
                    d.c.id.in_(chunk), ~sa.exists().where(m.c.development_id == d.c.id)
                )
            )

    def reset_development_topics(self, dev_ids: Sequence[str]) -> None:
        """A development's topics become the union of its members' topic matches (after
        records moved in or out of it)."""
        dt, tm, m = t.development_topics, t.topic_matches, t.memberships
        for dev_id in dev_ids:
            self.conn.execute(sa.delete(dt).where(dt.c.development_id == dev_id))
            topics = self.conn.execute(
                sa.select(tm.c.topic_id)
                .distinct()
                .join(m, m.c.record_id == tm.c.record_id)
                .where(m.c.development_id == dev_id)
            ).scalars()
            driver.insert_many(
                self.conn,
                _INSERT_DEVELOPMENT_TOPICS,
                [{"development_id": dev_id, "topic_id": x} for x in sorted(topics)],
            )

    def update_developments(self, writes: Sequence[DevelopmentWrite]) -> None:
        """Write refreshed developments as decided (``updated`` only moves forward)."""
        self._update_developments(writes)

    def _update_developments(self, writes: Sequence[DevelopmentWrite]) -> None:
        driver.execute_many(
            self.conn,
            _TOUCH_DEVELOPMENTS,
            [
                {"dev_id": w.id, "new_updated": w.updated}
                for w in writes
                if w.representative_id is None
            ],
        )
        driver.execute_many(
            self.conn,
            _REFRESH_DEVELOPMENTS,
            [
                {
                    "dev_id": w.id,
                    "new_updated": w.updated,
                    "new_title": w.title or "",
                    "new_summary": w.summary or "",
                    "new_representative": w.representative_id,
                }
                for w in writes
                if w.representative_id is not None
            ],
        )

    def bump_layout_version(self) -> None:
        """Records moved or removed outside ingest: ingesting processes rebuild their windows."""
        self.conn.execute(
            sa.update(t.store_meta)
            .where(t.store_meta.c.id == 1)
            .values(layout_version=t.store_meta.c.layout_version + 1)
        )

    def bump_feed_version(self) -> None:
        driver.execute(self.conn, _BUMP_FEED_VERSION)

    # --- admin decisions ----------------------------------------------------------------

    def split_record(self, record_id: str, now: datetime) -> tuple[str, str]:
        """Move a record out of its development into a new one of its own; returns (the old
        development, the new one), both to be refreshed (``ingest_driver.split_record``)."""
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
        self.bump_feed_version()
        self.bump_layout_version()
        return old_dev, new_dev

    def merge_developments(self, keep_id: str, other_id: str, now: datetime) -> str:
        """Move every record of ``other_id`` into ``keep_id`` (``other_id`` then resolves to
        it); returns the development that holds them, to be refreshed."""
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
        self.bump_feed_version()
        self.bump_layout_version()
        return keep

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
