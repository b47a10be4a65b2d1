"""The fetch cycle: the one driver behind ``aggregator fetch-once`` and ``aggregator run``.

``CycleDriver`` holds what one process needs to fetch sources: leases (claims), the fetch of
one source (``fetch_source``: fetch, parse, prepare, ingest, fetch state), a parse pool, the
group commit of fetch states (``FetchStateWriter``) and the ingest sequencer
(``IngestSequencer``). ``run_cycle`` (``fetch-once``) drives it over every due source; the
service (``service.runner``) drives the same methods from its scheduler's jobs. As Miniflux
has one ``RefreshFeed`` for every caller, there is one ``fetch_source`` here.

No database work runs on the event loop: claims, fetch states, source sync and ingest run on
the cycle's one worker thread (``off_loop``), parsing and record preparation on the parse pool
(processes) or the parse thread, so the HTTP side of the service never waits on SQL.

Determinism: the new records of the fetches that finish close together are ingested together,
in publication-time order with ties broken by a stable key (``order_key``), whatever order
their fetches finished in, so the same input gives the same developments and ids. A source's
records wait at most ``fetch.ingest_hold_seconds`` for slower fetches (or until
``fetch.ingest_hold_records`` wait), then go in whatever has arrived.

Fairness: one fetch offers at most ``fetch.max_items_per_fetch`` new entries (oldest first;
the rest come with the next fetch, ``fetch.backlog_seconds`` later), and ingest runs on the
worker thread one batch (``ingest.max_batch`` records) per job, so another source's claim or
state save waits for at most one batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import multiprocessing
import os
import random
import threading
import time as _time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from aggregator import feeds, identity, normalize, parse_worker, pipeline, records
from aggregator.errors import ExtractionError, FeedParseError, FetchError
from aggregator.extract import extract_article_guarded_async
from aggregator.extract.listing import choose_links
from aggregator.extract.worker import call_guarded_async, scrape_listing_guarded_async
from aggregator.fetch import schedule
from aggregator.fetch.backoff import CacheHints
from aggregator.fetch.client import Fetcher, FetchResponse, FetchStatusError
from aggregator.match import TopicMatcher
from aggregator.model import (
    DedupOptions,
    FailureClass,
    FetchState,
    IngestOptions,
    Record,
    Source,
    SourceKind,
)
from aggregator.store import Store
from aggregator.watchlist import Watchlist

log = logging.getLogger(__name__)

# Entries whose own text is shorter than this get the linked page fetched (source.full_text).
FULL_TEXT_MIN_CHARS = 600
MAX_ERROR_CHARS = 500
# Fetch states one write transaction takes at most.
STATE_BATCH = 64
# A cycle this big repays starting parse processes (one per core but one).
PARSE_POOL_MIN_SOURCES = 50
# Parse threads without a parse pool: several, so a small feed's parse is never queued behind
# a huge one's (they share the interpreter's lock, each progressing).
PARSE_THREADS = 4

_T = TypeVar("_T")
_lane: ThreadPoolExecutor | None = None
_parse_lane: ThreadPoolExecutor | None = None
_lane_lock = threading.Lock()


def _executor(name: str) -> ThreadPoolExecutor:
    global _lane, _parse_lane
    with _lane_lock:
        if name == "fetch-cycle":
            if _lane is None:
                _lane = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
            return _lane
        if _parse_lane is None:
            _parse_lane = ThreadPoolExecutor(max_workers=PARSE_THREADS, thread_name_prefix=name)
        return _parse_lane


async def off_loop(fn: Callable[..., _T], *args: Any) -> _T:
    """Run blocking store work (claims, fetch states, source sync, ingest) on the fetch cycle's
    one worker thread, so the event loop keeps serving HTTP and the other fetches' sockets.

    One thread for all of it: SQLite takes one writer at a time anyway, and the jobs are short
    (an ingest job is one batch), so each waits for little.
    """
    return await asyncio.get_running_loop().run_in_executor(
        _executor("fetch-cycle"), functools.partial(fn, *args)
    )


async def _cpu(pool: Executor | None, fn: Callable[..., _T], *args: Any) -> _T:
    """Pure CPU work (parsing, normalizing, matching, fingerprinting): on the parse pool when
    there is one, else on the parse threads (never the store's thread: a big feed's parse must
    not hold up other sources' claims and saves, nor, with several threads, their parses)."""
    executor = pool if pool is not None else _executor("fetch-parse")
    return await asyncio.get_running_loop().run_in_executor(executor, functools.partial(fn, *args))


def parse_workers(requested: int | None, sources: int) -> int:
    """Processes for parsing: as asked, else one per core but one when the cycle is big enough
    to repay their start-up, else none (parse on the parse threads). The cycle's own process
    keeps a core busy (ingest, the event loop): on 2 cores at N = 200 one worker measured
    85 s cold against 100 s with two and 92 s with none, and each worker holds ≈ 70 MB."""
    if requested is not None:
        return max(0, requested)
    cores = os.cpu_count() or 1
    return cores - 1 if cores > 1 and sources >= PARSE_POOL_MIN_SOURCES else 0


def parse_pool(workers: int) -> ProcessPoolExecutor | None:
    """The parse pool: ``spawn``ed processes (the cycle has threads by the time it is used, so
    no ``fork``; no ``forkserver`` either, one more process to hold in memory). A worker imports
    ``aggregator.parse_worker`` with its first job, and only what that needs."""
    if workers <= 0:
        return None
    context = multiprocessing.get_context("spawn")
    return ProcessPoolExecutor(max_workers=workers, mp_context=context)


@dataclass(frozen=True, slots=True)
class SourceReport:
    """What one fetch of one source did, for the CLI, logs and metrics."""

    source_id: str
    status: str  # ok | not-modified | failed
    new_records: int = 0  # records stored by ingest
    duplicates: int = 0  # new entries that were exact duplicates of stored records
    entries: int = 0  # entries (or listing items) the source offered
    known: int = 0  # entries skipped because their guid was already stored
    item_errors: int = 0  # entries or articles that could not be read (the rest went on)
    links_skipped: int = 0  # page sources: listing links refused (off-site) or left for later
    http_status: int | None = None
    failure_class: FailureClass | None = None
    error: str | None = None
    elapsed: float = 0.0
    next_fetch: datetime | None = None
    parsed: bool = False  # False when the id pre-pass showed nothing new (no feedparser run)
    backlog: int = 0  # new entries left for the next fetch (fetch.max_items_per_fetch)
    released: bool = False  # the caller's lease ended with the saving of the fetch state

    def to_json(self) -> dict[str, object]:
        return {
            "source": self.source_id,
            "status": self.status,
            "new_records": self.new_records,
            "duplicates": self.duplicates,
            "entries": self.entries,
            "known": self.known,
            "item_errors": self.item_errors,
            "links_skipped": self.links_skipped,
            "http_status": self.http_status,
            "failure_class": None if self.failure_class is None else str(self.failure_class),
            "error": self.error,
            "elapsed": round(self.elapsed, 3),
            "next_fetch": None if self.next_fetch is None else self.next_fetch.isoformat(),
            "parsed": self.parsed,
            "backlog": self.backlog,
        }


@dataclass(slots=True)
class _Outcome:
    """Mutable tally while one source is processed."""

    response: FetchResponse | None = None
    hints: CacheHints = field(default_factory=CacheHints)
    new_records: int = 0
    duplicates: int = 0
    entries: int = 0
    known: int = 0
    item_errors: int = 0
    links_skipped: int = 0
    parsed: bool = False
    backlog: int = 0
    # The feed's <skipHours>/<skipDays> when its body was read (None: keep the stored ones).
    skip: tuple[frozenset[int], frozenset[int]] | None = None


# ---------------------------------------------------------------------------------------------
# ingest: in order, in bounded jobs
# ---------------------------------------------------------------------------------------------

# How ``fetch_source`` hands its prepared records to ingest and gets the results back.
IngestFn = Callable[[Sequence[pipeline.Prepared], datetime], Awaitable[list[pipeline.IngestResult]]]

_NO_DATE = datetime.max.replace(tzinfo=UTC)


def order_key(p: pipeline.Prepared) -> tuple[datetime, str, str, str]:
    """The order a cycle's new records are ingested in: publication time (undated records
    last), then record id, source and guid (two outlets' copies of one wire story share the
    id: the source decides which one is stored and which becomes its alias)."""
    r = p.record
    return (r.published or _NO_DATE, r.id, r.source_id or "", r.guid or "")


async def ingest_in_jobs(
    store: Store, prepared: Sequence[pipeline.Prepared], options: DedupOptions, now: datetime
) -> list[pipeline.IngestResult]:
    """Ingest ``prepared`` in order, one worker-thread job per ``ingest.max_batch`` records."""
    results: list[pipeline.IngestResult] = []
    step = max(1, IngestOptions().max_batch)
    for start in range(0, len(prepared), step):
        chunk = list(prepared[start : start + step])
        results.extend(await off_loop(_ingest_chunk, store, chunk, options, now))
    return results


def _ingest_chunk(
    store: Store, chunk: Sequence[pipeline.Prepared], options: DedupOptions, now: datetime
) -> list[pipeline.IngestResult]:
    return pipeline.ingest_prepared(store, chunk, options=options, now=now)


@dataclass(slots=True)
class _Submission:
    prepared: Sequence[pipeline.Prepared]
    now: datetime
    future: asyncio.Future[list[pipeline.IngestResult]]
    results: dict[int, pipeline.IngestResult] = field(default_factory=dict)


class IngestSequencer:
    """Ingests the new records of the fetches in flight together as one ordered stream.

    Records wait (held) while another fetch in flight (``begin``/``end``) may still deliver
    records, for at most ``hold_seconds`` after the first of them arrived, or until
    ``hold_records`` wait; then all the waiting records are sorted by ``order_key`` and ingested
    (one worker-thread job per ``ingest.max_batch`` records). A fetch waiting for its own
    records' ingest does not count as in flight, so when every fetch in flight is waiting (or
    none is left) the records go in at once. ``hold_seconds = 0`` ingests each fetch's records
    as they come.
    """

    def __init__(
        self,
        store: Store,
        options: Callable[[], DedupOptions],
        *,
        hold_seconds: Callable[[], float],
        hold_records: Callable[[], int],
        clock: Callable[[], float] = _time.monotonic,
    ) -> None:
        self._store = store
        self._options = options
        self._hold_seconds = hold_seconds
        self._hold_records = hold_records
        self._clock = clock
        self._waiting: list[_Submission] = []
        self._oldest = 0.0
        self._running = 0  # fetches begun and not ended, less those waiting for their ingest
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None

    def begin(self) -> None:
        self._running += 1

    def end(self) -> None:
        self._running -= 1
        self.poke()

    def poke(self) -> None:
        """Something the hold depends on changed (a fetch ended)."""
        if self._wake is not None:
            self._wake.set()

    async def ingest(
        self, prepared: Sequence[pipeline.Prepared], now: datetime
    ) -> list[pipeline.IngestResult]:
        if not prepared:
            return []
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done():
            self._wake = asyncio.Event()
            self._task = loop.create_task(self._run(), name="ingest-sequencer")
        if not self._waiting:
            self._oldest = self._clock()
        sub = _Submission(prepared, now, loop.create_future())
        self._waiting.append(sub)
        self._running -= 1  # waiting for its records is not running
        self.poke()
        try:
            return await sub.future
        finally:
            self._running += 1

    async def aclose(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for sub in self._waiting:
            if not sub.future.done():
                sub.future.cancel()
        self._waiting.clear()

    def _due(self) -> float | None:
        """0 when the waiting records go now, else seconds until the hold ends."""
        if self._running <= 0:
            return 0.0
        if sum(len(s.prepared) for s in self._waiting) >= self._hold_records():
            return 0.0
        return max(0.0, self._oldest + self._hold_seconds() - self._clock())

    async def _run(self) -> None:
        assert self._wake is not None
        wake = self._wake
        while True:
            wake.clear()
            if not self._waiting:
                await wake.wait()
                continue
            delay = self._due()
            if delay:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), delay)
                if self._due():
                    continue
            subs, self._waiting = self._waiting, []
            await self._ingest(subs)

    async def _ingest(self, subs: list[_Submission]) -> None:
        items = [(p, sub, i) for sub in subs for i, p in enumerate(sub.prepared)]
        items.sort(key=lambda item: order_key(item[0]))
        now = max(sub.now for sub in subs)
        step = max(1, IngestOptions().max_batch)
        for start in range(0, len(items), step):
            chunk = items[start : start + step]
            try:
                results = await off_loop(
                    _ingest_chunk,
                    self._store,
                    [p for p, _, _ in chunk],
                    self._options(),
                    now,
                )
            except Exception as exc:
                for _, sub, _ in chunk:
                    if not sub.future.done():
                        sub.future.set_exception(exc)
                continue
            for (_, sub, i), result in zip(chunk, results, strict=True):
                sub.results[i] = result
        for sub in subs:
            if not sub.future.done():
                sub.future.set_result([sub.results[i] for i in range(len(sub.prepared))])


