"""Fetch commands: ``fetch-once`` (one cycle now) and ``sources`` (each source's health)."""

from __future__ import annotations

import argparse
import difflib
import json
from concurrent.futures import Executor
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from aggregator.cli.output import Display, UsageError, plural, quiet_loggers
from aggregator.model import FetchState, Schedule, Source
from aggregator.settings import Settings

if TYPE_CHECKING:
    from aggregator.cycle import SourceReport
    from aggregator.store import Store
    from aggregator.watchlist import Watchlist

    _Subparsers = argparse._SubParsersAction[argparse.ArgumentParser]


def register(subparsers: _Subparsers) -> None:
    fetch_once = subparsers.add_parser(
        "fetch-once",
        help="run one fetch cycle over every due source (or the given ones) and report",
        description=(
            "Fetch every source that is due (next fetch time reached), or exactly the sources "
            "given with --source (due or not), ingest their new entries and print one line per "
            "source: status, HTTP status, new records, entries already known, time taken, and "
            "why it failed. A failing source never stops the others; its state (failure class, "
            "consecutive failures, backoff) is stored and shown by `aggregator sources`. "
            "Exit status 0 when every fetched source succeeded, 1 when any failed."
        ),
    )
    fetch_once.add_argument(
        "--source",
        metavar="ID",
        action="append",
        dest="sources",
        help="fetch this source now, due or not (repeatable)",
    )
    fetch_once.add_argument("--json", action="store_true", help="one JSON object per source")
    fetch_once.add_argument(
        "--parse-processes",
        metavar="N",
        type=int,
        help=(
            "processes that parse feeds and prepare records beside the fetching process (0: "
            "none; default: one per core but one when at least 50 sources are fetched)"
        ),
    )
    fetch_once.set_defaults(
        handler=run_fetch_once,
        preload=(
            "aggregator.cycle",
            "aggregator.fetch",
            "aggregator.store",
            "aggregator.watchlist",
        ),
    )

    sources = subparsers.add_parser(
        "sources",
        help="show each source's health (state, failure class, failures, next fetch)",
        description=(
            "List the watchlist's sources with their fetch health: state (ok, failing, backoff "
            "or new), last failure class and error, consecutive failures, failure counts by "
            "class, last success and next fetch time."
        ),
    )
    sources.add_argument("--json", action="store_true", help="a JSON array instead of a table")
    sources.set_defaults(
        handler=run_sources,
        preload=("aggregator.store", "aggregator.watchlist", "aggregator.fetch.schedule"),
    )


def _now() -> datetime:
    return datetime.now(UTC)


def run_fetch_once(args: argparse.Namespace, settings: Settings) -> int:
    import asyncio

    from aggregator.cycle import parse_pool, parse_workers, run_cycle
    from aggregator.fetch import Fetcher
    from aggregator.store import open_store
    from aggregator.watchlist import load_watchlist

    watchlist = load_watchlist(settings.config_path)
    wanted: list[str] | None = args.sources
    if wanted:
        unknown = [s for s in wanted if watchlist.source(s) is None]
        if unknown:
            known = [s.id for s in watchlist.sources]
            close = [m for u in unknown for m in difflib.get_close_matches(u, known, n=1)]
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise UsageError(
                f"unknown source id{'s' if len(unknown) > 1 else ''}: {', '.join(unknown)}"
                f"{hint}; `aggregator sources` lists the watchlist's sources"
            )

    async def cycle(pool: Executor | None, shown: Display) -> list[SourceReport]:
        async with Fetcher(watchlist.fetch) as fetcher:
            with open_store(settings.db_url) as store:
                now = _now()
                total = len(wanted) if wanted else _due_count(store, watchlist, now)
                task = shown.task("fetching sources", total=total)
                return await run_cycle(
                    store,
                    fetcher,
                    watchlist,
                    source_ids=wanted,
                    now=now,
                    parse_pool=pool,
                    on_report=lambda _report: task.advance(),
                )

    pool = parse_pool(parse_workers(args.parse_processes, len(wanted or watchlist.sources)))
    # Each failure is shown once, in the table below (or its JSON line): the cycle's own
    # debug line about a failed source would repeat it. Errors (a crash, a database fault) show.
    try:
        with quiet_loggers(("aggregator.cycle", "aggregator.fetch")), Display() as shown:
            reports = asyncio.run(cycle(pool, shown))
    finally:
        if pool is not None:
            pool.shutdown()
    if args.json:
        for report in reports:
            print(json.dumps(report.to_json(), ensure_ascii=False))
    else:
        _print_reports(reports)
    return 1 if any(r.status == "failed" for r in reports) else 0


def _due_count(store: Store, watchlist: Watchlist, now: datetime) -> int:
    """How many of the watchlist's enabled sources are due now (the progress bar's length)."""
    states = {st.source_id: st for st in store.list_fetch_states()}
    due = 0
    for source in watchlist.sources:
        if not source.enabled:
            continue
        state = states.get(source.id)
        if state is None or state.next_fetch is None or state.next_fetch <= now:
            due += 1
    return due


