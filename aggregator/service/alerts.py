"""Alerts: a push for each new development of a topic and a daily digest, through Apprise.

The watchlist's ``alerts.rules`` say which topics go to which Apprise URLs (e-mail, Telegram,
Matrix, ntfy, Slack, webhooks ...). Each round (``AlertDispatcher.run_once``, every
``alerts.check_seconds`` in the service, or ``aggregator alerts --send``):

1. queue what is owed: per rule and target, a push for each development of its topics first
   seen since the rule appeared, and the digest of the last local day once its hour has come;
   queueing is idempotent (a unique key in the store), so replicas may all do it;
2. claim due messages in a write transaction (a lease), so one replica sends each;
3. send each through Apprise; a failure is retried after ``retry_seconds``, doubling, up to
   ``max_attempts``, then kept as failed. /healthz shows waiting, retrying and failed messages
   and the latest error.

A replica that dies between sending and recording the send leaves the lease to expire and the
message is sent again: at least once, and once in every other case. Apprise URLs hold secrets
(passwords, tokens): they are never logged or shown; targets are named by the rule id and the
URL's scheme and a short hash.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from aggregator.model import AlertDelivery, AlertOptions, AlertRule, Development, Topic
from aggregator.publish.pages import MONTHS, local_time, outlet, reports_in_order
from aggregator.publish.render import development_url, entry_summary, entry_title
from aggregator.publish.site import PublishedWatchlist, make_site

log = logging.getLogger(__name__)

PUSH = "push"
DIGEST = "digest"
MAX_BACKOFF_SECONDS = 6 * 3600
DIGEST_LIMIT = 200  # developments listed in one digest


class AlertStore(Protocol):
    """The part of ``aggregator.store.Store`` alerts use."""

    def alert_since(self, rule_id: str, now: datetime) -> datetime: ...

    def new_developments(
        self,
        topics: Sequence[str],
        since: datetime,
        until: datetime | None = None,
        limit: int = 100,
    ) -> list[Development]: ...

    def queue_alerts(self, items: Sequence[tuple[str, str, str, str]], now: datetime) -> int: ...

    def claim_alerts(
        self, owner: str, now: datetime, lease_seconds: float, limit: int
    ) -> list[AlertDelivery]: ...

    def finish_alert(
        self,
        delivery_id: int,
        owner: str,
        now: datetime,
        *,
        error: str | None,
        retry_at: datetime | None,
    ) -> bool: ...

    def get_development(self, dev_id: str) -> Development | None: ...


class AlertWatchlist(PublishedWatchlist, Protocol):
    @property
    def alerts(self) -> AlertOptions: ...


# A sender takes (Apprise URL, title, body) and returns None when sent, else why not.
Sender = Callable[[str, str, str], str | None]


def target_key(url: str) -> str:
    """A short, stable name of a target that does not reveal its secrets."""
    scheme = url.split(":", 1)[0].lower()[:12]
    return f"{scheme}-{hashlib.sha256(url.encode()).hexdigest()[:10]}"


def apprise_send(url: str, title: str, body: str) -> str | None:
    """Send one message through Apprise; None when it went out, else Apprise's complaint."""
    import apprise

    notifier = apprise.Apprise()
    if not notifier.add(url):
        return "Apprise does not understand this URL"
    with apprise.LogCapture(level=logging.WARNING) as captured:
        ok = notifier.notify(title=title, body=body, body_format=apprise.NotifyFormat.TEXT)
    if ok:
        return None
    text = " ".join(captured.getvalue().split())
    return text[-500:] or "Apprise reported a failure without a reason"


@dataclass(frozen=True, slots=True)
class AlertRound:
    queued: int = 0
    sent: int = 0
    failed: int = 0  # attempts that failed (to be retried or given up)