# ---------------------------------------------------------------------------------------------
# fetch states: one group commit
# ---------------------------------------------------------------------------------------------

# How ``fetch_source`` stores a source's new fetch state and ends ``release_owner``'s lease on
# it, returning once both are committed.
StateSaver = Callable[[FetchState, str | None], Awaitable[None]]


class FetchStateWriter:
    """Saves the fetch states of a cycle's finished sources together (a group commit).

    ``save`` queues a state and returns once it is committed, so ``fetch_source`` keeps its
    guarantees. One flush at a time runs on the cycle's thread; the states that finish while it
    commits go in the next transaction (at most ``max_batch``), so an all-304 pass costs a
    transaction per group instead of one per source, and a lone state waits for no timer.
    When a group's transaction fails, its states are saved one by one: one bad state cannot
    lose the others, and each ``save`` raises only its own error.
    """

    def __init__(self, store: Store, max_batch: int = STATE_BATCH) -> None:
        self._store = store
        self._max_batch = max(1, max_batch)
        self._pending: list[tuple[FetchState, str | None, asyncio.Future[None]]] = []
        self._flushing: asyncio.Task[None] | None = None

    async def save(self, state: FetchState, release_owner: str | None = None) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((state, release_owner, future))
        if self._flushing is None or self._flushing.done():
            self._flushing = asyncio.create_task(self._flush(), name="fetch-state-writer")
        await future

    async def _flush(self) -> None:
        await asyncio.sleep(0)  # the fetches finishing in this turn of the loop join the first
        while self._pending:
            batch = self._pending[: self._max_batch]
            del self._pending[: self._max_batch]
            try:
                errors = await off_loop(
                    _save_states, self._store, [(state, owner) for state, owner, _ in batch]
                )
            except BaseException as exc:  # cancelled, or the lane is gone: no waiter may hang
                for _, _, future in batch + self._pending:
                    if future.done():
                        continue
                    if isinstance(exc, Exception):
                        future.set_exception(exc)
                    else:
                        future.cancel()
                self._pending.clear()
                if isinstance(exc, Exception):
                    return  # every waiter has it; nobody awaits this task
                raise
            for (_, _, future), error in zip(batch, errors, strict=True):
                if future.done():  # its waiter was cancelled
                    continue
                if error is None:
                    future.set_result(None)
                else:
                    future.set_exception(error)


