"""Feed entries and extracted articles to ``model.Record`` in the record text format.

A record we make reads: lead line, title line, body blocks (``records.compose``). For a feed
entry the lead is its summary when it also carries separate full content; otherwise the first
paragraph of whatever HTML it has. Ids come from the canonical URL (``records.record_id``), so
the same article reached through a tracking link is the same record.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from urllib.parse import urlsplit

from aggregator import records
from aggregator.dedup import canonical_url
from aggregator.extract import html_to_blocks
from aggregator.feeds import FeedEntry
from aggregator.model import Article, Block, BlockKind, Record, Source

MAX_TITLE_CHARS = 160


def _http_url(url: str | None) -> str | None:
    if not url:
        return None
    url = url.strip()
    return url if urlsplit(url).scheme in ("http", "https") else None


def _plain(blocks: Sequence[Block]) -> str:
    return " ".join(b.text for b in blocks if b.text).strip()


def _inline_text(value: str) -> str:
    """A title or name that may carry markup or entities, as one plain line."""
    if "<" in value or "&" in value:
        return _plain(html_to_blocks(value)) or value.strip()
    return " ".join(value.split())


def _same_text(a: str, b: str) -> bool:
    fold_a, fold_b = " ".join(a.casefold().split()), " ".join(b.casefold().split())
    return bool(fold_a) and (fold_b.startswith(fold_a.rstrip(".…")) or fold_a == fold_b)


def entry_lead_and_body(entry: FeedEntry) -> tuple[str, tuple[Block, ...]]:
    """The lead paragraph and body blocks of a feed entry."""
    summary = html_to_blocks(entry.summary_html) if entry.summary_html else ()
    content = html_to_blocks(entry.content_html) if entry.content_html else ()
    if content and summary:
        lead = _plain(summary)
        if not _same_text(lead, _plain(content)):
            return lead, content
        # The summary is the content's opening (a teaser): use the content alone.
    blocks = content or summary
    if blocks and blocks[0].kind is BlockKind.PARAGRAPH:
        return blocks[0].text, blocks[1:]
    return "", blocks


def _fallback_title(lead: str, body: Sequence[Block]) -> str:
    text = lead or _plain(body[:1])
    title = records.first_sentence(text) if text else ""
    if len(title) > MAX_TITLE_CHARS:
        title = title[: MAX_TITLE_CHARS - 1].rsplit(" ", 1)[0] + "…"
    return title


def make_record(
    *,
    title: str,
    lead: str,
    body: Sequence[Block],
    url: str | None,
    guid: str | None,
    source: Source,
    published: datetime | None,
    fetched: datetime,
    language: str | None = None,
    author: str | None = None,
    canonical: str | None = None,
) -> Record:
    """A Record from its parts: composes the text and derives id, hash and canonical URL."""
    url = _http_url(url)
    canonical = _http_url(canonical)
    if canonical and urlsplit(canonical).path in ("", "/"):
        canonical = None  # a rel=canonical pointing at the home page is a site bug, not an id
    basis = canonical or url
    canonical = canonical_url(basis) if basis else None
    title = _inline_text(title) or _fallback_title(lead, body)
    text = records.compose(title, lead, body)
    return Record(
        id=records.record_id(canonical, text),
        text=text,
        title=title,
        content_hash=records.content_hash(text),
        url=url,
        canonical_url=canonical,
        guid=guid,
        source_id=source.id,
        published=published,
        fetched=fetched,
        language=language or source.language,
        author=_inline_text(author) if author else None,
    )


def record_from_entry(entry: FeedEntry, source: Source, fetched: datetime) -> Record:
    """The record of one feed entry (its own text; full-text fetching is the pipeline's)."""
    lead, body = entry_lead_and_body(entry)
    return make_record(
        title=entry.title,
        lead=lead,
        body=body,
        url=entry.link,
        guid=entry.guid,
        source=source,
        published=entry.published,
        fetched=fetched,
        language=entry.language,
        author=entry.author,
    )


def record_from_article(
    article: Article,
    source: Source,
    url: str,
    fetched: datetime,
    *,
    guid: str | None = None,
    published: datetime | None = None,
) -> Record:
    """The record of an extracted article page (a page source's item, or a full-text fetch).

    ``published`` (from the listing or the feed entry) is used when the page states none.
    """
    return make_record(
        title=article.title,
        lead=article.lead,
        body=article.blocks,
        url=url,
        guid=guid or url,
        source=source,
        published=article.published or published,
        fetched=fetched,
        language=article.language,
        author=article.author,
        canonical=article.canonical_url,
    )
