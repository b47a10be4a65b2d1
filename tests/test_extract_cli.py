"""`aggregator extract` and `aggregator scrape` on the golden pages."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from aggregator.cli import main

PAGES = Path(__file__).resolve().parents[1] / "fixtures" / "pages"

pytestmark = pytest.mark.slow  # the extract command starts an extraction worker


def test_extract_prints_the_record(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["extract", str(PAGES / "000_wordpress.html")]) == 0
    expected = (PAGES / "000_wordpress.expected.txt").read_text("utf-8")
    assert capsys.readouterr().out == expected


def test_extract_json_from_stdin(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    html = (PAGES / "004_blog.html").read_text("utf-8")
    monkeypatch.setattr("sys.stdin", io.StringIO(html))
    assert main(["extract", "-", "--json", "--url", "https://eastwatch.example/x"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["title"] == "Lukashenko Pledges to Stop Smuggling Balloons, Trump Envoy Says"
    assert out["author"] == "Elena Markova"
    assert out["text"] == (PAGES / "004_blog.expected.txt").read_text("utf-8")


def test_extract_missing_file_is_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["extract", str(PAGES / "no-such-page.html")]) == 1
    assert "cannot read" in capsys.readouterr().err


def test_extract_size_cap(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["extract", str(PAGES / "001_semantic.html"), "--max-bytes", "1000"]) == 1
    assert "too large" in capsys.readouterr().err


def test_scrape_listing_lines_and_json(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["scrape", str(PAGES / "listing.html"), "--base-url", "https://eastwatch.example/"]
    args += ["--item", "article.teaser", "--link", ".teaser__title a", "--date", ".teaser__date"]
    assert main(args) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4
    assert lines[0].startswith("2026-11-21 07:30  https://eastwatch.example/lukashenko")
    assert main([*args, "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["title"] for r in rows][-1] == "Balloons and borders: what Vilnius wants"


def test_scrape_needs_selectors(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["scrape", str(PAGES / "listing.html"), "--base-url", "https://e.example/"]) == 2
    assert "--item" in capsys.readouterr().err


def test_scrape_with_a_watchlist_source(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    watchlist = tmp_path / "watchlist.yaml"
    watchlist.write_text(
        "topics:\n"
        "  - {id: border, title: Border, rules: {any: [border]}}\n"
        "sources:\n"
        "  - id: east-watch\n"
        "    kind: page\n"
        '    url: "https://eastwatch.example/baltics/"\n'
        "    schedule: {every: 1h}\n"
        "    selectors: {item: article.teaser, link: .teaser__title a, date: .teaser__date}\n",
        encoding="utf-8",
    )
    listing = str(PAGES / "listing.html")
    assert main(["--config", str(watchlist), "scrape", listing, "--source", "east-watch"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4 and "https://eastwatch.example/2026/11/19/" in lines[2]
    assert main(["--config", str(watchlist), "scrape", listing, "--source", "nope"]) == 2
    assert "not a page source" in capsys.readouterr().err
