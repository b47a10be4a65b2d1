"""Feed bytes to entries: RSS, Atom and RDF through feedparser, JSON Feed by hand.

- Plain RSS 2.0 and Atom 1.0 are first tried on expat (``fast_parse_feed``, ~12x faster);
  it returns None, and feedparser reads the document, whenever it cannot be sure to give
  what feedparser would.

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

import email.utils
import hashlib
import html
import io
import json
import re
import xml.etree.ElementTree as ET
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
    """One entry as the feed gave it. HTML fields are sanitized by feedparser, or (fast path)
    raw HTML holding only a small set of harmless tags; either way, and for JSON Feed HTML,
    they go only through the block extractor, which keeps text, never markup."""

    guid: str  # the feed's id, else the link, else a hash of title and text
    link: str | None
    title: str
    summary_html: str = ""
    content_html: str = ""
    published: datetime | None = None
    updated: datetime | None = None
    author: str | None = None
    language: str | None = None
    # Who published the item when the feed only relays it: RSS ``<source url="…">Name</source>``
    # (Google News search feeds), Bing News' ``<News:Source>``. The site is the ``url``.
    outlet: str | None = None
    outlet_url: str | None = None
    # FeedBurner's ``<feedburner:origLink>``: the article's own URL behind a ``/~r/`` redirect.
    orig_link: str | None = None


@dataclass(frozen=True, slots=True)
class ParsedFeed:
    kind: str  # rss | atom | rdf | json
    title: str
    link: str | None
    entries: tuple[FeedEntry, ...]
    language: str | None = None
    ttl_seconds: float | None = None  # RSS <ttl> (minutes in the document)
    item_errors: int = 0  # entries that could not be read (the others are here)


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


# Numeric character references naming what XML 1.0 forbids (lone surrogates, C0 controls,
# U+FFFE/U+FFFF, past U+10FFFF): feedparser's loose parser raises on ``&#xD800;`` and loses the
# whole feed. Each is replaced by U+FFFD before parsing, so the entry keeps its other text.
_CHAR_REF = re.compile(rb"&#(?:[xX]([0-9a-fA-F]{1,16})|([0-9]{1,20}));")
_SURROGATES = re.compile("[\ud800-\udfff]")


def _xml_char(code: int) -> bool:
    return (
        code in (0x9, 0xA, 0xD)
        or 0x20 <= code <= 0xD7FF
        or 0xE000 <= code <= 0xFFFD
        or 0x10000 <= code <= 0x10FFFF
    )


def clean_char_refs(body: bytes) -> bytes:
    """``body`` with every character reference to an XML-illegal code point as ``&#xFFFD;``."""
    if b"&#" not in body:
        return body

    def fix(m: re.Match[bytes]) -> bytes:
        code = int(m.group(1), 16) if m.group(1) else int(m.group(2))
        return m.group(0) if _xml_char(code) else b"&#xFFFD;"

    return _CHAR_REF.sub(fix, body)


def clean_text(value: str) -> str:
    """``value`` with lone surrogates (from JSON ``\\ud800`` escapes) replaced by U+FFFD: they
    cannot be encoded, so hashing or storing the text would fail."""
    return value if value.isascii() else _SURROGATES.sub("\ufffd", value)


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
    body = clean_char_refs(body)
    fast = fast_parse_feed(body, headers)
    if fast is not None:
        return fast
    headers.setdefault("content-location", url)
    try:
        result = _feedparser(body, headers)
    except Exception as exc:  # feedparser raised on something in one entry: read them apart
        return _one_by_one(body, headers, url, exc)
    version = result.get("version") or ""
    if not version and not result.entries:
        raise _not_a_feed(body, url, result)
    return _parsed(result, list(result.entries))


def _feedparser(body: bytes, headers: Mapping[str, str]) -> Any:
    return feedparser.parse(
        io.BytesIO(body),
        response_headers=dict(headers),
        resolve_relative_uris=True,
        sanitize_html=True,
    )


def _parsed(result: Any, raw_entries: list[Any], item_errors: int = 0) -> ParsedFeed:
    """The feed of a feedparser result; an entry that cannot be read costs only itself."""
    feed = result.feed
    entries: list[FeedEntry] = []
    for raw in raw_entries:
        try:
            entries.append(_entry(raw, feed))
        except Exception:
            item_errors += 1
    return ParsedFeed(
        kind=_kind(result.get("version") or ""),
        title=_text(feed.get("title")),
        link=feed.get("link") or None,
        entries=tuple(entries),
        language=feed.get("language") or None,
        ttl_seconds=_ttl(feed.get("ttl")),
        item_errors=item_errors,
    )


