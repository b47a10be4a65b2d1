"""``aggregator publish DIR``: write the feeds, the pages and the OPML for a static web server."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from aggregator.cli.output import Display, UsageError, advice, plural
from aggregator.errors import PublishError
from aggregator.settings import Settings


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "publish",
        help="write every feed, page and sources.opml into a directory",
        description=(
            "Render the published files from the store into DIR, laid out as the service serves "
            "them (DIR/index.html, DIR/sources.opml, DIR/feeds/<all|topic>.<atom|rss|json>, "
            "DIR/topics/<topic>/index.html and page-<n>.html, DIR/developments/<id>.html). "
            "Each file is replaced atomically; unchanged files are left alone."
        ),
    )
    parser.add_argument("dir", metavar="DIR", type=Path, help="output directory (created)")
    parser.add_argument(
        "--base-url",
        metavar="URL",
        help="public URL DIR is served at (default: the watchlist's publish.base_url, then "
        "AGGREGATOR_BASE_URL, then http://HOST:PORT)",
    )
    parser.add_argument(
        "--gzip",
        action="store_true",
        help="also write FILE.gz next to each file (for nginx gzip_static and similar)",
    )
    parser.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    parser.set_defaults(
        handler=run_publish,
        preload=("aggregator.publish.static", "aggregator.store", "aggregator.watchlist"),
    )


def run_publish(args: argparse.Namespace, settings: Settings) -> int:
    from aggregator.publish.static import publish_dir
    from aggregator.store import open_store
    from aggregator.watchlist import load_watchlist

    watchlist = load_watchlist(settings.config_path)
    base_url = args.base_url or watchlist.publish.base_url or settings.public_url
    if args.base_url:
        # An explicit flag beats the watchlist's publish.base_url.
        from dataclasses import replace

        watchlist = replace(watchlist, publish=replace(watchlist.publish, base_url=args.base_url))
    with Display() as shown, open_store(settings.db_url) as store:
        task = shown.task("rendering feeds")
        try:
            paths = publish_dir(
                store,
                watchlist,
                args.dir,
                base_url,
                precompress=args.gzip,
                progress=task.hook({"write": "writing files"}),
            )
        except PublishError as exc:
            cause = exc.__cause__
            if isinstance(cause, OSError):
                raise PublishError(f"{exc} ({advice(cause)})") from cause
            raise
        except ValueError as exc:  # the base URL
            raise UsageError(str(exc)) from exc
    feeds = sum(1 for p in paths if p.parent.name == "feeds")
    developments = sum(1 for p in paths if p.parent.name == "developments")
    topics = len(paths) - feeds - developments - 2
    url = f"{base_url.rstrip('/')}/"
    if args.json:
        payload = {
            "files": len(paths),
            "feeds": feeds,
            "topic_pages": topics,
            "development_pages": developments,
            "dir": str(args.dir),
            "base_url": url,
        }
        print(json.dumps(payload, ensure_ascii=False))
        return 0
    print(
        f"published {plural(len(paths), 'file')} ({plural(feeds, 'feed')}, index.html, "
        f"sources.opml, {plural(topics, 'topic page')}, "
        f"{plural(developments, 'development page')}) to {args.dir} for {url}"
    )
    return 0
