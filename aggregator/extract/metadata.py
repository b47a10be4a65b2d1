"""Page metadata: title, byline, dates, canonical URL, language, JSON-LD article body.

Sources, strongest first: JSON-LD (schema.org Article types), OpenGraph / Twitter / Dublin Core
``<meta>`` tags, then the document itself (``<h1>``, ``<title>``, ``<time>``, ``rel=author``,
``<html lang>``). Read before the walk strips ``<script>``/``<head>``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urljoin, urlsplit

from selectolax.lexbor import LexborHTMLParser, LexborNode

from aggregator.extract.blocks import normalize_space

__all__ = ["PageMeta", "clean_title", "parse_date", "read_metadata"]

_ARTICLE_TYPES = frozenset(
    (
        "article",
        "newsarticle",
        "reportagenewsarticle",
        "analysisnewsarticle",
        "opinionnewsarticle",
        "backgroundnewsarticle",
        "reviewnewsarticle",
        "blogposting",
        "socialmediaposting",
        "liveblogposting",
        "report",
        "techarticle",
        "scholarlyarticle",
        "webpage",
    )
)
_TITLE_SEPARATORS = (" | ", " - ", " – ", " — ", " :: ", " » ", " · ")
_LANG_RE = re.compile(r"^[A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{1,8})*$")
_DATE_META = (
    "article:published_time",
    "og:published_time",
    "datepublished",
    "date",
    "pubdate",
    "publishdate",
    "publish-date",
    "publish_date",
    "dc.date",
    "dc.date.issued",
    "dcterms.created",
    "sailthru.date",
    "parsely-pub-date",
    "cxenseparse:recs:publishtime",
)
_AUTHOR_META = (
    "author",
    "article:author",
    "byl",
    "dc.creator",
    "sailthru.author",
    "parsely-author",
)


_USED_META = frozenset(
    (
        *_DATE_META,
        *_AUTHOR_META,
        "og:title",
        "twitter:title",
        "dc.title",
        "og:url",
        "og:description",
        "description",
        "og:site_name",
        "og:locale",
        "content-language",
        "language",
        "dc.language",
    )
)


@dataclass(frozen=True, slots=True)
class PageMeta:
    title: str | None = None  # best title from metadata (not yet compared with the <h1>)
    html_title: str | None = None  # <title>
    author: str | None = None
    published: datetime | None = None
    canonical_url: str | None = None
    language: str | None = None
    description: str | None = None
    article_body: str | None = None  # JSON-LD articleBody, a hint for the content scorer
    site_name: str | None = None
    h1s: tuple[str, ...] = ()  # texts of the page's <h1> elements
    subheads: tuple[str, ...] = ()  # texts of its <h2> and <h3> elements


_HEAD_SELECTOR = 'meta[content], script[type="application/ld+json"], title, link[rel], h1, h2, h3'


def read_metadata(tree: LexborHTMLParser, url: str | None = None) -> PageMeta:
    # One pass over the tree for every element the metadata comes from.
    found: dict[str, list[LexborNode]] = {}
    for node in tree.css(_HEAD_SELECTOR):
        found.setdefault(node.tag or "", []).append(node)
    meta = _meta_tags(found.get("meta", []))
    ld = _json_ld_article(found.get("script", []))
    html_title = None
    titles = found.get("title")
    if titles:
        html_title = normalize_space(titles[0].text(deep=True) or "") or None
    title = (
        _ld_str(ld.get("headline"))
        or meta.get("og:title")
        or meta.get("twitter:title")
        or meta.get("dc.title")
    )
    author = _ld_author(ld.get("author")) or _meta_author(meta) or _dom_author(tree)
    published = (
        parse_date(_ld_str(ld.get("datePublished")))
        or _first_date(meta.get(k) for k in _DATE_META)
        or _time_element_date(tree)
    )
    h1s = (normalize_space(h.text(deep=True) or "") for h in found.get("h1", []))
    subheads = (
        normalize_space(h.text(deep=True) or "") for h in found.get("h2", []) + found.get("h3", [])
    )
    return PageMeta(
        title=normalize_space(title) if title else None,
        html_title=html_title,
        author=author,
        published=published,
        canonical_url=_canonical(found.get("link", []), meta, url),
        language=_language(tree, meta),
        description=meta.get("og:description") or meta.get("description"),
        article_body=_ld_str(ld.get("articleBody")),
        site_name=meta.get("og:site_name"),
        h1s=tuple(h for h in h1s if h),
        subheads=tuple(h for h in subheads if h),
    )


# --- <meta> tags -------------------------------------------------------------------------------


def _meta_tags(nodes: list[LexborNode]) -> dict[str, str]:
    """``name``/``property``/``itemprop``/``http-equiv`` -> content (first one wins)."""
    out: dict[str, str] = {}
    for node in nodes:
        attrs = node.attributes
        for key in ("property", "name", "itemprop", "http-equiv"):
            name = attrs.get(key)
            if name:
                name = name.strip().lower()
                if name in _USED_META and name not in out:
                    content = normalize_space(attrs.get("content") or "")
                    if content:
                        out[name] = content
    return out


def _meta_author(meta: dict[str, str]) -> str | None:
    for key in _AUTHOR_META:
        value = meta.get(key)
        # article:author is often a profile URL, not a name.
        if value and not value.startswith(("http://", "https://")):
            return _clean_byline(value)
    return None


def _dom_author(tree: LexborHTMLParser) -> str | None:
    node = tree.css_first(
        '[rel="author"], [itemprop="author"] [itemprop="name"], [itemprop="author"]'
    )
    if node is None:
        return None
    text = normalize_space(node.text(deep=True) or "")
    return _clean_byline(text) if 0 < len(text) <= 100 else None


_BY_RE = re.compile(r"^(?:by|from|von|par|por|di|door)\s*:?\s+", re.IGNORECASE)


def _clean_byline(text: str) -> str | None:
    text = _BY_RE.sub("", normalize_space(text))
    return text or None


# --- JSON-LD -------------------------------------------------------------------------------


def _json_ld_article(scripts: list[LexborNode]) -> dict[str, Any]:
    """The first schema.org Article-like object in the page's JSON-LD, or {}."""
    best: dict[str, Any] = {}
    for node in scripts:
        raw = node.text(deep=True) or ""
        try:
            data = json.loads(raw)
        except ValueError:
            continue
        for obj in _ld_objects(data):
            types = obj.get("@type")
            names = [types] if isinstance(types, str) else types if isinstance(types, list) else []
            kinds = {str(t).lower() for t in names}
            if not kinds & _ARTICLE_TYPES:
                continue
            # A real article beats a generic WebPage.
            if "webpage" in kinds and kinds <= {"webpage"}:
                if not best:
                    best = obj
                continue
            return obj
    return best


