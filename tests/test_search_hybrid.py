"""Cross-lingual search (bot.search) with the real model.

* Real embeddings in the vector index: the order must be the cosine order.
* rrf on toy rankings whose fused order is computed by hand below.
* End to end on a small temporary database of labelled posts: a Ukrainian query finds a
  Russian appeal and an English query a Ukrainian one in hybrid mode, which full-text search
  cannot; every post is indexed (not only appeals); a query that means nothing finds nothing.
* The hand-judged query set (models/data/search_queries.jsonl, 169 queries over ~2,700 posts):
  hybrid must beat full-text by a wide margin. The corpus is built by ``bench/retrieval.py``'s
  code (classifications and vectors cached in /tmp, keyed by data + model, so only a machine's
  first run pays the model pass).
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
    labelled_posts,
    load_queries,
    query_embedder,
    run_queries,
)
from bot import search as semantic
from bot.domain import IncomingPost
from bot.search import hybrid_search, load_index, rrf, similar_posts
from bot.storage import SearchQuery, Storage
from bot.vector_index import VectorIndex, VectorMeta
from models.classifier import AppealClassifier
from models.encoder import Encoder
from models.training.dataset import load_examples


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
        index.add(pid, vec, VectorMeta(date=0, lang=None, labels=(), appeal=False, channel_id=1, story_first=True))
    query = classifier.embed(["здавайся в полон — залишишся живим"])[0]
    hits = index.search(query, k=5)
    cos = {pid: float(vecs[i] @ query) for i, pid in enumerate(texts)}
    assert [pid for pid, _ in hits] == sorted(cos, key=lambda p: -cos[p])
    assert all(abs(s - cos[pid]) < 2e-3 for pid, s in hits)  # exact re-rank on float16 vectors
    # both surrender appeals (Russian and Ukrainian) before borscht, a console for sale and the weather
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
    # vector ranks weighing double: 3 → 1/63 + 2/63; 4 → 2/61; 5 → 2/62; then 1 → 1/61 and 2 → 1/62
    assert rrf([fts, vec], k=60, weights=(1.0, 2.0)) == [3, 4, 5, 1, 2]
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
    space = classifier.search_space
    assert space is not None  # the offline E5's language centroids are committed (models/artifacts)
    index = VectorIndex(centroids=space.posts)  # as the bot builds it
    await load_index(index, storage)
    appeal = {x: s.classification.appeal for x, s in zip(SMALL_DB, scored, strict=True)}
    return storage, index, dict(zip(pids, SMALL_DB, strict=True)), appeal


async def test_queries_in_one_language_find_posts_in_another(classifier: AppealClassifier, tmp_path: Path) -> None:
    storage, index, name, appeal = await _small_db(classifier, tmp_path)
    try:
        assert appeal["rua-001"] and appeal["rua-129"] and not appeal["run-029"], appeal
        assert len(index) == len(SMALL_DB)  # every post is searchable by meaning, not only appeals

        def embed(text: str) -> np.ndarray:
            return classifier.embed_query(text)

        async def top(words: str, mode: str) -> list[str]:
            res = await hybrid_search(storage, index, embed, SearchQuery(words=words), limit=10, mode=mode)
            return [name[p.id] for p in res.posts]

        # "Russian soldier, surrender" in Ukrainian: здавайся ≠ сдавайся, російський ≠ русский.
        q1 = "російський солдате, здавайся"
        assert "rua-001" in (await top(q1, "hybrid"))[:3], await top(q1, "vector")
        assert "rua-001" in (await top(q1, "vector"))[:3]  # by meaning; words meet only on «солдат», a shared lemma
        # "money for equipment and amnesty": the Russian minister's appeal, not only the Ukrainian one.
        q2 = "гроші за техніку і амністія"
        hybrid = await top(q2, "hybrid")
        assert "rua-129" in hybrid[:3] and "uka-038" in hybrid[:3], hybrid
        # English words, Ukrainian post: the reward for tank crews who drive their tank over
        q3 = "reward for a tank"
        assert "uka-038" in (await top(q3, "hybrid"))[:3], await top(q3, "vector")
        assert "uka-038" not in await top(q3, "fts")
        # one word: full text finds the Ukrainian post only (амністія ≠ амнистия)
        assert await top("амністія", "fts") == ["uka-038"]
        # words that are no post's words find nothing in full text (the floor for vectors: see the xfail below)
        assert await top('"OR NEAR( *', "fts") == []
    finally:
        await storage.close()


async def test_a_query_that_means_nothing_finds_nothing(classifier: AppealClassifier, tmp_path: Path) -> None:
    """In the language-neutral space meaningless queries fall under the floor; in raw E5 space they did not."""
    storage, index, _name, _appeal = await _small_db(classifier, tmp_path)
    try:
        for garbage in ('"OR NEAR( *', "asdf qwerty zxcv", "lorem ipsum dolor"):
            res = await hybrid_search(storage, index, classifier.embed_query, SearchQuery(words=garbage),
                                      limit=10, mode="hybrid")
            assert res.posts == [], garbage
        # the raw space (no centroids), at its own floor, answers the same query with posts
        raw = VectorIndex()
        await load_index(raw, storage)
        res = await hybrid_search(storage, raw, lambda t: classifier.embed([t])[0], SearchQuery(words='"OR NEAR( *'),
                                  limit=10, mode="hybrid")
        assert res.posts
    finally:
        await storage.close()


async def test_a_small_archive_answers_across_languages_and_ignores_garbage(classifier: AppealClassifier,
                                                                        tmp_path: Path) -> None:
    """The demo's dozen posts: the floor follows the archive's size (bot.search.similarity_floor)."""
    from bot.demo import DEMO_POSTS

    storage = Storage(tmp_path / "demo.db")
    await storage.open()
    try:
        base = datetime(2025, 3, 1, tzinfo=UTC)
        stored = await storage.store_posts([IncomingPost(channel="demo", message_id=i, text=t, source="export",
                                                         date=base + timedelta(hours=i))
                                            for i, t in enumerate(DEMO_POSTS, 1)])
        scored = classifier.score(list(DEMO_POSTS))
        await storage.save_classifications([(r.post_id, sc.classification, sc.vector)
                                            for r, sc in zip(stored, scored, strict=True)])
        assert classifier.search_space is not None
        index = VectorIndex(centroids=classifier.search_space.posts)
        await load_index(index, storage)
        text_of = dict(zip([r.post_id for r in stored], DEMO_POSTS, strict=True))
        res = await hybrid_search(storage, index, classifier.embed_query, SearchQuery(words="air raid alert Kyiv"),
                                  limit=5)
        assert res.posts and text_of[res.posts[0].id].startswith("Повітряна тривога"), [text_of[p.id] for p in res.posts]
        for garbage in ('"OR NEAR( *', "lorem ipsum dolor", "qwe", "1234", "hello"):
            res = await hybrid_search(storage, index, classifier.embed_query, SearchQuery(words=garbage), limit=5)
            assert res.posts == [], (garbage, [text_of[p.id] for p in res.posts])
        # the floor grows with the archive: what stands out among 12 posts is chance among a million
        assert semantic.similarity_floor(12) == semantic.MIN_FLOOR < semantic.similarity_floor(2743)
        assert semantic.similarity_floor(2743) < semantic.similarity_floor(10**6)
        assert abs(semantic.similarity_floor(2743) - 0.25) < 1e-9  # the floor chosen on the dev queries
    finally:
        await storage.close()


def test_every_post_gets_its_search_embedding(classifier: AppealClassifier, base_encoder: Encoder) -> None:
    """Appeals and other posts alike carry the base encoder's embedding: search covers every stored post."""
    examples = {e.id: e for e in load_examples()}
    texts = [examples["rua-001"].text, examples["run-029"].text]
    scored = classifier.score(texts)
    assert scored[0].classification.appeal and not scored[1].classification.appeal
    for s, text in zip(scored, texts, strict=True):
        assert s.vector is not None
        assert float(s.vector @ base_encoder.embed([text])[0]) > 0.99
        assert float(s.vector @ classifier.embed([text])[0]) > 0.999


