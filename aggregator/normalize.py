"""Feed entries and extracted articles to ``model.Record`` in the record text format.

A record we make reads: lead line, title line, body blocks (``records.compose``). For a feed
entry the lead is its summary when it also carries separate full content; otherwise the first
paragraph of whatever HTML it has. Ids come from the canonical URL (``records.record_id``), so
the same article reached through a tracking link is the same record.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import parse_qsl, urlsplit

from aggregator import records
from aggregator.extract import html_to_blocks
from aggregator.feeds import FeedEntry
from aggregator.identity import canonical_url, headline_key
from aggregator.model import Article, Block, BlockKind, Record, Source, SourceKind

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


# --- relayed items: news search feeds, FeedBurner ------------------------------------------

# FeedBurner's click-counting redirects (``/~r/<feed>/~3/<id>/``) in front of the outlet's URL.
_FEEDBURNER_HOSTS = frozenset({"feeds.feedburner.com", "feedproxy.google.com"})
# Bing News search RSS links go through a click counter with the target in ``url=``.
_BING_CLICK_PATHS = frozenset({"/news/apiclick.aspx"})
# " - Reuters", " – LRT": the outlet a Google News search feed appends to each headline.
_OUTLET_SUFFIX = re.compile(r"\s+[-–—|]\s+([^-–—|]{1,80}?)\s*$")
MAX_OUTLET_WORDS = 8


@dataclass(frozen=True, slots=True)
class Relayed:
    """Where an entry really comes from: its article URL, its publisher, its own headline."""

    link: str | None
    title: str
    outlet: str | None = None
    outlet_url: str | None = None


def _host(url: str | None) -> str:
    try:
        return (urlsplit(url).hostname or "").lower() if url else ""
    except ValueError:
        return ""


def unwrap_link(link: str | None, guid: str | None, orig_link: str | None = None) -> str | None:
    """The article's own URL behind a FeedBurner or Bing News click-counting link.

    FeedBurner: ``feedburner:origLink`` when given, else the entry's guid when it is an http(s)
    URL on another host (FeedBurner keeps the outlet's permalink there). Bing: the ``url=``
    parameter. Any other link is returned as it is (Google News' ``/rss/articles/…`` links
    carry no readable target: the full-text fetch follows them, see ``pipeline``).
    """
    origin = _http_url(orig_link)
    if origin:
        return origin
    host = _host(link)
    if host in _FEEDBURNER_HOSTS or host.endswith(".feedburner.com"):
        candidate = _http_url(guid)
        if candidate and _host(candidate) not in _FEEDBURNER_HOSTS:
            return candidate
        return link
    if link and (host == "bing.com" or host.endswith(".bing.com")):
        parts = urlsplit(link)
        if parts.path.lower() in _BING_CLICK_PATHS:
            for key, value in parse_qsl(parts.query):
                target = _http_url(value) if key.lower() == "url" else None
                if target:
                    return target
    return link


def relayed(entry: FeedEntry, source: Source) -> Relayed:
    """The entry's article URL, outlet and headline.

    Every entry's FeedBurner or Bing link is unwrapped and a ``<source>`` element credits the
    outlet. A query source's headline also loses the `` - Outlet`` suffix that Google News
    appends (taken as the outlet's name when no ``<source>`` names it), so the title used for
    grouping is the outlet's own.
    """
    link = unwrap_link(entry.link, entry.guid, entry.orig_link)
    title = _inline_text(entry.title) if entry.title else ""
    outlet = _inline_text(entry.outlet) if entry.outlet else None
    outlet_url = _http_url(entry.outlet_url)
    if source.kind is SourceKind.QUERY and title:
        m = _OUTLET_SUFFIX.search(title)
        suffix = m.group(1).strip() if m else None
        if (
            m
            and suffix
            and (
                (outlet and suffix.casefold() == outlet.casefold())
                or (outlet is None and len(suffix.split()) <= MAX_OUTLET_WORDS)
            )
        ):
            title = title[: m.start()].rstrip()
            outlet = outlet or suffix
    if outlet and outlet_url is None and link != entry.link:
        # An unwrapped link is the outlet's own page: its site is the outlet's.
        parts = urlsplit(link or "")
        outlet_url = f"{parts.scheme}://{parts.netloc}" if parts.netloc else None
    return Relayed(link=link, title=title, outlet=outlet, outlet_url=outlet_url)


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
    outlet: str | None = None,
    outlet_url: str | None = None,
) -> Record:
    """A Record from its parts: composes the text and derives id, hash, canonical URL and
    headline key (from the outlet's site when the URL is not on it)."""
    url = _http_url(url)
    canonical = _http_url(canonical)
    outlet_url = _http_url(outlet_url)
    if canonical and urlsplit(canonical).path in ("", "/"):
        canonical = None  # a rel=canonical pointing at the home page is a site bug, not an id
    basis = canonical or url
    canonical = canonical_url(basis) if basis else None
    title = _inline_text(title) or _fallback_title(lead, body)
    text = records.compose(title, lead, body)
    # A named outlet's headline is keyed on its site only: a relayed link's host is not it.
    site = outlet_url if outlet else canonical
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
        outlet=outlet,
        outlet_url=outlet_url,
        headline_key=headline_key(site, title) if canonical else None,
    )


def record_from_entry(entry: FeedEntry, source: Source, fetched: datetime) -> Record:
    """The record of one feed entry (its own text; full-text fetching is the pipeline's),
    with its article URL and outlet as ``relayed`` finds them."""
    lead, body = entry_lead_and_body(entry)
    where = relayed(entry, source)
    if where.outlet and lead.endswith(where.outlet) and lead != where.outlet:
        # A Google News item's description is its headline, then the outlet's name.
        lead = lead[: -len(where.outlet)].rstrip()
    return make_record(
        title=where.title,
        lead=lead,
        body=body,
        url=where.link,
        guid=entry.guid,
        source=source,
        published=entry.published,
        fetched=fetched,
        language=entry.language,
        author=entry.author,
        outlet=where.outlet,
        outlet_url=where.outlet_url,
    )


def record_from_article(
    article: Article,
    source: Source,
    url: str,
    fetched: datetime,
    *,
    guid: str | None = None,
    published: datetime | None = None,
    outlet: str | None = None,
    outlet_url: str | None = None,
) -> Record:
    """The record of an extracted article page (a page source's item, or a full-text fetch).

    ``published`` (from the listing or the feed entry) is used when the page states none;
    ``outlet``/``outlet_url`` are the feed entry's (``relayed``).
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
        outlet=outlet,
        outlet_url=outlet_url,
    )