def _ld_objects(data: Any, depth: int = 0) -> list[dict[str, Any]]:
    if depth > 4:
        return []
    if isinstance(data, list):
        return [o for item in data for o in _ld_objects(item, depth + 1)]
    if isinstance(data, dict):
        found = [data]
        graph = data.get("@graph")
        if graph is not None:
            found.extend(_ld_objects(graph, depth + 1))
        return found
    return []


def _ld_str(value: Any) -> str | None:
    if isinstance(value, list) and value:
        value = value[0]
    if isinstance(value, str) and value.strip():
        return value.strip()
    return None


def _ld_author(value: Any) -> str | None:
    items = value if isinstance(value, list) else [value]
    names: list[str] = []
    for item in items:
        name = item.get("name") if isinstance(item, dict) else item
        if isinstance(name, str) and name.strip() and not name.startswith("http"):
            names.append(normalize_space(name))
    return ", ".join(dict.fromkeys(names)) or None


# --- dates ---------------------------------------------------------------------------------


def parse_date(value: str | None) -> datetime | None:
    """ISO 8601 or RFC 2822 date/time -> aware UTC datetime (naive times are taken as UTC)."""
    if not value:
        return None
    text = value.strip()
    parsed: datetime | None = None
    iso = text.replace("Z", "+00:00").replace("z", "+00:00")
    if re.match(r"^\d{4}-\d{2}-\d{2}", iso):
        # "+0000" offsets and "2024-01-02 10:00:00.123456789" forms that fromisoformat refuses.
        iso = re.sub(r"([+-]\d{2})(\d{2})$", r"\1:\2", iso)
        iso = re.sub(r"(\.\d{6})\d+", r"\1", iso)
        try:
            parsed = datetime.fromisoformat(iso)
        except ValueError:
            try:
                parsed = datetime.fromisoformat(iso[:10])
            except ValueError:
                parsed = None
    else:
        try:
            parsed = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            parsed = None
    if parsed is None:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def _first_date(values: Any) -> datetime | None:
    for value in values:
        parsed = parse_date(value)
        if parsed is not None:
            return parsed
    return None


def _time_element_date(tree: LexborHTMLParser) -> datetime | None:
    for node in tree.css("time[datetime]"):
        parsed = parse_date(node.attributes.get("datetime"))
        if parsed is not None:
            return parsed
    return None


# --- URL and language --------------------------------------------------------------------


def _canonical(links: list[LexborNode], meta: dict[str, str], url: str | None) -> str | None:
    candidates: list[str | None] = []
    for node in links:
        rels = (node.attributes.get("rel") or "").lower().split()
        if "canonical" in rels:
            candidates.append(node.attributes.get("href"))
    candidates.append(meta.get("og:url"))
    for raw in candidates:
        if not raw or not raw.strip():
            continue
        absolute = urljoin(url, raw.strip()) if url else raw.strip()
        parts = urlsplit(absolute)
        if parts.scheme in ("http", "https") and parts.netloc:
            return absolute
    return None


def _language(tree: LexborHTMLParser, meta: dict[str, str]) -> str | None:
    root = tree.root
    candidates = [
        root.attributes.get("lang") if root is not None and root.tag == "html" else None,
        root.attributes.get("xml:lang") if root is not None and root.tag == "html" else None,
        meta.get("content-language"),
        meta.get("og:locale"),
        meta.get("language"),
        meta.get("dc.language"),
    ]
    for raw in candidates:
        if raw:
            value = raw.strip().split(",")[0].strip()
            if _LANG_RE.match(value):
                return value.replace("_", "-").split("-")[0].lower()
    return None


# --- titles --------------------------------------------------------------------------------


def clean_title(html_title: str, site_name: str | None = None) -> str:
    """``<title>`` without the site name: "Headline | Site" -> "Headline"."""
    title = normalize_space(html_title)
    if site_name:
        for sep in _TITLE_SEPARATORS:
            for cut in (sep + site_name, site_name + sep):
                if cut in title:
                    return normalize_space(title.replace(cut, ""))
    for sep in _TITLE_SEPARATORS:
        if sep in title:
            parts = [p.strip() for p in title.split(sep)]
            longest = max(parts, key=len)
            # Only cut when the rest looks like a site name (short), not half a headline.
            if len(longest) >= 0.5 * len(title):
                return longest
    return title