_ENTRY_BLOCK = re.compile(rb"<(item|entry)\b[^>]*>.*?</\1\s*>", re.DOTALL)


def _one_by_one(body: bytes, headers: Mapping[str, str], url: str, exc: Exception) -> ParsedFeed:
    """Each ``<item>``/``<entry>`` parsed alone inside the document's own envelope, when the
    whole document makes feedparser raise: the readable entries are kept, the others counted."""
    blocks = list(_ENTRY_BLOCK.finditer(body))
    problem = f"{url}: not a readable feed: {type(exc).__name__}: {exc}"
    if not blocks:
        raise BrokenFeedError(problem) from exc
    head, tail = body[: blocks[0].start()], body[blocks[-1].end() :]
    first: Any = None
    raw_entries: list[Any] = []
    errors = 0
    for block in blocks:
        try:
            result = _feedparser(head + block.group(0) + tail, headers)
        except Exception:
            errors += 1
            continue
        if first is None:
            first = result
        if result.entries:
            raw_entries.extend(result.entries[:1])
        else:
            errors += 1
    if first is None or not raw_entries:
        raise BrokenFeedError(problem) from exc
    return _parsed(first, raw_entries, errors)


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
    outlet, outlet_url = _outlet(entry)
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
        outlet=outlet,
        outlet_url=outlet_url,
        orig_link=_str(entry.get("feedburner_origlink")),
    )


def _outlet(entry: Any) -> tuple[str | None, str | None]:
    """The publisher an entry credits: RSS ``<source url>`` (feedparser's ``source``, a dict
    with ``title`` and ``href``), else Bing's ``<News:Source>`` (``news_source``)."""
    source = entry.get("source")
    if isinstance(source, Mapping):
        name = _text(source.get("title")) or None
        href = _str(source.get("href"))
        if name or href:
            return name, href
    return _str(entry.get("news_source")), None


def fallback_guid(title: str, text: str) -> str:
    """A stable id for an entry with neither id nor link."""
    return "sha256:" + hashlib.sha256(f"{title}\n{text}".encode()).hexdigest()[:32]


# --- fast path: well-formed RSS 2.0 and Atom 1.0 on expat ---------------------------------
#
# feedparser costs ~25 ms a feed. Plain RSS 2.0 / Atom 1.0 documents are read here with the
# standard library's expat instead; anything the fast path cannot read exactly as feedparser
# would (an element it does not know, a relative URI, an odd date, markup it does not vouch
# for) makes it return None, and parse_feed falls back to feedparser.

_ATOM_NS = "http://www.w3.org/2005/Atom"
_DC_NS = "http://purl.org/dc/elements/1.1/"
_CONTENT_NS = "http://purl.org/rss/1.0/modules/content/"
_XML_NS = "http://www.w3.org/XML/1998/namespace"
_A = "{" + _ATOM_NS + "}"
_DC_CREATOR = "{" + _DC_NS + "}creator"
_CONTENT_ENCODED = "{" + _CONTENT_NS + "}encoded"
_XML_LANG = "{" + _XML_NS + "}lang"
_XML_DECL = re.compile(rb"""^<\?xml\s[^>]*?\?>""")
_DECL_ENCODING = re.compile(rb"""encoding\s*=\s*["']([A-Za-z0-9._:-]+)["']""")
_ABSOLUTE = re.compile(r"https?://[^\s<>\"]+\Z")
_ID_OK = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:\S*\Z")
_RFC822 = re.compile(
    r"(?:(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), )?\d{1,2} "
    r"(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{4} "
    r"\d{2}:\d{2}:\d{2} (?:GMT|UT|UTC|[+-]\d{4})\Z"
)
_ISO8601 = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,6})?(?:Z|[+-]\d{2}:\d{2})\Z")
# Markup the fast path vouches for: feedparser's sanitizer keeps these tags (and their text),
# and the block extractor reads the same text from the raw or the sanitized form.
_SAFE_TAGS = frozenset(
    [
        "p",
        "a",
        "b",
        "i",
        "em",
        "strong",
        "img",
        "br",
        "hr",
        "ul",
        "ol",
        "li",
        "blockquote",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "span",
        "div",
        "q",
        "cite",
        "code",
        "pre",
        "sub",
        "sup",
        "small",
        "figure",
        "figcaption",
    ]
)
_TAG = re.compile(r"<(/?)([A-Za-z][A-Za-z0-9]*)(?=[\s/>])")
_RSS_ITEM_TAGS = frozenset(
    (
        "title",
        "link",
        "guid",
        "pubDate",
        "description",
        "category",
        "comments",
        _DC_CREATOR,
        _CONTENT_ENCODED,
    )
)
_RSS_CHANNEL_TAGS = frozenset(
    (
        "title",
        "link",
        "description",
        "language",
        "lastBuildDate",
        "pubDate",
        "ttl",
        "generator",
        "copyright",
        "category",
        "docs",
        "item",
        _A + "link",
    )
)
_ATOM_ENTRY_TAGS = frozenset(
    _A + t
    for t in (
        "title",
        "link",
        "id",
        "published",
        "updated",
        "author",
        "category",
        "summary",
        "content",
    )
)
_ATOM_FEED_TAGS = frozenset(
    _A + t for t in ("title", "link", "id", "updated", "subtitle", "generator", "entry")
)


