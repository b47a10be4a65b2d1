from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aggregator import records
from aggregator import watchlist as watchlist_module
from aggregator.errors import ConfigError, ConfigProblem
from aggregator.match import TopicMatcher
from aggregator.model import Record, SourceKind
from aggregator.watchlist import (
    Watchlist,
    build_query_url,
    check_watchlist,
    load_watchlist,
    load_watchlist_text,
    parse_duration,
)

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "config" / "watchlist.yaml"
SHIPPED_TEXT = SHIPPED.read_text(encoding="utf-8")

MINIMAL = """\
version: 1
topics:
  - id: t
    title: T
    rules:
      any: [word]
sources:
  - id: s
    url: https://example.com/feed
"""


def problems(text: str, tmp_path: Path) -> list[ConfigProblem]:
    path = tmp_path / "watchlist.yaml"
    path.write_text(text, encoding="utf-8")
    return check_watchlist(path)


def line_of(text: str, needle: str) -> int:
    assert text.count(needle) == 1, f"{needle!r} must occur once"
    return text[: text.index(needle)].count("\n") + 1


def edited(old: str, new: str, text: str = SHIPPED_TEXT) -> tuple[str, int]:
    """``text`` with ``old`` replaced by ``new``, and the line where the edit starts."""
    line = line_of(text, old)
    return text.replace(old, new), line


def only(found: list[ConfigProblem]) -> ConfigProblem:
    assert len(found) == 1, "\n".join(map(str, found))
    return found[0]


# --- the shipped watchlist -------------------------------------------------------------------


def test_shipped_watchlist_is_valid() -> None:
    assert check_watchlist(SHIPPED) == []
    wl = load_watchlist(SHIPPED)
    assert [t.id for t in wl.topics] == ["border", "balloons", "sanctions"]
    kinds = {s.kind for s in wl.sources}
    assert kinds == {SourceKind.FEED, SourceKind.QUERY, SourceKind.PAGE}
    assert len(wl.sources) >= 10
    assert all(s.url.startswith("https://") for s in wl.sources)
    page = next(s for s in wl.sources if s.kind is SourceKind.PAGE)
    assert page.selectors is not None and page.selectors.item


def test_shipped_query_sources_resolve_to_encoded_urls() -> None:
    wl = load_watchlist(SHIPPED)
    gnews = wl.source("gnews-border-en")
    assert gnews is not None
    assert gnews.url == (
        "https://news.google.com/rss/search?q=Lithuania+Belarus+border&hl=en-US&gl=US&ceid=US:en"
    )
    reuters = wl.source("gnews-reuters")
    assert reuters is not None and "q=site%3Areuters.com+Belarus+Lithuania" in reuters.url
    bing = wl.source("bing-balloons")
    assert bing is not None and bing.url.startswith("https://www.bing.com/news/search?q=")


def test_shipped_defaults_apply() -> None:
    wl = load_watchlist(SHIPPED)
    lrt = wl.source("lrt-english")
    assert lrt is not None
    assert lrt.schedule.interval_seconds == 15 * 60
    assert lrt.schedule.jitter_seconds == 120  # from defaults.schedule
    assert lrt.language == "en" and lrt.full_text is True
    lt = wl.source("lrt-lietuvoje")
    assert lt is not None and lt.language == "lt" and lt.full_text is False


@pytest.mark.parametrize(
    ("prefix", "expected"),
    [("000", "border"), ("001", "border"), ("002", "balloons"), ("003", "border"),
     ("004", "balloons")],
)  # fmt: skip
def test_every_seed_matches_its_topic(prefix: str, expected: str) -> None:
    wl = load_watchlist(SHIPPED)
    matcher = TopicMatcher(wl.topics)
    (path,) = (ROOT / "seeds").glob(f"{prefix}_*.txt")
    text = path.read_text(encoding="utf-8")
    doc = records.parse(text)
    record = Record(id=path.stem[4:], text=text, title=records.title_of(doc), content_hash="")
    topics = {m.topic_id for m in matcher.match(record)}
    assert expected in topics


def test_watchlist_is_frozen() -> None:
    wl = load_watchlist(SHIPPED)
    with pytest.raises(dataclasses.FrozenInstanceError):
        wl.retention_days = 1  # type: ignore[misc]
    assert isinstance(wl, Watchlist) and wl.path == str(SHIPPED)


