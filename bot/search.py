"""Search by meaning and by words, in any of the three languages: vectors fused with BM25.

A researcher who types an English query should find the Ukrainian appeal too; words can't
do that, the multilingual encoder can. Every post's search embedding (base E5, computed
when it is classified) is stored and held in a compact in-memory index
(``bot.vector_index``), with the fields filters need, so a query costs one encoder pass
plus one scan of the index *among the posts that pass the filters*. The vector ranking is
fused with the full-text ranking (``Storage.search_ranking``: BM25 over lemmas) by
reciprocal-rank fusion (RRF), which needs no score calibration between the two, and vector
hits below a similarity floor are dropped. Vectors and queries live in a language-neutral space
(``models.search_space``: each language's centroid taken out), where unrelated posts sit near
cosine 0 and a query in one language meets its answers in another; the floor grows with the
archive, as the best cosine that chance alone gives does.
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

# Chosen on the dev half of the judged query set (bench/retrieval.py, language-neutral space): a small k
# lets either list's first places count, and vector ranks weigh 2× (they alone cross languages).
RRF_K = 5
VECTOR_WEIGHT = 2.0
CANDIDATES = 30
# Below a floor a vector hit is noise. In the language-neutral space (models.search_space: what the bot
# uses) a query's cosines to unrelated posts spread around 0, so the best of N unrelated posts reaches
# about σ·sqrt(2 ln N) by chance: 0.14 among a dozen posts, 0.25 among the 2,743 judged ones, 0.33 at a
# million. The floor follows that: NOISE_SCALE is the floor chosen on the dev queries (0.25, over 2,743
# posts) divided by sqrt(2 ln 2743). A small archive then still answers "air raid alert Kyiv" with its
# Ukrainian post at 0.22, and a big one does not answer nonsense with the luckiest of a million posts.
# Raw E5 cosines run high (unrelated posts ≈ 0.78–0.81): a fixed floor for an index without centroids.
# Under a few dozen posts the estimate is too low for short nonsense ("qwe", "1234": up to 0.19 in a
# dozen posts), so the floor never goes under MIN_FLOOR.
NOISE_SCALE = 0.25 / math.sqrt(2 * math.log(2743))
MIN_FLOOR = 0.2
RAW_MIN_SIMILARITY = 0.82
# Pseudo-relevance feedback (Rocchio): the query vector moved towards its FEEDBACK_POSTS best hits, by
# FEEDBACK_WEIGHT of their mean, then searched again. Broad questions have many answers, worded apart;
# the first hits carry the topic's vocabulary in every language. Chosen on the dev queries (vectors
# alone, R@10 0.551 → 0.586, cross-language 0.408 → 0.442, MRR 0.851 → 0.849; k 3/5/10 × weight 0.5/1/2).
FEEDBACK_POSTS = 5
FEEDBACK_WEIGHT = 0.5
# A second pass only from at least FEEDBACK_MIN_HITS hits above the floor: over the judged posts, 12
# meaningless strings then return 5 posts in all (22 when one hit was enough);
# dev R@10 0.624 against 0.626.
FEEDBACK_MIN_HITS = 3


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
        if not index.update_meta(row.post_id, row.meta):  # new, or its language (so its centroid) changed
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


def similarity_floor(posts: int) -> float:
    """The cosine a vector hit must reach in the language-neutral space, for an index of ``posts`` posts."""
    return max(MIN_FLOOR, NOISE_SCALE * math.sqrt(2 * math.log(max(posts, 2))))


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
                        min_similarity: float | None = None, candidates: int = CANDIDATES,
                        rrf_k: int = RRF_K, vector_weight: float = VECTOR_WEIGHT,
                        feedback: int | None = None) -> HybridResult:
    """Full-text, vectors, or both fused (``mode``: fts | vector | hybrid).

    Filters apply inside both retrievals, before anything is ranked or capped. Pages beyond
    the fused candidates continue in full-text order, so paging never ends early. ``embed`` must
    give vectors in the index's space; ``min_similarity`` defaults to that space's floor.
    ``feedback``: posts for pseudo-relevance feedback (default ``FEEDBACK_POSTS`` in the
    language-neutral space, none in raw space; 0: none).
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
    if min_similarity is None:
        min_similarity = similarity_floor(len(index)) if index.language_neutral else RAW_MIN_SIMILARITY
    if feedback is None:
        feedback = FEEDBACK_POSTS if index.language_neutral else 0
    if flt is not None:  # scans of up to ~20 ms at 1M posts
        vec_ids = await asyncio.to_thread(_vector_hits, index, qvec, candidates, flt, min_similarity, feedback)
    if ranking is None:
        posts = await storage.posts_for(vec_ids[offset : offset + limit])
        return HybridResult(posts, len(vec_ids), False)
    fused = rrf([ranking.ids[:candidates], vec_ids], k=rrf_k, weights=(1.0, vector_weight))
    seen = set(fused)
    order = fused + [i for i in ranking.ids[candidates:] if i not in seen]
    posts = await storage.posts_for(order[offset : offset + limit], ranking.terms)
    return HybridResult(posts, len(set(ranking.ids) | set(vec_ids)), ranking.capped)


def _vector_hits(index: VectorIndex, qvec: np.ndarray, candidates: int, flt: VectorFilter | None, floor: float,
                 feedback: int) -> list[int]:
    """Post ids by cosine above ``floor``; with ``feedback``, searched again from the query moved towards
    its first hits. Fewer than ``FEEDBACK_MIN_HITS`` above the floor: no second pass, so one chance hit of
    a meaningless query cannot pull its neighbours over the floor."""
    hits = [i for i, sim in index.search(qvec, candidates, flt) if sim >= floor]
    if len(hits) < FEEDBACK_MIN_HITS or feedback <= 0:
        return hits
    found = list(index.vectors_of(hits[:feedback]).values())
    if not found:
        return hits
    q = np.asarray(qvec, dtype=np.float32).reshape(-1)
    moved = q / max(float(np.linalg.norm(q)), 1e-12) + FEEDBACK_WEIGHT * np.mean(found, axis=0)
    return [i for i, sim in index.search(moved, candidates, flt) if sim >= floor]


async def similar_posts(storage: Storage, index: VectorIndex, post_id: int, *, limit: int = 5,
                        embed: Callable[[str], np.ndarray] | None = None) -> list[tuple[StoredPost, float]]:
    """Appeals most like a given post, other posts of its story left out.

    A post in the index uses its stored embedding; any other is embedded now with ``embed``.
    """
    source = await storage.get_post(post_id)
    if source is None:
        return []
    vec = index.vector_of(post_id)  # already in the index's space
    if vec is None:
        raw = await storage.embedding_of(post_id)
        if raw is None or raw.size != index.dim:  # none yet, or a blob of another encoder's size
            if embed is None or not source.text.strip():
                return []
            raw = np.asarray(await asyncio.to_thread(embed, source.text), dtype=np.float32)
        if raw.size != index.dim:
            return []
        vec = index.neutral(raw.reshape(-1), [source.lang])
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
