"""``aggregator check-config``: exit codes, file:line for each kind of bad edit, dry run."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from aggregator.cli import main

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "config" / "watchlist.yaml"
SHIPPED_TEXT = SHIPPED.read_text(encoding="utf-8")
BAD_DIR = ROOT / "fixtures" / "bad-watchlists"
PROBLEM_RE = re.compile(r"^(?P<file>.+):(?P<line>\d+): (?P<message>.+)$")


def line_of(needle: str, text: str = SHIPPED_TEXT) -> int:
    assert text.count(needle) == 1, needle
    return text[: text.index(needle)].count("\n") + 1


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def check(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], old: str, new: str
) -> tuple[int, list[tuple[int, str]], str]:
    """check-config on the shipped watchlist with one edit; (exit code, problems, path)."""
    path = tmp_path / "watchlist.yaml"
    path.write_text(SHIPPED_TEXT.replace(old, new), encoding="utf-8")
    code, out, err = run(["check-config", str(path)], capsys)
    found = []
    for raw in err.splitlines():
        m = PROBLEM_RE.match(raw)
        if m:
            assert m["file"] == str(path)
            found.append((int(m["line"]), m["message"]))
    assert out == ""
    return code, found, err


def test_shipped_watchlist_passes(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(["check-config", str(SHIPPED)], capsys)
    assert code == 0 and err == ""
    assert re.fullmatch(
        rf"{re.escape(str(SHIPPED))}: OK: 3 topics, \d+ sources \(.*feed.*page.*query.*\)\n", out
    )


def test_default_path_comes_from_config_flag(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["--config", str(SHIPPED), "check-config"], capsys)
    assert code == 0 and "OK: 3 topics" in out


# Each kind of bad edit: (old text, new text, the text whose line must be blamed, message part).
BAD_EDITS = {
    "yaml-syntax": (
        '    title: "Google News: Belarus sanctions"',
        '    title: "Google News: Belarus sanctions',
        '    title: "Google News: Belarus sanctions"',
        "YAML syntax error",
    ),
    "unknown-key": (
        "    schedule: {every: 45m}",
        "    schedul: {every: 45m}",
        "    schedule: {every: 45m}",
        "unknown key 'schedul' in sources[12] (did you mean 'schedule'?)",
    ),
    "bad-url": (
        'url: "https://notesfrompoland.com/feed/"',
        'url: "notesfrompoland.com/feed/"',
        'url: "https://notesfrompoland.com/feed/"',
        "bad URL",
    ),
    "duplicate-id": (
        "  - id: err-news",
        "  - id: belsat-en",
        "  - id: err-news",
        "duplicate source id",
    ),
    "bad-schedule": (
        "    schedule: {every: 2h}",
        "    schedule: {every: twice a day}",
        "    schedule: {every: 2h}",
        "bad duration",
    ),
    "bad-cron": (
        "    schedule: {every: 2h}",
        '    schedule: {cron: "*/15 * * *"}',
        "    schedule: {every: 2h}",
        "bad cron expression",
    ),
    "bad-regex": (
        "        - /belarus|baltarus|беларус|белорус|лукашенк|лукашэнк|belavia|belaruskali/",
        "        - /belarus|(baltarus/",
        "        - /belarus|baltarus|беларус|белорус|лукашенк|лукашэнк|belavia|belaruskali/",
        "invalid regular expression",
    ),
    "bad-wildcard": (
        "        - embargo*",
        "        - em*bargo",
        "        - embargo*",
        "must end a word",
    ),
    "unknown-topic": (
        "    topics: [border, balloons]\n    schedule: {every: 2h}",
        "    topics: [border, baloons]\n    schedule: {every: 2h}",
        "    topics: [border, balloons]\n    schedule: {every: 2h}",
        "unknown topic 'baloons'",
    ),
    "missing-selectors": (
        "    selectors:\n      item:",
        "    selectorz:\n      item:",
        "  - id: lt-interior-ministry",
        "kind: page needs 'selectors'",
    ),
    "bad-selector": (
        '      item: "article, .news-list__item, .news-item"',
        '      item: "article >> .news-item"',
        '      item: "article, .news-list__item, .news-item"',
        "invalid CSS selector",
    ),
}


@pytest.mark.parametrize("kind", sorted(BAD_EDITS))
def test_each_bad_edit_is_reported_with_its_line(
    kind: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old, new, blamed, message = BAD_EDITS[kind]
    code, found, err = check(tmp_path, capsys, old, new)
    assert code == 2
    expected_line = line_of(blamed)
    assert any(line == expected_line and message in text for line, text in found), (
        f"expected line {expected_line} with {message!r}, got:\n{err}"
    )
    assert err.rstrip().endswith("problem" if len(found) == 1 else "problems")


def test_all_problems_are_listed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = SHIPPED_TEXT
    expected = []
    for kind in ("unknown-key", "bad-url", "bad-regex", "bad-wildcard", "bad-selector"):
        old, new, blamed, _ = BAD_EDITS[kind]
        expected.append(line_of(blamed))
        text = text.replace(old, new)
    path = tmp_path / "w.yaml"
    path.write_text(text, encoding="utf-8")
    code, _, err = run(["check-config", str(path)], capsys)
    assert code == 2
    lines = [int(m["line"]) for raw in err.splitlines() if (m := PROBLEM_RE.match(raw))]
    assert lines == sorted(expected)
    assert err.splitlines()[-1] == f"{path}: 5 problems"


def test_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["check-config", str(tmp_path / "nope.yaml")], capsys)
    assert code == 2 and "cannot read the watchlist" in err


@pytest.mark.parametrize("path", sorted(BAD_DIR.glob("*.yaml")), ids=lambda p: p.name)
def test_sample_bad_watchlists(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Each sample names the line(s) it expects in '# expect: LINE message-part' comments."""
    text = path.read_text(encoding="utf-8")
    expected = [
        (int(m[1]), m[2].strip()) for m in re.finditer(r"^# expect: (\d+) (.+)$", text, re.M)
    ]
    assert expected, f"{path.name} has no '# expect:' lines"
    code, _, err = run(["check-config", str(path)], capsys)
    assert code == 2
    found = [(int(m["line"]), m["message"]) for r in err.splitlines() if (m := PROBLEM_RE.match(r))]
    for line, part in expected:
        assert any(fl == line and part in fm for fl, fm in found), (line, part, err)
    assert len(found) == len(expected), err


