"""``aggregator check-config``: validate the watchlist; try its topic rules on stored records."""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aggregator.cli.output import plural
from aggregator.settings import Settings

if TYPE_CHECKING:
    from aggregator.errors import ConfigProblem
    from aggregator.model import Record
    from aggregator.store import Store
    from aggregator.watchlist import Watchlist

    _Subparsers = argparse._SubParsersAction[argparse.ArgumentParser]

EXIT_OK = 0
EXIT_INVALID = 2


def register(subparsers: _Subparsers) -> None:
    parser = subparsers.add_parser(
        "check-config",
        help="validate the watchlist; --dry-run shows which stored records each topic matches",
        description=(
            "Validate the watchlist (default: --config, $AGGREGATOR_CONFIG or "
            "config/watchlist.yaml). Exit 0 with a one-line summary, or exit 2 listing every "
            "problem as file:line: message on stderr. With --dry-run, also match the stored "
            "records against the file's topic rules and show, per topic, the records that "
            "would match and the terms that did, compared with the matches stored now."
        ),
    )
    parser.add_argument("path", metavar="PATH", nargs="?", type=Path, help="watchlist file")
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="match the stored records against this watchlist's topics (nothing is written)",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print the result as JSON on stdout (the problems, or the dry run)",
    )
    parser.add_argument(
        "--topic",
        action="append",
        default=[],
        metavar="ID",
        help="only this topic (repeatable)",
    )
    parser.add_argument(
        "--limit",
        type=int,
        default=20,
        metavar="N",
        help="records listed per topic in the text output (default 20; 0 = all)",
    )
    parser.set_defaults(handler=run_check_config, preload=("aggregator.watchlist",))


def run_check_config(args: argparse.Namespace, settings: Settings) -> int:
    from aggregator.watchlist import limits_of, validate_watchlist

    path: Path = args.path or settings.config_path
    watchlist, problems = validate_watchlist(path, limits_of(settings))
    if args.json and not args.dry_run:
        print(json.dumps(_check_json(path, watchlist, problems), ensure_ascii=False, indent=2))
    if watchlist is None:
        for problem in problems:
            print(problem, file=sys.stderr)
        noun = "problem" if len(problems) == 1 else "problems"
        print(f"{path}: {len(problems)} {noun}", file=sys.stderr)
        return EXIT_INVALID
    unknown = [t for t in args.topic if watchlist.topic(t) is None]
    if unknown:
        known = ", ".join(t.id for t in watchlist.topics)
        print(f"unknown topic {', '.join(unknown)} (known: {known})", file=sys.stderr)
        return EXIT_INVALID
    if not args.dry_run:
        if not args.json:
            print(summary_line(watchlist, path))
        return EXIT_OK
    report = dry_run(watchlist, settings.db_url, topics=args.topic)
    if args.json:
        print(json.dumps(report.to_json(watchlist, path), ensure_ascii=False, indent=2))
    else:
        print(summary_line(watchlist, path), file=sys.stderr)
        print_dry_run(report, watchlist, limit=args.limit)
    return EXIT_OK


def _check_json(
    path: Path, watchlist: Watchlist | None, problems: Sequence[ConfigProblem]
) -> dict[str, Any]:
    return {
        "config": str(path),
        "ok": watchlist is not None,
        "problems": [{"file": p.file, "line": p.line, "message": p.message} for p in problems],
        "topics": [t.id for t in watchlist.topics] if watchlist else [],
        "sources": [s.id for s in watchlist.sources] if watchlist else [],
    }


def summary_line(watchlist: Watchlist, path: Path) -> str:
    kinds = Counter(str(s.kind) for s in watchlist.sources if s.enabled)
    enabled = sum(kinds.values())
    by_kind = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))
    disabled = len(watchlist.sources) - enabled
    extra = f", {disabled} disabled" if disabled else ""
    return (
        f"{path}: OK: {plural(len(watchlist.topics), 'topic')}, "
        f"{plural(len(watchlist.sources), 'source')} ({by_kind}{extra})"
    )


# --- dry run -----------------------------------------------------------------------------------


