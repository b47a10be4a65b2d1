"""The ``Store``: every read and write of the database, returning ``model`` types.

Transactions are short and explicit. Reads use a plain (deferred) transaction; writes use
``BEGIN IMMEDIATE`` on SQLite (see engine.py). ``Store.write()`` hands ``pipeline.ingest`` a
``WriteTx`` holding one transaction, so the exact-duplicate check, the insert, the candidate
query and the development decision commit together or not at all.

Concurrency on PostgreSQL (several replicas): ``WriteTx.lock`` takes transaction-scoped advisory
locks on the keys of a story (record id, canonical URL, GUID, content hash, LSH bands, key
terms), in sorted order so two transactions can never deadlock on them. Two replicas ingesting
copies of one story therefore run one after the other, and the second sees the first's commit
(READ COMMITTED gives every statement a fresh snapshot). Primary keys back this up: a racing
insert that slipped past fails with IntegrityError, which surfaces as ``StoreConflict`` and
``pipeline.ingest`` retries the whole transaction.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect

from aggregator import dedup, records
from aggregator.errors import RecordFormatError, StoreError
from aggregator.model import (
    DedupReason,
    Development,
    FailureClass,
    FetchState,
    Membership,
    Record,
    Schedule,
    Source,
    SourceKind,
    SourceRef,
    TopicMatch,
)
from aggregator.store import schema as t
from aggregator.store.engine import READ_ONLY, create_engine, is_postgres
from aggregator.store.migrate import UpgradeResult, upgrade

CHUNK = 500  # bound on IN (...) lists
# The latest members considered when choosing a development's title: the choice is quadratic
# in this, and the latest coverage is what a reader should see.
MAX_REPRESENTATIVE_MEMBERS = 30
SUMMARY_MAX_CHARS = 1000


class StoreConflict(StoreError):
    """A write lost a race (unique key, deadlock, serialization failure, SQLite busy): retry it."""


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


def open_store(url: str, *, migrate: bool = True) -> Store:
    """Connect to ``url`` (SQLite file or PostgreSQL) and bring the schema to head."""
    engine = create_engine(url)
    try:
        with _translate_errors():
            if migrate:
                upgrade(engine)
            _ensure_meta(engine)
    except BaseException:
        engine.dispose()
        raise
    return Store(engine)


def _ensure_meta(engine: sa.Engine) -> None:
    """The one store_meta row (the migration writes it; this restores it after a TRUNCATE)."""
    with engine.begin() as conn:
        if conn.execute(sa.select(t.store_meta.c.id).where(t.store_meta.c.id == 1)).first():
            return
        stmt = _insert(conn, t.store_meta).values(id=1, instance=uuid.uuid4().hex, feed_version=0)
        conn.execute(stmt.on_conflict_do_nothing(index_elements=[t.store_meta.c.id]))


def upgrade_database(url: str) -> UpgradeResult:
    """Migrate the database at ``url`` to the newest schema (``aggregator db upgrade``)."""
    engine = create_engine(url)
    try:
        with _translate_errors():
            return upgrade(engine)
    finally:
        engine.dispose()


def development_id_for(record_id: str, salt: str = "") -> str:
    """Stable id of the development a record starts: derived from that record's id, so the same
    import into an empty store gives the same development ids."""
    basis = f"development\0{record_id}\0{salt}"
    return hashlib.sha256(basis.encode("utf-8")).hexdigest()[:16]


def record_time(record: Record, now: datetime) -> datetime:
    """The time a record is filed under: published, else fetched, else now; never in the future
    (a feed with a wrong clock must not pin its entries to the top)."""
    when = record.published or record.fetched or now
    return min(when, now)


def lock_key(text: str) -> int:
    """A signed 64-bit advisory lock key for a string."""
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big", signed=True)


@contextmanager
def _translate_errors() -> Iterator[None]:
    """Database errors become StoreError (StoreConflict when retrying may succeed)."""
    try:
        yield
    except sa.exc.IntegrityError as exc:
        raise StoreConflict(f"conflicting write: {exc.orig}") from exc
    except sa.exc.OperationalError as exc:
        if _is_transient(exc):
            raise StoreConflict(f"transient database error: {exc.orig}") from exc
        raise StoreError(f"database error: {exc.orig}") from exc
    except sa.exc.DBAPIError as exc:
        if exc.connection_invalidated:
            raise StoreConflict(f"database connection lost: {exc.orig}") from exc
        raise StoreError(f"database error: {exc.orig}") from exc


def _is_transient(exc: sa.exc.DBAPIError) -> bool:
    if exc.connection_invalidated:
        return True
    code = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
    if code in ("40001", "40P01", "55P03"):  # serialization failure, deadlock, lock timeout
        return True
    message = str(exc.orig).lower()
    return "database is locked" in message or "database is busy" in message


def _chunks(items: Sequence[str], size: int = CHUNK) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _insert(conn: sa.Connection, table: sa.Table) -> Any:
    """The dialect's INSERT, which has ON CONFLICT support on both SQLite and PostgreSQL."""
    if is_postgres(conn):
        return pg_dialect.insert(table)
    return sqlite_dialect.insert(table)