class _Decline(Exception):
    """The fast path cannot be sure; feedparser reads this document."""


def fast_parse_feed(body: bytes, headers: Mapping[str, str]) -> ParsedFeed | None:
    """The feed in ``body`` read with expat when it is plain RSS 2.0 or Atom 1.0 that the fast
    path reads exactly as feedparser would; None otherwise (then use feedparser).

    ``headers`` are lower-cased response headers.
    """
    data = _utf8_document(body, headers)
    if data is None:
        return None
    try:
        root = ET.fromstring(data)
        if (
            root.tag == "rss"
            and root.get("version") == "2.0"
            and not root.attrib.keys() - {"version"}
        ):
            return _fast_rss(root)
        if root.tag == _A + "feed":
            return _fast_atom(root)
    except (ET.ParseError, _Decline, ValueError, OverflowError):
        return None
    return None


def _utf8_document(body: bytes, headers: Mapping[str, str]) -> bytes | None:
    if b"<!DOCTYPE" in body or b"<!doctype" in body or b"xml:base" in body:
        return None
    if headers.get("content-language") or not body.startswith(b"<"):
        return None  # a BOM, leading space: feedparser's encoding sniffing is not repeated here
    media, _, params = headers.get("content-type", "").partition(";")
    media = media.strip().lower()
    if media not in ("", "application/xml", "application/rss+xml", "application/atom+xml"):
        return None  # text/xml without a charset is us-ascii to feedparser (RFC 3023)
    m = re.search(r"charset\s*=\s*[\"']?([A-Za-z0-9._:-]+)", params)
    header_charset = m.group(1).lower() if m else None
    decl = _XML_DECL.match(body)
    dm = _DECL_ENCODING.search(decl.group(0)) if decl else None
    decl_charset = dm.group(1).decode().lower() if dm else None
    if header_charset and decl_charset and header_charset != decl_charset:
        return None
    charset = header_charset or decl_charset or "utf-8"
    if charset in ("iso-8859-1", "latin-1", "latin1", "us-ascii", "ascii") and re.search(
        rb"[\x80-\xff]", body
    ):
        return None  # often windows-1252 in truth; feedparser's guess is not repeated here
    try:
        text = body.decode(charset)
    except (UnicodeDecodeError, LookupError):
        return None
    if charset.replace("_", "-") in ("utf-8", "utf8"):
        return body
    data = text.encode("utf-8")
    if decl:
        data = _XML_ENCODING.sub(rb"\1utf-8\2", data[:512], count=1) + data[512:]
    return data


def _only(parent: ET.Element, allowed: frozenset[str]) -> None:
    for child in parent:
        if child.tag not in allowed or any(k.startswith("{" + _XML_NS) for k in child.attrib):
            raise _Decline(child.tag)


def _one(parent: ET.Element, tag: str) -> ET.Element | None:
    found = parent.findall(tag)
    if len(found) > 1:
        raise _Decline(f"several {tag}")
    return found[0] if found else None


def _plain(el: ET.Element | None) -> str:
    """Text of an element that must hold no child elements."""
    if el is None:
        return ""
    if len(el):
        raise _Decline(el.tag)
    return (el.text or "").strip()


