"""Gather what the feeds show from the store and render every published file.

The one place that reads the store for publishing, shared by the HTTP service (web.feeds) and
``aggregator publish DIR`` (publish.static), so both publish the same bytes.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from typing import Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from aggregator import records
from aggregator.model import (
    Block,
    Development,
    Membership,
    PublishOptions,
    Record,
    SearchMatch,
    Source,
    SourceRef,
    Topic,
    TopicMatch,
)
from aggregator.publish.pages import (
    HTML,
    DevelopmentPage,
    Report,
    SearchHit,
    SearchPage,
    SearchResult,
    TopicPage,
    render_development,
    render_moved,
    render_search,
    render_site,
    render_topic,
    snippet,
)
from aggregator.publish.render import (
    TAG_AUTHORITY,
    Entry,
    FeedSet,
    RenderedFile,
    Site,
    development_path,
    entry_updated,
    feed_updated,
    topic_path,
)
from aggregator.publish.sanitize import safe_url

log = logging.getLogger(__name__)

# How far past feed_size the overall feed looks for developments that match a topic, as a
# multiple of feed_size, before settling for fewer entries.
_MAX_SCAN_FACTOR = 8


class FeedStore(Protocol):
    """The part of ``aggregator.store.Store`` that publishing reads."""

    def list_developments(
        self, topic: str | None = None, limit: int = 50, since: datetime | None = None
    ) -> list[Development]: ...

    def get_records(self, ids: Sequence[str]) -> list[Record]: ...

    def feed_version(self) -> str: ...


class PageStore(FeedStore, Protocol):
    """What the topic and development pages read besides the feeds' part."""

    def list_developments(
        self,
        topic: str | None = None,
        limit: int = 50,
        since: datetime | None = None,
        offset: int = 0,
    ) -> list[Development]: ...

    def get_development(self, dev_id: str) -> Development | None: ...

    def get_memberships(self, dev_id: str) -> list[Membership]: ...

    def topic_matches(self, record_ids: Sequence[str]) -> dict[str, tuple[TopicMatch, ...]]: ...

    def merged_developments(self) -> dict[str, str]: ...


class SearchStore(Protocol):
    """What the search page reads (``aggregator.store.Store``)."""

    def search(self, query: str, limit: int = 20, offset: int = 0) -> list[SearchMatch]: ...

    def get_development(self, dev_id: str) -> Development | None: ...


class PublishedWatchlist(Protocol):
    """The part of ``aggregator.watchlist.Watchlist`` that publishing reads."""

    @property
    def topics(self) -> tuple[Topic, ...]: ...

    @property
    def sources(self) -> tuple[Source, ...]: ...

    @property
    def publish(self) -> PublishOptions: ...


def public_base_url(options: PublishOptions, fallback: str) -> str:
    """The watchlist's ``publish.base_url`` when set, else the settings' public URL."""
    chosen = options.base_url or fallback
    url = safe_url(chosen)
    if url is None:
        raise ValueError(f"the public base URL must be an absolute http(s) URL, not {chosen!r}")
    return url.rstrip("/")


def make_site(watchlist: PublishedWatchlist, base_url: str) -> Site:
    options = watchlist.publish
    if options.tag_authority and not TAG_AUTHORITY.match(options.tag_authority):
        raise ValueError(
            f"publish.tag_authority must look like 'example.org,2026' (a domain or e-mail, a "
            f"comma, a date: RFC 4151), not {options.tag_authority!r}"
        )
    try:
        zone = ZoneInfo(options.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"publish.timezone: unknown time zone {options.timezone!r} (an IANA name such as "
            "Europe/Vilnius or UTC)"
        ) from None
    return Site(
        title=options.title,
        base_url=public_base_url(options, base_url),
        topics=tuple(watchlist.topics),
        tag_authority=options.tag_authority,
        websub_hub=options.websub_hub,
        timezone=zone,
    )


def collect_feeds(store: FeedStore, topics: Sequence[Topic], feed_size: int) -> FeedSet:
    """The latest ``feed_size`` developments overall and per topic, with representative texts.

    Only developments that match at least one topic are published.
    """
    size = max(1, feed_size)
    overall = _latest_with_topics(store, size)
    by_topic = {t.id: _with_topics(store.list_developments(t.id, size))[:size] for t in topics}
    unique: dict[str, Development] = {d.id: d for d in overall}
    for devs in by_topic.values():
        unique.update((d.id, d) for d in devs)
    bodies = _representative_bodies(store, unique.values())
    return FeedSet(
        all=tuple(Entry(d, bodies.get(d.id, ())) for d in overall),
        by_topic={
            key: tuple(Entry(d, bodies.get(d.id, ())) for d in devs)
            for key, devs in by_topic.items()
        },
    )


def _with_topics(devs: Sequence[Development]) -> list[Development]:
    return [d for d in devs if d.topics]


