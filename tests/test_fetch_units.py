"""Pure parts of the fetch layer: next-fetch computation, charset decoding, bounded decoding."""

from __future__ import annotations

import asyncio
import gzip
import zlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aggregator.fetch import backoff, charset, schedule
from aggregator.fetch.limits import BodyTooLargeError, BoundedDecoder, ContentEncodingError
from aggregator.fetch.politeness import RobotsCache

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
FEEDS = Path(__file__).resolve().parent.parent / "fixtures" / "feeds"


# --- backoff ------------------------------------------------------------------------------


def test_success_uses_the_interval_or_a_longer_server_hint() -> None:
    assert schedule.next_fetch(NOW, interval=600, ok=True) == NOW + timedelta(seconds=600)
    hints = backoff.CacheHints(max_age=3600)
    assert schedule.next_fetch(NOW, interval=600, ok=True, hints=hints) == NOW + timedelta(hours=1)
    # A hint never makes us fetch more often than the schedule.
    hints = backoff.CacheHints(max_age=60)
    assert schedule.next_fetch(NOW, interval=600, ok=True, hints=hints) == NOW + timedelta(
        minutes=10
    )


def test_rss_ttl_and_far_future_expires_are_capped() -> None:
    hints = backoff.CacheHints(ttl=90 * 60)
    assert schedule.next_fetch(NOW, interval=600, ok=True, hints=hints) == NOW + timedelta(
        minutes=90
    )
    hints = backoff.CacheHints(max_age=365 * 86400)
    got = schedule.next_fetch(NOW, interval=600, ok=True, hints=hints, cap_seconds=86400)
    assert got == NOW + timedelta(days=1)


def test_failure_backoff_doubles_to_the_cap_and_never_gives_up() -> None:
    delays = [
        (
            schedule.next_fetch(
                NOW, interval=600, ok=False, consecutive_failures=n, cap_seconds=86400
            )
            - NOW
        ).total_seconds()
        for n in range(1, 12)
    ]
    assert delays[:4] == [600, 1200, 2400, 4800]
    assert delays == sorted(delays)
    assert delays[-1] == 86400
    huge = schedule.next_fetch(NOW, interval=600, ok=False, consecutive_failures=10**6)
    assert huge - NOW == timedelta(days=1)


def test_retry_after_lengthens_a_failure_delay() -> None:
    hints = backoff.CacheHints(retry_after=7200)
    got = schedule.next_fetch(NOW, interval=600, ok=False, consecutive_failures=1, hints=hints)
    assert got == NOW + timedelta(hours=2)


@given(
    interval=st.floats(min_value=1, max_value=86400),
    failures=st.integers(min_value=1, max_value=10_000),
    jitter=st.floats(min_value=0, max_value=1),
)
def test_failure_delay_is_always_finite_and_bounded(
    interval: float, failures: int, jitter: float
) -> None:
    got = schedule.next_fetch(
        NOW,
        interval=interval,
        ok=False,
        consecutive_failures=failures,
        jitter=jitter,
        cap_seconds=86400,
    )
    assert NOW < got <= NOW + timedelta(seconds=86400 * 1.1 + 1)


def test_hints_from_headers() -> None:
    headers = {"cache-control": "public, max-age=300", "age": "100"}
    assert backoff.hints_from_headers(headers, NOW).max_age == 200
    headers = {
        "expires": "Mon, 23 Nov 2026 13:00:00 GMT",
        "date": "Mon, 23 Nov 2026 12:00:00 GMT",
    }
    assert backoff.hints_from_headers(headers, NOW).max_age == 3600
    assert backoff.hints_from_headers({"cache-control": "no-cache"}, NOW).max_age == 0
    assert backoff.hints_from_headers({"retry-after": "120"}, NOW).retry_after == 120
    when = {"retry-after": "Mon, 23 Nov 2026 12:30:00 GMT"}
    assert backoff.hints_from_headers(when, NOW).retry_after == 1800
    assert backoff.hints_from_headers({"expires": "0"}, NOW).max_age is None