def _title(el: ET.Element | None) -> str:
    text = _plain(el)
    if "<" in text:
        raise _Decline("markup in a title")  # feedparser sanitizes titles that look like HTML
    return _text(text)


def _html(text: str) -> str:
    if "&" in text and "<" not in text:
        raise _Decline("plain text with &")  # feedparser escapes it as text/plain
    for m in _TAG.finditer(text):
        if m.group(2).lower() not in _SAFE_TAGS:
            raise _Decline(m.group(2))
    if text.count("<") != len(_TAG.findall(text)):
        raise _Decline("markup the fast path does not read")
    return text


def _url(text: str) -> str:
    if not _ABSOLUTE.match(text):
        raise _Decline("relative or odd URL")
    return text


def _rfc822(el: ET.Element | None) -> datetime | None:
    text = _plain(el)
    if not text:
        return None
    if not _RFC822.match(text):
        raise _Decline("date")
    when = email.utils.parsedate_to_datetime(text)
    if when.tzinfo is None or not 1900 <= when.year <= 9999:
        raise _Decline("date")
    return when.astimezone(UTC).replace(microsecond=0)


def _iso8601(el: ET.Element | None) -> datetime | None:
    text = _plain(el)
    if not text:
        return None
    if not _ISO8601.match(text):
        raise _Decline("date")
    when = datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)
    if not 1900 <= when.year <= 9999:
        raise _Decline("date")
    return when.replace(microsecond=0)


def _fast_rss(rss: ET.Element) -> ParsedFeed:
    if len(rss) != 1 or rss[0].tag != "channel" or rss[0].attrib:
        raise _Decline("rss layout")
    channel = rss[0]
    _only(channel, _RSS_CHANNEL_TAGS)
    for link in channel.findall(_A + "link"):
        if link.get("rel") != "self":
            raise _Decline("atom:link")
    language = _plain(_one(channel, "language")) or None
    return ParsedFeed(
        kind="rss",
        title=_title(_one(channel, "title")),
        link=_url(_plain(_one(channel, "link"))),
        entries=tuple(_rss_item(item, language) for item in channel.iterfind("item")),
        language=language,
        ttl_seconds=_ttl(_plain(_one(channel, "ttl")) or None),
    )


def _rss_item(item: ET.Element, language: str | None) -> FeedEntry:
    if item.attrib:
        raise _Decline("item attributes")
    _only(item, _RSS_ITEM_TAGS)
    tags = [child.tag for child in item]
    content_el = _one(item, _CONTENT_ENCODED)
    description_el = _one(item, "description")
    if (
        content_el is not None
        and description_el is not None
        and tags.index(description_el.tag) > tags.index(content_el.tag)
    ):
        raise _Decline("description after content:encoded")
    link_text = _plain(_one(item, "link"))
    if not link_text:
        raise _Decline("no link")  # feedparser takes a permalink guid for the link
    link = _url(link_text)
    guid_el = _one(item, "guid")
    guid = _plain(guid_el)
    if guid_el is not None:
        if guid_el.attrib.keys() - {"isPermaLink"}:
            raise _Decline("guid attributes")
        if not _ID_OK.match(guid):
            raise _Decline("guid")
        if guid_el.get("isPermaLink", "true") != "false":
            _url(guid)
    author = _plain(_one(item, _DC_CREATOR)) or None
    if author and re.search(r"[@()<&]", author):
        raise _Decline("author")  # feedparser splits out e-mail addresses
    for el in item:
        if el.attrib and el.tag not in ("guid", "category"):
            raise _Decline("attributes")
    summary = _html(_plain(description_el))
    content = _html(_plain(content_el))
    if summary == content:
        summary = ""
    title = _title(_one(item, "title"))
    published = _rfc822(_one(item, "pubDate"))
    return FeedEntry(
        guid=guid or link,
        link=link,
        title=title,
        summary_html=summary,
        content_html=content,
        published=published,
        updated=None,
        author=author,
        language=language,
    )


def _atom_text(el: ET.Element | None, *, html_ok: bool) -> str:
    if el is None:
        return ""
    kind = el.get("type", "text")
    if el.attrib.keys() - {"type"} or kind not in (("text", "html") if html_ok else ("text",)):
        raise _Decline("atom text construct")
    text = _plain(el)
    if kind == "text" and ("<" in text or "&" in text):
        raise _Decline("text construct with markup characters")
    return _html(text)


