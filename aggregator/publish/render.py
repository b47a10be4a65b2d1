"""Feed and page rendering: developments in, bytes out. Pure.

One entry per development: a ``tag:`` id that never changes, the development's title and lead,
the representative record's text as safe HTML, a link to the first report, every source that
covered it, the matched topics as categories, ``published`` = first seen and ``updated`` = last
change. Every string goes through ``sanitize`` on the way out (XML-illegal characters dropped,
URLs absolute http(s) or left out), so the output is well-formed whatever the store holds.

Output is deterministic for a given input: times come from the data (``now`` only stands in
when a feed is empty), so replicas rendering the same data produce the same bytes and ETags.
"""

from __future__ import annotations

import functools
import html
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from email.utils import format_datetime
from urllib.parse import quote, urlsplit

from aggregator.model import Block, Development, Source, SourceKind, SourceRef, Topic
from aggregator.publish.sanitize import (
    blocks_html,
    cap_summary,
    cap_title,
    escape_attr,
    escape_text,
    inline_html,
    one_line,
    plain_inline,
    public_url,
    safe_url,
    xml_text,
)

GENERATOR = "aggregator"
GENERATOR_URI = "https://github.com/aggregator/aggregator"
ALL_FEED = "all"
FORMATS: Mapping[str, str] = {
    "atom": "application/atom+xml; charset=utf-8",
    "rss": "application/rss+xml; charset=utf-8",
    "json": "application/feed+json; charset=utf-8",
}
INDEX_FILE = "index.html"
OPML_FILE = "sources.opml"
CONTENT_TYPES: Mapping[str, str] = {
    **{f".{fmt}": ctype for fmt, ctype in FORMATS.items()},
    ".html": "text/html; charset=utf-8",
    ".opml": "text/x-opml; charset=utf-8",
}
_XML_DECL = '<?xml version="1.0" encoding="utf-8"?>\n'
_ID_YEAR = "2026"  # the date part of a derived tag: authority; fixed so ids never change
_TAG = re.compile(r"</?[A-Za-z][A-Za-z0-9-]*(?:\s[^<>]*)?/?>")
# RFC 4151: a domain name or e-mail address, a comma, then YYYY, YYYY-MM or YYYY-MM-DD.
TAG_AUTHORITY = re.compile(
    r"^(?:[A-Za-z0-9._%+-]+@)?[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*,\d{4}(?:-\d{2}(?:-\d{2})?)?$"
)


@dataclass(frozen=True, slots=True)
class Site:
    """What every rendered file shares: where it is published and what it covers."""

    title: str
    base_url: str  # absolute http(s) URL of the service's root; the feeds live under /feeds/
    topics: tuple[Topic, ...] = ()
    tag_authority: str | None = None  # "example.org,2026"; None: base_url's host + _ID_YEAR
    websub_hub: str | None = None
    description: str = (
        "New distinct developments on the watched topics, each once, with every source."
    )
    timezone: tzinfo = UTC  # the dates on the HTML pages; feeds are in UTC

    @property
    def root(self) -> str:
        return self.base_url.rstrip("/")

    @property
    def authority(self) -> str:
        if self.tag_authority:
            return self.tag_authority
        host = urlsplit(self.root).hostname or "localhost"
        return f"{host},{_ID_YEAR}"

    def topic_title(self, topic_id: str) -> str:
        for topic in self.topics:
            if topic.id == topic_id:
                return topic.title or topic.id
        return topic_id


@dataclass(frozen=True, slots=True)
class Entry:
    """One development with the blocks of its representative record (empty when unknown)."""

    development: Development
    body: tuple[Block, ...] = ()


@dataclass(frozen=True, slots=True)
class RenderedFile:
    path: str  # relative URL path and file name: "feeds/all.atom", "index.html", ...
    body: bytes
    content_type: str
    updated: datetime  # Last-Modified: the newest change the file shows
    location: str | None = None  # a page that moved (a merged development): its new URL