# --- each kind of bad edit, with its line ------------------------------------------------------


def test_yaml_syntax_error_unclosed_quote(tmp_path: Path) -> None:
    text, line = edited('    title: "Google News: Belarus sanctions"', '    title: "Google News')
    problem = only(problems(text, tmp_path))
    assert problem.line == line
    assert "YAML syntax error" in problem.message


def test_yaml_syntax_error_bad_indentation(tmp_path: Path) -> None:
    text, line = edited(
        '    kind: feed\n    url: "https://belsat.eu', '    kind: feed\n   url: "https://belsat.eu'
    )
    problem = only(problems(text, tmp_path))
    assert problem.line == line + 1
    assert "YAML syntax error" in problem.message


def test_tab_indentation(tmp_path: Path) -> None:
    problem = only(problems("topics:\n  - id: a\n\ttitle: x\n", tmp_path))
    assert problem.line == 3 and "YAML syntax error" in problem.message


def test_unknown_key_in_source(tmp_path: Path) -> None:
    text, line = edited("    schedule: {every: 45m}", "    shedule: {every: 45m}")
    problem = only(problems(text, tmp_path))
    assert problem.line == line
    assert (
        "unknown key 'shedule'" in problem.message and "did you mean 'schedule'" in problem.message
    )


def test_unknown_key_in_topic_rules(tmp_path: Path) -> None:
    text, line = edited("      none:\n", "      nome:\n")
    problem = only(problems(text, tmp_path))
    assert (problem.line, "unknown key 'nome'" in problem.message) == (line, True)


def test_unknown_top_level_key(tmp_path: Path) -> None:
    text, line = edited("retention_days: 365", "retension_days: 365")
    problem = only(problems(text, tmp_path))
    assert problem.line == line and "did you mean 'retention_days'" in problem.message


def test_unknown_key_in_fetch_section(tmp_path: Path) -> None:
    text, line = edited("  max_redirects: 5", "  max_redirect: 5")
    problem = only(problems(text, tmp_path))
    assert problem.line == line and "unknown key 'max_redirect'" in problem.message


def test_bad_url_scheme(tmp_path: Path) -> None:
    text, line = edited('url: "https://belsat.eu/en/feed/"', 'url: "ftp://belsat.eu/en/feed/"')
    problem = only(problems(text, tmp_path))
    assert problem.line == line and "only http:// and https://" in problem.message


@pytest.mark.parametrize("bad", ["https:///feed", "belsat.eu/en/feed", "https://bel sat.eu/"])
def test_bad_url_forms(tmp_path: Path, bad: str) -> None:
    text, line = edited('url: "https://belsat.eu/en/feed/"', f'url: "{bad}"')
    problem = only(problems(text, tmp_path))
    assert problem.line == line and "bad URL" in problem.message


def test_duplicate_source_id(tmp_path: Path) -> None:
    text, line = edited("  - id: belsat-en", "  - id: lrt-english")
    problem = only(problems(text, tmp_path))
    assert problem.line == line
    first = line_of(SHIPPED_TEXT, "  - id: lrt-english")
    assert problem.message == f"duplicate source id 'lrt-english' (first defined at line {first})"


def test_duplicate_topic_id(tmp_path: Path) -> None:
    text, line = edited("  - id: sanctions", "  - id: border")
    found = problems(text, tmp_path)
    assert any(p.line == line and "duplicate topic id 'border'" in p.message for p in found)


def test_duplicate_yaml_key(tmp_path: Path) -> None:
    text, line = edited("    schedule: {every: 45m}", "    schedule: {every: 45m}\n    kind: feed")
    problem = only(problems(text, tmp_path))
    assert problem.line == line + 1 and "duplicate key 'kind'" in problem.message


@pytest.mark.parametrize(
    ("schedule", "needle"),
    [
        ("{every: 45x}", "bad duration"),
        ("{every: 10s}", "too often"),
        ('{cron: "61 * * * *"}', "bad cron expression"),
        ('{cron: "* * *"}', "bad cron expression"),
        ('{every: 45m, cron: "*/5 * * * *"}', "exactly one of"),
        ("{}", "exactly one of"),
        ("{every: 45m, jitter: soon}", "bad duration"),
    ],
)
def test_bad_schedule(tmp_path: Path, schedule: str, needle: str) -> None:
    text, line = edited("    schedule: {every: 45m}", f"    schedule: {schedule}")
    problem = only(problems(text, tmp_path))
    assert problem.line == line and needle in problem.message


