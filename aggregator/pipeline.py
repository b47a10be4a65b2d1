"""The one place that knows the order of the stages.

``ingest_many`` takes records (imported, fetched from a feed or scraped from a page) through
the ingest stages (``aggregator.ingest``: prepare, decide, apply) in one transaction per batch.
The fetch cycle functions (``fetch_source``, ``run_cycle``) feed it.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import random
import threading
import time as _time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from aggregator import dedup, feeds, normalize, records
from aggregator.errors import (
    ExtractionError,
    FeedParseError,
    FetchError,
)
from aggregator.extract import extract_article_guarded_async
from aggregator.extract.listing import choose_links
from aggregator.extract.worker import call_guarded_async, scrape_listing_guarded_async
from aggregator.fetch import backoff
from aggregator.fetch.backoff import CacheHints
from aggregator.fetch.client import Fetcher, FetchResponse, FetchStatusError
from aggregator.ingest.prepare import prepare
from aggregator.ingest.types import IngestResult as IngestResult
from aggregator.ingest.types import Prepared
from aggregator.ingest_driver import ingest as ingest
from aggregator.ingest_driver import ingest_many as ingest_many
from aggregator.ingest_driver import ingest_prepared
from aggregator.match import TopicMatcher
from aggregator.model import (
    DedupOptions,
    FailureClass,
    FetchState,
    Record,
    Source,
    SourceKind,
)
from aggregator.store import Store
from aggregator.watchlist import Watchlist

log = logging.getLogger(__name__)

# ------------------------------------------------------------------------------------------
# fetch cycle (owner: fetch part)
# ------------------------------------------------------------------------------------------

# Entries whose own text is shorter than this get the linked page fetched (source.full_text).
FULL_TEXT_MIN_CHARS = 600
DEFAULT_INTERVAL_SECONDS = 3600
MAX_ERROR_CHARS = 500


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


_T = TypeVar("_T")
_lane: ThreadPoolExecutor | None = None
_lane_lock = threading.Lock()


async def _off_loop(fn: Callable[..., _T], *args: Any) -> _T:
    """Run blocking work (parsing, database, matching and dedup) on the fetch cycle's worker
    thread, so the event loop keeps serving the other fetches' sockets and deadlines.

    One thread for all of it: SQLite takes one writer at a time anyway, and a fetch's deadline
    must not be eaten by another source's long ingest running on the loop.
    """
    global _lane
    if _lane is None:
        with _lane_lock:
            if _lane is None:
                _lane = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fetch-cycle")
    return await asyncio.get_running_loop().run_in_executor(_lane, functools.partial(fn, *args))


def schedule_interval(source: Source, now: datetime) -> float:
    """Seconds between fetches of ``source``: its interval, or the gap to its next cron time."""
    if source.schedule.interval_seconds:
        return float(source.schedule.interval_seconds)
    if source.schedule.cron:
        from apscheduler.triggers.cron import CronTrigger

        try:
            trigger = CronTrigger.from_crontab(source.schedule.cron, timezone="UTC")
            fire = trigger.get_next_fire_time(None, now)
        except ValueError:
            fire = None
        if fire is not None:
            return max(60.0, (fire - now).total_seconds())
    return float(DEFAULT_INTERVAL_SECONDS)


# Fetch states one write transaction of ``run_cycle`` takes at most.
STATE_BATCH = 64

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
                errors = await _off_loop(
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
) -> SourceReport:
    """Fetch one source, ingest its new entries and record how it went.

    ``release_owner``: the lease of that owner on the source ends with the saving of its
    fetch state, in the same transaction (``run_cycle`` passes its own). ``state``: the
    source's fetch state when the caller read it already (under its lease), else it is read.
    ``save_state``: how the new state is saved (``run_cycle`` passes a ``FetchStateWriter``'s
    ``save``, which commits it with other sources' states); by default in a transaction of
    its own. Either way this returns only once it is committed.

    ``parse_pool`` (a process pool) runs feedparser beside the event loop's process, so both
    cores work on a big cycle; without it, parsing runs on the cycle's worker thread.

    Never raises for a source's own trouble: every error is classified, stored in the source's
    FetchState (class, counts, last error, backoff) and reported, so one bad source cannot stop
    a cycle. The ETag/Last-Modified of a response are stored only once every new entry is in
    the store, so a cycle cut short re-fetches instead of losing entries behind a 304.
    """
    started = _time.monotonic()
    outcome = _Outcome()
    failure: tuple[FailureClass, str, CacheHints] | None = None
    http_status: int | None = None
    try:
        if state is None:
            state = await _off_loop(store.get_fetch_state, source.id)
    except Exception as exc:  # the store is down: nothing to record it in either
        log.exception("cannot read the fetch state of %s", source.id)
        if release_owner is not None:
            await _off_loop(_release, store, release_owner, source.id)
        return SourceReport(
            source.id,
            "failed",
            failure_class=FailureClass.INTERNAL,
            error=f"store: {exc}"[:MAX_ERROR_CHARS],
            elapsed=_time.monotonic() - started,
        )
    try:
        if source.kind is SourceKind.PAGE:
            await _fetch_page_source(
                store, fetcher, source, state, matcher, watchlist, now, outcome
            )
        else:
            await _fetch_feed_source(
                store, fetcher, source, state, matcher, watchlist, now, outcome, parse_pool
            )
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
    cap = float(watchlist.fetch.max_backoff_seconds)
    new_state = _next_state(state, source, outcome, failure, now, cap)
    new_state = _moved(new_state, source, outcome.response, failure)
    try:
        if save_state is None:
            await _off_loop(
                functools.partial(store.save_fetch_state, new_state, release_owner=release_owner)
            )
        else:
            await save_state(new_state, release_owner)
    except Exception as exc:
        log.exception("cannot save the fetch state of %s", source.id)
        if release_owner is not None:
            await _off_loop(_release, store, release_owner, source.id)
        if failure is None:
            failure = (FailureClass.INTERNAL, f"store: {exc}", CacheHints())
    response = outcome.response
    status = (
        "failed" if failure else ("not-modified" if response and response.not_modified else "ok")
    )
    if failure:
        # The report is what is logged (the service's one line per fetch, with the failure
        # class; fetch-once's summary): this debug line only traces the pipeline.
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
        elapsed=_time.monotonic() - started,
        next_fetch=new_state.next_fetch,
        parsed=outcome.parsed,
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
    cap: float,
) -> FetchState:
    interval = schedule_interval(source, now)
    jitter = random.random()
    if failure is None:
        response = outcome.response
        etag, last_modified = state.etag, state.last_modified
        if response is not None and (response.etag or response.last_modified):
            etag, last_modified = response.etag, response.last_modified
        return replace(
            state,
            etag=etag,
            last_modified=last_modified,
            next_fetch=backoff.next_fetch(
                now, interval=interval, ok=True, hints=outcome.hints, cap_seconds=cap, jitter=jitter
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
        next_fetch=backoff.next_fetch(
            now,
            interval=interval,
            ok=False,
            consecutive_failures=failures,
            hints=hints,
            cap_seconds=cap,
            jitter=jitter,
        ),
        last_attempt=now,
        consecutive_failures=failures,
        failure_class=failure_class,
        last_error=message[:MAX_ERROR_CHARS],
        failure_counts=counts,
        fetch_count=state.fetch_count + 1,
    )


async def _fetch_feed_source(
    store: Store,
    fetcher: Fetcher,
    source: Source,
    state: FetchState,
    matcher: TopicMatcher,
    watchlist: Watchlist,
    now: datetime,
    outcome: _Outcome,
    parse_pool: Executor | None = None,
) -> None:
    response = await _conditional_fetch(fetcher, source, state, "feed", outcome)
    if response is None:
        return  # a 304 costs no parsing
    if await _off_loop(_all_entries_known, store, source, response, outcome):
        return  # the id pre-pass found nothing new: feedparser is not needed at all
    parse = functools.partial(
        feeds.parse_feed,
        response.body,
        dict(response.headers),
        response.url,
        encoding=response.encoding,
    )
    policy = watchlist.fetch
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
    elif parse_pool is not None:
        parsed = await asyncio.get_running_loop().run_in_executor(parse_pool, parse)
    else:
        parsed = await _off_loop(parse)
    entries = await _off_loop(_new_feed_entries, store, source, parsed, outcome)
    heavy = any(_heavy(e, policy.max_inline_parse_tags) for e in entries)
    if parse_pool is not None and not source.full_text and entries and not heavy:
        # Normalizing, matching and fingerprinting are pure CPU work too: the pool does them,
        # and the cycle's thread only runs the transaction.
        prepared = await asyncio.get_running_loop().run_in_executor(
            parse_pool,
            functools.partial(_prepare_entries, entries, source, now, matcher, watchlist.dedup),
        )
        await _off_loop(_ingest_prepared_into, store, prepared, watchlist, now, outcome)
        return
    records = await _entry_records(entries, source, now, outcome, watchlist)
    made = {r.guid for r in records}
    entries = [e for e in entries if e.guid in made]
    if source.full_text:
        for i, (entry, record) in enumerate(zip(entries, records, strict=True)):
            if _needs_full_text(record):
                records[i] = await _full_text(fetcher, source, entry, record, now, outcome)
    await _off_loop(_ingest_all, store, records, source, matcher, watchlist, now, outcome)


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
    made = {r.guid: r for r in await _off_loop(_records_of, light, source, now, outcome)}
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


def _prepare_entries(
    entries: Sequence[feeds.FeedEntry],
    source: Source,
    now: datetime,
    matcher: TopicMatcher,
    options: DedupOptions,
) -> list[Prepared]:
    """Records of new feed entries, matched and fingerprinted (in a parse-pool process); an
    entry that cannot be made into a record is left out (it is logged)."""
    prepared = []
    for e in entries:
        try:
            record = normalize.record_from_entry(e, source, now)
        except Exception as exc:
            log.warning(
                "entry %s of %s skipped: %s: %s", e.guid, source.id, type(exc).__name__, exc
            )
            continue
        prepared.append(prepare(record, matcher, now, allowed_topics=source.topics))
    return prepared


def _ingest_prepared_into(
    store: Store,
    prepared: Sequence[Prepared],
    watchlist: Watchlist,
    now: datetime,
    outcome: _Outcome,
) -> None:
    results = ingest_prepared(store, prepared, options=watchlist.dedup, now=now)
    outcome.new_records += sum(1 for r in results if r.stored)
    outcome.duplicates += sum(1 for r in results if not r.stored)


def _all_entries_known(
    store: Store, source: Source, response: FetchResponse, outcome: _Outcome
) -> bool:
    """The id pre-pass: True when the store knows every entry of the fetched feed."""
    ids = feeds.scan_entry_ids(response.text)
    if ids is None:
        return False
    outcome.entries = len(ids)
    known = store.known_guids(source.id, ids) if ids else set()
    if len(known) < len(set(ids)):
        return False
    outcome.known = len(ids)
    ttl = feeds.scan_ttl(response.text)
    if ttl:
        outcome.hints = outcome.hints.with_ttl(ttl)
    return True


def _new_feed_entries(
    store: Store, source: Source, parsed: feeds.ParsedFeed, outcome: _Outcome
) -> list[feeds.FeedEntry]:
    """The entries of a parsed feed whose guids the store does not know, oldest first."""
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
    return [e for e in entries if e.guid not in known]


def _ingest_all(
    store: Store,
    records: Sequence[Record],
    source: Source,
    matcher: TopicMatcher,
    watchlist: Watchlist,
    now: datetime,
    outcome: _Outcome,
) -> None:
    results = ingest_many(
        store,
        records,
        matcher=matcher,
        options=watchlist.dedup,
        allowed_topics=source.topics,
        now=now,
    )
    outcome.new_records += sum(1 for r in results if r.stored)
    outcome.duplicates += sum(1 for r in results if not r.stored)


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


async def _conditional_fetch(
    fetcher: Fetcher, source: Source, state: FetchState, purpose: str, outcome: _Outcome
) -> FetchResponse | None:
    """The source's document, or None when the server says it has not changed (304)."""
    response = await fetcher.fetch(
        state.fetch_url(source.url),
        etag=state.etag,
        last_modified=state.last_modified,
        purpose=purpose,
        language=source.language,
    )
    outcome.response = response
    outcome.hints = response.hints
    return None if response.not_modified else response


def _needs_full_text(record: Record) -> bool:
    return record.url is not None and len(record.text) < FULL_TEXT_MIN_CHARS


async def _full_text(
    fetcher: Fetcher,
    source: Source,
    entry: feeds.FeedEntry,
    fallback: Record,
    now: datetime,
    outcome: _Outcome,
) -> Record:
    """The record of the entry's linked article; the entry's own record when that fails.

    A news search feed's wrapped link (``dedup.wrapped_link``: not on the outlet's site) is
    followed through its redirects, within the fetch guard like every request; when it lands
    on the outlet's site, that page's URL becomes the record's URL and identity, so the record
    is the outlet's own copy's duplicate by URL. Otherwise the entry's link stays the record's
    identity, whatever the page calls itself.
    """
    assert fallback.url is not None
    try:
        page = await fetcher.fetch(fallback.url, purpose="page", language=source.language)
        article = await extract_article_guarded_async(page.text, page.url)
    except (FetchError, ExtractionError) as exc:
        log.info("full text of %s not used: %s", fallback.url, exc)
        return fallback
    wrapped = dedup.wrapped_link(fallback.url, fallback.outlet_url)
    landed = wrapped and not dedup.wrapped_link(page.url, fallback.outlet_url)
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


async def _fetch_page_source(
    store: Store,
    fetcher: Fetcher,
    source: Source,
    state: FetchState,
    matcher: TopicMatcher,
    watchlist: Watchlist,
    now: datetime,
    outcome: _Outcome,
) -> None:
    if source.selectors is None:
        raise FeedParseError(f"page source {source.id} has no selectors")
    response = await _conditional_fetch(fetcher, source, state, "page", outcome)
    if response is None:
        return
    outcome.parsed = True
    selectors = source.selectors
    # In an extraction worker, with its size cap and time limit: a listing of 300,000 nested
    # <div> must not hold the ingest thread (it took 451 s in-process).
    items = await scrape_listing_guarded_async(response.text, response.url, selectors)
    outcome.entries = len(items)
    if not items:
        raise ExtractionError(
            f"{response.url}: the item selector {selectors.item!r} matched no article link on "
            "the listing page (did the site change? try: aggregator scrape URL)"
        )
    urls = list(dict.fromkeys(item.url for item in items))
    known = await _off_loop(store.known_guids, source.id, urls) if urls else set()
    outcome.known = len(known)
    by_url = {item.url: item for item in items}
    policy = watchlist.fetch
    fresh = [u for u in urls if u not in known]
    # Articles that could not be read wait out their backoff instead of being fetched again on
    # every run.
    failed = await _off_loop(store.article_failures, source.id, fresh) if fresh else {}
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
            "%s: %d links outside the source's site not followed (offsite_links: false), e.g. %s",
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
    for url in reversed(choice.follow):  # listings are newest first
        item = by_url[url]
        try:
            page = await fetcher.fetch(url, purpose="page", language=source.language)
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
            await _off_loop(
                store.save_article_failure, source.id, url, failures, next_try, str(exc)
            )
            continue
        if url in failed:
            await _off_loop(store.forget_article_failures, source.id, [url])
        if not article.title and item.title:
            article = replace(article, title=item.title)
        record = normalize.record_from_article(
            article, source, url, now, guid=url, published=item.published
        )
        await _off_loop(_ingest_all, store, [record], source, matcher, watchlist, now, outcome)


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
    """One fetch cycle: every due source (or exactly ``source_ids``, due or not).

    ``on_report`` is called with each source's report as soon as that source is done (the
    CLI's progress display).

    Due sources are leased through ``store.claim_due_states`` a few at a time, so replicas and
    a concurrent ``fetch-once`` never fetch one source twice, and at most ``concurrency``
    sources (default: the policy's in-flight limit) are worked on at once through a bounded
    queue: memory stays flat however many sources there are. The sources' new fetch states
    are committed in groups (``FetchStateWriter``), each lease ending with its state.
    """
    matcher = matcher or TopicMatcher(watchlist.topics)
    await _off_loop(store.sync_sources, watchlist.sources, now)
    sources = {s.id: s for s in watchlist.sources}
    width = max(1, concurrency or watchlist.fetch.max_in_flight)
    owner = owner or f"cycle-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    lease = watchlist.fetch.timeout_seconds * (watchlist.fetch.retries + 2) + 300.0
    queue: asyncio.Queue[tuple[Source, FetchState | None] | None] = asyncio.Queue(maxsize=width)
    reports: list[SourceReport] = []
    writer = FetchStateWriter(store)

    async def worker() -> None:
        while (item := await queue.get()) is not None:
            source, state = item
            released = False  # fetch_source ends the lease with the saving of the fetch state
            report: SourceReport | None = None
            try:
                report = await fetch_source(
                    store,
                    fetcher,
                    source,
                    matcher=matcher,
                    watchlist=watchlist,
                    now=now,
                    parse_pool=parse_pool,
                    release_owner=owner if source_ids is None else None,
                    state=state,
                    save_state=writer.save,
                )
                released = True
            except Exception as exc:  # fetch_source records its own failures; this is a bug
                log.exception("fetch of %s crashed", source.id)
                report = SourceReport(
                    source.id, "failed", failure_class=FailureClass.INTERNAL, error=str(exc)
                )
            finally:
                if report is not None:
                    reports.append(report)
                if source_ids is None and not released:
                    await _off_loop(_release, store, owner, source.id)
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
                # The claimed sources' states come with the claim (they are leased to us: no
                # one else writes them until we are done).
                claimed = await _off_loop(store.claim_due_states, owner, now, lease, width)
                fresh = [st for st in claimed if st.source_id in sources]
                fresh = [st for st in fresh if st.source_id not in seen]
                for source_id in {st.source_id for st in claimed} - {st.source_id for st in fresh}:
                    await _off_loop(_release, store, owner, source_id)
                if not fresh:
                    break
                for state in fresh:
                    seen.add(state.source_id)
                    await queue.put((sources[state.source_id], state))
        for _ in workers:
            await queue.put(None)
        await asyncio.gather(*workers)
    finally:
        for task in workers:
            task.cancel()  # only still running when the cycle itself failed or was cancelled
    return reports


def _release(store: Store, owner: str, source_id: str) -> None:
    try:
        store.release_source(owner, source_id)
    except Exception:
        log.exception("cannot release the lease on %s", source_id)