class AlertDispatcher:
    """One replica's alert sender. ``run_once`` is synchronous (run it in a thread)."""

    def __init__(
        self,
        store: AlertStore,
        watchlist_provider: Callable[[], AlertWatchlist],
        base_url: str,
        owner: str,
        *,
        send: Sender = apprise_send,
    ) -> None:
        self.store = store
        self.watchlist_provider = watchlist_provider
        self.base_url = base_url
        self.owner = owner
        self.send = send

    def run_once(self, now: datetime | None = None) -> AlertRound:
        now = now or datetime.now(UTC)
        watchlist = self.watchlist_provider()
        options = watchlist.alerts
        if not options.rules:
            return AlertRound()
        zone = ZoneInfo(watchlist.publish.timezone)
        queued = self._queue(watchlist, options, zone, now)
        sent = failed = 0
        rules = {rule.id: rule for rule in options.rules}
        claimed = self.store.claim_alerts(
            self.owner, now, options.lease_seconds, options.batch_size
        )
        for delivery in claimed:
            error = self._deliver(watchlist, rules.get(delivery.rule_id), delivery, zone)
            if error is None:
                sent += 1
                self.store.finish_alert(delivery.id, self.owner, now, error=None, retry_at=None)
                continue
            failed += 1
            attempts = delivery.attempts + 1
            retry_at = None
            if attempts < options.max_attempts and not error.startswith("gone:"):
                delay = min(options.retry_seconds * 2 ** (attempts - 1), MAX_BACKOFF_SECONDS)
                retry_at = now + timedelta(seconds=delay)
            log.warning(
                "alerts: %s %s of rule %s to %s failed (attempt %d): %s%s",
                delivery.kind,
                delivery.item,
                delivery.rule_id,
                delivery.target,
                attempts,
                error,
                f"; retrying at {retry_at.isoformat(timespec='seconds')}" if retry_at else "",
            )
            self.store.finish_alert(delivery.id, self.owner, now, error=error, retry_at=retry_at)
        return AlertRound(queued=queued, sent=sent, failed=failed)

    # --- what is owed ----------------------------------------------------------------------

    def _queue(
        self, watchlist: AlertWatchlist, options: AlertOptions, zone: tzinfo, now: datetime
    ) -> int:
        items: list[tuple[str, str, str, str]] = []
        all_topics = [t.id for t in watchlist.topics]
        catch_up = now - timedelta(hours=options.catch_up_hours)
        for rule in options.rules:
            since = self.store.alert_since(rule.id, now)
            topics = list(rule.topics) or all_topics
            if rule.push:
                recent = max(since, catch_up)
                for dev in self.store.new_developments(topics, recent, None, DIGEST_LIMIT):
                    items += [(rule.id, target_key(u), PUSH, dev.id) for u in rule.push]
            if rule.digest:
                day = last_digest_day(rule, zone, now)
                if digest_instant(rule, zone, day) >= since:
                    items += [
                        (rule.id, target_key(u), DIGEST, day.isoformat()) for u in rule.digest
                    ]
        return self.store.queue_alerts(items, now) if items else 0

    # --- one message -------------------------------------------------------------------------

    def _deliver(
        self,
        watchlist: AlertWatchlist,
        rule: AlertRule | None,
        delivery: AlertDelivery,
        zone: tzinfo,
    ) -> str | None:
        if rule is None:
            return "gone: the rule is no longer in the watchlist"
        urls = rule.push if delivery.kind == PUSH else rule.digest
        url = next((u for u in urls if target_key(u) == delivery.target), None)
        if url is None:
            return "gone: the target is no longer in the rule"
        site = make_site(watchlist, self.base_url)
        topics = {t.id: t for t in watchlist.topics}
        if delivery.kind == PUSH:
            dev = self.store.get_development(delivery.item)
            if dev is None or not dev.topics:
                return "gone: the development no longer exists or matches no topic"
            title, body = push_message(dev, topics, development_url(site, dev.id), zone)
        else:
            day = date.fromisoformat(delivery.item)
            until = digest_instant(rule, zone, day)
            topic_ids = list(rule.topics) or list(topics)
            devs = self.store.new_developments(
                topic_ids, until - timedelta(days=1), until, DIGEST_LIMIT
            )
            if not devs:
                return None  # nothing new that day: no message
            links = [development_url(site, d.id) for d in devs]
            title, body = digest_message(rule, devs, links, topics, day, zone)
        try:
            return self.send(url, title, body)
        except Exception as exc:  # a broken notifier must not stop the other messages
            return f"{type(exc).__name__}: {exc}"


def last_digest_day(rule: AlertRule, zone: tzinfo, now: datetime) -> date:
    """The local day of the latest digest hour at or before ``now``."""
    local = now.astimezone(zone)
    day = local.date()
    if digest_instant(rule, zone, day) > now:
        day -= timedelta(days=1)
    return day


