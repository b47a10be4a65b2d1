"""CPU time of in-process extraction on pathological pages at the size cap (no network).

    python benchmarks/extract_pathological.py [--only NAME]

Each page is synthetic markup just under ``DEFAULT_MAX_BYTES`` (5 MiB) of one shape repeated
(flat paragraphs, nesting past the walk's depth limit, nested layout tables, one huge text
node, link lists, inline soup, small forms, data tables, ``<br>`` lines, unclosed ``<p>``),
plus deep nesting (20,000 elements; Lexbor's parse time grows with the square of the depth,
so deeper pages are the worker's time limit's business, not the extractor's). Prints CPU
seconds per page against the guarded extractor's default time limit
(``DEFAULT_TIMEOUT``): a worker runs niced on a shared machine, so a page should take a
fraction of it here.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script
    sys.path.insert(0, str(ROOT))

from aggregator.errors import ExtractionError  # noqa: E402
from aggregator.extract.article import extract_article  # noqa: E402
from aggregator.extract.worker import DEFAULT_MAX_BYTES, DEFAULT_TIMEOUT  # noqa: E402

PARA = (
    "<p>Some paragraph text that is long enough to count as a real paragraph of an article, "
    "really.</p>"
)
HEAD = "<html><head><title>T</title></head><body>"
TAIL = "</body></html>"


def _fill(unit: str) -> str:
    """``unit`` repeated to just under the size cap (ASCII markup: characters are bytes)."""
    limit = DEFAULT_MAX_BYTES - 1000
    return HEAD + unit * ((limit - len(HEAD) - len(TAIL)) // len(unit)) + TAIL


def pages() -> dict[str, str]:
    return {
        "flat paragraphs": _fill(PARA),
        "nested 1,000 deep": _fill("<div>" * 1000 + PARA + "</div>" * 1000),
        "nested 240 deep, classes": _fill("<div class='a b'>" * 240 + PARA + "</div>" * 240),
        "nested tables 240 deep": _fill(
            "<table><tr><td>" * 240 + PARA + "</td></tr></table>" * 240
        ),
        "one text node": "<html><body><p>" + "word " * (DEFAULT_MAX_BYTES // 5 - 100) + TAIL,
        "link lists": _fill("<li><a href='/x'>a link to somewhere else</a></li>"),
        "inline soup": _fill("<span><b><i><a href='#'>x</a> y</i></b></span>"),
        "small forms": _fill("<form><p>label text of the form field</p></form>"),
        "data tables": _fill(
            "<table><tr><th>a</th><th>b</th></tr><tr><td>1</td><td>2</td></tr></table>"
        ),
        "br lines": _fill("line of text<br>"),
        "unclosed p": _fill("<p>para text that never closes "),
        "nested 20,000 deep": "<html><body>" + "<div>" * 20000 + PARA + "</div>" * 20000 + TAIL,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", help="run only the page of this name")
    args = ap.parse_args(argv)
    print(f"{'page':26} {'MB':>5} {'CPU s':>6}  share of the {DEFAULT_TIMEOUT:g} s limit")
    worst = 0.0
    for name, html in pages().items():
        if args.only and name != args.only:
            continue
        start = time.process_time()
        try:
            extract_article(html)
            outcome = ""
        except ExtractionError as exc:  # a page of furniture only: nothing found, still ended
            outcome = f"  ({exc})"
        took = time.process_time() - start
        worst = max(worst, took)
        print(
            f"{name:26} {len(html) / 1e6:5.1f} {took:6.2f}  {took / DEFAULT_TIMEOUT:5.0%}{outcome}"
        )
    print(f"worst {worst:.2f} s CPU ({worst / DEFAULT_TIMEOUT:.0%} of the limit)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
