"""Fixed developments and records for the publishing tests (golden files, readers, HTTP).

They carry what must survive publishing (Lithuanian and Cyrillic text, bold, lists, tables) and
what must not (XML-forbidden characters, ``javascript:`` links, script tags).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from aggregator import records
from aggregator.model import (
    DedupReason,
    Development,
    Membership,
    PageSelectors,
    PublishOptions,
    Record,
    Schedule,
    Source,
    SourceKind,
    SourceRef,
    Topic,
    TopicMatch,
    TopicRules,
)

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
BASE_URL = "https://news.example.org"
T0 = datetime(2026, 11, 20, 8, 15, 30, tzinfo=UTC)

TOPICS = (
    Topic("lithuania", "Lithuania", TopicRules(any=("Lithuania", "Lietuva"))),
    Topic("belarus", "Belarus / Беларусь", TopicRules(any=("Belarus",))),
)

SOURCES = (
    Source(
        "lrt",
        SourceKind.FEED,
        "https://www.lrt.lt/?rss",
        Schedule(600),
        title="LRT",
        topics=("lithuania",),
    ),
    Source("belsat", SourceKind.FEED, "https://belsat.eu/ru/feed/", Schedule(900), title="Белсат"),
    Source(
        "gov",
        SourceKind.PAGE,
        "https://lrv.lt/lt/naujienos",
        Schedule(3600),
        title="Vyriausybė",
        selectors=PageSelectors(item="article"),
    ),
    Source("bad", SourceKind.FEED, "javascript:alert(1)", Schedule(600), title="Bad"),
)

RECORD_TEXTS = {
    "r1": (
        "Lithuania declared a national emergency over **meteorological balloons** from Belarus.\n"
        "Lithuania declares emergency over balloons from Belarus\n"
        "Vilnius airport was closed for more than 60 hours since October.\n"
        "Key measures\n"
        "- The army patrols the border area\n"
        "- Parliament grants extra rights <script>alert('x')</script>\n"
        "| Measure | Status |\n"
        "|---|---|\n"
        "| Border patrols | Active |\n"
        "| Airport closures | 60+ hours |\n"
        "Ministrė pirmininkė Inga Ruginienė: „Turime imtis griežčiausių priemonių“.\n"
    ),
    "r2": (
        "Белорусские власти заявили, что не нуждаются в войне, и предложили переговоры.\n"
        "Лукашенко предложил Литве переговоры о границе\n"
        "Президент Беларуси заявил, что его страна «не нуждается в войне».\n"
        'Bad chars: \x00\x07\x1b\ufffe\uffff and <img src=x onerror="alert(1)"> end.\n'
    ),
    "r3": (
        "Gamintojai kelia kainas: kiaušiniai brango 12 %.\n"
        "Kiaušinių kainos Lietuvoje šoktelėjo\n"
        "Ūkininkai sako, kad šalčiai sumažino produkciją.\n"
    ),
}


def make_record(rid: str, source_id: str, url: str | None) -> Record:
    text = RECORD_TEXTS[rid]
    doc = records.parse(text)
    return Record(
        id=rid,
        text=text,
        title=records.title_of(doc),
        content_hash=records.content_hash(text),
        url=url,
        canonical_url=url,
        source_id=source_id,
        published=T0,
        fetched=T0,
        language={"r1": "en", "r2": "ru", "r3": "lt"}.get(rid),
    )


def developments() -> list[Development]:
    """Newest first, as the store lists them."""
    d1 = Development(
        id="dev0001",
        title="Lithuania declares emergency over balloons from Belarus",
        summary="Lithuania declared a national emergency over **meteorological balloons** "
        "from Belarus.",
        topics=("lithuania", "belarus"),
        first_seen=T0,
        updated=T0 + timedelta(hours=3),
        record_ids=("r1", "r1b", "r1c"),
        sources=(
            SourceRef(
                "r1",
                "lrt",
                "LRT",
                "https://www.lrt.lt/naujienos/1?utm=a&b=2",
                "Ekstremali situacija: ąčęėįšųūž",
                T0,
            ),
            SourceRef(
                "r1b",
                "belsat",
                "Белсат",
                "/ru/news/2",
                "Литва ввела режим ЧС",
                T0 + timedelta(hours=1),
            ),
            SourceRef("r1c", "bad", "Evil\x01 source", "javascript:alert(1)", "Click me", None),
        ),
        terms=("Lithuania", "Belarus"),
    )
    d2 = Development(
        id="dev0002",
        title="Лукашенко предложил Литве переговоры\x0b о границе",
        summary="Белорусские власти заявили, что не нуждаются в войне.",
        topics=("belarus",),
        first_seen=T0 + timedelta(hours=1),
        updated=T0 + timedelta(hours=2),
        record_ids=("r2",),
        sources=(
            SourceRef(
                "r2",
                "belsat",
                "Белсат",
                "https://belsat.eu/ru/news/lukashenko-peregovory",
                "Лукашенко предложил Литве переговоры о границе",
                T0 + timedelta(hours=1),
            ),
        ),
    )
    d3 = Development(
        id="dev0003",
        title="Kiaušinių kainos Lietuvoje šoktelėjo",
        summary="Gamintojai kelia kainas: kiaušiniai brango 12 %.",
        topics=("lithuania",),
        first_seen=T0 + timedelta(minutes=30, microseconds=250_000),  # sub-second times
        updated=T0 + timedelta(minutes=30, microseconds=250_000),
        record_ids=("r3",),
        sources=(
            SourceRef(
                "r3",
                "gov",
                "Vyriausybė",
                "https://lrv.lt/lt/naujienos/kiaušiniai?id=5",
                "Kiaušinių kainos",
                T0 + timedelta(minutes=30),
            ),
        ),
    )
    d4 = Development(  # matches no topic: never published
        id="dev0004",
        title="Unrelated weather report",
        summary="Rain.",
        topics=(),
        first_seen=T0,
        updated=T0 + timedelta(hours=5),
        record_ids=(),
    )
    return [d4, d1, d2, d3]


def all_records() -> dict[str, Record]:
    return {
        "r1": make_record("r1", "lrt", "https://www.lrt.lt/naujienos/1"),
        "r2": make_record("r2", "belsat", "https://belsat.eu/ru/news/lukashenko-peregovory"),
        "r3": make_record("r3", "gov", None),
    }


@dataclass
class MemoryStore:
    """The store's publishing API over lists in memory (the real store is tested separately)."""

    devs: list[Development] = field(default_factory=developments)
    recs: dict[str, Record] = field(default_factory=all_records)
    version: int = 1
    version_calls: int = 0
    merged: dict[str, str] = field(default_factory=dict)

    def list_developments(
        self,
        topic: str | None = None,
        limit: int = 50,
        since: datetime | None = None,
        offset: int = 0,
    ) -> list[Development]:
        chosen = [d for d in self.devs if topic is None or topic in d.topics]
        chosen.sort(key=lambda d: d.updated, reverse=True)
        return chosen[offset : offset + limit] if limit > 0 else chosen[offset:]

    def get_development(self, dev_id: str) -> Development | None:
        dev_id = self.merged.get(dev_id, dev_id)
        return next((d for d in self.devs if d.id == dev_id), None)

    def get_memberships(self, dev_id: str) -> list[Membership]:
        dev = self.get_development(dev_id)
        if dev is None:
            return []
        first = dev.record_ids[0] if dev.record_ids else None
        return [
            Membership(
                rid,
                dev.id,
                DedupReason.NEW if rid == first else DedupReason.SAME_EVENT,
                1.0 if rid == first else 0.61,
                None if rid == first else first,
            )
            for rid in dev.record_ids
        ]

    def topic_matches(self, record_ids: Sequence[str]) -> dict[str, tuple[TopicMatch, ...]]:
        out: dict[str, tuple[TopicMatch, ...]] = {}
        for rid in record_ids:
            for dev in self.devs:
                if rid in dev.record_ids and dev.terms:
                    out[rid] = tuple(TopicMatch(t, rid, dev.terms) for t in dev.topics)
        return out

    def merged_developments(self) -> dict[str, str]:
        return dict(self.merged)

    def get_records(self, ids: Sequence[str]) -> list[Record]:
        return [self.recs[i] for i in ids if i in self.recs]

    def feed_version(self) -> str:
        self.version_calls += 1
        return str(self.version)


@dataclass(frozen=True)
class SampleWatchlist:
    topics: tuple[Topic, ...] = TOPICS
    sources: tuple[Source, ...] = SOURCES
    publish: PublishOptions = field(
        default_factory=lambda: PublishOptions(
            title="Baltic news: new developments",
            feed_size=10,
            base_url=BASE_URL,
            websub_hub="https://hub.example.org/",
            tag_authority="news.example.org,2026",
        )
    )
