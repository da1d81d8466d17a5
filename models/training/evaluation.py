"""``appealwatch eval``: the model on each held-out set, as its users meet it.

* ``test``: the hand-written posts' old fixed test split (it steered earlier decisions, so
  it is no longer a held-out figure; kept for comparison).
* ``sealed``: posts written from the taxonomy alone by an author who saw neither the
  training data nor a model's output, frozen before any model saw them.
* ``real``: real channel traffic, scored as a feed: every post of the real corpora whose
  fixed split is *test* is classified; what is flagged is read against labels written by
  hand. Flagged posts nobody has read yet are listed (``unread_flagged.jsonl``) rather
  than guessed, so the figures never count an unread alert as right or wrong.

Every model setting is chosen on ``dev``; the test sets are read once per release, to report.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np

from models.training.dataset import (
    Example,
    load_examples,
    load_real_examples,
    load_sealed,
    real_split,
    training_examples,
)
from models.training.fit import evaluate_predictions, predict_rows

MIN_SCORES = (0.5, 0.7, 0.9)  # the README's precision / recall table
REAL_FILES = ("unlp2025_half.jsonl", "ru_news_2024_4ch.jsonl")


def real_corpus_dir() -> Path:
    """The unlabelled real corpora (``../shared/data/real`` beside the repository, or $APPEALWATCH_REAL_DATA)."""
    env = os.environ.get("APPEALWATCH_REAL_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[3] / "shared" / "data" / "real"


def real_test_pool(folder: Path | None = None, split: str = "test") -> list[tuple[str, str]]:
    """(id, text) of every real post whose fixed split is ``split``; empty when the corpora are absent."""
    folder = folder or real_corpus_dir()
    out = []
    for name in REAL_FILES:
        path = folder / name
        if not path.is_file():
            continue
        for line in path.read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            if real_split(str(row["id"])) == split:
                out.append((str(row["id"]), str(row["text"])))
    return out


def _score(row: dict[str, object]) -> float:
    return float(cast(float, row["score"]))


def _at_min_scores(y: np.ndarray, score: np.ndarray) -> dict[str, dict[str, float]]:
    """Precision and recall if every post scoring at least m were flagged (``[model] threshold = m``)."""
    out = {}
    for m in MIN_SCORES:
        pred = score >= m
        tp = float(np.sum(pred & y))
        out[f"{m:.1f}"] = {"precision": round(tp / max(1.0, float(pred.sum())), 4),
                           "recall": round(tp / max(1.0, float(y.sum())), 4), "flagged": int(pred.sum())}
    return out


def _labelled_set(clf: Any, examples: Sequence[Example]) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    predicted = predict_rows(clf, [e.text for e in examples])
    metrics = evaluate_predictions(examples, predicted)
    y = np.array([e.appeal for e in examples])
    score = np.array([_score(p) for p in predicted])
    metrics["at_threshold"] = _at_min_scores(y, score)
    return metrics, y, score


def evaluate_real(clf: Any, out_dir: Path, split: str = "test") -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """Real traffic as a feed: alerts and false alarms per 1,000 posts, precision of what is flagged."""
    pool = real_test_pool(split=split)
    labelled = {e.id: e for e in load_real_examples() if e.split == split}
    if not pool:
        return {"skipped": f"no real corpora in {real_corpus_dir()}"}, np.array([]), np.array([])
    predicted = predict_rows(clf, [t for _, t in pool])
    flagged = [(pid, text, p) for (pid, text), p in zip(pool, predicted, strict=True) if p["appeal"]]
    read = [(pid, p) for pid, _, p in flagged if pid in labelled]
    unread = [(pid, text, p) for pid, text, p in flagged if pid not in labelled]
    true_alerts = [pid for pid, _ in read if labelled[pid].appeal]
    false_alarms = [pid for pid, _ in read if not labelled[pid].appeal]
    real_appeals = [e.id for e in labelled.values() if e.appeal]
    by_id = {pid: p for (pid, _), p in zip(pool, predicted, strict=True)}
    found = [pid for pid in real_appeals if pid in by_id and by_id[pid]["appeal"]]
    n = len(pool)
    out_dir.mkdir(parents=True, exist_ok=True)
    with (out_dir / f"unread_flagged_{split}.jsonl").open("w", encoding="utf-8") as f:
        for pid, text, p in unread:
            f.write(json.dumps({"id": pid, "score": p["score"], "labels": p["labels"], "text": text}, ensure_ascii=False) + "\n")
    per_min = {}
    for m in MIN_SCORES:  # what `[model] threshold = m` would give: every post scoring at least m is flagged
        at = [pid for pid in by_id if _score(by_id[pid]) >= m]
        read_at = [pid for pid in at if pid in labelled]
        fa = sum(1 for pid in read_at if not labelled[pid].appeal)
        per_min[f"{m:.1f}"] = {"alerts_per_1000": round(1000 * len(at) / n, 2), "false_alarms_per_1000": round(1000 * fa / n, 2),
                               "precision_of_read": round((len(read_at) - fa) / max(1, len(read_at)), 4),
                               "unread": len(at) - len(read_at)}
    report = {
        "posts": n, "flagged": len(flagged), "flagged_read": len(read), "flagged_unread": len(unread),
        "alerts_per_1000": round(1000 * len(flagged) / n, 2),
        "false_alarms_per_1000": round(1000 * len(false_alarms) / n, 2),
        "precision_of_read": round(len(true_alerts) / max(1, len(read)), 4),
        "real_appeals_labelled": len(real_appeals), "real_appeals_found": len(found),
        "false_alarm_ids": false_alarms, "at_threshold": per_min,
    }
    ys = np.array([labelled[pid].appeal for pid in labelled if pid in by_id])
    ss = np.array([_score(by_id[pid]) for pid in labelled if pid in by_id])
    return report, ys, ss


def evaluate_sets(clf: Any, which: str, *, out_dir: Path) -> dict[str, Any]:
    from models.training.calibrate import calibration_error, reliability_diagram

    report: dict[str, Any] = {}
    curves: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    if which in ("dev", "train"):
        report[which], _, _ = _labelled_set(clf, training_examples((which,)))
        if which == "dev":  # the real corpora's dev posts, as a feed: where thresholds are chosen
            report["real_traffic_dev"], _, _ = evaluate_real(clf, out_dir, split="dev")
        return report
    if which in ("test", "report"):
        report["old_test"], _, _ = _labelled_set(clf, [e for e in load_examples() if e.split == "test"])
    if which in ("sealed", "report"):
        report["sealed_test"], y, s = _labelled_set(clf, load_sealed())
        curves["sealed test"] = (y, s)
    if which in ("real", "report"):
        report["real_traffic_test"], y, s = evaluate_real(clf, out_dir)
        if len(y):
            report["real_traffic_test"]["calibration_error_labelled"] = round(calibration_error(y, s), 4)
            curves["real traffic (labelled test posts)"] = (y, s)
    if curves:
        report["reliability_diagram"] = str(reliability_diagram(curves, out_dir / "reliability.png"))
    return report