def _save_states(
    store: Store, items: Sequence[tuple[FetchState, str | None]]
) -> list[Exception | None]:
    """Save ``items`` (state, lease owner to release), one transaction per owner; the error
    of each item, None for those saved."""
    by_owner: dict[str | None, list[int]] = {}
    for i, (_, owner) in enumerate(items):
        by_owner.setdefault(owner, []).append(i)
    errors: list[Exception | None] = [None] * len(items)
    for owner, indexes in by_owner.items():
        try:
            store.save_fetch_states([items[i][0] for i in indexes], release_owner=owner)
            continue
        except Exception as exc:
            if len(indexes) == 1:
                errors[indexes[0]] = exc
                continue
            log.warning(
                "saving %d fetch states together failed (%s); saving them one by one",
                len(indexes),
                exc,
            )
        for i in indexes:
            try:
                store.save_fetch_state(items[i][0], release_owner=owner)
            except Exception as exc:
                errors[i] = exc
    return errors


# ---------------------------------------------------------------------------------------------
# one source
# ---------------------------------------------------------------------------------------------


async def fetch_source(
    store: Store,
    fetcher: Fetcher,
    source: Source,
    *,
    matcher: TopicMatcher,
    watchlist: Watchlist,
    now: datetime,
    parse_pool: Executor | None = None,
    release_owner: str | None = None,
    state: FetchState | None = None,
    save_state: StateSaver | None = None,
    ingest: IngestFn | None = None,
    not_before: datetime | None = None,
    clock: Callable[[], float] = _time.monotonic,
) -> SourceReport:
    """Fetch one source, ingest its new entries and record how it went.

    ``release_owner``: the lease of that owner on the source ends with the saving of its
    fetch state, in the same transaction. ``state``: the source's fetch state when the caller
    read it already (under its lease), else it is read. ``save_state``: how the new state is
    saved (the driver passes a ``FetchStateWriter``'s ``save``, which commits it with other
    sources' states); by default in a transaction of its own. Either way this returns only once
    it is committed. ``ingest``: how the new records are ingested (the driver passes its
    sequencer's); by default at once, in jobs of ``ingest.max_batch``. ``not_before``: the
    next fetch is not before this (the service's next job run). ``clock`` (monotonic seconds)
    measures how long the fetch took: the next fetch counts from when it ended, ``now`` being
    when it started.

    ``parse_pool`` (a process pool) parses and prepares records beside the event loop's
    process, so both cores work on a big cycle; without it, on the parse thread.

    Never raises for a source's own trouble: every error is classified, stored in the source's
    FetchState (class, counts, last error, backoff) and reported, so one bad source cannot stop
    a cycle. The ETag/Last-Modified of a response are stored only once every new entry is in
    the store (and none was left for later), so a cycle cut short re-fetches instead of losing
    entries behind a 304.
    """
    started = clock()
    outcome = _Outcome()
    failure: tuple[FailureClass, str, CacheHints] | None = None
    http_status: int | None = None
    if ingest is None:
        options = watchlist.dedup

        async def ingest(
            prepared: Sequence[pipeline.Prepared], at: datetime
        ) -> list[pipeline.IngestResult]:
            return await ingest_in_jobs(store, prepared, options, at)

    try:
        if state is None:
            state = await off_loop(store.get_fetch_state, source.id)
    except Exception as exc:  # the store is down: nothing to record it in either
        log.exception("cannot read the fetch state of %s", source.id)
        if release_owner is not None:
            await off_loop(_release, store, release_owner, source.id)
        return SourceReport(
            source.id,
            "failed",
            failure_class=FailureClass.INTERNAL,
            error=f"store: {exc}"[:MAX_ERROR_CHARS],
            elapsed=clock() - started,
        )
    work = _SourceWork(store, fetcher, source, state, matcher, watchlist, now, outcome, ingest)
    try:
        if source.kind is SourceKind.PAGE:
            await work.page()
        else:
            await work.feed(parse_pool)
    except FetchStatusError as exc:
        http_status = exc.status
        failure = (FailureClass(exc.failure_class), str(exc), exc.hints)
    except FetchError as exc:
        failure = (FailureClass(exc.failure_class), str(exc), CacheHints())
    except FeedParseError as exc:
        failure = (feeds.failure_class_of(exc), str(exc), CacheHints())
    except ExtractionError as exc:
        failure = (FailureClass.PARSE_ERROR, str(exc), CacheHints())
    except Exception as exc:
        log.exception("fetching %s failed unexpectedly", source.id)
        failure = (FailureClass.INTERNAL, f"{type(exc).__name__}: {exc}", CacheHints())
    policy = watchlist.fetch
    ended = now + timedelta(seconds=max(0.0, clock() - started))
    new_state = _next_state(state, source, outcome, failure, now, ended, policy, not_before)
    new_state = _moved(new_state, source, outcome.response, failure)
    released = release_owner is not None
    try:
        if save_state is None:
            await off_loop(
                functools.partial(store.save_fetch_state, new_state, release_owner=release_owner)
            )
        else:
            await save_state(new_state, release_owner)
    except Exception as exc:
        log.exception("cannot save the fetch state of %s", source.id)
        if release_owner is not None:
            await off_loop(_release, store, release_owner, source.id)
        if failure is None:
            failure = (FailureClass.INTERNAL, f"store: {exc}", CacheHints())
    response = outcome.response
    status = (
        "failed" if failure else ("not-modified" if response and response.not_modified else "ok")
    )
    if failure:
        # The report is what is logged (the service's one line per fetch, with the failure
        # class; fetch-once's summary): this debug line only traces the cycle.
        log.debug(
            "source %s failed (%s): %s",
            source.id,
            failure[0],
            failure[1],
            extra={"failure_class": str(failure[0])},
        )
    return SourceReport(
        source_id=source.id,
        status=status,
        new_records=outcome.new_records,
        duplicates=outcome.duplicates,
        entries=outcome.entries,
        known=outcome.known,
        item_errors=outcome.item_errors,
        links_skipped=outcome.links_skipped,
        http_status=response.status if response else http_status,
        failure_class=failure[0] if failure else None,
        error=failure[1][:MAX_ERROR_CHARS] if failure else None,
        elapsed=clock() - started,
        next_fetch=new_state.next_fetch,
        parsed=outcome.parsed,
        backlog=outcome.backlog,
        released=released,
    )


