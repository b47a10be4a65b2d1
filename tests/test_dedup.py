"""dedup: canonical URLs, fingerprints, the online decision, representatives, the seeds."""

from __future__ import annotations

import base64
import dataclasses
import json
import struct
from collections import Counter, defaultdict
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aggregator import dedup, identity, records
from aggregator.dedup import Candidate, Fingerprint
from aggregator.model import DedupOptions, DedupReason

ROOT = Path(__file__).resolve().parent.parent
SEEDS = ROOT / "seeds"
OPTIONS = DedupOptions()
T0 = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)

# ------------------------------------------------------------------ level 1: canonical URLs


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "https://www.example.com/news/story?utm_source=x&utm_medium=rss&id=7#comments",
            "https://example.com/news/story?id=7",
        ),
        ("http://example.com/a/b/", "https://example.com/a/b"),
        ("https://EXAMPLE.com:443/a", "https://example.com/a"),
        ("http://example.com:80/a", "https://example.com/a"),
        ("https://example.com:8080/a", "https://example.com:8080/a"),
        ("https://m.example.com/a", "https://example.com/a"),
        ("https://mobile.example.com/a", "https://example.com/a"),
        ("https://amp.example.com/a", "https://example.com/a"),
        ("https://example.com/a/amp", "https://example.com/a"),
        ("https://example.com/amp/a", "https://example.com/a"),
        ("https://example.com/a?amp=1", "https://example.com/a"),
        ("https://example.com/a?outputType=amp", "https://example.com/a"),
        ("https://example.com/a.amp.html", "https://example.com/a.html"),
        ("https://example.com/a/.amp", "https://example.com/a"),  # found by hypothesis
        ("https://example.com/a/amp.amp", "https://example.com/a"),
        ("https://example.com/a?fbclid=abc&gclid=def&mc_cid=1&mc_eid=2", "https://example.com/a"),
        ("https://example.com/a?ref=twitter&ref_src=twsrc", "https://example.com/a"),
        ("https://example.com/a?b=2&a=1", "https://example.com/a?a=1&b=2"),
        ("https://example.com/", "https://example.com/"),
        ("https://example.com", "https://example.com/"),
        # "m." is a variant prefix only when a real domain remains
        ("https://m.com/a", "https://m.com/a"),
        # a meaningful "output" parameter stays
        ("https://example.com/a?output=print", "https://example.com/a?output=print"),
    ],
)
def test_canonical_url(url: str, expected: str) -> None:
    assert identity.canonical_url(url) == expected


def test_canonical_url_variants_meet() -> None:
    variants = [
        "https://www.lrt.lt/naujienos/12345/story?utm_campaign=rss",
        "http://m.lrt.lt/naujienos/12345/story/",
        "https://lrt.lt/naujienos/12345/story/amp#top",
        "https://amp.lrt.lt/naujienos/12345/story?amp=1&fbclid=zz",
    ]
    assert len({identity.canonical_url(u) for u in variants}) == 1


@pytest.mark.parametrize(
    "bad", ["", "not a url", "ftp://example.com/a", "/relative/path", "https://"]
)
def test_canonical_url_rejects_non_http(bad: str) -> None:
    with pytest.raises(ValueError, match="URL"):
        identity.canonical_url(bad)


# ------------------------------------------------------------------ fingerprints

BALLOONS = (
    "Lithuania's government on Tuesday declared a national emergency over weather balloons "
    "sent from Belarus that have violated its airspace, forcing Vilnius airport to close "
    "repeatedly. Interior Minister Vladislav Kondratovič said prosecutors had opened an "
    "investigation. The balloons carry smuggled cigarettes, officials said, and more than "
    "350 flights and 51,000 passengers have been affected since October."
)
QUAKE = (
    "A magnitude 6.1 earthquake struck Aceh province on Indonesia's Sumatra island on "
    "Tuesday, killing at least 22 people and injuring dozens, the national disaster agency "
    "said. Houses and mosques collapsed in Bener Meriah and Central Aceh districts."
)


def test_fingerprint_is_deterministic_and_json_round_trips() -> None:
    fp = dedup.fingerprint("Lithuania declares emergency over balloons", BALLOONS, "en")
    again = dedup.fingerprint("Lithuania declares emergency over balloons", BALLOONS, "en")
    assert fp == again
    assert len(fp.minhash) == dedup.NUM_PERM
    assert len(fp.bands) == dedup.NUM_PERM // dedup.BAND_ROWS
    assert 0 < len(fp.key_terms) <= dedup.MAX_KEY_TERMS
    back = dedup.fingerprint_from_json(dedup.fingerprint_to_json(fp))
    assert back == fp
    assert back.vector() == pytest.approx(fp.vector())
    assert back.head_vector() == pytest.approx(fp.head_vector())


