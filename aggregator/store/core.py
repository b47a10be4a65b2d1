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

import contextlib
import functools
import logging
import random
import re
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

import sqlalchemy as sa

from aggregator.errors import StoreError
from aggregator.model import (
    AlertDelivery,
    AlertStatus,
    Development,
    FetchState,
    Membership,
    Record,
    Schedule,
    SearchMatch,
    Source,
    SourceKind,
    TopicMatch,
)
from aggregator.store import alerts as alerts_mod
from aggregator.store import schema as t
from aggregator.store import search as search_mod
from aggregator.store.common import (
    StoreConflict,
    chunks,
    dialect_insert,
    translate_errors,
    upsert_insert,
)
from aggregator.store.engine import READ_ONLY, create_engine, is_postgres, normalize_url
from aggregator.store.migrate import UpgradeResult, upgrade
from aggregator.store.queries import (
    RECORD_COLUMNS,
    developments_of,
    fetch_state_of,
    membership_of,
    record_of,
    record_topic_matches,
    resolve_development,
)
from aggregator.store.tx import WriteTx

__all__ = ["Store", "StoreConflict", "WriteTx", "open_store"]

log = logging.getLogger("aggregator.store")

_T = TypeVar("_T")
# Attempts of a short, idempotent write (fetch state, leases) that lost its connection or a race.
WRITE_ATTEMPTS = 3
# Store.known_guids: built once (an IN list built per call costs more than the lookup).
_KNOWN_GUIDS = sa.union(
    sa.select(t.records.c.guid).where(
        t.records.c.source_id == sa.bindparam("source"),
        t.records.c.guid.in_(sa.bindparam("guids", expanding=True)),
    ),
    sa.select(t.record_aliases.c.guid).where(
        t.record_aliases.c.source_id == sa.bindparam("source"),
        t.record_aliases.c.guid.in_(sa.bindparam("guids", expanding=True)),
    ),
)


def open_store(url: str, *, migrate: bool = True) -> Store:
    """Connect to ``url`` (SQLite file or PostgreSQL) and bring the schema to head."""
    engine = create_engine(url)
    try:
        with translate_errors():
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
        stmt = dialect_insert(conn, t.store_meta).values(
            id=1, instance=uuid.uuid4().hex, feed_version=0
        )
        conn.execute(stmt.on_conflict_do_nothing(index_elements=[t.store_meta.c.id]))


@dataclass(frozen=True, slots=True)
class DatabaseCheck:
    """What ``check_database`` found: no problems, the problems, or why it did not look."""

    what: str  # the database, for messages (a file path, or the redacted server URL)
    how: str = ""  # what was checked
    problems: tuple[str, ...] = ()
    skipped: str | None = None

    @property
    def ok(self) -> bool:
        return not self.problems


def check_database(url: str, *, full: bool = True, max_bytes: int | None = None) -> DatabaseCheck:
    """SQLite: ``PRAGMA integrity_check`` (``full``) or ``quick_check`` on the file, read-only;
    a file over ``max_bytes`` is not read (start-up's cheap check). PostgreSQL checks its own
    pages: the server is asked to answer a query."""
    parsed = normalize_url(url)
    if parsed.get_backend_name() != "sqlite":
        engine = create_engine(url)
        what = parsed.render_as_string(hide_password=True)
        try:
            with engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
        except Exception as exc:
            return DatabaseCheck(what, "a query", (f"cannot query the server: {exc}",))
        finally:
            engine.dispose()
        return DatabaseCheck(what, "the server answered a query")
    database = parsed.database or ""
    path = Path(database)
    if not database or database == ":memory:" or not path.exists():
        return DatabaseCheck(database or ":memory:", skipped="no database file yet")
    size = path.stat().st_size
    if max_bytes is not None and size > max_bytes:
        return DatabaseCheck(
            str(path), skipped=f"{size:,} bytes, over {max_bytes:,}: run `aggregator db check`"
        )
    pragma = "integrity_check" if full else "quick_check"
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
            rows = [str(r[0]) for r in conn.execute(f"PRAGMA {pragma}").fetchall()]
            rows = [r for r in rows if not _false_null_report(conn, r)]
    except sqlite3.DatabaseError as exc:
        return DatabaseCheck(str(path), pragma, (str(exc),))
    return DatabaseCheck(
        str(path), f"{pragma} found no problem", tuple(r for r in rows if r != "ok")
    )