def _moved(
    state: FetchState,
    source: Source,
    response: FetchResponse | None,
    failure: tuple[FailureClass, str, CacheHints] | None,
) -> FetchState:
    """``state`` with the source's permanent move recorded, renewed or dropped.

    Only permanent redirects (301/308 on every hop) move a source; the move is logged once,
    for the admin to update the watchlist. A move is dropped when the watchlist names another
    URL now (the admin did) and when the new address answers with a client error (4xx): the
    watchlist's URL is tried again next time."""
    if state.moved_to and state.moved_from != source.url:
        state = replace(state, moved_from=None, moved_to=None)
    if failure is not None:
        if state.moved_to and failure[0] is FailureClass.HTTP_4XX:
            log.warning(
                "source %s: its new address %s failed (%s); fetching %s again",
                source.id,
                state.moved_to,
                failure[1],
                source.url,
            )
            return replace(state, moved_from=None, moved_to=None)
        return state
    if response is None or not response.moved_permanently or response.url == state.moved_to:
        return state
    if response.url == source.url:  # moved back where the watchlist says
        return replace(state, moved_from=None, moved_to=None)
    log.warning(
        "source %s moved permanently: %s -> %s; fetched there from now on (update the "
        "watchlist's url to make it final)",
        source.id,
        state.fetch_url(source.url),
        response.url,
    )
    return replace(state, moved_from=source.url, moved_to=response.url)