# --------------------------------------------------------------------------------------------
# rows to model types
# --------------------------------------------------------------------------------------------

_RECORD_COLUMNS = (
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
)


def _record(row: Any) -> Record:
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
    )


def _fetch_state(row: Any) -> FetchState:
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
    )


def _membership(row: Any) -> Membership:
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
# the store
# --------------------------------------------------------------------------------------------


class Store:
    """All database access. Create with ``open_store(url)``; share one per process."""

    def __init__(self, engine: sa.Engine) -> None:
        self._engine = engine
        self._instance: str | None = None

    @property
    def instance(self) -> str:
        """The database's random instance id (tells caches of two databases apart)."""
        if self._instance is None:
            with self._read() as conn:
                self._instance = conn.execute(
                    sa.select(t.store_meta.c.instance).where(t.store_meta.c.id == 1)
                ).scalar_one()
        return self._instance

    @property
    def engine(self) -> sa.Engine:
        return self._engine

    @property
    def dialect(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return self._engine.dialect.name

    def close(self) -> None:
        self._engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- transactions -------------------------------------------------------------------

    @contextmanager
    def _read(self) -> Iterator[sa.Connection]:
        with _translate_errors(), self._engine.connect() as conn:
            conn.execution_options(**{READ_ONLY: True})
            with conn.begin():
                yield conn

    @contextmanager
    def _write(self) -> Iterator[sa.Connection]:
        with _translate_errors(), self._engine.begin() as conn:
            yield conn

    @contextmanager
    def write(self) -> Iterator[WriteTx]:
        """One write transaction (committed on success, rolled back on any error)."""
        instance = self.instance
        with self._write() as conn:
            yield WriteTx(conn, instance)

    # --- records ------------------------------------------------------------------------

    def get_record(self, record_id: str) -> Record | None:
        with self._read() as conn:
            row = conn.execute(
                sa.select(*_RECORD_COLUMNS).where(t.records.c.id == record_id)
            ).first()
        return None if row is None else _record(row)

    def get_records(self, ids: Sequence[str]) -> list[Record]:
        """The stored records among ``ids``, in the order given."""
        found: dict[str, Record] = {}
        with self._read() as conn:
            for chunk in _chunks(list(dict.fromkeys(ids))):
                query = sa.select(*_RECORD_COLUMNS).where(t.records.c.id.in_(chunk))
                found.update((row.id, _record(row)) for row in conn.execute(query))
        return [found[i] for i in ids if i in found]

    def iter_records(self, batch: int = 500) -> Iterator[Record]:
        """Every record in insertion order, read in batches (no long-held transaction)."""
        last = -1
        while True:
            with self._read() as conn:
                rows = conn.execute(
                    sa.select(t.records.c.seq, *_RECORD_COLUMNS)
                    .where(t.records.c.seq > last)
                    .order_by(t.records.c.seq)
                    .limit(batch)
                ).all()
            if not rows:
                return
            for row in rows:
                yield _record(row)
            last = rows[-1].seq

    def count_records(self) -> int:
        with self._read() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(t.records)).scalar_one())

    def find_duplicate(self, record: Record) -> str | None:
        """Id of a stored record that is the same article (id, canonical URL, source+GUID or
        content hash), or None."""
        with self._read() as conn:
            found = _find_duplicate(conn, record)
        return None if found is None else found[0]

    def known_guids(self, source_id: str, guids: Sequence[str]) -> set[str]:
        """The entry GUIDs of ``source_id`` among ``guids`` that are stored already."""
        known: set[str] = set()
        with self._read() as conn:
            for chunk in _chunks(list(dict.fromkeys(g for g in guids if g))):
                query = sa.select(t.records.c.guid).where(
                    t.records.c.source_id == source_id, t.records.c.guid.in_(chunk)
                )
                known.update(conn.execute(query).scalars())
                aliases = sa.select(t.record_aliases.c.guid).where(
                    t.record_aliases.c.source_id == source_id,
                    t.record_aliases.c.guid.in_(chunk),
                )
                known.update(g for g in conn.execute(aliases).scalars() if g)
        return known

    def record_topics(self, record_id: str) -> tuple[TopicMatch, ...]:
        with self._read() as conn:
            return _record_topic_matches(conn, [record_id]).get(record_id, ())

    def get_membership(self, record_id: str) -> Membership | None:
        with self._read() as conn:
            row = conn.execute(
                sa.select(t.memberships).where(t.memberships.c.record_id == record_id)
            ).first()
        return None if row is None else _membership(row)

    # --- developments -------------------------------------------------------------------

    def list_developments(
        self, topic: str | None = None, limit: int = 50, since: datetime | None = None
    ) -> list[Development]:
        """Developments last changed most recently first (then newest first_seen), with
        members and sources filled in.

        ``topic`` keeps those matching that topic; ``since`` those updated at or after it.
        Developments merged into another are left out (their records belong to the other).
        """
        d = t.developments
        query = sa.select(d).where(d.c.merged_into.is_(None))
        if topic is not None:
            query = query.where(
                sa.exists().where(
                    t.development_topics.c.development_id == d.c.id,
                    t.development_topics.c.topic_id == topic,
                )
            )
        if since is not None:
            query = query.where(d.c.updated >= since)
        query = query.order_by(d.c.updated.desc(), d.c.first_seen.desc(), d.c.id.desc())
        if limit is not None and limit > 0:
            query = query.limit(limit)
        with self._read() as conn:
            rows = conn.execute(query).all()
            return _developments(conn, rows)

    def get_development(self, dev_id: str) -> Development | None:
        """A development by id; a development merged into another resolves to the other."""
        with self._read() as conn:
            resolved = _resolve_development(conn, dev_id)
            if resolved is None:
                return None
            rows = conn.execute(
                sa.select(t.developments).where(t.developments.c.id == resolved)
            ).all()
            found = _developments(conn, rows)
        return found[0] if found else None

    def get_memberships(self, dev_id: str) -> list[Membership]:
        """The members of a development with the decision behind each, first report first."""
        m, r = t.memberships, t.records
        with self._read() as conn:
            resolved = _resolve_development(conn, dev_id) or dev_id
            rows = conn.execute(
                sa.select(m)
                .join(r, r.c.id == m.c.record_id)
                .where(m.c.development_id == resolved)
                .order_by(r.c.time, r.c.seq)
            ).all()
        return [_membership(row) for row in rows]

    def count_developments(self) -> int:
        with self._read() as conn:
            query = (
                sa.select(sa.func.count())
                .select_from(t.developments)
                .where(t.developments.c.merged_into.is_(None))
            )
            return int(conn.execute(query).scalar_one())

    def split_record(self, record_id: str, now: datetime) -> str:
        """Move a record out of its development into a new one of its own (an admin decision
        that later ingests never undo); returns the new development's id."""
        with self.write() as tx:
            return tx.split_record(record_id, now)

    def merge_developments(self, keep_id: str, other_id: str, now: datetime) -> None:
        """Move every record of ``other_id`` into ``keep_id``; ``other_id`` then resolves to it."""
        with self.write() as tx:
            tx.merge_developments(keep_id, other_id, now)

    def feed_version(self) -> str:
        """A token that changes whenever anything a feed shows changes (for caches)."""
        with self._read() as conn:
            row = conn.execute(sa.select(t.store_meta).where(t.store_meta.c.id == 1)).first()
        if row is None:
            raise StoreError("the store_meta row is missing: run `aggregator db upgrade`")
        return f"{row.instance[:8]}-{row.feed_version}"

    # --- sources and fetch state ----------------------------------------------------------

    def sync_sources(self, sources: Sequence[Source], now: datetime | None = None) -> None:
        """Make the sources table follow the watchlist: add and update these, mark the others
        inactive (their records and fetch state stay), and give each a fetch state row."""
        rows = [
            {
                "id": s.id,
                "kind": str(s.kind),
                "url": s.url,
                "title": s.title,
                "topics": list(s.topics),
                "enabled": s.enabled,
                "active": True,
                "updated": now,
            }
            for s in sources
        ]
        ids = [s.id for s in sources]
        with self.write() as tx:
            conn = tx.conn
            before = {
                (row.id, row.title, row.active)
                for row in conn.execute(
                    sa.select(t.sources.c.id, t.sources.c.title, t.sources.c.active)
                )
            }
            if rows:
                stmt = _insert(conn, t.sources)
                stmt = stmt.on_conflict_do_update(
                    index_elements=[t.sources.c.id],
                    set_={
                        k: stmt.excluded[k]
                        for k in ("kind", "url", "title", "topics", "enabled", "active", "updated")
                    },
                )
                conn.execute(stmt, rows)
                fs = _insert(conn, t.fetch_state).on_conflict_do_nothing(
                    index_elements=[t.fetch_state.c.source_id]
                )
                conn.execute(fs, [{"source_id": i, "failure_counts": {}} for i in ids])
            gone = sa.update(t.sources).where(t.sources.c.active.is_(True))
            if ids:
                gone = gone.where(t.sources.c.id.not_in(ids))
            conn.execute(gone.values(active=False))
            after = {
                (row.id, row.title, row.active)
                for row in conn.execute(
                    sa.select(t.sources.c.id, t.sources.c.title, t.sources.c.active)
                )
            }
            if before != after:
                tx.bump_feed_version()

    def list_sources(self, include_inactive: bool = False) -> list[Source]:
        """Sources as stored (kind, url, title, topics, enabled); schedules are not stored."""
        query = sa.select(t.sources).order_by(t.sources.c.id)
        if not include_inactive:
            query = query.where(t.sources.c.active.is_(True))
        with self._read() as conn:
            rows = conn.execute(query).all()
        return [
            Source(
                id=row.id,
                kind=SourceKind(row.kind),
                url=row.url,
                schedule=Schedule(),
                title=row.title,
                topics=tuple(row.topics or ()),
                enabled=bool(row.enabled),
            )
            for row in rows
        ]

    def get_fetch_state(self, source_id: str) -> FetchState:
        """The fetch state of a source (a fresh one when it was never fetched)."""
        with self._read() as conn:
            row = conn.execute(
                sa.select(t.fetch_state).where(t.fetch_state.c.source_id == source_id)
            ).first()
        return FetchState(source_id=source_id) if row is None else _fetch_state(row)

    def save_fetch_state(self, state: FetchState) -> None:
        """Store a source's fetch state (its lease, if any, is left as it is)."""
        values = {
            "etag": state.etag,
            "last_modified": state.last_modified,
            "next_fetch": state.next_fetch,
            "last_attempt": state.last_attempt,
            "last_success": state.last_success,
            "consecutive_failures": state.consecutive_failures,
            "failure_class": None if state.failure_class is None else str(state.failure_class),
            "last_error": state.last_error,
            "failure_counts": dict(state.failure_counts),
            "fetch_count": state.fetch_count,
        }
        with self._write() as conn:
            stmt = _insert(conn, t.fetch_state).values(source_id=state.source_id, **values)
            stmt = stmt.on_conflict_do_update(
                index_elements=[t.fetch_state.c.source_id],
                set_={k: stmt.excluded[k] for k in values},
            )
            conn.execute(stmt)

    def list_fetch_states(self) -> list[FetchState]:
        with self._read() as conn:
            rows = conn.execute(sa.select(t.fetch_state).order_by(t.fetch_state.c.source_id))
            return [_fetch_state(row) for row in rows]

    def claim_due_sources(
        self, owner: str, now: datetime, lease_seconds: float, limit: int
    ) -> list[str]:
        """Lease up to ``limit`` due sources to ``owner`` until ``now + lease_seconds``.

        Due: enabled, still in the watchlist, ``next_fetch`` unset or past, and no live lease
        (an expired lease is taken over: its owner died). On PostgreSQL the rows are picked with
        ``FOR UPDATE SKIP LOCKED``, so replicas claiming at once never get the same source; on
        SQLite ``BEGIN IMMEDIATE`` serializes claims.
        """
        if limit <= 0:
            return []
        fs, s = t.fetch_state, t.sources
        query = (
            sa.select(fs.c.source_id)
            .join(s, s.c.id == fs.c.source_id)
            .where(
                s.c.enabled.is_(True),
                s.c.active.is_(True),
                sa.or_(fs.c.next_fetch.is_(None), fs.c.next_fetch <= now),
                sa.or_(fs.c.lease_expires.is_(None), fs.c.lease_expires <= now),
            )
            .order_by(fs.c.next_fetch.asc().nulls_first(), fs.c.source_id)
            .limit(limit)
        )
        with self._write() as conn:
            if is_postgres(conn):
                query = query.with_for_update(skip_locked=True, of=fs)
            ids = list(conn.execute(query).scalars())
            if ids:
                conn.execute(
                    sa.update(fs)
                    .where(fs.c.source_id.in_(ids))
                    .values(lease_owner=owner, lease_expires=now + timedelta(seconds=lease_seconds))
                )
        return ids

    def release_source(self, owner: str, source_id: str) -> None:
        """Give up ``owner``'s lease on a source (a lease held by someone else is left alone)."""
        with self._write() as conn:
            conn.execute(
                sa.update(t.fetch_state)
                .where(
                    t.fetch_state.c.source_id == source_id,
                    t.fetch_state.c.lease_owner == owner,
                )
                .values(lease_owner=None, lease_expires=None)
            )

    def lease_of(self, source_id: str) -> tuple[str | None, datetime | None]:
        """(owner, expiry) of a source's lease, for operators and tests."""
        with self._read() as conn:
            row = conn.execute(
                sa.select(t.fetch_state.c.lease_owner, t.fetch_state.c.lease_expires).where(
                    t.fetch_state.c.source_id == source_id
                )
            ).first()
        return (None, None) if row is None else (row.lease_owner, row.lease_expires)

    # --- retention ----------------------------------------------------------------------

    def prune(self, older_than: datetime) -> int:
        """Delete developments last updated before ``older_than`` with all their records, and
        records in no development filed before it; returns the number of records deleted.

        A development is pruned whole or not at all, so a feed never shows half a story.
        """
        d, m, r = t.developments, t.memberships, t.records
        with self.write() as tx:
            conn = tx.conn
            old_devs = list(
                conn.execute(
                    sa.select(d.c.id).where(d.c.merged_into.is_(None), d.c.updated < older_than)
                ).scalars()
            )
            doomed: list[str] = []
            for chunk in _chunks(old_devs):
                doomed.extend(
                    conn.execute(
                        sa.select(m.c.record_id).where(m.c.development_id.in_(chunk))
                    ).scalars()
                )
            orphans = sa.select(r.c.id).where(
                r.c.time < older_than, ~sa.exists().where(m.c.record_id == r.c.id)
            )
            doomed.extend(conn.execute(orphans).scalars())
            for chunk in _chunks(doomed):
                conn.execute(sa.delete(r).where(r.c.id.in_(chunk)))
            # Developments left without members (the pruned ones, and those merged into them).
            empty = sa.delete(d).where(~sa.exists().where(m.c.development_id == d.c.id))
            deleted_devs = conn.execute(empty).rowcount
            if doomed or deleted_devs:
                tx.bump_feed_version()
        return len(doomed)


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

    def duplicate_of(self, record: Record) -> tuple[str, DedupReason] | None:
        return _find_duplicate(self.conn, record)

    def add_alias(self, stored_id: str, record: Record, *, seen: datetime) -> bool:
        """Remember that ``record``, an exact duplicate of ``stored_id``, was also published by
        its source at its URL; False when that place is known already (a refetch)."""
        r, a = t.records, t.record_aliases
        place = (record.source_id, record.url or record.canonical_url, record.guid)
        stored = self.conn.execute(
            sa.select(r.c.source_id, r.c.url, r.c.canonical_url, r.c.guid).where(
                r.c.id == stored_id
            )
        ).first()
        if stored is None:
            return False
        if place[1] is not None and place[1] in (stored.url, stored.canonical_url):
            return False  # the same page, whichever feed linked to it
        if stored.source_id == place[0] and (place[1] is None or place[2] == stored.guid):
            return False  # the same entry of the same source
        if place[0] is None and place[1] is None:
            return False  # nothing to show: an anonymous re-import of the same text
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
            )
        )
        return True

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
                [{"band": b, "record_id": record_id, "time": time} for b in dict.fromkeys(bands)],
            )
        if key_terms:
            self.conn.execute(
                sa.insert(t.key_terms),
                [
                    {"term": k, "record_id": record_id, "time": time}
                    for k in dict.fromkeys(key_terms)
                ],
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
    ) -> list[StoredCandidate]:
        """Stored records sharing an LSH band or a key term with a record filed at ``time``,
        within ``window`` either side: those sharing the most keys first, then the most recent,
        at most ``cap``. An index lookup per key, never a scan."""
        lo, hi = time - window, time + window
        parts: list[sa.Select[Any]] = []
        if bands:
            b = t.lsh_bands
            parts.append(
                sa.select(b.c.record_id, b.c.time).where(
                    b.c.band.in_(list(dict.fromkeys(bands))), b.c.time.between(lo, hi)
                )
            )
        if key_terms:
            k = t.key_terms
            parts.append(
                sa.select(k.c.record_id, k.c.time).where(
                    k.c.term.in_(list(dict.fromkeys(key_terms))), k.c.time.between(lo, hi)
                )
            )
        if not parts:
            return []
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
        m, r = t.memberships, t.records
        query = (
            sa.select(
                ranked.c.record_id, ranked.c.shared, m.c.development_id, ranked.c.time, r.c.seq
            )
            .join(m, m.c.record_id == ranked.c.record_id)
            .join(r, r.c.id == ranked.c.record_id)
            .order_by(ranked.c.shared.desc(), ranked.c.time.desc(), ranked.c.record_id)
            .limit(cap)
        )
        if exclude is not None:
            query = query.where(ranked.c.record_id != exclude)
        out = []
        for row in self.conn.execute(query):
            when = row.time
            if isinstance(when, str):  # SQLite returns aggregates untyped
                when = datetime.fromisoformat(when)
            out.append(
                StoredCandidate(
                    record_id=row.record_id,
                    development_id=row.development_id,
                    time=t.UTCDateTime().process_result_value(when, self.conn.dialect) or time,
                    shared_keys=int(row.shared),
                    seq=int(row.seq),
                )
            )
        return out

    def fingerprint_data(self, record_ids: Sequence[str]) -> dict[str, str]:
        """The stored fingerprints (JSON) of ``record_ids``."""
        f = t.fingerprints
        out: dict[str, str] = {}
        for chunk in _chunks(list(record_ids)):
            query = sa.select(f.c.record_id, f.c.data).where(f.c.record_id.in_(chunk))
            out.update((row.record_id, row.data) for row in self.conn.execute(query))
        return out

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
        _refresh_development(self.conn, dev_id, updated, known)

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
        _refresh_development(self.conn, old_dev, now)
        _refresh_development(self.conn, new_dev, now)
        self.bump_feed_version()
        return new_dev

    def merge_developments(self, keep_id: str, other_id: str, now: datetime) -> None:
        d, m = t.developments, t.memberships
        keep = _resolve_development(self.conn, keep_id)
        other = _resolve_development(self.conn, other_id)
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
        _refresh_development(self.conn, keep, now)
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