def test_cron_schedule_is_accepted(tmp_path: Path) -> None:
    text, _ = edited("    schedule: {every: 45m}", '    schedule: {cron: "*/15 * * * *"}')
    wl = load_watchlist_text(text)
    bing = wl.source("bing-balloons")
    assert bing is not None and bing.schedule.cron == "*/15 * * * *"
    assert bing.schedule.interval_seconds is None


def test_bad_regex(tmp_path: Path) -> None:
    text, line = edited(
        "        - /lithuan|lietuv|литв|литов|літв|літоў|vilni|вильн|вільн/\n"
        "        - /belarus|baltarus|беларус|белорус|minsk",
        "        - /lithuan|(lietuv/\n        - /belarus|baltarus|беларус|белорус|minsk",
    )
    problem = only(problems(text, tmp_path))
    assert problem.line == line and "invalid regular expression" in problem.message


@pytest.mark.parametrize(
    ("term", "needle"),
    [
        ('"*loon"', "must end a word"),
        ("bal*loon", "must end a word"),
        ('""', "empty"),
        ('"  "', "empty"),
        ("ba*", "too short"),
        ("'\"unbalanced'", "unbalanced quote"),
        ("//", "regular expression"),
    ],
)
def test_bad_terms(tmp_path: Path, term: str, needle: str) -> None:
    text, line = edited("        - embargo*", f"        - {term}")
    problem = only(problems(text, tmp_path))
    assert problem.line == line and needle in problem.message, problem


def test_topic_without_terms(tmp_path: Path) -> None:
    text = MINIMAL.replace("      any: [word]", "      none: [word]")
    problem = only(problems(text, tmp_path))
    assert problem.line == 5 and "at least one term" in problem.message


def test_unknown_topic_reference(tmp_path: Path) -> None:
    text, line = edited("    topics: [sanctions]\n", "    topics: [sanction]\n")
    problem = only(problems(text, tmp_path))
    assert problem.line == line
    assert "unknown topic 'sanction'" in problem.message and "border" in problem.message


def test_unknown_topic_reference_in_block_list(tmp_path: Path) -> None:
    text = MINIMAL + "    topics:\n      - t\n      - x\n"
    problem = only(problems(text, tmp_path))
    assert problem.line == 12 and "unknown topic 'x'" in problem.message


def test_page_source_needs_selectors(tmp_path: Path) -> None:
    start = SHIPPED_TEXT.index("    selectors:\n      item:")
    end = SHIPPED_TEXT.index("    topics: [border, balloons]\n    schedule: {every: 2h}")
    text = SHIPPED_TEXT[:start] + SHIPPED_TEXT[end:]
    line = line_of(SHIPPED_TEXT, "  - id: lt-interior-ministry")
    problem = only(problems(text, tmp_path))
    assert problem.line == line and "kind: page needs 'selectors'" in problem.message


def test_invalid_css_selector(tmp_path: Path) -> None:
    text, line = edited('      title: "h2, h3, .title"', '      title: "h2 >> h3"')
    problem = only(problems(text, tmp_path))
    assert problem.line == line and "invalid CSS selector" in problem.message


def test_selectors_only_for_pages(tmp_path: Path) -> None:
    text = MINIMAL + "    selectors: {item: article}\n"
    problem = only(problems(text, tmp_path))
    assert problem.line == 10 and "only for kind: page" in problem.message


def test_query_source_needs_placeholder(tmp_path: Path) -> None:
    text, line = edited(
        'url_template: "https://www.bing.com/news/search?q={query}&format=rss"',
        'url_template: "https://www.bing.com/news/search?format=rss"',
    )
    problem = only(problems(text, tmp_path))
    assert problem.line == line and "must contain {query}" in problem.message


def test_query_source_needs_query(tmp_path: Path) -> None:
    text = MINIMAL + (
        "  - id: q\n    kind: query\n    url_template: 'https://example.com/s?q={query}'\n"
    )
    problem = only(problems(text, tmp_path))
    assert problem.line == 10 and "needs a non-empty 'query'" in problem.message


