"""``aggregator run``: the service (feeds over HTTP, scheduled fetching, hot reload)."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from aggregator.cli.output import UsageError
from aggregator.logs import setup_logging
from aggregator.settings import Settings


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    run = subparsers.add_parser(
        "run",
        help="run the service: fetch on schedule, serve feeds, /healthz and /metrics",
        description=(
            "Run the long-lived service: one scheduled job per watchlist source, the feeds, "
            "/healthz and /metrics over HTTP, the watchlist reloaded on edit or SIGHUP, a "
            "graceful stop on SIGTERM/SIGINT. The seeds are imported on first start."
        ),
    )
    run.add_argument("--host", help="address to listen on (env AGGREGATOR_HOST; 127.0.0.1)")
    run.add_argument(
        "--port", type=_port, help="port to listen on, 1-65535 (env AGGREGATOR_PORT; 8080)"
    )
    run.add_argument(
        "--replay",
        metavar="DIR",
        type=Path,
        help="offline demo: serve the recordings in DIR (e.g. fixtures/) on 127.0.0.1 and "
        "point the sources at them; the demo keeps its own store (data/demo.db) unless "
        "--db or AGGREGATOR_DB names one",
    )
    run.add_argument(
        "--replay-latency",
        metavar="SECONDS",
        type=_non_negative_float,
        default=0.0,
        help="with --replay: delay every replayed response, as a slow network would",
    )
    run.add_argument(
        "--once",
        action="store_true",
        help="fetch every due source once, then exit (no HTTP server)",
    )
    run.add_argument(
        "--no-seeds",
        action="store_true",
        help="do not import seeds/ into an empty store on first start",
    )
    run.add_argument("--log-format", choices=["auto", "json", "text"], help="log line format")
    run.add_argument("--log-level", help="DEBUG, INFO, WARNING or ERROR (default INFO)")
    run.set_defaults(handler=run_command, preload=("aggregator.service",))


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text}") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 1-65535, not {value}")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative: {text}")
    return value


def run_command(args: argparse.Namespace, settings: Settings) -> int:
    from aggregator.service import Service, ServiceOptions

    settings = settings.with_overrides(
        host=args.host,
        port=args.port,
        log_format=args.log_format,
        log_level=args.log_level,
    )
    if args.replay is not None:
        settings = settings.for_demo()
    if not 1 <= settings.port <= 65535:
        raise UsageError(f"AGGREGATOR_PORT must be 1-65535, not {settings.port}")
    setup_logging(settings.log_level, settings.log_format)
    options = ServiceOptions.from_env(
        host=settings.host,
        port=settings.port,
        replay_dir=args.replay,
        replay_latency=args.replay_latency,
        once=args.once,
    )
    if args.no_seeds:
        options = dataclasses.replace(options, seeds_dir=None)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    import asyncio

    return asyncio.run(Service(settings, options).run())
