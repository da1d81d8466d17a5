"""The trained part of the classifier: small linear heads over E5 embeddings.

Linear heads on a frozen encoder are a few kilobytes, so they can be committed and
reproduced by ``appealwatch train``, while the 470 MB encoder is built at set-up.
Linearity also makes the model explain itself: a logit over a mean-pooled vector is
the mean of per-token logits, so the phrases that pushed a decision are read off the
token states the encoder already computed.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from models.taxonomy import ADDRESSEES, LABELS

HEADS_FILE = "heads.npz"
META_FILE = "heads.json"


@dataclass(slots=True)
class HeadsMeta:
    """What was trained, on what, and how well (shown by ``appealwatch eval``)."""

    encoder: str
    dim: int
    threshold: float
    label_thresholds: dict[str, float]
    data_sha256: str
    metrics: dict[str, object] = field(default_factory=dict)
    trained_at: str = ""
    seed: int = 0
    # Platt scaling (a, b) fit on dev and folded into appeal_w / appeal_b: p = sigmoid(a·z + b)
    calibration: list[float] = field(default_factory=lambda: [1.0, 0.0])


@dataclass(slots=True)
class Heads:
    appeal_w: np.ndarray  # (H,)
    appeal_b: float
    label_w: np.ndarray  # (6, H)
    label_b: np.ndarray  # (6,)
    addr_w: np.ndarray  # (5, H)
    addr_b: np.ndarray  # (5,)
    meta: HeadsMeta

    labels: tuple[str, ...] = LABELS
    addressees: tuple[str, ...] = ADDRESSEES

    def appeal_logit(self, vectors: np.ndarray) -> np.ndarray:
        return vectors @ self.appeal_w + self.appeal_b

    def label_probs(self, vectors: np.ndarray) -> np.ndarray:
        return sigmoid(vectors @ self.label_w.T + self.label_b)

    def addressee_probs(self, vectors: np.ndarray) -> np.ndarray:
        z = vectors @ self.addr_w.T + self.addr_b
        z = z - z.max(axis=-1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=-1, keepdims=True)

    def calibrate(self, a: float, b: float) -> None:
        """Fold Platt scaling into the appeal head, so scoring and reasons stay one linear map (a > 0)."""
        if a <= 0:
            raise ValueError(f"calibration slope must be positive, got {a}")
        self.appeal_w = (self.appeal_w * a).astype(np.float32)
        self.appeal_b = float(self.appeal_b * a + b)
        prev_a, prev_b = self.meta.calibration
        self.meta.calibration = [round(prev_a * a, 6), round(prev_b * a + b, 6)]

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(
            folder / HEADS_FILE,
            appeal_w=self.appeal_w.astype(np.float32),
            appeal_b=np.float32(self.appeal_b),
            label_w=self.label_w.astype(np.float32),
            label_b=self.label_b.astype(np.float32),
            addr_w=self.addr_w.astype(np.float32),
            addr_b=self.addr_b.astype(np.float32),
        )
        (folder / META_FILE).write_text(json.dumps(asdict(self.meta), ensure_ascii=False, indent=2) + "\n")

    @classmethod
    def load(cls, folder: Path) -> Heads:
        with np.load(folder / HEADS_FILE) as z:
            arrays = {k: z[k] for k in z.files}
        meta = HeadsMeta(**json.loads((folder / META_FILE).read_text()))
        return cls(
            appeal_w=arrays["appeal_w"],
            appeal_b=float(arrays["appeal_b"]),
            label_w=arrays["label_w"],
            label_b=arrays["label_b"],
            addr_w=arrays["addr_w"],
            addr_b=arrays["addr_b"],
            meta=meta,
        )


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -40, 40)))


def packaged_heads_dir() -> Path:
    """The heads committed with the project (reproduced by ``appealwatch train``)."""
    return Path(__file__).parent / "artifacts"
