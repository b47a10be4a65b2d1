"""Issues 22 and 23: the command line ends every user error and I/O failure with one message that
names the cause and what to do, and a non-zero exit status; never a traceback. Progress shows on
a terminal only.

Each case runs through the real command line: a subprocess where the operating system is part of
the case (a closed pipe, a full file system, a terminal), ``cli.main`` with captured output
elsewhere.
"""

from __future__ import annotations

import errno
import json
import os
import pty
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from aggregator.cli import main
from tests.conftest import ROOT, SEEDS

WATCHLIST = ROOT / "config" / "watchlist.yaml"


def cli(db_url: str, *args: str) -> int:
    return main(["--db", db_url, "--config", str(WATCHLIST), *args])


def run(db_url: str, *args: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    """``aggregator ARGS`` in a subprocess (the installed entry point's code)."""
    command = [sys.executable, "-m", "aggregator", "--db", db_url, "--config", str(WATCHLIST)]
    return subprocess.run(  # type: ignore[call-overload, no-any-return]
        [*command, *args], capture_output=True, text=True, timeout=120, cwd=ROOT, **kwargs
    )


@pytest.fixture
def seeded(db_url: str, capsys: pytest.CaptureFixture[str]) -> str:
    assert cli(db_url, "import", str(SEEDS)) == 0
    capsys.readouterr()
    return db_url


def test_a_closed_pipe_ends_quietly(seeded: str) -> None:
    """``aggregator developments | head``: the reader went away. The read end is closed before
    the command starts, so its first write fails whatever the pipe's buffer size."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        command = [sys.executable, "-m", "aggregator", "--db", seeded, "--config", str(WATCHLIST)]
        done = subprocess.run(
            [*command, "developments"], stdout=write_end, stderr=subprocess.PIPE, timeout=120
        )
    finally:
        os.close(write_end)
    assert done.returncode == 141  # as a shell reports a process ended by SIGPIPE
    assert done.stderr == b""  # no traceback, no "Exception ignored" at exit


def test_publish_to_a_file_names_it(
    seeded: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a_file = tmp_path / "passwd"
    a_file.write_text("root:x:0:0\n")
    assert cli(seeded, "publish", str(a_file)) == 1
    err = capsys.readouterr().err
    assert f"{a_file} is a file, not a folder" in err
    assert "Traceback" not in err
    assert a_file.read_text() == "root:x:0:0\n"


def test_publish_on_a_full_disk_keeps_the_old_files(
    seeded: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """ENOSPC injected where the data reaches the disk: one message naming the file and the
    cause, exit 1; the files published before are untouched and no temporary file is left."""
    out = tmp_path / "site"
    assert cli(seeded, "publish", str(out)) == 0
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    capsys.readouterr()

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    assert cli(seeded, "publish", str(out), "--base-url", "http://elsewhere.example/") == 1
    monkeypatch.undo()
    err = capsys.readouterr().err
    assert "No space left on device" in err and "the disk is full" in err
    assert "cannot write " in err and str(out) in err
    assert err.count("\n") == 1 and "Traceback" not in err
    after = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before


@pytest.mark.slow
def test_publish_on_a_real_full_file_system(seeded: str, tmp_path: Path) -> None:
    """The same on a 16 KiB tmpfs, in a mount namespace of its own (skipped where the system
    does not allow one)."""
    if shutil.which("unshare") is None:
        pytest.skip("no unshare(1)")
    mount = tmp_path / "tiny"
    mount.mkdir()
    probe = subprocess.run(
        ["unshare", "--mount", "--map-root-user", "true"], capture_output=True, timeout=30
    )
    if probe.returncode != 0:
        pytest.skip("mount namespaces are not allowed here")
    command = [sys.executable, "-m", "aggregator", "--db", seeded, "--config", str(WATCHLIST)]
    script = (
        f"mount -t tmpfs -o size=16k tmpfs {mount} || exit 99; "
        f"{' '.join(command)} publish {mount}; code=$?; "
        f"find {mount} -name '*.tmp' | wc -l; exit $code"
    )
    done = subprocess.run(
        ["unshare", "--mount", "--map-root-user", "sh", "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    if done.returncode == 99:
        pytest.skip("cannot mount a tmpfs here")
    assert done.returncode == 1, done.stderr
    assert "No space left on device" in done.stderr and "Traceback" not in done.stderr
    assert done.stdout.strip() == "0"  # no temporary file left behind


def test_extract_refuses_an_image(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    png = tmp_path / "photo.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 8)
    assert main(["extract", str(png)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert f"{png} is a PNG image, not an HTML page" in captured.err
    other = tmp_path / "blob.html"
    other.write_bytes(b"<html>\x00\x01\x02" * 100)
    assert main(["extract", str(other)]) == 1
    assert "binary data, not an HTML page" in capsys.readouterr().err
    assert main(["extract", str(tmp_path)]) == 1
    assert "is a folder" in capsys.readouterr().err


def test_unknown_topic_is_named(seeded: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(seeded, "developments", "--topic", "balloon") == 2
    err = capsys.readouterr().err
    assert "unknown topic 'balloon'" in err and "did you mean 'balloons'" in err
    assert cli(seeded, "developments", "--topic", "balloons", "--json") == 0
    assert json.loads(capsys.readouterr().out)


def test_merge_given_a_record_points_to_its_development(
    seeded: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli(seeded, "developments", "--json") == 0
    devs = json.loads(capsys.readouterr().out)
    record = devs[0]["records"][0]
    assert cli(seeded, "merge", devs[1]["id"], record) == 2
    err = capsys.readouterr().err
    assert f"{record} is a record, not a development" in err
    assert f"belongs to development {devs[0]['id']}" in err


def test_io_and_input_errors_are_one_line(
    seeded: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    a_file = tmp_path / "file"
    a_file.write_text("x")
    cases = [
        (["export", str(a_file)], 1, "is a file, not a folder"),
        (["import", str(tmp_path / "missing")], 1, "no such file or folder"),
        (["fetch-once", "--source", "lrt-englsh"], 2, "did you mean lrt-english"),
        (["developments", "--limit", "-1"], 2, "--limit"),
        (["split", "nosuch"], 2, "no record nosuch"),
        (["import", str(tmp_path)], 1, "no record files"),
        (["db", "prune", "--days", "100000000"], 2, "give fewer days"),
        (["publish", str(tmp_path / "site"), "--base-url", "notaurl"], 2, "http(s) URL"),
        (["scrape", str(a_file), "--base-url", "http://x.example/"], 2, "--item"),
    ]
    for args, code, message in cases:
        assert cli(seeded, *args) == code, args
        err = capsys.readouterr().err
        assert message in err, (args, err)
        assert "Traceback" not in err
    # A port out of range, on the command line or in the environment.
    with pytest.raises(SystemExit) as exit_:
        cli(seeded, "run", "--port", "99999")
    assert exit_.value.code == 2 and "1-65535" in capsys.readouterr().err
    monkeypatch.setenv("AGGREGATOR_PORT", "70000")
    assert cli(seeded, "run", "--once") == 2
    assert "AGGREGATOR_PORT must be 1-65535" in capsys.readouterr().err
    # No watchlist where the default points: say how to give one.
    assert main(["--db", seeded, "--config", str(tmp_path / "none.yaml"), "import", "x"]) == 2
    assert "no watchlist at" in capsys.readouterr().err
    # An unreachable database: the driver's reason and where the URL comes from.
    assert main(["--db", "postgresql+psycopg://127.0.0.1:1/x", "developments"]) == 1
    assert "database" in capsys.readouterr().err


def test_fetch_once_shows_each_failure_once(tmp_path: Path) -> None:
    """A source that cannot be reached: its failure is in the table, not also in a log line;
    and the summary counts in words that agree with the number ("1 source")."""
    watchlist = tmp_path / "watchlist.yaml"
    watchlist.write_text(
        "version: 1\n"
        "topics:\n  - id: t\n    title: T\n    rules:\n      any: [balloon]\n"
        "sources:\n  - id: down\n    url: http://127.0.0.1:1/feed.xml\n    topics: [t]\n"
        "fetch:\n  retries: 0\n  timeout_seconds: 2\n"
    )
    db = f"sqlite:///{tmp_path / 'a.db'}"
    command = [sys.executable, "-m", "aggregator", "--db", db, "--config", str(watchlist)]
    done = subprocess.run(
        [*command, "fetch-once"], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert done.returncode == 1, done.stderr
    assert done.stderr == ""  # the failure is shown once: in the table on stdout
    assert done.stdout.count("down") == 1
    assert "1 source fetched, 1 failed, 0 new records" in done.stdout


def _on_a_terminal(args: list[str], cwd: Path) -> tuple[int, str]:
    """Run with standard error on a pseudo-terminal; (exit status, what the terminal got)."""
    main_fd, child_fd = pty.openpty()
    try:
        proc = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=child_fd, stdin=subprocess.DEVNULL, cwd=cwd
        )
        os.close(child_fd)
        chunks: list[bytes] = []
        while True:
            try:
                chunk = os.read(main_fd, 4096)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
        assert proc.stdout is not None
        proc.stdout.read()
        code = proc.wait(timeout=120)
    finally:
        os.close(main_fd)
    return code, b"".join(chunks).decode("utf-8", "replace")


@pytest.mark.slow
def test_progress_on_a_terminal_only(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'a.db'}"
    command = [sys.executable, "-m", "aggregator", "--db", db, "--config", str(WATCHLIST)]
    code, terminal = _on_a_terminal([*command, "import", str(SEEDS)], ROOT)
    assert code == 0
    # A bar was drawn; which of the quick stages got a frame depends on the machine's speed, but
    # the last one is always drawn when the bar stops, with its count.
    assert "━" in terminal
    assert "restoring corrections" in terminal and "5/5" in terminal
    # Piped: nothing but the result.
    done = subprocess.run(
        [*command, "export", str(tmp_path / "out")], capture_output=True, text=True, cwd=ROOT
    )
    assert done.returncode == 0 and done.stderr == ""
    assert done.stdout == f"exported 5 records to {tmp_path / 'out'}\n"
    done = subprocess.run(
        [*command, "publish", str(tmp_path / "site"), "--json"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert done.returncode == 0 and done.stderr == ""
    assert json.loads(done.stdout)["feeds"] > 0
    fresh = [sys.executable, "-m", "aggregator", "--db", f"sqlite:///{tmp_path / 'b.db'}"]
    done = subprocess.run(
        [*fresh, "db", "upgrade", "--json"], capture_output=True, text=True, cwd=ROOT
    )
    assert done.returncode == 0 and done.stderr == ""
    upgrade = json.loads(done.stdout)
    assert upgrade["before"] is None and upgrade["changed"] is True
