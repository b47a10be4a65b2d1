"""The fetch cycle end to end: hostile and healthy sources in one cycle, on SQLite and
PostgreSQL; states say why; other sources are unaffected; nothing stored is lost."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from aggregator.cli import main as cli_main
from aggregator.cycle import SourceReport, fetch_source, run_cycle
from aggregator.errors import StoreError
from aggregator.fetch import Fetcher
from aggregator.model import FailureClass, FetchState, Source
from aggregator.store import Store, open_store
from aggregator.watchlist import Watchlist, load_watchlist_text
from tests.hostile_server import HostileServer

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
JSON_TYPE = "application/feed%2Bjson"
MISLABELLED = "rss_mislabelled_1251.xml"
LATIN1 = "text/xml;%20charset=iso-8859-1"

HOSTILE = {
    "slow-drip": ("/slow", FailureClass.TIMEOUT),
    "gzip-bomb": ("/bomb", FailureClass.TOO_LARGE),
    "endless": ("/endless", FailureClass.TOO_LARGE),
    "redirect-loop": ("/loop/a", FailureClass.TOO_MANY_REDIRECTS),
    "to-private": ("/to-private", FailureClass.BLOCKED_BY_POLICY),
    "to-metadata": ("/to-metadata", FailureClass.BLOCKED_BY_POLICY),
    "wrong-length": ("/wrong-length", FailureClass.PROTOCOL),
    "rate-limited": ("/rate-limited", FailureClass.RATE_LIMITED),
    "storm-500": ("/error500", FailureClass.HTTP_5XX),
    "challenge": ("/challenge", FailureClass.NOT_A_FEED),
    "empty": ("/empty", FailureClass.NOT_A_FEED),
    "entities": ("/entities", FailureClass.PARSE_ERROR),
}


@pytest.fixture(scope="module")
def server() -> Iterator[HostileServer]:
    with HostileServer() as s:
        yield s


def watchlist_text(server: HostileServer) -> str:
    def fixture(name: str, ctype: str = "application/xml") -> str:
        return server.url(f"/fixture?name={name}&type={ctype}")

    lines = [
        "version: 1",
        "defaults:",
        "  schedule: {every: 10m}",
        "fetch:",
        "  timeout_seconds: 1",
        "  connect_timeout_seconds: 0.5",
        "  max_body_bytes: 262144",
        "  retries: 1",
        "  per_host_concurrency: 16",
        "  min_host_interval_seconds: 0",
        "  max_backoff_seconds: 86400",
        '  allow_networks: ["127.0.0.1/32"]',
        "topics:",
        "  - id: border",
        "    title: Border",
        "    rules:",
        "      any: [border*, balloon*, airport, Vilnius, Лукашенко, Літва, Vyriausybė]",
        "sources:",
        f'  - {{id: etag-feed, kind: feed, url: "{server.url("/feed.xml")}"}}',
        f'  - {{id: rss, kind: feed, url: "{fixture("rss_utf8.xml")}"}}',
        f'  - {{id: atom, kind: feed, url: "{fixture("atom.xml")}"}}',
        f'  - {{id: json, kind: feed, url: "{fixture("jsonfeed.json", JSON_TYPE)}"}}',
        f'  - {{id: by, kind: feed, language: be, url: "{fixture(MISLABELLED, LATIN1)}"}}',
        f'  - {{id: lt, kind: feed, language: lt, url: "{fixture("rss_windows1257.xml")}"}}',
    ]
    lines += [
        f'  - {{id: {sid}, kind: feed, url: "{server.url(path)}"}}'
        for sid, (path, _) in HOSTILE.items()
    ]
    return "\n".join(lines) + "\n"


def cycle(
    store: Store, watchlist: Watchlist, *, now: datetime = NOW, ids: list[str] | None = None
) -> dict[str, SourceReport]:
    async def go() -> list[SourceReport]:
        async with Fetcher(watchlist.fetch, retry_wait_initial=0.01, retry_wait_max=0.05) as f:
            return await run_cycle(store, f, watchlist, source_ids=ids, now=now)

    return {r.source_id: r for r in asyncio.run(go())}


def test_one_cycle_with_hostile_and_healthy_sources(db_url: str, server: HostileServer) -> None:
    watchlist = load_watchlist_text(watchlist_text(server))
    with open_store(db_url) as store:
        reports = cycle(store, watchlist)
        assert set(reports) == {s.id for s in watchlist.sources}
        for sid in ("etag-feed", "rss", "atom", "json", "by", "lt"):
            assert reports[sid].status == "ok", reports[sid]
            assert reports[sid].new_records >= 1
        for sid, (_, expected) in HOSTILE.items():
            report = reports[sid]
            assert report.status == "failed" and report.failure_class == expected, report
            state = store.get_fetch_state(sid)
            assert state.failure_class == expected
            assert state.consecutive_failures == 1
            assert state.failure_counts == {str(expected): 1}
            assert state.last_error and state.last_success is None
            assert state.next_fetch is not None and state.next_fetch > NOW
        assert reports["slow-drip"].elapsed < 1 * 2 + 3  # two attempts of the 1 s deadline
        rate = store.get_fetch_state("rate-limited")
        assert rate.next_fetch is not None and rate.next_fetch >= NOW + timedelta(seconds=3600)
        stored = store.count_records()
        assert stored == sum(r.new_records for r in reports.values())
        by = [r for r in store.iter_records() if r.source_id == "by"]
        assert any(r.title == "Лукашенко пообещал остановить метеозонды" for r in by)
        good = store.get_fetch_state("etag-feed")
        assert good.etag == '"v1"' and good.last_success == NOW and good.failure_class is None

        # Second cycle, everything due again: healthy feeds cost nothing, failures grow.
        later = NOW + timedelta(days=2)
        again = cycle(store, watchlist, now=later)
        assert again["etag-feed"].status == "not-modified" and again["etag-feed"].http_status == 304
        for sid in ("rss", "atom", "by", "lt"):
            assert again[sid].status == "ok" and again[sid].new_records == 0
            assert again[sid].known == again[sid].entries
        for sid in ("rss", "atom"):
            assert again[sid].parsed is False  # the id pre-pass saw nothing new
        # Relative guids ("by-1") cannot be predicted by the pre-pass: parsed, then skipped.
        assert again["by"].parsed is True
        assert again["json"].new_records == 0 and again["json"].known == 2
        assert store.count_records() == stored  # nothing lost, nothing duplicated
        storm = store.get_fetch_state("storm-500")
        assert storm.consecutive_failures == 2 and storm.failure_counts == {"http-5xx": 2}
        assert storm.next_fetch is not None
        assert storm.next_fetch - later >= timedelta(minutes=20)  # 10 min doubled


def test_a_cycle_saves_every_state_and_ends_every_lease(
    db_url: str, server: HostileServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """States are saved in groups; one that cannot be saved fails alone, and still ends its
    lease, so the next cycle (or another replica) fetches it again."""
    watchlist = load_watchlist_text(watchlist_text(server))
    with open_store(db_url) as store:
        saves = store.save_fetch_states

        def save_unless_atom(states: Sequence[FetchState], *, release_owner: str | None) -> None:
            if any(s.source_id == "atom" for s in states):
                raise StoreError("disk full")
            saves(states, release_owner=release_owner)

        monkeypatch.setattr(store, "save_fetch_states", save_unless_atom)
        reports = cycle(store, watchlist)
        assert set(reports) == {s.id for s in watchlist.sources}
        atom = reports["atom"]
        assert atom.status == "failed" and atom.failure_class == FailureClass.INTERNAL
        assert atom.error and "disk full" in atom.error
        assert reports["rss"].status == "ok" and reports["storm-500"].status == "failed"
        assert store.list_leases() == {}
        states = store.get_fetch_states(list(reports))
        assert states["atom"].fetch_count == 0  # not saved: due again
        assert all(states[i].fetch_count == 1 for i in reports if i != "atom")
        monkeypatch.undo()
        assert set(cycle(store, watchlist, now=NOW + timedelta(seconds=1))) == {"atom"}


def test_success_resets_the_backoff(db_url: str, server: HostileServer) -> None:
    watchlist = load_watchlist_text(watchlist_text(server))
    source = watchlist.source("etag-feed")
    assert source is not None
    broken = replace(source, url=server.url("/error500"))

    async def go(src: Source, now: datetime) -> SourceReport:
        async with Fetcher(watchlist.fetch, retry_wait_initial=0.01, retry_wait_max=0.05) as f:
            from aggregator.match import TopicMatcher

            return await fetch_source(
                store, f, src, matcher=TopicMatcher(watchlist.topics), watchlist=watchlist, now=now
            )

    with open_store(db_url) as store:
        store.sync_sources(watchlist.sources, NOW)
        for i in range(3):
            assert asyncio.run(go(broken, NOW + timedelta(hours=i))).status == "failed"
        assert store.get_fetch_state("etag-feed").consecutive_failures == 3
        ok = asyncio.run(go(source, NOW + timedelta(hours=5)))
        assert ok.status == "ok"
        state = store.get_fetch_state("etag-feed")
        assert state.consecutive_failures == 0 and state.failure_class is None
        assert state.failure_counts == {"http-5xx": 3}  # history is kept
        assert state.next_fetch == ok.next_fetch
        assert state.next_fetch is not None
        # Back to the schedule, stretched by the feed's <ttl>90</ttl> (plus up to 10 % jitter).
        delay = state.next_fetch - (NOW + timedelta(hours=5))
        assert timedelta(minutes=90) <= delay <= timedelta(minutes=99)


def test_explicit_sources_are_fetched_even_when_not_due(db_url: str, server: HostileServer) -> None:
    watchlist = load_watchlist_text(watchlist_text(server))
    with open_store(db_url) as store:
        first = cycle(store, watchlist, ids=["rss"])
        assert list(first) == ["rss"] and first["rss"].new_records == 3
        assert cycle(store, watchlist, ids=["rss"])["rss"].known == 3
        due = cycle(store, watchlist, now=NOW)  # rss is not due any more
        assert "rss" not in due


def test_cli_fetch_once_and_sources(
    tmp_path: Path, server: HostileServer, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "watchlist.yaml"
    config.write_text(watchlist_text(server), encoding="utf-8")
    db = f"sqlite:///{tmp_path / 'agg.db'}"
    args = ["--db", db, "--config", str(config)]
    assert cli_main([*args, "fetch-once", "--source", "rss", "--source", "challenge"]) == 1
    out = capsys.readouterr().out
    assert "rss" in out and "new   3" in out and "[not-a-feed]" in out
    assert cli_main([*args, "fetch-once", "--source", "rss", "--json"]) == 0
    line = json.loads(capsys.readouterr().out.strip())
    assert line["source"] == "rss" and line["known"] == 3 and line["status"] == "ok"
    assert cli_main([*args, "sources", "--json"]) == 0
    health = {row["source"]: row for row in json.loads(capsys.readouterr().out)}
    assert health["rss"]["state"] == "ok" and health["rss"]["last_success"]
    assert health["challenge"]["state"] == "failing"
    assert health["challenge"]["failure_class"] == "not-a-feed"
    assert health["atom"]["state"] == "new" and health["atom"]["due"] is True
    assert cli_main([*args, "sources"]) == 0
    table = capsys.readouterr().out
    assert "not-a-feed" in table and "last error" in table
    assert cli_main([*args, "fetch-once", "--source", "nope"]) == 2


ARTICLE = """<!DOCTYPE html><html lang="en"><head><meta charset="windows-1257">
<title>{title}</title></head><body><nav><a href="/">Home</a> | <a href="/about">About</a></nav>
<article><h1>{title}</h1>
<p>{lead}</p>
<p>The government said the measures would stay in force until the border situation improves,
and that patrols along the frontier would be doubled during the coming weeks.</p>
<p>Officials in Vilnius described the balloon incursions as a deliberate hybrid attack and said
that further steps were being prepared together with partners in the European Union.</p>
</article><footer>© Example News</footer></body></html>
"""


def _add_site(server: HostileServer) -> None:
    async def send(w: object, body: bytes, ctype: str) -> None:
        await server._send(w, 200, body, ctype)  # type: ignore[arg-type]

    def page(title: str, lead: str) -> bytes:
        return ARTICLE.format(title=title, lead=lead).encode("cp1257")

    async def listing(req: object, w: object) -> None:
        body = (
            b"<html><body><ul class='news'>"
            b"<li><a href='/site/a1.html'>Vilnius airport closed again</a></li>"
            b"<li><a href='/site/a2.html'>Border patrols doubled</a></li>"
            b"<li><a href='/site/broken.html'>Broken article</a></li>"
            b"</ul></body></html>"
        )
        await send(w, body, "text/html")

    async def a1(req: object, w: object) -> None:
        lead = "Vilniaus oro uostas vėl uždarytas: balionai sustabdė skrydžius šeštą kartą."
        await send(w, page("Vilnius airport closed again", lead), "text/html; charset=iso-8859-1")

    async def a2(req: object, w: object) -> None:
        lead = "Lithuania doubles border patrols after a week of balloon incursions."
        await send(w, page("Border patrols doubled", lead), "text/html")

    async def a3(req: object, w: object) -> None:
        lead = "Patrols were doubled along the whole frontier on Monday night."
        await send(w, page("Border patrols doubled", lead), "text/html")

    async def broken(req: object, w: object) -> None:
        await server._send(w, 500, b"boom", "text/plain")  # type: ignore[arg-type]

    async def short_feed(req: object, w: object) -> None:
        link = server.url("/site/a3.html")
        body = (
            '<?xml version="1.0"?><rss version="2.0"><channel><title>Short</title>'
            f"<item><title>Border patrols doubled</title><link>{link}</link>"
            f"<guid>{link}</guid><description>Patrols doubled.</description></item>"
            "</channel></rss>"
        ).encode()
        await send(w, body, "application/rss+xml")

    server.routes.update(
        {
            "/site/listing.html": listing,
            "/site/a1.html": a1,
            "/site/a2.html": a2,
            "/site/a3.html": a3,
            "/site/broken.html": broken,
            "/site/short.xml": short_feed,
        }
    )


def test_page_source_and_full_text(db_url: str, server: HostileServer) -> None:
    _add_site(server)
    text = watchlist_text(server).replace(
        "sources:\n",
        "sources:\n"
        "  - id: site\n    kind: page\n    language: lt\n"
        f'    url: "{server.url("/site/listing.html")}"\n'
        "    selectors: {item: 'ul.news li', link: a}\n"
        "  - id: short\n    kind: feed\n    full_text: true\n"
        f'    url: "{server.url("/site/short.xml")}"\n',
        1,
    )
    watchlist = load_watchlist_text(text)
    with open_store(db_url) as store:
        site = cycle(store, watchlist, ids=["site"])["site"]
        assert site.status == "ok" and site.entries == 3
        assert site.new_records == 2 and site.item_errors == 1  # the broken article is skipped
        stored = {r.url: r for r in store.iter_records()}
        a1 = stored[server.url("/site/a1.html")]
        assert a1.title == "Vilnius airport closed again"
        assert "Vilniaus oro uostas vėl uždarytas" in a1.text  # windows-1257 behind a latin-1 label
        assert "Home | About" not in a1.text
        short = cycle(store, watchlist, ids=["short"])["short"]
        assert short.status == "ok" and short.new_records == 1
        # The entry only says "Patrols doubled."; full_text fetched and extracted the article.
        a3 = store.get_records([r.id for r in store.iter_records() if r.source_id == "short"])[0]
        assert a3.url == server.url("/site/a3.html") and a3.guid == a3.url
        assert "Patrols were doubled along the whole frontier" in a3.text
        assert "hybrid attack" in a3.text
        again = cycle(store, watchlist, ids=["site"])["site"]
        assert again.new_records == 0 and again.known == 2
        # The broken article waits out its backoff (fetch.article_retry_seconds): not fetched.
        assert again.item_errors == 0 and again.links_skipped == 1


def test_parsing_in_a_process_pool_gives_the_same_records(
    tmp_path: Path, server: HostileServer, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "watchlist.yaml"
    config.write_text(watchlist_text(server), encoding="utf-8")
    wanted = ["rss", "atom", "by", "challenge", "entities"]
    outputs = []
    for processes, db in (("0", "inline.db"), ("2", "pool.db")):
        args = ["--db", f"sqlite:///{tmp_path / db}", "--config", str(config)]
        sources = [a for sid in wanted for a in ("--source", sid)]
        assert (
            cli_main([*args, "fetch-once", *sources, "--json", "--parse-processes", processes]) == 1
        )
        rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        outputs.append(
            {r["source"]: (r["status"], r["new_records"], r["failure_class"]) for r in rows}
        )
        with open_store(args[1]) as store:
            outputs.append(sorted((r.id, r.text) for r in store.iter_records()))  # type: ignore[arg-type]
    assert outputs[0] == outputs[2] and outputs[1] == outputs[3]
    assert outputs[0]["challenge"] == ("failed", 0, "not-a-feed")
    assert outputs[0]["entities"] == ("failed", 0, "parse-error")


def test_page_source_body_selector_chooses_the_article_text(
    db_url: str, server: HostileServer
) -> None:
    _add_site(server)
    text = watchlist_text(server).replace(
        "sources:\n",
        "sources:\n"
        "  - id: site-body\n    kind: page\n    language: lt\n"
        f'    url: "{server.url("/site/listing.html")}"\n'
        "    selectors: {item: 'ul.news li', link: a, body: 'article p:last-of-type'}\n",
        1,
    )
    watchlist = load_watchlist_text(text)
    with open_store(db_url) as store:
        report = cycle(store, watchlist, ids=["site-body"])["site-body"]
        assert report.status == "ok" and report.new_records == 2
        for record in store.iter_records():
            # Only the element the admin's selector names is the article's text.
            assert "Officials in Vilnius described" in record.text
            assert "The government said" not in record.text


def test_a_permanent_redirect_moves_the_source_until_the_watchlist_changes(
    db_url: str, server: HostileServer, caplog: pytest.LogCaptureFixture
) -> None:
    """301/308 on every hop: the source is fetched at its new address from then on (one request,
    its conditional headers), `sources` shows the move, and it ends when the watchlist names
    another URL or the new address answers 4xx (the watchlist's URL is tried again)."""
    new_home_gone = False

    async def old_home(req: object, w: asyncio.StreamWriter) -> None:
        await server._send(w, 301, b"", "text/plain", {"Location": "/new-home.xml"}, "Moved")

    async def new_home(req: object, w: asyncio.StreamWriter) -> None:
        if new_home_gone:
            await server._send(w, 404, b"gone", "text/plain", None, "Not Found")
        else:
            await server.h_feed_xml(req, w)  # type: ignore[arg-type]

    server.routes.update({"/old-home.xml": old_home, "/new-home.xml": new_home})
    watchlist = load_watchlist_text(watchlist_text(server))
    source = replace(watchlist.source("etag-feed"), id="mover", url=server.url("/old-home.xml"))  # type: ignore[arg-type]
    watchlist = replace(watchlist, sources=(source,))

    async def fetch(src: Source, now: datetime) -> SourceReport:
        async with Fetcher(watchlist.fetch, retry_wait_initial=0.01, retry_wait_max=0.05) as f:
            from aggregator.match import TopicMatcher

            matcher = TopicMatcher(watchlist.topics)
            return await fetch_source(store, f, src, matcher=matcher, watchlist=watchlist, now=now)

    with open_store(db_url) as store:
        store.sync_sources(watchlist.sources, NOW)
        first = asyncio.run(fetch(source, NOW))
        assert first.status == "ok" and first.new_records > 0
        state = store.get_fetch_state("mover")
        assert (state.moved_from, state.moved_to) == (source.url, server.url("/new-home.xml"))
        assert "moved permanently" in caplog.text

        old_hits = server.hits["/old-home.xml"]
        again = asyncio.run(fetch(source, NOW + timedelta(hours=1)))
        assert again.status == "not-modified"  # asked at the new address, with its ETag
        assert server.hits["/old-home.xml"] == old_hits

        from aggregator.cli.fetch_cmds import health

        row = health(store.get_fetch_state("mover"), source, NOW)
        assert row["moved_to"] == server.url("/new-home.xml")

        new_home_gone = True
        failed = asyncio.run(fetch(source, NOW + timedelta(hours=2)))
        assert failed.status == "failed" and failed.failure_class is FailureClass.HTTP_4XX
        state = store.get_fetch_state("mover")
        assert state.moved_to is None and state.moved_from is None
        new_home_gone = False
        back = asyncio.run(fetch(source, NOW + timedelta(hours=3)))
        assert back.status in ("ok", "not-modified")
        assert server.hits["/old-home.xml"] == old_hits + 1  # the watchlist's URL, moved again
        assert store.get_fetch_state("mover").moved_to == server.url("/new-home.xml")

        edited = replace(source, url=server.url("/feed.xml"))  # the admin updated the watchlist
        asyncio.run(fetch(edited, NOW + timedelta(hours=4)))
        state = store.get_fetch_state("mover")
        assert state.moved_to is None and state.moved_from is None
        assert health(state, edited, NOW)["moved_to"] is None