def test_query_source_refuses_url(tmp_path: Path) -> None:
    text = MINIMAL + (
        "  - id: q\n    kind: query\n    query: x\n    url: https://example.com/\n"
        "    url_template: 'https://example.com/s?q={query}'\n"
    )
    problem = only(problems(text, tmp_path))
    assert problem.line == 13 and "remove 'url'" in problem.message


def test_bad_kind(tmp_path: Path) -> None:
    text = MINIMAL + "    kind: rss\n"
    problem = only(problems(text, tmp_path))
    assert problem.line == 10 and "'feed', 'query' or 'page'" in problem.message


def test_missing_required_keys(tmp_path: Path) -> None:
    text = MINIMAL.replace("    title: T\n", "")
    problem = only(problems(text, tmp_path))
    assert problem.line == 3 and problem.message == "missing required key 'title' in topics[0]"
    found = problems(MINIMAL.replace("sources:\n", "sourcez:\n"), tmp_path)
    assert [(p.line, "did you mean 'sources'" in p.message) for p in found] == [
        (1, False),
        (7, True),
    ]
    assert found[0].message == "missing required top-level key 'sources'"


def test_missing_sources_section(tmp_path: Path) -> None:
    text = MINIMAL[: MINIMAL.index("sources:")]
    problem = only(problems(text, tmp_path))
    assert "missing required top-level key 'sources'" in problem.message


def test_bad_cidr(tmp_path: Path) -> None:
    text, line = edited("  allow_networks: []", "  allow_networks: [10.0.0.0/8, 10.0.0.1/8]")
    problem = only(problems(text, tmp_path))
    assert problem.line == line and "10.0.0.1/8" in problem.message


def test_numbers_must_be_positive(tmp_path: Path) -> None:
    text, line = edited("  timeout_seconds: 30", "  timeout_seconds: 0")
    problem = only(problems(text, tmp_path))
    assert problem.line == line and "fetch.timeout_seconds: must be > 0" in problem.message
    text, line = edited("  feed_size: 50 ", "  feed_size: lots ")
    problem = only(problems(text, tmp_path))
    assert problem.line == line and "publish.feed_size" in problem.message


def test_bad_ids(tmp_path: Path) -> None:
    text = MINIMAL.replace("  - id: s\n", "  - id: My Source\n")
    problem = only(problems(text, tmp_path))
    assert problem.line == 8 and "lowercase letters" in problem.message


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    text = SHIPPED_TEXT
    edits = [
        ("retention_days: 365", "retention_days: 0"),
        ("        - embargo*", "        - emb*argo"),
        ('url: "https://belsat.eu/en/feed/"', 'url: "gopher://belsat.eu/"'),
        ("    schedule: {every: 45m}", "    schedule: {every: 45 minutes}"),
        ("  - id: err-news", "  - id: belsat-en"),
        ("    topics: [sanctions]\n", "    topics: [sanktions]\n"),
        ("    shedule", "    shedule"),  # no-op guard: the text has no such key
    ]
    lines = []
    for old, new in edits:
        if old in text:
            lines.append(line_of(text, old))
            text = text.replace(old, new)
    found = problems(text, tmp_path)
    assert sorted(p.line for p in found) == sorted(lines), "\n".join(map(str, found))
    assert [p.line for p in found] == sorted(p.line for p in found)


def test_load_watchlist_raises_with_every_problem(tmp_path: Path) -> None:
    path = tmp_path / "w.yaml"
    path.write_text(MINIMAL.replace("https://", "ftp://").replace("[word]", "[/(/]"), "utf-8")
    with pytest.raises(ConfigError) as info:
        load_watchlist(path)
    assert len(info.value.problems) == 2
    assert str(info.value).splitlines()[0].startswith(f"{path}:6: ")


def test_unreadable_and_empty_files(tmp_path: Path) -> None:
    (problem,) = check_watchlist(tmp_path / "missing.yaml")
    assert "cannot read" in problem.message
    problem = only(problems("", tmp_path))
    assert "empty" in problem.message
    problem = only(problems("- a\n- b\n", tmp_path))
    assert "must be a mapping" in problem.message


def test_minimal_watchlist_defaults() -> None:
    wl = load_watchlist_text(MINIMAL)
    (source,) = wl.sources
    assert source.kind is SourceKind.FEED and source.title == "s"
    assert source.schedule.interval_seconds == 1800 and source.topics == ()
    assert wl.retention_days == 365
    assert wl.topics[0].rules.fields == ("title", "lead", "body")


