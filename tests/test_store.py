"""The Store on SQLite and PostgreSQL: records, fetch state, leases, developments, retention,
migrations."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa

from aggregator import records
from aggregator.errors import StoreError
from aggregator.ingest_driver import merge_developments, split_record
from aggregator.match import TopicMatcher
from aggregator.model import (
    DedupOptions,
    DedupReason,
    FailureClass,
    FetchState,
    Record,
    Schedule,
    Source,
    SourceKind,
    Topic,
    TopicRules,
)
from aggregator.pipeline import IngestResult, ingest
from aggregator.store import Store, open_store, schema
from aggregator.store.migrate import current_revision, head_revision

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
TOPICS = (
    Topic("storms", "Storms", TopicRules(any=("storm*", "hurricane*"))),
    Topic("elections", "Elections", TopicRules(any=("election*", "vote*"))),
)


def make_record(
    title: str,
    body: str,
    *,
    url: str | None = None,
    source_id: str | None = None,
    guid: str | None = None,
    published: datetime | None = None,
) -> Record:
    text = f"{body}\n\n{title}\n\n{body} {title}.\n"
    return Record(
        id=records.record_id(url, text),
        text=text,
        title=title,
        content_hash=records.content_hash(text),
        url=url,
        canonical_url=url,
        guid=guid,
        source_id=source_id,
        published=published,
        fetched=NOW,
        language="en",
        author="Desk",
    )


STORM = (
    "Hurricane Orla made landfall near Port Avery on Tuesday with winds of 190 km/h, "
    "cutting power to 40,000 homes, officials in Calder County said."
)
VOTE = (
    "Voters in Marisund elect a new parliament on Sunday; polls show the Green Alliance "
    "and the Farmers Party level at 24 percent each after a bitter campaign."
)


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    s = open_store(db_url)
    yield s
    s.close()


def put(store: Store, record: Record, now: datetime = NOW) -> IngestResult:
    return ingest(store, record, matcher=TopicMatcher(TOPICS), options=DedupOptions(), now=now)


# --- records ------------------------------------------------------------------------------


def test_record_round_trip_keeps_every_field(store: Store) -> None:
    cest = timezone(timedelta(hours=2))
    rec = make_record(
        "Orla hits Port Avery",
        STORM,
        url="https://news.example/orla",
        source_id="wire",
        guid="g-1",
        published=datetime(2026, 3, 1, 14, 30, 15, 123456, tzinfo=cest),
    )
    put(store, rec)
    got = store.get_record(rec.id)
    assert got is not None
    assert got == rec  # published compares equal across time zones...
    assert got.published is not None and got.published.tzinfo is not None
    assert got.published.utcoffset() == timedelta(0)  # ...and comes back as UTC
    assert got.published == datetime(2026, 3, 1, 12, 30, 15, 123456, tzinfo=UTC)
    assert got.fetched == NOW
    assert store.get_record("0" * 16) is None


def test_get_records_iter_and_count(store: Store) -> None:
    recs = [
        make_record(f"Story {i} about storms", f"{STORM} Item {i} {'x' * i}.", url=f"https://a/{i}")
        for i in range(5)
    ]
    for rec in recs:
        put(store, rec)
    assert store.count_records() == 5
    assert [r.id for r in store.iter_records(batch=2)] == [r.id for r in recs]
    wanted = [recs[3].id, "f" * 16, recs[0].id]
    assert [r.id for r in store.get_records(wanted)] == [recs[3].id, recs[0].id]


def test_exact_duplicate_by_each_key(store: Store) -> None:
    """A copy is found by each exact key (the decider's rule, over the rows the store reads
    for the batch): same record id, canonical URL, source and GUID, content hash."""
    rec = make_record("Orla", STORM, url="https://news.example/orla", source_id="s", guid="g")
    put(store, rec)
    same_url = make_record("Other storm", VOTE, url="https://news.example/orla")
    same_guid = make_record(
        "Other storm", VOTE, url="https://news.example/x", source_id="s", guid="g"
    )
    same_text = make_record("Orla", STORM, url="https://elsewhere.example/orla")
    fresh = make_record("Other storm", VOTE, url="https://news.example/y", source_id="s", guid="h")
    for copy, reason in (
        (rec, DedupReason.SAME_URL),
        (same_url, DedupReason.SAME_URL),
        (same_guid, DedupReason.SAME_GUID),
        (same_text, DedupReason.SAME_CONTENT),
    ):
        result = put(store, copy)
        assert (result.stored, result.record_id, result.reason) == (False, rec.id, reason)
    assert put(store, fresh).stored
    assert store.count_records() == 2
    assert store.known_guids("s", ["g", "h", "g"]) == {"g", "h"}
    assert store.known_guids("other", ["g"]) == set()


# --- fetch state and leases ----------------------------------------------------------------


def source(sid: str, *, enabled: bool = True) -> Source:
    return Source(
        id=sid,
        kind=SourceKind.FEED,
        url=f"https://{sid}.example/feed",
        schedule=Schedule(interval_seconds=600),
        title=f"Source {sid}",
        enabled=enabled,
    )


def test_fetch_state_save_and_load(store: Store) -> None:
    assert store.get_fetch_state("nope") == FetchState(source_id="nope")
    state = FetchState(
        source_id="a",
        etag='W/"123"',
        last_modified="Mon, 02 Mar 2026 10:00:00 GMT",
        next_fetch=NOW + timedelta(minutes=10),
        last_attempt=NOW,
        last_success=NOW - timedelta(hours=1),
        consecutive_failures=2,
        failure_class=FailureClass.TIMEOUT,
        last_error="read timed out",
        failure_counts={"timeout": 2, "http-5xx": 1},
        fetch_count=17,
    )
    store.save_fetch_state(state)
    assert store.get_fetch_state("a") == state
    later = FetchState(source_id="a", fetch_count=18, last_success=NOW)
    store.save_fetch_state(later)
    assert store.get_fetch_state("a") == later
    assert [s.source_id for s in store.list_fetch_states()] == ["a"]


def test_sync_sources_adds_updates_and_retires(store: Store) -> None:
    store.sync_sources([source("a"), source("b")])
    assert [s.id for s in store.list_sources()] == ["a", "b"]
    v1 = store.feed_version()
    store.sync_sources([source("a"), source("b")])
    assert store.feed_version() == v1  # nothing changed
    store.sync_sources([Source("a", SourceKind.FEED, "https://a2/", Schedule(), title="A2")])
    assert [(s.id, s.title, s.url) for s in store.list_sources()] == [("a", "A2", "https://a2/")]
    assert [s.id for s in store.list_sources(include_inactive=True)] == ["a", "b"]
    assert store.feed_version() != v1
    # A retired source is never due; its fetch state stays.
    assert store.claim_due_sources("w", NOW, 60, 10) == ["a"]
    assert {s.source_id for s in store.list_fetch_states()} == {"a", "b"}


def test_claim_due_sources_leases(store: Store) -> None:
    store.sync_sources([source(x) for x in "abcde"] + [source("off", enabled=False)])
    store.save_fetch_state(FetchState(source_id="e", next_fetch=NOW + timedelta(hours=1)))
    first = store.claim_due_sources("one", NOW, 300, 2)
    second = store.claim_due_sources("two", NOW, 300, 10)
    assert len(first) == 2 and len(second) == 2
    assert not set(first) & set(second)
    assert set(first) | set(second) == {"a", "b", "c", "d"}  # e not due, off disabled
    assert store.claim_due_sources("three", NOW, 300, 10) == []
    assert store.lease_of(first[0])[0] == "one"
    # Released: due again at once (its next_fetch has not moved).
    store.release_source("one", first[0])
    store.release_source("two", first[1])  # not two's lease: kept
    assert store.claim_due_sources("three", NOW, 300, 10) == [first[0]]
    # "one" died: after the lease time its sources go to someone else.
    later = NOW + timedelta(seconds=301)
    assert store.claim_due_sources("four", later, 300, 10) == ["a", "b", "c", "d"]
    owners = {sid: store.lease_of(sid)[0] for sid in "abcd"}
    assert set(owners.values()) == {"four"}
    # e becomes due when its next_fetch passes (never-fetched sources go first).
    assert store.claim_due_sources("five", NOW + timedelta(hours=2), 60, 10) == [*"abcde"]


def test_claim_due_states_returns_the_claimed_states(store: Store) -> None:
    store.sync_sources([source(x) for x in "abc"])
    saved = FetchState(source_id="b", etag='"b"', failure_counts={"timeout": 1}, fetch_count=3)
    store.save_fetch_state(saved)
    store.save_fetch_state(FetchState(source_id="c", next_fetch=NOW + timedelta(hours=1)))
    claimed = store.claim_due_states("one", NOW, 300, 10)
    assert claimed == [FetchState(source_id="a"), saved]  # c is not due
    assert store.lease_of("a") == ("one", NOW + timedelta(seconds=300))
    assert store.lease_of("b")[0] == "one" and store.lease_of("c") == (None, None)
    assert store.claim_due_states("two", NOW, 300, 10) == []
    assert store.claim_due_states("two", NOW, 300, 0) == []


def test_claims_take_never_fetched_sources_first_then_the_most_overdue(store: Store) -> None:
    store.sync_sources([source(x) for x in "abcdef"])
    due = {"b": -3, "d": -1, "e": -2, "f": +1}  # hours from NOW; a and c were never fetched
    for sid, hours in due.items():
        store.save_fetch_state(FetchState(source_id=sid, next_fetch=NOW + timedelta(hours=hours)))
    # One claim spans both queries: the never-fetched in id order, then by next_fetch.
    assert store.claim_due_sources("one", NOW, 300, 3) == ["a", "c", "b"]
    assert store.claim_due_sources("two", NOW, 300, 3) == ["e", "d"]  # f is not due
    assert store.claim_due_sources("three", NOW, 300, 3) == []


def test_a_claim_walks_the_due_index_instead_of_sorting_every_source(tmp_path: Path) -> None:
    s = open_store(f"sqlite:///{tmp_path / 'plan.db'}")
    try:
        fs, src = schema.fetch_state, schema.sources
        query = (
            sa.select(fs.c.source_id)
            .join(src, src.c.id == fs.c.source_id)
            .where(src.c.enabled.is_(True), fs.c.next_fetch <= NOW)
            .order_by(fs.c.next_fetch, fs.c.source_id)
            .limit(16)
        )
        sql = str(query.compile(s.engine, compile_kwargs={"literal_binds": True}))
        with s.engine.connect() as conn:
            plan = " / ".join(row[3] for row in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql))
        assert "ix_fetch_state_due" in plan and "TEMP B-TREE" not in plan, plan
    finally:
        s.close()


def test_saving_the_fetch_state_can_end_the_lease(store: Store) -> None:
    store.sync_sources([source("a"), source("b")])
    assert store.claim_due_sources("one", NOW, 300, 1) == ["a"]
    assert store.claim_due_sources("two", NOW, 300, 1) == ["b"]
    store.save_fetch_state(FetchState(source_id="a", etag='"1"'), release_owner="one")
    store.save_fetch_state(FetchState(source_id="b", etag='"2"'), release_owner="one")
    assert store.lease_of("a") == (None, None)
    assert store.lease_of("b")[0] == "two"  # another owner's lease is left alone
    assert store.get_fetch_state("a").etag == '"1"' and store.get_fetch_state("b").etag == '"2"'
    states = store.get_fetch_states(["b", "a", "never"])
    assert states == {
        "a": store.get_fetch_state("a"),
        "b": store.get_fetch_state("b"),
        "never": FetchState(source_id="never"),
    }


def test_save_fetch_states_writes_a_batch_and_ends_its_leases(store: Store) -> None:
    store.sync_sources([source(x) for x in "abcd"])
    assert store.claim_due_sources("one", NOW, 300, 3) == ["a", "b", "c"]
    assert store.claim_due_sources("two", NOW, 300, 1) == ["d"]
    batch = [
        FetchState(source_id="a", etag='"a1"', last_success=NOW, fetch_count=1),
        FetchState(
            source_id="b",
            failure_class=FailureClass.TIMEOUT,
            failure_counts={"timeout": 1},
            consecutive_failures=1,
        ),
        FetchState(source_id="d", last_modified="Mon, 02 Mar 2026 12:00:00 GMT"),
        FetchState(source_id="new", etag='"n"'),  # no row yet: inserted
    ]
    store.save_fetch_states(batch, release_owner="one")
    assert store.get_fetch_states([s.source_id for s in batch]) == {s.source_id: s for s in batch}
    assert store.lease_of("a") == (None, None) and store.lease_of("b") == (None, None)
    assert store.lease_of("c")[0] == "one"  # not in the batch: still leased
    assert store.lease_of("d")[0] == "two"  # another owner's lease is left alone
    store.save_fetch_states([FetchState(source_id="c", etag='"c1"')])  # no owner: lease kept
    assert store.lease_of("c")[0] == "one"
    store.save_fetch_states([])  # nothing to write


def test_a_failed_batch_of_fetch_states_writes_none(store: Store) -> None:
    store.sync_sources([source("a"), source("b")])
    assert store.claim_due_sources("one", NOW, 300, 2) == ["a", "b"]
    before = store.get_fetch_states(["a", "b"])
    # fetch_count is NOT NULL: the second row of the batch fails.
    bad = FetchState(source_id="b", fetch_count=None)  # type: ignore[arg-type]
    with pytest.raises(StoreError):
        store.save_fetch_states([FetchState(source_id="a", etag='"1"'), bad], release_owner="one")
    assert store.get_fetch_states(["a", "b"]) == before  # one transaction: all or nothing
    assert store.lease_of("a")[0] == "one" and store.lease_of("b")[0] == "one"


def test_concurrent_claims_never_share_a_source(store: Store, db_url: str) -> None:
    store.sync_sources([source(f"s{i:03d}") for i in range(120)])
    results: dict[str, list[str]] = {}
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def worker(owner: str) -> None:
        s = open_store(db_url)
        try:
            barrier.wait()
            got: list[str] = []
            while batch := s.claim_due_sources(owner, NOW, 600, 7):
                got.extend(batch)
            results[owner] = got
        except BaseException as exc:  # surfaced below
            errors.append(exc)
        finally:
            s.close()

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors
    claimed = [sid for got in results.values() for sid in got]
    assert len(claimed) == 120
    assert len(set(claimed)) == 120


# --- developments ----------------------------------------------------------------------------


def test_developments_listing_topics_and_sources(store: Store) -> None:
    store.sync_sources([source("wire")])
    a = make_record("Orla hits Port Avery", STORM, url="https://a/1", source_id="wire")
    b = make_record("Marisund votes", VOTE, url="https://a/2", published=NOW - timedelta(days=1))
    rb = put(store, b, NOW - timedelta(hours=2))  # published a day ago, found 2 hours ago
    ra = put(store, a)
    devs = store.list_developments()
    assert [d.record_ids for d in devs] == [(a.id,), (b.id,)]  # last changed first
    assert devs[1].first_seen == NOW - timedelta(days=1)
    assert devs[1].updated == NOW - timedelta(hours=2)
    storm = devs[0]
    assert storm.topics == ("storms",)
    assert "hurricane*" in storm.terms
    assert storm.title == "Orla hits Port Avery"
    assert storm.summary.startswith("Hurricane Orla made landfall")
    assert storm.sources[0].source_title == "Source wire"
    assert storm.sources[0].url == "https://a/1"
    assert storm.first_seen == NOW and storm.updated == NOW
    assert [d.id for d in store.list_developments(topic="elections")] == [devs[1].id]
    assert store.list_developments(topic="nothing") == []
    assert [d.id for d in store.list_developments(since=NOW - timedelta(hours=1))] == [storm.id]
    assert len(store.list_developments(limit=1)) == 1
    assert store.get_development(storm.id) == storm
    assert ra.development_id == storm.id
    assert rb.development_id == devs[1].id


def test_split_and_merge(store: Store) -> None:
    a = make_record("Orla hits Port Avery", STORM, url="https://a/1")
    copy = make_record("Orla hits Port Avery hard", STORM + " More soon.", url="https://b/1")
    c = make_record("Marisund votes", VOTE, url="https://c/1")
    ra, rcopy, rc = put(store, a), put(store, copy), put(store, c)
    assert rcopy.development_id == ra.development_id
    storm_dev, vote_dev = ra.development_id, rc.development_id
    assert storm_dev is not None and vote_dev is not None
    v0 = store.feed_version()

    later = NOW + timedelta(hours=1)
    new_dev = split_record(store, copy.id, later)
    assert store.feed_version() != v0
    kept = store.get_development(storm_dev)
    assert kept is not None and kept.record_ids == (a.id,)
    split = store.get_development(new_dev)
    assert split is not None and split.record_ids == (copy.id,) and split.updated == later
    member = store.get_membership(copy.id)
    assert member is not None and member.reason is DedupReason.MANUAL
    with pytest.raises(StoreError, match="only member"):
        split_record(store, copy.id, later)
    with pytest.raises(StoreError, match="no record"):
        split_record(store, "0" * 16, later)

    # A later copy of the split record never pulls it back: manual decisions stay.
    third = make_record("Orla hits Port Avery hard", STORM + " More soon!", url="https://d/1")
    put(store, third, later)
    member = store.get_membership(copy.id)
    assert member is not None and member.development_id == new_dev

    merge_developments(store, storm_dev, vote_dev, later)
    merged = store.get_development(storm_dev)
    assert merged is not None and c.id in merged.record_ids
    # The merged-away id resolves to the kept development and leaves the listings.
    assert store.get_development(vote_dev) == merged
    assert vote_dev not in {d.id for d in store.list_developments()}
    assert set(merged.topics) == {"storms", "elections"}
    with pytest.raises(StoreError, match="same development"):
        merge_developments(store, storm_dev, vote_dev, later)
    with pytest.raises(StoreError, match="no development"):
        merge_developments(store, storm_dev, "nope", later)


def test_prune_removes_old_developments_whole(store: Store) -> None:
    old = make_record("Old storm", STORM, url="https://a/old", published=NOW - timedelta(days=400))
    new = make_record("Marisund votes", VOTE, url="https://a/new")
    put(store, old, NOW - timedelta(days=400))
    put(store, new)
    v = store.feed_version()
    assert store.prune(NOW - timedelta(days=365)) == 1
    assert store.get_record(old.id) is None
    assert store.get_record(new.id) is not None
    assert [d.record_ids for d in store.list_developments()] == [(new.id,)]
    assert store.feed_version() != v
    assert store.prune(NOW - timedelta(days=365)) == 0
    # Its index rows went with it: a re-ingest is stored again, as new.
    assert put(store, old).stored
    # Retention counts from when a development last changed here, not from publication: an
    # old article found today stays.
    assert store.prune(NOW - timedelta(days=365)) == 0


# --- migrations ------------------------------------------------------------------------------


def test_open_store_migrates_to_head_and_schema_matches_models(db_url: str) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from aggregator.store.schema import include_name, metadata

    s = open_store(db_url)
    s.close()
    s = open_store(db_url)  # a second open finds the schema at head
    try:
        assert current_revision(s.engine) == head_revision()
        with s.engine.connect() as conn:
            # The search index (migration 0008) is SQL the models do not describe.
            context = MigrationContext.configure(conn, opts={"include_name": include_name})
            diff = compare_metadata(context, metadata)
        assert diff == []
    finally:
        s.close()


def test_sqlite_pragmas_and_immediate_transactions(tmp_path: object) -> None:
    from pathlib import Path

    path = Path(str(tmp_path)) / "deep" / "dir" / "x.db"
    s = open_store(f"sqlite:///{path}")
    try:
        assert path.exists()
        with s.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert (conn.exec_driver_sql("PRAGMA busy_timeout").scalar() or 0) >= 1000
        # A write transaction holds the write lock from its first statement.
        other = sa.create_engine(f"sqlite:///{path}", connect_args={"timeout": 0})
        with s.write() as tx:
            tx.conn.execute(sa.text("SELECT 1"))
            with other.connect() as conn2, pytest.raises(sa.exc.OperationalError):
                conn2.exec_driver_sql("BEGIN IMMEDIATE")
        other.dispose()
    finally:
        s.close()


def test_bad_url_is_a_clear_error() -> None:
    with pytest.raises(StoreError, match="unsupported database"):
        open_store("mysql://localhost/x")


@pytest.mark.postgres
def test_postgres_connections_recover_after_a_server_side_disconnect(pg_database: str) -> None:
    """What a PostgreSQL restart does to a pool: every connection is cut. The store's pool
    pings before use and replaces dead connections, so the next call just works."""
    import psycopg

    from tests.conftest import PG_ADMIN_URL

    s = open_store(pg_database)
    try:
        s.count_records()
        s.feed_version()
        name = s.engine.url.database
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                (name,),
            )
        assert s.count_records() >= 0
        assert s.feed_version()
    finally:
        s.close()


def test_in_memory_sqlite_store_is_one_database() -> None:
    s = open_store("sqlite:///:memory:")
    try:
        put(s, make_record("Orla hits Port Avery", STORM, url="https://a/1"))
        seen: list[int] = []
        th = threading.Thread(target=lambda: seen.append(s.count_records()))
        th.start()
        th.join()
        assert seen == [1]  # another thread sees the same database
    finally:
        s.close()


def test_exact_keys_and_known_guids_over_more_values_than_one_statement_takes(
    store: Store,
) -> None:
    """The exact-key read finds stored records by each key when the batch's IN lists run
    past one statement's bound (CHUNK) and are of unequal lengths; known_guids likewise."""
    from dataclasses import replace

    from aggregator.store.common import CHUNK

    stored = [
        make_record("Orla", STORM, url="https://news.example/orla", source_id="s", guid="g"),
        replace(make_record("Vote", VOTE, url="https://news.example/vote"), headline_key="hk1"),
        make_record("Vote count", VOTE + " Turnout rose.", source_id="s", guid="g2"),
    ]
    for rec in stored:
        assert put(store, rec).stored
    fillers = [
        make_record(f"Item {i}", f"Filler text number {i}.", source_id="s", guid=f"x{i}")
        for i in range(CHUNK + 20)
    ]
    by_url = make_record("Other", "Another text.", url="https://news.example/orla")
    by_hash = replace(
        make_record("Orla again", "Different body."), content_hash=stored[2].content_hash
    )
    by_headline = replace(make_record("Vote again", "Yet another."), headline_key="hk1")
    by_guid = make_record("Count", "More text.", source_id="s", guid="g2")
    batch = [*fillers, by_url, by_hash, by_headline, by_guid, stored[0]]
    with store.write() as tx:
        found = tx.exact_keys(batch, [])
    assert sorted(r.id for r in found.rows) == sorted(r.id for r in stored)
    guids = [f"x{i}" for i in range(CHUNK + 20)] + ["g2", "g"]
    assert store.known_guids("s", guids) == {"g", "g2"}
    assert store.known_guids("t", guids) == set()


