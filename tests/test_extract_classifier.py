"""The block classifier of article extraction: its model file and what it must never keep."""

from __future__ import annotations

import json

import numpy as np
import pytest

from aggregator.extract import extract_article
from aggregator.extract.article import candidate_blocks
from aggregator.extract.blocks import Walk
from aggregator.extract.classifier import (
    FEATURES,
    MODEL_PATH,
    BlockModel,
    load_default_model,
)

BODY = [
    "Lithuania's government on Tuesday declared a national emergency over security risks "
    "posed by balloons sent from Belarus that have violated its airspace in recent weeks.",
    "The balloons forced Lithuania to repeatedly shut down its main airport, stranding "
    "thousands of people, as Europe remains on alert over previous intrusions.",
    "The national emergency means the army will be able to patrol the border area together "
    "with other uniformed services and receive extra rights from parliament.",
    "Officials in Vilnius said the measures would stay in force for at least three months "
    "and could be extended if the flights from across the border did not stop.",
    "Neighbouring Latvia and Poland said they were watching the situation closely and were "
    "ready to help with radar coverage of the border area if they were asked to.",
]


def _page(article: str, after: str = "", lang: str = "en") -> str:
    return f"""<!doctype html><html lang="{lang}"><head><title>Headline here | The Daily</title>
</head><body>
<header><nav><a href="/">Home</a> <a href="/world">World</a></nav></header>
<main><div class="wrap"><article><h1>Headline here</h1>{article}</article>{after}</div></main>
<footer><p>Copyright 2026 The Daily. All rights reserved.</p></footer>
</body></html>"""


def _texts(html: str) -> list[str]:
    art = extract_article(html)
    return [art.lead, *(b.text for b in art.blocks)]


def test_shipped_model_matches_the_features() -> None:
    model = load_default_model()
    assert model.features == FEATURES
    assert 0.0 < model.threshold < 1.0
    assert model.lift >= 0


def test_model_round_trips_through_json() -> None:
    model = load_default_model()
    again = BlockModel.from_json(json.loads(json.dumps(model.to_json())))
    x = np.random.default_rng(1).normal(size=(5, len(FEATURES)))
    assert np.allclose(model.proba(x), again.proba(x), atol=1e-4)


def test_model_of_other_features_is_refused() -> None:
    data = json.loads(MODEL_PATH.read_text(encoding="utf-8"))
    data["features"] = data["features"][:-1]
    with pytest.raises(ValueError, match="other features"):
        BlockModel.from_json(data)


def test_candidate_blocks_give_one_feature_row_per_block() -> None:
    segs, x = candidate_blocks(_page("".join(f"<p>{p}</p>" for p in BODY)))
    assert len(segs) == len(x) > 0
    assert x.shape[1] == len(FEATURES)


def test_plain_article_keeps_every_paragraph() -> None:
    assert _texts(_page("".join(f"<p>{p}</p>" for p in BODY))) == BODY


def test_comments_after_the_article_never_become_body() -> None:
    comment = (
        "I have lived near the border for thirty years and I have never seen anything like "
        "this, the government should have acted much sooner than it did this time."
    )
    comments = (
        "<section class='comments'><h2>Comments</h2>"
        + "".join(f"<div class='comment'><p>{comment} ({i})</p></div>" for i in range(6))
        + "</section>"
    )
    texts = _texts(_page("".join(f"<p>{p}</p>" for p in BODY), comments))
    assert texts == BODY


def test_related_links_and_donation_box_never_become_body() -> None:
    related = "<h3>Related</h3><ul>" + "".join(
        f"<li><a href='/s{i}'>Another story about the border crisis number {i}</a></li>"
        for i in range(6)
    )
    donate = (
        "<div class='donate-box'><p>Independent journalism needs your support. Please "
        "consider a donation to keep our reporting free for everyone who reads it.</p></div>"
    )
    body = "".join(f"<p>{p}</p>" for p in BODY) + related + "</ul>" + donate
    assert _texts(_page(body)) == BODY


def test_japanese_paragraphs_end_their_sentences_with_the_ideographic_full_stop() -> None:
    paras = [
        "リトアニア政府は火曜日、ベラルーシから飛来する気球による安全上の危険を理由に、"
        "全国的な非常事態を宣言した。空港は何度も閉鎖された。",
        "非常事態により、軍は他の制服組織とともに国境地帯を巡回できるようになり、"
        "議会から追加の権限を受ける。政府はこう説明した。",
        "当局は、措置は少なくとも三か月続き、国境を越える飛行が止まらなければ延長される"
        "可能性があると述べた。近隣諸国も状況を注視している。",
    ]
    texts = _texts(_page("".join(f"<p>{p}</p>" for p in paras), lang="ja"))
    assert texts == paras


def test_cyrillic_and_lithuanian_paragraphs_are_kept() -> None:
    paras = [
        "Правительство Литвы во вторник объявило чрезвычайное положение из-за воздушных "
        "шаров, которые залетают из Беларуси и нарушают воздушное пространство страны.",
        "Lietuvos Vyriausybė antradienį paskelbė nepaprastąją padėtį dėl balionų, kurie "
        "skrenda iš Baltarusijos ir pažeidžia šalies oro erdvę jau kelias savaites.",
        "Чрезвычайное положение позволит армии патрулировать приграничную зону вместе с "
        "другими службами и получить дополнительные права от парламента страны.",
    ]
    assert _texts(_page("".join(f"<p>{p}</p>" for p in paras), lang="lt")) == paras


def test_headings_lists_and_tables_of_the_article_are_kept() -> None:
    table = (
        "<table><tr><th>Airport</th><th>Closures</th></tr>"
        "<tr><td>Vilnius</td><td>7</td></tr><tr><td>Kaunas</td><td>2</td></tr></table>"
    )
    body = (
        "".join(f"<p>{p}</p>" for p in BODY[:3])
        + "<h2>What the emergency allows</h2>"
        + "<ul><li>Army patrols along the whole border with Belarus</li>"
        + "<li>Extra powers for the border guard in the area</li></ul>"
        + table
        + "".join(f"<p>{p}</p>" for p in BODY[3:])
    )
    art = extract_article(_page(body))
    kinds = [b.kind.value for b in art.blocks]
    assert "heading" in kinds
    assert kinds.count("list_item") == 2
    assert "table" in kinds
    assert "- Army patrols along the whole border with Belarus" in art.text
    assert "| Airport | Closures |" in art.text


def test_teaser_river_after_the_article_never_becomes_body() -> None:
    river = (
        "<div class='more'>"
        + "".join(
            f"<div><h3><a href='/t{i}'>Teaser headline number {i} about something else</a></h3>"
            f"<p>A one-line blurb of another story, number {i}, that runs to a sentence.</p></div>"
            for i in range(8)
        )
        + "</div>"
    )
    texts = _texts(_page("".join(f"<p>{p}</p>" for p in BODY), river))
    assert not any("blurb" in t or "Teaser" in t for t in texts)
    assert texts[:3] == BODY[:3]


def test_layout_table_of_mostly_empty_cells_is_not_a_data_table() -> None:
    # A sidebar "table" of spacer cells beside product blurbs is layout: read as text, it
    # does not get a data table's weight in the container score.
    from selectolax.lexbor import LexborHTMLParser

    from aggregator.extract.blocks import data_table_rows

    rows = "".join(
        f"<tr><td></td><td></td><td></td><td>Book {i}: buy it now from these retailers.</td></tr>"
        for i in range(12)
    )
    layout = LexborHTMLParser(f"<table>{rows}</table>").css_first("table")
    assert layout is not None and data_table_rows(layout) is None
    data = LexborHTMLParser(
        "<table><tr><th>Airport</th><th>Closures</th></tr><tr><td>Vilnius</td><td></td></tr>"
        "<tr><td>Kaunas</td><td>2</td></tr></table>"
    ).css_first("table")
    assert data is not None and data_table_rows(data) == (
        ("Airport", "Closures"),
        ("Vilnius", ""),
        ("Kaunas", "2"),
    )


def test_page_wrapped_in_a_small_form_keeps_its_article() -> None:
    # An ASP.NET page wraps everything in <form>; its article is not a sign-up form.
    body = "".join(f"<p>{p}</p>" for p in BODY[:2])
    html = (
        "<html><head><title>Headline here</title></head><body><form action='/x'>"
        f"<h1>Headline here</h1><div class='text'>{body}</div></form></body></html>"
    )
    assert _texts(html) == BODY[:2]


def test_title_with_an_apostrophe_is_found_in_the_page() -> None:
    from aggregator.extract.article import _fold

    assert _fold("Chad’s Choice: the **webcast**") == _fold("Chads Choice - the webcast")


def test_link_list_between_paragraphs_is_judged_after_them_never() -> None:
    from aggregator.extract.article import candidate_blocks

    links = "<ul>" + "".join(
        f"<li><a href='/r{i}'>Report number {i} on the border incidents</a></li>" for i in range(4)
    )
    paras = [f"<p>{p}</p>" for p in BODY]
    middle = _page("".join(paras[:3]) + links + "</ul>" + "".join(paras[3:]))
    after = _page("".join(paras) + links + "</ul>")
    judged = [s.text for s in candidate_blocks(middle)[0]]
    assert "Report number 0 on the border incidents" in judged  # the classifier decides
    judged = [s.text for s in candidate_blocks(after)[0]]
    assert not any(t.startswith("Report number") for t in judged)  # never text
    assert not any("Report number" in t for t in _texts(after))


def _title_container_scores(html: str, title: str) -> tuple[Walk, list[float]]:
    """The page's walk and its elements' container scores, its first block being the title
    (found folded: "the council agrees a budget")."""
    from selectolax.lexbor import LexborHTMLParser

    from aggregator.extract.article import _classify, _container_scores, _title_block
    from aggregator.extract.blocks import walk

    body = LexborHTMLParser(html).body
    assert body is not None
    w = walk(body, _classify)
    at = _title_block(w.segments, "the council agrees a budget", len(title))
    assert at == 0
    return w, _container_scores(w, at)[1]


def test_only_the_first_characters_after_the_title_count_more() -> None:
    # Two 600-character paragraphs after the title use most of the 1,500 characters that
    # count twice; a 1,200-character bio further down gets the rest, not a double weight.
    sentence = "The council met on Tuesday and agreed the new budget for the coming year. "
    para = (sentence * 9)[:600].strip()
    bio = (sentence * 17)[:1200].strip()
    title = "The council agrees a budget"
    html = (
        f"<html><body><h1>{title}</h1><div><div><p>{para}</p><p>{para}</p></div></div>"
        f"<div><p>{bio}</p></div></body></html>"
    )
    w, score = _title_container_scores(html, title)
    first, second, bio_seg = w.segments[1:]
    assert score[first.elem] == 2 * first.length
    assert score[second.elem] == 2 * second.length
    left = 1500 - first.length - second.length  # what is left of the 1,500 characters
    assert 0 < left < bio_seg.length
    assert score[bio_seg.elem] == pytest.approx(bio_seg.length + left)


def test_only_text_near_the_title_in_the_tree_counts_more() -> None:
    # A short post under its heading, and a longer bio in a sidebar that comes within the
    # 1,500 characters after the title but far from it in the tree: the bio's text counts
    # once, the post's twice, and the post is the article.
    sentence = "The council met on Tuesday and agreed the new budget for the coming year. "
    post = (sentence * 5)[:350].strip()
    bio = "Before writing this blog I was an analyst at three firms for many years. " * 8
    title = "The council agrees a budget"
    html = (
        f"<html><head><title>Council notes: {title}</title></head><body><div><div><div>"
        f"<div class='post'><h2>{title}</h2><div class='post-body'><p>{post}</p></div></div>"
        "</div></div>"
        f"<div class='profile'><dl><dd>{bio.strip()}</dd></dl></div></div></body></html>"
    )
    w, score = _title_container_scores(html, title)
    post_seg, bio_seg = w.segments[1:]
    assert score[post_seg.elem] == 2 * post_seg.length
    assert score[bio_seg.elem] == bio_seg.length
    assert bio_seg.length < 2 * post_seg.length
    text = extract_article(html).text
    assert post in text
    assert "analyst" not in text


def test_a_doubted_paragraph_between_kept_paragraphs_is_kept() -> None:
    from aggregator.extract.article import _fill_gaps

    segs, x = candidate_blocks(_page("".join(f"<p>{p}</p>" for p in BODY)))
    texts = [s.text for s in segs]
    middle = texts.index(BODY[2])
    allowed = [True] * len(segs)
    keep = [t in BODY for t in texts]
    keep[middle] = False  # the classifier doubted it
    _fill_gaps(segs, x, allowed, keep)
    assert keep[middle]
    # A block the rules veto stays out, and so does one that is not a real paragraph.
    keep[middle] = False
    allowed[middle] = False
    _fill_gaps(segs, x, allowed, keep)
    assert not keep[middle]


def test_a_gap_far_from_the_article_is_not_filled() -> None:
    from aggregator.extract.article import _fill_gaps

    # A stray kept line far after the article (a date in a sidebar) does not pull the
    # paragraphs between it and the article into the text.
    filler = "".join(
        f"<p>Our newsletter arrives every morning with the news of the day, number {i}.</p>"
        for i in range(5)
    )
    segs, x = candidate_blocks(_page("".join(f"<p>{p}</p>" for p in BODY) + filler))
    texts = [s.text for s in segs]
    keep = [t in BODY for t in texts]
    keep[-1] = True
    before = list(keep)
    _fill_gaps(segs, x, [True] * len(segs), keep)
    assert keep == before


def test_an_article_held_in_an_aside_is_found_when_nothing_else_is() -> None:
    # Furniture tags are skipped on the first tries; a page whose only text is in an
    # <aside> (a theme that marks up its posts so) still gives its article.
    html = (
        "<html><head><title>Headline here</title></head><body><nav><a href='/'>Home</a></nav>"
        "<aside class='post'><h1>Headline here</h1>"
        + "".join(f"<p>{p}</p>" for p in BODY)
        + "</aside></body></html>"
    )
    assert _texts(html) == BODY


def test_an_id_that_is_a_heading_slug_says_nothing() -> None:
    from aggregator.extract.article import _hint_of_words

    # "shared" would match the furniture stem "share"; as a slug of the section's heading
    # it is the author's word, not the page design's.
    assert _hint_of_words("section evolve-shared-mutable-history") == 0
    assert _hint_of_words(" how-we-share-your-data") == 0
    # Design words still count: in classes, and in short or generated ids.
    assert _hint_of_words("share-box ") == -1
    assert _hint_of_words("wrap share-box") == -1
    assert _hint_of_words("x node_2994162_comments_list") == -1


def test_a_caption_or_byline_element_holding_the_article_is_not_furniture() -> None:
    # Broken markup leaves a caption's element open around the whole article: a name that
    # says "a line" does not condemn a long text.
    caption = "<p class='photo-caption'>The border crossing at dawn (Image: Reuters)</p>"
    wrapped = "<div class='wp-caption'><p>" + "</p><p>".join(BODY[1:]) + "</p></div>"
    texts = _texts(_page(f"<p>{BODY[0]}</p>" + caption + wrapped))
    assert texts == BODY
    # A real caption or byline (short) is still furniture, and a box of a companion word
    # alone (an author's bio) still is too.
    byline = "<div class='byline-author'>Jane Roe, border correspondent</div>"
    bio = "<div class='author-bio'><p>" + BODY[0] + "</p></div>"
    texts = _texts(_page(byline + "".join(f"<p>{p}</p>" for p in BODY[1:]) + bio))
    assert texts == BODY[1:]


def test_text_counts_are_the_regular_expressions_counts() -> None:
    """The classifier counts sentence ends, clause marks, digits and words without regular
    expressions where that is exact (ASCII text, Latin text with typographic quotes); on any
    string the counts are the expressions' own."""
    import random

    from aggregator.extract.classifier import (
        _CLAUSE_RE,
        _DIGIT_RE,
        _SENTENCE_END_RE,
        _WORD_RE,
        _text_counts,
    )

    rng = random.Random(19)
    # Every ASCII character, the marks replaced as spaces, other sentence ends and closers,
    # Unicode digits, letters and whitespace.
    alphabet = [chr(i) for i in range(128)] + list(".!?\"')] \t\n\x1c\x1faZ09_,;:") * 3
    alphabet += list("’‘“”–—…«»•·。！？；：，、।؟」』\u00a0\u2028\u3000é日٣５_ſıİ")
    for _ in range(100_000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 14)))
        expected = (
            len(_SENTENCE_END_RE.findall(text)),
            len(_CLAUSE_RE.findall(text)),
            len(_DIGIT_RE.findall(text)),
            len(_WORD_RE.findall(text)),
        )
        assert _text_counts(text) == expected, repr(text)
    # Longer texts of each kind.
    assert _text_counts("Mr. Roe said: “It’s 2024—now.” Then, he left!") == (3, 2, 4, 10)
    assert _text_counts("東京は晴れ。明日は雨！") == (2, 0, 0, 2)