@dataclass(frozen=True, slots=True)
class FeedSet:
    """The developments of every feed: the overall feed and one per topic, newest first."""

    all: tuple[Entry, ...]
    by_topic: Mapping[str, tuple[Entry, ...]] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# names and ids


def url_part(value: str) -> str:
    """``value`` as one percent-encoded URL path segment (XML-illegal characters dropped)."""
    return quote(xml_text(value), safe="")


def feed_path(key: str, fmt: str) -> str:
    """``feeds/<key>.<fmt>``; ``key`` is ``all`` or a topic id (percent-encoded)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown feed format {fmt!r}")
    return f"feeds/{url_part(key)}.{fmt}"


def feed_url(site: Site, key: str, fmt: str) -> str:
    return f"{site.root}/{feed_path(key, fmt)}"


def entry_id(site: Site, development_id: str) -> str:
    """The entry's permanent id: ``tag:<authority>:development/<id>``."""
    return f"tag:{site.authority}:development/{url_part(development_id)}"


def feed_id(site: Site, key: str) -> str:
    return f"tag:{site.authority}:feed/{url_part(key)}"


def home_url(site: Site, key: str) -> str:
    """The feed's page for people: the index, or the topic's page for a topic feed."""
    if key == ALL_FEED:
        return site.root + "/"
    return topic_url(site, key)


def development_path(dev_id: str) -> str:
    """Where a development's page is: ``developments/<id>.html`` (a stable URL)."""
    return f"developments/{url_part(dev_id)}.html"


def development_url(site: Site, dev_id: str) -> str:
    return f"{site.root}/{development_path(dev_id)}"


def topic_path(topic_id: str, page: int = 1) -> str:
    """``topics/<id>/index.html`` (served as ``/topics/<id>/``), then ``page-<n>.html``."""
    if page <= 1:
        return f"topics/{url_part(topic_id)}/index.html"
    return f"topics/{url_part(topic_id)}/page-{page}.html"


def topic_url(site: Site, topic_id: str, page: int = 1) -> str:
    if page <= 1:
        return f"{site.root}/topics/{url_part(topic_id)}/"
    return f"{site.root}/{topic_path(topic_id, page)}"


def feed_title(site: Site, key: str) -> str:
    if key == ALL_FEED:
        return one_line(site.title)
    return one_line(f"{site.title}: {site.topic_title(key)}")


def rfc3339(when: datetime) -> str:
    return _utc(when).strftime("%Y-%m-%dT%H:%M:%SZ")


def rfc3339_precise(when: datetime) -> str:
    """RFC 3339 with the microseconds when there are any (entry times, so that entries
    ingested in the same second still carry distinct, accurate times)."""
    utc = _utc(when)
    if utc.microsecond:
        return utc.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return utc.strftime("%Y-%m-%dT%H:%M:%SZ")


def distinct_updated(entries: Sequence[Entry]) -> list[datetime]:
    """Each entry's last change; exact ties are moved apart by a microsecond, in feed order.

    Validators warn about two entries with the same ``atom:updated``, and a batch import can
    give several developments the same instant; a microsecond changes nothing a reader shows.
    """
    used: set[datetime] = set()
    out: list[datetime] = []
    for entry in entries:
        when = entry_updated(entry.development)
        while when in used:
            when += timedelta(microseconds=1)
        used.add(when)
        out.append(when)
    return out


def rfc822(when: datetime) -> str:
    return format_datetime(_utc(when).replace(microsecond=0), usegmt=True)


def _utc(when: datetime) -> datetime:
    if when.tzinfo is None:
        return when.replace(tzinfo=UTC)
    return when.astimezone(UTC)


def entry_updated(dev: Development) -> datetime:
    """Last change, never before first seen (Atom requires updated >= published)."""
    return max(_utc(dev.updated), _utc(dev.first_seen))


