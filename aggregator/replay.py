"""Offline demo: serve recorded feeds and pages on 127.0.0.1 and point the sources at them.

``aggregator run --replay fixtures/`` lets a newcomer without internet watch the whole pipeline
(fetch → records → developments → feeds) on recordings. The recordings live in a directory with
a ``manifest.yaml`` (``fixtures/replay/``; ``--replay fixtures/`` finds it there)::

    sources:
      lrt-en: feeds/lrt-en.rss          # by source id ...
      https://example.org/feed: x.atom  # ... or by the source's URL

Every file under the directory is served at its relative path, with a content type from its
extension, an ETag (so conditional GETs get 304s like on the real web) and a permissive
robots.txt unless one is recorded. A source without a recording is disabled in replay mode, so
the demo never reaches the internet. Page sources should use relative links in their listing
recordings and ``<link rel="canonical">`` to the original URL in article recordings: then the
records keep the same ids whatever port the replay server gets. Feed sources lose ``full_text``
in replay mode (their linked pages are not recorded; the entries carry the full text).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import mimetypes
import threading
import time
from collections import Counter
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import yaml

from aggregator.errors import ConfigError, ConfigProblem
from aggregator.model import Source, SourceKind

log = logging.getLogger("aggregator.replay")

MANIFEST = "manifest.yaml"
LOOPBACK_NETWORK = "127.0.0.1/32"
CONTENT_TYPES = {
    ".rss": "application/rss+xml; charset=utf-8",
    ".atom": "application/atom+xml; charset=utf-8",
    ".xml": "application/xml; charset=utf-8",
    ".json": "application/feed+json; charset=utf-8",
    ".html": "text/html; charset=utf-8",
    ".htm": "text/html; charset=utf-8",
    ".txt": "text/plain; charset=utf-8",
}
PERMISSIVE_ROBOTS = b"User-agent: *\nAllow: /\n"


def replay_root(directory: str | Path) -> Path:
    """The recordings directory: ``DIR`` itself or ``DIR/replay``, whichever has a manifest."""
    base = Path(directory)
    for candidate in (base, base / "replay"):
        if (candidate / MANIFEST).is_file():
            return candidate
    raise ConfigError(
        [ConfigProblem(str(base / MANIFEST), 0, "no replay manifest.yaml here or in replay/")]
    )


def load_manifest(root: Path) -> dict[str, str]:
    """``{source id or URL: relative file path}``; every file must exist inside ``root``."""
    path = root / MANIFEST
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 0
        raise ConfigError([ConfigProblem(str(path), line, f"invalid YAML: {exc}")]) from None
    sources = data.get("sources") if isinstance(data, dict) else None
    if not isinstance(sources, dict):
        raise ConfigError([ConfigProblem(str(path), 1, "expected a 'sources:' mapping")])
    problems = []
    mapping: dict[str, str] = {}
    for key, rel in sources.items():
        target = (root / str(rel)).resolve()
        if not target.is_file() or not target.is_relative_to(root.resolve()):
            problems.append(ConfigProblem(str(path), 0, f"{key}: no recorded file {rel!r}"))
            continue
        mapping[str(key)] = str(rel)
    if problems:
        raise ConfigError(problems)
    return mapping


class _Handler(BaseHTTPRequestHandler):
    server: _ReplayHTTPServer
    protocol_version = "HTTP/1.1"

    def do_HEAD(self) -> None:
        self._serve(body=False)

    def do_GET(self) -> None:
        self._serve(body=True)

    def _serve(self, body: bool) -> None:
        rel = unquote(urlsplit(self.path).path).lstrip("/")
        self.server.hits[rel] += 1
        if self.server.latency:
            time.sleep(self.server.latency)
        data = self.server.read(rel)
        if data is None and rel == "robots.txt":
            data = PERMISSIVE_ROBOTS
        if data is None:
            self._send(404, b"not recorded\n", "text/plain; charset=utf-8", body)
            return
        etag = '"' + hashlib.sha256(data).hexdigest()[:32] + '"'
        if self.headers.get("If-None-Match") == etag:
            self.send_response(304)
            self.send_header("ETag", etag)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        suffix = Path(rel).suffix.lower()
        ctype = CONTENT_TYPES.get(suffix) or mimetypes.guess_type(rel)[0] or "text/plain"
        self._send(200, data, ctype, body, etag)

    def _send(self, status: int, data: bytes, ctype: str, body: bool, etag: str = "") -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        if etag:
            self.send_header("ETag", etag)
            self.send_header("Last-Modified", formatdate(self.server.started, usegmt=True))
        self.end_headers()
        if body:
            self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("replay: " + format, *args)


class _ReplayHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, root: Path, port: int, latency: float) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        self.root = root.resolve()
        self.latency = latency
        self.hits: Counter[str] = Counter()
        self.started = time.time()

    def read(self, rel: str) -> bytes | None:
        target = (self.root / rel).resolve()
        if not target.is_relative_to(self.root) or not target.is_file():
            return None
        return target.read_bytes()


class ReplayServer:
    """Serves a recordings directory on 127.0.0.1 in a background thread.

    ``latency`` delays every response by that many seconds, to watch (or test) the pipeline
    against a slow network.
    """

    def __init__(self, directory: str | Path, port: int = 0, latency: float = 0.0) -> None:
        if latency < 0:
            raise ValueError(f"replay latency must not be negative, got {latency}")
        self.root = replay_root(directory)
        self.manifest = load_manifest(self.root)
        self._server = _ReplayHTTPServer(self.root, port, latency)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="replay-server", daemon=True
        )

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/"

    @property
    def hits(self) -> Counter[str]:
        return self._server.hits

    def start(self) -> ReplayServer:
        self._thread.start()
        log.info("replaying recordings from %s at %s", self.root, self.base_url)
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def url_for(self, source: Source) -> str | None:
        rel = self.manifest.get(source.id) or self.manifest.get(source.url)
        return self.base_url + rel if rel is not None else None

    def rewrite(self, watchlist: Any) -> Any:
        """The watchlist with every recorded source pointed here and the others disabled.

        The fetch policy lets loopback through the SSRF guard and drops the per-host delay
        (every source now lives on one host).
        """
        sources = []
        for source in watchlist.sources:
            url = self.url_for(source)
            if url is None:
                if source.enabled:
                    log.warning("no recording for source %s: not fetched in replay mode", source.id)
                sources.append(dataclasses.replace(source, enabled=False))
            else:
                # Linked article pages of a feed are not recorded: full text would go online.
                full_text = source.full_text and source.kind == SourceKind.PAGE
                sources.append(dataclasses.replace(source, url=url, full_text=full_text))
        policy = watchlist.fetch
        networks = tuple(policy.allow_networks)
        if LOOPBACK_NETWORK not in networks:
            networks += (LOOPBACK_NETWORK,)
        policy = dataclasses.replace(
            policy,
            allow_networks=networks,
            min_host_interval_seconds=0.0,
            per_host_concurrency=max(policy.per_host_concurrency, policy.max_in_flight),
        )
        return dataclasses.replace(watchlist, sources=tuple(sources), fetch=policy)