def _latest_with_topics(store: FeedStore, size: int) -> list[Development]:
    limit = size
    while True:
        devs = store.list_developments(None, limit)
        matched = _with_topics(devs)
        if len(matched) >= size or len(devs) < limit or limit >= size * _MAX_SCAN_FACTOR:
            return matched[:size]
        limit *= 2


def _representative_bodies(
    store: FeedStore, devs: Iterable[Development]
) -> dict[str, tuple[Block, ...]]:
    """Blocks of each development's representative record (its first record)."""
    wanted: dict[str, str] = {}
    for dev in devs:
        rid = _representative_id(dev)
        if rid:
            wanted[rid] = dev.id
    if not wanted:
        return {}
    out: dict[str, tuple[Block, ...]] = {}
    for record in store.get_records(list(wanted)):
        dev_id = wanted.get(record.id)
        if dev_id is None:
            continue
        try:
            out[dev_id] = records.parse(record.text).blocks
        except Exception:  # one unreadable stored text must not stop every feed
            log.warning("record %s: text could not be parsed; entry shows its summary", record.id)
    return out


def _representative_id(dev: Development) -> str | None:
    """The record the development's title and summary come from, whose text the entry shows.

    The store takes the title from its representative member, so that member is the one whose
    title is the development's; failing that, the first report.
    """
    representative = getattr(dev, "representative_id", None)
    if isinstance(representative, str) and representative:
        return representative
    for ref in dev.sources:
        if ref.title and ref.title == dev.title and ref.record_id in dev.record_ids:
            return ref.record_id
    return dev.record_ids[0] if dev.record_ids else None


def build_site(
    store: FeedStore,
    watchlist: PublishedWatchlist,
    base_url: str,
    now: datetime,
    *,
    search: bool = False,
) -> list[RenderedFile]:
    """The feeds, the index page and the OPML, rendered from the store's current developments.

    ``search``: the pages carry the search box (the service; a static export has no search).
    """
    site = make_site(watchlist, base_url)
    feeds = collect_feeds(store, site.topics, watchlist.publish.feed_size)
    sources: list[Source] = list(watchlist.sources)
    return render_site(site, feeds, sources, now, search=search)


# ---------------------------------------------------------------------------------------------
# topic and development pages


def collect_topic_page(
    store: PageStore, topic: Topic, page: int, page_size: int
) -> TopicPage | None:
    """Page ``page`` (1: newest) of a topic's developments; None past the last page."""
    size = max(1, page_size)
    devs = _with_topics(store.list_developments(topic.id, size + 1, None, (page - 1) * size))
    if page > 1 and not devs:
        return None
    return TopicPage(
        topic=topic,
        entries=tuple(Entry(d) for d in devs[:size]),
        page=page,
        has_older=len(devs) > size,
    )


def collect_development_page(store: PageStore, dev: Development) -> DevelopmentPage:
    """A development with each report's language, the decision that placed it and the
    topic terms its text matched."""
    memberships = {m.record_id: m for m in store.get_memberships(dev.id)}
    stored = {r.id: r for r in store.get_records(list(dev.record_ids))}
    matches = store.topic_matches(list(dev.record_ids))
    titles = {ref.record_id: ref.title for ref in dev.sources}
    members = set(dev.record_ids)
    reports: list[Report] = []
    seen_members: set[str] = set()
    for ref in dev.sources:
        record = stored.get(ref.record_id)
        terms = tuple(
            dict.fromkeys(term for m in matches.get(ref.record_id, ()) for term in m.terms)
        )
        membership = memberships.get(ref.record_id)
        # A record's own row comes first; later refs of the same record are other outlets'
        # copies of it (aliases), which joined as the same article.
        own = ref.record_id in members and ref.record_id not in seen_members
        seen_members.add(ref.record_id)
        similar = None
        if own and membership and membership.matched_record_id:
            similar = titles.get(membership.matched_record_id)
        reports.append(
            Report(
                ref=ref,
                language=record.language if record else None,
                reason=membership.reason if own and membership else None,
                score=membership.score if own and membership else None,
                similar_to=similar,
                terms=terms,
            )
        )
    bodies = _representative_bodies(store, [dev])
    return DevelopmentPage(Entry(dev, bodies.get(dev.id, ())), tuple(reports))


def build_page(
    store: PageStore,
    watchlist: PublishedWatchlist,
    base_url: str,
    path: str,
    *,
    search: bool = False,
) -> RenderedFile | None:
    """The topic or development page at ``path`` (as ``topic_path``/``development_path`` give
    it), or None when there is no such page. A development merged into another gives a
    ``RenderedFile`` whose ``location`` is the other one's page."""
    site = make_site(watchlist, base_url)
    parts = path.split("/")
    if len(parts) == 2 and parts[0] == "developments" and parts[1].endswith(".html"):
        from urllib.parse import unquote

        dev_id = unquote(parts[1].removesuffix(".html"))
        dev = store.get_development(dev_id)
        if dev is None or not dev.topics:
            return None
        if dev.id != dev_id:
            return _moved(site, dev_id, dev)
        return _development_file(site, store, dev, search)
    if len(parts) == 3 and parts[0] == "topics":
        from urllib.parse import unquote

        topic = next((t for t in site.topics if t.id == unquote(parts[1])), None)
        number = _page_number(parts[2])
        if topic is None or number is None:
            return None
        return _topic_file(site, store, topic, number, watchlist.publish.page_size, search)
    return None