def test_fingerprint_term_vector_is_unit_length_and_names_weigh_most() -> None:
    fp = dedup.fingerprint("Lithuania declares emergency over balloons", BALLOONS)
    assert sum(w * w for w in fp.weights) == pytest.approx(1.0, abs=1e-3)
    # rare names outrank common words; stopwords never appear
    assert fp.vector()[_key("Kondratovič")] > fp.vector().get(_key("officials"), 0.0)
    assert _key("the") not in fp.vector()
    assert "#350" in fp.numbers and "#51000" in fp.numbers and "m10" in fp.numbers


def _key(word: str) -> str:
    return dedup._tokenize(word).keys[0]


def test_word_caches_never_change_a_fingerprint(monkeypatch: pytest.MonkeyPatch) -> None:
    texts = [BALLOONS, "Вильнюс отверг предложение Лукашенко о переговорах.", "Kondratovič: ne."]
    caches = ("_KEY_CACHE", "_IDF_CACHE", "_WORD_TERM", "_WORD_CRC", "_WORD_NUMBER")
    for name in caches:
        monkeypatch.setattr(dedup, name, {})
    for name in ("_CAPITAL", "_NAMED"):
        monkeypatch.setattr(dedup, name, set())
    cached = [dedup.fingerprint("Title", t) for t in texts * 2]  # the second round: all hits
    assert not any("_" in k for k in dedup._IDF_CACHE)  # name pairs are never kept
    # caches smaller than one text are cleared on every call: every word folded and weighed afresh
    for name in caches:
        monkeypatch.setattr(dedup, name, {})
    for name in ("_CAPITAL", "_NAMED"):
        monkeypatch.setattr(dedup, name, set())
    monkeypatch.setattr(dedup, "KEY_CACHE_SIZE", 3)
    monkeypatch.setattr(dedup, "IDF_CACHE_SIZE", 3)
    fresh = [dedup.fingerprint("Title", t) for t in texts * 2]
    assert fresh == cached
    assert len(dedup._KEY_CACHE) < 100 and len(dedup._IDF_CACHE) <= 3
    assert len(dedup._WORD_CRC) < 100 and len(dedup._CAPITAL) < 100


def test_normalization_meets_across_scripts_and_spellings() -> None:
    assert _key("Kondratovič") == _key("Kondratovic")
    assert _key("Лукашенко") == _key("Lukashenko") == _key("Lukašenka")
    assert _key("Вильнюс") == _key("Vilnius")
    assert _key("refuses") == _key("rejected") == _key("atmetė")  # one news predicate
    # months in any language become one key
    assert dedup._number_key(_key("gruodžio")) == dedup._number_key(_key("December")) == "m12"


def test_watchlist_news_words_meet_across_languages() -> None:
    # The default watchlist's own subjects: sanctions, airport closures, border crossings.
    assert _key("sanctions") == _key("sankcijos") == _key("санкций")
    assert _key("flights") == _key("skrydžius") == _key("рейсов") == _key("полёты")
    assert _key("passengers") == _key("keleivių") == _key("пассажиров")
    assert _key("suspended") == _key("sustabdė") == _key("закрыт") == _key("shut")
    assert _key("border") == _key("sieną") == _key("границы")
    assert _key("contraband") == _key("kontrabanda") == _key("smuggling")
    assert _key("airport") == _key("аэропорта")


def test_thousands_separated_by_spaces_are_one_number() -> None:
    # "4 000" (Lithuanian, Russian), "4,000" and "4000" are one number; a year next to a
    # number is not a thousands group; a decimal part stays with its number.
    text = "4 000 keleivių, 4\u00a0000, 4,000 people, 4000 человек"
    assert dedup.fingerprint("", text).numbers == ("#4000",)
    assert dedup._tokenize("in 2024 100 people").keys[:3] == ["in", "2024", "100"]
    assert dedup._tokenize("3 000,5 mln").keys[:2] == ["3 000,5", "mln"]


MULTILINGUAL = Path(__file__).resolve().parents[1] / "benchmarks/data/multilingual/articles.jsonl"


def test_multilingual_reports_group_and_same_kind_events_stay_apart() -> None:
    """The multilingual set streamed in file order: every English, Lithuanian and Russian
    report of one event in one development, and no two events (two earthquakes, two rounds of
    sanctions, two border closures) in one."""
    rows = [json.loads(line) for line in MULTILINGUAL.read_text(encoding="utf-8").splitlines()]
    dev_of = _stream((r["id"], _row_fp(r), T0) for r in rows)
    stories: dict[str, set[str]] = defaultdict(set)
    for row in rows:
        stories[row["story_id"]].add(dev_of[row["id"]])
    assert all(len(devs) == 1 for devs in stories.values()), stories
    assert len(set(dev_of.values())) == len(stories)


def test_empty_text_has_no_bands() -> None:
    fp = dedup.fingerprint("", "")
    assert fp.minhash == () and fp.bands == () and fp.terms == ()
    # and it still decides (a new development), without error
    assert dedup.decide(fp, T0, [], OPTIONS).reason is DedupReason.NEW