def test_very_long_urls_and_guids_are_stored_and_found(store: Store) -> None:
    # Longer than a PostgreSQL btree entry may be: the URL and GUID indexes are hash indexes.
    url = "https://news.example/story?" + "&".join(f"k{i}=v{i}" for i in range(700))
    assert len(url) > 5000
    rec = make_record("Orla", STORM, url=url, source_id="wire", guid="urn:" + "x" * 6000)
    assert put(store, rec).stored
    assert store.get_record(rec.id) == rec
    copy = put(store, make_record("Other storm", VOTE, url=url))
    assert (copy.stored, copy.record_id, copy.reason) == (False, rec.id, DedupReason.SAME_URL)
    assert store.known_guids("wire", [rec.guid or ""]) == {rec.guid}


def test_postgresql_hash_indexes_are_on_the_metadata_of_a_postgresql_engine() -> None:
    # Set when a PostgreSQL engine is made (not at import: that loads the PostgreSQL dialect
    # into every SQLite command); the migrations create them so (0003).
    from aggregator.store import schema as t
    from aggregator.store.engine import create_engine

    create_engine("postgresql://user@127.0.0.1:1/none").dispose()  # connects to nothing
    using = {
        ix.name: ix.dialect_options["postgresql"]["using"]
        for table in t.metadata.tables.values()
        for ix in table.indexes
    }
    assert {name for name, how in using.items() if how == "hash"} == {
        "ix_records_canonical_url",
        "ix_records_guid",
        "ix_record_aliases_guid",
    }


