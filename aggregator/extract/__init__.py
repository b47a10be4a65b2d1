"""Article extraction (selectolax): pages and feed HTML into record-format blocks and text.

Public API (see docs/extraction.md):

* ``extract_text(html, url=None) -> str``: the record text of an article page.
* ``extract_article(html, url=None) -> Article``: title, lead, blocks, metadata and text.
* ``extract_article_guarded(html, url=None, *, timeout, max_bytes) -> Article``: the same in
  a killable worker process with a time limit and a size cap (raises ExtractionError);
  ``extract_article_guarded_async`` for asyncio callers.
* ``html_to_blocks(fragment) -> tuple[Block, ...]``: feed entry content HTML -> blocks.
* ``scrape_listing(html, base_url, selectors) -> list[ListingItem]``: page sources.

The names are loaded on first use (PEP 562): a caller that only turns feed HTML into blocks
(``normalize``) does not import the article extractor, its classifier (numpy) or the worker
pool (multiprocessing, asyncio).
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from aggregator.extract.article import extract_article, extract_text
    from aggregator.extract.blocks import html_to_blocks
    from aggregator.extract.listing import parse_loose_date, scrape_listing
    from aggregator.extract.metadata import parse_date
    from aggregator.extract.worker import (
        DEFAULT_MAX_BYTES,
        DEFAULT_TIMEOUT,
        ExtractorPool,
        extract_article_guarded,
        extract_article_guarded_async,
        shutdown_default_pool,
    )

# name -> the submodule defining it
_WHERE = {
    "DEFAULT_MAX_BYTES": "worker",
    "DEFAULT_TIMEOUT": "worker",
    "ExtractorPool": "worker",
    "extract_article": "article",
    "extract_article_guarded": "worker",
    "extract_article_guarded_async": "worker",
    "extract_text": "article",
    "html_to_blocks": "blocks",
    "parse_date": "metadata",
    "parse_loose_date": "listing",
    "scrape_listing": "listing",
    "shutdown_default_pool": "worker",
}

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_TIMEOUT",
    "ExtractorPool",
    "extract_article",
    "extract_article_guarded",
    "extract_article_guarded_async",
    "extract_text",
    "html_to_blocks",
    "parse_date",
    "parse_loose_date",
    "scrape_listing",
    "shutdown_default_pool",
]


def __getattr__(name: str) -> Any:
    where = _WHERE.get(name)
    if where is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f"{__name__}.{where}"), name)
    globals()[name] = value  # the next look-up is a plain module attribute
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_WHERE))
