"""How to hold appeal vectors for /search and /similar: numpy in memory vs sqlite-vec, measured.

    .venv/bin/python bench/vectors.py --vectors 100000
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import time

import numpy as np


def timed(fn, repeats: int) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--vectors", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--repeats", type=int, default=20)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    mat = rng.standard_normal((args.vectors, args.dim)).astype(np.float32)
    mat /= np.linalg.norm(mat, axis=1, keepdims=True)
    q = mat[123] + 0.01 * rng.standard_normal(args.dim).astype(np.float32)
    q /= np.linalg.norm(q)
    f16 = mat.astype(np.float16)
    q16 = q.astype(np.float16)

    def top(sims: np.ndarray, k: int = 50) -> np.ndarray:
        idx = np.argpartition(-sims, k)[:k]
        return idx[np.argsort(-sims[idx])]

    t32 = timed(lambda: top(mat @ q), args.repeats)
    t16 = timed(lambda: top(f16 @ q16), args.repeats)
    truth = top(mat @ q)
    print(f"{args.vectors:,} vectors × {args.dim}")
    print(f"numpy float32 in memory: {t32:.1f} ms per query, {mat.nbytes / 2**20:.0f} MiB")
    print(f"numpy float16 in memory: {t16:.1f} ms per query, {f16.nbytes / 2**20:.0f} MiB, "
          f"top-50 overlap with float32 {len(set(top(f16 @ q16)) & set(truth)) / 50:.2f}")
    try:
        import sqlite_vec
    except ImportError:
        print("sqlite-vec: not installed (pip install sqlite-vec)")
        return
    db = sqlite3.connect(":memory:")
    if not hasattr(db, "enable_load_extension"):
        print("sqlite-vec: this Python's sqlite3 cannot load extensions (built without "
              "--enable-loadable-sqlite-extensions), so it is not an option here")
        return
    db.enable_load_extension(True)
    sqlite_vec.load(db)
    db.enable_load_extension(False)
    db.execute(f"CREATE VIRTUAL TABLE v USING vec0(embedding float[{args.dim}] distance_metric=cosine)")
    t = time.perf_counter()
    db.executemany("INSERT INTO v(rowid, embedding) VALUES (?, ?)", ((i + 1, mat[i].tobytes()) for i in range(args.vectors)))
    db.commit()
    load = time.perf_counter() - t
    qb = q.tobytes()
    tvec = timed(lambda: db.execute("SELECT rowid FROM v WHERE embedding MATCH ? AND k = 50", (qb,)).fetchall(),
                 max(3, args.repeats // 4))
    got = {r[0] - 1 for r in db.execute("SELECT rowid FROM v WHERE embedding MATCH ? AND k = 50", (qb,)).fetchall()}
    print(f"sqlite-vec vec0 (brute force, float32): {tvec:.1f} ms per query, insert {load:.1f} s, "
          f"top-50 overlap {len(got & set(truth)) / 50:.2f}")
    print(f"ratio sqlite-vec / numpy float32: {tvec / t32:.1f}×")


if __name__ == "__main__":
    main()