def test_related_links_list_is_not_the_article() -> None:
    links = "\n".join(
        [
            "Trump Signs Executive Order to Establish National AI Regulation Standard",
            "Ireland Limits Planned Trade Ban on Israeli Settlements to Goods Only",
            "Air Force One Delivery Delayed to 2028 as Boeing Faces Rising Costs",
        ]
    )
    plain = dedup.fingerprint("Emergency over balloons", BALLOONS)
    with_links = dedup.fingerprint("Emergency over balloons", BALLOONS + "\n\n" + links)
    assert with_links.terms == plain.terms


def test_fingerprint_from_json_rejects_garbage() -> None:
    for bad in [
        "",
        "[]",
        '{"minhash": 1}',
        '{"minhash": [], "bands": [], "key_terms": [], "terms": ["a"], "weights": []}',
    ]:
        with pytest.raises(ValueError, match="fingerprint"):
            dedup.fingerprint_from_json(bad)


# ------------------------------------------------------------------ level 2: near-duplicates


def _rewrite(text: str) -> str:
    # a syndicated copy: same text, a different opening and a sign-off
    return (
        "VILNIUS (Reuters) - " + text + " Reporting by Andrius Sytas; editing by Alex Richardson."
    )


def test_near_duplicate_shares_bands_and_joins() -> None:
    a = dedup.fingerprint("Lithuania declares emergency", BALLOONS)
    b = dedup.fingerprint("Lithuania declares state of emergency", _rewrite(BALLOONS))
    assert set(a.bands) & set(b.bands)
    assert dedup.minhash_similarity(a.minhash, b.minhash) >= OPTIONS.near_duplicate
    decision = dedup.decide(b, T0, [Candidate("r1", "d1", a, T0)], OPTIONS)
    assert decision == dedup.Decision("d1", DedupReason.NEAR_DUPLICATE, decision.score, "r1")


def test_different_stories_are_not_near_duplicates() -> None:
    a = dedup.fingerprint("Emergency", BALLOONS)
    b = dedup.fingerprint("Quake", QUAKE)
    assert dedup.minhash_similarity(a.minhash, b.minhash) < 0.2
    decision = dedup.decide(b, T0, [Candidate("r1", "d1", a, T0)], OPTIONS)
    assert decision.development_id is None and decision.reason is DedupReason.NEW


# ------------------------------------------------------------------ level 3: decide


def test_time_window_excludes_old_candidates() -> None:
    a = dedup.fingerprint("Lithuania declares emergency", BALLOONS)
    b = dedup.fingerprint("Lithuania declares state of emergency", _rewrite(BALLOONS))
    old = Candidate("r1", "d1", a, T0 - timedelta(days=OPTIONS.window_days + 1))
    assert dedup.decide(b, T0, [old], OPTIONS).development_id is None
    # unknown times are kept: the store already filtered what it could
    assert dedup.decide(b, T0, [Candidate("r1", "d1", a, None)], OPTIONS).development_id == "d1"
    assert dedup.decide(b, None, [old], OPTIONS).development_id == "d1"


def test_time_decay_spares_a_news_cycle_then_falls_to_the_window_end() -> None:
    w = OPTIONS.window_days
    assert OPTIONS.news_cycle_days == 1.0
    assert dedup.time_decay(timedelta(hours=20), OPTIONS) == 1.0
    assert dedup.time_decay(-timedelta(days=1), OPTIONS) == 1.0  # a gap either way
    assert dedup.time_decay(timedelta(days=1 + (w - 1) / 2), OPTIONS) == pytest.approx(0.5)
    assert dedup.time_decay(timedelta(days=w), OPTIONS) == 0.0
    one_day = DedupOptions(window_days=1)
    assert dedup.time_decay(timedelta(days=3), one_day) == 1.0  # a window within a news cycle
    two_day_cycle = DedupOptions(news_cycle_days=2)
    assert dedup.time_decay(timedelta(hours=40), two_day_cycle) == 1.0


CRISIS = Path(__file__).resolve().parents[1] / "benchmarks/data/crisis/articles.jsonl"


def _crisis() -> list[dict[str, str]]:
    return [json.loads(line) for line in CRISIS.read_text(encoding="utf-8").splitlines()]


def _row_fp(row: dict[str, str]) -> Fingerprint:
    return dedup.fingerprint(row["title"], row["text"], row["lang"])


def test_a_report_days_after_its_development_must_be_closer_to_join() -> None:
    first, second = (r for r in _crisis() if r["story_id"] == "eu-sanctions-hybrid")
    a, b = _row_fp(first), _row_fp(second)
    same_day = dedup.decide(b, T0, [Candidate("r1", "d1", a, T0 - timedelta(hours=2))], OPTIONS)
    assert same_day.development_id == "d1" and same_day.reason is DedupReason.SAME_EVENT
    later = dedup.decide(b, T0, [Candidate("r1", "d1", a, T0 - timedelta(days=5))], OPTIONS)
    assert later.development_id is None
    # without times (an import, the ECB+ corpus) nothing decays
    assert dedup.decide(b, None, [Candidate("r1", "d1", a, None)], OPTIONS).development_id == "d1"


