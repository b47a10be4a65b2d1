"""Cycle time of 1 and 2 service replicas on one PostgreSQL, over the same loopback feeds.

    python benchmarks/replicas_bench.py                         # 300 feeds, 1 then 2 replicas
    python benchmarks/replicas_bench.py --feeds 500 --replicas 1 2 3 --repeat 2
    python benchmarks/replicas_bench.py --json out.json

What runs is the real service: ``python -m aggregator run`` subprocesses (scheduler, claims with
``FOR UPDATE SKIP LOCKED``, leases renewed while fetches run, the fetch pipeline, ingest with
advisory locks) against ``benchmarks/feedserver.py`` in its own process and a fresh PostgreSQL
database per run (dropped at the end). Per run:

1. the replicas start on a watchlist without sources and become ready (imports, migrations and
   pools are not part of the measurement);
2. **cold cycle**: the full watchlist is written and every replica gets SIGHUP; the new sources
   are scheduled at once, claimed and fetched; timed until every source has been fetched once
   and every replica is idle. Every entry of every feed is new: parse, match, dedup, insert;
3. **changed cycle**: the server moves one generation on (a fifth of the feeds gain 1-5 items),
   every source is made due in the database, and the replicas' claim sweep picks them up:
   mostly conditional requests answered 304, a few hundred new records. Timed from the first
   request the server sees to the same end.

Printed per run: seconds, feeds/s, records stored, fetches per replica, CPU seconds of each
replica, of the feed server, of the database's backends (the PostgreSQL processes serving these
connections) and of the whole machine (other work on it included), requests the server counted
and feeds it served twice (must be 0: each feed fetched once per cycle). Then the ratio of
cycle times 1 replica / N replicas.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: make ``benchmarks`` and ``aggregator`` importable
    sys.path.insert(0, str(ROOT))

from benchmarks.common import descendants, proc_cpu_seconds, ratio, table  # noqa: E402
from benchmarks.feedserver import FeedServerProcess  # noqa: E402

DEFAULT_PG = "postgresql://127.0.0.1:5432/test"
TICK = os.sysconf("SC_CLK_TCK")


# --- the watchlist ------------------------------------------------------------------------------


def watchlist_text(urls: Sequence[str], in_flight: int) -> str:
    sources = "".join(
        f"  - id: feed{i:05d}\n    kind: feed\n    url: {url}\n" for i, url in enumerate(urls)
    )
    body = "\n" + sources if sources else " []\n"
    return f"""\
version: 1
defaults:
  schedule: {{every: 6h}}
fetch:
  allow_networks: ["127.0.0.0/8"]
  min_host_interval_seconds: 0
  max_in_flight: {in_flight}
topics:
  - id: all
    title: Everything
    rules:
      any: ["/./"]
