"""Feed bytes to entries: RSS, Atom and RDF through feedparser, JSON Feed by hand.

- feedparser always gets bytes through ``io.BytesIO`` with the response headers: a bare string
  is taken for a file name or a URL, and the headers carry the charset and the base URL.
- Documents that declare entities (``<!ENTITY`` in the DOCTYPE) are refused before parsing:
  feedparser's fallback parser expands them without limit (a 100 KB feed took 700 MB).
- ``scan_entry_ids`` is the cheap pre-pass: the entry ids of an RSS/Atom document by regular
  expression, so a fetch whose entries are all stored never pays for feedparser.

Raises ``FeedParseError`` whose ``failure_class`` is ``not-a-feed`` (an HTML challenge page, an
empty body) or ``parse-error`` (a broken or refused document).
"""

from __future__ import annotations

import hashlib
import html
import io
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import feedparser

from aggregator.errors import FeedParseError
from aggregator.model import FailureClass

JSON_FEED_PREFIX = "https://jsonfeed.org/version/"


@dataclass(frozen=True, slots=True)
class FeedEntry:
    """One entry as the feed gave it; HTML fields are sanitized by feedparser (JSON Feed HTML
    goes only through the block extractor, which keeps text, never markup)."""

    guid: str  # the feed's id, else the link, else a hash of title and text
    link: str | None
    title: str
    summary_html: str = ""
    content_html: str = ""
    published: datetime | None = None
    updated: datetime | None = None
    author: str | None = None
    language: str | None = None


@dataclass(frozen=True, slots=True)
class ParsedFeed:
    kind: str  # rss | atom | rdf | json
    title: str
    link: str | None
    entries: tuple[FeedEntry, ...]
    language: str | None = None
    ttl_seconds: float | None = None  # RSS <ttl> (minutes in the document)


class NotAFeedError(FeedParseError):
    """The document is not a feed at all (an HTML page, an empty body)."""

    failure_class = FailureClass.NOT_A_FEED


class BrokenFeedError(FeedParseError):
    """The document looks like a feed but cannot be read, or is refused (entities)."""

    failure_class = FailureClass.PARSE_ERROR


def failure_class_of(exc: FeedParseError) -> FailureClass:
    return getattr(exc, "failure_class", FailureClass.PARSE_ERROR)


# --- safety -------------------------------------------------------------------------------

_DOCTYPE_SUBSET = re.compile(rb"<!DOCTYPE[^>\[]*\[", re.IGNORECASE)
_ENTITY = re.compile(rb"<!ENTITY", re.IGNORECASE)
_ELEMENT_START = re.compile(rb"<[A-Za-z]")
_PROLOG_NOISE = re.compile(rb"<\?.*?\?>|<!--.*?-->", re.DOTALL)


def declares_entities(body: bytes) -> bool:
    """True when the document's DOCTYPE has an internal subset declaring entities."""
    m = _DOCTYPE_SUBSET.search(body)
    if m is None:
        return False
    # A DOCTYPE after the first element is text inside the document (e.g. CDATA), not a DTD.
    if _ELEMENT_START.search(_PROLOG_NOISE.sub(b"", body[: m.start()])):
        return False
    end = body.find(b"]>", m.end())
    subset = body[m.end() : end if end >= 0 else len(body)]
    return _ENTITY.search(subset) is not None


# --- parsing ------------------------------------------------------------------------------


def parse_feed(
    body: bytes, headers: Mapping[str, str], url: str, *, encoding: str | None = None
) -> ParsedFeed:
    """Entries of the feed in ``body``.

    ``encoding`` is the charset the fetch layer settled on (fetch.charset); when given, the
    document is handed to feedparser re-encoded as UTF-8 with matching labels, so a mislabelled
    windows-1251 feed cannot come out as mojibake.
    """
    headers = {k.lower(): v for k, v in headers.items()}
    if not body.strip():
        raise NotAFeedError(f"{url}: empty document")
    if encoding and encoding.lower().replace("_", "-") not in ("utf-8", "utf8"):
        body, headers = _as_utf8(body, headers, encoding)
    if _looks_like_json(body, headers.get("content-type", "")):
        return parse_json_feed(body, url)
    if declares_entities(body):
        raise BrokenFeedError(f"{url}: the document declares XML entities; refused")
    headers.setdefault("content-location", url)
    result = feedparser.parse(
        io.BytesIO(body),
        response_headers=headers,
        resolve_relative_uris=True,
        sanitize_html=True,
    )
    version = result.get("version") or ""
    if not version and not result.entries:
        raise _not_a_feed(body, url, result)
    feed = result.feed
    return ParsedFeed(
        kind=_kind(version),
        title=_text(feed.get("title")),
        link=feed.get("link") or None,
        entries=tuple(_entry(e, feed) for e in result.entries),
        language=feed.get("language") or None,
        ttl_seconds=_ttl(feed.get("ttl")),
    )