def _next_state(
    state: FetchState,
    source: Source,
    outcome: _Outcome,
    failure: tuple[FailureClass, str, CacheHints] | None,
    now: datetime,
    ended: datetime,
    policy: Any,
    not_before: datetime | None,
) -> FetchState:
    """The source's fetch state after this fetch, started at ``now``; the next fetch counts
    from ``ended``, when the answer came."""
    interval = schedule.interval_seconds(source.schedule, ended)
    cap = float(policy.max_backoff_seconds)
    jitter = random.random()
    # The publisher's skip hours and days: as the feed said now, else as it said last time
    # (a 304 or a failure has no body to read them from).
    skip_hours, skip_days = outcome.skip or (state.skip_hours, state.skip_days)
    state = replace(state, skip_hours=skip_hours, skip_days=skip_days)
    if failure is None:
        response = outcome.response
        etag, last_modified = state.etag, state.last_modified
        if response is not None and (response.etag or response.last_modified):
            etag, last_modified = response.etag, response.last_modified
        if outcome.backlog:
            # Entries were left for the next fetch: a 304 must not hide them.
            etag, last_modified = None, None
        return replace(
            state,
            etag=etag,
            last_modified=last_modified,
            next_fetch=schedule.next_fetch(
                ended,
                interval=interval,
                ok=True,
                hints=outcome.hints.with_skip(skip_hours, skip_days),
                cap_seconds=cap,
                jitter=jitter,
                backlog_seconds=float(policy.backlog_seconds) if outcome.backlog else None,
                not_before=not_before,
            ),
            last_attempt=now,
            last_success=now,
            consecutive_failures=0,
            failure_class=None,
            last_error=None,
            fetch_count=state.fetch_count + 1,
        )
    failure_class, message, hints = failure
    failures = state.consecutive_failures + 1
    counts = dict(state.failure_counts)
    counts[str(failure_class)] = counts.get(str(failure_class), 0) + 1
    return replace(
        state,
        next_fetch=schedule.next_fetch(
            ended,
            interval=interval,
            ok=False,
            consecutive_failures=failures,
            hints=hints.with_skip(skip_hours, skip_days),
            cap_seconds=cap,
            jitter=jitter,
            not_before=not_before,
        ),
        last_attempt=now,
        consecutive_failures=failures,
        failure_class=failure_class,
        last_error=message[:MAX_ERROR_CHARS],
        failure_counts=counts,
        fetch_count=state.fetch_count + 1,
    )


def crashed_state(
    state: FetchState, source: Source | None, exc: BaseException, now: datetime, cap_seconds: float
) -> FetchState:
    """The fetch state of a source whose fetch raised (a bug, the database away): a failure
    like any other, backed off by the same policy, so /healthz and ``aggregator sources``
    show it."""
    failures = state.consecutive_failures + 1
    counts = dict(state.failure_counts)
    counts[FailureClass.INTERNAL.value] = counts.get(FailureClass.INTERNAL.value, 0) + 1
    interval = (
        schedule.interval_seconds(source.schedule, now)
        if source is not None
        else float(schedule.DEFAULT_INTERVAL_SECONDS)
    )
    return replace(
        state,
        last_attempt=now,
        consecutive_failures=failures,
        failure_class=FailureClass.INTERNAL,
        last_error=f"{type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS],
        failure_counts=counts,
        next_fetch=schedule.next_fetch(
            now,
            interval=interval,
            ok=False,
            consecutive_failures=failures,
            cap_seconds=cap_seconds,
            jitter=random.random(),
        ),
    )