# --- charset ------------------------------------------------------------------------------

RU = "Президент Беларуси заявил, что сделает всё возможное"
LT = "Vyriausybė paskelbė ekstremaliąją situaciją dėl balionų „iš Baltarusijos“"


@pytest.mark.parametrize(
    ("body", "content_type", "language", "expected"),
    [
        (RU.encode("cp1251"), "text/html; charset=windows-1251", None, RU),
        (RU.encode("cp1251"), "text/html; charset=iso-8859-1", None, RU),  # mislabelled header
        (RU.encode("cp1251"), None, "be", RU),
        (RU.encode("utf-8"), "text/html; charset=windows-1251", None, RU),  # mislabelled utf-8
        (LT.encode("cp1257"), "text/html; charset=windows-1257", None, LT),
        (LT.encode("cp1257"), "text/html; charset=iso-8859-1", None, LT),
        (LT.encode("cp1257"), None, "lt", LT),
        (
            LT.replace("„", "").replace("“", "").encode("iso-8859-13"),
            "text/xml; charset=ISO-8859-13",
            None,
            LT.replace("„", "").replace("“", ""),
        ),
        (b"\xef\xbb\xbf" + RU.encode("utf-8"), "text/html; charset=windows-1251", None, RU),
        (("\ufeff" + LT).encode("utf-16-le"), None, None, LT),
    ],
)
def test_decode(body: bytes, content_type: str | None, language: str | None, expected: str) -> None:
    text, _ = charset.decode(body, content_type, language)
    assert text == expected


def test_declared_charset_in_xml_and_meta() -> None:
    assert charset.declared_charset(b'<?xml version="1.0" encoding="windows-1257"?><rss/>') == (
        "windows-1257"
    )
    assert charset.declared_charset(b'<html><head><meta charset="koi8-r">') == "koi8-r"
    page = b'<meta http-equiv="Content-Type" content="text/html; charset=windows-1251">'
    assert charset.declared_charset(page) == "windows-1251"


@pytest.mark.parametrize(
    ("name", "needle"),
    [
        ("rss_windows1251.xml", "Лукашенко пообещал"),
        ("rss_mislabelled_1251.xml", "Літва зачыніла"),
        ("rss_windows1257.xml", "ekstremaliąją"),
        ("atom_iso8859_13.xml", "Į Vilniaus oro uostą"),
        ("page_mislabelled_1257.html", "Vyriausybė paskelbė"),
    ],
)
def test_recorded_legacy_documents_decode_without_mojibake(name: str, needle: str) -> None:
    text, _ = charset.decode((FEEDS / name).read_bytes(), None)
    assert needle in text
    assert charset.mojibake_score(text) == 0


def test_mojibake_score_flags_wrong_tables() -> None:
    assert charset.mojibake_score(RU.encode("cp1251").decode("latin-1")) > 0
    assert charset.mojibake_score(LT.encode("cp1257").decode("cp1251")) > 0
    assert charset.mojibake_score(RU) == 0 and charset.mojibake_score(LT) == 0


def test_to_utf8_xml_rewrites_the_declaration() -> None:
    out = charset.to_utf8_xml('<?xml version="1.0" encoding="windows-1251"?><a>Вільня</a>')
    assert out.startswith(b'<?xml version="1.0" encoding="utf-8"?>')
    assert "Вільня".encode() in out


# --- bounded decoding ---------------------------------------------------------------------


def _feed(decoder: BoundedDecoder, data: bytes, step: int = 4096) -> bytes:
    out = []
    for i in range(0, len(data), step):
        out.extend(decoder.feed(data[i : i + step]))
    out.extend(decoder.flush())
    return b"".join(out)