def test_yaml_anchors_and_merge_keys() -> None:
    text = MINIMAL + (
        "  - &base\n    id: s2\n    url: https://example.com/2\n    schedule: {every: 1h}\n"
        "  - <<: *base\n    id: s3\n    url: https://example.com/3\n"
    )
    wl = load_watchlist_text(text)
    s3 = wl.source("s3")
    assert s3 is not None and s3.schedule.interval_seconds == 3600


# --- helpers -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("90s", 90), ("15m", 900), ("2h", 7200), ("1d", 86400), ("1h30m", 5400), (120, 120)],
)
def test_parse_duration(value: object, seconds: int) -> None:
    assert parse_duration(value) == seconds


@pytest.mark.parametrize("value", ["", "15", "m", "15x", "-5m", True, None, 1.5])
def test_parse_duration_refuses(value: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(value)


def test_build_query_url() -> None:
    assert (
        build_query_url("https://x.example/s?q={query}&l=en", 'Lietuva "balionai" & co')
        == "https://x.example/s?q=Lietuva+%22balionai%22+%26+co&l=en"
    )
    assert build_query_url("https://x.example/search/{query}/rss", "a b/c") == (
        "https://x.example/search/a%20b%2Fc/rss"
    )


@pytest.mark.parametrize(
    ("old", "new", "needle"),
    [
        ('    url: "https://belsat.eu/en/feed/"', '    url "https://belsat.eu/en/feed/"', "YAML"),
        ("    query: 'Belarus sanctions'", "    query: 'Belarus sanctions", "YAML"),
        ("    schedule: {every: 45m}", "    schedule: {every: 45m", "YAML"),
        ("  - id: err-news", "   - id: err-news", "YAML"),
        ("        - embargo*", "        - [embargo", "YAML"),
        ("        - border*", "        - *border", "undefined alias"),
        ("        - embargo*", "        - embargo*: x", "got a mapping"),
        ("  user_agent: ", "  user_agent: 12 #", "got int 12"),
    ],
)
def test_common_yaml_mistakes_point_at_the_edited_line(
    tmp_path: Path, old: str, new: str, needle: str
) -> None:
    text, line = edited(old, new)
    problem = only(problems(text, tmp_path))
    assert problem.line == line and needle in problem.message, problem


@pytest.mark.parametrize(
    ("title", "lead", "expected"),
    [
        (
            "Baltarusijos balionai vėl uždarė Vilniaus oro uostą",
            "Meteorologiniai balionai su kontrabandinėmis cigaretėmis atskrido iš Baltarusijos.",
            {"balloons"},
        ),
        (
            "Литовские пограничники закрыли пункты пропуска",
            "Литва закрыла пункты пропуска на границе с Беларусью до конца месяца.",
            {"border"},
        ),
        (
            "Над Вильнюсом снова воздушные шары из Беларуси",
            "Аэропорт Вильнюса закрыт из-за аэростатов.",
            {"balloons"},
        ),
        (
            "ЕС пашырыў санкцыі супраць Беларусі",
            "Новыя санкцыі закранаюць калійную галіну.",
            {"sanctions"},
        ),
        (
            "Lithuania extends border closure with Belarus",
            "Vilnius said the Medininkai checkpoint stays shut.",
            {"border"},
        ),
        ("Balloon festival opens in Albuquerque", "Hundreds of hot air balloons rose.", set()),
    ],
)
def test_shipped_topics_in_three_languages(title: str, lead: str, expected: set[str]) -> None:
    matcher = TopicMatcher(load_watchlist(SHIPPED).topics)
    text = records.compose(title, lead, ())
    record = Record(id="0" * 16, text=text, title=title, content_hash="")
    assert {m.topic_id for m in matcher.match(record)} == expected


def test_a_legit_multiline_quote_is_not_blamed(tmp_path: Path) -> None:
    text = MINIMAL.replace("    title: T\n", '    title: "a long\n      title"\n')
    assert load_watchlist_text(text).topics[0].title == "a long title"
    problem = only(problems(text + "    title: x: y\n", tmp_path))
    assert problem.line == 11 and "mapping values are not allowed" in problem.message


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(min_value=0, max_value=len(SHIPPED_TEXT) - 1),
            st.integers(min_value=0, max_value=3),
            st.sampled_from(
                [
                    ":",
                    "-",
                    " ",
                    "  ",
                    '"',
                    "'",
                    "[",
                    "{",
                    "}",
                    "*",
                    "\t",
                    "#",
                    "\n",
                    "x",
                    "&",
                    "!",
                    "",
                ]
            ),
        ),
        min_size=1,
        max_size=4,
    )
)
def test_property_random_edits_never_crash(edits: list[tuple[int, int, str]]) -> None:
    """Whatever an admin's editor does to the file, the answer is problems with lines, or a
    valid watchlist; never an exception."""
    text = SHIPPED_TEXT
    for pos, cut, insert in edits:
        pos = min(pos, len(text))
        text = text[:pos] + insert + text[pos + cut :]
    try:
        watchlist = load_watchlist_text(text, "w.yaml")
    except ConfigError as exc:
        assert exc.problems
        last = text.count("\n") + 1
        for problem in exc.problems:
            assert problem.file == "w.yaml" and 1 <= problem.line <= last, problem
    else:
        assert watchlist.topics