def _page_number(name: str) -> int | None:
    if name == "index.html":
        return 1
    digits = name.removeprefix("page-").removesuffix(".html")
    if name.startswith("page-") and name.endswith(".html") and digits.isdigit():
        number = int(digits)
        return number if 2 <= number <= 1_000_000 else None
    return None


def _moved(site: Site, old_id: str, dev: Development) -> RenderedFile:
    from aggregator.publish.render import development_url

    return RenderedFile(
        development_path(old_id),
        render_moved(site, old_id, dev.id),
        HTML,
        entry_updated(dev),
        location=development_url(site, dev.id),
    )


def _development_file(site: Site, store: PageStore, dev: Development, search: bool) -> RenderedFile:
    page = collect_development_page(store, dev)
    body = render_development(site, page, search=search)
    return RenderedFile(development_path(dev.id), body, HTML, entry_updated(dev))


def _topic_file(
    site: Site, store: PageStore, topic: Topic, number: int, page_size: int, search: bool
) -> RenderedFile | None:
    page = collect_topic_page(store, topic, number, page_size)
    return None if page is None else _topic_render(site, page, search)


def _topic_render(site: Site, page: TopicPage, search: bool) -> RenderedFile:
    updated = feed_updated(page.entries, site_epoch())
    return RenderedFile(
        topic_path(page.topic.id, page.page), render_topic(site, page, search=search), HTML, updated
    )


def site_epoch() -> datetime:
    """The Last-Modified of an empty page: a fixed instant, so replicas agree."""
    from datetime import UTC

    return datetime(2026, 1, 1, tzinfo=UTC)


def build_all_pages(
    store: PageStore, watchlist: PublishedWatchlist, base_url: str
) -> Iterator[RenderedFile]:
    """Every topic page and every published development's page (for ``publish DIR``)."""
    site = make_site(watchlist, base_url)
    size = watchlist.publish.page_size
    for topic in site.topics:
        number = 1
        while (page := collect_topic_page(store, topic, number, size)) is not None:
            yield _topic_render(site, page, False)
            if not page.has_older:
                break
            number += 1
    for dev in store.list_developments(None, 0):
        if dev.topics:
            yield _development_file(site, store, dev, False)
    for old_id in store.merged_developments():
        target = store.get_development(old_id)
        if target is not None and target.topics:
            yield _moved(site, old_id, target)


# ---------------------------------------------------------------------------------------------
# search


def collect_search_page(store: SearchStore, query: str, page: int, page_size: int) -> SearchPage:
    """One page of search results: the matching stored reports grouped by development, best
    first. Reports whose development is not published (it matches no topic) are left out."""
    from aggregator.errors import AggregatorError

    query = " ".join(query.split())[:200]
    if not query:
        return SearchPage(query="")
    size = max(1, page_size)
    words = tuple(w for w in (p.strip("\"'()") for p in query.split()) if w)
    try:
        matches = store.search(query, limit=size + 1, offset=(page - 1) * size)
    except AggregatorError as exc:
        return SearchPage(query=query, words=words, page=page, error=str(exc))
    grouped: dict[str, list[SearchMatch]] = {}
    for match in matches[:size]:
        if match.development_id:
            grouped.setdefault(match.development_id, []).append(match)
    results: list[SearchResult] = []
    for dev_id, hits in grouped.items():
        dev = store.get_development(dev_id)
        if dev is None or not dev.topics:
            continue
        results.append(SearchResult(Entry(dev), tuple(_search_hit(m, words) for m in hits)))
    return SearchPage(
        query=query,
        words=words,
        results=tuple(results),
        page=page,
        has_more=len(matches) > size,
    )


def _search_hit(match: SearchMatch, words: Sequence[str]) -> SearchHit:
    record = match.record
    ref = SourceRef(
        record_id=record.id,
        source_id=record.source_id,
        source_title=match.source_title,
        url=record.url,
        title=record.title,
        published=record.published,
    )
    return SearchHit(ref=ref, language=record.language, snippet=snippet(record.text, words))


def build_search(
    store: SearchStore, watchlist: PublishedWatchlist, base_url: str, query: str, page: int
) -> bytes:
    """The search page for ``query`` (``/search?q=``; the service only)."""
    site = make_site(watchlist, base_url)
    found = collect_search_page(store, query, max(1, page), watchlist.publish.page_size)
    return render_search(site, found)
