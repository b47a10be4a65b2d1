"""Article extraction (selectolax): pages and feed HTML into record-format blocks and text.

Public API (see docs/extraction.md):

* ``extract_text(html, url=None) -> str``: the record text of an article page.
* ``extract_article(html, url=None) -> Article``: title, lead, blocks, metadata and text.
* ``extract_article_guarded(html, url=None, *, timeout, max_bytes) -> Article``: the same in
  a killable worker process with a time limit and a size cap (raises ExtractionError);
  ``extract_article_guarded_async`` for asyncio callers.
* ``html_to_blocks(fragment) -> tuple[Block, ...]``: feed entry content HTML -> blocks.
* ``scrape_listing(html, base_url, selectors) -> list[ListingItem]``: page sources.
"""

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
