"""The benchmark feed server serves what the benchmarks claim: valid feeds in the declared
encodings, deterministic bytes, conditional GET, gzip, generations and request counts."""

from __future__ import annotations

import gzip
import io
import json
import statistics
import urllib.error
import urllib.request
from datetime import UTC, datetime

import feedparser
import pytest

from benchmarks.feedserver import (
    DEFAULT_EPOCH,
    ENCODINGS,
    FeedServerProcess,
    advance_of,
    feed_spec,
    render_feed,
)

CYRILLIC = set("абвгдежзийклмнопрстуфхцчшщыьэюя")
LITHUANIAN = set("ąčęėįšųūž")


def _parse(body: bytes, content_type: str) -> feedparser.FeedParserDict:
    return feedparser.parse(io.BytesIO(body), response_headers={"content-type": content_type})


def test_feeds_are_deterministic_and_vary_by_seed() -> None:
    a = render_feed(7, feed_spec(7, 3), 0, DEFAULT_EPOCH)
    b = render_feed(7, feed_spec(7, 3), 0, DEFAULT_EPOCH)
    c = render_feed(8, feed_spec(8, 3), 0, DEFAULT_EPOCH)
    assert a.body == b.body and a.etag == b.etag
    assert a.body != c.body


def test_every_encoding_parses_cleanly_with_the_right_letters() -> None:
    seen: set[str] = set()
    for i in range(60):
        spec = feed_spec(1, i)
        doc = render_feed(1, spec, 0, DEFAULT_EPOCH)
        parsed = _parse(doc.body, doc.content_type)
        assert not parsed.bozo, (i, parsed.get("bozo_exception"))
        assert parsed.encoding.lower() == spec.encoding
        assert len(parsed.entries) == spec.items
        assert 20 <= spec.items <= 50
        text = " ".join(e.title + e.summary for e in parsed.entries).lower()
        if spec.language == "ru":
            assert CYRILLIC & set(text)
        elif spec.language == "lt":
            assert LITHUANIAN & set(text)
        assert "\ufffd" not in text and "Ð" not in text  # no mojibake
        seen.add(spec.encoding)
    assert seen == set(ENCODINGS)


def test_sizes_have_the_benchmark_median() -> None:
    sizes = [len(render_feed(1, feed_spec(1, i), 0, DEFAULT_EPOCH).body) for i in range(120)]
    assert 45_000 <= statistics.median(sizes) <= 65_000


def test_advancing_adds_new_items_on_top_and_drops_the_oldest() -> None:
    spec = feed_spec(1, 5)
    old = _parse(*_body_and_type(render_feed(1, spec, 0, DEFAULT_EPOCH)))
    new = _parse(*_body_and_type(render_feed(1, spec, 3, DEFAULT_EPOCH)))
    old_ids = [e.id for e in old.entries]
    new_ids = [e.id for e in new.entries]
    assert new_ids[3:] == old_ids[:-3]
    assert not set(new_ids[:3]) & set(old_ids)
    assert new.entries[0].published_parsed >= old.entries[0].published_parsed


def test_advance_of_is_cumulative() -> None:
    totals = [advance_of(1, 2, g, 0.5, 5) for g in range(6)]
    assert totals[0] == 0
    assert totals == sorted(totals)


def _body_and_type(doc: object) -> tuple[bytes, str]:
    return doc.body, doc.content_type  # type: ignore[attr-defined]


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


@pytest.mark.slow
def test_server_conditional_get_gzip_generations_and_counts() -> None:
    epoch = datetime(2026, 11, 1, tzinfo=UTC)
    with FeedServerProcess(12, seed=3, hosts=2, epoch=epoch, change_fraction=0.5) as fs:
        assert fs.hosts == ["127.0.1.1", "127.0.1.2"]
        url = fs.url(1)
        assert url.startswith("http://127.0.1.2:")
        status, headers, body = _get(url)
        assert status == 200
        assert body == render_feed(3, feed_spec(3, 1), 0, epoch).body
        etag, modified = headers["ETag"], headers["Last-Modified"]

        assert _get(url, {"If-None-Match": etag})[0] == 304
        assert _get(url, {"If-Modified-Since": modified})[0] == 304
        assert _get(url, {"If-None-Match": '"other"'})[0] == 200

        status, headers, zipped = _get(url, {"Accept-Encoding": "gzip"})
        assert headers["Content-Encoding"] == "gzip"
        assert gzip.decompress(zipped) == body
        assert _get(url, {"If-None-Match": headers["ETag"]})[0] == 304  # the -gz tag also works

        counts = fs.counts()
        assert counts["paths"] == {"/feed/1.xml": 6}
        assert counts["by_status"] == {"200": 3, "304": 3}
        fs.reset_counts()
        assert fs.counts()["total"] == 0

        etags = {i: _get(fs.url(i))[1]["ETag"] for i in range(12)}
        step = fs.advance()
        assert step["gen"] == 1 and step["changed"] and step["new_items"] >= len(step["changed"])
        for i in range(12):
            status, headers, body = _get(fs.url(i), {"If-None-Match": etags[i]})
            assert status == (200 if i in step["changed"] else 304)
        changed = step["changed"][0]
        assert _get(fs.url(changed))[2] == _get(fs.url(changed) + "?gen=1")[2]
        assert _get(fs.url(changed))[2] != _get(fs.url(changed) + "?gen=0")[2]

        fs.rewind()
        assert _get(fs.url(changed), {"If-None-Match": etags[changed]})[0] == 304
        assert _get(fs.base + "/feed/99.xml")[0] == 404
        opml = _get(fs.base + "/feeds.opml")[2].decode()
        assert opml.count("<outline") == 12
        urls = json.loads(_get(fs.base + "/_control/feeds")[2])["urls"]
        assert urls == fs.urls()
