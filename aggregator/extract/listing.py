"""Page sources: scrape a listing page (a site's news index) with the watchlist's CSS selectors.

``scrape_listing`` finds every ``selectors.item`` element, takes its link (``selectors.link``,
default ``a``; the item itself when it is the link), its title (``selectors.title``, else the
link text or ``title`` attribute) and its date (``selectors.date``: a ``datetime``/``content``
attribute or the element text, in ISO 8601, RFC 2822 or a common written form). URLs are made
absolute against ``<base href>`` or the page URL, fragments dropped, repeated links merged.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urldefrag, urljoin, urlsplit

from selectolax.lexbor import LexborHTMLParser, LexborNode, SelectolaxError

from aggregator.errors import ExtractionError
from aggregator.extract.blocks import normalize_space
from aggregator.extract.metadata import parse_date
from aggregator.model import ListingItem, PageSelectors

__all__ = ["LinkChoice", "choose_links", "parse_loose_date", "same_site", "scrape_listing"]

_WRITTEN_FORMATS = (
    "%B %d, %Y",
    "%b %d, %Y",
    "%b. %d, %Y",
    "%d %B %Y",
    "%d %b %Y",
    "%B %d %Y",
    "%d.%m.%Y",
    "%Y/%m/%d",
    "%d/%m/%Y",
    "%B %d, %Y %I:%M %p",
    "%b %d, %Y %I:%M %p",
    "%d %B %Y %H:%M",
    "%Y-%m-%d %H:%M",
    "%d.%m.%Y %H:%M",
)
_ORDINAL_RE = re.compile(r"(\d{1,2})(st|nd|rd|th)\b", re.IGNORECASE)
_WEEKDAY_RE = re.compile(
    r"^(mon|tue|wed|thu|fri|sat|sun)[a-z]*\.?,?\s+", re.IGNORECASE
)  # "Tuesday, 19 November 2019"
_NOISE_RE = re.compile(r"^(published|posted|updated|on)\s*:?\s*", re.IGNORECASE)


def scrape_listing(html: str, base_url: str, selectors: PageSelectors) -> list[ListingItem]:
    """The article links of a listing page, in page order, one per distinct URL."""
    tree = LexborHTMLParser(html)
    base = _base_url(tree, base_url)
    try:
        items = tree.css(selectors.item)
    except SelectolaxError as exc:
        raise ExtractionError(f"invalid item selector {selectors.item!r}: {exc}") from exc
    found: dict[str, ListingItem] = {}
    for item in items:
        entry = _item(item, base, selectors)
        if entry is None:
            continue
        seen = found.get(entry.url)
        if seen is None:
            found[entry.url] = entry
        elif (not seen.title and entry.title) or (seen.published is None and entry.published):
            # An image link and a headline link to the same article: keep what each knows.
            found[entry.url] = ListingItem(
                url=seen.url,
                title=seen.title or entry.title,
                published=seen.published or entry.published,
            )
    return list(found.values())


@dataclass(frozen=True, slots=True)
class LinkChoice:
    """Which of a listing's new links one fetch follows, and why the others are not."""

    follow: tuple[str, ...]
    offsite: tuple[str, ...] = ()  # outside the source's site, and the source does not allow it
    over_cap: tuple[str, ...] = ()  # past the caps: left for the next fetch


def _host(url: str) -> str:
    return (urlsplit(url).hostname or "").lower().rstrip(".")


def same_site(url: str, site_url: str) -> bool:
    """Whether ``url`` is on the site of ``site_url``: the same host, or a host under it once
    a leading ``www.`` is dropped (``news.example.org`` is on ``www.example.org``'s site)."""
    host, site = _host(url), _host(site_url)
    if not host or not site:
        return False
    site = site.removeprefix("www.")
    return host == site or host.endswith("." + site) or host == "www." + site


def choose_links(
    urls: Sequence[str],
    site_url: str,
    *,
    offsite: bool,
    max_links: int,
    max_per_origin: int,
) -> LinkChoice:
    """The links (in listing order, newest first) one fetch of a page source follows: only on
    ``site_url``'s site unless ``offsite``, at most ``max_per_origin`` per scheme+host+port and
    ``max_links`` in all."""
    follow: list[str] = []
    refused: list[str] = []
    later: list[str] = []
    per_origin: dict[tuple[str, str, int | None], int] = {}
    for url in urls:
        if not offsite and not same_site(url, site_url):
            refused.append(url)
            continue
        parts = urlsplit(url)
        origin = (parts.scheme, _host(url), parts.port)
        if len(follow) >= max_links or per_origin.get(origin, 0) >= max_per_origin:
            later.append(url)
            continue
        per_origin[origin] = per_origin.get(origin, 0) + 1
        follow.append(url)
    return LinkChoice(tuple(follow), tuple(refused), tuple(later))


def _base_url(tree: LexborHTMLParser, page_url: str) -> str:
    base = tree.css_first("base[href]")
    if base is not None:
        href = (base.attributes.get("href") or "").strip()
        if href:
            return urljoin(page_url, href)
    return page_url


def _select(node: LexborNode, selector: str, what: str) -> LexborNode | None:
    try:
        return node.css_first(selector)
    except SelectolaxError as exc:
        raise ExtractionError(f"invalid {what} selector {selector!r}: {exc}") from exc


def _item(item: LexborNode, base: str, selectors: PageSelectors) -> ListingItem | None:
    link = _select(item, selectors.link, "link") if selectors.link else None
    if link is None and item.tag == "a":
        link = item
    if link is None:
        return None
    url = _absolute(link.attributes.get("href"), base)
    if url is None:
        return None
    title = ""
    if selectors.title:
        node = _select(item, selectors.title, "title")
        if node is not None:
            title = normalize_space(node.text(deep=True) or "")
    if not title:
        title = normalize_space(link.text(deep=True) or "") or normalize_space(
            link.attributes.get("title") or ""
        )
    published = None
    if selectors.date:
        node = _select(item, selectors.date, "date")
        if node is not None:
            published = _node_date(node)
    return ListingItem(url=url, title=title, published=published)


def _absolute(href: str | None, base: str) -> str | None:
    if not href or not href.strip():
        return None
    url, _ = urldefrag(urljoin(base, href.strip()))
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return None
    return url


def _node_date(node: LexborNode) -> datetime | None:
    attrs = node.attributes
    for key in ("datetime", "content", "data-timestamp", "title"):
        parsed = parse_loose_date(attrs.get(key))
        if parsed is not None:
            return parsed
    return parse_loose_date(node.text(deep=True))


def parse_loose_date(value: str | None) -> datetime | None:
    """ISO 8601, RFC 2822, a Unix timestamp or a written date ("Nov 19, 2019", "19 November
    2019 14:05") -> aware UTC datetime; None when it is not a date."""
    if not value or not value.strip():
        return None
    text = normalize_space(value)
    if text.isdigit() and len(text) in (10, 13):
        seconds = int(text) / (1000 if len(text) == 13 else 1)
        return datetime.fromtimestamp(seconds, tz=UTC)
    parsed = parse_date(text)
    if parsed is not None:
        return parsed
    text = _NOISE_RE.sub("", text)
    text = _WEEKDAY_RE.sub("", text)
    text = _ORDINAL_RE.sub(r"\1", text).replace(" at ", " ")
    for fmt in _WRITTEN_FORMATS:
        try:
            return datetime.strptime(text, fmt).replace(tzinfo=UTC)
        except ValueError:
            continue
    return None
