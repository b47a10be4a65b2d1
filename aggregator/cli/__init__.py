"""The ``aggregator`` command line.

Each command group lives in its own module with a ``register(subparsers)`` function that adds its
sub-commands; a sub-command's handler takes ``(args, settings)`` and returns the exit code.

Start-up: a handler imports what it uses in its body (``import aggregator.cli`` loads no store,
HTTP or numpy), and its sub-command names those modules with ``set_defaults(preload=(...))``,
so ``main`` loads them before the handler runs, with the garbage collector paused, then freezes
what start-up left alive (see ``main``). A module missing from ``preload`` is still imported by
the handler, only at full collector cost; ``tests/test_cli.py`` imports every module named.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib
import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol

from aggregator import __version__
from aggregator.cli import (
    alert_cmds,
    config_cmds,
    extract_cmds,
    fetch_cmds,
    publish_cmds,
    search_cmds,
    service_cmds,
    store_cmds,
)
from aggregator.cli.output import UsageError, cli_logging, describe_os_error, error
from aggregator.errors import AggregatorError, ConfigError
from aggregator.settings import DEFAULT_CONFIG, Settings, load_settings

if TYPE_CHECKING:  # imported by the commands that open a store, not by every command
    from sqlalchemy.exc import SQLAlchemyError


class _CommandModule(Protocol):
    def register(self, subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None: ...


COMMAND_MODULES: tuple[_CommandModule, ...] = (
    config_cmds,
    store_cmds,
    fetch_cmds,
    extract_cmds,
    publish_cmds,
    search_cmds,
    service_cmds,
    alert_cmds,
)

Handler = Callable[[argparse.Namespace, Settings], int]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aggregator",
        description=(
            "Watch the news on a list of topics; publish each new distinct development once."
        ),
    )
    parser.add_argument("--version", action="version", version=f"aggregator {__version__}")
    _add_global_options(parser, None)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in COMMAND_MODULES:
        module.register(subparsers)
    # ``aggregator run --db URL`` works as ``aggregator --db URL run``: the options are the
    # whole program's, but people type them after the command as often as before it.
    for command in _all_commands(subparsers):
        _add_global_options(command, argparse.SUPPRESS)
    return parser


def _add_global_options(parser: argparse.ArgumentParser, default: str | None) -> None:
    """``--db`` and ``--config``; a command's copies default to SUPPRESS, so when not given
    after the command they leave what was given before it."""
    parser.add_argument(
        "--db",
        metavar="URL",
        default=default,
        help=(
            "database URL, or the path of a SQLite file (env AGGREGATOR_DB; default: SQLite "
            "in the data dir)"
        ),
    )
    parser.add_argument(
        "--config",
        metavar="PATH",
        default=default,
        help="watchlist file (env AGGREGATOR_CONFIG; default: config/watchlist.yaml)",
    )


def _all_commands(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> list[argparse.ArgumentParser]:
    """Every command's parser, sub-commands' included (``db upgrade``)."""
    found: list[argparse.ArgumentParser] = []
    for command in dict.fromkeys(subparsers.choices.values()):  # aliases share a parser
        found.append(command)
        for action in command._actions:
            if isinstance(action, argparse._SubParsersAction):
                found.extend(_all_commands(action))
    return found


def preload(args: argparse.Namespace) -> None:
    """Import the modules the chosen sub-command names (``set_defaults(preload=...)``)."""
    for name in getattr(args, "preload", ()):
        importlib.import_module(name)


def main(argv: Sequence[str] | None = None) -> int:
    # Start-up allocates the objects of a few hundred modules (≈ 200,000), which live as long as
    # the process: the collector's passes over them while they load and in every later full
    # collection are wasted work, ≈ 15 % of a one-record import's CPU (docs/performance.md,
    # "Start-up"). So the collector pauses while the parser, settings and the command's modules
    # load, and when this is the program itself (no ``argv``: the ``aggregator`` script,
    # ``python -m aggregator``) what they left is frozen (``gc.freeze``: never traversed again;
    # freed as usual by reference counting). In-process callers (tests) pass ``argv``: their
    # objects are not frozen, and their collector is left as it was.
    collecting = gc.isenabled()
    gc.disable()
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        preload(args)
        if argv is None:
            gc.freeze()
    finally:
        if collecting:
            gc.enable()
    handler: Handler | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    # The service sets up its own logging; every other command logs through cli_logging.
    logs = contextlib.nullcontext() if args.command == "run" else cli_logging()
    try:
        with logs:
            settings = load_settings(db_url=args.db, config_path=args.config)
            code = handler(args, settings)
            sys.stdout.flush()  # a closed pipe shows here, not at interpreter exit
        return code
    except BrokenPipeError:
        # The reader went away (``aggregator developments | head``): stop quietly, as cat does.
        _discard_stdout()
        return EXIT_BROKEN_PIPE
    except ConfigError as exc:
        path = str(args.config or os.environ.get("AGGREGATOR_CONFIG") or DEFAULT_CONFIG)
        if not os.path.isfile(path):
            error(
                f"no watchlist at {path}: give its path with --config PATH (or "
                "AGGREGATOR_CONFIG), or run from the folder that holds config/watchlist.yaml"
            )
            return 2
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        if any(_same_file(p.file, path) for p in exc.problems):
            error("the watchlist is invalid: fix the lines above (`aggregator check-config`)")
        else:
            error("fix the lines above and run again")
        return 2
    except UsageError as exc:
        error(str(exc))
        return 2
    except AggregatorError as exc:
        error(str(exc))
        return 1
    except OSError as exc:
        error(describe_os_error(exc))
        return 1
    except Exception as exc:
        if not _is_database_error(exc):
            raise
        error(describe_database_error(exc))
        return 1
    except KeyboardInterrupt:
        return 130


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return a == b


# What a shell reports for a process ended by SIGPIPE (128 + 13).
EXIT_BROKEN_PIPE = 141


def _discard_stdout() -> None:
    """Point standard output at /dev/null, so the interpreter's last flush finds no broken pipe
    to complain about (the recipe in Python's signal module documentation)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def _is_database_error(exc: BaseException) -> bool:
    """A SQLAlchemy error (only a command that imported SQLAlchemy can raise one)."""
    module = sys.modules.get("sqlalchemy.exc")
    return module is not None and isinstance(exc, module.SQLAlchemyError)


def describe_database_error(exc: SQLAlchemyError | Exception) -> str:
    """The driver's own first line, and where the URL comes from."""
    detail = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    first = detail[0] if detail else type(exc).__name__
    return (
        f"database: {first} (check --db or AGGREGATOR_DB, and that the database server is "
        "running; `aggregator db upgrade` creates or migrates the schema)"
    )
