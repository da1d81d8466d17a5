"""Cross-lingual search: E5 vectors of stored appeals, fused with full-text ranks.

A researcher who types a Ukrainian query should find the Russian appeal too; words
can't do that, the multilingual encoder can. Each post's embedding is computed once,
when it is classified, and stored (float16) with its classification. The vectors of
*appeals* are also held in memory (a million posts with a tenth appeals is ~150 MB
as float32), so a query costs one encoder pass plus one matrix product. Results are
fused with the FTS5 ranking by reciprocal-rank fusion (RRF), which needs no score
calibration between the two.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from bot.domain import StoredPost
from bot.storage import SearchQuery, Storage

RRF_K = 60
CANDIDATES = 50
# E5 cosines run high (unrelated posts ≈ 0.78–0.81): below this a vector hit is noise.
MIN_SIMILARITY = 0.82


class VectorIndex:
    """Post ids and their L2-normalised embeddings, appended as appeals arrive.

    Held as float32 although stored as float16: numpy has no BLAS for float16, and a
    query over 100,000 vectors took 164 ms in float16 against 16 ms in float32 with the
    same top-50 (bench/vectors.py). sqlite-vec was the alternative; this Python's sqlite3
    cannot load extensions, so the bot could not rely on it.
    """

    def __init__(self, dim: int = 384) -> None:
        self.dim = dim
        self._ids = np.zeros(0, dtype=np.int64)
        self._mat = np.zeros((0, dim), dtype=np.float32)
        self._pending_ids: list[int] = []
        self._pending: list[np.ndarray] = []

    def __len__(self) -> int:
        return len(self._ids) + len(self._pending_ids)

    def add(self, post_id: int, vector: np.ndarray) -> None:
        self._pending_ids.append(post_id)
        self._pending.append(np.asarray(vector, dtype=np.float32))

    def _flush(self) -> None:
        if self._pending_ids:
            self._ids = np.concatenate([self._ids, np.array(self._pending_ids, dtype=np.int64)])
            self._mat = np.concatenate([self._mat, np.stack(self._pending)])
            self._pending_ids, self._pending = [], []

    def search(self, query: np.ndarray, k: int = CANDIDATES, exclude: int | None = None) -> list[tuple[int, float]]:
        self._flush()
        if not len(self._ids):
            return []
        sims = self._mat @ np.asarray(query, dtype=np.float32)
        if exclude is not None:
            sims[self._ids == exclude] = -2
        k = min(k, len(sims))
        top = np.argpartition(-sims, k - 1)[:k]
        top = top[np.argsort(-sims[top])]
        return [(int(self._ids[i]), float(sims[i])) for i in top if sims[i] > -2]

    def vector_of(self, post_id: int) -> np.ndarray | None:
        self._flush()
        hit = np.flatnonzero(self._ids == post_id)
        return self._mat[hit[0]].astype(np.float32) if len(hit) else None

    async def load(self, storage: Storage, chunk: int = 20_000) -> int:
        """Read the stored appeal embeddings (at start-up)."""
        last = 0
        while True:
            rows = await storage.appeal_embeddings(last, chunk)
            if not rows:
                break
            for post_id, blob in rows:
                vec = np.frombuffer(blob, dtype=np.float16)
                if vec.shape[0] == self.dim:
                    self.add(post_id, vec)
            last = rows[-1][0]
        self._flush()
        return len(self._ids)


@dataclass(frozen=True, slots=True)
class HybridResult:
    posts: list[StoredPost]
    total: int
    capped: bool


def rrf(rankings: Sequence[Sequence[int]], k: int = RRF_K) -> list[int]:
    """Reciprocal-rank fusion: score(d) = Σ 1 / (k + rank_i(d))."""
    scores: dict[int, float] = {}
    for ranking in rankings:
        for rank, doc in enumerate(ranking, start=1):
            scores[doc] = scores.get(doc, 0.0) + 1.0 / (k + rank)
    return sorted(scores, key=lambda d: (-scores[d], -d))


async def hybrid_search(storage: Storage, index: VectorIndex | None, embed: Callable[[str], np.ndarray] | None,
                        q: SearchQuery, *, limit: int = 5, offset: int = 0, mode: str = "hybrid",
                        min_similarity: float = MIN_SIMILARITY) -> HybridResult:
    """Full-text, vectors, or both fused (``mode``: fts | vector | hybrid).

    Pages beyond the fused candidates fall back to full-text order, so paging never ends early.
    """
    use_vec = mode in ("vector", "hybrid") and index is not None and embed is not None and bool(q.words.strip())
    if not use_vec or offset >= CANDIDATES:
        posts, total = await storage.search(q, limit=limit, offset=offset)
        return HybridResult(posts, total, total >= storage.SEARCH_WINDOW)
    assert index is not None and embed is not None
    fts_posts: list[StoredPost] = []
    total = 0
    capped = False
    if mode == "hybrid":
        fts_posts, total = await storage.search(q, limit=CANDIDATES, offset=0)
        capped = total >= storage.SEARCH_WINDOW
    qvec = await asyncio.get_running_loop().run_in_executor(None, embed, q.words)
    hits = [i for i, sim in index.search(qvec, CANDIDATES * 2) if sim >= min_similarity]
    vec_ids = (await storage.filter_post_ids(hits, q))[:CANDIDATES]
    by_id = {p.id: p for p in fts_posts}
    fused = rrf([list(by_id), vec_ids]) if mode == "hybrid" else vec_ids
    out = []
    for pid in fused[offset : offset + limit]:
        post = by_id.get(pid) or await storage.get_post(pid)
        if post is not None:
            out.append(post)
    return HybridResult(out, max(total, len(fused)), capped)


async def similar_posts(storage: Storage, index: VectorIndex, post_id: int, *, limit: int = 5,
                        embed: Callable[[str], np.ndarray] | None = None) -> list[tuple[StoredPost, float]]:
    """Appeals most like a given post, reposts of the same story left out.

    Appeals carry a stored embedding; any other post is embedded now with ``embed``.
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
    out = []
    for pid, sim in index.search(vec, limit * 3, exclude=post_id):
        post = await storage.get_post(pid)
        if post is None or (source.story_id is not None and post.story_id == source.story_id):
            continue
        out.append((post, sim))
        if len(out) >= limit:
            break
    return out
