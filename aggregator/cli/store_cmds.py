"""Store commands: import, export, developments, split, merge, db upgrade."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aggregator.cli.output import Display, UsageError, describe_os_error, plural
from aggregator.errors import AggregatorError
from aggregator.model import Development, Membership
from aggregator.publish.sanitize import cap_summary, cap_title
from aggregator.settings import Settings

if TYPE_CHECKING:
    from aggregator.store import Store

    _Subparsers = argparse._SubParsersAction[argparse.ArgumentParser]


# The modules the handlers import (``preload``: loaded with the collector paused at start-up).
STORE = ("aggregator.store",)
TRANSFER = (*STORE, "aggregator.store.transfer")
CURATE = (*STORE, "aggregator.ingest_driver")
INGEST = (*TRANSFER, "aggregator.ingest_driver", "aggregator.match", "aggregator.watchlist")


def register(subparsers: _Subparsers) -> None:
    _register_import(subparsers)
    _register_export(subparsers)
    _register_developments(subparsers)
    _register_split_merge(subparsers)
    _register_db(subparsers)


def _register_import(subparsers: _Subparsers) -> None:
    parser = subparsers.add_parser(
        "import",
        help="import record files or folders (seed format, optional index.jsonl)",
        description=(
            "Import records in the record text format: files named NNN_<16 hex>.txt, or folders "
            "of them, with an optional index.jsonl beside them giving metadata per id (url, "
            "title, source, published, fetched, language, author, guid). Each record keeps the "
            "id in its file name and goes through topic matching and dedup like a fetched one. "
            "Importing twice adds nothing. Every file is checked first: on any problem nothing "
            "is stored and each problem is listed."
        ),
    )
    parser.add_argument("paths", metavar="PATH", nargs="+", type=Path)
    parser.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    parser.set_defaults(handler=run_import, preload=INGEST)


def _register_export(subparsers: _Subparsers) -> None:
    parser = subparsers.add_parser(
        "export",
        help="write every record as NNN_<id>.txt plus index.jsonl",
        description=(
            "Write every stored record, in insertion order, as DIR/NNN_<id>.txt (its exact text) "
            "and DIR/index.jsonl (every metadata field). Importing DIR into an empty store and "
            "exporting again gives identical files."
        ),
    )
    parser.add_argument("dir", metavar="DIR", type=Path)
    parser.add_argument(
        "--replace",
        action="store_true",
        help="remove an earlier export's record files and index.jsonl in DIR first",
    )
    parser.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    parser.set_defaults(handler=run_export, preload=TRANSFER)


def _register_developments(subparsers: _Subparsers) -> None:
    parser = subparsers.add_parser(
        "developments",
        help="list developments, newest first, with their records and sources",
        description=(
            "List developments (groups of records reporting one event), most recently updated "
            "first, with each member record, its source and the dedup decision (reason, score) "
            "that put it there."
        ),
    )
    parser.add_argument("--topic", metavar="T", help="only developments matching topic T")
    parser.add_argument("--json", action="store_true", help="print one JSON array")
    parser.add_argument(
        "--limit", type=int, default=0, metavar="N", help="at most N developments (0: all)"
    )
    parser.set_defaults(handler=run_developments, preload=STORE)


def _register_split_merge(subparsers: _Subparsers) -> None:
    split = subparsers.add_parser(
        "split",
        help="move a record out of its development into a new one",
        description=(
            "Move RECORD_ID out of its development into a development of its own. The decision "
            "is stored as manual: later ingests never move the record back."
        ),
    )
    split.add_argument("record_id", metavar="RECORD_ID")
    split.set_defaults(handler=run_split, preload=CURATE)
    merge = subparsers.add_parser(
        "merge",
        help="merge development OTHER_ID into KEEP_ID",
        description=(
            "Move every record of OTHER_ID into KEEP_ID. KEEP_ID keeps its id (the id feed "
            "readers know); OTHER_ID disappears from the feeds and resolves to KEEP_ID."
        ),
    )
    merge.add_argument("keep_id", metavar="KEEP_ID")
    merge.add_argument("other_id", metavar="OTHER_ID")
    merge.set_defaults(handler=run_merge, preload=CURATE)


def _register_db(subparsers: _Subparsers) -> None:
    parser = subparsers.add_parser("db", help="database maintenance")
    db_sub = parser.add_subparsers(dest="db_command", metavar="DB_COMMAND")
    upgrade = db_sub.add_parser(
        "upgrade",
        help="migrate the database schema to the newest version",
        description="Run the schema migrations (the service also runs them at start).",
    )
    upgrade.add_argument("--json", action="store_true", help="print the result as JSON")
    upgrade.set_defaults(handler=run_db_upgrade, preload=STORE)
    check = db_sub.add_parser(
        "check",
        help="check the database for corruption (SQLite: integrity_check)",
        description=(
            "SQLite: run PRAGMA integrity_check (--quick: quick_check) on the file, read-only, "
            "and say what to do when it is corrupt (exit 1). PostgreSQL: check that the "
            "server answers (it checks its own pages). The service runs the quick check at "
            "every start on files up to AGGREGATOR_STARTUP_CHECK_MAX_MB."
        ),
    )
    check.add_argument("--quick", action="store_true", help="quick_check: skip index contents")
    check.set_defaults(handler=run_db_check, preload=STORE)
    current = db_sub.add_parser("current", help="print the schema version of the database")
    current.set_defaults(handler=run_db_current, preload=STORE)
    prune = db_sub.add_parser(
        "prune",
        help="delete developments (and their records) not updated for DAYS days",
        description=(
            "Apply retention now (the service does it daily): delete every development last "
            "updated more than DAYS days ago, with all its records. DAYS defaults to "
            "AGGREGATOR_RETENTION_DAYS, else the watchlist's retention_days."
        ),
    )
    prune.add_argument("--days", type=int, metavar="DAYS", help="retention in days (>= 1)")
    prune.set_defaults(handler=run_db_prune, preload=STORE)
    parser.set_defaults(handler=_db_help(parser))


def _db_help(parser: argparse.ArgumentParser) -> Any:
    def show(_args: argparse.Namespace, _settings: Settings) -> int:
        parser.print_help()
        return 2

    return show


# --------------------------------------------------------------------------------------------
# handlers
# --------------------------------------------------------------------------------------------


def _now() -> datetime:
    return datetime.now(UTC)


def run_import(args: argparse.Namespace, settings: Settings) -> int:
    from aggregator.ingest_driver import import_records, refresh_developments
    from aggregator.match import TopicMatcher
    from aggregator.store import open_store
    from aggregator.store.transfer import (
        DEVELOPMENTS_NAME,
        read_developments,
        restore_developments,
    )
    from aggregator.watchlist import load_watchlist

    watchlist = load_watchlist(settings.config_path)
    matcher = TopicMatcher(watchlist.topics)
    source_topics = {s.id: s.topics for s in watchlist.sources}
    grouping = read_developments(args.paths)  # checked before anything is stored
    now = _now()
    with Display() as shown, open_store(settings.db_url) as store:
        store.sync_sources(watchlist.sources, now)  # source titles, as the service shows them
        task = shown.task("reading record files")
        summary = import_records(
            store,
            args.paths,
            matcher=matcher,
            options=watchlist.dedup,
            source_topics=source_topics,
            now=now,
            progress=task.hook(_IMPORT_STAGES),
        )
        task.update(label="restoring corrections")
        restored = restore_developments(store, grouping, now, refresh_developments)
        total_records = store.count_records()
        total_devs = store.count_developments()
    if summary.files == 0:
        raise AggregatorError(
            f"no record files (NNN_<16 hex>.txt) in {', '.join(map(str, args.paths))}: "
            "nothing imported"
        )
    for warning in summary.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    for skipped in summary.skipped:
        print(f"skipped (not a record file name): {skipped}", file=sys.stderr)
    if args.json:
        payload = {
            "files": summary.files,
            "imported": summary.imported,
            "duplicates": summary.duplicates,
            "new_developments": summary.new_developments,
            "joined": summary.joined,
            "unmatched": summary.unmatched,
            "skipped": summary.skipped,
            "warnings": summary.warnings,
            "restored": dataclasses.asdict(restored),
            "store_records": total_records,
            "store_developments": total_devs,
        }
        print(json.dumps(payload, ensure_ascii=False))
        return 0
    print(
        f"imported {summary.imported} of {plural(summary.files, 'record')} "
        f"({plural(summary.duplicates, 'duplicate')}); "
        f"{plural(summary.new_developments, 'new development')}, "
        f"{summary.joined} joined existing ones, {summary.unmatched} matched no topic; "
        f"store holds {plural(total_records, 'record')} in "
        f"{plural(total_devs, 'development')}"
    )
    if grouping:
        print(
            f"from {DEVELOPMENTS_NAME}: {plural(restored.moved, 'record')} put back in "
            f"{'its' if restored.moved == 1 else 'their'} development, "
            f"{plural(restored.merged, 'merged id')} resolving again, "
            f"{plural(restored.aliases, 'other place')} of publication, "
            f"times of {plural(restored.times, 'development')} restored"
            + (
                f"; {plural(restored.kept_manual, 'record')} left where an admin of this "
                "store placed it"
                if restored.kept_manual
                else ""
            )
        )
    return 0


_IMPORT_STAGES = {"match": "matching topics", "store": "grouping and storing"}


def run_export(args: argparse.Namespace, settings: Settings) -> int:
    from aggregator.store import open_store
    from aggregator.store.transfer import export_dir

    with Display() as shown, open_store(settings.db_url) as store:
        task = shown.task("exporting records", total=store.count_records())
        try:
            count = export_dir(store, args.dir, replace=args.replace, on_record=task.update)
        except OSError as exc:
            raise AggregatorError(describe_os_error(exc, f"cannot export to {args.dir}")) from exc
    if args.json:
        print(json.dumps({"records": count, "dir": str(args.dir)}, ensure_ascii=False))
    else:
        print(f"exported {plural(count, 'record')} to {args.dir}")
    return 0


def run_developments(args: argparse.Namespace, settings: Settings) -> int:
    from aggregator.store import open_store

    if args.limit < 0:
        raise UsageError(f"--limit must be 0 (all) or more, got {args.limit}")
    with open_store(settings.db_url) as store:
        devs = store.list_developments(topic=args.topic, limit=args.limit)
        members = {d.id: store.get_memberships(d.id) for d in devs}
    if not devs and args.topic:
        _check_topic(args.topic, settings)
    if args.json:
        payload = [development_json(d, members[d.id]) for d in devs]
        print(json.dumps(payload, ensure_ascii=False, indent=2))
        return 0
    if not devs:
        print("no developments" + (f" for topic {args.topic}" if args.topic else ""))
        return 0
    for dev in devs:
        print(_development_text(dev, members[dev.id]))
    return 0


def _check_topic(topic: str, settings: Settings) -> None:
    """Raise ``UsageError`` when ``topic`` is no topic of the watchlist (a topic that has no
    development yet, or one dropped from the watchlist, is not an error)."""
    import difflib

    from aggregator.errors import ConfigError
    from aggregator.watchlist import load_watchlist

    try:
        known = [t.id for t in load_watchlist(settings.config_path).topics]
    except (ConfigError, OSError):
        return  # no readable watchlist to check against: "no developments" says enough
    if topic in known:
        return
    close = difflib.get_close_matches(topic, known, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise UsageError(
        f"unknown topic {topic!r}: {hint}the watchlist's topics are {', '.join(known) or 'none'}"
    )


def run_split(args: argparse.Namespace, settings: Settings) -> int:
    from aggregator.ingest_driver import split_record
    from aggregator.store import open_store

    with open_store(settings.db_url) as store:
        before = store.get_membership(args.record_id)
        if before is None and store.get_record(args.record_id) is None:
            dev = store.get_development(args.record_id)
            if dev is not None:
                raise UsageError(
                    f"{args.record_id} is a development, not a record: split takes the id of "
                    f"one of its records ({', '.join(dev.record_ids)})"
                )
            raise UsageError(
                f"no record {args.record_id} (`aggregator developments` lists records by id)"
            )
        new_id = split_record(store, args.record_id, _now())
    old = before.development_id if before else "?"
    print(f"record {args.record_id} moved from development {old} to new development {new_id}")
    return 0


def run_merge(args: argparse.Namespace, settings: Settings) -> int:
    from aggregator.ingest_driver import merge_developments
    from aggregator.store import open_store

    with open_store(settings.db_url) as store:
        for given in (args.keep_id, args.other_id):
            if store.get_development(given) is None:
                raise UsageError(_not_a_development(store, given))
        merge_developments(store, args.keep_id, args.other_id, _now())
        dev = store.get_development(args.keep_id)
    count = len(dev.record_ids) if dev else 0
    print(f"merged development {args.other_id} into {args.keep_id} ({plural(count, 'record')})")
    return 0


def _not_a_development(store: Store, given: str) -> str:
    membership = store.get_membership(given)
    if membership is not None:
        return (
            f"{given} is a record, not a development: it belongs to development "
            f"{membership.development_id}; merge takes development ids (KEEP_ID OTHER_ID)"
        )
    return f"no development {given} (`aggregator developments` lists them)"


def run_db_upgrade(args: argparse.Namespace, settings: Settings) -> int:
    from aggregator.store import upgrade_database

    with Display() as shown:
        shown.task("migrating the database schema")
        result = upgrade_database(settings.db_url)
    if args.json:
        payload = {"before": result.before, "after": result.after, "changed": result.changed}
        print(json.dumps(payload))
    elif result.changed:
        print(f"database upgraded from {result.before or 'empty'} to {result.after}")
    else:
        print(f"database already at {result.after} (newest)")
    return 0


def run_db_check(args: argparse.Namespace, settings: Settings) -> int:
    from aggregator.store import check_database, corrupt_store_advice

    check = check_database(settings.db_url, full=not args.quick)
    if check.skipped:
        print(f"{check.what}: not checked: {check.skipped}")
        return 0
    if check.ok:
        print(f"{check.what}: ok ({check.how})")
        return 0
    for problem in check.problems[:50]:
        print(f"{check.what}: {problem}", file=sys.stderr)
    print(f"error: {corrupt_store_advice(check)}", file=sys.stderr)
    return 1


def run_db_prune(args: argparse.Namespace, settings: Settings) -> int:
    from datetime import timedelta

    from aggregator.store import open_store

    days = args.days
    if days is None:
        from aggregator.service.runner import retention_days
        from aggregator.watchlist import load_watchlist

        days = retention_days(load_watchlist(settings.config_path), settings)
    if days < 1:
        raise UsageError(f"--days must be at least 1, got {days}")
    try:
        cutoff = _now() - timedelta(days=days)
    except OverflowError:
        raise UsageError(f"--days {days} reaches before year 1: give fewer days") from None
    with open_store(settings.db_url) as store:
        removed = store.prune(cutoff)
        left = store.count_records()
    print(
        f"pruned {plural(removed, 'record')} not updated for {plural(days, 'day')}; "
        f"{plural(left, 'record')} remain"
    )
    return 0


def run_db_current(args: argparse.Namespace, settings: Settings) -> int:
    from aggregator.store.engine import create_engine
    from aggregator.store.migrate import current_revision, head_revision

    engine = create_engine(settings.db_url)
    try:
        current = current_revision(engine)
    finally:
        engine.dispose()
    head = head_revision()
    state = "newest" if current == head else f"newest is {head}: run `aggregator db upgrade`"
    print(f"{current or 'empty'} ({state})")
    return 0


# --------------------------------------------------------------------------------------------
# output
# --------------------------------------------------------------------------------------------


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def development_json(dev: Development, members: list[Membership]) -> dict[str, Any]:
    """The JSON object of one development in ``aggregator developments --json``."""
    decision = {m.record_id: m for m in members}
    return {
        "id": dev.id,
        "title": cap_title(dev.title),
        "summary": cap_summary(dev.summary),
        "topics": list(dev.topics),
        "terms": list(dev.terms),
        "first_seen": _iso(dev.first_seen),
        "updated": _iso(dev.updated),
        "records": list(dev.record_ids),
        "sources": [
            {
                "record_id": s.record_id,
                "source_id": s.source_id,
                "source_title": s.source_title,
                "url": s.url,
                "title": cap_title(s.title),
                "published": _iso(s.published),
            }
            for s in dev.sources
        ],
        "members": [
            {
                "record_id": rid,
                "reason": str(decision[rid].reason) if rid in decision else None,
                "score": decision[rid].score if rid in decision else None,
                "matched_record_id": decision[rid].matched_record_id if rid in decision else None,
            }
            for rid in dev.record_ids
        ],
    }


def _development_text(dev: Development, members: list[Membership]) -> str:
    decision = {m.record_id: m for m in members}
    topics = ", ".join(dev.topics) or "no topic"
    lines = [
        f"{dev.id}  updated {dev.updated:%Y-%m-%d %H:%M}Z  "
        f"{plural(len(dev.record_ids), 'record')}  [{topics}]",
        f"  {cap_title(dev.title)}",
    ]
    for ref in dev.sources:
        m = decision.get(ref.record_id)
        why = f"{m.reason} {m.score:.2f}" if m else "?"
        where = ref.source_title or ref.source_id or "imported"
        lines.append(f"    {ref.record_id}  {why:<20} {where}: {ref.url or cap_title(ref.title)}")
    return "\n".join(lines) + "\n"
