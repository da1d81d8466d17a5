"""No work twice: a repost of a post already classified (same content hash) takes its result, not a model pass.

A fake scorer that counts what it is asked to score, over a real SQLite Storage.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import pytest

from bot.domain import IncomingPost
from bot.pipeline import Pipeline
from bot.storage import Storage
from models.taxonomy import Classification

APPEAL = "Сдавайтесь, солдаты: звоните на горячую линию «Хочу жить»."
NEWS = "В Харькове восстановили подачу электроэнергии после ночного обстрела."


@dataclass(frozen=True)
class Scored:
    classification: Classification
    vector: np.ndarray | None


class CountingScorer:
    """Scores by a keyword; records every text it was asked to score."""

    def __init__(self, vectors: bool = True) -> None:
        self.texts: list[str] = []
        self.vectors = vectors

    def score(self, texts: Sequence[str]) -> list[Scored]:
        self.texts += texts
        out = []
        for text in texts:
            appeal = "сдавайтесь" in text.lower()
            c = Classification(appeal=appeal, score=0.93 if appeal else 0.04, labels=("surrender",) if appeal else (),
                               label_scores={"surrender": 0.9 if appeal else 0.1},
                               addressee="ru_military" if appeal else None,
                               reasons=("Сдавайтесь, солдаты",) if appeal else (), lang="ru", lang_confidence=0.99)
            vec = np.zeros(8, dtype=np.float32)
            vec[len(text) % 8] = 1.0
            out.append(Scored(c, vec if self.vectors else None))
        return out


@pytest.fixture
async def storage(make_storage: Callable[..., Storage]) -> AsyncIterator[Storage]:
    s = make_storage("twins.sqlite3")
    await s.open()
    try:
        yield s
    finally:
        await s.close()


def post(channel: str, mid: int, text: str) -> IncomingPost:
    return IncomingPost(channel=channel, message_id=mid, text=text, date=datetime.now(UTC), source="bot")


async def classified(storage: Storage) -> dict[tuple[str, int], tuple[bool, float, str | None, bytes | None]]:
    rows = await storage.db.execute_fetchall(
        "SELECT c.key, p.message_id, cl.appeal, cl.score, cl.addressee, cl.embedding FROM posts p "
        "JOIN channels c ON c.id=p.channel_id JOIN classifications cl ON cl.post_id=p.id")
    return {(str(r[0]), int(r[1])): (bool(r[2]), float(r[3]), r[4], r[5]) for r in rows}


async def run(pipeline: Pipeline, *batches: Sequence[IncomingPost]) -> None:
    pipeline.start()
    try:
        for batch in batches:
            await pipeline.ingest(batch)
            await pipeline.wait_idle(10)
    finally:
        await pipeline.stop()


async def test_a_repost_reuses_the_classification_without_a_model_pass(storage: Storage) -> None:
    scorer = CountingScorer()
    indexed: list[list[int]] = []

    async def on_classified(ids: list[int]) -> None:
        indexed.append(ids)

    pipeline = Pipeline(storage, scorer, on_classified=on_classified)
    await run(pipeline, [post("first", 1, APPEAL), post("first", 2, NEWS)],
              [post("second", 7, APPEAL), post("third", 9, NEWS), post("third", 10, "Новый пост о погоде в Одессе.")])
    # the reposts of the appeal and of the news were never scored again; only the new post was
    assert scorer.texts == [APPEAL, NEWS, "Новый пост о погоде в Одессе."]
    rows = await classified(storage)
    assert len(rows) == 5
    assert rows[("second", 7)] == rows[("first", 1)] and rows[("second", 7)][0]  # the appeal's result and embedding
    assert rows[("third", 9)] == rows[("first", 2)] and not rows[("third", 9)][0]
    assert all(r[3] is not None for r in rows.values())  # every post, repost or not, has its search embedding
    assert (pipeline.stats.classified, pipeline.stats.reused, pipeline.stats.appeals) == (5, 2, 2)
    # the reposts reach the search index like any classified post
    assert sum(len(ids) for ids in indexed) == 5
    assert len(list(await storage.db.execute_fetchall("SELECT 1 FROM posts WHERE state='done'"))) == 5


async def test_copies_within_one_batch_are_scored_once(storage: Storage) -> None:
    scorer = CountingScorer()
    pipeline = Pipeline(storage, scorer)
    await run(pipeline, [post("a", 1, APPEAL), post("b", 1, APPEAL), post("c", 1, NEWS)])
    assert sorted(scorer.texts) == sorted([APPEAL, NEWS])
    rows = await classified(storage)
    assert rows[("a", 1)] == rows[("b", 1)] and len(rows) == 3


async def test_a_twin_without_an_embedding_is_classified_again(storage: Storage) -> None:
    # a post classified when only appeals got a search embedding lends nothing: its repost gets one
    pipeline = Pipeline(storage, CountingScorer(vectors=False))
    await run(pipeline, [post("old", 1, NEWS)])
    scorer = CountingScorer()
    await run(Pipeline(storage, scorer), [post("new", 2, NEWS)])
    assert scorer.texts == [NEWS]
    assert (await classified(storage))[("new", 2)][3] is not None
