"""Watchlist hot reload: notice edits of the file, apply valid ones, refuse invalid ones.

Polling (mtime and size every ~2 s, then a content hash to confirm) needs no extra dependency,
works on every filesystem (NFS, bind mounts in containers, editors that replace the file by a
rename) and costs one ``stat`` per period. The last good watchlist stays in force whenever a new
version fails to load; its problems (``file:line: message``) are reported to a callback for the
log and ``/healthz``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

from aggregator.errors import ConfigError, ConfigProblem

log = logging.getLogger("aggregator.service.reload")

W = TypeVar("W")
MISSING_CHECKS = 2  # consecutive looks without the file before it is reported missing


@dataclass(frozen=True, slots=True)
class FileVersion:
    mtime_ns: int
    size: int
    digest: str


def read_version(path: Path) -> FileVersion | None:
    """The file's version, or None when it is missing (a rename in progress, say)."""
    try:
        st = path.stat()
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    return FileVersion(st.st_mtime_ns, st.st_size, hashlib.sha256(data).hexdigest())


class WatchlistWatcher(Generic[W]):
    """Loads ``path`` with ``load`` and calls ``on_change(new)`` or ``on_error(problems)``.

    ``check()`` is cheap when nothing changed (one stat); ``reload()`` forces a load (SIGHUP).
    The loader raises ``ConfigError`` for an invalid file; any other exception is reported the
    same way, so no edit can stop the service.
    """

    def __init__(
        self,
        path: Path,
        load: Callable[[Path], W],
        on_change: Callable[[W], None],
        on_error: Callable[[list[str]], None],
        interval: float = 2.0,
    ) -> None:
        self.path = path
        self._load = load
        self._on_change = on_change
        self._on_error = on_error
        self.interval = interval
        self._seen: FileVersion | None = None
        self._stat: tuple[int, int] | None = None
        self.current: W | None = None
        self._missing = 0

    def load_initial(self) -> W:
        """First load at start: an invalid watchlist is fatal here (nothing good to keep)."""
        version = read_version(self.path)
        if version is None:
            raise ConfigError([ConfigProblem(str(self.path), 0, "watchlist file not found")])
        self.current = self._load(self.path)
        self._seen = version
        self._stat = (version.mtime_ns, version.size)
        return self.current

    def check(self) -> bool:
        """Reload when the file changed since the last look; True when something was applied."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            # An editor replacing the file by a rename: gone for an instant. Still gone at the
            # next look: say so (the last good watchlist stays in force).
            self._missing += 1
            if self._missing == MISSING_CHECKS:
                self._on_error([f"{self.path}:0: watchlist file not found"])
            return False
        back = self._missing >= MISSING_CHECKS
        self._missing = 0
        stat = (st.st_mtime_ns, st.st_size)
        if stat == self._stat and not back:
            return False
        self._stat = stat
        version = read_version(self.path)
        if version is None:
            return False
        if not back and self._seen is not None and version.digest == self._seen.digest:
            return False  # touched, not changed
        return self._apply(version)

    def reload(self) -> bool:
        """Load the file now, changed or not (SIGHUP); True when the load succeeded."""
        version = read_version(self.path)
        if version is None:
            self._on_error([f"{self.path}:0: watchlist file not found"])
            return False
        self._stat = (version.mtime_ns, version.size)
        return self._apply(version)

    def _apply(self, version: FileVersion) -> bool:
        self._seen = version
        try:
            new = self._load(self.path)
        except ConfigError as exc:
            self._on_error([str(p) for p in exc.problems] or [str(exc)])
            return False
        except Exception as exc:  # a loader bug must not take the service down either
            log.exception("watchlist reload failed")
            self._on_error([f"{self.path}:0: {type(exc).__name__}: {exc}"])
            return False
        self.current = new
        self._on_change(new)
        return True

    async def watch(self, stop: asyncio.Event) -> None:
        """Poll until ``stop`` is set."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.interval)
            if stop.is_set():
                return
            try:
                self.check()
            except Exception:  # keep watching whatever happens
                log.exception("watchlist check failed")
