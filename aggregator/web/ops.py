"""Operations routes: ``/healthz`` (liveness and readiness) and ``/metrics`` (Prometheus).

The service owns an ``OpsState`` and updates it as it works; these routes only read it, so the
web layer needs nothing from the service layer above it. Metrics live in a registry of their own
(``ServiceMetrics``), not prometheus-client's global one, so several services in one test process
never collide.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from aggregator import __version__
from aggregator.model import AlertStatus
from aggregator.web.limits import refused

FETCH_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


class ServiceMetrics:
    """Every Prometheus series the service exports, in one registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.fetches = Counter(
            "aggregator_fetches",
            "Source fetches by result class (ok, not-modified, skipped, or a failure class)",
            ["result"],
            registry=r,
        )
        self.records = Counter(
            "aggregator_records",
            "Records seen by the service: new (stored) or duplicate (already known)",
            ["outcome"],
            registry=r,
        )
        self.fetch_duration = Histogram(
            "aggregator_fetch_duration_seconds",
            "Time to fetch and ingest one source",
            buckets=FETCH_BUCKETS,
            registry=r,
        )
        self.cycle_duration = Gauge(
            "aggregator_cycle_duration_seconds",
            "Time the last complete pass over every enabled source took",
            registry=r,
        )
        self.last_cycle = Gauge(
            "aggregator_last_cycle_timestamp_seconds",
            "Unix time when the last complete pass over every enabled source ended",
            registry=r,
        )
        self.queue_depth = Gauge(
            "aggregator_queue_depth", "Source jobs due and waiting for a fetch slot", registry=r
        )
        self.in_flight = Gauge("aggregator_in_flight", "Source fetches running now", registry=r)
        self.sources = Gauge("aggregator_sources", "Enabled sources scheduled", registry=r)
        self.failing_sources = Gauge(
            "aggregator_failing_sources",
            "Sources whose last fetch failed",
            registry=r,
        )
        self.reloads = Counter(
            "aggregator_watchlist_reloads",
            "Watchlist reloads by result (applied, rejected)",
            ["result"],
            registry=r,
        )
        self.pruned = Counter(
            "aggregator_pruned", "Records removed by the retention job", registry=r
        )
        self.stored_records = Gauge(
            "aggregator_stored_records", "Records in the store (at the last scrape)", registry=r
        )
        self.stored_developments = Gauge(
            "aggregator_stored_developments",
            "Developments in the store (at the last scrape)",
            registry=r,
        )
        r.register(_RefusalCollector())


class _RefusalCollector:
    """``aggregator_http_refused_total{reason}``: requests the HTTP server's limits refused
    since start (``web.limits.refused``, counted where the refusal happens)."""

    def describe(self) -> list[CounterMetricFamily]:
        return [self._family()]

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = self._family()
        for reason, count in sorted(refused.items()):
            family.add_metric([reason], count)
        yield family

    @staticmethod
    def _family() -> CounterMetricFamily:
        return CounterMetricFamily(
            "aggregator_http_refused",
            "HTTP requests refused by the server's limits (header size or count, body, "
            "request-read timeout, connections), by reason",
            labels=["reason"],
        )


@dataclass
class OpsState:
    """What /healthz reports; the service writes it, the routes read it.

    ``counts`` is called at scrape time for store-wide figures (records, developments) and may
    raise: a failing database makes /metrics skip those figures and /healthz not ready.
    """

    metrics: ServiceMetrics = field(default_factory=ServiceMetrics)
    started: float = field(default_factory=time.time)
    ready: bool = False
    stopping: bool = False
    owner: str = ""
    database: str = ""
    watchlist_path: str = ""
    watchlist_loaded: datetime | None = None
    watchlist_errors: tuple[str, ...] = ()
    sources: int = 0
    last_fetch: datetime | None = None
    last_cycle: datetime | None = None
    last_cycle_seconds: float | None = None
    in_flight: int = 0
    queue_depth: int = 0
    failing: Callable[[], Sequence[str]] | None = None  # ids of failing watched sources
    counts: Callable[[], tuple[int, int]] | None = None  # (records, developments)
    alerts: Callable[[], AlertStatus] | None = None  # the alert queue, when alerts are set up
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def set_watchlist_ok(self, path: str, sources: int, when: datetime) -> None:
        with self.lock:
            self.watchlist_path = path
            self.watchlist_loaded = when
            self.watchlist_errors = ()
            self.sources = sources
        self.metrics.sources.set(sources)

    def set_watchlist_errors(self, path: str, problems: Sequence[str]) -> None:
        with self.lock:
            self.watchlist_path = path
            self.watchlist_errors = tuple(problems)