# --------------------------------------------------------------------------------------------
# queries shared by Store and WriteTx
# --------------------------------------------------------------------------------------------


def _find_duplicate(conn: sa.Connection, record: Record) -> tuple[str, DedupReason] | None:
    r = t.records
    conditions: list[sa.ColumnElement[bool]] = [
        r.c.id == record.id,
        r.c.content_hash == record.content_hash,
    ]
    if record.canonical_url:
        conditions.append(r.c.canonical_url == record.canonical_url)
    if record.guid and record.source_id:
        conditions.append(sa.and_(r.c.source_id == record.source_id, r.c.guid == record.guid))
    rows = conn.execute(
        sa.select(r.c.id, r.c.canonical_url, r.c.source_id, r.c.guid, r.c.content_hash)
        .where(sa.or_(*conditions))
        .order_by(r.c.seq)
        .limit(10)
    ).all()
    if not rows and record.guid and record.source_id:
        a = t.record_aliases
        alias_of = conn.execute(
            sa.select(a.c.record_id)
            .where(a.c.source_id == record.source_id, a.c.guid == record.guid)
            .limit(1)
        ).scalar_one_or_none()
        if alias_of is not None:
            return alias_of, DedupReason.SAME_GUID
    if not rows:
        return None
    for row in rows:  # the most specific reason wins
        if row.id == record.id or (
            record.canonical_url and row.canonical_url == record.canonical_url
        ):
            reason = DedupReason.SAME_URL if record.canonical_url else DedupReason.SAME_CONTENT
            return row.id, reason
    for row in rows:
        if record.guid and row.source_id == record.source_id and row.guid == record.guid:
            return row.id, DedupReason.SAME_GUID
    return rows[0].id, DedupReason.SAME_CONTENT