def _as_utf8(body: bytes, headers: dict[str, str], encoding: str) -> tuple[bytes, dict[str, str]]:
    try:
        text = body.decode(encoding)
    except (UnicodeDecodeError, LookupError):
        return body, headers
    text = text.removeprefix("\ufeff")
    data = text.encode("utf-8")
    data = _XML_ENCODING.sub(rb"\1utf-8\2", data[:512], count=1) + data[512:]
    content_type = headers.get("content-type", "application/xml").split(";")[0]
    return data, {**headers, "content-type": f"{content_type}; charset=utf-8"}


_XML_ENCODING = re.compile(rb"""^(\s*<\?xml[^>]*?encoding\s*=\s*["'])[A-Za-z0-9._:-]+(["'])""")


def _looks_like_json(body: bytes, content_type: str) -> bool:
    head = body.lstrip()[:1]
    return head == b"{" or ("json" in content_type.lower() and head in (b"{", b"["))


def _not_a_feed(body: bytes, url: str, result: Any) -> FeedParseError:
    head = body[:2048].lstrip().lower()
    if head.startswith((b"<!doctype html", b"<html")) or b"<html" in head:
        title = re.search(rb"<title[^>]*>(.*?)</title>", body[:8192], re.IGNORECASE | re.DOTALL)
        shown = html.unescape(title.group(1).decode("utf-8", "replace").strip()) if title else ""
        suffix = f" ({shown[:80]!r})" if shown else ""
        return NotAFeedError(f"{url}: an HTML page, not a feed{suffix}")
    if b"<" not in head[:1024]:
        return NotAFeedError(f"{url}: plain text, not a feed")
    if result.get("bozo"):
        problem = result.get("bozo_exception")
        return BrokenFeedError(f"{url}: not a readable feed: {problem}")
    return NotAFeedError(f"{url}: no RSS, Atom or JSON Feed found")


def _kind(version: str) -> str:
    if version.startswith("atom"):
        return "atom"
    if version in ("rss090", "rss10"):
        return "rdf"
    return "rss"


def _ttl(value: Any) -> float | None:
    try:
        minutes = float(str(value).strip())
    except (TypeError, ValueError):
        return None
    return minutes * 60 if minutes > 0 else None


def _text(value: Any) -> str:
    return html.unescape(str(value)).strip() if value else ""


def _when(entry: Any, key: str) -> datetime | None:
    # dict.get: FeedParserDict's own lookup maps a missing updated_parsed to published_parsed
    # with a DeprecationWarning; the plain dict lookup gives exactly what the feed said.
    parsed = dict.get(entry, f"{key}_parsed")
    if not parsed:
        return None
    try:
        year, month, day, hour, minute, second = parsed[:6]
        return datetime(year, month, day, hour, minute, second, tzinfo=UTC)
    except (TypeError, ValueError):
        return None


def _entry(entry: Any, feed: Any) -> FeedEntry:
    content = ""
    for part in entry.get("content") or ():
        if part.get("value"):
            content = part["value"]
            break
    summary = entry.get("summary") or ""
    if summary and summary == content:
        summary = ""
    link = entry.get("link") or None
    title = _text(entry.get("title"))
    guid = (entry.get("id") or "").strip() or (link or "").strip()
    if not guid:
        guid = fallback_guid(title, summary or content)
    published = _when(entry, "published") or _when(entry, "updated")
    return FeedEntry(
        guid=guid,
        link=link,
        title=title,
        summary_html=summary,
        content_html=content,
        published=published,
        updated=_when(entry, "updated"),
        author=entry.get("author") or None,
        language=entry.get("language") or feed.get("language") or None,
    )


def fallback_guid(title: str, text: str) -> str:
    """A stable id for an entry with neither id nor link."""
    return "sha256:" + hashlib.sha256(f"{title}\n{text}".encode()).hexdigest()[:32]


# --- JSON Feed ----------------------------------------------------------------------------


