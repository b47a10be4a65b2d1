"""The ``aggregator`` command line.

Each command group lives in its own module with a ``register(subparsers)`` function that adds its
sub-commands; a sub-command's handler takes ``(args, settings)`` and returns the exit code.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Protocol

from aggregator import __version__
from aggregator.cli import (
    config_cmds,
    extract_cmds,
    fetch_cmds,
    publish_cmds,
    service_cmds,
    store_cmds,
)
from aggregator.errors import AggregatorError
from aggregator.settings import Settings, load_settings


class _CommandModule(Protocol):
    def register(self, subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None: ...


COMMAND_MODULES: tuple[_CommandModule, ...] = (
    config_cmds,
    store_cmds,
    fetch_cmds,
    extract_cmds,
    publish_cmds,
    service_cmds,
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
    parser.add_argument(
        "--db",
        metavar="URL",
        help="database URL (env AGGREGATOR_DB; default: SQLite in the data dir)",
    )
    parser.add_argument(
        "--config",
        metavar="PATH",
        help="watchlist file (env AGGREGATOR_CONFIG; default: config/watchlist.yaml)",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in COMMAND_MODULES:
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    settings = load_settings(db_url=args.db, config_path=args.config)
    try:
        return handler(args, settings)
    except AggregatorError as exc:
        print(f"aggregator: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
