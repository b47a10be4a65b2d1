"""Gather what the feeds show from the store and render every published file.

The one place that reads the store for publishing, shared by the HTTP service (web.feeds) and
``aggregator publish DIR`` (publish.static), so both publish the same bytes.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Protocol

from aggregator import records
from aggregator.model import Block, Development, PublishOptions, Record, Source, Topic
from aggregator.publish.render import (
    TAG_AUTHORITY,
    Entry,
    FeedSet,
    RenderedFile,
    Site,
    render_site,
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
    return Site(
        title=options.title,
        base_url=public_base_url(options, base_url),
        topics=tuple(watchlist.topics),
        tag_authority=options.tag_authority,
        websub_hub=options.websub_hub,
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
    store: FeedStore, watchlist: PublishedWatchlist, base_url: str, now: datetime
) -> list[RenderedFile]:
    """Every published file, rendered from the store's current developments."""
    site = make_site(watchlist, base_url)
    feeds = collect_feeds(store, site.topics, watchlist.publish.feed_size)
    sources: list[Source] = list(watchlist.sources)
    return render_site(site, feeds, sources, now)