def test_upgrade_from_the_first_revision_keeps_data(db_url: str) -> None:
    """A database made by an older version (revision 0001) with data in it upgrades in place."""
    from alembic import command

    from aggregator.store.engine import create_engine
    from aggregator.store.migrate import alembic_config

    engine = create_engine(db_url)
    try:
        with engine.begin() as conn:
            if conn.dialect.name == "postgresql":  # the fixture's database is at head: reset
                conn.exec_driver_sql("DROP SCHEMA public CASCADE")
                conn.exec_driver_sql("CREATE SCHEMA public")
            cfg = alembic_config()
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "0001")
        assert current_revision(engine) == "0001"
    finally:
        engine.dispose()
    old = open_store(db_url, migrate=False)
    try:
        rec = make_record("Orla", STORM, url="https://a/1", source_id="wire", guid="g")
        with old.write() as tx:  # what version 0001 wrote: a record and its development
            _write_plainly(tx.conn, rec)
    finally:
        old.close()
    s = open_store(db_url)
    try:
        assert current_revision(s.engine) == head_revision()
        assert s.get_record(rec.id) == rec
        assert s.known_guids("wire", ["g"]) == {"g"}
        copy = put(s, make_record("x storm", VOTE, url="https://a/1"))
        assert (copy.stored, copy.record_id) == (False, rec.id)
        assert [d.record_ids for d in s.list_developments()] == [(rec.id,)]
    finally:
        s.close()


