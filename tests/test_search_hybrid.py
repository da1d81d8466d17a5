"""Cross-lingual search (bot.semantic) with the real model.

* VectorIndex: add / search / top-k order / exclude, on hand-made vectors (exact order) and on
  real embeddings (the order must be the cosine order).
* rrf on toy rankings whose fused order is computed by hand below.
* End to end on a small temporary database of labelled posts: a Ukrainian query finds a
  Russian appeal in hybrid mode, which full-text search cannot.
* The hand-labelled query set (models/data/search_queries.jsonl, 52 queries): hybrid must beat
  full-text by a wide margin. The corpus is built by ``bench/retrieval.py``'s code (all 900
  labelled posts, classified once per module; the classifications and vectors are cached in
  /tmp, keyed by data + model, so only a machine's first run pays the ~35 s model pass).
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from bench.retrieval import (
    LANGS,
    MODES,
    QUERIES_FILE,
    Figures,
    build_corpus,
    default_cache_path,
    evaluate,
    load_queries,
    query_embedder,
    run_queries,
)
from bot import search as semantic
from bot.domain import IncomingPost
from bot.search import VectorIndex, hybrid_search, rrf, similar_posts
from bot.storage import SearchQuery, Storage
from models.classifier import AppealClassifier
from models.encoder import Encoder
from models.training.dataset import load_examples

# -- VectorIndex ---------------------------------------------------------------------------------


def unit(*xs: float) -> np.ndarray:
    v = np.zeros(8, dtype=np.float32)
    v[: len(xs)] = xs
    return v / np.linalg.norm(v)


def test_vector_index_order_topk_and_exclude() -> None:
    index = VectorIndex(dim=8)
    assert len(index) == 0 and index.search(unit(1)) == []
    # cosines with the query (1, 0): 11 → 1.0, 12 → 0.8, 13 → 0.6, 14 → 0.0, 15 → -1.0
    for pid, vec in [(13, unit(0.6, 0.8)), (11, unit(1)), (15, unit(-1)), (12, unit(0.8, 0.6)), (14, unit(0, 1))]:
        index.add(pid, vec)
    assert len(index) == 5
    hits = index.search(unit(1), k=10)
    assert [pid for pid, _ in hits] == [11, 12, 13, 14, 15]
    assert [round(s, 2) for _, s in hits] == [1.0, 0.8, 0.6, 0.0, -1.0]  # float16 storage: 2 decimals hold
    assert [pid for pid, _ in index.search(unit(1), k=3)] == [11, 12, 13]
    assert [pid for pid, _ in index.search(unit(1), k=3, exclude=11)] == [12, 13, 14]
    assert [pid for pid, _ in index.search(unit(-1), k=2)] == [15, 14]
    # added after a search: pending vectors are flushed on the next one
    index.add(16, unit(0.9, 0.1))
    assert [pid for pid, _ in index.search(unit(1), k=2)] == [11, 16]
    assert index.vector_of(99) is None
    v12 = index.vector_of(12)
    assert v12 is not None and np.allclose(v12, unit(0.8, 0.6), atol=1e-3)


def test_vector_index_with_real_embeddings(classifier: AppealClassifier) -> None:
    texts = {
        1: "Русский солдат, сдавайся — останешься жив. 149.200",
        2: "Кидай автомат — і живи. Решта деталей у боті",
        3: "Рецепт борща від моєї бабусі: буряк, квасоля, чорнослив.",
        4: "Weather for Odesa this weekend: wet snow on Saturday.",
        5: "Продаю PS5 с двумя джойстиками, состояние идеальное.",
    }
    vecs = classifier.embed(list(texts.values()))
    index = VectorIndex(dim=vecs.shape[1])
    for pid, vec in zip(texts, vecs, strict=True):
        index.add(pid, vec)
    query = classifier.embed(["здавайся в полон — залишишся живим"])[0]
    hits = index.search(query, k=5)
    cos = {pid: float(vecs[i] @ query) for i, pid in enumerate(texts)}
    assert [pid for pid, _ in hits] == sorted(cos, key=lambda p: -cos[p])
    assert all(abs(s - cos[pid]) < 2e-3 for pid, s in hits)  # float16 matrix
    # both surrender appeals (Russian and Ukrainian) before borscht, a console for sale and the weather;
    # the cosines are at least 0.006 apart, well above float16 rounding
    assert {hits[0][0], hits[1][0]} == {1, 2}, hits
    assert [pid for pid, _ in index.search(query, k=2, exclude=hits[0][0])] == [p for p, _ in hits[1:3]]


# -- rrf -----------------------------------------------------------------------------------------


def test_rrf_toy_example() -> None:
    fts, vec = [1, 2, 3], [4, 5, 3]
    # k=60: 3 → 1/63 + 1/63 = 0.03175; 1 and 4 → 1/61 = 0.01639; 2 and 5 → 1/62 = 0.01613.
    # Ties go to the larger id (newer post): 4 before 1, 5 before 2.
    assert rrf([fts, vec], k=60) == [3, 4, 1, 5, 2]
    # k=0: 1 and 4 → 1/1 = 1; 3 → 1/3 + 1/3 = 0.667; 2 and 5 → 1/2 = 0.5. A small k lets one
    # list's first place beat agreement between the lists.
    assert rrf([fts, vec], k=0) == [4, 1, 3, 5, 2]
    assert rrf([fts, vec]) == rrf([fts, vec], k=semantic.RRF_K)
    assert rrf([[7, 8], []]) == [7, 8]
    assert rrf([]) == []


# -- end to end on a small database --------------------------------------------------------------

SMALL_DB = [
    "rua-001",  # Russian: «Русский солдат, сдавайся — останешься жив. 149.200»
    "rua-129",  # Russian: Ukraine's defence minister: amnesty and money for equipment
    "uka-038",  # Ukrainian: tank crews, reward and amnesty
    "uka-002",  # Ukrainian: «Кидай автомат — і живи»
    "en-056",  # English: how to surrender to a drone
    "rua-012",  # Russian: don't sign the contract
    "uka-040",  # Ukrainian: go home, our artillery waits
    "en-058",  # English: threat
    "ukn-003",  # Ukrainian, not an appeal: «не здавайтеся» before an exam
    "run-029",  # Russian, not an appeal: «Я сдаюсь» assembling an IKEA wardrobe
    "en-010",  # English, not an appeal: surrender your passport at reception
]


async def _small_db(
    classifier: AppealClassifier, tmp_path: Path
) -> tuple[Storage, VectorIndex, dict[int, str], dict[str, bool]]:
    """The open storage, its vector index, example id by post id, and whether each example was classified an appeal."""
    examples = {e.id: e for e in load_examples()}
    storage = Storage(tmp_path / "small.db")
    await storage.open()
    base = datetime(2025, 3, 1, tzinfo=UTC)
    stored = await storage.store_posts([
        IncomingPost(channel="testchan", message_id=i, text=examples[x].text, date=base + timedelta(hours=i), source="export")
        for i, x in enumerate(SMALL_DB, 1)])
    pids = [r.post_id for r in stored]
    scored = classifier.score([examples[x].text for x in SMALL_DB])
    await storage.save_classifications([(p, s.classification, s.vector) for p, s in zip(pids, scored, strict=True)])
    index = VectorIndex()
    await index.load(storage)
    appeal = {x: s.classification.appeal for x, s in zip(SMALL_DB, scored, strict=True)}
    return storage, index, dict(zip(pids, SMALL_DB, strict=True)), appeal


async def test_ukrainian_query_finds_russian_appeal(classifier: AppealClassifier, tmp_path: Path) -> None:
    storage, index, name, appeal = await _small_db(classifier, tmp_path)
    try:
        assert appeal["rua-001"] and appeal["rua-129"] and not appeal["run-029"], appeal
        assert len(index) == sum(appeal.values())  # only appeals are indexed

        def embed(text: str) -> np.ndarray:
            return classifier.embed([text])[0]

        async def top(words: str, mode: str) -> list[str]:
            res = await hybrid_search(storage, index, embed, SearchQuery(words=words), limit=10, mode=mode)
            return [name[p.id] for p in res.posts]

        # "Russian soldier, surrender" in Ukrainian: здавайся ≠ сдавайся, російський ≠ русский.
        q1 = "російський солдате, здавайся"
        assert "rua-001" in (await top(q1, "hybrid"))[:3], await top(q1, "vector")
        assert "rua-001" not in await top(q1, "fts")
        # "money for equipment and amnesty": the Russian minister's appeal, not only the Ukrainian one.
        q2 = "гроші за техніку і амністія"
        hybrid = await top(q2, "hybrid")
        assert "rua-129" in hybrid[:3] and "uka-038" in hybrid[:3], hybrid
        assert "rua-129" not in await top(q2, "fts")
        # one word: full text finds the Ukrainian post only (амністія ≠ амнистия)
        assert await top("амністія", "fts") == ["uka-038"]
    finally:
        await storage.close()


def test_appeals_get_the_base_encoders_search_embedding(classifier: AppealClassifier, base_encoder: Encoder) -> None:
    """Search embeddings come from the base encoder (the fine-tuned one merges distinct appeals), for appeals only."""
    examples = {e.id: e for e in load_examples()}
    texts = [examples["rua-001"].text, examples["run-029"].text]
    scored = classifier.score(texts)
    assert scored[0].classification.appeal and not scored[1].classification.appeal
    assert scored[1].vector is None
    assert scored[0].vector is not None
    assert float(scored[0].vector @ base_encoder.embed(texts[:1])[0]) > 0.999
    assert float(scored[0].vector @ classifier.encoder.embed(texts[:1])[0]) < 0.999  # not the tuned one


async def test_similar_to_a_post_without_a_stored_embedding(classifier: AppealClassifier, tmp_path: Path) -> None:
    """/similar on a news post (no stored embedding: not an appeal) embeds its text and finds the appeal it reports on."""
    storage, index, name, appeal = await _small_db(classifier, tmp_path)
    try:
        news = next(p for p, x in name.items() if not appeal[x])
        assert await similar_posts(storage, index, news) == []  # nothing stored, nothing to compare
        hits = await similar_posts(storage, index, news, embed=lambda t: classifier.embed([t])[0])
        assert hits and all(appeal[name[p.id]] for p, _ in hits)
        assert all(-1.0 <= sim <= 1.0 for _, sim in hits)
    finally:
        await storage.close()


# -- the hand-labelled query set -------------------------------------------------------------------


def test_query_file_is_well_formed() -> None:
    ids = {e.id: e for e in load_examples()}
    rows = [json.loads(line) for line in QUERIES_FILE.read_text(encoding="utf-8").splitlines() if line.strip()]
    assert len(rows) >= 40
    for lang in LANGS:
        assert sum(r["lang"] == lang for r in rows) >= 12, lang
    assert len({r["id"] for r in rows}) == len(rows)
    for r in rows:
        assert set(r) == {"id", "query", "lang", "relevant", "note"}, r["id"]
        assert r["relevant"] and len(set(r["relevant"])) == len(r["relevant"]), r["id"]
        assert all(d in ids for d in r["relevant"]), r["id"]
        assert 1 <= len(r["query"].split()) <= 10, r["id"]
    cross = sum(any(ids[d].lang != r["lang"] for d in r["relevant"]) for r in rows)
    assert cross >= 40, cross


@pytest.fixture(scope="module")
def query_set_figures(classifier: AppealClassifier) -> dict[str, dict[str, Figures]]:
    """Top 10 of every query in every mode over the 900 posts, and the figures (bench/retrieval.py)."""

    async def run() -> dict[str, dict[str, Figures]]:
        corpus = await build_corpus(classifier, cache=default_cache_path(classifier))
        try:
            queries = load_queries()
            embed = query_embedder(classifier)
            results = {m: await run_queries(corpus, queries, embed, m) for m in MODES}
            return {m: evaluate(results[m], queries, corpus.lang_of) for m in MODES}
        finally:
            await corpus.close()

    return asyncio.run(run())


def test_hybrid_beats_full_text_on_the_query_set(query_set_figures: dict[str, dict[str, Figures]]) -> None:
    fts, hybrid = query_set_figures["fts"], query_set_figures["hybrid"]
    table = {m: {g: round(f.recall, 3) for g, f in v.items()} for m, v in query_set_figures.items()}
    # measured (bench/retrieval.py): fts 0.140, vector 0.422, hybrid 0.460 (MIN_SIMILARITY 0.82, RRF_K 60, CANDIDATES 50)
    assert hybrid["all"].recall >= fts["all"].recall + 0.10, table
    assert hybrid["all"].recall >= 0.45, table  # regression floor; the 0.5 target is below (xfail)
    assert hybrid["all"].mrr >= fts["all"].mrr + 0.3, table  # measured 0.684 vs 0.308
    # relevant posts in another language than the query: words almost never cross
    assert fts["cross-lingual"].recall <= 0.1, table  # measured 0.031
    assert hybrid["cross-lingual"].recall >= fts["cross-lingual"].recall + 0.2, table  # measured 0.310
    for lang in LANGS:
        assert hybrid[f"query {lang}"].recall >= fts[f"query {lang}"].recall + 0.10, (lang, table)
    # fusion never costs much against vectors alone
    assert hybrid["all"].recall >= query_set_figures["vector"]["all"].recall - 0.02, table


@pytest.mark.xfail(strict=True, reason="target hybrid recall@10 >= 0.5 not met: measured 0.460 on the 52 queries "
                                       "(fts 0.140, vector 0.422); no MIN_SIMILARITY/RRF_K/CANDIDATES setting reaches 0.5 "
                                       "(best 0.464 with CANDIDATES=100)")
def test_hybrid_recall_target(query_set_figures: dict[str, dict[str, Figures]]) -> None:
    assert query_set_figures["hybrid"]["all"].recall >= 0.5