def _resolve_development(conn: sa.Connection, dev_id: str) -> str | None:
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


def _record_topic_matches(
    conn: sa.Connection, record_ids: Sequence[str]
) -> dict[str, tuple[TopicMatch, ...]]:
    out: dict[str, list[TopicMatch]] = {}
    tm = t.topic_matches
    for chunk in _chunks(list(record_ids)):
        query = sa.select(tm).where(tm.c.record_id.in_(chunk)).order_by(tm.c.topic_id)
        for row in conn.execute(query):
            out.setdefault(row.record_id, []).append(
                TopicMatch(topic_id=row.topic_id, record_id=row.record_id, terms=tuple(row.terms))
            )
    return {k: tuple(v) for k, v in out.items()}


def _developments(conn: sa.Connection, rows: Sequence[Any]) -> list[Development]:
    """Model developments for ``rows`` of the developments table, in the same order."""
    if not rows:
        return []
    ids = [row.id for row in rows]
    m, r, s = t.memberships, t.records, t.sources
    members: dict[str, list[Any]] = {i: [] for i in ids}
    for chunk in _chunks(ids):
        query = (
            sa.select(
                m.c.development_id,
                r.c.id,
                r.c.source_id,
                r.c.url,
                r.c.title,
                r.c.published,
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
    a = t.record_aliases
    for chunk in _chunks(ids):
        query = (
            sa.select(
                m.c.development_id,
                a.c.record_id,
                a.c.source_id,
                a.c.url,
                a.c.published,
                r.c.title,
                s.c.title.label("source_title"),
            )
            .join(m, m.c.record_id == a.c.record_id)
            .join(r, r.c.id == a.c.record_id)
            .outerjoin(s, s.c.id == a.c.source_id)
            .where(m.c.development_id.in_(chunk))
            .order_by(a.c.seen, a.c.id)
        )
        for row in conn.execute(query):
            aliases[row.development_id].append(row)
    topics: dict[str, list[str]] = {i: [] for i in ids}
    dt = t.development_topics
    for chunk in _chunks(ids):
        query = sa.select(dt).where(dt.c.development_id.in_(chunk)).order_by(dt.c.topic_id)
        for row in conn.execute(query):
            topics[row.development_id].append(row.topic_id)
    all_records = [row.id for rows_ in members.values() for row in rows_]
    matches = _record_topic_matches(conn, all_records)
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
                        source_title=rec.source_title or rec.source_id or "",
                        url=rec.url,
                        title=rec.title,
                        published=rec.published,
                    )
                    for rec in mem
                )
                + tuple(
                    SourceRef(
                        record_id=alias.record_id,
                        source_id=alias.source_id,
                        source_title=alias.source_title or alias.source_id or "",
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


def _refresh_development(
    conn: sa.Connection,
    dev_id: str,
    updated: datetime,
    known: Mapping[str, dedup.Fingerprint] | None = None,
) -> None:
    """Choose the development's representative among its latest members (``known``: parsed
    fingerprints the caller holds already), take its title and summary, move ``updated``
    forward and recompute the topics. A development left without members is deleted."""
    d, m, r, f = t.developments, t.memberships, t.records, t.fingerprints
    rows = conn.execute(
        sa.select(r.c.id, r.c.title, f.c.data)
        .join(m, m.c.record_id == r.c.id)
        .outerjoin(f, f.c.record_id == r.c.id)
        .where(m.c.development_id == dev_id)
        .order_by(r.c.time.desc(), r.c.seq.desc())
        .limit(MAX_REPRESENTATIVE_MEMBERS)
    ).all()
    if not rows:
        conn.execute(sa.delete(d).where(d.c.id == dev_id))
        return
    rows = list(reversed(rows))  # oldest first: ties go to the first report
    chosen = rows[_representative_index(rows, known or {})]
    current = conn.execute(
        sa.select(d.c.representative_id, d.c.title).where(d.c.id == dev_id)
    ).first()
    values: dict[str, Any] = {
        "updated": sa.case(
            (d.c.updated < updated, sa.literal(updated, t.UTCDateTime())),
            else_=d.c.updated,
        )
    }
    if current is None or current.representative_id != chosen.id or not current.title:
        text = conn.execute(sa.select(r.c.text).where(r.c.id == chosen.id)).scalar_one()
        values.update(title=chosen.title, summary=_summary(text), representative_id=chosen.id)
    conn.execute(sa.update(d).where(d.c.id == dev_id).values(**values))
    dt, tm = t.development_topics, t.topic_matches
    topics = conn.execute(
        sa.select(tm.c.topic_id)
        .distinct()
        .join(m, m.c.record_id == tm.c.record_id)
        .where(m.c.development_id == dev_id)
    ).scalars()
    wanted = set(topics)
    have = set(
        conn.execute(sa.select(dt.c.topic_id).where(dt.c.development_id == dev_id)).scalars()
    )
    if have - wanted:
        conn.execute(
            sa.delete(dt).where(dt.c.development_id == dev_id, dt.c.topic_id.in_(have - wanted))
        )
    if wanted - have:
        conn.execute(
            sa.insert(dt),
            [{"development_id": dev_id, "topic_id": topic} for topic in sorted(wanted - have)],
        )


def _representative_index(rows: Sequence[Any], known: Mapping[str, dedup.Fingerprint]) -> int:
    indexed: list[tuple[int, dedup.Fingerprint]] = []
    for i, row in enumerate(rows):
        fp = known.get(row.id)
        if fp is None and row.data:
            try:
                fp = dedup.fingerprint_from_json(row.data)
            except (ValueError, KeyError, TypeError):
                fp = None
        if fp is not None:
            indexed.append((i, fp))
    if not indexed:
        return 0
    return indexed[dedup.representative([fp for _, fp in indexed])][0]


def _summary(text: str) -> str:
    try:
        lead = records.lead_of(records.parse(text))
    except RecordFormatError:
        lead = ""
    if not lead:
        lead = " ".join(text.split())
    if len(lead) > SUMMARY_MAX_CHARS:
        lead = lead[: SUMMARY_MAX_CHARS - 1].rsplit(" ", 1)[0] + "…"
    return lead