def test_bounded_decoder_gzip_deflate_and_raw_deflate() -> None:
    payload = b"<rss>" + b"news " * 5000 + b"</rss>"
    assert _feed(BoundedDecoder("gzip", 10**6), gzip.compress(payload)) == payload
    assert _feed(BoundedDecoder("deflate", 10**6), zlib.compress(payload)) == payload
    raw = zlib.compressobj(wbits=-15)
    raw_body = raw.compress(payload) + raw.flush()
    assert _feed(BoundedDecoder("deflate", 10**6), raw_body) == payload
    assert _feed(BoundedDecoder(None, 10**6), payload) == payload
    two_members = gzip.compress(b"a" * 10) + gzip.compress(b"b" * 10)
    assert _feed(BoundedDecoder("gzip", 100), two_members) == b"a" * 10 + b"b" * 10


def test_bounded_decoder_stops_a_bomb_at_the_cap() -> None:
    bomb = gzip.compress(b"\0" * (64 * 1024 * 1024))
    decoder = BoundedDecoder("gzip", 1024 * 1024)
    with pytest.raises(BodyTooLargeError):
        _feed(decoder, bomb, step=len(bomb))  # the whole bomb in one chunk
    assert decoder.size <= 1024 * 1024 + 64 * 1024


def test_bounded_decoder_refuses_unknown_or_broken_encodings() -> None:
    with pytest.raises(ContentEncodingError):
        BoundedDecoder("br", 100)
    with pytest.raises(ContentEncodingError):
        _feed(BoundedDecoder("gzip", 100), b"definitely not gzip")


# --- robots cache -------------------------------------------------------------------------


def test_robots_cache_rules() -> None:
    answers = {
        "https://a": (200, "User-agent: aggregator\nDisallow: /private\n"),
        "https://b": (404, ""),
        "https://c": (500, ""),
    }
    calls: list[str] = []

    async def loader(origin: str) -> tuple[int, str]:
        calls.append(origin)
        if origin == "https://d":
            raise OSError("unreachable")
        return answers[origin]

    async def go() -> list[bool]:
        cache = RobotsCache(loader)
        ua = "aggregator/0.1 (+https://example.org)"
        return [
            await cache.allows("https://a", "https://a/private/x", ua),
            await cache.allows("https://a", "https://a/public", ua),
            await cache.allows("https://b", "https://b/anything", ua),
            await cache.allows("https://c", "https://c/anything", ua),
            await cache.allows("https://d", "https://d/anything", ua),
        ]

    assert asyncio.run(go()) == [False, True, True, False, False]
    assert calls.count("https://a") == 1


def _reference_mojibake_score(text: str) -> int:
    """The plain per-character definition that ``charset.mojibake_score`` computes faster."""
    from collections import Counter

    score = 0
    accented: Counter[str] = Counter()
    for ch in text:
        if ord(ch) < 0x80:
            continue
        if ord(ch) <= 0x9F:
            score += 5
        elif ch == "\ufffd":
            score += 1
        elif ch.isalpha() and not "\u0400" <= ch <= "\u04ff":
            accented[ch] += 1
    if accented:
        score += min(
            sum(n for ch, n in accented.items() if ch not in alphabet)
            for alphabet in charset._ALPHABETS
        )
    for word in charset._WORD.findall(text):
        cyrillic = ["\u0400" <= c <= "\u04ff" for c in word]
        if any(cyrillic) and not all(cyrillic):
            score += 3
    return score


@pytest.mark.parametrize("encoding", ["cp1251", "cp1257", "latin-1", "iso-8859-13", "cp1252"])
def test_mojibake_score_matches_its_definition(encoding: str) -> None:
    samples = [RU, LT, "abcЖd Жab ab Жdе xЖ аbc _abЖ 1aЖ2 éЖé \x85 \ufffd ąčęėįšųūž"]
    for text in samples:
        wrong = text.encode("utf-8", "replace").decode(encoding, "replace")
        for candidate in (text, wrong):
            assert charset.mojibake_score(candidate) == _reference_mojibake_score(candidate)
