"""pipeline.ingest: exact duplicates, fingerprints stored, candidates from the window, developments,
one transaction, and concurrent ingests of one story (SQLite and PostgreSQL)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from aggregator import records
from aggregator.match import TopicMatcher
from aggregator.model import DedupOptions, DedupReason, Record, Topic, TopicRules
from aggregator.pipeline import IngestResult, ingest
from aggregator.store import Store, WriteTx, open_store
from aggregator.store import schema as t

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
TOPICS = (
    Topic("storms", "Storms", TopicRules(any=("storm*", "hurricane*"))),
    Topic("power", "Power grid", TopicRules(any=("power",))),
    Topic("elections", "Elections", TopicRules(any=("parliament",))),
)
BODY = (
    "Hurricane Orla made landfall near Port Avery on Tuesday with winds of 190 km/h, cutting "
    "power to 40,000 homes, officials in Calder County said. The storm flattened the harbour "
    "market, tore roofs from two schools and flooded the coastal road to Brennick, where "
    "rescuers in boats pulled 35 people from their houses overnight. Governor Ilse Marrow "
    "declared a state of emergency for Calder and Wyle counties and asked for federal help."
)
OTHER = (
    "Voters in Marisund elect a new parliament on Sunday; polls show the Green Alliance and the "
    "Farmers Party level at 24 percent each after a bitter campaign about water rights, rural "
    "schools and the future of the northern rail line, which both parties promise to rebuild."
)


def record(
    title: str,
    body: str,
    url: str | None,
    *,
    published: datetime | None = None,
    source_id: str | None = None,
    guid: str | None = None,
) -> Record:
    text = f"{body}\n\n{title}\n\n{body}\n"
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
    )


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    s = open_store(db_url)
    yield s
    s.close()


def put(
    store: Store,
    rec: Record,
    now: datetime = NOW,
    window_days: float = 7.0,
    allowed_topics: tuple[str, ...] = (),
) -> IngestResult:
    return ingest(
        store,
        rec,
        matcher=TopicMatcher(TOPICS),
        options=DedupOptions(window_days=window_days),
        allowed_topics=allowed_topics,
        now=now,
    )


def count(store: Store, table: sa.Table) -> int:
    with store.engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())


def test_new_record_is_stored_with_matches_fingerprint_and_index(store: Store) -> None:
    rec = record("Orla hits Port Avery", BODY, "https://a.example/orla")
    res = put(store, rec)
    assert res.stored and res.record_id == rec.id
    assert res.reason is DedupReason.NEW and res.score == 1.0
    assert res.topics == ("power", "storms")
    assert store.get_record(rec.id) == rec
    assert [m.topic_id for m in store.record_topics(rec.id)] == ["power", "storms"]
    assert count(store, t.fingerprints) == 1
    dev = store.get_development(res.development_id or "")
    assert dev is not None and dev.record_ids == (rec.id,)
    assert dev.title == "Orla hits Port Avery"
    member = store.get_membership(rec.id)
    assert member is not None and member.reason is DedupReason.NEW


@pytest.mark.parametrize(
    ("variant", "reason"),
    [
        ("same-id", DedupReason.SAME_URL),
        ("same-url", DedupReason.SAME_URL),
        ("same-guid", DedupReason.SAME_GUID),
        ("same-content", DedupReason.SAME_CONTENT),
    ],
)
def test_exact_duplicates_are_not_stored_again(
    store: Store, variant: str, reason: DedupReason
) -> None:
    first = record("Orla", BODY, "https://a.example/orla", source_id="wire", guid="g1")
    res1 = put(store, first)
    dup = {
        "same-id": first,
        "same-url": record("Other title", OTHER, "https://a.example/orla"),
        "same-guid": record("Other", OTHER, "https://b.example/x", source_id="wire", guid="g1"),
        # Same words, other spacing and another URL: the content hash is the same.
        "same-content": record("Orla", BODY.replace(" ", "  "), "https://c.example/copy"),
    }[variant]
    v = store.feed_version()
    res = put(store, dup)
    assert not res.stored
    assert res.record_id == first.id
    assert res.reason is reason
    assert res.development_id == res1.development_id
    assert res.topics == ("power", "storms")
    assert store.count_records() == 1
    dev = store.get_development(res.development_id or "")
    assert dev is not None
    if variant == "same-content":  # another URL: listed as one more place it was published
        assert store.feed_version() != v
        assert [s.url for s in dev.sources] == [first.url, dup.url]
    else:  # the same page or the same feed entry: nothing new to show
        assert store.feed_version() == v
        assert [s.url for s in dev.sources] == [first.url]


def test_copies_from_other_outlets_are_listed_as_sources(store: Store) -> None:
    first = record("Orla", BODY, "https://wire.example/orla", source_id="wire", guid="w1")
    res1 = put(store, first)
    # The same text, syndicated by another outlet an hour later: not stored again, but that
    # outlet reports the development too.
    copy = record(
        "Orla",
        BODY,
        "https://paper.example/orla",
        source_id="paper",
        guid="p9",
        published=NOW + timedelta(hours=1),
    )
    v = store.feed_version()
    res2 = put(store, copy, NOW + timedelta(hours=1))
    assert not res2.stored and res2.record_id == first.id
    assert res2.development_id == res1.development_id
    assert store.feed_version() != v
    dev = store.get_development(res1.development_id or "")
    assert dev is not None and dev.record_ids == (first.id,)
    assert [(s.source_id, s.url) for s in dev.sources] == [
        ("wire", "https://wire.example/orla"),
        ("paper", "https://paper.example/orla"),
    ]
    assert dev.updated == NOW + timedelta(hours=1)
    # The fetcher's pre-pass knows the copy's GUID; refetching it changes nothing.
    assert store.known_guids("paper", ["p9", "p10"]) == {"p9"}
    v = store.feed_version()
    again = put(store, copy, NOW + timedelta(hours=2))
    assert not again.stored and again.reason is DedupReason.SAME_CONTENT
    assert store.feed_version() == v
    refetch = put(store, first, NOW + timedelta(hours=2))
    assert not refetch.stored and store.feed_version() == v
    dev = store.get_development(res1.development_id or "")
    assert dev is not None and len(dev.sources) == 2
    assert store.count_records() == 1


def test_the_same_page_from_another_feed_is_known_by_its_guid_not_listed(store: Store) -> None:
    first = record("Orla", BODY, "https://wire.example/orla", source_id="wire", guid="w1")
    res1 = put(store, first)
    # Another feed (an aggregator's) links to the same page under its own GUID.
    link = record(
        "Orla (via agg)", OTHER, "https://wire.example/orla", source_id="agg", guid="agg-7"
    )
    v = store.feed_version()
    res = put(store, link, NOW + timedelta(hours=1))
    assert not res.stored and res.record_id == first.id and res.reason is DedupReason.SAME_URL
    # Not another place the story was published: nothing new to show ...
    assert store.feed_version() == v
    dev = store.get_development(res1.development_id or "")
    assert dev is not None
    assert [(s.source_id, s.url) for s in dev.sources] == [("wire", "https://wire.example/orla")]
    # ... but that feed's entry is known, so its next change does not process it again.
    assert store.known_guids("agg", ["agg-7", "agg-8"]) == {"agg-7"}
    again = put(store, link, NOW + timedelta(hours=2))
    assert not again.stored and store.feed_version() == v
    with store.engine.connect() as conn:
        aliases = conn.execute(sa.select(t.record_aliases.c.guid)).scalars().all()
    assert aliases == ["agg-7"]


def test_near_duplicate_joins_and_updates_the_development(store: Store) -> None:
    first = record("Orla hits Port Avery", BODY, "https://a.example/orla")
    res1 = put(store, first)
    rewrite = record(
        "Hurricane Orla slams Port Avery",
        BODY.replace("Tuesday", "Tuesday evening").replace("35 people", "thirty-five people"),
        "https://b.example/orla-2",
        published=NOW + timedelta(hours=3),
    )
    v = store.feed_version()
    res2 = put(store, rewrite, NOW + timedelta(hours=4))
    assert res2.stored
    assert res2.development_id == res1.development_id  # the id is stable
    assert res2.reason is DedupReason.NEAR_DUPLICATE
    assert 0.5 < res2.score < 1.0
    assert res2.matched_record_id == first.id
    dev = store.get_development(res1.development_id or "")
    assert dev is not None
    assert dev.record_ids == (first.id, rewrite.id)
    assert dev.first_seen == NOW  # published as new once
    assert dev.updated == NOW + timedelta(hours=4)  # moved on when the report came in
    assert store.feed_version() != v


def test_time_window_bounds_candidates(store: Store) -> None:
    first = record("Orla hits Port Avery", BODY, "https://a.example/orla", published=NOW)
    res1 = put(store, first)
    much_later = NOW + timedelta(days=30)
    copy = record(
        "Orla hits Port Avery",
        BODY + " A month on, the same report.",
        "https://b.example/orla",
        published=much_later,
    )
    res2 = put(store, copy, much_later, window_days=7)
    assert res2.reason is DedupReason.NEW
    assert res2.development_id != res1.development_id


def test_allowed_topics_limit_matching(store: Store) -> None:
    res = put(store, record("Orla", BODY, "https://a.example/o"), allowed_topics=("storms",))
    assert res.topics == ("storms",)


def test_unrelated_record_starts_its_own_development(store: Store) -> None:
    a = put(store, record("Orla hits Port Avery", BODY, "https://a.example/orla"))
    b = put(store, record("Marisund votes", OTHER, "https://a.example/vote"))
    assert b.reason is DedupReason.NEW and b.development_id != a.development_id
    assert len(store.list_developments()) == 2


def test_a_record_matching_no_topic_is_stored_in_no_development(store: Store) -> None:
    # No feed can show it: it is kept (its entry is known, check-config --dry-run sees it)
    # without a fingerprint, and neither starts nor joins a development.
    version = store.feed_version()
    rec = record("Orla hits Port Avery", BODY, "https://a.example/orla")
    res = put(store, rec, allowed_topics=("elections",))
    assert res.stored and res.development_id is None and res.reason is DedupReason.NO_TOPIC
    assert store.get_record(rec.id) == rec and store.get_membership(rec.id) is None
    assert count(store, t.fingerprints) == 0 and store.feed_version() == version
    assert not put(store, rec).stored  # still an exact duplicate
    # A topical report of the same story is not joined to it: it starts its own development.
    rewrite = record("Orla hits Port Avery hard", BODY + " More later.", "https://b.example/o")
    joined = put(store, rewrite)
    assert joined.reason is DedupReason.NEW and joined.development_id is not None


def test_ingest_is_one_transaction(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(self: WriteTx) -> None:
        raise RuntimeError("crash after the inserts")

    monkeypatch.setattr(WriteTx, "bump_feed_version", fail)
    with pytest.raises(RuntimeError):
        put(store, record("Orla", BODY, "https://a.example/orla"))
    assert store.count_records() == 0
    for table in (t.fingerprints, t.topic_matches, t.developments, t.memberships):
        assert count(store, table) == 0
    # The window took nothing from the failed transaction: the record is stored on a retry.
    monkeypatch.undo()
    assert put(store, record("Orla", BODY, "https://a.example/orla")).stored


def _race(db_url: str, recs: list[Record]) -> list[IngestResult]:
    """Ingest each record from its own thread and connection, all released at once."""
    barrier = threading.Barrier(len(recs))
    results: list[IngestResult] = []
    errors: list[BaseException] = []

    def worker(rec: Record) -> None:
        s = open_store(db_url, migrate=False)
        try:
            barrier.wait()
            results.append(put(s, rec))
        except BaseException as exc:  # surfaced below
            errors.append(exc)
        finally:
            s.close()

    threads = [threading.Thread(target=worker, args=(r,)) for r in recs]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors, errors
    return results


def test_concurrent_copies_make_one_record_and_one_development(store: Store, db_url: str) -> None:
    for round_ in range(3):
        body = f"{BODY} Update {round_}."
        # The same article reached through four URLs (syndication): one content hash.
        copies = [record("Orla", body, f"https://s{i}.example/{round_}") for i in range(4)]
        results = _race(db_url, copies)
        stored = [r for r in results if r.stored]
        assert len(stored) == 1
        assert {r.record_id for r in results} == {stored[0].record_id}
        assert {r.development_id for r in results} == {stored[0].development_id}
    assert store.count_records() == 3


def test_concurrent_rewrites_make_one_development(store: Store, db_url: str) -> None:
    # Four outlets' lightly edited versions of one wire story, ingested at the same moment.
    rewrites = [
        record(
            f"Orla hits Port Avery ({i})",
            BODY.replace("officials", ["officials", "authorities", "police", "sources"][i]),
            f"https://outlet{i}.example/orla",
        )
        for i in range(4)
    ]
    results = _race(db_url, rewrites)
    assert all(r.stored for r in results)
    assert len({r.development_id for r in results}) == 1
    assert sorted(r.reason for r in results).count(DedupReason.NEW) == 1
    assert len(store.list_developments()) == 1


def _ingest_in_process(db_url: str, rec: Record, start_at: float) -> tuple[bool, str | None]:
    """Run in a child process: wait for the common start instant, ingest, report."""
    import time as time_mod

    s = open_store(db_url, migrate=False)
    try:
        time_mod.sleep(max(0.0, start_at - time_mod.time()))
        res = put(s, rec)
        return res.stored, res.development_id
    finally:
        s.close()


@pytest.mark.slow
def test_two_processes_ingesting_one_story(store: Store, db_url: str) -> None:
    """Two replicas (processes, each with its own engine and pool) get copies of one story at
    the same instant: one record, one development."""
    import multiprocessing
    import time as time_mod

    copies = [
        record("Orla", BODY + " Final.", "https://one.example/orla"),
        record("Orla", BODY + " Final.", "https://two.example/orla"),
    ]
    start_at = time_mod.time() + 1.5
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(2) as pool:
        results = pool.starmap(_ingest_in_process, [(db_url, c, start_at) for c in copies])
    assert sorted(stored for stored, _ in results) == [False, True]
    assert len({dev for _, dev in results}) == 1
    assert store.count_records() == 1
    assert len(store.list_developments()) == 1
