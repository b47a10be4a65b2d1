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


class UnreadableError(Exception):
    """The watchlist path exists but cannot be read as a file (a directory, no permission)."""


def read_version(path: Path) -> FileVersion | None:
    """The file's version, or None when it is missing (a rename in progress, say); raises
    UnreadableError when it cannot be read."""
    try:
        st = path.stat()
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except IsADirectoryError:
        raise UnreadableError("it is a directory, not a file") from None
    except OSError as exc:
        raise UnreadableError(exc.strerror or str(exc)) from None
    return FileVersion(st.st_mtime_ns, st.st_size, hashlib.sha256(data).hexdigest())


@dataclass(frozen=True, slots=True)
class _Look:
    """What one look at the file found: a version to load, or a problem to report."""

    version: FileVersion | None = None
    problem: str | None = None


class WatchlistWatcher(Generic[W]):
    """Loads ``path`` with ``load`` and calls ``on_change(new)`` or ``on_error(problems)``.

    ``check()`` is cheap when nothing changed (one stat); ``reload()`` forces a load (SIGHUP).
    The loader raises ``ConfigError`` for an invalid file; any other exception is reported the
    same way, so no edit can stop the service. A missing or unreadable file (a directory at
    the path) is reported too; the last good watchlist stays in force.

    In the service, ``watch()`` and ``reload_async()`` read and load the file on a thread, so
    the event loop keeps serving whatever the file holds; a load that takes longer than
    ``timeout`` seconds is reported as a problem and its result, if it ever comes, dropped
    (the loader's own limits, model.WatchlistLimits, bound what it can cost). The callbacks
    always run on the caller's thread (the loop).
    """

    def __init__(
        self,
        path: Path,
        load: Callable[[Path], W],
        on_change: Callable[[W], None],
        on_error: Callable[[list[str]], None],
        interval: float = 2.0,
        timeout: float = 60.0,
    ) -> None:
        self.path = path
        self._load = load
        self._on_change = on_change
        self._on_error = on_error
        self.interval = interval
        self.timeout = timeout
        self._seen: FileVersion | None = None
        self._stat: tuple[int, int] | None = None
        self.current: W | None = None
        self._missing = 0
        self._broken = False  # a missing/unreadable file was reported: reapply when back
        self._loading: asyncio.Future[W] | None = None  # a load still running on its thread

    def load_initial(self) -> W:
        """First load at start: an invalid watchlist is fatal here (nothing good to keep)."""
        try:
            version = read_version(self.path)
        except UnreadableError as exc:
            raise ConfigError(
                [ConfigProblem(str(self.path), 0, f"cannot read the watchlist: {exc}")]
            ) from None
        if version is None:
            raise ConfigError([ConfigProblem(str(self.path), 0, "watchlist file not found")])
        self.current = self._load(self.path)
        self._seen = version
        self._stat = (version.mtime_ns, version.size)
        return self.current

    def _look(self) -> _Look:
        """Whether the file changed since the last look (no callbacks: may run on a thread)."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            # An editor replacing the file by a rename: gone for an instant. Still gone at the
            # next look: say so (the last good watchlist stays in force).
            self._missing += 1
            if self._missing == MISSING_CHECKS:
                return _Look(problem=f"{self.path}:0: watchlist file not found")
            return _Look()
        except OSError as exc:
            return self._unreadable(exc.strerror or str(exc))
        back = self._missing >= MISSING_CHECKS or self._broken
        self._missing = 0
        stat = (st.st_mtime_ns, st.st_size)
        if stat == self._stat and not back:
            return _Look()
        self._stat = stat
        try:
            version = read_version(self.path)
        except UnreadableError as exc:
            return self._unreadable(str(exc))
        if version is None:
            return _Look()
        if not back and self._seen is not None and version.digest == self._seen.digest:
            return _Look()  # touched, not changed
        return _Look(version=version)

    def _unreadable(self, why: str) -> _Look:
        if self._broken:
            return _Look()  # said already
        self._broken = True
        return _Look(problem=f"{self.path}:0: cannot read the watchlist: {why}")

    def check(self) -> bool:
        """Reload when the file changed since the last look; True when something was applied."""
        look = self._look()
        if look.problem is not None:
            self._on_error([look.problem])
        if look.version is None:
            return False
        self._seen = look.version
        return self._settle(lambda: self._load(self.path))

    def reload(self) -> bool:
        """Load the file now, changed or not (SIGHUP); True when the load succeeded."""
        version = self._forced_version()
        if version is None:
            return False
        return self._settle(lambda: self._load(self.path))

    def _forced_version(self) -> FileVersion | None:
        try:
            version = read_version(self.path)
        except UnreadableError as exc:
            self._broken = True
            self._on_error([f"{self.path}:0: cannot read the watchlist: {exc}"])
            return None
        if version is None:
            self._on_error([f"{self.path}:0: watchlist file not found"])
            return None
        self._stat = (version.mtime_ns, version.size)
        self._seen = version
        return version

    def _settle(self, load: Callable[[], W]) -> bool:
        try:
            new = load()
        except Exception as exc:
            self._on_error(self._problems(exc))
            return False
        self._commit(new)
        return True

    def _problems(self, exc: BaseException) -> list[str]:
        if isinstance(exc, ConfigError):
            return [str(p) for p in exc.problems] or [str(exc)]
        if isinstance(exc, TimeoutError):
            return [
                f"{self.path}:0: loading the watchlist took longer than {self.timeout:g} s; "
                "refused (AGGREGATOR_WATCHLIST_LOAD_TIMEOUT)"
            ]
        # A loader bug must not take the service down either.
        log.error("watchlist reload failed", exc_info=exc)
        return [f"{self.path}:0: {type(exc).__name__}: {exc}"]

    def _commit(self, new: W) -> None:
        self._broken = False
        self.current = new
        self._on_change(new)

    # ------------------------------------------------------------ off the event loop

    async def check_async(self) -> bool:
        """``check()`` with the file read and loaded on a thread, within ``timeout``."""
        if self._loading is not None:
            return False  # a slow load is still running on its thread: let it end first
        look = await asyncio.to_thread(self._look)
        if look.problem is not None:
            self._on_error([look.problem])
        if look.version is None:
            return False
        self._seen = look.version
        return await self._load_async()

    async def reload_async(self) -> bool:
        """``reload()`` with the file read and loaded on a thread, within ``timeout``."""
        if self._loading is not None:
            self._on_error([f"{self.path}:0: a previous load of the watchlist is still running"])
            return False
        if await asyncio.to_thread(self._forced_version) is None:
            return False
        return await self._load_async()

    async def _load_async(self) -> bool:
        loading = asyncio.get_running_loop().run_in_executor(None, self._load, self.path)
        self._loading = loading
        loading.add_done_callback(self._load_ended)
        try:
            new = await asyncio.wait_for(asyncio.shield(loading), self.timeout)
        except Exception as exc:
            self._on_error(self._problems(exc))
            return False
        self._commit(new)
        return True

    def _load_ended(self, future: asyncio.Future[W]) -> None:
        if self._loading is future:
            self._loading = None
        if not future.cancelled():
            future.exception()  # retrieved: a late failure is not logged as never seen

    async def watch(self, stop: asyncio.Event) -> None:
        """Poll until ``stop`` is set."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.interval)
            if stop.is_set():
                return
            try:
                await self.check_async()
            except Exception:  # keep watching whatever happens
                log.exception("watchlist check failed")
