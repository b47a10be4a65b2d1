from __future__ import annotations

import re
import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aggregator.match import (
    _MARKS_RE,
    FieldTexts,
    TermError,
    TopicMatcher,
    _words,
    normalize,
    parse_term,
    stem,
)
from aggregator.model import Record, Topic, TopicRules


def topic(
    tid: str,
    any: tuple[str, ...] = (),
    all: tuple[str, ...] = (),
    none: tuple[str, ...] = (),
    fields: tuple[str, ...] = ("title", "lead", "body"),
) -> Topic:
    return Topic(tid, tid.title(), TopicRules(any=any, all=all, none=none, fields=fields))


def record(text: str, title: str = "", rid: str = "0123456789abcdef") -> Record:
    return Record(id=rid, text=text, title=title, content_hash="")


def terms_for(rule_terms: tuple[str, ...], text: str) -> tuple[str, ...]:
    """The terms of an any-rule that match a record whose body is ``text``."""
    matcher = TopicMatcher([topic("t", any=rule_terms)])
    found = matcher.match_fields("r", FieldTexts(title="", lead="", body=text))
    return found[0].terms if found else ()


def matches(term: str, text: str) -> bool:
    return terms_for((term,), text) == (term,)


# --- normalization -----------------------------------------------------------------------------


def test_normalize_folds_case_and_accents() -> None:
    assert normalize("Kondratovič") == normalize("KONDRATOVIC") == "kondratovic"
    assert normalize("Rugienė Šalčininkai") == "rugiene salcininkai"
    assert normalize("ЛУКАШЕНКО") == "лукашенко"  # Cyrillic stays Cyrillic
    assert normalize("Ёлка") == normalize("елка")
    assert normalize("ﬁre Straße") == "fire strasse"


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(max_codepoint=127), max_size=60))
def test_ascii_texts_take_the_short_ways_to_the_same_result(text: str) -> None:
    # ASCII skips NFKD and the mark removal, and is cut into words by a byte table.
    assert normalize(text) == _MARKS_RE.sub("", unicodedata.normalize("NFKD", text)).casefold()
    assert _words(text) == re.findall(r"\w+", text)
    assert _words(text + "ž") == re.findall(r"\w+", text + "ž")


# --- term syntax -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("term", "text", "expected"),
    [
        ("war", "The war goes on.", True),
        ("war", "Warsaw responds.", False),
        ("war*", "Warsaw responds.", True),
        ("war", "A hybrid-war claim.", True),
        ("balloon*", "Balloons over Vilnius", True),
        ("balloon*", "a ball", False),
        ('"weather balloon"', "Weather   balloons seen", True),  # stem of 'balloon'
        ('"weather balloon"', "weather-balloon incursions", True),
        ('"weather balloon"', "balloon weather", False),
        ('"border crossing*"', "two border crossings closed", True),
        ("border crossing", "crossing the border", False),  # unquoted words are a phrase too
        ("/\\b\\d{2,} flights\\b/", "over 350 flights", True),
        ("/\\b\\d{2,} flights\\b/", "3 flights", False),
        ("/Kondratovič/", "KONDRATOVIČ said", True),  # regex: case-insensitive, accents as written
        ("/Kondratovič/", "Kondratovic said", False),
        ("/kondratovič|лукашенк/", "KONDRATOVIČ said", True),  # lower-case pattern fast path
        ("/kondratovič|лукашенк/", "Александр ЛУКАШЕНКО", True),
        ("/kondratovič|лукашенк/", "Kondratovic", False),
        ("/[A-Z]{2}\\d{2}/", "ab12", True),  # upper case in a pattern: IGNORECASE as usual
        ("/[A-Z]{2}\\d{2}/", "1234", False),
        ("Kondratovič", "Interior Minister Vladislav Kondratovic said", True),
        ("Kondratovic", "ministras Kondratovičius", True),
        ("Kondratovič", "KONDRATOVIC", True),
        ("U.S.", "the U.S. envoy", True),
        ("F-16", "an F 16 jet", True),
    ],
)
def test_term_matching(term: str, text: str, expected: bool) -> None:
    assert matches(term, text) is expected


@pytest.mark.parametrize(
    ("term", "text"),
    [
        ("Lietuva", "Lietuvos Respublika"),
        ("Lietuva", "Lietuvoje paskelbta"),
        ("Vilnius", "Vilniaus oro uostas"),
        ("Vilnius", "Vilniuje"),
        ("balionas", "balionai iš Baltarusijos"),
        ("balionas", "balionų srautas"),
        ("Baltarusija", "iš Baltarusijos"),
        ("граница", "закрытие границы"),
        ("граница", "на границе"),
        ("аэростат", "аэростаты над Литвой"),
        ("аэростат", "запуск аэростатов"),
        ("Беларусь", "в Беларуси"),
        ("sanction", "new sanctions"),
        ("smuggle", "smuggling cigarettes"),
    ],
)
def test_inflections_match(term: str, text: str) -> None:
    assert matches(term, text)


@pytest.mark.parametrize(
    ("term", "text"),
    [
        ("war", "wars"),  # short words match exactly
        ("шар", "шары"),  # short: use шар* for its forms
        ("Lietuva", "Lietuvaitė"),  # not a known ending
        ("border", "borderline"),
        ("sanction", "sanctimonious"),
    ],
)
def test_no_stem_match(term: str, text: str) -> None:
    assert not matches(term, text)