class _SourceWork:
    """The fetch, parse, prepare and ingest of one source (``fetch_source``'s middle)."""

    def __init__(
        self,
        store: Store,
        fetcher: Fetcher,
        source: Source,
        state: FetchState,
        matcher: TopicMatcher,
        watchlist: Watchlist,
        now: datetime,
        outcome: _Outcome,
        ingest: IngestFn,
    ) -> None:
        self.store = store
        self.fetcher = fetcher
        self.source = source
        self.state = state
        self.matcher = matcher
        self.watchlist = watchlist
        self.now = now
        self.outcome = outcome
        self.ingest = ingest

    async def _conditional_fetch(self, purpose: str) -> FetchResponse | None:
        """The source's document, or None when the server says it has not changed (304)."""
        source = self.source
        response = await self.fetcher.fetch(
            self.state.fetch_url(source.url),
            etag=self.state.etag,
            last_modified=self.state.last_modified,
            purpose=purpose,
            language=source.language,
        )
        self.outcome.response = response
        self.outcome.hints = response.hints
        return None if response.not_modified else response

    async def _ingest(self, prepared: Sequence[pipeline.Prepared]) -> None:
        results = await self.ingest(prepared, self.now)
        self.outcome.new_records += sum(1 for r in results if r.stored)
        self.outcome.duplicates += sum(1 for r in results if not r.stored)

    async def feed(self, pool: Executor | None) -> None:
        response = await self._conditional_fetch("feed")
        if response is None:
            return  # a 304 costs no parsing
        store, source, outcome = self.store, self.source, self.outcome
        outcome.skip = feeds.scan_skip(response.text)
        ids = await _cpu(None, feeds.scan_entry_ids, response.text)
        if ids is not None and await off_loop(_all_entries_known, store, source, ids, outcome):
            ttl = feeds.scan_ttl(response.text)
            if ttl:
                outcome.hints = outcome.hints.with_ttl(ttl)
            return  # the id pre-pass found nothing new: feedparser is not needed at all
        parse = functools.partial(
            feeds.parse_feed,
            response.body,
            dict(response.headers),
            response.url,
            encoding=response.encoding,
        )
        policy = self.watchlist.fetch
        if _tag_count(response.body) > policy.max_inline_parse_tags:
            # Thousands of tags (60,000 nested <div> in one entry took feedparser's sanitizer
            # seconds): parsed in a killable worker, so the ingest thread and the event loop's
            # share of the GIL stay free; over the time limit, the source fails (parse-error).
            parsed = await call_guarded_async(
                feeds.parse_feed,
                response.body,
                dict(response.headers),
                response.url,
                encoding=response.encoding,
                timeout=policy.worker_parse_timeout_seconds,
            )
        else:
            parsed = await _cpu(pool, parse)
        entries = await off_loop(_new_feed_entries, store, source, parsed, outcome, policy)
        if not entries:
            return
        heavy = any(_heavy(e, policy.max_inline_parse_tags) for e in entries)
        if not source.full_text and not heavy:
            prepared = await _cpu(
                pool,
                parse_worker.prepare_entries,
                entries,
                source,
                self.now,
                self.matcher,
                self.watchlist.dedup,
            )
            outcome.item_errors += len(entries) - len(prepared)  # entries left out, logged
            await self._ingest(prepared)
            return
        records = await _entry_records(entries, source, self.now, outcome, self.watchlist)
        if source.full_text:
            made = {r.guid for r in records}
            entries = [e for e in entries if e.guid in made]
            for i, (entry, record) in enumerate(zip(entries, records, strict=True)):
                if _needs_full_text(record):
                    records[i] = await self._full_text(entry, record)
        await self._ingest(
            await _cpu(
                pool,
                parse_worker.prepare_records,
                records,
                source,
                self.now,
                self.matcher,
                self.watchlist.dedup,
            )
        )

    async def _full_text(self, entry: feeds.FeedEntry, fallback: Record) -> Record:
        """The record of the entry's linked article; the entry's own record when that fails.

        A news search feed's wrapped link (``identity.wrapped_link``: not on the outlet's site) is
        followed through its redirects, within the fetch guard like every request; when it
        lands on the outlet's site, that page's URL becomes the record's URL and identity, so
        the record is the outlet's own copy's duplicate by URL. Otherwise the entry's link
        stays the record's identity, whatever the page calls itself.
        """
        assert fallback.url is not None
        source, now = self.source, self.now
        try:
            page = await self.fetcher.fetch(fallback.url, purpose="page", language=source.language)
            article = await extract_article_guarded_async(page.text, page.url)
        except (FetchError, ExtractionError) as exc:
            log.info("full text of %s not used: %s", fallback.url, exc)
            return fallback
        wrapped = identity.wrapped_link(fallback.url, fallback.outlet_url)
        landed = wrapped and not identity.wrapped_link(page.url, fallback.outlet_url)
        if wrapped and not landed:
            # The link led to a page of the search site itself (a consent or script page), not
            # to the outlet: its text is not the article.
            log.info(
                "full text of %s not used: it led to %s, not to the outlet's site %s",
                fallback.url,
                page.url,
                fallback.outlet_url,
            )
            return fallback
        if landed:
            record = normalize.record_from_article(
                article,
                source,
                page.url,
                now,
                guid=entry.guid,
                published=entry.published,
                outlet=fallback.outlet,
                outlet_url=fallback.outlet_url,
            )
            if len(article.text) <= len(fallback.text):
                # The page is no better read than the entry: keep the entry's text, now at the
                # outlet's URL.
                record = replace(
                    fallback,
                    url=record.url,
                    canonical_url=record.canonical_url,
                    id=records.record_id(record.canonical_url, fallback.text),
                    headline_key=fallback.headline_key,
                )
            return replace(record, headline_key=fallback.headline_key)
        if len(article.text) <= len(fallback.text):
            return fallback
        record = normalize.record_from_article(
            article,
            source,
            fallback.url,
            now,
            guid=entry.guid,
            published=entry.published,
            outlet=fallback.outlet,
            outlet_url=fallback.outlet_url,
        )
        # The entry's link stays the record's identity, whatever the page calls itself.
        return replace(
            record,
            id=fallback.id,
            canonical_url=fallback.canonical_url,
            headline_key=fallback.headline_key,
        )

    async def page(self) -> None:
        source, outcome, store = self.source, self.outcome, self.store
        if source.selectors is None:
            raise FeedParseError(f"page source {source.id} has no selectors")
        response = await self._conditional_fetch("page")
        if response is None:
            return
        outcome.parsed = True
        selectors = source.selectors
        # In an extraction worker, with its size cap and time limit: a listing of 300,000
        # nested <div> must not hold the ingest thread (it took 451 s in-process).
        items = await scrape_listing_guarded_async(response.text, response.url, selectors)
        outcome.entries = len(items)
        if not items:
            raise ExtractionError(
                f"{response.url}: the item selector {selectors.item!r} matched no article link "
                "on the listing page (did the site change? try: aggregator scrape URL)"
            )
        urls = list(dict.fromkeys(item.url for item in items))
        known = await off_loop(store.known_guids, source.id, urls) if urls else set()
        outcome.known = len(known)
        by_url = {item.url: item for item in items}
        policy = self.watchlist.fetch
        now = self.now
        fresh = [u for u in urls if u not in known]
        # Articles that could not be read wait out their backoff instead of being fetched
        # again on every run.
        failed = await off_loop(store.article_failures, source.id, fresh) if fresh else {}
        waiting = {u for u, (_, next_try) in failed.items() if next_try > now}
        outcome.links_skipped += len(waiting)
        choice = choose_links(
            [u for u in fresh if u not in waiting],
            source.url,
            offsite=source.offsite_links,
            max_links=policy.max_links_per_fetch,
            max_per_origin=policy.max_links_per_origin,
        )
        outcome.links_skipped += len(choice.offsite) + len(choice.over_cap)
        if choice.offsite:
            log.info(
                "%s: %d links outside the source's site not followed (offsite_links: false), "
                "e.g. %s",
                source.id,
                len(choice.offsite),
                choice.offsite[0],
            )
        if choice.over_cap:
            log.info(
                "%s: %d new links left for the next fetch (fetch.max_links_per_fetch %d, "
                "max_links_per_origin %d)",
                source.id,
                len(choice.over_cap),
                policy.max_links_per_fetch,
                policy.max_links_per_origin,
            )
        records: list[Record] = []
        for url in reversed(choice.follow):  # listings are newest first
            item = by_url[url]
            try:
                page = await self.fetcher.fetch(url, purpose="page", language=source.language)
                article = await extract_article_guarded_async(
                    page.text, page.url, body_selector=selectors.body
                )
            except (FetchError, ExtractionError) as exc:
                # One unreadable article must not hide the others; it is tried again after a
                # backoff (an hour, doubling per failure, up to fetch.max_backoff_seconds).
                outcome.item_errors += 1
                failures = failed.get(url, (0, now))[0] + 1
                wait = min(
                    policy.article_retry_seconds * 2 ** min(failures - 1, 20),
                    policy.max_backoff_seconds,
                )
                next_try = now + timedelta(seconds=wait)
                log.info("article %s of %s skipped until %s: %s", url, source.id, next_try, exc)
                await off_loop(
                    store.save_article_failure, source.id, url, failures, next_try, str(exc)
                )
                continue
            if url in failed:
                await off_loop(store.forget_article_failures, source.id, [url])
            if not article.title and item.title:
                article = replace(article, title=item.title)
            records.append(
                normalize.record_from_article(
                    article, source, url, self.now, guid=url, published=item.published
                )
            )
        if records:
            await self._ingest(
                await _cpu(
                    None,
                    parse_worker.prepare_records,
                    records,
                    source,
                    self.now,
                    self.matcher,
                    self.watchlist.dedup,
                )
            )


