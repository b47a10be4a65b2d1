"""Hostile watchlists, sources and clients (issue 22), each through the real CLI or service.

Watchlists: an alias bomb, a file over the size cap, nesting past the depth limit, a source
naming a cloud metadata address, a directory at the watchlist path, a reload slower than its
time bound. Sources: cookies set by one source never reach another.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from aggregator.cli import main as cli_main
from tests.hostile_server import HostileServer

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = (ROOT / "config" / "watchlist.yaml").read_text(encoding="utf-8")


def alias_bomb(levels: int = 10, width: int = 9) -> str:
    """A few hundred bytes whose aliases of aliases expand to ``width ** levels`` values."""
    lines = ["a0: &a0 [" + ", ".join(["x"] * width) + "]"]
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * width) + "]")
    return "version: 1\n" + "\n".join(lines) + f"\ntopics: *a{levels - 1}\nsources: []\n"


def check_config(path: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``aggregator check-config PATH`` in a subprocess (a hang fails at the timeout)."""
    return subprocess.run(
        [sys.executable, "-m", "aggregator", "check-config", str(path)],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )


# ------------------------------------------------------------------ watchlists: check-config


def test_check_config_refuses_an_alias_bomb_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "bomb.yaml"
    path.write_text(alias_bomb(), encoding="utf-8")
    assert len(path.read_bytes()) < 1000  # 9**10 = 3.5 billion values once expanded
    done = check_config(path)
    assert done.returncode == 2, done.stderr
    # The first anchor whose expansion passes the limit: a6 (9**7 values) on line 8.
    assert f"{path}:8: the watchlist has more than 1,000,000 values" in done.stderr
    assert "alias" in done.stderr


def test_check_config_refuses_a_cyclic_alias_and_deep_nesting(tmp_path: Path) -> None:
    cyclic = tmp_path / "cyclic.yaml"
    cyclic.write_text("version: 1\ntopics: &t [a, *t]\nsources: []\n", encoding="utf-8")
    done = check_config(cyclic)
    assert done.returncode == 2
    assert f"{cyclic}:2: a YAML alias refers to a value that contains it" in done.stderr

    deep = tmp_path / "deep.yaml"
    deep.write_text("version: 1\ntopics: " + "[" * 100 + "]" * 100 + "\n", encoding="utf-8")
    done = check_config(deep)
    assert done.returncode == 2
    assert "nested too deeply (limit 64)" in done.stderr

    deeper = tmp_path / "deeper.yaml"  # past libyaml's own limit (1,000 levels)
    deeper.write_text("version: 1\ntopics: " + "[" * 100_000 + "]" * 100_000 + "\n")
    done = check_config(deeper)
    assert done.returncode == 2
    assert "nested too deeply" in done.stderr
    assert "Traceback" not in done.stderr


def test_check_config_refuses_a_file_over_the_size_cap(tmp_path: Path) -> None:
    path = tmp_path / "watchlist.yaml"
    path.write_text(SHIPPED, encoding="utf-8")
    size = len(SHIPPED.encode())
    done = check_config(path, {"AGGREGATOR_WATCHLIST_MAX_BYTES": str(size - 1)})
    assert done.returncode == 2
    assert f"{path}:1: the watchlist is {size:,} bytes, over the limit of {size - 1:,}" in (
        done.stderr
    )
    assert check_config(path, {"AGGREGATOR_WATCHLIST_MAX_BYTES": str(size)}).returncode == 0


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://0xa9fea9fe/feed",  # the same address, written as one hex number
        "http://[::ffff:169.254.169.254]/feed",
        "http://metadata.google.internal/computeMetadata/v1/",
    ],
)
def test_a_source_naming_a_metadata_address_is_refused_at_load(tmp_path: Path, url: str) -> None:
    text = SHIPPED + f'  - id: sneaky\n    kind: feed\n    url: "{url}"\n'
    path = tmp_path / "watchlist.yaml"
    path.write_text(text, encoding="utf-8")
    done = check_config(path)
    assert done.returncode == 2
    line = text.count("\n")  # the url line is the last one
    assert f"{path}:{line}: source 'sneaky': its host" in done.stderr
    assert "metadata" in done.stderr


def test_a_metadata_network_can_be_allowed_explicitly(tmp_path: Path) -> None:
    text = SHIPPED.replace("allow_networks: []", "allow_networks: ['169.254.0.0/16']", 1)
    assert text != SHIPPED
    text += '  - id: local-box\n    kind: feed\n    url: "http://169.254.10.1/feed"\n'
    path = tmp_path / "watchlist.yaml"
    path.write_text(text, encoding="utf-8")
    assert check_config(path).returncode == 0


# ------------------------------------------------------------------ watchlists: the service