def test_stem_rule() -> None:
    assert stem("lietuva") == "lietuv"
    assert stem("vilnius") == "viln"
    assert stem("граница") == "границ"
    assert stem("war") == "war"
    assert stem("minsk") == "minsk"  # no known ending
    assert stem("vilkas") == "vilk"
    assert stem("karas") == "kara"  # 'kar' + 'as' would leave fewer than four letters


def test_cyrillic_and_lithuanian_prefixes() -> None:
    assert matches("Лукашенк*", "Александр Лукашенко заявил")
    assert matches("Лукашенк*", "встреча с Лукашенкой")
    assert not matches("Лукашенк*", "Лукашэнка")
    assert matches("Лукашэнк*", "Аляксандр Лукашэнка")
    assert matches('"воздушн* шар*"', "Воздушные шары из Беларуси")
    assert matches("balion*", "Meteorologiniai balionai")
    assert matches("аэростат*", "АЭРОСТАТЫ")
    assert matches("ёлк*", "Елки")


def test_phrase_in_cyrillic_and_lithuanian_with_inflection() -> None:
    assert matches('"пункт пропуска"', "пункты пропуска закрыты")
    assert matches('"pasienio punktas"', "pasienio punktai uždaryti")


def test_terms_are_returned_as_written() -> None:
    found = terms_for(
        ("Kondratovič", "BALLOON*", '"weather balloon"'), "kondratovic weather balloons"
    )
    assert found == ("Kondratovič", "BALLOON*", '"weather balloon"')


@pytest.mark.parametrize(
    ("term", "needle"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ('""', "empty"),
        ("*loon", "must end a word"),
        ("bal*loon", "must end a word"),
        ("ball**", "must end a word"),
        ("*", "must end a word"),
        ("ab*", "too short"),
        ('"open', "unbalanced"),
        ("/a(/", "invalid regular expression"),
        ("/a*/", "matches empty"),
        ("/abc", "written /pattern/"),
        ("!!!", "no words"),
    ],
)
def test_bad_terms(term: str, needle: str) -> None:
    with pytest.raises(TermError, match=needle):
        parse_term(term)


# --- rules ---------------------------------------------------------------------------------------


def test_any_all_none() -> None:
    t = topic("t", any=("balloon*", "аэростат*"), all=("Lithuania",), none=("football",))
    matcher = TopicMatcher([t])

    def run(body: str) -> tuple[str, ...] | None:
        found = matcher.match_fields("r", FieldTexts("", "", body))
        return found[0].terms if found else None

    assert run("Balloons from Belarus reached Lithuania") == ("balloon*", "Lithuania")
    assert run("Balloons from Belarus") is None  # all: Lithuania missing
    assert run("Lithuania sent aid") is None  # any: no term
    assert run("Balloons at a Lithuania football match") is None  # none
    assert run("Аэростаты над Lithuania") == ("аэростат*", "Lithuania")


def test_all_only_topic() -> None:
    matcher = TopicMatcher([topic("t", all=("Lithuania", "Belarus"))])
    assert matcher.match_fields("r", FieldTexts("Lithuania and Belarus", "", ""))
    assert not matcher.match_fields("r", FieldTexts("Lithuania", "", ""))


def test_fields_restrict_where_terms_are_looked_for() -> None:
    t = topic("t", any=("sanction*",), fields=("title", "lead"))
    matcher = TopicMatcher([t])
    text = "The lead says nothing.\nA headline\nBody about sanctions.\n"
    assert matcher.match(record(text, title="A headline")) == ()
    text2 = "EU widens sanctions.\nA headline\nBody.\n"
    (found,) = matcher.match(record(text2, title="A headline"))
    assert found.terms == ("sanction*",)


def test_title_field_uses_record_title() -> None:
    matcher = TopicMatcher([topic("t", any=("balloon",), fields=("title",))])
    assert matcher.match(record("Lead.\nOther\n", title="Balloons again"))
    assert not matcher.match(record("Lead about balloons.\nOther\n", title="Other"))


def test_several_topics_and_allowed_topics() -> None:
    matcher = TopicMatcher(
        [topic("a", any=("border",)), topic("b", any=("balloon*",)), topic("c", any=("x",))]
    )
    rec = record("Balloons crossed the border.\nTitle\n")
    assert [m.topic_id for m in matcher.match(rec)] == ["a", "b"]
    assert [m.topic_id for m in matcher.match(rec, allowed_topics=["b", "c"])] == ["b"]
    assert all(m.record_id == rec.id for m in matcher.match(rec))


def test_no_topics() -> None:
    assert TopicMatcher([]).match(record("anything\n")) == ()


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_matching_never_fails_on_any_text(text: str) -> None:
    matcher = TopicMatcher(
        [topic("t", any=("balloon*", '"воздушн* шар*"', "Lietuva", "/x+y/"), none=("zzz",))]
    )
    matcher.match(record(text))


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="abcčdeėfgšžабвгдеё ", min_size=1, max_size=12).filter(str.strip))
def test_a_word_always_matches_itself_whatever_its_case(word: str) -> None:
    term = word.strip()
    if any(not (c.isalnum() or c.isspace()) for c in term):
        return
    assert matches(term, f"before {term.upper()} after")
