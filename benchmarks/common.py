"""Measuring helpers shared by the benchmarks: process-tree CPU and memory (Linux /proc), tables."""

from __future__ import annotations

import os
import resource
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from aggregator.store import Store

_TICK = os.sysconf("SC_CLK_TCK")


def descendants(pid: int) -> list[int]:
    """Live descendants of ``pid`` (children of every thread, recursively)."""
    found: list[int] = []
    todo = [pid]
    while todo:
        current = todo.pop()
        try:
            tasks = os.listdir(f"/proc/{current}/task")
        except OSError:
            continue
        for tid in tasks:
            try:
                text = Path(f"/proc/{current}/task/{tid}/children").read_text()
            except OSError:
                continue
            for child in text.split():
                found.append(int(child))
                todo.append(int(child))
    return found


def _status_kb(pid: int, field: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def rss_mb(pid: int | None = None) -> float:
    return _status_kb(pid or os.getpid(), "VmRSS") / 1024


def peak_rss_mb(pid: int | None = None) -> float:
    """VmHWM: the peak resident set of one process."""
    return _status_kb(pid or os.getpid(), "VmHWM") / 1024


def tree_rss_mb(pid: int | None = None) -> float:
    pid = pid or os.getpid()
    return sum(rss_mb(p) for p in [pid, *descendants(pid)])


def proc_cpu_seconds(pid: int) -> float:
    """user + system CPU seconds of one live process."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICK


def tree_cpu_seconds() -> float:
    """CPU seconds of this process, its live descendants and the children it has reaped."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    reaped = resource.getrusage(resource.RUSAGE_CHILDREN)
    live = sum(proc_cpu_seconds(p) for p in descendants(os.getpid()))
    return me.ru_utime + me.ru_stime + reaped.ru_utime + reaped.ru_stime + live


def smaps_mb(pid: int | None = None) -> tuple[float, float, float]:
    """RSS, PSS and USS of one process in MB, from /proc/PID/smaps_rollup (zeros if gone).

    RSS counts every resident page the process maps, shared ones in full, so the RSS of a
    process tree counts twice the pages its processes share (the interpreter and libraries
    every process maps; a forked child's pages not yet written). PSS divides each shared page
    among the processes that map it (other programs on the machine included), so PSS sums to
    the memory the tree takes; USS counts only the pages no other process maps."""
    pss = uss = rss = 0
    try:
        text = Path(f"/proc/{pid or os.getpid()}/smaps_rollup").read_text()
    except OSError:
        return 0.0, 0.0, 0.0
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        if name == "Rss":
            rss = int(rest.split()[0])
        elif name == "Pss":
            pss = int(rest.split()[0])
        elif name in ("Private_Clean", "Private_Dirty"):
            uss += int(rest.split()[0])
    return rss / 1024, pss / 1024, uss / 1024


def process_role(pid: int, root: int) -> str:
    """What a process of the benchmark's tree is, from its command line."""
    if pid == root:
        return "main"
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return "child"
    if "resource_tracker" in cmdline:
        return "resource tracker"
    if "forkserver" in cmdline:
        return "forkserver"
    if "spawn_main" in cmdline or "multiprocessing" in cmdline:
        return "pool process"
    return "child"


class TreeRssSampler:
    """Samples the resident set of this process and its descendants; keeps the peaks.

    VmHWM of the main process alone misses worker processes (a parse pool); the sum of their
    separate peaks overstates, since the peaks need not coincide. Sampling every 50 ms gives
    the true peak of the tree, give or take a short spike. Besides the sum of RSS (``peak_mb``),
    the sum of PSS (``peak_pss_mb``: shared pages divided among the processes that map them, see
    ``smaps_mb``) and of USS, each tree peak on its own, and per process role (``roles``: main,
    pool process, resource tracker; several pool processes summed) the peak RSS and PSS.

    Sampling is not free: the kernel walks a process's page tables to answer smaps_rollup
    (≈ 5 ms of CPU a sample for a 400 MB process), so the sampler's own thread CPU is kept in
    ``cpu_seconds`` for a benchmark to take out of the CPU it charges the system under test.
    """

    def __init__(self, interval: float = 0.05) -> None:
        self.interval = interval
        self.peak_mb = 0.0
        self.peak_pss_mb = 0.0
        self.peak_uss_mb = 0.0
        self.roles: dict[str, list[float]] = {}
        self.cpu_seconds = 0.0  # the sampler thread's own CPU (user + system), so far
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def sample(self) -> None:
        root = os.getpid()
        rss = pss = uss = 0.0
        roles: dict[str, list[float]] = {}
        for pid in [root, *descendants(root)]:
            r, p, u = smaps_mb(pid)
            if not r:  # gone since it was listed
                continue
            rss, pss, uss = rss + r, pss + p, uss + u
            role = roles.setdefault(process_role(pid, root), [0.0, 0.0])
            role[0] += r
            role[1] += p
        self.peak_mb = max(self.peak_mb, rss)
        self.peak_pss_mb = max(self.peak_pss_mb, pss)
        self.peak_uss_mb = max(self.peak_uss_mb, uss)
        for name, (r, p) in roles.items():
            peak = self.roles.setdefault(name, [0.0, 0.0])
            peak[0], peak[1] = max(peak[0], r), max(peak[1], p)

    def _run(self) -> None:
        start = time.thread_time()
        while not self._stop.wait(self.interval):
            self.sample()
            self.cpu_seconds = time.thread_time() - start

    def __enter__(self) -> TreeRssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()
        self.peak_mb = max(self.peak_mb, peak_rss_mb())


def table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain-text table: first column left-aligned, the others right-aligned."""
    cells = [[str(c) for c in header]] + [[_cell(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = []
    for n, row in enumerate(cells):
        parts = [row[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)
        ]
        lines.append("  ".join(parts).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if value >= 100:
            return f"{value:,.0f}"
        if value >= 10:
            return f"{value:.1f}"
        return f"{value:.2f}"
    return str(value)


def ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or b == 0:
        return "-"
    return f"{a / b:.2f}x"


@contextmanager
def fresh_store(db: str | None, name: str) -> Iterator[Store]:
    """An empty store for one benchmark run: SQLite in a temporary directory (``db`` None or a
    sqlite URL), or a new PostgreSQL database ``<name>_<random>`` created through the admin URL
    ``db`` and dropped afterwards."""
    from aggregator.store import open_store

    if db is None or db.startswith("sqlite"):
        with tempfile.TemporaryDirectory() as tmp:
            store = open_store(f"sqlite:///{tmp}/{name}.db")
            try:
                yield store
            finally:
                store.close()
        return
    import psycopg

    admin = db.replace("postgresql+psycopg://", "postgresql://")
    database = f"{name}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{database}"')
    store = open_store(f"{admin.rsplit('/', 1)[0]}/{database}")
    try:
        yield store
    finally:
        store.close()
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
