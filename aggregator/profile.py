"""Seconds spent per pipeline stage, for the benchmarks and ``/metrics``.

Off by default and then nearly free: ``stage(name)`` returns one shared do-nothing context
manager. ``enable()`` installs a process-wide ``StageTimes`` accumulator; from then on every
``with stage("parse"):`` adds its wall time to "parse". Stages nest: time spent in a stage opened
inside another one (in the same thread or asyncio task) counts for the inner stage only, so
``store`` wrapping a transaction that calls ``match`` and ``dedup`` reports the store's own time.

Times measured elsewhere (a process-pool worker timing its own parse) are added with
``add(name, seconds)``. Stage names are free-form; ``STAGES`` lists the ones the pipeline uses.

Each stage also gets the CPU time of its thread (``time.thread_time``) over its blocks, nested
stages excluded: wall time of a block on a worker thread includes the time it waited for the GIL
while the event loop ran, its CPU time does not. A block that awaits (``fetch``) counts the CPU
of whatever else its thread ran meanwhile, so its CPU figure means nothing.
Pure data and the standard library only: any layer may import it.
"""

from __future__ import annotations

import threading
import time
from asyncio import current_task
from asyncio.events import _get_running_loop
from contextvars import ContextVar
from dataclasses import dataclass
from types import TracebackType

STAGES = ("fetch", "parse", "extract", "match", "dedup", "store", "publish")


@dataclass(frozen=True, slots=True)
class StageTotal:
    seconds: float  # own wall time (nested stages excluded)
    calls: int
    cpu: float = 0.0  # own CPU time of its thread (nested stages excluded)


class _Frame:
    """One open stage; collects the time of the stages nested in it."""

    __slots__ = ("child", "child_cpu", "owner")

    def __init__(self, owner: int) -> None:
        self.child = 0.0
        self.child_cpu = 0.0
        self.owner = owner


def _owner() -> int:
    """The asyncio task running this code, else the thread: stages nest only within one."""
    loop = _get_running_loop()
    task = current_task(loop) if loop is not None else None
    return id(task) if task is not None else threading.get_ident()


_current: ContextVar[_Frame | None] = ContextVar("aggregator_profile_frame", default=None)


class StageTimes:
    """A thread-safe accumulator of seconds and calls per stage name."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seconds: dict[str, float] = {}
        self._calls: dict[str, int] = {}
        self._cpu: dict[str, float] = {}

    def add(self, name: str, seconds: float, calls: int = 1, cpu: float = 0.0) -> None:
        with self._lock:
            self._seconds[name] = self._seconds.get(name, 0.0) + seconds
            self._calls[name] = self._calls.get(name, 0) + calls
            self._cpu[name] = self._cpu.get(name, 0.0) + cpu

    def snapshot(self) -> dict[str, StageTotal]:
        with self._lock:
            return {
                n: StageTotal(s, self._calls[n], self._cpu[n]) for n, s in self._seconds.items()
            }

    def reset(self) -> None:
        with self._lock:
            self._seconds.clear()
            self._calls.clear()
            self._cpu.clear()


class _Timed:
    __slots__ = ("_cpu", "_frame", "_name", "_parent", "_start", "_times", "_token")

    def __init__(self, times: StageTimes, name: str) -> None:
        self._times = times
        self._name = name

    def __enter__(self) -> None:
        owner = _owner()
        parent = _current.get()
        # A task started inside a stage inherits its frame; its time is its own, not nested.
        self._parent = parent if parent is not None and parent.owner == owner else None
        self._frame = _Frame(owner)
        self._token = _current.set(self._frame)
        self._cpu = time.thread_time()
        self._start = time.perf_counter()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        elapsed = time.perf_counter() - self._start
        cpu = time.thread_time() - self._cpu
        try:
            _current.reset(self._token)
        except ValueError:  # exited in another context than it was entered in
            _current.set(self._parent)
        if self._parent is not None:
            self._parent.child += elapsed
            self._parent.child_cpu += cpu
        frame = self._frame
        self._times.add(
            self._name, max(0.0, elapsed - frame.child), 1, max(0.0, cpu - frame.child_cpu)
        )


class _Null:
    __slots__ = ()

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


_NULL = _Null()
_active: StageTimes | None = None


def stage(name: str) -> _Timed | _Null:
    """``with stage("parse"): ...`` adds the block's wall time to "parse" when profiling is on."""
    times = _active
    if times is None:
        return _NULL
    return _Timed(times, name)


def add(name: str, seconds: float, calls: int = 1, cpu: float = 0.0) -> None:
    """Adds seconds measured elsewhere (e.g. returned by a worker process) to a stage."""
    times = _active
    if times is not None:
        times.add(name, seconds, calls, cpu)


def enable() -> StageTimes:
    """Turns profiling on for the process (idempotent); returns the accumulator."""
    global _active
    if _active is None:
        _active = StageTimes()
    return _active


def disable() -> None:
    global _active
    _active = None


def active() -> StageTimes | None:
    return _active


def snapshot() -> dict[str, StageTotal]:
    """The totals so far; empty when profiling is off."""
    times = _active
    return times.snapshot() if times is not None else {}
