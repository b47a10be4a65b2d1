from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aggregator.errors import RecordFormatError
from aggregator.model import Block, BlockKind, Document
from aggregator.records import (
    body_text,
    compose,
    content_hash,
    lead_of,
    link_list_start,
    parse,
    parse_filename,
    plain_text,
    record_filename,
    record_id,
    render,
    sections,
    title_of,
)

SEEDS = Path(__file__).resolve().parent.parent / "seeds"
SEED_FILES = sorted(SEEDS.glob("*.txt"))


def seed(prefix: str) -> str:
    (path,) = [p for p in SEED_FILES if p.name.startswith(prefix)]
    return path.read_text(encoding="utf-8")


def test_there_are_five_seeds() -> None:
    assert len(SEED_FILES) == 5


@pytest.mark.parametrize("path", SEED_FILES, ids=lambda p: p.name)
def test_seed_round_trips_byte_for_byte(path: Path) -> None:
    raw = path.read_bytes()
    assert render(parse(raw.decode("utf-8"))).encode("utf-8") == raw


def test_seed_000_blocks() -> None:
    doc = parse(seed("000"))
    kinds = [b.kind for b in doc.blocks]
    assert kinds.count(BlockKind.TABLE) == 3
    assert kinds.count(BlockKind.LIST_ITEM) == 9
    table = next(b for b in doc.blocks if b.kind is BlockKind.TABLE)
    assert table.rows[0] == ("Aspect", "Lithuania’s Position", "Belarus’ Proposal")
    assert table.rows[1] == ("Political Context", "Requires improvement", "Ignored")
    assert len(table.rows) == 4
    assert doc.trailing_blank_lines == 13 and doc.final_newline


def test_seed_002_keeps_gaps_and_missing_final_newline() -> None:
    doc = parse(seed("002"))
    assert doc.blocks[0].gap == 4  # four blank lines before the byline
    assert doc.blocks[0].text == "By: TA | AP Insight"
    assert not doc.final_newline and doc.trailing_blank_lines == 0
    assert "**meteorological balloons**" in doc.blocks[2].text


SEED_TITLES = {
    "000": "Lithuania Rejects Belarusian Overtures on Air Smuggling Cooperation",
    "001": "Lithuanian Foreign Minister Rejects Lukashenko’s Proposal for Border Talks",
    "002": "Belarusian escalate to de-escalate towards the European Union",
    "003": "Lithuania Refuses Border Talks with Belarus Amid Ongoing Tensions",
    "004": (
        "Belarusian President Alexander Lukashenko has pledged to take action to stop weather "
        "balloons used by cigarette smugglers from crossing into Lithuania"
    ),
}
SEED_LEADS = {
    "000": "Lithuania has officially declined to enter into negotiations with Belarus",
    "001": "Lithuanian Foreign Minister has declined an offer from Belarusian President",
    "002": "Lithuania's government on Tuesday declared a national emergency",
    "003": "VILNIUS, Lithuania (AP) — Lithuania’s foreign minister announced",
    "004": "Belarusian President Alexander Lukashenko has pledged to take action",
}


@pytest.mark.parametrize("prefix", sorted(SEED_TITLES))
def test_seed_title_and_lead(prefix: str) -> None:
    doc = parse(seed(prefix))
    assert title_of(doc) == SEED_TITLES[prefix]
    assert lead_of(doc).startswith(SEED_LEADS[prefix])
    assert "**" not in lead_of(doc)


def test_body_text_leaves_out_title_and_lead() -> None:
    doc = parse(seed("003"))
    body = body_text(doc)
    assert "Lithuania Refuses Border Talks" not in body
    assert "VILNIUS" not in body
    assert body.startswith("Last month, Lithuania closed two of its border crossings")


def test_plain_text_has_no_markup() -> None:
    text = plain_text(parse(seed("000")))
    assert "|" not in text and "**" not in text and "\n- " not in text
    assert "Political Context Requires improvement Ignored" in text
    assert "Non-engagement with Belarusian offers" in text
    assert "meteorological balloons" in plain_text(parse(seed("002")))


def test_first_sentence_skips_abbreviations() -> None:
    doc = parse("The U.S. envoy Mr. Coale met Lukashenko. He said more.\n")
    assert title_of(doc) == "The U.S. envoy Mr. Coale met Lukashenko"


def test_long_first_sentence_is_cut_at_a_word_boundary() -> None:
    sentence = " ".join(["word"] * 60) + "."
    title = title_of(parse(sentence + " Next one.\n"))
    assert title.endswith("…") and len(title) <= 161
    assert title[:-1].split() == ["word"] * len(title[:-1].split())


def test_compose_layout_and_title_round_trip() -> None:
    body = (
        Block(BlockKind.PARAGRAPH, text="First body\nparagraph."),
        Block(BlockKind.LIST_ITEM, text="an item"),
        Block(BlockKind.TABLE, rows=(("a", "b"), ("1", "2")), gap=1),
    )
    text = compose("A Title Here", "The lead says what happened.", body)
    assert text == (
        "The lead says what happened.\nA Title Here\nFirst body paragraph.\n- an item\n\n"
        "| a | b |\n|---|---|\n| 1 | 2 |\n"
    )
    doc = parse(text)
    assert title_of(doc) == "A Title Here"
    assert lead_of(doc) == "The lead says what happened."
    assert render(doc) == text


def test_compose_without_lead() -> None:
    text = compose("Only a title", "", ())
    assert text == "Only a title\n"
    assert title_of(parse(text)) == "Only a title"


def test_record_id_prefers_canonical_url() -> None:
    rid = record_id("https://example.com/a", "text")
    assert len(rid) == 16 and rid == rid.lower()
    assert set(rid) <= set("0123456789abcdef")
    assert record_id("https://example.com/a", "other") == rid
    assert record_id(None, "text") == record_id(None, "text") != rid
    assert record_id(None, "text") != record_id(None, "text2")


def test_record_id_is_sha256_prefix() -> None:
    import hashlib

    assert record_id(None, "abc") == hashlib.sha256(b"abc").hexdigest()[:16]


def test_content_hash_ignores_spacing_case_and_markup() -> None:
    a = "Lead here.\nTitle\n**Bold** text and more\n"
    b = "\n\nlead  here.\nTITLE\n\nbold text and   more"
    assert content_hash(a) == content_hash(b)
    assert content_hash(a) != content_hash("Lead here.\nTitle\nOther text\n")
    assert len(content_hash(a)) == 64


def test_filenames() -> None:
    assert record_filename(7, "0123456789abcdef") == "007_0123456789abcdef.txt"
    assert record_filename(1234, "0123456789abcdef") == "1234_0123456789abcdef.txt"
    assert parse_filename("007_0123456789abcdef.txt") == (7, "0123456789abcdef")
    assert parse_filename("1234_0123456789abcdef.txt") == (1234, "0123456789abcdef")
    for bad in ("7_0123456789abcdef.txt", "007_0123456789ABCDEF.txt", "007_0123.txt", "x.txt"):
        with pytest.raises(RecordFormatError):
            parse_filename(bad)
    with pytest.raises(RecordFormatError):
        record_filename(1, "xyz")


@pytest.mark.parametrize("path", SEED_FILES, ids=lambda p: p.name)
def test_seed_filenames_parse(path: Path) -> None:
    index, rid = parse_filename(path.name)
    assert record_filename(index, rid) == path.name


def test_odd_table_falls_back_to_paragraphs() -> None:
    text = "|  a | b |\n|---|---|\n| 1 | 2 |\n| x |y|\n|:--|--:|\n"
    doc = parse(text)
    assert render(doc) == text
    assert all(b.kind is not BlockKind.TABLE for b in doc.blocks[:3])


def test_escaped_pipe_in_cell() -> None:
    doc = Document(
        (
            Block(
                BlockKind.TABLE,
                rows=(("a|b", "c"), ("1", "\\")),
            ),
        )
    )
    text = render(doc)
    assert text == "| a\\|b | c |\n|---|---|\n| 1 | \\ |\n"
    assert parse(text).blocks == doc.blocks


def test_two_tables_back_to_back() -> None:
    text = "| a |\n|---|\n| 1 |\n| b |\n|---|\n| 2 |\n"
    doc = parse(text)
    assert [b.rows for b in doc.blocks] == [(("a",), ("1",)), (("b",), ("2",))]
    assert render(doc) == text


@pytest.mark.parametrize("text", ["", "\n", "\n\n", "a", "a\n", "a\n\n", "\n a \n", "- \n-\n"])
def test_edge_texts_round_trip(text: str) -> None:
    assert render(parse(text)) == text


# --- property tests --------------------------------------------------------------------------

_inline = st.text(
    alphabet=st.characters(blacklist_characters="\n", blacklist_categories=("Cs",)),
    max_size=40,
)
_cell = st.text(
    alphabet=st.characters(blacklist_characters="\n", blacklist_categories=("Cs",)),
    max_size=10,
)
_gap = st.integers(min_value=0, max_value=3)
_row = st.lists(_cell, min_size=1, max_size=4).map(tuple)


@st.composite
def _blocks(draw: st.DrawFn) -> Block:
    kind = draw(st.sampled_from(list(BlockKind)))
    gap = draw(_gap)
    if kind is BlockKind.TABLE:
        header = draw(_row)
        rows = draw(st.lists(_row, max_size=4))
        return Block(kind, rows=(header, *rows), gap=gap)
    return Block(kind, text=draw(_inline), gap=gap)


_documents = st.builds(
    Document,
    blocks=st.lists(_blocks(), max_size=8).map(tuple),
    trailing_blank_lines=_gap,
    final_newline=st.booleans(),
)


@settings(max_examples=300, deadline=None)
@given(_documents)
def test_property_document_render_parse_render(doc: Document) -> None:
    text = render(doc)
    assert render(parse(text)) == text


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.one_of(
            _inline,
            st.sampled_from(["", "", "- item", "| a | b |", "|---|---|", "| 1 | 2 |", "|x|"]),
            _row.map(lambda r: "| " + " | ".join(r) + " |"),
        ),
        max_size=12,
    ),
    st.booleans(),
)
def test_property_parse_render_of_arbitrary_lines(lines: list[str], final_newline: bool) -> None:
    text = "\n".join(lines) + ("\n" if final_newline else "")
    assert render(parse(text)) == text


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_property_parse_render_of_any_text(text: str) -> None:
    assert render(parse(text)) == text


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_property_title_and_lead_never_fail(text: str) -> None:
    doc = parse(text)
    assert "\n" not in title_of(doc)
    assert "\n" not in lead_of(doc)
    assert len(title_of(doc)) <= 201


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=300))
def test_property_sections_agree_with_single_functions(text: str) -> None:
    doc = parse(text)
    assert sections(doc) == (title_of(doc), lead_of(doc), body_text(doc))


@pytest.mark.parametrize("path", SEED_FILES, ids=lambda p: p.name)
def test_seed_sections(path: Path) -> None:
    doc = parse(path.read_text(encoding="utf-8"))
    assert sections(doc) == (title_of(doc), lead_of(doc), body_text(doc))


_word = st.text(
    alphabet="abcdefghijklmnopąčęėįšųūžабвгдежзиклмнопрстуфхцчшщыэюяABCDLŠЖ", min_size=1
)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(_word, min_size=1, max_size=10).map(" ".join),
    st.lists(_word, min_size=3, max_size=30).map(lambda ws: " ".join(ws) + "."),
    st.lists(_blocks(), max_size=5),
)
def test_property_compose_title_and_lead_come_back(
    title: str, lead: str, body: list[Block]
) -> None:
    doc = parse(compose(title, lead, body))
    assert title_of(doc) == title
    assert lead_of(doc) == lead


def test_a_lead_starting_with_by_is_not_a_byline() -> None:
    text = "By Monday, the two crossings will be closed.\nLithuania Shuts Crossings\nBody.\n"
    doc = parse(text)
    assert title_of(doc) == "Lithuania Shuts Crossings"
    assert lead_of(doc) == "By Monday, the two crossings will be closed."
    byline = "By Jane Doe\n\nLithuania Shuts Crossings\nThe lead is here.\n"
    assert title_of(parse(byline)) == "Lithuania Shuts Crossings"


def test_trailing_headline_list_is_not_body() -> None:
    doc = parse(seed("004"))
    body = body_text(doc)
    assert "Trump Claims Pardon" not in body and "Belarus Frees 123" not in body
    assert body.startswith("The balloon incursions have become")
    assert "Trump Claims Pardon" in plain_text(doc)  # still in the text
    start = link_list_start(doc)
    assert doc.blocks[start].text.startswith("Trump Claims Pardon")


def test_short_or_attached_heading_runs_stay_in_the_body() -> None:
    three = "Lead text here.\nTitle\nBody paragraph.\n\nOne\nTwo\nThree\n"
    assert body_text(parse(three)).endswith("One\nTwo\nThree")
    no_gap = "Lead text here.\nTitle\nBody paragraph.\nOne\nTwo\nThree\nFour\n"
    assert body_text(parse(no_gap)).endswith("Four")
    for text in (seed("000"), seed("001"), seed("002"), seed("003")):
        doc = parse(text)
        assert link_list_start(doc) == len(doc.blocks)


def test_truncated_summary_is_a_lead_not_a_title() -> None:
    doc = parse("Lithuania Extends Checkpoint Closures\nLithuania has closed two checkpoints on…\n")
    assert title_of(doc) == "Lithuania Extends Checkpoint Closures"
    assert lead_of(doc) == "Lithuania has closed two checkpoints on…"