def parse_json_feed(body: bytes, url: str) -> ParsedFeed:
    """A JSON Feed (https://jsonfeed.org, versions 1 and 1.1)."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BrokenFeedError(f"{url}: invalid JSON: {exc}") from exc
    if not isinstance(data, dict) or not str(data.get("version", "")).startswith(JSON_FEED_PREFIX):
        raise NotAFeedError(f"{url}: JSON, but not a JSON Feed (no jsonfeed.org version)")
    items = data.get("items")
    if not isinstance(items, list):
        raise BrokenFeedError(f"{url}: JSON Feed without an items list")
    language = _str(data.get("language"))
    entries = tuple(
        entry for item in items if (entry := _json_entry(item, url, language)) is not None
    )
    return ParsedFeed(
        kind="json",
        title=_str(data.get("title")) or "",
        link=_str(data.get("home_page_url")),
        entries=entries,
        language=language,
    )


def _str(value: Any) -> str | None:
    return value.strip() or None if isinstance(value, str) else None


def _iso(value: Any) -> datetime | None:
    text = _str(value)
    if not text:
        return None
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        return None
    return when.astimezone(UTC) if when.tzinfo else when.replace(tzinfo=UTC)


def _json_author(item: Mapping[str, Any]) -> str | None:
    authors = item.get("authors")
    if isinstance(authors, list):
        names = [a.get("name") for a in authors if isinstance(a, dict) and a.get("name")]
        if names:
            return ", ".join(str(n) for n in names)
    author = item.get("author")
    return _str(author.get("name")) if isinstance(author, dict) else None


def _json_entry(item: Any, base_url: str, language: str | None) -> FeedEntry | None:
    if not isinstance(item, dict):
        return None
    from urllib.parse import urljoin

    link = _str(item.get("url")) or _str(item.get("external_url"))
    if link:
        link = urljoin(base_url, link)
    content = _str(item.get("content_html")) or ""
    if not content and _str(item.get("content_text")):
        paragraphs = str(item["content_text"]).split("\n\n")
        content = "".join(f"<p>{html.escape(p.strip())}</p>" for p in paragraphs if p.strip())
    summary = _str(item.get("summary")) or ""
    summary_html = f"<p>{html.escape(summary)}</p>" if summary else ""
    title = _str(item.get("title")) or ""
    guid = str(item.get("id")).strip() if item.get("id") not in (None, "") else (link or "")
    if not guid:
        guid = fallback_guid(title, content or summary)
    published = _iso(item.get("date_published")) or _iso(item.get("date_modified"))
    return FeedEntry(
        guid=guid,
        link=link,
        title=title,
        summary_html=summary_html,
        content_html=content,
        published=published,
        updated=_iso(item.get("date_modified")),
        author=_json_author(item),
        language=_str(item.get("language")) or language,
    )


# --- cheap pre-pass -----------------------------------------------------------------------

_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")
_CDATA = re.compile(r"<!\[CDATA\[(.*?)\]\]>", re.DOTALL)
_COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)
_RSS_ITEM = re.compile(r"<item\b[^>]*>(.*?)</item\s*>", re.DOTALL)
_ATOM_ENTRY = re.compile(r"<entry\b[^>]*>(.*?)</entry\s*>", re.DOTALL)
_RSS_ITEM_OPEN = re.compile(r"<item\b")
_ATOM_ENTRY_OPEN = re.compile(r"<entry\b")
_GUID = re.compile(r"<guid\b([^>]*)>(.*?)</guid\s*>", re.DOTALL)
_NOT_PERMALINK = re.compile(r"""isPermaLink\s*=\s*["']false["']""")
_LINK = re.compile(r"<link\b[^>]*>(.*?)</link\s*>", re.DOTALL)
_ATOM_ID = re.compile(r"<id\b[^>]*>(.*?)</id\s*>", re.DOTALL)


def _unwrap_cdata(m: re.Match[str]) -> str:
    inner = m.group(1)
    # A CDATA section holding markup is entry content: drop it so "<item" inside an article
    # cannot be mistaken for an entry. One without markup (a guid, a link) is kept as text.
    return "" if "<" in inner else html.escape(inner, quote=False)


_TTL = re.compile(r"<ttl>\s*(\d{1,6})\s*</ttl>")


def scan_ttl(text: str) -> float | None:
    """The RSS ``<ttl>`` in seconds, read cheaply (for feeds the pre-pass does not parse)."""
    m = _TTL.search(text, 0, 20000)
    return _ttl(m.group(1)) if m else None


def scan_entry_ids(text: str) -> list[str] | None:
    """The ids ``parse_feed`` would give this RSS/Atom document's entries, cheaply; None when
    the document is not simple enough to be sure (then parse it fully).

    Only RSS with ``<guid>`` or ``<link>`` per item and Atom with ``<id>`` per entry qualify;
    a mismatch can only make the caller parse when it need not, never skip a new entry.
    """
    if "<rdf:RDF" in text[:4096] or "<!ENTITY" in text:
        return None
    cleaned = _COMMENT.sub("", _CDATA.sub(_unwrap_cdata, text))
    items = _RSS_ITEM.findall(cleaned)
    if items:
        # Every opening tag must have closed: a truncated document hides entries from the regex.
        if _ATOM_ENTRY.search(cleaned) or len(_RSS_ITEM_OPEN.findall(cleaned)) != len(items):
            return None
        return _ids(items, (_GUID, _LINK))
    entries = _ATOM_ENTRY.findall(cleaned)
    if entries:
        if len(_ATOM_ENTRY_OPEN.findall(cleaned)) != len(entries):
            return None
        if any("<source" in e for e in entries):
            return None  # a <source> block carries its own <id>
        return _ids(entries, (_ATOM_ID,))
    return None


def _ids(blocks: list[str], patterns: tuple[re.Pattern[str], ...]) -> list[str] | None:
    ids: list[str] = []
    for block in blocks:
        for pattern in patterns:
            found = pattern.findall(block)
            if len(found) > 1:
                return None
            if not found:
                continue
            attrs, raw = found[0] if isinstance(found[0], tuple) else ("", found[0])
            value = html.unescape(raw).strip()
            if not value:
                continue
            # feedparser resolves ids against the base URL, except isPermaLink="false" guids;
            # a relative one cannot be predicted cheaply.
            if not _SCHEME.match(value) and not _NOT_PERMALINK.search(attrs):
                return None
            ids.append(value)
            break
        else:
            return None
    return ids