def test_term_in_both_any_and_none(tmp_path: Path) -> None:
    text = MINIMAL.replace("      any: [word]", "      any: [word, other]\n      none: [other]")
    problem = only(problems(text, tmp_path))
    assert problem.line == 6 and "in both any and none" in problem.message


needs_libyaml = pytest.mark.skipif(
    watchlist_module._FAST_LOADER is None, reason="PyYAML built without libyaml"
)


@needs_libyaml
def test_libyaml_and_pure_python_loaders_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    fast = load_watchlist_text(SHIPPED_TEXT, "w.yaml")
    monkeypatch.setattr(watchlist_module, "_FAST_LOADER", None)
    assert load_watchlist_text(SHIPPED_TEXT, "w.yaml") == fast


@pytest.mark.parametrize("libyaml", [True, False])
def test_errors_are_the_same_with_and_without_libyaml(
    libyaml: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if libyaml and watchlist_module._FAST_LOADER is None:
        pytest.skip("PyYAML built without libyaml")
    if not libyaml:
        monkeypatch.setattr(watchlist_module, "_FAST_LOADER", None)
    broken = SHIPPED_TEXT.replace("    schedule: {every: 45m}", "    schedule: {every: 45m", 1)
    duplicate = MINIMAL.replace("    title: T\n", "    title: T\n    title: U\n")
    (syntax,) = problems(broken, tmp_path)
    assert syntax.line == line_of(broken, "    schedule: {every: 45m\n")
    assert syntax.message.startswith("YAML syntax error: while parsing a flow mapping")
    (dup,) = problems(duplicate, tmp_path)
    assert (dup.line, dup.message) == (5, "duplicate key 'title' (first at line 4)")


# --- dedup options ---------------------------------------------------------------------------

WINDOW_LINE = "  window_days: 7 "


def test_dedup_options_are_read_and_checked(tmp_path: Path) -> None:
    text, _ = edited(
        WINDOW_LINE,
        "  headline_threshold: 0.25\n  neighbours: 3\n  headline_size_preference: 0\n"
        + WINDOW_LINE,
    )
    path = tmp_path / "watchlist.yaml"
    path.write_text(text, encoding="utf-8")
    wl = load_watchlist(path)
    assert (wl.dedup.headline_threshold, wl.dedup.neighbours) == (0.25, 3)
    assert wl.dedup.headline_size_preference == 0.0  # 0 is allowed: margins alone
    text, line = edited(WINDOW_LINE, "  article_threshold: 1.5\n" + WINDOW_LINE)
    found = only(problems(text, tmp_path))
    assert found.line == line and "dedup.article_threshold: must be <= 1" in found.message
    text, _ = edited(WINDOW_LINE, "  head_share: 0.7\n  names_share: 0.5\n" + WINDOW_LINE)
    assert "head_share + names_share" in only(problems(text, tmp_path)).message


def test_removed_semantic_mode_reads_when_off_and_is_refused_when_on(tmp_path: Path) -> None:
    text, _ = edited(WINDOW_LINE, "  semantic: false\n" + WINDOW_LINE)
    assert problems(text, tmp_path) == []
    text, line = edited(WINDOW_LINE, "  semantic: true\n" + WINDOW_LINE)
    found = only(problems(text, tmp_path))
    assert found.line == line and "semantic mode was removed" in found.message
