"""Extraction commands: ``extract`` (an article page -> record text) and ``scrape`` (a listing
page -> article links), for trying pages and page-source selectors before adding a source."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aggregator.errors import ConfigError, ExtractionError
from aggregator.extract import (
    DEFAULT_MAX_BYTES,
    DEFAULT_TIMEOUT,
    extract_article_guarded,
    scrape_listing,
)
from aggregator.model import FetchPolicy, PageSelectors, SourceKind
from aggregator.settings import Settings

if TYPE_CHECKING:
    _Subparsers = argparse._SubParsersAction[argparse.ArgumentParser]


def register(subparsers: _Subparsers) -> None:
    extract = subparsers.add_parser(
        "extract",
        help="extract an article page (file, URL or -) and print its record text",
        description=(
            "Extract the article of an HTML page and print the record the service would store: "
            "lead line, title line, body blocks. PAGE is a file, '-' for standard input, or an "
            "http(s) URL fetched through the service's guarded fetcher (the watchlist's fetch: "
            "policy). Extraction runs in a worker process with a time limit and a size cap, as "
            "in the service."
        ),
    )
    extract.add_argument("page", metavar="PAGE", help="HTML file, '-' or http(s) URL")
    extract.add_argument("--url", help="the page's URL (resolves relative canonical links)")
    extract.add_argument("--body", metavar="SELECTOR", help="CSS selector of the article body")
    extract.add_argument(
        "--json", action="store_true", help="print metadata and text as a JSON object"
    )
    extract.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds")
    extract.add_argument("--max-bytes", type=int, default=DEFAULT_MAX_BYTES, help="size cap")
    extract.set_defaults(handler=run_extract)

    scrape = subparsers.add_parser(
        "scrape",
        help="list the article links a page source's selectors find on a listing page",
        description=(
            "Apply page-source selectors to a listing page and print one line per article: "
            "date, URL, title. Give the selectors with --item/--link/--title/--date, or take "
            "them from the watchlist with --source ID (its URL is used when PAGE is omitted)."
        ),
    )
    scrape.add_argument("page", metavar="PAGE", nargs="?", help="HTML file, '-' or http(s) URL")
    scrape.add_argument("--source", metavar="ID", help="use this page source's selectors")
    scrape.add_argument("--base-url", help="URL the page's relative links resolve against")
    scrape.add_argument("--item", help="CSS selector of one listed article")
    scrape.add_argument("--link", default="a", help="CSS selector of its link (default: a)")
    scrape.add_argument("--title", help="CSS selector of its title")
    scrape.add_argument("--date", help="CSS selector of its date")
    scrape.add_argument("--json", action="store_true", help="a JSON array instead of lines")
    scrape.set_defaults(handler=run_scrape)


def _is_url(page: str) -> bool:
    return page.startswith(("http://", "https://"))


def _fetch_policy(settings: Settings) -> FetchPolicy:
    """The watchlist's fetch policy when there is a readable watchlist, else the defaults."""
    from aggregator.watchlist import load_watchlist

    try:
        return load_watchlist(settings.config_path).fetch
    except (ConfigError, OSError):
        return FetchPolicy()


def _read_page(page: str, settings: Settings) -> tuple[str, str | None]:
    """(HTML text, final URL or None) of a file, standard input or a fetched URL."""
    if page == "-":
        return sys.stdin.read(), None
    if _is_url(page):
        from aggregator.fetch import Fetcher

        async def fetch() -> tuple[str, str]:
            async with Fetcher(_fetch_policy(settings)) as fetcher:
                response = await fetcher.fetch(page, purpose="page")
            return response.text, response.url

        return asyncio.run(fetch())
    try:
        return Path(page).read_text(encoding="utf-8", errors="replace"), None
    except OSError as exc:
        raise ExtractionError(f"cannot read {page}: {exc.strerror or exc}") from exc


def run_extract(args: argparse.Namespace, settings: Settings) -> int:
    html, fetched_url = _read_page(args.page, settings)
    url = args.url or fetched_url
    article = extract_article_guarded(
        html, url, timeout=args.timeout, max_bytes=args.max_bytes, body_selector=args.body
    )
    if args.json:
        out: dict[str, Any] = {
            "title": article.title,
            "lead": article.lead,
            "author": article.author,
            "published": article.published.isoformat() if article.published else None,
            "canonical_url": article.canonical_url,
            "language": article.language,
            "url": article.url,
            "blocks": len(article.blocks),
            "text": article.text,
        }
        print(json.dumps(out, ensure_ascii=False, indent=2))
    else:
        sys.stdout.write(article.text)
    return 0


def _selectors(args: argparse.Namespace, settings: Settings) -> tuple[PageSelectors, str | None]:
    if args.source:
        from aggregator.watchlist import load_watchlist

        watchlist = load_watchlist(settings.config_path)
        source = next((s for s in watchlist.sources if s.id == args.source), None)
        if source is None or source.kind is not SourceKind.PAGE or source.selectors is None:
            raise ExtractionError(f"{args.source!r} is not a page source of the watchlist")
        return source.selectors, source.url
    if not args.item:
        raise ExtractionError("give --item (and --link/--title/--date) or --source")
    return PageSelectors(item=args.item, link=args.link, title=args.title, date=args.date), None


def run_scrape(args: argparse.Namespace, settings: Settings) -> int:
    selectors, source_url = _selectors(args, settings)
    page = args.page or source_url
    if not page:
        raise ExtractionError("give the listing PAGE (file, '-' or URL)")
    html, fetched_url = _read_page(page, settings)
    base_url = args.base_url or fetched_url or (page if _is_url(page) else None) or source_url
    if base_url is None:
        raise ExtractionError("give --base-url for a listing read from a file")
    items = scrape_listing(html, base_url, selectors)
    if args.json:
        rows = [
            {
                "url": i.url,
                "title": i.title,
                "published": i.published.isoformat() if i.published else None,
            }
            for i in items
        ]
        print(json.dumps(rows, ensure_ascii=False, indent=2))
        return 0
    for item in items:
        when = item.published.strftime("%Y-%m-%d %H:%M") if item.published else "-"
        print(f"{when:16}  {item.url}  {item.title}")
    if not items:
        print("no items found: check the --item selector", file=sys.stderr)
        return 1
    return 0