@dataclass
class TopicHits:
    topic_id: str
    hits: list[tuple[Record, tuple[str, ...]]] = field(default_factory=list)
    gained: list[str] = field(default_factory=list)  # record ids matched now but not stored so
    lost: list[str] = field(default_factory=list)  # stored as matching, not matched any more


@dataclass
class DryRun:
    scanned: int
    topics: list[TopicHits]

    def to_json(self, watchlist: Watchlist, path: Path) -> dict[str, Any]:
        return {
            "config": str(path),
            "records_scanned": self.scanned,
            "topics": [
                {
                    "id": t.topic_id,
                    "title": _topic_title(watchlist, t.topic_id),
                    "matched": len(t.hits),
                    "gained": t.gained,
                    "lost": t.lost,
                    "records": [
                        {
                            "id": rec.id,
                            "title": rec.title,
                            "url": rec.url,
                            "source_id": rec.source_id,
                            "published": rec.published.isoformat() if rec.published else None,
                            "terms": list(terms),
                        }
                        for rec, terms in t.hits
                    ],
                }
                for t in self.topics
            ],
        }


def _topic_title(watchlist: Watchlist, topic_id: str) -> str:
    topic = watchlist.topic(topic_id)
    return topic.title if topic is not None else topic_id


def dry_run(watchlist: Watchlist, db_url: str, *, topics: Sequence[str] = ()) -> DryRun:
    """Match every stored record against ``watchlist``'s topics, as ingest would (a record is
    only tried against its source's topics when the source restricts them)."""
    from aggregator.store import open_store

    if _missing_sqlite_file(db_url):
        # Nothing stored yet; do not create a database just to look into it.
        return DryRun(0, [TopicHits(t.id) for t in watchlist.topics if _wanted(t.id, topics)])
    with open_store(db_url) as store:
        return _dry_run(store, watchlist, topics)


def _wanted(topic_id: str, topics: Sequence[str]) -> bool:
    return not topics or topic_id in topics


def _dry_run(store: Store, watchlist: Watchlist, topics: Sequence[str]) -> DryRun:
    from aggregator.match import TopicMatcher

    chosen = [t for t in watchlist.topics if _wanted(t.id, topics)]
    matcher = TopicMatcher(chosen)
    source_topics = {s.id: s.topics for s in watchlist.sources}
    by_topic = {t.id: TopicHits(t.id) for t in chosen}
    scanned = 0
    for record in store.iter_records():
        scanned += 1
        allowed = source_topics.get(record.source_id or "", ())
        now = {m.topic_id: m.terms for m in matcher.match(record, allowed)}
        stored = {m.topic_id for m in store.record_topics(record.id)}
        for topic_id, hits in by_topic.items():
            if topic_id in now:
                hits.hits.append((record, now[topic_id]))
                if topic_id not in stored:
                    hits.gained.append(record.id)
            elif topic_id in stored:
                hits.lost.append(record.id)
    return DryRun(scanned, list(by_topic.values()))


def _missing_sqlite_file(db_url: str) -> bool:
    prefix = "sqlite:///"
    if not db_url.startswith(prefix):
        return False
    location = db_url[len(prefix) :].split("?", 1)[0]
    return bool(location) and location != ":memory:" and not Path(location).exists()


def print_dry_run(report: DryRun, watchlist: Watchlist, *, limit: int) -> None:
    print(f"{plural(report.scanned, 'stored record')} tried against the rules")
    for topic in report.topics:
        print()
        changes = f" (+{len(topic.gained)} new, -{len(topic.lost)} no longer)"
        print(
            f"{topic.topic_id}: {_topic_title(watchlist, topic.topic_id)}: "
            f"{plural(len(topic.hits), 'record')}{changes}"
        )
        shown = topic.hits if limit <= 0 else topic.hits[:limit]
        gained = set(topic.gained)
        for record, terms in shown:
            mark = "+" if record.id in gained else " "
            title = record.title if len(record.title) <= 70 else record.title[:69] + "…"
            print(f" {mark} {record.id}  {title}  [{', '.join(terms)}]")
        if len(shown) < len(topic.hits):
            print(f"   ... and {len(topic.hits) - len(shown)} more (--limit 0 shows all)")
        for record_id in topic.lost:
            print(f" - {record_id}  (stored as matching; these rules no longer match it)")