def _iso(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat(timespec="seconds") if value else None


def health_report(state: OpsState) -> tuple[int, dict[str, Any]]:
    """The /healthz body and status: 200 when ready (even degraded or failing), 503 when not.

    Readiness is whether this replica can serve the feeds: sources failing upstream (the
    network down, every site unreachable) do not stop it serving what is stored, and neither
    a restart nor taking it out of a load balancer would help; answering 503 would take every
    replica out at once and turn a fetching problem into no feeds at all. So that state is
    ``"failing"`` in the body (every enabled source's last fetch failed), with a 200: alert on
    it, or on the metrics ``aggregator_failing_sources == aggregator_sources``."""
    failing: Sequence[str] = ()
    db_ok = True
    db_error = None
    if state.failing is not None:
        try:
            failing = state.failing()
        except Exception as exc:  # a health check must answer, whatever the database does
            db_ok = False
            db_error = f"{type(exc).__name__}: {exc}"
    state.metrics.failing_sources.set(len(failing))
    alerts, alerts_failing = _alerts_report(state)
    ready = state.ready and not state.stopping and db_ok
    if not ready:
        status = "stopping" if state.stopping else "starting" if not state.ready else "unready"
    elif failing and state.sources and len(failing) >= state.sources:
        status = "failing"
    elif state.watchlist_errors or failing or alerts_failing:
        status = "degraded"
    else:
        status = "ok"
    body: dict[str, Any] = {
        "status": status,
        "live": True,
        "ready": ready,
        "version": __version__,
        "uptime_seconds": round(time.time() - state.started, 1),
        "replica": state.owner,
        "database": {"ok": db_ok, "url": state.database, "error": db_error},
        "watchlist": {
            "path": state.watchlist_path,
            "loaded": _iso(state.watchlist_loaded),
            "error": "\n".join(state.watchlist_errors) or None,
            "problems": list(state.watchlist_errors),
        },
        "sources": state.sources,
        "failing_sources": len(failing),
        "failing": list(failing)[:50],
        "last_fetch": _iso(state.last_fetch),
        "last_cycle": _iso(state.last_cycle),
        "last_cycle_seconds": state.last_cycle_seconds,
        "in_flight": state.in_flight,
        "queue_depth": state.queue_depth,
    }
    if alerts is not None:
        body["alerts"] = alerts
    return (200 if ready else 503), body


def _alerts_report(state: OpsState) -> tuple[dict[str, Any] | None, bool]:
    """The alert queue for /healthz, and whether it is failing: messages waiting for a retry,
    or given up within the last day."""
    if state.alerts is None:
        return None, False
    try:
        status = state.alerts()
    except Exception as exc:  # the database section says what is wrong with the store
        return {"error": f"{type(exc).__name__}: {exc}"}, True
    report = {
        "pending": status.pending,
        "retrying": status.retrying,
        "failed": status.failed,
        "recently_failed": status.recently_failed,
        "sent": status.sent,
        "last_error": status.last_error,
        "last_error_at": _iso(status.last_error_at),
        "last_sent": _iso(status.last_sent),
    }
    return report, bool(status.retrying or status.recently_failed)


def ops_routes(state: OpsState) -> list[Route]:
    """``/healthz`` (full report), ``/healthz/live`` (the process answers), ``/healthz/ready``."""

    # The report and the scrape read the store: in a worker thread, never on the event loop.
    async def healthz(request: Request) -> Response:
        code, body = await run_in_threadpool(health_report, state)
        return JSONResponse(body, status_code=code, headers={"Cache-Control": "no-store"})

    async def live(request: Request) -> Response:
        return JSONResponse({"live": True}, headers={"Cache-Control": "no-store"})

    async def ready(request: Request) -> Response:
        code, body = await run_in_threadpool(health_report, state)
        return JSONResponse(
            {"ready": body["ready"], "status": body["status"]},
            status_code=code,
            headers={"Cache-Control": "no-store"},
        )

    async def metrics(request: Request) -> Response:
        await run_in_threadpool(_scrape_store, state)
        return Response(
            generate_latest(state.metrics.registry),
            media_type=CONTENT_TYPE_LATEST,
            headers={"Cache-Control": "no-store"},
        )

    return [
        Route("/healthz", healthz, methods=["GET", "HEAD"]),
        Route("/healthz/live", live, methods=["GET", "HEAD"]),
        Route("/healthz/ready", ready, methods=["GET", "HEAD"]),
        Route("/metrics", metrics, methods=["GET"]),
    ]


def _scrape_store(state: OpsState) -> None:
    """The store-wide series of /metrics, read at scrape time."""
    if state.counts is not None:
        try:
            records, developments = state.counts()
            state.metrics.stored_records.set(records)
            state.metrics.stored_developments.set(developments)
        except Exception:  # the series keep their last value; /healthz says why
            pass
    if state.failing is not None:
        with contextlib.suppress(Exception):
            state.metrics.failing_sources.set(len(state.failing()))