sources:{body}"""


def write_atomically(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


# --- the database ---------------------------------------------------------------------------------


@contextmanager
def fresh_database(admin_url: str) -> Iterator[str]:
    """A new, migrated database; its SQLAlchemy URL. Dropped at the end."""
    import psycopg
    import sqlalchemy as sa

    from aggregator.store import open_store

    admin = admin_url.replace("postgresql+psycopg://", "postgresql://")
    name = f"replicas_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = sa.engine.make_url(admin).set(drivername="postgresql+psycopg", database=name)
    text_url = url.render_as_string(hide_password=False)
    try:
        open_store(text_url).close()  # migrate once, before the replicas start
        yield text_url
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class Database:
    """Plain queries the benchmark makes beside the replicas."""

    def __init__(self, url: str) -> None:
        import sqlalchemy as sa

        self.sa = sa
        self.engine = sa.create_engine(url, poolclass=sa.pool.NullPool)

    def scalar(self, sql: str, **params: Any) -> Any:
        with self.engine.connect() as conn:
            return conn.execute(self.sa.text(sql), params).scalar_one()

    def execute(self, sql: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(self.sa.text(sql))

    def backend_pids(self) -> list[int]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                self.sa.text(
                    "SELECT pid FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            ).scalars()
            return [int(p) for p in rows]

    def fetched(self, times: int) -> int:
        """Sources fetched at least ``times`` times (a cycle is over when all of them are)."""
        sql = "SELECT count(*) FROM fetch_state WHERE fetch_count >= :n"
        return int(self.scalar(sql, n=times))

    def close(self) -> None:
        self.engine.dispose()


# --- the replicas -----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Replica:
    def __init__(self, proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
        self.proc = proc
        self.port = port
        self.log = log

    def _get(self, path: str) -> bytes:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=10) as r:
            body: bytes = r.read()
            return body

    def health(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self._get("/healthz"))
        return data

    def fetches(self) -> float:
        """Fetches done (not counting wake-ups of sources that were not due)."""
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in self._get("/metrics").decode().splitlines()
            if line.startswith("aggregator_fetches_total{") and 'result="not-due"' not in line
        )

    def idle(self) -> bool:
        h = self.health()
        return bool(h["ready"] and h["in_flight"] == 0 and h["queue_depth"] == 0)

    def cpu(self) -> float:
        return sum(proc_cpu_seconds(p) for p in [self.proc.pid, *descendants(self.proc.pid)])


@contextmanager
def start_replica(
    db_url: str, config: Path, workdir: Path, lease: float, n: int
) -> Iterator[Replica]:
    port = free_port()
    env = {
        **os.environ,
        "AGGREGATOR_LEASE_SECONDS": str(lease),
        "AGGREGATOR_LOG_FORMAT": "json",
        "AGGREGATOR_DATA_DIR": str(workdir),
    }
    log = workdir / f"replica{n}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable, "-m", "aggregator", "--db", db_url, "--config", str(config),
                "run", "--port", str(port), "--no-seeds",
            ],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        yield Replica(proc, port, log)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


def wait_for(check: Callable[[], bool], timeout: float, what: str, replicas: list[Replica]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for r in replicas:
            if r.proc.poll() is not None:
                raise RuntimeError(f"replica exited: {r.log.read_text()[-2000:]}")
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"timed out waiting for {what}")


# --- measuring ----------------------------------------------------------------------------------


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine spent not idle (all cores, every process)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / TICK


@dataclass
class CpuSnapshot:
    replicas: list[float]
    server: float
    backends: dict[int, float]
    machine: float

    @classmethod
    def take(cls, replicas: list[Replica], server: FeedServerProcess, db: Database) -> CpuSnapshot:
        return cls(
            replicas=[r.cpu() for r in replicas],
            server=server.cpu_seconds(),
            backends={pid: proc_cpu_seconds(pid) for pid in db.backend_pids()},
            machine=machine_busy_seconds(),
        )


class BackendSampler:
    """Samples what the database's client backends are doing, every 0.1 s: running a query
    (``active``), waiting (``wait: Lock/advisory``, ``wait: IO/WALSync`` ...), or ``idle in
    transaction`` (the replica is working in Python between two statements)."""

    QUERY = (
        "SELECT state, wait_event_type, wait_event FROM pg_stat_activity "
        "WHERE datname = current_database() AND pid <> pg_backend_pid() "
        "AND backend_type = 'client backend'"
    )

    def __init__(self, db: Database, interval: float = 0.1) -> None:
        self.db = db
        self.interval = interval
        self.samples = 0
        self.tally: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pg-sampler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        sa = self.db.sa
        with self.db.engine.connect() as conn:
            while not self._stop.wait(self.interval):
                rows = conn.execute(sa.text(self.QUERY)).all()
                conn.rollback()
                self.samples += 1
                for state, wait_type, wait in rows:
                    if state == "idle":
                        continue
                    if state == "active" and wait_type and wait_type != "Client":
                        key = f"wait: {wait_type}/{wait}"
                    else:
                        key = str(state)
                    self.tally[key] = self.tally.get(key, 0) + 1

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def means(self) -> dict[str, float]:
        if not self.samples:
            return {}
        ordered = sorted(self.tally.items(), key=lambda kv: -kv[1])
        return {k: round(v / self.samples, 3) for k, v in ordered}


@dataclass
class Cycle:
    replicas: int
    kind: str  # cold | changed
    seconds: float
    feeds: int
    records: int  # stored during this cycle
    requests: int
    fetched_twice: int
    fetches: list[float] = field(default_factory=list)  # per replica
    replica_cpu: list[float] = field(default_factory=list)
    server_cpu: float = 0.0
    database_cpu: float = 0.0
    machine_cpu: float = 0.0
    span: float = 0.0  # wall seconds between the CPU snapshots
    not_modified: int = 0
    # Mean number of the database's client backends in each state over the cycle.
    database_states: dict[str, float] = field(default_factory=dict)

    @property
    def feeds_per_second(self) -> float:
        return self.feeds / self.seconds if self.seconds else 0.0

    @property
    def cores_busy(self) -> float:
        return self.machine_cpu / self.span if self.span else 0.0


def measure(
    kind: str,
    replicas: list[Replica],
    server: FeedServerProcess,
    db: Database,
    trigger: Callable[[], None],
    epoch: int,
    feeds: int,
    start_at_first_request: bool,
) -> Cycle:
    fetched_before = [r.fetches() for r in replicas]
    records_before = int(db.scalar("SELECT count(*) FROM records"))
    server.reset_counts()
    sampler = BackendSampler(db)
    sampler.start()
    before = CpuSnapshot.take(replicas, server, db)
    started = snapped = time.monotonic()
    trigger()
    if start_at_first_request:  # the claim sweep starts the cycle: time it from its first fetch
        wait_for(lambda: server.counts()["total"] > 0, 120, f"the {kind} cycle", replicas)
        started = time.monotonic()

    def done() -> bool:
        return db.fetched(epoch) >= feeds and all(r.idle() for r in replicas)

    wait_for(done, 3600, f"the {kind} cycle to finish", replicas)
    seconds = time.monotonic() - started
    after = CpuSnapshot.take(replicas, server, db)
    span = time.monotonic() - snapped
    sampler.stop()
    counts = server.counts()
    return Cycle(
        replicas=len(replicas),
        kind=kind,
        seconds=seconds,
        feeds=feeds,
        records=int(db.scalar("SELECT count(*) FROM records")) - records_before,
        requests=int(counts["total"]),
        fetched_twice=sum(1 for n in counts["paths"].values() if n > 1),
        not_modified=int(counts.get("by_status", {}).get("304", 0)),
        fetches=[r.fetches() - b for r, b in zip(replicas, fetched_before, strict=True)],
        replica_cpu=[a - b for a, b in zip(after.replicas, before.replicas, strict=True)],
        server_cpu=after.server - before.server,
        database_cpu=sum(
            cpu - before.backends.get(pid, 0.0) for pid, cpu in after.backends.items()
        ),
        machine_cpu=after.machine - before.machine,
        span=span,
        database_states=sampler.means(),
    )


def run_replicas(
    n: int, server: FeedServerProcess, args: argparse.Namespace, workdir: Path
) -> list[Cycle]:
    server.rewind()
    with fresh_database(args.pg) as db_url, ExitStack() as stack:
        db = Database(db_url)
        stack.callback(db.close)
        config = workdir / "watchlist.yaml"
        write_atomically(config, watchlist_text([], args.in_flight))
        replicas = [
            stack.enter_context(start_replica(db_url, config, workdir, args.lease, i))
            for i in range(n)
        ]
        wait_for(lambda: all(r.health()["ready"] for r in replicas), 120, "ready", replicas)
        full = watchlist_text(server.urls(), args.in_flight)

        def reload() -> None:
            write_atomically(config, full)
            for r in replicas:
                r.proc.send_signal(signal.SIGHUP)

        cold = measure("cold", replicas, server, db, reload, 1, args.feeds, False)
        server.advance()

        def make_due() -> None:
            db.execute("UPDATE fetch_state SET next_fetch = NULL")

        changed = measure("changed", replicas, server, db, make_due, 2, args.feeds, True)
        return [cold, changed]


# --- output -------------------------------------------------------------------------------------


def print_cycles(cycles: list[Cycle]) -> None:
    rows = []
    for c in cycles:
        rows.append(
            [
                f"{c.kind}, {c.replicas} replica{'s' if c.replicas > 1 else ''}",
                c.seconds,
                c.feeds_per_second,
                c.records,
                c.records / c.seconds if c.seconds else 0.0,
                " / ".join(f"{f:.0f}" for f in c.fetches),
                " / ".join(f"{x:.1f}" for x in c.replica_cpu),
                c.server_cpu,
                c.database_cpu,
                c.cores_busy,
                c.requests,
                c.fetched_twice,
            ]
        )
    header = [
        "cycle",
        "seconds",
        "feeds/s",
        "records",
        "records/s",
        "fetches per replica",
        "CPU s per replica",
        "server CPU s",
        "PG CPU s",
        "cores busy",
        "requests",
        "twice",
    ]
    print(table(header, rows))


def best(cycles: list[Cycle], kind: str, n: int) -> Cycle | None:
    found = [c for c in cycles if c.kind == kind and c.replicas == n]
    return min(found, key=lambda c: c.seconds) if found else None


def print_summary(cycles: list[Cycle], counts: Sequence[int]) -> None:
    base = min(counts)
    print()
    for kind in ("cold", "changed"):
        one = best(cycles, kind, base)
        for n in sorted(set(counts) - {base}):
            other = best(cycles, kind, n)
            if one is None or other is None:
                continue
            print(
                f"{kind} cycle: {n} replicas vs {base}: "
                f"{ratio(one.seconds, other.seconds)} faster "
                f"({one.seconds:.1f} s -> {other.seconds:.1f} s; feeds/s "
                f"{one.feeds_per_second:.1f} -> {other.feeds_per_second:.1f})"
            )
    print()
    print("database backends, mean number in each state over the cycle:")
    for c in cycles:
        states = ", ".join(f"{k} {v:.2f}" for k, v in list(c.database_states.items())[:5])
        print(f"  {c.kind}, {c.replicas} replica(s): {states or '-'}")
    print()
    for c in cycles:
        if c.kind != "cold":
            continue
        accounted = sum(c.replica_cpu) + c.server_cpu + c.database_cpu
        print(
            f"cold, {c.replicas} replica(s): machine busy {c.cores_busy:.2f} of "
            f"{os.cpu_count()} cores; of its {c.machine_cpu:.0f} CPU s, replicas "
            f"{sum(c.replica_cpu):.0f} s, PostgreSQL backends {c.database_cpu:.0f} s, feed "
            f"server {c.server_cpu:.1f} s, other processes {c.machine_cpu - accounted:.0f} s"
        )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--feeds", type=int, default=300)
    parser.add_argument("--hosts", type=int, default=32, help="loopback addresses the feeds use")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--replicas", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeat", type=int, default=1, help="runs per replica count")
    parser.add_argument("--in-flight", type=int, default=16, help="fetches at once per replica")
    parser.add_argument("--lease", type=float, default=10.0, help="AGGREGATOR_LEASE_SECONDS")
    parser.add_argument("--pg", default=DEFAULT_PG, help="admin URL; a database is made per run")
    parser.add_argument("--json", type=Path, help="write every figure here")
    parser.add_argument("--keep-logs", type=Path, help="copy the replicas' logs here")
    args = parser.parse_args(argv)

    cycles: list[Cycle] = []
    print(
        f"{args.feeds} feeds on {args.hosts} loopback hosts; replicas {args.replicas}, "
        f"{args.in_flight} fetches in flight each, lease {args.lease:g} s; "
        f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    with FeedServerProcess(args.feeds, seed=args.seed, hosts=args.hosts) as server:
        for round_ in range(args.repeat):
            for n in args.replicas:
                with tempfile.TemporaryDirectory(prefix="replicas-bench-") as tmp:
                    got = run_replicas(n, server, args, Path(tmp))
                    if args.keep_logs:
                        target = args.keep_logs / f"round{round_}-{n}"
                        target.mkdir(parents=True, exist_ok=True)
                        for log in Path(tmp).glob("replica*.log"):
                            (target / log.name).write_bytes(log.read_bytes())
                for c in got:
                    print(
                        f"  {c.kind:<7} {n} replica(s): {c.seconds:6.1f} s, "
                        f"{c.feeds_per_second:5.1f} feeds/s, {c.records} records, "
                        f"twice {c.fetched_twice}",
                        flush=True,
                    )
                cycles.extend(got)
    print()
    print_cycles(cycles)
    print_summary(cycles, args.replicas)
    if args.json:
        args.json.write_text(
            json.dumps(
                [{**asdict(c), "feeds_per_second": c.feeds_per_second} for c in cycles],
                indent=2,
            )
        )
    return 1 if any(c.fetched_twice for c in cycles) else 0


if __name__ == "__main__":
    sys.exit(main())
