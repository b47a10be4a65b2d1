"""Guarded extraction: a small pool of worker processes with a time limit and a size cap.

Lexbor's parse time grows quadratically with element nesting depth (100k nested ``<div>``
took 23 s), and a C parser cannot be interrupted from Python. So ``extract_article_guarded``
sends the page to a worker process and waits at most ``timeout`` seconds; a worker that
overruns is killed (SIGKILL) and replaced on the next call. Pages over ``max_bytes`` are
refused before any parsing. Workers are reused across calls, started with ``spawn`` (safe in
a threaded or asyncio process), capped in address space, and exit on their own when the
parent goes away (their pipe closes), so none outlive the service.

``extract_article_guarded_async`` runs the same call on a thread for asyncio callers. The same
workers parse everything else that comes from a source and has a parse time a page can blow
up: listing pages (``scrape_listing_guarded_async``) and heavy feed-entry HTML
(``call_guarded_async`` with any importable function), so none of it runs on the ingest thread.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import functools
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection
from multiprocessing.context import SpawnContext, SpawnProcess
from typing import Any, TypeVar

from aggregator.errors import ExtractionError
from aggregator.model import Article, ListingItem, PageSelectors

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_TIMEOUT",
    "ExtractorPool",
    "call_guarded_async",
    "default_pool",
    "extract_article_guarded",
    "extract_article_guarded_async",
    "scrape_listing_guarded_async",
    "shutdown_default_pool",
]

_T = TypeVar("_T")

DEFAULT_TIMEOUT = 10.0
DEFAULT_MAX_BYTES = 5 * 1024 * 1024
DEFAULT_WORKERS = 2
WORKER_NICENESS = 10  # added to the workers' nice value (lower CPU priority than the service)
# A worker's address-space cap: a hostile page cannot take the machine's memory with it.
DEFAULT_MEMORY_LIMIT = 1536 * 1024 * 1024
_START_TIMEOUT = 60.0  # a fresh worker imports selectolax and the extractor; slow on a busy box


def _die_with_parent() -> None:
    """On Linux, have the kernel kill this worker when its parent dies, even in the middle of
    a long parse (otherwise it would notice only when the parse ends and the pipe is gone)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def _serve(conn: Connection, memory_limit: int | None) -> None:
    """Worker main loop: run the calls sent (an importable function and its arguments) until
    the pipe closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when workers stop
    _die_with_parent()
    # A hostile page keeps a worker busy up to its time limit: the service's own process
    # (HTTP, fetching) comes first for the CPU meanwhile.
    with contextlib.suppress(OSError):
        os.nice(WORKER_NICENESS)
    if memory_limit:
        try:
            import resource

            resource.setrlimit(resource.RLIMIT_AS, (memory_limit, memory_limit))
        except (ImportError, ValueError, OSError):
            pass
    import aggregator.extract.article  # noqa: F401  (imported once, before the first page)

    conn.send(("ready", os.getpid()))
    while True:
        try:
            fn, args, kwargs = conn.recv()
        except (EOFError, OSError):
            return
        except Exception as exc:  # a call that cannot be unpickled here
            reply: tuple[str, Any] = ("error", f"{type(exc).__name__}: {exc}")
            conn.send(reply)
            continue
        try:
            reply = ("ok", fn(*args, **kwargs))
        except ExtractionError as exc:
            reply = ("error", str(exc))
        except MemoryError:
            reply = ("error", "the document needs more memory than an extraction worker may use")
        except Exception as exc:  # a bug or a parser failure: report it, keep serving
            reply = ("error", f"{type(exc).__name__}: {exc}")
        try:
            conn.send(reply)
        except (BrokenPipeError, OSError):
            return


class _Worker:
    def __init__(self, ctx: SpawnContext, memory_limit: int | None) -> None:
        parent_conn, child_conn = ctx.Pipe()
        self.process: SpawnProcess = ctx.Process(
            target=_serve,
            args=(child_conn, memory_limit),
            name="aggregator-extract",
            daemon=True,
        )
        self.process.start()
        child_conn.close()
        self.conn = parent_conn
        if not self.conn.poll(_START_TIMEOUT):
            self.kill()
            raise ExtractionError("an extraction worker did not start in time")
        try:
            self.conn.recv()
        except (EOFError, OSError) as exc:
            self.kill()
            raise ExtractionError("an extraction worker died while starting") from exc

    @property
    def pid(self) -> int | None:
        return self.process.pid

    def run(
        self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], timeout: float
    ) -> Any:
        """``fn(*args, **kwargs)`` in the worker; raises TimeoutError (worker must be killed)
        or ExtractionError (worker still usable unless it died)."""
        self.conn.send((fn, args, kwargs))
        if not self.conn.poll(timeout):
            raise TimeoutError
        status, payload = self.conn.recv()
        if status == "ok":
            return payload
        raise ExtractionError(str(payload))

    def alive(self) -> bool:
        return self.process.is_alive()

    def kill(self) -> None:
        if self.process.is_alive():
            self.process.kill()
        self.process.join(timeout=5)
        self.conn.close()
        self.process.close()

    def close(self) -> None:
        self.conn.close()  # the worker sees EOF and returns
        self.process.join(timeout=2)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(timeout=5)
        self.process.close()


class ExtractorPool:
    """Up to ``max_workers`` extraction processes, started on demand and reused.

    Thread-safe: concurrent callers each get a worker; when all are busy a caller waits (up to
    ``queue_timeout`` seconds) for one to come back.
    """

    def __init__(
        self,
        max_workers: int = DEFAULT_WORKERS,
        *,
        memory_limit: int | None = DEFAULT_MEMORY_LIMIT,
        queue_timeout: float = 120.0,
    ) -> None:
        if max_workers < 1:
            raise ValueError("max_workers must be >= 1")
        self.max_workers = max_workers
        self.memory_limit = memory_limit
        self.queue_timeout = queue_timeout
        self._ctx = multiprocessing.get_context("spawn")
        # Workers are started from one long-lived thread of the pool: the kernel's
        # parent-death signal fires when the *thread* that started a process ends, so a worker
        # started from a short-lived caller thread would die with that thread.
        self._spawner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="extract-spawner")
        self._idle: list[_Worker] = []
        self._started = 0  # workers alive: idle plus in use
        self._cond = threading.Condition()
        self._closed = False
        self.killed = 0  # workers killed for overrunning their time limit

    def extract(
        self,
        html: str,
        url: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        max_bytes: int = DEFAULT_MAX_BYTES,
        body_selector: str | None = None,
    ) -> Article:
        check_size(html, max_bytes)
        from aggregator.extract.article import extract_article

        article = self.call(
            extract_article, html, url, timeout=timeout, body_selector=body_selector
        )
        if not isinstance(article, Article):
            raise ExtractionError(f"the extraction worker answered {type(article).__name__}")
        return article

    def call(self, fn: Callable[..., _T], *args: Any, timeout: float, **kwargs: Any) -> _T:
        """``fn(*args, **kwargs)`` (a module-level function) in a worker, within ``timeout``
        seconds; raises ExtractionError when it fails, overruns (the worker is killed) or the
        worker dies."""
        worker = self._acquire()
        keep = True
        try:
            result: _T = worker.run(fn, args, kwargs, timeout)
            return result
        except TimeoutError:
            keep = False
            self.killed += 1
            raise ExtractionError(
                f"parsing took longer than {timeout:g} s (pathological HTML?); "
                "the worker was stopped"
            ) from None
        except ExtractionError:
            keep = worker.alive()
            raise
        except (EOFError, OSError) as exc:
            keep = False
            raise ExtractionError(
                f"the extraction worker died: {exc or type(exc).__name__}"
            ) from exc
        finally:
            self._release(worker, keep)

    def _acquire(self) -> _Worker:
        deadline = time.monotonic() + self.queue_timeout
        with self._cond:
            while True:
                if self._closed:
                    raise ExtractionError("the extraction pool is shut down")
                if self._idle:
                    return self._idle.pop()
                if self._started < self.max_workers:
                    self._started += 1
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    raise ExtractionError("no extraction worker became free in time")
                self._cond.wait(left)
        try:
            return self._spawner.submit(_Worker, self._ctx, self.memory_limit).result()
        except BaseException:
            with self._cond:
                self._started -= 1
                self._cond.notify()
            raise

    def _release(self, worker: _Worker, keep: bool) -> None:
        with self._cond:
            if keep and not self._closed and worker.alive():
                self._idle.append(worker)
                self._cond.notify()
                return
            self._started -= 1
            self._cond.notify()
        worker.kill()

    def worker_pids(self) -> list[int]:
        """Pids of the idle workers (for tests and diagnostics)."""
        with self._cond:
            return [w.pid for w in self._idle if w.pid is not None]

    def close(self) -> None:
        """Stop every idle worker; busy ones are stopped when their call returns."""
        with self._cond:
            self._closed = True
            idle, self._idle = self._idle, []
            self._started -= len(idle)
            self._cond.notify_all()
        for worker in idle:
            worker.close()
        # Busy workers were started by this thread too: they end with it (or their call).
        self._spawner.shutdown(wait=False)

    def __enter__(self) -> ExtractorPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def check_size(html: str, max_bytes: int) -> None:
    """Refuse a page over ``max_bytes`` (UTF-8) before any parsing."""
    if len(html) > max_bytes or (
        len(html) * 4 > max_bytes and len(html.encode("utf-8", "surrogatepass")) > max_bytes
    ):
        raise ExtractionError(
            f"page too large to extract: more than {max_bytes} bytes (limit max_bytes)"
        )


_default: ExtractorPool | None = None
_default_lock = threading.Lock()


def default_pool() -> ExtractorPool:
    """The process-wide pool (created on first use, shut down at exit)."""
    global _default
    with _default_lock:
        if _default is None or _default._closed:
            _default = ExtractorPool()
        return _default


def shutdown_default_pool() -> None:
    global _default
    with _default_lock:
        pool, _default = _default, None
    if pool is not None:
        pool.close()


atexit.register(shutdown_default_pool)


def extract_article_guarded(
    html: str,
    url: str | None = None,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    max_bytes: int = DEFAULT_MAX_BYTES,
    body_selector: str | None = None,
) -> Article:
    """``extract_article`` in a killable worker: raises ExtractionError when the page is over
    ``max_bytes``, when extraction takes longer than ``timeout`` seconds, or when it fails."""
    return default_pool().extract(
        html, url, timeout=timeout, max_bytes=max_bytes, body_selector=body_selector
    )


async def extract_article_guarded_async(
    html: str,
    url: str | None = None,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    max_bytes: int = DEFAULT_MAX_BYTES,
    body_selector: str | None = None,
) -> Article:
    """The asyncio form of ``extract_article_guarded`` (the wait runs on a thread)."""
    check_size(html, max_bytes)
    return await asyncio.to_thread(
        extract_article_guarded,
        html,
        url,
        timeout=timeout,
        max_bytes=max_bytes,
        body_selector=body_selector,
    )


async def call_guarded_async(
    fn: Callable[..., _T], *args: Any, timeout: float = DEFAULT_TIMEOUT, **kwargs: Any
) -> _T:
    """``fn(*args, **kwargs)`` in a killable worker of the default pool, awaited from asyncio
    (the wait runs on a thread); raises ExtractionError as ``ExtractorPool.call``."""
    return await asyncio.to_thread(
        functools.partial(default_pool().call, fn, *args, timeout=timeout, **kwargs)
    )


async def scrape_listing_guarded_async(
    html: str,
    base_url: str,
    selectors: PageSelectors,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> list[ListingItem]:
    """``scrape_listing`` in a killable worker, with the extractor's size cap and time limit."""
    from aggregator.extract.listing import scrape_listing

    check_size(html, max_bytes)
    return await call_guarded_async(scrape_listing, html, base_url, selectors, timeout=timeout)
