"""The HTML pages for people: the index, a page per development, topic pages, search results.

Pure: data in, bytes out. The pages are Jinja2 templates (``publish/templates/``) rendered with
autoescaping on, so every value is HTML-escaped unless it is ``Markup`` made here from already
sanitized HTML (``sanitize.blocks_html``) or from escaped pieces (highlighted terms). Strings
also pass through ``sanitize`` on the way in (XML-illegal characters dropped, one line, URLs
absolute http(s) or left out), as in the feeds.

Dates are shown in the watchlist's ``publish.timezone`` ("21 Nov 2026, 12:02 EET"), with the
exact UTC instant in the ``<time datetime>`` attribute. No JavaScript.

Paths (relative to the site root, the same for the service and ``aggregator publish DIR``):
``index.html`` (``/``), ``developments/<id>.html``, ``topics/<id>/index.html``
(``/topics/<id>/``) and ``topics/<id>/page-<n>.html`` for older developments.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from typing import Any
from urllib.parse import urlencode

import jinja2
from markupsafe import Markup, escape

from aggregator import records
from aggregator.match import term_spans
from aggregator.model import DedupReason, Source, SourceRef, Topic
from aggregator.publish.render import (
    ALL_FEED,
    CONTENT_TYPES,
    FORMATS,
    GENERATOR,
    GENERATOR_URI,
    INDEX_FILE,
    OPML_FILE,
    Entry,
    FeedSet,
    RenderedFile,
    Site,
    development_url,
    entry_summary,
    entry_title,
    entry_updated,
    feed_path,
    feed_title,
    feed_updated,
    plain,
    render_atom,
    render_json_feed,
    render_opml,
    render_rss,
    rfc3339,
    topic_url,
)
from aggregator.publish.sanitize import blocks_html, one_line, safe_url

MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_REASONS: dict[str, str] = {
    DedupReason.NEW: "first report",
    DedupReason.SAME_URL: "same address",
    DedupReason.SAME_GUID: "same feed entry",
    DedupReason.SAME_CONTENT: "same text",
    DedupReason.NEAR_DUPLICATE: "near-duplicate (rewrite or syndicated copy)",
    DedupReason.SAME_EVENT: "same event",
    DedupReason.MANUAL: "placed by an editor (split/merge)",
}
HTML = CONTENT_TYPES[".html"]


# ---------------------------------------------------------------------------------------------
# what a page shows


@dataclass(frozen=True, slots=True)
class Report:
    """One report of a development as its page lists it."""

    ref: SourceRef
    language: str | None = None
    # Why the record joined (None: another outlet's copy of a stored record, an alias).
    reason: DedupReason | None = None
    score: float | None = None
    similar_to: str | None = None  # the title of the report it was found similar to
    terms: tuple[str, ...] = ()  # the topic terms its text matched


@dataclass(frozen=True, slots=True)
class DevelopmentPage:
    entry: Entry
    reports: tuple[Report, ...] = ()


@dataclass(frozen=True, slots=True)
class TopicPage:
    topic: Topic
    entries: tuple[Entry, ...]
    page: int = 1  # 1 is the newest
    has_older: bool = False


@dataclass(frozen=True, slots=True)
class SearchHit:
    """A stored report that matched a search, with its development when it has a page."""

    ref: SourceRef
    language: str | None = None
    snippet: str = ""  # a passage of its text around the first match


@dataclass(frozen=True, slots=True)
class SearchResult:
    entry: Entry | None  # None: the report's development is not published (matches no topic)
    hits: tuple[SearchHit, ...]


@dataclass(frozen=True, slots=True)
class SearchPage:
    query: str
    words: tuple[str, ...] = ()  # the query's words, highlighted in the results
    results: tuple[SearchResult, ...] = ()
    page: int = 1
    has_more: bool = False
    error: str | None = None  # why the query could not run (shown instead of results)


# ---------------------------------------------------------------------------------------------
# filters


def local_time(when: datetime, zone: tzinfo) -> str:
    """``21 Nov 2026, 12:02 EET``: day, month, year, time and zone abbreviation."""
    utc = when.replace(tzinfo=UTC) if when.tzinfo is None else when
    local = utc.astimezone(zone)
    return (
        f"{local.day} {MONTHS[local.month - 1]} {local.year}, "
        f"{local.hour:02d}:{local.minute:02d} {local.tzname() or 'UTC'}"
    )


def highlight(text: str, terms: Sequence[str]) -> Markup:
    """``text`` (plain, one line) escaped, with each occurrence of ``terms`` in ``<mark>``."""
    clean = plain(text)
    if not terms:
        return escape(clean)
    out: list[str] = []
    last = 0
    for start, end in term_spans(clean, tuple(terms)):
        out.append(str(escape(clean[last:start])))
        out.append(f"<mark>{escape(clean[start:end])}</mark>")
        last = end
    out.append(str(escape(clean[last:])))
    return Markup("".join(out))


def snippet(text: str, words: Sequence[str], width: int = 220) -> str:
    """A passage of a record's text (plain, one line) around the first of ``words``."""
    try:
        blocks = records.parse(text).blocks
        flat = plain(" ".join(b.text or " ".join(" ".join(r) for r in b.rows) for b in blocks))
    except Exception:  # an unreadable stored text: its raw lines will do
        flat = plain(text)
    spans = term_spans(flat, tuple(words))
    if not spans:
        return flat[:width] + ("…" if len(flat) > width else "")
    start = max(0, spans[0][0] - width // 3)
    if start:
        start = flat.find(" ", start) + 1 or start
    end = min(len(flat), start + width)
    return ("…" if start else "") + flat[start:end] + ("…" if end < len(flat) else "")


def shown_terms(terms: Sequence[str], texts: Sequence[str], limit: int = 5) -> list[str]:
    """The matched topic terms as a reader should see them: words and phrases as written in
    the watchlist; a ``/regex/`` term as the words it matched in ``texts`` (a pattern means
    little to a reader), or left out when it matched none of them."""
    out: dict[str, None] = {}
    for term in terms:
        if not term.startswith("/"):
            out[one_line(term)] = None
            continue
        found: dict[str, None] = {}
        for text in texts:
            clean = plain(text)
            for start, end in term_spans(clean, (term,)):
                found.setdefault(clean[start:end], None)
        out.update((word, None) for word in list(found)[:limit])
    return list(out)


def outlet(ref: SourceRef) -> str:
    return one_line(ref.source_title) or one_line(ref.source_id or "") or "unknown source"


def reports_in_order(refs: Sequence[SourceRef]) -> list[SourceRef]:
    """Dated reports by date, undated ones after them in the store's order."""
    far = datetime.max.replace(tzinfo=UTC)
    return sorted(refs, key=lambda r: r.published.astimezone(UTC) if r.published else far)


def _reason_label(reason: DedupReason | None) -> str:
    if reason is None:
        return "the same article, seen at another address"
    return _REASONS.get(reason, str(reason))


# ---------------------------------------------------------------------------------------------
# the template environment


@functools.cache
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("aggregator.publish", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["plain"] = plain
    env.filters["one_line"] = one_line
    env.filters["highlight"] = highlight
    env.filters["rfc3339"] = rfc3339
    env.filters["outlet"] = outlet
    env.filters["safe_url"] = safe_url
    env.filters["reason"] = _reason_label
    return env


@dataclass(frozen=True, slots=True)
class _Page:
    """What every page's frame needs."""

    site: Site
    title: str
    search: bool  # show the search box (the service has a search route; a static export not)
    feed_key: str = ALL_FEED
    canonical: str = ""


def _render(template: str, page: _Page, **values: Any) -> bytes:
    site = page.site
    context: dict[str, Any] = {
        "site": site,
        "page_title": page.title,
        "search": page.search,
        "search_url": f"{site.root}/search",
        "home": site.root + "/",
        "canonical": page.canonical,
        "opml_url": f"{site.root}/{OPML_FILE}",
        "generator": GENERATOR,
        "generator_uri": GENERATOR_URI,
        "feed_links": _feed_links(site, page.feed_key),
        "all_feed_links": _feed_links(site, ALL_FEED),
        "topics_nav": [(t, topic_url(site, t.id)) for t in site.topics],
        "when": lambda value: local_time(value, site.timezone),
        "topic_links": lambda ids: _topic_links(site, ids),
        "dev_url": lambda dev_id: development_url(site, dev_id),
        "entry_title": lambda entry: entry_title(entry.development),
        "entry_summary": lambda entry: entry_summary(entry.development),
        "outlets": _outlets,
        **values,
    }
    text = _environment().get_template(template).render(context)
    return text.encode("utf-8")


def _feed_links(site: Site, key: str) -> list[dict[str, str]]:
    return [
        {
            "label": label,
            "type": FORMATS[fmt].split(";")[0],
            "title": feed_title(site, key),
            "url": f"{site.root}/{feed_path(key, fmt)}",
        }
        for fmt, label in (("atom", "Atom"), ("rss", "RSS"), ("json", "JSON Feed"))
    ]


def _topic_links(site: Site, topic_ids: Sequence[str]) -> list[tuple[str, str | None]]:
    """(label, URL) per topic id; no URL for a topic the watchlist no longer has."""
    known = {t.id for t in site.topics}
    return [
        (one_line(site.topic_title(t)), topic_url(site, t) if t in known else None)
        for t in dict.fromkeys(topic_ids)
        if one_line(t)
    ]


def _outlets(entry: Entry) -> str:
    names = list(dict.fromkeys(outlet(r) for r in reports_in_order(entry.development.sources)))
    if len(names) > 4:
        return ", ".join(names[:4]) + f" and {len(names) - 4} more"
    return ", ".join(names)


# ---------------------------------------------------------------------------------------------
# the pages


def render_index(site: Site, feeds: FeedSet, now: datetime, *, search: bool = False) -> bytes:
    """``/``: the latest developments, each once, with the topics it belongs to."""
    updated = feed_updated(feeds.all, now)
    page = _Page(site, one_line(site.title), search, canonical=site.root + "/")
    return _render(
        "index.html",
        page,
        entries=feeds.all,
        updated=updated,
        description=one_line(site.description),
    )


def render_topic(site: Site, topic_page: TopicPage, *, search: bool = False) -> bytes:
    topic = topic_page.topic
    title = one_line(topic.title or topic.id)
    number = topic_page.page
    page = _Page(
        site,
        f"{title}: {one_line(site.title)}" if number == 1 else f"{title}, page {number}",
        search,
        feed_key=topic.id,
        canonical=topic_url(site, topic.id, number),
    )
    return _render(
        "topic.html",
        page,
        topic=topic,
        topic_title=title,
        description=one_line(topic.description),
        entries=topic_page.entries,
        number=number,
        newer_url=topic_url(site, topic.id, number - 1) if number > 1 else None,
        older_url=topic_url(site, topic.id, number + 1) if topic_page.has_older else None,
    )


def render_development(site: Site, dev_page: DevelopmentPage, *, search: bool = False) -> bytes:
    entry = dev_page.entry
    dev = entry.development
    title = entry_title(dev)
    page = _Page(
        site, f"{title}: {one_line(site.title)}", search, canonical=development_url(site, dev.id)
    )
    reports = dev_page.reports or tuple(Report(ref) for ref in dev.sources)
    ordered = sorted(
        reports,
        key=lambda r: (
            r.ref.published is None,
            r.ref.published or datetime.min.replace(tzinfo=UTC),
        ),
    )
    body = _body_without_title(entry, title)
    return _render(
        "development.html",
        page,
        dev=dev,
        title=title,
        summary=entry_summary(dev),
        terms=dev.terms,
        shown_terms=shown_terms(
            dev.terms, [title, entry_summary(dev), *(r.ref.title for r in reports)]
        ),
        reports=ordered,
        outlet_count=len({outlet(r.ref) for r in reports}),
        body=Markup(blocks_html(body, heading_level=3)) if body else None,
        updated=entry_updated(dev),
    )


def _body_without_title(entry: Entry, title: str) -> tuple[Any, ...]:
    blocks = entry.body
    for index, block in enumerate(blocks[:2]):
        if plain(block.text) == title and not block.rows:
            return (*blocks[:index], *blocks[index + 1 :])
    return tuple(blocks)


def render_moved(site: Site, old_id: str, new_id: str) -> bytes:
    """The page of a development merged into another: a link there (and a no-script refresh)."""
    target = development_url(site, new_id)
    page = _Page(site, "Moved: " + one_line(site.title), False, canonical=target)
    return _render("moved.html", page, target=target, old_id=one_line(old_id))


def render_search(site: Site, search_page: SearchPage) -> bytes:
    query = one_line(search_page.query)
    title = f"Search: {query}" if query else "Search"
    page = _Page(site, f"{title}: {one_line(site.title)}", True)
    base = f"{site.root}/search"

    def page_url(number: int) -> str:
        return f"{base}?{urlencode({'q': query, 'page': number})}"

    return _render(
        "search.html",
        page,
        query=query,
        words=search_page.words,
        results=search_page.results,
        number=search_page.page,
        error=search_page.error,
        newer_url=page_url(search_page.page - 1) if search_page.page > 1 else None,
        older_url=page_url(search_page.page + 1) if search_page.has_more else None,
    )


# ---------------------------------------------------------------------------------------------
# every file of the site at once


def render_site(
    site: Site,
    feeds: FeedSet,
    sources: Sequence[Source],
    now: datetime,
    *,
    search: bool = False,
) -> list[RenderedFile]:
    """The feeds (all + per topic, three formats), the index page and the OPML.

    Topic and development pages are rendered one by one (``render_topic``,
    ``render_development``): the service renders them on request, ``publish DIR`` all of them.
    """
    files: list[RenderedFile] = []
    keyed: list[tuple[str, Sequence[Entry]]] = [(ALL_FEED, feeds.all)]
    keyed += [(t.id, feeds.by_topic.get(t.id, ())) for t in site.topics]
    renderers = {"atom": render_atom, "rss": render_rss, "json": render_json_feed}
    for key, entries in keyed:
        updated = feed_updated(entries, now)
        for fmt, render in renderers.items():
            body = render(site, key, entries, now)
            files.append(RenderedFile(feed_path(key, fmt), body, FORMATS[fmt], updated))
    site_updated = feed_updated(feeds.all, now)
    files.append(
        RenderedFile(INDEX_FILE, render_index(site, feeds, now, search=search), HTML, site_updated)
    )
    files.append(
        RenderedFile(
            OPML_FILE,
            render_opml(site, sources, site_updated),
            CONTENT_TYPES[".opml"],
            site_updated,
        )
    )
    return files
