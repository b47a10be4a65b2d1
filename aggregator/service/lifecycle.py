"""Process lifecycle: who this replica is, the one-replica lock on SQLite, the uvicorn server.

SQLite serves one process well and several badly (one writer, no ``SKIP LOCKED``), so a second
``aggregator run`` on the same SQLite file must refuse to start instead of fetching every
source twice. The lock is ``flock`` on a file next to the database: the kernel drops it when
the process dies, even by ``kill -9``, so a crash never leaves a stale lock behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import uuid
from collections.abc import Generator
from pathlib import Path
from typing import IO

import uvicorn

from aggregator.errors import AggregatorError


class ReplicaLockError(AggregatorError):
    """Another service already runs on this SQLite database."""


def owner_id() -> str:
    """A name for this replica in leases and logs: host, pid and a random suffix."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def sqlite_path(db_url: str) -> Path | None:
    """The database file of a ``sqlite:///`` URL; None for other databases or in-memory."""
    if not db_url.startswith("sqlite"):
        return None
    _, _, rest = db_url.partition(":///")
    rest = rest.split("?", 1)[0]
    if not rest or rest == ":memory:":
        return None
    return Path(rest)


class ReplicaLock:
    """An exclusive, non-blocking ``flock`` held for the life of the service."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: IO[str] | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        f = open(self.path, "a+", encoding="utf-8")  # noqa: SIM115 (held until release)
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "unknown"
            f.close()
            raise ReplicaLockError(
                f"another aggregator service is already running on this SQLite database "
                f"(lock {self.path} held by {holder}). SQLite supports one replica; stop the "
                f"other one, or use PostgreSQL (--db postgresql+psycopg://...) to run several."
            ) from None
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        f.flush()
        self._file = f

    def release(self) -> None:
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.seek(0)
                self._file.truncate()
                fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)
            self._file.close()
            self._file = None

    def __enter__(self) -> ReplicaLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def replica_lock_for(db_url: str) -> ReplicaLock | None:
    """The lock to hold for this database: one for an SQLite file, none for PostgreSQL."""
    path = sqlite_path(db_url)
    if path is None:
        return None
    return ReplicaLock(path.with_name(path.name + ".lock"))


class Server(uvicorn.Server):
    """uvicorn without its own signal handling: the service handles SIGTERM/SIGINT/SIGHUP.

    uvicorn re-raises a captured SIGTERM after it stops, which would end the process with
    status -15 instead of the 0 a graceful shutdown owes systemd and Docker.
    """

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield
