"""A hash of the extractor's output on every dev page: speed work must leave it unchanged.

    python benchmarks/extract_hash.py [--features] [--per-page out.tsv]

Hashes the whole ``Article`` (title, lead, blocks, text, author, date, canonical URL,
language) that ``extract_article`` gives for every page of ``../shared/extraction-dev``,
``../shared/extraction-dev2`` (CleanEval included) and the golden pages of
``fixtures/pages``, plus the ``html_to_blocks`` output of the same pages. ``--features``
also hashes the block classifier's feature matrix (``candidate_blocks``), which is stricter:
a float that moves can flip a block on a page the dev sets do not have. ``--per-page``
writes one hash per page, to find which pages changed.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: make ``benchmarks`` importable
    sys.path.insert(0, str(ROOT))

from aggregator.errors import ExtractionError  # noqa: E402
from aggregator.extract.article import candidate_blocks, extract_article  # noqa: E402
from aggregator.extract.blocks import html_to_blocks  # noqa: E402
from aggregator.extract.classifier import load_default_model  # noqa: E402
from benchmarks.extract_bench import DEFAULT_DATA, DEFAULT_DATA2, load_pages  # noqa: E402


def _record(html: str, url: str | None) -> str:
    try:
        a = extract_article(html, url)
    except ExtractionError as exc:
        return f"ExtractionError: {exc}"
    return repr(
        (
            a.title,
            a.lead,
            a.blocks,
            a.text,
            a.author,
            a.published,
            a.canonical_url,
            a.language,
            a.url,
        )
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--data2", type=Path, default=DEFAULT_DATA2)
    ap.add_argument("--features", action="store_true", help="also hash the feature matrices")
    ap.add_argument("--per-page", type=Path, help="write one hash per page to this file")
    args = ap.parse_args(argv)

    pages = [(p.pid, p.html, p.url or None) for p in load_pages(args.data, args.data2, True)]
    for path in sorted((ROOT / "fixtures" / "pages").glob("*.html")):
        pages.append((path.stem, path.read_text(encoding="utf-8"), "https://example.org/a"))
    total = hashlib.sha256()
    feats = hashlib.sha256()
    rows: list[str] = []
    for pid, html, url in pages:
        h = hashlib.sha256(_record(html, url).encode("utf-8", "surrogatepass"))
        h.update(repr(html_to_blocks(html)).encode("utf-8", "surrogatepass"))
        total.update(h.digest())
        rows.append(f"{pid}\t{h.hexdigest()[:16]}")
        if args.features:
            segs, x = candidate_blocks(html, url, lift=load_default_model().lift)
            feats.update(
                repr([(s.text, s.elem, s.length) for s in segs]).encode("utf-8", "surrogatepass")
            )
            feats.update(x.tobytes())
    print(f"{len(pages)} pages, record hash {total.hexdigest()[:16]}")
    if args.features:
        print(f"feature hash {feats.hexdigest()[:16]}")
    if args.per_page:
        args.per_page.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
