"""Search by meaning and by words, in any of the three languages: vectors fused with BM25.

A researcher who types an English query should find the Ukrainian appeal too; words can't
do that, the multilingual encoder can. Every post's search embedding (base E5, computed
when it is classified) is stored and held in a compact in-memory index
(``bot.vector_index``), with the fields filters need, so a query costs one encoder pass
plus one scan of the index *among the posts that pass the filters*. The vector ranking is
fused with the full-text ranking (``Storage.search_ranking``: BM25 over lemmas) by
reciprocal-rank fusion (RRF), which needs no score calibration between the two, and vector
hits below a similarity floor are dropped. The floor cannot stop every meaningless query:
E5-small puts unrelated posts at cosine 0.80-0.85, where English queries also meet their
Ukrainian answers (tests/test_search_hybrid.py keeps the gap as a strict xfail).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass

import numpy as np

from bot.domain import StoredPost
from bot.storage import SearchQuery, Storage
from bot.vector_index import VectorFilter, VectorIndex, VectorMeta

# Chosen on the dev half of the judged query set (bench/retrieval.py): a small k lets either list's
# first places count, and vector ranks weigh 1.5× (they alone cross languages).
RRF_K = 10
VECTOR_WEIGHT = 1.5
CANDIDATES = 50
# E5 cosines run high (unrelated posts ≈ 0.78–0.81): below this a vector hit is noise.
MIN_SIMILARITY = 0.82


async def load_index(index: VectorIndex, storage: Storage, chunk: int = 20_000) -> int:
    """Read every stored search embedding (at start-up), a page at a time."""

    async def pages() -> AsyncIterator[list[tuple[int, bytes, VectorMeta]]]:
        last = 0
        while rows := await storage.vector_rows(after_id=last, limit=chunk):
            yield [(row.post_id, row.embedding, row.meta) for row in rows]
            last = rows[-1].post_id

    await index.load(pages())
    return len(index)


async def index_posts(index: VectorIndex, storage: Storage, post_ids: Sequence[int]) -> None:
    """Add (or refresh) just-classified posts: the pipeline calls this after saving them."""
    for row in await storage.vector_rows(ids=list(post_ids)):
        if row.post_id in index:
            index.update_meta(row.post_id, row.meta)
        else:
            index.extend([(row.post_id, row.embedding, row.meta)])  # a blob of the wrong size is skipped


async def vector_filter(storage: Storage, q: SearchQuery) -> VectorFilter | None:
    """The query's filters for the vector index; None when a named channel is unknown (nothing can match)."""
    channel_id = None
    if q.channel:
        channel = await storage.channel_access(key=q.channel)
        if channel is None:
            return None
        channel_id = channel.id
    return VectorFilter(
        since=int(q.since.timestamp()) if q.since else None,
        until=math.ceil(q.until.timestamp()) if q.until else None,
        langs=(q.lang,) if q.lang else None, labels=q.labels or None, appeals_only=q.appeals_only,
        channel_id=channel_id, story_first_only=True,
    )


@dataclass(frozen=True, slots=True)
class HybridResult:
    posts: list[StoredPost]
    total: int
    capped: bool


def rrf(rankings: Sequence[Sequence[int]], k: int = RRF_K, weights: Sequence[float] | None = None) -> list[int]:
    """Reciprocal-rank fusion: score(d) = Σ w_i / (k + rank_i(d)); ties go to the newer (larger) id."""
    scores: dict[int, float] = {}
    for i, ranking in enumerate(rankings):
        w = weights[i] if weights is not None else 1.0
        for rank, doc in enumerate(ranking, start=1):
            scores[doc] = scores.get(doc, 0.0) + w / (k + rank)
    return sorted(scores, key=lambda d: (-scores[d], -d))


async def hybrid_search(storage: Storage, index: VectorIndex | None, embed: Callable[[str], np.ndarray] | None,
                        q: SearchQuery, *, limit: int = 5, offset: int = 0, mode: str = "hybrid",
                        min_similarity: float = MIN_SIMILARITY, candidates: int = CANDIDATES,
                        rrf_k: int = RRF_K, vector_weight: float = VECTOR_WEIGHT) -> HybridResult:
    """Full-text, vectors, or both fused (``mode``: fts | vector | hybrid).

    Filters apply inside both retrievals, before anything is ranked or capped. Pages beyond
    the fused candidates continue in full-text order, so paging never ends early.
    """
    use_vec = mode in ("vector", "hybrid") and index is not None and embed is not None and bool(q.words.strip())
    if not use_vec:
        words_only = await storage.search_ranking(q)
        posts = await storage.posts_for(words_only.ids[offset : offset + limit], words_only.terms)
        return HybridResult(posts, words_only.total, words_only.capped)
    assert index is not None and embed is not None
    # the query is embedded on a worker thread while SQLite ranks on its own: on two cores they overlap
    qvec_task = asyncio.get_running_loop().run_in_executor(None, embed, q.words)
    try:
        ranking = await storage.search_ranking(q) if mode == "hybrid" else None
        flt = await vector_filter(storage, q)
    finally:
        qvec = await qvec_task
    vec_ids: list[int] = []
    if flt is not None:
        hits = await asyncio.to_thread(index.search, qvec, candidates, flt)  # a scan of up to ~20 ms at 1M posts
        vec_ids = [i for i, sim in hits if sim >= min_similarity]
    if ranking is None:
        posts = await storage.posts_for(vec_ids[offset : offset + limit])
        return HybridResult(posts, len(vec_ids), False)
    fused = rrf([ranking.ids[:candidates], vec_ids], k=rrf_k, weights=(1.0, vector_weight))
    seen = set(fused)
    order = fused + [i for i in ranking.ids[candidates:] if i not in seen]
    posts = await storage.posts_for(order[offset : offset + limit], ranking.terms)
    return HybridResult(posts, len(set(ranking.ids) | set(vec_ids)), ranking.capped)


async def similar_posts(storage: Storage, index: VectorIndex, post_id: int, *, limit: int = 5,
                        embed: Callable[[str], np.ndarray] | None = None) -> list[tuple[StoredPost, float]]:
    """Appeals most like a given post, other posts of its story left out.

    A post in the index uses its stored embedding; any other is embedded now with ``embed``.
    """
    source = await storage.get_post(post_id)
    if source is None:
        return []
    vec = index.vector_of(post_id)
    if vec is None:
        vec = await storage.embedding_of(post_id)
    if vec is None:
        if embed is None or not source.text.strip():
            return []
        vec = np.asarray(await asyncio.to_thread(embed, source.text), dtype=np.float32)
    flt = VectorFilter(appeals_only=True, story_first_only=True)
    out = []
    for pid, sim in index.search(vec, limit * 3, flt, exclude=post_id):
        post = await storage.get_post(pid)
        if post is None or (source.story_id is not None and post.story_id == source.story_id):
            continue
        out.append((post, sim))
        if len(out) >= limit:
            break
    return out
