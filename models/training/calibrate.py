"""Scores that mean something: Platt scaling and thresholds chosen on held-out posts.

The heads are fit on embeddings from an adapter that saw the same posts, so their raw
scores are nearly binary (train F1 1.000). Calibration is therefore fit on dev posts
the adapter never saw — hand-written ones in the style of real channels and real
channel posts at their real prevalence — and folded into the appeal head, so scoring
and reasons stay one linear map.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from models.heads import sigmoid
from models.taxonomy import LABELS


def fit_platt(logits: np.ndarray, y: np.ndarray, *, balanced: bool = True) -> tuple[float, float]:
    """(a, b) with p = sigmoid(a·z + b), by maximum likelihood (a weak L2 keeps it finite when dev separates).

    ``balanced`` weighs appeals and other posts equally, so a score reads as the odds of an appeal
    against a post of the same kind at even odds: dev's mix of real traffic (almost no appeals) and
    hand-written posts (about half) is an accident of how dev was built, and calibrating to it would
    push clear short appeals under the threshold. Real-traffic false alarms are measured separately,
    on every post of the real corpora's dev split.
    """
    from sklearn.linear_model import LogisticRegression

    z = np.clip(np.asarray(logits, dtype=float), -40, 40).reshape(-1, 1)
    model = LogisticRegression(C=10.0, max_iter=1000, class_weight="balanced" if balanced else None)
    model.fit(z, np.asarray(y, dtype=int))
    a, b = float(model.coef_[0][0]), float(model.intercept_[0])
    if a <= 0:
        raise ValueError("calibration failed: the dev scores do not rank appeals above other posts")
    return a, b


def choose_threshold(probs: np.ndarray, y: np.ndarray, lo: float = 0.3, hi: float = 0.9) -> float:
    """The F1-best threshold on dev; ties go to the one nearest 0.5, so scores read as probabilities."""
    from sklearn.metrics import f1_score

    best, best_f = 0.5, -1.0
    for t in (round(float(v), 2) for v in np.arange(lo, hi + 1e-9, 0.01)):
        f = f1_score(y.astype(bool), probs >= t, zero_division=0.0)
        if f > best_f + 1e-9 or (abs(f - best_f) <= 1e-9 and abs(t - 0.5) < abs(best - 0.5)):
            best, best_f = float(t), f
    return round(best, 2)


def choose_feed_threshold(probs: np.ndarray, y: np.ndarray, feed_probs: np.ndarray, *, max_false_alarms: float = 4.0,
                          min_precision: float = 0.85) -> float | None:
    """The lowest threshold that keeps a feed quiet: at most ``max_false_alarms`` per 1,000 posts of real
    traffic (``feed_probs``: real posts, nearly all not appeals) and ``min_precision`` on the labelled dev
    posts. Lowest, because a missed appeal is what users can't get back; None when no threshold qualifies.
    """
    for t in (round(float(v), 2) for v in np.arange(0.3, 0.96, 0.01)):
        flagged = probs >= t
        precision = float(np.sum(flagged & y.astype(bool))) / max(1, int(flagged.sum()))
        alarms = 1000 * float(np.sum(feed_probs >= t)) / max(1, len(feed_probs))
        if alarms <= max_false_alarms and precision >= min_precision:
            return t
    return None


def choose_label_thresholds(label_scores: Sequence[dict[str, float]], gold: Sequence[Sequence[str]]) -> dict[str, float]:
    """Per label, the F1-best threshold over the dev appeals (the labels of a true appeal)."""
    out: dict[str, float] = {}
    for name in LABELS:
        y = np.array([name in g for g in gold])
        p = np.array([s.get(name, 0.0) for s in label_scores])
        out[name] = choose_threshold(p, y, lo=0.2, hi=0.8) if y.any() else 0.5
    return out


def calibration_error(y: np.ndarray, probs: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error over equal-width bins."""
    idx = np.minimum((probs * bins).astype(int), bins - 1)
    return float(sum(np.mean(idx == b) * abs(probs[idx == b].mean() - y[idx == b].mean())
                     for b in range(bins) if np.any(idx == b)))


def reliability_diagram(sets: dict[str, tuple[np.ndarray, np.ndarray]], path: Path, bins: int = 10) -> Path:
    """One PNG: for each set, the share of appeals per score bin against the bin's mean score."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(sets), figsize=(5 * len(sets), 4.6), squeeze=False)
    for ax, (name, (y, p)) in zip(axes[0], sets.items(), strict=True):
        idx = np.minimum((p * bins).astype(int), bins - 1)
        xs, ys, ns = [], [], []
        for b in range(bins):
            sel = idx == b
            if sel.any():
                xs.append(float(p[sel].mean()))
                ys.append(float(y[sel].mean()))
                ns.append(int(sel.sum()))
        ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="perfect calibration")
        ax.plot(xs, ys, marker="o", color="#c0392b", label="observed share of appeals")
        for x, yy, n in zip(xs, ys, ns, strict=True):
            ax.annotate(str(n), (x, yy), textcoords="offset points", xytext=(4, -10), fontsize=7, color="#555")
        ax.set_title(f"{name} (n={len(y)}, ECE {calibration_error(y, p):.3f})", fontsize=10)
        ax.set_xlabel("appeal score")
        ax.set_ylabel("share that are appeals")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.legend(loc="upper left", fontsize=8)
    fig.suptitle("AppealWatch: reliability of the appeal score (numbers: posts per bin)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def calibrated(logits: np.ndarray, a: float, b: float) -> np.ndarray:
    return sigmoid(a * np.asarray(logits, dtype=float) + b)
