"""``appealwatch train`` and ``appealwatch eval``: seeded, on the CPU, with a progress bar.

Training fits logistic heads on E5 embeddings: those of the encoder with its LoRA
adapter (``models.finetune``, trained first with ``--finetune``), or of the plain
encoder. Model selection (regularisation and decision thresholds) uses 5-fold
cross-validation over train+dev, the heads are then fit on train+dev, and the
untouched test split gives the reported figures.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from models.encoder import Encoder
from models.heads import Heads, HeadsMeta
from models.language import detect_language
from models.taxonomy import ADDRESSEES, LABELS
from models.training.calibrate import calibration_error, choose_threshold
from models.training.dataset import Example, data_sha256

log = logging.getLogger(__name__)

C_GRID = (0.03, 0.1, 0.3, 1.0, 3.0, 10.0)


@dataclass(slots=True)
class EmbeddingCache:
    """Embeddings keyed by SHA-256 of the text, so a second run re-encodes nothing."""

    path: Path
    vectors: dict[str, np.ndarray]

    @classmethod
    def open(cls, folder: Path, encoder_id: str) -> EmbeddingCache:
        tag = hashlib.sha256(encoder_id.encode()).hexdigest()[:12]
        path = folder / f"embeddings-{tag}.npz"
        vectors: dict[str, np.ndarray] = {}
        if path.is_file():
            with np.load(path) as z:
                vectors = {k: z[k] for k in z.files}
        return cls(path, vectors)

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(self.path, **self.vectors)  # type: ignore[arg-type]


def text_key(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def embed_all(encoder: Encoder, texts: Sequence[str], cache: EmbeddingCache | None, *, progress: bool = True) -> np.ndarray:
    from tqdm import tqdm

    keys = [text_key(t) for t in texts]
    todo = sorted({k: t for k, t in zip(keys, texts, strict=True) if cache is None or k not in cache.vectors}.items())
    store = cache.vectors if cache is not None else {}
    step = 32
    with tqdm(total=len(todo), desc="embedding posts", unit="post", disable=not progress or not todo) as bar:
        for i in range(0, len(todo), step):
            chunk = todo[i : i + step]
            vecs = encoder.embed([t for _, t in chunk])
            for (k, _), v in zip(chunk, vecs, strict=True):
                store[k] = v
            bar.update(len(chunk))
    if cache is not None and todo:
        cache.save()
    return np.stack([store[k] for k in keys]).astype(np.float32)


def _f1(y: np.ndarray, pred: np.ndarray) -> tuple[float, float, float]:
    tp = float(np.sum(y & pred))
    p = tp / max(1.0, float(np.sum(pred)))
    r = tp / max(1.0, float(np.sum(y)))
    f = 2 * p * r / max(1e-9, p + r)
    return p, r, f


def _fit_binary(x: np.ndarray, y: np.ndarray, seed: int) -> tuple[float, float, np.ndarray]:
    """Pick C by 5-fold CV log-loss; return (C, threshold from OOF F1, OOF probabilities)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import log_loss
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    folds = StratifiedKFold(n_splits=5, shuffle=True, random_state=seed)
    best: tuple[float, float, np.ndarray] | None = None
    for c in C_GRID:
        lr = LogisticRegression(C=c, max_iter=2000, class_weight="balanced")
        oof = cross_val_predict(lr, x, y, cv=folds, method="predict_proba")[:, 1]
        loss = log_loss(y, oof)
        if best is None or loss < best[1]:
            best = (c, loss, oof)
    assert best is not None
    c, _, oof = best
    return c, choose_threshold(oof, y, lo=0.2, hi=0.8), oof