def _atom_link(parent: ET.Element) -> str:
    links = parent.findall(_A + "link")
    alternate: list[str] = []
    for link in links:
        rel = link.get("rel", "alternate")
        if link.attrib.keys() - {"rel", "href", "type"} or len(link) or (link.text or "").strip():
            raise _Decline("atom link")
        if rel == "self":
            continue
        if rel != "alternate" or link.get("type", "text/html") not in (
            "text/html",
            "application/xhtml+xml",
        ):
            raise _Decline("atom link rel")
        alternate.append(_url(link.get("href", "").strip()))
    if len(alternate) != 1:
        # Without one, feedparser may take the id for the link.
        raise _Decline("not exactly one alternate link")
    return alternate[0]


def _fast_atom(feed: ET.Element) -> ParsedFeed:
    if feed.attrib.keys() - {_XML_LANG}:
        raise _Decline("feed attributes")
    _only(feed, _ATOM_FEED_TAGS)
    language = feed.get(_XML_LANG) or None
    title_el = _one(feed, _A + "title")
    return ParsedFeed(
        kind="atom",
        title=_text(_atom_text(title_el, html_ok=False)),
        link=_atom_link(feed),
        entries=tuple(_atom_entry(e, language) for e in feed.iterfind(_A + "entry")),
        language=language,
    )


def _atom_entry(entry: ET.Element, language: str | None) -> FeedEntry:
    if entry.attrib:
        raise _Decline("entry attributes")
    _only(entry, _ATOM_ENTRY_TAGS)
    tags = [child.tag for child in entry]
    if (
        _A + "summary" in tags
        and _A + "content" in tags
        and tags.index(_A + "summary") > tags.index(_A + "content")
    ):
        raise _Decline("summary after content")
    for el in entry:
        if el.tag in (_A + "id", _A + "published", _A + "updated", _A + "title") and el.attrib:
            raise _Decline("attributes")
    link = _atom_link(entry)
    guid = _plain(_one(entry, _A + "id"))
    if guid and not _ID_OK.match(guid):
        raise _Decline("id")
    if guid.startswith(("http:", "https:")):
        _url(guid)
    author_el = _one(entry, _A + "author")
    author = None
    if author_el is not None:
        if author_el.attrib or [c.tag for c in author_el] != [_A + "name"]:
            raise _Decline("author")
        author = _plain(author_el[0]) or None
        if author and re.search(r"[@()<&]", author):
            raise _Decline("author")
    summary = _atom_text(_one(entry, _A + "summary"), html_ok=True)
    content_el = _one(entry, _A + "content")
    content = _atom_text(content_el, html_ok=True)
    if summary == content:
        summary = ""
    title = _text(_atom_text(_one(entry, _A + "title"), html_ok=False))
    updated = _iso8601(_one(entry, _A + "updated"))
    published = _iso8601(_one(entry, _A + "published")) or updated
    if not guid:
        guid = link or fallback_guid(title, summary or content)
    return FeedEntry(
        guid=guid,
        link=link,
        title=title,
        summary_html=summary,
        content_html=content,
        published=published,
        updated=updated,
        author=author,
        language=language,
    )


# --- JSON Feed ----------------------------------------------------------------------------


def parse_json_feed(body: bytes, url: str) -> ParsedFeed:
    """A JSON Feed (https://jsonfeed.org, versions 1 and 1.1)."""
    items_apart: list[bytes] | None = None
    try:
        data = json.loads(body)
    except RecursionError:
        # Nested deeper than Python's JSON reader goes: read the envelope and each item apart,
        # so only the items nested that deep are lost.
        data, items_apart = _json_apart(body, url)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BrokenFeedError(f"{url}: invalid JSON: {exc}") from exc
    if not isinstance(data, dict) or not str(data.get("version", "")).startswith(JSON_FEED_PREFIX):
        raise NotAFeedError(f"{url}: JSON, but not a JSON Feed (no jsonfeed.org version)")
    items = data.get("items")
    if not isinstance(items, list):
        raise BrokenFeedError(f"{url}: JSON Feed without an items list")
    language = _str(data.get("language"))
    errors = 0
    entries: list[FeedEntry] = []
    for item in items if items_apart is None else items_apart:
        try:
            value = json.loads(item) if isinstance(item, bytes) else item
            entry = _json_entry(value, url, language)
        except (ValueError, RecursionError, UnicodeDecodeError, TypeError, AttributeError):
            errors += 1
            continue
        if entry is not None:
            entries.append(entry)
    return ParsedFeed(
        kind="json",
        title=_str(data.get("title")) or "",
        link=_str(data.get("home_page_url")),
        entries=tuple(entries),
        language=language,
        item_errors=errors,
    )


