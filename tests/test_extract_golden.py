"""Golden pages: seed articles wrapped in news-site pages (fixtures/pages/, built by build.py).

The expected records are composed from the seeds, not from the extractor, so these tests
compare the extractor with an independent answer.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from aggregator.extract import extract_article, scrape_listing
from aggregator.extract.metadata import parse_date
from aggregator.model import PageSelectors
from aggregator.records import parse, title_of

ROOT = Path(__file__).resolve().parents[1]
PAGES = ROOT / "fixtures" / "pages"
SEEDS = ROOT / "seeds"
MANIFEST: list[dict[str, Any]] = json.loads((PAGES / "manifest.json").read_text("utf-8"))
BOILERPLATE = (
    "cookies",
    "Share",
    "Related",
    "Recent Posts",
    "Most read",
    "All rights reserved",
    "Sign up",
    "Advertisement",
    "says:",
    "Baltic states agree joint air-defence",
    "Trump Claims Pardon for Tina Peters",  # seed 004's related-headlines tail
)


def _seed_text(seed: str) -> str:
    return next(SEEDS.glob(f"{seed}_*.txt")).read_text("utf-8")


@pytest.mark.parametrize("entry", MANIFEST, ids=[e["page"] for e in MANIFEST])
def test_golden_page_gives_the_expected_record(entry: dict[str, Any]) -> None:
    html = (PAGES / entry["page"]).read_text("utf-8")
    expected = (PAGES / entry["expected"]).read_text("utf-8")
    article = extract_article(html, entry["url"])
    assert article.text == expected
    assert article.title == entry["title"]
    assert article.author == entry["author"] or entry["page"].startswith("003")
    assert article.published == parse_date(entry["published"])
    for phrase in BOILERPLATE:
        assert phrase not in article.text, phrase


@pytest.mark.parametrize(
    "entry", [e for e in MANIFEST if e["equals_seed"]], ids=lambda e: e["page"]
)
def test_golden_page_gives_the_seed_text(entry: dict[str, Any]) -> None:
    html = (PAGES / entry["page"]).read_text("utf-8")
    assert extract_article(html, entry["url"]).text == _seed_text(entry["seed"]).rstrip() + "\n"


@pytest.mark.parametrize("entry", MANIFEST, ids=[e["page"] for e in MANIFEST])
def test_golden_record_keeps_every_seed_body_line(entry: dict[str, Any]) -> None:
    """Whatever the seed's layout, every body line of the seed (not its preamble, title or
    related-headlines tail) is in the record, in order."""
    text = extract_article((PAGES / entry["page"]).read_text("utf-8"), entry["url"]).text
    seed_lines = [line for line in _seed_text(entry["seed"]).splitlines() if line.strip()]
    title = title_of(parse(_seed_text(entry["seed"])))
    body = seed_lines[seed_lines.index(title) + 1 :] if title in seed_lines else seed_lines
    if entry["seed"] == "004":
        body = body[:5]
    record_lines = text.splitlines()
    at = 0
    for line in body:
        at = record_lines.index(line.rstrip(), at) + 1  # ValueError: missing or out of order


def test_canonical_url_and_language() -> None:
    by_page = {e["page"]: e for e in MANIFEST}
    art = extract_article((PAGES / "001_semantic.html").read_text("utf-8"), None)
    assert art.canonical_url == by_page["001_semantic.html"]["url"]  # from og:url
    assert art.language == "en"
    old = extract_article((PAGES / "003_tables.html").read_text("utf-8"), None)
    assert old.canonical_url is None and old.language is None


def test_listing_page() -> None:
    spec = json.loads((PAGES / "listing.expected.json").read_text("utf-8"))
    items = scrape_listing(
        (PAGES / "listing.html").read_text("utf-8"),
        spec["base_url"],
        PageSelectors(**spec["selectors"]),
    )
    got = [
        {
            "url": i.url,
            "title": i.title,
            "published": i.published.isoformat() if i.published else None,
        }
        for i in items
    ]
    assert got == spec["items"]
    assert all(isinstance(i.published, datetime) or i.published is None for i in items)