def test_an_ongoing_crisis_stays_several_developments() -> None:
    """The dated reports of a week of the balloon crisis, in publication order: the emergency,
    the refusal of talks, the pledge, the airport closure, the EU sanctions and the checkpoint
    closure share places, actors and words, and each stays a development of its own."""
    rows = _crisis()
    dev_of = _stream((r["id"], _row_fp(r), datetime.fromisoformat(r["published"])) for r in rows)
    stories: dict[str, set[str]] = defaultdict(set)
    for row in rows:
        stories[dev_of[row["id"]]].add(row["story_id"])
    apart = {
        "national-emergency",
        "talks-refused",
        "pledge-us-envoy",
        "airport-shut-nov19",
        "eu-sanctions-hybrid",
        "checkpoints-closed-until-dec",
    }
    assert all(len(members & apart) <= 1 for members in stories.values()), stories
    for story in apart:  # and each one's reports are together
        assert len({dev_of[r["id"]] for r in rows if r["story_id"] == story}) == 1


def test_no_candidates_starts_a_development() -> None:
    fp = dedup.fingerprint("Quake", QUAKE)
    assert dedup.decide(fp, T0, [], OPTIONS) == dedup.Decision(None, DedupReason.NEW, 1.0, None)


QUAKE_OTHER_WORDS = (
    "At least 22 people died when a strong 6.1-magnitude quake hit Indonesia's Aceh province "
    "on Tuesday. Rescuers searched collapsed homes in Bener Meriah, officials from the disaster "
    "agency said, and dozens of people were injured in Central Aceh."
)
QUAKE_ELSEWHERE = (
    "A 7.6-magnitude earthquake struck near Manokwari in Indonesia's West Papua province on "
    "Sunday, killing a 10-year-old girl and damaging hotels, the US Geological Survey said. "
    "Residents of Papua fled to higher ground fearing a tsunami."
)


def test_same_event_joins_and_other_event_of_same_kind_stays_apart() -> None:
    first = dedup.fingerprint("6.1-magnitude quake strikes Indonesia's Aceh province", QUAKE)
    cands = [Candidate("r1", "aceh", first, T0)]
    same = dedup.fingerprint("Quake kills 22 in Aceh", QUAKE_OTHER_WORDS)
    other = dedup.fingerprint("Powerful quake rocks Indonesia's Papua", QUAKE_ELSEWHERE)
    joined = dedup.decide(same, T0, cands, OPTIONS)
    assert joined.development_id == "aceh" and joined.reason is DedupReason.SAME_EVENT
    assert joined.score >= OPTIONS.article_threshold and joined.matched_record_id == "r1"
    assert joined.threshold == OPTIONS.article_threshold
    apart = dedup.decide(other, T0, cands, OPTIONS)
    assert apart.development_id is None and apart.reason is DedupReason.NEW


def test_development_scores_pick_the_closest_development() -> None:
    aceh = dedup.fingerprint("Quake in Aceh", QUAKE)
    papua = dedup.fingerprint("Quake in Papua", QUAKE_ELSEWHERE)
    new = dedup.fingerprint("Quake kills 22 in Aceh", QUAKE_OTHER_WORDS)
    scores = dedup.development_scores(
        new, [Candidate("r1", "aceh", aceh, T0), Candidate("r2", "papua", papua, T0)], OPTIONS
    )
    assert scores["aceh"].score > scores["papua"].score
    assert scores["aceh"].record_id == "r1" and scores["aceh"].kind == "article"


def test_duplicate_candidates_count_once() -> None:
    aceh = dedup.fingerprint("Quake in Aceh", QUAKE)
    new = dedup.fingerprint("Quake kills 22 in Aceh", QUAKE_OTHER_WORDS)
    once = dedup.development_scores(new, [Candidate("r1", "aceh", aceh, T0)], OPTIONS)
    twice = dedup.development_scores(new, [Candidate("r1", "aceh", aceh, T0)] * 2, OPTIONS)
    assert once == twice


def _unpacked_json(fp: Fingerprint, version: int, max_terms: int) -> str:
    """A fingerprint as versions 1 and 2 stored it: every list a JSON array."""
    data = {
        "v": version,
        "minhash": list(fp.minhash),
        "bands": list(fp.bands),
        "key_terms": list(fp.key_terms),
        "terms": list(fp.terms[:max_terms]),
        "weights": list(fp.weights[:max_terms]),
        "entities": list(fp.entities),
        "numbers": list(fp.numbers),
        "title_terms": list(fp.title_terms),
        "length": fp.length,
        "language": fp.language,
        "head_terms": list(fp.head_terms),
        "head_weights": list(fp.head_weights),
    }
    return json.dumps(data)


def test_version_1_fingerprints_still_read_and_compare() -> None:
    # Stored before MAX_TERMS grew to 300: 120 terms, "v": 1.
    aceh = dedup.fingerprint("Quake in Aceh", QUAKE)
    old = dedup.fingerprint_from_json(_unpacked_json(aceh, 1, 120))
    assert old.version == 1 and aceh.version == dedup.FINGERPRINT_VERSION == 3
    new = dedup.fingerprint("Quake kills 22 in Aceh", QUAKE_OTHER_WORDS)
    joined = dedup.decide(new, T0, [Candidate("r1", "aceh", old, T0)], OPTIONS)
    assert joined.development_id == "aceh"


