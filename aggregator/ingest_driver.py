"""Records into the store: the ingest stages (``aggregator.ingest``: prepare, decide) run
against a ``Store`` (``WriteTx.apply``), one transaction per batch, under the ingest lock, with
the process's in-memory window; and ``import_records`` for ``aggregator import``.

The fetch cycle (``pipeline``) and the import command call ``ingest_many`` /
``ingest_prepared``. This module imports no HTTP, feed or extraction code, so a store command
starts without them.
"""

from __future__ import annotations

import logging
import random
import threading
import time as _time
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from aggregator import profile
from aggregator.ingest.decide import (
    apply_to_window,
    decide,
    first_choices,
    refresh_stored,
    with_summaries,
)
from aggregator.ingest.prepare import prepare
from aggregator.ingest.types import IngestResult, Plan, Prepared
from aggregator.ingest.window import Window
from aggregator.match import TopicMatcher
from aggregator.model import DedupOptions, DedupReason, IngestOptions, Record
from aggregator.store import Store, StoreConflict, WriteTx
from aggregator.store.transfer import read_import

__all__ = [
    "ImportSummary",
    "IngestResult",
    "import_records",
    "ingest",
    "ingest_many",
    "ingest_prepared",
    "merge_developments",
    "refresh_developments",
    "split_record",
]

log = logging.getLogger(__name__)


class _HeldWindow:
    """A store's window with the lock its ingests take in this process."""

    def __init__(self, window: Window, key: tuple[object, ...]) -> None:
        self.window = window
        self.key = key
        self.lock = threading.Lock()


_WINDOWS: weakref.WeakKeyDictionary[Store, _HeldWindow] = weakref.WeakKeyDictionary()
_WINDOWS_LOCK = threading.Lock()


def _window_for(store: Store, options: DedupOptions, tuning: IngestOptions) -> _HeldWindow:
    """The process's window of ``store`` (one per store and options; built empty, loaded from
    the store by the first ingest under the ingest lock)."""
    key = (options.window_days, tuning)
    with _WINDOWS_LOCK:
        held = _WINDOWS.get(store)
        if held is None or held.key != key:
            held = _WINDOWS[store] = _HeldWindow(
                Window(store.instance, tuning, options.window_days), key
            )
        return held


def ingest(
    store: Store,
    record: Record,
    *,
    matcher: TopicMatcher,
    options: DedupOptions,
    allowed_topics: Sequence[str] = (),
    now: datetime,
    tuning: IngestOptions | None = None,
) -> IngestResult:
    """``ingest_many`` of one record."""
    return ingest_many(
        store,
        [record],
        matcher=matcher,
        options=options,
        allowed_topics=allowed_topics,
        now=now,
        tuning=tuning,
    )[0]


def ingest_many(
    store: Store,
    records: Sequence[Record],
    *,
    matcher: TopicMatcher,
    options: DedupOptions,
    allowed_topics: Sequence[str] = (),
    now: datetime,
    tuning: IngestOptions | None = None,
) -> list[IngestResult]:
    """Store ``records`` (in order) unless exact duplicates, each with its topic matches and
    fingerprint, in a development (one it joins, or a new one it starts): the results are those
    of ingesting them one after another.

    Each batch of at most ``tuning.max_batch`` records is one transaction: under the ingest
    lock, the process's window catches up with the store, ``ingest.decide`` plans the batch in
    memory and ``WriteTx.apply`` writes the plan. A transaction that loses a race is retried.
    """
    prepared = [prepare(r, matcher, now, allowed_topics=allowed_topics) for r in records]
    return ingest_prepared(store, prepared, options=options, now=now, tuning=tuning)


