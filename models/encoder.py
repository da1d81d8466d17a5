"""The multilingual sentence encoder: text in, L2-normalised E5 embeddings out.

One loading path serves the offline build (``models.encoder_build``) and any hub id
or local directory a user names. Long posts are split into overlapping windows of
the model's maximum length instead of being cut at 512 tokens, so an appeal at the
end of a long digest still reaches the classifier. Per-token states are returned on
request: the classifier's linear head decomposes over them, which is how it explains
itself (the *reasons*) without a second forward pass.

Precision: on CPUs with bfloat16 instructions (AVX512-BF16, AMX) the weights run in
bfloat16: 1.8× the messages/s of float32 here, embeddings at cosine ≥ 0.9999 to float32
(``bench/classify.py --precision``). Elsewhere bfloat16 would be emulated, so float32.
A fine-tuned LoRA adapter (``models.finetune``) is merged into the weights on load.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

QUERY_PREFIX = "query: "


@dataclass(slots=True)
class Window:
    """One model-sized slice of a text."""

    vector: np.ndarray  # (H,) L2-normalised mean-pooled embedding
    n_tokens: int
    # (T, H) token states divided by the mean's norm, so that w·vector == mean(token_contrib @ w)
    token_states: np.ndarray | None = None
    # (T, 2) character spans of those tokens in the original text (prefix removed); -1 for specials
    offsets: np.ndarray | None = None


@dataclass(slots=True)
class TextEncoding:
    """All windows of one text, and the text-level embedding (token-weighted mean of windows)."""

    text: str
    windows: list[Window]

    @property
    def vector(self) -> np.ndarray:
        if len(self.windows) == 1:
            return self.windows[0].vector
        weights = np.array([w.n_tokens for w in self.windows], dtype=np.float32)
        v = np.sum([w.vector * n for w, n in zip(self.windows, weights, strict=True)], axis=0)
        return v / max(float(np.linalg.norm(v)), 1e-12)


class Encoder:
    """multilingual-e5-small (or any BERT-like encoder) with E5's query prefix and mean pooling."""

    def __init__(
        self, tokenizer: Any, model: Any, *, batch_size: int = 32, stride: int = 64, max_batch_tokens: int = 2048,
        identity: str = "",
    ) -> None:
        self.tokenizer = tokenizer
        self.model = model
        # what produced these embeddings (model, adapter, precision): keys caches of them
        self.identity = identity
        self.batch_size = batch_size
        # A batch is padded to its longest window: cap rows × width, or one long post makes
        # 31 short ones pay for its length (a fixed 32- or 64-row batch of mixed real posts
        # cost 2-4× the CPU of encoding them one by one).
        self.max_batch_tokens = max_batch_tokens
        self.max_tokens = int(min(getattr(tokenizer, "model_max_length", 512) or 512, 512))
        self.stride = stride
        self.dim = int(model.config.hidden_size)
        self.bos = tokenizer.cls_token_id if tokenizer.cls_token_id is not None else tokenizer.bos_token_id
        self.eos = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id
        self.pad = tokenizer.pad_token_id or 0

    @classmethod
    def load(cls, name_or_path: str, *, threads: int | None = None, batch_size: int = 8,
             max_batch_tokens: int = 1024, precision: str = "auto", adapter: Path | None = None,
             share_with: Encoder | None = None) -> Encoder:
        """Load from a local directory or a hub id; ``threads`` sets the intra-op threads.

        ``precision``: "auto" (bfloat16 where the CPU has bf16 instructions), "bfloat16"
        or "float32". ``adapter``: a peft LoRA adapter directory, merged into the weights.
        ``share_with``: the same model already loaded without the adapter; its tokenizer
        (~290 MB resident) and embedding layer (250k × 384) are reused, since the adapter
        changes neither. Batches of 8 rows / 1,024 tokens measured fastest here
        (bench/classify.py).
        """
        import torch
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        if threads:
            torch.set_num_threads(threads)
        dtype = resolve_precision(precision)
        tokenizer = share_with.tokenizer if share_with is not None else AutoTokenizer.from_pretrained(name_or_path)
        # float32 when an adapter is merged (then converted); else straight into the target type
        model = AutoModel.from_pretrained(name_or_path, dtype=torch.float32 if adapter is not None else dtype)
        identity = f"{name_or_path}"
        if adapter is not None:
            from peft import PeftModel

            if share_with is not None:
                # before anything reads the (memory-mapped) float32 embeddings: they are never paged in
                model.embeddings = share_with.model.embeddings
            model = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
            identity += f"+adapter:{adapter_digest(adapter)}"
        model = model.to(dtype).eval()
        identity += f"@{str(dtype).removeprefix('torch.')}"
        return cls(tokenizer, model, batch_size=batch_size, max_batch_tokens=max_batch_tokens, identity=identity)

    def _forward(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            out = self.model(input_ids=torch.from_numpy(input_ids), attention_mask=torch.from_numpy(attention_mask))
            return np.asarray(out.last_hidden_state.float().numpy())

    @property
    def precision(self) -> str:
        dtype = getattr(self.model, "dtype", None)
        return str(dtype).removeprefix("torch.") if dtype is not None else "float32"

    # -- tokenisation -------------------------------------------------------------------

    def _windows_of(self, text: str) -> list[tuple[list[int], list[tuple[int, int]]]]:
        enc = self.tokenizer(QUERY_PREFIX + text, add_special_tokens=False, return_offsets_mapping=True)
        ids: list[int] = list(enc["input_ids"])
        shift = len(QUERY_PREFIX)
        offs = [(max(a - shift, -1), max(b - shift, -1)) for a, b in enc["offset_mapping"]]
        room = self.max_tokens - 2
        spans: list[tuple[list[int], list[tuple[int, int]]]] = []
        start = 0
        while True:
            end = min(start + room, len(ids))
            spans.append(
                ([self.bos, *ids[start:end], self.eos], [(-1, -1), *offs[start:end], (-1, -1)])
            )
            if end >= len(ids):
                break
            start = end - self.stride
        return spans

    # -- inference ----------------------------------------------------------------------

    def encode(self, texts: list[str], *, with_tokens: bool = False) -> list[TextEncoding]:
        """Encode texts; windows are batched across texts, sorted by length to save padding."""
        items: list[tuple[int, list[int], list[tuple[int, int]]]] = []
        for i, text in enumerate(texts):
            for ids, offs in self._windows_of(text):
                items.append((i, ids, offs))
        order = sorted(range(len(items)), key=lambda k: len(items[k][1]))
        chunks: list[list[int]] = []
        for k in order:  # ascending length: the window being added sets the batch's width
            rows = len(chunks[-1]) if chunks else 0
            if not chunks or rows >= self.batch_size or (rows + 1) * len(items[k][1]) > self.max_batch_tokens:
                chunks.append([])
            chunks[-1].append(k)
        results: list[Window | None] = [None] * len(items)
        for chunk in chunks:
            width = max(len(items[k][1]) for k in chunk)
            input_ids = np.full((len(chunk), width), self.pad, dtype=np.int64)
            mask = np.zeros((len(chunk), width), dtype=np.int64)
            for row, k in enumerate(chunk):
                ids = items[k][1]
                input_ids[row, : len(ids)] = ids
                mask[row, : len(ids)] = 1
            hidden = self._forward(input_ids, mask)
            m = mask[:, :, None].astype(np.float32)
            mean = (hidden * m).sum(axis=1) / np.maximum(m.sum(axis=1), 1.0)
            norms = np.maximum(np.linalg.norm(mean, axis=1, keepdims=True), 1e-12)
            pooled = (mean / norms).astype(np.float32)
            states = (hidden / norms[:, :, None]).astype(np.float32) if with_tokens else None
            for row, k in enumerate(chunk):
                n = len(items[k][1])
                results[k] = Window(
                    vector=pooled[row],
                    n_tokens=n,
                    token_states=states[row, :n].copy() if states is not None else None,
                    offsets=np.array(items[k][2], dtype=np.int64) if with_tokens else None,
                )
        out = [TextEncoding(text=t, windows=[]) for t in texts]
        for (i, _, _), win in zip(items, results, strict=True):
            assert win is not None
            out[i].windows.append(win)
        return out

    def embed(self, texts: list[str]) -> np.ndarray:
        """(n, H) text-level embeddings, L2-normalised."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack([e.vector for e in self.encode(texts)]).astype(np.float32)


PRECISIONS = ("auto", "bfloat16", "float32")


def bf16_supported() -> bool:
    """True when the CPU computes bfloat16 natively (AVX512-BF16 or AMX); else it is emulated, slowly."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        pass
    return False


def resolve_precision(precision: str) -> Any:
    """The torch dtype for a ``[model] precision`` setting."""
    import torch

    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    if precision == "bfloat16" or (precision == "auto" and bf16_supported()):
        return torch.bfloat16
    return torch.float32


def adapter_digest(adapter: Path) -> str:
    """A short content hash of an adapter's weights (changes whenever it is retrained)."""
    import hashlib

    h = hashlib.sha256()
    for f in sorted(adapter.glob("*.safetensors")):
        h.update(f.read_bytes())
    return h.hexdigest()[:12]


def default_threads() -> int:
    """Use every core we are allowed to run on; the bot does little else while classifying."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)
