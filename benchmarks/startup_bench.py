"""A command's start-up: CPU seconds of a one-record ``aggregator import`` into an existing store.

    python benchmarks/startup_bench.py                      # this checkout
    python benchmarks/startup_bench.py --baseline ../main   # and another checkout, same run
    python benchmarks/startup_bench.py --imports            # ... and what this checkout imports

Each figure is the CPU time (user + system) of a new process, the best and the median of
``--runs`` runs; the runs of every command and checkout are interleaved, so a busy spell of a
shared machine slows them alike. Rows:

- ``python -c pass``: the interpreter alone, the floor;
- ``python -c "import reader"``: the peer's library imported (lemon24's ``reader``, the feed
  reader the cycle benchmark compares with; its command line does no more before its work);
- ``import, known record``: ``aggregator import`` of a record the store holds (nothing to
  decide: the start-up as ``benchmarks/import_bench.py`` measures it);
- ``import, new record``: a record the store does not hold, into the same store (a record is
  fingerprinted, decided and written: the start-up plus one record's work).

Both with a bytecode cache (``PYTHONPYCACHEPREFIX`` in a temporary directory, filled by the
first run: what an installed package has) and without one (``PYTHONDONTWRITEBYTECODE=1``, as
the developers' environment sets it, so every command compiles the ``aggregator`` sources).
``--imports`` prints the modules ``python -X importtime`` finds costliest in this checkout's
new-record import (with the bytecode cache; cumulative microseconds, nested ones included).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: make ``benchmarks`` importable
    sys.path.insert(0, str(ROOT))

from benchmarks.import_bench import WATCHLIST, _shared, _write  # noqa: E402

EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


def _cpu(cmd: list[str], env: dict[str, str], cwd: Path) -> float:
    """CPU seconds (user + system) of one command run to its end; fails loudly."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=cwd, check=False)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{done.stdout}\n{done.stderr}")
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


class Checkout:
    """One checkout's store and environment; ``new_folders`` are records it has not seen."""

    def __init__(self, code: Path, tmp: Path, label: str, folders: list[Path]) -> None:
        self.code, self.label = code, label
        self.db = tmp / f"{label}.sqlite"
        self.env = dict(os.environ)
        self.env |= {
            "AGGREGATOR_DB": f"sqlite:///{self.db}",
            "AGGREGATOR_CONFIG": str(tmp / "watchlist.yaml"),
            "PYTHONPATH": str(code),
            "AGGREGATOR_LOG_LEVEL": "WARNING",
        }
        self.known, *self.new_folders = folders
        self.tmp = tmp

    def env_for(self, bytecode: bool) -> dict[str, str]:
        env = dict(self.env)
        if bytecode:
            env.pop("PYTHONDONTWRITEBYTECODE", None)
            env["PYTHONPYCACHEPREFIX"] = str(self.tmp / f"pyc-{self.label}")
        else:
            env.pop("PYTHONPYCACHEPREFIX", None)
            env["PYTHONDONTWRITEBYTECODE"] = "1"
        return env

    def import_cmd(self, folder: Path) -> list[str]:
        return [sys.executable, "-m", "aggregator", "import", str(folder)]

    def prepare(self) -> None:
        """The store with its one known record (migrations run here, not in a timed run), and a
        warm bytecode cache."""
        _cpu(self.import_cmd(self.known), self.env_for(True), self.tmp)


def build(tmp: Path, count: int) -> list[Path]:
    """``count`` folders of one ECB+ article each (distinct texts)."""
    shared = _shared() / "clustering-dev"
    ecb = [json.loads(x) for x in (shared / "ecbplus-dev.jsonl").read_text().splitlines() if x]
    folders = []
    for n in range(count):
        copy, art = divmod(n, len(ecb))
        body = ecb[art]["text"] + (f"\nEdition {copy}." if copy else "")
        when = EPOCH + timedelta(days=30 * copy, minutes=art)
        folder = tmp / f"one-{n:03d}"
        _write(folder, [(ecb[art]["title"], body, when)])
        folders.append(folder)
    return folders


