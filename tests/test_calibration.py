"""Calibration, thresholds and the real-traffic split: the parts of training that decide what a score means."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from models.heads import Heads, HeadsMeta, sigmoid
from models.taxonomy import ADDRESSEES, LABELS
from models.training.calibrate import (
    calibrated,
    calibration_error,
    choose_feed_threshold,
    choose_label_thresholds,
    choose_threshold,
    fit_platt,
    reliability_diagram,
)
from models.training.dataset import Example, load_real_examples, load_sealed, real_split, training_examples
from models.training.fit import adapter_trained_on, expand_negatives


def _heads(dim: int = 4) -> Heads:
    rng = np.random.default_rng(0)
    meta = HeadsMeta(encoder="x", dim=dim, threshold=0.5, label_thresholds={}, data_sha256="")
    return Heads(rng.standard_normal(dim).astype(np.float32), 0.3, np.zeros((len(LABELS), dim), np.float32),
                 np.zeros(len(LABELS), np.float32), np.zeros((len(ADDRESSEES), dim), np.float32),
                 np.zeros(len(ADDRESSEES), np.float32), meta)


def test_platt_scaling_softens_overconfident_logits() -> None:
    rng = np.random.default_rng(1)
    y = rng.random(4000) < 0.3
    true_logit = np.where(y, 1.0, -1.0) + rng.normal(0, 1.0, y.size)  # a noisy but informative score
    overconfident = 8 * true_logit  # what heads fit on their own training posts look like
    a, b = fit_platt(overconfident, y, balanced=False)
    assert 0 < a < 1  # it shrinks the logits
    before = calibration_error(y.astype(float), sigmoid(overconfident))
    after = calibration_error(y.astype(float), calibrated(overconfident, a, b))
    assert after < 0.03 < before


def test_balanced_platt_reads_as_even_odds() -> None:
    rng = np.random.default_rng(3)
    y = rng.random(6000) < 0.1  # dev's mix: few appeals
    z = np.where(y, 2.0, -2.0) + rng.normal(0, 1.5, y.size)
    a_bal, b_bal = fit_platt(z, y)
    a_raw, b_raw = fit_platt(z, y, balanced=False)
    # at z = 0 (halfway between the classes) the balanced score is about one half, the prevalence-bound one far lower
    assert abs(float(calibrated(np.array([0.0]), a_bal, b_bal)[0]) - 0.5) < 0.05
    assert float(calibrated(np.array([0.0]), a_raw, b_raw)[0]) < 0.3


def test_the_feed_threshold_is_the_lowest_that_keeps_the_feed_quiet() -> None:
    y = np.array([1] * 20 + [0] * 20, dtype=bool)
    probs = np.r_[np.linspace(0.6, 0.99, 20), np.linspace(0.0, 0.5, 20)]
    feed = np.r_[np.full(995, 0.1), [0.55, 0.62, 0.66, 0.8, 0.97]]  # 5 real posts score high
    # ≤ 4 per 1,000 needs t > 0.55; the labelled posts are clean above 0.5
    assert choose_feed_threshold(probs, y, feed) == 0.56
    assert choose_feed_threshold(probs, y, feed, max_false_alarms=1.0) == 0.81
    assert choose_feed_threshold(probs, y, np.full(1000, 0.99)) is None


def test_platt_refuses_scores_that_rank_backwards() -> None:
    y = np.array([0, 0, 1, 1] * 50)
    with pytest.raises(ValueError, match="do not rank"):
        fit_platt(np.where(y == 1, -2.0, 2.0) + np.linspace(-0.1, 0.1, y.size), y)


def test_calibration_folds_into_the_head_and_keeps_the_ranking() -> None:
    heads = _heads()
    x = np.random.default_rng(2).standard_normal((50, 4)).astype(np.float32)
    raw = heads.appeal_logit(x)
    heads.calibrate(0.4, -1.5)
    assert np.allclose(heads.appeal_logit(x), 0.4 * raw - 1.5, atol=1e-5)
    assert list(np.argsort(heads.appeal_logit(x))) == list(np.argsort(raw))
    heads.calibrate(2.0, 0.5)  # a second calibration composes with the first
    assert heads.meta.calibration == pytest.approx([0.8, -2.5])
    with pytest.raises(ValueError):
        heads.calibrate(-1.0, 0.0)


def test_thresholds_maximise_f1_and_prefer_one_half_on_ties() -> None:
    y = np.array([1, 1, 1, 0, 0, 0], dtype=bool)
    assert choose_threshold(np.array([0.9, 0.8, 0.75, 0.2, 0.1, 0.05]), y) == 0.5  # any cut in 0.21..0.75 is perfect
    assert choose_threshold(np.array([0.95, 0.9, 0.88, 0.85, 0.1, 0.05]), y) == 0.86
    thresholds = choose_label_thresholds([{"pow": 0.3}, {"pow": 0.25}, {"pow": 0.1}], [["pow"], ["pow"], ["family"]])
    assert 0.1 < thresholds["pow"] <= 0.25 and thresholds["family"] == 0.5  # family: never scored, default


def test_reliability_diagram_is_a_png(tmp_path: Path) -> None:
    y = np.array([0, 0, 1, 1, 1], dtype=float)
    path = reliability_diagram({"a": (y, np.array([0.1, 0.2, 0.7, 0.9, 0.95]))}, tmp_path / "r.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000


def test_long_negatives_teach_their_paragraphs_too() -> None:
    news = "\n".join(["Новости дня: " + "обстрел города, пострадали люди, работают службы. " * 3] * 3)
    appeal = "Русские солдаты, сдавайтесь!\n" + "Звоните на горячую линию, вам гарантируют жизнь и еду. " * 3
    rows = [Example("n1", news, "ru", False, (), None), Example("a1", appeal, "ru", True, ("surrender",), "ru_military")]
    out = expand_negatives(rows)
    assert [e.id for e in out] == ["n1", "a1", "n1#p0", "n1#p1", "n1#p2"]
    assert all(not e.appeal and e.labels == () for e in out[2:])


def test_the_adapter_lists_what_it_was_trained_on(tmp_path: Path) -> None:
    assert adapter_trained_on(None) == set()
    (tmp_path / "trained_on.txt").write_text("# comment\nx-1\n\nx-2\n")
    assert adapter_trained_on(tmp_path) == {"x-1", "x-2"}
    committed = adapter_trained_on(Path(__file__).resolve().parents[1] / "models" / "artifacts" / "adapter")
    dev = {e.id for e in training_examples(("dev",))}
    held = dev - committed
    assert len(held) >= 300  # the committed model is calibrated on dev posts its adapter never saw
    assert not committed & {e.id for e in load_sealed()}


def test_real_split_is_fixed_by_id_and_about_30_20_50() -> None:
    assert real_split("u-e6a427f1") == real_split("u-e6a427f1")
    counts = Counter(real_split(f"id-{i}") for i in range(20000))
    assert abs(counts["test"] / 20000 - 0.3) < 0.02 and abs(counts["dev"] / 20000 - 0.2) < 0.02


def test_real_labelled_posts_are_mostly_negatives_and_never_train_on_test() -> None:
    real = load_real_examples()
    assert len(real) >= 1000
    assert sum(e.appeal for e in real) / len(real) < 0.02  # real appeals are rare
    train_ids = {e.id for e in training_examples(("train",))}
    assert not train_ids & {e.id for e in real if e.split == "test"}
    assert not train_ids & {e.id for e in load_sealed()}