def _scaled(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    mean = x.mean(axis=0)
    std = x.std(axis=0) + 1e-6
    return (x - mean) / std, mean, std


def _fold(w: np.ndarray, b: np.ndarray | float, mean: np.ndarray, std: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Fold standardisation into the weights so heads apply to raw embeddings (and stay linear)."""
    w2 = w / std
    b2 = np.asarray(b) - (w * (mean / std)).sum(axis=-1)
    return w2, b2


def fit_heads(x: np.ndarray, examples: Sequence[Example], *, encoder_id: str, seed: int = 0) -> Heads:
    from sklearn.linear_model import LogisticRegression

    examples = list(examples)

    y = np.array([e.appeal for e in examples])
    xs, mean, std = _scaled(x)
    c, thr, _ = _fit_binary(xs, y, seed)
    lr = LogisticRegression(C=c, max_iter=2000, class_weight="balanced").fit(xs, y)
    aw, ab = _fold(lr.coef_[0], lr.intercept_[0], mean, std)

    idx = np.flatnonzero(y)
    xa = xs[idx]
    label_w = np.zeros((len(LABELS), x.shape[1]), dtype=np.float32)
    label_b = np.zeros(len(LABELS), dtype=np.float32)
    label_thr: dict[str, float] = {}
    for j, name in enumerate(LABELS):
        yl = np.array([name in examples[i].labels for i in idx])
        lc, lt, _ = _fit_binary(xa, yl, seed)
        m = LogisticRegression(C=lc, max_iter=2000, class_weight="balanced").fit(xa, yl)
        w, b = _fold(m.coef_[0], m.intercept_[0], mean, std)
        label_w[j], label_b[j], label_thr[name] = w, float(b), lt

    ya = np.array([ADDRESSEES.index(examples[i].addressee or "ru_military") for i in idx])
    am = LogisticRegression(C=1.0, max_iter=3000, class_weight="balanced").fit(xa, ya)
    addr_w = np.zeros((len(ADDRESSEES), x.shape[1]), dtype=np.float32)
    addr_b = np.full(len(ADDRESSEES), -30.0, dtype=np.float32)  # an addressee never seen stays impossible
    w, b = _fold(am.coef_, am.intercept_, mean, std)
    for row, cls_index in enumerate(am.classes_):
        addr_w[cls_index], addr_b[cls_index] = w[row], b[row]

    meta = HeadsMeta(
        encoder=encoder_id, dim=int(x.shape[1]), threshold=thr, label_thresholds=label_thr,
        data_sha256=data_sha256(), trained_at=datetime.now(UTC).isoformat(timespec="seconds"), seed=seed,
        metrics={"appeal_C": c},
    )
    return Heads(aw.astype(np.float32), float(ab), label_w, label_b, addr_w, addr_b, meta)


def evaluate_predictions(examples: Sequence[Example], predicted: Sequence[dict[str, object]]) -> dict[str, object]:
    """Appeal P/R/F1, per-label F1 (end to end: a missed appeal misses its labels too),
    macro-F1, per-language figures, language accuracy and ru↔uk confusion."""
    y = np.array([e.appeal for e in examples])
    p = np.array([bool(r["appeal"]) for r in predicted])
    prec, rec, f1 = _f1(y, p)
    per_label: dict[str, float] = {}
    for name in LABELS:
        yl = np.array([name in e.labels for e in examples])
        pl = np.array([name in r["labels"] for r in predicted])  # type: ignore[operator]
        per_label[name] = round(_f1(yl, pl)[2], 4)
    addr_ok = [r["addressee"] == e.addressee for e, r in zip(examples, predicted, strict=True) if e.appeal and r["appeal"]]
    langs = [str(r["lang"]) for r in predicted]
    per_lang: dict[str, dict[str, float]] = {}
    for lang in ("ru", "uk", "en"):
        sel = np.array([e.lang == lang for e in examples])
        if not sel.any():
            continue
        lp, lr_, lf = _f1(y[sel], p[sel])
        acc = np.mean([langs[int(i)] == examples[int(i)].lang for i in np.flatnonzero(sel)])
        per_lang[lang] = {"n": int(sel.sum()), "appeal_precision": round(lp, 4), "appeal_recall": round(lr_, 4),
                          "appeal_f1": round(lf, 4), "language_accuracy": round(float(acc), 4)}
    ruuk = [i for i, e in enumerate(examples) if e.lang in ("ru", "uk")]
    confused = sum(1 for i in ruuk if {langs[i], examples[i].lang} == {"ru", "uk"})
    return {
        "n": len(examples),
        "appeal_precision": round(prec, 4),
        "appeal_recall": round(rec, 4),
        "appeal_f1": round(f1, 4),
        "label_f1": per_label,
        "label_macro_f1": round(float(np.mean(list(per_label.values()))), 4),
        "addressee_accuracy": round(float(np.mean(addr_ok)), 4) if addr_ok else None,
        "language_accuracy": round(float(np.mean([langs[i] == e.lang for i, e in enumerate(examples)])), 4),
        "ru_uk_confusion": round(confused / max(1, len(ruuk)), 4),
        "per_language": per_lang,
        **_calibration(y, [r.get("score") for r in predicted]),
    }


def _calibration(y: np.ndarray, scores: Sequence[object]) -> dict[str, float]:
    """Expected calibration error (10 equal-width bins) and Brier score of the appeal score:
    whether "score 0.8" means that about 8 in 10 such posts are appeals."""
    from sklearn.metrics import brier_score_loss

    if not scores or any(not isinstance(s, (int, float)) for s in scores):
        return {}
    s = np.array(scores, dtype=float)
    return {"calibration_error": round(calibration_error(y.astype(float), s), 4), "brier": round(float(brier_score_loss(y, s)), 4)}


def predict_rows(classifier: object, texts: Sequence[str], batch: int = 64) -> list[dict[str, object]]:
    from tqdm import tqdm

    from models.classifier import AppealClassifier

    assert isinstance(classifier, AppealClassifier)
    out: list[dict[str, object]] = []
    for i in tqdm(range(0, len(texts), batch), desc="classifying", unit="batch"):
        for c in classifier.classify(list(texts[i : i + batch])):
            out.append({"appeal": c.appeal, "labels": list(c.labels), "addressee": c.addressee, "lang": c.lang,
                        "score": c.score})
    return out


def language_only(texts: Sequence[str]) -> list[str]:
    return [detect_language(t)[0] for t in texts]


def write_metrics(path: Path, metrics: dict[str, object]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(metrics, ensure_ascii=False, indent=2) + "\n")


def expand_negatives(rows: Sequence[Example], min_letters: int = 80) -> list[Example]:
    """Rows plus each long paragraph of every multi-paragraph non-appeal, as a non-appeal of its own.

    The classifier also scores a long post's paragraphs alone (an appeal buried in a digest),
    so the heads must learn that a paragraph of a news post, an obituary or a recruitment ad
    is no appeal either: on real channels most false alarms came from such paragraphs.
    """
    out = list(rows)
    for e in rows:
        if e.appeal:
            continue
        paragraphs = [p.strip() for p in e.text.split("\n") if sum(ch.isalpha() for ch in p) >= min_letters]
        if len(paragraphs) < 2:
            continue
        out.extend(dataclasses.replace(e, id=f"{e.id}#p{k}", text=p) for k, p in enumerate(paragraphs))
    return out


def adapter_trained_on(adapter: Path | None) -> set[str]:
    """Ids of the posts an adapter was fine-tuned on: they can't calibrate it (its scores on them are too sure)."""
    if adapter is None or not (adapter / TRAINED_ON).is_file():
        return set()
    return {line.strip() for line in (adapter / TRAINED_ON).read_text().splitlines()
            if line.strip() and not line.startswith("#")}


TRAINED_ON = "trained_on.txt"