def _tag_count(body: bytes) -> int:
    """Tags in a document, markup in escaped HTML included (a cheap count, no parsing)."""
    return body.count(b"<") + body.count(b"&lt;") + body.count(b"&#60;")


def _heavy(entry: feeds.FeedEntry, max_tags: int) -> bool:
    """Whether an entry's HTML is big enough to be parsed in an extraction worker (killable,
    time-limited) rather than on the ingest thread: lexbor's parse time grows with nesting
    depth, and 60,000 nested ``<div>`` in one entry took 5.8 s."""
    size = len(entry.summary_html) + len(entry.content_html)
    if size > 50 * max_tags:
        return True
    return size > max_tags and (
        entry.summary_html.count("<") + entry.content_html.count("<") > max_tags
    )


def _records_of(
    entries: Sequence[feeds.FeedEntry], source: Source, now: datetime, outcome: _Outcome
) -> list[Record]:
    """Records of feed entries, one by one: an entry that cannot be made into a record costs
    only itself (counted in ``item_errors``)."""
    made: list[Record] = []
    for entry in entries:
        try:
            made.append(normalize.record_from_entry(entry, source, now))
        except Exception as exc:
            outcome.item_errors += 1
            log.warning(
                "entry %s of %s skipped: %s: %s", entry.guid, source.id, type(exc).__name__, exc
            )
    return made


async def _entry_records(
    entries: Sequence[feeds.FeedEntry],
    source: Source,
    now: datetime,
    outcome: _Outcome,
    watchlist: Watchlist,
) -> list[Record]:
    """Records of the entries, in order: light ones on the cycle's thread, heavy ones (big or
    tag-dense HTML) in an extraction worker with its time limit."""
    limit = watchlist.fetch.max_inline_parse_tags
    light = [e for e in entries if not _heavy(e, limit)]
    made = {r.guid: r for r in await off_loop(_records_of, light, source, now, outcome)}
    for entry in entries:
        if not _heavy(entry, limit):
            continue
        try:
            made[entry.guid] = await call_guarded_async(
                normalize.record_from_entry,
                entry,
                source,
                now,
                timeout=watchlist.fetch.worker_parse_timeout_seconds,
            )
        except ExtractionError as exc:
            outcome.item_errors += 1
            log.warning("entry %s of %s skipped: %s", entry.guid, source.id, exc)
    return [made[e.guid] for e in entries if e.guid in made]


def _all_entries_known(store: Store, source: Source, ids: Sequence[str], outcome: _Outcome) -> bool:
    """The id pre-pass (``ids``: ``feeds.scan_entry_ids`` of the document): True when the
    store knows every entry of the fetched feed."""
    outcome.entries = len(ids)
    known = store.known_guids(source.id, list(ids)) if ids else set()
    if len(known) < len(set(ids)):
        return False
    outcome.known = len(ids)
    return True


def _new_feed_entries(
    store: Store, source: Source, parsed: feeds.ParsedFeed, outcome: _Outcome, policy: Any
) -> list[feeds.FeedEntry]:
    """The entries of a parsed feed whose guids the store does not know, oldest first, at most
    ``policy.max_items_per_fetch`` of them (the others are counted in ``outcome.backlog``)."""
    outcome.parsed = True
    outcome.entries = len(parsed.entries)
    outcome.item_errors += parsed.item_errors
    if parsed.item_errors:
        log.warning(
            "%s: %d entries could not be read; the others were", source.id, parsed.item_errors
        )
    if parsed.ttl_seconds:
        outcome.hints = outcome.hints.with_ttl(parsed.ttl_seconds)
    entries = _unique_entries(parsed.entries)
    known = store.known_guids(source.id, [e.guid for e in entries]) if entries else set()
    outcome.known = sum(1 for e in entries if e.guid in known)
    new = [e for e in entries if e.guid not in known]
    cap = max(1, int(policy.max_items_per_fetch))
    if len(new) > cap:
        outcome.backlog = len(new) - cap
        log.info(
            "source %s: %d new entries, %d taken now, the rest with the next fetch "
            "(fetch.max_items_per_fetch)",
            source.id,
            len(new),
            cap,
        )
        new = new[:cap]
    return new


def _unique_entries(entries: Sequence[feeds.FeedEntry]) -> list[feeds.FeedEntry]:
    """Entries with distinct guids, oldest first (so ingest sees a story's first report first)."""
    seen: set[str] = set()
    unique: list[feeds.FeedEntry] = []
    for entry in entries:
        if entry.guid not in seen:
            seen.add(entry.guid)
            unique.append(entry)
    far_past = datetime.min.replace(tzinfo=UTC)
    unique.reverse()  # feeds list newest first; the stable sort keeps that for equal dates
    return sorted(unique, key=lambda e: e.published or far_past)


def _needs_full_text(record: Record) -> bool:
    return record.url is not None and len(record.text) < FULL_TEXT_MIN_CHARS


def _release(store: Store, owner: str, source_id: str) -> None:
    try:
        store.release_source(owner, source_id)
    except Exception:
        log.exception("cannot release the lease on %s", source_id)


# ---------------------------------------------------------------------------------------------
# the driver
# ---------------------------------------------------------------------------------------------