_NULL_REPORT = re.compile(r"^NULL value in (\w+)\.(\w+)$")


def _false_null_report(conn: sqlite3.Connection, row: str) -> bool:
    """SQLite 3.40's quick_check reports "NULL value in lsh_bands.record_id" for WITHOUT ROWID
    tables whose key order differs from their column order, with no NULL there: such a report
    is kept only when a query finds the NULL."""
    m = _NULL_REPORT.match(row)
    if m is None:
        return False
    table, column = m.groups()
    found = conn.execute(f'SELECT 1 FROM "{table}" WHERE "{column}" IS NULL LIMIT 1').fetchone()
    return found is None


def corrupt_store_advice(check: DatabaseCheck) -> str:
    """What to do about a corrupt SQLite file, for the CLI and the service's start."""
    shown = "; ".join(check.problems[:5]) + (" ..." if len(check.problems) > 5 else "")
    return (
        f"the database {check.what} is corrupt ({shown}). Stop the service, keep a copy of "
        "the file, then restore the last backup (docs/operations.md, Backup and restore) or "
        f"salvage what SQLite can still read: sqlite3 {check.what} .recover | sqlite3 "
        "recovered.db, check it with `aggregator --db sqlite:///recovered.db db check`, and "
        "move it into place"
    )


def upgrade_database(url: str) -> UpgradeResult:
    """Migrate the database at ``url`` to the newest schema (``aggregator db upgrade``)."""
    engine = create_engine(url)
    try:
        with translate_errors():
            return upgrade(engine)
    finally:
        engine.dispose()


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
        with translate_errors(), self._engine.connect() as conn:
            conn.execution_options(**{READ_ONLY: True})
            with conn.begin():
                yield conn

    @contextmanager
    def _write(self) -> Iterator[sa.Connection]:
        with translate_errors(), self._engine.begin() as conn:
            yield conn

    def _write_retrying(self, work: Callable[[sa.Connection], _T], what: str) -> _T:
        """Run ``work`` in a write transaction, again on a fresh connection when the first one
        died under it (PostgreSQL restarted, the backend was terminated) or lost a race.

        Only for short writes that are safe to repeat as a whole (``work`` reads nothing it
        has written before). A failure that outlasts the attempts raises ``StoreError``.
        """
        for attempt in range(1, WRITE_ATTEMPTS + 1):
            try:
                with self._write() as conn:
                    return work(conn)
            except StoreConflict as exc:
                if attempt == WRITE_ATTEMPTS:
                    raise
                log.warning("%s: %s; retrying (attempt %d)", what, exc, attempt + 1)
                # The pool discarded the dead connections; a short pause lets a restarting
                # server come back and spreads replicas that collided.
                time.sleep(random.uniform(0.05, 0.2) * attempt)
        raise AssertionError("unreachable")  # pragma: no cover

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
                sa.select(*RECORD_COLUMNS).where(t.records.c.id == record_id)
            ).first()
        return None if row is None else record_of(row)

    def get_records(self, ids: Sequence[str]) -> list[Record]:
        """The stored records among ``ids``, in the order given."""
        found: dict[str, Record] = {}
        with self._read() as conn:
            for chunk in chunks(list(dict.fromkeys(ids))):
                query = sa.select(*RECORD_COLUMNS).where(t.records.c.id.in_(chunk))
                found.update((row.id, record_of(row)) for row in conn.execute(query))
        return [found[i] for i in ids if i in found]

    def iter_records(self, batch: int = 500) -> Iterator[Record]:
        """Every record in insertion order, read in batches (no long-held transaction)."""
        last = -1
        while True:
            with self._read() as conn:
                rows = conn.execute(
                    sa.select(t.records.c.seq, *RECORD_COLUMNS)
                    .where(t.records.c.seq > last)
                    .order_by(t.records.c.seq)
                    .limit(batch)
                ).all()
            if not rows:
                return
            for row in rows:
                yield record_of(row)
            last = rows[-1].seq

    def count_records(self) -> int:
        with self._read() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(t.records)).scalar_one())

    def known_guids(self, source_id: str, guids: Sequence[str]) -> set[str]:
        """The entry GUIDs of ``source_id`` among ``guids`` that are stored already."""
        known: set[str] = set()
        with self._read() as conn:
            for chunk in chunks(list(dict.fromkeys(g for g in guids if g))):
                params = {"source": source_id, "guids": list(chunk)}
                known.update(g for g in conn.execute(_KNOWN_GUIDS, params).scalars() if g)
        return known

    def article_failures(
        self, source_id: str, urls: Sequence[str]
    ) -> dict[str, tuple[int, datetime]]:
        """Unreadable articles of ``source_id`` among ``urls``: url -> (failures, next try)."""
        af = t.article_failures
        found: dict[str, tuple[int, datetime]] = {}
        with self._read() as conn:
            for chunk in chunks(list(dict.fromkeys(urls))):
                rows = conn.execute(
                    sa.select(af.c.url, af.c.failures, af.c.next_try).where(
                        af.c.source_id == source_id, af.c.url.in_(chunk)
                    )
                )
                found.update({row.url: (row.failures, row.next_try) for row in rows})
        return found

    def save_article_failure(
        self, source_id: str, url: str, failures: int, next_try: datetime, error: str
    ) -> None:
        """Remember an unreadable article: its failure count and when it may be tried again."""
        af = t.article_failures

        def write(conn: sa.Connection) -> None:
            values = {"failures": failures, "next_try": next_try, "last_error": error[:500]}
            stmt = dialect_insert(conn, af).values(source_id=source_id, url=url, **values)
            conn.execute(
                stmt.on_conflict_do_update(index_elements=[af.c.source_id, af.c.url], set_=values)
            )

        self._write_retrying(write, f"remembering the failure of {url}")

    def forget_article_failures(self, source_id: str, urls: Sequence[str]) -> None:
        """Articles read at last (or gone from the listing): no failure kept for them."""
        af = t.article_failures

        def write(conn: sa.Connection) -> None:
            for chunk in chunks(list(dict.fromkeys(urls))):
                conn.execute(sa.delete(af).where(af.c.source_id == source_id, af.c.url.in_(chunk)))

        if urls:
            self._write_retrying(write, "forgetting article failures")

    def record_topics(self, record_id: str) -> tuple[TopicMatch, ...]:
        with self._read() as conn:
            return record_topic_matches(conn, [record_id]).get(record_id, ())

    def topic_matches(self, record_ids: Sequence[str]) -> dict[str, tuple[TopicMatch, ...]]:
        """The topic matches (with their terms) of each of ``record_ids`` that has any."""
        with self._read() as conn:
            return record_topic_matches(conn, list(record_ids))

    def get_membership(self, record_id: str) -> Membership | None:
        with self._read() as conn:
            row = conn.execute(
                sa.select(t.memberships).where(t.memberships.c.record_id == record_id)
            ).first()
        return None if row is None else membership_of(row)

    # --- developments -------------------------------------------------------------------

    def list_developments(
        self,
        topic: str | None = None,
        limit: int = 50,
        since: datetime | None = None,
        offset: int = 0,
    ) -> list[Development]:
        """Developments last changed most recently first (then newest first_seen), with
        members and sources filled in.

        ``topic`` keeps those matching that topic; ``since`` those updated at or after it;
        ``offset`` skips that many (the pages of a topic). Developments merged into another
        are left out (their records belong to the other).
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
        if offset > 0:
            query = query.offset(offset)
        with self._read() as conn:
            rows = conn.execute(query).all()
            return developments_of(conn, rows)

    # --- search ------------------------------------------------------------------------

    def search(self, query: str, limit: int = 20, offset: int = 0) -> list[SearchMatch]:
        """Stored records holding every word of ``query`` (store.search: inflections,
        ``word*`` prefixes), best match first, with their development and source's name.
        Raises SearchError (an AggregatorError) when the query has no words."""
        words = search_mod.query_words(query)
        statement, params = search_mod.search_statement(
            self.dialect, words, max(1, limit), max(0, offset)
        )
        with self._read() as conn:
            ids = [str(i) for i in conn.execute(statement, params).scalars()]
            if not ids:
                return []
            r, m, s = t.records, t.memberships, t.sources
            rows = conn.execute(
                sa.select(
                    *RECORD_COLUMNS,
                    m.c.development_id,
                    s.c.title.label("source_title"),
                )
                .outerjoin(m, m.c.record_id == r.c.id)
                .outerjoin(s, s.c.id == r.c.source_id)
                .where(r.c.id.in_(ids))
            ).all()
            dev_ids = {row.development_id for row in rows if row.development_id}
            resolved = {d: resolve_development(conn, d) or d for d in dev_ids}
        found = {
            row.id: SearchMatch(
                record=record_of(row),
                development_id=resolved.get(row.development_id) if row.development_id else None,
                source_title=row.source_title or row.source_id or "",
            )
            for row in rows
        }
        return [found[i] for i in ids if i in found]

    # --- alerts --------------------------------------------------------------------------

    def alert_since(self, rule_id: str, now: datetime) -> datetime:
        """When alert rule ``rule_id`` was first seen (``now`` the first time it is asked)."""
        return self._write_retrying(
            lambda conn: alerts_mod.rule_since(conn, rule_id, now), "alert rule"
        )

    def new_developments(
        self,
        topics: Sequence[str],
        since: datetime,
        until: datetime | None = None,
        limit: int = 100,
    ) -> list[Development]:
        """Developments of any of ``topics`` first seen in [since, until), oldest first."""
        with self._read() as conn:
            return alerts_mod.new_developments(conn, topics, since, until, limit)

    def queue_alerts(self, items: Sequence[tuple[str, str, str, str]], now: datetime) -> int:
        """Queue (rule, target, kind, item) messages once each; how many were new."""
        return self._write_retrying(lambda conn: alerts_mod.queue(conn, items, now), "alerts")

    def claim_alerts(
        self, owner: str, now: datetime, lease_seconds: float, limit: int
    ) -> list[AlertDelivery]:
        """Claim due messages for ``owner`` in one transaction (a lease)."""
        return self._write_retrying(
            lambda conn: alerts_mod.claim(conn, owner, now, lease_seconds, limit), "alert claim"
        )

    def finish_alert(
        self,
        delivery_id: int,
        owner: str,
        now: datetime,
        *,
        error: str | None,
        retry_at: datetime | None,
    ) -> bool:
        """Record a send (``error`` None), a retry at ``retry_at``, or a failure for good."""
        return self._write_retrying(
            lambda conn: alerts_mod.finish(
                conn, delivery_id, owner, now, error=error, retry_at=retry_at
            ),
            "alert result",
        )

    def alert_status(
        self, now: datetime | None = None, recent: timedelta = timedelta(days=1)
    ) -> AlertStatus:
        with self._read() as conn:
            return alerts_mod.status(conn, now or datetime.now(UTC), recent)

    def alert_deliveries(self, limit: int = 50) -> list[AlertDelivery]:
        with self._read() as conn:
            return alerts_mod.deliveries(conn, limit)

    def merged_developments(self) -> dict[str, str]:
        """Each development merged into another, with the one holding its records now."""
        d = t.developments
        with self._read() as conn:
            ids = conn.execute(sa.select(d.c.id).where(d.c.merged_into.is_not(None))).scalars()
            out: dict[str, str] = {}
            for dev_id in list(ids):
                target = resolve_development(conn, dev_id)
                if target is not None and target != dev_id:
                    out[dev_id] = target
        return out

    def get_development(self, dev_id: str) -> Development | None:
        """A development by id; a development merged into another resolves to the other."""
        with self._read() as conn:
            resolved = resolve_development(conn, dev_id)
            if resolved is None:
                return None
            rows = conn.execute(
                sa.select(t.developments).where(t.developments.c.id == resolved)
            ).all()
            found = developments_of(conn, rows)
        return found[0] if found else None

    def get_memberships(self, dev_id: str) -> list[Membership]:
        """The members of a development with the decision behind each, first report first."""
        m, r = t.memberships, t.records
        with self._read() as conn:
            resolved = resolve_development(conn, dev_id) or dev_id
            rows = conn.execute(
                sa.select(m)
                .join(r, r.c.id == m.c.record_id)
                .where(m.c.development_id == resolved)
                .order_by(r.c.time, r.c.seq)
            ).all()
        return [membership_of(row) for row in rows]

    def count_developments(self) -> int:
        with self._read() as conn:
            query = (
                sa.select(sa.func.count())
                .select_from(t.developments)
                .where(t.developments.c.merged_into.is_(None))
            )
            return int(conn.execute(query).scalar_one())

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
                stmt = dialect_insert(conn, t.sources)
                stmt = stmt.on_conflict_do_update(
                    index_elements=[t.sources.c.id],
                    set_={
                        k: stmt.excluded[k]
                        for k in ("kind", "url", "title", "topics", "enabled", "active", "updated")
                    },
                )
                conn.execute(stmt, rows)
                fs = dialect_insert(conn, t.fetch_state).on_conflict_do_nothing(
                    index_elements=[t.fetch_state.c.source_id]
                )
                conn.execute(fs, [{"source_id": i, "failure_counts": {}} for i in ids])
            # Which sources left the watchlist, worked out here: a NOT IN list of every id
            # would pass the drivers' bind-parameter limits (SQLite 32,766, PostgreSQL 65,535).
            watched = set(ids)
            gone = sorted(i for i, _, active in before if active and i not in watched)
            for chunk in chunks(gone):
                conn.execute(
                    sa.update(t.sources).where(t.sources.c.id.in_(chunk)).values(active=False)
                )
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
        return FetchState(source_id=source_id) if row is None else fetch_state_of(row)

    def get_fetch_states(self, source_ids: Sequence[str]) -> dict[str, FetchState]:
        """``get_fetch_state`` for several sources in one read (a cycle's claimed sources)."""
        fs = t.fetch_state
        ids = list(dict.fromkeys(source_ids))
        out = {i: FetchState(source_id=i) for i in ids}
        with self._read() as conn:
            for chunk in chunks(ids):
                for row in conn.execute(sa.select(fs).where(fs.c.source_id.in_(chunk))):
                    out[row.source_id] = fetch_state_of(row)
        return out

    def save_fetch_state(self, state: FetchState, *, release_owner: str | None = None) -> None:
        """Store a source's fetch state (its lease, if any, is left as it is). With
        ``release_owner``, that owner's lease on the source ends in the same transaction (one
        commit instead of two at the end of a fetch; another owner's lease is left alone)."""
        self.save_fetch_states([state], release_owner=release_owner)

    def save_fetch_states(
        self, states: Sequence[FetchState], *, release_owner: str | None = None
    ) -> None:
        """``save_fetch_state`` for several sources in one transaction: all are stored (and
        ``release_owner``'s leases on them ended) or, on an error, none is.

        One statement per table for the whole batch: an all-304 cycle writes a state per
        source, and a transaction (a commit, on PostgreSQL a round trip) each cost more than
        the rows themselves.
        """
        if not states:
            return
        rows = [_fetch_state_row(s) for s in states]
        ids = list(dict.fromkeys(s.source_id for s in states))
        upsert = _fetch_state_upsert(self.dialect == "postgresql")

        def save(conn: sa.Connection) -> None:
            conn.execute(upsert, rows)
            if release_owner is not None:
                for chunk in chunks(ids):
                    conn.execute(_RELEASE, _release_params(release_owner, chunk))

        what = states[0].source_id if len(states) == 1 else f"{len(states)} sources"
        self._write_retrying(save, f"saving the fetch state of {what}")

    def list_fetch_states(self) -> list[FetchState]:
        with self._read() as conn:
            rows = conn.execute(sa.select(t.fetch_state).order_by(t.fetch_state.c.source_id))
            return [fetch_state_of(row) for row in rows]

    def claim_due_sources(
        self, owner: str, now: datetime, lease_seconds: float, limit: int
    ) -> list[str]:
        """Lease up to ``limit`` due sources to ``owner`` until ``now + lease_seconds``.

        Due: enabled, still in the watchlist, ``next_fetch`` unset or past, and no live lease
        (an expired lease is taken over: its owner died). On PostgreSQL the rows are picked with
        ``FOR UPDATE SKIP LOCKED``, so replicas claiming at once never get the same source; on
        SQLite ``BEGIN IMMEDIATE`` serializes claims.
        """
        return [s.source_id for s in self.claim_due_states(owner, now, lease_seconds, limit)]

    def claim_due_states(
        self, owner: str, now: datetime, lease_seconds: float, limit: int
    ) -> list[FetchState]:
        """``claim_due_sources``, returning the claimed sources' fetch states (read in the
        claiming transaction, so a cycle needs one transaction per claim, not two)."""
        if limit <= 0:
            return []
        fs, s = t.fetch_state, t.sources
        # Never-fetched sources (no next_fetch) first, then the most overdue: two queries, each
        # in the order of the index ``ix_fetch_state_due``, so each stops at its limit on both
        # databases (one query ordered NULLS FIRST cannot follow a PostgreSQL ascending index).
        queries = [
            sa.select(fs)
            .join(s, s.c.id == fs.c.source_id)
            .where(
                s.c.enabled.is_(True),
                s.c.active.is_(True),
                due,
                sa.or_(fs.c.lease_expires.is_(None), fs.c.lease_expires <= now),
            )
            .order_by(fs.c.next_fetch, fs.c.source_id)
            for due in (fs.c.next_fetch.is_(None), fs.c.next_fetch <= now)
        ]

        def claim(conn: sa.Connection) -> list[FetchState]:
            states: list[FetchState] = []
            for base in queries:
                if len(states) >= limit:
                    break
                query = base.limit(limit - len(states))
                if is_postgres(conn):
                    query = query.with_for_update(skip_locked=True, of=fs)
                states += [fetch_state_of(row) for row in conn.execute(query)]
            if states:
                conn.execute(
                    sa.update(fs)
                    .where(fs.c.source_id.in_([st.source_id for st in states]))
                    .values(lease_owner=owner, lease_expires=now + timedelta(seconds=lease_seconds))
                )
            return states

        # A claim whose commit got through before its connection died is not seen by the retry:
        # those sources stay leased to ``owner`` until the lease runs out, then are due again.
        return self._write_retrying(claim, "claiming due sources")

    def release_source(self, owner: str, source_id: str) -> None:
        """Give up ``owner``'s lease on a source (a lease held by someone else is left alone)."""
        params = _release_params(owner, [source_id])
        self._write_retrying(lambda conn: conn.execute(_RELEASE, params), f"releasing {source_id}")

    def renew_lease(self, owner: str, source_id: str, now: datetime, lease_seconds: float) -> bool:
        """Extend ``owner``'s lease on a source to ``now + lease_seconds``; False when
        ``owner`` no longer holds it (released, or taken over by another replica after it
        expired). Only the lease columns are written: the fetch state is left as it is."""
        return source_id in self.renew_leases(owner, [source_id], now, lease_seconds)

    def renew_leases(
        self, owner: str, source_ids: Sequence[str], now: datetime, lease_seconds: float
    ) -> set[str]:
        """``renew_lease`` for several sources in one transaction; the ids still held (and now
        extended). One atomic ``UPDATE ... WHERE lease_owner = :owner``: a lease another
        replica took over is never taken back."""
        fs = t.fetch_state
        ids = list(dict.fromkeys(source_ids))
        if not ids:
            return set()
        expires = now + timedelta(seconds=lease_seconds)

        def renew(conn: sa.Connection) -> set[str]:
            held: set[str] = set()
            for chunk in chunks(ids):
                stmt = (
                    sa.update(fs)
                    .where(fs.c.source_id.in_(chunk), fs.c.lease_owner == owner)
                    .values(lease_expires=expires)
                    .returning(fs.c.source_id)
                )
                held.update(conn.execute(stmt).scalars())
            return held

        return self._write_retrying(renew, "renewing leases")

    def list_leases(self) -> dict[str, tuple[str, datetime | None]]:
        """Every source with a lease: source id -> (owner, expiry); an expiry in the past is a
        lease whose owner died or stalled (any replica may take the source over)."""
        fs = t.fetch_state
        with self._read() as conn:
            rows = conn.execute(
                sa.select(fs.c.source_id, fs.c.lease_owner, fs.c.lease_expires).where(
                    fs.c.lease_owner.is_not(None)
                )
            ).all()
        return {row.source_id: (row.lease_owner, row.lease_expires) for row in rows}

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
            for chunk in chunks(old_devs):
                doomed.extend(
                    conn.execute(
                        sa.select(m.c.record_id).where(m.c.development_id.in_(chunk))
                    ).scalars()
                )
            orphans = sa.select(r.c.id).where(
                r.c.time < older_than, ~sa.exists().where(m.c.record_id == r.c.id)
            )
            doomed.extend(conn.execute(orphans).scalars())
            for chunk in chunks(doomed):
                conn.execute(sa.delete(r).where(r.c.id.in_(chunk)))
            # Developments left without members (the pruned ones, and those merged into them).
            empty = sa.delete(d).where(~sa.exists().where(m.c.development_id == d.c.id))
            deleted_devs = conn.execute(empty).rowcount
            if doomed or deleted_devs:
                tx.bump_feed_version()
                tx.bump_layout_version()
        return len(doomed)


# Ends ``owner``'s leases on the sources ``ids`` (a lease held by another owner is left alone).
# Built once; ``_release_params`` gives its parameters.
_RELEASE = (
    sa.update(t.fetch_state)
    .where(
        t.fetch_state.c.source_id.in_(sa.bindparam("ids", expanding=True)),
        t.fetch_state.c.lease_owner == sa.bindparam("owner"),
    )
    .values(lease_owner=None, lease_expires=None)
)


def _release_params(owner: str, source_ids: Sequence[str]) -> dict[str, object]:
    return {"ids": list(source_ids), "owner": owner}


def _fetch_state_row(state: FetchState) -> dict[str, object]:
    return {
        "source_id": state.source_id,
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
        "moved_from": state.moved_from,
        "moved_to": state.moved_to,
        "skip_hours": sum(1 << h for h in state.skip_hours) or None,
        "skip_days": sum(1 << d for d in state.skip_days) or None,
    }


# The columns a saved fetch state updates: the row's, but its key; the lease columns are never
# among them.
_FETCH_STATE_VALUES = tuple(k for k in _fetch_state_row(FetchState("")) if k != "source_id")


@functools.cache
def _fetch_state_upsert(postgres: bool) -> sa.Insert:
    """INSERT ... ON CONFLICT DO UPDATE of a fetch state row, its values bound per execution.

    Built once per dialect: building it (``excluded`` copies the table's columns) cost more
    CPU than executing it, once per source and cycle.
    """
    table = t.fetch_state
    stmt = upsert_insert(table, postgres=postgres)
    return stmt.on_conflict_do_update(
        index_elements=[table.c.source_id],
        set_={k: stmt.excluded[k] for k in _FETCH_STATE_VALUES},
    )
