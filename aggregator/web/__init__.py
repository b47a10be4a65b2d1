"""The ASGI app: feeds and pages (web.feeds), health and metrics (web.ops)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeGuard

from starlette.applications import Starlette
from starlette.routing import BaseRoute

from aggregator.publish.site import FeedStore, PageStore, SearchStore
from aggregator.settings import Settings
from aggregator.web.feeds import (
    FeedCache,
    PageCache,
    SearchEndpoint,
    WatchlistProvider,
    feed_routes,
    hub_pinger,
)


def create_app(
    store: FeedStore,
    watchlist_provider: WatchlistProvider,
    settings: Settings,
    extra_routes: Sequence[BaseRoute] = (),
    *,
    check_interval: float = 1.0,
) -> Starlette:
    """The service's web app: published files from an in-memory cache, plus ``extra_routes``.

    ``extra_routes`` is how the service adds its operations routes (``web.ops.ops_routes``:
    ``/healthz``, ``/metrics``); they are matched before the feed routes. The cache is
    ``app.state.feed_cache``.
    """

    cache = FeedCache(
        store,
        watchlist_provider,
        settings.public_url,
        check_interval=check_interval,
        on_change=hub_pinger(watchlist_provider),
    )
    pages = PageCache(cache, store) if _has_pages(store) else None
    search = SearchEndpoint(pages, store) if pages is not None and _has_search(store) else None
    cache.search = search is not None  # the pages carry the search box only where it works
    app = Starlette(routes=[*extra_routes, *feed_routes(cache, pages, search)])
    app.state.feed_cache = cache
    app.state.page_cache = pages
    return app


def _has_pages(store: FeedStore) -> TypeGuard[PageStore]:
    """Whether ``store`` can serve topic and development pages (the real store can; a stub
    serving only feeds, as in the serving benchmark, need not)."""
    return all(
        callable(getattr(store, name, None))
        for name in ("get_development", "get_memberships", "topic_matches")
    )


def _has_search(store: FeedStore) -> TypeGuard[SearchStore]:
    return callable(getattr(store, "search", None))


__all__ = ["FeedCache", "create_app"]