def test_the_service_keeps_serving_through_hostile_watchlist_edits(tmp_path: Path) -> None:
    from tests.test_service_e2e import cycle_done, service, write_watchlist

    config = tmp_path / "watchlist.yaml"
    write_watchlist(config, ["lrt-english"])
    good = config.read_text()
    with service(tmp_path, tmp_path / "a.db", config) as run:
        run.wait(cycle_done(run, 1), what="the first cycle")

        # An alias bomb: refused at once with its line, and the service answers meanwhile.
        config.write_text(alias_bomb())
        run.wait(lambda: bool(run.health()["watchlist"]["error"]), what="the bomb's refusal")
        health = run.health()
        assert health["status"] == "degraded" and health["sources"] == 1
        assert (
            f"{config}:8: the watchlist has more than 1,000,000 values"
            in (health["watchlist"]["error"])
        )
        assert run.get("/feeds/all.atom")[0] == 200

        config.write_text(good + "\n")  # fixed: the report clears
        run.wait(lambda: run.health()["status"] == "ok", what="the good watchlist back")

        # A directory at the watchlist's path: reported, the last good watchlist in force.
        config.unlink()
        config.mkdir()
        run.wait(
            lambda: "directory" in (run.health()["watchlist"]["error"] or ""),
            what="the directory reported",
        )
        assert run.health()["status"] == "degraded"
        assert run.health()["sources"] == 1
        config.rmdir()
        config.write_text(good)  # the same bytes as before: applied again, report cleared
        run.wait(lambda: run.health()["status"] == "ok", what="the file back")


def test_a_reload_slower_than_its_time_bound_is_refused(tmp_path: Path) -> None:
    from tests.test_service_e2e import cycle_done, service, write_watchlist

    config = tmp_path / "watchlist.yaml"
    write_watchlist(config, ["lrt-english"])
    # The first load at start has no time bound (nothing is served yet); every reload has.
    env = {"AGGREGATOR_WATCHLIST_LOAD_TIMEOUT": "0.1"}
    with service(tmp_path, tmp_path / "a.db", config, env_extra=env) as run:
        run.wait(cycle_done(run, 1), what="the first cycle")
        # 4,000 sources: valid, and about a second's work to validate.
        many = "".join(
            f"  - {{id: s{i}, kind: feed, url: 'https://example.org/{i}.xml'}}\n"
            for i in range(4000)
        )
        config.write_text(config.read_text() + many)
        run.wait(lambda: bool(run.health()["watchlist"]["error"]), what="the refusal")
        error = run.health()["watchlist"]["error"]
        assert f"{config}:0: loading the watchlist took longer than 0.1 s" in error
        assert run.health()["sources"] == 1  # the last good watchlist stays
        assert run.get("/feeds/all.atom")[0] == 200


# ------------------------------------------------------------------ sources: cookies


@pytest.fixture
def cookie_server() -> Iterator[HostileServer]:
    with HostileServer() as server:
        jar_filler = "".join(
            f"Set-Cookie: c{i}={'x' * 300}; Path=/\r\n" for i in range(100)
        ).encode()

        async def sets_cookies(req: object, w: object) -> None:
            body = server.feed_body
            head = (
                b"HTTP/1.1 200 OK\r\nContent-Type: application/rss+xml\r\n"
                + jar_filler
                + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
            )
            w.write(head + body)  # type: ignore[attr-defined]
            await w.drain()  # type: ignore[attr-defined]

        async def plain(req: object, w: object) -> None:
            await server._send(w, 200, server.feed_body, "application/rss+xml")  # type: ignore[arg-type]

        server.routes.update({"/cookies/a.xml": sets_cookies, "/cookies/b.xml": plain})
        yield server


def test_one_sources_cookies_never_reach_another(
    tmp_path: Path, cookie_server: HostileServer, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "watchlist.yaml"
    config.write_text(
        "version: 1\nfetch:\n  min_host_interval_seconds: 0\n  allow_networks: ['127.0.0.1/32']\n"
        "topics:\n  - id: t\n    title: T\n    rules: {any: [item]}\nsources:\n"
        f"  - {{id: a, kind: feed, url: '{cookie_server.url('/cookies/a.xml')}'}}\n"
        f"  - {{id: b, kind: feed, url: '{cookie_server.url('/cookies/b.xml')}'}}\n",
        encoding="utf-8",
    )
    args = ["--db", f"sqlite:///{tmp_path / 'a.db'}", "--config", str(config)]
    for _ in range(2):  # one process, one fetcher, both sources on one host, twice
        assert cli_main([*args, "fetch-once", "--source", "a", "--source", "b", "--json"]) == 0
        lines = capsys.readouterr().out.splitlines()
        assert [json.loads(line)["status"] for line in lines] == ["ok", "ok"]
    asked = [r for r in cookie_server.requests if r.path.startswith("/cookies/")]
    assert len(asked) == 4
    assert all("cookie" not in r.headers for r in asked), [r.headers for r in asked]