def feed_updated(entries: Sequence[Entry], now: datetime) -> datetime:
    """The newest change among the entries, else ``now`` (an empty feed)."""
    if not entries:
        return _utc(now).replace(microsecond=0)
    return max(distinct_updated(entries))


# ---------------------------------------------------------------------------------------------
# entry parts shared by the formats


def plain(text: str) -> str:
    """A plain-text field: one line, no bold markers, no HTML tags (validators flag markup in
    titles, and a reader would show it literally)."""
    return one_line(_TAG.sub(" ", html.unescape(plain_inline(text))))


def entry_title(dev: Development) -> str:
    """The development's title (capped at ``MAX_TITLE_CHARS``), else a report's."""
    title = plain_title(dev.title)
    if title:
        return title
    for ref in dev.sources:
        fallback = plain_title(ref.title)
        if fallback:
            return fallback
    return f"Development {dev.id}"


def entry_summary(dev: Development) -> str:
    """The development's summary, capped at ``MAX_SUMMARY_CHARS``."""
    return cap_summary(plain(dev.summary))


def plain_title(text: str) -> str:
    """A title as plain text, capped at ``MAX_TITLE_CHARS``."""
    return cap_title(plain(text))


def report_url(ref: SourceRef) -> str | None:
    """The link of a report: its URL when it is absolute http(s) and not a loopback or private
    address (``sanitize.public_url``), else its canonical URL on the same terms, else None. A
    relative URL cannot be resolved (its page's address is unknown): left out."""
    return public_url(ref.url) or public_url(ref.canonical_url)


def source_links(dev: Development) -> list[tuple[SourceRef, str]]:
    """Each report with a publishable URL, earliest first, one per URL."""
    seen: set[str] = set()
    out: list[tuple[SourceRef, str]] = []
    for ref in _reports_in_order(dev.sources):
        url = report_url(ref)
        if url and url not in seen:
            seen.add(url)
            out.append((ref, url))
    return out


def _reports_in_order(refs: Sequence[SourceRef]) -> list[SourceRef]:
    """The reports a subscriber is shown, earliest first: a report with neither source nor URL
    (an imported seed text) tells nothing about who reported it and is left out."""
    # The store lists reports first-report-first; reports with a date are ordered by it, and
    # the sort is stable so undated ones keep the store's order.
    far = datetime.max.replace(tzinfo=UTC)
    shown = [r for r in refs if r.source_id or r.url or one_line(r.source_title)]
    return sorted(shown, key=lambda r: _utc(r.published) if r.published else far)


def reported_by(dev: Development) -> str:
    """The heading over the list of reports, counting exactly the lines listed: "Reported by 3
    sources", or "4 reports from 3 sources" when a source reported it more than once."""
    shown = _reports_in_order(dev.sources)
    names = len({_source_name(ref).casefold() for ref in shown})
    noun = "source" if names == 1 else "sources"
    if len(shown) == names:
        return f"Reported by {names} {noun}"
    return f"{len(shown)} reports from {names} {noun}"


def entry_link(site: Site, dev: Development) -> str:
    """The development's own page: every report, in time order, with why it joined (the
    reports themselves are the entry's ``related`` links)."""
    return development_url(site, dev.id)


def _source_name(ref: SourceRef) -> str:
    """The outlet credited (a news search feed's), else the source's title, else its id, else
    the link's host (capped like a title)."""
    host = urlsplit(report_url(ref) or "").hostname or ""
    name = one_line(ref.source_title) or one_line(ref.source_id or "") or host or "unknown"
    return cap_title(name)


def entry_html(site: Site, entry: Entry) -> str:
    """The entry's content: who reported it (with links), then the representative text."""
    return _entry_html_cached(site, entry)


