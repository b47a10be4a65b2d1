"""Alerts through Apprise against a local SMTP server (aiosmtpd) and a local webhook, on a real
store: a push per new development, once, even with two replicas; a daily digest; failures
retried and shown in /healthz; the watchlist's alerts section checked with file:line."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from email.header import decode_header, make_header
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from aggregator.cli import main
from aggregator.service.alerts import AlertDispatcher, last_digest_day
from aggregator.store import open_store
from aggregator.watchlist import check_watchlist, load_watchlist
from aggregator.web.ops import OpsState, health_report
from tests.test_publish_static import SEEDS, WATCHLIST_YAML

pytestmark = pytest.mark.slow

EARLY = datetime(2001, 1, 1, tzinfo=UTC)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Mailbox:
    def __init__(self) -> None:
        self.messages: list[dict[str, str]] = []
        self.lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = message_from_bytes(envelope.content)
        body = ""
        for part in message.walk():
            if part.get_content_type() == "text/plain":
                body = part.get_payload(decode=True).decode("utf-8")
        with self.lock:
            self.messages.append(
                {
                    "to": ",".join(envelope.rcpt_tos),
                    "subject": str(make_header(decode_header(message["Subject"]))),
                    "body": body,
                }
            )
        return "250 OK"


@pytest.fixture
def smtp() -> Iterator[tuple[str, Mailbox]]:
    from aiosmtpd.controller import Controller

    box = Mailbox()
    port = _free_port()
    controller = Controller(box, hostname="127.0.0.1", port=port)
    controller.start()
    url = f"mailto://127.0.0.1:{port}?from=alerts@example.org&to=analyst@example.org"
    yield url, box
    controller.stop()


class Hook:
    def __init__(self) -> None:
        self.posts: list[dict[str, Any]] = []
        self.fail_next = 0


@pytest.fixture
def webhook() -> Iterator[tuple[str, Hook]]:
    hook = Hook()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            data = json.loads(self.rfile.read(length) or b"{}")
            if hook.fail_next > 0:
                hook.fail_next -= 1
                self.send_response(500)
                self.end_headers()
                return
            hook.posts.append(data)
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"json://127.0.0.1:{server.server_address[1]}/hook", hook
    server.shutdown()
    server.server_close()


def _config(tmp_path: Path, alerts: str) -> Path:
    path = tmp_path / "watchlist.yaml"
    path.write_text(WATCHLIST_YAML + alerts, encoding="utf-8")
    return path


def _alerts_yaml(push: list[str], digest: list[str] = (), at: str = "08:00") -> str:  # type: ignore[assignment]
    return (
        "alerts:\n"
        "  retry_seconds: 60\n"
        "  max_attempts: 3\n"
        "  rules:\n"
        "    - id: baltic\n"
        "      topics: [lithuania, belarus]\n"
        f"      push: {json.dumps(list(push))}\n"
        f"      digest: {json.dumps(list(digest))}\n"
        f'      digest_at: "{at}"\n'
    )


def test_push_for_each_new_development_once_even_with_two_replicas(
    db_url: str, tmp_path: Path, smtp: tuple[str, Mailbox], webhook: tuple[str, Hook]
) -> None:
    mail_url, box = smtp
    hook_url, hook = webhook
    config = _config(tmp_path, _alerts_yaml([mail_url, hook_url]))
    watchlist = load_watchlist(config)
    with open_store(db_url) as store:
        one = AlertDispatcher(store, lambda: watchlist, "https://news.example.org", "replica-1")
        two = AlertDispatcher(store, lambda: watchlist, "https://news.example.org", "replica-2")
        # The rule is first seen before anything is stored: what arrives later is new.
        assert one.run_once(EARLY).queued == 0
        assert main(["--db", db_url, "--config", str(config), "import", str(SEEDS)]) == 0
        devs = [d for d in store.list_developments(None, 0) if d.topics]
        assert len(devs) >= 2
        now = datetime.now(UTC)
        rounds: list[Any] = []
        threads = [
            threading.Thread(target=lambda d=d: rounds.append(d.run_once(now))) for d in (one, two)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sum(r.sent for r in rounds) == 2 * len(devs)  # two targets each
        assert sum(r.failed for r in rounds) == 0
        # Each development once per target, whichever replica sent it.
        subjects = sorted(m["subject"] for m in box.messages)
        assert len(subjects) == len(devs)
        for dev in devs:
            assert sum(dev.title in s for s in subjects) == 1, dev.title
        assert len(hook.posts) == len(devs)
        post = next(p for p in hook.posts if devs[0].title in p["title"])
        assert f"https://news.example.org/developments/{devs[0].id}.html" in post["message"]
        assert "Lithuania" in post["title"] or "Belarus" in post["title"]
        # Later rounds send nothing again.
        assert one.run_once(now + timedelta(minutes=5)).sent == 0
        assert two.run_once(now + timedelta(minutes=5)).sent == 0
        assert len(box.messages) == len(devs) and len(hook.posts) == len(devs)


def test_failures_are_retried_and_shown_in_healthz(
    db_url: str, tmp_path: Path, webhook: tuple[str, Hook]
) -> None:
    hook_url, hook = webhook
    config = _config(tmp_path, _alerts_yaml([hook_url]))
    watchlist = load_watchlist(config)
    with open_store(db_url) as store:
        dispatcher = AlertDispatcher(store, lambda: watchlist, "https://x.example", "r1")
        dispatcher.run_once(EARLY)
        assert main(["--db", db_url, "--config", str(config), "import", str(SEEDS)]) == 0
        count = len([d for d in store.list_developments(None, 0) if d.topics])
        hook.fail_next = 1000
        now = datetime.now(UTC)
        first = dispatcher.run_once(now)
        assert first.sent == 0 and first.failed == count
        state = OpsState(ready=True, alerts=lambda: store.alert_status(now))
        code, body = health_report(state)
        assert code == 200 and body["status"] == "degraded"
        assert body["alerts"]["retrying"] == count and body["alerts"]["failed"] == 0
        assert "baltic (push)" in body["alerts"]["last_error"]
        assert hook_url not in json.dumps(body)  # the URL (and its secrets) is never shown
        # Not yet due: nothing is tried again before the delay.
        assert dispatcher.run_once(now + timedelta(seconds=30)).failed == 0
        hook.fail_next = 0
        later = dispatcher.run_once(now + timedelta(seconds=61))
        assert later.sent == count and len(hook.posts) == count
        _, body = health_report(OpsState(ready=True, alerts=lambda: store.alert_status(now)))
        assert body["alerts"]["retrying"] == 0 and body["status"] == "ok"


def test_a_message_that_keeps_failing_is_given_up_after_max_attempts(
    db_url: str, tmp_path: Path
) -> None:
    config = _config(tmp_path, _alerts_yaml(["json://127.0.0.1:9/unreachable"]))
    watchlist = load_watchlist(config)
    with open_store(db_url) as store:
        dispatcher = AlertDispatcher(store, lambda: watchlist, "https://x.example", "r1")
        dispatcher.run_once(EARLY)
        assert main(["--db", db_url, "--config", str(config), "import", str(SEEDS)]) == 0
        now = datetime.now(UTC)
        for minutes in (0, 2, 5):  # retries after 60 s, then 120 s; max_attempts 3
            dispatcher.run_once(now + timedelta(minutes=minutes))
        status = store.alert_status(now + timedelta(minutes=5))
        assert status.failed >= 1 and status.retrying == 0 and status.pending == 0
        _, body = health_report(
            OpsState(ready=True, alerts=lambda: store.alert_status(now + timedelta(minutes=5)))
        )
        assert body["status"] == "degraded" and body["alerts"]["recently_failed"] >= 1


def test_daily_digest_lists_the_day_once(
    db_url: str, tmp_path: Path, smtp: tuple[str, Mailbox]
) -> None:
    mail_url, box = smtp
    config = _config(tmp_path, _alerts_yaml([], [mail_url], at="00:00"))
    watchlist = load_watchlist(config)  # publish.timezone defaults to UTC
    with open_store(db_url) as store:
        dispatcher = AlertDispatcher(store, lambda: watchlist, "https://news.example.org", "r1")
        dispatcher.run_once(EARLY)
        assert main(["--db", db_url, "--config", str(config), "import", str(SEEDS)]) == 0
        devs = [d for d in store.list_developments(None, 0) if d.topics]
        tomorrow = (datetime.now(UTC) + timedelta(days=1)).replace(hour=0, minute=30)
        # The seeds were published weeks ago but stored today: today's news here.
        assert all(d.first_seen < tomorrow - timedelta(days=2) for d in devs)
        rule = watchlist.alerts.rules[0]
        assert last_digest_day(rule, UTC, tomorrow) == tomorrow.date()
        assert dispatcher.run_once(tomorrow).sent == 1
        assert dispatcher.run_once(tomorrow + timedelta(hours=3)).sent == 0  # once a day
        (message,) = box.messages
        assert f"{len(devs)} new developments" in message["subject"]
        for dev in devs:
            assert dev.title in message["body"]
            assert f"https://news.example.org/developments/{dev.id}.html" in message["body"]


def test_watchlist_alerts_are_checked_with_file_and_line(tmp_path: Path) -> None:
    alerts = (
        "alerts:\n"
        "  max_attempts: 0\n"
        "  rules:\n"
        "    - id: one\n"
        "      topics: [lithuania, nosuch]\n"
        '      push: ["nosuchscheme://x", "json://127.0.0.1:1/ok"]\n'
        '      digest_at: "25:00"\n'
        "    - id: one\n"
        "      topics: [belarus]\n"
    )
    config = _config(tmp_path, alerts)
    base = WATCHLIST_YAML.count("\n")
    problems = {(p.line - base, p.message.split(":")[0]) for p in check_watchlist(config)}
    assert problems == {
        (2, "alerts.max_attempts"),
        (5, "alerts.rules[0].topics[1]"),
        (6, "alerts.rules[0].push[0]"),
        (7, "alerts.rules[0].digest_at"),
        (8, "alerts.rules[1].id"),
        (8, "alerts.rules[1]"),
    }, check_watchlist(config)


def test_no_alerts_section_means_no_alerts(db_url: str, tmp_path: Path) -> None:
    watchlist = load_watchlist(_config(tmp_path, ""))
    assert watchlist.alerts.rules == ()
    with open_store(db_url) as store:
        dispatcher = AlertDispatcher(store, lambda: watchlist, "https://x.example", "r1")
        assert dispatcher.run_once() == replace(dispatcher.run_once(), queued=0)


def test_cli_alerts_send_and_show(
    db_url: str, tmp_path: Path, webhook: tuple[str, Hook], capsys: pytest.CaptureFixture[str]
) -> None:
    hook_url, hook = webhook
    config = _config(tmp_path, _alerts_yaml([hook_url]))
    base = ["--db", db_url, "--config", str(config)]
    with open_store(db_url) as store:  # the rule exists before the records arrive
        AlertDispatcher(store, lambda: load_watchlist(config), "https://x", "r0").run_once(EARLY)
    assert main([*base, "import", str(SEEDS)]) == 0
    capsys.readouterr()
    assert main([*base, "alerts", "--send"]) == 0
    out = capsys.readouterr().out
    assert "sent" in out and "push" in out and hook_url not in out
    assert len(hook.posts) >= 2
    assert main([*base, "alerts", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["sent"] == len(hook.posts) and shown["pending"] == 0
    assert {m["status"] for m in shown["messages"]} == {"sent"}