def test_version_2_fingerprints_read_as_the_packed_ones() -> None:
    # Versions 1 and 2 stored every list as a JSON array; 3 packs them. Same content.
    aceh = dedup.fingerprint("Quake kills 22 in Aceh", QUAKE)
    packed = dedup.fingerprint_to_json(aceh)
    unpacked = _unpacked_json(aceh, 2, dedup.MAX_TERMS)
    assert len(packed) < 1.2 * len(unpacked)
    old = dedup.fingerprint_from_json(unpacked)
    assert dataclasses.replace(old, version=3) == aceh == dedup.fingerprint_from_json(packed)
    assert old.vector() == aceh.vector()
    # Packed text that does not decode is refused like any malformed fingerprint.
    for field, bad in [("weights", "not base64!"), ("minhash", "zz"), ("weights", "AAAA")]:
        data = json.loads(packed)
        data[field] = bad
        with pytest.raises(ValueError, match="fingerprint"):
            dedup.fingerprint_from_json(json.dumps(data))
    with pytest.raises(ValueError, match="space"):
        dedup.fingerprint_to_json(dataclasses.replace(aceh, terms=("two words",), weights=(1.0,)))


def test_fingerprint_json_is_what_json_dumps_writes() -> None:
    # fingerprint_to_json writes the object out itself: the bytes json.dumps gives, escapes
    # included (a language tag is stored as given), and an empty fingerprint too.
    for fp in (
        dedup.fingerprint("Quake kills 22 in Aceh", QUAKE, 'e"n\\\n\u2028ž'),
        dedup.fingerprint("", "", None),
    ):
        data = {
            "v": fp.version,
            "minhash": struct.pack(f"<{len(fp.minhash)}I", *fp.minhash).hex(),
            "bands": list(fp.bands),
            "key_terms": list(fp.key_terms),
            "terms": " ".join(fp.terms),
            "weights": base64.b64encode(struct.pack(f"<{len(fp.weights)}d", *fp.weights)).decode(),
            "entities": list(fp.entities),
            "numbers": list(fp.numbers),
            "title_terms": list(fp.title_terms),
            "length": fp.length,
            "language": fp.language,
            "head_terms": " ".join(fp.head_terms),
            "head_weights": base64.b64encode(
                struct.pack(f"<{len(fp.head_weights)}d", *fp.head_weights)
            ).decode(),
        }
        expected = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
        assert dedup.fingerprint_to_json(fp) == expected
        assert dedup.fingerprint_from_json(expected) == fp


def test_rounded_weights_are_those_of_round() -> None:
    # Weights are rounded to 5 places in numpy; halves and their neighbours go through round().
    rng = np.random.default_rng(7)
    values = np.concatenate(
        [
            rng.random(2000),
            (np.arange(2000) + 0.5) / 1e5,  # exact-looking halves
            np.nextafter((np.arange(200) + 0.5) / 1e5, 1.0),
            np.nextafter((np.arange(200) + 0.5) / 1e5, 0.0),
            [0.0, 1.0, 1e-9, 0.999995, 0.000005, 2.5e-6],
        ]
    )
    assert dedup._round5(values.tolist()) == tuple(round(v, 5) for v in values.tolist())
    assert dedup._round5(values[:5].tolist()) == tuple(round(v, 5) for v in values[:5].tolist())
    assert dedup._round5(values.tolist(), 3.7) == tuple(round(v / 3.7, 5) for v in values.tolist())


@settings(max_examples=300, deadline=None)
@given(
    st.text(
        alphabet=st.one_of(st.sampled_from("aZ09 ,.:_"), st.characters(max_codepoint=127)),
        max_size=40,
    )
)
def test_ascii_texts_are_cut_into_the_same_tokens(text: str) -> None:
    # An ASCII text is cut by the pattern compiled with re.ASCII: the same tokens.
    assert dedup._TOKEN_ASCII.findall(text) == dedup._TOKEN.findall(text)
    assert dedup._TOKEN_ASCII.findall("4 000,5 Vilnius 1:2 x_y 12 345") == dedup._TOKEN.findall(
        "4 000,5 Vilnius 1:2 x_y 12 345"
    )


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(min_value=-2.0, max_value=2.0), min_size=24, max_size=80))
def test_rounded_weights_are_those_of_round_for_any_floats(values: list[float]) -> None:
    assert dedup._round5(values) == tuple(round(v, 5) for v in values)
    assert dedup._round5(values, 1.3) == tuple(round(v / 1.3, 5) for v in values)


def _vectors(
    terms: dict[str, float], head: dict[str, float], names: tuple[str, ...] = ()
) -> Fingerprint:
    return Fingerprint(
        minhash=(),
        bands=(),
        key_terms=(),
        terms=tuple(terms),
        weights=tuple(terms.values()),
        head_terms=tuple(head),
        head_weights=tuple(head.values()),
        entities=names,
    )


