"""``aggregator alerts``: the alert queue, and one round of sending without the service."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import TYPE_CHECKING

from aggregator.settings import Settings

if TYPE_CHECKING:
    _Subparsers = argparse._SubParsersAction[argparse.ArgumentParser]


def register(subparsers: _Subparsers) -> None:
    parser = subparsers.add_parser(
        "alerts",
        help="show the alert queue; --send runs one round of pushes and digests",
        description=(
            "Show the latest alert messages (pushes and daily digests, see docs/alerts.md): "
            "sent, waiting for a retry, or failed for good, with the last error. With --send, "
            "first queue and send what is due, as the service does every alerts.check_seconds "
            "(for a setup without 'aggregator run', e.g. 'publish' from cron)."
        ),
    )
    parser.add_argument("--send", action="store_true", help="queue and send what is due first")
    parser.add_argument("--limit", type=int, default=30, metavar="N", help="messages to list")
    parser.add_argument("--json", action="store_true", help="JSON output, for scripts")
    parser.set_defaults(
        handler=run_alerts,
        preload=("aggregator.service.alerts", "aggregator.store", "aggregator.watchlist"),
    )


def run_alerts(args: argparse.Namespace, settings: Settings) -> int:
    import socket
    import uuid

    from aggregator.service.alerts import AlertDispatcher, describe
    from aggregator.store import open_store
    from aggregator.watchlist import load_watchlist

    watchlist = load_watchlist(settings.config_path)
    base_url = watchlist.publish.base_url or settings.public_url
    owner = f"{socket.gethostname()}:{os.getpid()}:cli-{uuid.uuid4().hex[:6]}"
    with open_store(settings.db_url) as store:
        result = None
        if args.send:
            result = AlertDispatcher(store, lambda: watchlist, base_url, owner).run_once()
        status = store.alert_status()
        rows = describe("", store.alert_deliveries(max(1, args.limit)))
    if args.json:
        out = {
            "round": None
            if result is None
            else {"queued": result.queued, "sent": result.sent, "failed": result.failed},
            "pending": status.pending,
            "retrying": status.retrying,
            "failed": status.failed,
            "sent": status.sent,
            "last_error": status.last_error,
            "messages": rows,
        }
        json.dump(out, sys.stdout, ensure_ascii=False, indent=1)
        sys.stdout.write("\n")
        return 0
    if not watchlist.alerts.rules:
        print("no alert rules in the watchlist (see docs/alerts.md)")
    if result is not None:
        print(f"this round: {result.queued} queued, {result.sent} sent, {result.failed} failed")
    print(
        f"queue: {status.pending} waiting ({status.retrying} after a failure), "
        f"{status.failed} failed for good, {status.sent} sent"
    )
    if status.last_error:
        print(f"last error: {status.last_error}")
    for row in rows:
        line = f"{row['status']:8} {row['kind']:6} {row['rule']} -> {row['target']}: {row['item']}"
        if row["attempts"]:
            line += f" ({row['attempts']} attempts)"
        if row["status"] != "sent" and row["last_error"]:
            line += f": {row['last_error']}"
        print(line)
    return 0