def test_unusable_locations_are_clear_errors(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder", encoding="utf-8")
    with pytest.raises(StoreError, match="cannot create the data directory"):
        open_store(f"sqlite:///{blocker}/sub/aggregator.db")
    with pytest.raises(StoreError, match="database error"):
        open_store("postgresql://127.0.0.1:1/nothing")


def _write_plainly(conn: sa.Connection, rec: Record) -> None:
    """A record in a development of its own, as revisions before 0007 stored it (only the
    columns they have)."""
    conn.execute(
        sa.insert(schema.records).values(
            id=rec.id,
            seq=1,
            text=rec.text,
            title=rec.title,
            url=rec.url,
            canonical_url=rec.canonical_url,
            guid=rec.guid,
            source_id=rec.source_id,
            published=rec.published,
            fetched=rec.fetched,
            ingested=NOW,
            time=NOW,
            language=rec.language,
            author=rec.author,
            content_hash=rec.content_hash,
        )
    )
    conn.execute(
        sa.insert(schema.developments).values(
            id="d1", title="", summary="", first_seen=NOW, updated=NOW, representative_id=rec.id
        )
    )
    conn.execute(
        sa.insert(schema.memberships).values(
            record_id=rec.id,
            development_id="d1",
            reason=str(DedupReason.NEW),
            score=1.0,
            matched_record_id=None,
            manual=False,
            joined=NOW,
        )
    )


def test_index_row_migrations_go_up_and_down(db_url: str) -> None:
    """Revision 0004 rebuilt the band and key-term tables keeping their rows; 0010 drops them
    (candidates come from the in-memory window) and its downgrade makes them again, empty."""
    from alembic import command

    from aggregator.store.engine import create_engine
    from aggregator.store.migrate import alembic_config

    def migrate(target: str, down: bool = False) -> None:
        engine = create_engine(db_url)
        try:
            with engine.begin() as conn:
                cfg = alembic_config()
                cfg.attributes["connection"] = conn
                (command.downgrade if down else command.upgrade)(cfg, target)
        finally:
            engine.dispose()

    def band_rows() -> list[tuple[str, str]]:
        engine = create_engine(db_url)
        try:
            with engine.connect() as conn:
                return [
                    tuple(r) for r in conn.exec_driver_sql("SELECT band, record_id FROM lsh_bands")
                ]
        finally:
            engine.dispose()

    open_store(db_url).close()
    migrate("0003", down=True)
    rec = make_record("Orla", STORM, url="https://a/1", source_id="wire", guid="g")
    engine = create_engine(db_url)
    try:
        with engine.begin() as conn:
            _write_plainly(conn, rec)
            for band in ("b1", "b2"):
                conn.execute(
                    sa.text("INSERT INTO lsh_bands (band, record_id, time) VALUES (:b, :r, :t)"),
                    {"b": band, "r": rec.id, "t": NOW},
                )
    finally:
        engine.dispose()
    migrate("0006")
    assert sorted(band_rows()) == [("b1", rec.id), ("b2", rec.id)]
    migrate("head")
    migrate("0006", down=True)
    assert band_rows() == []
    migrate("head")
    s = open_store(db_url)
    try:
        assert current_revision(s.engine) == head_revision()
        assert s.get_record(rec.id) == rec
        assert [d.record_ids for d in s.list_developments()] == [(rec.id,)]
    finally:
        s.close()