def test_a_development_is_the_centroid_of_its_closest_members() -> None:
    record = _vectors({"quake": 0.6, "aceh": 0.8}, {"quake": 0.6, "aceh": 0.8})
    close = _vectors({"quake": 0.6, "aceh": 0.8}, {"quake": 0.6, "aceh": 0.8})
    far = _vectors({"quake": 1.0}, {"quake": 1.0})
    cands = [Candidate("r1", "d", close, T0), Candidate("r2", "d", far, T0)]
    single = dataclasses.replace(OPTIONS, neighbours=1, headline_words=0)
    both = dataclasses.replace(OPTIONS, neighbours=2, headline_words=0)
    assert dedup.development_scores(record, cands, single)["d"].score == pytest.approx(1.0)
    # cos(record, close + far) = (1.0 + 0.6) / |close + far| = 1.6 / sqrt(1 + 1 + 2 * 0.6)
    centroid = dedup.development_scores(record, cands, both)["d"]
    assert centroid.score == pytest.approx(1.6 / (3.2**0.5))
    assert centroid.record_id == "r1"


HEADLINE_ACEH = "Strong quake kills 22 in Indonesia's Aceh province"
HEADLINE_PAPUA = "Powerful 7.6 quake rocks Indonesia's West Papua, girl killed"


def test_headlines_are_compared_by_headline_and_lead_against_any_kind() -> None:
    article = dedup.fingerprint("6.1-magnitude quake strikes Indonesia's Aceh province", QUAKE)
    headline = dedup.fingerprint(HEADLINE_ACEH, "")
    papua = dedup.fingerprint(HEADLINE_PAPUA, "")
    assert dedup.is_headline(headline, OPTIONS) and not dedup.is_headline(article, OPTIONS)
    # A headline joins a development of full articles, by their headlines and leads ...
    joined = dedup.decide(headline, T0, [Candidate("r1", "aceh", article, T0)], OPTIONS)
    assert joined.development_id == "aceh" and joined.threshold == OPTIONS.headline_threshold
    scores = dedup.development_scores(headline, [Candidate("r1", "aceh", article, T0)], OPTIONS)
    assert scores["aceh"].kind == "headline"
    # ... and a full article a development of headlines, by its own headline and lead.
    back = dedup.decide(article, T0, [Candidate("h1", "heads", headline, T0)], OPTIONS)
    assert back.development_id == "heads" and back.reason is DedupReason.SAME_EVENT
    # The other quake's headline stays apart from both.
    cands = [Candidate("r1", "aceh", article, T0), Candidate("h1", "aceh", headline, T0)]
    assert dedup.decide(papua, T0, cands, OPTIONS).development_id is None


def test_a_headline_prefers_the_development_more_of_its_reports_reach() -> None:
    # A headline clears two developments of headlines: one close-worded report, and a broad
    # story whose three reports each share a little with it.
    def headline(terms: dict[str, float]) -> Fingerprint:
        return _vectors(terms, terms)

    record = headline({"spritz": 0.6, "read": 0.6, "app": 0.529})
    close = headline({"app": 0.6, "read": 0.5, "launch": 0.6245})
    broad = [
        headline({"spritz": 0.8, "speed": 0.6}),
        headline({"spritz": 0.7, "word": 0.714}),
        headline({"spritz": 0.6, "minute": 0.8}),
    ]
    cands = [Candidate("c1", "close", close, T0)]
    cands += [Candidate(f"b{i}", "broad", fp, T0) for i, fp in enumerate(broad)]
    scores = dedup.development_scores(record, cands, OPTIONS)
    assert scores["close"].margin > scores["broad"].margin >= 0.0
    assert (scores["broad"].members, scores["broad"].headlines_only) == (3, True)
    # By margin alone the close report wins; with the preference (ln 3 x 0.2 = 0.22) the story.
    none = dataclasses.replace(OPTIONS, headline_size_preference=0.0)
    assert dedup.decide(record, T0, cands, none).development_id == "close"
    assert dedup.decide(record, T0, cands, OPTIONS).development_id == "broad"
    # A development it does not clear is never preferred, whatever its size.
    strict = dataclasses.replace(OPTIONS, headline_terms_threshold=scores["broad"].score + 0.01)
    assert dedup.decide(record, T0, cands, strict).development_id == "close"


def test_a_headline_meets_headlines_by_their_terms_and_word_pairs() -> None:
    first = dedup.fingerprint("Mt. Gox Files for US Bankruptcy Protection", "")
    again = dedup.fingerprint("Bitcoin exchange Mt. Gox seeks US bankruptcy relief", "")
    assert "mt_gox" in first.terms and "mt_gox" in again.terms  # a name pair, both ways
    cands = [Candidate("h1", "gox", first, T0)]
    score = dedup.development_scores(again, cands, OPTIONS)["gox"]
    assert score.kind == "headline-terms" and score.threshold == OPTIONS.headline_terms_threshold
    assert dedup.decide(again, T0, cands, OPTIONS).development_id == "gox"
    strict = dataclasses.replace(OPTIONS, headline_terms_threshold=score.score + 0.01)
    assert dedup.decide(again, T0, cands, strict).development_id is None
    # the other headline threshold (headline and lead, against full articles) does not apply
    other = dataclasses.replace(OPTIONS, headline_threshold=0.99)
    assert dedup.decide(again, T0, cands, other).development_id == "gox"


