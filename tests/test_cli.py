from __future__ import annotations

import argparse
import gc
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

from aggregator import __version__
from aggregator.cli import build_parser, main
from aggregator.settings import database_url
from aggregator.store import open_store
from tests.conftest import ROOT


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"aggregator {__version__}"


def test_no_command_prints_help_and_fails(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "usage: aggregator" in capsys.readouterr().out


def test_global_options_after_the_command_and_a_plain_db_path(
    tmp_path: Path, seeds_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``aggregator import --db x.db`` is ``aggregator --db sqlite:///…/x.db import``: the
    options may follow the command (and a sub-command), and a plain path names a SQLite file."""
    config = str(ROOT / "config" / "watchlist.yaml")
    db = tmp_path / "plain.db"
    assert main(["import", str(seeds_dir), "--db", str(db), "--config", config]) == 0
    assert db.is_file()
    with open_store(f"sqlite:///{db}") as store:
        assert store.count_records() == 5
    capsys.readouterr()
    # After a sub-command too; given after the command, it wins over the one before it.
    assert main(["--db", str(tmp_path / "other.db"), "db", "current", "--db", str(db)]) == 0
    assert "(newest)" in capsys.readouterr().out
    assert not (tmp_path / "other.db").exists()
    # Given only before the command, it is kept.
    assert main(["--db", str(db), "db", "current"]) == 0
    assert "(newest)" in capsys.readouterr().out


def test_database_url_keeps_urls_and_resolves_paths(tmp_path: Path) -> None:
    assert database_url("postgresql://127.0.0.1:5432/test") == "postgresql://127.0.0.1:5432/test"
    assert database_url("sqlite:///:memory:") == "sqlite:///:memory:"
    assert database_url(str(tmp_path / "a.db")) == f"sqlite:///{tmp_path / 'a.db'}"
    assert database_url("rel.db") == f"sqlite:///{Path('rel.db').resolve()}"


def _subparsers(parser: argparse.ArgumentParser) -> list[tuple[str, argparse.ArgumentParser]]:
    """Every sub-command's parser, nested ones (``db upgrade``) included, with its path."""
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found.append((name, sub))
                found += [(f"{name} {n}", s) for n, s in _subparsers(sub)]
    return found


def test_every_preloaded_module_exists_and_imports() -> None:
    commands = _subparsers(build_parser())
    preloads = {name: sub.get_default("preload") or () for name, sub in commands}
    assert "import" in preloads and "aggregator.ingest_driver" in preloads["import"]
    for command, modules in preloads.items():
        for module in modules:
            assert importlib.import_module(module), (command, module)


def test_an_in_process_main_leaves_the_collector_as_it_was() -> None:
    frozen = gc.get_freeze_count()
    assert gc.isenabled()
    with pytest.raises(SystemExit):
        main(["--version"])
    assert gc.isenabled()
    assert main([]) == 2
    assert gc.isenabled() and gc.get_freeze_count() == frozen
    gc.disable()
    try:
        assert main([]) == 2
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_the_program_freezes_what_start_up_loaded() -> None:
    code = (
        "import gc, sys\n"
        "from aggregator.cli import main\n"
        "sys.argv = ['aggregator']\n"
        "assert main() == 2\n"
        "print(gc.isenabled(), gc.get_freeze_count() > 10_000)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.splitlines()[-1] == "True True"
