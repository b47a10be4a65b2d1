"""``aggregator search QUERY``: full-text search over the stored records."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from aggregator.settings import Settings

if TYPE_CHECKING:
    from aggregator.model import SearchMatch

    _Subparsers = argparse._SubParsersAction[argparse.ArgumentParser]


def register(subparsers: _Subparsers) -> None:
    parser = subparsers.add_parser(
        "search",
        help="find stored records (and their developments) by words",
        description=(
            "Search the stored records' titles and texts. A record matches when it holds every "
            "word; words of five or more letters also match their inflected forms, 'word*' is a "
            "prefix. Best matches first. Unlike the web page, this lists every stored record, "
            "also those that match no topic (their developments are not published)."
        ),
    )
    parser.add_argument("words", metavar="QUERY", nargs="+", help="the words to look for")
    parser.add_argument(
        "--limit", type=int, default=20, metavar="N", help="show at most N records (default 20)"
    )
    parser.add_argument("--offset", type=int, default=0, metavar="N", help="skip the first N")
    parser.add_argument("--json", action="store_true", help="one JSON array, for scripts")
    parser.set_defaults(handler=run_search, preload=("aggregator.store",))


def run_search(args: argparse.Namespace, settings: Settings) -> int:
    from aggregator.cli.output import UsageError
    from aggregator.store import open_store
    from aggregator.store.search import SearchError, query_words

    if args.limit < 1 or args.offset < 0:
        raise UsageError("--limit must be at least 1 and --offset at least 0")
    query = " ".join(args.words)
    try:
        query_words(query)
    except SearchError as exc:  # bad input, like an unknown id: exit status 2
        raise UsageError(str(exc)) from None
    with open_store(settings.db_url) as store:
        found = store.search(query, limit=args.limit, offset=args.offset)
    if args.json:
        json.dump([_as_json(m) for m in found], sys.stdout, ensure_ascii=False, indent=1)
        sys.stdout.write("\n")
        return 0
    if not found:
        print(f"no stored record holds every word of {query!r}")
        return 0
    for match in found:
        record = match.record
        when = record.published.strftime("%Y-%m-%d %H:%M") if record.published else "no date"
        source = match.source_title or record.source_id or "unknown source"
        print(f"{record.id}  {when}  {source}: {record.title}")
        details = [f"development {match.development_id}" if match.development_id else ""]
        if record.url:
            details.append(record.url)
        print("    " + "  ".join(d for d in details if d))
    return 0


def _as_json(match: SearchMatch) -> dict[str, Any]:
    record = match.record
    return {
        "record_id": record.id,
        "development_id": match.development_id,
        "title": record.title,
        "source_id": record.source_id,
        "source_title": match.source_title,
        "url": record.url,
        "language": record.language,
        "published": record.published.isoformat() if record.published else None,
    }
