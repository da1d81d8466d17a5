"""Fine-tune the encoder for appeals with a LoRA adapter (``appealwatch train --finetune``).

Frozen E5 embeddings separate appeals from news well, but not *which* appeal: on the
dev split their labels reached macro-F1 ≈ 0.76 with any linear or multi-layer head.
Teaching the encoder itself the taxonomy lifts that, and a low-rank adapter does it
with 0.67 M trainable weights (2.7 MB, committed in ``models/artifacts/adapter``)
instead of a 470 MB model that could not be. The adapter is merged into the weights
at load time, so classifying costs nothing extra.

The loss is multi-task on a throwaway head: appeal or not (all posts), the six labels
and the addressee (appeals only). The heads the bot uses are refit afterwards by
``models.training.fit_heads`` on the tuned embeddings: logistic, calibrated by
cross-validation, and linear over mean pooling, so the *reasons* stay exact.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from models.encoder import QUERY_PREFIX, bf16_supported
from models.paths import ADAPTER_DIR
from models.taxonomy import ADDRESSEES, LABELS
from models.training.dataset import Example

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

# The linear layers of every BERT block (query, key, value and the three "dense" ones).
TARGET_MODULES = ("query", "key", "value", "dense")


@dataclass(frozen=True, slots=True)
class FinetuneSettings:
    """Chosen on the dev split (train-only adapter, then test untouched); see README "Figures".

    Weighing the label loss double and the rarer labels' positives up lifted dev label
    macro-F1 from 0.827 to 0.834 (surrender 0.74 → 0.78, desertion 0.67 → 0.74); 12 epochs
    instead of 8 gave 0.829.
    """

    epochs: int = 8
    learning_rate: float = 6e-4
    head_learning_rate: float = 3e-3
    rank: int = 8
    dropout: float = 0.1
    batch_size: int = 16
    max_length: int = 256  # 97 % of the labelled posts fit; training only, inference uses windows
    label_loss_weight: float = 2.0
    # weigh each label's positives by sqrt(negatives / positives) among the appeals, so the
    # rarer labels (desertion, threat) are not drowned by surrender
    balance_labels: bool = True
    seed: int = 0


def finetune_adapter(
    base_location: str, examples: Sequence[Example], out_dir: Path, *,
    settings: FinetuneSettings = FinetuneSettings(), threads: int | None = None, progress: bool = True,
) -> Path:
    """Train a LoRA adapter on ``examples`` and save it (peft format) in ``out_dir/adapter``."""
    import torch
    import torch.nn.functional as F
    from peft import LoraConfig, get_peft_model
    from tqdm import tqdm
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(settings.seed)
    rng = random.Random(settings.seed)
    tokenizer = AutoTokenizer.from_pretrained(base_location)
    base = AutoModel.from_pretrained(base_location)
    lora = LoraConfig(r=settings.rank, lora_alpha=2 * settings.rank, lora_dropout=settings.dropout,
                      target_modules=list(TARGET_MODULES))
    model = get_peft_model(base, lora)
    hidden = int(base.config.hidden_size)
    head = torch.nn.Linear(hidden, 1 + len(LABELS) + len(ADDRESSEES))
    optimizer = torch.optim.AdamW(
        [{"params": [p for p in model.parameters() if p.requires_grad], "lr": settings.learning_rate},
         {"params": head.parameters(), "lr": settings.head_learning_rate}],
        weight_decay=0.01,
    )
    rows = list(examples)
    pos_weight = _label_pos_weight(rows) if settings.balance_labels else None
    per_epoch = (len(rows) + settings.batch_size - 1) // settings.batch_size
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=[settings.learning_rate, settings.head_learning_rate],
        total_steps=settings.epochs * per_epoch, pct_start=0.1, anneal_strategy="linear",
    )
    # bf16 autocast where the CPU has bf16 instructions: ~1.5× faster, same result on dev
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16_supported())
    model.train()
    with tqdm(total=settings.epochs * per_epoch, desc="fine-tuning the encoder", unit="batch", disable=not progress) as bar:
        for epoch in range(settings.epochs):
            # similar lengths share a batch (less padding), batches in random order
            order = sorted(rows, key=lambda e: len(e.text) + rng.random() * 200)
            batches = [order[i : i + settings.batch_size] for i in range(0, len(order), settings.batch_size)]
            rng.shuffle(batches)
            total = 0.0
            for batch in batches:
                enc = tokenizer([QUERY_PREFIX + e.text for e in batch], truncation=True, max_length=settings.max_length,
                                padding=True, return_tensors="pt")
                with autocast:
                    states = model(**enc).last_hidden_state
                mask = enc["attention_mask"].unsqueeze(-1).float()
                pooled = F.normalize((states.float() * mask).sum(1) / mask.sum(1), dim=-1) * 20.0
                out = head(pooled)
                appeal = torch.tensor([float(e.appeal) for e in batch])
                loss = F.binary_cross_entropy_with_logits(out[:, 0], appeal)
                sel = appeal.bool()
                if sel.any():
                    labels = torch.tensor([[float(n in e.labels) for n in LABELS] for e in batch])
                    addressee = torch.tensor([ADDRESSEES.index(e.addressee) if e.addressee else -100 for e in batch])
                    loss = loss + settings.label_loss_weight * F.binary_cross_entropy_with_logits(
                        out[sel, 1 : 1 + len(LABELS)], labels[sel], pos_weight=pos_weight)
                    loss = loss + 0.5 * F.cross_entropy(out[sel, 1 + len(LABELS) :], addressee[sel])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                scheduler.step()
                total += float(loss.item())
                bar.update(1)
            bar.set_postfix(epoch=epoch + 1, loss=f"{total / len(batches):.3f}")
    target = out_dir / ADAPTER_DIR
    target.mkdir(parents=True, exist_ok=True)
    model.peft_config["default"].base_model_name_or_path = Path(base_location).name  # not this machine's path
    model.save_pretrained(str(target), save_embedding_layers=False)
    (target / "README.md").unlink(missing_ok=True)  # peft's empty model-card template
    (target / "trained_on.txt").write_text(  # these posts can't calibrate the model (see calibrate.py)
        "# ids of the labelled posts this adapter was fine-tuned on\n" + "\n".join(sorted(e.id for e in rows)) + "\n")
    (target / "appealwatch-finetune.json").write_text(
        json.dumps({**asdict(settings), "examples": len(rows), "base": Path(base_location).name}, indent=2) + "\n"
    )
    return target


def _label_pos_weight(rows: Sequence[Example]) -> torch.Tensor:
    import torch

    appeals = [e for e in rows if e.appeal]
    positives = torch.tensor([sum(n in e.labels for e in appeals) for n in LABELS], dtype=torch.float32).clamp(min=1)
    return ((len(appeals) - positives) / positives).clamp(min=1.0).sqrt()