def test_members_of_a_headline_development_that_are_not_candidates_count_as_far() -> None:
    # One report of a development shares a word with the headline; the development's other
    # reports share no key with it (they are not candidates), so among its k nearest they are
    # far: unit vectors orthogonal to the record and to each other.
    def headline(terms: dict[str, float]) -> Fingerprint:
        return _vectors(terms, terms)

    record = headline({"update": 0.6, "ios": 0.8})
    bridge = headline({"update": 1.0})

    def scored(size: int) -> dedup.DevelopmentScore:
        cands = [Candidate("b", "d", bridge, T0, development_size=size)]
        return dedup.development_scores(record, cands, OPTIONS)["d"]

    assert scored(0).score == pytest.approx(0.6)  # size unknown: the candidates only
    assert scored(1).score == pytest.approx(0.6)
    assert scored(3).score == pytest.approx(0.6 / 3**0.5)  # 0.6 / |bridge + 2 unseen|
    k = OPTIONS.neighbours
    assert scored(100).score == pytest.approx(0.6 / k**0.5)  # at most k members in all
    # Two candidates (cosines 0.6 and 0.8 to the record, 0 to each other) and one unseen.
    other = headline({"ios": 1.0})
    cands = [Candidate("b", "d", bridge, T0, 3), Candidate("o", "d", other, T0, 3)]
    score = dedup.development_scores(record, cands, OPTIONS)["d"].score
    assert score == pytest.approx(1.4 / 3**0.5)
    # A broad story reached through one of its reports is not joined; a small one is.
    cands = [Candidate("b", "d", bridge, T0, development_size=1)]
    strict = dataclasses.replace(OPTIONS, headline_terms_threshold=0.5)
    assert dedup.decide(record, T0, cands, strict).development_id == "d"
    cands = [Candidate("b", "d", bridge, T0, development_size=40)]
    assert dedup.decide(record, T0, cands, strict).development_id is None


def test_thresholds_are_options_by_kind() -> None:
    article = dedup.fingerprint("6.1-magnitude quake strikes Indonesia's Aceh province", QUAKE)
    headline = dedup.fingerprint(HEADLINE_ACEH, "")
    cands = [Candidate("r1", "aceh", article, T0)]
    strict_headlines = dataclasses.replace(OPTIONS, headline_threshold=0.99)
    assert dedup.decide(headline, T0, cands, strict_headlines).development_id is None
    # the article threshold does not apply to a headline
    strict_articles = dataclasses.replace(OPTIONS, article_threshold=0.99)
    assert dedup.decide(headline, T0, cands, strict_articles).development_id == "aceh"
    same = dedup.fingerprint("Quake kills 22 in Aceh", QUAKE_OTHER_WORDS)
    assert dedup.decide(same, T0, cands, strict_articles).development_id is None
    assert dedup.decide(same, T0, cands, strict_headlines).development_id == "aceh"


# ------------------------------------------------------------------ representative


def test_representative_prefers_a_central_complete_report() -> None:
    full = dedup.fingerprint("6.1-magnitude quake strikes Indonesia's Aceh province", QUAKE)
    other = dedup.fingerprint("Quake kills 22 in Aceh, Indonesia", QUAKE_OTHER_WORDS)
    stub = dedup.fingerprint("Aceh", "Quake in Aceh.")
    assert dedup.representative([stub, full, other]) in (1, 2)
    assert dedup.representative([full]) == 0
    with pytest.raises(ValueError, match="at least one"):
        dedup.representative([])


# ------------------------------------------------------------------ the seeds, streamed


class MemoryIndex:
    """The store's candidate queries in memory: records sharing a band or a key term."""

    def __init__(self) -> None:
        self.by_key: dict[str, list[int]] = defaultdict(list)
        self.rows: list[Candidate] = []

    def candidates(self, fp: Fingerprint) -> list[Candidate]:
        hits: Counter[int] = Counter()
        for key in [f"b:{b}" for b in fp.bands] + [f"k:{k}" for k in fp.key_terms]:
            hits.update(self.by_key.get(key, ()))
        return [self.rows[i] for i in sorted(hits, key=lambda i: (-hits[i], -i))]

    def add(self, cand: Candidate) -> None:
        for key in [f"b:{b}" for b in cand.fingerprint.bands] + [
            f"k:{k}" for k in cand.fingerprint.key_terms
        ]:
            self.by_key[key].append(len(self.rows))
        self.rows.append(cand)


def _seed_fingerprint(path: Path) -> Fingerprint:
    doc = records.parse(path.read_text(encoding="utf-8"))
    text = "\n".join(t for t in (records.lead_of(doc), records.body_text(doc)) if t.strip())
    return dedup.fingerprint(records.title_of(doc), text or records.plain_text(doc))