class CycleDriver:
    """Everything one process needs to fetch sources, for ``run_cycle`` and the service alike.

    ``claim`` leases due sources, ``fetch`` fetches one (its state saved in a group commit, its
    lease ended with it, its records through the sequencer), ``release`` gives a lease back.
    ``watchlist``, ``matcher`` and ``fetcher`` may be swapped between fetches (a reload).
    """

    def __init__(
        self,
        store: Store,
        watchlist: Watchlist,
        *,
        owner: str,
        lease_seconds: float,
        matcher: TopicMatcher | None = None,
        pool: Executor | None = None,
        clock: Callable[[], float] = _time.monotonic,
    ) -> None:
        self.store = store
        self.watchlist = watchlist
        self.matcher = matcher or TopicMatcher(watchlist.topics)
        self.owner = owner
        self.lease_seconds = lease_seconds
        self.pool = pool
        self.clock = clock
        self.writer = FetchStateWriter(store)
        self.sequencer = IngestSequencer(
            store,
            lambda: self.watchlist.dedup,
            hold_seconds=lambda: float(self.watchlist.fetch.ingest_hold_seconds),
            hold_records=lambda: int(self.watchlist.fetch.ingest_hold_records),
            clock=clock,
        )

    def use_watchlist(self, watchlist: Watchlist, matcher: TopicMatcher | None = None) -> None:
        self.watchlist = watchlist
        self.matcher = matcher or TopicMatcher(watchlist.topics)

    async def sync_sources(self, now: datetime) -> None:
        await off_loop(self.store.sync_sources, list(self.watchlist.sources), now)

    async def claim(self, limit: int, now: datetime) -> list[FetchState]:
        """Lease up to ``limit`` due sources of the watchlist; leases on sources it does not
        name (another replica's newer watchlist) are given back at once."""
        claimed = await off_loop(
            self.store.claim_due_states, self.owner, now, self.lease_seconds, limit
        )
        watched = {s.id for s in self.watchlist.sources}
        mine = [st for st in claimed if st.source_id in watched]
        for st in claimed:
            if st.source_id not in watched:
                await self.release(st.source_id)
        return mine

    async def release(self, source_id: str) -> None:
        await off_loop(_release, self.store, self.owner, source_id)

    async def fetch(
        self,
        source: Source,
        fetcher: Fetcher,
        now: datetime,
        *,
        state: FetchState | None = None,
        leased: bool = True,
        not_before: datetime | None = None,
    ) -> SourceReport:
        """Fetch one source through ``fetch_source``; ``leased``: it is leased to this driver's
        owner, and the lease ends with its fetch state."""
        self.sequencer.begin()
        try:
            return await fetch_source(
                self.store,
                fetcher,
                source,
                matcher=self.matcher,
                watchlist=self.watchlist,
                now=now,
                parse_pool=self.pool,
                release_owner=self.owner if leased else None,
                state=state,
                save_state=self.writer.save,
                ingest=self.sequencer.ingest,
                not_before=not_before,
                clock=self.clock,
            )
        finally:
            self.sequencer.end()

    async def aclose(self) -> None:
        await self.sequencer.aclose()

    async def run(
        self,
        fetcher: Fetcher,
        *,
        now: datetime,
        source_ids: Sequence[str] | None = None,
        concurrency: int,
        on_report: Callable[[SourceReport], None] | None = None,
    ) -> list[SourceReport]:
        """One pass: every due source (or exactly ``source_ids``, due or not, unleased), at
        most ``concurrency`` at once through a bounded queue, so memory stays flat however
        many sources there are. ``on_report`` is called with each source's report as soon as
        that source is done (the CLI's progress display)."""
        sources = {s.id: s for s in self.watchlist.sources}
        width = max(1, concurrency)
        queue: asyncio.Queue[tuple[Source, FetchState | None] | None] = asyncio.Queue(maxsize=width)
        reports: list[SourceReport] = []
        leased = source_ids is None

        async def worker() -> None:
            while (item := await queue.get()) is not None:
                source, state = item
                released = False
                report: SourceReport | None = None
                try:
                    report = await self.fetch(source, fetcher, now, state=state, leased=leased)
                    released = True
                except Exception as exc:  # fetch_source records its own failures: a bug
                    log.exception("fetch of %s crashed", source.id)
                    report = SourceReport(
                        source.id, "failed", failure_class=FailureClass.INTERNAL, error=str(exc)
                    )
                finally:
                    if report is not None:
                        reports.append(report)
                    if leased and not released:
                        await self.release(source.id)
                if on_report is not None and report is not None:
                    on_report(report)

        workers = [asyncio.create_task(worker()) for _ in range(width)]
        try:
            if source_ids is not None:
                missing = [i for i in source_ids if i not in sources]
                if missing:
                    raise ValueError(f"unknown source id(s): {', '.join(missing)}")
                for source_id in dict.fromkeys(source_ids):
                    await queue.put((sources[source_id], None))
            else:
                seen: set[str] = set()
                while True:
                    # The claimed sources' states come with the claim (they are leased to us:
                    # no one else writes them until we are done).
                    claimed = await self.claim(width, now)
                    fresh = [st for st in claimed if st.source_id not in seen]
                    for st in claimed:
                        if st.source_id in seen:
                            await self.release(st.source_id)
                    if not fresh:
                        break
                    for st in fresh:
                        seen.add(st.source_id)
                        await queue.put((sources[st.source_id], st))
            for _ in workers:
                await queue.put(None)
            await asyncio.gather(*workers)
        finally:
            for task in workers:
                task.cancel()  # only still running when the cycle itself failed or was cancelled
        return reports


async def run_cycle(
    store: Store,
    fetcher: Fetcher,
    watchlist: Watchlist,
    *,
    source_ids: Sequence[str] | None = None,
    now: datetime,
    matcher: TopicMatcher | None = None,
    concurrency: int | None = None,
    owner: str | None = None,
    parse_pool: Executor | None = None,
    on_report: Callable[[SourceReport], None] | None = None,
) -> list[SourceReport]:
    """One fetch cycle (``fetch-once``): every due source (or exactly ``source_ids``, due or
    not), through a ``CycleDriver``. ``on_report`` is called with each source's report as
    soon as that source is done (the CLI's progress display).

    Due sources are leased through ``store.claim_due_states`` a few at a time, so replicas and
    a concurrent ``fetch-once`` never fetch one source twice, and at most ``concurrency``
    sources (default: the policy's in-flight limit) are worked on at once. The sources' new
    fetch states are committed in groups, each lease ending with its state.
    """
    driver = CycleDriver(
        store,
        watchlist,
        owner=owner or f"cycle-{os.getpid()}-{uuid.uuid4().hex[:8]}",
        lease_seconds=watchlist.fetch.timeout_seconds * (watchlist.fetch.retries + 2) + 300.0,
        matcher=matcher,
        pool=parse_pool,
    )
    try:
        await driver.sync_sources(now)
        return await driver.run(
            fetcher,
            now=now,
            source_ids=source_ids,
            concurrency=concurrency or watchlist.fetch.max_in_flight,
            on_report=on_report,
        )
    finally:
        await driver.aclose()
