"""Extraction commands: ``extract`` (an article page -> record text) and ``scrape`` (a listing
page -> article links), for trying pages and page-source selectors before adding a source."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aggregator.cli.output import UsageError
from aggregator.errors import ConfigError, ExtractionError
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
    # Defaults resolved when the command runs: importing the extractor here would cost every
    # other command its start-up (selectolax, the worker pool).
    extract.add_argument("--timeout", type=float, help="seconds (default: the extractor's, 10)")
    extract.add_argument("--max-bytes", type=int, help="size cap (default: the extractor's, 5 MiB)")
    extract.set_defaults(handler=run_extract, preload=("aggregator.extract",))

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
    scrape.set_defaults(handler=run_scrape, preload=("aggregator.extract",))


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
    """(HTML text, final URL or None) of a file, standard input or a fetched URL.

    The bytes are decoded as the fetcher decodes a page (byte-order mark, UTF-8, then the
    declared or likeliest charset); input that is not text (an image, a PDF, an archive) is
    refused with ``ExtractionError``.
    """
    from aggregator.fetch import charset

    if _is_url(page):
        import asyncio

        from aggregator.fetch import Fetcher

        async def fetch() -> tuple[bytes, str, str, str]:
            async with Fetcher(_fetch_policy(settings)) as fetcher:
                response = await fetcher.fetch(page, purpose="page")
            kind = response.headers.get("content-type", "")
            return response.body, response.text, response.url, kind

        body, text, url, content_type = asyncio.run(fetch())
        _refuse_binary(body, page, content_type)
        return text, url
    if page == "-":
        raw = getattr(sys.stdin, "buffer", None)  # None: a text stream stands in (tests)
        body = raw.read() if raw is not None else sys.stdin.read().encode("utf-8")
        where = "standard input"
    else:
        path = Path(page)
        if path.is_dir():
            raise ExtractionError(f"{page} is a folder: give an HTML file, '-' or a URL")
        try:
            body = path.read_bytes()
        except OSError as exc:
            raise ExtractionError(f"cannot read {page}: {exc.strerror or exc}") from exc
        where = page
    _refuse_binary(body, where)
    return charset.decode(body)[0], None


# Leading bytes of the binary formats most often given by mistake.
_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF87a", "a GIF image"),
    (b"GIF89a", "a GIF image"),
    (b"%PDF-", "a PDF document"),
    (b"PK\x03\x04", "a ZIP archive (or an office document)"),
    (b"\x1f\x8b", "a gzip file"),
    (b"\x7fELF", "a program"),
)


def binary_kind(body: bytes, content_type: str = "") -> str | None:
    """What ``body`` is when it is not text (None when it may be an HTML page)."""
    for magic, kind in _MAGIC:
        if body.startswith(magic):
            return kind
    if body[:4] == b"RIFF" and body[8:12] == b"WEBP":
        return "a WebP image"
    media = content_type.split(";", 1)[0].strip().lower()
    if media.startswith(("image/", "audio/", "video/")):
        return f"{media} content"
    head = body[:8192]
    if b"\x00" in head and not head.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "binary data"  # NUL bytes: not a page (UTF-16 has a byte-order mark)
    return None


def _refuse_binary(body: bytes, where: str, content_type: str = "") -> None:
    kind = binary_kind(body, content_type)
    if kind is not None:
        raise ExtractionError(
            f"{where} is {kind}, not an HTML page: give the HTML of an article page "
            "(a saved .html file, '-' or its http(s) URL)"
        )
    if not body.strip():
        raise ExtractionError(f"{where} is empty: give the HTML of an article page")


def run_extract(args: argparse.Namespace, settings: Settings) -> int:
    from aggregator.extract import DEFAULT_MAX_BYTES, DEFAULT_TIMEOUT, extract_article_guarded

    timeout = DEFAULT_TIMEOUT if args.timeout is None else args.timeout
    max_bytes = DEFAULT_MAX_BYTES if args.max_bytes is None else args.max_bytes
    html, fetched_url = _read_page(args.page, settings)
    url = args.url or fetched_url
    article = extract_article_guarded(
        html, url, timeout=timeout, max_bytes=max_bytes, body_selector=args.body
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
            raise UsageError(f"{args.source!r} is not a page source of the watchlist")
        return source.selectors, source.url
    if not args.item:
        raise UsageError("give --item (and --link/--title/--date) or --source")
    return PageSelectors(item=args.item, link=args.link, title=args.title, date=args.date), None


def run_scrape(args: argparse.Namespace, settings: Settings) -> int:
    from aggregator.extract import scrape_listing

    selectors, source_url = _selectors(args, settings)
    page = args.page or source_url
    if not page:
        raise UsageError("give the listing PAGE (file, '-' or URL)")
    html, fetched_url = _read_page(page, settings)
    base_url = args.base_url or fetched_url or (page if _is_url(page) else None) or source_url
    if base_url is None:
        raise UsageError("give --base-url for a listing read from a file")
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