# The same entry is rendered into three formats and into the overall and topic feeds, and
# mostly unchanged from one render to the next: its HTML is memoized (Site and Entry are
# frozen, hashable values, so a changed development is a different key). Bounded, so memory
# stays flat whatever the number of feeds.
@functools.lru_cache(maxsize=512)
def _entry_html_cached(site: Site, entry: Entry) -> str:
    dev = entry.development
    parts: list[str] = []
    items = source_items(dev)
    if items:
        parts.append(f"<p><strong>{escape_text(reported_by(dev))}:</strong></p>")
        parts.append("<ul>" + items + "</ul>")
    terms = matched_terms(dev)
    if terms:
        shown = ", ".join(escape_text(t) for t in terms)
        parts.append(f"<p><strong>Matched terms:</strong> {shown}</p>")
    body = _body_without_title(entry.body, plain(dev.title) or entry_title(dev))
    if body:
        parts.append(blocks_html(body))
    elif dev.summary.strip():
        parts.append(f"<p>{inline_html(dev.summary)}</p>")
    return "\n".join(parts)


def matched_terms(dev: Development) -> list[str]:
    """The watchlist terms that matched the development's records, as written there."""
    return [t for t in dict.fromkeys(one_line(term) for term in dev.terms) if t]


def source_items(dev: Development) -> str:
    """``<li>`` per report, earliest first: source, headline, date; linked when the URL can be
    published (``report_url``)."""
    return "".join(_source_item(ref, report_url(ref)) for ref in _reports_in_order(dev.sources))


def _source_item(ref: SourceRef, url: str | None) -> str:
    name = escape_text(_source_name(ref))
    title = escape_text(plain_title(ref.title))
    when = f" ({rfc3339(ref.published)[:10]})" if ref.published else ""
    label = f"{name}: {title}" if title else name
    if url:
        return f'<li><a href="{escape_attr(url)}">{label}</a>{when}</li>'
    return f"<li>{label}{when}</li>"


def _body_without_title(blocks: Sequence[Block], title: str) -> tuple[Block, ...]:
    """The record's blocks minus its title line (the entry already shows it as the title)."""
    for index, block in enumerate(blocks[:2]):
        if plain(block.text) == title and not block.rows:
            return (*blocks[:index], *blocks[index + 1 :])
    return tuple(blocks)


def _categories(site: Site, dev: Development) -> list[tuple[str, str]]:
    """(term, label) per matched topic: the id and the watchlist title, both XML-legal."""
    terms = dict.fromkeys(one_line(t) for t in dev.topics)
    return [(t, one_line(site.topic_title(t))) for t in terms if t]


# ---------------------------------------------------------------------------------------------
# Atom 1.0


def render_atom(site: Site, key: str, entries: Sequence[Entry], now: datetime) -> bytes:
    """An Atom 1.0 feed (RFC 4287) with self, alternate and (optional) WebSub hub links."""
    out = [
        _XML_DECL,
        '<feed xmlns="http://www.w3.org/2005/Atom">\n',
        f"  <id>{escape_text(feed_id(site, key))}</id>\n",
        f"  <title>{escape_text(feed_title(site, key))}</title>\n",
        f"  <subtitle>{escape_text(one_line(site.description))}</subtitle>\n",
        f"  <updated>{rfc3339_precise(feed_updated(entries, now))}</updated>\n",
        f'  <link rel="self" type="application/atom+xml" '
        f'href="{escape_attr(feed_url(site, key, "atom"))}"/>\n',
        f'  <link rel="alternate" type="text/html" href="{escape_attr(home_url(site, key))}"/>\n',
    ]
    hub = safe_url(site.websub_hub)
    if hub:
        out.append(f'  <link rel="hub" href="{escape_attr(hub)}"/>\n')
    out += [
        f"  <author><name>{escape_text(one_line(site.title))}</name>"
        f"<uri>{escape_text(site.root + '/')}</uri></author>\n",
        f'  <generator uri="{GENERATOR_URI}">{GENERATOR}</generator>\n',
    ]
    for entry, updated in zip(entries, distinct_updated(entries), strict=True):
        out.append(_atom_entry(site, entry, updated))
    out.append("</feed>\n")
    return "".join(out).encode("utf-8")