# --- dry run -------------------------------------------------------------------------------------


def test_dry_run_without_database(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "none.db"
    code, out, _ = run(
        ["--db", f"sqlite:///{db}", "check-config", str(SHIPPED), "--dry-run"], capsys
    )
    assert code == 0 and "0 stored records" in out
    assert not db.exists()  # a dry run does not create a database


def test_dry_run_shows_matches_per_topic(
    db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--db", db_url, "--config", str(SHIPPED), "import", str(ROOT / "seeds")]) == 0
    capsys.readouterr()
    code, out, _ = run(
        ["--db", db_url, "check-config", str(SHIPPED), "--dry-run", "--json"], capsys
    )
    assert code == 0
    report = json.loads(out)
    assert report["records_scanned"] == 5
    by_topic = {t["id"]: t for t in report["topics"]}
    border = {r["id"] for r in by_topic["border"]["records"]}
    balloons = {r["id"] for r in by_topic["balloons"]["records"]}
    assert {"07a80486fecd5005", "64a0d5eb396560f9", "2cb5b01ce5caf802"} <= border
    assert {"82eb77dd3730aaf9", "47a219e0a27cbb9e"} <= balloons
    assert "07a80486fecd5005" not in balloons
    (seed2,) = [r for r in by_topic["balloons"]["records"] if r["id"] == "82eb77dd3730aaf9"]
    assert "balloon*" in seed2["terms"]
    # Imported with the same rules: nothing gained or lost.
    assert all(t["gained"] == [] and t["lost"] == [] for t in report["topics"])

    # An edited rule: what would change is shown before it goes live.
    edited = tmp_path / "edited.yaml"
    edited.write_text(
        SHIPPED_TEXT.replace("        - balloon*\n", "        - zeppelin*\n").replace(
            '        - "weather balloon*"\n', ""
        ),
        encoding="utf-8",
    )
    code, out, _ = run(
        ["--db", db_url, "check-config", str(edited), "--dry-run", "--topic", "balloons"], capsys
    )
    assert code == 0
    assert "balloons: Smuggling balloons from Belarus: 0 records" in out
    assert "- 82eb77dd3730aaf9  (stored as matching; these rules no longer match it)" in out
    assert "border:" not in out


def test_dry_run_unknown_topic(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run(
        ["--db", f"sqlite:///{tmp_path / 'x.db'}", "check-config", str(SHIPPED), "--dry-run",
         "--topic", "weather"],
        capsys,
    )  # fmt: skip
    assert code == 2 and "unknown topic weather" in err


def test_json_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["check-config", str(SHIPPED), "--json"], capsys)
    report = json.loads(out)
    assert code == 0 and report["ok"] is True and report["problems"] == []
    assert report["topics"] == ["border", "balloons", "sanctions"]
    old, new, blamed, message = BAD_EDITS["bad-url"]
    path = tmp_path / "w.yaml"
    path.write_text(SHIPPED_TEXT.replace(old, new), encoding="utf-8")
    code, out, err = run(["check-config", str(path), "--json"], capsys)
    report = json.loads(out)
    assert code == 2 and report["ok"] is False
    (problem,) = report["problems"]
    assert problem["line"] == line_of(blamed) and message in problem["message"]
    assert f"{path}:{line_of(blamed)}: " in err  # the lines still go to stderr