def import_profile(checkout: Checkout, folder: Path, top: int = 18) -> str:
    """The costliest imports of one new-record import, by ``python -X importtime``."""
    env = checkout.env_for(True)
    cmd = [sys.executable, "-X", "importtime", *checkout.import_cmd(folder)[1:]]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=checkout.tmp)
    rows = []
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        self_us, cumulative, field = line.removeprefix("import time:").split("|")
        name = field.strip()
        depth = (len(field) - len(field.lstrip()) - 1) // 2
        rows.append((int(cumulative), int(self_us), depth, name))
    total = sum(c for c, _, depth, _ in rows if depth == 0)
    out = [
        f"imports of a new-record import, {total / 1000:.0f} ms in all (importtime's own cost "
        "included), costliest first (cumulative / own ms, nesting depth):"
    ]
    shallow = [r for r in rows if r[2] <= 1]  # what the command and its modules import
    for cumulative, self_us, depth, name in sorted(shallow, reverse=True)[:top]:
        out.append(f"  {cumulative / 1000:7.1f} {self_us / 1000:6.1f}  {depth:2d}  {name}")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=7, help="runs of each command (default 7)")
    parser.add_argument("--baseline", type=Path, help="another checkout to measure in this run")
    parser.add_argument("--imports", action="store_true", help="also print the costliest imports")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="startup-") as name:
        tmp = Path(name)
        (tmp / "watchlist.yaml").write_text(WATCHLIST, encoding="utf-8")
        checkouts = {"this checkout": ROOT}
        if args.baseline is not None:
            checkouts["baseline"] = args.baseline.resolve()
        # Each checkout: one known record, then a new record for each run of each mode.
        need = 1 + 2 * args.runs + 1
        folders = build(tmp, need * len(checkouts))
        runs = [
            Checkout(code, tmp, f"c{i}", folders[i * need : (i + 1) * need])
            for i, code in enumerate(checkouts.values())
        ]
        for c in runs:
            c.prepare()
        plain = dict(os.environ)
        plain.pop("PYTHONPATH", None)
        peer_ok = (
            subprocess.run(
                [sys.executable, "-c", "import reader"], env=plain, capture_output=True
            ).returncode
            == 0
        )
        rows: dict[str, list[float]] = {}

        def add(label: str, seconds: float) -> None:
            rows.setdefault(label, []).append(seconds)

        for _ in range(args.runs):
            for bytecode in (True, False):
                mode = "bytecode cache" if bytecode else "no bytecode cache"
                add(f"python -c pass ({mode})", _cpu([sys.executable, "-c", "pass"], plain, tmp))
                if peer_ok:
                    cmd = [sys.executable, "-c", "import reader"]
                    add(f"python -c 'import reader' ({mode})", _cpu(cmd, plain, tmp))
                for label, c in zip(checkouts, runs, strict=True):
                    env = c.env_for(bytecode)
                    add(
                        f"{label}: import, known record ({mode})",
                        _cpu(c.import_cmd(c.known), env, tmp),
                    )
                    add(
                        f"{label}: import, new record ({mode})",
                        _cpu(c.import_cmd(c.new_folders.pop(0)), env, tmp),
                    )
        width = max(len(k) for k in rows)
        print(
            f"start-up: CPU seconds (user + system) of a new process, {args.runs} runs each, "
            f"interleaved; {os.cpu_count()} cores, load average "
            f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}"
        )
        print(f"{'':{width}}  {'best':>6}  {'median':>6}")
        for label, values in sorted(rows.items(), key=lambda kv: ("no bytecode" in kv[0], kv[0])):
            print(f"{label:{width}}  {min(values):6.3f}  {statistics.median(values):6.3f}")
        if args.imports:
            print()
            print(import_profile(runs[0], runs[0].new_folders.pop(0)))


if __name__ == "__main__":
    main()