def _atom_entry(site: Site, entry: Entry, updated: datetime) -> str:
    dev = entry.development
    link = entry_link(site, dev)
    out = [
        "  <entry>\n",
        f"    <id>{escape_text(entry_id(site, dev.id))}</id>\n",
        f"    <title>{escape_text(entry_title(dev))}</title>\n",
        f"    <published>{rfc3339_precise(dev.first_seen)}</published>\n",
        f"    <updated>{rfc3339_precise(updated)}</updated>\n",
        f'    <link rel="alternate" type="text/html" href="{escape_attr(link)}"/>\n',
    ]
    for ref, url in source_links(dev):
        title = one_line(f"{_source_name(ref)}: {plain_title(ref.title)}".rstrip(": "))
        out.append(
            f'    <link rel="related" type="text/html" href="{escape_attr(url)}" '
            f'title="{escape_attr(title)}"/>\n'
        )
    for term, label in _categories(site, dev):
        out.append(
            f'    <category term="{escape_attr(term)}" label="{escape_attr(label)}" '
            f'scheme="{escape_attr(site.root + "/topics/")}"/>\n'
        )
    summary = entry_summary(dev)
    if summary:
        out.append(f"    <summary>{escape_text(summary)}</summary>\n")
    out.append(f'    <content type="html">{escape_text(entry_html(site, entry))}</content>\n')
    out.append("  </entry>\n")
    return "".join(out)


# ---------------------------------------------------------------------------------------------
# RSS 2.0


def render_rss(site: Site, key: str, entries: Sequence[Entry], now: datetime) -> bytes:
    """RSS 2.0 with ``atom:link rel="self"``, tag: guids (isPermaLink=false), RFC 822 dates."""
    out = [
        _XML_DECL,
        '<rss version="2.0" xmlns:atom="http://www.w3.org/2005/Atom" '
        'xmlns:content="http://purl.org/rss/1.0/modules/content/">\n',
        "  <channel>\n",
        f"    <title>{escape_text(feed_title(site, key))}</title>\n",
        f"    <link>{escape_text(home_url(site, key))}</link>\n",
        f"    <description>{escape_text(one_line(site.description))}</description>\n",
        f'    <atom:link rel="self" type="application/rss+xml" '
        f'href="{escape_attr(feed_url(site, key, "rss"))}"/>\n',
    ]
    hub = safe_url(site.websub_hub)
    if hub:
        out.append(f'    <atom:link rel="hub" href="{escape_attr(hub)}"/>\n')
    out += [
        f"    <lastBuildDate>{rfc822(feed_updated(entries, now))}</lastBuildDate>\n",
        f"    <generator>{GENERATOR}</generator>\n",
        "    <docs>https://www.rssboard.org/rss-specification</docs>\n",
    ]
    for entry in entries:
        out.append(_rss_item(site, entry))
    out.append("  </channel>\n</rss>\n")
    return "".join(out).encode("utf-8")


def _rss_item(site: Site, entry: Entry) -> str:
    dev = entry.development
    out = [
        "    <item>\n",
        f"      <title>{escape_text(entry_title(dev))}</title>\n",
        f"      <link>{escape_text(entry_link(site, dev))}</link>\n",
        f'      <guid isPermaLink="false">{escape_text(entry_id(site, dev.id))}</guid>\n',
        f"      <pubDate>{rfc822(dev.first_seen)}</pubDate>\n",
    ]
    for _term, label in _categories(site, dev):
        out.append(
            f'      <category domain="{escape_attr(site.root + "/topics/")}">'
            f"{escape_text(label)}</category>\n"
        )
    summary = entry_summary(dev) or entry_title(dev)
    # RSS description is HTML: the plain summary is escaped as HTML, then as XML.
    out.append(f"      <description>{escape_text(escape_text(summary))}</description>\n")
    out.append(f"      <content:encoded>{escape_text(entry_html(site, entry))}</content:encoded>\n")
    out.append("    </item>\n")
    return "".join(out)