def ingest_prepared(
    store: Store,
    prepared: Sequence[Prepared],
    *,
    options: DedupOptions,
    now: datetime,
    tuning: IngestOptions | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> list[IngestResult]:
    """``ingest_many`` of records prepared already (``ingest.prepare``); ``on_batch`` is told
    how many records are done after each batch."""
    tuning = tuning or IngestOptions()
    results: list[IngestResult] = []
    for start in range(0, len(prepared), tuning.max_batch):
        batch = prepared[start : start + tuning.max_batch]
        results.extend(_ingest_batch(store, batch, options, tuning, now))
        if on_batch is not None:
            on_batch(len(results))  # records ingested so far
    return results


def _ingest_batch(
    store: Store,
    batch: Sequence[Prepared],
    options: DedupOptions,
    tuning: IngestOptions,
    now: datetime,
) -> list[IngestResult]:
    held = _window_for(store, options, tuning)
    for attempt in range(1, tuning.attempts + 1):
        try:
            with held.lock:
                window = held.window
                # SQL and transaction time; deciding counts for the dedup stage inside.
                with profile.stage("store"), store.write() as tx:
                    tx.lock_ingest()
                    _catch_up(tx, window, batch, now)
                    records_ = [p.record for p in batch]
                    stored = tx.exact_keys(records_, first_choices(batch))
                    # Deciding (candidates, scores, representatives, titles) is dedup's work.
                    with profile.stage("dedup"):
                        plan = decide(window, batch, stored, options, tuning, now)
                    missing = plan.missing_summaries()
                    if missing:
                        plan = with_summaries(plan, tx.record_texts(missing))
                    seqs = tx.apply(plan, ingested=now)
                # Committed: the window holds what was written.
                with profile.stage("dedup"):
                    apply_to_window(window, plan, seqs)
                    # What the records filed around this batch's newest can no longer reach:
                    # an import of old articles in time order would otherwise drop each
                    # batch's records (older than now) and read them back for the next one.
                    window.evict(min(now, max(p.time for p in batch)))
            return plan.results
        except StoreConflict as exc:
            if attempt == tuning.attempts:
                raise
            log.debug("ingest of %d records lost a race (%s); retrying", len(batch), exc)
            _time.sleep(random.uniform(0.005, 0.05) * attempt)
    raise AssertionError("unreachable")  # pragma: no cover


def _catch_up(tx: WriteTx, window: Window, batch: Sequence[Prepared], now: datetime) -> None:
    """Bring ``window`` up to the store before deciding ``batch``: the records stored since it
    last looked (by another replica or process), and older ones when a record of the batch is
    filed earlier than the window reaches (an import of old articles)."""
    need = min([now, *(p.time for p in batch)]) - window.window
    top, layout = tx.window_marks()
    if window.layout_version != layout:  # records moved or removed outside ingest: rebuild
        window.reset(layout)
    devs: set[str] = set()
    if window.horizon is None:
        # A rebuild reads only what the memory bound keeps: the newest ``window_max_records``
        # (and those filed at the same time as the last of them; the next eviction drops
        # those by id), as a window that never restarted holds them.
        since = need
        cut = tx.window_cut(since=need, newest=window.options.window_max_records)
        if cut is not None and cut > need:
            since = cut
            window.capped = True
        devs |= window.load_records(tx.window_records(after_seq=0, since=since))
        window.set_horizon(need)
    else:
        if top > window.last_seq:
            rows = tx.window_records(after_seq=window.last_seq, since=window.horizon)
            devs |= window.load_records(rows)
        if need < window.horizon and not window.capped:
            devs |= window.load_records(
                tx.window_records(after_seq=0, since=need, before=window.horizon)
            )
            window.set_horizon(need)
    if devs:
        members = window.options.representative_members
        states = tx.window_developments(devs, members, fingerprints=False)
        window.load_developments(states, tx.fingerprints(window.unheld(states)))
    window.last_seq = max(window.last_seq, top)


def refresh_developments(
    tx: WriteTx, dev_ids: Sequence[str], now: datetime, tuning: IngestOptions | None = None
) -> None:
    """Refresh developments records moved in or out of (split, merge): representative, title
    and summary chosen by ``ingest.decide.refresh_stored``, topics from the members."""
    tuning = tuning or IngestOptions()
    tx.delete_empty_developments(dev_ids)
    states = tx.window_developments(dev_ids, tuning.representative_members)
    plan = Plan(developments=[refresh_stored(dev, now, tuning) for dev in states])
    missing = plan.missing_summaries()
    if missing:
        plan = with_summaries(plan, tx.record_texts(missing))
    tx.update_developments(plan.developments)
    tx.reset_development_topics(dev_ids)


def split_record(
    store: Store, record_id: str, now: datetime, tuning: IngestOptions | None = None
) -> str:
    """Move a record out of its development into a new one of its own (an admin decision
    that later ingests never undo); returns the new development's id."""
    with store.write() as tx:
        tx.lock_ingest()
        old, new = tx.split_record(record_id, now)
        refresh_developments(tx, [old, new], now, tuning or IngestOptions())
    return new


def merge_developments(
    store: Store, keep_id: str, other_id: str, now: datetime, tuning: IngestOptions | None = None
) -> None:
    """Move every record of ``other_id`` into ``keep_id``; ``other_id`` then resolves to it."""
    with store.write() as tx:
        tx.lock_ingest()
        keep = tx.merge_developments(keep_id, other_id, now)
        refresh_developments(tx, [keep], now, tuning or IngestOptions())


# ``progress(stage, done, total)``: how far a long call has come (the CLI draws it).
ProgressHook = Callable[[str, int, int], None]


def _no_progress(stage: str, done: int, total: int) -> None:
    return None


@dataclass(slots=True)
class ImportSummary:
    """What ``import_records`` did."""

    files: int = 0
    imported: int = 0  # records stored
    duplicates: int = 0  # exact duplicates of stored records, not stored again
    new_developments: int = 0  # developments the imported records started
    joined: int = 0  # records that joined an existing development
    unmatched: int = 0  # records stored in no development: they match no topic
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
    tuning: IngestOptions | None = None,
    progress: ProgressHook | None = None,
) -> ImportSummary:
    """Import record files or folders (seed format, optional index.jsonl): every record goes
    through ingest like a fetched one, so importing twice adds nothing.

    ``source_topics`` maps a watchlist source id to its topics: a record from that source is
    matched against those only, as when fetched. All files are read and checked first; a bad
    file stops the import before anything is stored (``transfer.ImportProblems``).
    ``progress(stage, done, total)`` is told how far the ``"match"`` stage (topics and
    fingerprints, record by record) and the ``"store"`` stage (dedup and writes, batch by
    batch) have come.
    """
    batch = read_import(paths, now=now)
    summary = ImportSummary(files=len(batch.items), skipped=batch.skipped, warnings=batch.warnings)
    topics_of = source_topics or {}
    tell = progress or _no_progress
    total = len(batch.items)
    prepared: list[Prepared] = []
    for item in batch.items:
        allowed = topics_of.get(item.record.source_id, ()) if item.record.source_id else ()
        prepared.append(prepare(item.record, matcher, now, allowed_topics=allowed))
        tell("match", len(prepared), total)
    for result in ingest_prepared(
        store,
        prepared,
        options=options,
        now=now,
        tuning=tuning,
        on_batch=lambda done: tell("store", done, total),
    ):
        summary.results.append(result)
        if not result.stored:
            summary.duplicates += 1
            continue
        summary.imported += 1
        if result.reason is DedupReason.NO_TOPIC:
            summary.unmatched += 1
        elif result.reason is DedupReason.NEW:
            summary.new_developments += 1
        else:
            summary.joined += 1
    return summary