async def test_similar_finds_appeals_like_a_news_post(classifier: AppealClassifier, tmp_path: Path) -> None:
    """/similar on a news post (its stored embedding) lists appeals only, never the post itself."""
    storage, index, name, appeal = await _small_db(classifier, tmp_path)
    try:
        news = next(p for p, x in name.items() if not appeal[x])
        hits = await similar_posts(storage, index, news)
        assert hits and all(appeal[name[p.id]] for p, _ in hits)
        assert news not in {p.id for p, _ in hits}
        assert all(-1.0 <= sim <= 1.0 for _, sim in hits)
    finally:
        await storage.close()


# -- the hand-labelled query set -------------------------------------------------------------------


def test_query_file_is_well_formed() -> None:
    ids = {ex.id: ex for _, _, ex in labelled_posts()}
    rows = [json.loads(line) for line in QUERIES_FILE.read_text(encoding="utf-8").splitlines() if line.strip()]
    assert len(rows) >= 150
    for lang in LANGS:
        assert sum(r["lang"] == lang for r in rows) >= 40, lang
    assert len({r["id"] for r in rows}) == len(rows)
    for r in rows:
        assert set(r) == {"id", "query", "lang", "relevant", "note"}, r["id"]
        assert r["relevant"] and len(set(r["relevant"])) == len(r["relevant"]), r["id"]
        assert all(d in ids for d in r["relevant"]), r["id"]
        assert 1 <= len(r["query"].split()) <= 10, r["id"]
    cross = sum(any(ids[d].lang != r["lang"] for d in r["relevant"]) for r in rows)
    assert cross >= 60, cross
    english_for_others = sum(r["lang"] == "en" and any(ids[d].lang in ("ru", "uk") for d in r["relevant"]) for r in rows)
    assert english_for_others >= 40, english_for_others


@pytest.fixture(scope="module")
def query_set_figures(classifier: AppealClassifier) -> dict[str, dict[str, Figures]]:
    """Top 10 of every query in every mode over the judged corpus, and the figures (bench/retrieval.py)."""

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


def test_language_centroids_carry_queries_across_languages(classifier: AppealClassifier) -> None:
    """The same index and queries in raw E5 space: vectors find far fewer posts in another language."""

    async def run() -> dict[str, dict[str, Figures]]:
        out = {}
        for neutral in (True, False):
            corpus = await build_corpus(classifier, cache=default_cache_path(classifier), neutral=neutral)
            try:
                queries = load_queries()
                res = await run_queries(corpus, queries, query_embedder(classifier, neutral=neutral), "vector",
                                        min_similarity=-1.0)
                out["neutral" if neutral else "raw"] = evaluate(res, queries, corpus.lang_of)
            finally:
                await corpus.close()
        return out

    figures = asyncio.run(run())
    # measured (no floor): cross-lingual R@10 raw 0.215 → neutral 0.396; all queries 0.386 → 0.513
    assert figures["neutral"]["cross-lingual"].recall >= figures["raw"]["cross-lingual"].recall + 0.12, figures
    assert figures["neutral"]["all"].recall >= figures["raw"]["all"].recall + 0.08, figures


def test_pseudo_relevance_feedback_finds_more(classifier: AppealClassifier) -> None:
    """Searching again from the query moved towards its first hits (bot.search.FEEDBACK_POSTS)."""

    async def run() -> dict[int, dict[str, Figures]]:
        corpus = await build_corpus(classifier, cache=default_cache_path(classifier))
        try:
            queries = load_queries()
            embed = query_embedder(classifier)
            return {fb: evaluate(await run_queries(corpus, queries, embed, "hybrid", feedback=fb), queries, corpus.lang_of)
                    for fb in (0, semantic.FEEDBACK_POSTS)}
        finally:
            await corpus.close()

    figures = asyncio.run(run())
    without, with_feedback = figures[0], figures[semantic.FEEDBACK_POSTS]
    # measured: R@10 0.565 → 0.590, cross-lingual 0.368 → 0.401, MRR 0.877 → 0.882
    assert with_feedback["all"].recall >= without["all"].recall + 0.015, figures
    assert with_feedback["cross-lingual"].recall >= without["cross-lingual"].recall + 0.015, figures
    assert with_feedback["all"].mrr >= without["all"].mrr - 0.01, figures


def test_hybrid_beats_full_text_on_the_query_set(query_set_figures: dict[str, dict[str, Figures]]) -> None:
    fts, hybrid = query_set_figures["fts"], query_set_figures["hybrid"]
    table = {m: {g: round(f.recall, 3) for g, f in v.items()} for m, v in query_set_figures.items()}
    # measured (bench/retrieval.py, 169 queries over 2,743 posts, language-neutral space): R@10 fts 0.376,
    # vector 0.507, hybrid 0.590; MRR 0.705 / 0.817 / 0.882; cross-lingual R@10 0.104 / 0.400 / 0.401
    assert hybrid["all"].recall >= fts["all"].recall + 0.12, table
    assert hybrid["all"].recall >= 0.56, table  # regression floor; the targets are below (xfail)
    assert hybrid["all"].mrr >= fts["all"].mrr + 0.10, table
    # relevant posts in another language than the query: words rarely cross
    assert fts["cross-lingual"].recall <= 0.15, table
    assert hybrid["cross-lingual"].recall >= fts["cross-lingual"].recall + 0.2, table
    for lang in LANGS:
        assert hybrid[f"query {lang}"].recall >= fts[f"query {lang}"].recall, (lang, table)
    # fusion never costs much against vectors alone
    assert hybrid["all"].recall >= query_set_figures["vector"]["all"].recall - 0.02, table


@pytest.mark.xfail(strict=True, reason="the issue's targets are not met with multilingual-e5-small: measured hybrid "
                                       "R@10 0.590, cross-lingual 0.401, MRR 0.882 on the 169 judged queries "
                                       "(targets 0.80 / 0.70 / 0.85: MRR met); no setting on the dev half passes 0.61")
def test_hybrid_recall_target(query_set_figures: dict[str, dict[str, Figures]]) -> None:
    hybrid = query_set_figures["hybrid"]
    assert hybrid["all"].recall >= 0.8 and hybrid["cross-lingual"].recall >= 0.7 and hybrid["all"].mrr >= 0.85