# ---------------------------------------------------------------------------------------------
# JSON Feed 1.1


def render_json_feed(site: Site, key: str, entries: Sequence[Entry], now: datetime) -> bytes:
    """A JSON Feed 1.1 document; sources and topics ride in the ``_aggregator`` extension."""
    feed: dict[str, object] = {
        "version": "https://jsonfeed.org/version/1.1",
        "title": feed_title(site, key),
        "home_page_url": home_url(site, key),
        "feed_url": feed_url(site, key, "json"),
        "description": one_line(site.description),
        "authors": [{"name": one_line(site.title), "url": site.root + "/"}],
    }
    hub = safe_url(site.websub_hub)
    if hub:
        feed["hubs"] = [{"type": "WebSub", "url": hub}]
    feed["items"] = [_json_item(site, entry) for entry in entries]
    feed["_aggregator"] = {"updated": rfc3339_precise(feed_updated(entries, now))}
    text = json.dumps(feed, ensure_ascii=False, indent=1, sort_keys=False)
    return (text + "\n").encode("utf-8")


def _json_item(site: Site, entry: Entry) -> dict[str, object]:
    dev = entry.development
    item: dict[str, object] = {
        "id": entry_id(site, dev.id),
        "url": entry_link(site, dev),
        "title": entry_title(dev),
        "content_html": entry_html(site, entry),
    }
    summary = entry_summary(dev)
    if summary:
        item["summary"] = summary
    item["date_published"] = rfc3339_precise(dev.first_seen)
    item["date_modified"] = rfc3339_precise(entry_updated(dev))
    tags = [label for _term, label in _categories(site, dev)]
    if tags:
        item["tags"] = tags
    links = {id(ref): url for ref, url in source_links(dev)}
    item["_aggregator"] = {
        "development_id": xml_text(dev.id),
        "topics": [t for t, _ in _categories(site, dev)],
        "terms": matched_terms(dev),
        "sources": [
            {
                "source_id": xml_text(ref.source_id) if ref.source_id else None,
                "source_title": _source_name(ref),
                "title": plain_title(ref.title),
                "url": links.get(id(ref)),
                "published": rfc3339(ref.published) if ref.published else None,
            }
            for ref in _reports_in_order(dev.sources)
        ],
    }
    return item


# ---------------------------------------------------------------------------------------------
# the OPML list of sources (the HTML pages are publish.pages)


def render_opml(site: Site, sources: Sequence[Source], now: datetime) -> bytes:
    """OPML 2.0 list of the watched sources, for importing into a reader."""
    out = [
        _XML_DECL,
        '<opml version="2.0">\n  <head>\n',
        f"    <title>{escape_text(one_line(site.title + ': sources'))}</title>\n",
        f"    <dateModified>{rfc822(now)}</dateModified>\n",
        "  </head>\n  <body>\n",
    ]
    for source in sources:
        line = _opml_outline(site, source)
        if line:
            out.append(line)
    out.append("  </body>\n</opml>\n")
    return "".join(out).encode("utf-8")


def _opml_outline(site: Site, source: Source) -> str | None:
    url = safe_url(source.url)
    if not url or not source.enabled:
        return None
    text = escape_attr(one_line(source.title) or one_line(source.id))
    category = ",".join(
        "/" + one_line(site.topic_title(t)).replace(",", " ") for t in source.topics
    )
    cat_attr = f' category="{escape_attr(category)}"' if category else ""
    if source.kind is SourceKind.PAGE:
        return f'    <outline type="link" text="{text}" url="{escape_attr(url)}"{cat_attr}/>\n'
    return (
        f'    <outline type="rss" text="{text}" title="{text}" '
        f'xmlUrl="{escape_attr(url)}"{cat_attr}/>\n'
    )