_JSON_TOKEN = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{}]')


def _json_apart(body: bytes, url: str) -> tuple[Any, list[bytes]]:
    """The top-level object with ``items`` emptied, and each item's JSON text, found by a
    scan of strings and brackets (no recursion); raises BrokenFeedError when the envelope
    itself is unreadable."""
    depth = 0
    items_at: int | None = None  # offset of the items array's "["
    items_end: int | None = None
    item_start: int | None = None
    spans: list[tuple[int, int]] = []
    previous: bytes = b""
    for m in _JSON_TOKEN.finditer(body):
        token = m.group(0)
        if token in (b"[", b"{"):
            if depth == 1 and token == b"[" and previous == b'"items"' and items_at is None:
                items_at = m.start()
            elif items_at is not None and items_end is None and depth == 2:
                item_start = m.start()
            depth += 1
        elif token in (b"]", b"}"):
            depth -= 1
            if items_at is not None and items_end is None:
                if depth == 2 and item_start is not None:
                    spans.append((item_start, m.end()))
                    item_start = None
                elif depth == 1:
                    items_end = m.end()
        previous = token if depth == 1 else b""
    if items_at is None or items_end is None:
        raise BrokenFeedError(f"{url}: invalid JSON: nested too deeply to read")
    try:
        envelope = json.loads(body[:items_at] + b"[]" + body[items_end:])
    except (ValueError, RecursionError, UnicodeDecodeError) as exc:
        raise BrokenFeedError(f"{url}: invalid JSON: {exc}") from exc
    return envelope, [body[a:b] for a, b in spans]


def _str(value: Any) -> str | None:
    return clean_text(value.strip()) or None if isinstance(value, str) else None


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
        paragraphs = clean_text(str(item["content_text"])).split("\n\n")
        content = "".join(f"<p>{html.escape(p.strip())}</p>" for p in paragraphs if p.strip())
    summary = _str(item.get("summary")) or ""
    summary_html = f"<p>{html.escape(summary)}</p>" if summary else ""
    title = _str(item.get("title")) or ""
    raw_id = item.get("id")
    guid = clean_text(str(raw_id)).strip() if raw_id not in (None, "") else (link or "")
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


_SKIP_HOURS = re.compile(r"<skipHours\b[^>]*>(.*?)</skipHours>", re.DOTALL | re.IGNORECASE)
_SKIP_DAYS = re.compile(r"<skipDays\b[^>]*>(.*?)</skipDays>", re.DOTALL | re.IGNORECASE)
_HOUR = re.compile(r"<hour>\s*(\d{1,2})\s*</hour>", re.IGNORECASE)
_DAY = re.compile(r"<day>\s*([A-Za-z]+)\s*</day>", re.IGNORECASE)
_WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


def scan_skip(text: str) -> tuple[frozenset[int], frozenset[int]]:
    """An RSS channel's ``<skipHours>`` (hours 0-23, GMT) and ``<skipDays>`` (weekdays, 0 =
    Monday): when the publisher asks aggregators not to fetch. Unknown values are ignored."""
    hours: set[int] = set()
    days: set[int] = set()
    if "<skip" not in text:  # XML names are case-sensitive: RSS writes <skipHours>
        return frozenset(), frozenset()
    m = _SKIP_HOURS.search(text)
    if m:
        hours = {int(h) for h in _HOUR.findall(m.group(1)[:4000]) if 0 <= int(h) <= 23}
        # RSS 2.0 says 0-23; some feeds write 24 for midnight.
        hours |= {0 for h in _HOUR.findall(m.group(1)[:4000]) if int(h) == 24}
    m = _SKIP_DAYS.search(text)
    if m:
        days = {
            _WEEKDAYS.index(d.lower())
            for d in _DAY.findall(m.group(1)[:4000])
            if d.lower() in _WEEKDAYS
        }
    return frozenset(hours), frozenset(days)


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