def _stream(items: Iterable[tuple[str, Fingerprint, datetime]]) -> dict[str, str]:
    """Each (id, fingerprint, time) through the online path in order, candidates from an
    in-memory index: id -> development."""
    index = MemoryIndex()
    developments: dict[str, str] = {}
    for rid, fp, when in items:
        decision = dedup.decide(fp, when, index.candidates(fp), OPTIONS)
        dev = decision.development_id or f"dev-{rid}"
        developments[rid] = dev
        index.add(Candidate(rid, dev, fp, when))
    return developments


def _stream_seeds() -> dict[str, str]:
    paths = sorted(SEEDS.glob("*.txt"))
    return _stream((path.name[:3], _seed_fingerprint(path), T0) for path in paths)


def _groups(developments: dict[str, str]) -> set[frozenset[str]]:
    by_dev: dict[str, set[str]] = defaultdict(set)
    for number, dev in developments.items():
        by_dev[dev].add(number)
    return {frozenset(v) for v in by_dev.values()}


def test_seeds_refusal_reports_group_and_the_emergency_stays_apart() -> None:
    groups = _groups(_stream_seeds())
    together = next(g for g in groups if "001" in g)
    assert "003" in together  # two reports of the refusal of talks
    assert frozenset({"002"}) in groups  # the national emergency is its own development


def test_seeds_decide_with_a_margin() -> None:
    """Every seed's decision, by how much it clears or misses its threshold (docs/dedup.md,
    "The seeds"): the refusal reports join by at least 0.02, the emergency (002) and the pledge
    (004) miss every development by at least 0.1."""
    index = MemoryIndex()
    margins: dict[str, float] = {}
    for path in sorted(SEEDS.glob("*.txt")):
        rid, fp = path.name[:3], _seed_fingerprint(path)
        cands = index.candidates(fp)
        decision = dedup.decide(fp, T0, cands, OPTIONS)
        if cands:
            scores = dedup.development_scores(fp, cands, OPTIONS)
            margins[rid] = max(s.margin for s in scores.values())
        index.add(Candidate(rid, decision.development_id or f"dev-{rid}", fp, T0))
    assert min(margins["001"], margins["003"]) >= 0.02, margins
    assert max(margins["002"], margins["004"]) <= -0.1, margins


def test_seeds_form_three_developments() -> None:
    # 000/001/003: Lithuania refuses Belarus's offer of talks (000 a loose rewrite about
    # "air smuggling" negotiations); 002: the national emergency; 004: Lukashenko's pledge.
    assert _groups(_stream_seeds()) == {
        frozenset({"000", "001", "003"}),
        frozenset({"002"}),
        frozenset({"004"}),
    }


# ------------------------------------------------------------------ properties

_segment = st.text(alphabet="abcAMPmp-_.0123456789", min_size=1, max_size=8)


@given(
    host=st.sampled_from(["example.com", "www.lrt.lt", "m.delfi.lt", "amp.bbc.co.uk", "x.org"]),
    scheme=st.sampled_from(["http", "https", "HTTPS"]),
    path=st.lists(_segment, max_size=4),
    params=st.lists(
        st.tuples(st.sampled_from(["id", "utm_source", "fbclid", "page", "amp", "ref"]), _segment),
        max_size=4,
    ),
    fragment=st.sampled_from(["", "#top", "#!/x"]),
    slash=st.booleans(),
)
@settings(max_examples=200, deadline=None)
def test_canonical_url_is_idempotent(
    host: str,
    scheme: str,
    path: list[str],
    params: list[tuple[str, str]],
    fragment: str,
    slash: bool,
) -> None:
    query = "&".join(f"{k}={v}" for k, v in params)
    url = f"{scheme}://{host}/{'/'.join(path)}{'/' if slash else ''}{'?' + query if query else ''}"
    once = identity.canonical_url(url + fragment)
    assert identity.canonical_url(once) == once
    assert "utm_" not in once and "fbclid" not in once and "#" not in once


@given(title=st.text(max_size=80), text=st.text(max_size=600))
@settings(max_examples=150, deadline=None)
def test_fingerprint_never_fails_and_round_trips(title: str, text: str) -> None:
    fp = dedup.fingerprint(title, text)
    assert dedup.fingerprint_from_json(dedup.fingerprint_to_json(fp)) == fp
    assert dedup.decide(fp, None, [Candidate("r", "d", fp, None)], OPTIONS).reason in DedupReason


def test_fingerprint_pickles_without_its_derived_vectors_and_with_interned_terms() -> None:
    import pickle
    import sys

    fp = dedup.fingerprint(
        "Lithuania refuses talks with Belarus",
        "Vilnius said on Monday it would not talk to Minsk about the balloons. " * 3,
        "en",
    )
    fp.vector()
    copy = pickle.loads(pickle.dumps(fp))
    assert copy == fp
    assert copy.terms and all(t is sys.intern(t) for t in copy.terms + copy.head_terms)
    assert copy.vector() == fp.vector()