def _print_reports(reports: list[SourceReport]) -> None:
    if not reports:
        print("no source is due (use --source ID to fetch one anyway)")
        return
    width = max(len(r.source_id) for r in reports)
    for r in sorted(reports, key=lambda r: r.source_id):
        http = str(r.http_status) if r.http_status else "-"
        line = (
            f"{r.source_id:<{width}}  {r.status:<12} http {http:<3}  "
            f"new {r.new_records:>3}  known {r.known:>3}  dup {r.duplicates:>2}  "
            f"{r.elapsed:6.2f}s"
        )
        if r.failure_class:
            line += f"  [{r.failure_class}] {r.error}"
        elif r.item_errors:
            line += f"  ({plural(r.item_errors, 'unreadable entry', 'unreadable entries')})"
        print(line)
    new = sum(r.new_records for r in reports)
    failed = sum(1 for r in reports if r.status == "failed")
    print(f"{plural(len(reports), 'source')} fetched, {failed} failed, {plural(new, 'new record')}")


def health(state: FetchState, source: Source | None, now: datetime) -> dict[str, Any]:
    """One source's health as plain data (the ``sources --json`` shape)."""
    if state.fetch_count == 0:
        status = "new"
    elif state.consecutive_failures == 0:
        status = "ok"
    elif state.consecutive_failures >= 3 or (
        state.next_fetch is not None
        and state.last_attempt is not None
        and (state.next_fetch - state.last_attempt).total_seconds() > 2 * _interval(source)
    ):
        status = "backoff"  # failing long enough that its fetches are being spaced out
    else:
        status = "failing"
    return {
        "source": state.source_id,
        "title": source.title if source else "",
        "kind": str(source.kind) if source else None,
        "url": source.url if source else None,
        "enabled": source.enabled if source else False,
        "state": status,
        "failure_class": None if state.failure_class is None else str(state.failure_class),
        "last_error": state.last_error,
        "consecutive_failures": state.consecutive_failures,
        "failure_counts": dict(state.failure_counts),
        "fetch_count": state.fetch_count,
        "last_attempt": _iso(state.last_attempt),
        "last_success": _iso(state.last_success),
        "next_fetch": _iso(state.next_fetch),
        "due": state.next_fetch is None or state.next_fetch <= now,
        # Where it is fetched when that is not its url: it moved permanently (301/308).
        "moved_to": (
            state.moved_to if source and state.fetch_url(source.url) != source.url else None
        ),
    }


def _interval(source: Source | None) -> float:
    from aggregator.fetch.schedule import interval_seconds

    return interval_seconds(source.schedule if source else Schedule(), _now())


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat(timespec="seconds")


def run_sources(args: argparse.Namespace, settings: Settings) -> int:
    from aggregator.store import open_store
    from aggregator.watchlist import load_watchlist

    watchlist = load_watchlist(settings.config_path)
    now = _now()
    with open_store(settings.db_url) as store:
        states = {s.source_id: s for s in store.list_fetch_states()}
        leases = store.list_leases()
    rows = [
        health(states.get(source.id) or FetchState(source_id=source.id), source, now)
        for source in watchlist.sources
    ]
    for row in rows:  # which replica is fetching it now (several replicas: docs/scaling.md)
        owner, expires = leases.get(row["source"], (None, None))
        row["lease_owner"], row["lease_expires"] = owner, _iso(expires)
        row["lease_expired"] = owner is not None and (expires is None or expires <= now)
    if args.json:
        print(json.dumps(rows, ensure_ascii=False, indent=2))
        return 0
    if not rows:
        print("the watchlist has no sources")
        return 0
    width = max(len(r["source"]) for r in rows)
    print(
        f"{'SOURCE':<{width}}  {'STATE':<8} {'CLASS':<18} {'FAILS':>5}  "
        f"{'LAST SUCCESS':<25} {'NEXT FETCH':<25}"
    )
    for r in rows:
        print(
            f"{r['source']:<{width}}  {r['state']:<8} {r['failure_class'] or '-':<18} "
            f"{r['consecutive_failures']:>5}  {r['last_success'] or '-':<25} "
            f"{r['next_fetch'] or 'now':<25}"
        )
        if r["last_error"] and r["state"] != "ok":
            print(f"{'':<{width}}  last error: {r['last_error']}")
        if r["moved_to"]:
            print(f"{'':<{width}}  moved permanently to {r['moved_to']} (update the watchlist)")
        if r["lease_owner"]:
            stale = " (expired: any replica may take it over)" if r["lease_expired"] else ""
            print(f"{'':<{width}}  leased by {r['lease_owner']} until {r['lease_expires']}{stale}")
    return 0