def digest_instant(rule: AlertRule, zone: tzinfo, day: date) -> datetime:
    hour, minute = (int(part) for part in rule.digest_at.split(":"))
    return datetime.combine(day, time(hour, minute), tzinfo=zone).astimezone(UTC)


def _topic_names(dev: Development, topics: dict[str, Topic]) -> str:
    return ", ".join(topics[t].title or t if t in topics else t for t in dev.topics)


def push_message(
    dev: Development, topics: dict[str, Topic], url: str, zone: tzinfo
) -> tuple[str, str]:
    """(title, plain-text body) of the message about one new development."""
    title = f"[{_topic_names(dev, topics)}] {entry_title(dev)}"
    lines = []
    summary = entry_summary(dev)
    if summary:
        lines += [summary, ""]
    outlets = list(dict.fromkeys(outlet(r) for r in reports_in_order(dev.sources)))
    lines.append(f"First reported {local_time(dev.first_seen, zone)}.")
    if outlets:
        lines.append("Reported by: " + ", ".join(outlets))
    lines += ["", url]
    return title, "\n".join(lines)


def digest_message(
    rule: AlertRule,
    devs: Sequence[Development],
    links: Sequence[str],
    topics: dict[str, Topic],
    day: date,
    zone: tzinfo,
) -> tuple[str, str]:
    """(title, plain-text body) of a rule's daily digest."""
    names = ", ".join(topics[t].title or t if t in topics else t for t in rule.topics) or "all"
    noun = "development" if len(devs) == 1 else "developments"
    when = f"{day.day} {MONTHS[day.month - 1]} {day.year}"
    title = f"[{names}] {len(devs)} new {noun} in the day to {when}"
    lines: list[str] = []
    for dev, link in zip(devs, links, strict=True):
        lines.append(f"- {entry_title(dev)} ({local_time(dev.first_seen, zone)})")
        lines.append(f"  {link}")
    return title, "\n".join(lines)


def describe(rule_id: str, deliveries: Sequence[AlertDelivery]) -> list[dict[str, Any]]:
    """JSON-ready rows for ``aggregator alerts --json``."""
    return [
        {
            "rule": d.rule_id,
            "target": d.target,
            "kind": d.kind,
            "item": d.item,
            "status": d.status,
            "attempts": d.attempts,
            "next_attempt": d.next_attempt.isoformat() if d.next_attempt else None,
            "sent": d.sent.isoformat() if d.sent else None,
            "last_error": d.last_error,
        }
        for d in deliveries
        if not rule_id or d.rule_id == rule_id
    ]


ALERT_JOB = "alerts"


def install_alerts(service: Any) -> AlertDispatcher | None:
    """Add the alert round to a running service: a scheduler job every
    ``alerts.check_seconds`` (as the watchlist says at start; the rules themselves follow
    reloads), run in a worker thread, and the queue's figures in /healthz. A round with no
    rules costs nothing; a failing round is logged and tried again next time."""
    import asyncio

    from apscheduler.triggers.interval import IntervalTrigger

    from aggregator.publish.site import public_base_url

    if not callable(getattr(service.store, "claim_alerts", None)):
        return None  # a store without the alert queue (a test double): no alerts

    def watchlist() -> AlertWatchlist:
        current: AlertWatchlist = service.watchlist
        return current

    def base_url() -> str:
        return public_base_url(service.watchlist.publish, service.settings.public_url)

    dispatcher = AlertDispatcher(service.store, watchlist, base_url(), service.owner)
    service.state.alerts = service.store.alert_status

    async def tick() -> None:
        if not getattr(service.watchlist, "alerts", AlertOptions()).rules:
            return
        dispatcher.base_url = base_url()
        try:
            result = await asyncio.to_thread(dispatcher.run_once)
        except Exception:
            log.exception("alerts: the round failed; trying again at the next one")
            return
        if result.sent or result.failed:
            log.info(
                "alerts: %d sent, %d failed, %d queued", result.sent, result.failed, result.queued
            )

    seconds = max(1, getattr(service.watchlist, "alerts", AlertOptions()).check_seconds)
    service.scheduler.scheduler.add_job(
        tick,
        IntervalTrigger(seconds=seconds, timezone=UTC),
        id=ALERT_JOB,
        coalesce=True,
        max_instances=1,
        misfire_grace_time=seconds,
    )
    return dispatcher
